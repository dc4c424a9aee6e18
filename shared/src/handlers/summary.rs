//! `GET /api/metrics/summary`: aggregates of one metric type over a window,
//! enriched by the external source.

use chrono::Utc;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::Value;

use super::{require_method, within_deadline};
use crate::external::external_data;
use crate::http::{json_response, ApiError};
use crate::state::AppState;
use crate::window::{parse_summary_query, SummaryQuery};

/// Answers 200 with
/// `{"type", "period", "window": {"from", "to"}, "count", "average_value",
/// "min_value", "max_value", "sum", "external_data"}`; with no data in the
/// window `count` and `sum` are 0 and the others `null`. `external_data` is
/// `{"status": "fallback", "reason": …}` when the source failed — the summary
/// is still a 200.
///
/// Errors: 422 for a missing or invalid query (the allowed periods are
/// listed), 503 + `Retry-After` when Redis is unavailable.
pub async fn metrics_summary(state: &AppState, req: Request) -> Response<Body> {
    within_deadline(state, async {
        require_method(&req, Method::GET)?;
        let params = req.query_string_parameters();
        let query = parse_summary_query(
            params.iter(),
            Utc::now(),
            chrono::Duration::days(i64::from(state.config.metric_retention_days)),
            chrono::Duration::from_std(state.config.max_future_skew).unwrap_or_default(),
        )?;
        let summary = compute_summary(state, &query).await?;
        Ok(json_response(StatusCode::OK, &summary))
    })
    .await
}

/// Computes a summary from the buckets and the external source.
async fn compute_summary(state: &AppState, query: &SummaryQuery) -> Result<Value, ApiError> {
    let aggregate = state
        .store
        .aggregate(&state.redis, &query.metric_type, &query.window)
        .await?;
    let external = state
        .external
        .fetch(
            query.metric_type.as_str(),
            query.period_label(),
            state.config.external_service_timeout,
        )
        .await;
    Ok(serde_json::json!({
        "type": query.metric_type,
        "period": query.period_label(),
        "window": query.window.to_json(),
        "count": aggregate.count,
        "average_value": aggregate.average(),
        "min_value": aggregate.min,
        "max_value": aggregate.max,
        "sum": aggregate.sum,
        "external_data": external_data(external.map_err(|f| f.as_str())),
    }))
}
