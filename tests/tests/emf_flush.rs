//! When a function instance writes its EMF metrics (`shared::runtime::Emf`):
//! held in the instance and written by the flush policy, not after every
//! invocation, without losing a count. The invocations are real ingests
//! against Redis; the policy's clock is given, so a flush period passes
//! without waiting for it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use analytics_tests::{config_with_prefix, http_v2, random_prefix, random_type};
use chrono::Utc;
use serde_json::{json, Value};
use shared::handlers::ingest_metric;
use shared::metric::format_timestamp;
use shared::observability::{self, FlushReason};
use shared::runtime::{Emf, REQUEST_ID_PROPERTY};
use shared::AppState;
use tokio::sync::{Mutex, MutexGuard};

const PERIOD: Duration = Duration::from_secs(60);

/// The recorder of this test binary (one per process), and a lock that
/// runs its tests one at a time: the counts and the urgent flag are the
/// process's.
async fn emf() -> (MutexGuard<'static, ()>, Emf) {
    static COLLECTOR: OnceLock<&'static metrics_cloudwatch_embedded::Collector> = OnceLock::new();
    static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());
    let guard = ONE_AT_A_TIME.lock().await;
    let collector = COLLECTOR.get_or_init(|| {
        metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace("AnalyticsApiTest")
            .init()
            .expect("no other metrics recorder in this test binary")
    });
    let mut settings = config_with_prefix(&random_prefix(), &[]).observability;
    settings.flush_period = PERIOD;
    // Counts a previous test left behind are not this test's.
    collector.flush(std::io::sink()).unwrap();
    let emf = Emf::new(collector, &settings);
    let _ = observability::take_urgent();
    (guard, emf)
}

fn instance() -> AppState {
    AppState::new(config_with_prefix(
        &random_prefix(),
        &[("RATE_LIMIT_REQUESTS", "1000000")],
    ))
    .unwrap()
}

/// One accepted ingest of `metric_type`.
async fn ingest(state: &AppState, metric_type: &str) {
    let metric =
        json!({"timestamp": format_timestamp(Utc::now()), "value": 1.0, "type": metric_type});
    let response =
        ingest_metric(state, http_v2("POST", "/api/metrics").json(&metric).build()).await;
    assert_eq!(response.status(), 201);
}

/// The EMF documents written to `out`.
fn documents(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Invocation `i` of a run: completed at `start + i * step`, written to `out`.
fn after(emf: &Emf, at: Instant, out: &mut Vec<u8>) -> Option<FlushReason> {
    emf.after_invocation(at, Some("req-id"), false, out)
}

#[tokio::test]
async fn a_run_of_successful_invocations_writes_one_document_per_flush_period() {
    let (_guard, emf) = emf().await;
    let state = instance();
    let metric_type = random_type("emf_run");
    let start = Instant::now();
    let step = Duration::from_millis(10);
    let mut out = Vec::new();
    let mut reasons = Vec::new();
    // Three flush periods of invocations 10 ms apart: 3 × 6,000 would take
    // long against Redis, so only every 100th is a real ingest.
    let invocations = 3 * (PERIOD.as_millis() / step.as_millis()) as u32;
    let mut ingested = 0;
    for i in 0..invocations {
        if i % 100 == 0 {
            ingest(&state, &metric_type).await;
            ingested += 1;
        }
        reasons.extend(after(&emf, start + step * i, &mut out));
    }
    assert_eq!(
        reasons,
        [
            FlushReason::ColdStart,
            FlushReason::Period,
            FlushReason::Period
        ]
    );
    let docs = documents(&out);
    assert_eq!(docs.len(), 3, "{docs:?}");
    assert_eq!(docs[0]["ColdStart"], 1);
    assert!(
        docs.iter().all(|d| d.get(REQUEST_ID_PROPERTY).is_none()),
        "only an urgent document names a request: {docs:?}"
    );
    // Nothing is lost: what the documents and the shutdown flush sum up to
    // is what was counted.
    emf.flush(&mut out);
    let written: u64 = documents(&out)
        .iter()
        .filter_map(|d| d["AcceptedMetrics"].as_u64())
        .sum();
    assert_eq!(written, ingested);
}

#[tokio::test]
async fn a_failure_is_written_at_once_with_its_request_id() {
    let (_guard, emf) = emf().await;
    let start = Instant::now();
    let mut out = Vec::new();
    assert_eq!(after(&emf, start, &mut out), Some(FlushReason::ColdStart));
    out.clear();
    observability::accepted_metrics(1);
    assert_eq!(
        after(&emf, start + Duration::from_millis(5), &mut out),
        None
    );
    // A 5xx answered.
    assert_eq!(
        emf.after_invocation(
            start + Duration::from_millis(10),
            Some("the-failed-one"),
            true,
            &mut out
        ),
        Some(FlushReason::Urgent)
    );
    let docs = documents(&out);
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0][REQUEST_ID_PROPERTY], "the-failed-one");
    assert_eq!(docs[0]["AcceptedMetrics"], 1);
    // A Redis error, a breaker transition, a failed external call: at once,
    // whatever the response.
    for (i, count) in [
        observability::redis_error as fn(),
        || observability::breaker_transition("open"),
        observability::external_call_failed,
    ]
    .into_iter()
    .enumerate()
    {
        out.clear();
        count();
        let at = start + Duration::from_millis(20 + i as u64);
        assert_eq!(after(&emf, at, &mut out), Some(FlushReason::Urgent));
        assert_eq!(documents(&out).len(), 1);
        // The property is the failed invocation's only.
        out.clear();
        observability::accepted_metrics(1);
        emf.flush(&mut out);
        assert!(documents(&out)[0].get(REQUEST_ID_PROPERTY).is_none());
    }
}

#[tokio::test]
async fn an_invocation_after_an_idle_spell_writes_at_once() {
    let (_guard, emf) = emf().await;
    let start = Instant::now();
    let mut out = Vec::new();
    assert_eq!(after(&emf, start, &mut out), Some(FlushReason::ColdStart));
    observability::cache_hit();
    assert_eq!(
        after(&emf, start + Duration::from_millis(100), &mut out),
        None
    );
    out.clear();
    let quiet = start + Duration::from_millis(100) + shared::observability::FlushPolicy::IDLE_SPELL;
    observability::cache_hit();
    assert_eq!(after(&emf, quiet, &mut out), Some(FlushReason::Idle));
    assert_eq!(documents(&out)[0]["CacheHits"], 2);
}

#[tokio::test]
async fn shutdown_writes_what_is_held() {
    let (_guard, emf) = emf().await;
    let start = Instant::now();
    let mut out = Vec::new();
    after(&emf, start, &mut out);
    out.clear();
    for i in 1..=5 {
        observability::cache_miss();
        assert_eq!(
            after(&emf, start + Duration::from_millis(i), &mut out),
            None
        );
    }
    assert!(out.is_empty());
    emf.flush(&mut out);
    let docs = documents(&out);
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["CacheMisses"], 5);
    // Nothing is held any more.
    out.clear();
    emf.flush(&mut out);
    assert!(out.is_empty());
}
