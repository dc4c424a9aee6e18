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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::config::{Config, ConfigError};

/// A cheap-to-clone handle on the instance's Redis connection.
///
/// It implements [`ConnectionLike`], so `redis` commands, pipelines and
/// [`redis::Script`]s run on it directly (`script.invoke_async(&mut redis.clone())`);
/// `Script` handles `NOSCRIPT` (after a restart, failover or `SCRIPT FLUSH`)
/// by loading the script and retrying once.
#[derive(Clone)]
pub struct Redis {
    manager: ConnectionManager,
    timeout: Duration,
    round_trips: Arc<AtomicU64>,
}

impl Redis {
    /// Creates the lazy connection from `REDIS_URL` and `REDIS_TIMEOUT_MS`.
    /// No network traffic happens here.
    ///
    /// # Errors
    /// A [`ConfigError`] for `REDIS_URL` when the URL cannot be parsed.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
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
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One attempt per command: the caller answers 503 with Retry-After
            // rather than spending its request deadline on reconnect back-off.
            .set_number_of_retries(0);
        let manager =
            ConnectionManager::new_lazy_with_config(client, manager_config).map_err(|e| {
                ConfigError {
                    variable: "REDIS_URL",
                    reason: e.to_string(),
                }
            })?;
        Ok(Self {
            manager,
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
        Box::pin(async move {
            // The connect and response timeouts of the manager bound each step;
            // this outer bound also covers a connect followed by a slow reply.
            tokio::time::timeout(timeout * 2, self.manager.req_packed_command(cmd))
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
        Box::pin(async move {
            tokio::time::timeout(
                timeout * 2,
                self.manager.req_packed_commands(cmd, offset, count),
            )
            .await
            .unwrap_or_else(|_| Err(timed_out()))
        })
    }

    fn get_db(&self) -> i64 {
        self.manager.get_db()
    }
}
