//! A circuit breaker around an unreliable dependency, with its state in Redis.
//!
//! The pattern is Michael Nygard's (*Release It!*, 2007; Martin Fowler's
//! "CircuitBreaker" article): after too many consecutive failures stop calling
//! the dependency for a while, then let a few probe calls through and close
//! again when one succeeds. In-process breakers (resilience4j, Polly, Hystrix)
//! keep that state in memory; on Lambda every instance is a separate process
//! that may be frozen or recycled at any time, so here the state lives in one
//! Redis hash shared by every instance of every function, and every
//! transition is decided atomically by a Lua script that reads the clock with
//! `redis.call('TIME')`.
//!
//! # Protocol
//! [`CircuitBreaker::call`] runs the whole protocol around one call to the
//! dependency, with two script calls, one Redis round trip each (two the
//! first time a Redis server sees the script: `EVALSHA` answers `NOSCRIPT`,
//! then `EVAL` sends the body):
//!
//! 1. [`CircuitBreaker::acquire`] (`acquire.lua`) answers [`Admission::Allowed`]
//!    with a [`Permit`], or [`Admission::Rejected`]: the dependency is not
//!    called, and `call` answers [`CallError::Refused`] at once.
//! 2. The call runs, cancelled after `EXTERNAL_SERVICE_TIMEOUT_MS`.
//! 3. [`CircuitBreaker::report`] (`report.lua`) gives the permit back with the
//!    [`CallOutcome`]; a cancelled call is reported as [`FailureKind::Timeout`].
//!
//! Steps 2 and 3 run as a task of their own, so that a caller cut off by its
//! own deadline still gets its call reported (see [`CircuitBreaker::call`]).
//! `acquire` and `report` are public for tests of the protocol itself.
//!
//! # States
//! | state | calls | leaves when |
//! |---|---|---|
//! | `closed` | all allowed | `CIRCUIT_BREAKER_FAILURE_THRESHOLD` consecutive failures are reported → `open` (a success resets the count) |
//! | `open` | all rejected | `CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS` after it opened, the next `acquire` → `half_open` |
//! | `half_open` | `CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS` probes **in total across all instances**, the rest rejected | the first probe result: success → `closed`, failure → `open` with a new opening time |
//!
//! The opening time is written only on a transition to `open`, so failures
//! reported while open (late results of calls admitted while closed) never
//! push recovery back.
//!
//! # Generations
//! Every transition increments a generation number and every permit carries
//! the generation it was admitted under; a report whose generation is not the
//! current one is ignored (the idea of `sony/gobreaker`'s generations). So a
//! slow call admitted while closed cannot reopen a breaker that has since
//! recovered, and a stale success cannot close one that has since reopened.
//!
//! # Probe leases
//! A probe whose instance is frozen or killed never reports. Each admitted
//! probe therefore holds a lease (Gray & Cheriton, *Leases*, SOSP 1989) of
//! `2 × EXTERNAL_SERVICE_TIMEOUT_MS + 1 s`, counted from the last probe
//! admission: a live probe is cancelled at `EXTERNAL_SERVICE_TIMEOUT_MS` and
//! reports well before the lease ends. When every probe slot is taken and the
//! lease has passed without a report, the next `acquire` starts a new round of
//! probes under a new generation (logged as `half_open → half_open`, reason
//! `probe_lease_expired`), and a very late report from a lost probe is ignored.
//!
//! # Storage
//! One hash per dependency under [`Keys::breaker`] (`{prefix}:cb:{<dependency>}`),
//! fields `state`, `gen`, `failures`, `opened_at` (ms since the Unix epoch,
//! Redis clock), `probes`, `lease_until` (ms), `last_failure`. A missing key
//! or field means `closed`, generation 0: a new instance reads what is there
//! and never writes an initial state. Every write refreshes the key's TTL to
//! `max(10 × reset timeout, 1 h)`, far longer than the breaker can stay open
//! without a caller moving it on; if a quiet deployment lets it expire, the
//! breaker is closed again.
//!
//! # Logging
//! The instance whose script made a transition logs it once, as a
//! `tracing::info!` event with the fields `dependency`, `old_state`,
//! `new_state`, `reason` and `generation` (and `failure` for a report that
//! opened the breaker). Instances that only observe the new state log nothing.
//!
//! # Health
//! [`CircuitBreaker::add_state_read`] appends `TIME` and `HMGET` to a caller's
//! pipeline (next to its `PING`) and [`CircuitBreaker::effective_state_from`]
//! turns their replies into the *effective* state: `half_open` as soon as the
//! reset timeout has passed, even before any `acquire` has moved the stored
//! state.

