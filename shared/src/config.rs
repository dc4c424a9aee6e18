//! The service's whole configuration: every component's settings, read from
//! the environment **once per cold start** and validated there.
//!
//! Each component owns its settings type (its variables, defaults, units and
//! validation); [`Config`] only composes them. An invalid value is a
//! deployment error, not a request error: [`Config::from_env`] returns a
//! [`ConfigError`] naming the variable, and each function's `main` exits with
//! it before serving anything. Every variable, its default and its unit is
//! listed in `.env.example` and in the README's configuration table.

use std::collections::HashMap;
use std::time::Duration;

use crate::breaker::BreakerSettings;
use crate::cache::CacheSettings;
use crate::connection::RedisSettings;
use crate::external::ExternalSettings;
use crate::identity::IdentitySettings;
use crate::metric::MetricLimits;
use crate::observability::ObservabilitySettings;
use crate::rate_limit::RateLimitSettings;
pub use crate::settings::ConfigError;
use crate::settings::Env;
use crate::store::registry::TypeLimits;
use crate::tags::TagLimits;

/// Every setting of the service, grouped by the component that uses it.
/// `Debug` never shows a password or an API key digest.
#[derive(Debug, Clone)]
pub struct Config {
    /// `REDIS_*`: where state lives and how to reach it.
    pub redis: RedisSettings,
    /// `REQUEST_DEADLINE_MS`, `MAX_BODY_BYTES`, `IDEMPOTENCY_TTL_SECONDS`.
    pub request: RequestSettings,
    /// `METRIC_RETENTION_DAYS`, `MAX_FUTURE_SKEW_SECONDS`, `MAX_BATCH_SIZE`.
    pub metrics: MetricLimits,
    /// `MAX_METRIC_TYPES`, `MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR`.
    pub types: TypeLimits,
    /// `API_KEYS_SHA256`, `TRUSTED_PROXY_HOPS`.
    pub identity: IdentitySettings,
    /// `RATE_LIMIT_*`.
    pub rate_limit: RateLimitSettings,
    /// `EXTERNAL_SERVICE_*`.
    pub external: ExternalSettings,
    /// `CACHE_*`.
    pub cache: CacheSettings,
    /// `CIRCUIT_BREAKER_*`.
    pub breaker: BreakerSettings,
    /// `METRICS_NAMESPACE`.
    pub observability: ObservabilitySettings,
    /// `MAX_TAG_VALUES_PER_KEY`, `MAX_TAG_COMBINATIONS`.
    pub tags: TagLimits,
}

/// Limits every request is held to: the HTTP edge's own settings.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    /// `REQUEST_DEADLINE_MS`, default 3000 (100..=900 000): one overall
    /// deadline per request; past it the answer is 503 with `Retry-After`.
    pub deadline: Duration,
    /// `MAX_BODY_BYTES`, default 1 048 576 (64..=6 291 456): the largest
    /// request body; larger is a 413.
    pub max_body_bytes: usize,
    /// `IDEMPOTENCY_TTL_SECONDS`, default 86 400 (1..=2 592 000): how long an
    /// `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
}

impl RequestSettings {
    /// Reads and validates `REQUEST_DEADLINE_MS`, `MAX_BODY_BYTES` and
    /// `IDEMPOTENCY_TTL_SECONDS`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            deadline: env.millis("REQUEST_DEADLINE_MS", 3000, 100..=900_000)?,
            max_body_bytes: env.int("MAX_BODY_BYTES", 1_048_576, 64..=6 * 1024 * 1024)? as usize,
            idempotency_ttl: env.seconds("IDEMPOTENCY_TTL_SECONDS", 86_400, 1..=30 * 86_400)?,
        })
    }
}

impl Config {
    /// Reads the process environment. See [`Config::from_lookup`].
    ///
    /// # Errors
    /// As [`Config::from_lookup`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds a configuration from explicit `(variable, value)` pairs, with the
    /// defaults for everything not given. Tests use this to give each handler
    /// state its own key prefix without touching the process environment.
    ///
    /// # Errors
    /// As [`Config::from_lookup`].
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::from_lookup(|name| map.get(name).cloned())
    }

    /// Reads every variable through `lookup` (an empty value counts as unset)
    /// and validates it.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first variable whose value is unusable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        Ok(Self {
            redis: RedisSettings::from_env(&env)?,
            identity: IdentitySettings::from_env(&env)?,
            request: RequestSettings::from_env(&env)?,
            metrics: MetricLimits::from_env(&env)?,
            types: TypeLimits::from_env(&env)?,
            external: ExternalSettings::from_env(&env)?,
            rate_limit: RateLimitSettings::from_env(&env)?,
            cache: CacheSettings::from_env(&env)?,
            breaker: BreakerSettings::from_env(&env)?,
            observability: ObservabilitySettings::from_env(&env)?,
            tags: TagLimits::from_env(&env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::RateLimitAlgorithm;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::from_pairs(&[]).unwrap();
        assert_eq!(c.redis.url, "redis://127.0.0.1:6379/0");
        assert_eq!(c.redis.key_prefix, "analytics");
        assert_eq!(c.redis.timeout, Duration::from_millis(500));
        assert_eq!(c.request.deadline, Duration::from_millis(3000));
        assert_eq!(c.request.max_body_bytes, 1_048_576);
        assert_eq!(c.metrics.retention_days(), 35);
        assert_eq!(c.types.max_types, 1_000);
        assert_eq!(c.types.max_new_per_client_per_hour, 200);
        assert_eq!(c.rate_limit.requests, 5);
        assert_eq!(c.rate_limit.summary_requests, 120);
        assert_eq!(c.rate_limit.series_requests, 60);
        assert_eq!(c.identity.trusted_proxy_hops, 0);
        assert_eq!(c.rate_limit.algorithm, RateLimitAlgorithm::SlidingLog);
        assert_eq!(c.cache.ttl, Duration::from_secs(60));
        assert_eq!(c.breaker.failure_threshold, 3);
        assert_eq!(c.observability.namespace, "AnalyticsApi");
    }

    #[test]
    fn an_invalid_value_names_its_variable() {
        for (var, value) in [
            ("REDIS_TIMEOUT_MS", "fast"),
            ("REDIS_TIMEOUT_MS", "0"),
            ("REDIS_KEY_PREFIX", "a{b}"),
            ("REDIS_URL", "http://x"),
            ("RATE_LIMIT_ALGORITHM", "leaky"),
            ("EXTERNAL_SERVICE_FAILURE_RATE", "1.5"),
            ("API_KEYS_SHA256", "abc"),
            ("TRUSTED_PROXY_HOPS", "11"),
            ("SUMMARY_RATE_LIMIT_REQUESTS", "0"),
            ("CACHE_FALLBACK_TTL_SECONDS", "61"),
            ("METRIC_RETENTION_DAYS", "0"),
            ("REQUEST_DEADLINE_MS", "99"),
            ("MAX_METRIC_TYPES", "0"),
            ("MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR", "many"),
            ("MAX_TAG_VALUES_PER_KEY", "0"),
            ("MAX_TAG_COMBINATIONS", "many"),
        ] {
            let err = Config::from_pairs(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "{value}");
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn iam_mode_needs_its_user_and_cache() {
        let err = Config::from_pairs(&[("REDIS_AUTH_MODE", "iam")]).unwrap_err();
        assert_eq!(err.variable, "REDIS_IAM_USER_ID");
    }

    #[test]
    fn passwords_are_redacted_from_debug_output() {
        let c = Config::from_pairs(&[("REDIS_URL", "redis://app:s3cret@cache:6379/0")]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://app:***@cache:6379/0"));
    }
}
