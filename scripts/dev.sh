#!/usr/bin/env bash
# `make dev`: runs the API locally on http://localhost:8000.
#
#   1. creates .env from .env.example when .env does not exist;
#   2. starts Redis when none answers on REDIS_URL (scripts/ensure-redis.sh);
#   3. installs cargo-lambda when missing (scripts/ensure-cargo-lambda.sh);
#   4. builds the functions, so the first request to each is fast;
#   5. runs `cargo lambda watch`, which routes (Cargo.toml,
#      [workspace.metadata.lambda.watch.router]):
#        GET  /health               -> functions/health
#        POST /api/metrics          -> functions/ingest-metric
#        GET  /api/metrics/summary  -> functions/metrics-summary
#      (and any other route listed there), and rebuilds a function when its code changes.
#
# Settings: PORT (default 8000), ADDRESS (default 127.0.0.1; `ADDRESS=::` listens
# on every interface), CONCURRENCY (function instances per route, default 1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

PORT="${PORT:-8000}"
ADDRESS="${ADDRESS:-127.0.0.1}"
CONCURRENCY="${CONCURRENCY:-1}"

if [[ ! -f .env ]]; then
    log "creating .env from .env.example"
    cp .env.example .env
fi

# The functions get their settings from .env (cargo lambda gives the env file
# precedence over this shell's environment), so the Redis to make sure of is
# the one .env names.
env_redis_url="$(env_file_value REDIS_URL .env)"
if [[ -n "$env_redis_url" ]]; then
    if [[ -n "${REDIS_URL:-}" && "$REDIS_URL" != "$env_redis_url" ]]; then
        warn "REDIS_URL in this shell is ignored: the functions use .env's ($env_redis_url)"
    fi
    export REDIS_URL="$env_redis_url"
fi

scripts/ensure-redis.sh
scripts/ensure-cargo-lambda.sh
use_local_cargo_lambda

if port_in_use "$PORT"; then
    die "port $PORT is already in use (another 'make dev'?). Stop it, or choose another port: PORT=8001 make dev"
fi

build_functions || die "the functions do not build; see the errors above"

log "serving on http://localhost:$PORT (Ctrl-C stops):"
print_routes >&2
exec cargo lambda watch \
    --env-file .env \
    --invoke-address "$ADDRESS" \
    --invoke-port "$PORT" \
    --concurrency "$CONCURRENCY"
