#!/usr/bin/env bash
# The libFuzzer targets (tests/fuzz/, built by `make fuzz-build` into
# build/fuzz/): every seed and every regression input replayed, then a short
# fuzzing run of each target (FUZZ_TEST_SECONDS, default 8) through
# tools/fuzz.sh, which must find no crash and leave the committed corpus alone.
# A target that is not built is a failure, never a skip.
# shellcheck disable=SC2317  # test functions are called indirectly
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

FUZZ_BIN_DIR="$ROOT/build/fuzz"
FUZZ_TEST_SECONDS=${FUZZ_TEST_SECONDS:-8}

targets() {
  local f
  for f in "$ROOT"/tests/fuzz/fuzz_*.c; do basename "$f" .c; done
}

need_target() { # fuzz_name
  [ -x "$FUZZ_BIN_DIR/$1" ] ||
    fail "$FUZZ_BIN_DIR/$1 is missing: build the fuzz targets with 'make fuzz-build' (make test does)"
}

# A listing of the committed corpus: the runs must not change it.
corpus_listing() {
  (cd "$ROOT/tests/fuzz" && find corpus regressions -type f -exec md5sum {} + | sort)
}

# fuzz_for NAME: replays NAME's corpus and regressions, then fuzzes it for FUZZ_TEST_SECONDS.
fuzz_for() {
  local before execs
  need_target "fuzz_$1"
  before=$(corpus_listing)
  run env FUZZ_TARGETS="$1" FUZZ_SECONDS="$FUZZ_TEST_SECONDS" FUZZ_WORK="$SUITE_TMP/work-$1" "$ROOT/tools/fuzz.sh"
  echo "$OUT"
  assert_rc 0 "tools/fuzz.sh for $1"
  assert_contains "$OUT" "crashes 0"
  assert_contains "$OUT" "total: 1 targets"
  execs=$(sed -n "s/^fuzz_$1 *\([0-9]*\) execs.*/\1/p" <<<"$OUT")
  [ "${execs:-0}" -gt 100 ] || fail "fuzz_$1 ran only ${execs:-0} inputs in $FUZZ_TEST_SECONDS s"
  assert_eq "$(corpus_listing)" "$before" "tests/fuzz/corpus after fuzzing"
}

test_ability_body_parser_and_embedding_validator() { fuzz_for ability_body; }
test_journal_parser_and_statement_splitter() { fuzz_for journal; }
test_vector_db_reply_parser() { fuzz_for vdb_reply; }
test_http_route_query_and_search_parsing() { fuzz_for http; }
test_api_keys_entries() { fuzz_for keys; }
test_configuration_from_the_environment() { fuzz_for config; }

test_every_target_is_built_and_has_seeds() {
  local t n
  [ -n "$(targets)" ] || fail "no tests/fuzz/fuzz_*.c"
  for t in $(targets); do
    need_target "$t"
    n=$(find "$ROOT/tests/fuzz/corpus/${t#fuzz_}" -maxdepth 1 -type f 2>/dev/null | wc -l)
    [ "$n" -ge 5 ] || fail "tests/fuzz/corpus/${t#fuzz_}/ has $n seeds"
  done
}

# Each input on its own (libFuzzer runs files given by name once each): every
# seed and every input that once crashed, through its target.
test_every_seed_and_regression_replays_cleanly() {
  local t name files n
  for t in $(targets); do
    need_target "$t"
    name=${t#fuzz_}
    mapfile -t files < <(find "$ROOT/tests/fuzz/corpus/$name" "$ROOT/tests/fuzz/regressions/$name" -maxdepth 1 \
      -type f 2>/dev/null | sort)
    [ ${#files[@]} -gt 0 ] || fail "no inputs for $t"
    run "$FUZZ_BIN_DIR/$t" "${files[@]}"
    [ "$RC" = 0 ] || { tail -n 40 <<<"$OUT"; fail "$t crashed replaying its inputs (status $RC)"; }
    n=$(grep -c '^Executed ' <<<"$OUT" || true)
    assert_eq "$n" "${#files[@]}" "$t: inputs executed"
    echo "$t: ${#files[@]} inputs replayed"
  done
}

# tools/fuzz.sh on a target that crashes: exit 1, the artifact, how to reproduce, the total.
test_a_crash_fails_the_run_and_names_the_artifact() {
  local bin="$SUITE_TMP/fake-bin"
  mkdir -p "$bin"
  cat >"$bin/fuzz_http" <<'EOF'
#!/bin/sh
# A stand-in target: writes an artifact where libFuzzer would, reports, fails.
for a in "$@"; do
  case $a in -artifact_prefix=*) prefix=${a#-artifact_prefix=} ;; esac
done
printf 'boom' >"${prefix}crash-0123"
echo "invariant broken at fake.c:1: x"
echo "  what broke"
echo "stat::number_of_executed_units: 42"
exit 77
EOF
  chmod +x "$bin/fuzz_http"
  run env FUZZ_BIN="$bin" FUZZ_TARGETS=http FUZZ_SECONDS=1 FUZZ_WORK="$SUITE_TMP/work-fake" "$ROOT/tools/fuzz.sh"
  assert_rc 1
  assert_contains "$OUT" "fuzz_http                    42 execs"
  assert_contains "$OUT" "crashes 1"
  assert_contains "$OUT" "invariant broken at fake.c:1"
  assert_contains "$OUT" "artifact:  $SUITE_TMP/work-fake/http/artifacts/crash-0123"
  assert_contains "$OUT" "reproduce: $bin/fuzz_http $SUITE_TMP/work-fake/http/artifacts/crash-0123"
  assert_contains "$OUT" "total: 1 targets, 42 execs, 1 crashes"
}

test_unknown_target_and_bad_seconds_are_refused() {
  run env FUZZ_TARGETS=nonesuch "$ROOT/tools/fuzz.sh"
  assert_rc 2
  assert_contains "$OUT" "no target"
  run env FUZZ_SECONDS=abc "$ROOT/tools/fuzz.sh"
  assert_rc 2
}

run_suite
