//! What the Redis server behind the connection does with the service's data
//! and requests: may scripts run, is its memory full, may it evict keys, is
//! it a read-only replica.
//!
//! Every request runs Lua scripts that write, and every key the service
//! writes has a TTL (ARCHITECTURE.md, "Where state lives"), so under any
//! `maxmemory-policy` but `noeviction` **every** key is a candidate for
//! eviction once memory reaches `maxmemory`: acknowledged metric buckets,
//! idempotency records, rate-limit and breaker state alike. The policy is
//! read from `INFO` (managed Redis such as ElastiCache refuses `CONFIG`),
//! with the memory figures and the replication role, by [`info_command`]:
//! `INFO memory stats replication` (several sections in one command, Redis
//! 7.0 or later), which a Redis Cluster client sends to every master.
//!
//! Whether scripts may run is asked by [`add_probe`]: an `EVALSHA` of a
//! script that only returns 1, on a given key's hash slot. Its shebang
//! without flags (`#!lua`) makes Redis treat it as a script that may write
//! ("Script flags", Redis 7.0): it is refused with `NOPERM` when the user may
//! not run scripts, `OOM` when memory is full and nothing can be evicted, and
//! `READONLY` on a read-only replica — exactly when the service's own
//! scripts would fail — and otherwise runs and changes nothing.
//!
//! [`assess`] turns the answers into named [`Condition`]s; `GET /health`
//! reads them on every call (and answers 503 for those that
//! [block requests](Condition::blocks_requests)). [`ServerWatch`] holds one
//! instance's memory of what it reported: every other request path reads the
//! `INFO` once per instance, on its first request
//! ([`ServerWatch::on_first_use`]), and a condition is logged once when it
//! appears, not on every reading; an evicting policy is also counted in the
//! EMF metric `RedisEvictingPolicy` on every reading, and the growth of
//! `evicted_keys` between two readings in `RedisEvictedKeys`.

use std::collections::BTreeSet;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use redis::{Cmd, Pipeline, RedisError, Script, Value};
use tokio::time::Instant;

use crate::connection::{script, Redis};
use crate::observability;

/// The probe's body: returns 1, writes nothing, and is refused where a
/// script that writes would be (see the module's documentation).
pub const PROBE_BODY: &str = "#!lua\nreturn 1";

static PROBE: LazyLock<Script> = LazyLock::new(|| script(PROBE_BODY));

/// The only policy under which Redis never evicts a key.
pub const NO_EVICTION: &str = "noeviction";

/// The share of `maxmemory` from which memory counts as nearly full under
/// `noeviction` ([`Condition::MemoryNearlyFull`]). A Redis at rest a few
/// tens of KiB below its limit already refuses a write whose own buffers
/// push it over.
pub const NEARLY_FULL_PERCENT: u64 = 90;

/// How long an instance waits before reading the policy again after a
/// reading that failed for want of an answer (Redis down, a timeout).
const RETRY_FIRST_USE_AFTER: Duration = Duration::from_secs(30);

/// `INFO memory stats replication`: `maxmemory_policy`, `maxmemory`,
/// `used_memory`, `mem_not_counted_for_evict`, `evicted_keys` and `role`,
/// in one command. In cluster mode, sent alone, it goes to every master
/// (the redis crate routes `INFO` to all primaries and answers a map of
/// address → text); inside a pipeline, to the pipeline's node.
pub fn info_command() -> Cmd {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("memory").arg("stats").arg("replication");
    cmd
}

/// Appends [`info_command`] to a pipeline.
pub fn add_info(pipe: &mut Pipeline) {
    pipe.add_command(info_command());
}

/// Appends the probe script's `EVALSHA` on `key`'s hash slot to a pipeline.
/// Its reply goes to [`Probe::from_reply`]; a `NOSCRIPT` answer (the node
/// has not cached it yet) is followed by [`probe_eval`].
pub fn add_probe(pipe: &mut Pipeline, key: &str) {
    pipe.cmd("EVALSHA").arg(PROBE.get_hash()).arg(1).arg(key);
}