use std::fmt;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{ErrorKind, FromRedisValue, ParsingError, RedisError, Script, Value};
use serde::Serialize;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;
use utoipa::ToSchema;

use crate::connection::{Redis, ReplyFields};
use crate::keys::Keys;
use crate::settings::{ConfigError, Env};

static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| crate::connection::script(include_str!("acquire.lua")));
static REPORT: LazyLock<Script> =
    LazyLock::new(|| crate::connection::script(include_str!("report.lua")));

/// The reply of `acquire.lua`,
/// `{allowed, state, gen, is_probe, from, to, reason}`, decoded here and
/// nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AcquireReply {
    admission: Admission,
    transition: Option<Transition>,
}

impl FromRedisValue for AcquireReply {
    fn from_redis_value(reply: Value) -> Result<Self, ParsingError> {
        let mut fields = ReplyFields::new("acquire.lua", reply)?;
        let allowed: bool = fields.take()?;
        let state: BreakerState = fields.take()?;
        let generation: u64 = fields.take()?;
        let is_probe: bool = fields.take()?;
        let admission = if allowed {
            Admission::Allowed(Permit {
                generation,
                state,
                is_probe,
            })
        } else {
            Admission::Rejected { state }
        };
        Ok(Self {
            admission,
            transition: transition_fields(&mut fields, generation)?,
        })
    }
}

/// The reply of `report.lua`, `{applied, state, gen, from, to, reason}`,
/// decoded here and nowhere else.
impl FromRedisValue for ReportOutcome {
    fn from_redis_value(reply: Value) -> Result<Self, ParsingError> {
        let mut fields = ReplyFields::new("report.lua", reply)?;
        let applied: bool = fields.take()?;
        let state: BreakerState = fields.take()?;
        let generation: u64 = fields.take()?;
        Ok(Self {
            applied,
            state,
            generation,
            transition: transition_fields(&mut fields, generation)?,
        })
    }
}

/// The `from`, `to`, `reason` fields that end both scripts' replies: all
/// empty when the call made no transition.
fn transition_fields(
    fields: &mut ReplyFields,
    generation: u64,
) -> Result<Option<Transition>, ParsingError> {
    let (from, to, reason): (String, String, String) =
        (fields.take()?, fields.take()?, fields.take()?);
    parse_transition(&from, &to, &reason, generation)
}

impl FromRedisValue for BreakerState {
    fn from_redis_value(reply: Value) -> Result<Self, ParsingError> {
        let name: String = FromRedisValue::from_redis_value(reply)?;
        Self::parse(&name)
    }
}

/// The shortest TTL of the breaker key.
const MIN_KEY_TTL: Duration = Duration::from_secs(3600);

/// The number of commands [`CircuitBreaker::add_state_read`] appends to a
/// pipeline, and so the number of replies [`CircuitBreaker::effective_state_from`]
/// expects.
pub const STATE_READ_COMMANDS: usize = 2;

/// The breaker's settings.
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    /// `CIRCUIT_BREAKER_FAILURE_THRESHOLD`, default 3 (1..=1000): consecutive
    /// failures that open the breaker.
    pub failure_threshold: u32,
    /// `CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS`, default 10 (1..=86 400): how
    /// long it stays open before admitting probes.
    pub reset_timeout: Duration,
    /// `CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS`, default 1 (1..=1000): probes
    /// admitted in total, across all instances, while half-open.
    pub half_open_max_calls: u32,
}

