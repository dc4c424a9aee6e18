//! The request handlers of the four functions, callable in-process with a
//! synthetic `lambda_http::Request` (API Gateway HTTP API v2.0 or REST v1).
//!
//! Each handler runs under one overall deadline (`REQUEST_DEADLINE_MS`):
//! whatever is slow (Redis, the external source, a lock wait), the request
//! answers 503 with `Retry-After` when the deadline passes. Handlers never
//! return an `Err` to the runtime: every failure becomes a problem response.

mod health;
mod ingest;
mod series;
mod summary;

use std::future::Future;

use tokio::time::Instant;

use lambda_http::http::Method;
use lambda_http::Request;

pub use health::health;
pub use ingest::ingest_metric;
pub use series::metrics_series;
pub use summary::metrics_summary;

use crate::http::ApiError;
use crate::state::AppState;

/// The instant by which the current request must be answered.
fn deadline(state: &AppState) -> Instant {
    Instant::now() + state.config.request.deadline
}

/// Runs one step of a request, giving up at `deadline` with a 503. The
/// first step of an instance's first request also reads the Redis server's
/// eviction policy and memory
/// ([`ServerWatch::on_first_use`](crate::redis_server::ServerWatch::on_first_use);
/// one round trip, once per instance), concurrently with `work` and under
/// the same deadline, so that an evicting policy is logged and counted even
/// where nobody polls `/health`. Later steps and requests find it done.
async fn before<T>(
    deadline: Instant,
    state: &AppState,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let first_use = tokio::time::timeout_at(deadline, state.server.on_first_use(&state.redis));
    let (result, _) = tokio::join!(bounded(deadline, state, work), first_use);
    result
}

/// Runs `work`, giving up at `deadline` with a 503.
async fn bounded<T>(
    deadline: Instant,
    state: &AppState,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or_else(|_| Err(ApiError::deadline(state.config.request.deadline)))
}

/// 405 unless the request uses `expected` (a function invoked directly, or
/// through a REST API with `ANY`, can receive other methods).
fn require_method(req: &Request, expected: Method) -> Result<(), ApiError> {
    if req.method() == expected {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(req.method().to_string()))
    }
}
