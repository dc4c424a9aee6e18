//! `GET /health`: is Redis reachable, and what is the circuit breaker doing?

use std::time::Instant;

use lambda_http::http::header::{HeaderValue, RETRY_AFTER};
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use redis::Value;

use super::{require_method, within_deadline};
use crate::http::{json_response, ApiError};
use crate::responses::{
    CircuitBreakers, DegradedStatus, Health, HealthDegraded, HealthyStatus, RedisHealthy,
    RedisUnhealthy,
};
use crate::state::AppState;

/// Answers 200
/// `{"status": "ok", "redis": "healthy", "redis_latency_ms": 0.21,
///   "circuit_breaker": {"external_service": "closed" | "open" | "half_open"}, "version": …}`
/// when Redis answers, and 503 `{"status": "degraded", "redis": "unhealthy"}`
/// with `Retry-After` when it does not (within about 2 × `REDIS_TIMEOUT_MS`).
///
/// One Redis round trip: `PING` and the breaker's state read are pipelined.
/// An open breaker is a degraded dependency, not a dead service: health stays
/// 200. The breaker state shown is the *effective* one (`half_open` once the
/// reset timeout has passed, even before a probe).
pub async fn health(state: &AppState, req: Request) -> Response<Body> {
    within_deadline(state, async {
        require_method(&req, Method::GET)?;
        let started = Instant::now();
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        state.breaker.add_state_read(&mut pipe);
        let replies: Result<Vec<Value>, _> = pipe.query_async(&mut state.redis.clone()).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let breaker = replies.as_ref().map_err(Clone::clone).and_then(|r| {
            state
                .breaker
                .effective_state_from(r.get(1..).unwrap_or_default())
        });
        match breaker {
            Ok(breaker) => Ok(json_response(
                StatusCode::OK,
                &Health {
                    status: HealthyStatus::Ok,
                    redis: RedisHealthy::Healthy,
                    redis_latency_ms: (latency_ms * 1000.0).round() / 1000.0,
                    circuit_breaker: CircuitBreakers {
                        external_service: breaker,
                    },
                    version: env!("CARGO_PKG_VERSION").to_string(),
                },
            )),
            Err(err) => {
                let _logged = ApiError::redis(&err);
                let mut response = json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &HealthDegraded {
                        status: DegradedStatus::Degraded,
                        redis: RedisUnhealthy::Unhealthy,
                        version: env!("CARGO_PKG_VERSION").to_string(),
                    },
                );
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(1u32));
                Ok(response)
            }
        }
    })
    .await
}
