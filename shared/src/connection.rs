//! The Redis connection of one function instance.
//!
//! Built **once per cold start** and shared by every request of the instance:
//! on a single node, one [`redis::aio::MultiplexedConnection`], opened lazily by the first
//! command (a cold start never fails because Redis is down). After a command
//! fails with an I/O error (refused, reset, timed out) or on a connection the
//! server dropped, that connection is discarded and the next command opens a
//! fresh one: a warm instance recovers when Redis comes back without a
//! restart, and its first request after the outage succeeds. Reconnecting is
//! never retried inside a request; the caller answers 503 with `Retry-After`
//! instead of spending its deadline on back-off.
//!
//! **Connections closed while idle.** Redis' `timeout`, proxies and NAT
//! gateways close connections that carry nothing for a while, and a Lambda
//! instance is frozen between requests for as long as it has none. The one
//! command that may be sent again is one that provably was never written:
//! after a failure the redis crate cannot say which (a command on a closed
//! connection fails with the same I/O `BrokenPipe` whether it was written
//! before the connection broke or never left the queue, and a write that
//! reached the socket may have run), so the decision is taken *before*
//! sending. A multiplexed connection is driven by one task that writes the
//! queued commands and reads the replies; when it reads the end of the
//! stream or an error it ends, and its queue refuses every later command.
//! A connection that has had no answer for [`PROBE_AFTER_IDLE`] is
//! therefore asked first whether its driver has ended
//! ([`Link::known_closed`], no round trip); if so, it is discarded and the
//! command is sent once on a fresh connection, within the same bound. Every
//! command sent until the next answer asks, so all the commands of a burst
//! after an idle time go to the fresh connection. A connection closed while
//! idle is noticed by its driver as soon as the peer's `FIN` or `RST`
//! arrives, so the request after an idle drop meets a connection known to be
//! closed and succeeds. What stays a 503: a command already handed to a connection
//! whose close was still on the wire (or not yet read, e.g. right after a
//! thawed instance resumes) — it may have been written, so it is never sent
//! again; the idempotency key is the client's safe retry. TCP keepalive is
//! on ([`tcp_settings`]): it keeps NAT entries of a running instance alive
//! and ends connections whose peer vanished silently. In cluster mode the
//! cluster client owns its node connections and repairs one after its first
//! failure; the check does not apply there, and the first command on a node
//! connection closed while idle answers 503.
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
//! one per pipeline, one per command sent again): tests and benchmarks hold the hot paths to their budget
//! with [`Redis::round_trips`] instead of timing them.
//!
//! With `REDIS_AUTH_MODE=iam` the password is a short-lived token from
//! [`crate::iam_auth`], and the connection is replaced when it grows older
//! than a maximum age ([`Redis::with_credentials_provider`]).
//!
//! **Cluster mode** (`REDIS_MODE=cluster`): the handle holds the redis
//! crate's async cluster client instead (`redis::cluster_async`), which
//! discovers the shards from the one node in `REDIS_URL`, routes each command
//! to the master of its keys' hash slot and rebuilds its slot map after a
//! `MOVED` or a lost node. Its own retries are switched off: it would re-send
//! a command after a timeout or a dropped connection, when a script may
//! already have run. This handle retries instead, within the same
//! per-command bound, only the answers that prove the command did not run
//! (`MOVED`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING`, `READONLY`,
//! a refused connection, no connection for the slot yet).
//!
//! **Scripts** are sent as `EVALSHA`; a `NOSCRIPT` answer (the node
//! restarted, was promoted from replica, or its cache was flushed: each node
//! has its own script cache) is answered here by sending the script's body
//! with `EVAL` to the same node, routed by the same keys, which also caches
//! it there. Scripts made with [`script`] are known by their SHA-1; the
//! `SCRIPT LOAD` the redis crate would otherwise send goes, in cluster mode,
//! to every node at once and fails while any node is down.
//!
//! [`RedisSettings`] holds this module's variables: `REDIS_URL`,
//! `REDIS_MODE`, `REDIS_KEY_PREFIX`, `REDIS_TIMEOUT_MS`, `REDIS_AUTH_MODE`
//! and, in `iam` mode, `REDIS_IAM_*`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::socket2::TcpKeepalive;
use redis::io::tcp::TcpSettings;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, FromRedisValue, IntoConnectionInfo, ParsingError,
    Pipeline, RedisError, RedisFuture, RedisResult, RetryMethod, Script, ServerErrorKind, Value,
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

/// What kind of Redis `REDIS_URL` names (`REDIS_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// `standalone` (default): one primary holds every key.
    Standalone,
    /// `cluster`: a Redis Cluster (ElastiCache Serverless, a cluster-mode
    /// replication group, `redis-server --cluster-enabled yes`); `REDIS_URL`
    /// names any one node and the client discovers the others.
    Cluster,
}

impl RedisMode {
    /// The variable's value: `standalone` or `cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Cluster => "cluster",
        }
    }
}

