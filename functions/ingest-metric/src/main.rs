//! `POST /api/metrics` as an AWS Lambda function. Everything testable lives in the
//! `shared` crate; this only bootstraps the instance.

use std::process::ExitCode;

use shared::{handlers::ingest_metric, runtime};

/// The allocator, as in every function (see `functions/health`): mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    runtime::main(|| runtime::serve_api(ingest_metric))
}
