//! Operational metrics in CloudWatch's Embedded Metric Format (EMF).
//!
//! Code records counters through the [`metrics`] facade with the one-line
//! helpers below; `metrics_cloudwatch_embedded` (a `metrics` recorder) holds
//! them in the instance and turns them into EMF documents, one JSON line on
//! stdout per label set with the sums since the previous flush, which
//! CloudWatch Logs extracts into metrics without any API call ("Embedded
//! metric format specification", Amazon CloudWatch User Guide). When they
//! are written is the [`FlushPolicy`]'s choice (`runtime::run` applies it):
//! at the first invocation, at once after a failure (a document that then
//! carries the invocation's `RequestId`, so it can be joined with the
//! request's log lines in Logs Insights), every `METRICS_FLUSH_SECONDS`
//! and after an idle spell.
//!
//! Every metric has unit `Count`, the namespace `METRICS_NAMESPACE` and the
//! dimension `FunctionName` (`AWS_LAMBDA_FUNCTION_NAME`). Without an
//! installed recorder (tests, tools) the helpers cost next to nothing and
//! record nothing.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// `METRICS_FLUSH_SECONDS`, default 10 (1 to 3600): how often an
    /// instance under load writes the counts it holds ([`FlushPolicy`]).
    pub flush_period: Duration,
}

impl ObservabilitySettings {
    /// Reads `METRICS_NAMESPACE`, `METRICS_EMF` and `METRICS_FLUSH_SECONDS`.
    ///
    /// # Errors
    /// A [`ConfigError`] for `METRICS_EMF` other than `auto`, `on` or `off`,
    /// or `METRICS_FLUSH_SECONDS` outside 1 to 3600.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            namespace: env.string("METRICS_NAMESPACE", "AnalyticsApi"),
            emf: env.parse("METRICS_EMF", EmfMode::Auto)?,
            flush_period: env.seconds("METRICS_FLUSH_SECONDS", 10, 1..=3600)?,
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

/// Counts one failed call to the external source (flushed at once).
pub fn external_call_failed() {
    counter!(EXTERNAL_CALL_FAILURES).increment(1);
    urgent();
}

/// Counts one breaker transition into `new_state` (`open`, `half_open`,
/// `closed`; flushed at once).
pub fn breaker_transition(new_state: &'static str) {
    counter!(BREAKER_TRANSITIONS, "State" => new_state).increment(1);
    urgent();
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

/// Counts one Redis failure answered with 503 (flushed at once).
pub fn redis_error() {
    counter!(REDIS_ERRORS).increment(1);
    urgent();
}

/// Counts one reading that found an evicting `maxmemory-policy` (flushed
/// at once).
pub fn redis_evicting_policy() {
    counter!(REDIS_EVICTING_POLICY).increment(1);
    urgent();
}

/// Counts `count` keys Redis evicted since the previous reading (flushed at
/// once).
pub fn redis_evicted_keys(count: u64) {
    counter!(REDIS_EVICTED_KEYS).increment(count);
    urgent();
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
    for name in ALL.into_iter().chain([COLD_START]) {
        describe_counter!(name, Unit::Count, "");
    }
}

/// Set by the counters that call for an immediate flush (breaker
/// transitions, failed external calls, Redis errors and conditions), read
/// and cleared by the runtime when the invocation completes
/// ([`take_urgent`]).
static URGENT: AtomicBool = AtomicBool::new(false);

fn urgent() {
    URGENT.store(true, Ordering::Relaxed);
}

/// Whether a counter calling for an immediate flush was recorded since the
/// last call; clears the flag.
pub fn take_urgent() -> bool {
    URGENT.swap(false, Ordering::Relaxed)
}

/// Why the held counts were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// The instance's first invocation (with `ColdStart`).
    ColdStart,
    /// An invocation that failed (a 5xx) or recorded a breaker transition,
    /// a failed external call, a Redis error or condition: written at once,
    /// with its `RequestId`.
    Urgent,
    /// `METRICS_FLUSH_SECONDS` have passed since the last flush.
    Period,
    /// The invocation came at least [`FlushPolicy::IDLE_SPELL`] after the
    /// previous one: an instance this quiet writes each invocation's counts
    /// at once, which costs nothing under load and keeps them timely.
    Idle,
}

/// When an instance writes the counts it holds. The counters accumulate in
/// the recorder between flushes: a flush writes one EMF document per label
/// set with the sums since the previous one. Counts still held when Lambda
/// shuts an idle instance down are not written (at most one period's, and
/// none of an instance that was idle when its last invocation came).
///
/// Under load an instance thus writes one document per label set every
/// `METRICS_FLUSH_SECONDS` instead of one per invocation (the Lambda
/// Powertools' "flush per invocation" pays a JSON document and a stdout
/// write on every request).
#[derive(Debug)]
pub struct FlushPolicy {
    period: Duration,
    last_flush: Option<Instant>,
    last_invocation: Option<Instant>,
}

impl FlushPolicy {
    /// The gap between two invocations after which the second flushes at
    /// once ([`FlushReason::Idle`]).
    pub const IDLE_SPELL: Duration = Duration::from_secs(1);

