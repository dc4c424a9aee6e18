//! `GET /health` as an AWS Lambda function. Everything testable lives in the
//! `shared` crate; this only bootstraps the instance.

use std::process::ExitCode;

use shared::{handlers::health, runtime};

/// The allocator: mimalloc (Leijen, Zorn and de Moura, "Mimalloc: Free List
/// Sharding in Action", 2019). Each Redis command boxes a future of about
/// 1.1 KiB in the redis crate (`RedisFuture`), above glibc's per-thread
/// cache; there, each such allocation consolidates the fast bins, and
/// glibc's `malloc` and `free` were a third of the instructions of an ingest
/// (BENCHMARKS.md, figure 2). mimalloc serves every size the request path
/// uses from per-thread free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    runtime::main(|| runtime::serve_api(health))
}
