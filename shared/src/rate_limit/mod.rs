//! Per-client rate limiting, shared by every function instance through Redis.
//!
//! Each check is **one atomic Lua script call** (one round trip) that reads the
//! clock with `redis.call('TIME')`, decides, and records an accepted request,
//! so any number of concurrent Lambda instances see one consistent state and
//! one clock. A rejected request is read-only in Redis: it consumes no quota,
//! stores nothing and cannot extend its own block. Every key written carries a
//! TTL of at most two windows. The scripts are sent with `EVALSHA`;
//! after `NOSCRIPT` (a restart, a failover or `SCRIPT FLUSH`) the connection
//! sends the body with `EVAL` instead ([`crate::connection::script`]).
//!
//! `RATE_LIMIT_ALGORITHM` picks the algorithm; `limit` is
//! `RATE_LIMIT_REQUESTS` and `window` is `RATE_LIMIT_WINDOW_SECONDS`:
//!
//! | algorithm | guarantee | memory per client |
//! |---|---|---|
//! | `sliding_log` (default) | exact: at most `limit` accepted in **any** rolling window | O(limit): one sorted-set entry per request accepted in the last window |
//! | `sliding_window_counter` | approximate; at most `limit` per fixed window, up to `2·limit − 1` in a rolling window when the previous window's requests came late in it | O(1): one hash of three integers |
//! | `token_bucket` | bursts of up to `limit`, then one request per `window / limit`; at most `limit + ⌊D·limit/window⌋` in any interval of length D | O(1): one string |
//!
//! * **Sliding log**: the log of accepted request times, trimmed to the window
//!   (the "sliding log" of Figma's "An alternative approach to rate limiting",
//!   2017, kept in a sorted set). Exact, at the price of memory proportional
//!   to the limit: at most `limit` entries, each a 16-digit member and its
//!   score.
//! * **Sliding window counter**: Cloudflare's two-counter approximation ("How
//!   we built rate limiting capable of scaling to millions of domains", 2017):
//!   `previous · (window − elapsed) / window + current`. It assumes the
//!   previous fixed window's requests were evenly spread; when they cluster
//!   at its end it over-admits (worst case `2·limit − 1` in one rolling
//!   window), when they cluster at its start it under-admits.
//! * **Token bucket**: GCRA, the generic cell rate algorithm (ITU-T I.371),
//!   storing one theoretical arrival time per client, as redis-cell (Brandur
//!   Leach), go-redis/redis_rate and Brandur Leach's `throttled` do.
//!
//! Three policies share the algorithm and the window, each counted on keys
//! of its own so that no route spends another's budget: `default`
//! (`POST /api/metrics`, `RATE_LIMIT_REQUESTS`), `summary` (the summaries
//! that cost work, `SUMMARY_RATE_LIMIT_REQUESTS`) and `series` (likewise,
//! `SERIES_RATE_LIMIT_REQUESTS`). What a read counts for is the HTTP edge's
//! decision: only requests the cache's plain read did not answer.
//!
//! The result is a typed [`RateLimitDecision`]: accepted or refused, the
//! policy (its name, limit per window), what remains, when it resets and, when refused,
//! when to retry (at least one second, computed from the state: when the next
//! slot frees), so a client that waits that long and retries is accepted. The
//! HTTP edge turns it into the `RateLimit-Policy` and `RateLimit` fields of
//! draft-ietf-httpapi-ratelimit-headers-10 and, when refused, a 429 with
//! `Retry-After` (RFC 9110 §10.2.3).

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{FromRedisValue, ParsingError, RedisError, Script, Value};

use crate::connection::{Redis, ReplyFields};
use crate::identity::ClientId;
use crate::keys::Keys;
use crate::settings::{ConfigError, Env};

/// Why a check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// Redis failed or timed out (after `REDIS_TIMEOUT_MS`), or the script's
    /// reply did not have its shape; nothing is known to be counted.
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// The name of the ingest policy in the `RateLimit` fields (`POST /api/metrics`).
pub const POLICY_NAME: &str = "default";
/// The name of the summaries' policy (`GET /api/metrics/summary`).
pub const SUMMARY_POLICY_NAME: &str = "summary";
/// The name of the series' policy (`GET /api/metrics/series`).
pub const SERIES_POLICY_NAME: &str = "series";

/// Which rate-limiting algorithm guards `POST /api/metrics`
/// (`RATE_LIMIT_ALGORITHM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitAlgorithm {
    /// Exact sliding log: one sorted-set entry per accepted request, O(limit)
    /// memory per client.
    SlidingLog,
    /// Two fixed-window counters, the previous one weighted by its overlap with
    /// the rolling window: O(1) memory, approximate.
    SlidingWindowCounter,
    /// GCRA (the generic cell rate algorithm, a token bucket kept as one
    /// theoretical arrival time per client).
    TokenBucket,
}

