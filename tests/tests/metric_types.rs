//! The bound on metric types (`MAX_METRIC_TYPES`) and on each client's new
//! types per hour (`MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR`), in-process
//! against the real Redis (a single node, or the cluster with
//! `REDIS_MODE=cluster`), each test under its own key prefix. "Instances"
//! are independent `AppState`s sharing a prefix, each with its own
//! connection and its own memory of registered types.

use std::collections::BTreeSet;
use std::sync::Arc;

use analytics_tests::{
    body_json, config_with_prefix, http_v2, random_prefix, random_type, redis_connection,
};
use chrono::{DateTime, Duration, Utc};
use lambda_http::{Body, Response};
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Value};
use shared::connection::Redis;
use shared::handlers::{ingest_metric, metrics_summary};
use shared::keys::Keys;
use shared::metric::format_timestamp;
use shared::store::buckets::{BucketRef, Granularity};
use shared::AppState;

const GENEROUS: [(&str, &str); 3] = [
    ("RATE_LIMIT_REQUESTS", "1000000"),
    ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
    ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
];

/// An instance of a deployment (`prefix`) with `pairs` besides [`GENEROUS`].
fn instance(prefix: &str, pairs: &[(&str, &str)]) -> AppState {
    let mut all = GENEROUS.to_vec();
    all.extend_from_slice(pairs);
    AppState::new(config_with_prefix(prefix, &all)).unwrap()
}

async fn post(state: &AppState, body: &Value, key: Option<&str>, ip: &str) -> Response<Body> {
    let mut event = http_v2("POST", "/api/metrics").json(body).source_ip(ip);
    if let Some(key) = key {
        event = event.header("Idempotency-Key", key);
    }
    ingest_metric(state, event.build()).await
}

fn metric(t: &str, at: DateTime<Utc>, value: f64) -> Value {
    json!({"timestamp": format_timestamp(at), "value": value, "type": t})
}

fn batch(types: &[String], at: DateTime<Utc>) -> Value {
    Value::Array(types.iter().map(|t| metric(t, at, 1.0)).collect())
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

/// The three containers a metric of `t` at `at` is written into.
fn containers(keys: &Keys, t: &str, at: DateTime<Utc>) -> Vec<String> {
    Granularity::ALL
        .iter()
        .map(|&g| {
            let bucket = BucketRef::containing(g, at.timestamp());
            keys.metric_container(t, g.tag(), bucket.container_start())
        })
        .collect()
}

/// How many of `types` have any container at `at` (each `EXISTS` routed by
/// its key, so this works on a cluster too; a few in flight at a time).
async fn types_with_data(redis: &Redis, keys: &Keys, types: &[String], at: DateTime<Utc>) -> usize {
    use futures::StreamExt;
    let checks = types.iter().map(|t| {
        let mut conn = redis.clone();
        let keys = containers(keys, t, at);
        async move {
            let mut found = false;
            for key in keys {
                let exists: bool = redis::cmd("EXISTS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                found |= exists;
            }
            found
        }
    });
    futures::stream::iter(checks)
        .buffer_unordered(8)
        .filter(|found| std::future::ready(*found))
        .count()
        .await
}

async fn registered(redis: &Redis, keys: &Keys) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(keys.type_registry())
        .arg(0)
        .arg(-1)
        .query_async(&mut redis.clone())
        .await
        .unwrap()
}

async fn score(redis: &Redis, keys: &Keys, t: &str) -> Option<i64> {
    redis::cmd("ZSCORE")
        .arg(keys.type_registry())
        .arg(t)
        .query_async(&mut redis.clone())
        .await
        .unwrap()
}

fn types(label: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| random_type(label)).collect()
}

