//! End-to-end tests over HTTP, group `default`: the API's plain behaviour
//! through `cargo lambda watch`, real function processes and a real Redis.
//!
//! Run with `cargo test` (everything) or `cargo test -p analytics-tests
//! --test e2e_default` (this group): the first test starts the group's stack
//! (`cargo lambda watch` on a free port, never 8000, with the settings of
//! [`e2e::DEFAULT`]), the tests share it, and it stops when this test binary
//! exits. `analytics_tests::e2e` describes the stack; without `cargo-lambda`
//! the tests report `SKIPPED` (or fail with `REQUIRE_E2E=1`).
//!
//! The tests run in parallel on one stack; each uses its own random metric
//! types, so none sees another's data or cache entries.

use analytics_tests::e2e::{
    self, assert_close, assert_problem, error_fields, header, json_body, metric, now_rfc3339,
    summary,
};
use analytics_tests::random_type;
use chrono::{DateTime, FixedOffset, Utc};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn e2e_default_health_is_ok() {
    let Some(stack) = e2e::stack(&e2e::DEFAULT).await else {
        return;
    };
    let (status, headers, body) = json_body(stack.get("/health").await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(header(&headers, "content-type")
        .unwrap_or_default()
        .starts_with("application/json"));
    assert_eq!(body["status"], "ok");
    assert_eq!(body["redis"], "healthy");
}

#[tokio::test]
async fn e2e_default_post_metric_is_created_with_a_utc_timestamp() {
    let Some(stack) = e2e::stack(&e2e::DEFAULT).await else {
        return;
    };
    let metric_type = random_type("e2e_post");
    // Sent with a +02:00 offset; stored and echoed in UTC.
    let at = Utc::now() - chrono::Duration::seconds(5);
    let offset = FixedOffset::east_opt(2 * 3600).expect("a valid offset");
    let sent = at
        .with_timezone(&offset)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let (status, _, body) = json_body(
        stack
            .post_json(
                "/api/metrics",
                &json!({"timestamp": sent, "value": 85.5, "type": metric_type, "unknown_extra": true}),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stored = body.get("metric").unwrap_or(&body);
    let timestamp = stored["timestamp"].as_str().expect("a timestamp string");
    assert!(timestamp.ends_with('Z'), "normalised to UTC: {timestamp}");
    let parsed: DateTime<Utc> = timestamp.parse().expect("RFC 3339");
    assert_eq!(parsed.timestamp(), at.timestamp(), "same instant as {sent}");
    assert_eq!(stored["type"], metric_type.as_str());
    assert_eq!(stored["value"], 85.5);
    let request_id = body["request_id"].as_str().unwrap_or_default();
    assert!(!request_id.is_empty(), "a request id: {body}");
}

#[tokio::test]
async fn e2e_default_malformed_json_is_400_problem() {
    let Some(stack) = e2e::stack(&e2e::DEFAULT).await else {
        return;
    };
    for malformed in [r#"{"timestamp": "#, "not json", r#"{"value": 1,}"#] {
        let (status, headers, body) =
            json_body(stack.post_raw("/api/metrics", malformed).await).await;
        assert_problem(status, &headers, &body, 400);
    }
}

#[tokio::test]
async fn e2e_default_invalid_metrics_are_422_with_errors() {
    let Some(stack) = e2e::stack(&e2e::DEFAULT).await else {
        return;
    };
    let ok_type = random_type("e2e_invalid");
    let cases = [
        (
            json!({"timestamp": now_rfc3339(), "value": "abc", "type": ok_type}),
            "value",
        ),
        (
            json!({"timestamp": now_rfc3339(), "value": 1.0, "type": "cpu usage"}),
            "type",
        ),
        (
            json!({"timestamp": "2026-02-18T12:00:00", "value": 1.0, "type": ok_type}),
            "timestamp",
        ),
    ];
    for (metric, field) in cases {
        let (status, headers, body) =
            json_body(stack.post_json("/api/metrics", &metric).await).await;
        assert_problem(status, &headers, &body, 422);
        assert!(
            error_fields(&body).iter().any(|f| f == field),
            "{field} is listed for {metric}: {body}"
        );
    }
    // Nothing was stored for the valid type of the rejected metrics.
    let (status, _, body) = summary(&stack, &format!("type={ok_type}&period=hourly")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 0);
}

#[tokio::test]
async fn e2e_default_summary_aggregates_ingested_values() {
    let Some(stack) = e2e::stack(&e2e::DEFAULT).await else {
        return;
    };
    let metric_type = random_type("e2e_summary");
    for value in [10.0, 30.5, 20.0] {
        let response = stack
            .post_json("/api/metrics", &metric(&metric_type, value))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let (status, _, body) = summary(&stack, &format!("type={metric_type}&period=hourly")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["type"], metric_type.as_str());
    assert_eq!(body["period"], "hourly");
    assert_eq!(body["count"], 3, "{body}");
    assert_close(&body["sum"], 60.5);
    assert_close(&body["min_value"], 10.0);
    assert_close(&body["max_value"], 30.5);
    assert_close(&body["average_value"], 60.5 / 3.0);
    let from: DateTime<Utc> = body["window"]["from"].as_str().unwrap().parse().unwrap();
    let to: DateTime<Utc> = body["window"]["to"].as_str().unwrap().parse().unwrap();
    assert_eq!(to - from, chrono::Duration::minutes(60));
    // The default stack's simulated source never fails.
    assert_eq!(body["external_data"]["status"], "success", "{body}");
    let context = body["external_data"]["external_metric_context"]
        .as_i64()
        .expect("an integer context");
    assert!((100..=500).contains(&context), "{context}");
    // Percentiles: rank-based, within 1 % (p50 of 10, 20, 30.5 is 20).
    let p50 = body["percentiles"]["p50"].as_f64().expect("a p50");
    assert!((p50 - 20.0).abs() <= 0.2, "{body}");
    // The same values as a series of the hour in 5-minute steps.
    let (status, _, body) = json_body(
        stack
            .get(&format!(
                "/api/metrics/series?type={metric_type}&period=hourly&step=5m"
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let points = body["points"].as_array().expect("points");
    assert!((12..=13).contains(&points.len()), "{body}");
    let total: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 3, "{body}");
}

#[tokio::test]
async fn e2e_default_summary_without_data_has_count_zero_and_nulls() {
    let Some(stack) = e2e::stack(&e2e::DEFAULT).await else {
        return;
    };
    let metric_type = random_type("e2e_empty");
    let (status, _, body) = summary(&stack, &format!("type={metric_type}&period=daily")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 0);
    assert_eq!(body["sum"].as_f64(), Some(0.0), "{body}");
    assert!(body["average_value"].is_null(), "{body}");
    assert!(body["min_value"].is_null(), "{body}");
    assert!(body["max_value"].is_null(), "{body}");
}

#[tokio::test]
async fn e2e_default_summary_with_missing_or_invalid_parameters_is_422() {
    let Some(stack) = e2e::stack(&e2e::DEFAULT).await else {
        return;
    };
    let metric_type = random_type("e2e_query");
    for (query, field) in [
        (format!("type={metric_type}"), "period"),
        (format!("type={metric_type}&period=yearly"), "period"),
        ("period=daily".to_string(), "type"),
        ("type=cpu%20usage&period=daily".to_string(), "type"),
    ] {
        let (status, headers, body) = summary(&stack, &query).await;
        assert_problem(status, &headers, &body, 422);
        assert!(
            error_fields(&body).iter().any(|f| f == field),
            "{field} is listed for ?{query}: {body}"
        );
        if field == "period" {
            let text = body.to_string();
            for period in ["hourly", "daily", "weekly", "monthly"] {
                assert!(text.contains(period), "allowed periods listed: {text}");
            }
        }
    }
}

/// A normal start is quiet: the Lambda runtime does not warn about its
/// concurrency feature, and no EMF metric lines are written outside AWS
/// Lambda (`METRICS_EMF=auto`), although an ingest and a summary record
/// metrics.
#[tokio::test]
async fn e2e_default_functions_start_quietly_without_emf_lines() {
    let Some(stack) = e2e::stack(&e2e::DEFAULT).await else {
        return;
    };
    let metric_type = random_type("e2e_quiet");
    let created = stack
        .post_json("/api/metrics", &metric(&metric_type, 1.0))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let summary = stack
        .get(&format!(
            "/api/metrics/summary?type={metric_type}&period=hourly"
        ))
        .await;
    assert_eq!(summary.status(), StatusCode::OK);
    let log = std::fs::read_to_string(e2e::work_dir().join("default.log"))
        .expect("the default stack's log");
    assert!(
        !log.contains("AWS_LAMBDA_MAX_CONCURRENCY"),
        "the runtime warned on start:\n{log}"
    );
    // Every EMF document carries the `_aws` metadata member.
    assert!(
        !log.contains("\"_aws\""),
        "EMF lines outside Lambda:\n{log}"
    );
}
