#!/usr/bin/env bash
# `make bench`: measures the service against the floor set by Redis itself and
# fills the tables of BENCHMARKS.md (the `tools/bench` crate measures and
# renders; this script prepares and bounds everything around it).
#
#   1. tools: redis-server, redis-cli and redis-benchmark (required), wrk
#      (installed with apt-get when missing and possible) and cargo-lambda
#      (scripts/ensure-cargo-lambda.sh); figure 4 is skipped without them;
#   2. builds the four API functions and the bench in release mode;
#   3. starts a private redis-server on a free port of 127.0.0.1 (no
#      persistence, its own directory), so that INFO and MEMORY USAGE see only
#      the benchmark's data and nobody else's work disturbs the numbers;
#   4. `bench measure`: figures 1, 2, 3, 5 and 6 in-process; then a private
#      Redis Cluster (3 masters, 3 replicas, free ports, its own directory)
#      and `bench cluster`: figures 1 and 2 on it, with REDIS_MODE=cluster,
#      added to the same results; the cluster is stopped right after;
#   5. figure 4: `cargo lambda watch --release` on a free port, loaded by wrk
#      for a fixed time per run (tools/bench/wrk.lua); then figure 10 on the
#      same stack (`bench invocation`): the CPU the function processes spend
#      per invocation, against the `bench-floor` function;
#   5b. figure 9: the design this project started from (tools/seed-peer, a
#      FastAPI app installed on demand into target/seed-peer-venv from its
#      pinned requirements) under uvicorn, beside our functions under
#      `cargo lambda watch --release --concurrency 16`, both on the private
#      Redis, measured by `bench peer` in alternating rounds; skipped with a
#      note in the report when python3 (with venv and pip) or the install is
#      unavailable, or figure 4's tools are missing;
#   6. `bench report`: fills the marked tables of BENCHMARKS.md and of the
#      README's Performance section; the text around them is written by hand.
# Everything it started (Redis, the cluster, the emulator and its functions) is stopped at
# the end, whatever happens. Only 127.0.0.1 is ever sent traffic; every load is
# bounded in count or time. The raw results stay in target/bench/
# (results.json, e2e.jsonl, run.json), so the tables can be filled again
# without measuring:
#
#   target/release/bench report --dir target/bench --out BENCHMARKS.md --readme README.md
#
# Options (environment):
#   BENCH_RUNS=5             runs of every figure
#   BENCH_WRK_SECONDS=10     length of one wrk run (figure 4)
#   BENCH_WRK_CONNECTIONS=16 wrk connections, and emulator instances per function
#   BENCH_INVOCATION_CONNECTIONS=4  wrk connections of figure 10 (function CPU
#                            per invocation, on figure 4's stack)
#   BENCH_OUT=BENCHMARKS.md  where the report goes (a copy of BENCHMARKS.md when
#                            it does not exist; the README is filled only
#                            along with BENCHMARKS.md itself)
#   BENCH_QUICK=1            tiny data sets and one run, to try the harness
#   BENCH_SKIP_E2E=1         skip figures 4 and 8
#   BENCH_ONLY=peer          figure 9 alone: builds, starts the private Redis,
#                            measures the side-by-side figure and fills only its
#                            tables (3 rounds, or BENCH_RUNS; 8 s per wrk run,
#                            or BENCH_WRK_SECONDS)
#   BENCH_CLIENT_THREADS=1   threads of the runtime the in-process instances run
#                            on (1, like redis-benchmark's one event loop)
#   (BENCH_QUICK and BENCH_SKIP_E2E are on for 1, true or yes; off when unset,
#   empty, 0, false or no.) The report's command line names every one of these
#   that is set, so it can be run again as written.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

