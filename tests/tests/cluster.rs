//! The service on a Redis Cluster: every script call touches one hash slot,
//! and a batch spanning several slots keeps the guarantees the README states.
//!
//! Each test runs against a [`PrivateCluster`] of its own (3 masters, private
//! `redis-server`s on free ports), so it runs in the single-node suite too.
//! The batch tests also run on the suite's Redis (a single node or, with
//! `REDIS_MODE=cluster`, the shared cluster) to show what holds in both modes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use analytics_tests::private_cluster::PrivateCluster;
use analytics_tests::{body_json, config, http_v2, random_prefix, random_type};
use chrono::Utc;
use lambda_http::{Body, Request, Response};
use redis::cluster_routing::Slot;
use serde_json::{json, Value};
use shared::config::Config;
use shared::connection::{CallLog, Redis};
use shared::handlers::{health, ingest_metric, metrics_series, metrics_summary};
use shared::keys::Keys;
use shared::metric::format_timestamp;
use shared::AppState;

const GENEROUS: [(&str, &str); 4] = [
    ("RATE_LIMIT_REQUESTS", "1000000"),
    ("SUMMARY_RATE_LIMIT_REQUESTS", "1000000"),
    ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
    ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
];

/// A configuration for `cluster`: cluster mode, its first node as `REDIS_URL`,
/// a fresh prefix, then `pairs`.
fn cluster_config(cluster: &PrivateCluster, prefix: &str, pairs: &[(&str, &str)]) -> Config {
    let url = cluster.seed_url();
    let mut all: Vec<(&str, &str)> = vec![
        ("REDIS_URL", &url),
        ("REDIS_MODE", "cluster"),
        ("REDIS_KEY_PREFIX", prefix),
    ];
    all.extend_from_slice(pairs);
    Config::from_pairs(&all).expect("a valid cluster configuration")
}

/// A handler state whose connection records every call into `log`.
fn recorded(config: Config, log: &mut Vec<CallLog>) -> AppState {
    let mut redis = Redis::from_settings(&config.redis).unwrap();
    log.push(redis.record_calls());
    AppState::with_redis(config, redis).unwrap()
}

fn ingest(body: &Value, key: Option<&str>, ip: &str) -> Request {
    let mut event = http_v2("POST", "/api/metrics").json(body).source_ip(ip);
    if let Some(key) = key {
        event = event.header("Idempotency-Key", key);
    }
    event.build()
}

fn summary(t: &str, no_cache: bool) -> Request {
    let mut event =
        http_v2("GET", "/api/metrics/summary").query(&format!("type={t}&period=hourly"));
    if no_cache {
        event = event.header("cache-control", "no-cache");
    }
    event.build()
}

fn metric(t: &str, value: f64) -> Value {
    json!({"timestamp": format_timestamp(Utc::now()), "value": value, "type": t})
}

/// `n` fresh metric types whose bucket keys hash to `n` different slots.
fn types_in_different_slots(prefix: &str, n: usize) -> Vec<String> {
    let keys = Keys::new(prefix);
    let mut slots = Vec::new();
    let mut types = Vec::new();
    while types.len() < n {
        let t = random_type("slot");
        let slot = Slot::for_key(keys.metric_base(&t));
        if !slots.contains(&slot) {
            slots.push(slot);
            types.push(t);
        }
    }
    types
}

async fn count(state: &AppState, t: &str) -> u64 {
    let response = metrics_summary(state, summary(t, true)).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    body_json(&response)["count"].as_u64().unwrap()
}

fn status(response: &Response<Body>) -> u16 {
    response.status().as_u16()
}

