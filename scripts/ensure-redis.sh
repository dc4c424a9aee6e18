#!/usr/bin/env bash
# Makes sure a Redis server answers on REDIS_URL (the environment's, else
# .env's, else .env.example's). When none answers and the URL is a redis://
# one on this machine, starts one:
#   1. with Docker Compose (docker-compose.yml) when a Docker engine answers;
#   2. else with a local `redis-server`, as a daemon whose pid file, log and
#      working directory are in .local/redis/ (git-ignored);
#   3. else it stops and says what to install.
# A Redis elsewhere is only checked, never started. Waits are bounded (CI).
#
# Usage: scripts/ensure-redis.sh          start when needed
#        scripts/ensure-redis.sh --stop   stop the Redis this script started
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOCAL_DIR="$REPO_ROOT/.local/redis"
url="$(redis_url)"
shown="$(sed -E 's#//[^@/]*@#//#' <<<"$url")" # without credentials
hostport="$(sed -E 's#^[a-z]+://([^@/]*@)?([^/?]*).*#\2#' <<<"$url")"
host="${hostport%:*}"
port="${hostport##*:}"
[[ "$hostport" == *:* ]] || { host="$hostport"; port=6379; }

# docker_ready: a Docker engine answers and Compose is installed (sets compose).
docker_ready() {
    command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1 || return 1
    if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
    command -v "${compose[0]}" >/dev/null
}

if [[ "${1:-}" == --stop ]]; then
    if [[ -f "$LOCAL_DIR/redis.pid" ]]; then
        log "stopping the local redis-server (pid $(cat "$LOCAL_DIR/redis.pid"))"
        kill "$(cat "$LOCAL_DIR/redis.pid")" 2>/dev/null || true
        rm -f "$LOCAL_DIR/redis.pid"
    fi
    if docker_ready; then (cd "$REPO_ROOT" && "${compose[@]}" down) || true; fi
    exit 0
fi

command -v redis-cli >/dev/null || die "redis-cli is missing: install Redis (apt-get install redis-tools, brew install redis)"
if redis_answers "$url"; then
    log "Redis answers at $shown"
    exit 0
fi
case "$url:$host" in
redis://*:127.0.0.1 | redis://*:localhost | redis://*:0.0.0.0 | redis://*:\[::1\]) ;;
*) die "no Redis answers at $shown (REDIS_URL); it is not on this machine, so it is not started here" ;;
esac

if docker_ready; then
    log "starting Redis with Docker Compose on port $port"
    (cd "$REPO_ROOT" && REDIS_PORT="$port" timeout 300 "${compose[@]}" up -d redis)
elif command -v redis-server >/dev/null; then
    log "starting a local redis-server on 127.0.0.1:$port (files in .local/redis/)"
    mkdir -p "$LOCAL_DIR"
    # Development data only: no snapshots, no append-only file.
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$LOCAL_DIR" \
        --pidfile "$LOCAL_DIR/redis.pid" --logfile "$LOCAL_DIR/redis.log" --save "" --appendonly no
else
    die "no Redis runs and none can be started here. Install Redis 7 (apt-get install redis-server, brew install redis), or Docker with Compose, or set REDIS_URL in .env to a Redis you have."
fi
for _ in {1..120}; do
    if redis_answers "$url"; then
        log "Redis answers at $shown"
        exit 0
    fi
    sleep 0.5
done
tail -n 20 "$LOCAL_DIR/redis.log" 2>/dev/null >&2 || true
die "Redis did not answer at $shown within 60 s"
