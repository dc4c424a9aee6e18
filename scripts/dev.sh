#!/usr/bin/env bash
# `make dev`: the API on http://localhost:8000, served by `cargo lambda watch`
# with the routes of Cargo.toml ([workspace.metadata.lambda.watch.router]);
# a function is rebuilt when its code changes. Creates .env from .env.example
# when missing, starts Redis and installs cargo-lambda when needed, and builds
# the functions first, so the first request to each is fast.
#
# Settings: PORT (default 8000), ADDRESS (default 127.0.0.1; `ADDRESS=::`
# listens on every interface), CONCURRENCY (instances per route, default 1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

PORT="${PORT:-8000}"
if [[ ! -f .env ]]; then
    log "creating .env from .env.example"
    cp .env.example .env
fi
# The functions read .env (it wins over this shell's environment), so the
# Redis to make sure of is the one .env names.
env_url="$(REDIS_URL='' redis_url)"
[[ -z "${REDIS_URL:-}" || "$REDIS_URL" == "$env_url" ]] || warn "REDIS_URL of this shell is ignored: the functions use .env's"
export REDIS_URL="$env_url"

scripts/ensure-redis.sh
scripts/ensure-cargo-lambda.sh
use_local_cargo_lambda
# curl's exit status 7: nothing accepted the connection, so the port is free.
curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/" && in_use=0 || in_use=$?
[[ "$in_use" == 7 ]] || die "port $PORT is in use (another 'make dev'?). Stop it, or choose another: PORT=8001 make dev"
build_functions || die "the functions do not build; see the errors above"

log "serving on http://localhost:$PORT (Ctrl-C stops):"
sed -n 's/^"\(\/[^"]*\)" = \[{ method = "\([A-Z]*\)", function = "\([^"]*\)" }\]/  \2 \1 -> \3/p' Cargo.toml >&2
exec cargo lambda watch --env-file .env --invoke-address "${ADDRESS:-127.0.0.1}" \
    --invoke-port "$PORT" --concurrency "${CONCURRENCY:-1}"