    /// A policy writing at least every `period` while invocations come.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last_flush: None,
            last_invocation: None,
        }
    }

    /// Called when an invocation completes at `now`, `urgent` when it
    /// failed or recorded a counter that calls for it: whether to flush now,
    /// and why. A flush it asks for counts as done.
    pub fn after_invocation(&mut self, now: Instant, urgent: bool) -> Option<FlushReason> {
        let previous = self.last_invocation.replace(now);
        let reason = match self.last_flush {
            None => FlushReason::ColdStart,
            Some(_) if urgent => FlushReason::Urgent,
            Some(last) if now.saturating_duration_since(last) >= self.period => FlushReason::Period,
            Some(_)
                if previous
                    .is_some_and(|p| now.saturating_duration_since(p) >= Self::IDLE_SPELL) =>
            {
                FlushReason::Idle
            }
            Some(_) => return None,
        };
        self.last_flush = Some(now);
        Some(reason)
    }

    /// Records a flush made at `now` outside an invocation.
    pub fn flushed(&mut self, now: Instant) {
        self.last_flush = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(60);

    #[test]
    fn the_first_invocation_flushes_then_counts_are_held_for_a_period() {
        let mut policy = FlushPolicy::new(PERIOD);
        let t0 = Instant::now();
        assert_eq!(
            policy.after_invocation(t0, false),
            Some(FlushReason::ColdStart)
        );
        let step = Duration::from_millis(10);
        let mut t = t0;
        while t + step < t0 + PERIOD {
            t += step;
            assert_eq!(policy.after_invocation(t, false), None);
        }
        assert_eq!(
            policy.after_invocation(t0 + PERIOD, false),
            Some(FlushReason::Period)
        );
        assert_eq!(policy.after_invocation(t0 + PERIOD + step, false), None);
    }

    #[test]
    fn urgent_and_idle_invocations_flush_at_once() {
        let mut policy = FlushPolicy::new(PERIOD);
        let t0 = Instant::now();
        policy.after_invocation(t0, false);
        let t1 = t0 + Duration::from_millis(1);
        assert_eq!(policy.after_invocation(t1, true), Some(FlushReason::Urgent));
        let t2 = t1 + FlushPolicy::IDLE_SPELL;
        assert_eq!(policy.after_invocation(t2, false), Some(FlushReason::Idle));
        // A shutdown flush counts as one.
        policy.flushed(t2 + Duration::from_millis(1));
        assert_eq!(
            policy.after_invocation(t2 + Duration::from_millis(2), false),
            None
        );
    }

    #[test]
    fn counters_of_failures_raise_the_urgent_flag() {
        for count in [
            redis_error as fn(),
            external_call_failed,
            || breaker_transition("open"),
            redis_evicting_policy,
            || redis_evicted_keys(2),
        ] {
            count();
            assert!(take_urgent());
        }
    }
}