impl RateLimitAlgorithm {
    /// The name used in configuration and in Redis keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlidingLog => "sliding_log",
            Self::SlidingWindowCounter => "sliding_window_counter",
            Self::TokenBucket => "token_bucket",
        }
    }
}

impl FromStr for RateLimitAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sliding_log" => Ok(Self::SlidingLog),
            "sliding_window_counter" => Ok(Self::SlidingWindowCounter),
            "token_bucket" => Ok(Self::TokenBucket),
            other => Err(format!(
                "unknown algorithm {other:?}; expected sliding_log, sliding_window_counter or token_bucket"
            )),
        }
    }
}

impl fmt::Display for RateLimitAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limiter's settings.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// `RATE_LIMIT_REQUESTS`, default 5 (1..=1 000 000): requests allowed per
    /// window per client.
    pub requests: u32,
    /// `RATE_LIMIT_WINDOW_SECONDS`, default 60 (1..=86 400).
    pub window: Duration,
    /// `RATE_LIMIT_ALGORITHM`, default `sliding_log`.
    pub algorithm: RateLimitAlgorithm,
    /// `SUMMARY_RATE_LIMIT_REQUESTS`, default 120 (1..=1 000 000): summary
    /// requests that cost work (cache misses and `no-cache` refreshes)
    /// allowed per window per client, counted apart from ingests and series.
    pub summary_requests: u32,
    /// `SERIES_RATE_LIMIT_REQUESTS`, default 60 (1..=1 000 000): series
    /// requests that cost work (cache misses and `no-cache` refreshes)
    /// allowed per window per client, counted apart from ingests and
    /// summaries.
    pub series_requests: u32,
}

impl RateLimitSettings {
    /// Reads and validates the `RATE_LIMIT_*` variables.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            requests: env.int("RATE_LIMIT_REQUESTS", 5, 1..=1_000_000)? as u32,
            window: env.seconds("RATE_LIMIT_WINDOW_SECONDS", 60, 1..=86_400)?,
            algorithm: env.parse("RATE_LIMIT_ALGORITHM", RateLimitAlgorithm::SlidingLog)?,
            summary_requests: env.int("SUMMARY_RATE_LIMIT_REQUESTS", 120, 1..=1_000_000)? as u32,
            series_requests: env.int("SERIES_RATE_LIMIT_REQUESTS", 60, 1..=1_000_000)? as u32,
        })
    }
}

const SLIDING_LOG_LUA: &str = include_str!("sliding_log.lua");
const SLIDING_WINDOW_COUNTER_LUA: &str = include_str!("sliding_window_counter.lua");
const TOKEN_BUCKET_LUA: &str = include_str!("token_bucket.lua");

/// The Lua source of `algorithm`'s script, for a script that runs the check
/// together with other work in one call: its `KEYS[1]` and `ARGV[1..3]` are
/// those [`RateLimiter::add_call`] appends, its reply is decoded by
/// [`RateLimiter::decide`].
pub(crate) fn source_of(algorithm: RateLimitAlgorithm) -> &'static str {
    match algorithm {
        RateLimitAlgorithm::SlidingLog => SLIDING_LOG_LUA,
        RateLimitAlgorithm::SlidingWindowCounter => SLIDING_WINDOW_COUNTER_LUA,
        RateLimitAlgorithm::TokenBucket => TOKEN_BUCKET_LUA,
    }
}

static SLIDING_LOG: LazyLock<Script> = LazyLock::new(|| crate::connection::script(SLIDING_LOG_LUA));
static SLIDING_WINDOW_COUNTER: LazyLock<Script> =
    LazyLock::new(|| crate::connection::script(SLIDING_WINDOW_COUNTER_LUA));
static TOKEN_BUCKET: LazyLock<Script> =
    LazyLock::new(|| crate::connection::script(TOKEN_BUCKET_LUA));

/// The reply shared by the three limiter scripts,
/// `{allowed, remaining, reset_after, retry_after}`, decoded here and
/// nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LimiterReply {
    /// `allowed`: 1 if the request was accepted (and recorded), else 0.
    allowed: bool,
    /// `remaining`: requests that would still be accepted right now.
    remaining: i64,
    /// `reset_after`: µs until `remaining` next increases.
    reset_after_us: i64,
    /// `retry_after`: 0 if accepted, else µs until a request would be accepted.
    retry_after_us: i64,
}

