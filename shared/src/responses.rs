//! Every response body of the API, each defined once: the handlers serialise
//! these types, and the OpenAPI document ([`crate::openapi`]) derives its
//! schemas from the same types (`#[derive(ToSchema)]`), so a field added
//! here is served and documented at once. Objects are closed
//! (`additionalProperties: false`, from `#[serde(deny_unknown_fields)]`)
//! except where a source's own fields are merged in.
//!
//! The enums and values the bodies carry are the components' own types:
//! [`Period`](crate::window::Period), [`PeriodLabel`], [`Window`],
//! [`BreakerState`], [`FieldError`], and the stored [`Metric`]. (The
//! `X-Cache` header's values are [`crate::cache::CacheStatus`].)

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::breaker::{BreakerState, FailureKind};
use crate::metric::{serialize_timestamp, FieldError, Metric, MetricType};
use crate::redis_server::{Condition, Memory};
use crate::store::stats::WindowStats;
use crate::tags::Tags;
use crate::window::quantiles::{label as quantile_label, Quantiles};
use crate::window::{PeriodLabel, Window};

/// `201 Created`: the metrics are stored (and counted exactly once, even
/// when the request is retried with the same `Idempotency-Key`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Created {
    /// The Lambda request id of the request that stored the metrics (a replay
    /// returns the original request's id).
    #[schema(examples("7d1c7f4e-1b9e-4c55-9a53-0f6f1f3b2a10"))]
    pub request_id: String,
    /// How many metrics were stored: 1 for a single object, the batch size
    /// for a batch.
    #[schema(minimum = 1, examples(1))]
    pub stored: u64,
    /// The stored metric, normalised; only for a single-object body.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub metric: Option<Metric>,
}

/// `200 OK`: aggregates of one metric type over a window. With no data in
/// the window `count` and `sum` are 0 and the other aggregates `null`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// The metric type summarised.
    #[serde(rename = "type")]
    #[schema(value_type = String, examples("cpu_usage"))]
    pub metric_type: MetricType,
    /// The period asked for, or `custom`.
    pub period: PeriodLabel,
    /// The window summarised.
    pub window: Window,
    /// The tag filters (`tag.<key>=<value>`), all of which every metric
    /// counted carries; absent without filters.
    #[serde(skip_serializing_if = "Tags::is_empty")]
    #[schema(value_type = Option<Tags>, nullable = false)]
    pub filters: Tags,
    /// Number of metrics in the window.
    #[schema(examples(42))]
    pub count: u64,
    /// `sum / count`; `null` when `count` is 0.
    #[schema(required = true, examples(61.25))]
    pub average_value: Option<f64>,
    /// Smallest value; `null` when `count` is 0.
    #[schema(required = true, examples(12.0))]
    pub min_value: Option<f64>,
    /// Largest value; `null` when `count` is 0.
    #[schema(required = true, examples(97.5))]
    pub max_value: Option<f64>,
    /// Sum of the values; 0 when `count` is 0. Always finite: when the exact
    /// sum is beyond a 64-bit float it is reported as ±1.7976931348623157e308.
    #[schema(examples(2572.5))]
    pub sum: f64,
    /// Quantiles of the values by name: `p` and the percentage (`p50`,
    /// `p99.9`), those asked with `quantiles=` or p50, p90, p95 and p99.
    /// Each is within 1 % (relative) of the exact quantile, the value of
    /// rank ⌊q (count − 1)⌋ in sorted order. `null` when `count` is 0, or
    /// when part of the window was stored before percentiles were kept
    /// (then `note` says so).
    pub percentiles: BTreeMap<String, Option<f64>>,
    /// Why `percentiles` are `null` although `count` is not 0; absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub note: Option<String>,
    /// Enrichment from the external source, or why there is none.
    pub external_data: ExternalData,
}

