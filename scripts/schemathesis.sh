#!/usr/bin/env bash
# Runs schemathesis (property-based API testing from the OpenAPI document)
# against a running local stack, and fails on:
#   - any 5xx from our functions (not_a_server_error);
#   - any response that does not conform to openapi.json: undocumented status
#     code, content type or header, a required header missing, or a body that
#     does not validate against the documented schema.
#
# Requests are generated from openapi.json, valid and invalid ones (examples,
# coverage and fuzzing phases), a bounded number per operation
# (SCHEMATHESIS_MAX_EXAMPLES, default 300) with a fixed seed
# (SCHEMATHESIS_SEED, default 1), so that a run is bounded (about half a
# minute on 2 cores) and repeatable; set another seed to explore further.
#
# The stack must allow far more requests than the run sends: `make test` starts
# it with RATE_LIMIT_REQUESTS=1000000 (scripts/test.sh, group `schemathesis`).
# Answers the emulator (`cargo lambda watch`) gives itself, without invoking a
# function, to input it cannot put into a Lambda event are not counted:
# scripts/schemathesis_hooks.py says exactly which and why.
#
# schemathesis comes from PyPI, installed into .venv/ at the repository root
# (beside cargo-lambda and cfn-lint), never into the system Python. The version
# is pinned: a new release brings new checks and generators, which must not
# fail an unchanged API; raise SCHEMATHESIS_VERSION on purpose instead.
#
# Usage: scripts/schemathesis.sh BASE_URL   (http://127.0.0.1:<port> only)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
SCHEMATHESIS_MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-300}"
SCHEMATHESIS_SEED="${SCHEMATHESIS_SEED:-1}"
venv="$REPO_ROOT/.venv"
base_url="${1:-}"

[[ -n "$base_url" ]] || die "usage: scripts/schemathesis.sh http://127.0.0.1:<port>"
# Loopback only: the run sends thousands of hostile requests.
[[ "$base_url" =~ ^http://127\.0\.0\.1:[0-9]+/?$ ]] ||
    die "schemathesis runs only against a local stack on http://127.0.0.1:<port> (got $base_url)"

if [[ ! -x "$venv/bin/pip" ]]; then
    python=""
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            python="$candidate"
            break
        fi
    done
    [[ -n "$python" ]] || die "schemathesis needs Python 3.11+ (with venv) to be installed into .venv/"
    log "creating the virtual environment .venv/"
    rm -rf "$venv"
    "$python" -m venv "$venv" ||
        die "could not create .venv/ with '$python -m venv' (on Debian/Ubuntu: apt-get install python3-venv)"
fi

installed="$("$venv/bin/schemathesis" --version 2>/dev/null | awk '{print $NF}' || true)"
if [[ "$installed" != "$SCHEMATHESIS_VERSION" ]]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into .venv/"
    timeout 900 "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" ||
        die "pip could not install schemathesis into .venv/"
fi

# Reports (and the generation database, which is off) would land in the
# working directory: use a scratch one.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/schemathesis.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

log "schemathesis $SCHEMATHESIS_VERSION against ${base_url%/} (openapi.json, ≤ $SCHEMATHESIS_MAX_EXAMPLES examples per operation, seed $SCHEMATHESIS_SEED)"
cd "$scratch"
SCHEMATHESIS_HOOKS="$REPO_ROOT/scripts/schemathesis_hooks.py" \
    "$venv/bin/schemathesis" run "$REPO_ROOT/openapi.json" \
    --url "${base_url%/}" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$SCHEMATHESIS_MAX_EXAMPLES" \
    --seed "$SCHEMATHESIS_SEED" \
    --workers 2 \
    --request-timeout 30 \
    --generation-database none \
    --no-color
log "schemathesis: no server errors, every response conforms to openapi.json"
