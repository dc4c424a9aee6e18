//! `bench cluster`: figures 1 and 2 on a Redis Cluster, beside the single
//! node. `make bench` runs it after `bench measure`, against a private
//! cluster of 3 masters and 3 replicas it starts on free ports of 127.0.0.1,
//! and it adds its samples to the same `results.json` (`Results::cluster`).
//!
//! - **Figure 1**: the round trips of figure 1's paths, and of the paths
//!   whose cost differs on a cluster (an `Idempotency-Key`, a batch whose
//!   metric types hash to several slots), counted on the handler state's
//!   connection with `REDIS_MODE=standalone` on the single node and with
//!   `REDIS_MODE=cluster` on the cluster. Every master's script cache is
//!   warmed first (each node has its own: the first call of a script on a
//!   node costs one more round trip, `NOSCRIPT` then `EVAL`).
//! - **Figure 2**: the *instances* case of figure 2 (one `AppState` per
//!   worker, fresh clients, one metric of one type each) with
//!   `REDIS_MODE=cluster`, at the same concurrencies and request counts as
//!   on the single node. A call lands on the master owning its keys' slot,
//!   so Redis' CPU per ingest is `INFO cpu` and `INFO commandstats` added
//!   over the masters, read right before and after the timed requests.
//!   Replicas are not counted: their cost is the replication stream, which
//!   the masters' CPU includes on the sending side.
//!
//! ```text
//! bench cluster --port <single node port> --cluster-port <any node's port>
//!               --results target/bench/results.json [--client-threads N]
//! ```

use std::path::PathBuf;

use redis::aio::MultiplexedConnection;
use redis::cluster_routing::Slot;
use serde_json::json;
use shared::config::Config;
use shared::handlers::ingest_metric;
use shared::keys::Keys;
use shared::metric::format_timestamp;
use shared::AppState;
use synthetic_events::round_trips::{count, hot_paths};

use crate::events::{self, http_v2, next_client_ip};
use crate::redis_side::ServerStats;
use crate::results::{ClusterThroughputRow, Results, RoundTrips};
use crate::throughput::{self, Counters};
use crate::{log, Options};

/// Metric types of the batches that span several slots.
pub const SLOTS_PER_BATCH: usize = 3;

/// The paths counted besides [`hot_paths`], with the round trips
/// `tests/tests/cluster.rs` holds on a cluster (the limiter, the key's
/// claim, a check and a write per slot).
pub const EXTRA_PATHS: [(&str, u64); 3] = [
    ("ingest, accepted, with `Idempotency-Key` (one metric)", 3),
    ("ingest, accepted (batch over 3 slots)", 1 + 2 * 3),
    (
        "ingest, accepted, with `Idempotency-Key` (batch over 3 slots)",
        2 + 2 * 3,
    ),
];

/// Requests from fresh clients (with and without an `Idempotency-Key`), and
/// summaries of fresh types, sent before
/// counting: each lands on the master of a random slot, so that every
/// master has every script cached (a master missed by all of them: 3 × (2/3)^30,
/// about 1 in 60,000).
const WARM_UPS: usize = 30;

/// The masters of a cluster, one connection each: figure 2's counters are
/// theirs added together.
pub struct Masters {
    conns: Vec<MultiplexedConnection>,
}

impl Masters {
    /// The masters serving slots, as `CLUSTER NODES` on 127.0.0.1:`port`
    /// lists them (not failing, and `role:master` in their own `INFO
    /// replication`), and how many replicas the cluster has.
    ///
    /// # Errors
    /// No node on the port, or a master that cannot be reached.
    pub async fn discover(port: u16) -> Result<(Self, usize), String> {
        let mut seed = connect(port).await?;
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut seed)
            .await
            .map_err(|e| format!("CLUSTER NODES on 127.0.0.1:{port}: {e}"))?;
        let (masters, replicas) = parse_nodes(&nodes);
        let mut conns = Vec::new();
        for master in &masters {
            let mut conn = connect(*master).await?;
            let role: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if !role.lines().any(|l| l.trim() == "role:master") {
                return Err(format!(
                    "127.0.0.1:{master} serves slots in CLUSTER NODES but is not a master"
                ));
            }
            conns.push(conn);
        }
        if conns.is_empty() {
            return Err(format!("no master in CLUSTER NODES of 127.0.0.1:{port}"));
        }
        Ok((Self { conns }, replicas))
    }

    /// Deletes the keys matching `pattern` on every master (one `UNLINK` per
    /// key: a node refuses one command over keys of several slots) and waits
    /// until each has freed them; returns how many.
    ///
    /// # Errors
    /// The connection's error, as text.
    pub async fn clear(&mut self, pattern: &str) -> Result<u64, String> {
        let mut deleted = 0;
        for conn in &mut self.conns {
            let keys = crate::data_size::matching_keys(conn, pattern).await?;
            for chunk in keys.chunks(1_000) {
                let mut pipe = redis::pipe();
                for key in chunk {
                    pipe.cmd("UNLINK").arg(key).ignore();
                }
                let () = pipe.query_async(conn).await.map_err(|e| e.to_string())?;
            }
            crate::data_size::settle(conn).await?;
            deleted += keys.len() as u64;
        }
        Ok(deleted)
    }
}

