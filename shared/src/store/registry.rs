//! The registry of live metric types: a bound on a deployment's cardinality
//! (`MAX_METRIC_TYPES`) and on how many new types each client may create per
//! hour (`MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR`), decided by one atomic
//! script (`registry.lua`) for every instance of every function.
//!
//! Every metric type costs Redis its own bucket containers for the whole
//! retention (BENCHMARKS.md, figure 6), so the number of types, not only the
//! number of metrics, bounds memory. The registry is one sorted set in one
//! hash slot ([`Keys::type_registry`]): member = metric type, score = the
//! unix second until which it counts — the latest expiry of its containers,
//! so a type counts exactly while Redis holds data of it (and at least an
//! `IDEMPOTENCY_TTL_SECONDS` after its last write, so a retry of an accepted
//! request always finds its types). Members past their score are removed by
//! the next claim, and the key expires with its last member.
//!
//! An ingest goes through three steps around the storage call:
//! 1. [`TypeRegistry::admit`] claims the request's types: if the types new
//!    to the registry would take it past the cap, or the client past its
//!    budget, the request is refused whole and nothing is written; else the
//!    new types are *reserved* (counted for a request deadline and a margin)
//!    and the registered ones' scores raised to the request's expiry;
//! 2. the storage call ([`super::MetricStore::ingest`]);
//! 3. [`TypeRegistry::confirm`] gives the reserved types the expiry of their
//!    data once they are stored (or replayed), or [`TypeRegistry::release`]
//!    drops the reservations of a request refused by the storage (an
//!    overflow, a reused `Idempotency-Key`), so nothing of it remains.
//!
//! **The hot path pays nothing.** Each instance remembers the types it
//! registered and the expiry they cover, and skips step 1 for a type it
//! registered less than [`RECHECK`] ago whose registration covers the
//! request's expiry (which changes when the request writes into a new
//! 32-day container of day buckets). So an ingest of a known type costs no
//! round trip more; a type new to the instance costs one (the claim), a type
//! new to the deployment two (claim and confirm). The recheck bounds how
//! long an instance trusts its memory should the registry be lost (a Redis
//! restart without persistence): within [`RECHECK`], every type written is
//! counted again.
//!
//! **Exact across instances.** The cap is decided inside one script call on
//! one key, so concurrent claims from any number of instances admit exactly
//! as many new types as fit. Types an instance skips are registered with a
//! score past the request's expiry, so they are live members and already
//! counted. What is not exact: a request whose storage ran but whose confirm
//! never reached Redis (a failure in between, answered `503`) leaves its
//! new types counted only for the reservation; they count again from their
//! next write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::{FromRedisValue, ParsingError, RedisError, Script, Value};

use super::buckets::{BucketRef, Granularity};
use super::EXPIRY_SLACK_S;
use crate::connection::{Redis, ReplyFields};
use crate::keys::Keys;
use crate::metric::Metric;
use crate::settings::{ConfigError, Env};

static REGISTRY: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| crate::connection::script(include_str!("registry.lua")));

/// How long an instance trusts its memory that a type is registered before
/// it claims the type again (60 s): the bound on how long a lost registry
/// (a Redis restart without persistence) can undercount the types in use.
pub const RECHECK: Duration = Duration::from_secs(60);

/// Most types one instance remembers; past it, stale entries are dropped
/// (and if all are fresh, all of them: a forgotten type costs one claim).
const KNOWN_CAPACITY: usize = 65_536;

/// Margin of a reservation beyond the request deadline, s: a claim and its
/// confirm lie within one request deadline of each other.
const RESERVATION_MARGIN_S: u64 = 60;

