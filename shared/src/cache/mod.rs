//! Read-through cache of summaries, with single-flight recomputation across
//! every instance.
//!
//! A summary is looked up by a digest of its **parsed** query
//! ([`SummaryQuery::cache_identity`]): parameter order and unknown parameters
//! never create new entries.
//!
//! **A hit is one plain `GET`** of the entry, no script: the cheapest read
//! Redis has, and the one a cache shared by a whole fleet is read with most
//! ([`SummaryCache::lookup`]). The entry is a string, the body followed by
//! one line `\n<stored_at_ms> <expires_at_ms> <by>` written by the storing
//! script with Redis' `TIME`, so the `GET` alone tells the entry's age and
//! what is left of its TTL: `Age` and `max-age` on a hit are computed against
//! the instance's own clock (see [`CachedBody`]).
//!
//! On a miss ([`Flight::run`]), one script call takes a lock (`SET NX PX`, a
//! random owner token) so that one request in the whole fleet recomputes, or
//! serves an entry stored since the `GET`; the others poll for the fresh
//! value for as long as the lock may legitimately be held, then take over if
//! its owner vanished (the lock expires on its own). The owner stores the
//! result and releases the lock only if it still owns it
//! (`store_and_unlock.lua`). `Cache-Control: no-cache` skips the `GET` and
//! the stored value but still goes through the lock, so a crowd of "refresh
//! now" clicks causes one recomputation. Each entry records which
//! computation stored it (the owner's token, `by`), so a no-cache request
//! waiting behind a lock serves only a value stored after the one it
//! skipped; if the owner vanished without storing, it takes the computation
//! over like any waiter.
//!
//! Between the lookup and the flight the caller may refuse the request
//! (the per-client limits of summaries and series count only requests that
//! reach the flight), so a hit never pays for more than its `GET`.
//!
//! TTLs: `CACHE_TTL_SECONDS` for a normal summary, the shorter
//! `CACHE_FALLBACK_TTL_SECONDS` when its external data is a fallback, so
//! recovery of the source shows promptly; errors are never stored. Staleness
//! is therefore bounded by the TTL. The design follows the classic
//! cache-aside-with-lease pattern (Nishtala et al., "Scaling Memcache at
//! Facebook", NSDI 2013, §3.2.1 leases) with Redis locks in place of leases.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{FromRedisValue, ParsingError, RedisError, Script, Value};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::connection::{Fault, Redis, ReplyFields};
use crate::keys::Keys;
use crate::settings::{ConfigError, Env};
use crate::window::SummaryQuery;

static GET_OR_LOCK: LazyLock<Script> =
    LazyLock::new(|| crate::connection::script(include_str!("get_or_lock.lua")));
static STORE_AND_UNLOCK: LazyLock<Script> =
    LazyLock::new(|| crate::connection::script(include_str!("store_and_unlock.lua")));

/// The cache's settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `CACHE_TTL_SECONDS`, default 60 (1..=86 400): TTL of a summary.
    pub ttl: Duration,
    /// `CACHE_FALLBACK_TTL_SECONDS`, default 5 (1..=86 400, at most
    /// `CACHE_TTL_SECONDS`): TTL of a summary whose external data is a
    /// fallback, so that the source's recovery shows promptly.
    pub fallback_ttl: Duration,
}

impl CacheSettings {
    /// Reads and validates the `CACHE_*` variables.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let ttl = env.seconds("CACHE_TTL_SECONDS", 60, 1..=86_400)?;
        let fallback_ttl = env.seconds("CACHE_FALLBACK_TTL_SECONDS", 5, 1..=86_400)?;
        if fallback_ttl > ttl {
            return Err(ConfigError::new(
                "CACHE_FALLBACK_TTL_SECONDS",
                "must not exceed CACHE_TTL_SECONDS",
            ));
        }
        Ok(Self { ttl, fallback_ttl })
    }
}

/// Whether a summary came from the shared cache (`HIT`) or was computed for
/// this request, once across all instances (`MISS`); sent as `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CacheStatus {
    /// Served from the cache (`Age` says how old it is).
    Hit,
    /// Computed for this request (once across all instances).
    Miss,
}

impl CacheStatus {
    /// `"HIT"` or `"MISS"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
        }
    }
}