# is_on VALUE: 1/true/yes/on (any case) is on; unset, empty, 0/false/no/off
# is off; anything else is refused.
is_on() {
    case "${1,,}" in
    1 | true | yes | on) return 0 ;;
    "" | 0 | false | no | off) return 1 ;;
    *) die "expected 1/0, true/false or yes/no, got '$1'" ;;
    esac
}
QUICK=""
is_on "${BENCH_QUICK:-}" && QUICK=1
RUNS="${BENCH_RUNS:-${QUICK:+1}}"
RUNS="${RUNS:-5}"
WRK_SECONDS="${BENCH_WRK_SECONDS:-$([[ -n "$QUICK" ]] && echo 3 || echo 10)}"
WRK_CONNECTIONS="${BENCH_WRK_CONNECTIONS:-16}"
INVOCATION_CONNECTIONS="${BENCH_INVOCATION_CONNECTIONS:-4}"
OUT="${BENCH_OUT:-BENCHMARKS.md}"
ONLY="${BENCH_ONLY:-}"
[[ -z "$ONLY" || "$ONLY" == peer ]] || die "BENCH_ONLY: expected peer, got '$ONLY'"
# The command as it can be run again: `make bench` after the options set.
bench_command="make bench"
for name in BENCH_ONLY BENCH_CLIENT_THREADS BENCH_INVOCATION_CONNECTIONS BENCH_WRK_CONNECTIONS BENCH_WRK_SECONDS BENCH_SKIP_E2E BENCH_QUICK BENCH_OUT BENCH_RUNS; do
    [[ -z "${!name:-}" ]] || bench_command="$name=${!name} $bench_command"
done
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
RESULTS_DIR="$TARGET_DIR/bench"
BENCH="$TARGET_DIR/release/bench"

started=$SECONDS
load_before_build="$(cut -d' ' -f1-3 /proc/loadavg | sed 's| | / |g')"
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/analytics-bench.XXXXXX")"
mkdir -p "$RESULTS_DIR"
rm -f "$RESULTS_DIR/peer.json"
[[ -n "$ONLY" ]] || rm -f "$RESULTS_DIR/run.json" "$RESULTS_DIR/e2e.jsonl" "$RESULTS_DIR/invocation.jsonl"
REDIS_PID=""
WATCH_PID=""
PEER_PID=""
CLUSTER_PIDS=()

cleanup() {
    local status=$?
    stop_stack
    stop_peer
    if [[ -n "$REDIS_PID" ]]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    stop_cluster
    rm -rf "$WORK_DIR"
    exit "$status"
}
# stop_cluster: stops the nodes of the private cluster, if any.
stop_cluster() {
    local pid
    for pid in "${CLUSTER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${CLUSTER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    CLUSTER_PIDS=()
}

# stop_peer: stops the uvicorn of figure 9 (its workers follow their
# supervisor on SIGTERM); SIGKILL after 10 s.
stop_peer() {
    [[ -n "$PEER_PID" ]] || return 0
    kill -TERM "$PEER_PID" 2>/dev/null || true
    for _ in {1..50}; do kill -0 "$PEER_PID" 2>/dev/null && sleep 0.2; done
    kill -KILL "$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
    PEER_PID=""
}

# peer_venv: the virtual environment of figure 9's peer, created on demand
# under the target directory and installed from tools/seed-peer's pinned
# requirements (again only when they changed); prints why not on failure.
PEER_VENV="$TARGET_DIR/seed-peer-venv"
peer_venv() {
    local requirements=tools/seed-peer/requirements.txt
    command -v python3 >/dev/null 2>&1 || {
        echo "python3 is not installed"
        return 1
    }
    if [[ ! -x "$PEER_VENV/bin/python" ]]; then
        python3 -m venv "$PEER_VENV" >"$WORK_DIR/peer-venv.log" 2>&1 || {
            rm -rf "$PEER_VENV"
            echo "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
            return 1
        }
    fi
    cmp -s "$requirements" "$PEER_VENV/installed-requirements.txt" && return 0
    log "installing the peer's requirements into $PEER_VENV (pip install -r $requirements)"
    timeout 600 "$PEER_VENV/bin/pip" install -q --disable-pip-version-check -r "$requirements" \
        >"$WORK_DIR/peer-pip.log" 2>&1 || {
        tail -n 5 "$WORK_DIR/peer-pip.log" >&2
        echo "pip install -r $requirements failed (no network, or no package index)"
        return 1
    }
    cp "$requirements" "$PEER_VENV/installed-requirements.txt"
}

# wait_for_health URL PID WHAT: waits (bounded, 300 s) until URL/health
# answers 200 while PID lives.
wait_for_health() {
    local deadline=$((SECONDS + 300))
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "$1/health")" == 200 ]]; do
        if ((SECONDS >= deadline)) || ! kill -0 "$2" 2>/dev/null; then
            return 1
        fi
        sleep 1
    done
}

