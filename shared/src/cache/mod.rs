//! Read-through cache of summaries, with single-flight recomputation across
//! every instance.
//!
//! A summary is looked up by a digest of its **parsed** query
//! ([`SummaryQuery::cache_identity`]): parameter order and unknown parameters
//! never create new entries. A hit costs one Redis round trip
//! (`get_or_lock.lua`) and never calls the external source.
//!
//! On a miss, the same script call takes a lock (`SET NX PX`, a random owner
//! token) so that one request in the whole fleet recomputes; the others poll
//! for the fresh value for as long as the lock may legitimately be held, then
//! take over if its owner vanished (the lock expires on its own). The owner
//! stores the result and releases the lock only if it still owns it
//! (`store_and_unlock.lua`). `Cache-Control: no-cache` skips the stored value
//! but still goes through the lock, so a crowd of "refresh now" clicks causes
//! one recomputation. Each entry records which computation stored it (the
//! owner's token), so a no-cache request waiting behind a lock serves only a
//! value stored after the one it skipped; if the owner vanished without
//! storing, it takes the computation over like any waiter.
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
    /// Whole seconds the body stays cached: what is left of the entry's TTL
    /// on a hit, the TTL it was stored with on a miss (`max-age`); 0 when it
    /// was computed without the cache and not stored (Redis out of memory).
    pub max_age_s: u64,
    /// Whole seconds since the entry was stored, on a hit (`Age`).
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

/// The reply of `get_or_lock.lua`, decoded here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    /// `{"hit", body, ttl_left_ms, age_ms}`: the entry.
    Hit {
        body: String,
        ttl_left_ms: i64,
        age_ms: i64,
    },
    /// `{"locked"}`: the lock is ours; compute and store.
    Locked,
    /// `{"busy"}` or `{"busy", by}`: someone else holds the lock. In
    /// "refresh" mode it carries the `by` of the entry being skipped ("" if
    /// none).
    Busy(String),
}

impl FromRedisValue for Lookup {
    fn from_redis_value(reply: Value) -> Result<Self, ParsingError> {
        let mut fields = ReplyFields::new("get_or_lock.lua", reply)?;
        let tag: String = fields.take()?;
        match tag.as_str() {
            "hit" => Ok(Self::Hit {
                body: fields.take()?,
                ttl_left_ms: fields.take()?,
                age_ms: fields.take()?,
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

    /// Serves `query` from the cache, or computes it with `compute` under the
    /// fleet-wide single-flight lock and stores it.
    ///
    /// `no_cache` (the request's `Cache-Control: no-cache`) skips a stored
    /// value but not the lock. The caller bounds the whole call with the
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
        let id = digest(query);
        let entry = self.keys.cache(&id);
        let lock = self.keys.cache_lock(&id);
        let token = uuid::Uuid::new_v4().simple().to_string();

        let mut mode = if no_cache { Mode::Refresh } else { Mode::Read };
        // Which computation wrote the entry a no-cache request skips: while
        // awaiting, that entry is never served (if the owner vanishes without
        // storing, the request takes over instead).
        let mut skipped = String::new();
        let mut poll = POLL_START;
        loop {
            let lookup = match self
                .lookup(redis, &entry, &lock, &token, mode, &skipped)
                .await
            {
                Ok(lookup) => lookup,
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
            match lookup {
                Lookup::Hit {
                    body,
                    ttl_left_ms,
                    age_ms,
                } => {
                    return Ok(CachedBody {
                        body,
                        status: CacheStatus::Hit,
                        max_age_s: u64::try_from(ttl_left_ms.max(0))
                            .unwrap_or(0)
                            .div_ceil(1000),
                        age_s: Some(u64::try_from(age_ms.max(0)).unwrap_or(0) / 1000),
                    })
                }
                Lookup::Locked => break,
                Lookup::Busy(by) => {
                    // A no-cache request waits for the owner's *new* value,
                    // not the entry it asked to skip.
                    if mode == Mode::Refresh {
                        mode = Mode::Await;
                        skipped = by;
                    }
                    // The lock expires by itself after lock_ttl if its owner
                    // vanished; the next lookup then takes it over. The
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
                    self.fallback_ttl
                } else {
                    self.ttl
                },
            ),
            Err(_) => ("", self.ttl),
        };
        let released: Result<bool, RedisError> = STORE_AND_UNLOCK
            .key(&entry)
            .key(&lock)
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

    async fn lookup(
        &self,
        redis: &Redis,
        entry: &str,
        lock: &str,
        token: &str,
        mode: Mode,
        skipped: &str,
    ) -> Result<Lookup, RedisError> {
        GET_OR_LOCK
            .key(entry)
            .key(lock)
            .arg(token)
            .arg(self.lock_ttl.as_millis() as u64)
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
