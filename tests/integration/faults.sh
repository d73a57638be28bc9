#!/usr/bin/env bash
# Faults under load: the vector DB failing, the service killed with -9,
# Postgres stopped, replicas racing, a SIGTERM mid-load. Whatever happens,
# every acknowledged write ends up in both stores with identical content.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

DIM=256
# A crashed service's freshly written rows wait this long before another takes them.
FAST=("EMBEDDING_DIM=$DIM" SYNC_LEASE=2 SYNC_INTERVAL_MS=100 SYNC_BACKOFF_MS=100 SYNC_BACKOFF_MAX_MS=500
  SYNC_CLAIM_MAX=500 SYNC_MAX_ATTEMPTS=1000 VDB_BACKOFF_MS=20 VDB_BACKOFF_MAX_MS=100)

migrated_db() {
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
}

# load N CONCURRENCY URL ACKFILE [seed]: the load generator, output in $SUITE_TMP/load.<ackfile name>.
load() {
  "$LOADGEN" --url "$3" --requests "$1" --concurrency "$2" --dim "$DIM" --ack-file "$4" --prefix f \
    ${5:+--seed "$5"} --json >"$SUITE_TMP/load.$(basename "$4").json" 2>"$SUITE_TMP/load.$(basename "$4").err"
}

acked() { wc -l <"$1"; }

test_a_vector_db_failing_during_a_load_of_2000_loses_nothing() {
  local acks="$SUITE_TMP/acks.500"
  migrated_db
  start_emulator
  # A 500 may come after the server did the work: every failed push is in doubt for a
  # (short) quarantine, then verified; the retries go on meanwhile.
  start_service DATABASE_URL="$DB" "${FAST[@]}" SYNC_WAIT_MS=100 VDB_MAX_ATTEMPTS=1 VDB_QUARANTINE_MS=300
  wait_ready
  emu POST /_admin/faults '{"path": "/vectors", "method": "POST", "status": 500}'
  load 2000 8 "$SVC_URL" "$acks"
  assert_eq "$(acked "$acks")" 2000 "every request acknowledged while the vector DB failed (answers: $(jq -c .status "$SUITE_TMP/load.acks.500.json"))"
  assert_eq "$(jq -r '.status["202"] // 0' "$SUITE_TMP/load.acks.500.json")" 2000 "all answered 202 (pending)"
  emu GET /_admin/counters
  [ "$(jq '.faults.injected' <<<"$BODY")" -gt 2000 ] || fail "the faults did not fire: $BODY"
  emu DELETE /_admin/faults
  wait_converged "$DB" 60
  check_stores_agree "$DB" "$acks"
  assert_eq "$(psql_q "$DB" -c "select count(*) from abilitysync.sync_state where state = 'synced'")" 2000
  stop_service
  stop_emulator
}

test_kill_9_during_a_load_then_restart_loses_nothing() {
  local acks="$SUITE_TMP/acks.kill" loader
  migrated_db
  start_emulator
  emu POST /_admin/faults '{"path": "/vectors", "method": "POST", "latency_ms": 30}'
  start_service DATABASE_URL="$DB" "${FAST[@]}" SYNC_WAIT_MS=50
  wait_ready
  load 2000 8 "$SVC_URL" "$acks" &
  loader=$!
  for _ in $(seq 1 200); do [ "$(acked "$acks" 2>/dev/null || echo 0)" -ge 300 ] && break; sleep 0.05; done
  kill -9 "$SVC_PID"
  wait "$SVC_PID" 2>/dev/null || true
  wait "$loader" || true # transport errors after the kill are expected
  [ "$(acked "$acks")" -ge 300 ] || fail "too few acknowledgements before the kill: $(acked "$acks")"
  [ "$(acked "$acks")" -lt 2000 ] || fail "the kill came too late to test anything"
  emu DELETE /_admin/faults
  start_service DATABASE_URL="$DB" "${FAST[@]}"
  wait_converged "$DB" 60
  check_stores_agree "$DB" "$acks"
  stop_service
  stop_emulator
}

