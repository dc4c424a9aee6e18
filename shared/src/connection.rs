//! The Redis connection of one function instance.
//!
//! Built **once per cold start** and shared by every request of the instance:
//! a [`redis::aio::ConnectionManager`] created lazily (a cold start never fails
//! because Redis is down; the first command connects) that reconnects by
//! itself after an I/O error, so a warm instance recovers when Redis comes
//! back without a restart.
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
    manager: Manager,
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
        let manager = lazy_manager(client, manager_config(timeout))?;
        Ok(Self {
            manager: Manager::Fixed(manager),
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
        let renewal = Renewal {
            client,
            config,
            max_age,
            current: Mutex::new((Instant::now(), manager)),
        };
        Ok(Self {
            manager: Manager::Renewed(Arc::new(renewal)),
            timeout,
            round_trips: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The manager to send the next command on.
    fn manager(&self) -> ConnectionManager {
        match &self.manager {
            Manager::Fixed(manager) => manager.clone(),
            Manager::Renewed(renewal) => renewal.current(),
        }
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

#[derive(Clone)]
enum Manager {
    /// One manager for the instance's lifetime (it reconnects by itself).
    Fixed(ConnectionManager),
    /// Replaced when it reaches a maximum age (IAM mode). No other handle on
    /// an old manager is kept, so its connection closes once unused.
    Renewed(Arc<Renewal>),
}

/// What replaces a connection that reached its maximum age.
struct Renewal {
    client: redis::Client,
    config: ConnectionManagerConfig,
    max_age: Duration,
    /// When the current manager was created, and the manager.
    current: Mutex<(Instant, ConnectionManager)>,
}

impl Renewal {
    /// The current manager, replaced first if it is `max_age` old. A new
    /// manager is lazy, so its connection (and token) is made by the command
    /// about to be sent; the old one closes when its last clone is dropped.
    fn current(&self) -> ConnectionManager {
        // A poisoned lock only means another thread panicked while swapping;
        // the pair it guards is always consistent.
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0.elapsed() >= self.max_age {
            match lazy_manager(self.client.clone(), self.config.clone()) {
                Ok(fresh) => *current = (Instant::now(), fresh),
                // Cannot happen for a client that built the first manager;
                // keep the old connection rather than fail the command.
                Err(err) => tracing::warn!(error = %err, "could not renew the Redis connection"),
            }
        }
        current.1.clone()
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
        let mut manager = self.manager();
        Box::pin(async move {
            // The connect and response timeouts of the manager bound each step;
            // this outer bound also covers a connect followed by a slow reply.
            tokio::time::timeout(timeout * 2, manager.req_packed_command(cmd))
                .await
                .unwrap_or_else(|_| Err(timed_out()))
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
        let mut manager = self.manager();
        Box::pin(async move {
            tokio::time::timeout(timeout * 2, manager.req_packed_commands(cmd, offset, count))
                .await
                .unwrap_or_else(|_| Err(timed_out()))
        })
    }

    fn get_db(&self) -> i64 {
        match &self.manager {
            Manager::Fixed(manager) => manager.get_db(),
            Manager::Renewed(renewal) => {
                let current = renewal.current.lock().unwrap_or_else(|e| e.into_inner());
                current.1.get_db()
            }
        }
    }
}
