//! The Redis connection of one function instance.
//!
//! Built **once per cold start** and shared by every request of the instance:
//! a [`redis::aio::ConnectionManager`] created lazily (a cold start never fails
//! because Redis is down; the first command connects). After a command fails
//! with an I/O error (refused, reset, timed out) the manager is replaced by a
//! fresh lazy one, so the next command connects anew: a warm instance
//! recovers when Redis comes back without a restart, and its first request
//! after the outage succeeds. (The manager's own reconnect, with retries off,
//! makes one attempt right after the failure and keeps that attempt's
//! outcome: an attempt made while Redis was still down would fail the first
//! request after Redis is back.)
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::config::{Config, ConfigError, RedisAuthMode};

/// A cheap-to-clone handle on the instance's Redis connection.
///
/// It implements [`ConnectionLike`], so `redis` commands, pipelines and
/// [`redis::Script`]s run on it directly (`script.invoke_async(&mut redis.clone())`);
/// `Script` handles `NOSCRIPT` (after a restart, failover or `SCRIPT FLUSH`)
/// by loading the script and retrying once.
#[derive(Clone)]
pub struct Redis {
    manager: Arc<Renewal>,
    timeout: Duration,
    round_trips: Arc<AtomicU64>,
}

impl Redis {
    /// Creates the lazy connection from `REDIS_URL` and `REDIS_TIMEOUT_MS`,
    /// authenticated as `REDIS_AUTH_MODE` says. No network traffic happens here.
    ///
    /// # Errors
    /// A [`ConfigError`] for `REDIS_URL` when the URL cannot be parsed, or
    /// for an IAM setting that cannot be used.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        if config.redis_auth_mode == RedisAuthMode::Iam {
            return crate::iam_auth::connect(config);
        }
        let client = redis::Client::open(config.redis_url.as_str()).map_err(|e| ConfigError {
            variable: "REDIS_URL",
            reason: e.to_string(),
        })?;
        Self::from_client(client, config.redis_timeout)
    }

    /// Creates the lazy connection from a ready [`redis::Client`] (used by the
    /// IAM authentication mode, whose client carries a token provider).
    ///
    /// # Errors
    /// A [`ConfigError`] for `REDIS_URL` if the manager cannot be set up.
    pub fn from_client(client: redis::Client, timeout: Duration) -> Result<Self, ConfigError> {
        let config = manager_config(timeout);
        let manager = lazy_manager(client.clone(), config.clone())?;
        Ok(Self {
            manager: Arc::new(Renewal::new(client, config, None, manager)),
            timeout,
            round_trips: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Creates the lazy connection with dynamic credentials: every
    /// (re)connection authenticates with the next item of `provider`'s
    /// stream, and the live connection re-authenticates with each later item
    /// (the redis crate's `token-based-authentication`). The connection is
    /// replaced by a fresh one once it is `max_age` old, checked before each
    /// command; commands already sent on the old one complete. No network
    /// traffic happens here.
    ///
    /// # Errors
    /// A [`ConfigError`] for `REDIS_URL` if the manager cannot be set up.
    pub fn with_credentials_provider<P>(
        client: redis::Client,
        timeout: Duration,
        provider: P,
        max_age: Duration,
    ) -> Result<Self, ConfigError>
    where
        P: redis::StreamingCredentialsProvider + 'static,
    {
        let config = manager_config(timeout).set_credentials_provider(provider);
        let manager = lazy_manager(client.clone(), config.clone())?;
        Ok(Self {
            manager: Arc::new(Renewal::new(client, config, Some(max_age), manager)),
            timeout,
            round_trips: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many round trips (commands or pipelines sent) this handle and its
    /// clones have made since it was built.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// The per-command bound (`REDIS_TIMEOUT_MS`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        // One attempt per command: the caller answers 503 with Retry-After
        // rather than spending its request deadline on reconnect back-off.
        .set_number_of_retries(0)
}

fn lazy_manager(
    client: redis::Client,
    config: ConnectionManagerConfig,
) -> Result<ConnectionManager, ConfigError> {
    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| ConfigError {
        variable: "REDIS_URL",
        reason: e.to_string(),
    })
}

/// The instance's current manager and what replaces it: a fresh lazy manager
/// after an I/O error on the current one, and (IAM mode) once it reaches a
/// maximum age. No other handle on an old manager is kept, so its connection
/// closes once the commands still running on it are done.
struct Renewal {
    client: redis::Client,
    config: ConnectionManagerConfig,
    max_age: Option<Duration>,
    current: Mutex<Current>,
}

struct Current {
    manager: ConnectionManager,
    created: Instant,
    /// Counts replacements, so that the many commands failing together on
    /// one broken connection replace it once.
    generation: u64,
}

impl Renewal {
    fn new(
        client: redis::Client,
        config: ConnectionManagerConfig,
        max_age: Option<Duration>,
        manager: ConnectionManager,
    ) -> Self {
        Self {
            client,
            config,
            max_age,
            current: Mutex::new(Current {
                manager,
                created: Instant::now(),
                generation: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // A poisoned lock only means another thread panicked while swapping;
        // the manager it guards is always consistent.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The manager to send the next command on and its generation, replaced
    /// first if it is `max_age` old. A new manager is lazy, so its connection
    /// (and token) is made by the command about to be sent.
    fn current(&self) -> (ConnectionManager, u64) {
        let mut current = self.lock();
        if self
            .max_age
            .is_some_and(|age| current.created.elapsed() >= age)
        {
            self.replace(&mut current);
        }
        (current.manager.clone(), current.generation)
    }

    /// Called after an I/O error on the manager of `generation`: the next
    /// command connects anew instead of meeting a connection attempt that
    /// failed while Redis was away.
    fn discard(&self, generation: u64) {
        let mut current = self.lock();
        if current.generation == generation {
            self.replace(&mut current);
        }
    }

    fn replace(&self, current: &mut Current) {
        match lazy_manager(self.client.clone(), self.config.clone()) {
            Ok(fresh) => {
                *current = Current {
                    manager: fresh,
                    created: Instant::now(),
                    generation: current.generation + 1,
                }
            }
            // Cannot happen for a client that built the first manager; keep
            // the old connection (it reconnects by itself) rather than fail.
            Err(err) => tracing::warn!(error = %err, "could not renew the Redis connection"),
        }
    }
}

/// Replaces the manager after an I/O error: refused, reset or timed out,
/// the connection it holds (or its next attempt) is not to be trusted.
fn check<T>(renewal: &Renewal, generation: u64, result: &Result<T, RedisError>) {
    if let Err(err) = result {
        if err.is_io_error() {
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
        let (mut manager, generation) = self.manager.current();
        Box::pin(async move {
            // The connect and response timeouts of the manager bound each step;
            // this outer bound also covers a connect followed by a slow reply.
            let result = tokio::time::timeout(timeout * 2, manager.req_packed_command(cmd))
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            check(&self.manager, generation, &result);
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
        let (mut manager, generation) = self.manager.current();
        Box::pin(async move {
            let result =
                tokio::time::timeout(timeout * 2, manager.req_packed_commands(cmd, offset, count))
                    .await
                    .unwrap_or_else(|_| Err(timed_out()));
            check(&self.manager, generation, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.manager.lock().manager.get_db()
    }
}
