//! The read-through summary cache in-process: synthetic API Gateway events
//! through `metrics_summary` against the real Redis, with a local stub HTTP
//! server as the external source so that every call to it is counted.
//!
//! Each test has its own key prefix and metric types. Several independent
//! `AppState`s sharing one prefix (each with its own Redis connection) stand
//! for several Lambda instances sharing one deployment's cache; concurrency
//! tests run them on a multi-thread runtime, lined up on a barrier.

use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_tests::{
    config_with_prefix, http_v2, random_prefix, random_type, redis_connection, rest_v1, Stub,
    StubReply,
};
use chrono::Utc;
use lambda_http::{Body, Response};
use serde_json::{json, Value};
use shared::cache::SummaryCache;
use shared::handlers::{ingest_metric, metrics_summary};
use shared::metric::format_timestamp;
use shared::state::EXTERNAL_SERVICE;
use shared::window::{parse_summary_query, SummaryQuery};
use shared::AppState;

/// One deployment: a key prefix, a stub external source and the settings
/// every instance of it is built with.
struct Deployment {
    prefix: String,
    stub: Stub,
    pairs: Vec<(String, String)>,
}

impl Deployment {
    /// A fresh prefix and stub. The breaker threshold is raised so that tests
    /// with a failing source are not cut short by an open circuit, and the
    /// rate limits so that ingests and summaries are never refused; `pairs`
    /// override them.
    async fn start(pairs: &[(&str, &str)]) -> Self {
        let stub = Stub::start().await;
        let mut all = vec![
            ("EXTERNAL_SERVICE_URL".to_string(), stub.url()),
            (
                "CIRCUIT_BREAKER_FAILURE_THRESHOLD".to_string(),
                "1000".to_string(),
            ),
            ("RATE_LIMIT_REQUESTS".to_string(), "1000000".to_string()),
            (
                "SUMMARY_RATE_LIMIT_REQUESTS".to_string(),
                "1000000".to_string(),
            ),
        ];
        all.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self {
            prefix: random_prefix(),
            stub,
            pairs: all,
        }
    }

    /// A new instance (its own state and Redis connection) of the deployment.
    fn instance(&self) -> AppState {
        let pairs: Vec<(&str, &str)> = self
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        AppState::new(config_with_prefix(&self.prefix, &pairs)).expect("a valid test state")
    }

    /// `n` independent instances whose connections are already established,
    /// as warm Lambda instances' would be.
    async fn instances(&self, n: usize) -> Vec<Arc<AppState>> {
        let mut states = Vec::with_capacity(n);
        for _ in 0..n {
            let state = self.instance();
            let pong: String = redis::cmd("PING")
                .query_async(&mut state.redis.clone())
                .await
                .expect("the test Redis answers");
            assert_eq!(pong, "PONG");
            states.push(Arc::new(state));
        }
        states
    }
}

/// A healthy source whose answer carries `marker`, so tests can tell which
/// call a summary came from.
fn source_says(marker: i64) -> StubReply {
    StubReply::json(200, json!({ "external_metric_context": marker }))
}

/// What a test reads from one summary response.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    x_cache: Option<String>,
    /// `max-age` of the `Cache-Control` field, s.
    max_age: Option<u64>,
    /// The `Age` field, s.
    age: Option<u64>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn is_hit(&self) -> bool {
        self.x_cache.as_deref() == Some("HIT")
    }

    fn is_miss(&self) -> bool {
        self.x_cache.as_deref() == Some("MISS")
    }

    fn marker(&self) -> Value {
        self.json()["external_data"]["external_metric_context"].clone()
    }
}

fn reply_of(response: Response<Body>) -> Reply {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let max_age = header("cache-control").map(|v| {
        v.split(',')
            .find_map(|d| d.trim().strip_prefix("max-age="))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("Cache-Control without a max-age: {v:?}"))
    });
    let age = header("age").map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("Age is not whole seconds: {v:?}"))
    });
    let body = match response.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    Reply {
        status: response.status().as_u16(),
        x_cache: header("x-cache"),
        max_age,
        age,
        body,
    }
}

