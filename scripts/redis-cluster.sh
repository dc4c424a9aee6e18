#!/usr/bin/env bash
# Starts (or stops) a local Redis Cluster of 3 masters and 3 replicas on
# loopback, for running the service with REDIS_MODE=cluster.
#
# Six plain `redis-server --cluster-enabled yes` processes on
# 127.0.0.1:<base>..<base+5> (base: REDIS_CLUSTER_PORT, default 7000; each
# node also uses its cluster bus port, port + 10000), joined by
# `redis-cli --cluster create ... --cluster-replicas 1`. Every node binds and
# announces 127.0.0.1, so MOVED/ASK redirects and the topology a client
# discovers name loopback addresses. Development data only: no snapshots, no
# append-only file. Each node's pid file, log, nodes.conf and working
# directory live in .local/redis-cluster/<port>/ (git-ignored).
#
# The script waits (bounded) until every node reports cluster_state:ok with all
# 16384 slots served and every replica's link to its master is up, then prints
# the URL to use on stdout (everything else goes to stderr):
#   REDIS_URL=redis://127.0.0.1:7000
# A cluster has no database index: the URL names one node, and the client
# discovers the others from it.
#
# Idempotent: when a healthy cluster already answers on the base port, nothing
# is started. docker-compose.yml's `cluster` profile builds the same cluster
# with containers.
#
# Usage: scripts/redis-cluster.sh          start when needed, print REDIS_URL
#        scripts/redis-cluster.sh --stop   stop the nodes this script started
#                                          (by their pid files) and remove
#                                          .local/redis-cluster/
# Environment:
#   REDIS_CLUSTER_PORT                    first port (default 7000)
#   REDIS_CLUSTER_NODE_TIMEOUT_MS         cluster-node-timeout (default 2000):
#                                         how long a master may be unreachable
#                                         before its replica is promoted
#   REDIS_CLUSTER_STARTUP_TIMEOUT_SECONDS bound on each wait (default 60)
#   REDIS_SERVER_BIN, REDIS_CLI_BIN       the binaries (default: from PATH)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE_PORT="${REDIS_CLUSTER_PORT:-7000}"
NODE_TIMEOUT_MS="${REDIS_CLUSTER_NODE_TIMEOUT_MS:-2000}"
STARTUP_TIMEOUT_SECONDS="${REDIS_CLUSTER_STARTUP_TIMEOUT_SECONDS:-60}"
REDIS_SERVER="${REDIS_SERVER_BIN:-redis-server}"
REDIS_CLI="${REDIS_CLI_BIN:-redis-cli}"
MASTERS=3
REPLICAS_PER_MASTER=1
NODES=$((MASTERS * (1 + REPLICAS_PER_MASTER)))
CLUSTER_DIR="$REPO_ROOT/.local/redis-cluster"
HOST=127.0.0.1

if ! [[ "$BASE_PORT" =~ ^[0-9]+$ ]] || ((BASE_PORT < 1024 || BASE_PORT + NODES - 1 + 10000 > 65535)); then
    die "REDIS_CLUSTER_PORT must be a number from 1024 to $((65535 - 10000 - NODES + 1)) (each node also uses port + 10000), not '$BASE_PORT'"
fi
if ! [[ "$NODE_TIMEOUT_MS" =~ ^[0-9]+$ ]] || ((NODE_TIMEOUT_MS < 100)); then
    die "REDIS_CLUSTER_NODE_TIMEOUT_MS must be a number of milliseconds, at least 100, not '$NODE_TIMEOUT_MS'"
fi
if ! [[ "$STARTUP_TIMEOUT_SECONDS" =~ ^[0-9]+$ ]] || ((STARTUP_TIMEOUT_SECONDS < 1)); then
    die "REDIS_CLUSTER_STARTUP_TIMEOUT_SECONDS must be a positive number of seconds, not '$STARTUP_TIMEOUT_SECONDS'"
fi

PORTS=()
for ((i = 0; i < NODES; i++)); do
    PORTS+=($((BASE_PORT + i)))
