//! The client against a tiny local HTTP server on 127.0.0.1 whose answers
//! each test scripts (429/503 with `Retry-After`, object-only servers,
//! summaries), so retries, fallbacks and the whole run are exercised over
//! real HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

use crate::app::run;
use crate::cli::Args;
use crate::client::{ApiClient, ClientError, SendMode};
use crate::payload::{Metric, Reading};
use crate::retry::RetryPolicy;

/// One request the stub received.
#[derive(Debug, Clone)]
struct Seen {
    idempotency_key: Option<String>,
    api_key: Option<String>,
    body: Value,
}

/// One summary request the stub received.
#[derive(Debug, Clone)]
struct SummaryQuery {
    query: HashMap<String, String>,
    cache_control: Option<String>,
}

/// The stub's answer to the `n`-th POST (0-based) with this body.
type Respond =
    dyn Fn(usize, &Value) -> (u16, Vec<(&'static str, &'static str)>, Value) + Send + Sync;

struct Stub {
    respond: Box<Respond>,
    /// How long the first POST waits before answering (to provoke a client timeout).
    first_post_delay: Duration,
    posts: Mutex<Vec<Seen>>,
    summaries: Mutex<Vec<SummaryQuery>>,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn post_metrics(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = {
        let mut posts = stub.posts.lock().expect("lock");
        posts.push(Seen {
            idempotency_key: header(&headers, "idempotency-key"),
            api_key: header(&headers, "x-api-key"),
            body: body.clone(),
        });
        posts.len() - 1
    };
    if n == 0 {
        tokio::time::sleep(stub.first_post_delay).await;
    }
    let (status, extra, reply) = (stub.respond)(n, &body);
    let mut response = (
        StatusCode::from_u16(status).expect("valid status"),
        Json(reply),
    )
        .into_response();
    for (name, value) in extra {
        response
            .headers_mut()
            .insert(name, value.parse().expect("valid header value"));
    }
    response
}

async fn summary(
    State(stub): State<Arc<Stub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let kind = query.get("type").cloned().unwrap_or_default();
    let host = query.get("tag.host").cloned();
    stub.summaries.lock().expect("lock").push(SummaryQuery {
        query,
        cache_control: header(&headers, "cache-control"),
    });
    let mut summary = json!({
        "type": kind, "period": "hourly",
        "window": {"from": "2026-02-18T11:01:00Z", "to": "2026-02-18T12:01:00Z"},
        "count": 2, "average_value": 15.0, "min_value": 10.0, "max_value": 20.0, "sum": 30.0,
        "external_data": {"status": "fallback"}
    });
    if let Some(host) = host {
        summary["filters"] = json!({"host": host});
    }
    Json(summary)
}

/// Starts a stub on a free loopback port; returns its base URL and state.
async fn start_stub(
    respond: impl Fn(usize, &Value) -> (u16, Vec<(&'static str, &'static str)>, Value)
        + Send
        + Sync
        + 'static,
) -> (String, Arc<Stub>) {
    start_slow_stub(Duration::ZERO, respond).await
}

/// Like [`start_stub`], but the first POST is answered only after `delay`.
async fn start_slow_stub(
    delay: Duration,
    respond: impl Fn(usize, &Value) -> (u16, Vec<(&'static str, &'static str)>, Value)
        + Send
        + Sync
        + 'static,
) -> (String, Arc<Stub>) {
    let stub = Arc::new(Stub {
        respond: Box::new(respond),
        first_post_delay: delay,
        posts: Mutex::new(Vec::new()),
        summaries: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/api/metrics", post(post_metrics))
        .route("/api/metrics/summary", get(summary))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), stub)
}

fn created() -> (u16, Vec<(&'static str, &'static str)>, Value) {
    (201, vec![], json!({"stored": 2}))
}

fn policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        max_wait: Duration::from_secs(5),
        base_backoff: Duration::from_millis(10),
    }
}

fn client(base: &str, max_retries: u32) -> ApiClient {
    ApiClient::new(
        base,
        Some("test-key".into()),
        Duration::from_secs(5),
        policy(max_retries),
    )
    .expect("client")
}

fn metrics() -> Vec<Metric> {
    Reading {
        at: Utc::now(),
        cpu_usage: 12.5,
        memory_used_percent: 40.0,
    }
    .metrics("web-7")
}

fn posts(stub: &Stub) -> Vec<Seen> {
    stub.posts.lock().expect("lock").clone()
}

