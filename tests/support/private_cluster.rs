//! A private Redis Cluster for tests that need a sharded Redis, or that fail
//! over one of its masters, without affecting anything else.
//!
//! [`PrivateCluster::start`] runs `masters × (1 + replicas_per_master)`
//! [`PrivateRedis`] servers with `--cluster-enabled yes` on free ports of
//! 127.0.0.1 (each with its own working directory, so its own `nodes.conf`),
//! and joins them with the commands `redis-cli --cluster create` sends: each
//! master takes an even share of the 16384 slots (`CLUSTER ADDSLOTSRANGE`), the
//! nodes meet (`CLUSTER MEET`), and each replica follows its master
//! (`CLUSTER REPLICATE`). It returns once every node reports
//! `cluster_state:ok` with all slots served and every replica's link is up.
//! `scripts/redis-cluster.sh` builds the same shape for development.
//!
//! Every node announces 127.0.0.1, and its cluster bus listens on a free port
//! of its own (`--cluster-port`, Redis 7.0 or later), so clusters of parallel
//! tests never collide. Dropping the cluster kills every node (SIGKILL, through
//! [`PrivateRedis`]'s own drop) and removes their directories.
//!
//! The failover helpers wait, bounded, for the state a client would see
//! afterwards: [`PrivateCluster::failover_manual`] (`CLUSTER FAILOVER` on a
//! replica, as an operator or ElastiCache maintenance does) and
//! [`PrivateCluster::kill_master`] (SIGKILL, then the replica's promotion after
//! the node timeout, as after a crash). Their sequences follow the Redis
//! Cluster specification (redis.io, "Redis cluster specification", sections
//! "Failure detection" and "Replica election and promotion").
//!
//! The helpers use the `redis` crate's synchronous connections, one per call,
//! to one node at a time: the fixture itself never follows a redirect.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::private_redis::{free_port, PrivateRedis};

/// Every hash slot of a Redis Cluster: keys map to `0..SLOTS`.
pub const SLOTS: u16 = 16384;

/// The node timeout [`PrivateCluster::start`] uses: short, so that an unplanned
/// failover completes within a few seconds, yet well above the pauses of a
/// busy two-core test machine (a master that looks unreachable for longer than
/// this is failed over).
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(2000);

/// Bound on one command to a node (connect, write, read).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The role of a node in the cluster's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Serves the slots listed in [`ClusterNode::slots`].
    Master,
    /// Replicates the master [`ClusterNode::master_id`].
    Replica,
}

/// One line of `CLUSTER NODES`, as one node sees the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node id (40 hex characters).
    pub id: String,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// Master or replica.
    pub role: Role,
    /// For a replica, the id of its master.
    pub master_id: Option<String>,
    /// For a master, the slot ranges it serves (inclusive); empty otherwise.
    pub slots: Vec<RangeInclusive<u16>>,
    /// The flags as Redis lists them (`myself`, `master`, `slave`, `fail?`,
    /// `fail`, `handshake`, `noaddr`, …).
    pub flags: Vec<String>,
    /// Whether the cluster bus link to this node is up (`connected`).
    pub connected: bool,
}

impl ClusterNode {
    /// The node is marked failing (`fail`) or possibly failing (`fail?`).
    pub fn failing(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }

    /// The node serves `slot` (only a master does).
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|range| range.contains(&slot))
    }

    /// `redis://127.0.0.1:<port>` (a cluster node has no database index).
    pub fn url(&self) -> String {
        node_url(self.port)
    }
}

/// One node process of a [`PrivateCluster`].
struct Node {
    server: PrivateRedis,
    /// Its cluster bus port (`--cluster-port`).
    bus_port: u16,
    /// False after [`PrivateCluster::kill_master`] until a restart.
    running: bool,
}

/// A private Redis Cluster on loopback; every node is killed on drop.
pub struct PrivateCluster {
    nodes: Vec<Node>,
    node_timeout: Duration,
}

