#!/usr/bin/env bash
# `make bench`: measures the service against the floor set by Redis itself and
# writes BENCHMARKS.md (the `tools/bench` crate does the measuring and the
# writing; this script prepares and bounds everything around it).
#
#   1. tools: redis-server and redis-benchmark (required), wrk (installed with
#      apt-get when missing and possible; figure 4 is skipped without it),
#      cargo-lambda (scripts/ensure-cargo-lambda.sh; figure 4 needs it);
#   2. builds the three API functions and the bench in release mode
#      (`cargo build --release`);
#   3. starts a private redis-server on a free port of 127.0.0.1 (no
#      persistence, its own directory), so that INFO and MEMORY USAGE see only
#      the benchmark's data and nobody else's work disturbs the numbers;
#   4. `bench measure`: figures 1, 2, 3, 5 and 6 in-process (round trips,
#      ingest throughput beside redis-benchmark replaying our scripts, summary
#      cost versus data size, cold starts, Redis memory);
#   5. figure 4: `cargo lambda watch --release` on a free port, loaded by wrk
#      for a fixed time per run (tools/bench/wrk.lua);
#   6. `bench report`: BENCHMARKS.md, and the Performance section of README.md
#      (between its `section: benchmarks` markers), which quotes it.
# Everything it started (Redis, the emulator and its functions) is stopped at
# the end, whatever happens. Only 127.0.0.1 is ever sent traffic; every load is
# bounded in count or time. The raw results stay in target/bench/ (results.json,
# e2e.jsonl and the report's arguments), so the report can be written again
# without measuring:
#
#   mapfile -t a <target/bench/report-args && target/release/bench "${a[@]}"
#
# Options (environment):
#   BENCH_RUNS=5             runs of every figure
#   BENCH_WRK_SECONDS=10     length of one wrk run (figure 4)
#   BENCH_WRK_CONNECTIONS=16 wrk connections, and emulator instances per function
#   BENCH_OUT=BENCHMARKS.md  where the report goes
#   BENCH_QUICK=1            tiny data sets and one run, to try the harness
#   BENCH_SKIP_E2E=1         skip figure 4
#   (BENCH_QUICK and BENCH_SKIP_E2E are on for 1, true or yes; off when unset,
#   empty, 0, false or no.) The report's command line names every one of these
#   that is set, so it can be run again as written.
#   BENCH_CLIENT_THREADS=1   threads of the runtime the in-process instances run
#                            on (1, like redis-benchmark's one event loop)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

RUNS="${BENCH_RUNS:-5}"
WRK_SECONDS="${BENCH_WRK_SECONDS:-10}"
WRK_CONNECTIONS="${BENCH_WRK_CONNECTIONS:-16}"
OUT="${BENCH_OUT:-BENCHMARKS.md}"

# is_on VALUE: a switch given as 1/true/yes (any case) is on; unset, empty,
# 0, false or no is off; anything else is refused.
is_on() {
    case "${1,,}" in
    1 | true | yes | on) return 0 ;;
    "" | 0 | false | no | off) return 1 ;;
    *) die "expected 1/0, true/false or yes/no, got '$1'" ;;
    esac
}
QUICK=""
is_on "${BENCH_QUICK:-}" && QUICK=1
SKIP_E2E=""
is_on "${BENCH_SKIP_E2E:-}" && SKIP_E2E=1
# The command as it can be run again: `make bench` after the options set.
bench_command="make bench"
for name in BENCH_CLIENT_THREADS BENCH_WRK_CONNECTIONS BENCH_WRK_SECONDS BENCH_SKIP_E2E BENCH_QUICK BENCH_OUT BENCH_RUNS; do
    [[ -n "${!name:-}" ]] && bench_command="$name=${!name} $bench_command"
done
if [[ -n "$QUICK" ]]; then
    RUNS="${BENCH_RUNS:-1}"
    WRK_SECONDS="${BENCH_WRK_SECONDS:-3}"
fi
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
# The functions measured (cold start) and served by the emulator (docs only
# serves static documents and is left out to keep the build short).
BENCH_FUNCTIONS=(health ingest-metric metrics-summary)

started=$SECONDS
load_before_build="$(cut -d' ' -f1-3 /proc/loadavg | sed 's| | / |g')"
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/analytics-bench.XXXXXX")"
RESULTS_DIR="$TARGET_DIR/bench"
mkdir -p "$RESULTS_DIR"
REDIS_PID=""
WATCH_PID=""

