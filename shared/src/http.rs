//! The HTTP edge shared by every function: RFC 9457 problem details, JSON
//! responses, the `RateLimit` fields, and the parts of a
//! `lambda_http::Request` the handlers read.
//!
//! Components below this layer know nothing of HTTP: each returns its own
//! typed result or error, and the `From` conversions here map them to an
//! [`ApiError`] (status code, problem type, headers). Handlers return
//! `Result<Response<Body>, ApiError>` and use `?`; the one conversion
//! [`ApiError::into_response`] turns every failure into an
//! `application/problem+json` body with the right status and headers, so no
//! handler builds an error response by hand.

use std::net::IpAddr;
use std::time::Duration;

use lambda_http::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use lambda_http::http::StatusCode;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

use crate::cache::CacheError;
use crate::identity::{identify, ClientId, IdentityError, API_KEY_HEADER};
use crate::metric::{FieldError, Invalid, MetricError};
use crate::rate_limit::{RateLimitDecision, RateLimitError, POLICY_NAME};
use crate::responses::Problem;
use crate::store::StoreError;

/// Media type of every error body (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Media type of every successful body.
pub const JSON: &str = "application/json";

/// Everything a request can fail with. Each variant maps to one status code
/// and one problem `type`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON (or not UTF-8).
    #[error("{0}")]
    MalformedJson(String),
    /// 401: an API key is required and the request's is missing or unknown.
    #[error("a valid x-api-key header is required")]
    Unauthorized,
    /// 404: no such route (only reachable when a function is invoked on a path it does not serve).
    #[error("no route for {0}")]
    NotFound(String),
    /// 405: the route exists with another method.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// 413: the body exceeds `MAX_BODY_BYTES` (the field carries the limit, bytes).
    #[error("the body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 422: well-formed but invalid input; `errors` lists every offending field.
    #[error("{detail}")]
    Unprocessable {
        /// A one-line summary.
        detail: String,
        /// Every offending field with its reason.
        errors: Vec<FieldError>,
    },
    /// 422: a metric's tag value or tag combination would pass its cap;
    /// `errors` names the metric (`index` in a batch) and its tag.
    #[error("{detail}")]
    TagLimit {
        /// A one-line summary naming the cap and its setting.
        detail: String,
        /// The refused metric's tag.
        errors: Vec<FieldError>,
    },
    /// 422: an `Idempotency-Key` was reused with a different body.
    #[error("this Idempotency-Key was already used with a different body")]
    IdempotencyKeyReused,
    /// 429: the client's rate limit is exhausted; the response carries
    /// `Retry-After` and the `RateLimit`/`RateLimit-Policy` fields of the
    /// refusing decision.
    #[error("rate limit exceeded; retry after {} s", retry_after_s(.0))]
    TooManyRequests(RateLimitDecision),
    /// 503: a dependency (Redis) failed or the request deadline passed.
    /// The detail never contains credentials.
    #[error("{detail}")]
    Unavailable {
        /// What was unavailable, for the client.
        detail: String,
        /// Seconds the client should wait before retrying, ≥ 1.
        retry_after_s: u64,
    },
}

/// `Retry-After` of a refusing decision, ≥ 1 s (for an accepted one, the
/// time until `remaining` next increases).
fn retry_after_s(decision: &RateLimitDecision) -> u64 {
    decision
        .retry_after_s
        .unwrap_or(decision.reset_after_s)
        .max(1)
}

impl ApiError {
    /// A 422 with a single offending field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid::field(field, reason).into()
    }

    /// A 503 caused by Redis: logged here (without any credential) and
    /// answered with `Retry-After: 1`.
    pub fn redis(err: &redis::RedisError) -> Self {
        tracing::warn!(error.kind = ?err.kind(), error = %err, "redis unavailable");
        crate::observability::redis_error();
        Self::Unavailable {
            detail: "the data store is temporarily unavailable".into(),
            retry_after_s: 1,
        }
    }

    /// A 503 for a request that ran out of `REQUEST_DEADLINE_MS`.
    pub fn deadline(deadline: Duration) -> Self {
        tracing::warn!(
            deadline_ms = deadline.as_millis() as u64,
            "request deadline exceeded"
        );
        Self::Unavailable {
            detail: "the request could not be completed in time".into(),
            retry_after_s: 1,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable { .. } | Self::TagLimit { .. } | Self::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn problem_type(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "urn:analytics-api:problem:malformed-json",
            Self::Unauthorized => "urn:analytics-api:problem:unauthorized",
            Self::NotFound(_) => "urn:analytics-api:problem:not-found",
            Self::MethodNotAllowed(_) => "urn:analytics-api:problem:method-not-allowed",
            Self::PayloadTooLarge(_) => "urn:analytics-api:problem:payload-too-large",
            Self::Unprocessable { .. } => "urn:analytics-api:problem:validation-failed",
            Self::TagLimit { .. } => "urn:analytics-api:problem:tag-limit-exceeded",
            Self::IdempotencyKeyReused => "urn:analytics-api:problem:idempotency-key-reused",
            Self::TooManyRequests(_) => "urn:analytics-api:problem:rate-limited",
            Self::Unavailable { .. } => "urn:analytics-api:problem:service-unavailable",
        }
    }

    /// The problem details response (RFC 9457): `type`, `title`, `status`,
    /// `detail`, and `errors` for a 422.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let body = Problem {
            problem_type: self.problem_type().to_string(),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match &self {
                Self::Unprocessable { errors, .. } | Self::TagLimit { errors, .. } => {
                    Some(errors.clone())
                }
                _ => None,
            },
        };
        let mut response = json_response(status, &body);
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            Self::TooManyRequests(decision) => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_s(&decision)));
                response.headers_mut().extend(rate_limit_fields(&decision));
            }
            Self::Unavailable { retry_after_s, .. } => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
            }
            _ => {}
        }
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        Self::Unprocessable {
            detail: invalid.detail,
            errors: invalid.errors,
        }
    }
}