fn summary_request(query: &str, no_cache: bool) -> lambda_http::Request {
    let mut event = http_v2("GET", "/api/metrics/summary").query(query);
    if no_cache {
        event = event.header("Cache-Control", "no-cache");
    }
    event.build()
}

async fn get(state: &AppState, query: &str) -> Reply {
    reply_of(metrics_summary(state, summary_request(query, false)).await)
}

async fn get_no_cache(state: &AppState, query: &str) -> Reply {
    reply_of(metrics_summary(state, summary_request(query, true)).await)
}

/// `n` requests for `query` spread over `states`, sent at once from tasks of
/// the multi-thread runtime.
async fn concurrently(
    states: &[Arc<AppState>],
    n: usize,
    query: &str,
    no_cache: bool,
) -> Vec<Reply> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let state = states[i % states.len()].clone();
            let barrier = barrier.clone();
            let request = summary_request(query, no_cache);
            tokio::spawn(async move {
                barrier.wait().await;
                reply_of(metrics_summary(&state, request).await)
            })
        })
        .collect();
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("a request task panicked"))
        .collect()
}

/// All 200, all the same body, exactly one of them computed it.
fn assert_one_computation_served_to_all(replies: &[Reply]) {
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let first = &replies[0].body;
    assert!(
        replies.iter().all(|r| &r.body == first),
        "bodies differ: {:#?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let misses = replies.iter().filter(|r| r.is_miss()).count();
    let hits = replies.iter().filter(|r| r.is_hit()).count();
    assert_eq!((misses, hits), (1, replies.len() - 1), "{replies:#?}");
}

/// The parsed query whose cache entry a test inspects.
fn parsed(metric_type: &str, period: &str) -> SummaryQuery {
    match parse_summary_query(
        [("type", metric_type), ("period", period)],
        Utc::now(),
        chrono::Duration::days(35),
        chrono::Duration::minutes(5),
    ) {
        Ok(query) => query,
        Err(err) => panic!("test query {metric_type}/{period}: {err}"),
    }
}

async fn pttl(key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut redis_connection().await)
        .await
        .expect("PTTL")
}

async fn exists(key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut redis_connection().await)
        .await
        .expect("EXISTS");
    n == 1
}

/// This machine's clock, unix ms.
fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Leaves a lock behind as an owner that vanished would: someone else's
/// token, expiring after `ttl`.
async fn abandon_lock(lock: &str, ttl: Duration) {
    let _: () = redis::cmd("SET")
        .arg(lock)
        .arg("someone-else")
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query_async(&mut redis_connection().await)
        .await
        .expect("SET lock");
}

/// Waits until Redis has expired `key` (polling, bounded by `within`).
async fn wait_until_gone(key: &str, within: Duration) {
    let start = Instant::now();
    while exists(key).await {
        assert!(
            start.elapsed() < within,
            "{key} still exists after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_repeated_query_is_a_hit_in_one_round_trip_without_calling_the_source() {
    let deployment = Deployment::start(&[("CACHE_TTL_SECONDS", "60")]).await;
    let state = deployment.instance();
    let query = format!("type={}&period=daily", random_type("hit"));

    let miss = get(&state, &query).await;
    assert_eq!(miss.status, 200, "{}", miss.body);
    assert!(miss.is_miss(), "{miss:?}");
    assert_eq!(miss.max_age, Some(60));
    assert_eq!(miss.age, None, "Age is sent on hits only");
    assert_eq!(miss.json()["external_data"]["status"], "success");
    assert_eq!(deployment.stub.calls(), 1);

    let before = state.redis.round_trips();
    let hit = get(&state, &query).await;
    let round_trips = state.redis.round_trips() - before;

    assert_eq!(hit.status, 200);
    assert!(hit.is_hit(), "{hit:?}");
    assert_eq!(round_trips, 1, "a hit costs exactly one Redis round trip");
    assert_eq!(deployment.stub.calls(), 1, "a hit never calls the source");
    assert_eq!(hit.body, miss.body, "a hit serves the stored body verbatim");
    let max_age = hit.max_age.expect("Cache-Control: max-age on a hit");
    assert!((1..=60).contains(&max_age), "{hit:?}");
    let age = hit.age.expect("Age on a hit");
    assert!(age <= 60, "{hit:?}");
}

/// A hit is one plain `GET` of the entry: no script, no second command, on
/// the handler's own connection.
#[tokio::test]
async fn a_hit_is_one_plain_get() {
    let deployment = Deployment::start(&[]).await;
    let mut redis = shared::connection::Redis::from_settings(
        &config_with_prefix(&deployment.prefix, &[]).redis,
    )
    .expect("a Redis handle");
    let calls = redis.record_calls();
    let pairs: Vec<(&str, &str)> = deployment
        .pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let state = AppState::with_redis(config_with_prefix(&deployment.prefix, &pairs), redis)
        .expect("a valid test state");
    let t = random_type("plain");
    let query = format!("type={t}&period=daily");
    assert!(get(&state, &query).await.is_miss());

    let before = calls.calls().len();
    let hit = get(&state, &query).await;
    assert!(hit.is_hit(), "{hit:?}");
    let sent = &calls.calls()[before..];
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].commands, ["GET"], "{sent:?}");
    assert_eq!(sent[0].keys, [state.cache.entry_key(&parsed(&t, "daily"))]);
}