cleanup() {
    local status=$?
    stop_stack
    if [[ -n "$REDIS_PID" ]]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# http_status PORT PATH: the status code of GET PATH on 127.0.0.1:PORT, or nothing.
http_status() {
    timeout 60 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$1" >&3
        IFS=" " read -r -t 55 _ code _ <&3 || exit 1
        printf "%s" "$code"
    ' "$1" "$2" 2>/dev/null || true
}

# --- 1. tools ---------------------------------------------------------------
for tool in redis-server redis-benchmark; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool is needed (Debian/Ubuntu: apt-get install redis-server redis-tools; macOS: brew install redis)"
done
e2e_note=""
if [[ -n "$SKIP_E2E" ]]; then
    e2e_note="skipped with BENCH_SKIP_E2E"
fi
if [[ -z "$e2e_note" ]] && ! command -v wrk >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        log "installing wrk (apt-get install wrk)"
        timeout 300 apt-get install -y -q wrk >/dev/null 2>&1 ||
            { timeout 300 apt-get update -q >/dev/null 2>&1 && timeout 300 apt-get install -y -q wrk >/dev/null 2>&1; } ||
            true
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
[[ -z "$e2e_note" ]] || warn "figure 4 (end to end) will be skipped: $e2e_note"

# --- 2. build ----------------------------------------------------------------
# One invocation selecting the binaries by name (`--bin`, no `-p`), as
# `cargo lambda watch --release` starts each function (`cargo run --release
# --bin <name>`): features are then resolved once over the whole workspace,
# so the emulator finds these binaries up to date instead of compiling the
# dependencies again with another feature set, and the bench shares them.
build_started=$SECONDS
build_kind="from scratch"
[[ -e "$TARGET_DIR/release/bench" ]] && build_kind="incremental: an earlier build was there"
bins=()
for f in "${BENCH_FUNCTIONS[@]}" bench; do
    bins+=(--bin "$f")
done
log "cargo build --release ${bins[*]}"
cargo build --release "${bins[@]}" || die "the release build failed"
build_seconds=$((SECONDS - build_started))
BENCH="$TARGET_DIR/release/bench"

# --- 3. a private Redis ------------------------------------------------------
REDIS_PORT="$(free_port)"
mkdir -p "$WORK_DIR/redis"
log "starting a private redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK_DIR/redis" --logfile "$WORK_DIR/redis/redis.log" </dev/null &
REDIS_PID=$!
for _ in $(seq 1 100); do
    redis_answers 127.0.0.1 "$REDIS_PORT" && break
    sleep 0.1
done
redis_answers 127.0.0.1 "$REDIS_PORT" || die "the private redis-server did not start"

# --- 4. in-process figures ---------------------------------------------------
measure_args=(measure --port "$REDIS_PORT" --out "$RESULTS_DIR/results.json" --runs "$RUNS"
    --functions-dir "$TARGET_DIR/release" --arm64-dir "$TARGET_DIR/lambda" --sizes-file BUILD_SIZES.md
    --client-threads "${BENCH_CLIENT_THREADS:-1}")
[[ -z "$QUICK" ]] || measure_args+=(--quick)
# The arm64 sizes (figure 5) come from the last `make release`; say so when
# the functions' sources differ from what it built (the commit it recorded,
# else the files' modification times).
arm64_probe="$TARGET_DIR/lambda/ingest-metric/bootstrap"
built_from="$(cat "$TARGET_DIR/lambda/BUILT_FROM" 2>/dev/null || true)"
if [[ -e "$arm64_probe" ]]; then
    state=unknown
    [[ -z "$built_from" || "$built_from" == *+changes ]] || state="$(sources_since "$built_from")"
    case "$state" in
    changed) measure_args+=(--arm64-stale) ;;
    unknown)
        [[ -z "$(find "${RELEASE_SOURCES[@]}" -newer "$arm64_probe" -type f -print -quit 2>/dev/null)" ]] ||
            measure_args+=(--arm64-stale)
        ;;
    esac