test_postgres_stopped_during_a_load_answers_503_and_recovers_without_restart() {
  local acks="$SUITE_TMP/acks.pg" loader pgdir="$SUITE_TMP/own-pg" pid
  rm -rf "$pgdir"
  own_pg "$pgdir"
  DB=$(tools/pgcluster.sh start "$pgdir")
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator
  start_service DATABASE_URL="$DB" "${FAST[@]}"
  wait_ready
  pid=$SVC_PID
  load 1500 4 "$SVC_URL" "$acks" &
  loader=$!
  for _ in $(seq 1 200); do [ "$(acked "$acks" 2>/dev/null || echo 0)" -ge 200 ] && break; sleep 0.05; done
  tools/pgcluster.sh stop "$pgdir"
  sleep 1.5
  tools/pgcluster.sh start "$pgdir" >/dev/null
  wait "$loader"
  [ "$(jq -r '.status["503"] // 0' "$SUITE_TMP/load.acks.pg.json")" -gt 0 ] ||
    fail "no 503 while Postgres was down: $(cat "$SUITE_TMP/load.acks.pg.json")"
  [ "$(acked "$acks")" -gt 200 ] || fail "nothing acknowledged after Postgres came back"
  kill -0 "$pid" || fail "the service died"
  wait_converged "$DB" 60
  check_stores_agree "$DB" "$acks"
  # It serves again without a restart: ready again within 30 s (the pool reconnects with backoff).
  wait_ready 30
  api POST /v1/abilities "$(ability_json after-outage svc $DIM)"
  assert_eq "$CODE" 201
  stop_service
  stop_emulator
  tools/pgcluster.sh stop "$pgdir"
}

test_three_replicas_write_each_ability_once_and_converge() {
  local urls=() pids=() loaders=() i distinct
  migrated_db
  start_emulator
  # Some pushes fail at first, so the retry workers of all three take part.
  emu POST /_admin/faults '{"path": "/vectors", "method": "POST", "status": 503, "fraction": 0.3}'
  for i in 1 2 3; do
    start_service DATABASE_URL="$DB" "${FAST[@]}" SYNC_WAIT_MS=100 VDB_MAX_ATTEMPTS=1
    urls+=("$SVC_URL")
    pids+=("$SVC_PID")
  done
  for i in 0 1 2; do
    SVC_URL=${urls[$i]} wait_ready
    # The same abilities (same seed) sent to all three at once.
    load 600 4 "${urls[$i]}" "$SUITE_TMP/acks.r$i" 4242 &
    loaders+=($!)
  done
  for i in "${loaders[@]}"; do wait "$i"; done
  emu DELETE /_admin/faults
  wait_converged "$DB" 60
  distinct=$(cat "$SUITE_TMP"/acks.r* | cut -d' ' -f1 | sort -u | wc -l)
  assert_eq "$distinct" 600 "abilities acknowledged"
  assert_eq "$(psql_q "$DB" -c "select count(*) || ' ' || max(generation) from abilitysync.sync_state")" "600 1" \
    "each ability written once (generation 1)"
  cat "$SUITE_TMP"/acks.r* >"$SUITE_TMP/acks.all"
  check_stores_agree "$DB" "$SUITE_TMP/acks.all"
  for i in "${pids[@]}"; do stop_service "$i"; done
  stop_emulator
}

test_sigterm_during_a_load_loses_no_acknowledged_write() {
  local acks="$SUITE_TMP/acks.term" loader
  migrated_db
  start_emulator
  emu POST /_admin/faults '{"path": "/vectors", "method": "POST", "latency_ms": 20}'
  start_service DATABASE_URL="$DB" "${FAST[@]}"
  wait_ready
  load 2000 8 "$SVC_URL" "$acks" &
  loader=$!
  for _ in $(seq 1 200); do [ "$(acked "$acks" 2>/dev/null || echo 0)" -ge 300 ] && break; sleep 0.05; done
  stop_service
  wait "$loader" || true
  assert_contains "$(cat "$SVC_LOG")" "stopped: every request answered, every push recorded"
  # Everything acknowledged is in Postgres, and already in the vector DB: the drain waited for its pushes.
  check_stores_agree "$DB" "$acks"
  assert_eq "$(psql_q "$DB" -c "select count(*) from abilitysync.sync_state where state <> 'synced'")" 0
  stop_emulator
}

run_suite
