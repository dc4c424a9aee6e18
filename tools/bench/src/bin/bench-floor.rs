//! `bench-floor`: the floor of the per-invocation figure of `make bench`. A
//! `lambda_http` function that answers every request with a fixed `200`
//! JSON body, on the functions' own process setup ([`runtime::main`]: the
//! same tokio runtime, the same allocator), without Redis, configuration,
//! metrics or logging. What it costs per invocation under the emulator is
//! what any function costs there before doing any work of its own.

use std::process::ExitCode;

use lambda_http::{service_fn, Body, Error, Request, Response};
use shared::runtime;

/// The functions' allocator (see functions/health/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The one response: what `GET /health` answers when all is well, in size.
const BODY: &str = r#"{"status":"healthy","redis":"connected","external_service":"closed"}"#;

async fn floor(_request: Request) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(BODY))?)
}

fn main() -> ExitCode {
    runtime::main(|| lambda_http::run(service_fn(floor)))
}
