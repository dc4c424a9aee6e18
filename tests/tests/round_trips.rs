//! Redis round trips per request on every hot path, counted (not timed) on
//! the handler state's own connection. These budgets are the performance
//! contract of the service; a change that adds a round trip fails here.
//!
//! | path | round trips |
//! |---|---|
//! | ingest, accepted | 1 (the limiter and the storage in one script call), for one metric or a batch of 500 |
//! | ingest, rate-limited | 1 |
//! | summary, cache hit | 1 (one `GET`: no script, no limiter) |
//! | summary, cache miss | 7 (the `GET`, the summary limiter, lookup-or-lock, buckets, breaker acquire, breaker report, store-and-unlock) |
//! | summary, rate-limited (cache miss) | 2 (the `GET`, the limiter) |
//! | series, cache hit | 1 (one `GET`) |
//! | series, cache miss | 5 (the `GET`, its limiter, lookup-or-lock, the buckets of every point in one script call, store-and-unlock) |
//! | health | 1 (`PING`, the breaker state, a probe script and `INFO` pipelined) |
//! | ingest of a metric type new to the deployment | 4: the limiter, the type registry's claim, the storage, the confirm (`MAX_METRIC_TYPES`), once per type |
//! | ingest of a type new to the instance | 3: the limiter, the claim, the storage; then 1 for `store::registry::RECHECK` (60 s) |
//!
//! The hot paths above ingest a type the instance registered in its
//! warm-up, so they pay nothing for the registry: an instance remembers
//! which types it registered and claims a type again only after the recheck
//! interval or when a write needs a later expiry (a new 32-day container).
//! | ingest, tagged, tag values new to the instance | 3 (limiter, the claim of the tags against their caps, storage) |
//! | ingest, tagged, known tag values | 1 |
//! | summary with one tag filter, cache miss | 7 (one series, as unfiltered) |
//! | summary with `group_by` or two filters, cache miss | 8 (the registry of values or combinations, then the buckets) |
//! | series with `group_by`, cache miss | 6 |
//!
//! An ingest that needs a claim (a type or tag new to the instance) or
//! whose body is invalid runs the limiter's call first and anything else
//! only if the request was accepted, so a refused request never claims.
//!
//! With `REDIS_MODE=cluster` the budgets are the same for these paths (one
//! metric type, no `Idempotency-Key`), except an accepted ingest: 2 (the
//! limiter's key and the type's keys lie in different hash slots), and
//! health: 2, sent concurrently (the pipeline to the breaker's master,
//! `INFO` to every master). A
//! keyed ingest adds the claim of its
//! key (1), and a batch spanning k hash slots makes 2 × k storage calls (a
//! read-only check and a write per slot), sent concurrently.
//!
//! The paths and budgets are defined once, in `synthetic_events::round_trips`;
//! `make bench` counts the same paths again and reports them in
//! BENCHMARKS.md (figure 1).

use analytics_tests::{config, config_with_prefix, http_v2, random_prefix, random_type};
use serde_json::json;
use shared::handlers::ingest_metric;
use shared::metric::format_timestamp;
use shared::AppState;
use synthetic_events::next_client_ip;
use synthetic_events::round_trips::{count, hot_paths, tagged_paths};

#[tokio::test]
async fn hot_paths_stay_within_their_round_trip_budget() {
    let state = AppState::new(config(&[
        ("RATE_LIMIT_REQUESTS", "3"),
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
    ]))
    .unwrap();
    let counted = hot_paths(&state, &random_type("rt")).await.unwrap();
    assert_eq!(counted.len(), 9);
    for c in counted {
        assert_eq!(
            (c.status, c.round_trips),
            (c.expected_status, c.budget),
            "{}",
            c.path
        );
    }
}

/// A metric type pays the registry once: its first ingest in the deployment
/// costs the limiter, the claim, the storage and the confirm, its first on
/// another instance the limiter, the claim and the storage, every later one
/// what any known type costs.
#[tokio::test]
async fn a_new_metric_type_pays_its_registration_once_per_instance() {
    let prefix = random_prefix();
    let instance = || {
        AppState::new(config_with_prefix(
            &prefix,
            &[("RATE_LIMIT_REQUESTS", "1000")],
        ))
        .unwrap()
    };
    let ingest = |t: &str| {
        let metric =
            json!({"timestamp": format_timestamp(chrono::Utc::now()), "value": 1.0, "type": t});
        http_v2("POST", "/api/metrics")
            .json(&metric)
            .source_ip(&next_client_ip())
            .build()
    };
    let (first, second) = (instance(), instance());
    // Once known: the limiter and the storage, one call on a single node.
    let known = match first.redis.mode() {
        shared::connection::RedisMode::Cluster => 2,
        _ => 1,
    };
    // Warm-up: every script loaded, both connections open.
    for state in [&first, &second] {
        let t = random_type("rt_warm");
        assert_eq!(count(state, ingest_metric(state, ingest(&t))).await.0, 201);
    }
    let t = random_type("rt_new");
    assert_eq!(
        count(&first, ingest_metric(&first, ingest(&t))).await,
        (201, 4),
        "limiter, claim, storage, confirm"
    );
    assert_eq!(
        count(&first, ingest_metric(&first, ingest(&t))).await,
        (201, known)
    );
    assert_eq!(
        count(&second, ingest_metric(&second, ingest(&t))).await,
        (201, 3),
        "limiter, claim, storage"
    );
    assert_eq!(
        count(&second, ingest_metric(&second, ingest(&t))).await,
        (201, known)
    );
}

#[tokio::test]
async fn tagged_paths_stay_within_their_round_trip_budget() {
    let state = AppState::new(config(&[
        ("RATE_LIMIT_REQUESTS", "3"),
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
    ]))
    .unwrap();
    let counted = tagged_paths(&state, &random_type("rt_tags")).await.unwrap();
    assert_eq!(counted.len(), 6);
    for c in counted {
        assert_eq!(
            (c.status, c.round_trips),
            (c.expected_status, c.budget),
            "{}",
            c.path
        );
    }
}