#[tokio::test]
async fn every_call_the_service_makes_touches_one_hash_slot() {
    let cluster = tokio::task::spawn_blocking(|| PrivateCluster::start(3, 0))
        .await
        .unwrap();
    let prefix = random_prefix();
    let mut logs = Vec::new();
    let state = recorded(cluster_config(&cluster, &prefix, &GENEROUS), &mut logs);
    let [a, b, c]: [String; 3] = types_in_different_slots(&prefix, 3).try_into().unwrap();

    // Ingest: single, keyed single, a keyed replay, batches over three slots
    // with and without a key, a reused key.
    assert_eq!(
        status(&ingest_metric(&state, ingest(&metric(&a, 1.0), None, "192.0.2.1")).await),
        201
    );
    let single = metric(&a, 2.0);
    assert_eq!(
        status(&ingest_metric(&state, ingest(&single, Some("k1"), "192.0.2.1")).await),
        201
    );
    let replay = ingest_metric(&state, ingest(&single, Some("k1"), "192.0.2.1")).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let batch = json!([
        metric(&a, 1.0),
        metric(&b, 2.0),
        metric(&c, 3.0),
        metric(&b, 4.0)
    ]);
    assert_eq!(
        status(&ingest_metric(&state, ingest(&batch, None, "192.0.2.1")).await),
        201
    );
    assert_eq!(
        status(&ingest_metric(&state, ingest(&batch, Some("k2"), "192.0.2.1")).await),
        201
    );
    let replay = ingest_metric(&state, ingest(&batch, Some("k2"), "192.0.2.1")).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        status(&ingest_metric(&state, ingest(&metric(&c, 9.0), Some("k2"), "192.0.2.1")).await),
        422
    );

    // The type registry: claims and confirms above; a refusal at the cap, a
    // client's budget spent, the release after an overflow.
    let capped = recorded(
        cluster_config(
            &cluster,
            &prefix,
            &[
                GENEROUS[0],
                ("MAX_METRIC_TYPES", "5"),
                ("MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR", "1"),
            ],
        ),
        &mut logs,
    );
    let fresh = random_type("capped");
    assert_eq!(
        status(&ingest_metric(&capped, ingest(&metric(&fresh, 1.0), None, "192.0.2.2")).await),
        201
    );
    let budget = ingest_metric(
        &capped,
        ingest(&metric(&random_type("b"), 1.0), None, "192.0.2.2"),
    );
    assert_eq!(status(&budget.await), 429);
    // Types a, b, c, fresh and this one make five, the cap.
    let last = ingest_metric(
        &capped,
        ingest(&metric(&random_type("c"), 1.0), None, "192.0.2.3"),
    );
    assert_eq!(status(&last.await), 201);
    let full = ingest_metric(
        &capped,
        ingest(&metric(&random_type("d"), 1.0), None, "192.0.2.4"),
    );
    assert_eq!(status(&full.await), 409);
    let big = random_type("overflow");
    let overflow = json!([metric(&big, 1.7e308), metric(&big, 1.7e308)]);
    let uncapped = recorded(cluster_config(&cluster, &prefix, &GENEROUS), &mut logs);
    assert_eq!(
        status(&ingest_metric(&uncapped, ingest(&overflow, None, "192.0.2.4")).await),
        422
    );

    // Summaries: miss, hit, no-cache; health.
    assert_eq!(
        status(&metrics_summary(&state, summary(&a, false)).await),
        200
    );
    let hit = metrics_summary(&state, summary(&a, false)).await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(
        status(&metrics_summary(&state, summary(&b, true)).await),
        200
    );
    // A series: its limiter, the cache, every step's buckets in one call.
    for _ in 0..2 {
        let series = http_v2("GET", "/api/metrics/series")
            .query(&format!("type={a}&period=daily&step=1h"))
            .build();
        let response = metrics_series(&state, series).await;
        assert_eq!(status(&response), 200, "{}", body_json(&response));
    }
    // Tags: a tagged metric (its claim, then its series in the same call
    // as the type's), a tagged batch over three slots, filtered, grouped
    // and multi-filter summaries, a grouped series.
    let tagged = |t: &str, host: &str| {
        let mut m = metric(t, 1.0);
        m["tags"] = json!({"host": host, "region": "eu"});
        m
    };
    assert_eq!(
        status(&ingest_metric(&state, ingest(&tagged(&a, "h1"), None, "192.0.2.1")).await),
        201
    );
    let batch = json!([tagged(&a, "h2"), tagged(&b, "h1"), tagged(&c, "h3")]);
    assert_eq!(
        status(&ingest_metric(&state, ingest(&batch, Some("k3"), "192.0.2.1")).await),
        201
    );
    for query in [
        "tag.host=h1",
        "tag.host=h1&tag.region=eu",
        "group_by=host",
        "tag.region=eu&group_by=host",
    ] {
        let request = http_v2("GET", "/api/metrics/summary")
            .query(&format!("type={a}&period=hourly&{query}"))
            .build();
        let response = metrics_summary(&state, request).await;
        assert_eq!(status(&response), 200, "{query}: {}", body_json(&response));
    }
    let series = http_v2("GET", "/api/metrics/series")
        .query(&format!("type={a}&period=hourly&step=5m&group_by=host"))
        .build();
    let response = metrics_series(&state, series).await;
    assert_eq!(
        body_json(&response)["groups"].as_array().map(Vec::len),
        Some(2),
        "{}",
        body_json(&response)
    );
    let healthy = health(&state, http_v2("GET", "/health").build()).await;
    assert_eq!(status(&healthy), 200, "{}", body_json(&healthy));
    assert_eq!(body_json(&healthy)["cluster"]["cluster_state"], "ok");
    assert_eq!(body_json(&healthy)["cluster"]["masters_reachable"], 3);

    // The breaker: failures open it, a summary is then rejected at once,
    // after the reset timeout a probe closes it again.
    let failing = recorded(
        cluster_config(
            &cluster,
            &prefix,
            &[
                ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
                ("EXTERNAL_SERVICE_FAILURE_RATE", "1"),
                ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "2"),
                ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
            ],
        ),
        &mut logs,
    );
    for _ in 0..3 {
        let t = random_type("open");
        assert_eq!(
            status(&metrics_summary(&failing, summary(&t, true)).await),
            200
        );
    }
    let opened = health(&failing, http_v2("GET", "/health").build()).await;
    assert_eq!(
        body_json(&opened)["circuit_breaker"]["external_service"],
        "open"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let recovered = recorded(
        cluster_config(
            &cluster,
            &prefix,
            &[
                ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
                ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
                ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
            ],
        ),
        &mut logs,
    );
    let probe = metrics_summary(&recovered, summary(&random_type("probe"), true)).await;
    assert_eq!(
        body_json(&probe)["external_data"]["status"],
        "success",
        "{}",
        body_json(&probe)
    );
    let closed = health(&recovered, http_v2("GET", "/health").build()).await;
    assert_eq!(
        body_json(&closed)["circuit_breaker"]["external_service"],
        "closed"
    );

    // Every rate-limit algorithm, up to a refusal.
    for algorithm in ["sliding_log", "sliding_window_counter", "token_bucket"] {
        let limited = recorded(
            cluster_config(
                &cluster,
                &prefix,
                &[
                    ("RATE_LIMIT_ALGORITHM", algorithm),
                    ("RATE_LIMIT_REQUESTS", "2"),
                ],
            ),
            &mut logs,
        );
        let statuses: Vec<u16> = futures::future::join_all(
            (0..3).map(|_| ingest_metric(&limited, ingest(&metric(&a, 1.0), None, "192.0.2.9"))),
        )
        .await
        .iter()
        .map(status)
        .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            1,
            "{algorithm}: {statuses:?}"
        );
    }

    // Every recorded call: all its keys in one slot (CRC16 as Redis computes
    // it, checked against CLUSTER KEYSLOT), and every script has a key.
    let calls: Vec<_> = logs.iter().flat_map(CallLog::calls).collect();
    assert!(
        calls.len() > 30,
        "the paths above made {} calls",
        calls.len()
    );
    let mut slots_by_key: BTreeMap<String, u16> = BTreeMap::new();
    for key in calls
        .iter()
        .flat_map(|c| c.keys.iter())
        .collect::<BTreeSet<_>>()
    {
        slots_by_key.insert(key.clone(), cluster.keyslot(key));
    }
    for key in slots_by_key.keys() {
        assert!(
            key.starts_with(&prefix),
            "{key} is outside the test's prefix"
        );
    }
    for call in &calls {
        let scripts = call
            .commands
            .iter()
            .filter(|c| c.starts_with("EVAL"))
            .count();
        assert!(
            scripts == 0 || !call.keys.is_empty(),
            "a script call without keys goes to a random node: {call:?}"
        );
        let slots: BTreeSet<u16> = call.keys.iter().map(|k| slots_by_key[k]).collect();
        assert!(slots.len() <= 1, "a call spans slots {slots:?}: {call:?}");
        let crc: std::collections::HashSet<Slot> = call.keys.iter().map(Slot::for_key).collect();
        assert!(
            crc.len() <= 1,
            "CRC16 disagrees with CLUSTER KEYSLOT: {call:?}"
        );
    }
}

