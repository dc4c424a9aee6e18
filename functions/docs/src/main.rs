//! `GET /docs` and `GET /openapi.json` as an AWS Lambda function. Everything
//! testable lives in the `shared` crate; this only bootstraps the instance.
//! It needs neither Redis nor any configuration.

use std::process::ExitCode;

use lambda_http::{run, service_fn, Error};
use shared::{openapi::docs, runtime, telemetry};

/// The allocator, as in every function (see `functions/health`): mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    runtime::main(serve)
}

async fn serve() -> Result<(), Error> {
    telemetry::init();
    run(service_fn(|req| async move { Ok::<_, Error>(docs(&req)) })).await
}