/// `200 OK` for a summary with `group_by`: one result per value of the tag
/// key, the largest groups (by `count`) first, at most `limit` of them.
/// Groups without metrics in the window are not listed; metrics without the
/// key are in no group.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupedSummary {
    /// The metric type summarised.
    #[serde(rename = "type")]
    #[schema(value_type = String, examples("cpu_usage"))]
    pub metric_type: MetricType,
    /// The period asked for, or `custom`.
    pub period: PeriodLabel,
    /// The window summarised.
    pub window: Window,
    /// The tag filters, as in a summary; absent without filters.
    #[serde(skip_serializing_if = "Tags::is_empty")]
    #[schema(value_type = Option<Tags>, nullable = false)]
    pub filters: Tags,
    /// The tag key grouped by.
    #[schema(examples("region"))]
    pub group_by: String,
    /// One entry per value of `group_by` with metrics in the window, largest
    /// `count` first (ties by value), at most `limit`.
    pub groups: Vec<SummaryGroup>,
    /// Groups with metrics in the window that are not listed (beyond
    /// `limit`).
    #[schema(examples(0))]
    pub groups_left_out: u64,
    /// Why some groups' `percentiles` are `null` although their `count` is
    /// not 0; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub note: Option<String>,
    /// Enrichment from the external source, or why there is none.
    pub external_data: ExternalData,
}

/// The aggregates of one group of a grouped summary: the metrics whose tag
/// `group_by` has this value (and that match the filters).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryGroup {
    /// The tag value.
    #[schema(examples("eu-west-1"))]
    pub value: String,
    /// Number of metrics in the window; at least 1.
    #[schema(minimum = 1, examples(42))]
    pub count: u64,
    /// `sum / count`.
    #[schema(required = true, examples(61.25))]
    pub average_value: Option<f64>,
    /// Smallest value.
    #[schema(required = true, examples(12.0))]
    pub min_value: Option<f64>,
    /// Largest value.
    #[schema(required = true, examples(97.5))]
    pub max_value: Option<f64>,
    /// Sum of the values, as in a summary.
    #[schema(examples(2572.5))]
    pub sum: f64,
    /// Quantiles by name, as in a summary.
    pub percentiles: BTreeMap<String, Option<f64>>,
}

impl SummaryGroup {
    /// The group `value` of `stats`.
    pub fn new(value: String, stats: &WindowStats, quantiles: &Quantiles) -> Self {
        Self {
            value,
            count: stats.count,
            average_value: stats.average(),
            min_value: stats.min,
            max_value: stats.max,
            sum: stats.sum(),
            percentiles: percentiles(stats, quantiles),
        }
    }
}

/// The body of a `200` from `GET /api/metrics/summary`: a summary, or a
/// grouped summary when the query has `group_by`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SummaryBody {
    // Without `group_by`. (Plain comments on these variants: a description
    // beside a `$ref` hides the referenced schema's name in Swagger UI.)
    Summary(Summary),
    // With `group_by`.
    Grouped(GroupedSummary),
}

/// Quantiles by name (`p50`, `p99.9`), each a number or `null`.
pub type Percentiles = BTreeMap<String, Option<f64>>;

/// The `percentiles` of a window's statistics: each of `quantiles` by its
/// name, `null` when the window has none (empty, or holding buckets stored
/// before percentiles were kept).
pub fn percentiles(stats: &WindowStats, quantiles: &Quantiles) -> Percentiles {
    quantiles
        .as_slice()
        .iter()
        .map(|q| (quantile_label(*q), stats.quantile(*q)))
        .collect()
}

/// [`OLD_BUCKETS_NOTE`] when `stats` has points but no percentiles.
pub fn percentiles_note(stats: &WindowStats) -> Option<String> {
    (stats.count > 0 && !stats.has_quantiles()).then(|| OLD_BUCKETS_NOTE.to_string())
}

/// The `note` of a summary or series whose window holds buckets stored
/// before percentiles were kept.
pub const OLD_BUCKETS_NOTE: &str = "percentiles are null: part of this window was stored before percentiles were kept; they return once those buckets expire (METRIC_RETENTION_DAYS)";