fn problem_type(response: &Response<Body>) -> String {
    body_json(response)["type"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The hostile client: batches of 500 new types. It fills the
/// deployment up to the cap; the batch that would pass it is refused whole
/// (409, nothing of it written), and so is a batch of existing types holding
/// one new type, while existing types keep working.
#[tokio::test]
async fn batches_of_new_types_stop_at_the_cap_and_nothing_of_a_refused_batch_is_written() {
    let prefix = random_prefix();
    // A budget per client above the cap: this test is about the cap. In
    // cluster mode a batch of 500 types spans ~500 hash slots, so ~1,000
    // storage calls (a check and a write per slot) that can queue past the
    // default 500 ms per command on a busy test machine.
    let limits = [
        ("MAX_METRIC_TYPES", "1200"),
        ("MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR", "5000"),
        ("REDIS_TIMEOUT_MS", "5000"),
        ("REQUEST_DEADLINE_MS", "20000"),
    ];
    let state = instance(&prefix, &limits);
    let keys = Keys::new(&prefix);
    let redis = redis_connection().await;
    let now = Utc::now();
    let hostile = "192.0.2.66";

    let first = types("hostile", 500);
    let second = types("hostile", 500);
    for batch_types in [&first, &second] {
        let response = post(&state, &batch(batch_types, now), None, hostile).await;
        assert_eq!(response.status(), 201, "{}", body_json(&response));
    }
    let refused_types = types("hostile", 500);
    let refused = post(&state, &batch(&refused_types, now), None, hostile).await;
    assert_eq!(refused.status(), 409, "{}", body_json(&refused));
    assert_eq!(
        problem_type(&refused),
        "urn:analytics-api:problem:metric-type-limit"
    );
    let detail = body_json(&refused)["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("MAX_METRIC_TYPES = 1200"), "{detail}");
    assert!(detail.contains("500 metric type(s) new"), "{detail}");
    assert!(refused.headers().get("retry-after").is_none());
    assert_eq!(
        types_with_data(&redis, &keys, &refused_types, now).await,
        0,
        "nothing of the refused batch is written"
    );
    assert_eq!(registered(&redis, &keys).await.len(), 1000);
    let creations: u64 = redis::cmd("ZCARD")
        .arg(keys.type_creations(&client_digest(hostile)))
        .query_async(&mut redis.clone())
        .await
        .unwrap();
    assert_eq!(creations, 1000, "a refused batch spends no budget");

    // Up to the cap exactly.
    let last = types("hostile", 200);
    let response = post(&state, &batch(&last, now), None, hostile).await;
    assert_eq!(response.status(), 201, "{}", body_json(&response));
    assert_eq!(registered(&redis, &keys).await.len(), 1200);

    // Existing types keep working, from any client and any instance.
    let other_instance = instance(&prefix, &limits);
    let existing = post(&other_instance, &batch(&first, now), None, "192.0.2.67").await;
    assert_eq!(existing.status(), 201, "{}", body_json(&existing));
    assert_eq!(count(&state, &first[0]).await, 2);

    // One new type among 499 existing ones: the whole batch is refused.
    let mut mixed = second[..499].to_vec();
    let newcomer = random_type("hostile");
    mixed.push(newcomer.clone());
    let refused = post(&other_instance, &batch(&mixed, now), None, "192.0.2.67").await;
    assert_eq!(refused.status(), 409, "{}", body_json(&refused));
    assert_eq!(
        count(&state, &second[0]).await,
        1,
        "no existing type gained"
    );
    assert_eq!(count(&state, &second[498]).await, 1);
    assert_eq!(types_with_data(&redis, &keys, &[newcomer], now).await, 0);
    let single = post(
        &state,
        &metric(&random_type("one"), now, 1.0),
        None,
        hostile,
    )
    .await;
    assert_eq!(single.status(), 409);
    assert_eq!(registered(&redis, &keys).await.len(), 1200);
}

/// Six instances send requests of one to three types drawn from a pool of
/// 100 new types, concurrently, around a cap of 40: exactly 40 types are
/// accepted across all of them, and only those hold data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_instances_admit_exactly_the_cap() {
    const CAP: usize = 40;
    let prefix = random_prefix();
    let pool = Arc::new(types("race", 100));
    let now = Utc::now();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let state = Arc::new(instance(&prefix, &[("MAX_METRIC_TYPES", "40")]));
        let pool = Arc::clone(&pool);
        tasks.push(tokio::spawn(async move {
            let mut accepted: BTreeSet<String> = BTreeSet::new();
            let mut refused = 0;
            for round in 0..10 {
                let bodies: Vec<Vec<String>> = (0..4)
                    .map(|_| {
                        let mut rng = rand::rng();
                        let n = rng.random_range(1..=3);
                        pool.choose_multiple(&mut rng, n).cloned().collect()
                    })
                    .collect();
                let ip = format!("192.0.2.{}", 100 + i);
                let sent = bodies.iter().map(|types| {
                    let state = Arc::clone(&state);
                    let ip = ip.clone();
                    let body = batch(types, now);
                    async move { post(&state, &body, None, &ip).await }
                });
                let responses = futures::future::join_all(sent).await;
                for (types, response) in bodies.iter().zip(responses) {
                    match response.status().as_u16() {
                        201 => accepted.extend(types.iter().cloned()),
                        409 => refused += 1,
                        other => panic!("round {round}: {other} {}", body_json(&response)),
                    }
                }
            }
            (accepted, refused)
        }));
    }
    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    for task in tasks {
        let (types, n) = task.await.unwrap();
        accepted.extend(types);
        refused += n;
    }
    assert_eq!(accepted.len(), CAP, "exactly the cap, across instances");
    assert!(refused > 0, "the pool is larger than the cap");
    let keys = Keys::new(&prefix);
    let redis = redis_connection().await;
    let registry: BTreeSet<String> = registered(&redis, &keys).await.into_iter().collect();
    assert_eq!(registry, accepted);
    let rejected: Vec<String> = pool
        .iter()
        .filter(|t| !accepted.contains(*t))
        .cloned()
        .collect();
    assert_eq!(types_with_data(&redis, &keys, &rejected, now).await, 0);
    let stored: Vec<String> = accepted.into_iter().collect();
    assert_eq!(types_with_data(&redis, &keys, &stored, now).await, CAP);
}

/// A client's new types per hour are limited (429 + `Retry-After`), while
/// its existing types and other clients' new types still go through; a
/// request holding more new types than the budget can never fit (422).
#[tokio::test]
async fn each_client_has_a_budget_of_new_types_per_hour() {
    let prefix = random_prefix();
    let state = instance(
        &prefix,
        &[("MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR", "3")],
    );
    let keys = Keys::new(&prefix);
    let redis = redis_connection().await;
    let now = Utc::now();
    let mine = types("budget", 3);
    for t in &mine {
        let response = post(&state, &metric(t, now, 1.0), None, "192.0.2.10").await;
        assert_eq!(response.status(), 201, "{}", body_json(&response));
    }
    let fourth = random_type("budget");
    let refused = post(&state, &metric(&fourth, now, 1.0), None, "192.0.2.10").await;
    assert_eq!(refused.status(), 429, "{}", body_json(&refused));
    assert_eq!(
        problem_type(&refused),
        "urn:analytics-api:problem:new-metric-types-rate-limited"
    );
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3_590..=3_600).contains(&retry_after), "{retry_after}");
    let detail = body_json(&refused)["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR = 3"),
        "{detail}"
    );
    assert!(refused.headers().contains_key("ratelimit"));
    assert_eq!(
        types_with_data(&redis, &keys, std::slice::from_ref(&fourth), now).await,
        0
    );
    assert_eq!(score(&redis, &keys, &fourth).await, None);

    let existing = post(&state, &batch(&mine, now), None, "192.0.2.10").await;
    assert_eq!(existing.status(), 201, "{}", body_json(&existing));
    let other = post(&state, &metric(&fourth, now, 1.0), None, "192.0.2.11").await;
    assert_eq!(
        other.status(),
        201,
        "another client has a budget of its own"
    );
    // Now an existing type: the first client may send it too.
    let now_existing = post(&state, &metric(&fourth, now, 2.0), None, "192.0.2.10").await;
    assert_eq!(now_existing.status(), 201);

    let too_many = types("budget", 4);
    let never = post(&state, &batch(&too_many, now), None, "192.0.2.12").await;
    assert_eq!(never.status(), 422, "{}", body_json(&never));
    assert!(never.headers().get("retry-after").is_none());
    assert_eq!(types_with_data(&redis, &keys, &too_many, now).await, 0);
}