fi
# Without a release build here, figure 5 copies the sizes BUILD_SIZES.md
# recorded; say which commit they were built from and whether the functions'
# sources changed since.
recorded="$(grep -m 1 '^Built from commit `' BUILD_SIZES.md || true)"
recorded_commit="$(sed -n 's/^Built from commit `\([0-9a-f]\{7,40\}\)`.*/\1/p' <<<"$recorded")"
short="${recorded_commit:0:12}"
sources="$(printf '`%s`, ' "${RELEASE_SOURCES[@]}")"
sources="${sources%, }"
if [[ -z "$recorded_commit" ]]; then
    sizes_sources="which does not say which commit they were built from"
elif [[ "$recorded" == *uncommitted* ]]; then
    sizes_sources="built from commit \`$short\` with uncommitted changes, so they may differ from what these sources build"
else
    case "$(sources_since "$recorded_commit")" in
    unchanged) sizes_sources="built from commit \`$short\`; the functions' sources (${sources}) have not changed since" ;;
    changed) sizes_sources="built from commit \`$short\`; the functions' sources (${sources}) have changed since, so these may differ from what they build now (run \`make release\`, then \`make bench\`)" ;;
    *) sizes_sources="built from commit \`$short\`, which this checkout cannot compare with (not a git checkout, or one without that commit), so they may differ from what these sources build" ;;
    esac
fi
measure_args+=(--sizes-sources "$sizes_sources")
log "bench ${measure_args[*]}"
timeout 1800 "$BENCH" "${measure_args[@]}" || die "bench measure failed"

# --- 5. end to end -----------------------------------------------------------
: >"$RESULTS_DIR/e2e.jsonl"
if [[ -z "$e2e_note" ]]; then
    STACK_PORT="$(free_port)"
    E2E_PREFIX="bench-e2e-$(random_suffix)"
    {
        printf 'REDIS_URL=redis://127.0.0.1:%s/0\n' "$REDIS_PORT"
        printf 'REDIS_KEY_PREFIX=%s\n' "$E2E_PREFIX"
        printf 'RATE_LIMIT_REQUESTS=1000000\n'
        printf 'EXTERNAL_SERVICE_LATENCY_MS=0\n'
        printf 'EXTERNAL_SERVICE_FAILURE_RATE=0\n'
        printf 'CACHE_TTL_SECONDS=3600\n'
        printf 'RUST_LOG=info\n'
    } >"$WORK_DIR/stack.env"
    log "starting cargo lambda watch --release on 127.0.0.1:$STACK_PORT (--concurrency $WRK_CONNECTIONS)"
    cargo lambda watch --release \
        --env-file "$WORK_DIR/stack.env" \
        --invoke-address 127.0.0.1 \
        --invoke-port "$STACK_PORT" \
        --concurrency "$WRK_CONNECTIONS" \
        --ignore-changes \
        </dev/null >"$WORK_DIR/stack.log" 2>&1 &
    WATCH_PID=$!
    deadline=$((SECONDS + 300))
    status=""
    while ((SECONDS < deadline)); do
        kill -0 "$WATCH_PID" 2>/dev/null || break
        status="$(http_status "$STACK_PORT" /health)"
        [[ "$status" == 200 ]] && break
        sleep 1
    done
    if [[ "$status" != 200 ]]; then
        tail -n 30 "$WORK_DIR/stack.log" >&2 || true
        die "cargo lambda watch did not answer GET /health with 200 within 300 s"
    fi

    # wrk_line LABEL SECONDS METHOD PATH: one bounded wrk run; prints its
    # JSON line of results (tools/bench/wrk.lua).
    wrk_line() {
        local label="$1" seconds="$2" method="$3" path="$4" output
        output="$(WRK_LABEL="$label" WRK_METHOD="$method" WRK_PATH="$path" WRK_TYPE=bench_e2e \
            WRK_CONNECTIONS="$WRK_CONNECTIONS" \
            timeout $((seconds + 60)) wrk -t 1 -c "$WRK_CONNECTIONS" -d "${seconds}s" --timeout 5s \
            -s tools/bench/wrk.lua "http://127.0.0.1:$STACK_PORT")" ||
            die "wrk failed: $output"
        grep '^{' <<<"$output" || die "wrk printed no results: $output"
    }
    # json_number FIELD LINE: a number field of a JSON line.
    json_number() {
        sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"
    }
    # warm_up METHOD PATH: loads the route until every instance the emulator
    # starts for it is up. The emulator starts each instance with `cargo run`,
    # which waits while any other cargo command holds the target directory's
    # lock, so this can take a while on a busy machine; it is done when a 3 s
    # run completes requests with a p99 under 1 s (at most 5 minutes).
    warm_up() {
        local deadline=$((SECONDS + 300)) line requests p99
        while ((SECONDS < deadline)); do
            line="$(wrk_line warmup 3 "$1" "$2")"
            requests="$(json_number requests "$line")"
            p99="$(json_number p99_us "$line")"
            if ((${requests:-0} > 100)) && [[ -n "$p99" ]] && ((${p99%.*} < 1000000)); then
                return 0
            fi
            log "warming up $1 $2: $requests requests, p99 ${p99:-?} µs; instances still starting"
        done
        die "the emulator's instances for $1 $2 did not come up within 5 minutes"
    }
    summary_path="/api/metrics/summary?type=bench_e2e&period=daily"
    # Start every instance and cache the summary before measuring.
    log "warming up the emulator's function instances"
    warm_up POST /api/metrics
    warm_up GET "$summary_path"
    # clear_rate_limits: deletes the one client's sliding log, so that every
    # ingest run starts from an empty log instead of the previous runs'.
    clear_rate_limits() {
        "$BENCH" clear --port "$REDIS_PORT" --pattern "$E2E_PREFIX:rl:*" ||
            die "could not clear the rate-limit keys of figure 4"
    }
    # The commands, for the report (ports are chosen per run).
    {
        printf 'cargo lambda watch --release --env-file <env file> --invoke-address 127.0.0.1 --invoke-port <port> --concurrency %s --ignore-changes\n' "$WRK_CONNECTIONS"
        printf 'WRK_LABEL=ingest WRK_METHOD=POST WRK_PATH=/api/metrics WRK_TYPE=bench_e2e WRK_CONNECTIONS=%s wrk -t 1 -c %s -d %ss --timeout 5s -s tools/bench/wrk.lua http://127.0.0.1:<port>\n' "$WRK_CONNECTIONS" "$WRK_CONNECTIONS" "$WRK_SECONDS"
        printf "WRK_LABEL=summary_hit WRK_METHOD=GET WRK_PATH='%s' WRK_CONNECTIONS=%s wrk -t 1 -c %s -d %ss --timeout 5s -s tools/bench/wrk.lua http://127.0.0.1:<port>\n" "$summary_path" "$WRK_CONNECTIONS" "$WRK_CONNECTIONS" "$WRK_SECONDS"
    } >"$RESULTS_DIR/e2e-commands"
    for run in $(seq 1 "$RUNS"); do
        log "run $run/$RUNS: wrk, ingest then summary hits, ${WRK_SECONDS}s each"
        clear_rate_limits
        wrk_line ingest "$WRK_SECONDS" POST /api/metrics >>"$RESULTS_DIR/e2e.jsonl"
        wrk_line summary_hit "$WRK_SECONDS" GET "$summary_path" >>"$RESULTS_DIR/e2e.jsonl"
    done
    stop_stack