/// `200 OK`: one point per step over a window of one metric type. Every step
/// is present: an empty one has `count` and `sum` 0 and `null` statistics.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// The metric type.
    #[serde(rename = "type")]
    #[schema(value_type = String, examples("cpu_usage"))]
    pub metric_type: MetricType,
    /// The period asked for, or `custom`.
    pub period: PeriodLabel,
    /// The window covered: the one asked, aligned outward to whole steps.
    pub window: Window,
    /// The step: its name (`1m`, `5m`, `15m`, `1h`, `6h`, `1d`) or `<n>s`.
    #[schema(examples("5m"))]
    pub step: String,
    /// The step, s.
    #[schema(minimum = 60, examples(300))]
    pub step_seconds: i64,
    /// The tag filters, as in a summary; absent without filters.
    #[serde(skip_serializing_if = "Tags::is_empty")]
    #[schema(value_type = Option<Tags>, nullable = false)]
    pub filters: Tags,
    /// One point per step, in time order (at most 1,500).
    pub points: Vec<SeriesPoint>,
    /// Why some points' `percentiles` are `null` although their `count` is
    /// not 0; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub note: Option<String>,
}

/// `200 OK` for a series with `group_by`: one series per value of the tag
/// key, the largest groups (by their count over the whole window) first, at
/// most `limit` of them; groups without metrics in the window are not
/// listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupedSeries {
    /// The metric type.
    #[serde(rename = "type")]
    #[schema(value_type = String, examples("cpu_usage"))]
    pub metric_type: MetricType,
    /// The period asked for, or `custom`.
    pub period: PeriodLabel,
    /// The window covered, aligned outward to whole steps.
    pub window: Window,
    /// The step, as in a series.
    #[schema(examples("5m"))]
    pub step: String,
    /// The step, s.
    #[schema(minimum = 60, examples(300))]
    pub step_seconds: i64,
    /// The tag filters, as in a summary; absent without filters.
    #[serde(skip_serializing_if = "Tags::is_empty")]
    #[schema(value_type = Option<Tags>, nullable = false)]
    pub filters: Tags,
    /// The tag key grouped by.
    #[schema(examples("region"))]
    pub group_by: String,
    /// One series per value of `group_by`, largest `count` first.
    pub groups: Vec<SeriesGroup>,
    /// Groups with metrics in the window that are not listed (beyond
    /// `limit`).
    #[schema(examples(0))]
    pub groups_left_out: u64,
    /// Why some points' `percentiles` are `null` although their `count` is
    /// not 0; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub note: Option<String>,
}

/// One group of a grouped series.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesGroup {
    /// The tag value.
    #[schema(examples("eu-west-1"))]
    pub value: String,
    /// Metrics of the group in the whole window; at least 1.
    #[schema(minimum = 1, examples(230))]
    pub count: u64,
    /// One point per step, in time order, as in a series.
    pub points: Vec<SeriesPoint>,
}

/// The body of a `200` from `GET /api/metrics/series`: a series, or one
/// series per group when the query has `group_by`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SeriesBody {
    // Without `group_by`.
    Series(Series),
    // With `group_by`.
    Grouped(GroupedSeries),
}

/// One step of a series: the statistics of `[t, t + step)`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesPoint {
    /// Start of the step, UTC.
    #[serde(serialize_with = "serialize_timestamp")]
    #[schema(value_type = String, format = DateTime, examples("2026-02-18T11:05:00Z"))]
    pub t: DateTime<Utc>,
    /// Number of metrics in the step.
    #[schema(examples(23))]
    pub count: u64,
    /// Sum of the values (compensated); 0 when `count` is 0.
    #[schema(examples(1150.45))]
    pub sum: f64,
    /// `sum / count`; `null` when `count` is 0.
    #[schema(required = true, examples(50.02))]
    pub average_value: Option<f64>,
    /// Smallest value; `null` when `count` is 0.
    #[schema(required = true, examples(0.52))]
    pub min_value: Option<f64>,
    /// Largest value; `null` when `count` is 0.
    #[schema(required = true, examples(99.88))]
    pub max_value: Option<f64>,
    /// Quantiles by name, as in a summary; `null` when `count` is 0.
    pub percentiles: BTreeMap<String, Option<f64>>,
}

/// Enrichment from the external source, or why there is none.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ExternalData {
    // The source answered. (Plain comments on these variants: a description
    // beside a `$ref` hides the referenced schema's name in Swagger UI.)
    Success(ExternalSuccess),
    // The source could not be used.
    Fallback(ExternalFallback),
}