/// The Redis settings of a deployment.
#[derive(Clone)]
pub struct RedisSettings {
    /// `REDIS_URL`, default `redis://127.0.0.1:6379/0` (`rediss://` for TLS).
    pub url: String,
    /// `REDIS_MODE` (`standalone` or `cluster`), default `standalone`.
    pub mode: RedisMode,
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
            .field("mode", &self.mode)
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
        let mode = match env.string("REDIS_MODE", "standalone").trim() {
            "standalone" => RedisMode::Standalone,
            "cluster" => RedisMode::Cluster,
            other => {
                return Err(ConfigError::new(
                    "REDIS_MODE",
                    format!("unknown mode {other:?}; expected standalone or cluster"),
                ))
            }
        };
        if mode == RedisMode::Cluster {
            check_cluster_url(&url)?;
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
            mode,
            key_prefix,
            timeout,
            auth,
        })
    }
}

/// A cluster node is reached over TCP and has only database 0.
fn check_cluster_url(url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(ConfigError::new(
            "REDIS_URL",
            "REDIS_MODE=cluster needs a redis:// or rediss:// URL of one node",
        ));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| ConfigError::new("REDIS_URL", e.to_string()))?;
    if info.redis_settings().db() != 0 {
        return Err(ConfigError::new(
            "REDIS_URL",
            "a Redis Cluster has only database 0: leave the database off the URL in REDIS_MODE=cluster",
        ));
    }
    Ok(())
}

/// Scripts known by their SHA-1, so that a `NOSCRIPT` answer can be
/// followed by an `EVAL` of the body on the same node.
static SCRIPTS: LazyLock<Mutex<HashMap<String, &'static str>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A [`redis::Script`] whose body this module remembers, so that `NOSCRIPT`
/// on any node is answered by an `EVAL` of the body routed by the same keys
/// (see the module's documentation). Every Lua script of the service is
/// made with this, once (in a `LazyLock`).
pub fn script(body: &'static str) -> Script {
    let script = Script::new(body);
    SCRIPTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(script.get_hash().to_string(), body);
    script
}

/// `EVAL <body> <numkeys> <keys…> <args…>` for an `EVALSHA` of a script
/// made with [`script`]; `None` for any other command.
fn eval_of(cmd: &Cmd) -> Option<Cmd> {
    let mut args = cmd.args_iter().map(|arg| match arg {
        redis::Arg::Simple(bytes) => bytes,
        _ => b"0",
    });
    if !args.next()?.eq_ignore_ascii_case(b"EVALSHA") {
        return None;
    }
    let sha = std::str::from_utf8(args.next()?).ok()?;
    let body = *SCRIPTS.lock().unwrap_or_else(|e| e.into_inner()).get(sha)?;
    let mut eval = redis::cmd("EVAL");
    eval.arg(body);
    for arg in args {
        eval.arg(arg);
    }
    Some(eval)
}

/// The keys of one command as sent (scripts: their `KEYS`; other
/// commands: the argument after the name, if any), for [`CallLog`].
fn keys_of(cmd: &Cmd) -> Option<(String, Vec<String>)> {
    let mut args = cmd.args_iter().map(|arg| match arg {
        redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    });
    let name = args.next()?.to_ascii_uppercase();
    let keys = match name.as_str() {
        "EVALSHA" | "EVAL" | "EVALSHA_RO" | "EVAL_RO" => {
            let _script = args.next();
            let count: usize = args.next()?.parse().ok()?;
            args.take(count).collect()
        }
        "PING" | "TIME" | "CLUSTER" | "INFO" | "SCRIPT" => Vec::new(),
        _ => args.take(1).collect(),
    };
    Some((name, keys))
}

/// One command or pipeline a [`Redis`] handle sent, as [`CallLog`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The command names, upper case (one for a command, several for a
    /// pipeline).
    pub commands: Vec<String>,
    /// Every key the call names: a script's `KEYS`, the first argument of a
    /// keyed command.
    pub keys: Vec<String>,
}

/// The calls a [`Redis`] handle (and its clones) sent since
/// [`Redis::record_calls`], for tests that check what reaches Redis (for
/// example that every call touches one hash slot).
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<Call>>>);

impl CallLog {
    /// The calls recorded so far, in the order they were sent.
    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn push(&self, commands: &[&Cmd]) {
        let mut call = Call {
            commands: Vec::new(),
            keys: Vec::new(),
        };
        for cmd in commands {
            if let Some((name, keys)) = keys_of(cmd) {
                call.commands.push(name);
                call.keys.extend(keys);
            }
        }
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(call);
    }
}

