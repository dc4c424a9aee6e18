#!/usr/bin/env bash
# `make test`: the whole test suite.
#
#   1. starts Redis when none answers on REDIS_URL (scripts/ensure-redis.sh) and
#      installs cargo-lambda when missing (scripts/ensure-cargo-lambda.sh);
#   2. runs `cargo test --workspace` (unit and in-process integration tests;
#      the end-to-end tests are #[ignore]d there);
#   3. runs the end-to-end suite (tests/tests/e2e.rs) over HTTP, group by group:
#      each group gets its own `cargo lambda watch` on a free port (never 8000),
#      with its own random REDIS_KEY_PREFIX and the settings listed in
#      E2E_GROUP_SETTINGS below, and the watcher is stopped afterwards, whatever
#      happens (trap).
#
# End-to-end groups: a test named `e2e_<group>_...` runs against the stack of
# <group>. A test whose name matches no group fails the run, so none is
# skipped silently. Each group's tests see:
#   E2E_BASE_URL        http://127.0.0.1:<port> of their stack
#   E2E_GROUP           the group's name
#   E2E_STUB_PORT       a free port; the stack's EXTERNAL_SERVICE_URL points at
#                       http://127.0.0.1:<E2E_STUB_PORT>/external when the group
#                       asks for it (@STUB_URL@), and the test serves it there
#   E2E_STACK_ENV_FILE  the env file the stack was started with (its settings)
#
# The group `schemathesis` runs no cargo tests: scripts/schemathesis.sh
# generates requests from openapi.json against its stack and fails on any 5xx
# and on any response that does not conform to the document.
#
# Redis started by this script (none answered) is stopped again at the end.
#
# Options (environment): E2E_GROUPS="default cache" runs only those groups;
# E2E_ONLY=1 skips step 2; E2E_CONCURRENCY (function instances per route,
# default 4); E2E_STARTUP_TIMEOUT_SECONDS (default 300); E2E_KEEP_LOGS=1 keeps
# the watchers' logs (their folder is printed); KEEP_REDIS=1 leaves a Redis this
# script started running; TEST_TIMEOUT_SECONDS and E2E_GROUP_TIMEOUT_SECONDS
# bound the test commands when stdin is not a terminal (CI).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

# Settings of each group's stack, on top of REDIS_URL and a random
# REDIS_KEY_PREFIX. The emulator reports every caller as 127.0.0.1, so every
# group but `ratelimit` needs a rate limit far above what the suite sends.
# @STUB_URL@ is replaced by the URL of the group's stub external source.
declare -A E2E_GROUP_SETTINGS=(
    [default]="RATE_LIMIT_REQUESTS=100000 EXTERNAL_SERVICE_FAILURE_RATE=0 EXTERNAL_SERVICE_LATENCY_MS=5"
    [ratelimit]="RATE_LIMIT_REQUESTS=3 RATE_LIMIT_WINDOW_SECONDS=60 RATE_LIMIT_ALGORITHM=sliding_log"
    [cache]="RATE_LIMIT_REQUESTS=100000 EXTERNAL_SERVICE_URL=@STUB_URL@ EXTERNAL_SERVICE_TIMEOUT_MS=2000 REQUEST_DEADLINE_MS=6000 CACHE_TTL_SECONDS=60 CACHE_FALLBACK_TTL_SECONDS=2 CIRCUIT_BREAKER_FAILURE_THRESHOLD=1000"
    [breaker]="RATE_LIMIT_REQUESTS=100000 EXTERNAL_SERVICE_URL=@STUB_URL@ EXTERNAL_SERVICE_TIMEOUT_MS=500 CIRCUIT_BREAKER_FAILURE_THRESHOLD=3 CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS=3 CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS=1 CACHE_FALLBACK_TTL_SECONDS=1 CACHE_TTL_SECONDS=60"
    # The simulated source with its default failure rate, so that fallback
    # bodies (and an open breaker) are checked against the document too.
    [schemathesis]="RATE_LIMIT_REQUESTS=1000000 EXTERNAL_SERVICE_LATENCY_MS=5"
)
# The order the groups run in.
E2E_GROUP_ORDER=(default ratelimit cache breaker schemathesis)

