#!/usr/bin/env bash
# `make test`: installs what the suite needs, then runs it with cargo.
#
#   1. Redis: started when none answers on REDIS_URL (scripts/ensure-redis.sh)
#      and stopped again at the end (KEEP_REDIS=1 keeps it); the tests get
#      that REDIS_URL;
#   2. cargo-lambda (scripts/ensure-cargo-lambda.sh) and schemathesis, pinned,
#      into .venv/ when missing;
#   3. `cargo test --workspace` (or `cargo test ARGS...`: `make e2e` passes
#      `-p analytics-tests --test 'e2e_*'`) with REQUIRE_E2E=1, so a missing
#      tool fails the end-to-end tests instead of skipping them. Each
#      end-to-end group starts and stops its own stack: tests/support/e2e.rs.
#   4. the integration and end-to-end tests (`-p analytics-tests`, or the
#      same ARGS) again on a local Redis Cluster (scripts/redis-cluster.sh:
#      3 masters, 3 replicas on 127.0.0.1:7000-7005, REDIS_CLUSTER_PORT),
#      with REDIS_MODE=cluster; the cluster is stopped again unless it was
#      running before. TEST_CLUSTER=0 skips this pass.
#
# Bounded by TEST_TIMEOUT_SECONDS (default 3600) when stdin is not a terminal
# (CI), so a hung test cannot hang the job. Exits non-zero on any failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

# A new schemathesis release brings new checks and generators, which must not
# fail an unchanged API: raise the version on purpose.
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
started_at=$SECONDS
check_prerequisites test
marker="$(mktemp)"
# Tests that could not run write a line here (tests/support: report_skipped),
# so the closing summary lists them instead of counting them as passed.
SKIPPED_TESTS_FILE="$(mktemp)"
export SKIPPED_TESTS_FILE
REDIS_URL="$(redis_url)"
export REDIS_URL REQUIRE_E2E=1
redis_answers "$REDIS_URL" || [[ "${KEEP_REDIS:-}" == 1 ]] || stop_redis=1

finish() {
    local status=$?
    [[ -z "${stop_redis:-}" ]] || scripts/ensure-redis.sh --stop || true
    [[ -z "${stop_cluster:-}" ]] || scripts/redis-cluster.sh --stop || true
    local skipped
    skipped="$(sort -u "$SKIPPED_TESTS_FILE" 2>/dev/null | grep -c . || true)"
    if ((skipped > 0)); then
        warn "$skipped test(s) did not run:"
        sort -u "$SKIPPED_TESTS_FILE" | sed 's/^/  /' >&2
    fi
    if ((status == 0 && skipped == 0)); then
        log "all tests passed in $((SECONDS - started_at)) s"
    elif ((status == 0)); then
        log "the other tests passed in $((SECONDS - started_at)) s; $skipped skipped (above)"
    else
        # The emulator logs of the end-to-end groups that ran.
        find "${CARGO_TARGET_DIR:-target}" -path '*/e2e/*.log' -newer "$marker" 2>/dev/null |
            while read -r file; do
                warn "last lines of $file:"
                tail -n 30 "$file" >&2
            done
        printf 'error: tests FAILED (exit status %s) after %s s\n' "$status" "$((SECONDS - started_at))" >&2
    fi
    rm -f "$marker" "$SKIPPED_TESTS_FILE"
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/ensure-redis.sh
scripts/ensure-cargo-lambda.sh
venv_pin schemathesis "$SCHEMATHESIS_VERSION"
use_local_cargo_lambda

# bounded_cargo_test ARGS...: cargo test, bounded when nobody watches (CI);
# every test binary runs even after one fails, so a run reports all failures.
bounded_cargo_test() {
    if [[ -t 0 ]]; then
        cargo test --no-fail-fast "$@"
    else
        timeout --kill-after=30 "${TEST_TIMEOUT_SECONDS:-3600}" cargo test --no-fail-fast "$@"
    fi
}

cluster_args=(-p analytics-tests)
if (($# > 0)); then
    cluster_args=("$@")
else
    set -- --workspace
fi
log "cargo test $* (one Redis node: $REDIS_URL)"
bounded_cargo_test "$@"

# The integration and end-to-end tests again, on a local Redis Cluster of 3
# masters and 3 replicas (scripts/redis-cluster.sh; stopped again unless it
# was running already). TEST_CLUSTER=0 skips this pass.
if [[ "${TEST_CLUSTER:-1}" != 0 ]]; then
    cluster_url="redis://127.0.0.1:${REDIS_CLUSTER_PORT:-7000}"
    redis_answers "$cluster_url" || stop_cluster=1
    scripts/redis-cluster.sh >/dev/null
    log "cargo test ${cluster_args[*]} (Redis Cluster: REDIS_MODE=cluster REDIS_URL=$cluster_url)"
    REDIS_MODE=cluster REDIS_URL="$cluster_url" bounded_cargo_test "${cluster_args[@]}"
fi
