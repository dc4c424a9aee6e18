//! Figure 1: Redis round trips per request on each hot path, counted on the
//! handler state's own connection (`Redis::round_trips`), never timed.
//!
//! The same budgets are held by `tests/tests/round_trips.rs` in the normal
//! test suite; here they are counted again on the benchmark's Redis and
//! reported.

use shared::config::Config;
use shared::handlers::{health, ingest_metric, metrics_summary};
use shared::AppState;

use crate::events;
use crate::results::RoundTrips;

/// Counts each path once. `config` must allow 3 requests per client and use
/// an external source without latency or failures.
pub async fn count(config: Config) -> Result<Vec<(String, u16, u64, u64)>, String> {
    let state = AppState::new(config).map_err(|e| e.to_string())?;
    let metric_type = format!("rt_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    // Every script is loaded once first: a script's very first call on a
    // server costs two more round trips (NOSCRIPT, then SCRIPT LOAD).
    ingest_metric(&state, events::ingest(&metric_type, 1.0)?).await;
    metrics_summary(&state, events::summary(&metric_type, "daily", false)?).await;
    health(&state, get_health()?).await;

    let mut rows = Vec::new();
    let mut measure = |path: &str, budget: u64, status: u16, trips: u64| {
        rows.push((path.to_string(), status, trips, budget));
    };

    let (status, trips) = delta(
        &state,
        ingest_metric(&state, events::ingest(&metric_type, 2.0)?),
    )
    .await;
    measure("ingest, accepted (one metric)", 2, status, trips);

    let batch = batch_request(&metric_type, 500)?;
    let (status, trips) = delta(&state, ingest_metric(&state, batch)).await;
    measure("ingest, accepted (batch of 500)", 2, status, trips);

    // One client, over its limit of 3: the fourth request is refused.
    let ip = events::next_client_ip();
    for _ in 0..3 {
        ingest_metric(&state, ingest_from(&metric_type, &ip)?).await;
    }
    let (status, trips) = delta(
        &state,
        ingest_metric(&state, ingest_from(&metric_type, &ip)?),
    )
    .await;
    measure("ingest, rate-limited", 1, status, trips);

    let (status, trips) = delta(
        &state,
        metrics_summary(&state, events::summary(&metric_type, "daily", false)?),
    )
    .await;
    measure("summary, cache hit", 1, status, trips);

    let fresh = format!("{metric_type}_miss");
    let (status, trips) = delta(
        &state,
        metrics_summary(&state, events::summary(&fresh, "daily", false)?),
    )
    .await;
    measure("summary, cache miss", 5, status, trips);

    let (status, trips) = delta(&state, health(&state, get_health()?)).await;
    measure("health", 1, status, trips);
    Ok(rows)
}

/// Adds one run's counts to the figure's rows (created on the first run).
pub fn record(rows: &mut Vec<RoundTrips>, run: Vec<(String, u16, u64, u64)>) {
    for (path, status, trips, budget) in run {
        match rows.iter_mut().find(|r| r.path == path) {
            Some(row) => row.counts.push(trips),
            None => rows.push(RoundTrips {
                path,
                status,
                counts: vec![trips],
                budget,
            }),
        }
    }
}

async fn delta(
    state: &AppState,
    response: impl std::future::Future<Output = lambda_http::Response<lambda_http::Body>>,
) -> (u16, u64) {
    let before = state.redis.round_trips();
    let status = response.await.status().as_u16();
    (status, state.redis.round_trips() - before)
}

fn get_health() -> Result<lambda_http::Request, String> {
    events::http_v2("GET", "/health")
        .source_ip(&events::next_client_ip())
        .try_build()
}

fn ingest_from(metric_type: &str, ip: &str) -> Result<lambda_http::Request, String> {
    events::ingest_event(metric_type, 1.0, ip).try_build()
}

/// A batch of `n` metrics spread over the last `n` minutes.
fn batch_request(metric_type: &str, n: i64) -> Result<lambda_http::Request, String> {
    let now = chrono::Utc::now();
    let metrics: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "timestamp": shared::metric::format_timestamp(now - chrono::Duration::minutes(i)),
                "value": i as f64 * 0.5,
                "type": metric_type,
            })
        })
        .collect();
    events::http_v2("POST", "/api/metrics")
        .json(&serde_json::Value::Array(metrics))
        .source_ip(&events::next_client_ip())
        .try_build()
}