/// `Age` and `max-age` on a hit come from the entry's stored-at and expiry
/// (Redis' clock when it was stored) against the instance's clock.
#[tokio::test]
async fn a_hit_tells_its_age_and_what_is_left_of_its_ttl() {
    let deployment = Deployment::start(&[("CACHE_TTL_SECONDS", "60")]).await;
    let state = deployment.instance();
    let t = random_type("age");
    let entry = state.cache.entry_key(&parsed(&t, "daily"));
    let stored_at = now_ms() - 15_000;
    let _: () = redis::cmd("SET")
        .arg(&entry)
        .arg(SummaryCache::entry_value(
            r#"{"planted":true}"#,
            stored_at,
            stored_at + 60_000,
            "planted",
        ))
        .arg("PX")
        .arg(45_000)
        .query_async(&mut redis_connection().await)
        .await
        .expect("SET entry");

    let hit = get(&state, &format!("type={t}&period=daily")).await;
    assert!(hit.is_hit(), "{hit:?}");
    assert_eq!(
        hit.body, r#"{"planted":true}"#,
        "the trailing line is not served"
    );
    let age = hit.age.expect("Age on a hit");
    assert!((15..=17).contains(&age), "{hit:?}");
    let max_age = hit.max_age.expect("max-age on a hit");
    assert!((43..=45).contains(&max_age), "{hit:?}");
    assert_eq!(deployment.stub.calls(), 0);

    // What the service stores itself reads back the same way.
    let miss = get(&state, &format!("type={t}&period=hourly")).await;
    assert!(miss.is_miss());
    let again = get(&state, &format!("type={t}&period=hourly")).await;
    assert!(again.is_hit(), "{again:?}");
    assert_eq!(again.body, miss.body);
    assert!(again.age.is_some_and(|a| a <= 1), "{again:?}");
    assert!(
        again.max_age.is_some_and(|m| (59..=60).contains(&m)),
        "{again:?}"
    );
}

#[tokio::test]
async fn parameter_order_and_unknown_parameters_hit_the_same_entry() {
    let deployment = Deployment::start(&[]).await;
    let state = deployment.instance();
    let t = random_type("order");

    let first = get(&state, &format!("type={t}&period=weekly")).await;
    assert!(first.is_miss(), "{first:?}");
    for query in [
        format!("period=weekly&type={t}"),
        format!("type={t}&utm_source=dash&period=weekly"),
        format!("foo=1&period=weekly&bar=&type={t}&baz=x"),
    ] {
        let again = get(&state, &query).await;
        assert!(again.is_hit(), "{query}: {again:?}");
        assert_eq!(again.body, first.body, "{query}");
    }
    // A REST API (v1) event for the same query shares the entry as well.
    let v1 = reply_of(
        metrics_summary(
            &state,
            rest_v1("GET", "/api/metrics/summary")
                .query(&format!("extra=1&period=weekly&type={t}"))
                .build(),
        )
        .await,
    );
    assert!(v1.is_hit(), "{v1:?}");
    assert_eq!(v1.body, first.body);
    assert_eq!(deployment.stub.calls(), 1);

    // A different query is a different entry.
    let other = get(&state, &format!("type={t}&period=hourly")).await;
    assert!(other.is_miss(), "{other:?}");
    assert_eq!(deployment.stub.calls(), 2);
}