impl ExternalData {
    /// The source's answer: its fields next to `"status": "success"` (a
    /// `status` field of its own is replaced).
    pub fn success(mut fields: Map<String, Value>) -> Self {
        fields.remove("status");
        let external_metric_context = match fields.get("external_metric_context") {
            Some(Value::Number(n)) if n.is_i64() => {
                let context = n.as_i64();
                fields.remove("external_metric_context");
                context
            }
            _ => None,
        };
        Self::Success(ExternalSuccess {
            status: SuccessStatus::Success,
            external_metric_context,
            fields,
        })
    }

    /// No enrichment, and why.
    pub fn fallback(reason: FallbackReason) -> Self {
        Self::Fallback(ExternalFallback {
            status: FallbackStatus::Fallback,
            reason,
        })
    }

    /// True for a fallback: the summary is degraded and cached only
    /// `CACHE_FALLBACK_TTL_SECONDS`.
    pub fn is_fallback(&self) -> bool {
        matches!(self, Self::Fallback(_))
    }
}

/// The external source answered; its fields are merged in (the simulated
/// source returns `external_metric_context`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(examples(json!({"status": "success", "external_metric_context": 342})))]
pub struct ExternalSuccess {
    /// Always `success`.
    pub status: SuccessStatus,
    /// From the simulated source: an integer in 100..=500.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub external_metric_context: Option<i64>,
    /// Any other field of an HTTP source's answer, as it sent it.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// `status` of an `ExternalSuccess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SuccessStatus {
    /// The source answered.
    Success,
}

/// The external source could not be used; the summary is still a 200.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"status": "fallback", "reason": "circuit_open"})))]
pub struct ExternalFallback {
    /// Always `fallback`.
    pub status: FallbackStatus,
    /// Why.
    pub reason: FallbackReason,
}

/// `status` of an `ExternalFallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FallbackStatus {
    /// The source could not be used; the summary is still complete.
    Fallback,
}

/// Why the external source could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    /// The circuit breaker is open (or its half-open probes are all taken,
    /// or Redis, out of memory, cannot record a probe): the source was not
    /// called.
    CircuitOpen,
    /// The call failed (non-2xx status, invalid body, connection error).
    UpstreamError,
    /// The call took longer than `EXTERNAL_SERVICE_TIMEOUT_MS` and was
    /// cancelled.
    Timeout,
}

impl From<FailureKind> for FallbackReason {
    fn from(kind: FailureKind) -> Self {
        match kind {
            FailureKind::UpstreamError => Self::UpstreamError,
            FailureKind::Timeout => Self::Timeout,
        }
    }
}

/// `200 OK`: requests can succeed. `status` is `degraded` when some
/// condition puts data or requests at risk without stopping them (an
/// evicting `maxmemory-policy`, one that cannot be read, memory nearly
/// full); `conditions` names it.
/// An open circuit breaker is a degraded dependency, not a dead service:
/// health stays 200 `ok`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `ok`, or `degraded` when `conditions` is not empty.
    pub status: HealthStatus,
    /// Always `healthy`.
    pub redis: RedisHealthy,
    /// Round trip of the health check's Redis calls (one pipeline; in
    /// cluster mode with the masters' `INFO`, sent concurrently), ms,
    /// rounded to µs.
    #[schema(minimum = 0, examples(0.213))]
    pub redis_latency_ms: f64,
    /// Effective state of each circuit breaker.
    pub circuit_breaker: CircuitBreakers,
    /// Redis' memory and eviction policy, when `INFO` answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub memory: Option<RedisMemory>,
    /// Every condition that degrades the service; empty when `ok`.
    pub conditions: Vec<HealthCondition>,
    /// Only with `REDIS_MODE=cluster`: the cluster as its nodes see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cluster: Option<ClusterHealth>,
    /// The service's version.
    #[schema(examples("0.1.0"))]
    pub version: String,
}

/// Redis' memory as the health check read it (`INFO memory stats`); in
/// cluster mode the fullest master's figures and every master's evictions.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisMemory {
    /// Bytes Redis counts against `maxmemory` (`used_memory` without
    /// replication and AOF buffers).
    #[schema(minimum = 0, examples(1048576))]
    pub used_bytes: u64,
    /// `maxmemory` in bytes; 0 is no limit.
    #[schema(minimum = 0, examples(2147483648u64))]
    pub maxmemory_bytes: u64,
    /// `maxmemory-policy`; anything but `noeviction` may evict
    /// acknowledged data (condition `evicting_policy`). `null` when `INFO`
    /// does not report it.
    #[schema(examples("noeviction"))]
    pub maxmemory_policy: Option<String>,
    /// Keys evicted since the server started (`evicted_keys`), summed over
    /// the masters.
    #[schema(minimum = 0, examples(0))]
    pub evicted_keys: u64,
}