/// A cheap-to-clone handle on the instance's Redis connection.
///
/// It implements [`ConnectionLike`], so `redis` commands, pipelines and
/// [`redis::Script`]s run on it directly (`script.invoke_async(&mut redis.clone())`);
/// `NOSCRIPT` (after a restart, failover or `SCRIPT FLUSH`) is answered by
/// an `EVAL` of the body for scripts made with [`script`]. The same handle
/// speaks to one node or to a Redis Cluster ([`RedisMode`]).
#[derive(Clone)]
pub struct Redis {
    renewal: Arc<Renewal>,
    timeout: Duration,
    round_trips: Arc<AtomicU64>,
    log: Option<CallLog>,
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
        let timeout = settings.timeout;
        Ok(match (settings.mode, &settings.auth) {
            (RedisMode::Standalone, RedisAuth::Url) => {
                Self::from_client(open(&settings.url)?, timeout)
            }
            (RedisMode::Standalone, RedisAuth::Iam(request)) => Self::with_credentials_provider(
                open(&tls_url(&settings.url)?)?,
                timeout,
                IamTokenProvider::from_default_chain(request.clone()),
                MAX_CONNECTION_AGE,
            ),
            (RedisMode::Cluster, RedisAuth::Url) => {
                Self::from_cluster(cluster_builder(&settings.url, timeout), timeout, None)?
            }
            (RedisMode::Cluster, RedisAuth::Iam(request)) => Self::from_cluster(
                cluster_builder(&tls_url(&settings.url)?, timeout).set_credentials_provider(
                    IamTokenProvider::from_default_chain(request.clone()),
                ),
                timeout,
                Some(MAX_CONNECTION_AGE),
            )?,
        })
    }

    /// Creates the lazy connection to a Redis Cluster from a builder (see
    /// [`cluster_builder`]), replaced once it is `max_age` old if given. No
    /// network traffic happens here: the first command discovers the shards.
    ///
    /// # Errors
    /// A [`ConfigError`] for `REDIS_URL` when the builder refuses its nodes.
    pub fn from_cluster(
        builder: ClusterClientBuilder,
        timeout: Duration,
        max_age: Option<Duration>,
    ) -> Result<Self, ConfigError> {
        let client = builder
            .build()
            .map_err(|e| ConfigError::new("REDIS_URL", e.to_string()))?;
        Ok(Self::with_client(Client::Cluster(client), timeout, max_age))
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
        let info = client
            .get_connection_info()
            .clone()
            .set_tcp_settings(tcp_settings());
        // Reopening a client from its own parsed settings cannot fail; the
        // client as given (without keepalive) is the fallback all the same.
        let client = redis::Client::open(info).unwrap_or(client);
        Self::with_client(Client::Standalone(client, config), timeout, max_age)
    }

    fn with_client(client: Client, timeout: Duration, max_age: Option<Duration>) -> Self {
        Self {
            renewal: Arc::new(Renewal::new(client, max_age)),
            timeout,
            round_trips: Arc::new(AtomicU64::new(0)),
            log: None,
        }
    }

    /// Records every command and pipeline this handle and its clones made
    /// from now on (their names and keys) into the returned log, for tests.
    pub fn record_calls(&mut self) -> CallLog {
        let log = CallLog::default();
        self.log = Some(log.clone());
        log
    }

    /// Whether this handle speaks to a Redis Cluster.
    pub fn mode(&self) -> RedisMode {
        match self.renewal.client {
            Client::Standalone(..) => RedisMode::Standalone,
            Client::Cluster(_) => RedisMode::Cluster,
        }
    }

    /// How many round trips (commands or pipelines sent) this handle and its
    /// clones have made since it was built.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}

/// TCP keepalive on every connection: after [`KEEPALIVE_IDLE`] without
/// traffic, a probe every [`KEEPALIVE_INTERVAL`], the connection given up
/// after [`KEEPALIVE_PROBES`] unanswered ones. It keeps the connection's
/// entry alive in NAT gateways and firewalls that forget idle flows (AWS NAT
/// gateways after 350 s) while the instance runs, and ends a connection
/// whose peer vanished without a word (a host lost, a network partition)
/// within about 90 s of idleness, so that the next command finds it
/// [known to be closed](Link::known_closed) and connects anew. It does not
/// reset Redis' own `timeout`, which counts commands, not packets: that case
/// is the idle check's. `TCP_NODELAY` keeps the crate's default.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_keepalive(
        TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES),
    )
}

/// Idle time before the first keepalive probe (`TCP_KEEPIDLE`).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between keepalive probes (`TCP_KEEPINTVL`).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the connection is given up (`TCP_KEEPCNT`).
const KEEPALIVE_PROBES: u32 = 3;

fn connection_config(timeout: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
}

/// The cluster client's builder for `url` (any one node; `rediss://` for
/// TLS, credentials inside it as in standalone mode): each node connection
/// and each response bounded by `timeout`, TCP keepalive on
/// ([`tcp_settings`]), and **no retries** of its own (it
/// would re-send a command after a timeout or a dropped connection, when the
/// command may have run; [`Redis`] retries only what surely did not run).
/// Redirects still rebuild its slot map.
pub fn cluster_builder(url: &str, timeout: Duration) -> ClusterClientBuilder {
    ClusterClientBuilder::new([url])
        .retries(0)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .tcp_settings(tcp_settings())
}

/// How connections are made.
enum Client {
    Standalone(redis::Client, AsyncConnectionConfig),
    Cluster(ClusterClient),
}

