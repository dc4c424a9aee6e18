//! `GET /api/metrics/series`: one point per step over a window of one metric
//! type, served through the read-through cache and rate limited per client
//! where it costs.

use chrono::{DateTime, Utc};
use lambda_http::http::Method;
use lambda_http::{Body, Request, RequestExt, Response};

use super::summary::{serve_cached, wants_no_cache};
use super::{deadline, require_method};
use crate::cache::Computed;
use crate::http::{client_identity, ApiError};
use crate::metric::Invalid;
use crate::responses::{
    percentiles, percentiles_note, GroupedSeries, Series, SeriesBody, SeriesGroup, SeriesPoint,
};
use crate::state::AppState;
use crate::store::series::{plan, SeriesPlan};
use crate::store::stats::WindowStats;
use crate::store::tagged::MAX_GROUPED_POINTS;
use crate::tags::TagValue;
use crate::window::step::step_label;
use crate::window::{parse_series_query, SummaryQuery, Window};

/// Answers 200 with `{"type", "period", "window": {"from", "to"}, "step",
/// "step_seconds", "points": [{"t", "count", "sum", "average_value",
/// "min_value", "max_value", "percentiles"}]}`: one point per step, the
/// window (`period=` or `from`/`to`, as for summaries) aligned outward to
/// whole steps (`step=1m|5m|15m|1h|6h|1d` or seconds, a multiple of 60).
/// Empty steps are present with `count` 0 and `null` statistics.
///
/// Tags as for summaries: `tag.<key>=<value>` filters (echoed as
/// `"filters"`), and `group_by=<key>` answering `{…, "group_by", "groups":
/// [{"value", "count", "points"}], "groups_left_out"}`, largest groups (by
/// their count over the window) first, at most `limit`; `limit` × points
/// may not pass 10,000 (without `limit`, the default of 100 is lowered to
/// the groups that fit, so the query is answered).
///
/// At most 1,500 points; the buckets of every point are read in one script
/// call, so the cost depends on the window and step, never on the number of
/// stored metrics. Cached like summaries (`X-Cache`, `Cache-Control:
/// no-cache` to refresh) and rate limited the same way where it costs
/// (policy `series`, `SERIES_RATE_LIMIT_REQUESTS` per
/// `RATE_LIMIT_WINDOW_SECONDS`, apart from ingests and summaries): a hit
/// counts for nothing, a miss or a refresh once
/// ([`super::summary::serve_cached`]).
///
/// With Redis out of memory, the limiter cannot count the request: it is
/// served without the `RateLimit` fields, computed without the cache
/// (`Cache-Control: max-age=0`).
///
/// Errors: 400 for a client that cannot be identified, 401 missing/unknown
/// API key (when keys are configured), 422 for a missing or invalid query or
/// more than 1,500 points (the detail says which
/// step or window would fit), a grouped series of more than 10,000 points
/// or a tag selection that would read too many buckets, 429 + `Retry-After` over the rate limit, 503 +
/// `Retry-After` when Redis is unavailable, 500 (a `store-…` problem, no
/// `Retry-After`) when Redis refuses the service for a reason retrying will
/// not fix.
pub async fn metrics_series(state: &AppState, req: Request) -> Response<Body> {
    let deadline = deadline(state);
    let asked = || -> Result<_, ApiError> {
        require_method(&req, Method::GET)?;
        let client = client_identity(&req, &state.config.identity)?;
        let params = req.query_string_parameters();
        let limit_asked = params.first("limit").is_some();
        let mut query = parse_series_query(
            params.iter(),
            Utc::now(),
            state.config.metrics.retention,
            state.config.metrics.max_future_skew,
        )?;
        let step = query.step.unwrap_or(60);
        let plan = plan(
            query.window.from.timestamp(),
            query.window.to.timestamp(),
            step,
        )
        .map_err(|err| Invalid::field("step", err.to_string()))?;
        let fitting = (MAX_GROUPED_POINTS / plan.points()).max(1);
        if query.tags.group_by.is_some() && !limit_asked {
            // The default limit gives way to the cap on points: a grouped
            // series without `limit` answers as many groups as fit.
            query.tags.limit = query.tags.limit.min(fitting);
        }
        if query.tags.group_by.is_some() && query.tags.limit * plan.points() > MAX_GROUPED_POINTS {
            return Err(Invalid::field(
                "limit",
                format!(
                    "a grouped series answers at most {MAX_GROUPED_POINTS} points (limit × points \
                     per group): with {} points per group, use a limit of at most {}, or a \
                     coarser step",
                    plan.points(),
                    fitting
                ),
            )
            .into());
        }
        Ok((client, query, plan))
    };
    let (client, query, plan) = match asked() {
        Ok(asked) => asked,
        Err(err) => return err.into_response(),
    };
    serve_cached(
        state,
        deadline,
        &state.series_limiter,
        &client,
        &query,
        wants_no_cache(&req),
        || compute_series(state, &query, &plan),
    )
    .await
}

