//! Rate limiting of `POST /api/metrics` through the real handlers: synthetic
//! API Gateway events in-process against the real Redis, each test under its
//! own key prefix.
//!
//! The limiter's own Redis-level behaviour (exactness of each algorithm, TTLs,
//! `SCRIPT FLUSH`) is tested in `rate_limit.rs`; here the question is what a
//! client sees: status codes, `Retry-After`, the `RateLimit-Policy` and
//! `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers-10), which
//! requests count, who counts as one client, and that a refused request
//! stores nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_tests::{
    body_bytes, body_json, config, config_with_prefix, http_v2, random_prefix, random_type,
    rest_v1, EventBuilder,
};
use chrono::Utc;
use lambda_http::{Body, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::handlers::{health, ingest_metric, metrics_summary};
use shared::metric::format_timestamp;
use shared::AppState;

const PROBLEM_JSON: &str = "application/problem+json";
const RATE_LIMITED: &str = "urn:analytics-api:problem:rate-limited";

/// Two API keys the key tests configure (by digest) and present.
const KEY_ALPHA: &str = "alpha-6f1c2a9e-test-key";
const KEY_BETA: &str = "beta-0d4b7e13-test-key";

/// One handler state ("Lambda instance") with `pairs` on top of a simulated
/// external source that answers at once and never fails (summaries here only
/// count what was stored).
fn state(pairs: &[(&str, &str)]) -> AppState {
    AppState::new(config(&with_quiet_source(pairs))).unwrap()
}

fn with_quiet_source<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
    ];
    all.extend_from_slice(pairs);
    all
}

fn metric(metric_type: &str, value: f64) -> Value {
    json!({"timestamp": format_timestamp(Utc::now()), "value": value, "type": metric_type})
}

/// A v2 POST of `body` (a metric) from `ip`.
fn post_from(ip: &str, body: &Value) -> EventBuilder {
    http_v2("POST", "/api/metrics").json(body).source_ip(ip)
}

async fn send(state: &AppState, event: EventBuilder) -> Response<Body> {
    ingest_metric(state, event.build()).await
}

/// How many points of `metric_type` the last hour holds, and their sum,
/// computed afresh (`Cache-Control: no-cache`), presenting `api_key` if given.
async fn stored(state: &AppState, metric_type: &str, api_key: Option<&str>) -> (u64, f64) {
    let mut event = http_v2("GET", "/api/metrics/summary")
        .query(&format!("type={metric_type}&period=hourly"))
        .header("cache-control", "no-cache");
    if let Some(key) = api_key {
        event = event.header("x-api-key", key);
    }
    let response = metrics_summary(state, event.build()).await;
    let body = body_json(&response);
    assert_eq!(response.status(), 200, "summary: {body}");
    (
        body["count"].as_u64().unwrap(),
        body["sum"].as_f64().unwrap(),
    )
}

/// The single value of header `name`, if present; panics when repeated (each
/// of these fields must appear once).
fn single_header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    let mut values = response.headers().get_all(name).iter();
    let first = values.next()?;
    assert!(
        values.next().is_none(),
        "{name} appears more than once: {:?}",
        response.headers()
    );
    Some(first.to_str().unwrap())
}

fn policy(response: &Response<Body>) -> &str {
    single_header(response, "ratelimit-policy").unwrap_or_else(|| {
        panic!(
            "no RateLimit-Policy on a {}: {:?}",
            response.status(),
            response.headers()
        )
    })
}

/// `(r, t)` of the `RateLimit` field, whose syntax must be exactly
/// `"default";r=<int>;t=<int>`.
fn limit_state(response: &Response<Body>) -> (u64, u64) {
    let value = single_header(response, "ratelimit").unwrap_or_else(|| {
        panic!(
            "no RateLimit on a {}: {:?}",
            response.status(),
            response.headers()
        )
    });
    let parse = || -> Option<(u64, u64)> {
        let rest = value.strip_prefix("\"default\";r=")?;
        let (r, t) = rest.split_once(";t=")?;
        Some((r.parse().ok()?, t.parse().ok()?))
    };
    parse().unwrap_or_else(|| panic!("malformed RateLimit field: {value:?}"))
}

