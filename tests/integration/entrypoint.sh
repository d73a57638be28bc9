#!/usr/bin/env bash
# docker-entrypoint.sh, run on the host: it waits for Postgres, migrates, then
# execs the command; without DATABASE_URL it goes straight on.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

test_without_database_url_postgres_is_off_and_the_command_runs() {
  run env -u DATABASE_URL ABILITYSYNC_BIN="$ABILITYSYNC" ./docker-entrypoint.sh sh -c 'echo SERVING'
  assert_rc 0
  assert_contains "$OUT" "DATABASE_URL is not set: Postgres is off"
  assert_contains "$OUT" "SERVING"
  assert_not_contains "$OUT" "migrate:" "no migration ran"
}

test_waits_for_postgres_that_starts_late_then_migrates_and_execs() {
  local pg="$SUITE_TMP/late-pg" port url pid rc
  rm -rf "$pg"
  # Initialise now, start later: the entrypoint must be waiting before the server exists.
  own_pg "$pg"
  url=$(tools/pgcluster.sh start "$pg")
  tools/pgcluster.sh stop "$pg"
  port=$(cat "$pg/port")
  DATABASE_URL="$url" DB_WAIT=60 ABILITYSYNC_BIN="$ABILITYSYNC" \
    ./docker-entrypoint.sh sh -c 'echo SERVING as pid $$' >"$SUITE_TMP/late.log" 2>&1 &
  pid=$!
  sleep 3
  kill -0 "$pid" 2>/dev/null || { cat "$SUITE_TMP/late.log"; fail "the entrypoint did not wait"; }
  tools/pgcluster.sh start "$pg" "$port" >/dev/null
  rc=0
  wait "$pid" || rc=$?
  OUT=$(cat "$SUITE_TMP/late.log")
  tools/pgcluster.sh stop "$pg"
  assert_eq "$rc" 0 "entrypoint exit status; output: $OUT"
  assert_contains "$OUT" "waiting for postgres at 127.0.0.1:$port/postgres (attempt 1"
  assert_contains "$OUT" "committed $(jq '.entries | length' drizzle-compat/drizzle/meta/_journal.json) migration(s)"
  # exec: the command replaced the entrypoint's shell, keeping its pid.
  assert_contains "$OUT" "SERVING as pid $pid"
}

test_gives_up_when_postgres_never_comes_and_does_not_start() {
  run env DATABASE_URL="postgres://postgres@127.0.0.1:$(( (RANDOM % 1000) + 1 ))/x" DB_WAIT=2 \
    ABILITYSYNC_BIN="$ABILITYSYNC" ./docker-entrypoint.sh sh -c 'echo SERVING'
  assert_rc 1
  assert_contains "$OUT" "gave up waiting for postgres"
  assert_contains "$OUT" "migrations did not apply (see above); not starting sh"
  assert_not_contains "$OUT" "SERVING"
}

test_db_host_is_the_host_waited_for() {
  local db
  db=$(new_db)
  # Nothing listens on 127.0.0.2 (the test server is on 127.0.0.1 only).
  run env DATABASE_URL="$db" DB_HOST=127.0.0.2 DB_WAIT=2 ABILITYSYNC_BIN="$ABILITYSYNC" \
    ./docker-entrypoint.sh sh -c 'echo SERVING'
  assert_rc 1
  assert_contains "$OUT" "for Postgres at 127.0.0.2 (DB_HOST)"
  assert_contains "$OUT" "(DB_HOST)"
  assert_not_contains "$OUT" "SERVING"
  run env DATABASE_URL="$db" DB_HOST=127.0.0.1 DB_WAIT=2 ABILITYSYNC_BIN="$ABILITYSYNC" \
    ./docker-entrypoint.sh sh -c 'echo SERVING'
  assert_rc 0
  assert_contains "$OUT" "SERVING"
}

test_a_migration_that_fails_keeps_the_service_down() {
  local db d="$SUITE_TMP/broken"
  db=$(new_db)
  rm -rf "$d" && mkdir -p "$d/meta"
  printf '{"dialect":"postgresql","entries":[{"tag":"0000_x","when":1}]}' >"$d/meta/_journal.json"
  printf 'create tabel x (i int);' >"$d/0000_x.sql"
  run env DATABASE_URL="$db" MIGRATIONS_DIR="$d" ABILITYSYNC_BIN="$ABILITYSYNC" ./docker-entrypoint.sh sh -c 'echo SERVING'
  assert_rc 1
  assert_contains "$OUT" "0000_x.sql statement 1 of 1 failed"
  assert_not_contains "$OUT" "SERVING"
}

test_json_log_format_applies_to_the_entrypoint_too() {
  local line
  run env -u DATABASE_URL LOG_FORMAT=json ABILITYSYNC_BIN="$ABILITYSYNC" ./docker-entrypoint.sh true
  assert_rc 0
  while IFS= read -r line; do
    jq -e '.component == "entrypoint"' <<<"$line" >/dev/null || fail "not a JSON log line: $line"
  done <<<"$OUT"
}

test_with_no_command_it_migrates_and_serves() {
  local db log="$SUITE_TMP/default.log" pid
  db=$(new_db)
  start_emulator
  DATABASE_URL="$db" LISTEN=127.0.0.1:0 VECTOR_DB_API="$EMU_URL" ABILITYSYNC_BIN="$ABILITYSYNC" \
    ./docker-entrypoint.sh >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do grep -q "serving on" "$log" && break; sleep 0.1; done
  assert_contains "$(cat "$log")" "committed $(jq '.entries | length' drizzle-compat/drizzle/meta/_journal.json) migration(s)"
  assert_contains "$(cat "$log")" "starting: $ABILITYSYNC serve"
  assert_contains "$(cat "$log")" "serving on http://127.0.0.1:"
  kill -TERM "$pid"
  wait "$pid" || fail "serve did not exit 0 on SIGTERM: $(tail -n 20 "$log")"
  stop_emulator
}

run_suite