# start_cluster: a private Redis Cluster of 3 masters and 3 replicas on free
# ports of 127.0.0.1 (the cluster bus of each node on a free port of its own,
# `--cluster-port`, Redis 7 or later), files in the run's directory, joined by
# `redis-cli --cluster create`; waits (bounded) until every node serves all
# 16384 slots and every replica's link is up. Sets CLUSTER_PORT (a node's
# port: the client discovers the others from it). The same shape as
# `scripts/redis-cluster.sh`, which serves `make dev` on fixed ports and
# directory, so the bench never touches a development cluster.
start_cluster() {
    local ports port bus dir i addresses=() deadline
    read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(12)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
    for i in 0 1 2 3 4 5; do
        port="${ports[$i]}"
        bus="${ports[$((i + 6))]}"
        dir="$WORK_DIR/cluster/$port"
        mkdir -p "$dir"
        redis-server --port "$port" --cluster-port "$bus" --bind 127.0.0.1 --save "" --appendonly no \
            --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 5000 \
            --cluster-announce-ip 127.0.0.1 --repl-diskless-sync-delay 0 \
            --dir "$dir" --logfile "$dir/redis.log" </dev/null &
        CLUSTER_PIDS+=($!)
        addresses+=("127.0.0.1:$port")
    done
    CLUSTER_PORT="${ports[0]}"
    deadline=$((SECONDS + 60))
    for port in "${ports[@]:0:6}"; do
        until [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]]; do
            ((SECONDS < deadline)) || die "the cluster node on port $port did not start"
            sleep 0.1
        done
    done
    timeout 60 redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes \
        >"$WORK_DIR/cluster/create.log" 2>&1 || {
        tail -n 20 "$WORK_DIR/cluster/create.log" >&2
        die "redis-cli --cluster create failed"
    }
    cluster_ready() {
        local port info nodes
        for port in "${ports[@]:0:6}"; do
            info="$(redis-cli -p "$port" cluster info 2>/dev/null | tr -d '\r')"
            [[ "$info" == *cluster_state:ok* && "$info" == *cluster_slots_ok:16384* &&
                "$info" == *cluster_known_nodes:6* ]] || return 1
            # Three masters serving slots and three replicas in this node's
            # view (a node just made a replica looks like a master without
            # slots to the others until gossip tells them).
            nodes="$(redis-cli -p "$port" cluster nodes 2>/dev/null)"
            (($(awk '$3 ~ /master/ && NF > 8' <<<"$nodes" | wc -l) == 3)) || return 1
            (($(awk '$3 ~ /slave/' <<<"$nodes" | wc -l) == 3)) || return 1
            info="$(redis-cli -p "$port" info replication 2>/dev/null | tr -d '\r')"
            [[ "$info" != *role:slave* || "$info" == *master_link_status:up* ]] || return 1
        done
    }
    until cluster_ready; do
        ((SECONDS < deadline)) || die "the private cluster was not ready within 60 s (logs in $WORK_DIR/cluster)"
        sleep 0.2
    done
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. tools ---------------------------------------------------------------
for tool in redis-server redis-cli redis-benchmark; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool is needed (Debian/Ubuntu: apt-get install redis-server redis-tools; macOS: brew install redis)"
done
e2e_note=""
is_on "${BENCH_SKIP_E2E:-}" && e2e_note="skipped with BENCH_SKIP_E2E"
if [[ -z "$e2e_note" ]] && ! command -v wrk >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        log "installing wrk (apt-get install wrk)"
        { timeout 300 apt-get update -q && timeout 300 apt-get install -y -q wrk; } >/dev/null 2>&1 || true
    fi
    command -v wrk >/dev/null 2>&1 || e2e_note="wrk is not installed (apt-get install wrk, brew install wrk)"
fi
if [[ -z "$e2e_note" ]]; then
    if scripts/ensure-cargo-lambda.sh; then
        use_local_cargo_lambda
    else
        e2e_note="cargo-lambda could not be installed"
    fi
fi
[[ -z "$e2e_note" ]] || warn "figures 4 and 8 (end to end) will be skipped: $e2e_note"
peer_note="$e2e_note"
if [[ -z "$peer_note" ]]; then
    peer_note="$(peer_venv)" || true
    [[ -z "$peer_note" ]] || warn "figure 9 (side by side with the original design) will be skipped: $peer_note"
