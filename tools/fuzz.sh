#!/usr/bin/env bash
# fuzz.sh - runs the libFuzzer targets (build/fuzz/fuzz_*, `make fuzz-build`)
# one after the other, each for FUZZ_SECONDS on a scratch copy of its seed
# corpus (tests/fuzz/corpus/<target>/ and tests/fuzz/regressions/<target>/),
# and prints per target the executions, the corpus size and the crashes.
#
#   FUZZ_SECONDS=60            per target; 0 only replays the corpus
#   FUZZ_RUNS=10000000         instead: this many executions per target, however
#                              long it takes (each line then says how long it took)
#   FUZZ_TARGETS="http journal" some targets (fuzz_ prefix optional); default all
#   FUZZ_WORK=dir              scratch corpora, logs and artifacts (default: a
#                              new /tmp/abilitysync-fuzz.XXXXXX, removed after a
#                              run without crashes)
#   FUZZ_MERGE=1               afterwards, merge into tests/fuzz/corpus/<target>/
#                              the inputs that add coverage (libFuzzer -merge=1);
#                              nothing is ever written there otherwise
#   FUZZ_BIN=dir               where the targets are (default build/fuzz)
#   FUZZ_TIMEOUT=10            seconds one input may take before it counts as a
#                              hang; a fuzzer niced behind a busy machine can be
#                              starved that long (one was, by `make bench`)
#
# Exit status: 0 no crash, 1 a crash (its artifact and how to reproduce it are
# printed), 2 no targets built or an unknown one asked for.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

SECONDS_EACH=${FUZZ_SECONDS:-60}
BIN=${FUZZ_BIN:-build/fuzz}
CORPUS=tests/fuzz/corpus
REGRESSIONS=tests/fuzz/regressions

case $SECONDS_EACH in
  '' | *[!0-9]*) echo "fuzz: FUZZ_SECONDS must be a whole number of seconds, not [$SECONDS_EACH]" >&2; exit 2 ;;
esac
RUNS=${FUZZ_RUNS:-}
case $RUNS in
  '') ;;
  *[!0-9]* | 0) echo "fuzz: FUZZ_RUNS must be a whole number of executions above 0, not [$RUNS]" >&2; exit 2 ;;
esac

# Inputs longer than this are cut: the parsers' interesting cases are short,
# and short inputs mean more executions.
max_len() {
  case $1 in
    fuzz_http) echo 1024 ;; # a request target, a limit, a search body of 4 or 8 numbers
    *) echo 4096 ;;         # bodies, journals and migrations, replies: a few entries of each
  esac
}

targets=()
if [ -n "${FUZZ_TARGETS:-}" ]; then
  for t in $FUZZ_TARGETS; do
    t=fuzz_${t#fuzz_}
    [ -x "$BIN/$t" ] || { echo "fuzz: no target $BIN/$t (make fuzz-build; tests/fuzz/$t.c)" >&2; exit 2; }
    targets+=("$t")
  done
else
  for f in tests/fuzz/fuzz_*.c; do
    t=$(basename "$f" .c)
    [ -x "$BIN/$t" ] || { echo "fuzz: $BIN/$t is not built: run make fuzz-build" >&2; exit 2; }
    targets+=("$t")
  done
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no targets in tests/fuzz/" >&2; exit 2; }

if [ -n "${FUZZ_WORK:-}" ]; then
  WORK=$FUZZ_WORK
  mkdir -p "$WORK" || exit 2
else
  WORK=$(mktemp -d /tmp/abilitysync-fuzz.XXXXXX) || exit 2
fi

# Sanitizer reports end the run (-fno-sanitize-recover) and name the line; leaks count as crashes.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

count_files() { find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }

# A target's run to FUZZ_RUNS without a crash is its line of the README's figure
# (build/figures/fuzz.txt, then make readme-tables), dated; recorded as soon as
# it ends, so a long series cut later keeps the targets it finished.
record() {
  local fig=build/figures/fuzz.txt t=${1%% *}
  mkdir -p build/figures
  { [ -f "$fig" ] && grep -v "^$t " "$fig" | grep '^fuzz_'; echo "$1  ($(date -u +%Y-%m-%d), $(nproc) cores)"; } |
    sort >"$fig.new"
  mv "$fig.new" "$fig"
}

if [ -n "$RUNS" ]; then
  echo "fuzz: ${#targets[@]} target(s), $RUNS executions each, in $WORK"
else
  echo "fuzz: ${#targets[@]} target(s), $SECONDS_EACH s each, in $WORK"
fi
total_execs=0
total_crashes=0
failed=()
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  dir="$WORK/$name"
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  for src in "$CORPUS/$name" "$REGRESSIONS/$name"; do
    [ -d "$src" ] && find "$src" -maxdepth 1 -type f -exec cp {} "$dir/corpus/" \;
  done
  seeds=$(count_files "$dir/corpus")
  len=$(max_len "$t")
  if [ -n "$RUNS" ]; then
    run_flags=(-runs="$RUNS")
  elif [ "$SECONDS_EACH" = 0 ]; then
    run_flags=(-runs=0)
  else
    run_flags=(-max_total_time="$SECONDS_EACH")
  fi
  t0=$(date +%s)
  "$BIN/$t" "${run_flags[@]}" -max_len="$len" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" "$dir/corpus" >"$dir/log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
  execs=${execs:-0}
  corpus=$(count_files "$dir/corpus")
  crashes=$(find "$dir/artifacts" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
    -o -name 'oom-*' \) | wc -l)
  [ "$rc" != 0 ] && [ "$crashes" = 0 ] && crashes=1 # died without an artifact: still a failure
  total_execs=$((total_execs + execs))
  total_crashes=$((total_crashes + crashes))
  line=$(printf '%-18s %12d execs in %5d s  corpus %5d (%d seeds)  crashes %d' "$t" "$execs" $(($(date +%s) - t0)) \
    "$corpus" "$seeds" "$crashes")
  echo "$line"
  [ -z "$RUNS" ] || [ "$crashes" != 0 ] || record "$line"
  if [ "$crashes" != 0 ]; then
    failed+=("$t")
    grep -a -E -A 1 -m 1 'invariant broken|ERROR: (Address|Leak)Sanitizer|runtime error' "$dir/log" | cut -c 1-300 |
      sed 's/^/    | /'
    grep -a -m 1 '^SUMMARY' "$dir/log" | sed 's/^/    | /'
    for a in "$dir"/artifacts/*; do
      [ -f "$a" ] || continue
      echo "    artifact:  $a"
      echo "    reproduce: $BIN/$t $a   (rebuild first: make fuzz-build)"
    done
    echo "    log:       $dir/log"
  fi
  if [ "${FUZZ_MERGE:-0}" = 1 ] && [ "$crashes" = 0 ] && [ "$SECONDS_EACH" != 0 ]; then
    mkdir -p "$CORPUS/$name"
    before=$(count_files "$CORPUS/$name")
    "$BIN/$t" -merge=1 -max_len="$len" "$CORPUS/$name" "$dir/corpus" >"$dir/merge.log" 2>&1 ||
      { echo "    merge failed: $dir/merge.log"; failed+=("$t (merge)"); }
    echo "    merged into $CORPUS/$name: $before -> $(count_files "$CORPUS/$name") files"
  fi
done

echo "total: ${#targets[@]} targets, $total_execs execs, $total_crashes crashes"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}; once fixed, keep the artifact in tests/fuzz/regressions/<target>/ and as a unit test"
  exit 1
fi
[ -n "${FUZZ_WORK:-}" ] || rm -rf "$WORK"
