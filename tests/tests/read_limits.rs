//! Per-client limits of the reads that cost work, through the real handlers
//! against the real Redis: `GET /api/metrics/summary` (policy `summary`,
//! `SUMMARY_RATE_LIMIT_REQUESTS`) and `GET /api/metrics/series` (policy
//! `series`, `SERIES_RATE_LIMIT_REQUESTS`).
//!
//! What counts is what costs: a cache miss or a `no-cache` refresh (the lock
//! script, the buckets, perhaps an external call). A cache hit is one `GET`,
//! counts for nothing and is served even to a client over its limit.

use std::sync::Arc;

use analytics_tests::{body_json, config, config_with_prefix, http_v2, random_prefix, random_type};
use chrono::Utc;
use lambda_http::{Body, Response};
use serde_json::json;
use shared::handlers::{ingest_metric, metrics_series, metrics_summary};
use shared::metric::format_timestamp;
use shared::AppState;

fn quiet(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut all = vec![
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
    ];
    all.extend_from_slice(pairs);
    all
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A summary (`series`: a series at `5m`) of `metric_type` for `client`.
fn read(path: &str, metric_type: &str, client: &str, no_cache: bool) -> lambda_http::Request {
    let query = if path.ends_with("series") {
        format!("type={metric_type}&period=hourly&step=5m")
    } else {
        format!("type={metric_type}&period=hourly")
    };
    let mut event = http_v2("GET", path).query(&query).source_ip(client);
    if no_cache {
        event = event.header("cache-control", "no-cache");
    }
    event.build()
}

async fn send(state: &AppState, req: lambda_http::Request) -> Response<Body> {
    if req.uri().path().ends_with("series") {
        metrics_series(state, req).await
    } else {
        metrics_summary(state, req).await
    }
}

/// Limit 2: a miss and a refresh are counted (`RateLimit` fields named after
/// the route's policy), the hits between them are not and carry no fields;
/// the third costly request is a 429 with `Retry-After`, and hits are still
/// served to the client over its limit. Ingests have their own budget.
async fn hits_are_free_and_what_costs_is_limited(path: &str, variable: &'static str, policy: &str) {
    let state = AppState::new(config(&quiet(&[
        (variable, "2"),
        ("RATE_LIMIT_REQUESTS", "1"),
    ])))
    .unwrap();
    let (t, client) = (random_type("limited"), "198.51.100.77");

    let miss = send(&state, read(path, &t, client, false)).await;
    assert_eq!(miss.status(), 200, "{}", body_json(&miss));
    assert_eq!(header(&miss, "x-cache"), Some("MISS"));
    assert_eq!(
        header(&miss, "ratelimit-policy"),
        Some(format!("\"{policy}\";q=2;w=600").as_str())
    );
    assert!(
        header(&miss, "ratelimit").is_some_and(|v| v.starts_with(&format!("\"{policy}\";r=1;")))
    );
    for _ in 0..5 {
        let hit = send(&state, read(path, &t, client, false)).await;
        assert_eq!(hit.status(), 200);
        assert_eq!(header(&hit, "x-cache"), Some("HIT"));
        assert!(header(&hit, "ratelimit").is_none(), "a hit is not counted");
        assert!(header(&hit, "ratelimit-policy").is_none());
    }
    let refresh = send(&state, read(path, &t, client, true)).await;
    assert_eq!(refresh.status(), 200);
    assert_eq!(header(&refresh, "x-cache"), Some("MISS"));
    assert!(
        header(&refresh, "ratelimit").is_some_and(|v| v.starts_with(&format!("\"{policy}\";r=0;")))
    );

    for refused in [
        send(&state, read(path, &t, client, true)).await,
        send(&state, read(path, &random_type("other"), client, false)).await,
    ] {
        let body = body_json(&refused);
        assert_eq!(refused.status(), 429, "{body}");
        assert_eq!(body["type"], "urn:analytics-api:problem:rate-limited");
        let retry: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1);
        assert_eq!(
            header(&refused, "ratelimit"),
            Some(format!("\"{policy}\";r=0;t={retry}").as_str())
        );
        assert_eq!(
            header(&refused, "ratelimit-policy"),
            Some(format!("\"{policy}\";q=2;w=600").as_str())
        );
    }
    let still = send(&state, read(path, &t, client, false)).await;
    assert_eq!(still.status(), 200, "hits are served over the limit");
    assert_eq!(header(&still, "x-cache"), Some("HIT"));

    // Another client has its own budget; the client's ingest budget is
    // untouched.
    assert_eq!(
        send(
            &state,
            read(path, &random_type("b"), "198.51.100.78", false)
        )
        .await
        .status(),
        200
    );
    let ingest = http_v2("POST", "/api/metrics")
        .json(&json!({"timestamp": format_timestamp(Utc::now()), "value": 1.0, "type": t}))
        .source_ip(client)
        .build();
    let ingested = ingest_metric(&state, ingest).await;
    assert_eq!(ingested.status(), 201);
    assert_eq!(
        header(&ingested, "ratelimit-policy"),
        Some("\"default\";q=1;w=600")
    );
}

