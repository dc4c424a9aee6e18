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
    "cargo-lambda==$CARGO_LAMBDA_VERSION" ||
    die "pip could not install cargo-lambda into .venv/"

use_local_cargo_lambda
command -v cargo-lambda >/dev/null 2>&1 || die "cargo-lambda is still not on PATH after installing it"
log "installed $(cargo-lambda lambda --version)"