impl Counters for Masters {
    async fn read(&mut self) -> Result<ServerStats, String> {
        let mut total = ServerStats::default();
        for conn in &mut self.conns {
            total = total.plus(&ServerStats::read(conn).await?);
        }
        Ok(total)
    }
}

/// The client ports of the masters serving slots (flags `master`, neither
/// `fail` nor `fail?`), and the number of replicas, from `CLUSTER NODES`:
/// `<id> <ip>:<port>@<bus port>[,<hostname>] <flags> <master id> …`.
fn parse_nodes(text: &str) -> (Vec<u16>, usize) {
    let mut masters = Vec::new();
    let mut replicas = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if flags.iter().any(|f| *f == "fail" || *f == "fail?") {
            continue;
        }
        let port = address
            .split(['@', ','])
            .next()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok());
        // A node that has just been made a replica can still look like a
        // master without slots in another node's view for a moment.
        let serves_slots = fields.len() > 8;
        match port {
            Some(port) if flags.contains(&"master") && serves_slots => masters.push(port),
            Some(_) if flags.contains(&"slave") => replicas += 1,
            _ => {}
        }
    }
    masters.sort_unstable();
    (masters, replicas)
}

async fn connect(port: u16) -> Result<MultiplexedConnection, String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("no Redis at 127.0.0.1:{port}: {e}"))
}

/// `bench cluster`: measures figures 1 and 2 on the cluster (and figure 1's
/// extra paths on the single node) as many times as `results.json` says
/// figure 2 was, and writes them into it.
///
/// # Errors
/// A missing option, no `results.json`, a Redis or handler failure.
pub async fn measure(opts: &Options) -> Result<(), String> {
    let port = |name: &str| -> Result<u16, String> {
        opts.get(name)
            .ok_or_else(|| format!("--{name} is required"))?
            .parse()
            .map_err(|_| format!("--{name}: not a port"))
    };
    let (single_port, cluster_port) = (port("port")?, port("cluster-port")?);
    let path = PathBuf::from(opts.get("results").ok_or("--results is required")?);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut results: Results = serde_json::from_str(&text).map_err(|e| e.to_string())?;

    let prefix = format!(
        "bench-cluster-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let single_url = format!("redis://127.0.0.1:{single_port}/0");
    let cluster_url = format!("redis://127.0.0.1:{cluster_port}");
    let config = |url: &str, mode: &str, limit: &str| -> Result<Config, String> {
        Config::from_pairs(&[
            ("REDIS_URL", url),
            ("REDIS_MODE", mode),
            ("REDIS_KEY_PREFIX", prefix.as_str()),
            ("RATE_LIMIT_REQUESTS", limit),
            ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
            ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
        ])
        .map_err(|e| e.to_string())
    };
    let (mut masters, replicas) = Masters::discover(cluster_port).await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connect(cluster_port).await?)
        .await
        .map_err(|e| e.to_string())?;
    let c = &mut results.cluster;
    *c = Default::default();
    c.masters = masters.conns.len();
    c.replicas = replicas;
    c.prefix = prefix.clone();
    c.redis_version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    c.throughput = results
        .throughput
        .requests
        .iter()
        .map(|&(concurrency, requests)| ClusterThroughputRow {
            concurrency,
            requests,
            ..ClusterThroughputRow::default()
        })
        .collect();

    let runs = results.runs.max(1);
    let ingest_config = config(&cluster_url, "cluster", "1000000")?;
    let rate_limit_keys = format!("{prefix}:rl:*");
    for run in 1..=runs {
        log(&format!(
            "run {run}/{runs}: round trips, single node and cluster"
        ));
        round_trips(
            config(&single_url, "standalone", "3")?,
            &mut c.round_trips_single,
            false,
        )
        .await?;
        round_trips(
            config(&cluster_url, "cluster", "3")?,
            &mut c.round_trips_cluster,
            true,
        )
        .await?;
        for row in &mut c.throughput {
            log(&format!(
                "run {run}/{runs}: ingest on the cluster at concurrency {}",
                row.concurrency
            ));
            masters.clear(&rate_limit_keys).await?;
            let ours = throughput::measure(
                &ingest_config,
                "bench_ingest",
                row.concurrency,
                row.requests,
                false,
                &mut masters,
            )
            .await?;
            let per_request = |v: f64| v / ours.requests as f64;
            row.instances_rps.push(ours.rps());
            row.p50_us.push(ours.latency_us(0.5));
            row.p99_us.push(ours.latency_us(0.99));
            row.server_cpu_us.push(per_request(ours.redis.cpu_s * 1e6));
            row.server_script_us
                .push(per_request(ours.redis.evalsha_us as f64));
            row.evalsha_per_ingest
                .push(per_request(ours.redis.evalsha_calls as f64));
            row.errors += ours.errors;
        }
    }
    let deleted = masters.clear(&format!("{prefix}:*")).await?;
    log(&format!("deleted the cluster's {deleted} keys"));
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    log(&format!("cluster results added to {}", path.display()));
    Ok(())
}

