//! The shapes of every request and response body and header value, as
//! OpenAPI schemas (`#[derive(ToSchema)]`).
//!
//! The 201 of `POST /api/metrics` is serialised from [`Created`] itself; the
//! other handlers build their JSON with `serde_json::json!`, so for them these
//! types are a description of that output, not the code that produces it.
//! They cannot drift silently: the tests of `super` compare the enums mirrored here with
//! the service's own types, and the conformance tests validate real responses
//! of every endpoint against the document built from these types. Response
//! objects are closed (`additionalProperties: false`, from
//! `#[serde(deny_unknown_fields)]`) so that a field added to a handler without
//! being documented fails those tests.

use serde::Serialize;
use utoipa::ToSchema;

/// One metric as a client sends it. Fields other than these three are
/// ignored.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(examples(json!({"timestamp": "2026-02-18T12:00:00Z", "value": 85.5, "type": "cpu_usage"})))]
pub struct Metric {
    /// When it was measured: an RFC 3339 date-time with a UTC offset (`Z` or
    /// `±hh:mm`), normalised to UTC. At most `MAX_FUTURE_SKEW_SECONDS`
    /// (default 300 s) in the future and not older than
    /// `METRIC_RETENTION_DAYS` (default 35 days).
    #[schema(format = DateTime, examples("2026-02-18T12:00:00Z"))]
    pub timestamp: String,
    /// The reading: a JSON number that fits a finite 64-bit float (strings,
    /// booleans and null are refused, never coerced).
    #[schema(examples(85.5))]
    pub value: f64,
    /// What was measured: 1–64 characters from `A-Z a-z 0-9 _ . -`,
    /// case-sensitive.
    #[serde(rename = "type")]
    #[schema(
        pattern = "^[A-Za-z0-9_.-]{1,64}$",
        min_length = 1,
        max_length = 64,
        examples("cpu_usage")
    )]
    pub metric_type: String,
}

/// A batch: 1 to `MAX_BATCH_SIZE` (default 500) metrics, stored all or
/// nothing. If any item is invalid, nothing is stored and the 422 lists every
/// invalid item by its `index`. A batch counts as one request for the rate
/// limiter.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(min_items = 1)]
pub struct MetricBatch(pub Vec<Metric>);

/// The body of `POST /api/metrics`: one metric object, or a batch (a JSON
/// array of them).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MetricsBody {
    // A single metric; the 201 echoes it normalised. (Plain comments on
    // these variants: a description beside a `$ref` hides the referenced
    // schema's name in Swagger UI.)
    Single(Metric),
    // A batch; the 201 reports how many were stored.
    Batch(MetricBatch),
}

/// A stored metric as echoed in a 201: the timestamp normalised to UTC with a
/// `Z`, fractional seconds only when sent.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoredMetric {
    /// UTC, RFC 3339 with `Z`.
    #[schema(format = DateTime, pattern = "Z$", examples("2026-02-18T12:00:00Z"))]
    pub timestamp: String,
    /// The value stored.
    pub value: f64,
    /// The metric type.
    #[serde(rename = "type")]
    #[schema(examples("cpu_usage"))]
    pub metric_type: String,
}

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
    pub metric: Option<StoredMetric>,
}

/// A trailing summary period, as accepted in the `period` query parameter.
/// Trailing windows end at the end of the current UTC minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// The last 60 minutes.
    Hourly,
    /// The last 24 hours.
    Daily,
    /// The last 7 days.
    Weekly,
    /// The last 30 days.
    Monthly,
}

/// The period reported in a summary: the one asked for, or `custom` for an
/// explicit `from`/`to` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeriodLabel {
    /// The last 60 minutes.
    Hourly,
    /// The last 24 hours.
    Daily,
    /// The last 7 days.
    Weekly,
    /// The last 30 days.
    Monthly,
    /// An explicit `from`/`to` window.
    Custom,
}

/// The half-open UTC window `[from, to)` actually summarised; both bounds
/// are whole minutes (an explicit window is rounded outward).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryWindow {
    /// Inclusive start, UTC.
    #[schema(format = DateTime, examples("2026-02-18T11:01:00Z"))]
    pub from: String,
    /// Exclusive end, UTC.
    #[schema(format = DateTime, examples("2026-02-18T12:01:00Z"))]
    pub to: String,
}

/// `status` of an `ExternalSuccess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SuccessStatus {
    /// The source answered.
    Success,
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
    /// The circuit breaker is open (or its half-open probes are all taken):
    /// the source was not called.
    CircuitOpen,
    /// The call failed (non-2xx status, invalid body, connection error).
    UpstreamError,
    /// The call took longer than `EXTERNAL_SERVICE_TIMEOUT_MS` and was
    /// cancelled.
    Timeout,
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

/// Enrichment from the external source, or why there is none.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ExternalData {
    // The source answered (plain comments: see `MetricsBody`).
    Success(ExternalSuccess),
    // The source could not be used.
    Fallback(ExternalFallback),
}

