//! End-to-end tests over HTTP, group `cache`: the read-through cache and its
//! single flight across function processes, with a stub external source.
//!
//! Run with `cargo test` (everything) or `cargo test -p analytics-tests
//! --test e2e_cache` (this group): the first test starts the group's stack
//! (`cargo lambda watch` on a free port, never 8000, with the settings of
//! [`e2e::CACHE`]), the tests share it, and it stops when this test binary
//! exits. `analytics_tests::e2e` describes the stack; without `cargo-lambda`
//! the tests report `SKIPPED` (or fail with `REQUIRE_E2E=1`).
//!
//! The tests serve the stack's external source on one port, so they take
//! turns (the group is serial).

use std::time::Duration;

use analytics_tests::e2e::{self, header, metric, summary};
use analytics_tests::{random_type, StubReply};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn e2e_cache_second_identical_request_is_a_hit() {
    let Some(stack) = e2e::stack(&e2e::CACHE).await else {
        return;
    };
    let stub = stack.start_stub().await;
    stub.set(StubReply::json(
        200,
        json!({"external_metric_context": 123}),
    ));
    let metric_type = random_type("e2e_cache");
    let created = stack
        .post_json("/api/metrics", &metric(&metric_type, 4.0))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);

    let (status, headers, first) =
        summary(&stack, &format!("type={metric_type}&period=daily")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(header(&headers, "x-cache"), Some("MISS"));
    assert_eq!(first["external_data"]["status"], "success", "{first}");
    assert_eq!(first["external_data"]["external_metric_context"], 123);

    // Another order and an unknown parameter: the same parsed query.
    let (status, headers, second) =
        summary(&stack, &format!("period=daily&utm=x&type={metric_type}")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(header(&headers, "x-cache"), Some("HIT"));
    assert!(header(&headers, "age").is_some(), "Age on a hit");
    let cache_control = header(&headers, "cache-control").unwrap_or_default();
    assert!(cache_control.contains("max-age="), "{cache_control}");
    assert_eq!(first, second);
    assert_eq!(stub.calls(), 1, "a hit does not call the source");

    // `Cache-Control: no-cache` recomputes and refreshes the entry.
    let response = stack
        .client
        .get(stack.url(&format!(
            "/api/metrics/summary?type={metric_type}&period=daily"
        )))
        .header("cache-control", "no-cache")
        .send()
        .await
        .expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "x-cache"), Some("MISS"));
    assert_eq!(stub.calls(), 2);
}

#[tokio::test]
async fn e2e_cache_concurrent_cold_requests_call_the_source_once() {
    let Some(stack) = e2e::stack(&e2e::CACHE).await else {
        return;
    };
    let stub = stack.start_stub().await;
    // Slow enough that the requests overlap, well inside the source timeout.
    stub.set(
        StubReply::json(200, json!({"external_metric_context": 321}))
            .with_delay(Duration::from_millis(400)),
    );
    let metric_type = random_type("e2e_stampede");
    let url = stack.url(&format!(
        "/api/metrics/summary?type={metric_type}&period=hourly"
    ));
    let requests = (0..8).map(|_| {
        let client = stack.client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let response = client.get(url).send().await.expect("a response");
            let status = response.status();
            (status, response.text().await.expect("a body"))
        })
    });
    let mut bodies = Vec::new();
    for request in requests {
        let (status, body) = request.await.expect("the request task");
        assert_eq!(status, StatusCode::OK, "{body}");
        bodies.push(body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "identical bodies: {bodies:?}"
    );
    assert_eq!(stub.calls(), 1, "single flight across function instances");
}
