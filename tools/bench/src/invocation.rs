//! Figure 10, `bench invocation`: the function process CPU per invocation
//! under the emulator (`cargo lambda watch --release`), for the floor (the
//! `bench-floor` function, a fixed `200`) and three paths of the API, in
//! alternating rounds on the stack figure 4 started.
//!
//! Each run loads one route with `wrk` ([`crate::load::run`])
//! and divides the CPU time its function's processes (every instance the
//! emulator started for it) spent during the run by the requests it
//! completed. Each round measures every route once, starting one route
//! later than the round before, so that a slow spell of the shared machine
//! does not fall on one route only. One JSON line per run is appended to
//! `--out` ([`InvocationRun`]).

use std::io::Write as _;

use crate::load::{self, Group, Load, Select};
use crate::results::InvocationRun;
use crate::Options;

/// A route of figure 10: its label, the name of its function's processes,
/// the method and the path.
pub struct Route {
    /// The run's label in the results.
    pub label: &'static str,
    /// The function's executable name (`/proc/<pid>/comm`).
    pub process: &'static str,
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path and query string.
    pub path: &'static str,
}

/// The metric type figure 4 and figure 10 write and read.
pub const METRIC_TYPE: &str = "bench_e2e";

/// The routes, floor first. The floor is reached through the emulator's
/// own function URL path (`/lambda-url/<function>/`), which needs no entry
/// in the workspace's router.
pub const ROUTES: [Route; 4] = [
    Route {
        label: "floor",
        process: "bench-floor",
        method: "GET",
        path: "/lambda-url/bench-floor/",
    },
    Route {
        label: "health",
        process: "health",
        method: "GET",
        path: "/health",
    },
    Route {
        label: "ingest",
        process: "ingest-metric",
        method: "POST",
        path: "/api/metrics",
    },
    Route {
        label: "summary_hit",
        process: "metrics-summary",
        method: "GET",
        path: "/api/metrics/summary?type=bench_e2e&period=daily",
    },
];

/// `bench invocation --url <emulator URL> --out <file.jsonl> [--runs 3]
/// [--seconds 8] [--connections 4] [--warmup-seconds 3]
/// [--functions-dir target/release]`: warms every route up, then measures
/// `--runs` rounds. The function processes measured are those running the
/// executables of `--functions-dir`.
///
/// # Errors
/// A missing option, a failed `wrk`, or a route without processes.
pub fn measure(opts: &Options) -> Result<(), String> {
    let url = opts.get("url").ok_or("--url is required")?;
    let out = opts.get("out").ok_or("--out is required")?;
    let number = |name: &str, default: u64| -> Result<u64, String> {
        opts.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("--{name}: not a number"))
        })
    };
    let runs = number("runs", 3)?;
    let seconds = number("seconds", 8)?;
    let connections = number("connections", 4)?;
    let warmup = number("warmup-seconds", 3)?;
    let functions = std::path::Path::new(
        opts.get("functions-dir")
            .map_or("target/release", String::as_str),
    );
    let load = |route: &'static Route, seconds: u64| Load {
        label: route.label,
        url,
        method: route.method,
        path: route.path,
        metric_type: METRIC_TYPE,
        connections: connections as usize,
        seconds,
        own_clients: false,
    };
    // Starts every instance (the emulator starts them on demand) and caches
    // the summary.
    for route in &ROUTES {
        crate::log(&format!("figure 10: warming up {}", route.label));
        for _ in 0..2 {
            load::run(&load(route, warmup), &[])?;
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| format!("{out}: {e}"))?;
    for round in 0..runs as usize {
        for k in 0..ROUTES.len() {
            let route = &ROUTES[(round + k) % ROUTES.len()];
            let executable = functions.join(route.process);
            let function = Group {
                root: 0,
                select: Select::Executable(&executable),
            };
            let processes = load::members(&function).len();
            if processes == 0 {
                return Err(format!("no {} process is running", route.process));
            }
            let measured = load::run(&load(route, seconds), &[function])?;
            let cpu_s: f64 = measured.cpu_s.iter().sum();
            let run = InvocationRun {
                label: route.label.to_string(),
                round: round + 1,
                processes,
                cpu_per_request_us: cpu_s * 1e6 / measured.wrk.requests.max(1) as f64,
                wrk: measured.wrk,
            };
            crate::log(&format!(
                "figure 10 round {}: {} {:.0} µs CPU per request over {} requests",
                round + 1,
                run.label,
                run.cpu_per_request_us,
                run.wrk.requests
            ));
            let line = serde_json::to_string(&run).map_err(|e| e.to_string())?;
            writeln!(file, "{line}").map_err(|e| format!("{out}: {e}"))?;
        }
    }
    Ok(())
}
