//! Every setting of the service, read from the environment **once per cold
//! start** and validated there.
//!
//! An invalid value is a deployment error, not a request error: [`Config::from_env`]
//! returns a [`ConfigError`] naming the variable, and each function's `main`
//! exits with it before serving anything. Every variable, its default and its
//! unit is listed in `.env.example` and in the README's configuration table.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A configuration variable that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for {variable}: {reason}")]
pub struct ConfigError {
    /// The environment variable's name, e.g. `REDIS_TIMEOUT_MS`.
    pub variable: &'static str,
    /// Why the value was refused, phrased for an operator.
    pub reason: String,
}

/// Which rate-limiting algorithm guards `POST /api/metrics`
/// (`RATE_LIMIT_ALGORITHM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitAlgorithm {
    /// Exact sliding log: one sorted-set entry per accepted request, O(limit)
    /// memory per client.
    SlidingLog,
    /// Two fixed-window counters, the previous one weighted by its overlap with
    /// the rolling window: O(1) memory, approximate.
    SlidingWindowCounter,
    /// GCRA (the generic cell rate algorithm, a token bucket kept as one
    /// theoretical arrival time per client).
    TokenBucket,
}

impl RateLimitAlgorithm {
    /// The name used in configuration and in Redis keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlidingLog => "sliding_log",
            Self::SlidingWindowCounter => "sliding_window_counter",
            Self::TokenBucket => "token_bucket",
        }
    }
}

impl FromStr for RateLimitAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sliding_log" => Ok(Self::SlidingLog),
            "sliding_window_counter" => Ok(Self::SlidingWindowCounter),
            "token_bucket" => Ok(Self::TokenBucket),
            other => Err(format!(
                "unknown algorithm {other:?}; expected sliding_log, sliding_window_counter or token_bucket"
            )),
        }
    }
}