#[tokio::test]
async fn after_the_ttl_a_new_value_with_new_metrics_is_served() {
    let deployment = Deployment::start(&[
        ("CACHE_TTL_SECONDS", "1"),
        ("CACHE_FALLBACK_TTL_SECONDS", "1"),
    ])
    .await;
    let state = deployment.instance();
    let t = random_type("expiry");
    let query = format!("type={t}&period=hourly");
    let entry = state.cache.entry_key(&parsed(&t, "hourly"));
    let ingest = |value: f64| {
        let body = json!({"timestamp": format_timestamp(Utc::now()), "value": value, "type": t});
        let state = &state;
        async move {
            let response =
                ingest_metric(state, http_v2("POST", "/api/metrics").json(&body).build()).await;
            assert_eq!(response.status(), 201);
        }
    };

    ingest(10.0).await;
    let first = get(&state, &query).await;
    assert!(first.is_miss(), "{first:?}");
    assert_eq!(first.max_age, Some(1));
    assert_eq!(first.json()["count"], 1);
    let ttl = pttl(&entry).await;
    assert!(ttl > 0 && ttl <= 1000, "entry PTTL {ttl} ms");

    // Within the TTL the cached summary does not see the new metric: the
    // staleness the cache trades for speed.
    ingest(20.0).await;
    let cached = get(&state, &query).await;
    assert!(cached.is_hit(), "{cached:?}");
    assert_eq!(cached.json()["count"], 1);

    wait_until_gone(&entry, Duration::from_secs(5)).await;
    let fresh = get(&state, &query).await;
    assert_eq!(fresh.status, 200);
    assert!(fresh.is_miss(), "{fresh:?}");
    assert_eq!(fresh.json()["count"], 2, "{}", fresh.body);
    assert_eq!(fresh.json()["sum"], 30.0);
    assert_eq!(deployment.stub.calls(), 2);
}