impl BreakerSettings {
    /// Reads and validates the `CIRCUIT_BREAKER_*` variables.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            failure_threshold: env.int("CIRCUIT_BREAKER_FAILURE_THRESHOLD", 3, 1..=1000)? as u32,
            reset_timeout: env.seconds("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", 10, 1..=86_400)?,
            half_open_max_calls: env.int("CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS", 1, 1..=1000)?
                as u32,
        })
    }
}

/// A circuit breaker state: `closed`, `open` or `half_open`, the names used
/// in the Redis hash, in logs and in `GET /health` (which shows the
/// effective state: `half_open` as soon as the reset timeout has passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go ahead; consecutive failures are counted.
    Closed,
    /// Calls are rejected until the reset timeout has passed.
    Open,
    /// A limited number of probe calls go ahead; the first result decides.
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"` or `"half_open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    fn parse(name: &str) -> Result<Self, ParsingError> {
        match name {
            "closed" => Ok(Self::Closed),
            "open" => Ok(Self::Open),
            "half_open" => Ok(Self::HalfOpen),
            other => Err(format!("unknown circuit breaker state {other:?}").into()),
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call to the dependency failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Non-2xx status, invalid body or connection error.
    UpstreamError,
    /// Slower than `EXTERNAL_SERVICE_TIMEOUT_MS`, and cancelled.
    Timeout,
}

impl FailureKind {
    /// `"upstream_error"` or `"timeout"` (also usable as a fallback `reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UpstreamError => "upstream_error",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one admitted call, given back with [`CircuitBreaker::report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The dependency answered in time with a usable body.
    Success,
    /// The call failed; every kind counts the same towards the threshold.
    Failure(FailureKind),
}

impl CallOutcome {
    /// `"success"`, `"upstream_error"` or `"timeout"`, as passed to `report.lua`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure(kind) => kind.as_str(),
        }
    }
}

/// The right to make one call, from [`CircuitBreaker::acquire`]; give it back
/// with [`CircuitBreaker::report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// The breaker generation the call was admitted under; a report is
    /// ignored once the generation has moved on.
    pub generation: u64,
    /// The state the call was admitted under: `Closed` or `HalfOpen`.
    pub state: BreakerState,
    /// Whether this call is one of the half-open probes.
    pub is_probe: bool,
}

/// The answer of [`CircuitBreaker::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Make the call, then report its outcome with this permit.
    Allowed(Permit),
    /// Do not call the dependency; answer the fallback at once. `state` is
    /// `Open`, or `HalfOpen` when every probe slot is taken.
    Rejected {
        /// The breaker state that rejected the call.
        state: BreakerState,
    },
}

/// Why [`CircuitBreaker::call`] produced no value.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The breaker refused the call: it is open, or every half-open probe
    /// slot is taken. The dependency was not called.
    #[error("the circuit breaker is {state}")]
    Refused {
        /// The state that refused the call.
        state: BreakerState,
    },
    /// The call failed or was cancelled at its timeout; the failure was
    /// reported to the breaker.
    #[error("the call failed: {0}")]
    Failed(FailureKind),
    /// Redis could not be asked whether the call may go ahead.
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// Why a transition happened (the `reason` field of its log event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionReason {
    /// `closed → open`: the failure threshold was reached.
    FailureThresholdReached,
    /// `open → half_open`: the reset timeout has passed.
    ResetTimeoutElapsed,
    /// `half_open → closed`: a probe succeeded.
    ProbeSucceeded,
    /// `half_open → open`: a probe failed.
    ProbeFailed,
    /// `half_open → half_open`: every probe slot was taken and the probe lease
    /// passed without a report; a new round of probes starts.
    ProbeLeaseExpired,
}