done

# cli PORT ARGS...: one redis-cli command to a node, bounded in time (a
# listener that is not Redis must not hang the script).
cli() {
    local port="$1"
    shift
    timeout 5 "$REDIS_CLI" -h "$HOST" -p "$port" "$@" 2>/dev/null
}

# answers PORT: a Redis server answers PING there.
answers() {
    [[ "$(cli "$1" ping)" == PONG ]]
}

# port_taken PORT: something listens on PORT. redis-cli says "Connection
# refused" (and nothing else) for a free port; any other outcome, a reply, an
# error or a timeout, means the port is in use.
port_taken() {
    local out
    out="$(timeout 5 "$REDIS_CLI" -h "$HOST" -p "$1" ping 2>&1)" && return 0
    [[ "$out" != *"Connection refused"* ]]
}

# info_field PORT SECTION FIELD: one field of CLUSTER INFO or INFO <section>.
info_field() {
    local port="$1" section="$2" field="$3" text
    if [[ "$section" == cluster-info ]]; then
        text="$(cli "$port" cluster info)" || return 1
    else
        text="$(cli "$port" info "$section")" || return 1
    fi
    printf '%s\n' "$text" | tr -d '\r' | sed -n "s/^$field://p"
}

# node_healthy PORT: this node sees the whole cluster serving every slot.
node_healthy() {
    [[ "$(info_field "$1" cluster-info cluster_state)" == ok ]] &&
        [[ "$(info_field "$1" cluster-info cluster_slots_ok)" == 16384 ]]
}

# cluster_healthy: every node of ours is healthy, knows all the others, and
# every replica's replication link is up (so a failover can start at once).
cluster_healthy() {
    local port role
    for port in "${PORTS[@]}"; do
        node_healthy "$port" || return 1
        [[ "$(info_field "$port" cluster-info cluster_known_nodes)" == "$NODES" ]] || return 1
        role="$(info_field "$port" replication role)" || return 1
        if [[ "$role" == slave ]]; then
            [[ "$(info_field "$port" replication master_link_status)" == up ]] || return 1
        fi
    done
}

# wait_until DESCRIPTION COMMAND...: polls COMMAND every 0.2 s until it
# succeeds, for at most STARTUP_TIMEOUT_SECONDS.
wait_until() {
    local what="$1" deadline=$((SECONDS + STARTUP_TIMEOUT_SECONDS))
    shift
    while ((SECONDS < deadline)); do
        "$@" && return 0
        sleep 0.2
    done
    die "$what: not within ${STARTUP_TIMEOUT_SECONDS}s (logs: .local/redis-cluster/<port>/redis.log)"
}

print_url() {
    local timeout_ms
    timeout_ms="$(cli "${PORTS[0]}" config get cluster-node-timeout | tr -d '\r' | sed -n 2p)"
    log "the cluster answers on 127.0.0.1:${PORTS[0]} (node timeout ${timeout_ms:-unknown} ms)"
    log "use it with REDIS_MODE=cluster and this REDIS_URL (any one node; no database index):"
    printf 'REDIS_URL=redis://%s:%s\n' "$HOST" "${PORTS[0]}"
}

