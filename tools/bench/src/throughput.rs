//! Figure 2, our side: ingest throughput of the in-process handler
//! (`shared::handlers::ingest_metric` on synthetic API Gateway events, no
//! HTTP), in a closed loop at a fixed concurrency.
//!
//! Two ways to run C requests at a time:
//! - **instances**: C independent `AppState`s, each with its own Redis
//!   connection and one request at a time, as C warm Lambda instances are
//!   (Lambda gives an instance one request at a time). This is the case
//!   comparable with `redis-benchmark -c C`, which also opens C connections
//!   with one command in flight on each.
//! - **shared**: one `AppState` serving C requests at once, all multiplexed
//!   (pipelined) over its single connection; what one process would get if it
//!   served many requests concurrently. Reported for context.
//!
//! Requests are built before the clock starts: the figure is the handler and
//! Redis, not the deserialisation of events (which the Lambda runtime does).
//! Each request comes from a fresh client address and the limit is far above
//! what the run sends, so every request is accepted: 2 round trips each.

use std::sync::Arc;
use std::time::Instant;

use shared::config::Config;
use shared::handlers::ingest_metric;
use shared::AppState;

use crate::events;
use crate::stats::quantile_us;

/// The outcome of one timed measurement.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Answers other than 201.
    pub errors: u64,
    /// CPU time of this process (handler, redis client, runtime) per
    /// request, µs.
    pub client_cpu_us: f64,
}

/// Builds `n` ingest requests of `metric_type`, each from a fresh client.
fn requests(metric_type: &str, n: usize) -> Result<Vec<lambda_http::Request>, String> {
    (0..n)
        .map(|i| events::ingest(metric_type, (i % 100) as f64 + 0.25))
        .collect()
}

/// `n` requests through `concurrency` independent states (instances) when
/// `shared` is false, or through one state when it is true.
pub async fn measure(
    config: &Config,
    metric_type: &str,
    concurrency: usize,
    n: usize,
    shared: bool,
) -> Result<Measured, String> {
    let states: Vec<Arc<AppState>> = if shared {
        vec![Arc::new(
            AppState::new(config.clone()).map_err(|e| e.to_string())?,
        )]
    } else {
        (0..concurrency)
            .map(|_| {
                AppState::new(config.clone())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?
    };
    // Connect every state (lazily connecting) and load the scripts, untimed.
    for state in &states {
        let status = ingest_metric(state, events::ingest(metric_type, 0.5)?)
            .await
            .status();
        if status != 201 {
            return Err(format!("warm-up ingest answered {status}"));
        }
    }
    let mut chunks: Vec<Vec<lambda_http::Request>> = (0..concurrency).map(|_| Vec::new()).collect();
    for (i, req) in requests(metric_type, n)?.into_iter().enumerate() {
        chunks[i % concurrency].push(req);
    }
    let cpu_before = process_cpu_ns();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for (worker, chunk) in chunks.into_iter().enumerate() {
        let state = Arc::clone(&states[worker % states.len()]);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(chunk.len());
            let mut errors = 0u64;
            for req in chunk {
                let t = Instant::now();
                let status = ingest_metric(&state, req).await.status();
                latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                errors += u64::from(status != 201);
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.map_err(|e| e.to_string())?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_ns = process_cpu_ns().saturating_sub(cpu_before);
    Ok(Measured {
        client_cpu_us: cpu_ns as f64 / 1000.0 / n as f64,
        rps: n as f64 / elapsed,
        p50_us: quantile_us(&mut latencies, 0.5),
        p99_us: quantile_us(&mut latencies, 0.99),
        errors,
    })
}

/// CPU time used so far by the threads of this process, ns: the sum of the
/// first field of `/proc/self/task/<tid>/schedstat` (time on a CPU). The
/// runtime's worker threads live as long as the process, so differences
/// over a measurement are exact.
pub fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
