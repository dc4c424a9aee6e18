//! End-to-end tests over HTTP, through `cargo lambda watch`, against real
//! function processes and a real Redis.
//!
//! Run them with `make test` (everything) or `make e2e` (only these); they are
//! `#[ignore]`d in a plain `cargo test`, which has no stack to talk to.
//!
//! # Groups: one stack per set of settings
//!
//! Some behaviours need a stack configured differently from the others (a
//! small rate limit, an external source the test controls). So every test
//! belongs to a *group*, named by the prefix of the test's name:
//! `e2e_<group>_<what it checks>`. For each group, `scripts/test.sh`
//!
//! 1. starts its own `cargo lambda watch` on a free port (never 8000), with
//!    `--concurrency 4` (several function processes per route share Redis, as
//!    Lambda instances do), a random `REDIS_KEY_PREFIX` and the group's
//!    settings from the `E2E_GROUP_SETTINGS` table in `scripts/test.sh`;
//! 2. runs `cargo test -p analytics-tests --test e2e -- --ignored
//!    --test-threads=1 e2e_<group>_` with `E2E_BASE_URL`, `E2E_GROUP`,
//!    `E2E_STUB_PORT` and `E2E_STACK_ENV_FILE` set;
//! 3. stops that stack, then goes on with the next group.
//!
//! A test starts with `Stack::for_group("<group>")`, which refuses to run
//! against another group's stack. A test whose name matches no group makes
//! the runner fail, so none is skipped silently. To add a group: add its
//! settings to `E2E_GROUP_SETTINGS` and its name to `E2E_GROUP_ORDER` in
//! `scripts/test.sh`, then name its tests `e2e_<group>_...`.
//!
//! | group       | stack settings (on top of the defaults)                        |
//! |-------------|----------------------------------------------------------------|
//! | `default`   | `RATE_LIMIT_REQUESTS=100000` (the emulator reports every caller as 127.0.0.1), simulated source that never fails |
//! | `ratelimit` | `RATE_LIMIT_REQUESTS=3`, `RATE_LIMIT_WINDOW_SECONDS=60`, sliding log |
//! | `cache`     | `EXTERNAL_SERVICE_URL` = the test's stub, `CACHE_TTL_SECONDS=60`, breaker threshold out of reach |
//! | `breaker`   | `EXTERNAL_SERVICE_URL` = the test's stub, threshold 3, reset timeout 3 s, source timeout 500 ms |
//!
//! Within a group the tests share one stack and run one at a time; each uses
//! its own random metric types, so tests do not see each other's data or
//! cache entries. Tests of the `ratelimit` and `breaker` groups change state
//! shared by the whole stack (the quota of 127.0.0.1, the breaker), so each of
//! those groups is one test that walks through its scenario in order.

use std::time::Duration;

use analytics_tests::e2e::{now_rfc3339, Stack};
use analytics_tests::{random_type, StubReply};
use chrono::{DateTime, FixedOffset, Utc};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

// ---------------------------------------------------------------- helpers ---

