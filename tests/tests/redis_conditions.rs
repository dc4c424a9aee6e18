//! `/health` against Redis servers configured the way managed Redis and
//! real deployments can be: an evicting `maxmemory-policy`, memory full
//! under `noeviction`, a user that may not run scripts, a read-only
//! replica. Each runs on a private `redis-server` started with the
//! configuration under test (never the shared one), and checks the named
//! condition and the status code; the evicting policy also its warning
//! (logged once per instance, not per request) and its EMF metrics.

use std::sync::OnceLock;

use analytics_tests::logs::CapturedLogs;
use analytics_tests::private_redis::PrivateRedis;
use analytics_tests::{body_json, config_with_prefix, http_v2, random_prefix, random_type};
use chrono::Utc;
use lambda_http::{Body, Response};
use serde_json::{json, Value};
use shared::handlers::{health, ingest_metric};
use shared::metric::format_timestamp;
use shared::AppState;

const GENEROUS: [(&str, &str); 3] = [
    ("RATE_LIMIT_REQUESTS", "1000000"),
    ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
    ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
];

/// One "Lambda instance" on the private single-node server at `url`,
/// whatever the suite's `REDIS_MODE`.
fn instance(url: &str) -> AppState {
    let mut all: Vec<(&str, &str)> = GENEROUS.to_vec();
    all.push(("REDIS_URL", url));
    all.push(("REDIS_MODE", "standalone"));
    AppState::new(config_with_prefix(&random_prefix(), &all)).unwrap()
}

async fn get_health(state: &AppState) -> (u16, Value, Option<String>) {
    let response = health(state, http_v2("GET", "/health").build()).await;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        response.status().as_u16(),
        body_json(&response),
        retry_after,
    )
}

async fn post(state: &AppState, t: &str) -> Response<Body> {
    let metric = json!({"timestamp": format_timestamp(Utc::now()), "value": 1.0, "type": t});
    ingest_metric(state, http_v2("POST", "/api/metrics").json(&metric).build()).await
}

/// The names of the body's conditions, in order.
fn names(body: &Value) -> Vec<String> {
    body["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("conditions is a list: {body}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn admin(server: &PrivateRedis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Writes 1 KiB values under keys outside any service prefix until Redis
/// refuses one with `OOM` (then returns true) or `count` are written.
async fn fill(server: &PrivateRedis, count: usize) -> bool {
    let mut admin = admin(server).await;
    let value = "x".repeat(1024);
    for i in 0..count {
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&value)
            .query_async(&mut admin)
            .await;
        if let Err(err) = set {
            assert_eq!(err.code(), Some("OOM"), "{err}");
            return true;
        }
    }
    false
}

/// The EMF recorder the functions install in Lambda, installed once for this
/// test binary; only the evicting-policy test records and flushes it.
fn emf() -> &'static metrics_cloudwatch_embedded::Collector {
    static COLLECTOR: OnceLock<&'static metrics_cloudwatch_embedded::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace("AnalyticsApiTest")
            .init()
            .expect("no other metrics recorder in this test binary")
    })
}

