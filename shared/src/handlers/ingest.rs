//! `POST /api/metrics`: validate, then store atomically in the time buckets.

use chrono::Utc;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};

use super::{require_method, within_deadline};
use crate::http::{body_bytes, json_response, request_id, ApiError};
use crate::metric::parse_metrics;
use crate::state::AppState;
use crate::store::IngestError;

/// Stores one metric (a JSON object) or a batch (a JSON array, all or
/// nothing) and answers 201 `{"request_id": …, "stored": n, "metric": {…}}`
/// (`metric` only for a single object) once it is stored.
///
/// Errors: 400 malformed JSON, 413 body over `MAX_BODY_BYTES`, 422 invalid
/// metrics (every offending field listed), 503 + `Retry-After` when Redis is
/// unavailable (nothing acknowledged).
pub async fn ingest_metric(state: &AppState, req: Request) -> Response<Body> {
    within_deadline(state, async {
        require_method(&req, Method::POST)?;
        let body = body_bytes(&req);
        if body.len() > state.config.max_body_bytes {
            return Err(ApiError::PayloadTooLarge(state.config.max_body_bytes));
        }
        let parsed = parse_metrics(body, Utc::now(), &state.metric_limits())?;
        state
            .store
            .ingest(&state.redis, &parsed.metrics)
            .await
            .map_err(|err| match err {
                IngestError::Overflow => ApiError::invalid(
                    "value",
                    "the sum of its time bucket would overflow a 64-bit float",
                ),
                IngestError::Redis(err) => ApiError::redis(&err),
            })?;
        let mut body = serde_json::json!({
            "request_id": request_id(&req),
            "stored": parsed.metrics.len(),
        });
        if !parsed.is_batch {
            body["metric"] = parsed.metrics[0].to_json();
        }
        Ok(json_response(StatusCode::CREATED, &body))
    })
    .await
}