impl TransitionReason {
    /// The snake_case name, as returned by the scripts and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailureThresholdReached => "failure_threshold_reached",
            Self::ResetTimeoutElapsed => "reset_timeout_elapsed",
            Self::ProbeSucceeded => "probe_succeeded",
            Self::ProbeFailed => "probe_failed",
            Self::ProbeLeaseExpired => "probe_lease_expired",
        }
    }

    fn parse(name: &str) -> Result<Self, ParsingError> {
        match name {
            "failure_threshold_reached" => Ok(Self::FailureThresholdReached),
            "reset_timeout_elapsed" => Ok(Self::ResetTimeoutElapsed),
            "probe_succeeded" => Ok(Self::ProbeSucceeded),
            "probe_failed" => Ok(Self::ProbeFailed),
            "probe_lease_expired" => Ok(Self::ProbeLeaseExpired),
            other => Err(format!("unknown circuit breaker transition {other:?}").into()),
        }
    }
}

/// A transition made by one script call (and logged by the instance that made it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// Why.
    pub reason: TransitionReason,
    /// The generation after the transition.
    pub generation: u64,
}

/// What [`CircuitBreaker::report_with_transition`] did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportOutcome {
    /// `false` when the report was ignored: the permit's generation is not
    /// the current one, or the breaker is open.
    pub applied: bool,
    /// The stored state after the report.
    pub state: BreakerState,
    /// The generation after the report.
    pub generation: u64,
    /// The transition this report made, if any.
    pub transition: Option<Transition>,
}

/// Everything stored about one breaker, read in one round trip by
/// [`CircuitBreaker::snapshot`] (for diagnostics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg(any(test, feature = "test-support"))]
pub struct BreakerSnapshot {
    /// The state as stored (`open` stays stored until an `acquire` moves it).
    pub stored_state: BreakerState,
    /// The state a caller would see now (see [`CircuitBreaker::effective_state_from`]).
    pub effective_state: BreakerState,
    /// The current generation (0 for a missing key).
    pub generation: u64,
    /// Consecutive failures counted while closed.
    pub consecutive_failures: u32,
    /// When the breaker last opened, ms since the Unix epoch (Redis clock).
    pub opened_at_ms: Option<u64>,
    /// Probes admitted in the current half-open generation.
    pub probes_admitted: u32,
    /// Until when the last admitted probe holds its lease, ms since the Unix
    /// epoch (Redis clock).
    pub probe_lease_until_ms: Option<u64>,
    /// Redis's clock when the snapshot was read, ms since the Unix epoch.
    pub now_ms: u64,
}

/// The circuit breaker of one dependency. Built once per cold start; it holds
/// only settings, all state is in Redis, so any number of instances (and
/// clones) share one breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    dependency: String,
    key: String,
    failure_threshold: u32,
    reset_timeout: Duration,
    half_open_max_calls: u32,
    call_timeout: Duration,
    probe_lease: Duration,
    key_ttl: Duration,
}

impl CircuitBreaker {
    /// The breaker of `dependency` (e.g. `"external_service"`), stored under
    /// `keys.breaker(dependency)`, with `settings`, calls cancelled after
    /// `call_timeout` (`EXTERNAL_SERVICE_TIMEOUT_MS`) and a probe lease of
    /// `2 × call_timeout + 1 s`. No Redis traffic happens here, and the
    /// stored state is never reset.
    pub fn new(
        settings: &BreakerSettings,
        call_timeout: Duration,
        keys: &Keys,
        dependency: &str,
    ) -> Self {
        let reset_timeout = settings.reset_timeout;
        Self {
            dependency: dependency.to_string(),
            key: keys.breaker(dependency),
            failure_threshold: settings.failure_threshold.max(1),
            reset_timeout,
            half_open_max_calls: settings.half_open_max_calls.max(1),
            call_timeout,
            probe_lease: call_timeout * 2 + Duration::from_secs(1),
            key_ttl: (reset_timeout * 10).max(MIN_KEY_TTL),
        }
    }