/// A batch whose second type would overflow a bucket sum: refused as a whole.
async fn overflow_in_one_slot_stores_nothing_anywhere(state: &AppState, prefix: &str) {
    let [ok, big]: [String; 2] = types_in_different_slots(prefix, 2).try_into().unwrap();
    let batch = json!([
        metric(&ok, 1.0),
        metric(&big, 1.7e308),
        metric(&big, 1.7e308)
    ]);
    for key in [None, Some("overflow")] {
        let refused = ingest_metric(state, ingest(&batch, key, "192.0.2.20")).await;
        assert_eq!(status(&refused), 422, "{}", body_json(&refused));
        assert_eq!(body_json(&refused)["errors"][0]["index"], 2);
        assert_eq!(
            count(state, &ok).await,
            0,
            "no part of a refused batch is stored"
        );
        assert_eq!(count(state, &big).await, 0);
    }
    // The key was not remembered: a corrected body may use it.
    let corrected = json!([metric(&ok, 1.0), metric(&big, 1.0)]);
    let stored = ingest_metric(state, ingest(&corrected, Some("overflow"), "192.0.2.20")).await;
    assert_eq!(status(&stored), 201, "{}", body_json(&stored));
    assert_eq!((count(state, &ok).await, count(state, &big).await), (1, 1));
}