/// One open connection: to one node, or the cluster client's connections to
/// every node.
#[derive(Clone)]
enum Link {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// The instance's current connection and when to replace it: after an I/O
/// error on it (standalone; the cluster client repairs its node connections
/// itself), and (IAM mode) once it reaches a maximum age. No other handle on
/// an old connection is kept, so it closes once the commands still running
/// on it are done.
struct Renewal {
    client: Client,
    max_age: Option<Duration>,
    current: Mutex<Current>,
    /// The origin of [`Slot::heard_ms`].
    epoch: Instant,
}

struct Current {
    slot: Arc<Slot>,
    created: Instant,
    /// Counts replacements, so that the many commands failing together on
    /// one broken connection replace it once.
    generation: u64,
}

/// One connection of the handle.
struct Slot {
    /// Opened by the first command that needs it; a failed attempt leaves it
    /// empty, so the next command tries again.
    link: OnceCell<Link>,
    /// When a command last got an answer on this connection (or it was
    /// made), in ms since [`Renewal::epoch`]. A connection that has been
    /// silent for [`PROBE_AFTER_IDLE`] is checked before use: every command
    /// sent until the next answer checks it, so the commands of a burst after
    /// an idle time all see a close the connection's driver has noticed.
    heard_ms: AtomicU64,
}

impl Current {
    fn new(generation: u64, now_ms: u64) -> Self {
        Self {
            slot: Arc::new(Slot {
                link: OnceCell::new(),
                heard_ms: AtomicU64::new(now_ms),
            }),
            created: Instant::now(),
            generation,
        }
    }
}

impl Renewal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // A poisoned lock only means another thread panicked while swapping;
        // the state it guards is always consistent.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new(client: Client, max_age: Option<Duration>) -> Self {
        Self {
            client,
            max_age,
            current: Mutex::new(Current::new(0, 0)),
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since [`Renewal::epoch`].
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The connection to send the next command on and its generation,
    /// replaced first if it is `max_age` old. A new one is empty, so its
    /// connection (and token) is made by the command about to be sent.
    fn current(&self) -> (Arc<Slot>, u64) {
        let mut current = self.lock();
        if self
            .max_age
            .is_some_and(|age| current.created.elapsed() >= age)
        {
            self.replace(&mut current);
        }
        (Arc::clone(&current.slot), current.generation)
    }

    /// Whether `slot` has had no answer for [`PROBE_AFTER_IDLE`].
    fn silent(&self, slot: &Slot) -> bool {
        let heard = slot.heard_ms.load(Ordering::Relaxed);
        self.now_ms().saturating_sub(heard) >= PROBE_AFTER_IDLE.as_millis() as u64
    }

    /// Records that a command on `slot` got its answer.
    fn heard(&self, slot: &Slot) {
        slot.heard_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Called after an I/O error on the connection of `generation`: the next
    /// command connects anew instead of reusing a connection that broke.
    fn discard(&self, generation: u64) {
        let mut current = self.lock();
        if current.generation == generation {
            self.replace(&mut current);
        }
    }

    fn replace(&self, current: &mut Current) {
        *current = Current::new(current.generation + 1, self.now_ms());
    }

    /// The open connection of `cell`, opening it first if needed (bounded by
    /// the connection timeout; concurrent first commands share one attempt),
    /// and whether it was open already (rather than opened for this command).
    async fn open(&self, cell: &OnceCell<Link>) -> RedisResult<(Link, bool)> {
        if let Some(connection) = cell.get() {
            return Ok((connection.clone(), true));
        }
        // Boxed: connecting is a large future, and it is needed once per
        // connection, not on every command's path.
        Box::pin(cell.get_or_try_init(|| async {
            match &self.client {
                Client::Standalone(client, config) => client
                    .get_multiplexed_async_connection_with_config(config)
                    .await
                    .map(Link::Standalone),
                // Asks the node of REDIS_URL for the slot map (CLUSTER
                // SLOTS) and connects to every node.
                Client::Cluster(client) => client.get_async_connection().await.map(Link::Cluster),
            }
        }))
        .await
        .map(|link| (link.clone(), false))
    }
}

impl Link {
    /// Whether this connection is **known to be closed**: the redis crate's
    /// driver task of a standalone connection (the one task that writes
    /// commands to the socket and reads replies) has ended, after reading
    /// the end of the stream or an error. A command handed to it now could
    /// never be written.
    ///
    /// The crate does not expose the driver's state, and a command that
    /// failed on a closed connection reports the same error (an I/O
    /// `BrokenPipe`) whether or not it had been written, so this asks
    /// without risking anything: it hands the connection a `PING` and looks
    /// at the first poll only. A driver that ended has dropped its queue, so
    /// the hand-over fails at once with a dropped-connection error; on a live
    /// connection the `PING` is queued and the wait is dropped, after which
    /// the driver skips the `PING` (its reply is no longer awaited) or, if it
    /// already took it, sends it and discards the `PONG`: harmless either way.
    /// No round trip is waited for and none is counted. When in doubt (the
    /// queue is full, or the task must yield first) the answer is false: the
    /// connection is used as it would have been. Always false in cluster
    /// mode: the cluster client keeps its node connections to itself.
    fn known_closed(&self) -> bool {
        let Self::Standalone(connection) = self else {
            return false;
        };
        let mut connection = connection.clone();
        let ping = redis::cmd("PING");
        matches!(
            connection.send_packed_command(&ping).now_or_never(),
            Some(Err(err)) if err.is_connection_dropped()
        )
    }
}

/// Discards a standalone connection after an I/O error (refused, reset or
/// timed out), when the server dropped it, or when it answered `READONLY`
/// (`read_only`): it is not to be trusted with the next command. A
/// `READONLY` answer means the node behind the connection is a replica now:
/// after a failover that keeps the old primary running as a replica, the
/// service's hostname (an ElastiCache primary endpoint) names the new
/// primary, and only a new connection reaches it. The cluster client
/// reconnects to a node by itself and rebuilds its slot map from the nodes
/// it knows, which a fresh client (starting again from `REDIS_URL`'s one
/// node) could not do better.
fn check<T>(renewal: &Renewal, generation: u64, result: &Result<T, RedisError>, read_only: bool) {
    if !matches!(renewal.client, Client::Standalone(..)) {
        return;
    }
    let broken = result
        .as_ref()
        .is_err_and(|err| err.is_io_error() || err.is_unrecoverable_error());
    if broken || read_only {
        renewal.discard(generation);
    }
}

/// Whether a reply is, or holds, a `READONLY` error.
fn is_read_only(value: &Value) -> bool {
    match value {
        Value::ServerError(err) => err.kind() == Some(ServerErrorKind::ReadOnly),
        Value::Array(items) => items.iter().any(is_read_only),
        _ => false,
    }
}

/// The server error a command was answered with, whether the connection
/// reported it as an error (the cluster client does for redirects and
/// cluster states) or as an error value (`NOSCRIPT`, and everything on one
/// node).
fn server_error(result: &RedisResult<Value>) -> Option<ServerErrorKind> {
    match result {
        Err(err) => match err.kind() {
            ErrorKind::Server(kind) => Some(kind),
            _ => None,
        },
        Ok(Value::ServerError(err)) => err.kind(),
        Ok(_) => None,
    }
}

/// The answers of a cluster that prove a command did not run, so that
/// sending it again cannot apply a write twice: a redirect to the slot's new
/// master, a slot being migrated or not served, a master that is down or
/// still loading, a replica refusing a write, a refused connection, or no
/// connection for the slot yet.
fn did_not_run<T>(result: &RedisResult<T>, server: Option<ServerErrorKind>) -> bool {
    let retryable = matches!(
        server,
        Some(
            ServerErrorKind::Moved
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::ReadOnly
        )
    );
    retryable
        || matches!(result, Err(err)
            if err.kind() == ErrorKind::ClusterConnectionNotFound || err.is_connection_refusal())
}

/// What a failed Redis call means for the request that made it: whether
/// making it again can succeed and, if not, what is wrong. The HTTP edge
/// answers a transient fault with 503 and `Retry-After` and names every
/// other one in its problem (`ApiError::redis` in the edge's `http` module).
///
/// The classes follow the error codes Redis answers with (the first word of
/// an error reply) and the redis crate's own error kinds; [`Fault::of`]
/// decides. A code this service does not know counts as transient (a 503,
/// as for an unreachable Redis), and the log names the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Retrying can succeed: a timeout, a refused, reset or dropped
    /// connection, no connection to a cluster node yet, and the answers of a
    /// server that is busy or changing roles (`LOADING`, `BUSY`, `TRYAGAIN`,
    /// `CLUSTERDOWN`, `MASTERDOWN`, `READONLY` during a failover, `MOVED`,
    /// `ASK`, `NOREPLICAS`, `ERR max number of clients reached`).
    Transient,
    /// `OOM`: Redis reached `maxmemory` and refuses every command that may
    /// grow its data (`noeviction`, or nothing left to evict); commands that
    /// only read still run.
    OutOfMemory,
    /// `NOPERM`, or a script refused access to a key: the Redis user's ACL
    /// denies a command or key the service needs.
    PermissionDenied,
    /// `NOAUTH`, `WRONGPASS` or a failed `AUTH`/`HELLO` (in IAM mode also: no
    /// AWS credentials to sign a token with): the service cannot log in.
    AuthenticationFailed,
    /// One of the service's Lua scripts raised an error in Redis, or a reply
    /// could not be read as the service expects it.
    ScriptError,
    /// Any other answer that asking again will not change: a command Redis
    /// does not know or has disabled, a key of another type than the service
    /// writes there (`WRONGTYPE`: another application shares the key
    /// prefix), `CROSSSLOT`, `MISCONF` (Redis cannot persist and refuses
    /// writes), a database or cluster mode the server does not have.
    Misconfigured,
}

impl Fault {
    /// The class of `err`. A pipeline's failure is the first of its errors
    /// that is not transient, else transient.
    pub fn of(err: &RedisError) -> Self {
        if let Some(errors) = err.clone().into_server_errors() {
            return errors
                .iter()
                .map(|(_, e)| Self::of_reply(e.code(), e.details().unwrap_or_default()))
                .find(|fault| *fault != Self::Transient)
                .unwrap_or(Self::Transient);
        }
        match err.kind() {
            ErrorKind::Server(_) | ErrorKind::Extension => Self::of_reply(
                err.code().unwrap_or_default(),
                err.detail().unwrap_or_default(),
            ),
            ErrorKind::AuthenticationFailed => Self::AuthenticationFailed,
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Self::ScriptError,
            ErrorKind::InvalidClientConfig | ErrorKind::Client | ErrorKind::RESP3NotSupported => {
                Self::Misconfigured
            }
            // I/O: only a denied or unsupported operation is permanent
            // (the crate's `NoRetry`); refused, reset, dropped and timed out
            // are not.
            ErrorKind::Io if matches!(err.retry_method(), RetryMethod::NoRetry) => {
                Self::Misconfigured
            }
            // The cluster client reports a failure to open its first
            // connections as I/O, with the cause only in the text
            // (`Failed to create initial connections - Io: Password
            // authentication failed - AuthenticationFailed`).
            ErrorKind::Io if Self::names_authentication_failure(&err.to_string()) => {
                Self::AuthenticationFailed
            }
            _ => Self::Transient,
        }
    }