    /// The Redis key of the breaker hash.
    #[cfg(any(test, feature = "test-support"))]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How long an admitted probe may go without a report before its slot is
    /// given to a new probe (`2 × EXTERNAL_SERVICE_TIMEOUT_MS + 1 s`).
    #[cfg(any(test, feature = "test-support"))]
    pub fn probe_lease(&self) -> Duration {
        self.probe_lease
    }

    /// The TTL set on the breaker key by every write: `max(10 × reset timeout, 1 h)`.
    #[cfg(any(test, feature = "test-support"))]
    pub fn key_ttl(&self) -> Duration {
        self.key_ttl
    }

    /// Makes one call to the dependency through the breaker: asks whether
    /// it may go ahead, runs `call` cancelled after the call timeout, reports
    /// the outcome, and returns the call's value.
    ///
    /// The call and its report run as a task of their own: when the caller's
    /// own deadline cuts it off, dropping its future does not drop the
    /// report, or a dependency slower than the deadline would never open the
    /// breaker and a cut-off probe would hold its slot until the probe lease
    /// ends. (If Lambda freezes the instance first, the task reports when it
    /// thaws; a report from an older generation is ignored, and the lease
    /// covers a lost probe.) The task logs in the caller's span and
    /// subscriber. A report that fails is logged, not returned: the call's
    /// value is still good, and the breaker misses one result.
    ///
    /// # Errors
    /// [`CallError::Refused`] when the breaker does not admit the call,
    /// [`CallError::Failed`] with the [`FailureKind`] of the call's error (a timeout is
    /// [`FailureKind::Timeout`]; a task that panicked counts as
    /// [`FailureKind::UpstreamError`]), [`CallError::Redis`] when admission
    /// could not be asked.
    pub async fn call<T, E, F, Fut>(&self, redis: &Redis, call: F) -> Result<T, CallError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<FailureKind>,
        T: Send + 'static,
    {
        let permit = match self.acquire(redis).await? {
            Admission::Rejected { state } => return Err(CallError::Refused { state }),
            Admission::Allowed(permit) => permit,
        };
        let (breaker, redis) = (self.clone(), redis.clone());
        let task = tokio::spawn(
            async move {
                let result = match tokio::time::timeout(breaker.call_timeout, call()).await {
                    Ok(result) => result.map_err(Into::into),
                    Err(_elapsed) => Err(FailureKind::Timeout),
                };
                let outcome = match &result {
                    Ok(_) => CallOutcome::Success,
                    Err(kind) => CallOutcome::Failure(*kind),
                };
                if let Err(err) = breaker.report(&redis, &permit, outcome).await {
                    tracing::warn!(error = %err, "could not report to the circuit breaker");
                }
                result
            }
            .instrument(tracing::Span::current())
            .with_current_subscriber(),
        );
        match task.await {
            Ok(result) => result.map_err(CallError::Failed),
            Err(err) => {
                tracing::error!(error = %err, "the guarded call's task failed");
                Err(CallError::Failed(FailureKind::UpstreamError))
            }
        }
    }

    /// Asks whether one call to the dependency may go ahead: one script call
    /// (one round trip). Moves `open` to `half_open` once the reset timeout
    /// has passed and hands out the half-open probe slots atomically.
    ///
    /// # Errors
    /// The [`RedisError`] of the script call (unreachable Redis, timeout after
    /// `REDIS_TIMEOUT_MS`), or a `Parse`/`UnexpectedReturnType` error if the
    /// reply does not have the script's shape. What to do then (call anyway
    /// or answer the fallback) is the caller's choice.
    pub async fn acquire(&self, redis: &Redis) -> Result<Admission, RedisError> {
        self.acquire_with_transition(redis)
            .await
            .map(|(admission, _)| admission)
    }