# stop_nodes: stops every node whose pid file is in CLUSTER_DIR, if the pid
# still belongs to a redis-server, and removes the directory.
stop_nodes() {
    local pidfile pid pids=() i
    if [[ ! -d "$CLUSTER_DIR" ]]; then
        log "no local cluster to stop (.local/redis-cluster/ does not exist)"
        return 0
    fi
    for pidfile in "$CLUSTER_DIR"/*/redis.pid; do
        [[ -f "$pidfile" ]] || continue
        pid="$(cat "$pidfile")"
        # A pid that was reused after our node exited belongs to someone else.
        if [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(ps -o comm= -p "$pid" 2>/dev/null)" == redis-server* ]]; then
            kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
        fi
    done
    for ((i = 0; i < 50; i++)); do
        local alive=()
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive+=("$pid")
        done
        pids=("${alive[@]}")
        ((${#pids[@]} == 0)) && break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do
        warn "redis-server $pid did not stop within 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$CLUSTER_DIR"
    log "stopped the local cluster and removed .local/redis-cluster/"
}

start_node() {
    local port="$1" dir="$CLUSTER_DIR/$1"
    mkdir -p "$dir"
    # nodes.conf is the node's own record of the cluster; a fresh one per start.
    rm -f "$dir/nodes.conf"
    # repl-diskless-sync-delay 0: a replica's first sync starts at once instead
    # of after the default 5 s wait for more replicas.
    "$REDIS_SERVER" \
        --daemonize yes \
        --bind "$HOST" \
        --port "$port" \
        --dir "$dir" \
        --pidfile "$dir/redis.pid" \
        --logfile "$dir/redis.log" \
        --save "" \
        --appendonly no \
        --cluster-enabled yes \
        --cluster-config-file "$dir/nodes.conf" \
        --cluster-node-timeout "$NODE_TIMEOUT_MS" \
        --cluster-announce-ip "$HOST" \
        --repl-diskless-sync-delay 0 ||
        die "$REDIS_SERVER did not start on port $port (log: .local/redis-cluster/$port/redis.log)"
}

if [[ "${1:-}" == "--stop" ]]; then
    stop_nodes
    exit 0
elif [[ $# -gt 0 ]]; then
    die "unknown argument '$1' (usage: scripts/redis-cluster.sh [--stop])"
fi

if ! command -v "$REDIS_SERVER" >/dev/null 2>&1 || ! command -v "$REDIS_CLI" >/dev/null 2>&1; then
    die "the local cluster needs redis-server and redis-cli (Redis 6 or later), e.g. \`sudo apt-get install redis-server\` or \`brew install redis\`; with Docker: \`docker compose --profile cluster up -d cluster-create\`"
fi

if node_healthy "${PORTS[0]}"; then
    log "a healthy Redis Cluster already answers on 127.0.0.1:${PORTS[0]}; nothing started"
    print_url
    exit 0
fi

# A cluster of ours that is not healthy (a half-finished earlier start, a
# killed node) is replaced rather than repaired.
if [[ -d "$CLUSTER_DIR" ]]; then
    warn "an earlier local cluster in .local/redis-cluster/ is not healthy; replacing it"
    stop_nodes
fi

for port in "${PORTS[@]}"; do
    if answers "$port"; then
        die "a Redis that is not a healthy cluster answers on 127.0.0.1:$port; stop it or set REDIS_CLUSTER_PORT to another base port"
    fi
    port_taken "$port" && die "port $port is in use; set REDIS_CLUSTER_PORT to another base port"
    port_taken $((port + 10000)) && die "port $((port + 10000)) (the cluster bus of port $port) is in use; set REDIS_CLUSTER_PORT to another base port"
done

log "starting $NODES redis-server nodes on 127.0.0.1:${PORTS[0]}..${PORTS[-1]} (files in .local/redis-cluster/)"
mkdir -p "$CLUSTER_DIR"
for port in "${PORTS[@]}"; do
    start_node "$port"
done
for port in "${PORTS[@]}"; do
    wait_until "redis-server on port $port answering PING" answers "$port"
done

log "creating the cluster: $MASTERS masters, $REPLICAS_PER_MASTER replica each"
addresses=()
for port in "${PORTS[@]}"; do
    addresses+=("$HOST:$port")
done
create_log="$CLUSTER_DIR/create.log"
if ! timeout "$STARTUP_TIMEOUT_SECONDS" "$REDIS_CLI" --cluster create "${addresses[@]}" \
    --cluster-replicas "$REPLICAS_PER_MASTER" --cluster-yes >"$create_log" 2>&1; then
    tail -n 20 "$create_log" >&2 || true
    die "redis-cli --cluster create failed (the nodes keep running; scripts/redis-cluster.sh --stop stops them)"
fi

wait_until "every node reporting cluster_state:ok with all 16384 slots and its replication link up" cluster_healthy
print_url