fi

# --- 6. the report -----------------------------------------------------------
report_args=(report --results "$RESULTS_DIR/results.json" --e2e "$RESULTS_DIR/e2e.jsonl" --out "$OUT"
    --command "$bench_command"
    --build-seconds "$build_seconds" --build-kind "$build_kind" --elapsed-seconds "$((SECONDS - started))"
    --load-before-build "$load_before_build"
    --wrk-duration "${WRK_SECONDS} s"
    --e2e-setting "\`--concurrency $WRK_CONNECTIONS\` instances per function")
if [[ -z "$e2e_note" ]]; then
    report_args+=(--e2e-prefix "$E2E_PREFIX" --e2e-commands "$RESULTS_DIR/e2e-commands")
else
    report_args+=(--e2e-note "$e2e_note")
fi
# The README quotes the figures of BENCHMARKS.md; a report written elsewhere
# leaves it alone.
[[ "$OUT" != BENCHMARKS.md ]] || report_args+=(--readme README.md)
printf '%s\n' "${report_args[@]}" >"$RESULTS_DIR/report-args"
"$BENCH" "${report_args[@]}"
log "done in $((SECONDS - started)) s: $OUT"
# The whole command is meant to take under 20 minutes on 2 cores, build
# included; say so when it did not (a busy machine, or a slower one).
((SECONDS - started <= 1200)) ||
    warn "make bench took $((SECONDS - started)) s, more than its 20-minute budget; see the load average in $OUT"