/// A keyed batch over two slots of which only the first part reached Redis
/// (the state a failure between the per-slot writes leaves: the second
/// type's buckets and record are removed after a complete store): a retry
/// stores exactly the missing part and replays the other.
async fn a_keyed_retry_completes_a_partial_batch_exactly_once(
    cluster: &PrivateCluster,
    state: &AppState,
    prefix: &str,
) {
    let [first, second]: [String; 2] = types_in_different_slots(prefix, 2).try_into().unwrap();
    let at = format_timestamp(Utc::now());
    let batch = json!([
        {"timestamp": at, "value": 1.0, "type": first},
        {"timestamp": at, "value": 2.0, "type": second},
        {"timestamp": at, "value": 3.0, "type": first},
    ]);
    let stored = ingest_metric(state, ingest(&batch, Some("partial"), "192.0.2.21")).await;
    assert_eq!(status(&stored), 201, "{}", body_json(&stored));
    let removed = remove_type(cluster, prefix, &second);
    assert!(
        removed >= 4,
        "3 containers and the type's record: {removed} keys"
    );
    assert_eq!(
        (count(state, &first).await, count(state, &second).await),
        (2, 0)
    );

    let retried = ingest_metric(state, ingest(&batch, Some("partial"), "192.0.2.21")).await;
    assert_eq!(status(&retried), 201, "{}", body_json(&retried));
    assert_eq!(
        count(state, &first).await,
        2,
        "the stored part is not stored again"
    );
    assert_eq!(count(state, &second).await, 1, "the missing part is stored");
    let again = ingest_metric(state, ingest(&batch, Some("partial"), "192.0.2.21")).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        (count(state, &first).await, count(state, &second).await),
        (2, 1)
    );
    // The same key with another body is refused, even one of other types.
    let other = json!([metric(&random_type("other"), 1.0)]);
    let reused = ingest_metric(state, ingest(&other, Some("partial"), "192.0.2.21")).await;
    assert_eq!(status(&reused), 422, "{}", body_json(&reused));
}