#[tokio::test]
async fn summaries_count_misses_and_refreshes_not_hits() {
    hits_are_free_and_what_costs_is_limited(
        "/api/metrics/summary",
        "SUMMARY_RATE_LIMIT_REQUESTS",
        "summary",
    )
    .await;
}

#[tokio::test]
async fn series_count_misses_and_refreshes_not_hits() {
    hits_are_free_and_what_costs_is_limited(
        "/api/metrics/series",
        "SERIES_RATE_LIMIT_REQUESTS",
        "series",
    )
    .await;
}

/// Summaries and series are counted apart: exhausting one leaves the other.
#[tokio::test]
async fn summary_and_series_budgets_are_separate() {
    let state = AppState::new(config(&quiet(&[
        ("SUMMARY_RATE_LIMIT_REQUESTS", "1"),
        ("SERIES_RATE_LIMIT_REQUESTS", "1"),
    ])))
    .unwrap();
    let (t, client) = (random_type("apart"), "198.51.100.90");
    let summary = "/api/metrics/summary";
    let series = "/api/metrics/series";
    assert_eq!(
        send(&state, read(summary, &t, client, true)).await.status(),
        200
    );
    assert_eq!(
        send(&state, read(summary, &t, client, true)).await.status(),
        429
    );
    assert_eq!(
        send(&state, read(series, &t, client, true)).await.status(),
        200
    );
    assert_eq!(
        send(&state, read(series, &t, client, true)).await.status(),
        429
    );
}

/// 24 costly summaries (each a different window, so each a miss) of one
/// client at once from 4 independent instances: exactly
/// `SUMMARY_RATE_LIMIT_REQUESTS` are computed, the rest are 429s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_misses_from_four_instances_admits_exactly_the_limit() {
    const LIMIT: usize = 5;
    const REQUESTS: usize = 24;
    let prefix = random_prefix();
    let pairs = quiet(&[
        ("SUMMARY_RATE_LIMIT_REQUESTS", "5"),
        ("REDIS_TIMEOUT_MS", "5000"),
        ("REQUEST_DEADLINE_MS", "30000"),
    ]);
    let states: Vec<Arc<AppState>> = (0..4)
        .map(|_| Arc::new(AppState::new(config_with_prefix(&prefix, &pairs)).unwrap()))
        .collect();
    let t = random_type("burst");
    let barrier = Arc::new(tokio::sync::Barrier::new(REQUESTS));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let state = Arc::clone(&states[i % states.len()]);
            let barrier = Arc::clone(&barrier);
            let start = Utc::now() - chrono::Duration::hours(i as i64 + 1);
            let from = format_timestamp(start);
            let to = format_timestamp(start + chrono::Duration::minutes(30));
            let req = http_v2("GET", "/api/metrics/summary")
                .query(&format!("type={t}&from={from}&to={to}"))
                .source_ip("203.0.113.51")
                .build();
            tokio::spawn(async move {
                barrier.wait().await;
                metrics_summary(&state, req).await
            })
        })
        .collect();
    let responses = futures::future::try_join_all(tasks).await.unwrap();
    let mut remaining: Vec<u64> = Vec::new();
    let mut refused = 0;
    for response in &responses {
        match response.status().as_u16() {
            200 => {
                assert_eq!(header(response, "x-cache"), Some("MISS"));
                let r = header(response, "ratelimit")
                    .and_then(|v| v.strip_prefix("\"summary\";r="))
                    .and_then(|v| v.split(';').next())
                    .and_then(|v| v.parse().ok())
                    .expect("a counted summary carries RateLimit");
                remaining.push(r);
            }
            429 => refused += 1,
            other => panic!("unexpected {other}: {}", body_json(response)),
        }
    }
    remaining.sort_unstable();
    assert_eq!(remaining, (0..LIMIT as u64).collect::<Vec<_>>());
    assert_eq!(refused, REQUESTS - LIMIT);
}