fi

# --- 2. build ----------------------------------------------------------------
# One invocation selecting the binaries by name (`--bin`, no `-p`), as
# `cargo lambda watch --release` starts each function (`cargo run --release
# --bin <name>`): features are then resolved once over the whole workspace,
# so the emulator finds these binaries up to date instead of compiling the
# dependencies again with another feature set, and the bench shares them.
build_started=$SECONDS
build_kind="from scratch"
[[ -e "$BENCH" ]] && build_kind="incremental: an earlier build was there"
bins=(--bin health --bin ingest-metric --bin metrics-summary --bin metrics-series --bin bench --bin bench-floor)
log "cargo build --release ${bins[*]}"
cargo build --release "${bins[@]}" || die "the release build failed"
build_seconds=$((SECONDS - build_started))

# --- 3. a private Redis ------------------------------------------------------
REDIS_PORT="$(free_port)"
mkdir -p "$WORK_DIR/redis"
log "starting a private redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK_DIR/redis" --logfile "$WORK_DIR/redis/redis.log" </dev/null &
REDIS_PID=$!
for _ in $(seq 1 100); do
    [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] && break
    sleep 0.1
done
[[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] || die "the private redis-server did not start"

# --- 4. in-process figures ---------------------------------------------------
if [[ -z "$ONLY" ]]; then
    measure_args=(measure --port "$REDIS_PORT" --out "$RESULTS_DIR/results.json" --runs "$RUNS"
        --functions-dir "$TARGET_DIR/release" --arm64-dir "$TARGET_DIR/lambda" --sizes-file BUILD_SIZES.md
        --client-threads "${BENCH_CLIENT_THREADS:-1}")
    [[ -z "$QUICK" ]] || measure_args+=(--quick)
    # Figure 5's arm64 sizes come from the last `make release`: say so when the
    # functions' sources differ from what it built (the commit it recorded, else
    # the files' modification times).
    arm64_probe="$TARGET_DIR/lambda/ingest-metric/bootstrap"
    built_from="$(cat "$TARGET_DIR/lambda/BUILT_FROM" 2>/dev/null || true)"
    if [[ -e "$arm64_probe" ]]; then
        state=unknown
        [[ -z "$built_from" || "$built_from" == *+changes ]] || state="$(sources_since "$built_from")"
        if [[ "$state" == changed ]] || { [[ "$state" == unknown ]] &&
            [[ -n "$(find "${RELEASE_SOURCES[@]}" -newer "$arm64_probe" -type f -print -quit 2>/dev/null)" ]]; }; then
            measure_args+=(--arm64-stale)
        fi
    fi
    # Without a release build here, figure 5 copies the sizes BUILD_SIZES.md
    # recorded; say which commit they were built from and whether the functions'
    # sources changed since.
    recorded="$(grep -m 1 '^Built from commit `' BUILD_SIZES.md || true)"
    recorded_commit="$(sed -n 's/^Built from commit `\([0-9a-f]\{7,40\}\)`.*/\1/p' <<<"$recorded")"
    sources="$(printf '`%s`, ' "${RELEASE_SOURCES[@]}")"
    built="built from commit \`${recorded_commit:0:12}\`"
    if [[ -z "$recorded_commit" ]]; then
        sizes_sources="which does not say which commit they were built from"
    elif [[ "$recorded" == *uncommitted* ]]; then
        sizes_sources="$built with uncommitted changes, so they may differ from what these sources build"
    else
        case "$(sources_since "$recorded_commit")" in
        unchanged) sizes_sources="$built; the functions' sources (${sources%, }) have not changed since" ;;
        changed) sizes_sources="$built; the functions' sources (${sources%, }) have changed since, so these may differ from what they build now (run \`make release\`, then \`make bench\`)" ;;
        *) sizes_sources="$built, which this checkout cannot compare with (not a git checkout, or one without that commit), so they may differ from what these sources build" ;;
        esac
    fi
    measure_args+=(--sizes-sources "$sizes_sources")
    log "bench ${measure_args[*]}"
    timeout 1800 "$BENCH" "${measure_args[@]}" || die "bench measure failed"

    log "starting a private Redis Cluster (3 masters, 3 replicas) on free ports of 127.0.0.1"
    start_cluster
    cluster_args=(cluster --port "$REDIS_PORT" --cluster-port "$CLUSTER_PORT"
        --results "$RESULTS_DIR/results.json" --client-threads "${BENCH_CLIENT_THREADS:-1}")
    log "bench ${cluster_args[*]}"
    timeout 900 "$BENCH" "${cluster_args[@]}" || die "bench cluster failed"
    stop_cluster