fn has_limit_fields(response: &Response<Body>) -> bool {
    response.headers().contains_key("ratelimit")
        || response.headers().contains_key("ratelimit-policy")
}

fn retry_after(response: &Response<Body>) -> u64 {
    single_header(response, "retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on a {}", response.status()))
        .parse()
        .unwrap()
}

/// Asserts that `response` is the limiter's 429: a problem body, `Retry-After`
/// ≥ 1 equal to `t` of `RateLimit`, `r` = 0, and `policy`. Returns the
/// `Retry-After`, seconds.
fn assert_limited(response: &Response<Body>, expected_policy: &str) -> u64 {
    let body = body_json(response);
    assert_eq!(response.status(), 429, "{body}");
    assert_eq!(single_header(response, "content-type"), Some(PROBLEM_JSON));
    assert_eq!(body["type"], RATE_LIMITED, "{body}");
    assert_eq!(body["status"], 429, "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    let retry = retry_after(response);
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(policy(response), expected_policy);
    assert_eq!(
        limit_state(response),
        (0, retry),
        "RateLimit must say r=0 and t=Retry-After"
    );
    retry
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The brief's scenario with limit 5 per 2 s (sliding log, the default): the
/// 201s count `r` down 4..0, the 6th is a 429 whose `Retry-After` equals `t`,
/// it stores nothing, further refusals do not extend the block, and a retry
/// after `Retry-After` seconds is accepted.
#[tokio::test]
async fn the_quota_counts_down_then_429_then_a_retry_after_waiting_succeeds() {
    let state = state(&[
        ("RATE_LIMIT_REQUESTS", "5"),
        ("RATE_LIMIT_WINDOW_SECONDS", "2"),
    ]);
    let policy_value = "\"default\";q=5;w=2";
    let t = random_type("quota");
    let ip = "203.0.113.7";
    for i in 0..5u64 {
        let response = send(&state, post_from(ip, &metric(&t, i as f64))).await;
        assert_eq!(response.status(), 201, "{}", body_json(&response));
        assert_eq!(policy(&response), policy_value);
        let (r, reset) = limit_state(&response);
        assert_eq!(r, 4 - i, "request {i}");
        assert!((1..=2).contains(&reset), "t={reset} on request {i}");
        assert!(single_header(&response, "retry-after").is_none());
    }

    let refused = send(&state, post_from(ip, &metric(&t, 1000.0))).await;
    let refused_at = Instant::now();
    let retry = assert_limited(&refused, policy_value);
    assert!(retry <= 2, "Retry-After {retry} exceeds the 2 s window");
    assert_eq!(
        stored(&state, &t, None).await,
        (5, 10.0),
        "the refused metric must not be stored"
    );

    // Refusals while blocked neither store nor push the block further out.
    for _ in 0..3 {
        let again = send(&state, post_from(ip, &metric(&t, 2000.0))).await;
        assert!(assert_limited(&again, policy_value) <= retry);
    }
    tokio::time::sleep_until((refused_at + Duration::from_secs(retry)).into()).await;
    let accepted = send(&state, post_from(ip, &metric(&t, 5.0))).await;
    assert_eq!(accepted.status(), 201, "{}", body_json(&accepted));
    assert_eq!(policy(&accepted), policy_value);
    assert_eq!(stored(&state, &t, None).await, (6, 15.0));
}

/// The same countdown under each algorithm with a window long enough that
/// nothing refills during the test: `r` counts down, the 429's `Retry-After`
/// equals `t`, and the refused metric is not stored.
#[tokio::test]
async fn every_algorithm_counts_down_and_refuses_with_matching_fields() {
    for algorithm in ["sliding_log", "sliding_window_counter", "token_bucket"] {
        let state = state(&[
            ("RATE_LIMIT_ALGORITHM", algorithm),
            ("RATE_LIMIT_REQUESTS", "4"),
            ("RATE_LIMIT_WINDOW_SECONDS", "600"),
        ]);
        let policy_value = "\"default\";q=4;w=600";
        let t = random_type("algo");
        for i in 0..4u64 {
            let response = send(&state, post_from("198.51.100.4", &metric(&t, 1.0))).await;
            assert_eq!(response.status(), 201, "{algorithm}");
            assert_eq!(policy(&response), policy_value, "{algorithm}");
            let (r, reset) = limit_state(&response);
            assert_eq!(r, 3 - i, "{algorithm}: request {i}");
            // The counter's `r` can rise only once the current fixed window
            // has become the previous one and faded: up to two windows.
            assert!((1..=1200).contains(&reset), "{algorithm}: t={reset}");
        }
        let refused = send(&state, post_from("198.51.100.4", &metric(&t, 1.0))).await;
        let retry = assert_limited(&refused, policy_value);
        assert!(retry <= 1200, "{algorithm}: Retry-After {retry}");
        assert_eq!(stored(&state, &t, None).await, (4, 4.0), "{algorithm}");
    }
}

/// Every POST counts, whatever its body: malformed JSON (400), invalid metrics
/// (422) and oversized bodies (413) use up quota and carry the fields, and
/// once the quota is gone every body, garbage or valid, is refused with 429
/// and nothing of it is stored.
#[tokio::test]
async fn every_post_counts_and_garbage_floods_are_refused() {
    let state = state(&[
        ("RATE_LIMIT_REQUESTS", "5"),
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
        ("MAX_BODY_BYTES", "1024"),
    ]);
    let policy_value = "\"default\";q=5;w=600";
    let t = random_type("garbage");
    let ip = "192.0.2.77";
    let now = format_timestamp(Utc::now());
    let oversized = "x".repeat(4096);
    let bodies: Vec<(String, u16)> = vec![
        ("{not json".into(), 400),
        (String::new(), 400),
        (
            json!({"timestamp": now, "value": "high", "type": t}).to_string(),
            422,
        ),
        (oversized.clone(), 413),
        (metric(&t, 7.0).to_string(), 201),
    ];
    for (i, (body, expected)) in bodies.iter().enumerate() {
        let response = send(
            &state,
            http_v2("POST", "/api/metrics").body(body).source_ip(ip),
        )
        .await;
        assert_eq!(
            response.status().as_u16(),
            *expected,
            "{body:.40}: {}",
            body_json(&response)
        );
        assert_eq!(policy(&response), policy_value, "{body:.40}");
        assert_eq!(limit_state(&response).0, 4 - i as u64, "{body:.40}");
    }

    // The flood: bodies that would be 400, 413, 422 and 201 are all 429 now.
    let flood = [
        "{not json".to_string(),
        oversized,
        json!({"value": null}).to_string(),
        metric(&t, 8.0).to_string(),
    ];
    for _ in 0..10 {
        for body in &flood {
            let response = send(
                &state,
                http_v2("POST", "/api/metrics").body(body).source_ip(ip),
            )
            .await;
            assert_limited(&response, policy_value);
        }
    }
    assert_eq!(stored(&state, &t, None).await, (1, 7.0));
}

/// Idempotent replays are requests too: each one uses quota and carries the
/// fields, and once the quota is gone a replay is refused like anything else.
#[tokio::test]
async fn idempotent_replays_count_against_the_quota() {
    let state = state(&[
        ("RATE_LIMIT_REQUESTS", "4"),
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
    ]);
    let policy_value = "\"default\";q=4;w=600";
    let t = random_type("replays");
    let body = metric(&t, 3.5);
    let replay = || post_from("198.51.100.77", &body).header("idempotency-key", "replay-me-0001");
    for i in 0..4u64 {
        let response = send(&state, replay()).await;
        assert_eq!(response.status(), 201, "{}", body_json(&response));
        assert_eq!(
            single_header(&response, "idempotent-replayed").is_some(),
            i > 0,
            "request {i}"
        );
        assert_eq!(policy(&response), policy_value);
        assert_eq!(limit_state(&response).0, 3 - i, "request {i}");
    }
    let refused = send(&state, replay()).await;
    assert_limited(&refused, policy_value);
    assert!(single_header(&refused, "idempotent-replayed").is_none());
    assert_eq!(stored(&state, &t, None).await, (1, 3.5));
}

/// `/health` and `GET /api/metrics/summary` neither consume the POST quota
/// nor are refused once it is exhausted (summaries have a quota of their
/// own, which cache hits do not spend).
#[tokio::test]
async fn health_and_summary_do_not_spend_the_ingest_quota() {
    let state = state(&[
        ("RATE_LIMIT_REQUESTS", "2"),
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
    ]);
    let ip = "203.0.113.99";
    let t = random_type("reads");
    let query = format!("type={t}&period=hourly");
    let reads = |n: usize| {
        let state = &state;
        let query = query.clone();
        async move {
            for i in 0..n {
                let h = health(state, http_v2("GET", "/health").source_ip(ip).build()).await;
                assert_eq!(h.status(), 200, "health #{i}: {}", body_json(&h));
                let v1 = rest_v1("GET", "/api/metrics/summary")
                    .query(&query)
                    .source_ip(ip)
                    .build();
                let v2 = http_v2("GET", "/api/metrics/summary")
                    .query(&query)
                    .source_ip(ip)
                    .build();
                for req in [v1, v2] {
                    let s = metrics_summary(state, req).await;
                    assert_eq!(s.status(), 200, "summary #{i}: {}", body_json(&s));
                }
            }
        }
    };
    reads(10).await;
    for expected_r in [1, 0] {
        let response = send(&state, post_from(ip, &metric(&t, 1.0))).await;
        assert_eq!(response.status(), 201, "reads must not use the POST quota");
        assert_eq!(limit_state(&response).0, expected_r);
    }
    assert_limited(
        &send(&state, post_from(ip, &metric(&t, 1.0))).await,
        "\"default\";q=2;w=600",
    );
    reads(25).await;
    assert_eq!(stored(&state, &t, None).await, (2, 2.0));
}

/// Without API keys a client is the source IP API Gateway observed: two IPs
/// have separate quotas, and headers the client writes (`X-Forwarded-For`,
/// `X-Real-IP`, `Forwarded`, ...) neither escape the limit nor spend someone
/// else's quota.
#[tokio::test]
async fn source_ips_have_independent_quotas_and_forwarding_headers_do_not_bypass() {
    let state = state(&[
        ("RATE_LIMIT_REQUESTS", "3"),
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
    ]);
    let policy_value = "\"default\";q=3;w=600";
    let t = random_type("ips");
    let (a, b, c) = ("203.0.113.7", "198.51.100.23", "192.0.2.50");

    for expected_r in [2, 1, 0] {
        let response = send(&state, post_from(a, &metric(&t, 1.0))).await;
        assert_eq!(response.status(), 201);
        assert_eq!(limit_state(&response).0, expected_r);
    }
    assert_limited(
        &send(&state, post_from(a, &metric(&t, 1.0))).await,
        policy_value,
    );

    // B is untouched by A's exhaustion.
    for expected_r in [2, 1, 0] {
        let response = send(&state, post_from(b, &metric(&t, 2.0))).await;
        assert_eq!(response.status(), 201, "B has its own quota");
        assert_eq!(limit_state(&response).0, expected_r);
    }
    assert_limited(
        &send(&state, post_from(b, &metric(&t, 2.0))).await,
        policy_value,
    );

    // A rotates every header a client could use to claim another address,
    // including C's, on both payload formats.
    for i in 0..20 {
        let spoofed = format!("192.0.2.{}", 100 + i);
        for event in [
            http_v2("POST", "/api/metrics"),
            rest_v1("POST", "/api/metrics"),
        ] {
            let event = event
                .json(&metric(&t, 3.0))
                .source_ip(a)
                .header("x-forwarded-for", &format!("{spoofed}, {c}"))
                .header("x-real-ip", if i % 2 == 0 { c } else { &spoofed })
                .header("forwarded", &format!("for={spoofed}"))
                .header("true-client-ip", &spoofed)
                .header("cf-connecting-ip", &spoofed)
                .header("x-client-ip", &spoofed);
            assert_limited(&send(&state, event).await, policy_value);
        }
    }
    // None of that was charged to C.
    for expected_r in [2, 1, 0] {
        let response = send(&state, post_from(c, &metric(&t, 4.0))).await;
        assert_eq!(response.status(), 201, "C's quota was not touched");
        assert_eq!(limit_state(&response).0, expected_r);
    }
    assert_eq!(stored(&state, &t, None).await, (9, 3.0 + 6.0 + 12.0));
}

/// An IPv6 client is its /64 network (one subscriber's allocation), and a
/// request without any source address is refused (400, naming
/// `TRUSTED_PROXY_HOPS`) instead of sharing a bucket with every other such
/// request; forwarding headers do not stand in for the address.
#[tokio::test]
async fn ipv6_networks_are_one_client_and_requests_without_an_address_are_refused() {
    let state = state(&[
        ("RATE_LIMIT_REQUESTS", "2"),
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
    ]);
    let policy_value = "\"default\";q=2;w=600";
    let t = random_type("v6");
    for ip in ["2001:db8:5:6::1", "2001:db8:5:6:ffff::2"] {
        assert_eq!(
            send(&state, post_from(ip, &metric(&t, 1.0))).await.status(),
            201
        );
    }
    assert_limited(
        &send(&state, post_from("2001:db8:5:6:1:2:3:4", &metric(&t, 1.0))).await,
        policy_value,
    );
    assert_eq!(
        send(&state, post_from("2001:db8:5:7::1", &metric(&t, 1.0)))
            .await
            .status(),
        201,
        "another /64 is another client"
    );

    let anonymous = |n: usize| {
        http_v2("POST", "/api/metrics")
            .json(&metric(&t, 1.0))
            .no_source_ip()
            .header("x-forwarded-for", &format!("192.0.2.{n}"))
    };
    for event in [
        anonymous(0),
        anonymous(1),
        rest_v1("POST", "/api/metrics")
            .json(&metric(&t, 1.0))
            .no_source_ip(),
        http_v2("POST", "/api/metrics")
            .json(&metric(&t, 1.0))
            .source_ip("not-an-address"),
    ] {
        let response = send(&state, event).await;
        assert_eq!(response.status(), 400);
        assert_eq!(single_header(&response, "content-type"), Some(PROBLEM_JSON));
        let body = body_json(&response);
        assert_eq!(
            body["type"],
            "urn:analytics-api:problem:client-unidentified"
        );
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("TRUSTED_PROXY_HOPS"),
            "{body}"
        );
        assert!(!has_limit_fields(&response), "refused before the limiter");
    }
    assert_eq!(
        stored(&state, &t, None).await,
        (3, 3.0),
        "nothing was stored"
    );
}

/// REST API v1 events and HTTP API v2 events from one IP are one client.
#[tokio::test]
async fn rest_v1_and_http_v2_events_from_one_ip_share_a_quota() {
    let state = state(&[
        ("RATE_LIMIT_REQUESTS", "4"),
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
    ]);
    let policy_value = "\"default\";q=4;w=600";
    let t = random_type("formats");
    let ip = "198.51.100.60";
    for (i, v1) in [false, true, false, true].into_iter().enumerate() {
        let event = if v1 {
            rest_v1("POST", "/api/metrics")
        } else {
            http_v2("POST", "/api/metrics")
        };
        let response = send(&state, event.json(&metric(&t, 1.0)).source_ip(ip)).await;
        assert_eq!(response.status(), 201, "{}", body_json(&response));
        assert_eq!(policy(&response), policy_value);
        assert_eq!(limit_state(&response).0, 3 - i as u64);
    }
    for event in [
        rest_v1("POST", "/api/metrics"),
        http_v2("POST", "/api/metrics"),
    ] {
        assert_limited(
            &send(&state, event.json(&metric(&t, 1.0)).source_ip(ip)).await,
            policy_value,
        );
    }
    assert_eq!(stored(&state, &t, None).await, (4, 4.0));
}

/// Asserts that neither a key nor its digest appears in `response`.
fn assert_no_key_echo(response: &Response<Body>, keys: &[&str]) {
    let body = String::from_utf8_lossy(body_bytes(response)).to_lowercase();
    for key in keys {
        let secrets = [key.to_lowercase(), sha256_hex(key)];
        for secret in &secrets {
            assert!(!body.contains(secret.as_str()), "body echoes a key: {body}");
            for (name, value) in response.headers() {
                let value = String::from_utf8_lossy(value.as_bytes()).to_lowercase();
                assert!(
                    !value.contains(secret.as_str()),
                    "header {name} echoes a key: {value}"
                );
            }
        }
    }
}

/// With `API_KEYS_SHA256` set: POST and summary need a listed key (401
/// problem otherwise), health does not; each key is one client whatever its
/// address, two keys have separate quotas even from one IP, refused keys
/// consume nobody's quota, and no response echoes a key.
#[tokio::test]
async fn api_keys_gate_ingest_and_summary_and_each_key_has_its_own_quota() {
    let digests = format!("{},{}", sha256_hex(KEY_ALPHA), sha256_hex(KEY_BETA));
    let state = state(&[
        ("API_KEYS_SHA256", &digests),
        ("RATE_LIMIT_REQUESTS", "2"),
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
    ]);
    let policy_value = "\"default\";q=2;w=600";
    let t = random_type("keys");
    let query = format!("type={t}&period=hourly");
    let wrong = "gamma-not-a-listed-key";
    let all_keys = [KEY_ALPHA, KEY_BETA, wrong];
    let ip = "203.0.113.7";
    let with_key = |event: EventBuilder, key: Option<&str>| match key {
        Some(k) => event.header("x-api-key", k),
        None => event,
    };

    let health_response = health(&state, http_v2("GET", "/health").source_ip(ip).build()).await;
    assert_eq!(health_response.status(), 200, "health needs no key");

    // Presenting a listed digest instead of the key must not work either.
    let alpha_digest = sha256_hex(KEY_ALPHA);
    let refused_keys = [
        None,
        Some(""),
        Some(wrong),
        Some(&KEY_ALPHA[1..]),
        Some(alpha_digest.as_str()),
    ];
    for _ in 0..3 {
        for key in refused_keys {
            for post in [
                with_key(post_from(ip, &metric(&t, 99.0)), key),
                with_key(
                    rest_v1("POST", "/api/metrics")
                        .json(&metric(&t, 99.0))
                        .source_ip(ip),
                    key,
                ),
            ] {
                let response = send(&state, post).await;
                let body = body_json(&response);
                assert_eq!(response.status(), 401, "POST with {key:?}: {body}");
                assert_eq!(single_header(&response, "content-type"), Some(PROBLEM_JSON));
                assert_eq!(body["status"], 401);
                assert_eq!(body["type"], "urn:analytics-api:problem:unauthorized");
                assert!(
                    !has_limit_fields(&response),
                    "a 401 never reached the limiter"
                );
                assert_no_key_echo(&response, &all_keys);
            }
            let summary = metrics_summary(
                &state,
                with_key(http_v2("GET", "/api/metrics/summary").query(&query), key).build(),
            )
            .await;
            assert_eq!(summary.status(), 401, "summary with {key:?}");
            assert_eq!(body_json(&summary)["status"], 401);
            assert_no_key_echo(&summary, &all_keys);
        }
    }

    // Alpha from one address, then from others: one client.
    for expected_r in [1, 0] {
        let response = send(
            &state,
            with_key(post_from(ip, &metric(&t, 1.0)), Some(KEY_ALPHA)),
        )
        .await;
        assert_eq!(response.status(), 201, "refused keys used no quota");
        assert_eq!(limit_state(&response).0, expected_r);
        assert_no_key_echo(&response, &all_keys);
    }
    for other_ip in ["198.51.100.1", "2001:db8::1"] {
        let response = send(
            &state,
            with_key(post_from(other_ip, &metric(&t, 1.0)), Some(KEY_ALPHA)),
        )
        .await;
        assert_limited(&response, policy_value);
        assert_no_key_echo(&response, &all_keys);
    }
    // Beta from Alpha's address: its own quota.
    for expected_r in [1, 0] {
        let response = send(
            &state,
            with_key(post_from(ip, &metric(&t, 10.0)), Some(KEY_BETA)),
        )
        .await;
        assert_eq!(response.status(), 201, "Beta has its own quota");
        assert_eq!(limit_state(&response).0, expected_r);
        assert_no_key_echo(&response, &all_keys);
    }
    let response = send(
        &state,
        with_key(
            rest_v1("POST", "/api/metrics")
                .json(&metric(&t, 10.0))
                .source_ip(ip),
            Some(KEY_BETA),
        ),
    )
    .await;
    assert_limited(&response, policy_value);
    assert_no_key_echo(&response, &all_keys);

    // Reads with a key still work once both quotas are gone.
    let health_response = health(&state, http_v2("GET", "/health").build()).await;
    assert_eq!(health_response.status(), 200);
    for key in [KEY_ALPHA, KEY_BETA] {
        assert_eq!(stored(&state, &t, Some(key)).await, (4, 22.0));
        let summary = metrics_summary(
            &state,
            http_v2("GET", "/api/metrics/summary")
                .query(&query)
                .header("x-api-key", key)
                .build(),
        )
        .await;
        assert_eq!(summary.status(), 200);
        assert_no_key_echo(&summary, &all_keys);
    }
}

/// 50 concurrent POSTs of one client spread over 4 independent handler states
/// (4 Lambda instances, each its own connection) sharing one deployment's
/// keys, on a multi-thread runtime: exactly `RATE_LIMIT_REQUESTS` are 201,
/// the rest 429, the `r` values of the 201s are each of `limit-1 ..= 0` once
/// (the checks were serialised), and exactly the accepted metrics are stored.
///
/// With `warm`, every instance has registered the metric type before the
/// burst (one ingest from another client each), so each request is checked
/// and stored by one script call on a single node; without, the type is new
/// to every instance, and each request takes the limiter's call first, then
/// the registry's claim and the storage call.
async fn concurrent_burst_admits_exactly_the_limit(algorithm: &str, warm: bool) {
    const LIMIT: usize = 7;
    const REQUESTS: usize = 50;
    let prefix = random_prefix();
    let limit = LIMIT.to_string();
    let pairs = with_quiet_source(&[
        ("RATE_LIMIT_ALGORITHM", algorithm),
        ("RATE_LIMIT_REQUESTS", &limit),
        // Long enough that nothing refills during the burst.
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
        // Generous bounds: this is about exactness, not speed, and the
        // machine may be busy with other tests.
        ("REDIS_TIMEOUT_MS", "5000"),
        ("REQUEST_DEADLINE_MS", "30000"),
    ]);
    let states: Vec<Arc<AppState>> = (0..4)
        .map(|_| Arc::new(AppState::new(config_with_prefix(&prefix, &pairs)).unwrap()))
        .collect();
    let t = random_type("burst");
    let mut warm_sum = 0.0;
    if warm {
        for (i, state) in states.iter().enumerate() {
            let ip = format!("203.0.113.{}", 60 + i);
            let response = send(state, post_from(&ip, &metric(&t, 0.5))).await;
            assert_eq!(response.status(), 201, "{}", body_json(&response));
            warm_sum += 0.5;
        }
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(REQUESTS));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let state = Arc::clone(&states[i % states.len()]);
            let barrier = Arc::clone(&barrier);
            let req = post_from("203.0.113.50", &metric(&t, (i + 1) as f64)).build();
            tokio::spawn(async move {
                barrier.wait().await;
                ingest_metric(&state, req).await
            })
        })
        .collect();
    let responses = futures::future::try_join_all(tasks).await.unwrap();

    let policy_value = format!("\"default\";q={LIMIT};w=600");
    let mut remaining = Vec::new();
    let mut accepted_sum = 0.0;
    let mut refused = 0;
    for response in &responses {
        match response.status().as_u16() {
            201 => {
                assert_eq!(policy(response), policy_value, "{algorithm}");
                remaining.push(limit_state(response).0);
                accepted_sum += body_json(response)["metric"]["value"].as_f64().unwrap();
            }
            429 => {
                assert_limited(response, &policy_value);
                refused += 1;
            }
            other => panic!("{algorithm}: unexpected {other}: {}", body_json(response)),
        }
    }
    assert_eq!(remaining.len(), LIMIT, "{algorithm}: accepted");
    assert_eq!(refused, REQUESTS - LIMIT, "{algorithm}: refused");
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..LIMIT as u64).collect::<Vec<_>>(),
        "{algorithm}: r values"
    );
    let warmed = if warm { states.len() as u64 } else { 0 };
    assert_eq!(
        stored(&states[3], &t, None).await,
        (LIMIT as u64 + warmed, accepted_sum + warm_sum),
        "{algorithm}: exactly the accepted metrics are stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_burst_from_four_instances_sliding_log() {
    concurrent_burst_admits_exactly_the_limit("sliding_log", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_burst_of_a_known_type_from_four_instances_sliding_log() {
    concurrent_burst_admits_exactly_the_limit("sliding_log", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_burst_from_four_instances_sliding_window_counter() {
    concurrent_burst_admits_exactly_the_limit("sliding_window_counter", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_burst_of_a_known_type_from_four_instances_sliding_window_counter() {
    concurrent_burst_admits_exactly_the_limit("sliding_window_counter", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_burst_from_four_instances_token_bucket() {
    concurrent_burst_admits_exactly_the_limit("token_bucket", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_burst_of_a_known_type_from_four_instances_token_bucket() {
    concurrent_burst_admits_exactly_the_limit("token_bucket", true).await;
}

/// With nothing listening on the Redis port, a POST is a 503 problem with
/// `Retry-After` from the limiter's failed call — not a 400 for a bad body
/// (the limiter runs first), not a wait for the request deadline, and without
/// `RateLimit` fields, since no limiter state was read.
#[tokio::test]
async fn redis_unavailable_is_a_quick_503_with_retry_after() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("redis://127.0.0.1:{port}/0");
    let state = state(&[
        ("REDIS_URL", &url),
        ("REDIS_TIMEOUT_MS", "500"),
        // Far above the Redis bound, so a 503 that arrives well before it
        // comes from the Redis error itself.
        ("REQUEST_DEADLINE_MS", "20000"),
    ]);
    let t = random_type("down");
    for body in [metric(&t, 1.0).to_string(), "{not json".to_string()] {
        for _ in 0..2 {
            let started = Instant::now();
            let response = send(
                &state,
                http_v2("POST", "/api/metrics")
                    .body(&body)
                    .source_ip("203.0.113.7"),
            )
            .await;
            let elapsed = started.elapsed();
            let problem = body_json(&response);
            assert_eq!(response.status(), 503, "{problem}");
            assert_eq!(single_header(&response, "content-type"), Some(PROBLEM_JSON));
            assert_eq!(problem["status"], 503);
            assert_eq!(
                problem["detail"], "the data store is temporarily unavailable",
                "the Redis error, not the deadline: {problem}"
            );
            assert!(retry_after(&response) >= 1);
            assert!(!has_limit_fields(&response), "{:?}", response.headers());
            // A bound, not a benchmark: 2 × REDIS_TIMEOUT_MS plus slack,
            // far below the 20 s deadline.
            assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        }
    }
}