#[tokio::test]
async fn retries_after_429_with_the_same_idempotency_key() {
    let (base, stub) = start_stub(|n, _| match n {
        0 => (429, vec![("retry-after", "1")], json!({"status": 429})),
        _ => created(),
    })
    .await;
    let mut mode = SendMode::Batch;
    let started = Instant::now();
    let delivery = client(&base, 3)
        .send_metrics(&metrics(), &mut mode)
        .await
        .expect("stored");
    // Retry-After: 1 is honoured: the retry does not come sooner.
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(delivery.mode, SendMode::Batch);
    assert_eq!(delivery.answers.len(), 1);
    assert_eq!(delivery.answers[0].status, 201);
    assert_eq!(delivery.answers[0].attempts, 2);

    let seen = posts(&stub);
    assert_eq!(seen.len(), 2);
    let key = seen[0]
        .idempotency_key
        .clone()
        .expect("idempotency key sent");
    assert_eq!(seen[1].idempotency_key.as_deref(), Some(key.as_str()));
    let uuid = key.trim_matches('"');
    assert_eq!(
        key.len(),
        uuid.len() + 2,
        "sent as a structured-field string"
    );
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{key}");
    assert_eq!(seen[0].api_key.as_deref(), Some("test-key"));
    assert_eq!(seen[0].body, seen[1].body);
    let batch = seen[0].body.as_array().expect("an array");
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0]["type"], "cpu_usage");
    assert_eq!(batch[1]["type"], "memory_used_percent");
}

#[tokio::test]
async fn retries_after_503_then_succeeds() {
    let (base, stub) = start_stub(|n, _| match n {
        0 | 1 => (503, vec![("retry-after", "1")], json!({"status": 503})),
        _ => created(),
    })
    .await;
    let mut mode = SendMode::Batch;
    let delivery = client(&base, 3)
        .send_metrics(&metrics(), &mut mode)
        .await
        .expect("stored");
    assert_eq!(delivery.answers[0].attempts, 3);
    let keys: Vec<_> = posts(&stub)
        .into_iter()
        .map(|s| s.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.is_some() && *k == keys[0]));
}

#[tokio::test]
async fn retries_a_timed_out_request_with_the_same_key() {
    let (base, stub) = start_slow_stub(Duration::from_secs(2), |_, _| created()).await;
    let client =
        ApiClient::new(&base, None, Duration::from_millis(300), policy(3)).expect("client");
    let mut mode = SendMode::Batch;
    let delivery = client
        .send_metrics(&metrics(), &mut mode)
        .await
        .expect("stored");
    assert_eq!(delivery.answers[0].attempts, 2);
    let seen = posts(&stub);
    assert_eq!(seen.len(), 2);
    assert!(seen[0].idempotency_key.is_some());
    assert_eq!(seen[0].idempotency_key, seen[1].idempotency_key);
    assert_eq!(seen[0].body, seen[1].body);
}

#[tokio::test]
async fn gives_up_when_503_persists() {
    let (base, stub) = start_stub(|_, _| (503, vec![], json!({"status": 503}))).await;
    let mut mode = SendMode::Batch;
    let err = client(&base, 2)
        .send_metrics(&metrics(), &mut mode)
        .await
        .expect_err("never stored");
    assert!(
        matches!(err, ClientError::GaveUp { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(posts(&stub).len(), 3);
}

#[tokio::test]
async fn falls_back_to_objects_when_arrays_are_refused() {
    let (base, stub) = start_stub(|_, body| {
        if body.is_array() {
            let problem = json!({
                "type": "urn:analytics-api:problem:validation-failed", "status": 422,
                "errors": [{"field": "body", "reason": "expected a JSON object"}]
            });
            (422, vec![], problem)
        } else {
            created()
        }
    })
    .await;
    let client = client(&base, 3);
    let mut mode = SendMode::Batch;
    let delivery = client
        .send_metrics(&metrics(), &mut mode)
        .await
        .expect("stored");
    assert_eq!(delivery.mode, SendMode::OneByOne);
    assert_eq!(mode, SendMode::OneByOne);
    assert_eq!(delivery.answers.len(), 2);

    let seen = posts(&stub);
    assert_eq!(seen.len(), 3);
    assert!(seen[0].body.is_array());
    assert_eq!(seen[1].body["type"], "cpu_usage");
    assert_eq!(seen[2].body["type"], "memory_used_percent");
    // Each body has its own key: one key with two bodies would be refused.
    let keys: Vec<_> = seen.iter().map(|s| s.idempotency_key.clone()).collect();
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[1], keys[2]);

    // Later samples go straight to objects.
    client
        .send_metrics(&metrics(), &mut mode)
        .await
        .expect("stored");
    let seen = posts(&stub);
    assert_eq!(seen.len(), 5);
    assert!(seen[3..].iter().all(|s| s.body.is_object()));
}

#[tokio::test]
async fn falls_back_on_400() {
    let (base, stub) = start_stub(|_, body| {
        if body.is_array() {
            (400, vec![], json!({"status": 400}))
        } else {
            created()
        }
    })
    .await;
    let mut mode = SendMode::Batch;
    let delivery = client(&base, 3)
        .send_metrics(&metrics(), &mut mode)
        .await
        .expect("stored");
    assert_eq!(delivery.mode, SendMode::OneByOne);
    assert_eq!(posts(&stub).len(), 3);
}

#[tokio::test]
async fn per_item_refusal_is_reported_not_retried() {
    let (base, stub) = start_stub(|_, _| {
        let problem = json!({
            "type": "urn:analytics-api:problem:validation-failed", "status": 422,
            "errors": [{"index": 0, "field": "timestamp", "reason": "too old"}]
        });
        (422, vec![], problem)
    })
    .await;
    let mut mode = SendMode::Batch;
    let err = client(&base, 3)
        .send_metrics(&metrics(), &mut mode)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, ClientError::Rejected { status: 422, .. }),
        "{err}"
    );
    assert_eq!(mode, SendMode::Batch);
    assert_eq!(posts(&stub).len(), 1);
}

