#!/usr/bin/env bash
# The test of scripts/test.sh itself, on its two cheapest stages (fmt,
# shell): --list names every stage; --only runs just those; --skip leaves one
# out; a stage made to fail (CHAT_TEST_FAIL_STAGE) does not stop the next one,
# shows FAIL in the summary and makes the exit code 1; an unknown stage name
# is a usage error (exit 2); output to a pipe carries no colour codes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
test_sh="$root/scripts/test.sh"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
failures=0

expect() {
  local what="$1"; shift
  if "$@"; then
    echo "ok: $what"
  else
    echo "FAILED: $what" >&2
    failures=$((failures + 1))
  fi
}

# Runs test.sh with the given arguments; its output lands in $out, its exit
# code in $rc.
run() {
  set +e
  "$test_sh" "$@" >"$out" 2>&1
  rc=$?
  set -e
}

summary_row() { grep -Eq "^$1 +$2 " "$out"; }
closing_line() { [ "$(tail -n 1 "$out")" = "$1" ]; }

run --list
expect "--list exits 0" test "$rc" -eq 0
for stage in fmt clippy shell rust conformance smoke cluster faults history-flood scylla cassandra-faults deploy schemathesis browser selftest; do
  expect "--list names $stage" grep -q "^$stage " "$out"
done

run --only fmt,shell
expect "--only fmt,shell passes" test "$rc" -eq 0
expect "--only: fmt ran and passed" summary_row fmt PASS
expect "--only: shell ran and passed" summary_row shell PASS
expect "--only: nothing else ran" closing_line "2 passed, 0 failed, 0 skipped"

run --only fmt,shell --skip shell
expect "--skip: shell did not run" closing_line "1 passed, 0 failed, 0 skipped"
expect "--skip: fmt ran" summary_row fmt PASS

CHAT_TEST_FAIL_STAGE=fmt run --only fmt,shell
expect "a failed stage makes the exit code 1" test "$rc" -eq 1
expect "the failed stage shows FAIL" summary_row fmt FAIL
expect "the stage after it still ran" summary_row shell PASS
expect "the closing line counts both" closing_line "1 passed, 1 failed, 0 skipped"

run --only no-such-stage
expect "an unknown stage is a usage error" test "$rc" -eq 2
expect "and says so" grep -q "no stage named 'no-such-stage'" "$out"

run --only fmt
expect "output to a pipe has no colour codes" bash -c '! grep -q $'"'"'\e'"'"' "$1"' _ "$out"

[ "$failures" -eq 0 ] || { echo "$failures check(s) of test.sh failed" >&2; exit 1; }
echo "test.sh: every check passed"
