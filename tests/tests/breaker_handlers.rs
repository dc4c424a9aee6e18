//! The circuit breaker seen through the handlers: `GET /api/metrics/summary`
//! (acquire → call the external source with its timeout → report; a rejected
//! call answers `external_data: {"status": "fallback", "reason": "circuit_open"}`)
//! and `GET /health` (the effective breaker state next to the `PING`).
//!
//! In-process against the real Redis, each test under its own random key
//! prefix, with a local [`Stub`] HTTP server as the external source so that
//! failures, slowness and recovery can be scripted and the source's calls
//! counted. Several independent [`AppState`]s over one prefix play several
//! Lambda instances of one deployment. Every summary asks for its own metric
//! type, so the summary cache and its single-flight never hide the breaker.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use analytics_tests::{
    body_json, config_with_prefix, http_v2, random_prefix, random_type, Stub, StubReply,
};
use serde_json::Value;
use shared::breaker::BreakerState;
use shared::connection::RedisMode;
use shared::handlers::{health, metrics_summary};
use shared::AppState;
use tokio::sync::Barrier;
use tracing::field::{Field, Visit};
use tracing::instrument::WithSubscriber;
use tracing::subscriber::NoSubscriber;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// A little more than the 1 s reset timeout most tests configure.
const PAST_RESET: Duration = Duration::from_millis(1150);

/// One deployment: a key prefix, its settings and its external source.
struct Deployment {
    prefix: String,
    pairs: Vec<(String, String)>,
    stub: Stub,
}

impl Deployment {
    /// Threshold 3, reset timeout 1 s, one probe, external timeout 1000 ms,
    /// then `pairs` on top.
    async fn new(pairs: &[(&str, &str)]) -> Self {
        let stub = Stub::start().await;
        let mut all: Vec<(String, String)> = [
            ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "3"),
            ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
            ("CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS", "1"),
            ("EXTERNAL_SERVICE_TIMEOUT_MS", "1000"),
        ]
        .iter()
        .chain(pairs)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        all.push(("EXTERNAL_SERVICE_URL".into(), stub.url()));
        Self {
            prefix: random_prefix(),
            pairs: all,
            stub,
        }
    }

    /// A new "Lambda instance" (a cold start): its own configuration, Redis
    /// connection, breaker and HTTP client.
    fn instance(&self) -> AppState {
        let pairs: Vec<(&str, &str)> = self
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        AppState::new(config_with_prefix(&self.prefix, &pairs)).expect("valid test configuration")
    }

    fn calls(&self) -> usize {
        self.stub.calls()
    }

    /// Fails `CIRCUIT_BREAKER_FAILURE_THRESHOLD` summaries through `state`
    /// with a 500 from the source, and checks that the breaker is open.
    async fn open(&self, state: &AppState) {
        self.stub.set(StubReply::text(500, "boom"));
        for _ in 0..state.config.breaker.failure_threshold {
            let s = summary(state).await;
            assert_eq!(s.status, 200, "{}", s.external);
            assert_eq!(s.reason(), Some("upstream_error"), "{}", s.external);
        }
        assert_eq!(health_check(state).await.breaker, "open");
    }

    async fn cleanup(&self, state: &AppState) {
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(state.breaker.key())
            .query_async(&mut state.redis.clone())
            .await;
    }
}

/// What a summary request answered.
#[derive(Debug)]
struct Summary {
    status: u16,
    /// The `external_data` object.
    external: Value,
    elapsed: Duration,
    finished: Instant,
}

impl Summary {
    /// The fallback reason, `None` for a success.
    fn reason(&self) -> Option<&str> {
        match self.external["status"].as_str() {
            Some("fallback") => Some(self.external["reason"].as_str().unwrap_or("<missing>")),
            _ => None,
        }
    }

    fn succeeded(&self) -> bool {
        self.status == 200 && self.external["status"] == "success"
    }
}