/// The probe as `EVAL` of its body on `key`'s slot, after `NOSCRIPT` (the
/// node then caches it): one more round trip, once per node and restart.
pub async fn probe_eval(redis: &Redis, key: &str) -> Probe {
    let reply = redis::cmd("EVAL")
        .arg(PROBE_BODY)
        .arg(1)
        .arg(key)
        .query_async::<Value>(&mut redis.clone())
        .await;
    match reply {
        Ok(value) => Probe::from_reply(&value),
        Err(err) => Probe::from_error(&err),
    }
}

/// The answer to the probe script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It ran: scripts may run and write.
    Ran,
    /// Redis refused it with this error code (`NOPERM`, `OOM`, `READONLY`,
    /// `NOSCRIPT`, `BUSY`, …).
    Refused(String),
    /// No answer (the connection failed or timed out).
    NoAnswer,
}

impl Probe {
    /// The probe's outcome from its reply in a pipeline sent with
    /// `ignore_errors` (an error answer is a `Value::ServerError` there).
    pub fn from_reply(reply: &Value) -> Self {
        match reply {
            Value::ServerError(err) => Self::Refused(err.code().to_string()),
            _ => Self::Ran,
        }
    }

    /// The probe's outcome from an error: a server error's code, or no
    /// answer at all.
    pub fn from_error(err: &RedisError) -> Self {
        match err.code() {
            Some(code) if !err.is_io_error() && !err.is_timeout() => {
                Self::Refused(code.to_string())
            }
            _ => Self::NoAnswer,
        }
    }

    /// Whether the node did not know the script yet (`NOSCRIPT`).
    pub fn is_noscript(&self) -> bool {
        matches!(self, Self::Refused(code) if code == "NOSCRIPT")
    }
}

/// The fields of one node's `INFO memory stats replication` that matter
/// here; `None` for a field the reply does not hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `used_memory`: bytes allocated by Redis.
    pub used_memory: Option<u64>,
    /// `mem_not_counted_for_evict`: replication and AOF buffers, which
    /// Redis leaves out when it compares its memory with `maxmemory`.
    pub not_counted_for_evict: u64,
    /// `maxmemory` in bytes; 0 is no limit.
    pub maxmemory: Option<u64>,
    /// `maxmemory_policy`, e.g. `noeviction` or `volatile-lru`.
    pub policy: Option<String>,
    /// `evicted_keys`: keys evicted since the server started (or
    /// `CONFIG RESETSTAT`).
    pub evicted_keys: Option<u64>,
    /// `role`: `master` or `slave`.
    pub role: Option<String>,
}

impl NodeInfo {
    /// Reads the fields from `INFO` text (`field:value` lines; unknown
    /// fields and section headers are skipped).
    pub fn parse(text: &str) -> Self {
        let mut info = Self::default();
        for line in text.lines() {
            let Some((field, value)) = line.trim().split_once(':') else {
                continue;
            };
            let number = || value.parse::<u64>().ok();
            match field {
                "used_memory" => info.used_memory = number(),
                "mem_not_counted_for_evict" => info.not_counted_for_evict = number().unwrap_or(0),
                "maxmemory" => info.maxmemory = number(),
                "maxmemory_policy" => info.policy = Some(value.to_string()),
                "evicted_keys" => info.evicted_keys = number(),
                "role" => info.role = Some(value.to_string()),
                _ => {}
            }
        }
        info
    }

    /// The memory Redis compares with `maxmemory` before a write:
    /// `used_memory` without the buffers it does not count.
    pub fn used_for_eviction(&self) -> Option<u64> {
        self.used_memory
            .map(|used| used.saturating_sub(self.not_counted_for_evict))
    }