/// Why a summary could be neither served nor computed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError<E> {
    /// Redis failed or timed out while looking up or locking the entry.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The computation itself failed (its error is never cached).
    #[error(transparent)]
    Compute(E),
}

/// A summary body and where it came from.
#[derive(Debug, Clone)]
pub struct CachedBody {
    /// The JSON text of the summary, identical for every request served
    /// from one computation.
    pub body: String,
    /// Hit or miss.
    pub status: CacheStatus,
    /// Whole seconds the body stays cached (`max-age`): on a miss, the TTL it
    /// was stored with; on a hit, the entry's expiry (Redis' clock, when it
    /// was stored) minus the instance's clock now, rounded up, within 0 and
    /// the TTL; 0 when it was computed without the cache and not stored
    /// (Redis out of memory).
    pub max_age_s: u64,
    /// On a hit, whole seconds since the entry was stored (`Age`): the
    /// instance's clock now minus the entry's stored-at (Redis' clock),
    /// rounded down, within 0 and the TTL. A difference between the two
    /// clocks shifts `Age` and `max-age` by as much (Lambda hosts keep
    /// theirs synchronised to within milliseconds); the entry itself expires
    /// on Redis' clock alone. `None` on a miss.
    pub age_s: Option<u64>,
}

/// What a recomputation produced.
#[derive(Debug, Clone)]
pub struct Computed {
    /// The JSON text to serve and store.
    pub body: String,
    /// True when the result is degraded (external data is a fallback); it is
    /// then kept only `CACHE_FALLBACK_TTL_SECONDS`.
    pub degraded: bool,
}

/// The summary cache of one deployment.
#[derive(Debug, Clone)]
pub struct SummaryCache {
    keys: Keys,
    ttl: Duration,
    fallback_ttl: Duration,
    lock_ttl: Duration,
}

/// Room for the Redis work of one computation (four short scripts on a
/// healthy Redis) on top of the external call.
const LOCK_MARGIN: Duration = Duration::from_millis(500);

/// The single-flight lock's TTL: `EXTERNAL_SERVICE_TIMEOUT_MS` + 500 ms, the
/// slowest computation on a healthy Redis (1.5 s by default). With the default
/// 3 s `REQUEST_DEADLINE_MS`, a waiter behind a vanished owner still has time
/// to take over (1.5 s wait + 1 s computation). If Redis itself is slow enough
/// that a computation outlives the lock, a second computation may start: the
/// result stays correct, only the one-computation economy is lost.
fn lock_ttl_for(compute_timeout: Duration) -> Duration {
    compute_timeout + LOCK_MARGIN
}

/// How often a waiting request polls for the owner's result, at first and at
/// most (doubling in between).
const POLL_START: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(80);

/// A stored entry, decoded: what a `GET` of it answers, split into the body
/// and its trailing line `\n<stored_at_ms> <expires_at_ms> <by>`
/// (`store_and_unlock.lua` writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    body: String,
    /// Unix ms, Redis' `TIME` when the entry was stored.
    stored_at_ms: i64,
    /// Unix ms, `stored_at_ms` + the TTL it was stored with.
    expires_at_ms: i64,
}

impl Entry {
    /// Splits a stored value; `None` when it does not end with a well-formed
    /// line (the same rule as `get_or_lock.lua`'s pattern
    /// `\n%d+ %d+ %w*$`). The body is cut in place, never copied.
    fn decode(mut value: String) -> Option<Self> {
        let newline = value.rfind('\n')?;
        let mut fields = value[newline + 1..].split(' ');
        let stored_at_ms = unsigned(fields.next()?)?;
        let expires_at_ms = unsigned(fields.next()?)?;
        let by = fields.next()?;
        if fields.next().is_some() || !by.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        value.truncate(newline);
        Some(Self {
            body: value,
            stored_at_ms,
            expires_at_ms,
        })
    }

    /// The entry served as a hit at `now_ms` (the instance's clock, unix ms).
    fn served_at(self, now_ms: i64) -> CachedBody {
        let lifetime = (self.expires_at_ms - self.stored_at_ms).max(0);
        let age_ms = (now_ms - self.stored_at_ms).clamp(0, lifetime);
        let left_ms = (self.expires_at_ms - now_ms).clamp(0, lifetime);
        CachedBody {
            body: self.body,
            status: CacheStatus::Hit,
            max_age_s: u64::try_from(left_ms).unwrap_or(0).div_ceil(1000),
            age_s: Some(u64::try_from(age_ms).unwrap_or(0) / 1000),
        }
    }
}

