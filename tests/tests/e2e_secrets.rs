//! End-to-end tests over HTTP, group `secrets`: with the real function
//! binaries logging at `RUST_LOG=trace` (their dependencies' trace output
//! included: the Lambda runtime's, hyper's, the redis crate's), no log line
//! holds a secret a request carried: the `x-api-key` value (a valid one and a
//! mistyped one), `Authorization`, cookies, the `Idempotency-Key`, or any
//! part of a request body.
//!
//! Every request carries a unique marker in each of those places; after the
//! requests, the emulator's log (the functions' stdout and stderr) is
//! searched for the markers. The log is also checked to hold trace lines at
//! all, so that the test cannot pass on a stack that logs nothing.

use std::time::Duration;

use analytics_tests::e2e::{self, now_rfc3339};
use analytics_tests::random_type;
use reqwest::StatusCode;

/// The key whose SHA-256 digest [`e2e::SECRETS`] configures.
const API_KEY: &str = "e2e-secret-api-key-7f3a";

#[tokio::test]
async fn e2e_secrets_never_reach_the_logs_at_trace_level() {
    let Some(stack) = e2e::stack(&e2e::SECRETS).await else {
        return;
    };
    let marker = |place: &str| {
        format!(
            "{place}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        )
    };
    let wrong_key = marker("mistypedkey");
    let bearer = marker("bearertoken");
    let cookie = marker("cookievalue");
    let idempotency_key = marker("idempotencykey");
    let body_marker = marker("bodymarker");
    let malformed_marker = marker("malformedbody");
    let metric_type = random_type("e2e_secrets");

    let send = |request: reqwest::RequestBuilder, key: &str| {
        request
            .header("x-api-key", key)
            .header("authorization", format!("Bearer {bearer}"))
            .header("cookie", format!("session={cookie}"))
            .timeout(Duration::from_secs(120))
            .send()
    };

    // An accepted metric with an Idempotency-Key, sent twice (the replay is
    // answered from the stored record).
    let body = serde_json::json!({
        "type": metric_type,
        "value": 42.5,
        "timestamp": now_rfc3339(),
    })
    .to_string();
    for _ in 0..2 {
        let response = send(
            stack
                .client
                .post(stack.url("/api/metrics"))
                .header("content-type", "application/json")
                .header("idempotency-key", &idempotency_key)
                .body(body.clone()),
            API_KEY,
        )
        .await
        .expect("POST /api/metrics");
        let status = response.status();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "POST /api/metrics: {}",
            response.text().await.unwrap_or_default()
        );
    }
    // A body that is not JSON, and one that is refused field by field.
    let response = send(
        stack
            .client
            .post(stack.url("/api/metrics"))
            .header("content-type", "application/json")
            .body(format!("{{\"type\": \"{malformed_marker}")),
        API_KEY,
    )
    .await
    .expect("POST /api/metrics (malformed)");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = send(
        stack
            .client
            .post(stack.url("/api/metrics"))
            .header("content-type", "application/json")
            .body(format!(
                "{{\"type\": \"cpu\", \"value\": 1, \"source\": \"{body_marker}\"}}"
            )),
        API_KEY,
    )
    .await
    .expect("POST /api/metrics (invalid)");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // A mistyped API key is refused, and is as secret as a valid one.
    let response = send(stack.client.get(stack.url("/health")), &wrong_key)
        .await
        .expect("GET /health");
    assert!(response.status().is_success() || response.status() == StatusCode::UNAUTHORIZED);
    let response = send(
        stack.client.get(stack.url(&format!(
            "/api/metrics/summary?type={metric_type}&period=hourly"
        ))),
        &wrong_key,
    )
    .await
    .expect("GET /api/metrics/summary (wrong key)");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    for path in ["summary", "series"] {
        let step = if path == "series" { "&step=5m" } else { "" };
        let response = send(
            stack.client.get(stack.url(&format!(
                "/api/metrics/{path}?type={metric_type}&period=hourly{step}"
            ))),
            API_KEY,
        )
        .await
        .expect("GET a query");
        assert_eq!(response.status(), StatusCode::OK, "GET /api/metrics/{path}");
    }

    // Log lines are written by the function processes as they go; give
    // their last lines a moment to reach the file.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = std::fs::read_to_string(&stack.log_path).expect("the stack's log");
    assert!(
        log.contains("TRACE") || log.contains("\"level\":\"TRACE\""),
        "the functions were expected to log at trace level; log: {}",
        stack.log_path.display()
    );
    for (place, secret) in [
        ("x-api-key (valid)", API_KEY),
        ("x-api-key (mistyped)", wrong_key.as_str()),
        ("authorization", bearer.as_str()),
        ("cookie", cookie.as_str()),
        ("idempotency-key", idempotency_key.as_str()),
        ("body", body_marker.as_str()),
        ("malformed body", malformed_marker.as_str()),
    ] {
        let lines: Vec<&str> = log.lines().filter(|line| line.contains(secret)).collect();
        assert!(
            lines.is_empty(),
            "the {place} value reached {} line(s) of the log, e.g.: {}",
            lines.len(),
            lines[0].chars().take(400).collect::<String>()
        );
    }
}