impl PrivateCluster {
    /// Starts a cluster of `masters` masters (at least 3: a failover needs a
    /// majority of masters to vote) with `replicas_per_master` replicas each
    /// and the [`DEFAULT_NODE_TIMEOUT`], and waits until it is healthy (every
    /// node: `cluster_state:ok`, all slots served, replica links up).
    ///
    /// Panics when it cannot (no `redis-server` 7.0+, no free ports, or the
    /// cluster does not form within the bounds): a test helper, the test cannot
    /// proceed without it.
    pub fn start(masters: usize, replicas_per_master: usize) -> Self {
        Self::start_with_node_timeout(masters, replicas_per_master, DEFAULT_NODE_TIMEOUT)
    }

    /// Like [`PrivateCluster::start`] with another `cluster-node-timeout`:
    /// how long a master may be unreachable before the others mark it failed
    /// and its replica is promoted (whole milliseconds, at least 100 ms).
    pub fn start_with_node_timeout(
        masters: usize,
        replicas_per_master: usize,
        node_timeout: Duration,
    ) -> Self {
        assert!(masters >= 3, "a failover needs at least 3 masters");
        assert!(masters <= usize::from(SLOTS), "more masters than slots");
        assert!(
            node_timeout >= Duration::from_millis(100),
            "cluster-node-timeout below 100 ms"
        );
        let count = masters * (1 + replicas_per_master);
        let timeout_ms = node_timeout.as_millis().to_string();
        let nodes: Vec<Node> = (0..count)
            .map(|_| {
                let bus_port = free_port();
                let bus = bus_port.to_string();
                let server = PrivateRedis::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    &timeout_ms,
                    // Redirects and the topology clients discover name loopback.
                    "--cluster-announce-ip",
                    "127.0.0.1",
                    // A replica's first sync starts at once instead of after
                    // the default 5 s wait for more replicas to join it.
                    "--repl-diskless-sync-delay",
                    "0",
                ]);
                Node {
                    server,
                    bus_port,
                    running: true,
                }
            })
            .collect();
        let cluster = Self {
            nodes,
            node_timeout,
        };
        cluster.create(masters);
        cluster
    }

    /// Joins the started nodes into a cluster, as `redis-cli --cluster create`
    /// does: distinct config epochs, slots split evenly over the first
    /// `masters` nodes, `CLUSTER MEET` from the first node to every other one,
    /// and the remaining nodes replicating the masters in turn.
    fn create(&self, masters: usize) {
        for (i, node) in self.nodes.iter().enumerate() {
            let epoch = i + 1;
            command::<()>(
                node.server.port(),
                &["CLUSTER", "SET-CONFIG-EPOCH", &epoch.to_string()],
            )
            .unwrap_or_else(|e| panic!("CLUSTER SET-CONFIG-EPOCH on a fresh node: {e}"));
        }
        let total = usize::from(SLOTS);
        for (i, node) in self.nodes[..masters].iter().enumerate() {
            let (first, last) = (i * total / masters, (i + 1) * total / masters - 1);
            command::<()>(
                node.server.port(),
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            )
            .unwrap_or_else(|e| panic!("CLUSTER ADDSLOTSRANGE {first} {last}: {e}"));
        }
        let seed = self.nodes[0].server.port();
        for node in &self.nodes[1..] {
            command::<()>(
                seed,
                &[
                    "CLUSTER",
                    "MEET",
                    "127.0.0.1",
                    &node.server.port().to_string(),
                    &node.bus_port.to_string(),
                ],
            )
            .unwrap_or_else(|e| panic!("CLUSTER MEET: {e}"));
        }
        let count = self.nodes.len();
        self.wait_for("every node to know every other node", || {
            self.nodes.iter().all(|node| {
                cluster_nodes(node.server.port()).is_ok_and(|view| {
                    view.len() == count
                        && view
                            .iter()
                            .all(|n| !n.flags.iter().any(|f| f == "handshake" || f == "noaddr"))
                })
            })
        });
        let master_ids: Vec<String> = self.nodes[..masters]
            .iter()
            .map(|node| {
                command(node.server.port(), &["CLUSTER", "MYID"])
                    .unwrap_or_else(|e| panic!("CLUSTER MYID: {e}"))
            })
            .collect();
        for (i, node) in self.nodes[masters..].iter().enumerate() {
            let master = &master_ids[i % masters];
            command::<()>(node.server.port(), &["CLUSTER", "REPLICATE", master])
                .unwrap_or_else(|e| panic!("CLUSTER REPLICATE {master}: {e}"));
        }
        self.wait_healthy();
    }

    /// The node timeout the cluster runs with.
    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    /// `redis://127.0.0.1:<port>` of the first node started (a master at
    /// first): the one-node `REDIS_URL` a cluster client starts from. It names
    /// a dead node after that node was killed; [`PrivateCluster::node_urls`]
    /// lists the running ones.
    pub fn seed_url(&self) -> String {
        node_url(self.nodes[0].server.port())
    }

    /// `redis://127.0.0.1:<port>` of every running node.
    pub fn node_urls(&self) -> Vec<String> {
        self.running_ports().map(node_url).collect()
    }

    /// The cluster's nodes with their roles, as the first running node that
    /// answers sees them (`CLUSTER NODES`, parsed). Panics when none answers.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        self.running_ports()
            .find_map(|port| cluster_nodes(port).ok())
            .expect("a running cluster node answers CLUSTER NODES")
    }

    /// The masters, ordered by their first slot.
    pub fn masters(&self) -> Vec<ClusterNode> {
        let mut masters: Vec<ClusterNode> = self
            .nodes()
            .into_iter()
            .filter(|n| n.role == Role::Master && !n.slots.is_empty())
            .collect();
        masters.sort_by_key(|n| n.slots.first().map(|r| *r.start()));
        masters
    }

    /// The master serving `slot` (`0..16384`). Panics when none does.
    pub fn master_for_slot(&self, slot: u16) -> ClusterNode {
        self.nodes()
            .into_iter()
            .find(|n| n.role == Role::Master && n.serves(slot))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// A replica of `master` that is not failing. Panics when it has none.
    pub fn replica_of(&self, master: &ClusterNode) -> ClusterNode {
        self.nodes()
            .into_iter()
            .find(|n| {
                n.role == Role::Replica
                    && n.master_id.as_deref() == Some(&master.id)
                    && !n.failing()
            })
            .unwrap_or_else(|| panic!("master {} (port {}) has no replica", master.id, master.port))
    }

    /// The hash slot of `key`, from `CLUSTER KEYSLOT` (CRC16 of the key, or of
    /// its `{hash tag}`, modulo 16384).
    pub fn keyslot(&self, key: &str) -> u16 {
        self.running_ports()
            .find_map(|port| command(port, &["CLUSTER", "KEYSLOT", key]).ok())
            .expect("a running cluster node answers CLUSTER KEYSLOT")
    }

    /// A synchronous connection to the node on `port` (no redirects followed),
    /// each command bounded by 2 s.
    pub fn connection(&self, port: u16) -> redis::Connection {
        connect(port).unwrap_or_else(|e| panic!("connect to cluster node {port}: {e}"))
    }

    /// A manual failover: `CLUSTER FAILOVER` on `replica`, which first lets
    /// its master stop accepting writes and catches up with its replication
    /// stream, so no acknowledged write is lost. Waits until every running
    /// node sees `replica` as the master of the old master's slots and the
    /// old master as its replica, and the cluster is healthy. Panics when that
    /// does not happen within the bound.
    pub fn failover_manual(&self, replica: &ClusterNode) {
        assert_eq!(
            replica.role,
            Role::Replica,
            "CLUSTER FAILOVER needs a replica"
        );
        let old_master = replica
            .master_id
            .clone()
            .expect("a replica names its master");
        // Redis gives a manual failover 5 s (CLUSTER_MF_TIMEOUT) and then
        // abandons it silently, e.g. when the master was busy; it is asked
        // again after twice that.
        let mut asked_at: Option<Instant> = None;
        self.wait_for("the replica to be promoted by the manual failover", || {
            if asked_at.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                command::<String>(replica.port, &["CLUSTER", "FAILOVER"])
                    .unwrap_or_else(|e| panic!("CLUSTER FAILOVER on port {}: {e}", replica.port));
                asked_at = Some(Instant::now());
            }
            self.all_views(|view| {
                view.iter()
                    .any(|n| n.id == replica.id && n.role == Role::Master)
                    && view.iter().any(|n| {
                        n.id == old_master
                            && n.role == Role::Replica
                            && n.master_id.as_deref() == Some(&replica.id)
                    })
            })
        });
        self.wait_healthy();
    }

    /// An unplanned failover: kills `master` with SIGKILL (a crash: no
    /// shutdown, nothing flushed), then waits until the other masters have
    /// marked it failed, one of its replicas has been promoted to serve its
    /// slots (after the node timeout and the replica election), and every
    /// running node reports `cluster_state:ok`. Returns the promoted replica.
    /// Panics when `master` has no replica or the promotion does not happen
    /// within the bound.
    pub fn kill_master(&mut self, master: &ClusterNode) -> ClusterNode {
        assert_eq!(master.role, Role::Master, "kill_master needs a master");
        let replicas: Vec<String> = self
            .nodes()
            .into_iter()
            .filter(|n| n.master_id.as_deref() == Some(&master.id))
            .map(|n| n.id)
            .collect();
        assert!(
            !replicas.is_empty(),
            "master on port {} has no replica",
            master.port
        );
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.running && n.server.port() == master.port)
            .unwrap_or_else(|| panic!("no running node on port {}", master.port));
        node.server.kill();
        node.running = false;
        self.wait_for("a replica of the killed master to be promoted", || {
            self.all_views(|view| {
                view.iter()
                    .any(|n| n.id == master.id && n.flags.iter().any(|f| f == "fail"))
                    && view.iter().any(|n| {
                        replicas.contains(&n.id) && n.role == Role::Master && !n.slots.is_empty()
                    })
            })
        });
        self.wait_healthy();
        self.nodes()
            .into_iter()
            .find(|n| replicas.contains(&n.id) && n.role == Role::Master)
            .expect("the promoted replica is a master")
    }

    /// Starts a node killed by [`PrivateCluster::kill_master`] again on the
    /// same port and directory: its `nodes.conf` makes it rejoin, and, its
    /// slots having moved, the cluster turns it into a replica of the master
    /// that replaced it. Waits until the cluster is healthy again.
    pub fn restart_node(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.server.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"));
        node.server.restart();
        node.running = true;
        self.wait_healthy();
    }

    /// Waits until the cluster is healthy as a client sees it: every running
    /// node reports `cluster_state:ok` with all 16384 slots served, sees no
    /// running node as failing, has, if a replica, its replication link up,
    /// and lists the same roles, masters and slots as every other running
    /// node. Panics after the bound.
    pub fn wait_healthy(&self) {
        let running: Vec<u16> = self.running_ports().collect();
        self.wait_for("the cluster to be healthy on every running node", || {
            let mut views = Vec::with_capacity(running.len());
            for &port in &running {
                let healthy = node_serves_all_slots(port) && replication_link_up(port);
                let Some(view) = cluster_nodes(port).ok().filter(|_| healthy) else {
                    return false;
                };
                if !view
                    .iter()
                    .filter(|n| running.contains(&n.port))
                    .all(|n| !n.failing() && n.connected)
                {
                    return false;
                }
                views.push(configuration(&view));
            }
            // Gossip spreads roles and slots node by node: until every node
            // tells the same story, a client's view depends on whom it asks
            // (and a manual failover needs the master to know its replica).
            views.windows(2).all(|pair| pair[0] == pair[1])
        });
    }

    fn running_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.running)
            .map(|n| n.server.port())
    }

    /// True when every running node answers `CLUSTER NODES` and `check`
    /// holds for its view.
    fn all_views(&self, check: impl Fn(&[ClusterNode]) -> bool) -> bool {
        self.running_ports()
            .all(|port| cluster_nodes(port).is_ok_and(|view| check(&view)))
    }

    /// Polls `done` every 50 ms; panics naming `what` after the bound: 30 s
    /// or ten node timeouts, whichever is longer (a failover takes about the
    /// node timeout plus one to two seconds of election).
    fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        let bound = Duration::from_secs(30).max(self.node_timeout * 10);
        let deadline = Instant::now() + bound;
        loop {
            if done() {
                return;
            }
            if Instant::now() >= deadline {
                let views: Vec<String> = self
                    .running_ports()
                    .map(|port| {
                        let nodes: String = command(port, &["CLUSTER", "NODES"])
                            .unwrap_or_else(|e| format!("(no answer: {e})"));
                        format!("node {port}:\n{nodes}")
                    })
                    .collect();
                panic!(
                    "waited {bound:?} for {what}; the nodes' views:\n{}",
                    views.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn node_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(node_url(port))?;
    let connection = client.get_connection_with_timeout(COMMAND_TIMEOUT)?;
    connection.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    connection.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(connection)
}

/// One command to the node on `port`, on a connection of its own.
fn command<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
    let mut connection = connect(port)?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut connection)
}

