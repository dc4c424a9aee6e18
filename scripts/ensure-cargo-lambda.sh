#!/usr/bin/env bash
# Makes sure `cargo lambda` works: a cargo-lambda 1.9+ already on PATH is used
# as it is (routing by path, `watch.router` in Cargo.toml, needs 1.9);
# otherwise the pinned version is pip-installed (a prebuilt binary) into .venv/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CARGO_LAMBDA_VERSION="${CARGO_LAMBDA_VERSION:-1.9.2}"
# The zig that cargo-lambda cross-links the arm64 release build with. Its
# package asks only for ziglang>=0.10, and new zig releases have broken
# cross-builds of C code in dependencies before (ring): 0.17.1 is the version
# `make release` is verified with; change it only together with a release build.
ZIGLANG_VERSION="${ZIGLANG_VERSION:-0.17.1}"

use_local_cargo_lambda
version="$(cargo-lambda lambda --version 2>/dev/null | awk '{print $2}')" || true
if [[ -n "$version" ]] && printf '1.9.0\n%s\n' "$version" | sort -V -C; then
    # Only the zig of our own .venv/ is ours to pin.
    [[ "$(command -v cargo-lambda)" != "$VENV/bin/cargo-lambda" ]] || venv_pin ziglang "$ZIGLANG_VERSION"
    log "using cargo-lambda $version at $(command -v cargo-lambda)"
    exit 0
fi
[[ -z "$version" ]] || warn "cargo-lambda $version is older than 1.9; installing $CARGO_LAMBDA_VERSION into .venv/"
venv_pin cargo-lambda "$CARGO_LAMBDA_VERSION"
venv_pin ziglang "$ZIGLANG_VERSION"
use_local_cargo_lambda
log "installed $(cargo-lambda lambda --version)"