/// A non-empty run of ASCII digits as a number (what Lua's `%d+` matches).
fn unsigned(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The instance's clock, unix ms.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The reply of `get_or_lock.lua`, decoded here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `{"hit", entry}`: an entry stored since the request's `GET`.
    Hit(Entry),
    /// `{"locked"}`: the lock is ours; compute and store.
    Locked,
    /// `{"busy"}` or `{"busy", by}`: someone else holds the lock. In
    /// "refresh" mode it carries the `by` of the entry being skipped ("" if
    /// none).
    Busy(String),
}

impl FromRedisValue for Step {
    fn from_redis_value(reply: Value) -> Result<Self, ParsingError> {
        let mut fields = ReplyFields::new("get_or_lock.lua", reply)?;
        let tag: String = fields.take()?;
        match tag.as_str() {
            "hit" => Entry::decode(fields.take()?).map(Self::Hit).ok_or_else(|| {
                "get_or_lock.lua answered an entry without its stored-at line".into()
            }),
            "locked" => Ok(Self::Locked),
            "busy" => Ok(Self::Busy(fields.take().unwrap_or_default())),
            other => Err(fields.unexpected(other)),
        }
    }
}

/// How a lookup treats a stored entry (`ARGV[3]` of `get_or_lock.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Serve the entry if present, else try to take the lock.
    Read,
    /// Ignore the entry (`Cache-Control: no-cache`), try the lock.
    Refresh,
    /// A no-cache waiter: serve an entry newer than the skipped one.
    Await,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Refresh => "refresh",
            Self::Await => "await",
        }
    }
}

/// What [`SummaryCache::lookup`] found.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The stored body (`X-Cache: HIT`), from one `GET`.
    Hit(CachedBody),
    /// No usable entry, or `no-cache`: the request must go through the
    /// single-flight ([`Flight::run`]) to be answered.
    Miss(Flight<'a>),
}

/// A request that found no entry (or skips it), about to take part in the
/// fleet-wide single-flight of its query.
#[derive(Debug)]
pub struct Flight<'a> {
    cache: &'a SummaryCache,
    entry: String,
    lock: String,
    no_cache: bool,
}

impl SummaryCache {
    /// The cache with `settings`' TTLs, its keys under `keys`.
    /// `compute_timeout` bounds the slowest part of a computation (the
    /// external call, `EXTERNAL_SERVICE_TIMEOUT_MS`) and `request_deadline`
    /// is `REQUEST_DEADLINE_MS`.
    ///
    /// The lock TTL is `compute_timeout` + 500 ms: it covers the slowest permitted
    /// computation on a healthy Redis. A cold-start warning is logged when
    /// `REQUEST_DEADLINE_MS` leaves no room for a waiter to outlast a vanished
    /// owner's lock and then compute itself.
    pub fn new(
        settings: &CacheSettings,
        compute_timeout: Duration,
        request_deadline: Duration,
        keys: Keys,
    ) -> Self {
        let lock_ttl = lock_ttl_for(compute_timeout);
        let needed = lock_ttl + compute_timeout + LOCK_MARGIN;
        if request_deadline < needed {
            tracing::warn!(
                request_deadline_ms = request_deadline.as_millis() as u64,
                needed_ms = needed.as_millis() as u64,
                "REQUEST_DEADLINE_MS is shorter than 2 x EXTERNAL_SERVICE_TIMEOUT_MS + 1 s: \
                 a summary waiting behind a vanished lock owner may answer 503 instead of \
                 taking over"
            );
        }
        Self {
            keys,
            ttl: settings.ttl,
            fallback_ttl: settings.fallback_ttl,
            lock_ttl,
        }
    }

    /// How long a recompute lock lives unless its owner releases it.
    #[cfg(any(test, feature = "test-support"))]
    pub fn lock_ttl(&self) -> Duration {
        self.lock_ttl
    }

    /// The cache entry's key for `query` (its lock is the same plus `:lock`).
    #[cfg(any(test, feature = "test-support"))]
    pub fn entry_key(&self, query: &SummaryQuery) -> String {
        self.keys.cache(&digest(query))
    }

