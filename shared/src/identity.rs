//! Who is calling: the identity the rate limiter (and later the idempotency
//! records) key on, and the API-key check.
//!
//! A client must not be able to choose its own identity, or it could spread
//! its requests over as many rate-limit buckets as it likes. So the identity
//! comes only from what the client cannot forge:
//!
//! * with `API_KEYS_SHA256` configured, the SHA-256 digest of the `x-api-key`
//!   it presented, which must be one of the configured digests (401 otherwise);
//! * without it, the source address **API Gateway itself** observed and put in
//!   the request context (`requestContext.http.sourceIp` in payload v2,
//!   `requestContext.identity.sourceIp` in v1).
//!
//! `X-Forwarded-For`, `X-Real-IP`, `Forwarded` and every other header are
//! ignored: the client writes them. API Gateway's `sourceIp` is the peer of the
//! TCP connection to API Gateway (AWS documents it as the source IP of the
//! immediate connection), which the client cannot spoof over TCP.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::http::ApiError;

/// The request header that carries an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// A client's identity, as used inside Redis key names (the rate limiter's
/// hash tag). One of:
///
/// * `key:<64 lowercase hex>`: the SHA-256 digest of an accepted API key;
/// * `ip:<address>`: an IPv4 address (`ip:203.0.113.7`), or the /64 network of
///   an IPv6 address (`ip:2001:db8:1:2::/64`) because one IPv6 subscriber is
///   normally given a whole /64 and could otherwise rotate through 2^64
///   addresses; IPv4-mapped IPv6 addresses count as their IPv4 address;
/// * `unknown`: a request without a source address (shared by all such requests).
///
/// It never contains `{`, `}`, whitespace or the API key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    /// The identity of a caller seen from `addr`. See the type's documentation
    /// for how IPv6 addresses are grouped.
    pub fn ip(addr: IpAddr) -> Self {
        match addr.to_canonical() {
            IpAddr::V4(v4) => Self(format!("ip:{v4}")),
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                Self(format!("ip:{}/64", Ipv6Addr::from(network)))
            }
        }
    }

    /// The identity of a caller holding the API key whose SHA-256 digest is
    /// `digest` (32 bytes).
    pub fn api_key(digest: &[u8; 32]) -> Self {
        Self(format!("key:{}", hex::encode(digest)))
    }

    /// The one shared identity of requests that carry no source address.
    pub fn unknown() -> Self {
        Self("unknown".to_string())
    }

    /// The identity as it appears in Redis key names.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Determines who sent `req`.
