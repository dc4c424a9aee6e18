# Shared helpers for the scripts in this folder. Source it; do not run it.
#
# Everything here is plain bash (no python, no nc) so that the scripts work on a
# fresh machine that has only Rust, Python (for cargo-lambda) and a Redis or
# Docker engine.

# The repository root: scripts always work relative to it, wherever they are
# called from.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

# The files a function's binary is built from: a change to any of them can
# change a release binary (used to tell whether recorded sizes are current).
RELEASE_SOURCES=(Cargo.toml Cargo.lock shared functions)

# sources_since COMMIT: "unchanged" when the release sources in the working
# tree are COMMIT's, "changed" when they differ, "unknown" when there is no
# git checkout or it lacks COMMIT.
sources_since() {
    git -C "$REPO_ROOT" cat-file -e "$1^{commit}" 2>/dev/null || {
        echo unknown
        return 0
    }
    if git -C "$REPO_ROOT" diff --quiet "$1" -- "${RELEASE_SOURCES[@]}"; then
        echo unchanged
    else
        echo changed
    fi
}

# source_commit: "<commit>" when the release sources match HEAD, else
# "<commit>+changes"; empty outside a git checkout.
source_commit() {
    local head
    head="$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null)" || return 0
    if git -C "$REPO_ROOT" diff --quiet HEAD -- "${RELEASE_SOURCES[@]}" 2>/dev/null; then
        printf '%s\n' "$head"
    else
        printf '%s+changes\n' "$head"
    fi
}

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# env_file_value NAME FILE: the value NAME has in a KEY=VALUE file (last one
# wins; quotes around the value are removed), or nothing.
env_file_value() {
    local name="$1" file="$2" line value=""
    [[ -f "$file" ]] || return 0
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line#"${line%%[![:space:]]*}"}"
        line="${line#export }"
        if [[ "$line" == "$name="* ]]; then
            value="${line#"$name="}"
            value="${value%$'\r'}"
            value="${value%\"}"
            value="${value#\"}"
            value="${value%\'}"
            value="${value#\'}"
        fi
    done <"$file"
    printf '%s' "$value"
}

# resolve_redis_url: REDIS_URL from the environment, else from .env, else from
# .env.example, else the service's default. The environment wins so that a CI
# job or a developer can point a single command at another Redis.
resolve_redis_url() {
    local url="${REDIS_URL:-}"
    [[ -n "$url" ]] || url="$(env_file_value REDIS_URL "$REPO_ROOT/.env")"
    [[ -n "$url" ]] || url="$(env_file_value REDIS_URL "$REPO_ROOT/.env.example")"
    [[ -n "$url" ]] || url="redis://127.0.0.1:6379/0"
    printf '%s' "$url"
}

# parse_redis_url URL: sets REDIS_SCHEME, REDIS_HOST, REDIS_PORT from a
# redis:// or rediss:// URL (user info and database are skipped).
parse_redis_url() {
    local url="$1" rest hostport
    REDIS_SCHEME="${url%%://*}"
    rest="${url#*://}"
    rest="${rest##*@}"
    hostport="${rest%%/*}"
    hostport="${hostport%%\?*}"
    if [[ "$hostport" == \[* ]]; then
        # [::1]:6379
        REDIS_HOST="${hostport#[}"
        REDIS_HOST="${REDIS_HOST%%]*}"
        REDIS_PORT="${hostport##*]:}"
        [[ "$REDIS_PORT" == "$hostport" || -z "$REDIS_PORT" ]] && REDIS_PORT=6379
    elif [[ "$hostport" == *:* ]]; then
        REDIS_HOST="${hostport%%:*}"
        REDIS_PORT="${hostport##*:}"
    else
        REDIS_HOST="$hostport"
        REDIS_PORT=6379
    fi
    [[ -n "$REDIS_HOST" ]] || REDIS_HOST=127.0.0.1
}

# is_local_host HOST: true for the loopback names we are allowed to start a
# Redis for.
is_local_host() {
    case "$1" in
    127.0.0.1 | localhost | ::1 | 0.0.0.0) return 0 ;;
    *) return 1 ;;
    esac
}

# tcp_host HOST: the address to give bash's /dev/tcp.
tcp_host() {
    case "$1" in
    localhost | 0.0.0.0) printf '127.0.0.1' ;;
    *) printf '%s' "$1" ;;
    esac
}