impl FromRedisValue for LimiterReply {
    fn from_redis_value(reply: Value) -> Result<Self, ParsingError> {
        let mut fields = ReplyFields::new("rate limiter script", reply)?;
        Ok(Self {
            allowed: fields.take()?,
            remaining: fields.take()?,
            reset_after_us: fields.take()?,
            retry_after_us: fields.take()?,
        })
    }
}

/// The rate limiter of one deployment: the configured algorithm, limit and
/// window, and where its keys live. Built once per cold start; cheap to clone.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    keys: Keys,
    algorithm: RateLimitAlgorithm,
    limit: u32,
    window: Duration,
    /// Names the requests counted apart (`summary_`, `series_`), or empty.
    scope: &'static str,
    /// The policy's name in the `RateLimit` fields.
    policy: &'static str,
}

impl RateLimiter {
    /// A limiter for `settings.requests` requests per `settings.window` per
    /// client with `settings.algorithm`, its keys under `keys`.
    pub fn new(settings: &RateLimitSettings, keys: Keys) -> Self {
        Self {
            keys,
            algorithm: settings.algorithm,
            limit: settings.requests.max(1),
            window: settings.window.max(Duration::from_secs(1)),
            scope: "",
            policy: POLICY_NAME,
        }
    }

    /// The limiter of `GET /api/metrics/summary` (policy `summary`):
    /// `settings.summary_requests` per `settings.window` per client with
    /// `settings.algorithm`, counted apart (its keys end in
    /// `summary_<algorithm>`), so a dashboard's reads never spend a client's
    /// ingest budget.
    pub fn for_summary(settings: &RateLimitSettings, keys: Keys) -> Self {
        Self {
            limit: settings.summary_requests.max(1),
            scope: "summary_",
            policy: SUMMARY_POLICY_NAME,
            ..Self::new(settings, keys)
        }
    }

    /// The limiter of `GET /api/metrics/series` (policy `series`):
    /// `settings.series_requests` per `settings.window` per client with
    /// `settings.algorithm`, counted apart (its keys end in
    /// `series_<algorithm>`).
    pub fn for_series(settings: &RateLimitSettings, keys: Keys) -> Self {
        Self {
            limit: settings.series_requests.max(1),
            scope: "series_",
            policy: SERIES_POLICY_NAME,
            ..Self::new(settings, keys)
        }
    }

    /// The name of this limiter's policy in the `RateLimit` fields.
    pub fn policy(&self) -> &'static str {
        self.policy
    }

    /// The Redis key holding `client`'s state for the configured algorithm
    /// (see [`Keys::rate_limit`]); its hash tag is the client.
    pub fn key(&self, client: &ClientId) -> String {
        if self.scope.is_empty() {
            self.keys
                .rate_limit(client.as_str(), self.algorithm.as_str())
        } else {
            let scoped = format!("{}{}", self.scope, self.algorithm.as_str());
            self.keys.rate_limit(client.as_str(), &scoped)
        }
    }

    /// Checks one request of `client` and, if it is accepted, counts it.
    ///
    /// Exactly one script call (one round trip while the script is cached in
    /// Redis; after `NOSCRIPT` the body is sent once with `EVAL`). The
    /// request is counted whether or not the caller goes on to serve it
    /// successfully: the limiter protects the work of parsing too.
    ///
    /// # Errors
    /// [`RateLimitError::Redis`] when the call fails (connection, timeout
    /// after `REDIS_TIMEOUT_MS`, or a reply of unexpected shape).
    pub async fn check(
        &self,
        redis: &Redis,
        client: &ClientId,
    ) -> Result<RateLimitDecision, RateLimitError> {
        let script: &Script = match self.algorithm {
            RateLimitAlgorithm::SlidingLog => &SLIDING_LOG,
            RateLimitAlgorithm::SlidingWindowCounter => &SLIDING_WINDOW_COUNTER,
            RateLimitAlgorithm::TokenBucket => &TOKEN_BUCKET,
        };
        let mut invocation = script.prepare_invoke();
        self.add_call(&mut invocation, client);
        let reply: LimiterReply = invocation.invoke_async(&mut redis.clone()).await?;
        Ok(self.decision(reply))
    }

    /// The configured algorithm.
    pub(crate) fn algorithm(&self) -> RateLimitAlgorithm {
        self.algorithm
    }

    /// Appends the check of `client` to `invocation`: one key (the
    /// client's state), then three arguments (the limit, the window in µs,
    /// the window in ms rounded up).
    pub(crate) fn add_call(&self, invocation: &mut redis::ScriptInvocation<'_>, client: &ClientId) {
        let window_us = u64::try_from(self.window.as_micros()).unwrap_or(u64::MAX);
        invocation
            .key(self.key(client))
            .arg(self.limit)
            .arg(window_us)
            // The sliding log's expiry when the new entry is its only one, ms
            // rounded up: the most common accepted call then parses and
            // formats no number in the script. The other scripts ignore it.
            .arg(window_us.div_ceil(1000));
    }

    /// The decision a limiter script's reply (`{allowed, remaining,
    /// reset_after, retry_after}`) carries.
    ///
    /// # Errors
    /// A [`ParsingError`] when the reply does not have that shape.
    pub(crate) fn decide(&self, reply: Value) -> Result<RateLimitDecision, ParsingError> {
        Ok(self.decision(LimiterReply::from_redis_value(reply)?))
    }

    fn decision(&self, reply: LimiterReply) -> RateLimitDecision {
        RateLimitDecision::from_reply(self.policy, self.limit, self.window, reply)
    }
}

