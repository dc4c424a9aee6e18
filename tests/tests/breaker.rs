//! The circuit breaker's state machine against a real Redis
//! (`shared::breaker`), below the handlers: admission, reports, generations,
//! probe leases, TTLs and the health read.
//!
//! Every test works under its own random key prefix. "Instances" are
//! independent [`Redis`] handles (separate connections) with their own
//! [`CircuitBreaker`], as separate Lambda instances would have.

use std::sync::Arc;
use std::time::Duration;

use shared::breaker::{
    Admission, BreakerState, CallOutcome, CircuitBreaker, FailureKind, Permit, TransitionReason,
    STATE_READ_COMMANDS,
};
use shared::config::Config;
use shared::connection::Redis;
use shared::keys::Keys;
use tokio::sync::Barrier;

const DEPENDENCY: &str = "external_service";
const FAIL: CallOutcome = CallOutcome::Failure(FailureKind::UpstreamError);
const TIMEOUT: CallOutcome = CallOutcome::Failure(FailureKind::Timeout);
/// A little more than the 1 s reset timeout the tests configure.
const PAST_RESET: Duration = Duration::from_millis(1150);

/// One deployment: a fresh prefix plus breaker settings.
struct Deployment {
    prefix: String,
    pairs: Vec<(String, String)>,
}