impl From<MetricError> for ApiError {
    fn from(err: MetricError) -> Self {
        match err {
            MetricError::Malformed(detail) => Self::MalformedJson(detail),
            MetricError::Invalid(invalid) => invalid.into(),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(err: IdentityError) -> Self {
        match err {
            IdentityError::Unauthorized => Self::Unauthorized,
        }
    }
}

impl From<RateLimitError> for ApiError {
    fn from(err: RateLimitError) -> Self {
        match err {
            RateLimitError::Redis(err) => Self::redis(&err),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Redis(err) => Self::redis(&err),
            StoreError::TooManyBuckets { field, .. } => {
                Invalid::field(field, err.to_string()).into()
            }
        }
    }
}

impl<E: Into<ApiError>> From<CacheError<E>> for ApiError {
    fn from(err: CacheError<E>) -> Self {
        match err {
            CacheError::Redis(err) => Self::redis(&err),
            CacheError::Compute(err) => err.into(),
        }
    }
}

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10 §2): the
/// policy, e.g. `"default";q=5;w=60`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10 §3): the current
/// state, e.g. `"default";r=0;t=37`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The `RateLimit-Policy` and `RateLimit` fields of a limiter decision
/// (draft-ietf-httpapi-ratelimit-headers-10), e.g.
/// `RateLimit-Policy: "default";q=5;w=60` and `RateLimit: "default";r=0;t=37`.
/// Sent on every response of a limited route that reached the limiter,
/// accepted or not. `Retry-After` is not included: the 429
/// ([`ApiError::TooManyRequests`]) adds it.
pub fn rate_limit_fields(decision: &RateLimitDecision) -> Vec<(HeaderName, HeaderValue)> {
    [
        (
            &RATELIMIT_POLICY,
            field("q", decision.limit.into(), "w", decision.window_s),
        ),
        (
            &RATELIMIT,
            field("r", decision.remaining.into(), "t", decision.reset_after_s),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|value| (name.clone(), value)))
    .collect()
}

/// `"default";<a>=<x>;<b>=<y>`, e.g. `"default";q=5;w=60`: one structured
/// field item with two integer parameters, built without `format!` (it is on
/// every ingest). Plain ASCII, so the conversion cannot fail; a failure
/// would drop the field rather than panic.
fn field(a: &str, x: u64, b: &str, y: u64) -> Option<HeaderValue> {
    let (mut x_digits, mut y_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
    let text = [
        "\"",
        POLICY_NAME,
        "\";",
        a,
        "=",
        x_digits.format(x),
        ";",
        b,
        "=",
        y_digits.format(y),
    ]
    .concat();
    HeaderValue::try_from(text).ok()
}

impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> Self {
        Self::redis(&err)
    }
}

/// A JSON response with `status`. Serialisation of the service's own types
/// cannot fail (no maps with non-string keys, no non-finite floats reach it);
/// should it ever, the body is an empty object rather than a panic.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// Turns a handler's result into the response sent, whatever happened.
pub fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(ApiError::into_response)
}

/// The raw bytes of the request body. API Gateway delivers binary payloads
/// base64-encoded; `lambda_http` has already decoded them into
/// [`Body::Binary`].
pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    }
}

/// The Lambda request id of this invocation, or a fresh UUID when the request
/// did not come through the Lambda runtime (in-process tests).
pub fn request_id(req: &Request) -> String {
    use lambda_http::RequestExt;
    req.lambda_context_ref()
        .map(|ctx| ctx.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Who sent `req`: [`identify`] with its `x-api-key` header
/// ([`API_KEY_HEADER`]) and the source address API Gateway put in the
/// request context (`requestContext.http.sourceIp` in payload v2,
/// `requestContext.identity.sourceIp` in v1). No other header is read.
///
/// # Errors
/// [`ApiError::Unauthorized`] when API keys are configured and the request's
/// is missing or unknown.
pub fn client_identity(req: &Request, api_key_digests: &[[u8; 32]]) -> Result<ClientId, ApiError> {
    let key = req
        .headers()
        .get(API_KEY_HEADER)
        .map(|value| value.as_bytes());
    Ok(identify(key, source_ip(req), api_key_digests)?)
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
mod identity_tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::identity::ClientId;
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayProxyRequestContext, ApiGatewayV2httpRequestContext,
    };
    use lambda_http::request::RequestContext;
    use lambda_http::Body;
    use lambda_http::RequestExt;

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

#[cfg(test)]
mod rate_limit_tests {
    use lambda_http::http::header::{CONTENT_TYPE, RETRY_AFTER};

    use super::*;
    use crate::rate_limit::tests::decision;

    #[test]
    fn headers_follow_the_draft_syntax() {
        let d = decision((0, 0, 36_200_000, 36_200_000));
        let headers = rate_limit_fields(&d);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].0.as_str(), "ratelimit-policy");
        assert_eq!(headers[0].1, "\"default\";q=5;w=60");
        assert_eq!(headers[1].0.as_str(), "ratelimit");
        assert_eq!(headers[1].1, "\"default\";r=0;t=37");
    }

    #[test]
    fn a_rejection_becomes_a_429_problem_with_retry_after_and_fields() {
        let response = decision((0, 0, 1_500_000, 1_500_000));
        let response = ApiError::TooManyRequests(response).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(headers[RETRY_AFTER], "2");
        assert_eq!(headers["ratelimit"], "\"default\";r=0;t=2");
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=5;w=60");
        assert_eq!(headers[CONTENT_TYPE], PROBLEM_JSON);
    }
}