impl fmt::Display for RateLimitAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the functions authenticate to Redis (`REDIS_AUTH_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisAuthMode {
    /// Credentials, if any, are inside `REDIS_URL`.
    Url,
    /// ElastiCache IAM authentication: a short-lived SigV4 token as password.
    Iam,
}

impl FromStr for RedisAuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "url" => Ok(Self::Url),
            "iam" => Ok(Self::Iam),
            other => Err(format!("unknown mode {other:?}; expected url or iam")),
        }
    }
}

/// The service's whole configuration. Durations are kept as [`Duration`];
/// the variable names carry their unit (`_MS`, `_SECONDS`, `_DAYS`, `_BYTES`).
#[derive(Clone)]
pub struct Config {
    /// `REDIS_URL`, default `redis://127.0.0.1:6379/0` (`rediss://` for TLS).
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX`, default `analytics`: the first segment of every key written.
    pub redis_key_prefix: String,
    /// `REDIS_TIMEOUT_MS`, default 500: bound on connecting and on each Redis command.
    pub redis_timeout: Duration,
    /// `REDIS_AUTH_MODE`, default `url`.
    pub redis_auth_mode: RedisAuthMode,
    /// `REDIS_IAM_USER_ID`: the ElastiCache user in `iam` mode.
    pub redis_iam_user_id: Option<String>,
    /// `REDIS_IAM_CACHE_NAME`: the replication group or serverless cache in `iam` mode.
    pub redis_iam_cache_name: Option<String>,
    /// `REDIS_IAM_SERVERLESS`, default false: the cache is ElastiCache Serverless.
    pub redis_iam_serverless: bool,
    /// `REQUEST_DEADLINE_MS`, default 3000: one overall deadline per request.
    pub request_deadline: Duration,
    /// `MAX_BODY_BYTES`, default 1 048 576.
    pub max_body_bytes: usize,
    /// `METRIC_RETENTION_DAYS`, default 35.
    pub metric_retention_days: u32,
    /// `MAX_FUTURE_SKEW_SECONDS`, default 300.
    pub max_future_skew: Duration,
    /// `MAX_BATCH_SIZE`, default 500: the most metrics one `POST` may carry.
    pub max_batch_size: usize,
    /// `IDEMPOTENCY_TTL_SECONDS`, default 86 400.
    pub idempotency_ttl: Duration,
    /// `EXTERNAL_SERVICE_URL`: when set, the real HTTP source; else the simulated one.
    pub external_service_url: Option<String>,
    /// `EXTERNAL_SERVICE_LATENCY_MS`, default 50: the simulated source's latency.
    pub external_service_latency: Duration,
    /// `EXTERNAL_SERVICE_FAILURE_RATE`, default 0.2: the simulated source's failure probability.
    pub external_service_failure_rate: f64,
    /// `EXTERNAL_SERVICE_TIMEOUT_MS`, default 1000: a slower call is cancelled and is a failure.
    pub external_service_timeout: Duration,
    /// `RATE_LIMIT_REQUESTS`, default 5: requests allowed per window per client.
    pub rate_limit_requests: u32,
    /// `RATE_LIMIT_WINDOW_SECONDS`, default 60.
    pub rate_limit_window: Duration,
    /// `RATE_LIMIT_ALGORITHM`, default `sliding_log`.
    pub rate_limit_algorithm: RateLimitAlgorithm,
    /// `API_KEYS_SHA256`: lowercase hex SHA-256 digests of the accepted API keys
    /// (32 bytes each). Empty = no API keys required.
    pub api_key_digests: Vec<[u8; 32]>,
    /// `CACHE_TTL_SECONDS`, default 60.
    pub cache_ttl: Duration,
    /// `CACHE_FALLBACK_TTL_SECONDS`, default 5: TTL of summaries whose external data is a fallback.
    pub cache_fallback_ttl: Duration,
    /// `CIRCUIT_BREAKER_FAILURE_THRESHOLD`, default 3 consecutive failures.
    pub breaker_failure_threshold: u32,
    /// `CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS`, default 10.
    pub breaker_reset_timeout: Duration,
    /// `CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS`, default 1: probes admitted in total while half-open.
    pub breaker_half_open_max_calls: u32,
    /// `METRICS_NAMESPACE`, default `AnalyticsApi`: CloudWatch namespace of the EMF metrics.
    pub metrics_namespace: String,
}

impl fmt::Debug for Config {
    // Hand-written so that a password inside REDIS_URL never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("redis_timeout", &self.redis_timeout)
            .field("request_deadline", &self.request_deadline)
            .field("rate_limit_algorithm", &self.rate_limit_algorithm)
            .field("rate_limit_requests", &self.rate_limit_requests)
            .field("rate_limit_window", &self.rate_limit_window)
            .field("api_keys", &self.api_key_digests.len())
            .field("external_service_url", &self.external_service_url)
            .finish_non_exhaustive()
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

impl Config {
    /// Reads the process environment. See [`Config::from_lookup`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds a configuration from explicit `(variable, value)` pairs, with the
    /// defaults for everything not given. Tests use this to give each handler
    /// state its own key prefix without touching the process environment.
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
        let env = Env(&lookup);
        let redis_key_prefix = env.string("REDIS_KEY_PREFIX", "analytics");
        if redis_key_prefix.is_empty()
            || !redis_key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
        {
            return Err(ConfigError {
                variable: "REDIS_KEY_PREFIX",
                reason: "use 1 or more characters from A-Z a-z 0-9 _ - . : (no braces)".into(),
            });
        }
        let redis_url = env.string("REDIS_URL", "redis://127.0.0.1:6379/0");
        if !(redis_url.starts_with("redis://")
            || redis_url.starts_with("rediss://")
            || redis_url.starts_with("unix://")
            || redis_url.starts_with("redis+unix://"))
        {
            return Err(ConfigError {
                variable: "REDIS_URL",
                reason: "expected a redis:// or rediss:// URL".into(),
            });
        }
        let api_key_digests = match lookup("API_KEYS_SHA256").filter(|v| !v.trim().is_empty()) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|d| parse_digest(d.trim()))
                .collect::<Result<_, _>>()
                .map_err(|reason| ConfigError {
                    variable: "API_KEYS_SHA256",
                    reason,
                })?,
        };
        let redis_auth_mode: RedisAuthMode = env.parse("REDIS_AUTH_MODE", RedisAuthMode::Url)?;
        let config = Config {
            redis_url,
            redis_key_prefix,
            redis_timeout: env.millis("REDIS_TIMEOUT_MS", 500, 1..=60_000)?,
            redis_auth_mode,
            redis_iam_user_id: env.optional("REDIS_IAM_USER_ID"),
            redis_iam_cache_name: env.optional("REDIS_IAM_CACHE_NAME"),
            redis_iam_serverless: env.parse("REDIS_IAM_SERVERLESS", false)?,
            request_deadline: env.millis("REQUEST_DEADLINE_MS", 3000, 100..=900_000)?,
            max_body_bytes: env.int("MAX_BODY_BYTES", 1_048_576, 64..=6 * 1024 * 1024)? as usize,
            metric_retention_days: env.int("METRIC_RETENTION_DAYS", 35, 1..=3650)? as u32,
            max_future_skew: env.seconds("MAX_FUTURE_SKEW_SECONDS", 300, 0..=86_400)?,
            max_batch_size: env.int("MAX_BATCH_SIZE", 500, 1..=10_000)? as usize,
            idempotency_ttl: env.seconds("IDEMPOTENCY_TTL_SECONDS", 86_400, 1..=30 * 86_400)?,
            external_service_url: env.optional("EXTERNAL_SERVICE_URL"),
            external_service_latency: env.millis("EXTERNAL_SERVICE_LATENCY_MS", 50, 0..=60_000)?,
            external_service_failure_rate: env.probability("EXTERNAL_SERVICE_FAILURE_RATE", 0.2)?,
            external_service_timeout: env.millis(
                "EXTERNAL_SERVICE_TIMEOUT_MS",
                1000,
                1..=60_000,
            )?,
            rate_limit_requests: env.int("RATE_LIMIT_REQUESTS", 5, 1..=1_000_000)? as u32,
            rate_limit_window: env.seconds("RATE_LIMIT_WINDOW_SECONDS", 60, 1..=86_400)?,
            rate_limit_algorithm: env
                .parse("RATE_LIMIT_ALGORITHM", RateLimitAlgorithm::SlidingLog)?,
            api_key_digests,
            cache_ttl: env.seconds("CACHE_TTL_SECONDS", 60, 1..=86_400)?,
            cache_fallback_ttl: env.seconds("CACHE_FALLBACK_TTL_SECONDS", 5, 1..=86_400)?,
            breaker_failure_threshold: env.int("CIRCUIT_BREAKER_FAILURE_THRESHOLD", 3, 1..=1000)?
                as u32,
            breaker_reset_timeout: env.seconds(
                "CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS",
                10,
                1..=86_400,
            )?,
            breaker_half_open_max_calls: env.int(
                "CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS",
                1,
                1..=1000,
            )? as u32,
            metrics_namespace: env.string("METRICS_NAMESPACE", "AnalyticsApi"),
        };
        if config.redis_auth_mode == RedisAuthMode::Iam {
            for (variable, value) in [
                ("REDIS_IAM_USER_ID", &config.redis_iam_user_id),
                ("REDIS_IAM_CACHE_NAME", &config.redis_iam_cache_name),
            ] {
                if value.is_none() {
                    return Err(ConfigError {
                        variable,
                        reason: "required when REDIS_AUTH_MODE=iam".into(),
                    });
                }
            }
        }
        if config.cache_fallback_ttl > config.cache_ttl {
            return Err(ConfigError {
                variable: "CACHE_FALLBACK_TTL_SECONDS",
                reason: "must not exceed CACHE_TTL_SECONDS".into(),
            });
        }
        Ok(config)
    }

    /// The metric retention as a [`Duration`].
    pub fn retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.metric_retention_days) * 86_400)
    }
}

fn parse_digest(hex_digest: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_digest)
        .map_err(|_| format!("{hex_digest:?} is not a hex SHA-256 digest"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{hex_digest:?} is not 64 hex characters (a SHA-256 digest)"))
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn optional(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_string())
    }

    fn parse<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
                variable: name,
                reason: e.to_string(),
            }),
        }
    }

    fn int(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let value: u64 = self.parse(name, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError {
                variable: name,
                reason: format!("{value} is outside {}..={}", range.start(), range.end()),
            })
        }
    }

    fn millis(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.int(name, default, range).map(Duration::from_millis)
    }

    fn seconds(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.int(name, default, range).map(Duration::from_secs)
    }

    fn probability(&self, name: &'static str, default: f64) -> Result<f64, ConfigError> {
        let value: f64 = self.parse(name, default)?;
        if (0.0..=1.0).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError {
                variable: name,
                reason: format!("{value} is not a probability between 0 and 1"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::from_pairs(&[]).unwrap();
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379/0");
        assert_eq!(c.redis_key_prefix, "analytics");
        assert_eq!(c.redis_timeout, Duration::from_millis(500));
        assert_eq!(c.request_deadline, Duration::from_millis(3000));
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.metric_retention_days, 35);
        assert_eq!(c.rate_limit_requests, 5);
        assert_eq!(c.rate_limit_algorithm, RateLimitAlgorithm::SlidingLog);
        assert_eq!(c.cache_ttl, Duration::from_secs(60));
        assert_eq!(c.breaker_failure_threshold, 3);
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