    /// `maxmemory` is set and the memory Redis counts is above it: a write
    /// that cannot evict is refused with `OOM`.
    pub fn is_full(&self) -> bool {
        match (self.used_for_eviction(), self.maxmemory) {
            (Some(used), Some(max)) => max > 0 && used > max,
            _ => false,
        }
    }

    /// Its policy may evict keys of this service (any policy but
    /// `noeviction`; an unknown name counts as evicting).
    pub fn evicts(&self) -> bool {
        self.policy.as_deref().is_some_and(|p| p != NO_EVICTION)
    }

    /// It replicates another node: its data is read-only.
    pub fn is_replica(&self) -> bool {
        self.role.as_deref().is_some_and(|r| r != "master")
    }
}

/// The nodes' `INFO` from the reply to [`info_command`]: one text (one
/// node, or inside a pipeline), or a map of node address → text (cluster
/// mode, every master).
///
/// # Errors
/// A description of what was answered instead: an error code (a node's,
/// prefixed with its address), or an unexpected reply.
pub fn nodes_from_reply(reply: &Value) -> Result<Vec<(Option<String>, NodeInfo)>, String> {
    fn text(value: &Value) -> Result<String, String> {
        match value {
            Value::BulkString(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
            Value::VerbatimString { text, .. } | Value::SimpleString(text) => Ok(text.clone()),
            Value::ServerError(err) => Err(err.code().to_string()),
            other => Err(format!("an unexpected INFO reply {other:?}")),
        }
    }
    match reply {
        Value::Map(nodes) => nodes
            .iter()
            .map(|(address, value)| {
                let address = text(address)?;
                let info = text(value).map_err(|e| format!("{e} from the master at {address}"))?;
                Ok((Some(address), NodeInfo::parse(&info)))
            })
            .collect(),
        single => Ok(vec![(None, NodeInfo::parse(&text(single)?))]),
    }
}

/// Sends [`info_command`] (in cluster mode, to every master) and reads the
/// nodes' fields.
///
/// # Errors
/// The command's [`RedisError`], or a `Parse` error holding
/// [`nodes_from_reply`]'s description.
pub async fn read_info(redis: &Redis) -> Result<Vec<(Option<String>, NodeInfo)>, RedisError> {
    let reply: Value = info_command().query_async(&mut redis.clone()).await?;
    nodes_from_reply(&reply).map_err(|e| RedisError::from(redis::ParsingError::from(e)))
}

/// A reason why requests cannot succeed, or why acknowledged data is at
/// risk, named in `/health`'s body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The probe script was refused for another reason than memory or a
    /// replica: the user may not run scripts (`NOPERM`), or Redis is busy
    /// with a slow script (`BUSY`), or another error code.
    ScriptsRefused {
        /// The error code.
        code: String,
    },
    /// Memory is full: the probe was answered `OOM`, or `noeviction` with
    /// the counted memory above `maxmemory`. Writes are refused.
    OutOfMemory {
        /// Bytes Redis counts against `maxmemory`, when known.
        used: Option<u64>,
        /// `maxmemory` in bytes, when known.
        maxmemory: Option<u64>,
    },
    /// `REDIS_URL` reaches a replica (`role:slave`, or the probe answered
    /// `READONLY`): writes are refused.
    ReadOnlyReplica,
    /// Under `noeviction`, the counted memory is at least
    /// [`NEARLY_FULL_PERCENT`] % of `maxmemory`: writes still succeed, but
    /// will be refused once it is full. (Under an evicting policy a full
    /// memory is the steady state, and [`Condition::EvictingPolicy`] says
    /// what it costs.)
    MemoryNearlyFull {
        /// Bytes Redis counts against `maxmemory`.
        used: u64,
        /// `maxmemory` in bytes.
        maxmemory: u64,
    },
    /// A `maxmemory-policy` that may evict keys, on one or more of the nodes
    /// read.
    EvictingPolicy {
        /// The evicting policies found, e.g. `["volatile-lru"]`.
        policies: Vec<String>,
        /// The largest `maxmemory` among those nodes (0: no limit yet).
        maxmemory: u64,
    },
    /// The policy could not be read, so whether Redis may evict is unknown.
    PolicyUnknown {
        /// Why: the error code, or a field missing from `INFO`.
        reason: String,
    },
}

