//! Who is calling: the identity the rate limiter and the idempotency records
//! key on, and the API-key check.
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

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::settings::{ConfigError, Env};

/// The request header that carries an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Who may call: the accepted API keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdentitySettings {
    /// `API_KEYS_SHA256`: SHA-256 digests (32 bytes each, given as lowercase
    /// hex, comma-separated) of the accepted API keys. Empty (default): no
    /// API key needed, clients are told apart by source address.
    pub api_key_digests: Vec<[u8; 32]>,
}

impl fmt::Debug for IdentitySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySettings")
            .field("api_keys", &self.api_key_digests.len())
            .finish()
    }
}

impl IdentitySettings {
    /// Reads `API_KEYS_SHA256`.
    ///
    /// # Errors
    /// A [`ConfigError`] for `API_KEYS_SHA256` when an entry is not 64 hex
    /// characters.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let api_key_digests = match env.optional("API_KEYS_SHA256") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|d| parse_digest(d.trim()))
                .collect::<Result<_, _>>()
                .map_err(|reason| ConfigError::new("API_KEYS_SHA256", reason))?,
        };
        Ok(Self { api_key_digests })
    }
}

fn parse_digest(hex_digest: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_digest)
        .map_err(|_| format!("{hex_digest:?} is not a hex SHA-256 digest"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{hex_digest:?} is not 64 hex characters (a SHA-256 digest)"))
}

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

/// Why a caller could not be identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// API keys are configured and the request's is missing, empty or not
    /// listed.
    #[error("a valid x-api-key header is required")]
    Unauthorized,
}

/// Determines who sent a request from the `x-api-key` it presented and the
/// source address API Gateway observed.
///
/// `api_key_digests` is `API_KEYS_SHA256` (SHA-256 digests, 32 bytes each).
/// When it is non-empty, `presented_key` must be present and its SHA-256
/// digest in the list; the identity is then [`ClientId::api_key`].
/// The digest is compared with every configured digest in constant time
/// (`subtle`), so the response time does not reveal how much of a digest
/// matched or which entry did. The key is never logged.
///
/// When the list is empty, the identity is `source_ip` ([`ClientId::ip`]);
/// without one, [`ClientId::unknown`] and a warning is logged. Client-set
/// headers such as `X-Forwarded-For` are never a source of identity: the
/// caller passes only the address from API Gateway's request context.
///
/// # Errors
/// [`IdentityError::Unauthorized`] when keys are configured and the key is
/// missing, empty or its digest is not listed.
pub fn identify(
    presented_key: Option<&[u8]>,
    source_ip: Option<IpAddr>,
    api_key_digests: &[[u8; 32]],
) -> Result<ClientId, IdentityError> {
    if api_key_digests.is_empty() {
        return Ok(source_ip.map_or_else(
            || {
                tracing::warn!(
                    "request has no source IP in its API Gateway context; it shares the rate-limit bucket `unknown`"
                );
                ClientId::unknown()
            },
            ClientId::ip,
        ));
    }
    let presented = presented_key
        .filter(|key| !key.is_empty())
        .ok_or(IdentityError::Unauthorized)?;
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
        Err(IdentityError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn without_keys_the_source_address_decides() {
        let ip = "203.0.113.7".parse().ok();
        assert_eq!(
            identify(Some(b"k"), ip, &[]).unwrap().as_str(),
            "ip:203.0.113.7"
        );
        assert_eq!(identify(None, None, &[]).unwrap(), ClientId::unknown());
    }
}
