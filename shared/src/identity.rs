//! Who is calling: the identity the rate limiter and the idempotency records
//! key on, and the API-key check.
//!
//! A client must not be able to choose its own identity, or it could spread
//! its requests over as many rate-limit buckets as it likes. So the identity
//! comes only from what the client cannot forge:
//!
//! * with `API_KEYS_SHA256` configured, the SHA-256 digest of the `x-api-key`
//!   it presented, which must be one of the configured digests (401
//!   otherwise). A known key is an identity by itself: no address is read.
//! * without it, the client's address ([`client_address`]):
//!   - `TRUSTED_PROXY_HOPS=0` (default): the source address **AWS's entry
//!     point** observed and put in the request context
//!     (`requestContext.http.sourceIp` for an HTTP API and a Function URL,
//!     payload v2; `requestContext.identity.sourceIp` for a REST API, v1).
//!     AWS documents it as the source IP of the TCP connection it received,
//!     which the client cannot spoof over TCP. Headers are not read.
//!   - `TRUSTED_PROXY_HOPS=N ≥ 1`, behind N proxies that each append the
//!     address they received the request from to `X-Forwarded-For` (an
//!     Application Load Balancer is one; CloudFront in front of it another):
//!     the N-th entry from the right, the one the outermost trusted proxy
//!     appended. Entries further left are whatever the client sent and are
//!     never used; that is why the right-most untrusted entry is taken and
//!     never the left-most.
//!
//! A request whose client cannot be told this way is refused
//! ([`Unidentified`], naming the setting to fix) rather than pooled with
//! other unidentified requests: one shared bucket would let one client
//! exhaust everyone's quota. `X-Real-IP`, `Forwarded` and every other header
//! are never read.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::settings::{ConfigError, Env};

/// The request header that carries an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The request header trusted proxies append the client's address to.
pub const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// Who may call and how to tell callers apart.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdentitySettings {
    /// `API_KEYS_SHA256`: SHA-256 digests (32 bytes each, given as lowercase
    /// hex, comma-separated) of the accepted API keys. Empty (default): no
    /// API key needed, clients are told apart by source address.
    pub api_key_digests: Vec<[u8; 32]>,
    /// `TRUSTED_PROXY_HOPS`, default 0 (0..=10): how many proxies in front
    /// of the function append to `X-Forwarded-For` (1 behind an Application
    /// Load Balancer); see the module's documentation.
    pub trusted_proxy_hops: u8,
}

impl fmt::Debug for IdentitySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySettings")
            .field("api_keys", &self.api_key_digests.len())
            .field("trusted_proxy_hops", &self.trusted_proxy_hops)
            .finish()
    }
}

impl IdentitySettings {
    /// Reads `API_KEYS_SHA256` and `TRUSTED_PROXY_HOPS`.
    ///
    /// # Errors
    /// A [`ConfigError`] for `API_KEYS_SHA256` when an entry is not 64 hex
    /// characters, for `TRUSTED_PROXY_HOPS` when it is not an integer in
    /// 0..=10.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let api_key_digests = match env.optional("API_KEYS_SHA256") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|d| parse_digest(d.trim()))
                .collect::<Result<_, _>>()
                .map_err(|reason| ConfigError::new("API_KEYS_SHA256", reason))?,
        };
        let trusted_proxy_hops = env.int("TRUSTED_PROXY_HOPS", 0, 0..=10)? as u8;
        Ok(Self {
            api_key_digests,
            trusted_proxy_hops,
        })
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
///   addresses; IPv4-mapped IPv6 addresses count as their IPv4 address.
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

