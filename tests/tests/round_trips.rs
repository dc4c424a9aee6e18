//! Redis round trips per request on every hot path, counted (not timed) on
//! the handler state's own connection. These budgets are the performance
//! contract of the service; a change that adds a round trip fails here.
//!
//! | path | round trips |
//! |---|---|
//! | ingest, accepted | 2 (limiter script on the client's key + storage script on the type's keys), for one metric or a batch of 500 |
//! | ingest, rate-limited | 1 |
//! | summary, cache hit | 1 |
//! | summary, cache miss | 5 (lookup-or-lock, buckets, breaker acquire, breaker report, store-and-unlock) |
//! | health | 1 (`PING` and the breaker state pipelined) |
//!
//! Each path runs once first so the scripts are loaded: the very first call
//! of a script on a Redis server costs one more round trip (`NOSCRIPT`, then
//! `EVAL` of the body).
//!
//! With `REDIS_MODE=cluster` the budgets are the same for a single-type
//! request without an `Idempotency-Key`; a keyed ingest adds the claim of its
//! key (1), and a batch spanning k hash slots makes 2 × k storage calls
//! (a read-only check and a write per slot), sent concurrently. `make bench` counts the same paths again and reports them
//! in BENCHMARKS.md (figure 1).

use analytics_tests::{config, http_v2, random_type};
use chrono::Utc;
use serde_json::json;
use shared::handlers::{health, ingest_metric, metrics_summary};
use shared::metric::format_timestamp;
use shared::AppState;

/// The status of `response` and the round trips `state`'s connection made
/// for it. The handler's future does nothing until awaited here, so the
/// count covers exactly one request.
async fn count(
    state: &AppState,
    response: impl std::future::Future<Output = lambda_http::Response<lambda_http::Body>>,
) -> (u16, u64) {
    let before = state.redis.round_trips();
    let status = response.await.status().as_u16();
    (status, state.redis.round_trips() - before)
}

fn ingest_request(t: &str) -> lambda_http::Request {
    http_v2("POST", "/api/metrics")
        .json(&json!({"timestamp": format_timestamp(Utc::now()), "value": 1.0, "type": t}))
        .build()
}

fn summary_request(t: &str) -> lambda_http::Request {
    http_v2("GET", "/api/metrics/summary")
        .query(&format!("type={t}&period=daily"))
        .build()
}

#[tokio::test]
async fn hot_paths_stay_within_their_round_trip_budget() {
    let state = AppState::new(config(&[
        ("RATE_LIMIT_REQUESTS", "3"),
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
    ]))
    .unwrap();
    let t = random_type("rt");
    // Warm-up: load every script once.
    assert_eq!(
        ingest_metric(&state, ingest_request(&t)).await.status(),
        201
    );
    assert_eq!(
        metrics_summary(&state, summary_request(&t)).await.status(),
        200
    );
    assert_eq!(
        health(&state, http_v2("GET", "/health").build())
            .await
            .status(),
        200
    );

    assert_eq!(
        count(&state, ingest_metric(&state, ingest_request(&t))).await,
        (201, 2),
        "accepted ingest"
    );

    // A batch is one request: still one limiter call and one storage call,
    // however many buckets its 500 metrics touch.
    let now = Utc::now();
    let batch: Vec<_> = (0..500)
        .map(|i| {
            json!({"timestamp": format_timestamp(now - chrono::Duration::minutes(i)), "value": 1.0, "type": t})
        })
        .collect();
    let batch = http_v2("POST", "/api/metrics")
        .json(&json!(batch))
        .source_ip("203.0.113.77")
        .build();
    assert_eq!(
        count(&state, ingest_metric(&state, batch)).await,
        (201, 2),
        "accepted batch of 500"
    );

    let _third = ingest_metric(&state, ingest_request(&t)).await;
    assert_eq!(
        count(&state, ingest_metric(&state, ingest_request(&t))).await,
        (429, 1),
        "rate-limited ingest"
    );

    assert_eq!(
        count(&state, metrics_summary(&state, summary_request(&t))).await,
        (200, 1),
        "summary cache hit"
    );

    let fresh = random_type("rt_miss");
    assert_eq!(
        count(&state, metrics_summary(&state, summary_request(&fresh))).await,
        (200, 5),
        "summary cache miss"
    );

    assert_eq!(
        count(&state, health(&state, http_v2("GET", "/health").build())).await,
        (200, 1),
        "health"
    );
}
