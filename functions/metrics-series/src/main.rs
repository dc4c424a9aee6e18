//! `GET /api/metrics/series` as an AWS Lambda function. Everything testable lives in the
//! `shared` crate; this only bootstraps the instance.

use std::process::ExitCode;

use lambda_http::Error;
use shared::{handlers::metrics_series, runtime, telemetry, AppState};

/// The allocator, as in every function (see `functions/health`): mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    runtime::main(serve)
}

async fn serve() -> Result<(), Error> {
    telemetry::init();
    // Built once per cold start; connects to Redis lazily on the first request.
    let state = AppState::from_env_or_exit();
    let state = &state;
    // Like lambda_http::run, plus EMF metrics flushed after each invocation.
    runtime::run(&state.config.observability, move |req| async move {
        Ok::<_, Error>(metrics_series(state, req).await)
    })
    .await
}