    /// The class of an error reply: its code and the text after it.
    fn of_reply(code: &str, detail: &str) -> Self {
        match code {
            "OOM" => Self::OutOfMemory,
            "NOPERM" => Self::PermissionDenied,
            "NOAUTH" | "WRONGPASS" => Self::AuthenticationFailed,
            "WRONGTYPE" | "CROSSSLOT" | "MISCONF" | "EXECABORT" | "NOSUB" | "NOTBUSY" => {
                Self::Misconfigured
            }
            "ERR" => Self::of_generic(detail),
            _ => Self::Transient,
        }
    }

    /// `ERR`, Redis' code for everything without a code of its own: the
    /// text tells. A script's error carries `script` in it (`user_script:1:
    /// …`, `… script: <sha1>, on @user_script:1.`); a command refused inside
    /// a script for lack of permission says the user executing the script
    /// can't run or access it.
    fn of_generic(detail: &str) -> Self {
        if detail.starts_with("max number of clients reached") {
            Self::Transient
        } else if detail.contains("OOM command not allowed") {
            Self::OutOfMemory
        } else if detail.contains("executing the script can't") || detail.contains("no permissions")
        {
            Self::PermissionDenied
        } else if detail.contains("invalid password") || detail.contains("invalid username") {
            Self::AuthenticationFailed
        } else if detail.contains("script") {
            Self::ScriptError
        } else {
            Self::Misconfigured
        }
    }

