#!/usr/bin/env bash
# Makes sure `cargo lambda` works.
#
# A cargo-lambda already on PATH is used as it is. Otherwise it is installed
# from PyPI (where it ships as a prebuilt binary) into a virtual environment in
# .venv/ at the repository root, never into the system Python. The other
# scripts put .venv/bin on PATH themselves.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The version the project is tested with; routing by path (`watch.router` in
# Cargo.toml) needs 1.9 or later.
CARGO_LAMBDA_VERSION="${CARGO_LAMBDA_VERSION:-1.9.2}"

# The zig that cargo-lambda cross-links the arm64 release build with
# (`make release`). cargo-lambda's package asks only for ziglang>=0.10, so an
# unpinned install takes whatever zig is newest, and new zig releases have
# broken cross-builds of C code inside dependencies before (ring, which the
# TLS stack compiles, is the one at risk here). 0.17.1 is the version the
# release build is verified with; change it only together with a `make release`.
ZIGLANG_VERSION="${ZIGLANG_VERSION:-0.17.1}"

# pin_zig: installs ZIGLANG_VERSION into .venv/ when another version is there.
pin_zig() {
    local pip="$REPO_ROOT/.venv/bin/pip" installed
    [[ -x "$pip" ]] || return 0
    installed="$("$pip" show ziglang 2>/dev/null | awk '/^Version:/ {print $2}')"
    [[ "$installed" == "$ZIGLANG_VERSION" ]] && return 0
    log "installing zig $ZIGLANG_VERSION (ziglang) into .venv/ (found: ${installed:-none})"
    timeout 900 "$pip" install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION" ||
        die "pip could not install ziglang==$ZIGLANG_VERSION into .venv/"
}

# recent_enough: true when the cargo-lambda on PATH is 1.9 or later.
recent_enough() {
    local version major minor
    version="$(cargo-lambda lambda --version 2>/dev/null | awk '{print $2}')"
    major="${version%%.*}"
    minor="${version#*.}"
    minor="${minor%%.*}"
    [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || return 1
    ((major > 1 || (major == 1 && minor >= 9)))
}

use_local_cargo_lambda
if command -v cargo-lambda >/dev/null 2>&1; then
    if recent_enough; then
        # Only the zig of our own .venv/ is ours to pin.
        [[ "$(command -v cargo-lambda)" == "$REPO_ROOT/.venv/bin/cargo-lambda" ]] && pin_zig
        log "using $(cargo-lambda lambda --version) at $(command -v cargo-lambda)"
        exit 0
    fi
    warn "$(command -v cargo-lambda) is older than 1.9; installing a newer one into .venv/"
fi

python=""
for candidate in python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 8))' 2>/dev/null; then
        python="$candidate"
        break
    fi
done
[[ -n "$python" ]] || die "cargo-lambda is missing and no Python 3.8+ was found to install it. Install Python 3 (with venv), or install cargo-lambda yourself (https://www.cargo-lambda.info)."

venv="$REPO_ROOT/.venv"
if [[ ! -x "$venv/bin/pip" ]]; then
    log "creating the virtual environment .venv/"
    rm -rf "$venv"
    "$python" -m venv "$venv" ||
        die "could not create .venv/ with '$python -m venv' (on Debian/Ubuntu: apt-get install python3-venv)"
fi

log "installing cargo-lambda $CARGO_LAMBDA_VERSION into .venv/"
timeout 900 "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIGLANG_VERSION" ||
    die "pip could not install cargo-lambda into .venv/"

use_local_cargo_lambda
command -v cargo-lambda >/dev/null 2>&1 || die "cargo-lambda is still not on PATH after installing it"
log "installed $(cargo-lambda lambda --version)"
