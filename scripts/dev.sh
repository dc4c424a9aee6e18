#!/usr/bin/env bash
# `make dev`: the API on http://localhost:8000, served by `cargo lambda watch`
# with the routes of Cargo.toml ([workspace.metadata.lambda.watch.router]);
# a function is rebuilt when its code changes.
#
#   1. checks the prerequisites (check_prerequisites in lib.sh), creates .env
#      from .env.example when missing, starts Redis and installs cargo-lambda
#      when needed;
#   2. builds the functions (cargo's own progress on the terminal), so the
#      first request to each is fast;
#   3. validates the settings of .env with the functions' own validation
#      (`health --check-config`) and stops with the message naming the
#      variable when one is invalid;
#   4. serves them, and restarts the emulator whenever .env changes (the
#      emulator reads it only when it starts), after validating it again: an
#      invalid edit is reported and the running stack keeps its settings.
#
# The emulator's --timeout is not set: in cargo-lambda 1.9 it also bounds a
# function's wait for its next request, so an idle function would die after
# it. Settings are validated before the functions start, so none exits on
# them.
#
# Settings: PORT (default 8000), ADDRESS (default 127.0.0.1; `ADDRESS=::`
# listens on every interface), CONCURRENCY (instances per route, default 1),
# DEV_ENV_FILE (default .env), REDIS_MODE (default: the file's).
#
# `REDIS_MODE=cluster make dev` (or REDIS_MODE=cluster in .env with the
# default local REDIS_URL) serves on a local Redis Cluster of 3 masters and 3
# replicas instead (scripts/redis-cluster.sh, started when none answers;
# `make redis-stop` stops it). The functions then get REDIS_MODE=cluster and
# the cluster's REDIS_URL through the file the emulator reads,
# .local/dev-<port>.env: the settings file with those two values replaced.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

PORT="${PORT:-8000}"
ENV_FILE="${DEV_ENV_FILE:-.env}"
check_prerequisites dev
if [[ ! -f "$ENV_FILE" ]]; then
    log "creating $ENV_FILE from .env.example"
    cp .env.example "$ENV_FILE"
fi

# env_file_value NAME: NAME's value in ENV_FILE (last one wins, quotes off).
env_file_value() {
    sed -n "s/^[[:space:]]*\\(export[[:space:]]\\+\\)\\?$1=//p" "$ENV_FILE" | tail -n 1 | tr -d "\"'\r"
}

# The functions read the settings file (it wins over this shell's
# environment), so the Redis to make sure of is the one it names.
env_url="$(env_file_value REDIS_URL)"
env_url="${env_url:-redis://127.0.0.1:6379/0}"
mode="${REDIS_MODE:-$(env_file_value REDIS_MODE)}"
mode="${mode:-standalone}"
overrides=()
if [[ "$mode" == cluster ]]; then
    if [[ -n "${REDIS_MODE:-}" || "$env_url" =~ ^redis://(127\.0\.0\.1|localhost):6379(/0)?$ ]]; then
        env_url="$(scripts/redis-cluster.sh | sed -n 's/^REDIS_URL=//p')"
        [[ -n "$env_url" ]] || die "the local Redis Cluster did not start (see above)"
        log "using the local Redis Cluster at $env_url (make redis-stop stops it)"
    fi
    overrides=("REDIS_MODE=cluster" "REDIS_URL=$env_url")
else
    [[ -z "${REDIS_URL:-}" || "$REDIS_URL" == "$env_url" ]] || warn "REDIS_URL of this shell is ignored: the functions use $ENV_FILE's"
    export REDIS_URL="$env_url"
    scripts/ensure-redis.sh
fi

# The file the emulator reads: ENV_FILE, with the overrides' variables
# replaced. An edit is written to CANDIDATE_ENV first and replaces it only
# once valid.
mkdir -p .local
EFFECTIVE_ENV=".local/dev-$PORT.env"
CANDIDATE_ENV=".local/dev-$PORT.env.new"
write_effective_env() {
    local override pattern=""
    for override in "${overrides[@]}"; do
        pattern+="${pattern:+|}${override%%=*}"
    done
    if [[ -n "$pattern" ]]; then
        grep -Ev "^[[:space:]]*(export[[:space:]]+)?($pattern)=" "$ENV_FILE" >"$CANDIDATE_ENV" || true
        printf '%s\n' "${overrides[@]}" >>"$CANDIDATE_ENV"
    else
        cp "$ENV_FILE" "$CANDIDATE_ENV"
    fi
}
write_effective_env

scripts/ensure-cargo-lambda.sh
use_local_cargo_lambda
# curl's exit status 7: nothing accepted the connection, so the port is free.
curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/" && in_use=0 || in_use=$?
[[ "$in_use" == 7 ]] || die "port $PORT is in use (another 'make dev'?). Stop it, or choose another: PORT=8001 make dev"
build_functions || die "the functions do not build; see the errors above"

# settings_valid: the functions' own validation of the candidate settings
# (Config::from_env); prints the message naming the variable when invalid.
settings_valid() {
    local line assignments=()
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line%$'\r'}"
        [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
        line="${line#export }"
        line="${line//\"/}"
        assignments+=("${line//\'/}")
    done <"$CANDIDATE_ENV"
    env "${assignments[@]}" "${CARGO_TARGET_DIR:-target}/debug/health" --check-config
}
settings_valid || die "$ENV_FILE has an invalid setting (above); fix it and run make dev again"
mv "$CANDIDATE_ENV" "$EFFECTIVE_ENV"

WATCH_PID=""
trap 'stop_stack; exit 130' INT
trap 'stop_stack; exit 143' TERM
trap 'stop_stack' EXIT

# start_stack: the emulator in the background, with ENV_FILE's settings.
start_stack() {
    log "serving on http://localhost:$PORT (Ctrl-C stops; editing $ENV_FILE restarts):"
    sed -n 's/^"\(\/[^"]*\)" = \[{ method = "\([A-Z]*\)", function = "\([^"]*\)" }\]/  \2 \1 -> \3/p' Cargo.toml >&2
    cargo lambda watch --env-file "$EFFECTIVE_ENV" --invoke-address "${ADDRESS:-127.0.0.1}" \
        --invoke-port "$PORT" --concurrency "${CONCURRENCY:-1}" &
    WATCH_PID=$!
}

start_stack
seen="$(cksum <"$ENV_FILE")"
while kill -0 "$WATCH_PID" 2>/dev/null; do
    sleep 1
    now="$(cksum <"$ENV_FILE" 2>/dev/null)" || continue
    [[ "$now" != "$seen" ]] || continue
    seen="$now"
    write_effective_env
    if settings_valid; then
        mv "$CANDIDATE_ENV" "$EFFECTIVE_ENV"
        log "$ENV_FILE changed: restarting the functions with its settings"
        stop_stack
        start_stack
    else
        warn "$ENV_FILE changed but is invalid (above): still serving the previous settings"
    fi
done
wait "$WATCH_PID"
