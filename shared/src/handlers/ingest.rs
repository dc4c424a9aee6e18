//! `POST /api/metrics`: identify the client, rate-limit, validate, then store
//! atomically in the time buckets.

use chrono::Utc;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};

use super::{require_method, within_deadline};
use crate::http::{body_bytes, json_response, request_id, respond, ApiError};
use crate::identity::client_identity;
use crate::metric::parse_metrics;
use crate::state::AppState;
use crate::store::IngestError;

/// Stores one metric (a JSON object) or a batch (a JSON array, all or
/// nothing) and answers 201 `{"request_id": …, "stored": n, "metric": {…}}`
/// (`metric` only for a single object) once it is stored.
///
/// The rate limiter runs first, before the body is even read, so every POST
/// counts — valid or not, single or batch (a batch is one request). Every
/// response that passed or was refused by the limiter carries the
/// `RateLimit-Policy` and `RateLimit` fields.
///
/// Errors: 400 malformed JSON, 401 missing/unknown API key (when keys are
/// configured), 413 body over `MAX_BODY_BYTES`, 422 invalid metrics (every
/// offending field listed), 429 + `Retry-After` over the rate limit, 503 +
/// `Retry-After` when Redis is unavailable (nothing acknowledged).
pub async fn ingest_metric(state: &AppState, req: Request) -> Response<Body> {
    within_deadline(state, async {
        require_method(&req, Method::POST)?;
        let client = client_identity(&req, &state.config.api_key_digests)?;
        let decision = state.limiter.check(&state.redis, &client).await?;
        if !decision.allowed {
            return Err(decision.into_error());
        }
        let mut response = respond(store(state, &req).await);
        response.headers_mut().extend(decision.headers());
        Ok(response)
    })
    .await
}

async fn store(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
    let body = body_bytes(req);
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
        "request_id": request_id(req),
        "stored": parsed.metrics.len(),
    });
    if !parsed.is_batch {
        body["metric"] = parsed.metrics[0].to_json();
    }
    Ok(json_response(StatusCode::CREATED, &body))
}