/// What every node of a healthy cluster agrees on: each node's id, role,
/// master and slots, in id order (flags such as `myself` differ by viewer).
type Configuration = Vec<(String, Role, Option<String>, Vec<RangeInclusive<u16>>)>;

fn configuration(view: &[ClusterNode]) -> Configuration {
    let mut configuration: Configuration = view
        .iter()
        .map(|n| (n.id.clone(), n.role, n.master_id.clone(), n.slots.clone()))
        .collect();
    configuration.sort_by(|a, b| a.0.cmp(&b.0));
    configuration
}

/// `CLUSTER NODES` of the node on `port`, parsed.
fn cluster_nodes(port: u16) -> redis::RedisResult<Vec<ClusterNode>> {
    let text: String = command(port, &["CLUSTER", "NODES"])?;
    Ok(parse_cluster_nodes(&text))
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master>
/// <ping-sent> <pong-recv> <config-epoch> <link-state> <slot> <slot> …`, where
/// a slot is `n` or `first-last`, and `[n->-id]` / `[n-<-id]` (a slot being
/// migrated or imported) is skipped. Malformed lines are skipped.
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let address = fields[1].split(['@', ',']).next()?;
            let port = address.rsplit_once(':')?.1.parse().ok()?;
            let flags: Vec<String> = fields[2].split(',').map(str::to_string).collect();
            let role = if flags.iter().any(|f| f == "master") {
                Role::Master
            } else {
                Role::Replica
            };
            let master_id = (fields[3] != "-").then(|| fields[3].to_string());
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((first, last)) => Some(first.parse().ok()?..=last.parse().ok()?),
                    None => {
                        let slot = s.parse().ok()?;
                        Some(slot..=slot)
                    }
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_string(),
                port,
                role,
                master_id,
                slots,
                flags,
                connected: fields[7] == "connected",
            })
        })
        .collect()
}

