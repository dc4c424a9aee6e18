//! Redis round trips per request on every hot path, counted (not timed) on
//! the handler state's own connection. These budgets are the performance
//! contract of the service; a change that adds a round trip fails here.
//!
//! | path | round trips |
//! |---|---|
//! | ingest, accepted | 2 (limiter script on the client's key + storage script on the type's keys), for one metric or a batch of 500 |
//! | ingest, rate-limited | 1 |
//! | summary, cache hit | 1 |
//! | summary, cache miss | 5 (lookup-or-lock, buckets, breaker acquire, breaker report, store-and-unlock) |
//! | series, cache hit | 2 (its limiter, the lookup) |
//! | series, cache miss | 4 (limiter, lookup-or-lock, the buckets of every point in one script call, store-and-unlock) |
//! | health | 1 (`PING` and the breaker state pipelined) |
//! | ingest, tagged, tag values new to the instance | 3 (limiter, the claim of the tags against their caps, storage) |
//! | ingest, tagged, known tag values | 2 |
//! | summary with one tag filter, cache miss | 5 (one series, as unfiltered) |
//! | summary with `group_by` or two filters, cache miss | 6 (the registry of values or combinations, then the buckets) |
//! | series with `group_by`, cache miss | 5 |
//!
//! With `REDIS_MODE=cluster` the budgets are the same for these paths (one
//! metric type, no `Idempotency-Key`); a keyed ingest adds the claim of its
//! key (1), and a batch spanning k hash slots makes 2 × k storage calls (a
//! read-only check and a write per slot), sent concurrently.
//!
//! The paths and budgets are defined once, in `synthetic_events::round_trips`;
//! `make bench` counts the same paths again and reports them in
//! BENCHMARKS.md (figure 1).

use analytics_tests::{config, random_type};
use shared::AppState;
use synthetic_events::round_trips::{hot_paths, tagged_paths};

#[tokio::test]
async fn hot_paths_stay_within_their_round_trip_budget() {
    let state = AppState::new(config(&[
        ("RATE_LIMIT_REQUESTS", "3"),
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
    ]))
    .unwrap();
    let counted = hot_paths(&state, &random_type("rt")).await.unwrap();
    assert_eq!(counted.len(), 8);
    for c in counted {
        assert_eq!(
            (c.status, c.round_trips),
            (c.expected_status, c.budget),
            "{}",
            c.path
        );
    }
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