/// The outcome of one [`RateLimiter::check`]. Times are whole seconds,
/// rounded up from the scripts' microseconds so that waiting them out is
/// always enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitDecision {
    /// Whether the request was accepted (and counted).
    pub allowed: bool,
    /// The policy's name (`default`, `summary`, `series`), the item name of
    /// both `RateLimit` fields.
    pub policy: &'static str,
    /// The quota: requests per window (`q` of `RateLimit-Policy`).
    pub limit: u32,
    /// The window, seconds (`w` of `RateLimit-Policy`).
    pub window_s: u64,
    /// Requests that would still be accepted right now (`r` of `RateLimit`);
    /// 0 when rejected.
    pub remaining: u32,
    /// Seconds until `remaining` next increases (`t` of `RateLimit`), ≥ 1;
    /// equal to `retry_after_s` when rejected.
    pub reset_after_s: u64,
    /// `Some(seconds ≥ 1)` iff rejected: when a retry will be accepted,
    /// provided the client sends nothing else meanwhile.
    pub retry_after_s: Option<u64>,
}

impl RateLimitDecision {
    /// From a script's reply.
    fn from_reply(policy: &'static str, limit: u32, window: Duration, reply: LimiterReply) -> Self {
        let LimiterReply {
            allowed,
            remaining,
            reset_after_us,
            retry_after_us,
        } = reply;
        let reset_after_s = ceil_seconds(reset_after_us);
        Self {
            allowed,
            policy,
            limit,
            window_s: window.as_secs(),
            remaining: if allowed {
                u32::try_from(remaining.max(0))
                    .unwrap_or(u32::MAX)
                    .min(limit)
            } else {
                0
            },
            reset_after_s,
            retry_after_s: (!allowed).then(|| ceil_seconds(retry_after_us)),
        }
    }
}

/// Microseconds → whole seconds, rounded up, at least 1: a client told to
/// wait 0 s would retry immediately and be refused again.
fn ceil_seconds(us: i64) -> u64 {
    u64::try_from(us).unwrap_or(0).div_ceil(1_000_000).max(1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn decision(reply: (i64, i64, i64, i64)) -> RateLimitDecision {
        let (allowed, remaining, reset_after_us, retry_after_us) = reply;
        let reply = LimiterReply {
            allowed: allowed == 1,
            remaining,
            reset_after_us,
            retry_after_us,
        };
        RateLimitDecision::from_reply(POLICY_NAME, 5, Duration::from_secs(60), reply)
    }

    #[test]
    fn microseconds_round_up_to_at_least_one_second() {
        assert_eq!(ceil_seconds(0), 1);
        assert_eq!(ceil_seconds(-5), 1);
        assert_eq!(ceil_seconds(1), 1);
        assert_eq!(ceil_seconds(1_000_000), 1);
        assert_eq!(ceil_seconds(1_000_001), 2);
        assert_eq!(ceil_seconds(36_000_001), 37);
    }

    #[test]
    fn an_accepted_reply_has_no_retry_after() {
        let d = decision((1, 3, 59_999_000, 0));
        assert!(d.allowed);
        assert_eq!(d.remaining, 3);
        assert_eq!(d.reset_after_s, 60);
        assert_eq!(d.retry_after_s, None);
    }

    #[test]
    fn a_rejected_reply_has_no_remaining_and_a_retry_after() {
        let d = decision((0, 0, 36_200_000, 36_200_000));
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after_s, Some(37));
        assert_eq!(d.reset_after_s, 37);
    }

    #[test]
    fn a_remaining_above_the_limit_is_clamped() {
        // Only possible after the limit was lowered while state was live.
        assert_eq!(decision((1, 9, 1, 0)).remaining, 5);
    }
}