/// The settings of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeLimits {
    /// `MAX_METRIC_TYPES`, default 1 000 (1..=10 000 000): the most metric
    /// types one deployment holds data of at once. A type written every
    /// minute through the whole default retention holds 4.6 MiB (one value
    /// a minute) to 10.7 MiB (23 a minute) of Redis memory (BENCHMARKS.md),
    /// so the default bounds that case to about 5–11 GiB.
    pub max_types: u64,
    /// `MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR`, default 200
    /// (1..=10 000 000): the most types new to the deployment one client may
    /// create in any rolling hour, so that one client needs hours, not one
    /// request, to take the whole of `MAX_METRIC_TYPES`.
    pub max_new_per_client_per_hour: u64,
}

impl TypeLimits {
    /// Reads and validates `MAX_METRIC_TYPES` and
    /// `MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_types: env.int("MAX_METRIC_TYPES", 1_000, 1..=10_000_000)?,
            max_new_per_client_per_hour: env.int(
                "MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR",
                200,
                1..=10_000_000,
            )?,
        })
    }
}

/// Why the types of a request were not admitted. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The types new to the deployment would take it past
    /// `MAX_METRIC_TYPES`.
    #[error("{new_types} new metric types, {live} of {max_types} in use")]
    Limit {
        /// `MAX_METRIC_TYPES`.
        max_types: u64,
        /// Types counted when the request was refused.
        live: u64,
        /// Types of the request new to the deployment.
        new_types: u64,
    },
    /// The client would create more new types in an hour than
    /// `MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR`.
    #[error("the client's budget of {budget} new metric types per hour is spent")]
    Budget {
        /// `MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR`.
        budget: u64,
        /// Seconds until the request would fit, ≥ 1; `None` when it never
        /// will (it alone holds more new types than the budget).
        retry_after_s: Option<u64>,
    },
    /// Redis failed or timed out.
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// The types one claim admitted that still need [`TypeRegistry::confirm`]
/// (or [`TypeRegistry::release`]), each with the expiry its data needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Types to confirm, with their expiry (unix s); the first `reserved`
    /// of them were reserved by this claim.
    pending: Vec<(String, i64)>,
    reserved: usize,
}

impl Admission {
    /// The types this request's claim reserved: new to the deployment.
    pub fn new_types(&self) -> impl Iterator<Item = &str> {
        self.pending[..self.reserved]
            .iter()
            .map(|(name, _)| name.as_str())
    }
}

/// The reply of `registry.lua`, decoded here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RegistryReply {
    /// `{"admitted", live, n, i...}`: 1-based positions of the types to
    /// confirm, the first `n` reserved by this call.
    Admitted {
        live: u64,
        reserved: usize,
        positions: Vec<usize>,
    },
    /// `{"limit", live, new}`.
    Limit { live: u64, new_types: u64 },
    /// `{"budget", retry_ms}`, `-1`: never.
    Budget { retry_ms: i64 },
    /// `{"confirmed"}` or `{"released"}`.
    Done,
}

impl FromRedisValue for RegistryReply {
    fn from_redis_value(reply: Value) -> Result<Self, ParsingError> {
        let mut fields = ReplyFields::new("registry.lua", reply)?;
        let tag: String = fields.take()?;
        match tag.as_str() {
            "admitted" => {
                let live = fields.take()?;
                let reserved = fields.take()?;
                let mut positions = Vec::new();
                while let Ok(position) = fields.take::<usize>() {
                    positions.push(position);
                }
                Ok(Self::Admitted {
                    live,
                    reserved,
                    positions,
                })
            }
            "limit" => Ok(Self::Limit {
                live: fields.take()?,
                new_types: fields.take()?,
            }),
            "budget" => Ok(Self::Budget {
                retry_ms: fields.take()?,
            }),
            "confirmed" | "released" => Ok(Self::Done),
            other => Err(fields.unexpected(other)),
        }
    }
}

/// What an instance remembers of one registered type.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// The expiry (unix s) its registration covers at least.
    covers: i64,
    /// When it was claimed or confirmed.
    at: Instant,
}

impl Known {
    /// True when a write needing `expiry` may skip the claim at `now`.
    fn covers(&self, expiry: i64, now: Instant) -> bool {
        self.covers >= expiry && now.saturating_duration_since(self.at) < RECHECK
    }
}