    /// An entry's stored value, exactly as `store_and_unlock.lua` writes it:
    /// `body`, then `\n<stored_at_ms> <expires_at_ms> <by>` (`by`: letters
    /// and digits), for tests that plant entries.
    #[cfg(any(test, feature = "test-support"))]
    pub fn entry_value(body: &str, stored_at_ms: i64, expires_at_ms: i64, by: &str) -> String {
        format!("{body}\n{stored_at_ms} {expires_at_ms} {by}")
    }

    /// Looks `query` up: one `GET` of its entry, or none at all with
    /// `no_cache` (the request's `Cache-Control: no-cache`, which skips the
    /// stored value). A [`Lookup::Miss`] is answered by [`Flight::run`].
    ///
    /// # Errors
    /// The [`RedisError`] of the `GET`.
    pub async fn lookup(
        &self,
        redis: &Redis,
        query: &SummaryQuery,
        no_cache: bool,
    ) -> Result<Lookup<'_>, RedisError> {
        let id = digest(query);
        let entry = self.keys.cache(&id);
        if !no_cache {
            let stored: Option<String> = redis::cmd("GET")
                .arg(&entry)
                .query_async(&mut redis.clone())
                .await?;
            // A value that is not an entry is a miss: the flight overwrites it.
            if let Some(found) = stored.and_then(Entry::decode) {
                return Ok(Lookup::Hit(found.served_at(now_ms())));
            }
        }
        Ok(Lookup::Miss(Flight {
            cache: self,
            lock: self.keys.cache_lock(&id),
            entry,
            no_cache,
        }))
    }

    /// Serves `query` from the cache, or computes it with `compute` under the
    /// fleet-wide single-flight lock and stores it: [`SummaryCache::lookup`]
    /// then, on a miss, [`Flight::run`].
    ///
    /// # Errors
    /// As [`Flight::run`].
    pub async fn get_or_compute<F, Fut, E>(
        &self,
        redis: &Redis,
        query: &SummaryQuery,
        no_cache: bool,
        compute: F,
    ) -> Result<CachedBody, CacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Computed, E>>,
    {
        match self.lookup(redis, query, no_cache).await? {
            Lookup::Hit(hit) => Ok(hit),
            Lookup::Miss(flight) => flight.run(redis, compute).await,
        }
    }
}

impl Flight<'_> {
    /// Answers the request through the single-flight: serves an entry stored
    /// since the lookup, or computes it with `compute` under the lock and
    /// stores it, or waits for the request holding the lock (and takes over
    /// when that one vanished). With `no_cache` only a value stored after
    /// the skipped one is served. The caller bounds the whole call with the
    /// request deadline.
    ///
    /// When Redis is out of memory ([`Fault::OutOfMemory`]) the lock
    /// cannot be taken: the value is then computed for this request alone,
    /// without single-flight, and not stored (`max_age_s` 0), so reads keep
    /// working while writes are refused.
    ///
    /// # Errors
    /// [`CacheError::Compute`] with `compute`'s error (never cached), or
    /// [`CacheError::Redis`] when Redis fails.
    pub async fn run<F, Fut, E>(
        self,
        redis: &Redis,
        compute: F,
    ) -> Result<CachedBody, CacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Computed, E>>,
    {
        let cache = self.cache;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut mode = if self.no_cache {
            Mode::Refresh
        } else {
            Mode::Read
        };
        // Which computation wrote the entry a no-cache request skips: while
        // awaiting, that entry is never served (if the owner vanishes without
        // storing, the request takes over instead).
        let mut skipped = String::new();
        let mut poll = POLL_START;
        loop {
            let step = match self.step(redis, &token, mode, &skipped).await {
                Ok(step) => step,
                // Taking the lock is a write, which a Redis out of memory
                // refuses (a hit only reads, and is served). The result
                // can still be computed, for this request alone: without
                // the lock, and not stored.
                Err(err) if Fault::of(&err) == Fault::OutOfMemory => {
                    tracing::warn!(
                        error = %err,
                        "redis is out of memory: computing without the cache"
                    );
                    let computed = compute().await.map_err(CacheError::Compute)?;
                    return Ok(CachedBody {
                        body: computed.body,
                        status: CacheStatus::Miss,
                        max_age_s: 0,
                        age_s: None,
                    });
                }
                Err(err) => return Err(err.into()),
            };
            match step {
                Step::Hit(entry) => return Ok(entry.served_at(now_ms())),
                Step::Locked => break,
                Step::Busy(by) => {
                    // A no-cache request waits for the owner's *new* value,
                    // not the entry it asked to skip.
                    if mode == Mode::Refresh {
                        mode = Mode::Await;
                        skipped = by;
                    }
                    // The lock expires by itself after lock_ttl if its owner
                    // vanished; the next step then takes it over. The
                    // request deadline bounds the wait in any case.
                    tokio::time::sleep(poll).await;
                    poll = (poll * 2).min(POLL_MAX);
                }
            }
        }

        let computed = compute().await;
        let (body, ttl) = match &computed {
            Ok(c) => (
                c.body.as_str(),
                if c.degraded {
                    cache.fallback_ttl
                } else {
                    cache.ttl
                },
            ),
            Err(_) => ("", cache.ttl),
        };
        let released: Result<bool, RedisError> = STORE_AND_UNLOCK
            .key(&self.entry)
            .key(&self.lock)
            .arg(&token)
            .arg(body)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut redis.clone())
            .await;
        match released {
            Ok(true) => {}
            // The computation outlived its lock; a successor may hold it now.
            Ok(false) => tracing::debug!("the recompute lock had expired before the store"),
            // The result is still good for this request; the next one will
            // find no entry (and the lock expiring) and recompute.
            Err(err) => tracing::warn!(error = %err, "could not store a computed summary"),
        }
        let computed = computed.map_err(CacheError::Compute)?;
        Ok(CachedBody {
            body: computed.body,
            status: CacheStatus::Miss,
            max_age_s: ttl.as_secs(),
            age_s: None,
        })
    }

    async fn step(
        &self,
        redis: &Redis,
        token: &str,
        mode: Mode,
        skipped: &str,
    ) -> Result<Step, RedisError> {
        GET_OR_LOCK
            .key(&self.entry)
            .key(&self.lock)
            .arg(token)
            .arg(self.cache.lock_ttl.as_millis() as u64)
            .arg(mode.as_str())
            .arg(skipped)
            .invoke_async(&mut redis.clone())
            .await
    }
}