/// A retry of an accepted request replays, also once the cap is reached,
/// on the instance that stored it and on one that never saw its types.
#[tokio::test]
async fn an_idempotent_retry_replays_at_the_cap() {
    let prefix = random_prefix();
    let state = instance(&prefix, &[("MAX_METRIC_TYPES", "2")]);
    let now = Utc::now();
    let body = batch(&types("replay", 2), now);
    let first = post(&state, &body, Some("k-1"), "192.0.2.20").await;
    assert_eq!(first.status(), 201, "{}", body_json(&first));
    let full = post(
        &state,
        &metric(&random_type("x"), now, 1.0),
        None,
        "192.0.2.20",
    )
    .await;
    assert_eq!(full.status(), 409);
    for replaying in [&state, &instance(&prefix, &[("MAX_METRIC_TYPES", "2")])] {
        let again = post(replaying, &body, Some("k-1"), "192.0.2.20").await;
        assert_eq!(again.status(), 201, "{}", body_json(&again));
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(body_json(&again), body_json(&first));
    }
}

/// A request the storage refuses after its types were admitted (a bucket
/// overflow, a reused `Idempotency-Key`) leaves no registration and spends
/// no budget.
#[tokio::test]
async fn a_request_refused_by_the_storage_leaves_no_registration() {
    let prefix = random_prefix();
    let state = instance(
        &prefix,
        &[("MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR", "2")],
    );
    let keys = Keys::new(&prefix);
    let redis = redis_connection().await;
    let now = Utc::now();
    let ip = "192.0.2.30";

    let big = random_type("overflow");
    let overflow = json!([metric(&big, now, 1.7e308), metric(&big, now, 1.7e308)]);
    let refused = post(&state, &overflow, None, ip).await;
    assert_eq!(refused.status(), 422, "{}", body_json(&refused));
    assert_eq!(score(&redis, &keys, &big).await, None);

    let a = random_type("reuse");
    assert_eq!(
        post(&state, &metric(&a, now, 1.0), Some("k"), ip)
            .await
            .status(),
        201
    );
    let b = random_type("reuse");
    let reused = post(&state, &metric(&b, now, 1.0), Some("k"), ip).await;
    assert_eq!(reused.status(), 422, "{}", body_json(&reused));
    assert_eq!(
        problem_type(&reused),
        "urn:analytics-api:problem:idempotency-key-reused"
    );
    assert_eq!(score(&redis, &keys, &b).await, None);
    assert_eq!(registered(&redis, &keys).await, vec![a.clone()]);

    // Budget 2: one spent (a); both refused requests gave theirs back.
    let fixed = post(&state, &metric(&big, now, 1.0), None, ip).await;
    assert_eq!(fixed.status(), 201, "{}", body_json(&fixed));
    assert_eq!(
        post(&state, &metric(&b, now, 1.0), None, ip).await.status(),
        429,
        "the third new type of the hour"
    );
}