/// One count of every path into `rows` (created on the first run): figure
/// 1's [`hot_paths`], then [`EXTRA_PATHS`]. `config` must allow 3 requests
/// per client; on a cluster (`cluster`), the budget of an extra path is what
/// `tests/tests/cluster.rs` holds, on the single node the count itself (no
/// budget is set there).
async fn round_trips(
    config: Config,
    rows: &mut Vec<RoundTrips>,
    cluster: bool,
) -> Result<(), String> {
    let state = AppState::new(config).map_err(|e| e.to_string())?;
    let metric_type = format!("rt_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    for i in 0..WARM_UPS {
        ingest_metric(&state, events::ingest(&metric_type, 1.0)?).await;
        // A keyed request's claim lives in its client's slot.
        let keyed = events::ingest_event(&metric_type, 1.0, &next_client_ip())
            .header("Idempotency-Key", &uuid::Uuid::new_v4().to_string());
        ingest_metric(&state, keyed.try_build()?).await;
        let fresh = format!("{metric_type}_w{i}");
        shared::handlers::metrics_summary(&state, events::summary(&fresh, "daily", false)?).await;
    }
    let mut counted: Vec<(String, u16, u64, Option<u64>)> = hot_paths(&state, &metric_type)
        .await?
        .into_iter()
        .map(|c| (c.path.to_string(), c.status, c.round_trips, Some(c.budget)))
        .collect();

    let types = types_in_different_slots(state.keys.prefix(), &metric_type);
    let body = |types: &[String]| {
        let now = format_timestamp(chrono::Utc::now());
        let metrics: Vec<_> = types
            .iter()
            .map(|t| json!({"timestamp": now, "value": 1.0, "type": t}))
            .collect();
        if let [one] = metrics.as_slice() {
            one.clone()
        } else {
            json!(metrics)
        }
    };
    let request = |types: &[String], key: Option<String>| {
        let mut event = http_v2("POST", "/api/metrics")
            .json(&body(types))
            .source_ip(&next_client_ip());
        if let Some(key) = key {
            event = event.header("Idempotency-Key", &key);
        }
        event.try_build()
    };
    let key = || Some(uuid::Uuid::new_v4().to_string());
    let one = std::slice::from_ref(&types[0]);
    let sends = [(one, true), (&types[..], false), (&types[..], true)];
    for ((types, keyed), (path, budget)) in sends.into_iter().zip(EXTRA_PATHS) {
        // Once untimed, so every node these keys live on has the scripts.
        ingest_metric(&state, request(types, keyed.then(key).flatten())?).await;
        let req = request(types, keyed.then(key).flatten())?;
        let (status, trips) = count(&state, ingest_metric(&state, req)).await;
        counted.push((path.to_string(), status, trips, cluster.then_some(budget)));
    }
    for (path, status, trips, budget) in counted {
        match rows.iter_mut().find(|r| r.path == path) {
            Some(row) => row.counts.push(trips),
            None => rows.push(RoundTrips {
                path,
                status,
                counts: vec![trips],
                budget: budget.unwrap_or(trips),
            }),
        }
    }
    Ok(())
}

/// [`SLOTS_PER_BATCH`] metric types derived from `base` whose keys hash to
/// as many different slots.
fn types_in_different_slots(prefix: &str, base: &str) -> Vec<String> {
    let keys = Keys::new(prefix);
    let mut slots = Vec::new();
    let mut types = Vec::new();
    for i in 0.. {
        if types.len() == SLOTS_PER_BATCH {
            break;
        }
        let t = format!("{base}_s{i}");
        let slot = Slot::for_key(keys.metric_base(&t));
        if !slots.contains(&slot) {
            slots.push(slot);
            types.push(t);
        }
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_and_replicas_are_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:30002@40002,host master - 0 0 2 connected 5461-10922
a3 127.0.0.1:30003@40003 master,fail - 0 0 3 disconnected
a4 127.0.0.1:30006@40006 master - 0 0 0 connected
b1 127.0.0.1:30004@40004 slave a1 0 0 1 connected
b2 127.0.0.1:30005@40005 slave a2 0 0 2 connected
";
        assert_eq!(parse_nodes(nodes), (vec![30001, 30002], 2));
    }

    #[test]
    fn batch_types_hash_to_different_slots() {
        let types = types_in_different_slots("p", "rt_x");
        let keys = Keys::new("p");
        let slots: Vec<_> = types
            .iter()
            .map(|t| Slot::for_key(keys.metric_base(t)))
            .collect();
        assert_eq!(slots.len(), SLOTS_PER_BATCH);
        assert!(slots
            .iter()
            .enumerate()
            .all(|(i, s)| !slots[..i].contains(s)));
    }
}