/// One named condition of `/health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCondition {
    /// What holds.
    pub name: HealthConditionName,
    /// `unavailable`: requests cannot succeed (`/health` answers 503);
    /// `degraded`: they can, but data or later requests are at risk (200).
    pub effect: ConditionEffect,
    /// What holds and what to do, for people.
    #[schema(examples(
        "maxmemory-policy is volatile-lru: every key of this service has a TTL, so when memory is full Redis may evict acknowledged metrics, idempotency records and rate-limit and breaker state (maxmemory 2147483648 bytes); set noeviction"
    ))]
    pub detail: String,
}

/// `name` of a [`HealthCondition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthConditionName {
    /// Unavailable: Redis did not answer (in time), or answered the health
    /// check's reads with an error.
    RedisUnavailable,
    /// Unavailable (cluster mode): `cluster_state` is not `ok`, some hash
    /// slot is not served.
    ClusterDown,
    /// Unavailable: Redis refused a script call (`NOPERM`: the user may not
    /// run scripts; `BUSY`; another error code).
    ScriptsRefused,
    /// Unavailable: memory is full and nothing may be evicted; writes are
    /// refused (`OOM`).
    OutOfMemory,
    /// Unavailable: `REDIS_URL` reaches a read-only replica.
    ReadOnlyReplica,
    /// Degraded: under `noeviction`, memory is at least 90 % of
    /// `maxmemory`; writes will be refused once it is full.
    MemoryNearlyFull,
    /// Degraded: a `maxmemory-policy` other than `noeviction`; acknowledged
    /// data may be evicted when memory is full.
    EvictingPolicy,
    /// Degraded: the policy could not be read (`INFO` refused or without
    /// it).
    EvictionPolicyUnknown,
}

impl HealthConditionName {
    /// The name of a condition of the Redis server.
    pub fn of(condition: &Condition) -> Self {
        match condition {
            Condition::ScriptsRefused { .. } => Self::ScriptsRefused,
            Condition::OutOfMemory { .. } => Self::OutOfMemory,
            Condition::ReadOnlyReplica => Self::ReadOnlyReplica,
            Condition::MemoryNearlyFull { .. } => Self::MemoryNearlyFull,
            Condition::EvictingPolicy { .. } => Self::EvictingPolicy,
            Condition::PolicyUnknown { .. } => Self::EvictionPolicyUnknown,
        }
    }
}

impl From<&Condition> for HealthCondition {
    fn from(condition: &Condition) -> Self {
        Self {
            name: HealthConditionName::of(condition),
            effect: if condition.blocks_requests() {
                ConditionEffect::Unavailable
            } else {
                ConditionEffect::Degraded
            },
            detail: condition.detail(),
        }
    }
}

impl From<&Memory> for RedisMemory {
    fn from(memory: &Memory) -> Self {
        Self {
            used_bytes: memory.used_bytes,
            maxmemory_bytes: memory.maxmemory_bytes,
            maxmemory_policy: memory.policy.clone(),
            evicted_keys: memory.evicted_keys,
        }
    }
}

/// `effect` of a [`HealthCondition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConditionEffect {
    /// Requests cannot succeed: `/health` answers 503.
    Unavailable,
    /// Requests succeed, but acknowledged data is at risk: 200 `degraded`.
    Degraded,
}

/// The state of a Redis Cluster (`REDIS_MODE=cluster` only), from
/// `CLUSTER INFO` and `CLUSTER NODES` of one node.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterHealth {
    /// `cluster_state` of `CLUSTER INFO`: `ok` when every hash slot is
    /// served, `fail` otherwise (then `/health` answers 503); `unknown` when
    /// no node answered.
    #[schema(examples("ok"))]
    pub cluster_state: String,
    /// Masters serving slots, as the node asked knows them.
    #[schema(minimum = 0, examples(3))]
    pub masters: u64,
    /// Of these, the masters not marked failing (`fail` or `fail?`).
    #[schema(minimum = 0, examples(3))]
    pub masters_reachable: u64,
}