# port_in_use PORT [HOST]: true when something accepts TCP connections there.
port_in_use() {
    local port="$1" host="${2:-127.0.0.1}"
    timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

# redis_answers HOST PORT: true when a Redis server answers PING there within
# 2 s. A server that asks for a password (-NOAUTH) also counts: it is running,
# and the credentials are the URL's business.
redis_answers() {
    local host port reply
    host="$(tcp_host "$1")"
    port="$2"
    reply="$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "PING\r\n" >&3
        IFS= read -r -t 2 line <&3 || exit 1
        printf "%s" "$line"
    ' "$host" "$port" 2>/dev/null)" || return 1
    case "$reply" in
    +PONG* | -NOAUTH* | -ERR*auth* | -WRONGPASS*) return 0 ;;
    *) return 1 ;;
    esac
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now,
# outside 8000 (the developer's `make dev`) and the well-known ranges.
free_port() {
    local port i
    for i in $(seq 1 200); do
        port=$((20000 + RANDOM % 30000))
        if ! port_in_use "$port"; then
            printf '%s' "$port"
            return 0
        fi
    done
    die "could not find a free TCP port"
}

# random_suffix: 12 hex characters for key prefixes and temp names.
random_suffix() {
    od -An -N6 -tx1 /dev/urandom | tr -d ' \n'
}

# cargo_lambda_path: prepends the repository's .venv/bin to PATH when it holds
# cargo-lambda, so `cargo lambda` finds the binary installed there.
use_local_cargo_lambda() {
    if [[ -x "$REPO_ROOT/.venv/bin/cargo-lambda" ]]; then
        PATH="$REPO_ROOT/.venv/bin:$PATH"
        export PATH
    fi
}

# The function binaries `cargo lambda watch` runs: one crate per folder under
# functions/, whose binary has the crate's (and folder's) name.
FUNCTIONS=()
for _dir in "$REPO_ROOT"/functions/*/; do
    [[ -f "$_dir/Cargo.toml" ]] && FUNCTIONS+=("$(basename "$_dir")")
done
unset _dir

# print_routes: the emulator's routes, from the router table in Cargo.toml
# (`  GET /health -> health`).
print_routes() {
    sed -n '/^\[workspace\.metadata\.lambda\.watch\.router\]/,/^\[/p' "$REPO_ROOT/Cargo.toml" |
        sed -n 's/^"\([^"]*\)" *= *\[{ *method *= *"\([A-Z]*\)", *function *= *"\([^"]*\)" *}\]/  \2 \1 -> \3/p'
}

# build_functions: builds each function binary the way `cargo lambda watch`
# starts it (`cargo run --bin NAME` from the workspace root: one package at a
# time, so with that package's own feature set), so that the emulator's first
# request to each route does not wait for a compilation.
build_functions() {
    local f
    for f in "${FUNCTIONS[@]}"; do
        log "building $f"
        (cd "$REPO_ROOT" && cargo build --quiet --bin "$f") || return 1
    done
}

# The emulator started by a script (`cargo lambda watch`), for stop_stack.
WATCH_PID="${WATCH_PID:-}"

# descendants PID: every process below PID. The function processes
# `cargo lambda watch` starts run in sessions of their own, so they are found
# through their parent, not their process group.
descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        printf '%s\n' "$child"
        descendants "$child"
    done
}

# same_process PID COMMAND: PID still runs COMMAND (guards against a pid that
# was reused after the process we knew exited).
same_process() {
    [[ "$(ps -o comm= -p "$1" 2>/dev/null)" == "$2" ]]
}

# stop_stack: stops the watcher in WATCH_PID and every process it started. SIGINT
# first: that is Ctrl-C, on which the watcher stops its functions itself.
stop_stack() {
    [[ -n "$WATCH_PID" ]] || return 0
    local known=() pid comm entry i
    for pid in $(descendants "$WATCH_PID"); do
        comm="$(ps -o comm= -p "$pid" 2>/dev/null)" && known+=("$pid:$comm")
    done
    kill -INT "$WATCH_PID" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$WATCH_PID" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$WATCH_PID" 2>/dev/null || true
    wait "$WATCH_PID" 2>/dev/null || true
    for signal in TERM KILL; do
        for entry in "${known[@]}"; do
            pid="${entry%%:*}"
            comm="${entry#*:}"
            if same_process "$pid" "$comm"; then
                kill "-$signal" "$pid" 2>/dev/null || true
            fi
        done
        [[ "$signal" == TERM ]] && sleep 0.5
    done
    WATCH_PID=""
}