    /// [`CircuitBreaker::acquire`], also returning the transition this call
    /// made, if any (it is logged either way).
    ///
    /// # Errors
    /// As [`CircuitBreaker::acquire`].
    pub async fn acquire_with_transition(
        &self,
        redis: &Redis,
    ) -> Result<(Admission, Option<Transition>), RedisError> {
        let AcquireReply {
            admission,
            transition,
        } = ACQUIRE
            .key(&self.key)
            .arg(millis(self.reset_timeout))
            .arg(self.half_open_max_calls)
            .arg(millis(self.probe_lease))
            .arg(self.key_ttl.as_secs().max(1))
            .invoke_async(&mut redis.clone())
            .await?;
        if let Some(t) = &transition {
            self.log(t, None);
        }
        Ok((admission, transition))
    }

    /// Gives back a permit with the outcome of its call: one script call (one
    /// round trip). Ignored when the permit's generation is not the current
    /// one or the breaker is open.
    ///
    /// # Errors
    /// As [`CircuitBreaker::acquire`]. A lost report costs at most one
    /// uncounted failure, or (for a probe) waiting for the probe lease.
    pub async fn report(
        &self,
        redis: &Redis,
        permit: &Permit,
        outcome: CallOutcome,
    ) -> Result<(), RedisError> {
        self.report_with_transition(redis, permit, outcome)
            .await
            .map(|_| ())
    }

    /// [`CircuitBreaker::report`], also returning whether the report counted
    /// and the transition it made, if any (it is logged either way).
    ///
    /// # Errors
    /// As [`CircuitBreaker::acquire`].
    pub async fn report_with_transition(
        &self,
        redis: &Redis,
        permit: &Permit,
        outcome: CallOutcome,
    ) -> Result<ReportOutcome, RedisError> {
        if let CallOutcome::Failure(_) = outcome {
            crate::observability::external_call_failed();
        }
        let reported: ReportOutcome = REPORT
            .key(&self.key)
            .arg(permit.generation)
            .arg(outcome.as_str())
            .arg(self.failure_threshold)
            .arg(self.key_ttl.as_secs().max(1))
            .invoke_async(&mut redis.clone())
            .await?;
        if let Some(t) = &reported.transition {
            let failure = match outcome {
                CallOutcome::Failure(kind) => Some(kind),
                CallOutcome::Success => None,
            };
            self.log(t, failure);
        }
        Ok(reported)
    }

    /// Appends the state read to a pipeline: `TIME` and
    /// `HMGET <key> state opened_at` ([`STATE_READ_COMMANDS`] commands, no
    /// writes). `GET /health` sends them with its `PING` in one round trip and
    /// hands the matching replies to [`CircuitBreaker::effective_state_from`].
    pub fn add_state_read(&self, pipe: &mut redis::Pipeline) {
        pipe.cmd("TIME");
        pipe.cmd("HMGET")
            .arg(&self.key)
            .arg("state")
            .arg("opened_at");
    }

    /// Turns the replies of the commands appended by
    /// [`CircuitBreaker::add_state_read`] (the first [`STATE_READ_COMMANDS`]
    /// values of `replies`, in order) into the effective state: the stored
    /// state, except that `open` reads as `half_open` once
    /// `opened_at + reset timeout` has passed by Redis's clock, even before an
    /// `acquire` has moved it. A missing key is `closed`.
    ///
    /// # Errors
    /// An `UnexpectedReturnType` [`RedisError`] when fewer replies are given,
    /// or a `Parse` error when they do not have the shapes of `TIME` and
    /// `HMGET` or hold an unknown state name.
    pub fn effective_state_from(&self, replies: &[Value]) -> Result<BreakerState, RedisError> {
        let [time, fields] = match replies {
            [time, fields, ..] => [time, fields],
            _ => {
                return Err(unexpected(
                    "circuit breaker state read needs 2 replies",
                    format!("got {}", replies.len()),
                ))
            }
        };
        let now_ms = time_ms(time)?;
        let (state, opened_at): (Option<String>, Option<u64>) =
            redis::from_redis_value_ref(fields)?;
        let stored = match state {
            Some(name) => BreakerState::parse(&name)?,
            None => BreakerState::Closed,
        };
        Ok(self.effective(stored, opened_at, now_ms))
    }

