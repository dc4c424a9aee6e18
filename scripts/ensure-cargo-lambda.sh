#!/usr/bin/env bash
# Makes sure `cargo lambda` works: a cargo-lambda 1.9+ already on PATH is used
# as it is (routing by path, `watch.router` in Cargo.toml, needs 1.9);
# otherwise the pinned version is pip-installed (a prebuilt binary) into .venv/.
#
# Usage: scripts/ensure-cargo-lambda.sh             for `make dev` and `make test`
#        scripts/ensure-cargo-lambda.sh --with-zig  also zig, which only the arm64
#                                                   cross-build (`make release`) links with
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CARGO_LAMBDA_VERSION="${CARGO_LAMBDA_VERSION:-1.9.2}"
# The zig that cargo-lambda cross-links the arm64 release build with. Its
# package asks only for ziglang>=0.10, and new zig releases have broken
# cross-builds of C code in dependencies before (ring): 0.17.1 is the version
# `make release` is verified with; change it only together with a release build.
ZIGLANG_VERSION="${ZIGLANG_VERSION:-0.17.1}"

with_zig=""
case "${1:-}" in
"") ;;
--with-zig) with_zig=1 ;;
*) die "unknown option $1 (expected --with-zig)" ;;
esac

use_local_cargo_lambda
version="$(cargo-lambda lambda --version 2>/dev/null | awk '{print $2}')" || true
if [[ -z "$version" ]] || ! printf '1.9.0\n%s\n' "$version" | sort -V -C; then
    [[ -z "$version" ]] || warn "cargo-lambda $version is older than 1.9; installing $CARGO_LAMBDA_VERSION into .venv/"
    # --no-deps: the package's one dependency is zig (411 MB), which neither
    # the emulator nor the tests use; --with-zig installs it.
    venv_pin cargo-lambda "$CARGO_LAMBDA_VERSION" --no-deps
    use_local_cargo_lambda
    version="$(cargo-lambda lambda --version | awk '{print $2}')"
fi
# Only the zig of our own .venv/ is ours to pin.
if [[ -n "$with_zig" && "$(command -v cargo-lambda)" == "$VENV/bin/cargo-lambda" ]]; then
    venv_pin ziglang "$ZIGLANG_VERSION"
fi
log "using cargo-lambda $version at $(command -v cargo-lambda)"