///
/// `api_key_digests` is `API_KEYS_SHA256` (SHA-256 digests, 32 bytes each).
/// When it is non-empty, the request must carry an `x-api-key` header whose
/// SHA-256 digest is in the list; the identity is then [`ClientId::api_key`].
/// The digest is compared with every configured digest in constant time
/// (`subtle`), so the response time does not reveal how much of a digest
/// matched or which entry did. The key is never logged.
///
/// When the list is empty, the identity is the source IP that API Gateway put
/// in the request context ([`ClientId::ip`]); a request without a usable one
/// (not from API Gateway, or an unparsable address) gets [`ClientId::unknown`]
/// and a warning is logged. No header is ever consulted in this mode.
///
/// # Errors
/// [`ApiError::Unauthorized`] when keys are configured and the header is
/// missing, not valid header text, or its digest is not listed.
pub fn client_identity(req: &Request, api_key_digests: &[[u8; 32]]) -> Result<ClientId, ApiError> {
    if api_key_digests.is_empty() {
        return Ok(source_ip(req).map_or_else(
            || {
                tracing::warn!(
                    "request has no source IP in its API Gateway context; it shares the rate-limit bucket `unknown`"
                );
                ClientId::unknown()
            },
            ClientId::ip,
        ));
    }
    let presented = req
        .headers()
        .get(API_KEY_HEADER)
        .map(|value| value.as_bytes())
        .filter(|key| !key.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let digest: [u8; 32] = Sha256::digest(presented).into();
    // Fold over every entry instead of stopping at the first match, so the
    // time taken does not depend on the position of the matching digest.
    let listed = api_key_digests
        .iter()
        .fold(Choice::from(0), |found, candidate| {
            found | digest.ct_eq(candidate)
        });
    if bool::from(listed) {
        Ok(ClientId::api_key(&digest))
    } else {
        tracing::info!("request refused: unknown or missing API key");
        Err(ApiError::Unauthorized)
    }
}

/// The address API Gateway observed, from the request context only.
fn source_ip(req: &Request) -> Option<IpAddr> {
    let raw = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.as_deref(),
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.identity.source_ip.as_deref(),
        _ => None,
    }?;
    raw.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayProxyRequestContext, ApiGatewayV2httpRequestContext,
    };
    use lambda_http::Body;

    fn v2_event(source_ip: Option<&str>, headers: serde_json::Value) -> Request {
        let mut http = serde_json::json!({
            "method": "POST", "path": "/api/metrics", "protocol": "HTTP/1.1", "userAgent": "test"
        });
        if let Some(ip) = source_ip {
            http["sourceIp"] = ip.into();
        }
        let event = serde_json::json!({
            "version": "2.0",
            "routeKey": "POST /api/metrics",
            "rawPath": "/api/metrics",
            "rawQueryString": "",
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "api",
                "domainName": "api.example.com",
                "domainPrefix": "api",
                "http": http,
                "requestId": "id",
                "routeKey": "POST /api/metrics",
                "stage": "$default",
                "time": "21/Apr/2020:15:08:21 +0000",
                "timeEpoch": 1587481701067u64
            },
            "body": "{}",
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).expect("a valid v2 event")
    }

    fn v1_event(source_ip: &str, headers: serde_json::Value) -> Request {
        let event = serde_json::json!({
            "resource": "/api/metrics",
            "path": "/api/metrics",
            "httpMethod": "POST",
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012",
                "resourceId": "r",
                "stage": "prod",
                "requestId": "id",
                "identity": { "sourceIp": source_ip, "userAgent": "test" },
                "resourcePath": "/api/metrics",
                "httpMethod": "POST",
                "apiId": "api"
            },
            "body": "{}",
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).expect("a valid v1 event")
    }

    fn digest_of(key: &str) -> [u8; 32] {
        Sha256::digest(key.as_bytes()).into()
    }

    #[test]
    fn payload_v2_uses_the_source_ip_of_the_request_context() {
        let req = v2_event(Some("203.0.113.7"), serde_json::json!({}));
        assert!(matches!(
            req.request_context_ref(),
            Some(RequestContext::ApiGatewayV2(_))
        ));
        assert_eq!(
            client_identity(&req, &[]).unwrap().as_str(),
            "ip:203.0.113.7"
        );
    }

    #[test]
    fn payload_v1_uses_the_identity_source_ip() {
        let req = v1_event("198.51.100.23", serde_json::json!({}));
        assert!(matches!(
            req.request_context_ref(),
            Some(RequestContext::ApiGatewayV1(_))
        ));
        assert_eq!(
            client_identity(&req, &[]).unwrap().as_str(),
            "ip:198.51.100.23"
        );
    }

    #[test]
    fn forwarding_headers_are_ignored() {
        let spoofing = serde_json::json!({
            "x-forwarded-for": "192.0.2.1, 192.0.2.2",
            "x-real-ip": "192.0.2.3",
            "forwarded": "for=192.0.2.4",
        });
        let v2 = v2_event(Some("203.0.113.7"), spoofing.clone());
        assert_eq!(
            client_identity(&v2, &[]).unwrap().as_str(),
            "ip:203.0.113.7"
        );
        let v1 = v1_event("198.51.100.23", spoofing.clone());
        assert_eq!(
            client_identity(&v1, &[]).unwrap().as_str(),
            "ip:198.51.100.23"
        );
        // Even without a context, the headers are not a fallback.
        let bare = lambda_http::http::Request::builder()
            .header("x-forwarded-for", "192.0.2.1")
            .header("x-real-ip", "192.0.2.3")
            .body(Body::Empty)
            .unwrap();
        assert_eq!(client_identity(&bare, &[]).unwrap(), ClientId::unknown());
    }

    #[test]
    fn a_request_without_a_source_ip_is_unknown() {
        let bare = lambda_http::http::Request::builder()
            .body(Body::Empty)
            .unwrap();
        assert_eq!(client_identity(&bare, &[]).unwrap().as_str(), "unknown");
        let no_ip = v2_event(None, serde_json::json!({}));
        assert_eq!(client_identity(&no_ip, &[]).unwrap(), ClientId::unknown());
        let garbage = v2_event(Some("not an address"), serde_json::json!({}));
        assert_eq!(client_identity(&garbage, &[]).unwrap(), ClientId::unknown());
    }

    #[test]
    fn contexts_attached_with_the_extension_trait_are_read() {
        let mut v2 = ApiGatewayV2httpRequestContext::default();
        v2.http.source_ip = Some("203.0.113.9".into());
        let req = lambda_http::http::Request::builder()
            .body(Body::Empty)
            .unwrap()
            .with_request_context(RequestContext::ApiGatewayV2(v2));
        assert_eq!(
            client_identity(&req, &[]).unwrap().as_str(),
            "ip:203.0.113.9"
        );

        let mut v1 = ApiGatewayProxyRequestContext::default();
        v1.identity.source_ip = Some("2001:db8:1:2:3:4:5:6".into());
        let req = lambda_http::http::Request::builder()
            .body(Body::Empty)
            .unwrap()
            .with_request_context(RequestContext::ApiGatewayV1(v1));
        assert_eq!(
            client_identity(&req, &[]).unwrap().as_str(),
            "ip:2001:db8:1:2::/64"
        );
    }

    #[test]
    fn ipv6_addresses_are_grouped_by_their_64_bit_network() {
        let a = ClientId::ip("2001:db8:1:2::1".parse().unwrap());
        let b = ClientId::ip("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap());
        let c = ClientId::ip("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            ClientId::ip("::ffff:203.0.113.7".parse().unwrap()).as_str(),
            "ip:203.0.113.7"
        );
    }

    #[test]
    fn configured_api_keys_are_required() {
        let digests = [digest_of("alpha-key"), digest_of("beta-key")];
        let with_key = |key: Option<&str>| {
            let headers = match key {
                Some(k) => serde_json::json!({ "x-api-key": k }),
                None => serde_json::json!({}),
            };
            client_identity(&v2_event(Some("203.0.113.7"), headers), &digests)
        };
        assert!(matches!(with_key(None), Err(ApiError::Unauthorized)));
        assert!(matches!(with_key(Some("")), Err(ApiError::Unauthorized)));
        assert!(matches!(
            with_key(Some("wrong-key")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            with_key(Some("alpha-key ")),
            Err(ApiError::Unauthorized)
        ));

        let alpha = with_key(Some("alpha-key")).unwrap();
        let beta = with_key(Some("beta-key")).unwrap();
        assert_eq!(alpha.as_str(), format!("key:{}", hex::encode(digests[0])));
        assert_eq!(beta, ClientId::api_key(&digests[1]));
        assert_ne!(alpha, beta);
        assert!(
            !alpha.as_str().contains("alpha"),
            "the key itself never appears"
        );
    }

    #[test]
    fn with_api_keys_the_identity_does_not_depend_on_the_address() {
        let digests = [digest_of("alpha-key")];
        let from = |ip: &str| {
            let headers = serde_json::json!({ "x-api-key": "alpha-key", "x-forwarded-for": ip });
            client_identity(&v2_event(Some(ip), headers), &digests).unwrap()
        };
        assert_eq!(from("203.0.113.7"), from("198.51.100.1"));
    }
}
