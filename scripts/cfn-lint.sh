#!/usr/bin/env bash
# Lints template.yaml with cfn-lint, CloudFormation's own linter, which also
# expands the SAM transform and checks the result. Errors, warnings and
# informational findings all fail (exit status non-zero).
#
# cfn-lint comes from PyPI, installed into .venv/ at the repository root (the
# virtual environment that also holds cargo-lambda), never into the system
# Python. The version is pinned: every release adds rules, and a new rule must
# not fail an unchanged template; raise CFN_LINT_VERSION on purpose instead.
#
# Usage: scripts/cfn-lint.sh [TEMPLATE]   (default: template.yaml)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CFN_LINT_VERSION="${CFN_LINT_VERSION:-1.58.0}"
template="${1:-$REPO_ROOT/template.yaml}"
venv="$REPO_ROOT/.venv"

[[ -f "$template" ]] || die "no template at $template"

if [[ ! -x "$venv/bin/pip" ]]; then
    python=""
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
            python="$candidate"
            break
        fi
    done
    [[ -n "$python" ]] || die "cfn-lint needs Python 3.9+ (with venv) to be installed into .venv/"
    log "creating the virtual environment .venv/"
    rm -rf "$venv"
    "$python" -m venv "$venv" ||
        die "could not create .venv/ with '$python -m venv' (on Debian/Ubuntu: apt-get install python3-venv)"
fi

installed="$("$venv/bin/cfn-lint" --version 2>/dev/null | awk '{print $2}' || true)"
if [[ "$installed" != "$CFN_LINT_VERSION" ]]; then
    log "installing cfn-lint $CFN_LINT_VERSION into .venv/"
    timeout 900 "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "cfn-lint==$CFN_LINT_VERSION" ||
        die "pip could not install cfn-lint into .venv/"
fi

log "cfn-lint $CFN_LINT_VERSION: ${template#"$REPO_ROOT/"}"
# --include-checks I: informational rules too (stateful resources without an
# explicit DeletionPolicy, for example), which cfn-lint skips by default.
"$venv/bin/cfn-lint" --include-checks I --non-zero-exit-code informational -- "$template"
log "cfn-lint: no errors, warnings or informational findings"
