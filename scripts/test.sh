#!/usr/bin/env bash
# The project's test command: every stage below, in this order, each one run
# even when an earlier one failed, then a summary table (stage, PASS / FAIL /
# SKIP with the reason, seconds) and a closing line "N passed, N failed,
# N skipped". Exits 1 if any stage failed, 2 on a usage or set-up error.
#
#   scripts/test.sh                      # everything (README and CI run this)
#   scripts/test.sh --quick              # fmt, clippy, rust, conformance: the inner loop
#   scripts/test.sh --only rust,scylla   # just these stages
#   scripts/test.sh --skip browser       # everything but these
#   scripts/test.sh --list               # the stages, one a line, with what each runs
#
# Installs what the tests need when it is missing (Debian packages, Python
# venvs, npm packages); safe to run again. Colours only on a terminal
# (NO_COLOR turns them off there too). CHAT_TEST_FAIL_STAGE=NAME makes that
# stage fail at once: the script's own test (stage `selftest`) uses it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/test-stages.sh
source "$root/scripts/test-stages.sh"

usage() { sed -n '7,11p' "${BASH_SOURCE[0]}" | sed 's/^# //'; }

only="" skip=""
while [ $# -gt 0 ]; do
  case "$1" in
    --list) list_stages; exit 0 ;;
    --quick) only="$QUICK_STAGES"; shift ;;
    --only) only="${2:?--only needs STAGE[,STAGE]}"; shift 2 ;;
    --only=*) only="${1#*=}"; shift ;;
    --skip) skip="${2:?--skip needs STAGE[,STAGE]}"; shift 2 ;;
    --skip=*) skip="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; echo "test.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
check_stage_names "$only" "$skip" || exit 2
export TEST_ONLY="$only"

setup_colours
ensure_prerequisites || exit 2

for stage in "${STAGES[@]}"; do
  if ! selected "$stage" "$only" "$skip"; then
    continue
  fi
  run_stage "$stage"
done
print_summary
