//! `GET /api/metrics/summary`: aggregates of one metric type over a window,
//! enriched by the external source, served through the read-through cache
//! and rate limited where it costs (the helper the series share).

use std::future::Future;

use chrono::Utc;
use lambda_http::http::header::{HeaderValue, AGE, CACHE_CONTROL};
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use tokio::time::Instant;

use super::{before, deadline, require_method};
use crate::breaker::CallError;
use crate::cache::{CacheStatus, CachedBody, Computed, Lookup};
use crate::connection::Fault;
use crate::http::{client_identity, rate_limit_fields, respond, ApiError, JSON};
use crate::identity::ClientId;
use crate::rate_limit::RateLimitError;
use crate::rate_limit::RateLimiter;
use crate::responses::{
    percentiles, percentiles_note, ExternalData, FallbackReason, GroupedSummary, Summary,
    SummaryBody, SummaryGroup,
};
use crate::state::AppState;
use crate::store::stats::WindowStats;
use crate::tags::TagValue;
use crate::window::{parse_summary_query, SummaryQuery};

/// Answers 200 with
/// `{"type", "period", "window": {"from", "to"}, "count", "average_value",
/// "min_value", "max_value", "sum", "percentiles", "external_data"}`; with no
/// data in the window `count` and `sum` are 0 and the others `null`.
/// `percentiles` holds p50, p90, p95 and p99, or the quantiles asked with
/// `quantiles=0.5,0.999` (named `p50`, `p99.9`), each within 1 % of the exact
/// value; they are `null`, with a `note`, while the window holds buckets
/// stored before percentiles were kept. `external_data` is
/// `{"status": "fallback", "reason": "circuit_open" | "upstream_error" |
/// "timeout"}` when the source could not be used — the summary is still a 200.
///
/// Tags: `tag.<key>=<value>` filters (ANDed) count only the metrics that
/// carry them, echoed as `"filters"`; `group_by=<key>` answers
/// `{…, "group_by", "groups": [{"value", "count", "average_value",
/// "min_value", "max_value", "sum", "percentiles"}], "groups_left_out"}`
/// instead of the top-level aggregates: one group per value of the key,
/// largest count first, at most `limit` (default 100, at most 1,000).
///
/// Served from the cache when possible (`X-Cache: HIT`, `Age`), else computed
/// once across all instances (`X-Cache: MISS`); `Cache-Control: max-age=<s>`
/// says how long the answer stays cached. `Cache-Control: no-cache` on the
/// request forces a recomputation.
///
/// Rate limited per client where it costs (policy `summary`,
/// `SUMMARY_RATE_LIMIT_REQUESTS` per `RATE_LIMIT_WINDOW_SECONDS`, apart from
/// ingests and series): a hit is one `GET` and counts for nothing; a miss or
/// a `no-cache` refresh counts once, and its response carries the
/// `RateLimit` fields ([`serve_cached`]).
///
/// With Redis out of memory (it refuses writes), a summary is still
/// answered: a cached one as usual, another computed for this request alone
/// and not stored (`X-Cache: MISS`, `Cache-Control: max-age=0`), uncounted
/// (counting is a write), with the external data as a fallback when the
/// breaker would have to write to admit the call.
///
/// Errors: 400 for a client that cannot be identified (no usable address
/// where `TRUSTED_PROXY_HOPS` says), 401 missing/unknown API key (when keys
/// are configured), 422 for a missing or invalid query (the allowed periods
/// are listed) or a tag selection that would read too many buckets, 429 + `Retry-After` over the rate limit, 503 + `Retry-After`
/// when Redis is unavailable, 500 (a `store-…` problem, no `Retry-After`)
/// when Redis refuses the service for a reason retrying will not fix.
pub async fn metrics_summary(state: &AppState, req: Request) -> Response<Body> {
    let deadline = deadline(state);
    let asked = || -> Result<_, ApiError> {
        require_method(&req, Method::GET)?;
        let client = client_identity(&req, &state.config.identity)?;
        let params = req.query_string_parameters();
        let query = parse_summary_query(
            params.iter(),
            Utc::now(),
            state.config.metrics.retention,
            state.config.metrics.max_future_skew,
        )?;
        Ok((client, query))
    };
    let (client, query) = match asked() {
        Ok(asked) => asked,
        Err(err) => return err.into_response(),
    };
    serve_cached(
        state,
        deadline,
        &state.summary_limiter,
        &client,
        &query,
        wants_no_cache(&req),
        || compute_summary(state, &query),
    )
    .await
}

