//! `host-metrics`: sends this machine's real CPU utilisation and memory use
//! to the analytics API (`POST /api/metrics`) and prints the hourly summaries
//! it gets back (`GET /api/metrics/summary`) and the last hour of CPU in
//! 5-minute steps (`GET /api/metrics/series`).
//!
//! Run with `cargo run -p host-metrics -- --help` for the options.

mod app;
mod cli;
mod client;
mod host;
mod payload;
mod retry;
mod series;
mod summary;

#[cfg(test)]
mod stub_tests;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Args::parse();
    match app::run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("host-metrics: {err}");
            ExitCode::FAILURE
        }
    }
}