/// The registry of one deployment (one key prefix), with this instance's
/// memory of the types it registered.
#[derive(Debug)]
pub struct TypeRegistry {
    keys: Keys,
    limits: TypeLimits,
    retention_s: i64,
    /// A touched type counts at least this long, s.
    floor_s: u64,
    /// A new type counts this long before its confirm, s.
    reservation_s: u64,
    known: Mutex<HashMap<String, Known>>,
}

impl TypeRegistry {
    /// `retention_days` is `METRIC_RETENTION_DAYS` (the store's), so that a
    /// type counts as long as its containers live; `idempotency_ttl` is
    /// `IDEMPOTENCY_TTL_SECONDS`, so that a retry of an accepted request
    /// finds its types; `deadline` is `REQUEST_DEADLINE_MS`, which bounds
    /// the time between a claim and its confirm.
    pub fn new(
        keys: Keys,
        limits: TypeLimits,
        retention_days: u32,
        idempotency_ttl: Duration,
        deadline: Duration,
    ) -> Self {
        Self {
            keys,
            limits,
            retention_s: i64::from(retention_days) * 86_400,
            floor_s: idempotency_ttl.as_secs() + RECHECK.as_secs(),
            reservation_s: deadline.as_secs() + 1 + RESERVATION_MARGIN_S,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn limits(&self) -> TypeLimits {
        self.limits
    }

    /// The latest expiry (unix s) of the containers a metric at `timestamp`
    /// (unix s) is written into: its day bucket's 32-day container's end +
    /// the retention + the store's slack, as `MetricStore::ingest` sets them.
    pub fn expiry_of(&self, timestamp: i64) -> i64 {
        Granularity::ALL
            .iter()
            .map(|&g| BucketRef::containing(g, timestamp).container_end())
            .max()
            .unwrap_or(timestamp)
            + self.retention_s
            + EXPIRY_SLACK_S
    }

    /// Admits the metric types of `metrics` (already validated) for
    /// `client` (a digest of its identity): no round trip when this instance
    /// registered every one of them within [`RECHECK`] for the expiry the
    /// request needs, else one `registry.lua` call for the others.
    ///
    /// # Errors
    /// [`AdmitError::Limit`] or [`AdmitError::Budget`] when the request is
    /// refused (nothing written); [`AdmitError::Redis`] when Redis fails.
    pub async fn admit(
        &self,
        redis: &Redis,
        client: &str,
        metrics: &[Metric],
    ) -> Result<Admission, AdmitError> {
        let now = Instant::now();
        let wanted = self.unregistered(metrics, now);
        if wanted.is_empty() {
            return Ok(Admission::default());
        }
        let mut invocation = REGISTRY.prepare_invoke();
        invocation
            .key(self.keys.type_registry())
            .key(self.keys.type_creations(client))
            .arg("claim")
            .arg(self.limits.max_types)
            .arg(self.limits.max_new_per_client_per_hour)
            .arg(self.reservation_s)
            .arg(self.floor_s);
        for (name, expiry) in &wanted {
            invocation.arg(*name).arg(*expiry);
        }
        match invocation.invoke_async(&mut redis.clone()).await? {
            RegistryReply::Admitted {
                live,
                reserved,
                positions,
            } => {
                let mut pending = Vec::with_capacity(positions.len());
                let mut confirming = vec![false; wanted.len()];
                for position in positions {
                    if let Some(slot) = confirming.get_mut(position.wrapping_sub(1)) {
                        *slot = true;
                        let (name, expiry) = wanted[position - 1];
                        pending.push((name.to_string(), expiry));
                    }
                }
                let registered = wanted
                    .iter()
                    .zip(&confirming)
                    .filter(|(_, confirming)| !**confirming)
                    .map(|((name, expiry), _)| (*name, *expiry));
                self.remember(registered, now);
                if reserved > 0 && live.saturating_mul(10) >= self.limits.max_types * 9 {
                    tracing::warn!(
                        live_metric_types = live,
                        max_metric_types = self.limits.max_types,
                        "metric types are near MAX_METRIC_TYPES"
                    );
                }
                Ok(Admission {
                    reserved: reserved.min(pending.len()),
                    pending,
                })
            }
            RegistryReply::Limit { live, new_types } => Err(AdmitError::Limit {
                max_types: self.limits.max_types,
                live,
                new_types,
            }),
            RegistryReply::Budget { retry_ms } => Err(AdmitError::Budget {
                budget: self.limits.max_new_per_client_per_hour,
                retry_after_s: u64::try_from(retry_ms)
                    .ok()
                    .map(|ms| ms.div_ceil(1000).max(1)),
            }),
            RegistryReply::Done => Err(AdmitError::Redis(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "registry.lua answered a claim with another mode's reply",
            )))),
        }
    }

