//! The Redis connection of one function instance.
//!
//! Built **once per cold start** and shared by every request of the instance:
//! one [`redis::aio::MultiplexedConnection`], opened lazily by the first
//! command (a cold start never fails because Redis is down). After a command
//! fails with an I/O error (refused, reset, timed out) or on a connection the
//! server dropped, that connection is discarded and the next command opens a
//! fresh one: a warm instance recovers when Redis comes back without a
//! restart, and its first request after the outage succeeds. Reconnecting is
//! never retried inside a request; the caller answers 503 with `Retry-After`
//! instead of spending its deadline on back-off.
//!
//! (The redis crate's `ConnectionManager` offers the same over a background
//! reconnect whose one attempt, made right after the failure, may be the
//! outcome the next request meets; it also costs a 1.3 KiB boxed future per
//! command, above the allocator's fast size classes. This module keeps the
//! crate's connection and protocol, and only decides when to open a new one.)
//!
//! Every command is bounded by `REDIS_TIMEOUT_MS`, on connecting and on each
//! response, so a silent or paused Redis turns into an error within that bound
//! instead of a hang. The wrapper also counts **round trips** (one per command,
//! one per pipeline): tests and benchmarks hold the hot paths to their budget
//! with [`Redis::round_trips`] instead of timing them.
//!
//! With `REDIS_AUTH_MODE=iam` the password is a short-lived token from
//! [`crate::iam_auth`], and the connection is replaced when it grows older
//! than a maximum age ([`Redis::with_credentials_provider`]).
//!
//! [`RedisSettings`] holds this module's variables: `REDIS_URL`,
//! `REDIS_KEY_PREFIX`, `REDIS_TIMEOUT_MS`, `REDIS_AUTH_MODE` and, in `iam`
//! mode, `REDIS_IAM_*`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, FromRedisValue, ParsingError, Pipeline, RedisError, RedisFuture,
    RedisResult, Value,
};
use tokio::sync::OnceCell;

use crate::iam_auth::{tls_url, IamTokenProvider, TokenRequest, MAX_CONNECTION_AGE};
use crate::settings::{redact_url, ConfigError, Env};

/// How the functions authenticate to Redis (`REDIS_AUTH_MODE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAuth {
    /// `url` (default): credentials, if any, are inside `REDIS_URL`.
    Url,
    /// `iam`: ElastiCache IAM authentication, a short-lived SigV4 token as
    /// password for this user and cache.
    Iam(TokenRequest),
}

/// The Redis settings of a deployment.
#[derive(Clone)]
pub struct RedisSettings {
    /// `REDIS_URL`, default `redis://127.0.0.1:6379/0` (`rediss://` for TLS).
    pub url: String,
    /// `REDIS_KEY_PREFIX`, default `analytics`: the first segment of every
    /// key written; 1 or more of `A-Z a-z 0-9 _ - . :` (no braces, which
    /// would break the keys' hash tags).
    pub key_prefix: String,
    /// `REDIS_TIMEOUT_MS`, default 500 (1..=60 000): bound on connecting and
    /// on each Redis command.
    pub timeout: Duration,
    /// `REDIS_AUTH_MODE` (`url` or `iam`), default `url`; `iam` reads
    /// `REDIS_IAM_USER_ID`, `REDIS_IAM_CACHE_NAME` (both required) and
    /// `REDIS_IAM_SERVERLESS` (default false).
    pub auth: RedisAuth,
}

impl std::fmt::Debug for RedisSettings {
    // Hand-written so that a password inside REDIS_URL never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .finish()
    }
}