impl Condition {
    /// Its name in `/health`'s body: `scripts_refused`, `out_of_memory`,
    /// `read_only_replica`, `memory_nearly_full`, `evicting_policy`,
    /// `eviction_policy_unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ScriptsRefused { .. } => "scripts_refused",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::ReadOnlyReplica => "read_only_replica",
            Self::MemoryNearlyFull { .. } => "memory_nearly_full",
            Self::EvictingPolicy { .. } => "evicting_policy",
            Self::PolicyUnknown { .. } => "eviction_policy_unknown",
        }
    }

    /// Whether requests cannot succeed while it holds (`/health` answers
    /// 503); the others degrade (200).
    pub fn blocks_requests(&self) -> bool {
        matches!(
            self,
            Self::ScriptsRefused { .. } | Self::OutOfMemory { .. } | Self::ReadOnlyReplica
        )
    }

    /// Whether retrying soon may help: a replica answers until a failover
    /// has moved the endpoint, a busy script ends. Missing permissions and
    /// full memory need an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::ReadOnlyReplica => true,
            Self::ScriptsRefused { code } => code == "BUSY" || code == "LOADING",
            _ => false,
        }
    }

    /// What holds and what to do, for people. Names no node and no
    /// credential (the body of `/health` is public).
    pub fn detail(&self) -> String {
        match self {
            Self::ScriptsRefused { code } if code == "NOPERM" => "the Redis user may not run \
                scripts (NOPERM), and every request runs Lua scripts: grant it +@scripting"
                .to_string(),
            Self::ScriptsRefused { code } if code == "BUSY" => "Redis is busy running a slow \
                script (BUSY) and refuses other scripts until it ends"
                .to_string(),
            Self::ScriptsRefused { code } if code == "ERR" => "Redis refused a script call \
                (ERR), and every request runs Lua scripts; script flags (#!lua) need Redis 7.0 \
                or later"
                .to_string(),
            Self::ScriptsRefused { code } => {
                format!("Redis refused a script call ({code}); every request runs Lua scripts")
            }
            Self::OutOfMemory {
                used: Some(used),
                maxmemory: Some(max),
            } if *max > 0 => format!(
                "Redis memory is full ({used} of maxmemory {max} bytes) and nothing may be \
                 evicted: writes are refused (OOM) until keys expire or memory is added"
            ),
            Self::OutOfMemory { .. } => "Redis answered OOM: memory is full and nothing may be \
                evicted, so writes are refused until keys expire or memory is added"
                .to_string(),
            Self::ReadOnlyReplica => "REDIS_URL reaches a read-only replica, which refuses \
                writes: point it at the primary (or configuration) endpoint"
                .to_string(),
            Self::MemoryNearlyFull { used, maxmemory } => format!(
                "Redis memory is {}% of maxmemory ({used} of {maxmemory} bytes) under \
                 noeviction: writes will be refused (OOM) once it is full; add memory, or \
                 let fewer keys live (METRIC_RETENTION_DAYS, IDEMPOTENCY_TTL_SECONDS)",
                used * 100 / maxmemory.max(&1)
            ),
            Self::EvictingPolicy {
                policies,
                maxmemory,
            } => {
                let limit = if *maxmemory == 0 {
                    " (maxmemory is 0 for now, so nothing is evicted until a limit is set)"
                        .to_string()
                } else {
                    format!(" (maxmemory {maxmemory} bytes)")
                };
                format!(
                    "maxmemory-policy is {}: every key of this service has a TTL, so when \
                     memory is full Redis may evict acknowledged metrics, idempotency records \
                     and rate-limit and breaker state{limit}; set noeviction",
                    policies.join(", ")
                )
            }
            Self::PolicyUnknown { reason } => format!(
                "the eviction policy could not be read ({reason}), so whether Redis may evict \
                 acknowledged data is unknown"
            ),
        }
    }
}

