#!/usr/bin/env bash
# `make release`: builds the deployable artifacts, one arm64 Lambda binary per
# function, with one command:
#
#   cargo lambda build --release --arm64 -p <function> ...
#
# for every crate under functions/. Each lands in
#
#   target/lambda/<function>/bootstrap
#
# (the name the provided.al2023 runtime runs), then its size is printed. The
# cross-build needs no Docker and no aarch64 toolchain: cargo-lambda links with
# zig (installed with it into .venv/, see ensure-cargo-lambda.sh), and rustup
# provides the aarch64-unknown-linux-gnu standard library.
#
# Options:
#   --sizes-only  skip the build, print the sizes of the existing binaries
#   --markdown    print the sizes as a markdown table (for BUILD_SIZES.md), with
#                 the commit the binaries were built from
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

TARGET=aarch64-unknown-linux-gnu
build=1
markdown=0
for arg in "$@"; do
    case "$arg" in
    --sizes-only) build=0 ;;
    --markdown) markdown=1 ;;
    *) die "unknown option $arg (expected --sizes-only or --markdown)" ;;
    esac
done

# Every function crate, so a new one is released without touching this script.
functions=()
for manifest in functions/*/Cargo.toml; do
    functions+=("$(basename "$(dirname "$manifest")")")
done
((${#functions[@]} > 0)) || die "no function crates under functions/"

if ((build)); then
    scripts/ensure-cargo-lambda.sh
    use_local_cargo_lambda
    if command -v rustup >/dev/null 2>&1 &&
        ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
        log "adding the Rust target $TARGET"
        rustup target add "$TARGET" || die "could not add the Rust target $TARGET (rustup target add $TARGET)"
    fi
    packages=()
    for f in "${functions[@]}"; do
        packages+=(-p "$f")
    done
    log "cargo lambda build --release --arm64 ${packages[*]}"
    built_from="$(source_commit)"
    cargo lambda build --release --arm64 "${packages[@]}" ||
        die "the release build failed; see the errors above"
    # Which sources these binaries are, for the sizes table (and `make bench`).
    printf '%s\n' "$built_from" >"${CARGO_TARGET_DIR:-target}/lambda/BUILT_FROM"
fi

# zipped_size FILE: bytes of FILE deflated into a zip archive, about what a
# deployment package costs to upload (Lambda's limit: 50 MB zipped).
zipped_size() {
    python3 - "$1" <<'PY'
import io, sys, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    z.write(sys.argv[1], "bootstrap")
print(len(buf.getvalue()))
PY
}

if ((markdown)); then
    printf '| function | `bootstrap` (bytes) | MiB | zipped (bytes) |\n|---|---:|---:|---:|\n'
else
    printf '%-18s %12s %8s %14s\n' function bytes MiB zipped
fi
# cargo-lambda writes under the Cargo target directory, target/ unless
# CARGO_TARGET_DIR moves it.
target_dir="${CARGO_TARGET_DIR:-target}"
for f in "${functions[@]}"; do
    binary="$target_dir/lambda/$f/bootstrap"
    [[ -f "$binary" ]] || die "$binary is missing; run make release"
    bytes="$(wc -c <"$binary" | tr -d ' ')"
    mib="$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')"
    zipped="$(zipped_size "$binary")"
    if ((markdown)); then
        printf '| `%s` | %s | %s | %s |\n' "$f" "$bytes" "$mib" "$zipped"
    else
        printf '%-18s %12s %8s %14s\n' "$f" "$bytes" "$mib" "$zipped"
    fi
done
if ((markdown)); then
    built_from="$(cat "$target_dir/lambda/BUILT_FROM" 2>/dev/null || true)"
    case "$built_from" in
    "") printf '\nBuilt from sources of an unknown commit.\n' ;;
    *+changes) printf '\nBuilt from commit `%s` with uncommitted changes.\n' "${built_from%+changes}" ;;
    *) printf '\nBuilt from commit `%s`.\n' "$built_from" ;;
    esac
fi