/// 16 simultaneous requests on a cold key from 4 instances: one computation.
async fn stampede(delay: Duration, pairs: &[(&str, &str)]) {
    let deployment = Deployment::start(pairs).await;
    deployment.stub.set(source_says(7).with_delay(delay));
    let states = deployment.instances(4).await;
    let query = format!("type={}&period=hourly", random_type("stampede"));

    let replies = concurrently(&states, 16, &query, false).await;

    assert_eq!(deployment.stub.calls(), 1, "the source is called once");
    assert_one_computation_served_to_all(&replies);
    assert_eq!(replies[0].json()["external_data"]["status"], "success");
    assert_eq!(replies[0].marker(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_on_a_cold_key_calls_a_slow_source_once() {
    stampede(Duration::from_millis(250), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_calls_a_source_close_to_its_timeout_once() {
    stampede(
        Duration::from_millis(900),
        &[
            ("EXTERNAL_SERVICE_TIMEOUT_MS", "1000"),
            ("REQUEST_DEADLINE_MS", "3000"),
        ],
    )
    .await;
}

/// Settings that make the lock TTL short (500 + 2 × 250 + 250 = 1250 ms) and
/// leave the request deadline comfortably above it.
const SHORT_LOCK: [(&str, &str); 3] = [
    ("EXTERNAL_SERVICE_TIMEOUT_MS", "500"),
    ("REDIS_TIMEOUT_MS", "250"),
    ("REQUEST_DEADLINE_MS", "6000"),
];

#[tokio::test]
async fn a_lock_left_by_a_vanished_owner_blocks_for_at_most_the_lock_ttl() {
    let deployment = Deployment::start(&SHORT_LOCK).await;
    let state = deployment.instance();
    let lock_ttl = state.cache.lock_ttl();
    assert!(lock_ttl < Duration::from_secs(2), "{lock_ttl:?}");
    let t = random_type("vanished");
    let entry = state.cache.entry_key(&parsed(&t, "hourly"));
    let lock = format!("{entry}:lock");

    abandon_lock(&lock, lock_ttl).await;
    let start = Instant::now();
    let reply = get(&state, &format!("type={t}&period=hourly")).await;
    let waited = start.elapsed();

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.is_miss(), "the waiter took over: {reply:?}");
    assert_eq!(reply.json()["external_data"]["status"], "success");
    assert_eq!(deployment.stub.calls(), 1);
    // Loose bounds: it respected the lock, and did not wait much beyond it.
    assert!(waited >= lock_ttl / 2, "waited only {waited:?}");
    assert!(
        waited <= lock_ttl + Duration::from_millis(1500),
        "waited {waited:?} for a lock of {lock_ttl:?}"
    );
    assert!(exists(&entry).await);
    assert!(!exists(&lock).await, "the new owner released its lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_behind_a_vanished_owner_take_over_exactly_once() {
    let deployment = Deployment::start(&SHORT_LOCK).await;
    deployment
        .stub
        .set(source_says(11).with_delay(Duration::from_millis(200)));
    let states = deployment.instances(4).await;
    let t = random_type("takeover");
    let lock = format!("{}:lock", states[0].cache.entry_key(&parsed(&t, "daily")));

    abandon_lock(&lock, states[0].cache.lock_ttl()).await;
    let replies = concurrently(&states, 8, &format!("type={t}&period=daily"), false).await;

    assert_eq!(deployment.stub.calls(), 1);
    assert_one_computation_served_to_all(&replies);
    assert_eq!(replies[0].marker(), 11);
}

#[tokio::test]
async fn fallback_summaries_are_cached_only_for_the_fallback_ttl() {
    let deployment = Deployment::start(&[
        ("CACHE_TTL_SECONDS", "60"),
        ("CACHE_FALLBACK_TTL_SECONDS", "2"),
    ])
    .await;
    deployment.stub.set(StubReply::text(500, "upstream broke"));
    let state = deployment.instance();
    let t = random_type("fallback");
    let query = format!("type={t}&period=daily");
    let entry = state.cache.entry_key(&parsed(&t, "daily"));

    let degraded = get(&state, &query).await;
    assert_eq!(
        degraded.status, 200,
        "a failing source still gives a summary"
    );
    assert!(degraded.is_miss(), "{degraded:?}");
    let external = &degraded.json()["external_data"];
    assert_eq!(external["status"], "fallback", "{}", degraded.body);
    assert_eq!(external["reason"], "upstream_error");
    let max_age = degraded.max_age.expect("max-age");
    assert!((1..=2).contains(&max_age), "{degraded:?}");
    let ttl = pttl(&entry).await;
    assert!(ttl > 0 && ttl <= 2000, "fallback entry PTTL {ttl} ms");

    // While it lives, the fallback is served like any entry, briefly.
    let again = get(&state, &query).await;
    assert!(again.is_hit(), "{again:?}");
    assert!(again.max_age.is_some_and(|s| s <= 2), "{again:?}");
    assert_eq!(again.body, degraded.body);
    assert_eq!(deployment.stub.calls(), 1);

    // The source recovers; once the fallback expired, a success is served
    // and cached for the full TTL.
    deployment.stub.set(source_says(5));
    wait_until_gone(&entry, Duration::from_secs(5)).await;
    let recovered = get(&state, &query).await;
    assert_eq!(recovered.status, 200);
    assert!(recovered.is_miss(), "{recovered:?}");
    assert_eq!(recovered.json()["external_data"]["status"], "success");
    assert_eq!(recovered.marker(), 5);
    assert_eq!(recovered.max_age, Some(60));
    assert!(pttl(&entry).await > 2000);
    assert_eq!(deployment.stub.calls(), 2);
}

#[tokio::test]
async fn a_timed_out_source_is_a_short_lived_fallback_too() {
    let deployment = Deployment::start(&[
        ("CACHE_TTL_SECONDS", "60"),
        ("CACHE_FALLBACK_TTL_SECONDS", "3"),
        ("EXTERNAL_SERVICE_TIMEOUT_MS", "200"),
    ])
    .await;
    deployment
        .stub
        .set(source_says(1).with_delay(Duration::from_millis(600)));
    let state = deployment.instance();
    let t = random_type("slow");

    let reply = get(&state, &format!("type={t}&period=hourly")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["external_data"]["status"], "fallback");
    assert_eq!(reply.json()["external_data"]["reason"], "timeout");
    assert!(reply.max_age.is_some_and(|s| s <= 3), "{reply:?}");
    let ttl = pttl(&state.cache.entry_key(&parsed(&t, "hourly"))).await;
    assert!(ttl > 0 && ttl <= 3000, "PTTL {ttl} ms");
}

#[tokio::test]
async fn errors_are_never_cached() {
    let deployment = Deployment::start(&[]).await;
    let state = deployment.instance();
    let t = random_type("error");
    let query = format!("type={t}&period=hourly");
    let entry = state.cache.entry_key(&parsed(&t, "hourly"));
    let lock = format!("{entry}:lock");

    // A breaker key of the wrong type makes the computation fail inside
    // Redis while the cache lookup itself works.
    let breaker = state.keys.breaker(EXTERNAL_SERVICE);
    let mut conn = redis_connection().await;
    let _: () = redis::cmd("SET")
        .arg(&breaker)
        .arg("not-a-hash")
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .expect("SET");

    let failed = get(&state, &query).await;
    assert!(failed.status >= 500, "{failed:?}");
    assert!(!exists(&entry).await, "an error must not be stored");
    assert!(!exists(&lock).await, "a failed owner releases its lock");

    let _: () = redis::cmd("DEL")
        .arg(&breaker)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let ok = get(&state, &query).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.is_miss(), "{ok:?}");
    assert_eq!(ok.json()["external_data"]["status"], "success");
    assert_eq!(deployment.stub.calls(), 1);
}

#[tokio::test]
async fn no_cache_recomputes_and_refreshes_the_entry() {
    let deployment = Deployment::start(&[("CACHE_TTL_SECONDS", "60")]).await;
    deployment.stub.set(source_says(1));
    let state = deployment.instance();
    let query = format!("type={}&period=daily", random_type("refresh"));

    let first = get(&state, &query).await;
    assert!(first.is_miss());
    assert_eq!(first.marker(), 1);

    deployment.stub.set(source_says(2));
    let refreshed = get_no_cache(&state, &query).await;
    assert_eq!(refreshed.status, 200);
    assert!(
        refreshed.is_miss(),
        "no-cache skips the stored copy: {refreshed:?}"
    );
    assert_eq!(refreshed.marker(), 2);
    assert_eq!(refreshed.max_age, Some(60));
    assert_eq!(deployment.stub.calls(), 2);

    let after = get(&state, &query).await;
    assert!(after.is_hit(), "{after:?}");
    assert_eq!(after.body, refreshed.body, "the entry was refreshed");
    assert_eq!(deployment.stub.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_no_cache_requests_recompute_once() {
    let deployment = Deployment::start(&[]).await;
    deployment.stub.set(source_says(1));
    let states = deployment.instances(4).await;
    let query = format!("type={}&period=weekly", random_type("refresh_crowd"));
    let first = get(&states[0], &query).await;
    assert!(first.is_miss());

    deployment
        .stub
        .set(source_says(3).with_delay(Duration::from_millis(300)));
    let replies = concurrently(&states, 8, &query, true).await;

    assert_eq!(
        deployment.stub.calls(),
        2,
        "one recomputation for 8 refreshes"
    );
    assert_one_computation_served_to_all(&replies);
    assert_eq!(replies[0].marker(), 3, "everyone gets the new value");

    let after = get(&states[1], &query).await;
    assert!(after.is_hit());
    assert_eq!(after.body, replies[0].body);
}

/// A `no-cache` request that finds a lock whose owner vanished must not end
/// up serving the very copy it asked to skip: once the lock expired it takes
/// the computation over.
#[tokio::test]
async fn no_cache_behind_a_vanished_owner_still_recomputes() {
    let deployment = Deployment::start(&SHORT_LOCK).await;
    deployment.stub.set(source_says(1));
    let state = deployment.instance();
    let t = random_type("refresh_vanished");
    let query = format!("type={t}&period=hourly");
    let entry = state.cache.entry_key(&parsed(&t, "hourly"));

    let first = get(&state, &query).await;
    assert!(first.is_miss());
    assert_eq!(first.marker(), 1);

    deployment.stub.set(source_says(2));
    abandon_lock(&format!("{entry}:lock"), state.cache.lock_ttl()).await;
    let refreshed = get_no_cache(&state, &query).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert!(refreshed.is_miss(), "{refreshed:?}");
    assert_eq!(refreshed.marker(), 2, "{}", refreshed.body);
    assert_eq!(deployment.stub.calls(), 2);

    let after = get(&state, &query).await;
    assert!(after.is_hit());
    assert_eq!(after.body, refreshed.body);
}

#[tokio::test]
async fn summary_keys_carry_the_configured_prefix() {
    let one = Deployment::start(&[]).await;
    let other = Deployment::start(&[]).await;
    let (a, b) = (one.instance(), other.instance());
    let t = random_type("prefix");
    let query = parsed(&t, "monthly");

    let entry = a.cache.entry_key(&query);
    assert!(
        entry.starts_with(&format!("{}:cache:", one.prefix)),
        "{entry}"
    );
    let reply = get(&a, &format!("type={t}&period=monthly")).await;
    assert!(reply.is_miss());
    assert!(exists(&entry).await, "{entry}");
    assert!(pttl(&entry).await > 0, "{entry} has a TTL");

    // The same query in another deployment is another entry.
    let elsewhere = b.cache.entry_key(&query);
    assert!(elsewhere.starts_with(&format!("{}:cache:", other.prefix)));
    assert_ne!(entry, elsewhere);
    let reply = get(&b, &format!("type={t}&period=monthly")).await;
    assert!(reply.is_miss(), "{reply:?}");
    assert_eq!((one.stub.calls(), other.stub.calls()), (1, 1));
}

/// A `no-cache` request waiting for a recomputation is served the first
/// value stored after it arrived, even when a later `no-cache` request has
/// taken the lock again meanwhile: a stream of refreshes taking the lock in
/// turn must not keep the waiters waiting until their deadline.
#[tokio::test]
async fn a_no_cache_waiter_is_served_by_the_next_computation_even_if_the_lock_is_retaken() {
    let deployment = Deployment::start(&SHORT_LOCK).await;
    deployment.stub.set(source_says(1));
    let state = deployment.instance();
    let t = random_type("refresh_chain");
    let query = format!("type={t}&period=hourly");
    let entry = state.cache.entry_key(&parsed(&t, "hourly"));
    let lock = format!("{entry}:lock");
    assert!(get(&state, &query).await.is_miss());

    // Someone else is recomputing: the no-cache request has to wait.
    abandon_lock(&lock, Duration::from_secs(5)).await;
    let waiter = tokio::spawn({
        let state = deployment.instance();
        let query = query.clone();
        async move { get_no_cache(&state, &query).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // That computation stores its value, and a later refresh takes the lock
    // again at once (as the next queued request of a busy instance would).
    let fresh =
        json!({"type": t, "external_data": {"status": "success", "external_metric_context": 2}});
    let now = now_ms();
    let _: () = redis::cmd("SET")
        .arg(&entry)
        .arg(SummaryCache::entry_value(
            &fresh.to_string(),
            now,
            now + 60_000,
            "anothercomputation",
        ))
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis_connection().await)
        .await
        .expect("SET entry");
    abandon_lock(&lock, Duration::from_secs(5)).await;

    let reply = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("the waiter kept waiting behind the retaken lock")
        .expect("the waiter task panicked");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.marker(), 2, "{}", reply.body);
    assert_eq!(deployment.stub.calls(), 1, "the waiter did not recompute");
}