/// Deletes every key of metric type `t` under `prefix` (all in one slot,
/// listed by `CLUSTER GETKEYSINSLOT` on its master); returns how many.
fn remove_type(cluster: &PrivateCluster, prefix: &str, t: &str) -> usize {
    let tag = format!("{prefix}:{{{t}}}:");
    let slot = cluster.keyslot(&tag);
    let master = cluster.master_for_slot(slot);
    let mut conn = cluster.connection(master.port);
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(10_000)
        .query(&mut conn)
        .unwrap();
    let ours: Vec<&String> = keys.iter().filter(|k| k.starts_with(&tag)).collect();
    for key in &ours {
        let _: () = redis::cmd("DEL").arg(key).query(&mut conn).unwrap();
    }
    ours.len()
}

#[tokio::test]
async fn batches_across_slots_on_a_private_cluster() {
    let cluster = tokio::task::spawn_blocking(|| PrivateCluster::start(3, 0))
        .await
        .unwrap();
    let prefix = random_prefix();
    let state = AppState::new(cluster_config(&cluster, &prefix, &GENEROUS)).unwrap();
    overflow_in_one_slot_stores_nothing_anywhere(&state, &prefix).await;
    a_keyed_retry_completes_a_partial_batch_exactly_once(&cluster, &state, &prefix).await;
}

#[tokio::test]
async fn batches_across_slots_on_the_suite_redis() {
    let config = config(&GENEROUS);
    let prefix = config.redis.key_prefix.clone();
    let state = AppState::new(config).unwrap();
    overflow_in_one_slot_stores_nothing_anywhere(&state, &prefix).await;
}

