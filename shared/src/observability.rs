//! Operational metrics in CloudWatch's Embedded Metric Format (EMF).
//!
//! Code records counters through the [`metrics`] facade with the one-line
//! helpers below; `metrics_cloudwatch_embedded` (a `metrics` recorder) turns
//! them into EMF documents, one JSON line on stdout per label set, which
//! CloudWatch Logs extracts into metrics without any API call ("Embedded
//! metric format specification", Amazon CloudWatch User Guide). Its Lambda
//! integration (`runtime::run`) flushes after every invocation and adds the
//! invocation's `RequestId` to each document, so metrics and log lines of a
//! request can be joined in Logs Insights.
//!
//! Every metric has unit `Count`, the namespace `METRICS_NAMESPACE` and the
//! dimension `FunctionName` (`AWS_LAMBDA_FUNCTION_NAME`). Without an
//! installed recorder (tests, tools) the helpers cost next to nothing and
//! record nothing.

use std::str::FromStr;

use metrics::{counter, describe_counter, Unit};

use crate::settings::{ConfigError, Env};

/// Where the metrics go.
#[derive(Debug, Clone)]
pub struct ObservabilitySettings {
    /// `METRICS_NAMESPACE`, default `AnalyticsApi`: the CloudWatch namespace
    /// of the EMF metrics.
    pub namespace: String,
    /// `METRICS_EMF`, default `auto`: whether EMF lines are written.
    pub emf: EmfMode,
}

impl ObservabilitySettings {
    /// Reads `METRICS_NAMESPACE` and `METRICS_EMF`.
    ///
    /// # Errors
    /// A [`ConfigError`] for `METRICS_EMF` other than `auto`, `on` or `off`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            namespace: env.string("METRICS_NAMESPACE", "AnalyticsApi"),
            emf: env.parse("METRICS_EMF", EmfMode::Auto)?,
        })
    }

    /// Whether EMF lines are written in this process: `auto` writes them
    /// only inside AWS Lambda, where CloudWatch Logs turns them into metrics
    /// (recognised by `LAMBDA_TASK_ROOT`, which Lambda sets for every runtime
    /// and `cargo lambda watch` does not); locally they would only be noise
    /// between the log lines.
    pub fn emf_enabled(&self) -> bool {
        match self.emf {
            EmfMode::On => true,
            EmfMode::Off => false,
            EmfMode::Auto => std::env::var_os("LAMBDA_TASK_ROOT").is_some(),
        }
    }
}

/// `METRICS_EMF`: when the functions write EMF lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmfMode {
    /// Inside AWS Lambda only (the default).
    Auto,
    /// Always, e.g. to see the metrics under `make dev`.
    On,
    /// Never.
    Off,
}

impl FromStr for EmfMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("expected auto, on or off, got {other:?}")),
        }
    }
}

/// Metrics stored by `POST /api/metrics` (a batch adds its size).
pub const ACCEPTED_METRICS: &str = "AcceptedMetrics";
/// Requests refused with 429 by the per-client rate limiter.
pub const RATE_LIMITED_REQUESTS: &str = "RateLimitedRequests";
/// Summaries served from the cache (`X-Cache: HIT`).
pub const CACHE_HITS: &str = "CacheHits";
/// Summaries computed by the request (`X-Cache: MISS`).
pub const CACHE_MISSES: &str = "CacheMisses";
/// Calls to the external source that failed or timed out (calls refused by
/// an open breaker are not calls and are not counted).
pub const EXTERNAL_CALL_FAILURES: &str = "ExternalCallFailures";
/// Circuit breaker state changes, with dimension `State`: the new state
/// (`open`, `half_open`, `closed`); alarm on `State=open`.
pub const BREAKER_TRANSITIONS: &str = "CircuitBreakerTransitions";
/// Redis failures that turned into a 503.
pub const REDIS_ERRORS: &str = "RedisErrors";
/// Metric types new to the deployment that a request stored.
pub const NEW_METRIC_TYPES: &str = "NewMetricTypes";
/// Requests refused because of their new metric types, with dimension
/// `Reason`: `max_metric_types` (409, the deployment's cap) or
/// `client_budget` (the client's budget per hour).
pub const REFUSED_NEW_METRIC_TYPES: &str = "RefusedNewMetricTypes";
/// One per execution environment, on its first invocation.
pub const COLD_START: &str = "ColdStart";
/// One per reading of Redis' `maxmemory-policy` that found a policy that
/// may evict keys (every key of this service has a TTL, so every one is a
/// candidate): at an instance's first request, and on every `/health`.
/// Alarm on any.
pub const REDIS_EVICTING_POLICY: &str = "RedisEvictingPolicy";
/// Keys Redis evicted (growth of `INFO stats` `evicted_keys`, summed over
/// the masters) between two readings of one instance.
pub const REDIS_EVICTED_KEYS: &str = "RedisEvictedKeys";

/// Counts `count` accepted metrics.
pub fn accepted_metrics(count: usize) {
    counter!(ACCEPTED_METRICS).increment(count as u64);
}

/// Counts one request refused by the rate limiter.
pub fn rate_limited() {
    counter!(RATE_LIMITED_REQUESTS).increment(1);
}

/// Counts one summary served from the cache.
pub fn cache_hit() {
    counter!(CACHE_HITS).increment(1);
}

/// Counts one summary computed on a cache miss.
pub fn cache_miss() {
    counter!(CACHE_MISSES).increment(1);
}

/// Counts one failed call to the external source.
pub fn external_call_failed() {
    counter!(EXTERNAL_CALL_FAILURES).increment(1);
}

/// Counts one breaker transition into `new_state` (`open`, `half_open`,
/// `closed`).
pub fn breaker_transition(new_state: &'static str) {
    counter!(BREAKER_TRANSITIONS, "State" => new_state).increment(1);
}

/// Counts `count` metric types new to the deployment, stored.
pub fn new_metric_types(count: usize) {
    counter!(NEW_METRIC_TYPES).increment(count as u64);
}

/// Counts one request refused for its new metric types, by `reason`
/// (`max_metric_types` or `client_budget`).
pub fn new_metric_types_refused(reason: &'static str) {
    counter!(REFUSED_NEW_METRIC_TYPES, "Reason" => reason).increment(1);
}

/// Counts one Redis failure answered with 503.
pub fn redis_error() {
    counter!(REDIS_ERRORS).increment(1);
}

/// Counts one reading that found an evicting `maxmemory-policy`.
pub fn redis_evicting_policy() {
    counter!(REDIS_EVICTING_POLICY).increment(1);
}

/// Counts `count` keys Redis evicted since the previous reading.
pub fn redis_evicted_keys(count: u64) {
    counter!(REDIS_EVICTED_KEYS).increment(count);
}

/// Every counter this module records, for the recorder to describe.
pub const ALL: [&str; 11] = [
    ACCEPTED_METRICS,
    RATE_LIMITED_REQUESTS,
    CACHE_HITS,
    CACHE_MISSES,
    EXTERNAL_CALL_FAILURES,
    BREAKER_TRANSITIONS,
    REDIS_ERRORS,
    REDIS_EVICTING_POLICY,
    REDIS_EVICTED_KEYS,
    NEW_METRIC_TYPES,
    REFUSED_NEW_METRIC_TYPES,
];

/// Describes every counter (unit `Count`) to the installed recorder.
pub fn describe() {
    for name in ALL {
        describe_counter!(name, Unit::Count, "");
    }
}
