//! Who a client is, behind each entry point AWS offers, through the real
//! handlers against the real Redis: API Gateway (REST v1, HTTP API v2) and
//! Function URLs report the address they observed in the request context;
//! an Application Load Balancer only appends it to `X-Forwarded-For`, so
//! behind one `TRUSTED_PROXY_HOPS=1` reads the entry it appended — the
//! right-most, never the left-most the client wrote. A request whose client
//! cannot be told is refused (400, naming `TRUSTED_PROXY_HOPS`), never
//! pooled with other such requests. A known API key is an identity by
//! itself.

use std::sync::Arc;

use analytics_tests::{
    alb, alb_multi_value, body_json, config, config_with_prefix, function_url, http_v2,
    random_prefix, random_type, rest_v1, EventBuilder,
};
use chrono::Utc;
use lambda_http::{Body, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::handlers::{ingest_metric, metrics_series, metrics_summary};
use shared::metric::format_timestamp;
use shared::AppState;

const UNIDENTIFIED: &str = "urn:analytics-api:problem:client-unidentified";

fn state(pairs: &[(&str, &str)]) -> AppState {
    let mut all = vec![
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
    ];
    all.extend_from_slice(pairs);
    AppState::new(config(&all)).unwrap()
}

fn metric(metric_type: &str) -> Value {
    json!({"timestamp": format_timestamp(Utc::now()), "value": 1.0, "type": metric_type})
}

fn post(event: EventBuilder, metric_type: &str) -> lambda_http::Request {
    event.json(&metric(metric_type)).build()
}

/// `r` of the ingest's `RateLimit` field.
fn remaining(response: &Response<Body>) -> u64 {
    let value = response.headers()["ratelimit"].to_str().unwrap();
    let rest = value.strip_prefix("\"default\";r=").unwrap();
    rest.split(';').next().unwrap().parse().unwrap()
}

/// How many metrics of `metric_type` were stored in the last hour (a fresh
/// summary, from a client the state identifies: through API Gateway, or
/// behind as many proxies as it trusts).
async fn stored(state: &AppState, metric_type: &str) -> u64 {
    let reader = "192.0.2.200";
    let event = match state.config.identity.trusted_proxy_hops {
        0 => http_v2("GET", "/api/metrics/summary").source_ip(reader),
        1 => alb("GET", "/api/metrics/summary").source_ip(reader),
        _ => alb("GET", "/api/metrics/summary")
            .header("x-forwarded-for", reader)
            .source_ip("130.176.9.9"),
    };
    let req = event
        .query(&format!("type={metric_type}&period=hourly"))
        .header("cache-control", "no-cache")
        .build();
    let response = metrics_summary(state, req).await;
    let body = body_json(&response);
    assert_eq!(response.status(), 200, "{body}");
    body["count"].as_u64().unwrap()
}

fn assert_unidentified(response: &Response<Body>) {
    let body = body_json(response);
    assert_eq!(response.status(), 400, "{body}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(body["type"], UNIDENTIFIED, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("TRUSTED_PROXY_HOPS"),
        "the problem names the setting to fix: {body}"
    );
    assert!(!response.headers().contains_key("ratelimit"));
}

/// Behind an ALB (`TRUSTED_PROXY_HOPS=1`): two clients have separate quotas
/// in both header modes, and a client writing any `X-Forwarded-For` of its
/// own (even naming the other client) is still itself.
#[tokio::test]
async fn behind_an_alb_each_client_is_the_address_the_alb_appended() {
    let state = state(&[("TRUSTED_PROXY_HOPS", "1"), ("RATE_LIMIT_REQUESTS", "2")]);
    let t = random_type("alb");
    let (a, b) = ("203.0.113.21", "2001:db8:21::7");
    for (i, event) in [
        alb("POST", "/api/metrics"),
        alb_multi_value("POST", "/api/metrics"),
    ]
    .into_iter()
    .enumerate()
    {
        let response = ingest_metric(&state, post(event.source_ip(a), &t)).await;
        assert_eq!(response.status(), 201, "{}", body_json(&response));
        assert_eq!(remaining(&response), 1 - i as u64);
    }
    for spoofed in ["198.51.100.1", b, "garbage, 192.0.2.9"] {
        let event = alb("POST", "/api/metrics")
            .header("x-forwarded-for", spoofed)
            .source_ip(a);
        let response = ingest_metric(&state, post(event, &t)).await;
        assert_eq!(response.status(), 429, "A's spoofed {spoofed:?} stays A");
    }
    // B, behind the same ALB, is untouched by A (an IPv6 client).
    let response = ingest_metric(&state, post(alb("POST", "/api/metrics").source_ip(b), &t)).await;
    assert_eq!(response.status(), 201);
    assert_eq!(remaining(&response), 1);
    assert_eq!(stored(&state, &t).await, 3);
}

/// Behind an ALB with the default `TRUSTED_PROXY_HOPS=0`, or without the
/// entries the setting expects, every route refuses the request (400, the
/// setting named) instead of pooling it: nothing is stored or counted.
#[tokio::test]
async fn an_alb_event_without_the_setting_is_refused_on_every_route() {
    let t = random_type("alb_refused");
    let unset = state(&[]);
    let event = || alb("POST", "/api/metrics").source_ip("203.0.113.22");
    for _ in 0..3 {
        assert_unidentified(&ingest_metric(&unset, post(event(), &t)).await);
    }
    let read = |path: &str, query: &str| {
        alb("GET", path)
            .query(query)
            .source_ip("203.0.113.22")
            .build()
    };
    let summary_query = format!("type={t}&period=hourly");
    assert_unidentified(
        &metrics_summary(&unset, read("/api/metrics/summary", &summary_query)).await,
    );
    let series_query = format!("type={t}&period=hourly&step=5m");
    assert_unidentified(&metrics_series(&unset, read("/api/metrics/series", &series_query)).await);
    assert_eq!(stored(&unset, &t).await, 0);

    // Two hops configured, one ALB in front: too few entries.
    let two = state(&[("TRUSTED_PROXY_HOPS", "2")]);
    assert_unidentified(&ingest_metric(&two, post(event(), &t)).await);
    // The ALB forwards without appending (its `remove` mode): no entry.
    assert_unidentified(
        &ingest_metric(&two, post(alb("POST", "/api/metrics").no_source_ip(), &t)).await,
    );
    assert_eq!(stored(&two, &t).await, 0);
}

/// A CloudFront distribution in front of an ALB (`TRUSTED_PROXY_HOPS=2`): the
/// client is the entry CloudFront appended, the second from the right.
#[tokio::test]
async fn behind_cloudfront_and_an_alb_the_client_is_two_hops_out() {
    let state = state(&[("TRUSTED_PROXY_HOPS", "2"), ("RATE_LIMIT_REQUESTS", "1")]);
    let t = random_type("cf_alb");
    let edge = "130.176.1.10";
    let via_cloudfront = |client: &str, written: Option<&str>| {
        let appended = match written {
            Some(w) => format!("{w}, {client}"),
            None => client.to_string(),
        };
        alb("POST", "/api/metrics")
            .header("x-forwarded-for", &appended)
            .source_ip(edge)
    };
    let first = ingest_metric(&state, post(via_cloudfront("203.0.113.31", None), &t)).await;
    assert_eq!(first.status(), 201);
    let again = ingest_metric(
        &state,
        post(via_cloudfront("203.0.113.31", Some("10.0.0.1")), &t),
    )
    .await;
    assert_eq!(again.status(), 429, "the same client, whatever it wrote");
    let other = ingest_metric(&state, post(via_cloudfront("203.0.113.32", None), &t)).await;
    assert_eq!(other.status(), 201, "another client through the same edge");
    // A garbled entry where CloudFront's should be is refused.
    let garbled = alb("POST", "/api/metrics")
        .header("x-forwarded-for", "203.0.113.31, not-an-ip")
        .source_ip(edge);
    assert_unidentified(&ingest_metric(&state, post(garbled, &t)).await);
}

/// Function URLs report the address they observed and append it to
/// `X-Forwarded-For`: with no proxy in front, the source address is the
/// client and the header is ignored; with CloudFront in front
/// (`TRUSTED_PROXY_HOPS=1`), the entry CloudFront appended is.
#[tokio::test]
async fn function_urls_direct_and_behind_cloudfront() {
    let t = random_type("url");
    let direct = state(&[("RATE_LIMIT_REQUESTS", "1")]);
    let from = |ip: &str, written: &str| {
        function_url("POST", "/api/metrics")
            .header("x-forwarded-for", written)
            .source_ip(ip)
    };
    assert_eq!(
        ingest_metric(&direct, post(from("203.0.113.41", "192.0.2.1"), &t))
            .await
            .status(),
        201
    );
    assert_eq!(
        ingest_metric(&direct, post(from("203.0.113.41", "192.0.2.2"), &t))
            .await
            .status(),
        429,
        "what the client writes in X-Forwarded-For does not make it another client"
    );
    assert_eq!(
        ingest_metric(&direct, post(from("203.0.113.42", "203.0.113.41"), &t))
            .await
            .status(),
        201
    );

    let behind = state(&[("TRUSTED_PROXY_HOPS", "1"), ("RATE_LIMIT_REQUESTS", "1")]);
    let edge = "130.176.2.20";
    let via_edge = |client: &str, written: Option<&str>| {
        let header = match written {
            Some(w) => format!("{w}, {client}"),
            None => client.to_string(),
        };
        function_url("POST", "/api/metrics")
            .header("x-forwarded-for", &header)
            .source_ip(edge)
    };
    assert_eq!(
        ingest_metric(&behind, post(via_edge("203.0.113.43", None), &t))
            .await
            .status(),
        201
    );
    assert_eq!(
        ingest_metric(
            &behind,
            post(via_edge("203.0.113.43", Some("192.0.2.3")), &t)
        )
        .await
        .status(),
        429
    );
    assert_eq!(
        ingest_metric(&behind, post(via_edge("203.0.113.44", None), &t))
            .await
            .status(),
        201
    );
    // Called directly, bypassing the edge: only the URL's own entry.
    assert_unidentified(
        &ingest_metric(
            &behind,
            post(
                function_url("POST", "/api/metrics").source_ip("203.0.113.45"),
                &t,
            ),
        )
        .await,
    );
}

/// API Gateway events (REST v1, HTTP API v2) take the request context's
/// source address with the default setting; the same address in both
/// formats is one client.
#[tokio::test]
async fn api_gateway_events_use_the_request_context() {
    let state = state(&[("RATE_LIMIT_REQUESTS", "2")]);
    let t = random_type("apigw");
    let ip = "198.51.100.51";
    for event in [
        http_v2("POST", "/api/metrics"),
        rest_v1("POST", "/api/metrics"),
    ] {
        let event = event.source_ip(ip).header("x-forwarded-for", "192.0.2.77");
        assert_eq!(ingest_metric(&state, post(event, &t)).await.status(), 201);
    }
    let third = http_v2("POST", "/api/metrics").source_ip(ip);
    assert_eq!(ingest_metric(&state, post(third, &t)).await.status(), 429);
}

/// With `API_KEYS_SHA256` set, a known key is the identity: an ALB event
/// with no trusted hop configured is served and counted under its key.
#[tokio::test]
async fn a_known_api_key_needs_no_address() {
    let key = "gamma-5a1e-test-key";
    let digest: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let state = state(&[("API_KEYS_SHA256", &digest), ("RATE_LIMIT_REQUESTS", "1")]);
    let t = random_type("keyed");
    let keyed = || {
        alb("POST", "/api/metrics")
            .header("x-api-key", key)
            .no_source_ip()
    };
    assert_eq!(ingest_metric(&state, post(keyed(), &t)).await.status(), 201);
    assert_eq!(ingest_metric(&state, post(keyed(), &t)).await.status(), 429);
    let unkeyed = alb("POST", "/api/metrics").source_ip("203.0.113.60");
    assert_eq!(ingest_metric(&state, post(unkeyed, &t)).await.status(), 401);
}

/// 30 concurrent ingests of one client behind an ALB, from 4 independent
/// instances, each with its own `X-Forwarded-For` written by the client:
/// exactly the limit is admitted, as for API Gateway clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_behind_an_alb_from_four_instances_admits_exactly_the_limit() {
    const LIMIT: usize = 4;
    const REQUESTS: usize = 30;
    let prefix = random_prefix();
    let pairs = [
        ("TRUSTED_PROXY_HOPS", "1"),
        ("RATE_LIMIT_REQUESTS", "4"),
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
        ("REDIS_TIMEOUT_MS", "5000"),
        ("REQUEST_DEADLINE_MS", "30000"),
    ];
    let states: Vec<Arc<AppState>> = (0..4)
        .map(|_| Arc::new(AppState::new(config_with_prefix(&prefix, &pairs)).unwrap()))
        .collect();
    let t = random_type("alb_burst");
    let barrier = Arc::new(tokio::sync::Barrier::new(REQUESTS));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let state = Arc::clone(&states[i % states.len()]);
            let barrier = Arc::clone(&barrier);
            let event = alb("POST", "/api/metrics")
                .header("x-forwarded-for", &format!("192.0.2.{i}"))
                .source_ip("203.0.113.70");
            let req = post(event, &t);
            tokio::spawn(async move {
                barrier.wait().await;
                ingest_metric(&state, req).await.status().as_u16()
            })
        })
        .collect();
    let statuses = futures::future::try_join_all(tasks).await.unwrap();
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (accepted, refused),
        (LIMIT, REQUESTS - LIMIT),
        "{statuses:?}"
    );
    assert_eq!(stored(&states[0], &t).await, LIMIT as u64);
}