/// The memory of the nodes read, as `/health` shows it: the fullest node's
/// figures (in cluster mode, the master whose memory is closest to its
/// `maxmemory`), evictions summed over all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    /// Bytes Redis counts against `maxmemory` (`used_memory` without
    /// replication and AOF buffers).
    pub used_bytes: u64,
    /// `maxmemory` in bytes; 0 is no limit.
    pub maxmemory_bytes: u64,
    /// `maxmemory_policy`: an evicting one if any node has one.
    pub policy: Option<String>,
    /// `evicted_keys`, summed over the nodes read.
    pub evicted_keys: u64,
}

/// What [`assess`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assessment {
    /// Every condition that holds, requests-blocking ones first.
    pub conditions: Vec<Condition>,
    /// The nodes' memory, when `INFO` answered.
    pub memory: Option<Memory>,
}

impl Assessment {
    /// Whether some condition blocks requests.
    pub fn blocks_requests(&self) -> bool {
        self.conditions.iter().any(Condition::blocks_requests)
    }
}

/// Names every condition that holds, from the probe's answer (if it was
/// sent) and the nodes' `INFO` (or why it could not be read).
pub fn assess(probe: Option<&Probe>, nodes: Result<&[NodeInfo], &str>) -> Assessment {
    let mut conditions = Vec::new();
    match probe {
        Some(Probe::Refused(code)) if code == "OOM" => conditions.push(Condition::OutOfMemory {
            used: None,
            maxmemory: None,
        }),
        Some(Probe::Refused(code)) if code == "READONLY" => {
            conditions.push(Condition::ReadOnlyReplica);
        }
        Some(Probe::Refused(code)) => {
            conditions.push(Condition::ScriptsRefused { code: code.clone() })
        }
        Some(Probe::Ran | Probe::NoAnswer) | None => {}
    }
    let nodes = match nodes {
        Ok(nodes) if !nodes.is_empty() => nodes,
        Ok(_) => {
            conditions.push(Condition::PolicyUnknown {
                reason: "no node answered INFO".into(),
            });
            return Assessment {
                conditions,
                memory: None,
            };
        }
        Err(reason) => {
            conditions.push(Condition::PolicyUnknown {
                reason: format!("INFO failed: {reason}"),
            });
            return Assessment {
                conditions,
                memory: None,
            };
        }
    };
    if nodes.iter().any(NodeInfo::is_replica) && !conditions.contains(&Condition::ReadOnlyReplica) {
        conditions.push(Condition::ReadOnlyReplica);
    }
    // Full under noeviction: every write is refused. (Full under an
    // evicting policy evicts instead; the probe's OOM says when nothing is
    // left to evict.)
    if let Some(full) = nodes.iter().find(|n| n.is_full() && !n.evicts()) {
        let condition = Condition::OutOfMemory {
            used: full.used_for_eviction(),
            maxmemory: full.maxmemory,
        };
        match conditions
            .iter_mut()
            .find(|c| matches!(c, Condition::OutOfMemory { .. }))
        {
            Some(existing) => *existing = condition,
            None => conditions.push(condition),
        }
    } else if !conditions
        .iter()
        .any(|c| matches!(c, Condition::OutOfMemory { .. }))
    {
        let nearly_full = nodes
            .iter()
            .find_map(|n| match (n.used_for_eviction(), n.maxmemory) {
                (Some(used), Some(max))
                    if max > 0 && !n.evicts() && used * 100 >= max * NEARLY_FULL_PERCENT =>
                {
                    Some(Condition::MemoryNearlyFull {
                        used,
                        maxmemory: max,
                    })
                }
                _ => None,
            });
        conditions.extend(nearly_full);
    }
    let evicting: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.evicts())
        .filter_map(|n| n.policy.as_deref())
        .collect();
    if !evicting.is_empty() {
        conditions.push(Condition::EvictingPolicy {
            policies: evicting.iter().map(|p| p.to_string()).collect(),
            maxmemory: nodes
                .iter()
                .filter(|n| n.evicts())
                .filter_map(|n| n.maxmemory)
                .max()
                .unwrap_or(0),
        });
    }
    if nodes.iter().any(|n| n.policy.is_none()) {
        conditions.push(Condition::PolicyUnknown {
            reason: "INFO holds no maxmemory_policy".into(),
        });
    }
    conditions.sort_by_key(|c| !c.blocks_requests());
    Assessment {
        conditions,
        memory: memory_of(nodes),
    }
}

