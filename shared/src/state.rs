//! The state one function instance builds once per cold start and shares
//! across all of its requests: configuration, the Redis connection and the
//! components built on it.
//!
//! Several independent `AppState`s over the same Redis behave exactly like
//! several Lambda instances, which is how the tests exercise concurrency.

use std::sync::Arc;

use crate::breaker::CircuitBreaker;
use crate::cache::SummaryCache;
use crate::config::{Config, ConfigError};
use crate::connection::Redis;
use crate::external::ExternalSource;
use crate::keys::Keys;
use crate::rate_limit::RateLimiter;
use crate::redis_server::ServerWatch;
use crate::store::registry::TypeRegistry;
use crate::store::MetricStore;

/// The name of the external source's circuit breaker, as shown by `/health`.
pub const EXTERNAL_SERVICE: &str = "external_service";

/// Everything a handler needs. Cheap to share by reference.
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The instance's (lazy, self-reconnecting) Redis connection.
    pub redis: Redis,
    /// Key names under `REDIS_KEY_PREFIX`.
    pub keys: Keys,
    /// Bucketed metric storage.
    pub store: MetricStore,
    /// The registry of live metric types (`MAX_METRIC_TYPES`), with this
    /// instance's memory of the types it registered.
    pub registry: TypeRegistry,
    /// The external data source of summaries.
    pub external: ExternalSource,
    /// The circuit breaker around [`AppState::external`].
    pub breaker: CircuitBreaker,
    /// The read-through cache of summaries.
    pub cache: SummaryCache,
    /// The per-client rate limiter of `POST /api/metrics`.
    pub limiter: RateLimiter,
    /// The per-client rate limiter of the summaries that cost work
    /// (`SUMMARY_RATE_LIMIT_REQUESTS`, policy `summary`).
    pub summary_limiter: RateLimiter,
    /// The per-client rate limiter of the series that cost work
    /// (`SERIES_RATE_LIMIT_REQUESTS`, policy `series`).
    pub series_limiter: RateLimiter,
    /// What this instance read and reported of the Redis server's eviction
    /// policy, memory and role (read at its first request; `/health` reads
    /// it on every call).
    pub server: ServerWatch,
}

impl AppState {
    /// Builds the state from a configuration. Does not touch the network: a
    /// cold start succeeds even when Redis is down.
    ///
    /// # Errors
    /// A [`ConfigError`] when `REDIS_URL` or `EXTERNAL_SERVICE_URL` cannot be used.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let redis = Redis::from_settings(&config.redis)?;
        Self::around(config, redis)
    }

    /// Builds the state around a connection made beforehand, e.g. one whose
    /// calls a test records ([`Redis::record_calls`]).
    ///
    /// # Errors
    /// As [`AppState::new`].
    #[cfg(feature = "test-support")]
    pub fn with_redis(config: Config, redis: Redis) -> Result<Self, ConfigError> {
        Self::around(config, redis)
    }

    /// Builds the state around its connection.
    fn around(config: Config, redis: Redis) -> Result<Self, ConfigError> {
        let keys = Keys::new(config.redis.key_prefix.clone());
        let call_timeout = config.external.timeout;
        Ok(Self {
            store: MetricStore::new(keys.clone(), config.metrics.retention_days())
                .with_tag_limits(config.tags),
            registry: TypeRegistry::new(
                keys.clone(),
                config.types,
                config.metrics.retention_days(),
                config.request.idempotency_ttl,
                config.request.deadline,
            ),
            breaker: CircuitBreaker::new(&config.breaker, call_timeout, &keys, EXTERNAL_SERVICE),
            cache: SummaryCache::new(
                &config.cache,
                call_timeout,
                config.request.deadline,
                keys.clone(),
            ),
            limiter: RateLimiter::new(&config.rate_limit, keys.clone()),
            summary_limiter: RateLimiter::for_summary(&config.rate_limit, keys.clone()),
            series_limiter: RateLimiter::for_series(&config.rate_limit, keys.clone()),
            external: ExternalSource::from_settings(&config.external)?,
            server: ServerWatch::new(),
            keys,
            redis,
            config: Arc::new(config),
        })
    }

    /// Reads the environment and builds the state, or exits the process with a
    /// message naming the offending variable: a misconfigured function must
    /// fail its cold start visibly rather than serve errors.
    pub fn from_env_or_exit() -> Self {
        match Config::from_env().and_then(Self::new) {
            Ok(state) => {
                tracing::info!(config = ?state.config, "configuration loaded");
                state
            }
            Err(err) => {
                tracing::error!(variable = err.variable, "{err}");
                eprintln!("configuration error: {err}");
                std::process::exit(78) // EX_CONFIG
            }
        }
    }
}