/// Why a request's client address could not be determined. Each message
/// names `TRUSTED_PROXY_HOPS`, the setting that decides where the address is
/// read, and never quotes an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unidentified {
    /// `TRUSTED_PROXY_HOPS=0` and the event carries no source address in its
    /// request context (an Application Load Balancer's never does).
    #[error(
        "the request carries no source address in its request context (an Application Load \
         Balancer reports the client only in X-Forwarded-For); set TRUSTED_PROXY_HOPS to the \
         number of proxies in front of the function that append to X-Forwarded-For (1 behind \
         an Application Load Balancer)"
    )]
    NoSourceAddress,
    /// `TRUSTED_PROXY_HOPS=0` and the request context's source address is
    /// not an IP address.
    #[error(
        "the source address of the request context is not an IP address (TRUSTED_PROXY_HOPS=0 \
         reads the client from it)"
    )]
    InvalidSourceAddress,
    /// Fewer entries in `X-Forwarded-For` than trusted proxies.
    #[error(
        "X-Forwarded-For holds {found} proxy-appended address(es), fewer than \
         TRUSTED_PROXY_HOPS={hops}: the request did not come through that many proxies; set \
         TRUSTED_PROXY_HOPS to the number of proxies in front of the function"
    )]
    TooFewForwarded {
        /// Entries found (not counting the one API Gateway or a Function
        /// URL appends itself).
        found: usize,
        /// `TRUSTED_PROXY_HOPS`.
        hops: u8,
    },
    /// The entry the outermost trusted proxy appended is not an address.
    #[error(
        "entry {hops} from the right of X-Forwarded-For is not an IP address \
         (TRUSTED_PROXY_HOPS={hops} reads the client from it)"
    )]
    InvalidForwarded {
        /// `TRUSTED_PROXY_HOPS`.
        hops: u8,
    },
}

/// The client's address, read as `hops` (`TRUSTED_PROXY_HOPS`) says (see
/// the module's documentation).
///
/// `source_address` is the request context's source address as the event
/// gave it (`None` for an ALB's event); `forwarded_for` the values of every
/// `X-Forwarded-For` field of the request, in order (entries are separated
/// by commas across and within fields).
///
/// With `hops = 0`, the source address. With `hops = N ≥ 1`, the N-th
/// entry from the right of `X-Forwarded-For`, after dropping the last entry
/// when it is the source address itself: API Gateway and Function URLs
/// append the address they observed, the one their event also reports, and
/// that address is a proxy's when N proxies stand in front of them. An
/// entry is an IPv4 or IPv6 address, optionally with a port as an ALB
/// writes it with client port preservation (`203.0.113.7:4711`,
/// `[2001:db8::1]:4711`) or in brackets (`[2001:db8::1]`); surrounding
/// spaces are ignored.
///
/// # Errors
/// [`Unidentified`] when the address asked for is missing or not an
/// address.
pub fn client_address(
    source_address: Option<&str>,
    forwarded_for: &[&[u8]],
    hops: u8,
) -> Result<IpAddr, Unidentified> {
    if hops == 0 {
        let source = source_address.ok_or(Unidentified::NoSourceAddress)?;
        return parse_address(source.as_bytes()).ok_or(Unidentified::InvalidSourceAddress);
    }
    let entries: Vec<&[u8]> = forwarded_for
        .iter()
        .flat_map(|field| field.split(|b| *b == b','))
        .collect();
    let mut appended = entries.as_slice();
    let source = source_address.and_then(|s| parse_address(s.as_bytes()));
    if let (Some(source), Some((last, rest))) = (source, appended.split_last()) {
        if parse_address(last).map(|a| a.to_canonical()) == Some(source.to_canonical()) {
            appended = rest;
        }
    }
    let hops_usize = usize::from(hops);
    let Some(at) = appended.len().checked_sub(hops_usize) else {
        return Err(Unidentified::TooFewForwarded {
            found: appended.len(),
            hops,
        });
    };
    parse_address(appended[at]).ok_or(Unidentified::InvalidForwarded { hops })
}