#[tokio::test]
async fn cluster_mode_is_configured_by_redis_mode() {
    let err = Config::from_pairs(&[("REDIS_MODE", "sharded")]).unwrap_err();
    assert_eq!(err.variable, "REDIS_MODE");
    let err = Config::from_pairs(&[
        ("REDIS_MODE", "cluster"),
        ("REDIS_URL", "redis://127.0.0.1:7000/2"),
    ])
    .unwrap_err();
    assert_eq!(err.variable, "REDIS_URL");
    // Building touches no network, even with no cluster there.
    let config = Config::from_pairs(&[
        ("REDIS_MODE", "cluster"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("REDIS_TIMEOUT_MS", "100"),
    ])
    .unwrap();
    let state = AppState::new(config).unwrap();
    assert_eq!(state.redis.round_trips(), 0);
    let started = std::time::Instant::now();
    let response = health(&state, http_v2("GET", "/health").build()).await;
    assert_eq!(status(&response), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn health_answers_503_while_a_slot_is_not_served() {
    let cluster = tokio::task::spawn_blocking(|| PrivateCluster::start(3, 0))
        .await
        .unwrap();
    let state = AppState::new(cluster_config(&cluster, &random_prefix(), &GENEROUS)).unwrap();
    let healthy = health(&state, http_v2("GET", "/health").build()).await;
    assert_eq!(status(&healthy), 200, "{}", body_json(&healthy));
    assert_eq!(body_json(&healthy)["cluster"]["masters"], 3);

    // Another slot of the breaker's master is served by nobody (every node
    // forgets it): the cluster reports itself failing.
    let breaker_slot = cluster.keyslot(&state.keys.breaker("external_service"));
    let master = cluster.master_for_slot(breaker_slot);
    let other = master
        .slots
        .iter()
        .flat_map(|range| range.clone())
        .find(|slot| *slot != breaker_slot)
        .unwrap();
    for node in cluster.nodes() {
        let _: () = redis::cmd("CLUSTER")
            .arg("DELSLOTS")
            .arg(other)
            .query(&mut cluster.connection(node.port))
            .unwrap();
    }
    let mut degraded = None;
    for _ in 0..50 {
        let response = health(&state, http_v2("GET", "/health").build()).await;
        if status(&response) == 503 {
            degraded = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let degraded = degraded.expect("health answers 503 while a slot is not served");
    assert!(degraded.headers().contains_key("retry-after"));
    let body = body_json(&degraded);
    assert_eq!(body["cluster"]["cluster_state"], "fail", "{body}");
    assert_eq!(body["redis"], "unhealthy", "{body}");

    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTS")
        .arg(other)
        .query(&mut cluster.connection(master.port))
        .unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        if status(&health(&state, http_v2("GET", "/health").build()).await) == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "health answers 200 once every slot is served again"
    );
}

#[tokio::test]
async fn health_reads_the_eviction_policy_of_every_master() {
    let cluster = tokio::task::spawn_blocking(|| PrivateCluster::start(3, 0))
        .await
        .unwrap();
    let state = AppState::new(cluster_config(&cluster, &random_prefix(), &GENEROUS)).unwrap();
    let get = || async {
        let before = state.redis.round_trips();
        let response = health(&state, http_v2("GET", "/health").build()).await;
        (
            status(&response),
            body_json(&response),
            state.redis.round_trips() - before,
        )
    };
    let (code, body, _) = get().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["memory"]["maxmemory_policy"], "noeviction", "{body}");
    // The pipeline to the breaker's master and INFO to every master.
    assert_eq!(get().await.2, 2);

    // One master other than the breaker's may evict: health says so.
    let breaker_slot = cluster.keyslot(&state.keys.breaker("external_service"));
    let other = cluster
        .masters()
        .into_iter()
        .find(|m| !m.serves(breaker_slot))
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-policy", "volatile-lru"])
        .query(&mut cluster.connection(other.port))
        .unwrap();
    let (code, body, _) = get().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["conditions"][0]["name"], "evicting_policy", "{body}");
    assert_eq!(body["memory"]["maxmemory_policy"], "volatile-lru", "{body}");
    assert_eq!(body["cluster"]["cluster_state"], "ok", "{body}");
}

#[tokio::test]
async fn round_trips_in_cluster_mode() {
    let cluster = tokio::task::spawn_blocking(|| PrivateCluster::start(3, 0))
        .await
        .unwrap();
    let prefix = random_prefix();
    let state = AppState::new(cluster_config(&cluster, &prefix, &GENEROUS)).unwrap();
    let [a, b, c]: [String; 3] = types_in_different_slots(&prefix, 3).try_into().unwrap();
    let rounds = |request: Request| {
        let state = &state;
        async move {
            let before = state.redis.round_trips();
            let response = ingest_metric(state, request).await;
            assert_eq!(status(&response), 201, "{}", body_json(&response));
            state.redis.round_trips() - before
        }
    };
    // Warm-up: every node caches the script (a first call costs an EVAL more).
    let batch = |v: f64| json!([metric(&a, v), metric(&b, v), metric(&c, v)]);
    rounds(ingest(&batch(0.0), Some("warm"), "192.0.2.30")).await;
    rounds(ingest(&batch(0.5), None, "192.0.2.30")).await;

    // limiter + storage, as on one node
    assert_eq!(
        rounds(ingest(&metric(&a, 1.0), None, "192.0.2.30")).await,
        2
    );
    // + the key's claim
    assert_eq!(
        rounds(ingest(&metric(&a, 1.0), Some("k"), "192.0.2.30")).await,
        3
    );
    // limiter + a check and a write per slot
    assert_eq!(
        rounds(ingest(&batch(1.0), None, "192.0.2.30")).await,
        1 + 3 + 3
    );
    // + the key's claim
    assert_eq!(
        rounds(ingest(&batch(2.0), Some("kb"), "192.0.2.30")).await,
        1 + 1 + 3 + 3
    );
}
