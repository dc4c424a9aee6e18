//! Shared support for the integration tests (`tests/tests/*.rs`).
//!
//! - Isolation: every test works under its own random key prefix
//!   ([`random_prefix`], [`config`]) on the one real Redis at [`redis_url`],
//!   so tests run in parallel without touching each other's keys (never
//!   `FLUSHALL`/`FLUSHDB`). When no Redis is configured or running,
//!   [`redis_url`] starts a private one for the test binary, so a plain
//!   `cargo test --workspace` needs only the `redis-server` binary.
//! - Synthetic Lambda events: [`events`] (the `synthetic-events` crate, which
//!   the benchmarks use too) builds `lambda_http::Request`s by deserialising
//!   API Gateway JSON events (HTTP API payload v2.0 and REST API v1) with
//!   `lambda_http::request::from_str`, the same path Lambda's runtime takes,
//!   so handlers see exactly what they would see in AWS.
//! - A scriptable local HTTP server for the external data source: [`stub`].
//! - The end-to-end suite's stacks (`cargo lambda watch` per group): [`e2e`].
//! - Child processes that die with the test binary: [`process`].

pub mod e2e;
pub mod logs;
pub mod private_cluster;
pub mod private_redis;
pub mod process;
pub mod stub;

use std::sync::OnceLock;
use std::time::Duration;

use shared::config::Config;

pub use stub::{Stub, StubReply};
pub use synthetic_events as events;
pub use synthetic_events::{alb, alb_multi_value, function_url, http_v2, rest_v1, EventBuilder};

/// The service's default `REDIS_URL`.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// The Redis the tests use, decided once per test binary:
/// 1. `REDIS_URL` from the environment, when set and not empty (used as
///    given: a Redis that does not answer there fails the tests that need it);
/// 2. else `redis://127.0.0.1:6379/0` when a Redis answers `PING` there;
/// 3. else a [`PrivateRedis`](private_redis::PrivateRedis) started for this
///    test binary on a free port and stopped when it exits.
///
/// Panics in case 3 when no `redis-server` can be started. With
/// `REDIS_MODE=cluster`, `REDIS_URL` names any one node of a Redis Cluster
/// (`redis://127.0.0.1:7000` for `scripts/redis-cluster.sh`'s): the whole
/// in-process suite then runs against the cluster.
pub fn redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = std::env::var("REDIS_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
        {
            return url;
        }
        if redis_answers(DEFAULT_REDIS_URL) {
            return DEFAULT_REDIS_URL.to_string();
        }
        let server = private_redis::PrivateRedis::start();
        let url = server.url();
        process::at_exit(move || drop(server));
        url
    })
    .clone()
}

/// True when a Redis at `url` answers `PING` within a second.
pub fn redis_answers(url: &str) -> bool {
    let ping = || -> redis::RedisResult<String> {
        let mut connection =
            redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(1))?;
        redis::cmd("PING").query(&mut connection)
    };
    ping().is_ok_and(|reply| reply == "PONG")
}

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago (the
/// kernel's pick of an ephemeral port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral port on 127.0.0.1")
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
        .expect("the test Redis answers at redis_url()");
    redis
}

/// Reports that the test `what` did not run because of `reason`, so that it
/// is never counted as passed unnoticed: a `SKIPPED` line on stderr (written
/// to the stream itself, past the test harness's output capture) and, when
/// `SKIPPED_TESTS_FILE` names a file (`make test` sets it), the same line
/// appended there for the run's closing summary.
pub fn report_skipped(what: &str, reason: &str) {
    use std::io::Write;
    let line = format!("SKIPPED {what}: {reason}");
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Some(path) = std::env::var_os("SKIPPED_TESTS_FILE").filter(|p| !p.is_empty()) {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
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
