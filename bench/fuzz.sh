#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed number of inputs
# (FUZZ_RUNS, default 200000 each): the client frame parser, the JWT
# verification path and the REST query parsers. Needs a nightly toolchain
# and cargo-fuzz (`cargo install cargo-fuzz`); without them it says so and
# skips, and exits 0 - it never reports a run that did not happen.
# A crash leaves its input under fuzz/artifacts/<target>/ and fails the run;
# turn each one into a unit test next to the code it broke.
#
#   bench/fuzz.sh                 # every target, 200000 runs each
#   FUZZ_RUNS=1000000 bench/fuzz.sh jwt
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
runs="${FUZZ_RUNS:-200000}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(client_frame jwt rest_query)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "SKIPPED: no nightly toolchain (rustup toolchain install nightly); no fuzz target ran" >&2
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "SKIPPED: cargo-fuzz is not installed (cargo install cargo-fuzz); no fuzz target ran" >&2
  exit 0
fi

# The fuzz crate has its own workspace and lock file; keep its build apart
# from the main one so neither invalidates the other.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$root/fuzz/target}"
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "==> cargo fuzz run $target -- -runs=$runs"
  # -max_len: frames and tokens are refused past 64 KiB and 8 KiB; larger
  # inputs only slow the search down.
  cargo +nightly fuzz run "$target" "corpus/$target" -- -runs="$runs" -max_len=70000 -timeout=10
done
echo "fuzzed: ${targets[*]} ($runs runs each), no crash"
