//! The round-trip budgets of the service's hot paths, defined once for the
//! test that holds them (`tests/tests/round_trips.rs`) and the benchmark that
//! reports them (`make bench`, figure 1 of BENCHMARKS.md).
//!
//! Round trips are counted, not timed, on the handler state's own connection
//! (`Redis::round_trips`: one per command or pipeline sent). Each path runs
//! once first so that the scripts are loaded: the very first call of a script
//! on a Redis server costs one more round trip (`NOSCRIPT`, then `EVAL` of
//! its body). The first request of an instance also reads the server's
//! eviction policy (`INFO`, one round trip, concurrent with the request's
//! own), which the warm-up absorbs too.

use std::future::Future;

use lambda_http::{Body, Response};
use serde_json::json;
use shared::handlers::{health, ingest_metric, metrics_series, metrics_summary};
use shared::identity::ClientId;
use shared::metric::format_timestamp;
use shared::AppState;

use crate::{http_v2, next_client_ip};

/// One hot path, sent once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// What was sent, e.g. "ingest, rate-limited".
    pub path: &'static str,
    /// The status the path answers when it works.
    pub expected_status: u16,
    /// The status it answered.
    pub status: u16,
    /// Round trips it made.
    pub round_trips: u64,
    /// Round trips it may make: the service's performance contract.
    pub budget: u64,
}

/// The status of `response` and the round trips `state`'s connection made
/// for it. A handler's future does nothing until awaited, so the count
/// covers exactly one request.
pub async fn count(state: &AppState, response: impl Future<Output = Response<Body>>) -> (u16, u64) {
    let before = state.redis.round_trips();
    let status = response.await.status().as_u16();
    (status, state.redis.round_trips() - before)
}

/// Every hot path once, on a fresh metric type derived from `metric_type`:
/// ingest accepted (one metric: 1 on a single node, the limiter and the
/// storage in one script call; 2 in cluster mode, where they lie in
/// different hash slots; a batch of 500: the same), ingest rate-limited (1),
/// summary cache hit (1: one
/// `GET`, no limiter) and miss (7: the `GET`, the summary limiter,
/// lookup-or-lock, buckets, breaker admission, breaker report,
/// store-and-unlock), a summary miss over the client's limit (2: the `GET`
/// and the limiter), series cache hit (1: the `GET`) and miss (5: the `GET`,
/// its limiter, lookup-or-lock, the buckets of every point in one script
/// call, store-and-unlock), health (1: `PING`, the breaker state, the probe
/// script and `INFO` pipelined; in cluster mode 2, sent concurrently: that
/// pipeline to the breaker's master, `INFO` to every master).
///
/// `state` must allow exactly 3 ingests per client and use an external
/// source without latency or failures.
///
/// # Errors
/// `lambda_http`'s message when it refuses a synthetic event (a bug here).
pub async fn hot_paths(state: &AppState, metric_type: &str) -> Result<Vec<Counted>, String> {
    let ingest = |ip: &str| {
        let metric = json!({"timestamp": format_timestamp(chrono::Utc::now()), "value": 1.0, "type": metric_type});
        http_v2("POST", "/api/metrics")
            .json(&metric)
            .source_ip(ip)
            .try_build()
    };
    let summary = |t: &str| {
        http_v2("GET", "/api/metrics/summary")
            .query(&format!("type={t}&period=daily"))
            .source_ip(&next_client_ip())
            .try_build()
    };
    let series = |t: &str| {
        http_v2("GET", "/api/metrics/series")
            .query(&format!("type={t}&period=daily&step=1h"))
            .source_ip(&next_client_ip())
            .try_build()
    };
    let get_health = || {
        http_v2("GET", "/health")
            .source_ip(&next_client_ip())
            .try_build()
    };
    let now = chrono::Utc::now();
    let batch: Vec<_> = (0..500)
        .map(|i| json!({"timestamp": format_timestamp(now - chrono::Duration::minutes(i)), "value": 1.0, "type": metric_type}))
        .collect();
    let batch = http_v2("POST", "/api/metrics")
        .json(&json!(batch))
        .source_ip(&next_client_ip())
        .try_build()?;

    // Warm-up: every script loaded once, and the instance's one reading of
    // the server's eviction policy (at its first request) done.
    ingest_metric(state, ingest(&next_client_ip())?).await;
    metrics_summary(state, summary(metric_type)?).await;
    metrics_series(state, series(metric_type)?).await;
    health(state, get_health()?).await;

    let mut counted = Vec::new();
    let mut record = |path, expected_status, (status, round_trips), budget| {
        counted.push(Counted {
            path,
            expected_status,
            status,
            round_trips,
            budget,
        });
    };
    let cluster = state.redis.mode() == shared::connection::RedisMode::Cluster;
    let accepted = if cluster { 2 } else { 1 };
    let one = count(state, ingest_metric(state, ingest(&next_client_ip())?)).await;
    record("ingest, accepted (one metric)", 201, one, accepted);
    let many = count(state, ingest_metric(state, batch)).await;
    record("ingest, accepted (batch of 500)", 201, many, accepted);
    // One client over its limit of 3: its fourth request is refused.
    let client = next_client_ip();
    for _ in 0..3 {
        ingest_metric(state, ingest(&client)?).await;
    }
    let refused = count(state, ingest_metric(state, ingest(&client)?)).await;
    record("ingest, rate-limited", 429, refused, 1);
    let hit = count(state, metrics_summary(state, summary(metric_type)?)).await;
    record("summary, cache hit", 200, hit, 1);
    let miss = count(
        state,
        metrics_summary(state, summary(&format!("{metric_type}_miss"))?),
    )
    .await;
    record("summary, cache miss", 200, miss, 7);
    // One client that spent its summary budget: its next miss is refused
    // after the `GET` and the limiter, before any lock or computation.
    let spender = next_client_ip();
    let spender_id = ClientId::ip(spender.parse().map_err(|e| format!("{spender}: {e}"))?);
    for _ in 0..state.config.rate_limit.summary_requests {
        state
            .summary_limiter
            .check(&state.redis, &spender_id)
            .await
            .map_err(|e| e.to_string())?;
    }
    let over = http_v2("GET", "/api/metrics/summary")
        .query(&format!("type={metric_type}_over&period=daily"))
        .source_ip(&spender)
        .try_build()?;
    let refused = count(state, metrics_summary(state, over)).await;
    record("summary, rate-limited (cache miss)", 429, refused, 2);
    let hit = count(state, metrics_series(state, series(metric_type)?)).await;
    record("series, cache hit", 200, hit, 1);
    let miss = count(
        state,
        metrics_series(state, series(&format!("{metric_type}_miss"))?),
    )
    .await;
    record("series, cache miss", 200, miss, 5);
    let healthy = count(state, health(state, get_health()?)).await;
    record("health", 200, healthy, if cluster { 2 } else { 1 });
    Ok(counted)
}

