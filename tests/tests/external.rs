//! The HTTP external source through the summary handler: what counts as a
//! success and what as a failure, against a real local HTTP server.

use analytics_tests::{body_json, config, http_v2, random_type, Stub, StubReply};
use serde_json::json;
use shared::handlers::metrics_summary;
use shared::AppState;

async fn summary_with(reply: StubReply) -> serde_json::Value {
    let stub = Stub::start().await;
    stub.set(reply);
    let url = stub.url();
    let state = AppState::new(config(&[
        ("EXTERNAL_SERVICE_URL", &url),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "1000"),
    ]))
    .unwrap();
    let query = format!("type={}&period=hourly", random_type("ext"));
    let response = metrics_summary(
        &state,
        http_v2("GET", "/api/metrics/summary").query(&query).build(),
    )
    .await;
    assert_eq!(response.status(), 200);
    body_json(&response)
}

#[tokio::test]
async fn an_object_is_merged_next_to_the_status() {
    let body = summary_with(StubReply::json(
        200,
        json!({"external_metric_context": 7, "status": "x"}),
    ))
    .await;
    assert_eq!(
        body["external_data"],
        json!({"status": "success", "external_metric_context": 7})
    );
}

#[tokio::test]
async fn non_objects_and_errors_are_fallbacks() {
    for reply in [
        StubReply::json(200, json!([1, 2])),
        StubReply::text(200, "not json"),
        StubReply::json(500, json!({"external_metric_context": 7})),
    ] {
        let body = summary_with(reply).await;
        assert_eq!(
            body["external_data"],
            json!({"status": "fallback", "reason": "upstream_error"})
        );
    }
}

/// A huge body would be merged into every summary (and the cache): it is a
/// failure instead, so a summary stays small whatever the source sends.
#[tokio::test]
async fn an_oversized_body_is_a_fallback_not_a_huge_summary() {
    let blob = "x".repeat(shared::external::MAX_BODY_BYTES + 1);
    let body = summary_with(StubReply::json(
        200,
        json!({"external_metric_context": 1, "blob": blob}),
    ))
    .await;
    assert_eq!(
        body["external_data"],
        json!({"status": "fallback", "reason": "upstream_error"})
    );
    let fits = "x".repeat(shared::external::MAX_BODY_BYTES / 2);
    let body = summary_with(StubReply::json(200, json!({"blob": fits}))).await;
    assert_eq!(body["external_data"]["status"], "success");
}