/// Answers a summary or series `query` of `client` through the cache, by
/// `deadline`.
///
/// A hit is answered by the cache's one `GET` and is not counted: it costs
/// Redis no more than the plainest read, and no script call is added to it.
/// A request the `GET` does not answer (a miss, a `no-cache` refresh) is
/// what costs: Redis scripts, the buckets, perhaps an external call. It
/// passes `limiter` first (one script call): refused, it is a 429 with
/// `Retry-After` and nothing else happens; admitted, its response carries
/// the limiter's `RateLimit` fields whatever happens next (even a 503).
/// With Redis out of memory the limiter cannot count (a write): the request
/// is then served uncounted, without the fields.
/// Such a request counts once, also when it ends up served by another
/// request's computation (`X-Cache: HIT` after waiting on the lock).
pub(super) async fn serve_cached<F, Fut>(
    state: &AppState,
    deadline: Instant,
    limiter: &RateLimiter,
    client: &ClientId,
    query: &SummaryQuery,
    no_cache: bool,
    compute: F,
) -> Response<Body>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Computed, ApiError>>,
{
    let looked_up = before(deadline, state, async {
        Ok(state.cache.lookup(&state.redis, query, no_cache).await?)
    })
    .await;
    let flight = match looked_up {
        Ok(Lookup::Hit(hit)) => return cached_response(hit),
        Ok(Lookup::Miss(flight)) => flight,
        Err(err) => return err.into_response(),
    };
    let admitted = before(deadline, state, async {
        let decision = match limiter.check(&state.redis, client).await {
            Ok(decision) => decision,
            // Counting the request is a write, which a Redis out of memory
            // refuses; a summary or series only reads, so it is served
            // uncounted rather than turning a write outage into a read
            // outage.
            Err(RateLimitError::Redis(err)) if Fault::of(&err) == Fault::OutOfMemory => {
                tracing::warn!(
                    error = %err,
                    "redis is out of memory: a query served without counting it"
                );
                return Ok(None);
            }
            Err(err) => return Err(err.into()),
        };
        if !decision.allowed {
            crate::observability::rate_limited();
            return Err(ApiError::TooManyRequests(decision));
        }
        Ok(Some(decision))
    })
    .await;
    let decision = match admitted {
        Ok(decision) => decision,
        Err(err) => return err.into_response(),
    };
    let served = before(deadline, state, async {
        Ok(cached_response(flight.run(&state.redis, compute).await?))
    })
    .await;
    let mut response = respond(served);
    if let Some(decision) = decision {
        response.headers_mut().extend(rate_limit_fields(&decision));
    }
    response
}

/// The 200 of a summary, with `X-Cache`, `Cache-Control: max-age` and, on a
/// hit, `Age`.
pub(super) fn cached_response(cached: CachedBody) -> Response<Body> {
    match cached.status {
        CacheStatus::Hit => crate::observability::cache_hit(),
        CacheStatus::Miss => crate::observability::cache_miss(),
    }
    let mut response = Response::new(Body::from(cached.body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(JSON));
    headers.insert("x-cache", HeaderValue::from_static(cached.status.as_str()));
    if let Ok(value) = HeaderValue::from_str(&format!("max-age={}", cached.max_age_s)) {
        headers.insert(CACHE_CONTROL, value);
    }
    if let Some(age_s) = cached.age_s {
        headers.insert(AGE, HeaderValue::from(age_s));
    }
    response
}

/// True when the request carries `Cache-Control: no-cache` (a dashboard's
/// "refresh now"), as a directive in any of its `Cache-Control` fields.
pub(super) fn wants_no_cache(req: &Request) -> bool {
    req.headers()
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-cache"))
}

/// Computes a summary from the buckets and the external source (through the
/// circuit breaker). Called by at most one request per query at a time.
async fn compute_summary(state: &AppState, query: &SummaryQuery) -> Result<Computed, ApiError> {
    let groups: Vec<(Option<TagValue>, WindowStats)> = if query.tags.is_plain() {
        let aggregate = state
            .store
            .aggregate(&state.redis, &query.metric_type, &query.window)
            .await?;
        vec![(None, aggregate)]
    } else {
        state
            .store
            .aggregate_selected(&state.redis, &query.metric_type, &query.window, &query.tags)
            .await?
    };
    let (source, asked) = (state.external.clone(), query.clone());
    let external_data = match state
        .breaker
        .call(
            &state.redis,
            move || async move { source.fetch(&asked).await },
        )
        .await
    {
        Ok(fields) => ExternalData::success(fields),
        Err(CallError::Refused { .. }) => ExternalData::fallback(FallbackReason::CircuitOpen),
        Err(CallError::Failed(kind)) => ExternalData::fallback(kind.into()),
        // Out of memory, Redis refuses the breaker's transition to
        // half-open or its probe slot (the closed and open states are only
        // read): the source is not called, as while the breaker is open,
        // and the summary is still answered.
        Err(CallError::Redis(err)) if Fault::of(&err) == Fault::OutOfMemory => {
            tracing::warn!(
                error = %err,
                "redis is out of memory: the circuit breaker cannot admit a probe; external data skipped"
            );
            ExternalData::fallback(FallbackReason::CircuitOpen)
        }
        Err(CallError::Redis(err)) => return Err(err.into()),
    };
    let degraded = external_data.is_fallback();
    let body = match &query.tags.group_by {
        None => {
            let aggregate = groups
                .into_iter()
                .next()
                .map(|(_, s)| s)
                .unwrap_or_default();
            SummaryBody::Summary(Summary {
                metric_type: query.metric_type.clone(),
                period: query.period_label(),
                window: query.window,
                filters: query.tags.filters.clone(),
                count: aggregate.count,
                average_value: aggregate.average(),
                min_value: aggregate.min,
                max_value: aggregate.max,
                sum: aggregate.sum(),
                percentiles: percentiles(&aggregate, &query.quantiles),
                note: percentiles_note(&aggregate),
                external_data,
            })
        }
        Some(key) => {
            let left_out = groups.len().saturating_sub(query.tags.limit);
            let listed = &groups[..groups.len() - left_out];
            SummaryBody::Grouped(GroupedSummary {
                metric_type: query.metric_type.clone(),
                period: query.period_label(),
                window: query.window,
                filters: query.tags.filters.clone(),
                group_by: key.to_string(),
                note: listed.iter().find_map(|(_, s)| percentiles_note(s)),
                groups: listed
                    .iter()
                    .map(|(value, stats)| {
                        let value = value.as_ref().map(ToString::to_string).unwrap_or_default();
                        SummaryGroup::new(value, stats, &query.quantiles)
                    })
                    .collect(),
                groups_left_out: left_out as u64,
                external_data,
            })
        }
    };
    Ok(Computed {
        degraded,
        // Cannot fail (strings, integers, finite floats and the source's own
        // JSON only); should it ever, the body is an empty object rather
        // than a panic.
        body: serde_json::to_string(&body).unwrap_or_else(|_| "{}".into()),
    })
}