/// One summary of a metric type of its own (so never a cache hit).
async fn summary(state: &AppState) -> Summary {
    let query = format!("type={}&period=hourly", random_type("cb"));
    let started = Instant::now();
    let response = metrics_summary(
        state,
        http_v2("GET", "/api/metrics/summary").query(&query).build(),
    )
    .await;
    let finished = Instant::now();
    let body = body_json(&response);
    Summary {
        status: response.status().as_u16(),
        external: body["external_data"].clone(),
        elapsed: finished - started,
        finished,
    }
}

/// What `/health` answered, and the Redis round trips it cost.
#[derive(Debug)]
struct HealthCheck {
    status: u16,
    breaker: String,
    round_trips: u64,
}

/// `GET /health` through `state`. Nothing else may use `state` meanwhile, or
/// the round-trip count is not the health check's alone.
async fn health_check(state: &AppState) -> HealthCheck {
    let before = state.redis.round_trips();
    let response = health(state, http_v2("GET", "/health").build()).await;
    let round_trips = state.redis.round_trips() - before;
    let body = body_json(&response);
    HealthCheck {
        status: response.status().as_u16(),
        breaker: body["circuit_breaker"]["external_service"]
            .as_str()
            .unwrap_or("<missing>")
            .to_string(),
        round_trips,
    }
}

#[tokio::test]
async fn consecutive_failing_summaries_open_the_breaker_and_open_calls_nothing() {
    let d = Deployment::new(&[]).await;
    let state = d.instance();
    assert_eq!(health_check(&state).await.breaker, "closed");

    // Two failures, then a success: the count is of consecutive failures.
    d.stub.set(StubReply::text(500, "boom"));
    for _ in 0..2 {
        let s = summary(&state).await;
        assert_eq!(s.status, 200);
        assert_eq!(s.reason(), Some("upstream_error"), "{}", s.external);
    }
    d.stub.set(StubReply::default());
    let s = summary(&state).await;
    assert!(s.succeeded(), "{}", s.external);
    assert_eq!(s.external["external_metric_context"], 342);
    assert_eq!(health_check(&state).await.breaker, "closed");

    // Then the threshold of consecutive failures opens it, and not before.
    d.stub.set(StubReply::text(500, "boom"));
    for n in 1..=3 {
        let s = summary(&state).await;
        assert_eq!(s.status, 200);
        assert_eq!(s.reason(), Some("upstream_error"), "{}", s.external);
        let expected = if n < 3 { "closed" } else { "open" };
        assert_eq!(health_check(&state).await.breaker, expected, "after {n}");
    }
    assert_eq!(d.calls(), 6);

    // Open: every summary is still a 200, with the fallback, and the source
    // is not called, whatever it would answer now.
    d.stub.set(StubReply::default());
    for _ in 0..5 {
        let s = summary(&state).await;
        assert_eq!(s.status, 200);
        assert_eq!(
            s.external,
            serde_json::json!({"status": "fallback", "reason": "circuit_open"})
        );
    }
    assert_eq!(d.calls(), 6, "an open breaker does not call the source");
    d.cleanup(&state).await;
}

#[tokio::test]
async fn summaries_slower_than_the_timeout_are_cancelled_and_count_as_failures() {
    let d = Deployment::new(&[("EXTERNAL_SERVICE_TIMEOUT_MS", "200")]).await;
    let state = d.instance();
    let stub_delay = Duration::from_secs(5);
    d.stub.set(StubReply::default().with_delay(stub_delay));
    for n in 1..=3 {
        let s = summary(&state).await;
        assert_eq!(s.status, 200, "{}", s.external);
        assert_eq!(s.reason(), Some("timeout"), "{}", s.external);
        // Cancelled at the 200 ms timeout: it waited for it, but nowhere near
        // as long as the source would have taken (nor the 3 s request deadline).
        assert!(s.elapsed >= Duration::from_millis(200), "{:?}", s.elapsed);
        assert!(s.elapsed < stub_delay / 2, "waited {:?}", s.elapsed);
        let expected = if n < 3 { "closed" } else { "open" };
        assert_eq!(health_check(&state).await.breaker, expected, "after {n}");
    }
    assert_eq!(d.calls(), 3);
    let snapshot = state.breaker.snapshot(&state.redis).await.unwrap();
    assert_eq!(snapshot.stored_state, BreakerState::Open);

    let s = summary(&state).await;
    assert_eq!(s.reason(), Some("circuit_open"));
    assert_eq!(d.calls(), 3);
    d.cleanup(&state).await;
}

