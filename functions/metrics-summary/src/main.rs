//! `GET /api/metrics/summary` as an AWS Lambda function. Everything testable lives in the
//! `shared` crate; this only bootstraps the instance.

use std::process::ExitCode;

use shared::{handlers::metrics_summary, runtime};

/// The allocator, as in every function (see `functions/health`): mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    runtime::main(|| runtime::serve_api(metrics_summary))
}
