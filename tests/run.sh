#!/usr/bin/env bash
# run.sh - runs every test suite and prints one summary line: "N passed, N failed".
#
#   tests/run.sh              everything (what `make test` runs after building)
#   tests/run.sh migrate lint only the named suites ("unit" = the Criterion tests)
#   ONLY=name tests/run.sh x  only the tests of suite x whose name contains `name`
#
# Postgres: a throwaway PostgreSQL cluster is started for the run (as the
# postgres user when we are root) on a free port with a private socket
# directory, and removed afterwards. Set TEST_DATABASE_URL to use an existing
# server instead (its user needs CREATEDB).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

TEST_TMP=$(mktemp -d /tmp/abilitysync-test.XXXXXX)
export TEST_TMP
chmod 755 "$TEST_TMP"
PG_DIR="$TEST_TMP/pg"

cleanup() {
  if [ -z "${TEST_DATABASE_URL:-}" ]; then
    tools/pgcluster.sh stop "$PG_DIR" 2>/dev/null
  elif [ -f "$TEST_TMP/databases" ]; then
    while read -r db; do
      psql -X -q "$TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1
    done <"$TEST_TMP/databases"
  fi
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$TEST_TMP"
}
trap cleanup EXIT

all_suites() {
  echo unit
  for f in tests/integration/*.sh; do basename "$f" .sh; done
}

suites=("$@")
[ ${#suites[@]} -gt 0 ] || mapfile -t suites < <(all_suites)

total_pass=0
total_fail=0
summary=()
skipped=()

add() { # suite passed failed [skipped: reason]
  total_pass=$((total_pass + $2))
  total_fail=$((total_fail + $3))
  summary+=("$(printf '%-22s %5d passed, %d failed%s' "$1" "$2" "$3" "${4:+ ($4)}")")
  [ -z "${4:-}" ] || skipped+=("$1: ${4#skipped: }")
}

# Criterion binaries of both builds; a binary that dies before its synthesis
# line counts as one failure.
run_unit() {
  local variant bin out line p f
  for variant in release asan; do
    p=0 f=0
    for bin in "build/$variant/tests/"test_*; do
      if [ ! -x "$bin" ] || [ "${bin%.d}" != "$bin" ]; then continue; fi
      out=$("$bin" --short-filename 2>&1)
      line=$(grep 'Synthesis:' <<<"$out" | tail -n 1)
      if [ -z "$line" ]; then
        echo "FAILED $bin: no synthesis line"
        tail -n 30 <<<"$out" | sed 's/^/    | /'
        f=$((f + 1))
        continue
      fi
      p=$((p + $(sed -E 's/.*Passing: ([0-9]+).*/\1/' <<<"$line")))
      f=$((f + $(sed -E 's/.*Failing: ([0-9]+).*Crashing: ([0-9]+).*/\1 + \2/' <<<"$line")))
      if grep -q -E 'Failing: [1-9]|Crashing: [1-9]' <<<"$line"; then
        grep -E '\[FAIL\]|\[----\]' <<<"$out" | head -n 30 | sed "s|^|    $bin: |"
      fi
    done
    echo "unit ($variant): $p passed, $f failed"
    add "unit-$variant" "$p" "$f"
  done
}

# A suite's measurements (its "# " lines after the summary: the soak's
# counts, the image size...) go to build/figures/SUITE.txt when it passed;
# `make readme-tables` copies them into the README.
save_figures() { # suite log failed
  local figures
  [ "$3" = 0 ] || return 0
  figures=$(sed -n '/^# summary:/,$p' "$2" | grep '^# ' | grep -v '^# summary:' | sed 's/^# //')
  [ -n "$figures" ] || return 0
  mkdir -p build/figures
  {
    echo "tests/run.sh $1, $(date -u '+%Y-%m-%d'):"
    echo
    echo "$figures"
  } >"build/figures/$1.txt"
}

run_integration() {
  local suite=$1 log="$TEST_TMP/$1.out" line p f
  echo "== $suite"
  bash "tests/integration/$suite.sh" 2>&1 | tee "$log"
  line=$(grep '^# summary:' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "FAILED $suite: the suite stopped before its summary"
    add "$suite" 0 1
    return
  fi
  p=$(sed -E 's/# summary: ([0-9]+) passed, ([0-9]+) failed.*/\1/' <<<"$line")
  f=$(sed -E 's/# summary: ([0-9]+) passed, ([0-9]+) failed.*/\2/' <<<"$line")
  add "$suite" "$p" "$f" "$(sed -nE 's/.*\((skipped: .*)\)$/\1/p' <<<"$line")"
  save_figures "$suite" "$log" "$f"
}

needs_pg=false
for s in "${suites[@]}"; do [ "$s" = fuzz ] || needs_pg=true; done # the unit tests of the store need one too
if $needs_pg; then
  if [ -n "${TEST_DATABASE_URL:-}" ]; then
    TEST_PG_URL=$TEST_DATABASE_URL
  else
    TEST_PG_URL=$(tools/pgcluster.sh start "$PG_DIR") || { echo "could not start PostgreSQL"; echo "0 passed, 1 failed"; exit 1; }
  fi
  export TEST_PG_URL
fi

start=$(date +%s)
for s in "${suites[@]}"; do
  if [ "$s" = unit ]; then
    run_unit
  elif [ -f "tests/integration/$s.sh" ]; then
    run_integration "$s"
  else
    echo "no such suite: $s"
    add "$s" 0 1
  fi
done

echo
echo "== summary ($(($(date +%s) - start)) s, $ROOT)"
printf '%s\n' "${summary[@]}"
if [ ${#skipped[@]} -gt 0 ]; then
  echo "$total_pass passed, $total_fail failed (skipped: $(printf '%s; ' "${skipped[@]}" | sed 's/; $//'))"
else
  echo "$total_pass passed, $total_fail failed"
fi
[ "$total_fail" = 0 ]