    /// The effective state (see [`CircuitBreaker::effective_state_from`]) in
    /// one round trip of its own.
    ///
    /// # Errors
    /// As [`CircuitBreaker::effective_state_from`], plus the pipeline's
    /// [`RedisError`].
    #[cfg(any(test, feature = "test-support"))]
    pub async fn state(&self, redis: &Redis) -> Result<BreakerState, RedisError> {
        let mut pipe = redis::pipe();
        self.add_state_read(&mut pipe);
        let replies: Vec<Value> = pipe.query_async(&mut redis.clone()).await?;
        self.effective_state_from(&replies)
    }

    /// Everything stored about the breaker, in one round trip (`TIME` and
    /// `HMGET` in a pipeline). Read-only.
    ///
    /// # Errors
    /// The pipeline's [`RedisError`], or a `Parse` error for a malformed hash.
    #[cfg(any(test, feature = "test-support"))]
    pub async fn snapshot(&self, redis: &Redis) -> Result<BreakerSnapshot, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        pipe.cmd("HMGET").arg(&self.key).arg(&[
            "state",
            "gen",
            "failures",
            "opened_at",
            "probes",
            "lease_until",
        ]);
        let (time, fields): (Value, Value) = pipe.query_async(&mut redis.clone()).await?;
        let now_ms = time_ms(&time)?;
        #[allow(clippy::type_complexity)]
        let (state, generation, failures, opened_at, probes, lease_until): (
            Option<String>,
            Option<u64>,
            Option<u32>,
            Option<u64>,
            Option<u32>,
            Option<u64>,
        ) = redis::from_redis_value_ref(&fields)?;
        let stored_state = match state {
            Some(name) => BreakerState::parse(&name)?,
            None => BreakerState::Closed,
        };
        Ok(BreakerSnapshot {
            stored_state,
            effective_state: self.effective(stored_state, opened_at, now_ms),
            generation: generation.unwrap_or(0),
            consecutive_failures: failures.unwrap_or(0),
            opened_at_ms: opened_at,
            probes_admitted: probes.unwrap_or(0),
            probe_lease_until_ms: lease_until,
            now_ms,
        })
    }

    /// Same rule as `acquire.lua`: open until `now >= opened_at + reset timeout`.
    fn effective(&self, stored: BreakerState, opened_at: Option<u64>, now_ms: u64) -> BreakerState {
        match stored {
            BreakerState::Open
                if now_ms
                    >= opened_at
                        .unwrap_or(0)
                        .saturating_add(millis(self.reset_timeout)) =>
            {
                BreakerState::HalfOpen
            }
            other => other,
        }
    }

    fn log(&self, t: &Transition, failure: Option<FailureKind>) {
        crate::observability::breaker_transition(t.to.as_str());
        tracing::info!(
            dependency = %self.dependency,
            old_state = t.from.as_str(),
            new_state = t.to.as_str(),
            reason = t.reason.as_str(),
            generation = t.generation,
            failure = failure.map(FailureKind::as_str),
            "circuit breaker transition"
        );
    }
}

fn parse_transition(
    from: &str,
    to: &str,
    reason: &str,
    generation: u64,
) -> Result<Option<Transition>, ParsingError> {
    if reason.is_empty() {
        return Ok(None);
    }
    Ok(Some(Transition {
        from: BreakerState::parse(from)?,
        to: BreakerState::parse(to)?,
        reason: TransitionReason::parse(reason)?,
        generation,
    }))
}