impl RedisSettings {
    /// Reads and validates the Redis variables.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let key_prefix = env.string("REDIS_KEY_PREFIX", "analytics");
        if key_prefix.is_empty()
            || !key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
        {
            return Err(ConfigError::new(
                "REDIS_KEY_PREFIX",
                "use 1 or more characters from A-Z a-z 0-9 _ - . : (no braces)",
            ));
        }
        let url = env.string("REDIS_URL", "redis://127.0.0.1:6379/0");
        if !["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(ConfigError::new(
                "REDIS_URL",
                "expected a redis:// or rediss:// URL",
            ));
        }
        let timeout = env.millis("REDIS_TIMEOUT_MS", 500, 1..=60_000)?;
        let auth = match env.string("REDIS_AUTH_MODE", "url").trim() {
            "url" => RedisAuth::Url,
            "iam" => RedisAuth::Iam(TokenRequest::from_env(env)?),
            other => {
                return Err(ConfigError::new(
                    "REDIS_AUTH_MODE",
                    format!("unknown mode {other:?}; expected url or iam"),
                ))
            }
        };
        Ok(Self {
            url,
            key_prefix,
            timeout,
            auth,
        })
    }
}

/// A cheap-to-clone handle on the instance's Redis connection.
///
/// It implements [`ConnectionLike`], so `redis` commands, pipelines and
/// [`redis::Script`]s run on it directly (`script.invoke_async(&mut redis.clone())`);
/// `Script` handles `NOSCRIPT` (after a restart, failover or `SCRIPT FLUSH`)
/// by loading the script and retrying once.
#[derive(Clone)]
pub struct Redis {
    renewal: Arc<Renewal>,
    timeout: Duration,
    round_trips: Arc<AtomicU64>,
}

impl Redis {
    /// Creates the lazy connection from `REDIS_URL` and `REDIS_TIMEOUT_MS`,
    /// authenticated as `REDIS_AUTH_MODE` says: in `iam` mode over TLS to
    /// `REDIS_URL`'s host, tokens from the default credential chain,
    /// connections replaced after [`MAX_CONNECTION_AGE`]. No network traffic
    /// happens here.
    ///
    /// # Errors
    /// A [`ConfigError`] for `REDIS_URL` when the URL cannot be parsed.
    pub fn from_settings(settings: &RedisSettings) -> Result<Self, ConfigError> {
        let open = |url: &str| {
            redis::Client::open(url).map_err(|e| ConfigError::new("REDIS_URL", e.to_string()))
        };
        Ok(match &settings.auth {
            RedisAuth::Url => Self::from_client(open(&settings.url)?, settings.timeout),
            RedisAuth::Iam(request) => Self::with_credentials_provider(
                open(&tls_url(&settings.url)?)?,
                settings.timeout,
                IamTokenProvider::from_default_chain(request.clone()),
                MAX_CONNECTION_AGE,
            ),
        })
    }

    /// Creates the lazy connection from a ready [`redis::Client`], each
    /// command bounded by `timeout`. No network traffic happens here.
    fn from_client(client: redis::Client, timeout: Duration) -> Self {
        Self::new(client, connection_config(timeout), timeout, None)
    }

    /// Creates the lazy connection with dynamic credentials: every
    /// (re)connection authenticates with the next item of `provider`'s
    /// stream, and the live connection re-authenticates with each later item
    /// (the redis crate's `token-based-authentication`). The connection is
    /// replaced by a fresh one once it is `max_age` old, checked before each
    /// command; commands already sent on the old one complete. No network
    /// traffic happens here.
    pub fn with_credentials_provider<P>(
        client: redis::Client,
        timeout: Duration,
        provider: P,
        max_age: Duration,
    ) -> Self
    where
        P: redis::StreamingCredentialsProvider + 'static,
    {
        let config = connection_config(timeout).set_credentials_provider(provider);
        Self::new(client, config, timeout, Some(max_age))
    }

