//! End-to-end test over HTTP, group `breaker`: failures, fallback, an open
//! breaker and its recovery, with a stub external source.
//!
//! Run with `cargo test` (everything) or `cargo test -p analytics-tests
//! --test e2e_breaker` (this group): the first test starts the group's stack
//! (`cargo lambda watch` on a free port, never 8000, with the settings of
//! [`e2e::BREAKER`]), the tests share it, and it stops when this test binary
//! exits. `analytics_tests::e2e` describes the stack; without `cargo-lambda`
//! the tests report `SKIPPED` (or fail with `REQUIRE_E2E=1`).
//!
//! The breaker is shared by the whole stack, so the group is one test that
//! walks through its scenario in order.

use std::time::Duration;

use analytics_tests::e2e::{self, json_body, summary, Stack};
use analytics_tests::{random_type, StubReply};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn breaker_state(stack: &Stack) -> String {
    let (status, _, body) = json_body(stack.get("/health").await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an open breaker is not a dead service: {body}"
    );
    body["circuit_breaker"]["external_service"]
        .as_str()
        .unwrap_or_else(|| panic!("health shows the breaker: {body}"))
        .to_string()
}

/// A summary for a fresh type (so the cache never answers for the source),
/// returning its `external_data`.
async fn fresh_external_data(stack: &Stack) -> Value {
    let metric_type = random_type("e2e_breaker");
    let (status, _, body) = summary(stack, &format!("type={metric_type}&period=hourly")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a failing source never fails the summary: {body}"
    );
    body["external_data"].clone()
}

/// One test for the whole group: the breaker is shared by the whole stack.
#[tokio::test]
async fn e2e_breaker_failure_fallback_open_recovery() {
    let Some(stack) = e2e::stack(&e2e::BREAKER).await else {
        return;
    };
    let threshold = stack.setting_u64("CIRCUIT_BREAKER_FAILURE_THRESHOLD", 3) as usize;
    let reset = Duration::from_secs(stack.setting_u64("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", 10));
    let timeout = Duration::from_millis(stack.setting_u64("EXTERNAL_SERVICE_TIMEOUT_MS", 1000));
    let stub = stack.start_stub().await;
    assert_eq!(breaker_state(&stack).await, "closed");

    // Failures: fallback each time, until the threshold opens the breaker.
    stub.set(StubReply::text(500, "upstream broken"));
    for i in 0..threshold {
        let external = fresh_external_data(&stack).await;
        assert_eq!(external["status"], "fallback", "failure {i}: {external}");
    }
    assert_eq!(stub.calls(), threshold);
    assert_eq!(breaker_state(&stack).await, "open");

    // Open: answered at once with the fallback; the source is not called.
    for _ in 0..3 {
        let external = fresh_external_data(&stack).await;
        assert_eq!(external["status"], "fallback", "{external}");
    }
    assert_eq!(
        stub.calls(),
        threshold,
        "an open breaker does not call the source"
    );

    // The source recovers; after the reset timeout one probe closes it.
    stub.set(StubReply::json(
        200,
        json!({"external_metric_context": 777}),
    ));
    tokio::time::sleep(reset + Duration::from_millis(500)).await;
    assert_eq!(breaker_state(&stack).await, "half_open");
    let external = fresh_external_data(&stack).await;
    assert_eq!(external["status"], "success", "{external}");
    assert_eq!(external["external_metric_context"], 777);
    assert_eq!(stub.calls(), threshold + 1);
    assert_eq!(breaker_state(&stack).await, "closed");

    // Slow calls are failures too: cancelled at the source timeout.
    stub.set(
        StubReply::json(200, json!({"external_metric_context": 1}))
            .with_delay(timeout + Duration::from_millis(700)),
    );
    for i in 0..threshold {
        let external = fresh_external_data(&stack).await;
        assert_eq!(external["status"], "fallback", "slow call {i}: {external}");
    }
    assert_eq!(breaker_state(&stack).await, "open");
    let calls = stub.calls();
    let external = fresh_external_data(&stack).await;
    assert_eq!(external["status"], "fallback");
    assert_eq!(stub.calls(), calls, "open again: not called");

    // And it recovers again.
    stub.set(StubReply::json(
        200,
        json!({"external_metric_context": 778}),
    ));
    tokio::time::sleep(reset + Duration::from_millis(500)).await;
    let external = fresh_external_data(&stack).await;
    assert_eq!(external["status"], "success", "{external}");
    assert_eq!(breaker_state(&stack).await, "closed");
}