/// `200 OK`: aggregates of one metric type over a window. With no data in
/// the window `count` and `sum` are 0 and the other aggregates `null`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// The metric type summarised.
    #[serde(rename = "type")]
    #[schema(examples("cpu_usage"))]
    pub metric_type: String,
    /// The period asked for, or `custom`.
    pub period: PeriodLabel,
    /// The window summarised.
    pub window: SummaryWindow,
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
    /// Enrichment from the external source, or why there is none.
    pub external_data: ExternalData,
}

/// A circuit breaker state, as shown by `GET /health` (the effective state:
/// `half_open` as soon as the reset timeout has passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go ahead.
    Closed,
    /// Calls are rejected until the reset timeout has passed.
    Open,
    /// A limited number of probe calls go ahead.
    HalfOpen,
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
pub enum HealthyStatus {
    /// Redis answers.
    Ok,
}

/// `redis` of a `Health` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisHealthy {
    /// Redis answered `PING`.
    Healthy,
}

/// `200 OK`: Redis answers. An open circuit breaker is a degraded
/// dependency, not a dead service: health stays 200.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always `ok`.
    pub status: HealthyStatus,
    /// Always `healthy`.
    pub redis: RedisHealthy,
    /// Round trip of `PING` and the breaker state read (one pipeline), ms,
    /// rounded to µs.
    #[schema(minimum = 0, examples(0.213))]
    pub redis_latency_ms: f64,
    /// Effective state of each circuit breaker.
    pub circuit_breaker: CircuitBreakers,
    /// Only with `REDIS_MODE=cluster`: the cluster as its nodes see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cluster: Option<ClusterHealth>,
    /// The service's version.
    #[schema(examples("0.1.0"))]
    pub version: String,
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

/// `status` of a `HealthDegraded` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DegradedStatus {
    /// Redis does not answer.
    Degraded,
}

/// `redis` of a `HealthDegraded` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisUnhealthy {
    /// Redis did not answer within about 2 × `REDIS_TIMEOUT_MS`.
    Unhealthy,
}

/// `503`: Redis does not answer (in cluster mode: or a hash slot is not
/// served).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthDegraded {
    /// Always `degraded`.
    pub status: DegradedStatus,
    /// Always `unhealthy`.
    pub redis: RedisUnhealthy,
    /// Only with `REDIS_MODE=cluster`, when a node answered: the cluster as
    /// its nodes see it (a slot not served makes `/health` answer 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cluster: Option<ClusterHealth>,
    /// The service's version.
    #[schema(examples("0.1.0"))]
    pub version: String,
}

/// One offending field of a rejected request.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldError {
    /// Position of the item in a batch body; absent for a single object, a
    /// query parameter or a header.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0, examples(1))]
    pub index: Option<u64>,
    /// The field, query parameter or header, e.g. `value`, `period`,
    /// `Idempotency-Key`, or `body` for the body as a whole.
    #[schema(examples("value"))]
    pub field: String,
    /// Why it was refused, phrased for the client.
    #[schema(examples("must be a number, not a string"))]
    pub reason: String,
}

/// An error, as RFC 9457 problem details (`application/problem+json`).
///
/// `type` is one of `urn:analytics-api:problem:` followed by
/// `malformed-json` (400), `unauthorized` (401), `not-found` (404),
/// `method-not-allowed` (405), `payload-too-large` (413),
/// `validation-failed` or `idempotency-key-reused` (422), `rate-limited`
/// (429) or `service-unavailable` (503). Clients should treat an unknown
/// `type` like `about:blank` with the same status (RFC 9457 §3.1.1).
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

/// `Retry-After` (RFC 9110 §10.2.3), in whole seconds, ≥ 1.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[schema(minimum = 1, examples(1))]
pub struct RetryAfterSeconds(pub u64);

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10 §2): the
/// quota `q` (requests) per window `w` (seconds) of the `default` policy.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(
    pattern = r#"^"default";q=[0-9]+;w=[0-9]+$"#,
    examples(r#""default";q=5;w=60"#)
)]
pub struct RateLimitPolicyField(pub String);

/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10 §3): `r` requests
/// remaining now, `t` seconds until `r` next increases.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(
    pattern = r#"^"default";r=[0-9]+;t=[0-9]+$"#,
    examples(r#""default";r=4;t=60"#)
)]
pub struct RateLimitField(pub String);

/// `X-Cache`: whether the summary came from the shared cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CacheStatus {
    /// Served from the cache (`Age` says how old it is).
    Hit,
    /// Computed for this request (once across all instances).
    Miss,
}

/// `Cache-Control` of a summary: `max-age` = seconds the answer stays cached
/// (`CACHE_TTL_SECONDS`, or `CACHE_FALLBACK_TTL_SECONDS` for a summary whose
/// external data fell back; what is left of it on a hit).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(pattern = "^max-age=[0-9]+$", examples("max-age=60"))]
pub struct CacheControlMaxAge(pub String);

/// `Age` (RFC 9111 §5.1): seconds since the cached summary was computed.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[schema(minimum = 0, examples(12))]
pub struct AgeSeconds(pub u64);

/// `Idempotent-Replayed`: present, and `true`, only on a replayed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Replayed {
    /// This is the response of an earlier request with the same
    /// `Idempotency-Key` and body; nothing new was stored.
    True,
}
