# Shared helpers for the scripts in this folder. Source it; do not run it.
# Protocol work is left to real clients: redis-cli for Redis, curl for HTTP,
# pip for the Python-packaged tools in .venv/, cargo for the rest.

# The repository root: scripts work relative to it, wherever they are called
# from.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
VENV="$REPO_ROOT/.venv"

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# The files a function's binary is built from: a change to any of them can
# change a release binary (used to tell whether recorded sizes are current).
RELEASE_SOURCES=(Cargo.toml Cargo.lock shared functions)

# sources_since COMMIT: "unchanged" when the release sources in the working
# tree are COMMIT's, "changed" when they differ, "unknown" when there is no
# git checkout or it lacks COMMIT.
sources_since() {
    if ! git -C "$REPO_ROOT" cat-file -e "$1^{commit}" 2>/dev/null; then
        echo unknown
    elif git -C "$REPO_ROOT" diff --quiet "$1" -- "${RELEASE_SOURCES[@]}"; then
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
    git -C "$REPO_ROOT" diff --quiet HEAD -- "${RELEASE_SOURCES[@]}" 2>/dev/null || head+="+changes"
    printf '%s\n' "$head"
}

# redis_url: REDIS_URL from the environment, else the last REDIS_URL= line of
# .env, else of .env.example, else the service's default.
redis_url() {
    local file url="${REDIS_URL:-}"
    for file in .env .env.example; do
        [[ -n "$url" ]] || url="$(sed -n 's/^REDIS_URL=//p' "$REPO_ROOT/$file" 2>/dev/null | tail -n 1 | tr -d "\"'\r")"
    done
    printf '%s\n' "${url:-redis://127.0.0.1:6379/0}"
}

# redis_answers URL, or redis_answers HOST PORT: true when a Redis answers
# PING there. One that asks for a password counts: it runs, and the
# credentials are the URL's business.
redis_answers() {
    local url="$1"
    [[ -z "${2:-}" ]] || url="redis://$1:$2"
    timeout 5 redis-cli -u "$url" ping 2>&1 | grep -E '^(PONG|NOAUTH|WRONGPASS|AUTH failed)' >/dev/null
}

# free_port: a TCP port of 127.0.0.1 that nothing listened on a moment ago.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# random_suffix: 12 hex characters for key prefixes and temp names.
random_suffix() { od -An -N6 -tx1 /dev/urandom | tr -d ' \n'; }

# use_local_cargo_lambda: puts .venv/bin first on PATH when it holds
# cargo-lambda (scripts/ensure-cargo-lambda.sh installs it there).
use_local_cargo_lambda() {
    [[ ! -x "$VENV/bin/cargo-lambda" ]] || export PATH="$VENV/bin:$PATH"
}

# venv_pin PACKAGE VERSION [PIP_ARGS...]: pip-installs PACKAGE==VERSION into
# .venv/ (created when missing; never the system Python) unless that version
# is there.
venv_pin() {
    "$VENV/bin/pip" show "$1" 2>/dev/null | grep -x "Version: $2" >/dev/null && return 0
    if [[ ! -x "$VENV/bin/pip" ]]; then
        log "creating the virtual environment .venv/"
        python3 -m venv "$VENV" ||
            die "could not create .venv/ with 'python3 -m venv' (Debian/Ubuntu: apt-get install python3-venv)"
    fi
    log "installing $1 $2 into .venv/"
    timeout 900 "$VENV/bin/pip" install --quiet --disable-pip-version-check "${@:3}" "$1==$2" ||
        die "pip could not install $1==$2 into .venv/"
}

# functions: the function crates, one per folder of functions/ (the binary
# has the crate's name).
functions() {
    local manifest
    for manifest in "$REPO_ROOT"/functions/*/Cargo.toml; do
        basename "$(dirname "$manifest")"
    done
}

# build_functions: builds each function the way `cargo lambda watch` runs it
# (`cargo build --bin NAME`: one package at a time, with its own features), so
# that no first request waits for a build. Cargo's own progress shows, so a
# first build (a few minutes) is never silent.
build_functions() {
    local f n=0 all
    all="$(functions | wc -l)"
    for f in $(functions); do
        n=$((n + 1))
        log "building $f ($n/$all)"
        (cd "$REPO_ROOT" && cargo build --bin "$f") || return 1
    done
}

# stop_stack: stops the `cargo lambda watch` in WATCH_PID. On SIGTERM it stops
# its function processes itself (they run in sessions of their own); SIGKILL
# after 10 s.
WATCH_PID="${WATCH_PID:-}"
stop_stack() {
    [[ -n "$WATCH_PID" ]] || return 0
    kill -TERM "$WATCH_PID" 2>/dev/null || true
    for _ in {1..50}; do kill -0 "$WATCH_PID" 2>/dev/null && sleep 0.2; done
    kill -KILL "$WATCH_PID" 2>/dev/null || true
    wait "$WATCH_PID" 2>/dev/null || true
    WATCH_PID=""
}

# version_at_least HAVE WANT: true when version HAVE >= WANT (dotted numbers).
version_at_least() { printf '%s\n%s\n' "$2" "$1" | sort -V -C; }

# check_prerequisites dev|test: stops with what to install when a tool the
# command needs is missing or too old (the README's Prerequisites), and warns
# when the disk is short. Redis itself is ensure-redis.sh's business.
check_prerequisites() {
    local missing=() rust_min have python_min free_gb
    rust_min="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml")"
    have="$(rustc --version 2>/dev/null | awk '{print $2}')"
    if [[ -z "$have" ]] || ! command -v cargo >/dev/null; then
        missing+=("Rust $rust_min or newer (https://rustup.rs)")
    elif ! version_at_least "$have" "$rust_min"; then
        missing+=("Rust $rust_min or newer (found $have: rustup update stable)")
    fi
    command -v cc >/dev/null || command -v gcc >/dev/null || command -v clang >/dev/null ||
        missing+=("a C compiler, for crates that build C code (Debian/Ubuntu: apt-get install gcc; macOS: xcode-select --install)")
    command -v curl >/dev/null || missing+=("curl (apt-get install curl)")
    command -v redis-cli >/dev/null ||
        missing+=("redis-cli (Debian/Ubuntu: apt-get install redis-tools, or redis-server which brings it; macOS: brew install redis)")
    # Python installs cargo-lambda (and, for the tests, schemathesis) into .venv/.
    python_min=3.8
    [[ "$1" != test ]] || python_min=3.11
    have="$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)"
    if [[ -z "$have" ]]; then
        missing+=("Python $python_min or newer with venv (apt-get install python3 python3-venv)")
    elif ! version_at_least "$have" "$python_min"; then
        missing+=("Python $python_min or newer (found $have)")
    fi
    if ((${#missing[@]} > 0)); then
        printf 'error: make %s needs:\n' "$1" >&2
        printf '  - %s\n' "${missing[@]}" >&2
        exit 1
    fi
    free_gb="$(df -Pk "$REPO_ROOT" | awk 'NR == 2 {print int($4 / 1048576)}')"
    if [[ -n "$free_gb" ]] && ((free_gb < 6)); then
        warn "only ${free_gb} GB free on the disk of $REPO_ROOT; a first build needs about 6 GB"
    fi
}
