#!/usr/bin/env bash
# Makes sure a Redis server answers on the configured REDIS_URL.
#
# REDIS_URL comes from the environment, else from .env, else from .env.example.
# When nothing answers there and the URL points at this machine, the script
# starts one:
#   1. with Docker Compose (docker-compose.yml) when a Docker engine answers
#      (`docker info`, not just the CLI) and Compose is installed;
#   2. otherwise with a local `redis-server` binary, as a daemon whose pid file,
#      log and working directory live in .local/redis/ (git-ignored);
#   3. otherwise it stops with a message saying what to install.
# A remote Redis (another host, or rediss://) is never started, only checked.
#
# Usage: scripts/ensure-redis.sh          start when needed
#        scripts/ensure-redis.sh --stop   stop the Redis this script started
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Bounded waits: a CI job must never hang here.
STARTUP_TIMEOUT_SECONDS="${REDIS_STARTUP_TIMEOUT_SECONDS:-60}"
LOCAL_DIR="$REPO_ROOT/.local/redis"

url="$(resolve_redis_url)"
parse_redis_url "$url"

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose "$@"
    else
        return 127
    fi
}

have_compose() {
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1
}

docker_engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
}

wait_for_redis() {
    local deadline=$((SECONDS + STARTUP_TIMEOUT_SECONDS))
    while ((SECONDS < deadline)); do
        redis_answers "$REDIS_HOST" "$REDIS_PORT" && return 0
        sleep 0.5
    done
    return 1
}

stop_redis() {
    if [[ -f "$LOCAL_DIR/redis.pid" ]]; then
        local pid
        pid="$(cat "$LOCAL_DIR/redis.pid")"
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping the local redis-server (pid $pid)"
            kill "$pid"
        fi
        rm -f "$LOCAL_DIR/redis.pid"
    fi
    if docker_engine_answers && have_compose; then
        (cd "$REPO_ROOT" && compose down) || true
    fi
}

start_with_compose() {
    log "starting Redis with Docker Compose on port $REDIS_PORT"
    (cd "$REPO_ROOT" && REDIS_PORT="$REDIS_PORT" timeout 300 compose up -d redis)
}

start_with_redis_server() {
    log "starting a local redis-server on 127.0.0.1:$REDIS_PORT (files in .local/redis/)"
    mkdir -p "$LOCAL_DIR"
    # Development data only: no snapshots, no append-only file, nothing to clean
    # up but this directory.
    redis-server \
        --daemonize yes \
        --bind 127.0.0.1 \
        --port "$REDIS_PORT" \
        --dir "$LOCAL_DIR" \
        --pidfile "$LOCAL_DIR/redis.pid" \
        --logfile "$LOCAL_DIR/redis.log" \
        --save "" \
        --appendonly no
}

if [[ "${1:-}" == "--stop" ]]; then
    stop_redis
    exit 0
fi

if redis_answers "$REDIS_HOST" "$REDIS_PORT"; then
    log "Redis answers at $REDIS_HOST:$REDIS_PORT"
    exit 0
fi

if [[ "$REDIS_SCHEME" != "redis" ]] || ! is_local_host "$REDIS_HOST"; then
    die "no Redis answers at $REDIS_HOST:$REDIS_PORT (from REDIS_URL). It is not on this machine, so it is not started here: start it, or set REDIS_URL in .env to a reachable one."
fi

if port_in_use "$REDIS_PORT"; then
    die "port $REDIS_PORT is taken by something that is not Redis; set REDIS_URL in .env to another port."
fi

started=""
if docker_engine_answers && have_compose; then
    if start_with_compose; then
        started=docker
    else
        warn "Docker Compose could not start Redis; trying a local redis-server"
    fi
fi
if [[ -z "$started" ]] && command -v redis-server >/dev/null 2>&1; then
    start_with_redis_server && started=redis-server
fi
if [[ -z "$started" ]]; then
    cat >&2 <<'EOF'
error: no Redis is running and none can be started here.
Install one of:
  - Redis 7 (the `redis-server` binary), e.g. `sudo apt-get install redis-server`
    or `brew install redis`; this script then starts it for you;
  - Docker with the Compose plugin (and a running Docker engine), which starts
    Redis from docker-compose.yml.
Or point REDIS_URL in .env at a Redis you already have.
EOF
    exit 1
fi

if ! wait_for_redis; then
    if [[ "$started" == redis-server && -f "$LOCAL_DIR/redis.log" ]]; then
        tail -n 20 "$LOCAL_DIR/redis.log" >&2 || true
    fi
    die "Redis ($started) did not answer on port $REDIS_PORT within ${STARTUP_TIMEOUT_SECONDS}s"
fi
log "Redis answers at $REDIS_HOST:$REDIS_PORT (started with $started)"