/// The paths of tagged metrics once each, on `metric_type` (fresh): a tagged ingest whose tag values are new to the instance
/// (3: the limiter, the claim of its tag values and combination against the
/// caps, the storage call), the same tags again (known, so no claim: 1 on a
/// single node, the limiter and the storage in one call; 2 in cluster mode), a
/// summary filtered by one tag (7, as unfiltered: one series), grouped by a
/// tag or filtered by two (8: the registry of values or combinations is read
/// before the buckets), and a grouped series (6).
///
/// `state` must allow at least 2 ingests per client and use an external
/// source without latency or failures.
///
/// # Errors
/// `lambda_http`'s message when it refuses a synthetic event (a bug here).
pub async fn tagged_paths(state: &AppState, metric_type: &str) -> Result<Vec<Counted>, String> {
    let ingest = |t: &str, host: &str| {
        let metric = json!({"timestamp": format_timestamp(chrono::Utc::now()), "value": 1.0,
            "type": t, "tags": {"host": host, "region": "eu"}});
        http_v2("POST", "/api/metrics")
            .json(&metric)
            .source_ip(&next_client_ip())
            .try_build()
    };
    let get = |path: &str, query: String| {
        http_v2("GET", path)
            .query(&query)
            .source_ip(&next_client_ip())
            .try_build()
    };
    // Warm-up: every script loaded once (on the node of the type's slot in
    // a cluster, where each node has its own script cache).
    let warm = metric_type;
    ingest_metric(state, ingest(warm, "warm")?).await;
    metrics_summary(
        state,
        get("/api/metrics/summary", format!("type={warm}&period=daily"))?,
    )
    .await;
    metrics_series(
        state,
        get(
            "/api/metrics/series",
            format!("type={warm}&period=daily&step=1h"),
        )?,
    )
    .await;

    let mut counted = Vec::new();
    let mut record = |path, expected_status, (status, round_trips), budget| {
        counted.push(Counted {
            path,
            expected_status,
            status,
            round_trips,
            budget,
        });
    };
    let first = count(state, ingest_metric(state, ingest(metric_type, "web-1")?)).await;
    record("ingest, tagged, new tag values", 201, first, 3);
    let again = count(state, ingest_metric(state, ingest(metric_type, "web-1")?)).await;
    let cluster = state.redis.mode() == shared::connection::RedisMode::Cluster;
    record(
        "ingest, tagged, known tag values",
        201,
        again,
        if cluster { 2 } else { 1 },
    );
    for (path, query, budget) in [
        ("summary, one tag filter, cache miss", "tag.host=web-1", 7),
        ("summary, group_by, cache miss", "group_by=host", 8),
        (
            "summary, two tag filters, cache miss",
            "tag.host=web-1&tag.region=eu",
            8,
        ),
    ] {
        let request = get(
            "/api/metrics/summary",
            format!("type={metric_type}&period=daily&{query}"),
        )?;
        record(
            path,
            200,
            count(state, metrics_summary(state, request)).await,
            budget,
        );
    }
    let request = get(
        "/api/metrics/series",
        format!("type={metric_type}&period=daily&step=1h&group_by=host"),
    )?;
    // The summary grouped by `host` above showed this instance the key's
    // values: the series reads the registry in the same pipeline as their
    // buckets (one round trip fewer than the first grouped query).
    record(
        "series, group_by, cache miss",
        200,
        count(state, metrics_series(state, request)).await,
        5,
    );
    Ok(counted)
}
