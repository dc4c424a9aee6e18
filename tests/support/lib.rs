//! Shared support for the integration tests (`tests/tests/*.rs`).
//!
//! - Isolation: every test works under its own random key prefix
//!   ([`random_prefix`], [`config`]) on the one real Redis at [`redis_url`],
//!   so tests run in parallel without touching each other's keys (never
//!   `FLUSHALL`/`FLUSHDB`).
//! - Synthetic Lambda events: [`events`] (the `synthetic-events` crate, which
//!   the benchmarks use too) builds `lambda_http::Request`s by deserialising
//!   API Gateway JSON events (HTTP API payload v2.0 and REST API v1) with
//!   `lambda_http::request::from_str`, the same path Lambda's runtime takes,
//!   so handlers see exactly what they would see in AWS.
//! - A scriptable local HTTP server for the external data source: [`stub`].
//! - The end-to-end suite's view of the stack `make test` started: [`e2e`].

pub mod e2e;
pub mod private_cluster;
pub mod private_redis;
pub mod stub;

use shared::config::Config;

pub use stub::{Stub, StubReply};
pub use synthetic_events as events;
pub use synthetic_events::{http_v2, rest_v1, EventBuilder};

/// The Redis the tests use: `REDIS_URL` from the environment, else the local
/// default `redis://127.0.0.1:6379/0`. With `REDIS_MODE=cluster`, any one
/// node of a Redis Cluster (`redis://127.0.0.1:7000` for
/// `scripts/redis-cluster.sh`'s): the whole in-process suite then runs
/// against the cluster.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".to_string())
}

/// `REDIS_MODE` from the environment (`standalone` or `cluster`), else
/// `standalone`: how [`config`] and [`redis_connection`] reach
/// [`redis_url`].
pub fn redis_mode() -> String {
    std::env::var("REDIS_MODE")
        .ok()
        .map(|mode| mode.trim().to_string())
        .filter(|mode| !mode.is_empty())
        .unwrap_or_else(|| "standalone".to_string())
}

/// Whether the suite runs against a Redis Cluster (`REDIS_MODE=cluster`).
pub fn cluster_mode() -> bool {
    redis_mode() == "cluster"
}

/// A fresh key prefix, `test-<32 hex digits>`, valid for `REDIS_KEY_PREFIX`.
pub fn random_prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// A fresh metric type, `<label>_<12 hex digits>` (valid: `A-Za-z0-9_.-`,
/// at most 64 characters for a label up to 51 characters), so that tests
/// sharing one stack or one prefix never see each other's data or cache
/// entries.
pub fn random_type(label: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{label}_{}", &id[..12])
}

/// A [`Config`] for one test: `REDIS_URL` = [`redis_url`], `REDIS_MODE` =
/// [`redis_mode`], a fresh
/// [`random_prefix`], the defaults for everything else, then `pairs`
/// (`("VARIABLE", "value")`, as in `.env`), which override both.
///
/// Panics when a pair is invalid (a test's own mistake).
pub fn config(pairs: &[(&str, &str)]) -> Config {
    config_with_prefix(&random_prefix(), pairs)
}

/// Like [`config`] with a given prefix, for several handler states ("Lambda
/// instances") that must share one deployment's keys.
pub fn config_with_prefix(prefix: &str, pairs: &[(&str, &str)]) -> Config {
    let (url, mode) = (redis_url(), redis_mode());
    let mut all: Vec<(&str, &str)> = vec![
        ("REDIS_URL", &url),
        ("REDIS_MODE", &mode),
        ("REDIS_KEY_PREFIX", prefix),
    ];
    all.extend_from_slice(pairs);
    Config::from_pairs(&all).unwrap_or_else(|e| panic!("test configuration: {e}"))
}

/// The raw bytes of a handler's response body.
pub fn body_bytes(response: &lambda_http::Response<lambda_http::Body>) -> &[u8] {
    match response.body() {
        lambda_http::Body::Text(text) => text.as_bytes(),
        lambda_http::Body::Binary(bytes) => bytes,
        _ => b"",
    }
}

/// A handler's response body as JSON, or `Value::Null` when it is not JSON.
pub fn body_json(response: &lambda_http::Response<lambda_http::Body>) -> serde_json::Value {
    serde_json::from_slice(body_bytes(response)).unwrap_or(serde_json::Value::Null)
}

/// A connection to the test Redis (one node or, with `REDIS_MODE=cluster`,
/// the cluster, each command routed by its key), for looking at what the
/// service wrote (TTLs, key shapes). Only ever touch keys under your own
/// prefix, and one hash slot per command.
pub async fn redis_connection() -> shared::connection::Redis {
    let config = config(&[]);
    let redis = shared::connection::Redis::from_settings(&config.redis)
        .expect("REDIS_URL is a valid Redis URL");
    let _: String = redis::cmd("PING")
        .query_async(&mut redis.clone())
        .await
        .expect("the test Redis answers (make test starts one)");
    redis
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_types_are_fresh_and_valid() {
        let (a, b) = (random_prefix(), random_prefix());
        assert_ne!(a, b);
        assert!(a.starts_with("test-") && a.len() == 37);
        let t = random_type("cpu_usage");
        assert!(t.len() <= 64);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
    }

    #[test]
    fn config_applies_prefix_and_overrides() {
        let c = config(&[("RATE_LIMIT_REQUESTS", "7")]);
        assert!(c.redis.key_prefix.starts_with("test-"));
        assert_eq!(c.rate_limit.requests, 7);
        assert_eq!(c.redis.url, redis_url());
        let shared = config_with_prefix("test-shared", &[]);
        assert_eq!(shared.redis.key_prefix, "test-shared");
    }
}