/// Reads the plan's buckets (one round trip) and builds the body. Called
/// by at most one request per query at a time.
async fn compute_series(
    state: &AppState,
    query: &SummaryQuery,
    plan: &SeriesPlan,
) -> Result<Computed, ApiError> {
    let groups: Vec<(Option<TagValue>, Vec<WindowStats>)> = if query.tags.is_plain() {
        let stats = state
            .store
            .series(&state.redis, &query.metric_type, plan)
            .await?;
        vec![(None, stats)]
    } else {
        state
            .store
            .series_selected(&state.redis, &query.metric_type, plan, &query.tags)
            .await?
    };
    let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
    let points = |stats: &[WindowStats]| -> Vec<SeriesPoint> {
        stats
            .iter()
            .enumerate()
            .map(|(i, point)| SeriesPoint {
                t: at(plan.point_start(i)),
                count: point.count,
                sum: point.sum(),
                average_value: point.average(),
                min_value: point.min,
                max_value: point.max,
                percentiles: percentiles(point, &query.quantiles),
            })
            .collect()
    };
    let window = Window {
        from: at(plan.from),
        to: at(plan.to),
    };
    let series = match &query.tags.group_by {
        None => {
            let stats = groups
                .into_iter()
                .next()
                .map(|(_, s)| s)
                .unwrap_or_default();
            SeriesBody::Series(Series {
                metric_type: query.metric_type.clone(),
                period: query.period_label(),
                window,
                step: step_label(plan.step),
                step_seconds: plan.step,
                filters: query.tags.filters.clone(),
                points: points(&stats),
                note: stats.iter().find_map(percentiles_note),
            })
        }
        Some(key) => {
            let left_out = groups.len().saturating_sub(query.tags.limit);
            let listed = &groups[..groups.len() - left_out];
            SeriesBody::Grouped(GroupedSeries {
                metric_type: query.metric_type.clone(),
                period: query.period_label(),
                window,
                step: step_label(plan.step),
                step_seconds: plan.step,
                filters: query.tags.filters.clone(),
                group_by: key.to_string(),
                note: listed
                    .iter()
                    .flat_map(|(_, stats)| stats.iter())
                    .find_map(percentiles_note),
                groups: listed
                    .iter()
                    .map(|(value, stats)| SeriesGroup {
                        value: value.as_ref().map(ToString::to_string).unwrap_or_default(),
                        count: stats.iter().map(|p| p.count).sum(),
                        points: points(stats),
                    })
                    .collect(),
                groups_left_out: left_out as u64,
            })
        }
    };
    Ok(Computed {
        degraded: false,
        // Cannot fail (strings, integers and finite floats only); should it
        // ever, the body is an empty object rather than a panic.
        body: serde_json::to_string(&series).unwrap_or_else(|_| "{}".into()),
    })
}
