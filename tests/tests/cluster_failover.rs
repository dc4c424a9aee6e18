//! Failovers of a Redis Cluster during a stream of keyed ingests from several
//! independent handler states ("Lambda instances"), on a [`PrivateCluster`]
//! of 3 masters with one replica each:
//!
//! - a manual failover (`CLUSTER FAILOVER` on the replica of the master that
//!   owns the tested metric type's slot), as an operator or ElastiCache
//!   maintenance does;
//! - an unplanned one: SIGKILL of that master, its replica promoted after the
//!   node timeout.
//!
//! During the window every request answers 201 or 503 with `Retry-After`
//! (never another status) within `REQUEST_DEADLINE_MS` (plus scheduling
//! slack); a 503 is retried with the same `Idempotency-Key` until it is a
//! 201. Afterwards every acknowledged metric is counted exactly once, the rate
//! limiter holds its exact limit, and the breaker and the cache work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_tests::private_cluster::PrivateCluster;
use analytics_tests::{body_json, http_v2, random_prefix, random_type};
use chrono::Utc;
use serde_json::{json, Value};
use shared::config::Config;
use shared::connection::{CallLog, Redis};
use shared::handlers::{health, ingest_metric, metrics_summary};
use shared::keys::Keys;
use shared::metric::format_timestamp;
use shared::AppState;

/// The request deadline of the handler states here.
const DEADLINE: Duration = Duration::from_millis(1500);
/// Scheduling slack of a busy two-core machine on top of the deadline.
const SLACK: Duration = Duration::from_millis(700);
/// Independent handler states sending at once.
const INSTANCES: usize = 3;

fn cluster_config(seed: &str, prefix: &str, pairs: &[(&str, &str)]) -> Config {
    let deadline = DEADLINE.as_millis().to_string();
    let mut all: Vec<(&str, &str)> = vec![
        ("REDIS_URL", seed),
        ("REDIS_MODE", "cluster"),
        ("REDIS_KEY_PREFIX", prefix),
        ("REDIS_TIMEOUT_MS", "300"),
        ("REQUEST_DEADLINE_MS", &deadline),
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
        ("RATE_LIMIT_REQUESTS", "1000000"),
        ("SUMMARY_RATE_LIMIT_REQUESTS", "1000000"),
    ];
    all.extend_from_slice(pairs);
    Config::from_pairs(&all).expect("a valid cluster configuration")
}

/// A fresh metric type whose slot is served by a master other than the seed
/// node (the seed must stay up: new connections start from it), and that
/// slot.
fn type_away_from_seed(cluster: &PrivateCluster, prefix: &str) -> (String, u16) {
    let seed_port: u16 = cluster
        .seed_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    loop {
        let t = random_type("failover");
        let slot = cluster.keyslot(&Keys::new(prefix).metric_base(&t));
        if cluster.master_for_slot(slot).port != seed_port {
            return (t, slot);
        }
    }
}

#[derive(Default)]
struct Tally {
    acknowledged: AtomicU64,
    unavailable: AtomicU64,
    slowest_ms: AtomicU64,
}

/// One instance's stream: keyed single-metric ingests of `t`, each retried
/// with its key after a 503 until it is a 201, until `stop` (the request in
/// flight is completed).
async fn stream(
    state: Arc<AppState>,
    id: usize,
    t: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let ip = format!("198.51.100.{}", 10 + id);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let key = format!("w{id}-{i}");
        let body = json!({"timestamp": format_timestamp(Utc::now()), "value": 1.0, "type": t});
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            let request = http_v2("POST", "/api/metrics")
                .json(&body)
                .source_ip(&ip)
                .header("Idempotency-Key", &key)
                .build();
            let started = Instant::now();
            let response = ingest_metric(&state, request).await;
            let took = started.elapsed();
            tally
                .slowest_ms
                .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
            assert!(took <= DEADLINE + SLACK, "a request took {took:?}");
            match response.status().as_u16() {
                201 => {
                    tally.acknowledged.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                503 => {
                    assert!(response.headers().contains_key("retry-after"));
                    tally.unavailable.fetch_add(1, Ordering::Relaxed);
                    assert!(Instant::now() < give_up, "{key} never stored");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("{other} during a failover: {}", body_json(&response)),
            }
        }
        if i.is_multiple_of(10) {
            let status = health(&state, http_v2("GET", "/health").build())
                .await
                .status();
            assert!(status == 200 || status == 503, "health answered {status}");
        }
    }
}

fn summary(t: &str, no_cache: bool) -> lambda_http::Request {
    let mut event =
        http_v2("GET", "/api/metrics/summary").query(&format!("type={t}&period=hourly"));
    if no_cache {
        event = event.header("cache-control", "no-cache");
    }
    event.build()
}