/// The fullest node's figures and the summed evictions (see [`Memory`]).
fn memory_of(nodes: &[NodeInfo]) -> Option<Memory> {
    let fill = |n: &NodeInfo| match (n.used_for_eviction(), n.maxmemory) {
        (Some(used), Some(max)) if max > 0 => used as f64 / max as f64,
        _ => 0.0,
    };
    let fullest = nodes
        .iter()
        .filter(|n| n.used_memory.is_some())
        .max_by(|a, b| {
            fill(a)
                .total_cmp(&fill(b))
                .then(a.used_memory.cmp(&b.used_memory))
        })?;
    Some(Memory {
        used_bytes: fullest.used_for_eviction().unwrap_or(0),
        maxmemory_bytes: fullest.maxmemory.unwrap_or(0),
        policy: nodes
            .iter()
            .find(|n| n.evicts())
            .or(Some(fullest))
            .and_then(|n| n.policy.clone()),
        evicted_keys: nodes.iter().filter_map(|n| n.evicted_keys).sum(),
    })
}

/// One instance's memory of what it read and reported (see the module's
/// documentation). Cheap; one per [`AppState`](crate::state::AppState).
#[derive(Debug)]
pub struct ServerWatch {
    first_use: Mutex<FirstUse>,
    reported: Mutex<Reported>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstUse {
    /// Read at the next request from this instant on.
    Due(Instant),
    /// A request is reading it.
    Running,
    /// Read (or refused for good): never again on the request paths.
    Done,
}

#[derive(Debug, Default)]
struct Reported {
    /// The names of the conditions logged at the last reading.
    conditions: BTreeSet<&'static str>,
    /// `evicted_keys` summed over the nodes at the last reading.
    evicted_keys: Option<u64>,
}

impl Default for ServerWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerWatch {
    /// Nothing read yet; the first request reads.
    pub fn new() -> Self {
        Self {
            first_use: Mutex::new(FirstUse::Due(Instant::now())),
            reported: Mutex::new(Reported::default()),
        }
    }