impl Deployment {
    fn new(pairs: &[(&str, &str)]) -> Self {
        Self {
            prefix: format!("test-{}", uuid::Uuid::new_v4().simple()),
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn config(&self) -> Config {
        let pairs: Vec<(&str, &str)> = self
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        analytics_tests::config_with_prefix(&self.prefix, &pairs)
    }

    /// A new "instance": its own configuration, connection and breaker.
    fn instance(&self) -> Instance {
        let config = self.config();
        let redis = Redis::from_settings(&config.redis).expect("valid REDIS_URL");
        let breaker = CircuitBreaker::new(
            &config.breaker,
            config.external.timeout,
            &Keys::new(&config.redis.key_prefix),
            DEPENDENCY,
        );
        Instance { redis, breaker }
    }
}

struct Instance {
    redis: Redis,
    breaker: CircuitBreaker,
}

impl Instance {
    async fn acquire(&self) -> Admission {
        self.breaker.acquire(&self.redis).await.expect("acquire")
    }

    async fn permit(&self) -> Permit {
        match self.acquire().await {
            Admission::Allowed(permit) => permit,
            other => panic!("expected a permit, got {other:?}"),
        }
    }

    async fn report(
        &self,
        permit: &Permit,
        outcome: CallOutcome,
    ) -> shared::breaker::ReportOutcome {
        self.breaker
            .report_with_transition(&self.redis, permit, outcome)
            .await
            .expect("report")
    }

    /// Admits `threshold` calls while closed, then reports each as a failure.
    async fn open(&self, threshold: u32, outcome: CallOutcome) {
        let mut permits = Vec::new();
        for _ in 0..threshold {
            permits.push(self.permit().await);
        }
        for permit in &permits {
            self.report(permit, outcome).await;
        }
        assert_eq!(self.stored().await, BreakerState::Open);
    }

    async fn stored(&self) -> BreakerState {
        self.snapshot().await.stored_state
    }

    async fn snapshot(&self) -> shared::breaker::BreakerSnapshot {
        self.breaker.snapshot(&self.redis).await.expect("snapshot")
    }

    async fn ttl(&self) -> i64 {
        redis::cmd("TTL")
            .arg(self.breaker.key())
            .query_async(&mut self.redis.clone())
            .await
            .expect("TTL")
    }

    async fn cleanup(&self) {
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(self.breaker.key())
            .query_async(&mut self.redis.clone())
            .await;
    }
}

fn rejected(state: BreakerState) -> Admission {
    Admission::Rejected { state }
}

#[tokio::test]
async fn a_missing_key_is_closed_and_acquiring_writes_nothing() {
    let a = Deployment::new(&[]).instance();
    let permit = a.permit().await;
    assert_eq!(
        permit,
        Permit {
            generation: 0,
            state: BreakerState::Closed,
            is_probe: false
        }
    );
    assert_eq!(
        a.breaker.state(&a.redis).await.unwrap(),
        BreakerState::Closed
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg(a.breaker.key())
        .query_async(&mut a.redis.clone())
        .await
        .unwrap();
    assert_eq!(exists, 0, "a closed breaker without failures needs no key");
    // A success with no failures counted writes nothing either.
    let outcome = a.report(&permit, CallOutcome::Success).await;
    assert!(outcome.applied);
    assert_eq!(outcome.transition, None);
}

#[tokio::test]
async fn closed_opens_after_the_threshold_of_consecutive_failures() {
    let a = Deployment::new(&[("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "3")]).instance();

    // Two failures, then a success: the count starts again.
    for _ in 0..2 {
        let p = a.permit().await;
        a.report(&p, FAIL).await;
    }
    assert_eq!(a.snapshot().await.consecutive_failures, 2);
    let p = a.permit().await;
    a.report(&p, CallOutcome::Success).await;
    assert_eq!(a.snapshot().await.consecutive_failures, 0);

    for i in 1..=3 {
        let p = a.permit().await;
        assert_eq!(p.state, BreakerState::Closed);
        let outcome = a.report(&p, FAIL).await;
        if i < 3 {
            assert_eq!(outcome.state, BreakerState::Closed);
            assert_eq!(outcome.transition, None);
        } else {
            let t = outcome.transition.expect("the third failure opens it");
            assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
            assert_eq!(t.reason, TransitionReason::FailureThresholdReached);
            assert_eq!(t.generation, 1);
        }
    }
    assert_eq!(a.acquire().await, rejected(BreakerState::Open));
    let snap = a.snapshot().await;
    assert_eq!(snap.stored_state, BreakerState::Open);
    assert!(snap.opened_at_ms.is_some());
    a.cleanup().await;
}

#[tokio::test]
async fn timeouts_count_as_failures() {
    let a = Deployment::new(&[("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "2")]).instance();
    let p = a.permit().await;
    a.report(&p, TIMEOUT).await;
    let p = a.permit().await;
    let outcome = a
        .report(&p, CallOutcome::Failure(FailureKind::UpstreamError))
        .await;
    assert_eq!(
        outcome.state,
        BreakerState::Open,
        "a timeout and an error make 2"
    );

    let b = Deployment::new(&[("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "2")]).instance();
    b.open(2, TIMEOUT).await;
    assert_eq!(b.acquire().await, rejected(BreakerState::Open));
    a.cleanup().await;
    b.cleanup().await;
}

#[tokio::test]
async fn open_becomes_half_open_after_the_reset_timeout_and_a_probe_success_closes_it() {
    let a = Deployment::new(&[
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "2"),
        ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
    ])
    .instance();
    a.open(2, FAIL).await;
    assert_eq!(a.acquire().await, rejected(BreakerState::Open));

    tokio::time::sleep(PAST_RESET).await;
    let (admission, transition) = a.breaker.acquire_with_transition(&a.redis).await.unwrap();
    let t = transition.expect("this acquire moved the breaker");
    assert_eq!((t.from, t.to), (BreakerState::Open, BreakerState::HalfOpen));
    assert_eq!(t.reason, TransitionReason::ResetTimeoutElapsed);
    let Admission::Allowed(probe) = admission else {
        panic!("the first acquire after the timeout is a probe: {admission:?}");
    };
    assert!(probe.is_probe);
    assert_eq!(probe.state, BreakerState::HalfOpen);
    assert_eq!(probe.generation, 2);
    // One probe slot (the default): the next caller gets the fallback.
    assert_eq!(a.acquire().await, rejected(BreakerState::HalfOpen));

    let outcome = a.report(&probe, CallOutcome::Success).await;
    let t = outcome.transition.expect("a probe success closes it");
    assert_eq!(
        (t.from, t.to),
        (BreakerState::HalfOpen, BreakerState::Closed)
    );
    assert_eq!(t.reason, TransitionReason::ProbeSucceeded);
    let p = a.permit().await;
    assert_eq!(
        (p.state, p.is_probe, p.generation),
        (BreakerState::Closed, false, 3)
    );
    assert_eq!(a.snapshot().await.consecutive_failures, 0);
    a.cleanup().await;
}

#[tokio::test]
async fn a_failed_probe_reopens_with_a_new_opening_time() {
    let a = Deployment::new(&[
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "1"),
        ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
    ])
    .instance();
    a.open(1, FAIL).await;
    let first_opened = a.snapshot().await.opened_at_ms.unwrap();

    tokio::time::sleep(PAST_RESET).await;
    let probe = a.permit().await;
    assert!(probe.is_probe);
    let outcome = a.report(&probe, TIMEOUT).await;
    let t = outcome.transition.expect("a failed probe reopens it");
    assert_eq!((t.from, t.to), (BreakerState::HalfOpen, BreakerState::Open));
    assert_eq!(t.reason, TransitionReason::ProbeFailed);

    let reopened = a.snapshot().await.opened_at_ms.unwrap();
    assert!(
        reopened >= first_opened + 1000,
        "{reopened} vs {first_opened}"
    );
    // A full reset timeout again, counted from the failed probe.
    assert_eq!(a.acquire().await, rejected(BreakerState::Open));
    tokio::time::sleep(PAST_RESET).await;
    assert!(a.permit().await.is_probe);
    a.cleanup().await;
}

#[tokio::test]
async fn failures_reported_while_open_do_not_push_recovery_back() {
    let a = Deployment::new(&[
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "2"),
        ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
    ])
    .instance();
    // Five calls admitted while closed; two failures open the breaker, the
    // three others fail late, while it is open.
    let mut late = Vec::new();
    for _ in 0..5 {
        late.push(a.permit().await);
    }
    let early = late.split_off(3);
    for p in &early {
        a.report(p, FAIL).await;
    }
    let opened = a.snapshot().await;
    assert_eq!(opened.stored_state, BreakerState::Open);

    tokio::time::sleep(Duration::from_millis(600)).await;
    for p in &late {
        let outcome = a.report(p, TIMEOUT).await;
        assert!(
            !outcome.applied,
            "a closed-generation report while open is stale"
        );
    }
    // Even a report claiming the current generation changes nothing while open.
    let forged = Permit {
        generation: opened.generation,
        state: BreakerState::HalfOpen,
        is_probe: true,
    };
    assert!(!a.report(&forged, FAIL).await.applied);
    let after = a.snapshot().await;
    assert_eq!(after.opened_at_ms, opened.opened_at_ms);
    assert_eq!(after.generation, opened.generation);

    // 1 s after the opening, not after the late failures, probes are admitted.
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert!(a.permit().await.is_probe);
    a.cleanup().await;
}

#[tokio::test]
async fn reports_from_an_earlier_generation_are_ignored() {
    let a = Deployment::new(&[
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "2"),
        ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
    ])
    .instance();
    let slow_success = a.permit().await; // generation 0, closed
    let slow_failure = a.permit().await; // generation 0, closed
    a.open(2, FAIL).await;
    tokio::time::sleep(PAST_RESET).await;
    let probe = a.permit().await;
    assert!(probe.is_probe);

    // A success from the closed era does not close a half-open breaker...
    let outcome = a.report(&slow_success, CallOutcome::Success).await;
    assert!(!outcome.applied);
    assert_eq!(outcome.state, BreakerState::HalfOpen);
    assert_eq!(a.snapshot().await.probes_admitted, 1);

    // ...and after the probe closed it, a stale failure is not counted.
    a.report(&probe, CallOutcome::Success).await;
    let outcome = a.report(&slow_failure, FAIL).await;
    assert!(!outcome.applied);
    assert_eq!(outcome.state, BreakerState::Closed);
    assert_eq!(a.snapshot().await.consecutive_failures, 0);
    // Nor does a stale probe result move the closed breaker.
    assert!(!a.report(&probe, FAIL).await.applied);
    assert_eq!(a.stored().await, BreakerState::Closed);
    a.cleanup().await;
}

#[tokio::test]
async fn state_is_shared_by_independent_and_freshly_built_instances() {
    let deployment = Deployment::new(&[
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "2"),
        ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "30"),
    ]);
    let a = deployment.instance();
    let b = deployment.instance();
    assert_eq!(b.permit().await.state, BreakerState::Closed);

    a.open(2, FAIL).await;
    let before = a.snapshot().await;
    assert_eq!(b.acquire().await, rejected(BreakerState::Open));
    assert_eq!(b.breaker.state(&b.redis).await.unwrap(), BreakerState::Open);

    // A cold start: new configuration, connection and breaker. It reads the
    // existing state and never resets it.
    let cold = deployment.instance();
    assert_eq!(
        cold.breaker.state(&cold.redis).await.unwrap(),
        BreakerState::Open
    );
    assert_eq!(cold.acquire().await, rejected(BreakerState::Open));
    let after = cold.snapshot().await;
    assert_eq!(after.generation, before.generation);
    assert_eq!(after.opened_at_ms, before.opened_at_ms);

    // A failure counted by one instance adds to another's.
    let other = Deployment::new(&[("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "2")]);
    let (c, d) = (other.instance(), other.instance());
    let pc = c.permit().await;
    let pd = d.permit().await;
    c.report(&pc, FAIL).await;
    assert_eq!(d.report(&pd, FAIL).await.state, BreakerState::Open);
    a.cleanup().await;
    c.cleanup().await;
}

/// After the reset timeout, 8 concurrent acquires from 4 independent
/// instances: exactly `max_calls` probes, exactly one open → half_open
/// transition, everyone else rejected as half-open.
async fn half_open_admits_exactly(max_calls: u32) {
    let max = max_calls.to_string();
    let deployment = Deployment::new(&[
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "1"),
        ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
        ("CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS", &max),
    ]);
    let instances: Vec<Arc<Instance>> = (0..4).map(|_| Arc::new(deployment.instance())).collect();
    // Connect every instance first, so that the race below is between script
    // calls and not between connection set-ups.
    for i in &instances {
        assert_eq!(
            i.breaker.state(&i.redis).await.unwrap(),
            BreakerState::Closed
        );
    }
    instances[0].open(1, FAIL).await;
    tokio::time::sleep(PAST_RESET).await;

    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let instance = Arc::clone(&instances[n % 4]);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                instance
                    .breaker
                    .acquire_with_transition(&instance.redis)
                    .await
                    .expect("acquire")
            })
        })
        .collect();
    let mut allowed = Vec::new();
    let mut transitions = 0;
    for task in tasks {
        let (admission, transition) = task.await.expect("task");
        if let Some(t) = transition {
            assert_eq!((t.from, t.to), (BreakerState::Open, BreakerState::HalfOpen));
            transitions += 1;
        }
        match admission {
            Admission::Allowed(p) => allowed.push(p),
            Admission::Rejected { state } => assert_eq!(state, BreakerState::HalfOpen),
        }
    }
    assert_eq!(allowed.len(), max_calls as usize, "{allowed:?}");
    assert!(allowed
        .iter()
        .all(|p| p.is_probe && p.state == BreakerState::HalfOpen));
    assert!(allowed
        .iter()
        .all(|p| p.generation == allowed[0].generation));
    assert_eq!(
        transitions, 1,
        "exactly one instance made (and logged) the transition"
    );
    assert_eq!(instances[1].snapshot().await.probes_admitted, max_calls);
    instances[0].cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_admits_exactly_one_probe_across_instances() {
    half_open_admits_exactly(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_admits_exactly_two_probes_across_instances() {
    half_open_admits_exactly(2).await;
}

#[tokio::test]
async fn a_lost_probe_does_not_wedge_the_breaker() {
    // EXTERNAL_SERVICE_TIMEOUT_MS = 100 → a probe lease of 2 × 100 ms + 1 s.
    let deployment = Deployment::new(&[
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "1"),
        ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
        ("EXTERNAL_SERVICE_TIMEOUT_MS", "100"),
    ]);
    let a = deployment.instance();
    let b = deployment.instance();
    assert_eq!(a.breaker.probe_lease(), Duration::from_millis(1200));
    a.open(1, FAIL).await;
    tokio::time::sleep(PAST_RESET).await;

    // Instance a takes the only probe slot and dies without reporting.
    let lost = a.permit().await;
    assert!(lost.is_probe);
    assert_eq!(b.acquire().await, rejected(BreakerState::HalfOpen));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        b.acquire().await,
        rejected(BreakerState::HalfOpen),
        "lease still held"
    );

    tokio::time::sleep(Duration::from_millis(750)).await;
    let (admission, transition) = b.breaker.acquire_with_transition(&b.redis).await.unwrap();
    let Admission::Allowed(probe) = admission else {
        panic!("the lease has passed, a new probe is admitted: {admission:?}");
    };
    assert!(probe.is_probe);
    assert!(probe.generation > lost.generation);
    let t = transition.expect("a new round of probes is a logged event");
    assert_eq!(
        (t.from, t.to),
        (BreakerState::HalfOpen, BreakerState::HalfOpen)
    );
    assert_eq!(t.reason, TransitionReason::ProbeLeaseExpired);
    assert_eq!(a.acquire().await, rejected(BreakerState::HalfOpen));

    // The lost probe's very late report is stale; the new probe decides.
    assert!(!a.report(&lost, CallOutcome::Success).await.applied);
    assert_eq!(a.stored().await, BreakerState::HalfOpen);
    let outcome = b.report(&probe, CallOutcome::Success).await;
    assert_eq!(outcome.state, BreakerState::Closed);
    a.cleanup().await;
}

#[tokio::test]
async fn the_key_always_has_a_ttl() {
    let a = Deployment::new(&[
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "2"),
        ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
    ])
    .instance();
    assert_eq!(a.breaker.key_ttl(), Duration::from_secs(3600));
    let p = a.permit().await;
    a.report(&p, FAIL).await; // closed, one failure counted
    let ttl = a.ttl().await;
    assert!(
        (3590..=3600).contains(&ttl),
        "closed with failures: TTL {ttl}"
    );

    a.open(2, FAIL).await;
    let ttl = a.ttl().await;
    assert!((3590..=3600).contains(&ttl), "open: TTL {ttl}");

    tokio::time::sleep(PAST_RESET).await;
    let probe = a.permit().await; // half_open
    assert!(a.ttl().await > 3590);
    a.report(&probe, CallOutcome::Success).await; // closed again
    assert!(a.ttl().await > 3590);

    // A long reset timeout gets a longer TTL: 10 × 600 s.
    let long = Deployment::new(&[
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "1"),
        ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "600"),
    ])
    .instance();
    long.open(1, FAIL).await;
    let ttl = long.ttl().await;
    assert!((5990..=6000).contains(&ttl), "TTL {ttl}");
    a.cleanup().await;
    long.cleanup().await;
}

#[tokio::test]
async fn health_reads_the_effective_state_with_its_ping_in_one_round_trip() {
    let a = Deployment::new(&[
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "1"),
        ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
    ])
    .instance();

    async fn health_read(i: &Instance) -> BreakerState {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        i.breaker.add_state_read(&mut pipe);
        let before = i.redis.round_trips();
        let replies: Vec<redis::Value> = pipe.query_async(&mut i.redis.clone()).await.unwrap();
        assert_eq!(
            i.redis.round_trips() - before,
            1,
            "PING and the state read share one round trip"
        );
        assert_eq!(replies.len(), 1 + STATE_READ_COMMANDS);
        assert_eq!(replies[0], redis::Value::SimpleString("PONG".into()));
        i.breaker.effective_state_from(&replies[1..]).unwrap()
    }

    assert_eq!(health_read(&a).await, BreakerState::Closed);
    a.open(1, FAIL).await;
    assert_eq!(health_read(&a).await, BreakerState::Open);

    tokio::time::sleep(PAST_RESET).await;
    // No acquire has run since: the stored state is still open, health
    // reports what the next caller will find.
    assert_eq!(health_read(&a).await, BreakerState::HalfOpen);
    assert_eq!(a.stored().await, BreakerState::Open);
    let before = a.redis.round_trips();
    assert_eq!(
        a.breaker.state(&a.redis).await.unwrap(),
        BreakerState::HalfOpen
    );
    assert_eq!(a.redis.round_trips() - before, 1);
    a.cleanup().await;
}

#[tokio::test]
async fn acquire_and_report_cost_one_round_trip_each() {
    let a = Deployment::new(&[("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "5")]).instance();
    // The first calls may meet NOSCRIPT (then EVAL of the body).
    let p = a.permit().await;
    a.report(&p, FAIL).await;

    let before = a.redis.round_trips();
    let p = a.permit().await;
    assert_eq!(a.redis.round_trips() - before, 1);
    let before = a.redis.round_trips();
    a.breaker.report(&a.redis, &p, FAIL).await.unwrap();
    assert_eq!(a.redis.round_trips() - before, 1);
    a.cleanup().await;
}
