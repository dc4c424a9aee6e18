//! The service's OpenAPI 3.1 document, generated from Rust types with
//! `utoipa`, and the function that serves it with an interactive reference.
//!
//! - The schemas: the response bodies of [`crate::responses`] and the
//!   components' enums and values they carry, which the handlers serialise,
//!   and [`schemas`]: the request bodies and header values.
//! - The operations below (`#[utoipa::path]` on documentation-only
//!   functions, so the handlers stay free of documentation macros): every
//!   parameter, status code, header and example of `GET /health`,
//!   `POST /api/metrics`, `GET /api/metrics/summary` and `GET /api/metrics/series`.
//! - [`document`] / [`document_json`]: the document. The pretty-printed
//!   JSON is committed as `openapi.json` at the repository root; a test fails
//!   when it is out of date (`UPDATE_OPENAPI=1 cargo test -p shared openapi`
//!   rewrites it).
//! - [`docs`]: the `docs` function's handler: `GET /openapi.json` and
//!   `GET /docs` (Swagger UI, every asset embedded in the binary).
//!
//! Headers that a response always carries are marked `required: true`
//! (OpenAPI 3.1 Header Object); utoipa's header model has no such field, so
//! `RequiredHeaders` adds it after generation. Security is optional
//! (`{}` or `api_key`): an `x-api-key` is needed only when the deployment
//! configures `API_KEYS_SHA256`.

pub mod schemas;
pub mod ui;

pub use ui::docs;

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};

use crate::breaker::BreakerState;
use crate::cache::CacheStatus;
use crate::metric::{FieldError, Metric as StoredMetric};
use crate::responses::{
    CircuitBreakers, ClusterHealth, Created, ExternalData, ExternalFallback, ExternalSuccess,
    GroupedSeries, GroupedSummary, Health, HealthCondition, HealthUnavailable, Problem,
    RedisMemory, Series, SeriesBody, SeriesGroup, SeriesPoint, Summary, SummaryBody, SummaryGroup,
};
use crate::tags::Tags;
use crate::window::{Period, PeriodLabel, Window as SummaryWindow};
use schemas::*;

/// Media type of error bodies (RFC 9457).
const PROBLEM: &str = "application/problem+json";

/// Headers a response may omit, as `(path, status, header)`; every other
/// documented response header is always sent and marked `required`.
pub const CONDITIONAL_HEADERS: &[(&str, &str, &str)] = &[
    // Only on a replay.
    ("/api/metrics", "201", "Idempotent-Replayed"),
    // A 503 from the limiter's own Redis call has no limiter state to report;
    // a 503 while storing (after the limiter passed) has it.
    ("/api/metrics", "503", "RateLimit-Policy"),
    ("/api/metrics", "503", "RateLimit"),
    // A client that cannot be identified is refused before the limiter; a
    // malformed body after it.
    ("/api/metrics", "400", "RateLimit-Policy"),
    ("/api/metrics", "400", "RateLimit"),
    // Only on a cache hit.
    ("/api/metrics/summary", "200", "Age"),
    ("/api/metrics/series", "200", "Age"),
    // Only on a request the cache's read did not answer (a miss or a
    // refresh): a hit is not counted.
    ("/api/metrics/summary", "200", "RateLimit-Policy"),
    ("/api/metrics/summary", "200", "RateLimit"),
    ("/api/metrics/series", "200", "RateLimit-Policy"),
    ("/api/metrics/series", "200", "RateLimit"),
    // A 503 before the limiter answered has no limiter state.
    ("/api/metrics/summary", "503", "RateLimit-Policy"),
    ("/api/metrics/summary", "503", "RateLimit"),
    ("/api/metrics/series", "503", "RateLimit-Policy"),
    ("/api/metrics/series", "503", "RateLimit"),
    // Not when every condition needs an operator (scripts refused for want
    // of permission, memory full): retrying soon cannot help.
    ("/health", "503", "Retry-After"),
    // Likewise a 500 or 507 before the limiter answered (or from its call).
    ("/api/metrics", "500", "RateLimit-Policy"),
    ("/api/metrics", "500", "RateLimit"),
    ("/api/metrics", "507", "RateLimit-Policy"),
    ("/api/metrics", "507", "RateLimit"),
    ("/api/metrics/summary", "500", "RateLimit-Policy"),
    ("/api/metrics/summary", "500", "RateLimit"),
    ("/api/metrics/series", "500", "RateLimit-Policy"),
    ("/api/metrics/series", "500", "RateLimit"),
];

/// The OpenAPI document of the service.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Analytics API",
        description = "Real-time metrics ingestion, summaries and series.\n\n\
            * `POST /api/metrics` stores one metric or a batch, rate-limited per client \
            (`RATE_LIMIT_REQUESTS`, default 5, per `RATE_LIMIT_WINDOW_SECONDS`, default 60; \
            a batch is one request) and safe to retry with an `Idempotency-Key`.\n\
            * `GET /api/metrics/summary` aggregates one metric type over a trailing period \
            or an explicit window (count, sum, average, min, max and percentiles within 1 %), \
            enriched by an external source behind a circuit breaker and served through a \
            shared cache; what costs work (cache misses, `no-cache` refreshes) is rate-limited \
            per client (`SUMMARY_RATE_LIMIT_REQUESTS`, default 120, per \
            `RATE_LIMIT_WINDOW_SECONDS`), cache hits are not counted.\n\
            * `GET /api/metrics/series` gives one point per step (`1m` to `1d`, at most 1,500) \
            over such a window, cached and limited the same way \
            (`SERIES_RATE_LIMIT_REQUESTS`, default 60).\n\
            * Metrics may carry tags (`{\"host\": \"web-7\"}`); summaries and series filter \
            by them (`tag.<key>=<value>`) and group by one tag key (`group_by`).\n\
            * `GET /health` reports whether requests can succeed (Redis reachable, scripts \
            allowed, memory not full, not a read-only replica), whether acknowledged data is \
            at risk (an evicting `maxmemory-policy`), and the circuit breaker state.\n\n\
            Errors are RFC 9457 problem details (`application/problem+json`). \
            Clients are told apart by API key, or by address (`TRUSTED_PROXY_HOPS` says \
            where it is read); a request whose client cannot be identified is a 400. \
            When Redis is unavailable every endpoint answers 503 with `Retry-After` \
            within about 2 s, never a hang: retrying can succeed. When Redis refuses the \
            service for a reason retrying will not fix (permissions, credentials, \
            configuration, a failing script), the answer is a 500 whose `type` names it, \
            without `Retry-After`; when Redis is out of memory, writes answer 507 \
            (`store-out-of-memory`) while summaries and series are still served.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        operations::health,
        operations::ingest_metric,
        operations::metrics_summary,
        operations::metrics_series
    ),
    components(schemas(
        Metric, MetricBatch, MetricsBody, StoredMetric, Created, Period, PeriodLabel,
        SummaryWindow, ExternalData, ExternalSuccess, ExternalFallback, Summary, SummaryBody,
        GroupedSummary, SummaryGroup, Series, SeriesBody, GroupedSeries, SeriesGroup,
        SeriesPoint, Health, HealthUnavailable, HealthCondition, RedisMemory, ClusterHealth,
        CircuitBreakers, BreakerState,
        Problem, FieldError, RetryAfterSeconds, Tags,
        RateLimitPolicyField, RateLimitField, CacheStatus, CacheControlMaxAge, AgeSeconds, Replayed
    )),
    modifiers(&ApiKeyScheme, &RequiredHeaders, &TagFilters),
    tags(
        (name = "metrics", description = "Ingest metrics and read summaries."),
        (name = "health", description = "Liveness of the service and its dependencies."),
    ),
)]
pub struct ApiDoc;