/// The cache identity of a query, hashed: 32 hex characters of SHA-256 over
/// [`SummaryQuery::cache_identity`].
fn digest(query: &SummaryQuery) -> String {
    let hash = Sha256::digest(query.cache_identity().as_bytes());
    hex::encode(&hash[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &str) -> Option<Entry> {
        Entry::decode(value.to_string())
    }

    #[test]
    fn an_entry_is_its_body_and_a_trailing_line() {
        let stored = SummaryCache::entry_value(r#"{"count":1}"#, 1_000, 61_000, "ab12");
        assert_eq!(stored, "{\"count\":1}\n1000 61000 ab12");
        let decoded = entry(&stored).unwrap();
        assert_eq!(decoded.body, r#"{"count":1}"#);
        assert_eq!(
            (decoded.stored_at_ms, decoded.expires_at_ms),
            (1_000, 61_000)
        );
        // The last line is the trailer, whatever the body holds.
        let multiline = entry("a\nb\n5 6 x").unwrap();
        assert_eq!(multiline.body, "a\nb");
        assert_eq!(entry("{}\n5 6 ").unwrap().body, "{}");
    }

    #[test]
    fn a_value_without_a_well_formed_trailer_is_not_an_entry() {
        for value in [
            "{}",
            "{}\n",
            "{}\n5 6",
            "{}\n5 6 x y",
            "{}\n-5 6 x",
            "{}\n+5 6 x",
            "{}\n5 6 x-y",
            "{}\n5  6 x",
            "{}\na 6 x",
        ] {
            assert_eq!(entry(value), None, "{value:?}");
        }
    }

    #[test]
    fn age_and_max_age_use_the_given_clock_within_the_ttl() {
        let stored = || entry("{}\n100000 160000 t").unwrap();
        let at = |now| {
            let served = stored().served_at(now);
            (served.age_s, served.max_age_s)
        };
        assert_eq!(at(100_000), (Some(0), 60));
        assert_eq!(at(112_500), (Some(12), 48));
        assert_eq!(at(159_999), (Some(59), 1));
        // A clock behind the stored-at, or past the expiry, is clamped.
        assert_eq!(at(90_000), (Some(0), 60));
        assert_eq!(at(170_000), (Some(60), 0));
        assert_eq!(stored().served_at(0).status, CacheStatus::Hit);
    }
}