    /// Whether an error's text reports a refused password (the kind's name,
    /// or Redis' own error codes for it).
    fn names_authentication_failure(text: &str) -> bool {
        ["AuthenticationFailed", "WRONGPASS", "NOAUTH"]
            .iter()
            .any(|marker| text.contains(marker))
    }

    /// Whether asking again later can succeed.
    pub fn is_transient(self) -> bool {
        self == Self::Transient
    }

    /// The class's name in log fields: `transient`, `out_of_memory`,
    /// `permission_denied`, `authentication_failed`, `script_error`,
    /// `misconfigured`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::OutOfMemory => "out_of_memory",
            Self::PermissionDenied => "permission_denied",
            Self::AuthenticationFailed => "authentication_failed",
            Self::ScriptError => "script_error",
            Self::Misconfigured => "misconfigured",
        }
    }
}

/// How long a connection may go without an answer before it is checked
/// ([`Link::known_closed`]) ahead of the next command. Servers, proxies and
/// NAT gateways close connections after an idle time of whole seconds
/// (Redis' `timeout` is at least 1 s), so a connection in use at shorter
/// gaps is never checked, and a busy instance never pays for it.
const PROBE_AFTER_IDLE: Duration = Duration::from_millis(100);

/// The first wait before sending again a command that [`did_not_run`]; it
/// doubles up to [`MAX_RETRY_WAIT`]. The slot map is rebuilt in the
/// background after a redirect, typically within a millisecond on a LAN.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(5);
/// The longest wait between two sends of one command.
const MAX_RETRY_WAIT: Duration = Duration::from_millis(200);

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "Redis did not answer within REDIS_TIMEOUT_MS",
    ))
}

impl Redis {
    /// The open connection of `slot` (generation `*generation`) to send the
    /// next command on. When it has been silent for [`PROBE_AFTER_IDLE`]
    /// and is [known to be closed](Link::known_closed), it is discarded and
    /// the command goes to a fresh connection instead (`*slot` and
    /// `*generation` become the new one's): nothing was sent on the closed
    /// one, so this is the one retry that can never run a command twice.
    /// Within the caller's bound.
    async fn link(&self, slot: &mut Arc<Slot>, generation: &mut u64) -> RedisResult<Link> {
        let (link, reused) = self.renewal.open(&slot.link).await?;
        if !(reused && self.renewal.silent(slot) && link.known_closed()) {
            return Ok(link);
        }
        tracing::debug!("the Redis connection was closed while idle; connecting anew");
        self.renewal.discard(*generation);
        (*slot, *generation) = self.renewal.current();
        self.renewal.open(&slot.link).await.map(|(link, _)| link)
    }