    /// Once per instance, on its first request: reads `INFO` (one round
    /// trip; in cluster mode every master) and reports what it finds
    /// ([`ServerWatch::observe`]). Does nothing on later requests, nor while
    /// another request of the instance is reading. A reading that got no
    /// answer is tried again by a request 30 s later;
    /// an error answer (e.g. `NOPERM` for `INFO`) is reported as
    /// [`Condition::PolicyUnknown`] and not tried again.
    ///
    /// Once per instance rather than per connection: a policy changes only
    /// by an operator's hand, not with a reconnection, and `/health` reads
    /// it on every call; the cluster client's connections to each node are
    /// not visible to this handle anyway.
    pub async fn on_first_use(&self, redis: &Redis) {
        {
            let mut first_use = self
                .first_use
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match *first_use {
                FirstUse::Due(at) if Instant::now() >= at => *first_use = FirstUse::Running,
                _ => return,
            }
        }
        // Reset to "due now" if this future is dropped mid-way (the
        // request's deadline passed).
        struct Pending<'a>(&'a Mutex<FirstUse>, Option<FirstUse>);
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                let next = self.1.unwrap_or(FirstUse::Due(Instant::now()));
                *self.0.lock().unwrap_or_else(PoisonError::into_inner) = next;
            }
        }
        let mut pending = Pending(&self.first_use, None);
        match read_info(redis).await {
            Ok(nodes) => {
                let infos: Vec<NodeInfo> = nodes.into_iter().map(|(_, info)| info).collect();
                self.observe(&assess(None, Ok(&infos)));
                pending.1 = Some(FirstUse::Done);
            }
            Err(err) if err.code().is_some() && !err.is_io_error() && !err.is_timeout() => {
                let code = err.code().unwrap_or_default().to_string();
                self.observe(&assess(None, Err(&code)));
                pending.1 = Some(FirstUse::Done);
            }
            Err(err) if err.kind() == redis::ErrorKind::Parse => {
                self.observe(&assess(None, Err(&err.to_string())));
                pending.1 = Some(FirstUse::Done);
            }
            Err(_) => {
                pending.1 = Some(FirstUse::Due(Instant::now() + RETRY_FIRST_USE_AFTER));
            }
        }
    }

    /// Reports one reading: logs each condition once when it appears (a
    /// warning; it is logged again only after a reading without it), counts
    /// `RedisEvictingPolicy` when the policy evicts, and counts in
    /// `RedisEvictedKeys` how many keys were evicted since this instance's
    /// previous reading. Also ends the first-use reading: an instance that
    /// reports here needs none.
    pub fn observe(&self, assessment: &Assessment) {
        *self
            .first_use
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = FirstUse::Done;
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let mut now = BTreeSet::new();
        for condition in &assessment.conditions {
            now.insert(condition.name());
            if let Condition::EvictingPolicy { policies, .. } = condition {
                observability::redis_evicting_policy();
                if !reported.conditions.contains(condition.name()) {
                    tracing::warn!(
                        condition = condition.name(),
                        maxmemory_policy = %policies.join(","),
                        "Redis may evict acknowledged data: {}",
                        condition.detail()
                    );
                }
            } else if !reported.conditions.contains(condition.name()) {
                tracing::warn!(condition = condition.name(), "{}", condition.detail());
            }
        }
        if now.is_empty() && !reported.conditions.is_empty() {
            tracing::info!("Redis conditions cleared");
        }
        reported.conditions = now;
        if let Some(memory) = &assessment.memory {
            if let Some(before) = reported.evicted_keys {
                // A restarted or replaced node starts again from 0.
                let grown = memory.evicted_keys.saturating_sub(before);
                if grown > 0 {
                    observability::redis_evicted_keys(grown);
                    tracing::warn!(evicted_keys = grown, "Redis evicted keys");
                }
            }
            reported.evicted_keys = Some(memory.evicted_keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Memory\r\nused_memory:2112824\r\nused_memory_human:2.01M\r\n\
        maxmemory:2097152\r\nmaxmemory_policy:noeviction\r\nmem_not_counted_for_evict:0\r\n\
        # Stats\r\nevicted_keys:7\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n";

    fn node(policy: &str, used: u64, max: u64) -> NodeInfo {
        NodeInfo {
            used_memory: Some(used),
            not_counted_for_evict: 0,
            maxmemory: Some(max),
            policy: Some(policy.into()),
            evicted_keys: Some(0),
            role: Some("master".into()),
        }
    }

    #[test]
    fn info_fields_are_read_from_the_sections() {
        let info = NodeInfo::parse(INFO);
        assert_eq!(info.used_memory, Some(2_112_824));
        assert_eq!(info.maxmemory, Some(2_097_152));
        assert_eq!(info.policy.as_deref(), Some("noeviction"));
        assert_eq!(info.evicted_keys, Some(7));
        assert_eq!(info.role.as_deref(), Some("master"));
        assert!(info.is_full());
        assert!(!info.evicts());
    }

    #[test]
    fn a_cluster_reply_names_every_master() {
        let reply = Value::Map(vec![
            (
                Value::BulkString(b"127.0.0.1:7000".to_vec()),
                Value::BulkString(INFO.as_bytes().to_vec()),
            ),
            (
                Value::BulkString(b"127.0.0.1:7001".to_vec()),
                Value::BulkString(INFO.replace("noeviction", "allkeys-lru").into_bytes()),
            ),
        ]);
        let nodes = nodes_from_reply(&reply).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].0.as_deref(), Some("127.0.0.1:7001"));
        assert!(nodes[1].1.evicts());
    }

    #[test]
    fn noeviction_below_the_limit_is_fine() {
        let a = assess(Some(&Probe::Ran), Ok(&[node("noeviction", 10, 100)]));
        assert!(a.conditions.is_empty(), "{a:?}");
        assert_eq!(a.memory.unwrap().maxmemory_bytes, 100);
    }

    #[test]
    fn each_condition_is_named_and_classed() {
        let full = assess(Some(&Probe::Ran), Ok(&[node("noeviction", 101, 100)]));
        assert_eq!(full.conditions[0].name(), "out_of_memory");
        assert!(full.blocks_requests());

        let oom = assess(
            Some(&Probe::Refused("OOM".into())),
            Ok(&[node("noeviction", 99, 100)]),
        );
        assert_eq!(oom.conditions.len(), 1, "{oom:?}");
        assert_eq!(oom.conditions[0].name(), "out_of_memory");

        let noperm = assess(
            Some(&Probe::Refused("NOPERM".into())),
            Ok(&[node("noeviction", 1, 0)]),
        );
        assert_eq!(noperm.conditions[0].name(), "scripts_refused");
        assert!(noperm.conditions[0].detail().contains("+@scripting"));

        let mut replica = node("noeviction", 1, 0);
        replica.role = Some("slave".into());
        let ro = assess(Some(&Probe::Refused("READONLY".into())), Ok(&[replica]));
        assert_eq!(ro.conditions, vec![Condition::ReadOnlyReplica]);

        let lru = assess(Some(&Probe::Ran), Ok(&[node("volatile-lru", 101, 100)]));
        assert_eq!(lru.conditions[0].name(), "evicting_policy");
        assert!(!lru.blocks_requests(), "an evicting policy degrades");
        assert_eq!(lru.memory.unwrap().policy.as_deref(), Some("volatile-lru"));

        let nearly = assess(Some(&Probe::Ran), Ok(&[node("noeviction", 95, 100)]));
        assert_eq!(nearly.conditions[0].name(), "memory_nearly_full");
        assert!(!nearly.blocks_requests());
        let cache_like = assess(Some(&Probe::Ran), Ok(&[node("allkeys-lru", 99, 100)]));
        assert_eq!(cache_like.conditions.len(), 1, "{cache_like:?}");

        let unknown = assess(None, Err("NOPERM"));
        assert_eq!(unknown.conditions[0].name(), "eviction_policy_unknown");
        assert!(!unknown.blocks_requests());
    }

    #[test]
    fn in_a_cluster_any_evicting_master_counts() {
        let a = assess(
            Some(&Probe::Ran),
            Ok(&[node("noeviction", 50, 100), node("allkeys-lru", 10, 200)]),
        );
        assert_eq!(
            a.conditions,
            vec![Condition::EvictingPolicy {
                policies: vec!["allkeys-lru".into()],
                maxmemory: 200
            }]
        );
        let memory = a.memory.unwrap();
        assert_eq!((memory.used_bytes, memory.maxmemory_bytes), (50, 100));
        assert_eq!(memory.policy.as_deref(), Some("allkeys-lru"));
    }
}