    fn new(
        client: redis::Client,
        config: AsyncConnectionConfig,
        timeout: Duration,
        max_age: Option<Duration>,
    ) -> Self {
        Self {
            renewal: Arc::new(Renewal {
                client,
                config,
                max_age,
                current: Mutex::new(Current::first()),
            }),
            timeout,
            round_trips: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many round trips (commands or pipelines sent) this handle and its
    /// clones have made since it was built.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}

fn connection_config(timeout: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
}

/// The instance's current connection and when to replace it: after an I/O
/// error on it, and (IAM mode) once it reaches a maximum age. No other handle
/// on an old connection is kept, so it closes once the commands still
/// running on it are done.
struct Renewal {
    client: redis::Client,
    config: AsyncConnectionConfig,
    max_age: Option<Duration>,
    current: Mutex<Current>,
}

struct Current {
    /// Opened by the first command that needs it; a failed attempt leaves it
    /// empty, so the next command tries again.
    connection: Arc<OnceCell<MultiplexedConnection>>,
    created: Instant,
    /// Counts replacements, so that the many commands failing together on
    /// one broken connection replace it once.
    generation: u64,
}

impl Current {
    fn first() -> Self {
        Self {
            connection: Arc::new(OnceCell::new()),
            created: Instant::now(),
            generation: 0,
        }
    }
}

impl Renewal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // A poisoned lock only means another thread panicked while swapping;
        // the state it guards is always consistent.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection to send the next command on and its generation,
    /// replaced first if it is `max_age` old. A new one is empty, so its
    /// connection (and token) is made by the command about to be sent.
    fn current(&self) -> (Arc<OnceCell<MultiplexedConnection>>, u64) {
        let mut current = self.lock();
        if self
            .max_age
            .is_some_and(|age| current.created.elapsed() >= age)
        {
            Self::replace(&mut current);
        }
        (Arc::clone(&current.connection), current.generation)
    }

    /// Called after an I/O error on the connection of `generation`: the next
    /// command connects anew instead of reusing a connection that broke.
    fn discard(&self, generation: u64) {
        let mut current = self.lock();
        if current.generation == generation {
            Self::replace(&mut current);
        }
    }

    fn replace(current: &mut Current) {
        *current = Current {
            connection: Arc::new(OnceCell::new()),
            created: Instant::now(),
            generation: current.generation + 1,
        };
    }

    /// The open connection of `cell`, opening it first if needed (bounded by
    /// the connection timeout; concurrent first commands share one attempt).
    async fn open(
        &self,
        cell: &OnceCell<MultiplexedConnection>,
    ) -> RedisResult<MultiplexedConnection> {
        if let Some(connection) = cell.get() {
            return Ok(connection.clone());
        }
        // Boxed: connecting is a large future, and it is needed once per
        // connection, not on every command's path.
        Box::pin(cell.get_or_try_init(|| {
            self.client
                .get_multiplexed_async_connection_with_config(&self.config)
        }))
        .await
        .cloned()
    }
}

/// Discards the connection after an I/O error (refused, reset or timed out)
/// or when the server dropped it: it is not to be trusted with the next
/// command.
fn check<T>(renewal: &Renewal, generation: u64, result: &Result<T, RedisError>) {
    if let Err(err) = result {
        if err.is_io_error() || err.is_unrecoverable_error() {
            renewal.discard(generation);
        }
    }
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "Redis did not answer within REDIS_TIMEOUT_MS",
    ))
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let timeout = self.timeout;
        let (cell, generation) = self.renewal.current();
        Box::pin(async move {
            // The connect and response timeouts bound each step; this outer
            // bound also covers a connect followed by a slow reply.
            let result = tokio::time::timeout(timeout * 2, async {
                let mut connection = self.renewal.open(&cell).await?;
                connection.send_packed_command(cmd).await
            })
            .await
            .unwrap_or_else(|_| Err(timed_out()));
            check(&self.renewal, generation, &result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let timeout = self.timeout;
        let (cell, generation) = self.renewal.current();
        Box::pin(async move {
            let result = tokio::time::timeout(timeout * 2, async {
                let mut connection = self.renewal.open(&cell).await?;
                connection.send_packed_commands(cmd, offset, count).await
            })
            .await
            .unwrap_or_else(|_| Err(timed_out()));
            check(&self.renewal, generation, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.renewal
            .client
            .get_connection_info()
            .redis_settings()
            .db()
    }
}

/// The elements of a Lua script's array reply, decoded in order: each
/// script's reply type implements [`FromRedisValue`] with it, next to the
/// script, so a reply is decoded in one place.
pub struct ReplyFields {
    script: &'static str,
    items: std::vec::IntoIter<Value>,
}

impl ReplyFields {
    /// The array reply `reply` of `script` (named in errors).
    ///
    /// # Errors
    /// A [`ParsingError`] when the reply is not an array.
    pub fn new(script: &'static str, reply: Value) -> Result<Self, ParsingError> {
        let items: Vec<Value> = FromRedisValue::from_redis_value(reply)?;
        Ok(Self {
            script,
            items: items.into_iter(),
        })
    }

    /// The next element, decoded as `T`.
    ///
    /// # Errors
    /// A [`ParsingError`] naming the script when the reply has no more
    /// elements or the next one is not a `T`.
    pub fn take<T: FromRedisValue>(&mut self) -> Result<T, ParsingError> {
        match self.items.next() {
            Some(value) => T::from_redis_value(value),
            None => Err(format!("{} answered fewer elements than expected", self.script).into()),
        }
    }

    /// An error for a reply whose tag (first element) is not one the script
    /// answers.
    pub fn unexpected(&self, tag: &str) -> ParsingError {
        format!("{} answered an unknown reply {tag:?}", self.script).into()
    }
}

#[cfg(test)]
mod tests {
    use aws_credential_types::provider::{error::CredentialsError, future, ProvideCredentials};
    use redis::ErrorKind;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<RedisSettings, ConfigError> {
        let lookup = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        RedisSettings::from_env(&Env::new(&lookup))
    }

    fn request() -> TokenRequest {
        TokenRequest {
            cache_name: "analytics-cache".into(),
            user_id: "analytics-app".into(),
            serverless: false,
        }
    }

    /// A credentials source that always fails, as the default chain does
    /// when it finds nothing.
    #[derive(Debug)]
    struct NoCredentials;

    impl ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
                "no credentials in this test",
            )))
        }
    }

