//! Idempotent and batch ingestion, in-process against a real Redis.

use analytics_tests::{body_json, config, config_with_prefix, http_v2, random_prefix, random_type};
use chrono::{TimeDelta, Utc};
use lambda_http::{Body, Response};
use serde_json::{json, Value};
use shared::handlers::{ingest_metric, metrics_summary};
use shared::metric::format_timestamp;
use shared::AppState;

const GENEROUS: [(&str, &str); 4] = [
    ("RATE_LIMIT_REQUESTS", "1000000"),
    ("SUMMARY_RATE_LIMIT_REQUESTS", "1000000"),
    ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
    ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
];

fn state() -> AppState {
    AppState::new(config(&GENEROUS)).unwrap()
}

async fn post(state: &AppState, key: Option<&str>, body: &Value, ip: &str) -> Response<Body> {
    let mut event = http_v2("POST", "/api/metrics").json(body).source_ip(ip);
    if let Some(key) = key {
        event = event.header("Idempotency-Key", key);
    }
    ingest_metric(state, event.build()).await
}

async fn count(state: &AppState, t: &str) -> u64 {
    let response = metrics_summary(
        state,
        http_v2("GET", "/api/metrics/summary")
            .query(&format!("type={t}&period=hourly"))
            .header("cache-control", "no-cache")
            .build(),
    )
    .await;
    body_json(&response)["count"].as_u64().unwrap()
}

fn metric(t: &str, value: f64) -> Value {
    json!({"timestamp": format_timestamp(Utc::now()), "value": value, "type": t})
}

#[tokio::test]
async fn a_retry_replays_the_original_response_and_stores_nothing() {
    let state = state();
    let t = random_type("idem");
    let first_body = metric(&t, 1.5);
    let first = post(&state, Some("\"retry-1\""), &first_body, "198.51.100.1").await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    // The same metrics written differently (key order, offset, extra field).
    let ts = chrono::DateTime::parse_from_rfc3339(first_body["timestamp"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap());
    let same = json!({"type": t, "note": "ignored", "value": 1.50, "timestamp": ts.to_rfc3339()});
    let again = post(&state, Some("retry-1"), &same, "198.51.100.1").await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        body_json(&again),
        body_json(&first),
        "same body, same request id"
    );
    assert_eq!(count(&state, &t).await, 1);

    let different = post(&state, Some("retry-1"), &metric(&t, 2.0), "198.51.100.1").await;
    assert_eq!(different.status(), 422);
    assert_eq!(
        body_json(&different)["type"],
        "urn:analytics-api:problem:idempotency-key-reused"
    );
    assert_eq!(count(&state, &t).await, 1);
}

#[tokio::test]
async fn keys_are_scoped_per_client() {
    let state = state();
    let t = random_type("scoped");
    let body = metric(&t, 1.0);
    assert_eq!(
        post(&state, Some("k"), &body, "198.51.100.1")
            .await
            .status(),
        201
    );
    let other = post(&state, Some("k"), &body, "198.51.100.2").await;
    assert_eq!(other.status(), 201);
    assert!(other.headers().get("idempotent-replayed").is_none());
    assert_eq!(count(&state, &t).await, 2);
}

#[tokio::test]
async fn invalid_keys_are_rejected_and_failures_are_not_remembered() {
    let state = state();
    let t = random_type("badkey");
    for key in ["", "\"\"", &"k".repeat(256)] {
        let response = post(&state, Some(key), &metric(&t, 1.0), "198.51.100.1").await;
        assert_eq!(response.status(), 422, "{key:?}");
    }
    // A rejected body under a key does not burn the key.
    let bad = json!({"timestamp": "nope", "value": 1, "type": t});
    assert_eq!(
        post(&state, Some("fix-me"), &bad, "198.51.100.1")
            .await
            .status(),
        422
    );
    assert_eq!(
        post(&state, Some("fix-me"), &metric(&t, 1.0), "198.51.100.1")
            .await
            .status(),
        201
    );
    assert_eq!(count(&state, &t).await, 1);
}

/// Concurrent requests with one key from several instances: exactly one is
/// stored, all are answered 201 (the others as replays).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_store_once() {
    let prefix = random_prefix();
    let states: Vec<AppState> = (0..4)
        .map(|_| AppState::new(config_with_prefix(&prefix, &GENEROUS)).unwrap())
        .collect();
    let t = random_type("race");
    let body = metric(&t, 7.0);
    let responses = futures::future::join_all((0..16).map(|i| {
        let state = &states[i % 4];
        let body = &body;
        async move { post(state, Some("same-key"), body, "198.51.100.9").await }
    }))
    .await;
    assert!(responses.iter().all(|r| r.status() == 201));
    let replays = responses
        .iter()
        .filter(|r| r.headers().get("idempotent-replayed").is_some())
        .count();
    assert_eq!(replays, 15);
    let bodies: Vec<Value> = responses.iter().map(body_json).collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(count(&states[0], &t).await, 1);
}

#[tokio::test]
async fn a_batch_is_stored_whole_or_not_at_all() {
    let state = AppState::new(config(&[
        ("RATE_LIMIT_REQUESTS", "1000000"),
        ("SUMMARY_RATE_LIMIT_REQUESTS", "1000000"),
        ("MAX_BATCH_SIZE", "500"),
    ]))
    .unwrap();
    let (a, b) = (random_type("batch_a"), random_type("batch_b"));
    let now = Utc::now();
    let good: Vec<Value> = (0..500)
        .map(|i| {
            json!({
                "timestamp": format_timestamp(now - TimeDelta::seconds(i)),
                "value": i,
                "type": if i % 2 == 0 { &a } else { &b },
            })
        })
        .collect();
    let response = post(&state, None, &Value::Array(good.clone()), "198.51.100.1").await;
    assert_eq!(response.status(), 201);
    assert_eq!(body_json(&response)["stored"], 500);
    assert_eq!(count(&state, &a).await + count(&state, &b).await, 500);

    // Two invalid items: both listed, nothing of the batch stored.
    let mut bad = good.clone();
    bad[3]["value"] = json!("x");
    bad[400]["type"] = json!("no spaces");
    let response = post(&state, None, &Value::Array(bad), "198.51.100.1").await;
    assert_eq!(response.status(), 422);
    let errors = body_json(&response)["errors"].as_array().unwrap().clone();
    let indexes: Vec<u64> = errors
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [3, 400]);

    // An overflowing sum anywhere in the batch: nothing stored either.
    let c = random_type("overflow");
    let huge: Vec<Value> = vec![metric(&c, 1.0), metric(&c, f64::MAX), metric(&c, f64::MAX)];
    let response = post(&state, None, &Value::Array(huge), "198.51.100.1").await;
    assert_eq!(response.status(), 422);
    // The item whose value makes its bucket overflow is named.
    let errors = body_json(&response)["errors"].clone();
    assert_eq!(errors[0]["index"], 2, "{errors}");
    assert_eq!(errors[0]["field"], "value");
    assert_eq!(count(&state, &c).await, 0);

    let too_many = Value::Array(vec![metric(&a, 1.0); 501]);
    assert_eq!(
        post(&state, None, &too_many, "198.51.100.1").await.status(),
        422
    );
    assert_eq!(
        post(&state, None, &json!([]), "198.51.100.1")
            .await
            .status(),
        422
    );
    assert_eq!(count(&state, &a).await + count(&state, &b).await, 500);
}