async fn json_body(response: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"));
    (status, headers, body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Asserts an RFC 9457 problem details response with `status`.
fn assert_problem(status: StatusCode, headers: &HeaderMap, body: &Value, expected: u16) {
    assert_eq!(status.as_u16(), expected, "{body}");
    let content_type = header(headers, "content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/problem+json"),
        "content-type {content_type:?}"
    );
    assert_eq!(body["status"], expected, "{body}");
    assert!(body["type"].is_string(), "{body}");
    assert!(body["title"].is_string(), "{body}");
    assert!(body["detail"].is_string(), "{body}");
}

/// The fields named in a 422's `errors` list.
fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("a 422 lists its errors: {body}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `"default";r=2;t=60` → the value of `param` (`r`, `t`, `q`, `w`).
fn structured_param(field: &str, param: &str) -> Option<u64> {
    field
        .split(';')
        .map(str::trim)
        .find_map(|part| part.strip_prefix(&format!("{param}=")))
        .and_then(|v| v.trim().parse().ok())
}

/// A timestamp a few seconds ago (inside every window ending now), written
/// in UTC.
fn recent_utc(seconds_ago: i64) -> String {
    (Utc::now() - chrono::Duration::seconds(seconds_ago))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn metric(metric_type: &str, value: f64) -> Value {
    json!({ "timestamp": recent_utc(2), "value": value, "type": metric_type })
}

async fn summary(stack: &Stack, query: &str) -> (StatusCode, HeaderMap, Value) {
    json_body(stack.get(&format!("/api/metrics/summary?{query}")).await).await
}

fn assert_close(actual: &Value, expected: f64) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{actual} is a number"));
    assert!(
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{actual} != {expected}"
    );
}

// ---------------------------------------------------------- group default ---

#[tokio::test]
#[ignore = "needs the local stack: run make test"]
async fn e2e_default_health_is_ok() {
    let stack = Stack::for_group("default");
    let (status, headers, body) = json_body(stack.get("/health").await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(header(&headers, "content-type")
        .unwrap_or_default()
        .starts_with("application/json"));
    assert_eq!(body["status"], "ok");
    assert_eq!(body["redis"], "healthy");
}

#[tokio::test]
#[ignore = "needs the local stack: run make test"]
async fn e2e_default_post_metric_is_created_with_a_utc_timestamp() {
    let stack = Stack::for_group("default");
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
#[ignore = "needs the local stack: run make test"]
async fn e2e_default_malformed_json_is_400_problem() {
    let stack = Stack::for_group("default");
    for malformed in [r#"{"timestamp": "#, "not json", r#"{"value": 1,}"#] {
        let (status, headers, body) =
            json_body(stack.post_raw("/api/metrics", malformed).await).await;
        assert_problem(status, &headers, &body, 400);
    }
}

#[tokio::test]
#[ignore = "needs the local stack: run make test"]
async fn e2e_default_invalid_metrics_are_422_with_errors() {
    let stack = Stack::for_group("default");
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
#[ignore = "needs the local stack: run make test"]
async fn e2e_default_summary_aggregates_ingested_values() {
    let stack = Stack::for_group("default");
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
}

#[tokio::test]
#[ignore = "needs the local stack: run make test"]
async fn e2e_default_summary_without_data_has_count_zero_and_nulls() {
    let stack = Stack::for_group("default");
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
#[ignore = "needs the local stack: run make test"]
async fn e2e_default_summary_with_missing_or_invalid_parameters_is_422() {
    let stack = Stack::for_group("default");
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

// -------------------------------------------------------- group ratelimit ---

/// One test for the whole group: the quota belongs to 127.0.0.1 for the whole
/// stack, so the steps must run in this order.
#[tokio::test]
#[ignore = "needs the local stack: run make test"]
async fn e2e_ratelimit_small_limit_answers_429_with_headers() {
    let stack = Stack::for_group("ratelimit");
    let limit = stack.setting_u64("RATE_LIMIT_REQUESTS", 5);
    let window = stack.setting_u64("RATE_LIMIT_WINDOW_SECONDS", 60);
    let metric_type = random_type("e2e_limited");

    for i in 0..limit {
        let response = stack
            .post_json("/api/metrics", &metric(&metric_type, i as f64))
            .await;
        let headers = response.headers().clone();
        assert_eq!(response.status(), StatusCode::CREATED, "request {i}");
        let policy = header(&headers, "ratelimit-policy").expect("RateLimit-Policy on a 201");
        assert_eq!(structured_param(policy, "q"), Some(limit), "{policy}");
        assert_eq!(structured_param(policy, "w"), Some(window), "{policy}");
        let state = header(&headers, "ratelimit").expect("RateLimit on a 201");
        assert_eq!(structured_param(state, "r"), Some(limit - 1 - i), "{state}");
    }

    // Over the limit, and garbage counts as well but is not stored.
    let (status, headers, body) = json_body(
        stack
            .post_json("/api/metrics", &metric(&metric_type, 99.0))
            .await,
    )
    .await;
    assert_problem(status, &headers, &body, 429);
    let retry_after: u64 = header(&headers, "retry-after")
        .expect("Retry-After on a 429")
        .parse()
        .expect("Retry-After is an integer number of seconds");
    assert!(
        (1..=window).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    let state = header(&headers, "ratelimit").expect("RateLimit on a 429");
    assert_eq!(structured_param(state, "r"), Some(0), "{state}");
    assert_eq!(structured_param(state, "t"), Some(retry_after), "{state}");
    assert!(header(&headers, "ratelimit-policy").is_some());

    let garbage = stack.post_raw("/api/metrics", "not json").await;
    assert_eq!(garbage.status(), StatusCode::TOO_MANY_REQUESTS);

    // Only the accepted metrics were stored.
    let (status, _, body) = summary(&stack, &format!("type={metric_type}&period=hourly")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the summary is never rate limited: {body}"
    );
    assert_eq!(body["count"], limit, "{body}");

    // /health is never rate limited either.
    let health = stack.get("/health").await;
    assert_eq!(health.status(), StatusCode::OK);
}

// ------------------------------------------------------------ group cache ---

#[tokio::test]
#[ignore = "needs the local stack: run make test"]
async fn e2e_cache_second_identical_request_is_a_hit() {
    let stack = Stack::for_group("cache");
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
#[ignore = "needs the local stack: run make test"]
async fn e2e_cache_concurrent_cold_requests_call_the_source_once() {
    let stack = Stack::for_group("cache");
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

// ---------------------------------------------------------- group breaker ---

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
#[ignore = "needs the local stack: run make test"]
async fn e2e_breaker_failure_fallback_open_recovery() {
    let stack = Stack::for_group("breaker");
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