E2E_GROUPS="${E2E_GROUPS:-${E2E_GROUP_ORDER[*]}}"
E2E_CONCURRENCY="${E2E_CONCURRENCY:-4}"
E2E_STARTUP_TIMEOUT_SECONDS="${E2E_STARTUP_TIMEOUT_SECONDS:-300}"
# Bound on one group's test run, so that a hung test cannot hang CI.
E2E_GROUP_TIMEOUT_SECONDS="${E2E_GROUP_TIMEOUT_SECONDS:-900}"

# Bound on `cargo test --workspace` (compilation included).
TEST_TIMEOUT_SECONDS="${TEST_TIMEOUT_SECONDS:-3600}"

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/analytics-e2e.XXXXXX")"
WATCH_PID=""
REDIS_STARTED_HERE=""

# bounded SECONDS COMMAND...: runs COMMAND with a time limit when nobody
# watches (CI: no terminal on stdin), so a hung test cannot hang the job. At a
# terminal it runs as is, so that Ctrl-C reaches it at once (timeout(1) would
# move it out of the terminal's foreground process group).
bounded() {
    local limit="$1"
    shift
    if [[ -t 0 ]]; then
        "$@"
    else
        timeout --kill-after=30 "$limit" "$@"
    fi
}

cleanup() {
    local status=$?
    stop_stack
    if [[ -n "$REDIS_STARTED_HERE" ]]; then
        scripts/ensure-redis.sh --stop || true
    fi
    if [[ "${E2E_KEEP_LOGS:-}" == 1 ]]; then
        log "watcher logs kept in $WORK_DIR"
    else
        rm -rf "$WORK_DIR"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# http_status PORT PATH [TIMEOUT]: the HTTP status code of GET PATH on
# 127.0.0.1:PORT, or nothing. Plain bash, so curl is not required.
http_status() {
    local port="$1" path="$2" limit="${3:-60}"
    timeout "$limit" bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n" "$1" "$0" >&3
        IFS=" " read -r -t "$2" _ code _ <&3 || exit 1
        printf "%s" "$code"
    ' "$port" "$path" "$limit" 2>/dev/null || true
}

# start_stack GROUP: starts `cargo lambda watch` for GROUP and waits until
# GET /health answers 200 and GET /api/metrics/summary answers (the functions
# are started lazily, so this also warms them up). Sets STACK_PORT,
# STUB_PORT, STACK_ENV_FILE, STACK_LOG.
start_stack() {
    local group="$1" settings setting prefix deadline status remaining
    STACK_PORT="$(free_port)"
    STUB_PORT="$(free_port)"
    [[ "$STUB_PORT" != "$STACK_PORT" ]] || STUB_PORT="$(free_port)"
    prefix="e2e-$group-$(random_suffix)"
    STACK_ENV_FILE="$WORK_DIR/$group.env"
    STACK_LOG="$WORK_DIR/$group.log"
    settings="${E2E_GROUP_SETTINGS[$group]}"
    settings="${settings//@STUB_URL@/http://127.0.0.1:$STUB_PORT/external}"
    {
        printf 'REDIS_URL=%s\n' "$REDIS_URL"
        printf 'REDIS_KEY_PREFIX=%s\n' "$prefix"
        printf 'RUST_LOG=%s\n' "${E2E_RUST_LOG:-info}"
        for setting in $settings; do
            printf '%s\n' "$setting"
        done
    } >"$STACK_ENV_FILE"

    log "e2e[$group]: starting cargo lambda watch on 127.0.0.1:$STACK_PORT (prefix $prefix; $settings)"
    # --ignore-changes: the stack serves the code that was built, even if files
    # change while the suite runs.
    cargo lambda watch \
        --env-file "$STACK_ENV_FILE" \
        --invoke-address 127.0.0.1 \
        --invoke-port "$STACK_PORT" \
        --concurrency "$E2E_CONCURRENCY" \
        --ignore-changes \
        </dev/null >"$STACK_LOG" 2>&1 &
    WATCH_PID=$!

    deadline=$((SECONDS + E2E_STARTUP_TIMEOUT_SECONDS))
    status=""
    while ((SECONDS < deadline)); do
        if ! kill -0 "$WATCH_PID" 2>/dev/null; then
            tail -n 40 "$STACK_LOG" >&2 || true
            die "e2e[$group]: cargo lambda watch exited during startup"
        fi
        remaining=$((deadline - SECONDS))
        ((remaining > 0)) || break
        status="$(http_status "$STACK_PORT" /health $((remaining < 60 ? remaining : 60)))"
        [[ "$status" == 200 ]] && break
        sleep 1
    done
    if [[ "$status" != 200 ]]; then
        tail -n 40 "$STACK_LOG" >&2 || true
        die "e2e[$group]: GET /health did not answer 200 within ${E2E_STARTUP_TIMEOUT_SECONDS}s (last status: ${status:-none})"
    fi
    # Warm up the summary function too (a 422: no Redis work, no quota used).
    http_status "$STACK_PORT" /api/metrics/summary 120 >/dev/null
    log "e2e[$group]: stack ready"
}

# --- 1. services ---------------------------------------------------------------
REDIS_URL="$(resolve_redis_url)"
export REDIS_URL
parse_redis_url "$REDIS_URL"
if ! redis_answers "$REDIS_HOST" "$REDIS_PORT"; then
    # Started for this run only: stopped again on exit (KEEP_REDIS=1 keeps it).
    [[ "${KEEP_REDIS:-}" == 1 ]] || REDIS_STARTED_HERE=1
fi
scripts/ensure-redis.sh
scripts/ensure-cargo-lambda.sh
use_local_cargo_lambda

# --- 2. unit and integration tests ---------------------------------------------
if [[ "${E2E_ONLY:-}" != 1 ]]; then
    log "cargo test --workspace"
    bounded "$TEST_TIMEOUT_SECONDS" cargo test --workspace
fi

# --- 3. end-to-end tests ---------------------------------------------------------
build_functions || die "the functions do not build"
log "building the end-to-end tests"
cargo test -p analytics-tests --test e2e --no-run

listing="$(cargo test -q -p analytics-tests --test e2e -- --ignored --list --format terse 2>/dev/null)"
mapfile -t e2e_tests < <(printf '%s\n' "$listing" | sed -n 's/: test$//p')
if ((${#e2e_tests[@]} == 0)); then
    die "no end-to-end test found in tests/tests/e2e.rs"
fi
unknown=()
for t in "${e2e_tests[@]}"; do
    known=""
    for g in "${E2E_GROUP_ORDER[@]}"; do
        [[ "$t" == "e2e_${g}_"* ]] && known=1
    done
    [[ -n "$known" ]] || unknown+=("$t")
done
if ((${#unknown[@]} > 0)); then
    die "these end-to-end tests belong to no group (name them e2e_<group>_..., groups: ${E2E_GROUP_ORDER[*]}): ${unknown[*]}"
fi

failed=()
for group in $E2E_GROUPS; do
    [[ -n "${E2E_GROUP_SETTINGS[$group]+set}" ]] || die "unknown end-to-end group '$group' (groups: ${E2E_GROUP_ORDER[*]})"
    if [[ "$group" == schemathesis ]]; then
        start_stack "$group"
        if bounded "$E2E_GROUP_TIMEOUT_SECONDS" scripts/schemathesis.sh "http://127.0.0.1:$STACK_PORT"; then
            log "e2e[$group]: passed"
        else
            failed+=("$group")
            warn "e2e[$group]: FAILED; last lines of the watcher's log:"
            tail -n 60 "$STACK_LOG" >&2 || true
        fi
        stop_stack
        continue
    fi
    count=0
    for t in "${e2e_tests[@]}"; do
        [[ "$t" == "e2e_${group}_"* ]] && count=$((count + 1))
    done
    if ((count == 0)); then
        log "e2e[$group]: no tests"
        continue
    fi
    start_stack "$group"
    log "e2e[$group]: running $count tests against http://127.0.0.1:$STACK_PORT"
    if E2E_BASE_URL="http://127.0.0.1:$STACK_PORT" \
        E2E_GROUP="$group" \
        E2E_STUB_PORT="$STUB_PORT" \
        E2E_STACK_ENV_FILE="$STACK_ENV_FILE" \
        bounded "$E2E_GROUP_TIMEOUT_SECONDS" \
        cargo test -p analytics-tests --test e2e -- --ignored --test-threads=1 "e2e_${group}_"; then
        log "e2e[$group]: passed"
    else
        failed+=("$group")
        warn "e2e[$group]: FAILED; last lines of the watcher's log:"
        tail -n 60 "$STACK_LOG" >&2 || true
    fi
    stop_stack
done

if ((${#failed[@]} > 0)); then
    die "end-to-end groups failed: ${failed[*]}"
fi
log "all tests passed"