/// The sum of metric `name` over the EMF documents flushed now.
fn flushed(name: &str) -> u64 {
    let mut out = Vec::new();
    emf().flush(&mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter_map(|doc| doc[name].as_u64())
        .sum()
}

#[tokio::test]
async fn an_evicting_policy_is_a_degraded_200_logged_once_per_instance_and_counted() {
    let server =
        PrivateRedis::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]);
    let _ = flushed("RedisEvictingPolicy");
    let captured = CapturedLogs::default();
    let _guard = captured.install("info");

    // /health reads the policy on every call: 200 degraded, the condition
    // named, its warning logged once.
    let checker = instance(&server.url());
    for _ in 0..3 {
        let (status, body, _) = get_health(&checker).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "degraded", "{body}");
        assert_eq!(body["redis"], "healthy", "{body}");
        assert_eq!(names(&body), ["evicting_policy"], "{body}");
        assert_eq!(body["conditions"][0]["effect"], "degraded", "{body}");
        let detail = body["conditions"][0]["detail"].as_str().unwrap();
        assert!(detail.contains("allkeys-lru"), "{detail}");
        assert!(detail.contains("acknowledged metrics"), "{detail}");
        assert_eq!(body["memory"]["maxmemory_policy"], "allkeys-lru", "{body}");
        assert_eq!(body["memory"]["maxmemory_bytes"], 2 * 1024 * 1024, "{body}");
    }

    // Another instance serving ingests reads it once, at its first request.
    let ingester = instance(&server.url());
    let t = random_type("evicting");
    for _ in 0..3 {
        let response = post(&ingester, &t).await;
        assert_eq!(response.status(), 201, "{}", body_json(&response));
    }

    let warnings: Vec<Value> = captured
        .lines()
        .into_iter()
        .filter(|line| line["level"] == "WARN" && line["condition"] == "evicting_policy")
        .collect();
    assert_eq!(
        warnings.len(),
        2,
        "one warning per instance, not per request: {warnings:?}"
    );
    assert_eq!(warnings[0]["maxmemory_policy"], "allkeys-lru");
    // Three health checks and the ingester's first request.
    assert_eq!(flushed("RedisEvictingPolicy"), 4);

    // Evictions show in the body and, as their growth, in a metric.
    assert_eq!(get_health(&checker).await.1["memory"]["evicted_keys"], 0);
    assert!(
        !fill(&server, 4000).await,
        "allkeys-lru evicts instead of OOM"
    );
    let (status, body, _) = get_health(&checker).await;
    assert_eq!(status, 200, "{body}");
    let evicted = body["memory"]["evicted_keys"].as_u64().unwrap();
    assert!(evicted > 0, "{body}");
    assert_eq!(flushed("RedisEvictedKeys"), evicted);
}

#[tokio::test]
async fn memory_full_under_noeviction_is_a_503_out_of_memory_and_nearly_full_degrades() {
    let server =
        PrivateRedis::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let state = instance(&server.url());
    let (status, body, _) = get_health(&state).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    assert_eq!(names(&body), Vec::<String>::new());

    // Filled until a write is refused. At rest Redis sits a few tens of KiB
    // below its limit (the refused write's own buffers pushed it over):
    // small writes still succeed, so requests can, but not for long.
    assert!(
        fill(&server, 10_000).await,
        "the server refuses writes with OOM"
    );
    let (status, body, _) = get_health(&state).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(names(&body), ["memory_nearly_full"], "{body}");
    assert_eq!(body["conditions"][0]["effect"], "degraded", "{body}");

    // Memory above the limit (as when maxmemory shrinks under the data, or
    // every write has filled the last bytes): no request can write.
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "1mb"])
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();
    let (status, body, retry_after) = get_health(&state).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(names(&body), ["out_of_memory"], "{body}");
    assert_eq!(body["conditions"][0]["effect"], "unavailable", "{body}");
    let used = body["memory"]["used_bytes"].as_u64().unwrap();
    let max = body["memory"]["maxmemory_bytes"].as_u64().unwrap();
    assert!(used > max, "{body}");
    assert_eq!(retry_after, None, "a full memory needs an operator");
    let ingest = post(&state, &random_type("oom")).await;
    assert_ne!(ingest.status(), 201, "{}", body_json(&ingest));

    let mut admin = admin(&server).await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "2mb"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let (status, body, _) = get_health(&state).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
}

#[tokio::test]
async fn a_user_that_may_not_run_scripts_is_a_503_scripts_refused() {
    let server = PrivateRedis::start();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "app",
            "on",
            ">app-password",
            "~*",
            "&*",
            "+@all",
            "-@scripting",
        ])
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();
    let state = instance(&format!(
        "redis://app:app-password@127.0.0.1:{}/0",
        server.port()
    ));
    let (status, body, retry_after) = get_health(&state).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(names(&body), ["scripts_refused"], "{body}");
    let detail = body["conditions"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("NOPERM"), "{detail}");
    assert_eq!(body["memory"]["maxmemory_policy"], "noeviction", "{body}");
    assert!(!body.to_string().contains("app-password"), "{body}");
    assert_eq!(retry_after, None, "a missing permission needs an operator");
}

#[tokio::test]
async fn a_read_only_replica_is_a_503_read_only_replica() {
    let primary = PrivateRedis::start();
    let replica =
        PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);

    let (status, body, retry_after) = get_health(&instance(&replica.url())).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(names(&body), ["read_only_replica"], "{body}");
    assert!(
        retry_after.is_some(),
        "a failover can move the endpoint: retrying may help"
    );

    let (status, body, _) = get_health(&instance(&primary.url())).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
}