    #[test]
    fn iam_mode_needs_its_user_and_cache() {
        let err = settings(&[("REDIS_AUTH_MODE", "iam")]).unwrap_err();
        assert_eq!(err.variable, "REDIS_IAM_USER_ID");
        assert_eq!(
            settings(&[("REDIS_AUTH_MODE", "ldap")])
                .unwrap_err()
                .variable,
            "REDIS_AUTH_MODE"
        );
    }

    #[tokio::test]
    async fn missing_credentials_fail_the_command_not_the_process() {
        // The credentials are asked for after the TCP connection is made and
        // before anything is sent, so the shared test Redis sees a
        // connection open and close, nothing else.
        let url = std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
        let redis = Redis::with_credentials_provider(
            redis::Client::open(url).unwrap(),
            Duration::from_millis(500),
            IamTokenProvider::with_credentials(request(), NoCredentials, "us-east-1"),
            MAX_CONNECTION_AGE,
        );
        let err = redis::cmd("PING")
            .query_async::<String>(&mut redis.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
        assert!(
            err.to_string().contains("could not load AWS credentials"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn building_the_iam_connection_touches_no_network() {
        // No AWS credentials, no reachable cache: building must still succeed
        // (credentials resolve on the first connection).
        let settings = settings(&[
            ("REDIS_AUTH_MODE", "iam"),
            ("REDIS_URL", "redis://cache.invalid:6379/0"),
            ("REDIS_IAM_USER_ID", "analytics-app"),
            ("REDIS_IAM_CACHE_NAME", "analytics-cache"),
        ])
        .unwrap();
        let redis = Redis::from_settings(&settings).unwrap();
        assert_eq!(redis.round_trips(), 0);
    }
}
