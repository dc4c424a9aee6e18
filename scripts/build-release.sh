#!/usr/bin/env bash
# `make release`: one arm64 Lambda binary per function (every crate under
# functions/), with one command, `cargo lambda build --release --arm64 -p <f>...`,
# each at target/lambda/<function>/bootstrap (the name the provided.al2023
# runtime runs), then their sizes. No Docker and no aarch64 toolchain needed:
# cargo-lambda links with zig (installed with it into .venv/), and rustup
# provides the aarch64-unknown-linux-gnu standard library.
#
# Options: --sizes-only  skip the build, print the sizes of the existing binaries
#          --markdown    the sizes as a markdown table (for BUILD_SIZES.md), with
#                        the commit the binaries were built from
# shellcheck disable=SC2059 # printf formats: the table row, chosen once below
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

TARGET=aarch64-unknown-linux-gnu
target_dir="${CARGO_TARGET_DIR:-target}"
build=1 markdown=0
for arg in "$@"; do
    case "$arg" in
    --sizes-only) build=0 ;;
    --markdown) markdown=1 ;;
    *) die "unknown option $arg (expected --sizes-only or --markdown)" ;;
    esac
done
mapfile -t functions < <(functions)

if ((build)); then
    scripts/ensure-cargo-lambda.sh --with-zig
    use_local_cargo_lambda
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -x "$TARGET" >/dev/null; then
        log "adding the Rust target $TARGET"
        rustup target add "$TARGET" || die "could not add the Rust target $TARGET"
    fi
    log "cargo lambda build --release --arm64 ${functions[*]/#/-p }"
    built_from="$(source_commit)"
    # shellcheck disable=SC2046 # one -p per function
    cargo lambda build --release --arm64 $(printf -- '-p %s ' "${functions[@]}") ||
        die "the release build failed; see the errors above"
    # Which sources these binaries are, for the sizes table (and `make bench`).
    printf '%s\n' "$built_from" >"$target_dir/lambda/BUILT_FROM"
fi

row='%-18s %12s %8s %14s\n'
if ((markdown)); then
    row='| `%s` | %s | %s | %s |\n'
    printf '| function | `bootstrap` (bytes) | MiB | zipped (bytes) |\n|---|---:|---:|---:|\n'
else
    printf "$row" function bytes MiB zipped
fi
for f in "${functions[@]}"; do
    binary="$target_dir/lambda/$f/bootstrap"
    [[ -f "$binary" ]] || die "$binary is missing; run make release"
    # Bytes, MiB, and deflated into a zip archive (about what a deployment
    # package costs to upload; Lambda's limit is 50 MB zipped).
    sizes="$(python3 -c 'import io, os, sys, zipfile
b = io.BytesIO(); n = os.path.getsize(sys.argv[1])
with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z: z.write(sys.argv[1], "bootstrap")
print(n, f"{n / 1048576:.2f}", len(b.getvalue()))' "$binary")"
    # shellcheck disable=SC2086 # three numbers
    printf "$row" "$f" $sizes
done
if ((markdown)); then
    built_from="$(cat "$target_dir/lambda/BUILT_FROM" 2>/dev/null || true)"
    case "$built_from" in
    "") printf '\nBuilt from sources of an unknown commit.\n' ;;
    *+changes) printf '\nBuilt from commit `%s` with uncommitted changes.\n' "${built_from%+changes}" ;;
    *) printf '\nBuilt from commit `%s`.\n' "$built_from" ;;
    esac
fi
