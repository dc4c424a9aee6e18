//! The request bodies and header values of the API, as OpenAPI schemas
//! (`#[derive(ToSchema)]`).
//!
//! Response bodies are not here: each is one type in [`crate::responses`]
//! (and the components' own enums and values), which the handlers serialise
//! and the document derives from. What remains here has no other Rust
//! shape: a metrics body is read from raw JSON text by
//! [`crate::metric::parse_metrics`] (so that no value is ever coerced), and
//! header values are written as text by the handlers. The conformance tests
//! validate real requests and responses of every endpoint against the
//! document.

use serde::Serialize;
use utoipa::ToSchema;

use crate::tags::Tags;

/// One metric as a client sends it. Fields other than these four are
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
    /// Optional tags (dimensions), e.g. `{"host": "web-7", "region":
    /// "eu-west-1"}`: the metric is then also counted in the series of each
    /// tag value and of its combination, which summaries and series can
    /// filter (`tag.<key>=<value>`) and group by (`group_by=<key>`). A bad
    /// tag is a 422 naming it; a new value or combination beyond
    /// `MAX_TAG_VALUES_PER_KEY` or `MAX_TAG_COMBINATIONS` per metric type is
    /// a 422 `tag-limit-exceeded`. `null` or `{}`: no tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub tags: Option<Tags>,
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

/// `Retry-After` (RFC 9110 §10.2.3), in whole seconds, ≥ 1.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[schema(minimum = 1, examples(1))]
pub struct RetryAfterSeconds(pub u64);

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10 §2): the
/// quota `q` (requests) per window `w` (seconds) of the route's policy:
/// `default` (`POST /api/metrics`), `summary` or `series`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(
    pattern = r#"^"(default|summary|series)";q=[0-9]+;w=[0-9]+$"#,
    examples(r#""default";q=5;w=60"#, r#""summary";q=120;w=60"#)
)]
pub struct RateLimitPolicyField(pub String);

/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10 §3): `r` requests
/// remaining now, `t` seconds until `r` next increases, under the route's
/// policy.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(
    pattern = r#"^"(default|summary|series)";r=[0-9]+;t=[0-9]+$"#,
    examples(r#""default";r=4;t=60"#, r#""summary";r=119;t=60"#)
)]
pub struct RateLimitField(pub String);

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