fi

# --- 5. end to end -----------------------------------------------------------
report_args=()
if [[ -n "$ONLY" ]]; then
    report_args+=(--only "$ONLY")
elif [[ -z "$e2e_note" ]]; then
    STACK_PORT="$(free_port)"
    E2E_PREFIX="bench-e2e-$(random_suffix)"
    printf '%s\n' "REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0" "REDIS_KEY_PREFIX=$E2E_PREFIX" \
        RATE_LIMIT_REQUESTS=1000000 EXTERNAL_SERVICE_LATENCY_MS=0 EXTERNAL_SERVICE_FAILURE_RATE=0 \
        CACHE_TTL_SECONDS=3600 RUST_LOG=info METRICS_EMF=on >"$WORK_DIR/stack.env"
    log "starting cargo lambda watch --release on 127.0.0.1:$STACK_PORT (--concurrency $WRK_CONNECTIONS)"
    cargo lambda watch --release --env-file "$WORK_DIR/stack.env" --invoke-address 127.0.0.1 \
        --invoke-port "$STACK_PORT" --concurrency "$WRK_CONNECTIONS" --ignore-changes \
        </dev/null >"$WORK_DIR/stack.log" 2>&1 &
    WATCH_PID=$!
    deadline=$((SECONDS + 300))
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "http://127.0.0.1:$STACK_PORT/health")" == 200 ]]; do
        if ((SECONDS >= deadline)) || ! kill -0 "$WATCH_PID" 2>/dev/null; then
            tail -n 30 "$WORK_DIR/stack.log" >&2 || true
            die "cargo lambda watch did not answer GET /health with 200 within 300 s"
        fi
        sleep 1
    done

    summary_path="/api/metrics/summary?type=bench_e2e&period=daily"
    # wrk_command LABEL SECONDS METHOD PATH: the wrk command of one run, as the
    # report shows it (without the URL).
    wrk_command() {
        local type=""
        [[ "$3" == POST ]] && type=" WRK_TYPE=bench_e2e"
        printf "WRK_LABEL=%s WRK_METHOD=%s WRK_PATH='%s'%s WRK_CONNECTIONS=%s wrk -t 1 -c %s -d %ss --timeout 5s -s tools/bench/wrk.lua" \
            "$1" "$3" "$4" "$type" "$WRK_CONNECTIONS" "$WRK_CONNECTIONS" "$2"
    }
    # wrk_run LABEL SECONDS METHOD PATH: runs that command, bounded in time;
    # prints its JSON line of results (tools/bench/wrk.lua).
    wrk_run() {
        local output
        output="$(WRK_LABEL="$1" WRK_METHOD="$3" WRK_PATH="$4" WRK_TYPE=bench_e2e WRK_CONNECTIONS="$WRK_CONNECTIONS" \
            timeout $(($2 + 60)) wrk -t 1 -c "$WRK_CONNECTIONS" -d "$2s" --timeout 5s \
            -s tools/bench/wrk.lua "http://127.0.0.1:$STACK_PORT")" || die "wrk failed: $output"
        grep '^{' <<<"$output" || die "wrk printed no results: $output"
    }
    # warm_up METHOD PATH: loads the route until every instance the emulator
    # starts for it is up. The emulator starts each instance with `cargo run`,
    # which waits while any other cargo command holds the target directory's
    # lock, so this can take a while on a busy machine; it is done when a 3 s
    # run looks warm (wrk.lua: over 100 requests, p99 under 1 s), at most
    # 5 minutes.
    warm_up() {
        local deadline=$((SECONDS + 300)) line
        while ((SECONDS < deadline)); do
            line="$(wrk_run warmup 3 "$1" "$2")"
            [[ "$line" == *'"warm":true'* ]] && return 0
            log "warming up $1 $2: instances still starting ($line)"
        done
        die "the emulator's instances for $1 $2 did not come up within 5 minutes"
    }
    # Start every instance and cache the summary before measuring.
    log "warming up the emulator's function instances"
    warm_up POST /api/metrics
    warm_up GET "$summary_path"
    for run in $(seq 1 "$RUNS"); do
        log "run $run/$RUNS: wrk, ingest then summary hits, ${WRK_SECONDS}s each"
        # Every ingest run starts from an empty sliding log of its one client.
        "$BENCH" clear --port "$REDIS_PORT" --pattern "$E2E_PREFIX:rl:*" ||
            die "could not clear the rate-limit keys of figure 4"
        wrk_run ingest "$WRK_SECONDS" POST /api/metrics >>"$RESULTS_DIR/e2e.jsonl"
        wrk_run summary_hit "$WRK_SECONDS" GET "$summary_path" >>"$RESULTS_DIR/e2e.jsonl"
    done
    # Figure 10 on the same stack: function CPU per invocation, the floor
    # (`bench-floor`) and three routes in alternating rounds, at least 3.
    invocation_runs=$RUNS
    [[ -n "$QUICK" ]] || ((invocation_runs >= 3)) || invocation_runs=3
    log "figure 10: function CPU per invocation, $invocation_runs rounds of ${WRK_SECONDS}s per route"
    "$BENCH" clear --port "$REDIS_PORT" --pattern "$E2E_PREFIX:rl:*" ||
        die "could not clear the rate-limit keys of figure 10"
    timeout $((invocation_runs * 4 * (WRK_SECONDS + 60) + 600)) "$BENCH" invocation \
        --url "http://127.0.0.1:$STACK_PORT" --out "$RESULTS_DIR/invocation.jsonl" \
        --runs "$invocation_runs" --seconds "$WRK_SECONDS" --connections "$INVOCATION_CONNECTIONS" \
        --functions-dir "$TARGET_DIR/release" ||
        die "bench invocation failed"
    stop_stack
    report_args+=(--e2e-prefix "$E2E_PREFIX" --e2e-commands "$(
        printf 'cargo lambda watch --release --env-file <env file> --invoke-address 127.0.0.1 --invoke-port <port> --concurrency %s --ignore-changes\n' "$WRK_CONNECTIONS"
        printf '%s http://127.0.0.1:<port>\n' "$(wrk_command ingest "$WRK_SECONDS" POST /api/metrics)" \
            "$(wrk_command summary_hit "$WRK_SECONDS" GET "$summary_path")"
        printf '%s invocation --url http://127.0.0.1:<port> --out %s --runs %s --seconds %s --connections %s\n' \
            "$BENCH" "$RESULTS_DIR/invocation.jsonl" "$invocation_runs" "$WRK_SECONDS" "$INVOCATION_CONNECTIONS"
    )")