/// Runs the stream while `failover` runs on a blocking thread, then checks
/// everything the failover must not have broken.
async fn stream_through<F>(cluster: PrivateCluster, failover: F)
where
    F: FnOnce(&mut PrivateCluster, u16) + Send + 'static,
{
    let prefix = random_prefix();
    let seed = cluster.seed_url();
    let (t, slot) = type_away_from_seed(&cluster, &prefix);
    let mut logs: Vec<CallLog> = Vec::new();
    let states: Vec<Arc<AppState>> = (0..INSTANCES)
        .map(|_| {
            let config = cluster_config(&seed, &prefix, &[]);
            let mut redis = Redis::from_settings(&config.redis).unwrap();
            logs.push(redis.record_calls());
            Arc::new(AppState::with_redis(config, redis).unwrap())
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = states
        .iter()
        .enumerate()
        .map(|(id, state)| {
            tokio::spawn(stream(
                Arc::clone(state),
                id,
                t.clone(),
                Arc::clone(&stop),
                Arc::clone(&tally),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        failover(&mut cluster, slot);
        cluster
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let acknowledged = tally.acknowledged.load(Ordering::Relaxed);
    eprintln!(
        "acknowledged {acknowledged}, 503 answers {}, slowest {} ms",
        tally.unavailable.load(Ordering::Relaxed),
        tally.slowest_ms.load(Ordering::Relaxed)
    );
    assert!(acknowledged > 10, "the stream ran: {acknowledged}");
    // A node without the scripts (a promoted replica) got their bodies with
    // EVAL, routed like the EVALSHA; nothing was sent to every node.
    let calls: Vec<_> = logs.iter().flat_map(CallLog::calls).collect();
    let evals = calls.iter().filter(|c| c.commands == ["EVAL"]).count();
    eprintln!("EVAL fallbacks: {evals}");
    assert!(
        !calls
            .iter()
            .any(|c| c.commands.iter().any(|n| n == "SCRIPT")),
        "SCRIPT LOAD goes to every node and fails while one is down"
    );

    // Every acknowledged metric counted exactly once, seen by every instance.
    for state in &states {
        let response = metrics_summary(state, summary(&t, true)).await;
        assert_eq!(response.status(), 200, "{}", body_json(&response));
        assert_eq!(body_json(&response)["count"].as_u64(), Some(acknowledged));
    }

    // The cache: a miss then a hit.
    let reader = &states[0];
    let cached_type = random_type("cached");
    assert_eq!(
        metrics_summary(reader, summary(&cached_type, false))
            .await
            .status(),
        200
    );
    let hit = metrics_summary(reader, summary(&cached_type, false)).await;
    assert_eq!(hit.headers()["x-cache"], "HIT");

    // The rate limiter's exact limit, across the instances.
    let limited: Vec<AppState> = (0..INSTANCES)
        .map(|_| {
            AppState::new(cluster_config(
                &seed,
                &prefix,
                &[("RATE_LIMIT_REQUESTS", "5")],
            ))
            .unwrap()
        })
        .collect();
    let attempts = (0..9).map(|i| {
        let body: Value =
            json!({"timestamp": format_timestamp(Utc::now()), "value": 1.0, "type": t});
        let state = &limited[i % INSTANCES];
        async move {
            ingest_metric(
                state,
                http_v2("POST", "/api/metrics")
                    .json(&body)
                    .source_ip("198.51.100.99")
                    .build(),
            )
            .await
            .status()
            .as_u16()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        4,
        "{statuses:?}"
    );

    // The breaker: failures open it for every instance, health shows it.
    let failing = AppState::new(cluster_config(
        &seed,
        &prefix,
        &[
            ("EXTERNAL_SERVICE_FAILURE_RATE", "1"),
            ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "2"),
            ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "60"),
        ],
    ))
    .unwrap();
    for _ in 0..2 {
        let response = metrics_summary(&failing, summary(&random_type("fail"), true)).await;
        assert_eq!(response.status(), 200);
    }
    let healthy = health(reader, http_v2("GET", "/health").build()).await;
    assert_eq!(healthy.status(), 200, "{}", body_json(&healthy));
    let body = body_json(&healthy);
    assert_eq!(
        body["circuit_breaker"]["external_service"], "open",
        "{body}"
    );
    assert_eq!(body["cluster"]["cluster_state"], "ok", "{body}");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_loses_and_duplicates_nothing() {
    let cluster = tokio::task::spawn_blocking(|| PrivateCluster::start(3, 1))
        .await
        .unwrap();
    stream_through(cluster, |cluster, slot| {
        let master = cluster.master_for_slot(slot);
        let replica = cluster.replica_of(&master);
        cluster.failover_manual(&replica);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_nothing_acknowledged_is_lost_or_doubled() {
    let cluster = tokio::task::spawn_blocking(|| PrivateCluster::start(3, 1))
        .await
        .unwrap();
    stream_through(cluster, |cluster, slot| {
        let master = cluster.master_for_slot(slot);
        let promoted = cluster.kill_master(&master);
        assert!(promoted.serves(slot));
    })
    .await;
}