/// The request deadline may cut a request off while its external call is
/// still running (here `REQUEST_DEADLINE_MS` is shorter than
/// `EXTERNAL_SERVICE_TIMEOUT_MS`; with the defaults, a long wait for another
/// instance's cache lock does the same). The call's outcome must still reach
/// the breaker, or a source slower than the deadline would never open it and
/// every request would keep calling it.
#[tokio::test]
async fn a_call_outliving_the_request_deadline_is_still_reported() {
    let d = Deployment::new(&[
        ("EXTERNAL_SERVICE_TIMEOUT_MS", "800"),
        ("REQUEST_DEADLINE_MS", "300"),
    ])
    .await;
    let state = d.instance();
    d.stub
        .set(StubReply::default().with_delay(Duration::from_secs(5)));
    for _ in 0..3 {
        // Cut off at the deadline, whatever it answers (a 503 problem).
        let s = summary(&state).await;
        assert!(s.elapsed < Duration::from_secs(5), "{s:?}");
    }
    assert_eq!(d.calls(), 3);
    // Each call times out 800 ms after it started and is reported then.
    let mut breaker = String::new();
    for _ in 0..30 {
        breaker = health_check(&state).await.breaker;
        if breaker == "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(breaker, "open", "three timed-out calls were never counted");
    let s = summary(&state).await;
    assert_eq!(s.status, 200, "{s:?}");
    assert_eq!(s.reason(), Some("circuit_open"));
    assert_eq!(d.calls(), 3);
    d.cleanup(&state).await;
}

#[tokio::test]
async fn after_the_reset_timeout_health_shows_half_open_and_a_successful_probe_closes() {
    let d = Deployment::new(&[]).await;
    let state = d.instance();
    d.open(&state).await;
    let calls = d.calls();

    tokio::time::sleep(PAST_RESET).await;
    // Before any probe: the stored state is still `open`, health shows the
    // effective one, and the source has not been called.
    let h = health_check(&state).await;
    assert_eq!((h.status, h.breaker.as_str()), (200, "half_open"));
    let snapshot = state.breaker.snapshot(&state.redis).await.unwrap();
    assert_eq!(snapshot.stored_state, BreakerState::Open);
    assert_eq!(d.calls(), calls);

    d.stub.set(StubReply::default());
    let probe = summary(&state).await;
    assert!(probe.succeeded(), "{}", probe.external);
    assert_eq!(d.calls(), calls + 1);
    assert_eq!(health_check(&state).await.breaker, "closed");
    for _ in 0..3 {
        assert!(summary(&state).await.succeeded());
    }
    assert_eq!(d.calls(), calls + 4);
    d.cleanup(&state).await;
}

#[tokio::test]
async fn a_failed_probe_reopens_the_breaker_with_a_new_reset_timeout() {
    let d = Deployment::new(&[]).await;
    let state = d.instance();
    d.open(&state).await;
    let first_opening = state.breaker.snapshot(&state.redis).await.unwrap();
    let calls = d.calls();

    tokio::time::sleep(PAST_RESET).await;
    assert_eq!(health_check(&state).await.breaker, "half_open");
    let probe = summary(&state).await;
    assert_eq!(probe.status, 200);
    assert_eq!(probe.reason(), Some("upstream_error"), "{}", probe.external);
    assert_eq!(d.calls(), calls + 1);

    // Open again, counted from the failed probe: more than the reset timeout
    // after the first opening, yet open.
    assert_eq!(health_check(&state).await.breaker, "open");
    let reopened = state.breaker.snapshot(&state.redis).await.unwrap();
    assert_eq!(reopened.stored_state, BreakerState::Open);
    assert!(reopened.opened_at_ms > first_opening.opened_at_ms);
    let s = summary(&state).await;
    assert_eq!(s.reason(), Some("circuit_open"));
    assert_eq!(d.calls(), calls + 1);

    tokio::time::sleep(PAST_RESET).await;
    assert_eq!(health_check(&state).await.breaker, "half_open");
    d.stub.set(StubReply::default());
    assert!(summary(&state).await.succeeded());
    assert_eq!(health_check(&state).await.breaker, "closed");
    assert_eq!(d.calls(), calls + 2);
    d.cleanup(&state).await;
}

#[tokio::test]
async fn an_open_breaker_is_seen_by_another_instance_and_by_a_cold_start() {
    // A long reset timeout: the breaker must stay open for the whole test.
    let d = Deployment::new(&[("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "60")]).await;
    let a = d.instance();
    let b = d.instance();
    // `b` is warm (connected, saw `closed`) before `a` opens the breaker.
    assert_eq!(health_check(&b).await.breaker, "closed");
    d.open(&a).await;
    let opened = a.breaker.snapshot(&a.redis).await.unwrap();
    let calls = d.calls();
    d.stub.set(StubReply::default());

    let cold = d.instance();
    for (name, state) in [("another instance", &b), ("a cold start", &cold)] {
        let s = summary(state).await;
        assert_eq!(s.status, 200, "{name}");
        assert_eq!(s.reason(), Some("circuit_open"), "{name}: {}", s.external);
        let h = health_check(state).await;
        assert_eq!((h.status, h.breaker.as_str()), (200, "open"), "{name}");
    }
    assert_eq!(d.calls(), calls, "no instance called the source");

    // Building and using new instances changed nothing in the stored state.
    let after = d.instance().breaker.snapshot(&b.redis).await.unwrap();
    assert_eq!(after.stored_state, BreakerState::Open);
    assert_eq!(after.generation, opened.generation);
    assert_eq!(after.opened_at_ms, opened.opened_at_ms);
    d.cleanup(&a).await;
}

/// After the reset timeout, with a slow failing source, 8 concurrent
/// summaries from 4 instances: exactly `max_calls` reach the source, the
/// others answer the fallback without waiting for the probes.
async fn half_open_lets_through_exactly(max_calls: u32) {
    let max = max_calls.to_string();
    let d = Deployment::new(&[("CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS", &max)]).await;
    let instances: Vec<Arc<AppState>> = (0..4).map(|_| Arc::new(d.instance())).collect();
    // Connect every instance first, so that the race below is between
    // requests and not between connection set-ups.
    for state in &instances {
        assert_eq!(health_check(state).await.breaker, "closed");
    }
    d.open(&instances[0]).await;
    tokio::time::sleep(PAST_RESET).await;
    assert_eq!(health_check(&instances[1]).await.breaker, "half_open");

    let probe_delay = Duration::from_millis(300);
    d.stub
        .set(StubReply::text(500, "still down").with_delay(probe_delay));
    let calls = d.calls();
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let state = Arc::clone(&instances[n % 4]);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                summary(&state).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("summary task"));
    }

    assert!(results.iter().all(|s| s.status == 200), "{results:?}");
    assert_eq!(d.calls() - calls, max_calls as usize, "{results:?}");
    let (probes, rejected): (Vec<&Summary>, Vec<&Summary>) = results
        .iter()
        .partition(|s| s.reason() == Some("upstream_error"));
    assert_eq!(probes.len(), max_calls as usize, "{results:?}");
    assert_eq!(rejected.len(), 8 - max_calls as usize);
    assert!(
        rejected.iter().all(|s| s.reason() == Some("circuit_open")),
        "{results:?}"
    );
    // The rejected ones did not wait for a probe: each returned before the
    // first probe's answer came back.
    let first_probe_done = probes.iter().map(|s| s.finished).min().unwrap();
    for s in &rejected {
        assert!(s.finished < first_probe_done, "{s:?} waited for a probe");
    }
    // The failed probe reopened the breaker.
    assert_eq!(health_check(&instances[2]).await.breaker, "open");
    d.cleanup(&instances[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_lets_exactly_one_summary_through_across_instances() {
    half_open_lets_through_exactly(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_lets_exactly_two_summaries_through_across_instances() {
    half_open_lets_through_exactly(2).await;
}

#[tokio::test]
async fn steady_traffic_while_open_does_not_delay_recovery() {
    let d = Deployment::new(&[]).await;
    let instances: Vec<AppState> = (0..3).map(|_| d.instance()).collect();
    d.open(&instances[0]).await;
    let calls = d.calls();

    // A request every 200 ms, round-robin over three instances. The source
    // stays down for the first probe and is back from then on; give up after
    // 40 requests (8 s).
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let mut seen: Vec<Summary> = Vec::new();
    let mut successes = 0;
    for n in 0..40 {
        ticker.tick().await;
        let s = summary(&instances[n % 3]).await;
        assert!(s.status < 500, "request {n}: {s:?}");
        assert_eq!(s.status, 200, "request {n}: {s:?}");
        if s.reason() == Some("upstream_error") {
            d.stub.set(StubReply::default());
        }
        if s.succeeded() {
            successes += 1;
        }
        seen.push(s);
        if successes == 3 {
            break;
        }
    }
    let outcomes: Vec<&str> = seen.iter().map(|s| s.reason().unwrap_or("ok")).collect();
    assert_eq!(successes, 3, "never recovered: {outcomes:?}");

    // Rejected while open, one failed probe, rejected again, one successful
    // probe, then closed: every request after the first success succeeded.
    let probe = outcomes.iter().position(|o| *o != "circuit_open").unwrap();
    assert_eq!(outcomes[probe], "upstream_error", "{outcomes:?}");
    assert!(probe >= 2, "traffic arrived while open: {outcomes:?}");
    let recovered = outcomes.iter().position(|o| *o == "ok").unwrap();
    assert!(
        outcomes[probe + 1..recovered]
            .iter()
            .all(|o| *o == "circuit_open"),
        "{outcomes:?}"
    );
    assert!(
        recovered > probe + 1,
        "reopened after the probe: {outcomes:?}"
    );
    assert!(
        outcomes[recovered..].iter().all(|o| *o == "ok"),
        "{outcomes:?}"
    );
    // The source saw exactly the requests that were not rejected.
    let not_rejected = outcomes.iter().filter(|o| **o != "circuit_open").count();
    assert_eq!(d.calls() - calls, not_rejected, "{outcomes:?}");
    assert_eq!(health_check(&instances[1]).await.breaker, "closed");
    d.cleanup(&instances[0]).await;
}

#[tokio::test]
async fn health_is_200_in_one_round_trip_in_every_breaker_state() {
    // (Two in cluster mode: see the budget below.)
    let d = Deployment::new(&[]).await;
    let state = d.instance();
    // Health checks go through an instance of their own, so that its
    // round-trip count is theirs alone.
    let mut watcher = d.instance();
    let calls = watcher.redis.record_calls();
    // A Redis that has not run health's probe script yet (a fresh server)
    // answers its first `EVALSHA` with `NOSCRIPT`, and the `EVAL` that
    // follows is a second round trip: that first check is made on another
    // instance.
    health_check(&state).await;
    let check = |expected: &'static str| {
        let (watcher, calls) = (&watcher, &calls);
        async move {
            let sent = calls.calls().len();
            let h = health_check(watcher).await;
            let these: Vec<Vec<String>> = calls.calls()[sent..]
                .iter()
                .map(|call| call.commands.clone())
                .collect();
            assert_eq!(h.status, 200, "{expected}: {h:?}");
            assert_eq!(h.breaker, expected, "{h:?}");
            // In cluster mode `INFO` goes to every master, a second round
            // trip sent concurrently with the pipeline.
            let budget = if watcher.redis.mode() == RedisMode::Cluster {
                2
            } else {
                1
            };
            assert_eq!(h.round_trips, budget, "{expected}: {h:?}, calls {these:?}");
        }
    };
    check("closed").await;
    d.open(&state).await;
    check("open").await;
    tokio::time::sleep(PAST_RESET).await;
    check("half_open").await; // stored `open`, effective `half_open`

    // A probe in flight: stored `half_open`.
    d.stub
        .set(StubReply::default().with_delay(Duration::from_millis(400)));
    let probe = tokio::spawn(async move {
        let s = summary(&state).await;
        (s, state)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let during = watcher.breaker.snapshot(&watcher.redis).await.unwrap();
    assert_eq!(during.stored_state, BreakerState::HalfOpen);
    check("half_open").await;
    let (s, state) = probe.await.unwrap();
    assert!(s.succeeded(), "{s:?}");
    check("closed").await;
    d.cleanup(&state).await;
}

/// The fields of every "circuit breaker transition" event seen by one
/// test's own subscriber.
#[derive(Clone, Default)]
struct Transitions(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

impl Transitions {
    fn events(&self) -> Vec<BTreeMap<String, String>> {
        self.0.lock().unwrap().clone()
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S: Subscriber> Layer<S> for Transitions {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.0.get("message").map(String::as_str) == Some("circuit breaker transition") {
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

/// 8 concurrent summaries from 4 instances, 2 per instance, all
/// instrumented with `dispatch` (the subscriber follows each task across the
/// runtime's threads and sees only this test's events).
async fn concurrent_summaries(instances: &[Arc<AppState>], dispatch: &Dispatch) -> Vec<Summary> {
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let state = Arc::clone(&instances[n % instances.len()]);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(
                async move {
                    barrier.wait().await;
                    summary(&state).await
                }
                .with_subscriber(dispatch.clone()),
            )
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("summary task"));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_transition_is_logged_once_across_instances() {
    // tracing-core caches each callsite's interest when it is first hit.
    // While a single dispatcher is registered it asks only the current
    // thread's default, which in the other tests' threads is "none", so a
    // callsite first hit there would stay silenced for this test too. With a
    // second (do-nothing) dispatcher alive it asks every registered one.
    let _bystander = Dispatch::new(NoSubscriber::default());
    let transitions = Transitions::default();
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(transitions.clone()));

    let d = Deployment::new(&[]).await;
    let instances: Vec<Arc<AppState>> = (0..4).map(|_| Arc::new(d.instance())).collect();
    for state in &instances {
        assert_eq!(health_check(state).await.breaker, "closed");
    }

    // 8 failing calls at once (slow enough that they overlap): the third
    // report opens the breaker, the later ones are ignored.
    d.stub
        .set(StubReply::text(500, "boom").with_delay(Duration::from_millis(100)));
    let failed = concurrent_summaries(&instances, &dispatch).await;
    assert!(failed
        .iter()
        .all(|s| s.status == 200 && s.reason().is_some()));
    assert_eq!(health_check(&instances[0]).await.breaker, "open");
    let events = transitions.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let opened = &events[0];
    assert_eq!(opened["dependency"], "external_service");
    assert_eq!(opened["old_state"], "closed");
    assert_eq!(opened["new_state"], "open");
    assert_eq!(opened["reason"], "failure_threshold_reached");
    assert_eq!(opened["failure"], "upstream_error");

    // Recovery from 4 instances at once: one open → half_open, one
    // half_open → closed, nothing else.
    tokio::time::sleep(PAST_RESET).await;
    d.stub
        .set(StubReply::default().with_delay(Duration::from_millis(100)));
    let recovered = concurrent_summaries(&instances, &dispatch).await;
    assert!(recovered.iter().all(|s| s.status == 200));
    assert_eq!(health_check(&instances[3]).await.breaker, "closed");
    let events = transitions.events();
    let moves: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["old_state"].as_str(),
                e["new_state"].as_str(),
                e["reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("closed", "open", "failure_threshold_reached"),
            ("open", "half_open", "reset_timeout_elapsed"),
            ("half_open", "closed", "probe_succeeded"),
        ],
        "{events:#?}"
    );
    d.cleanup(&instances[0]).await;
}