else
    report_args+=(--e2e-note "$e2e_note")
fi

# --- 5b. side by side with the original design (figure 9) --------------------
if [[ -z "$peer_note" ]]; then
    # Lambda runs one instance per request in flight, so ours may have as
    # many instances as wrk's largest number of connections (the emulator
    # starts them on demand); the peer keeps its design's 4 workers.
    OURS_CONCURRENCY=16
    PEER_WORKERS=4
    OURS_PORT="$(free_port)"
    SEED_PORT="$(free_port)"
    OURS_PREFIX="bench-ours-$(random_suffix)"
    SEED_PREFIX="bench-seed-$(random_suffix)"
    # Both trust one proxy hop (our TRUSTED_PROXY_HOPS, uvicorn's default
    # for 127.0.0.1), so wrk gives every request its own client; the same
    # limit, cache lifetime and external source for both.
    common=(RATE_LIMIT_REQUESTS=1000 CACHE_TTL_SECONDS=3600 EXTERNAL_SERVICE_LATENCY_MS=0
        EXTERNAL_SERVICE_FAILURE_RATE=0)
    printf '%s\n' "REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0" "REDIS_KEY_PREFIX=$OURS_PREFIX" \
        TRUSTED_PROXY_HOPS=1 RUST_LOG=info "${common[@]}" >"$WORK_DIR/ours.env"
    log "figure 9: cargo lambda watch --release on 127.0.0.1:$OURS_PORT (--concurrency $OURS_CONCURRENCY)"
    cargo lambda watch --release --env-file "$WORK_DIR/ours.env" --invoke-address 127.0.0.1 \
        --invoke-port "$OURS_PORT" --concurrency "$OURS_CONCURRENCY" --ignore-changes \
        </dev/null >"$WORK_DIR/ours.log" 2>&1 &
    WATCH_PID=$!
    log "figure 9: the original design under uvicorn on 127.0.0.1:$SEED_PORT ($PEER_WORKERS workers)"
    env REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" REDIS_KEY_PREFIX="$SEED_PREFIX" "${common[@]}" \
        "$PEER_VENV/bin/uvicorn" --app-dir tools/seed-peer app:app --host 127.0.0.1 --port "$SEED_PORT" \
        --workers "$PEER_WORKERS" --no-access-log --log-level warning \
        </dev/null >"$WORK_DIR/seed.log" 2>&1 &
    PEER_PID=$!
    wait_for_health "http://127.0.0.1:$OURS_PORT" "$WATCH_PID" || {
        tail -n 30 "$WORK_DIR/ours.log" >&2 || true
        die "cargo lambda watch did not answer GET /health with 200 within 300 s"
    }
    wait_for_health "http://127.0.0.1:$SEED_PORT" "$PEER_PID" || {
        tail -n 30 "$WORK_DIR/seed.log" >&2 || true
        die "the peer (uvicorn) did not answer GET /health with 200 within 300 s"
    }
    peer_args=(peer --port "$REDIS_PORT" --redis-pid "$REDIS_PID" --out "$RESULTS_DIR/peer.json"
        --ours-url "http://127.0.0.1:$OURS_PORT" --ours-pid "$WATCH_PID" --ours-prefix "$OURS_PREFIX"
        --seed-url "http://127.0.0.1:$SEED_PORT" --seed-pid "$PEER_PID" --seed-prefix "$SEED_PREFIX"
        --emulator-concurrency "$OURS_CONCURRENCY" --peer-workers "$PEER_WORKERS"
        --rounds "${BENCH_RUNS:-$([[ -n "$QUICK" ]] && echo 1 || echo 3)}"
        --seconds "${BENCH_WRK_SECONDS:-$([[ -n "$QUICK" ]] && echo 3 || echo 8)}"
        --commands "$(
            printf 'cargo lambda watch --release --env-file <env file: TRUSTED_PROXY_HOPS=1 %s> --invoke-address 127.0.0.1 --invoke-port <port> --concurrency %s --ignore-changes\n' \
                "${common[*]}" "$OURS_CONCURRENCY"
            printf '%s uvicorn --app-dir tools/seed-peer app:app --host 127.0.0.1 --port <port> --workers %s --no-access-log\n' \
                "${common[*]}" "$PEER_WORKERS"
        )")
    [[ -z "$QUICK" ]] || peer_args+=(--quick)
    log "bench ${peer_args[*]}"
    timeout 1800 "$BENCH" "${peer_args[@]}" || die "bench peer failed"
    stop_stack
    stop_peer
    report_args+=(--peer-note "")
else
    report_args+=(--peer-note "$peer_note")
fi

# --- 6. the report -----------------------------------------------------------
# The README quotes BENCHMARKS.md's headline; a report written elsewhere
# starts from a copy of BENCHMARKS.md's text and leaves the README alone.
[[ -e "$OUT" ]] || cp BENCHMARKS.md "$OUT"
[[ "$OUT" != BENCHMARKS.md ]] || report_args+=(--readme README.md)
"$BENCH" report --dir "$RESULTS_DIR" --out "$OUT" "${report_args[@]}" \
    --command "$bench_command" --build-seconds "$build_seconds" --build-kind "$build_kind" \
    --elapsed-seconds "$((SECONDS - started))" --load-before-build "$load_before_build" \
    --wrk-duration "${WRK_SECONDS} s"
log "done in $((SECONDS - started)) s: $OUT"
# The whole command is meant to take under 20 minutes on 2 cores, build
# included; say so when it did not (a busy machine, or a slower one).
((SECONDS - started <= 1800)) ||
    warn "make bench took $((SECONDS - started)) s, more than its 30-minute budget; see the load average in $OUT"
