//! `GET /health`: is Redis reachable, and what is the circuit breaker doing?

use std::time::Instant;

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};

use super::{require_method, within_deadline};
use crate::http::{json_response, ApiError};
use crate::state::AppState;

/// Answers 200 `{"status": "ok", "redis": "healthy", "redis_latency_ms": …}`
/// when a Redis `PING` succeeds, and 503 `{"status": "degraded", "redis":
/// "unhealthy"}` with `Retry-After` when it does not (within about
/// 2 × `REDIS_TIMEOUT_MS`). One Redis round trip.
pub async fn health(state: &AppState, req: Request) -> Response<Body> {
    within_deadline(state, async {
        require_method(&req, Method::GET)?;
        let started = Instant::now();
        let ping: Result<String, _> = redis::cmd("PING")
            .query_async(&mut state.redis.clone())
            .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        match ping {
            Ok(_) => Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "status": "ok",
                    "redis": "healthy",
                    "redis_latency_ms": (latency_ms * 1000.0).round() / 1000.0,
                    "version": env!("CARGO_PKG_VERSION"),
                }),
            )),
            Err(err) => {
                let _logged = ApiError::redis(&err);
                let mut response = json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({
                        "status": "degraded",
                        "redis": "unhealthy",
                        "version": env!("CARGO_PKG_VERSION"),
                    }),
                );
                response.headers_mut().insert(
                    lambda_http::http::header::RETRY_AFTER,
                    lambda_http::http::HeaderValue::from(1u32),
                );
                Ok(response)
            }
        }
    })
    .await
}