/// The state of each circuit breaker, by dependency.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// The breaker around the external data source.
    pub external_service: BreakerState,
}

/// `status` of a `Health` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Redis answers and nothing puts data at risk.
    Ok,
    /// Requests succeed, but a condition (see `conditions`) puts
    /// acknowledged data at risk.
    Degraded,
}

/// `redis` of a `Health` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisHealthy {
    /// Redis answered the health check's reads and its script.
    Healthy,
}

/// `503`: requests cannot succeed; `conditions` names why.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthUnavailable {
    /// Always `unavailable`.
    pub status: UnavailableStatus,
    /// Always `unhealthy`.
    pub redis: RedisUnhealthy,
    /// Every condition that holds, those that make requests fail first
    /// (never empty).
    pub conditions: Vec<HealthCondition>,
    /// Redis' memory and eviction policy, when `INFO` answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub memory: Option<RedisMemory>,
    /// Only with `REDIS_MODE=cluster`, when a node answered: the cluster as
    /// its nodes see it (a slot not served makes `/health` answer 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cluster: Option<ClusterHealth>,
    /// The service's version.
    #[schema(examples("0.1.0"))]
    pub version: String,
}

/// `status` of a `HealthUnavailable` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnavailableStatus {
    /// Requests cannot succeed.
    Unavailable,
}

/// `redis` of a `HealthUnavailable` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisUnhealthy {
    /// Redis did not answer within about 2 × `REDIS_TIMEOUT_MS`, or cannot
    /// serve requests (see `conditions`).
    Unhealthy,
}

/// An error, as RFC 9457 problem details (`application/problem+json`).
///
/// `type` is one of `urn:analytics-api:problem:` followed by
/// `malformed-json` (400), `unauthorized` (401), `not-found` (404),
/// `method-not-allowed` (405), `payload-too-large` (413),
/// `validation-failed` or `idempotency-key-reused` (422), `rate-limited`
/// (429), `service-unavailable` (503, with `Retry-After`: retrying can
/// succeed), `store-out-of-memory` (507), or `store-permission-denied`,
/// `store-authentication-failed`, `store-script-error`,
/// `store-misconfigured` (500): the data store refuses the service and
/// retrying will not help until its operator acts (no `Retry-After`).
/// Clients should treat an unknown `type` like `about:blank` with the same
/// status (RFC 9457 §3.1.1).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    /// A URI identifying the problem type.
    #[serde(rename = "type")]
    #[schema(
        format = "uri",
        examples("urn:analytics-api:problem:validation-failed")
    )]
    pub problem_type: String,
    /// The status's reason phrase, e.g. `Unprocessable Entity`.
    #[schema(examples("Unprocessable Entity"))]
    pub title: String,
    /// The HTTP status code, repeated.
    #[schema(minimum = 400, maximum = 599, examples(422))]
    pub status: u16,
    /// What went wrong with this request, for people. Never contains
    /// credentials.
    #[schema(examples("value: must be a number, not a string"))]
    pub detail: String,
    /// Every offending field; only for `validation-failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_reasons_name_every_failure_kind() {
        for kind in [FailureKind::UpstreamError, FailureKind::Timeout] {
            let reason = serde_json::to_value(FallbackReason::from(kind)).unwrap();
            assert_eq!(reason, kind.as_str());
        }
    }

    #[test]
    fn a_success_carries_the_sources_fields_under_success() {
        let fields: Map<String, Value> = serde_json::from_str(
            r#"{"status": "mine", "external_metric_context": 342, "region": "eu"}"#,
        )
        .unwrap();
        let data = serde_json::to_value(ExternalData::success(fields)).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"status": "success", "external_metric_context": 342, "region": "eu"})
        );
        let fallback = serde_json::to_value(ExternalData::fallback(FallbackReason::CircuitOpen));
        assert_eq!(
            fallback.unwrap(),
            serde_json::json!({"status": "fallback", "reason": "circuit_open"})
        );
    }
}