/// The node reports `cluster_state:ok` and `cluster_slots_ok:16384`.
fn node_serves_all_slots(port: u16) -> bool {
    let Ok(info) = command::<String>(port, &["CLUSTER", "INFO"]) else {
        return false;
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(str::to_string)
    };
    field("cluster_state").as_deref() == Some("ok")
        && field("cluster_slots_ok").as_deref() == Some(&SLOTS.to_string())
}

/// A master, or a replica whose link to its master is up (`ROLE`).
fn replication_link_up(port: u16) -> bool {
    let Ok(role) = command::<redis::Value>(port, &["ROLE"]) else {
        return false;
    };
    // ROLE: ["master", offset, [replicas]] or
    // ["slave", master ip, master port, link state, offset].
    let redis::Value::Array(parts) = role else {
        return false;
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    match parts.first().map(text).as_deref() {
        Some("master") => true,
        Some("slave") => parts.get(3).map(text).as_deref() == Some("connected"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 1426238316232 0 3 disconnected 10923-16383 [93->-e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca]
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 16000
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].role, Role::Replica);
        assert_eq!(nodes[0].port, 30004);
        assert_eq!(
            nodes[0].master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert!(nodes[0].slots.is_empty());
        assert_eq!(nodes[1].slots, vec![5461..=10922]);
        assert!(nodes[2].failing() && !nodes[2].connected);
        assert_eq!(nodes[2].slots, vec![10923..=16383]);
        assert_eq!(nodes[3].slots, vec![0..=5460, 16000..=16000]);
        assert!(nodes[3].serves(16000) && !nodes[3].serves(5461));
    }
}