/// One address as proxies and AWS write it: `IPv4`, `IPv6`, `IPv4:port`,
/// `[IPv6]:port` or `[IPv6]`, with optional surrounding spaces or tabs.
fn parse_address(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?.trim_matches([' ', '\t']);
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(addr);
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// Why a caller could not be identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// API keys are configured and the request's is missing, empty or not
    /// listed.
    #[error("a valid x-api-key header is required")]
    Unauthorized,
    /// No API keys are configured and the client's address could not be
    /// determined.
    #[error("the client could not be identified: {0}")]
    Unidentified(#[from] Unidentified),
}

/// Determines who sent a request from the `x-api-key` it presented and its
/// client's address.
///
/// `api_key_digests` is `API_KEYS_SHA256` (SHA-256 digests, 32 bytes each).
/// When it is non-empty, `presented_key` must be present and its SHA-256
/// digest in the list; the identity is then [`ClientId::api_key`], and
/// `address` is never called. The digest is compared with every configured
/// digest in constant time (`subtle`), so the response time does not reveal
/// how much of a digest matched or which entry did. The key is never
/// logged.
///
/// When the list is empty, the identity is the address `address` determines
/// (usually [`client_address`]), as [`ClientId::ip`].
///
/// # Errors
/// [`IdentityError::Unauthorized`] when keys are configured and the key is
/// missing, empty or its digest is not listed;
/// [`IdentityError::Unidentified`] when no keys are configured and
/// `address` fails (a warning is logged with the reason).
pub fn identify(
    presented_key: Option<&[u8]>,
    address: impl FnOnce() -> Result<IpAddr, Unidentified>,
    api_key_digests: &[[u8; 32]],
) -> Result<ClientId, IdentityError> {
    if api_key_digests.is_empty() {
        return match address() {
            Ok(addr) => Ok(ClientId::ip(addr)),
            Err(reason) => {
                tracing::warn!(%reason, "request refused: its client could not be identified");
                Err(reason.into())
            }
        };
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The address for a source address and one X-Forwarded-For field.
    fn address(source: Option<&str>, xff: Option<&str>, hops: u8) -> Result<IpAddr, Unidentified> {
        let fields: Vec<&[u8]> = xff.map(str::as_bytes).into_iter().collect();
        client_address(source, &fields, hops)
    }

    #[test]
    fn ipv6_addresses_are_grouped_by_their_64_bit_network() {
        let a = ClientId::ip(ip("2001:db8:1:2::1"));
        let b = ClientId::ip(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let c = ClientId::ip(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            ClientId::ip(ip("::ffff:203.0.113.7")).as_str(),
            "ip:203.0.113.7"
        );
    }

    #[test]
    fn without_keys_the_address_decides_and_without_one_the_request_is_refused() {
        let from = |addr: &str| identify(Some(b"k"), || Ok(ip(addr)), &[]);
        assert_eq!(from("203.0.113.7").unwrap().as_str(), "ip:203.0.113.7");
        assert_eq!(
            identify(None, || Err(Unidentified::NoSourceAddress), &[]),
            Err(IdentityError::Unidentified(Unidentified::NoSourceAddress))
        );
    }

    #[test]
    fn a_known_key_needs_no_address() {
        let digest: [u8; 32] = Sha256::digest(b"alpha").into();
        let id = identify(
            Some(b"alpha"),
            || panic!("the address is not read when keys are configured"),
            &[digest],
        );
        assert_eq!(id.unwrap(), ClientId::api_key(&digest));
    }

    #[test]
    fn with_no_trusted_proxy_the_source_address_is_the_client_and_headers_are_ignored() {
        let xff = Some("192.0.2.1, 192.0.2.2");
        assert_eq!(address(Some("203.0.113.7"), xff, 0), Ok(ip("203.0.113.7")));
        assert_eq!(
            address(Some(" 2001:db8::1 "), None, 0),
            Ok(ip("2001:db8::1"))
        );
        assert_eq!(address(None, xff, 0), Err(Unidentified::NoSourceAddress));
        assert_eq!(
            address(Some("not an address"), xff, 0),
            Err(Unidentified::InvalidSourceAddress)
        );
    }

    #[test]
    fn behind_proxies_the_entry_the_outermost_one_appended_is_the_client() {
        // An ALB (1 hop) appends its peer: the right-most entry.
        let alb = "198.51.100.9, 203.0.113.7";
        assert_eq!(address(None, Some(alb), 1), Ok(ip("203.0.113.7")));
        // CloudFront then an ALB (2 hops): CloudFront appended the client,
        // the ALB CloudFront's address.
        let two = "192.0.2.66, 203.0.113.7, 130.176.0.1";
        assert_eq!(address(None, Some(two), 2), Ok(ip("203.0.113.7")));
        // Entries are counted across repeated fields, in order.
        let fields: [&[u8]; 2] = [b"192.0.2.66, 203.0.113.7", b"130.176.0.1"];
        assert_eq!(client_address(None, &fields, 2), Ok(ip("203.0.113.7")));
        // In front of API Gateway or a Function URL, which append (and
        // report) the address they observed: that entry is not a hop.
        let url = "192.0.2.66, 203.0.113.7, 130.176.0.1";
        assert_eq!(
            address(Some("130.176.0.1"), Some(url), 1),
            Ok(ip("203.0.113.7"))
        );
        // ... and when they did not append it, nothing is dropped.
        let url = "192.0.2.66, 203.0.113.7";
        assert_eq!(
            address(Some("130.176.0.1"), Some(url), 1),
            Ok(ip("203.0.113.7"))
        );
    }

    #[test]
    fn ports_brackets_spaces_and_ipv6_are_read() {
        for (entry, expected) in [
            ("203.0.113.7:4711", "203.0.113.7"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("  2001:db8::1\t", "2001:db8::1"),
            ("::ffff:203.0.113.7", "::ffff:203.0.113.7"),
        ] {
            let xff = format!("192.0.2.1,{entry}");
            assert_eq!(address(None, Some(&xff), 1), Ok(ip(expected)), "{entry:?}");
        }
    }

    #[test]
    fn too_few_or_garbled_entries_are_refused_naming_the_setting() {
        assert_eq!(
            address(None, None, 1),
            Err(Unidentified::TooFewForwarded { found: 0, hops: 1 })
        );
        assert_eq!(
            address(None, Some("203.0.113.7"), 2),
            Err(Unidentified::TooFewForwarded { found: 1, hops: 2 })
        );
        // The entry API Gateway appended itself is not a proxy's.
        assert_eq!(
            address(Some("203.0.113.7"), Some("203.0.113.7"), 1),
            Err(Unidentified::TooFewForwarded { found: 0, hops: 1 })
        );
        for garbage in [
            "unknown",
            "",
            "203.0.113",
            "203.0.113.7:99999",
            "[::1",
            "1.2.3.4 5.6.7.8",
        ] {
            let xff = format!("192.0.2.1, {garbage}");
            assert_eq!(
                address(None, Some(&xff), 1),
                Err(Unidentified::InvalidForwarded { hops: 1 }),
                "{garbage:?}"
            );
        }
        let invalid_utf8: [&[u8]; 1] = [b"192.0.2.1, \xff\xfe"];
        assert_eq!(
            client_address(None, &invalid_utf8, 1),
            Err(Unidentified::InvalidForwarded { hops: 1 })
        );
        // Garbage the client put further left is never read.
        assert_eq!(
            address(None, Some("<script>, , 203.0.113.7"), 1),
            Ok(ip("203.0.113.7"))
        );
        for err in [
            Unidentified::NoSourceAddress,
            Unidentified::InvalidSourceAddress,
            Unidentified::TooFewForwarded { found: 0, hops: 1 },
            Unidentified::InvalidForwarded { hops: 1 },
        ] {
            assert!(err.to_string().contains("TRUSTED_PROXY_HOPS"), "{err}");
        }
    }
}
