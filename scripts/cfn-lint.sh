#!/usr/bin/env bash
# Lints template.yaml with cfn-lint, CloudFormation's own linter, which also
# expands the SAM transform and checks the result. Errors, warnings and
# informational findings all fail.
#
# cfn-lint is pip-installed into .venv/, pinned: every release adds rules, and
# a new rule must not fail an unchanged template; raise CFN_LINT_VERSION on
# purpose instead.
#
# Usage: scripts/cfn-lint.sh [TEMPLATE]   (default: template.yaml)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CFN_LINT_VERSION="${CFN_LINT_VERSION:-1.58.0}"
template="${1:-$REPO_ROOT/template.yaml}"
[[ -f "$template" ]] || die "no template at $template"
venv_pin cfn-lint "$CFN_LINT_VERSION"
log "cfn-lint $CFN_LINT_VERSION: ${template#"$REPO_ROOT/"}"
# --include-checks I: informational rules too (stateful resources without an
# explicit DeletionPolicy, for example), which cfn-lint skips by default.
"$VENV/bin/cfn-lint" --include-checks I --non-zero-exit-code informational -- "$template"
log "cfn-lint: no errors, warnings or informational findings"