    /// Sends one command on `link`, in cluster mode again (after a short,
    /// growing wait) as long as the answer proves it did not run; the
    /// caller's bound ends the attempts.
    async fn send(&self, link: &mut Link, cmd: &Cmd) -> RedisResult<Value> {
        match link {
            Link::Standalone(connection) => connection.send_packed_command(cmd).await,
            Link::Cluster(connection) => {
                let mut wait = FIRST_RETRY_WAIT;
                loop {
                    let result = connection.req_packed_command(cmd).await;
                    if !did_not_run(&result, server_error(&result)) {
                        return result;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY_WAIT);
                    self.round_trips.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// As [`Redis::send`] for a pipeline.
    async fn send_pipeline(
        &self,
        link: &mut Link,
        pipe: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match link {
            Link::Standalone(connection) => {
                connection.send_packed_commands(pipe, offset, count).await
            }
            Link::Cluster(connection) => {
                let mut wait = FIRST_RETRY_WAIT;
                loop {
                    let result = connection.req_packed_commands(pipe, offset, count).await;
                    let server = match &result {
                        Err(err) => match err.kind() {
                            ErrorKind::Server(kind) => Some(kind),
                            _ => None,
                        },
                        Ok(_) => None,
                    };
                    if !did_not_run(&result, server) {
                        return result;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY_WAIT);
                    self.round_trips.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        if let Some(log) = &self.log {
            log.push(&[cmd]);
        }
        let timeout = self.timeout;
        let (mut slot, mut generation) = self.renewal.current();
        Box::pin(async move {
            // The connect and response timeouts bound each step; this outer
            // bound also covers a connect followed by a slow reply, and the
            // cluster mode's sends of a command that did not run.
            let result = tokio::time::timeout(timeout * 2, async {
                let mut link = self.link(&mut slot, &mut generation).await?;
                let result = self.send(&mut link, cmd).await;
                if server_error(&result) != Some(ServerErrorKind::NoScript) {
                    return result;
                }
                // This node does not know the script: EVAL its body there
                // (same keys, so same node), which also caches it.
                let Some(eval) = eval_of(cmd) else {
                    return result;
                };
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                if let Some(log) = &self.log {
                    log.push(&[&eval]);
                }
                self.send(&mut link, &eval).await
            })
            .await
            .unwrap_or_else(|_| Err(timed_out()));
            if result.is_ok() {
                self.renewal.heard(&slot);
            }
            let read_only = server_error(&result) == Some(ServerErrorKind::ReadOnly);
            check(&self.renewal, generation, &result, read_only);
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
        if let Some(log) = &self.log {
            log.push(&cmd.cmd_iter().collect::<Vec<_>>());
        }
        let timeout = self.timeout;
        let (mut slot, mut generation) = self.renewal.current();
        Box::pin(async move {
            let result = tokio::time::timeout(timeout * 2, async {
                let mut link = self.link(&mut slot, &mut generation).await?;
                self.send_pipeline(&mut link, cmd, offset, count).await
            })
            .await
            .unwrap_or_else(|_| Err(timed_out()));
            if result.is_ok() {
                self.renewal.heard(&slot);
            }
            let read_only = match &result {
                Ok(values) => values.iter().any(is_read_only),
                Err(err) => err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly),
            };
            check(&self.renewal, generation, &result, read_only);
            result
        })
    }

    fn get_db(&self) -> i64 {
        match &self.renewal.client {
            Client::Standalone(client, _) => client.get_connection_info().redis_settings().db(),
            Client::Cluster(_) => 0,
        }
    }
}

/// The state of a Redis Cluster as one node sees it (`GET /health` in
/// cluster mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState {
    /// `cluster_state` of `CLUSTER INFO`: `ok` when every hash slot is
    /// served by a reachable master, else `fail`.
    pub state: String,
    /// Masters serving slots in `CLUSTER NODES`.
    pub masters: u64,
    /// Of these, the ones not flagged `fail` or `fail?`.
    pub masters_reachable: u64,
}

impl ClusterState {
    /// How many commands [`ClusterState::add_read`] appends.
    pub const READ_COMMANDS: usize = 2;

    /// Appends `CLUSTER INFO` and `CLUSTER NODES` to a pipeline. Keyless,
    /// they go to the node of the pipeline's keyed commands (or any node).
    pub fn add_read(pipe: &mut Pipeline) {
        pipe.cmd("CLUSTER").arg("INFO");
        pipe.cmd("CLUSTER").arg("NODES");
    }

    /// The state from the replies of [`ClusterState::add_read`]'s commands.
    ///
    /// # Errors
    /// A `Parse` error when they are not the two texts, or `CLUSTER INFO`
    /// has no `cluster_state`.
    pub fn from_replies(info: &Value, nodes: &Value) -> Result<Self, RedisError> {
        let info: String = redis::from_redis_value_ref(info)?;
        let nodes: String = redis::from_redis_value_ref(nodes)?;
        let state = info
            .lines()
            .find_map(|line| line.trim().strip_prefix("cluster_state:"))
            .ok_or_else(|| {
                RedisError::from(ParsingError::from("CLUSTER INFO without cluster_state"))
            })?
            .to_string();
        let (mut masters, mut masters_reachable) = (0, 0);
        for line in nodes.lines() {
            // <id> <addr> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(flags) = fields.get(2) else { continue };
            let flags: Vec<&str> = flags.split(',').collect();
            if flags.contains(&"master") && fields.len() > 8 {
                masters += 1;
                if !flags.iter().any(|f| *f == "fail" || *f == "fail?") {
                    masters_reachable += 1;
                }
            }
        }
        Ok(Self {
            state,
            masters,
            masters_reachable,
        })
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

    #[test]
    fn redis_mode_is_standalone_or_cluster() {
        assert_eq!(settings(&[]).unwrap().mode, RedisMode::Standalone);
        let cluster = settings(&[
            ("REDIS_MODE", "cluster"),
            ("REDIS_URL", "rediss://node.example:6379"),
        ])
        .unwrap();
        assert_eq!(cluster.mode, RedisMode::Cluster);
        assert_eq!(
            settings(&[("REDIS_MODE", "sentinel")])
                .unwrap_err()
                .variable,
            "REDIS_MODE"
        );
        for url in ["redis://127.0.0.1:7000/3", "unix:///tmp/redis.sock"] {
            let err = settings(&[("REDIS_MODE", "cluster"), ("REDIS_URL", url)]).unwrap_err();
            assert_eq!(err.variable, "REDIS_URL", "{url}");
        }
    }

    #[test]
    fn every_script_is_answered_after_noscript_by_its_body() {
        let script = script("return 1");
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(script.get_hash()).arg(1).arg("{t}:a").arg("x");
        let eval = eval_of(&evalsha).expect("a known script");
        let args: Vec<Vec<u8>> = eval
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        let expected: Vec<&[u8]> = vec![b"EVAL", b"return 1", b"1", b"{t}:a", b"x"];
        assert_eq!(args, expected);
        assert!(eval_of(&redis::cmd("GET")).is_none());
        assert_eq!(
            keys_of(&evalsha),
            Some(("EVALSHA".to_string(), vec!["{t}:a".to_string()]))
        );
    }

    /// The error of a reply as Redis sends it on the wire, e.g.
    /// `-OOM command not allowed …`.
    fn reply_error(wire: &str) -> RedisError {
        redis::parse_redis_value(format!("{wire}\r\n").as_bytes())
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    fn io(kind: std::io::ErrorKind) -> RedisError {
        std::io::Error::from(kind).into()
    }

    #[test]
    fn faults_that_retrying_can_fix_are_transient() {
        for wire in [
            "-LOADING Redis is loading the dataset in memory",
            "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "-TRYAGAIN Multiple keys request during rehashing of slot",
            "-CLUSTERDOWN The cluster is down",
            "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "-READONLY You can't write against a read only replica.",
            "-MOVED 3999 127.0.0.1:6381",
            "-NOREPLICAS Not enough good replicas to write.",
            "-ERR max number of clients reached",
            "-SOMEDAYNEW a code this service does not know",
        ] {
            assert_eq!(Fault::of(&reply_error(wire)), Fault::Transient, "{wire}");
        }
        for kind in [
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            assert_eq!(Fault::of(&io(kind)), Fault::Transient, "{kind:?}");
        }
        assert!(Fault::of(&timed_out()).is_transient());
        let no_node = RedisError::from((ErrorKind::ClusterConnectionNotFound, "no node"));
        assert!(Fault::of(&no_node).is_transient());
    }

    #[test]
    fn permanent_faults_are_named() {
        let cases = [
            (
                "-OOM command not allowed when used memory > 'maxmemory'. script: d6ec636b, on @user_script:1.",
                Fault::OutOfMemory,
            ),
            (
                "-NOPERM this user has no permissions to run the 'evalsha' command",
                Fault::PermissionDenied,
            ),
            (
                "-ERR The user executing the script can't access at least one of the keys mentioned in the command arguments script: 8a2f2218, on @user_script:1.",
                Fault::PermissionDenied,
            ),
            ("-NOAUTH Authentication required.", Fault::AuthenticationFailed),
            (
                "-WRONGPASS invalid username-password pair or user is disabled.",
                Fault::AuthenticationFailed,
            ),
            (
                "-ERR user_script:1: attempt to perform arithmetic on a nil value script: cd204846, on @user_script:1.",
                Fault::ScriptError,
            ),
            (
                "-ERR value is not an integer or out of range script: d8f2cce4, on @user_script:1.",
                Fault::ScriptError,
            ),
            (
                "-WRONGTYPE Operation against a key holding the wrong kind of value",
                Fault::Misconfigured,
            ),
            (
                "-ERR unknown command 'EVALSHA', with args beginning with: ",
                Fault::Misconfigured,
            ),
            ("-ERR This instance has cluster support disabled", Fault::Misconfigured),
            (
                "-CROSSSLOT Keys in request don't hash to the same slot",
                Fault::Misconfigured,
            ),
            (
                "-MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
                Fault::Misconfigured,
            ),
        ];
        for (wire, fault) in cases {
            assert_eq!(Fault::of(&reply_error(wire)), fault, "{wire}");
            assert!(!fault.is_transient());
        }
        let auth = RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert_eq!(Fault::of(&auth), Fault::AuthenticationFailed);
        // How the cluster client reports its first connections refused.
        let cluster_auth = RedisError::from((
            ErrorKind::Io,
            "Failed to create initial connections",
            "Io: Password authentication failed - AuthenticationFailed".to_string(),
        ));
        assert_eq!(Fault::of(&cluster_auth), Fault::AuthenticationFailed);
        let shape = RedisError::from(ParsingError::from(
            "get_or_lock.lua answered an unknown reply",
        ));
        assert_eq!(Fault::of(&shape), Fault::ScriptError);
        let denied = io(std::io::ErrorKind::PermissionDenied);
        assert_eq!(Fault::of(&denied), Fault::Misconfigured);
        let database = RedisError::from((
            ServerErrorKind::ResponseError.into(),
            "Redis server refused to switch database",
            "DB index is out of range".to_string(),
        ));
        assert_eq!(Fault::of(&database), Fault::Misconfigured);
    }

    #[tokio::test]
    async fn building_the_iam_cluster_connection_touches_no_network() {
        let settings = settings(&[
            ("REDIS_MODE", "cluster"),
            ("REDIS_AUTH_MODE", "iam"),
            ("REDIS_IAM_SERVERLESS", "true"),
            ("REDIS_URL", "redis://cache.invalid:6379"),
            ("REDIS_IAM_USER_ID", "analytics-app"),
            ("REDIS_IAM_CACHE_NAME", "analytics-cache"),
        ])
        .unwrap();
        let redis = Redis::from_settings(&settings).unwrap();
        assert_eq!(redis.mode(), RedisMode::Cluster);
        assert_eq!(redis.round_trips(), 0);
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
