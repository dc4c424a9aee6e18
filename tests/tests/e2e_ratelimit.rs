//! End-to-end test over HTTP, group `ratelimit`: a small limit answers 429
//! with `Retry-After` and the `RateLimit` fields, through `cargo lambda watch`.
//!
//! Run with `cargo test` (everything) or `cargo test -p analytics-tests
//! --test e2e_ratelimit` (this group): the first test starts the group's stack
//! (`cargo lambda watch` on a free port, never 8000, with the settings of
//! [`e2e::RATELIMIT`]), the tests share it, and it stops when this test binary
//! exits. `analytics_tests::e2e` describes the stack; without `cargo-lambda`
//! the tests report `SKIPPED` (or fail with `REQUIRE_E2E=1`).
//!
//! The quota belongs to 127.0.0.1 (the emulator's caller) for the whole
//! stack, so the group is one test that walks through its steps in order.

use analytics_tests::e2e::{
    self, assert_problem, header, json_body, metric, structured_param, summary,
};
use analytics_tests::random_type;
use reqwest::StatusCode;

/// One test for the whole group: the quota belongs to 127.0.0.1 for the whole
/// stack, so the steps must run in this order.
#[tokio::test]
async fn e2e_ratelimit_small_limit_answers_429_with_headers() {
    let Some(stack) = e2e::stack(&e2e::RATELIMIT).await else {
        return;
    };
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