/// A type counts at least as long as any of its containers lives, and at
/// least `IDEMPOTENCY_TTL_SECONDS` after its last write (here longer than
/// the data's retention); the registry key expires with its last member.
#[tokio::test]
async fn a_type_counts_as_long_as_its_data_lives() {
    let prefix = random_prefix();
    let state = instance(
        &prefix,
        &[
            ("METRIC_RETENTION_DAYS", "1"),
            ("IDEMPOTENCY_TTL_SECONDS", "2592000"),
        ],
    );
    let keys = Keys::new(&prefix);
    let redis = redis_connection().await;
    let now = Utc::now();
    let t = random_type("expiry");
    let times = [now, now - Duration::hours(12), now - Duration::hours(23)];
    let body = Value::Array(times.iter().map(|at| metric(&t, *at, 1.0)).collect());
    let response = post(&state, &body, None, "192.0.2.40").await;
    assert_eq!(response.status(), 201, "{}", body_json(&response));

    let counted_until = score(&redis, &keys, &t).await.expect("registered");
    for at in times {
        for key in containers(&keys, &t, at) {
            let expires: i64 = redis::cmd("EXPIRETIME")
                .arg(&key)
                .query_async(&mut redis.clone())
                .await
                .unwrap();
            assert!(expires > 0, "{key} exists and expires");
            assert!(expires <= counted_until, "{key} outlives its registration");
        }
    }
    assert!(
        counted_until >= now.timestamp() + 2_592_000,
        "a retry within the idempotency TTL finds the type"
    );
    let registry_expires: i64 = redis::cmd("EXPIRETIME")
        .arg(keys.type_registry())
        .query_async(&mut redis.clone())
        .await
        .unwrap();
    assert_eq!(registry_expires, counted_until);
}

/// The 32-hex client digest the service keys creations by (as for
/// idempotency records): SHA-256 of the client identity, `ip:<address>`.
fn client_digest(ip: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("ip:{ip}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}
