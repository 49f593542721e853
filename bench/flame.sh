#!/usr/bin/env bash
# bench/flame.sh PID SECONDS OUT.svg: samples process PID's stacks with perf
# for SECONDS (199 Hz, DWARF unwinding) and renders a flame graph to OUT.svg
# (inferno, installed under target/tools on first use); the folded stacks
# go next to it (OUT.folded) for reading the top frames as text.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pid="$1" seconds="$2" svg="$3"
tools="$root/target/tools"
if ! command -v perf >/dev/null; then
  apt-get install -y linux-perf >/dev/null
fi
if [[ ! -x "$tools/bin/inferno-flamegraph" ]]; then
  cargo install --quiet --locked --root "$tools" inferno >&2
fi
data="$(mktemp -t flame.XXXXXX)"
trap 'rm -f "$data"' EXIT
perf record --quiet -F 199 -g --call-graph dwarf,16384 -p "$pid" -o "$data" -- sleep "$seconds" >/dev/null
ls -l "$data" >&2
perf script -i "$data" 2>/dev/null | "$tools/bin/inferno-collapse-perf" >"${svg%.svg}.folded"
"$tools/bin/inferno-flamegraph" --title "$(basename "${svg%.svg}")" <"${svg%.svg}.folded" >"$svg"