    /// Whether this instance registered every metric type of `metrics`
    /// recently enough for the expiry each needs, so that
    /// [`TypeRegistry::admit`] admits them without a round trip.
    pub fn admits_locally(&self, metrics: &[Metric]) -> bool {
        self.unregistered(metrics, Instant::now()).is_empty()
    }

    /// The types of `metrics` (each once, with the latest expiry its
    /// metrics need) that this instance has not registered recently enough.
    fn unregistered<'m>(&self, metrics: &'m [Metric], now: Instant) -> Vec<(&'m str, i64)> {
        let mut wanted: Vec<(&str, i64)> = Vec::new();
        for metric in metrics {
            let expiry = self.expiry_of(metric.timestamp.timestamp());
            let name = metric.metric_type.as_str();
            match wanted.iter_mut().find(|(t, _)| *t == name) {
                Some((_, e)) => *e = (*e).max(expiry),
                None => wanted.push((name, expiry)),
            }
        }
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        wanted.retain(|(name, expiry)| !known.get(*name).is_some_and(|k| k.covers(*expiry, now)));
        wanted
    }

    /// Gives the types `admission` left pending the expiry of their data,
    /// once the request stored (or replayed) them: no round trip when there
    /// are none.
    ///
    /// # Errors
    /// The [`RedisError`] of the call; the data is stored either way, and
    /// the reserved types count until their reservation ends.
    pub async fn confirm(&self, redis: &Redis, admission: &Admission) -> Result<(), RedisError> {
        if admission.pending.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut invocation = REGISTRY.prepare_invoke();
        invocation
            .key(self.keys.type_registry())
            .arg("confirm")
            .arg(self.floor_s);
        for (name, expiry) in &admission.pending {
            invocation.arg(name).arg(*expiry);
        }
        let _: RegistryReply = invocation.invoke_async(&mut redis.clone()).await?;
        self.remember(admission.pending.iter().map(|(n, e)| (n.as_str(), *e)), now);
        Ok(())
    }

    /// Drops the reservations `admission`'s claim made for `client`, after
    /// the storage refused the request: no round trip when it made none. A
    /// type that another request confirmed meanwhile is kept.
    ///
    /// # Errors
    /// The [`RedisError`] of the call; the reservations then end on their own.
    pub async fn release(
        &self,
        redis: &Redis,
        client: &str,
        admission: &Admission,
    ) -> Result<(), RedisError> {
        if admission.reserved == 0 {
            return Ok(());
        }
        let mut invocation = REGISTRY.prepare_invoke();
        invocation
            .key(self.keys.type_registry())
            .key(self.keys.type_creations(client))
            .arg("release")
            .arg(self.reservation_s);
        for name in admission.new_types() {
            invocation.arg(name);
        }
        let _: RegistryReply = invocation.invoke_async(&mut redis.clone()).await?;
        Ok(())
    }

    /// Remembers that `types` are registered up to their expiry, as of `at`.
    fn remember<'a>(&self, types: impl Iterator<Item = (&'a str, i64)>, at: Instant) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for (name, covers) in types {
            if known.len() >= KNOWN_CAPACITY && !known.contains_key(name) {
                known.retain(|_, k| at.saturating_duration_since(k.at) < RECHECK);
                if known.len() >= KNOWN_CAPACITY {
                    known.clear();
                }
            }
            known.insert(name.to_string(), Known { covers, at });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> TypeRegistry {
        TypeRegistry::new(
            Keys::new("t"),
            TypeLimits {
                max_types: 10,
                max_new_per_client_per_hour: 5,
            },
            35,
            Duration::from_secs(86_400),
            Duration::from_secs(3),
        )
    }

    #[test]
    fn a_type_counts_until_its_last_container_expires() {
        let r = registry();
        // 2026-02-18T12:00:00Z: its day container is the 32-day era
        // starting at day 20 480 (1 769 472 000).
        let t = 1_771_416_000;
        let era_end = 1_769_472_000 + 32 * 86_400;
        assert_eq!(r.expiry_of(t), era_end + 35 * 86_400 + 86_400);
        // Every container of the metric ends no later.
        for g in Granularity::ALL {
            let end = BucketRef::containing(g, t).container_end() + 36 * 86_400;
            assert!(end <= r.expiry_of(t));
        }
        // A later metric in the same era needs no more; the next era does.
        assert_eq!(r.expiry_of(era_end - 1), r.expiry_of(t));
        assert!(r.expiry_of(era_end) > r.expiry_of(t));
    }

    #[test]
    fn an_instance_trusts_its_memory_for_the_recheck_interval_and_expiry_only() {
        let at = Instant::now();
        let known = Known { covers: 100, at };
        assert!(known.covers(100, at));
        assert!(known.covers(50, at + RECHECK - Duration::from_millis(1)));
        assert!(!known.covers(101, at), "a later container needs a claim");
        assert!(!known.covers(50, at + RECHECK), "rechecked after RECHECK");
    }

    #[test]
    fn memory_is_bounded() {
        let r = registry();
        let at = Instant::now();
        let names: Vec<String> = (0..KNOWN_CAPACITY + 10).map(|i| format!("t{i}")).collect();
        r.remember(names.iter().map(|n| (n.as_str(), 1)), at);
        let known = r.known.lock().unwrap();
        assert!(known.len() <= KNOWN_CAPACITY, "{}", known.len());
        assert!(known.contains_key(&format!("t{}", KNOWN_CAPACITY + 9)));
    }

    #[test]
    fn replies_decode() {
        use redis::Value::{BulkString, Int};
        let s = |t: &str| BulkString(t.as_bytes().to_vec());
        let reply = |items: Vec<Value>| RegistryReply::from_redis_value(Value::Array(items));
        assert_eq!(
            reply(vec![s("admitted"), Int(7), Int(1), Int(2), Int(3)]).unwrap(),
            RegistryReply::Admitted {
                live: 7,
                reserved: 1,
                positions: vec![2, 3]
            }
        );
        assert_eq!(
            reply(vec![s("limit"), Int(10), Int(3)]).unwrap(),
            RegistryReply::Limit {
                live: 10,
                new_types: 3
            }
        );
        assert_eq!(
            reply(vec![s("budget"), Int(-1)]).unwrap(),
            RegistryReply::Budget { retry_ms: -1 }
        );
        assert!(reply(vec![s("what")]).is_err());
    }

    #[test]
    fn defaults_and_ranges() {
        let none = |_: &str| None;
        let limits = TypeLimits::from_env(&Env::new(&none)).unwrap();
        assert_eq!(limits.max_types, 1_000);
        assert_eq!(limits.max_new_per_client_per_hour, 200);
        let zero = |name: &str| (name == "MAX_METRIC_TYPES").then(|| "0".to_string());
        let err = TypeLimits::from_env(&Env::new(&zero)).unwrap_err();
        assert_eq!(err.variable, "MAX_METRIC_TYPES");
    }
}