#[tokio::test]
async fn unreachable_api_is_a_clear_error() {
    // Bind then drop: the port is free and nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut mode = SendMode::Batch;
    let err = client(&base, 3)
        .send_metrics(&metrics(), &mut mode)
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("cannot reach the API"), "{err}");
}

#[test]
fn bad_base_url_is_refused() {
    for base in ["localhost:8000", "ftp://example.test", "not a url"] {
        assert!(
            matches!(
                ApiClient::new(base, None, Duration::from_secs(1), policy(0)),
                Err(ClientError::InvalidBaseUrl(_))
            ),
            "{base}"
        );
    }
}

#[tokio::test]
async fn whole_run_sends_its_samples_in_one_request_and_reads_fresh_summaries() {
    let (base, stub) = start_stub(|_, _| created()).await;
    let args = Args {
        base_url: format!("{base}/"),
        api_key: None,
        samples: 3,
        interval_ms: 0,
        batch_size: 500,
        max_retries: 1,
        max_retry_wait_s: 1,
        timeout_ms: 5000,
        host: Some("web-7".into()),
    };
    run(&args).await.expect("run succeeds");

    let seen = posts(&stub);
    assert_eq!(seen.len(), 1, "all samples in one request");
    let batch = seen[0].body.as_array().expect("a batch");
    assert_eq!(batch.len(), 6);
    for metric in batch {
        let value = metric["value"].as_f64().expect("a number");
        assert!((0.0..=100.0).contains(&value), "{metric}");
        let stamp = metric["timestamp"].as_str().expect("a string");
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "{stamp}"
        );
        assert!(stamp.ends_with('Z'), "{stamp}");
        assert_eq!(metric["tags"], json!({"host": "web-7"}), "{metric}");
    }
    assert_eq!(seen[0].api_key, None);

    let queries = stub.summaries.lock().expect("lock").clone();
    let kinds: Vec<_> = queries.iter().map(|q| q.query["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "cpu_usage",
            "memory_used_percent",
            "cpu_usage",
            "memory_used_percent"
        ]
    );
    let hosts: Vec<_> = queries
        .iter()
        .map(|q| q.query.get("tag.host").map(String::as_str))
        .collect();
    assert_eq!(hosts, [None, None, Some("web-7"), Some("web-7")]);
    assert!(queries.iter().all(|q| q.query["period"] == "hourly"));
    assert!(
        queries
            .iter()
            .all(|q| q.cache_control.as_deref() == Some("no-cache")),
        "summaries bypass the cache: {queries:?}"
    );
}

#[tokio::test]
async fn a_small_batch_size_splits_the_samples_over_requests() {
    let (base, stub) = start_stub(|_, _| created()).await;
    let args = Args {
        base_url: base,
        api_key: None,
        samples: 3,
        interval_ms: 0,
        batch_size: 4,
        max_retries: 1,
        max_retry_wait_s: 1,
        timeout_ms: 5000,
        host: None,
    };
    run(&args).await.expect("run succeeds");
    let sizes: Vec<usize> = posts(&stub)
        .iter()
        .map(|post| post.body.as_array().expect("a batch").len())
        .collect();
    assert_eq!(sizes, [4, 2]);
    let keys: Vec<_> = posts(&stub)
        .into_iter()
        .map(|p| p.idempotency_key)
        .collect();
    assert_ne!(keys[0], keys[1], "each body its own idempotency key");
}