/// The document, as generated.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty-printed JSON with a final newline: the exact
/// content of the committed `openapi.json`.
pub fn document_json() -> String {
    // The document holds only strings, numbers and string-keyed maps, which
    // always serialise; an empty string would fail the freshness test loudly.
    let mut json = document().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// Adds the `api_key` security scheme (`x-api-key` header).
struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "An API key whose SHA-256 digest is listed in `API_KEYS_SHA256`. \
                 Required only when the deployment configures API keys; the client is \
                 then identified (and rate-limited) by its key instead of its source address.",
            ))),
        );
    }
}

/// Adds the `tag.<key>=<value>` filters to the summary and series
/// operations: one query parameter per tag key, which OpenAPI describes as
/// a free-form object parameter in `form` style, exploded (each property is
/// sent as `<name>=<value>`, and the names carry the `tag.` prefix).
/// utoipa's parameter attributes have no place for `propertyNames`, so the
/// parameter is added after generation.
struct TagFilters;

impl Modify for TagFilters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn, ParameterStyle};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::Required;
        let parameter = ParameterBuilder::new()
            .name("tag")
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(
                "Tag filters, one query parameter per tag: `tag.<key>=<value>`, e.g. \
                 `tag.host=web-7&tag.region=eu-west-1`. Only metrics carrying every filter are \
                 counted (filters are ANDed); each key at most once, at most 8 filters; keys \
                 `[a-z][a-z0-9_]{0,31}`, values 1–64 characters from `A-Z a-z 0-9 _ . - /` \
                 (else 422). One filter reads one series; several read the series of every tag \
                 combination holding them (bounded by `MAX_TAG_COMBINATIONS`).",
            ))
            .style(Some(ParameterStyle::Form))
            .explode(Some(true))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .max_properties(Some(crate::tags::MAX_TAGS))
                    .property_names(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(r"^tag\.[a-z][a-z0-9_]{0,31}$")),
                    ))
                    .additional_properties(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1))
                            .max_length(Some(crate::tags::MAX_VALUE_LEN))
                            .pattern(Some("^[A-Za-z0-9_./-]{1,64}$")),
                    )),
            ))
            .example(Some(serde_json::json!({"tag.host": "web-7"})))
            .build();
        for path in ["/api/metrics/summary", "/api/metrics/series"] {
            let Some(operation) = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.get.as_mut())
            else {
                continue;
            };
            let parameters = operation.parameters.get_or_insert_with(Vec::new);
            // Right after the other query parameters, before the headers.
            let at = parameters
                .iter()
                .position(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Header))
                .unwrap_or(parameters.len());
            parameters.insert(at, RefOr::T(parameter.clone()));
        }
    }
}

/// Marks every response header `required: true` except the
/// [`CONDITIONAL_HEADERS`].
struct RequiredHeaders;

impl Modify for RequiredHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [&mut item.get, &mut item.post];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    for (name, header) in response.headers.iter_mut() {
                        let RefOr::T(header) = header else {
                            continue;
                        };
                        let conditional = CONDITIONAL_HEADERS
                            .iter()
                            .any(|&(p, s, h)| p == path && s == status && h == name);
                        if !conditional {
                            header
                                .extensions
                                .get_or_insert_with(Extensions::default)
                                .insert("required".into(), true.into());
                        }
                    }
                }
            }
        }
    }
}

/// Documentation-only functions: `#[utoipa::path]` reads their attributes;
/// the real handlers are in [`crate::handlers`].
#[allow(dead_code)]
mod operations {
    use super::schemas::*;
    use super::PROBLEM;
    use crate::cache::CacheStatus;
    use crate::responses::{Created, Health, HealthUnavailable, Problem, SeriesBody, SummaryBody};
    use crate::window::Period;