/// `TIME` replies `[seconds, microseconds]`; this is ms since the Unix epoch.
fn time_ms(reply: &Value) -> Result<u64, RedisError> {
    let (seconds, micros): (u64, u64) = redis::from_redis_value_ref(reply)?;
    Ok(seconds.saturating_mul(1000).saturating_add(micros / 1000))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unexpected(what: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::UnexpectedReturnType, what, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(pairs: &[(&str, &str)]) -> CircuitBreaker {
        let lookup = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let env = Env::new(&lookup);
        let settings = BreakerSettings::from_env(&env).unwrap();
        let call_timeout = env
            .millis("EXTERNAL_SERVICE_TIMEOUT_MS", 1000, 1..=60_000)
            .unwrap();
        CircuitBreaker::new(
            &settings,
            call_timeout,
            &Keys::new("unit"),
            "external_service",
        )
    }

    fn time_reply(ms: u64) -> Value {
        Value::Array(vec![
            Value::BulkString((ms / 1000).to_string().into_bytes()),
            Value::BulkString(((ms % 1000) * 1000).to_string().into_bytes()),
        ])
    }

    fn fields_reply(state: Option<&str>, opened_at: Option<u64>) -> Value {
        let bulk = |s: String| Value::BulkString(s.into_bytes());
        Value::Array(vec![
            state.map_or(Value::Nil, |s| bulk(s.to_string())),
            opened_at.map_or(Value::Nil, |t| bulk(t.to_string())),
        ])
    }

    #[test]
    fn states_have_their_wire_names() {
        for (state, name) in [
            (BreakerState::Closed, "closed"),
            (BreakerState::Open, "open"),
            (BreakerState::HalfOpen, "half_open"),
        ] {
            assert_eq!(state.as_str(), name);
            assert_eq!(state.to_string(), name);
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            assert_eq!(BreakerState::parse(name).unwrap(), state);
        }
        assert_eq!(FailureKind::UpstreamError.as_str(), "upstream_error");
        assert_eq!(FailureKind::Timeout.as_str(), "timeout");
        assert_eq!(
            CallOutcome::Failure(FailureKind::Timeout).as_str(),
            "timeout"
        );
        assert_eq!(CallOutcome::Success.as_str(), "success");
    }

    #[test]
    fn settings_come_from_the_config() {
        let b = breaker(&[
            ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "7"),
            ("EXTERNAL_SERVICE_TIMEOUT_MS", "250"),
        ]);
        assert_eq!(b.key(), "unit:cb:{external_service}");
        assert_eq!(b.probe_lease(), Duration::from_millis(1500));
        assert_eq!(b.key_ttl(), Duration::from_secs(3600));
        let long = breaker(&[("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "600")]);
        assert_eq!(long.key_ttl(), Duration::from_secs(6000));
    }

    #[test]
    fn open_reads_as_half_open_once_the_reset_timeout_has_passed() {
        let b = breaker(&[("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "10")]);
        let opened = 1_700_000_000_000;
        let read = |now: u64, state: Option<&str>| {
            b.effective_state_from(&[time_reply(now), fields_reply(state, Some(opened))])
                .unwrap()
        };
        assert_eq!(read(opened + 9_999, Some("open")), BreakerState::Open);
        assert_eq!(read(opened + 10_000, Some("open")), BreakerState::HalfOpen);
        assert_eq!(read(opened, Some("half_open")), BreakerState::HalfOpen);
        assert_eq!(read(opened + 60_000, Some("closed")), BreakerState::Closed);
        let missing = b
            .effective_state_from(&[time_reply(opened), fields_reply(None, None)])
            .unwrap();
        assert_eq!(missing, BreakerState::Closed);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let b = breaker(&[]);
        assert!(b.effective_state_from(&[]).is_err());
        assert!(b.effective_state_from(&[time_reply(1)]).is_err());
        assert!(b
            .effective_state_from(&[Value::Okay, fields_reply(None, None)])
            .is_err());
        assert!(b
            .effective_state_from(&[time_reply(1), fields_reply(Some("ajar"), None)])
            .is_err());
        assert!(parse_transition("open", "nowhere", "x", 1).is_err());
        assert_eq!(parse_transition("", "", "", 1).unwrap(), None);
    }
}
