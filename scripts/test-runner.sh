# shellcheck shell=bash
# The stage runner of scripts/test.sh: selection (--only, --skip), running
# one stage in a subshell of its own (a failure ends that stage, not the
# run), the tally and the summary table. Sourced, not run.
#
# A stage is a function `stage_NAME`, run with `set -e` in a subshell with its
# own EXIT trap for clean-up. It may call `stage_note TEXT` (shown in the
# summary) and `stage_skip REASON` (ends the stage as SKIP).

declare -a RESULTS=()
passed_count=0 failed_count=0 skipped_count=0
bold="" red="" green="" yellow="" plain=""

# Colours only when stdout is a terminal and NO_COLOR is unset; tools that
# colour by themselves are told the same.
setup_colours() {
  if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
    bold=$'\e[1m' red=$'\e[31m' green=$'\e[32m' yellow=$'\e[33m' plain=$'\e[0m'
  else
    export NO_COLOR=1 CARGO_TERM_COLOR=never PY_COLORS=0 TERM=dumb
  fi
}

banner() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }

list_stages() {
  local stage
  for stage in "${STAGES[@]}"; do
    printf '%-15s %s\n' "$stage" "${STAGE_DESC[$stage]}"
  done
}

# Fails (returns 1) naming any stage in the comma lists that does not exist.
check_stage_names() {
  local name bad=0
  for name in ${1//,/ } ${2//,/ }; do
    if [ -z "${STAGE_DESC[$name]:-}" ]; then
      echo "test.sh: no stage named '$name' (scripts/test.sh --list)" >&2
      bad=1
    fi
  done
  return "$bad"
}

# True when the stage is to run: in the --only list (or no list), not in --skip.
selected() {
  local stage="$1" only="$2" skip="$3"
  if [ -n "$only" ] && [[ ",$only," != *",$stage,"* ]]; then return 1; fi
  [[ ",$skip," != *",$stage,"* ]]
}

stage_note() { printf '%s; ' "$*" >>"$STAGE_NOTE_FILE"; }

stage_skip() {
  printf '%s; ' "$*" >>"$STAGE_NOTE_FILE"
  exit 77
}

# Runs one stage and records PASS (exit 0), SKIP (77) or FAIL (anything else).
run_stage() {
  local stage="$1" start rc note_file status note
  note_file="$(mktemp)"
  banner "stage $stage: ${STAGE_DESC[$stage]}"
  start=$SECONDS
  set +e
  (
    set -e
    shopt -s inherit_errexit
    export STAGE_NOTE_FILE="$note_file"
    if [ "${CHAT_TEST_FAIL_STAGE:-}" = "$stage" ]; then
      echo "failing on purpose: CHAT_TEST_FAIL_STAGE=$stage" >&2
      exit 1
    fi
    "stage_${stage//-/_}"
  )
  rc=$?
  set -e
  note="$(sed 's/; $//' "$note_file")"
  rm -f "$note_file"
  case "$rc" in
    0) status=PASS; passed_count=$((passed_count + 1)) ;;
    77) status=SKIP; skipped_count=$((skipped_count + 1)) ;;
    *) status=FAIL; failed_count=$((failed_count + 1)); note="exit $rc${note:+; $note}" ;;
  esac
  RESULTS+=("$stage|$status|$((SECONDS - start))|$note")
  if [ "$status" = FAIL ]; then
    printf '%sFAILED: stage %s (exit %s)%s\n' "$red" "$stage" "$rc" "$plain" >&2
  fi
}

colour_of() {
  case "$1" in PASS) echo "$green" ;; FAIL) echo "$red" ;; *) echo "$yellow" ;; esac
}

# The table, then the closing line; returns 1 if any stage failed.
print_summary() {
  local row stage status seconds note
  banner "summary"
  printf '%-15s %-6s %8s  %s\n' stage result seconds detail
  for row in "${RESULTS[@]}"; do
    IFS='|' read -r stage status seconds note <<<"$row"
    printf '%-15s %s%-6s%s %8s  %s\n' "$stage" "$(colour_of "$status")" "$status" "$plain" "$seconds" "$note"
  done
  printf '%s passed, %s failed, %s skipped\n' "$passed_count" "$failed_count" "$skipped_count"
  [ "$failed_count" -eq 0 ]
}