    /// Service health
    ///
    /// Can requests succeed, and is acknowledged data at risk? Checks what
    /// requests need of Redis: it answers, scripts may run (a harmless
    /// script call), memory is not full, it is not a read-only replica, and
    /// reads its `maxmemory-policy` (`INFO`): any policy but `noeviction`
    /// may evict acknowledged data, which makes the answer a 200 whose
    /// `status` is `degraded`. Every condition is named in `conditions`.
    /// One Redis round trip on one node (two, concurrent, in cluster mode).
    /// An open breaker keeps health at 200: it is a degraded dependency,
    /// not a dead service.
    #[utoipa::path(
        get,
        path = "/health",
        operation_id = "health",
        tag = "health",
        responses(
            (status = 200, description = "Requests can succeed; `degraded` when a condition \
                puts acknowledged data at risk.", body = Health,
                example = json!({
                    "status": "ok",
                    "redis": "healthy",
                    "redis_latency_ms": 0.213,
                    "circuit_breaker": {"external_service": "closed"},
                    "memory": {"used_bytes": 1048576, "maxmemory_bytes": 2147483648u64,
                        "maxmemory_policy": "noeviction", "evicted_keys": 0},
                    "conditions": [],
                    "version": "0.1.0"
                })),
            (status = 503, description = "Requests cannot succeed: Redis does not answer \
                (within about 2 × `REDIS_TIMEOUT_MS`), refuses scripts, is out of memory, \
                is a read-only replica, or (cluster mode) does not serve every slot; \
                `conditions` names each. `Retry-After` unless every condition needs an \
                operator. A request that runs out of `REQUEST_DEADLINE_MS` gets a problem \
                body instead.",
                headers(("Retry-After" = RetryAfterSeconds, description = "Seconds to wait before retrying.")),
                content(
                    (HealthUnavailable = "application/json",
                        example = json!({
                            "status": "unavailable",
                            "redis": "unhealthy",
                            "conditions": [{"name": "scripts_refused", "effect": "unavailable",
                                "detail": "the Redis user may not run scripts (NOPERM), and every request runs Lua scripts: grant it +@scripting"}],
                            "memory": {"used_bytes": 1048576, "maxmemory_bytes": 2147483648u64,
                                "maxmemory_policy": "noeviction", "evicted_keys": 0},
                            "version": "0.1.0"
                        })),
                    (Problem = "application/problem+json",
                        example = json!({
                            "type": "urn:analytics-api:problem:service-unavailable",
                            "title": "Service Unavailable",
                            "status": 503,
                            "detail": "the request could not be completed in time"
                        }))
                )),
        )
    )]
    fn health() {}

    /// Store a metric or a batch
    ///
    /// Stores one metric (a JSON object) or a batch (a JSON array of 1 to
    /// `MAX_BATCH_SIZE`, default 500, all or nothing) in one atomic step.
    ///
    /// **Rate limit.** Checked per client on every POST, which counts
    /// whatever its body: valid or not, single or batch (a batch is one
    /// request), replay or not; a refused one (429) stores nothing. The client is its API key when keys are configured,
    /// else its address: the source address API Gateway or a Function URL
    /// saw, or, behind `TRUSTED_PROXY_HOPS` proxies (1 behind an Application
    /// Load Balancer), the `X-Forwarded-For` entry the outermost one
    /// appended; a request whose client cannot be told is a 400. Every
    /// response that passed or was refused by the limiter (policy `default`)
    /// carries `RateLimit-Policy` and `RateLimit`.
    ///
    /// **Retries.** With an `Idempotency-Key`, a retry with the same metrics
    /// (compared after validation and normalisation) within
    /// `IDEMPOTENCY_TTL_SECONDS` (default 86400) stores nothing and returns
    /// the original 201 body with `Idempotent-Replayed: true`; the same key
    /// with different metrics is a 422. Two concurrent requests with one key
    /// store once. Only successful requests are remembered: a rejected one can
    /// be corrected and retried with the same key.
    ///
    /// **Metric types.** A deployment holds at most `MAX_METRIC_TYPES`
    /// (default 1000) metric types at once, and a client may create at most
    /// `MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR` (default 200) new ones per
    /// hour: a body holding new types beyond either is refused whole (409,
    /// 429), while metrics of existing types are still accepted.
    ///
    /// **Guarantee.** A 201 means every metric of the body is counted exactly
    /// once; any other status means nothing of this request was stored.
    #[utoipa::path(
        post,
        path = "/api/metrics",
        operation_id = "ingest_metric",
        tag = "metrics",
        security((), ("api_key" = [])),
        params(
            ("Idempotency-Key" = Option<String>, Header, nullable = false,
                description = "Makes the request safe to retry (draft-ietf-httpapi-idempotency-key-header): \
                    a unique value per logical request, e.g. a UUID, 1 to 255 visible ASCII characters, \
                    as a bare token or a structured-field string in double quotes. Scoped to the client \
                    and kept `IDEMPOTENCY_TTL_SECONDS` (default 86400 s). Sent at most once.",
                min_length = 1, max_length = 257, pattern = r"^[\x20-\x7E]+$",
                example = json!("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")),
        ),
        request_body(
            content = MetricsBody,
            description = "One metric, or a batch of 1 to `MAX_BATCH_SIZE` (default 500). \
                At most `MAX_BODY_BYTES` (default 1 MiB).",
            examples(
                ("single" = (summary = "One metric",
                    value = json!({"timestamp": "2026-02-18T12:00:00Z", "value": 85.5, "type": "cpu_usage"}))),
                ("batch" = (summary = "A batch (all or nothing)",
                    value = json!([
                        {"timestamp": "2026-02-18T12:00:00Z", "value": 85.5, "type": "cpu_usage"},
                        {"timestamp": "2026-02-18T12:00:00+01:00", "value": 1024, "type": "memory_used_mb"}
                    ]))),
            ),
        ),
        responses(
            (status = 201, description = "Stored (or, with `Idempotent-Replayed: true`, \
                stored by an earlier request with the same key and body).",
                body = Created,
                headers(
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's quota."),
                    ("RateLimit" = RateLimitField, description = "What is left of it."),
                    ("Idempotent-Replayed" = Replayed, description = "`true` on a replay; absent otherwise."),
                ),
                examples(
                    ("single" = (summary = "One metric stored", value = json!({
                        "request_id": "7d1c7f4e-1b9e-4c55-9a53-0f6f1f3b2a10",
                        "stored": 1,
                        "metric": {"timestamp": "2026-02-18T12:00:00Z", "value": 85.5, "type": "cpu_usage"}
                    }))),
                    ("batch" = (summary = "A batch stored", value = json!({
                        "request_id": "0b5e2f0a-93a4-4a1e-8f1e-2d3c4b5a6978",
                        "stored": 2
                    }))),
                )),
            (status = 400, description = "The body is not UTF-8 JSON, or neither an object nor an array \
                (after the rate limiter); or, before it, the client could not be identified \
                (`client-unidentified`: no usable address where `TRUSTED_PROXY_HOPS` says to read it).",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's quota, when the limiter had answered."),
                    ("RateLimit" = RateLimitField, description = "What is left of it, when the limiter had answered."),
                ),
                examples(
                    ("malformed_json" = (summary = "A body that is not JSON", value = json!({
                        "type": "urn:analytics-api:problem:malformed-json",
                        "title": "Bad Request",
                        "status": 400,
                        "detail": "the body is not valid JSON: EOF while parsing an object at line 1 column 1"
                    }))),
                    ("client_unidentified" = (summary = "No usable client address", value = json!({
                    "type": "urn:analytics-api:problem:client-unidentified",
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "the client could not be identified: the request carries no source address in its request context (an Application Load Balancer reports the client only in X-Forwarded-For); set TRUSTED_PROXY_HOPS to the number of proxies in front of the function that append to X-Forwarded-For (1 behind an Application Load Balancer)"
                }))),
                )),
            (status = 401, description = "API keys are configured and `x-api-key` is missing or unknown. \
                Checked before the rate limiter.",
                body = Problem, content_type = PROBLEM,
                example = json!({
                    "type": "urn:analytics-api:problem:unauthorized",
                    "title": "Unauthorized",
                    "status": 401,
                    "detail": "a valid x-api-key header is required"
                })),
            (status = 409, description = "The body holds metric types new to this deployment, \
                and storing them would take it past `MAX_METRIC_TYPES` (default 1000) live types. \
                Nothing was stored, whatever else the body held. Metrics of types already stored are \
                accepted; a type stops counting when its data expires. Retrying the same body does \
                not help until types expire or the limit is raised.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's quota."),
                    ("RateLimit" = RateLimitField, description = "What is left of it."),
                ),
                example = json!({
                    "type": "urn:analytics-api:problem:metric-type-limit",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "this request holds 3 metric type(s) new to this deployment, which holds \
                        999 of its limit of MAX_METRIC_TYPES = 1000; nothing was stored. Metrics of \
                        types already stored are accepted; a type stops counting when its data expires \
                        (METRIC_RETENTION_DAYS after its last metric)"
                })),
            (status = 413, description = "The body exceeds `MAX_BODY_BYTES`.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's quota."),
                    ("RateLimit" = RateLimitField, description = "What is left of it."),
                ),
                example = json!({
                    "type": "urn:analytics-api:problem:payload-too-large",
                    "title": "Payload Too Large",
                    "status": 413,
                    "detail": "the body exceeds the limit of 1048576 bytes"
                })),
            (status = 422, description = "Invalid metrics (every offending field is listed, with its \
                `index` in a batch, a bad tag as `tags.<key>`; nothing is stored), a new tag value \
                or tag combination beyond its cap (`tag-limit-exceeded`, naming the cap and its \
                setting; nothing is stored), an invalid `Idempotency-Key`, a key already used \
                with a different body, or more metric types new to the deployment than a client \
                may create in an hour (`MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR`), which no retry \
                of the same body can fit.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's quota."),
                    ("RateLimit" = RateLimitField, description = "What is left of it."),
                ),
                examples(
                    ("invalid_metric" = (summary = "A single metric with two invalid fields", value = json!({
                        "type": "urn:analytics-api:problem:validation-failed",
                        "title": "Unprocessable Entity",
                        "status": 422,
                        "detail": "value: must be a number, not a string; type: is required",
                        "errors": [
                            {"field": "value", "reason": "must be a number, not a string"},
                            {"field": "type", "reason": "is required"}
                        ]
                    }))),
                    ("invalid_batch" = (summary = "A batch with an invalid item", value = json!({
                        "type": "urn:analytics-api:problem:validation-failed",
                        "title": "Unprocessable Entity",
                        "status": 422,
                        "detail": "1 of 3 metrics are invalid; nothing was stored",
                        "errors": [
                            {"index": 1, "field": "timestamp", "reason": "is more than 300 s in the future"}
                        ]
                    }))),
                    ("tag_limit" = (summary = "A new tag value beyond MAX_TAG_VALUES_PER_KEY", value = json!({
                        "type": "urn:analytics-api:problem:tag-limit-exceeded",
                        "title": "Unprocessable Entity",
                        "status": 422,
                        "detail": "\"web-1001\" would be a new value of host for cpu_usage, which already has 1000 (MAX_TAG_VALUES_PER_KEY); nothing was stored",
                        "errors": [
                            {"field": "tags.host", "reason": "\"web-1001\" would be a new value of host for cpu_usage, which already has 1000 (MAX_TAG_VALUES_PER_KEY)"}
                        ]
                    }))),
                    ("key_reused" = (summary = "An Idempotency-Key reused with another body", value = json!({
                        "type": "urn:analytics-api:problem:idempotency-key-reused",
                        "title": "Unprocessable Entity",
                        "status": 422,
                        "detail": "this Idempotency-Key was already used with a different body"
                    }))),
                )),
            (status = 429, description = "The client's rate limit is exhausted (nothing was read or \
                stored; a retry after `Retry-After` seconds is accepted if nothing else is sent \
                meanwhile), or the body holds metric types new to this deployment and the client \
                has created `MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR` (default 200) new types in \
                the last hour (nothing was stored; the same body fits after `Retry-After` seconds \
                unless the client creates other types meanwhile).",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("Retry-After" = RetryAfterSeconds, description = "Seconds until the request will be accepted."),
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's quota."),
                    ("RateLimit" = RateLimitField, description = "What is left of it (`r=0` when the rate limit refused)."),
                ),
                examples(
                    ("rate_limited" = (summary = "The rate limit is exhausted", value = json!({
                        "type": "urn:analytics-api:problem:rate-limited",
                        "title": "Too Many Requests",
                        "status": 429,
                        "detail": "rate limit exceeded; retry after 37 s"
                    }))),
                    ("new_types" = (summary = "The client's budget of new metric types is spent", value = json!({
                        "type": "urn:analytics-api:problem:new-metric-types-rate-limited",
                        "title": "Too Many Requests",
                        "status": 429,
                        "detail": "this client may create MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR = 200 new \
                            metric types per hour; nothing was stored. Retry after 1712 s, or send metrics \
                            of types already stored"
                    }))),
                )),
            (status = 500, description = "Redis refuses the service for a reason that retrying will not \
                fix: `type` names it (`store-permission-denied`, `store-authentication-failed`, \
                `store-script-error` or `store-misconfigured`), the service's error log has the \
                cause. No `Retry-After`: the deployment's operator must act. Nothing was stored.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's quota, when the limiter had answered."),
                    ("RateLimit" = RateLimitField, description = "What is left of it, when the limiter had answered."),
                ),
                examples(
                    ("permission_denied" = (summary = "The Redis user may not run the service's scripts", value = json!({
                        "type": "urn:analytics-api:problem:store-permission-denied",
                        "title": "Internal Server Error",
                        "status": 500,
                        "detail": "the data store denies this service a command or key it needs; its operator must grant it"
                    }))),
                    ("misconfigured" = (summary = "Redis refuses a command the service needs", value = json!({
                        "type": "urn:analytics-api:problem:store-misconfigured",
                        "title": "Internal Server Error",
                        "status": 500,
                        "detail": "the data store refuses this service's commands; its operator must fix what the service's error log names"
                    }))),
                )),
            (status = 503, description = "Redis is unavailable or the request ran out of \
                `REQUEST_DEADLINE_MS`. Nothing was acknowledged: retry (with the same \
                `Idempotency-Key`) after `Retry-After`.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("Retry-After" = RetryAfterSeconds, description = "Seconds to wait before retrying."),
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's quota, when the limiter had answered."),
                    ("RateLimit" = RateLimitField, description = "What is left of it, when the limiter had answered."),
                ),
                example = json!({
                    "type": "urn:analytics-api:problem:service-unavailable",
                    "title": "Service Unavailable",
                    "status": 503,
                    "detail": "the data store is temporarily unavailable"
                })),
            (status = 507, description = "Redis is out of memory and refuses writes; nothing of this \
                request was stored (in cluster mode, a batch over several hash slots may have had \
                some slots' parts stored: send it again with the same `Idempotency-Key` once the store \
                has room). No `Retry-After`: memory comes back when the operator adds some or data \
                expires.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's quota, when the limiter had answered."),
                    ("RateLimit" = RateLimitField, description = "What is left of it, when the limiter had answered."),
                ),
                example = json!({
                    "type": "urn:analytics-api:problem:store-out-of-memory",
                    "title": "Insufficient Storage",
                    "status": 507,
                    "detail": "the data store is out of memory and refuses writes until its operator frees or adds memory"
                })),
        )
    )]
    fn ingest_metric() {}

    /// Summarise a metric type
    ///
    /// Count, average, minimum, maximum and sum of one metric type over a
    /// trailing `period` (ending at the end of the current UTC minute) or an
    /// explicit `from`/`to` window (rounded outward to whole minutes,
    /// half-open `[from, to)`), enriched by the external source.
    ///
    /// Served from a cache shared by all instances when possible
    /// (`X-Cache: HIT`, `Age`), else computed once across all instances
    /// (`X-Cache: MISS`). `Cache-Control: no-cache` on the request forces a
    /// recomputation. When the external source fails or its circuit breaker
    /// is open, the summary is still a 200 with `external_data.status =
    /// fallback`.
    ///
    /// **Rate limit** (policy `summary`, `SUMMARY_RATE_LIMIT_REQUESTS` per
    /// `RATE_LIMIT_WINDOW_SECONDS`, counted apart from ingests and series):
    /// only what costs work counts — a cache miss or a `no-cache` refresh,
    /// whose responses carry `RateLimit-Policy` and `RateLimit`. A cache hit
    /// is one Redis read, is not counted and carries neither field; it is
    /// served even to a client over its limit. When Redis is out of memory
    /// (it refuses writes), the summary is still answered, computed for this
    /// request without the cache (`Cache-Control: max-age=0`), uncounted.
    #[utoipa::path(
        get,
        path = "/api/metrics/summary",
        operation_id = "metrics_summary",
        tag = "metrics",
        security((), ("api_key" = [])),
        params(
            ("type" = String, Query,
                description = "The metric type: 1–64 characters from `A-Z a-z 0-9 _ . -`.",
                min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]{1,64}$",
                example = json!("cpu_usage")),
            ("period" = Option<Period>, Query,
                description = "A trailing window; required unless `from` and `to` are given, \
                    and refused (422) together with them.",
                example = json!("hourly")),
            ("from" = Option<String>, Query, format = DateTime,
                description = "Start of an explicit window (RFC 3339 with offset), inside the \
                    retention (`METRIC_RETENTION_DAYS`, default 35); given together with `to`.",
                example = json!("2026-02-18T10:00:00Z")),
            ("to" = Option<String>, Query, format = DateTime,
                description = "End of an explicit window (RFC 3339 with offset), after `from` and \
                    at most `MAX_FUTURE_SKEW_SECONDS` (default 300) ahead; given together with `from`.",
                example = json!("2026-02-18T12:00:00Z")),
            ("quantiles" = Option<String>, Query,
                description = "The quantiles to report, comma-separated, each strictly between 0 \
                    and 1, at most 10; default `0.5,0.9,0.95,0.99`. Reported as `p` and the \
                    percentage (`0.999` → `p99.9`).",
                example = json!("0.5,0.999")),
            ("group_by" = Option<String>, Query,
                description = "A tag key: one result per value of it (among the metrics that \
                    match the filters), largest `count` first, at most `limit`; the answer is then \
                    a grouped summary. Reads the series of every value of the key seen in the \
                    window (at most `MAX_TAG_VALUES_PER_KEY`).",
                pattern = "^[a-z][a-z0-9_]{0,31}$",
                example = json!("region")),
            ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
                description = "With `group_by` only: the most groups returned (default 100); \
                    `groups_left_out` counts the others.",
                example = json!(10)),
            ("Cache-Control" = Option<String>, Header, nullable = false,
                description = "`no-cache` skips the cached summary and recomputes it.",
                example = json!("no-cache")),
        ),
        responses(
            (status = 200, description = "The summary; with `group_by`, one per tag value.", body = SummaryBody,
                headers(
                    ("X-Cache" = CacheStatus, description = "`HIT` when served from the shared cache, else `MISS`."),
                    ("Cache-Control" = CacheControlMaxAge, description = "How long this answer stays cached, seconds; \
                        `max-age=0` when it was computed without the cache because Redis is out of memory."),
                    ("Age" = AgeSeconds, description = "Seconds since the cached summary was computed; only with `X-Cache: HIT`."),
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's summary quota; only when the request was counted (not on a hit)."),
                    ("RateLimit" = RateLimitField, description = "What is left of it; only when the request was counted."),
                ),
                examples(
                    ("with_data" = (summary = "Data in the window", value = json!({
                        "type": "cpu_usage",
                        "period": "hourly",
                        "window": {"from": "2026-02-18T11:01:00Z", "to": "2026-02-18T12:01:00Z"},
                        "count": 42,
                        "average_value": 61.25,
                        "min_value": 12.0,
                        "max_value": 97.5,
                        "sum": 2572.5,
                        "percentiles": {"p50": 60.5, "p90": 91.0, "p95": 94.3, "p99": 97.2},
                        "external_data": {"status": "success", "external_metric_context": 342}
                    }))),
                    ("empty_fallback" = (summary = "No data, external source unavailable", value = json!({
                        "type": "cpu_usage",
                        "period": "custom",
                        "window": {"from": "2026-02-18T10:00:00Z", "to": "2026-02-18T11:00:00Z"},
                        "count": 0,
                        "average_value": null,
                        "min_value": null,
                        "max_value": null,
                        "sum": 0.0,
                        "percentiles": {"p50": null, "p90": null, "p95": null, "p99": null},
                        "external_data": {"status": "fallback", "reason": "circuit_open"}
                    }))),
                    ("filtered" = (summary = "Filtered by a tag", value = json!({
                        "type": "cpu_usage",
                        "period": "hourly",
                        "window": {"from": "2026-02-18T11:01:00Z", "to": "2026-02-18T12:01:00Z"},
                        "filters": {"host": "web-7"},
                        "count": 12,
                        "average_value": 48.5,
                        "min_value": 20.0,
                        "max_value": 71.0,
                        "sum": 582.0,
                        "percentiles": {"p50": 47.9, "p90": 69.8, "p95": 70.6, "p99": 70.6},
                        "external_data": {"status": "success", "external_metric_context": 342}
                    }))),
                    ("grouped" = (summary = "Grouped by a tag", value = json!({
                        "type": "cpu_usage",
                        "period": "hourly",
                        "window": {"from": "2026-02-18T11:01:00Z", "to": "2026-02-18T12:01:00Z"},
                        "group_by": "region",
                        "groups": [
                            {"value": "eu-west-1", "count": 30, "average_value": 55.0, "min_value": 12.0,
                             "max_value": 97.5, "sum": 1650.0,
                             "percentiles": {"p50": 54.4, "p90": 90.1, "p95": 94.3, "p99": 97.2}},
                            {"value": "us-east-1", "count": 12, "average_value": 76.875, "min_value": 41.0,
                             "max_value": 96.0, "sum": 922.5,
                             "percentiles": {"p50": 77.1, "p90": 93.5, "p95": 95.9, "p99": 95.9}}
                        ],
                        "groups_left_out": 0,
                        "external_data": {"status": "success", "external_metric_context": 342}
                    }))),
                )),
            (status = 400, description = "The client could not be identified: no usable address where \
                `TRUSTED_PROXY_HOPS` says to read it (and no API keys are configured).",
                body = Problem, content_type = PROBLEM, example = json!({
                    "type": "urn:analytics-api:problem:client-unidentified",
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "the client could not be identified: the request carries no source address in its request context (an Application Load Balancer reports the client only in X-Forwarded-For); set TRUSTED_PROXY_HOPS to the number of proxies in front of the function that append to X-Forwarded-For (1 behind an Application Load Balancer)"
                })),
            (status = 401, description = "API keys are configured and `x-api-key` is missing or unknown.",
                body = Problem, content_type = PROBLEM,
                example = json!({
                    "type": "urn:analytics-api:problem:unauthorized",
                    "title": "Unauthorized",
                    "status": 401,
                    "detail": "a valid x-api-key header is required"
                })),
            (status = 422, description = "A missing or invalid query (tag filters, `group_by` and \
                `limit` included); every problem is listed and the allowed periods are named. Also \
                a tag selection that would read more than 200,000 buckets.",
                body = Problem, content_type = PROBLEM,
                example = json!({
                    "type": "urn:analytics-api:problem:validation-failed",
                    "title": "Unprocessable Entity",
                    "status": 422,
                    "detail": "invalid summary query; period must be one of hourly, daily, weekly, monthly",
                    "errors": [
                        {"field": "period", "reason": "must be one of hourly, daily, weekly, monthly (got \"yearly\")"}
                    ]
                })),
            (status = 429, description = "The client's summary rate limit is exhausted and the summary \
                was not in the cache; nothing was computed. Cached summaries are still served.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("Retry-After" = RetryAfterSeconds, description = "Seconds until a request will be accepted."),
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's summary quota."),
                    ("RateLimit" = RateLimitField, description = "What is left of it (`r=0`)."),
                ),
                example = json!({
                    "type": "urn:analytics-api:problem:rate-limited",
                    "title": "Too Many Requests",
                    "status": 429,
                    "detail": "rate limit exceeded; retry after 37 s"
                })),
            (status = 500, description = "Redis refuses the service for a reason that retrying will not \
                fix: `type` names it (`store-permission-denied`, `store-authentication-failed`, \
                `store-script-error` or `store-misconfigured`), the service's error log has the \
                cause. No `Retry-After`: the deployment's operator must act.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's summary quota, when the limiter had answered."),
                    ("RateLimit" = RateLimitField, description = "What is left of it, when the limiter had answered."),
                ),
                examples(
                    ("permission_denied" = (summary = "The Redis user may not run the service's scripts", value = json!({
                        "type": "urn:analytics-api:problem:store-permission-denied",
                        "title": "Internal Server Error",
                        "status": 500,
                        "detail": "the data store denies this service a command or key it needs; its operator must grant it"
                    }))),
                    ("misconfigured" = (summary = "Redis refuses a command the service needs", value = json!({
                        "type": "urn:analytics-api:problem:store-misconfigured",
                        "title": "Internal Server Error",
                        "status": 500,
                        "detail": "the data store refuses this service's commands; its operator must fix what the service's error log names"
                    }))),
                )),
            (status = 503, description = "Redis is unavailable or the request ran out of `REQUEST_DEADLINE_MS`.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("Retry-After" = RetryAfterSeconds, description = "Seconds to wait before retrying."),
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's summary quota, when the limiter had answered."),
                    ("RateLimit" = RateLimitField, description = "What is left of it, when the limiter had answered."),
                ),
                example = json!({
                    "type": "urn:analytics-api:problem:service-unavailable",
                    "title": "Service Unavailable",
                    "status": 503,
                    "detail": "the data store is temporarily unavailable"
                })),
        )
    )]
    fn metrics_summary() {}

    /// A series of one metric type
    ///
    /// One point per step (count, sum, average, minimum, maximum and
    /// percentiles) over a trailing `period` or an explicit window, aligned
    /// outward to whole steps; cached like summaries.
    ///
    /// **Rate limit** (policy `series`, `SERIES_RATE_LIMIT_REQUESTS` per
    /// `RATE_LIMIT_WINDOW_SECONDS`, counted apart from ingests and
    /// summaries): only a cache miss or a `no-cache` refresh counts; a
    /// cache hit is not counted and carries no `RateLimit` fields.
    #[utoipa::path(
        get,
        path = "/api/metrics/series",
        operation_id = "metrics_series",
        tag = "metrics",
        security((), ("api_key" = [])),
        params(
            ("type" = String, Query,
                description = "The metric type: 1–64 characters from `A-Z a-z 0-9 _ . -`.",
                min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]{1,64}$",
                example = json!("cpu_usage")),
            ("step" = String, Query,
                description = "The length of each point: `1m`, `5m`, `15m`, `1h`, `6h`, `1d`, or a \
                    number of seconds that is a multiple of 60. The window is aligned outward to \
                    multiples of the step (UTC); at most 1,500 points.",
                pattern = "^(1m|5m|15m|1h|6h|1d|[1-9][0-9]{1,7})$",
                example = json!("5m")),
            ("period" = Option<Period>, Query,
                description = "A trailing window; required unless `from` and `to` are given.",
                example = json!("daily")),
            ("from" = Option<String>, Query, format = DateTime,
                description = "Start of an explicit window (RFC 3339 with offset), inside the \
                    retention; given together with `to`.",
                example = json!("2026-02-18T00:00:00Z")),
            ("to" = Option<String>, Query, format = DateTime,
                description = "End of an explicit window (RFC 3339 with offset); given together with `from`.",
                example = json!("2026-02-19T00:00:00Z")),
            ("quantiles" = Option<String>, Query,
                description = "The quantiles of each point, as for summaries; default `0.5,0.9,0.95,0.99`.",
                example = json!("0.5,0.99")),
            ("group_by" = Option<String>, Query,
                description = "A tag key: one series per value of it, the largest (by count over \
                    the window) first, at most `limit`; the answer is then a grouped series.",
                pattern = "^[a-z][a-z0-9_]{0,31}$",
                example = json!("region")),
            ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
                description = "With `group_by` only: the most groups returned (default 100); \
                    `limit` × points may not pass 10,000.",
                example = json!(3)),
            ("Cache-Control" = Option<String>, Header, nullable = false,
                description = "`no-cache` skips the cached series and recomputes it.",
                example = json!("no-cache")),
        ),
        responses(
            (status = 200, description = "The series: one point per step, empty steps included; with \
                `group_by`, one series per tag value.", body = SeriesBody,
                headers(
                    ("X-Cache" = CacheStatus, description = "`HIT` when served from the shared cache, else `MISS`."),
                    ("Cache-Control" = CacheControlMaxAge, description = "How long this answer stays cached, seconds; \
                        `max-age=0` when it was computed without the cache because Redis is out of memory."),
                    ("Age" = AgeSeconds, description = "Seconds since the cached series was computed; only with `X-Cache: HIT`."),
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's series quota; only when the request was counted (not on a hit, nor when Redis, out of memory, could not count it)."),
                    ("RateLimit" = RateLimitField, description = "What is left of it; only when the request was counted."),
                ),
                example = json!({
                    "type": "cpu_usage",
                    "period": "custom",
                    "window": {"from": "2026-02-18T11:00:00Z", "to": "2026-02-18T11:10:00Z"},
                    "step": "5m",
                    "step_seconds": 300,
                    "points": [
                        {"t": "2026-02-18T11:00:00Z", "count": 23, "sum": 1150.45, "average_value": 50.02,
                         "min_value": 0.52, "max_value": 99.88,
                         "percentiles": {"p50": 49.9, "p90": 90.1, "p95": 95.0, "p99": 98.9}},
                        {"t": "2026-02-18T11:05:00Z", "count": 0, "sum": 0.0, "average_value": null,
                         "min_value": null, "max_value": null,
                         "percentiles": {"p50": null, "p90": null, "p95": null, "p99": null}}
                    ]
                })),
            (status = 400, description = "The client could not be identified: no usable address where \
                `TRUSTED_PROXY_HOPS` says to read it (and no API keys are configured).",
                body = Problem, content_type = PROBLEM, example = json!({
                    "type": "urn:analytics-api:problem:client-unidentified",
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "the client could not be identified: the request carries no source address in its request context (an Application Load Balancer reports the client only in X-Forwarded-For); set TRUSTED_PROXY_HOPS to the number of proxies in front of the function that append to X-Forwarded-For (1 behind an Application Load Balancer)"
                })),
            (status = 401, description = "API keys are configured and `x-api-key` is missing or unknown.",
                body = Problem, content_type = PROBLEM,
                example = json!({
                    "type": "urn:analytics-api:problem:unauthorized",
                    "title": "Unauthorized",
                    "status": 401,
                    "detail": "a valid x-api-key header is required"
                })),
            (status = 422, description = "A missing or invalid query, more than 1,500 points (the \
                detail says which step or window would fit), a grouped series of more than 10,000 \
                points, or a tag selection that would read more than 200,000 buckets. Checked \
                before the rate limiter.",
                body = Problem, content_type = PROBLEM,
                example = json!({
                    "type": "urn:analytics-api:problem:validation-failed",
                    "title": "Unprocessable Entity",
                    "status": 422,
                    "detail": "step: 43200 points of 1m each; at most 1500 per series: use a step of at least 1h, or a window of at most 90000 s at this step",
                    "errors": [
                        {"field": "step", "reason": "43200 points of 1m each; at most 1500 per series: use a step of at least 1h, or a window of at most 90000 s at this step"}
                    ]
                })),
            (status = 429, description = "The client's series rate limit is exhausted and the series was \
                not in the cache; nothing was computed. Cached series are still served.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("Retry-After" = RetryAfterSeconds, description = "Seconds until a request will be accepted."),
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's series quota."),
                    ("RateLimit" = RateLimitField, description = "What is left of it (`r=0`)."),
                ),
                example = json!({
                    "type": "urn:analytics-api:problem:rate-limited",
                    "title": "Too Many Requests",
                    "status": 429,
                    "detail": "rate limit exceeded; retry after 37 s"
                })),
            (status = 500, description = "Redis refuses the service for a reason that retrying will not \
                fix: `type` names it (`store-permission-denied`, `store-authentication-failed`, \
                `store-script-error` or `store-misconfigured`), the service's error log has the \
                cause. No `Retry-After`: the deployment's operator must act.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's series quota, when the limiter had answered."),
                    ("RateLimit" = RateLimitField, description = "What is left of it, when the limiter had answered."),
                ),
                examples(
                    ("permission_denied" = (summary = "The Redis user may not run the service's scripts", value = json!({
                        "type": "urn:analytics-api:problem:store-permission-denied",
                        "title": "Internal Server Error",
                        "status": 500,
                        "detail": "the data store denies this service a command or key it needs; its operator must grant it"
                    }))),
                    ("misconfigured" = (summary = "Redis refuses a command the service needs", value = json!({
                        "type": "urn:analytics-api:problem:store-misconfigured",
                        "title": "Internal Server Error",
                        "status": 500,
                        "detail": "the data store refuses this service's commands; its operator must fix what the service's error log names"
                    }))),
                )),
            (status = 503, description = "Redis is unavailable or the request ran out of `REQUEST_DEADLINE_MS`.",
                body = Problem, content_type = PROBLEM,
                headers(
                    ("Retry-After" = RetryAfterSeconds, description = "Seconds to wait before retrying."),
                    ("RateLimit-Policy" = RateLimitPolicyField, description = "The client's series quota, when the limiter had answered."),
                    ("RateLimit" = RateLimitField, description = "What is left of it, when the limiter had answered."),
                ),
                example = json!({
                    "type": "urn:analytics-api:problem:service-unavailable",
                    "title": "Service Unavailable",
                    "status": 503,
                    "detail": "the data store is temporarily unavailable"
                })),
        )
    )]
    fn metrics_series() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Where the committed document lives: `openapi.json` at the repository
    /// root.
    fn committed_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.json")
    }

    #[test]
    fn committed_openapi_json_is_up_to_date() {
        let generated = document_json();
        let path = committed_path();
        if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "openapi.json is out of date with the Rust types in shared/src/openapi*; \
             refresh it with `UPDATE_OPENAPI=1 cargo test -p shared openapi` and commit it"
        );
    }

    fn doc() -> Value {
        serde_json::from_str(&document_json()).unwrap()
    }

    #[test]
    fn document_is_openapi_3_1_with_the_three_operations() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, method, id) in [
            ("/health", "get", "health"),
            ("/api/metrics", "post", "ingest_metric"),
            ("/api/metrics/summary", "get", "metrics_summary"),
        ] {
            assert_eq!(doc["paths"][path][method]["operationId"], id, "{path}");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["api_key"]["name"],
            "x-api-key"
        );
    }

    #[test]
    fn every_reference_resolves_and_every_schema_is_used() {
        fn refs(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = doc();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in &found {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "dangling {r}");
        }
        for name in doc["components"]["schemas"].as_object().unwrap().keys() {
            let r = format!("#/components/schemas/{name}");
            assert!(found.contains(&r), "unused schema {name}");
        }
    }

    #[test]
    fn header_parameters_are_never_null() {
        let doc = doc();
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for operation in operations.as_object().unwrap().values() {
                for param in operation["parameters"].as_array().into_iter().flatten() {
                    assert_ne!(
                        param["schema"]["type"],
                        serde_json::json!(["string", "null"]),
                        "{path} {}",
                        param["name"]
                    );
                }
            }
        }
    }

    #[test]
    fn every_status_code_is_documented() {
        let doc = doc();
        let statuses = |path: &str, method: &str| -> Vec<String> {
            doc["paths"][path][method]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        assert_eq!(statuses("/health", "get"), ["200", "503"]);
        assert_eq!(
            statuses("/api/metrics", "post"),
            ["201", "400", "401", "409", "413", "422", "429", "500", "503", "507"]
        );
        assert_eq!(
            statuses("/api/metrics/summary", "get"),
            ["200", "400", "401", "422", "429", "500", "503"]
        );
        assert_eq!(
            statuses("/api/metrics/series", "get"),
            ["200", "400", "401", "422", "429", "500", "503"]
        );
    }

    #[test]
    fn always_sent_headers_are_required_and_conditional_ones_are_not() {
        let doc = doc();
        let header = |path: &str, method: &str, status: &str, name: &str| {
            doc["paths"][path][method]["responses"][status]["headers"][name].clone()
        };
        let post = |status, name| header("/api/metrics", "post", status, name);
        assert_eq!(post("429", "Retry-After")["required"], true);
        assert_eq!(post("201", "RateLimit")["required"], true);
        assert_eq!(post("201", "Idempotent-Replayed")["required"], Value::Null);
        assert!(post("201", "Idempotent-Replayed").is_object());
        assert_eq!(post("503", "RateLimit")["required"], Value::Null);
        let summary = |name| header("/api/metrics/summary", "get", "200", name);
        assert_eq!(summary("X-Cache")["required"], true);
        assert_eq!(summary("Age")["required"], Value::Null);
        assert!(summary("Age").is_object());
        // A hit is not counted: the limiter's fields are conditional there,
        // required on the 429.
        assert_eq!(summary("RateLimit")["required"], Value::Null);
        assert_eq!(
            header("/api/metrics/summary", "get", "429", "RateLimit")["required"],
            true
        );
        // Every conditional header listed is really documented.
        for &(path, status, name) in CONDITIONAL_HEADERS {
            let method = if path == "/api/metrics" {
                "post"
            } else {
                "get"
            };
            assert!(
                header(path, method, status, name).is_object(),
                "{path} {status} {name}"
            );
        }
    }

    #[test]
    fn problem_bodies_use_problem_json() {
        let doc = doc();
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') {
                        let content = response["content"].as_object().unwrap();
                        assert_eq!(
                            content.keys().collect::<Vec<_>>(),
                            [PROBLEM],
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }
}
