#!/usr/bin/env bash
# The README is the contract: every exit status each command documents, and
# every error code the HTTP API documents, is provoked here against the real
# binary, and must come out as documented. The lists come from the binary
# (`abilitysync codes`), the same tables the README's copy is generated from,
# so a status or code added there without a way to provoke it here fails too.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

pg() { psql_q "$DB" -c "$1"; }

setup() {
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator
  start_service DATABASE_URL="$DB" BATCH_MAX=3 SYNC_WAIT_MS=500 API_KEYS=k1,reader:read:k2 MAX_BODY_BYTES=1048576 "$@"
  wait_ready
  MAIN_URL=$SVC_URL
}

# call METHOD PATH [BODY [curl args]]: with the API key.
call() { api "$1" "$2" "${3:-}" -H 'Authorization: Bearer k1' "${@:4}"; }

OK_BODY='{"ability_id":"x","ability_name":"n","service_name":"s","description":"d","embedding":[1,2,3,4,5,6,7,8]}'

# provoke CODE: one request that must be answered with that error code; sets CODE and BODY.
provoke() {
  local base='"ability_id":"x","ability_name":"n","service_name":"s","description":"d"'
  case $1 in
  bad_request) call GET /v1/abilities "" -H "X-Filler: $(head -c 20000 /dev/zero | tr '\0' x)" ;;
  malformed_json) call POST /v1/abilities '{"ability_id": ' ;;
  invalid_utf8) call POST /v1/abilities "$(printf '{"ability_id":"x","ability_name":"\xff"}')" ;;
  bad_query) call GET '/v1/abilities?limit=%ff' ;;
  bad_path) call GET /v1/abilities/%ff ;;
  unauthorized) api GET /v1/abilities ;;
  forbidden) api POST /v1/abilities "$OK_BODY" -H 'Authorization: Bearer k2' ;;
  rate_limited) SVC_URL=$LIMITED_URL call GET /v1/abilities >/dev/null && SVC_URL=$LIMITED_URL call GET /v1/abilities ;;
  not_found) call GET /v1/abilities/nobody ;;
  method_not_allowed) call PATCH /v1/abilities ;;
  method_not_implemented) call TRACE /v1/abilities ;;
  expectation_failed) call POST /v1/abilities "$OK_BODY" -H 'Expect: 200-ok' ;;
  vector_id_collision)
    call POST /v1/abilities "$(ability_json c-14068 s)" >/dev/null
    call POST /v1/abilities "$(ability_json c-33647 s)" ;;
  restore_running)
    call POST /v1/abilities "$(ability_json r-1 s)"
    emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "hold": true, "count": 1}'
    call POST /v1/restore '{}' # its page is held: the job runs until released
    call POST /v1/restore '{}'
    local code=$CODE body=$BODY
    emu DELETE /_admin/faults
    CODE=$code BODY=$body ;;
  nothing_to_resume) call POST /v1/restore '{"resume": true}' ;;
  too_many_jobs)
    emu POST /_admin/faults '{"method": "GET", "path": "/vectors/", "hold": true, "count": 1}'
    SVC_URL=$ONE_JOB_URL call POST /v1/reconcile '{}' # held at its first vector: it runs until released
    SVC_URL=$ONE_JOB_URL call POST /v1/restore '{}'
    local code=$CODE body=$BODY
    emu DELETE /_admin/faults
    CODE=$code BODY=$body ;;
  reconcile_running)
    emu POST /_admin/faults '{"method": "GET", "path": "/vectors/", "hold": true, "count": 1}'
    call POST /v1/reconcile '{}' # its first look at a vector is held: the run goes on until released
    call POST /v1/reconcile '{"dry_run": false}'
    local code=$CODE body=$BODY
    emu DELETE /_admin/faults
    CODE=$code BODY=$body ;;
  job_not_running)
    call POST /v1/restore '{}'
    local job
    job=$(jq -r .id <<<"$BODY")
    for _ in $(seq 1 100); do
      call GET "/v1/jobs/$job"
      [ "$(jq -r .state <<<"$BODY")" = running ] || break
      sleep 0.1
    done
    call POST "/v1/jobs/$job/cancel" ;;
  payload_too_large)
    head -c 2000000 /dev/zero | tr '\0' ' ' >"$SUITE_TMP/big.json"
    call POST /v1/abilities "@$SUITE_TMP/big.json" ;;
  unsupported_media_type)
    BODY=$(curl -s -w '\n%{http_code}' -H 'Authorization: Bearer k1' -H 'Content-Type: text/plain' \
      --data-binary "$OK_BODY" "$SVC_URL/v1/abilities")
    CODE=$(tail -n 1 <<<"$BODY")
    BODY=$(sed '$d' <<<"$BODY") ;;
  missing_field) call POST /v1/abilities "{$base}" ;;
  wrong_type) call POST /v1/abilities '[1]' ;;
  invalid_field) call POST /v1/search '{"service_name": "s", "embedding": [1,2,3,4,5,6,7,8], "k": 0}' ;;
  unknown_field) call POST /v1/abilities "{$base,\"embedding\":[1,2,3,4,5,6,7,8],\"embeding\":1}" ;;
  duplicate_field) call POST /v1/abilities "{$base,\"embedding\":[1,2,3,4,5,6,7,8],\"embedding\":[1,2,3,4,5,6,7,8]}" ;;
  empty_field) call POST /v1/abilities '{"ability_id":"x","ability_name":"","service_name":"s","description":"d","embedding":[1,2,3,4,5,6,7,8]}' ;;
  too_long) call POST /v1/abilities "{\"ability_id\":\"$(printf 'a%.0s' $(seq 1 300))\",\"ability_name\":\"n\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4,5,6,7,8]}" ;;
  invalid_ability_id) call POST /v1/abilities '{"ability_id":"a b","ability_name":"n","service_name":"s","description":"d","embedding":[1,2,3,4,5,6,7,8]}' ;;
  wrong_dimension) call POST /v1/abilities "{$base,\"embedding\":[1,2,3]}" ;;
  invalid_embedding) call POST /v1/abilities "{$base,\"embedding\":[1,2,3,4,5,6,7,1e999]}" ;;
  empty_batch) call POST /v1/abilities '{"abilities": []}' ;;
  batch_too_large) call POST /v1/abilities "{\"abilities\": [$OK_BODY,$OK_BODY,$OK_BODY,$OK_BODY]}" ;;
  duplicate_ability) call POST /v1/abilities "{\"abilities\": [$OK_BODY,$OK_BODY]}" ;;
  invalid_body) call POST /v1/restore '[]' ;;
  invalid_parameter) call GET '/v1/abilities?limit=0' ;;
  postgres_error)
    pg "alter table abilities add constraint no_boom check (description <> 'boom')" >/dev/null
    call POST /v1/abilities "$(ability_json boom s 8 1 boom)"
    pg "alter table abilities drop constraint no_boom" >/dev/null ;;
  needs_postgres) SVC_URL=$VDB_ONLY_URL call GET /v1/abilities ;;
  vector_db_error)
    emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "status": 400, "count": 1}'
    SVC_URL=$VDB_ONLY_URL call POST /v1/abilities "$(ability_json vdb-only s)" ;;
  postgres_unavailable) SVC_URL=$NO_PG_URL call GET /v1/abilities ;;
  not_migrated) SVC_URL=$UNMIGRATED_URL call POST /v1/abilities "$OK_BODY" ;;
  overloaded)
    emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "hold": true, "count": 1}'
    (SVC_URL=$ONE_AT_A_TIME_URL call POST /v1/abilities "$(ability_json slow s)" >/dev/null) &
    local slow=$!
    for _ in $(seq 1 50); do emu GET /_admin/held; [ "$(jq -r .held <<<"$BODY")" = 1 ] && break; sleep 0.05; done
    SVC_URL=$ONE_AT_A_TIME_URL call GET /v1/abilities
    local code=$CODE body=$BODY
    emu DELETE /_admin/faults
    wait "$slow"
    CODE=$code BODY=$body ;;
  vector_db_unavailable)
    emu POST /_admin/faults '{"path": "/query", "status": 503}'
    call POST /v1/search '{"service_name": "s", "embedding": [1,2,3,4,5,6,7,8]}'
    local code=$CODE body=$BODY
    emu DELETE /_admin/faults
    CODE=$code BODY=$body ;;
  *) return 1 ;;
  esac
}

test_every_documented_error_code_is_answered_as_documented() {
  local status code meaning seen=0 other
  setup VDB_MAX_ATTEMPTS=1
  # The replicas the other codes need: without Postgres, with an unreachable one, unmigrated.
  start_service VDB_MAX_ATTEMPTS=1 API_KEYS=k1 && VDB_ONLY_URL=$SVC_URL
  start_service DATABASE_URL=postgres://nobody@127.0.0.1:9/x API_KEYS=k1 && NO_PG_URL=$SVC_URL
  other=$(new_db unmigrated)
  start_service DATABASE_URL="$other" API_KEYS=k1 && UNMIGRATED_URL=$SVC_URL
  start_service HTTP_MAX_IN_FLIGHT=1 API_KEYS=k1 && ONE_AT_A_TIME_URL=$SVC_URL
  start_service DATABASE_URL="$DB" RATE_LIMIT_RPS=1 API_KEYS=k1 && LIMITED_URL=$SVC_URL
  start_service DATABASE_URL="$DB" JOBS_MAX=1 API_KEYS=k1 && ONE_JOB_URL=$SVC_URL
  SVC_URL=$MAIN_URL
  while IFS='|' read -r _ status code meaning _; do
    code=$(tr -d ' `' <<<"$code")
    status=$(tr -d ' ' <<<"$status")
    [[ $status =~ ^[0-9]+$ ]] || continue
    if [ "$code" = vector_id_out_of_range ]; then
      # No ability_id is known whose sha256 starts with 80000000: the unit test covers the refusal.
      grep -q the_2147483648_edge_is_refused tests/unit/test_vdbid.c || fail "no test for $code"
      continue
    fi
    provoke "$code" || fail "nothing here provokes the documented error code $code ($status: $meaning)"
    assert_eq "$CODE" "$status" "$code: the status"
    assert_eq "$(jq -r .error.code <<<"$BODY" 2>/dev/null)" "$code" "the code of $BODY"
    assert_eq "$(jq -r '[.type, .status, .code] | map(tostring) | join(" ")' <<<"$BODY" 2>/dev/null)" \
      "urn:abilitysync:problem:$code $status $code" "the problem details of $BODY"
    seen=$((seen + 1))
  done < <("$ABILITYSYNC" codes --markdown | sed -n '/^| status | code/,$p')
  [ "$seen" -ge 30 ] || fail "only $seen codes checked"
  echo "checked $seen error codes"
}


# Errors are RFC 9457 problem details; a 202 says where to look next, and a
# client may wait longer for the vector DB than SYNC_WAIT_MS (Prefer: wait=N).
test_errors_are_problem_details_and_a_202_says_where_to_look() {
  local out e7='[1,2,3,4,5,6,7]' slow='{"method": "POST", "path": "/vectors", "latency_ms": 2000, "count": 1}'
  setup SYNC_WAIT_MAX_MS=5000
  out=$(curl -s -D "$SUITE_TMP/h" -H 'Authorization: Bearer k1' -H 'Content-Type: application/json' \
    --data-binary "{\"abilities\": [$OK_BODY, {\"ability_id\":\"y\",\"ability_name\":\"n\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":$e7}]}" \
    "$SVC_URL/v1/abilities")
  assert_contains "$(tr -d '\r' <"$SUITE_TMP/h")" "Content-Type: application/problem+json" "a refusal's headers"
  assert_eq "$(jq -r '[.type, .status, .code, (.title | length > 0), (.detail | length > 0)] | map(tostring) | join(" ")' <<<"$out")" \
    "urn:abilitysync:problem:wrong_dimension 422 wrong_dimension true true" "the problem details: $out"
  assert_eq "$(jq -r '.errors[0].pointer' <<<"$out")" /abilities/1/embedding "the bad field's JSON pointer: $out"

  emu POST /_admin/faults "$slow"
  out=$(curl -s -D "$SUITE_TMP/h" -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer k1' \
    -H 'Content-Type: application/json' -H 'Prefer: wait=4' --data-binary "$OK_BODY" "$SVC_URL/v1/abilities")
  assert_eq "$out" 201 "a write that waits 4 s for a vector DB taking 2 s (SYNC_WAIT_MS 500 ms)"
  assert_contains "$(tr -d '\r' <"$SUITE_TMP/h")" "Preference-Applied: wait=4" "the answer's headers"

  emu POST /_admin/faults "$slow"
  out=$(curl -s -D "$SUITE_TMP/h" -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer k1' \
    -H 'Content-Type: application/json' --data-binary "${OK_BODY/\"x\"/\"x2\"}" "$SVC_URL/v1/abilities")
  assert_eq "$out" 202 "the same without Prefer"
  assert_contains "$(tr -d '\r' <"$SUITE_TMP/h")" "Location: /v1/abilities/x2" "a 202's headers"
  wait_converged "$DB" 30

  out=$(curl -s -D - -o /dev/null -H 'Authorization: Bearer k1' -H 'Content-Type: application/json' \
    -H 'Prefer: respond-async, wait=999' --data-binary "${OK_BODY/\"x\"/\"x3\"}" "$SVC_URL/v1/abilities")
  assert_contains "$(tr -d '\r' <<<"$out")" "Preference-Applied: wait=5" "a wait over SYNC_WAIT_MAX_MS (5 s) is cut to it"
}
# The admin routes' bodies go through one parser (reqbody.c): every bad field is
# named with what it must be, a duplicate is refused, and nothing starts or changes.
test_admin_bodies_name_every_bad_field_and_change_nothing() {
  setup
  call POST /v1/sync/retry '{"state": "stuck", "older_than_s": -1, "colour": 1}'
  assert_eq "$CODE" 422 "a retry with three bad fields: $BODY"
  assert_eq "$(jq -r '[.errors[] | .pointer + " " + .code] | join(",")' <<<"$BODY")" \
    "/state invalid_field,/older_than_s invalid_field,/colour unknown_field" "every bad field, in order: $BODY"
  assert_contains "$(jq -r '.errors[0].detail' <<<"$BODY")" "state is failed or pending" "what state must be"
  assert_contains "$(jq -r '.errors[2].detail' <<<"$BODY")" "colour is not a field of a retry (state, service_name" \
    "what a retry takes"
  call POST /v1/restore '{"resume": "yes", "service_name": ""}'
  assert_eq "$CODE $(jq -r '[.errors[].pointer] | join(",")' <<<"$BODY")" "422 /resume,/service_name" "a restore: $BODY"
  call POST /v1/restore '{"resume": true, "resume": false}'
  assert_eq "$CODE $(jq -r .code <<<"$BODY")" "400 malformed_json" "a duplicate field: $BODY"
  call POST /v1/reconcile '{"dry_run": false, "deep": 1}'
  assert_eq "$CODE $(jq -r '.errors[0].pointer' <<<"$BODY")" "422 /deep" "a reconcile: $BODY"
  call POST /v1/sync/pause '{"reason": 5}'
  assert_eq "$CODE $(jq -r '.errors[0].detail' <<<"$BODY")" "422 reason is a string of 0 to 1000 bytes" "a pause: $BODY"
  call GET /v1/jobs
  assert_eq "$(jq '.jobs | length' <<<"$BODY")" 0 "jobs started by refused bodies"
  call POST /v1/abilities "$OK_BODY"
  assert_eq "$CODE $(jq -r .sync_state <<<"$BODY")" "201 synced" "a write after the refused pause (not paused)"
}
test_503_answers_say_when_to_retry() {
  start_service DATABASE_URL=postgres://nobody@127.0.0.1:9/x
  assert_contains "$(curl -s -D - -o /dev/null "$SVC_URL/v1/abilities")" "Retry-After: " "a 503's headers"
  stop_service
}

# ---- exit statuses ---------------------------------------------------------------------------

# exit_of COMMAND STATUS: runs the command so that it must end with STATUS; sets RC and OUT.
exit_of() {
  local cmd=$1 want=$2 d="$SUITE_TMP/ex" port
  mkdir -p "$d"
  case "$cmd $want" in
  "serve 0")
    start_service DATABASE_URL="$DB"
    kill -TERM "$SVC_PID"
    set +e; wait "$SVC_PID"; RC=$?; set -e; OUT="(SIGTERM)" ;;
  "serve 1")
    start_service DATABASE_URL="$DB"
    port=${SVC_URL##*:}
    run env LISTEN="127.0.0.1:$port" DATABASE_URL="$DB" "$ABILITYSYNC" serve
    stop_service ;;
  "serve 2") run env LISTEN=nohost "$ABILITYSYNC" serve ;;
  "migrate 0") run env DATABASE_URL="$DB" "$ABILITYSYNC" migrate up ;;
  "migrate 1") run env DATABASE_URL=postgres://nobody@127.0.0.1:9/x "$ABILITYSYNC" migrate up ;;
  "migrate 2") run env DATABASE_URL="$DB" "$ABILITYSYNC" migrate sideways ;;
  "migrate 3") run env DATABASE_URL="$(new_db fresh)" "$ABILITYSYNC" migrate status ;;
  "migrate 4")
    local m
    m=$(new_db changed)
    cp -r drizzle-compat/drizzle "$d/mig"
    DATABASE_URL="$m" "$ABILITYSYNC" migrate up --dir "$d/mig" 2>/dev/null
    echo "-- edited after it was applied" >>"$d/mig/0000_abilities.sql"
    run env DATABASE_URL="$m" "$ABILITYSYNC" migrate up --dir "$d/mig" ;;
  "probe 0") run env VECTOR_DB_API="$EMU_URL" "$ABILITYSYNC" probe ;;
  "probe 1") run env VECTOR_DB_API=http://127.0.0.1:9 "$ABILITYSYNC" probe ;;
  "probe 2") run "$ABILITYSYNC" probe --max-batch lots ;;
  "reconcile 0") run env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=8 "$ABILITYSYNC" reconcile --dry-run ;;
  "reconcile 1") run env DATABASE_URL="$DB" VECTOR_DB_API=http://127.0.0.1:9 EMBEDDING_DIM=8 VDB_MAX_ATTEMPTS=1 \
    "$ABILITYSYNC" reconcile --dry-run ;;
  "reconcile 2") run env DATABASE_URL="$DB" "$ABILITYSYNC" reconcile --wet ;;
  "reconcile 3")
    insert_rows "$DB" s 8 behind-our-back
    run env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=8 "$ABILITYSYNC" reconcile --dry-run
    pg "delete from abilities where ability_id = 'behind-our-back'" >/dev/null ;;
  "restore 0") run env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=8 "$ABILITYSYNC" restore ;;
  "restore 1") run env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=8 "$ABILITYSYNC" restore --resume ;;
  "restore 2") run env DATABASE_URL="$DB" "$ABILITYSYNC" restore --resume --dry-run ;;
  "restore 3")
    insert_rows "$DB" s 4 wrong-dimension
    run env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=8 "$ABILITYSYNC" restore
    pg "delete from abilities where ability_id = 'wrong-dimension'" >/dev/null ;;
  "sync 0") run env DATABASE_URL="$DB" "$ABILITYSYNC" sync retry-failed ;;
  "sync 1") run env DATABASE_URL=postgres://nobody@127.0.0.1:9/x "$ABILITYSYNC" sync retry-failed ;;
  "sync 2") run env DATABASE_URL="$DB" "$ABILITYSYNC" sync retry-everything ;;
  "healthcheck 0")
    start_service DATABASE_URL="$DB"
    run env LISTEN="${SVC_URL#http://}" "$ABILITYSYNC" healthcheck
    stop_service ;;
  "healthcheck 1") run env LISTEN=127.0.0.1:9 "$ABILITYSYNC" healthcheck ;;
  "healthcheck 2") run "$ABILITYSYNC" healthcheck now ;;
  "config 0") run "$ABILITYSYNC" config ;;
  "config 2") run env DB_WAIT=soon "$ABILITYSYNC" config ;;
  "codes 0") run "$ABILITYSYNC" codes ;;
  "codes 2") run "$ABILITYSYNC" codes --html ;;
  "version 0") run "$ABILITYSYNC" version ;;
  "version 2") run "$ABILITYSYNC" version 2 ;;
  *) return 1 ;;
  esac
}

test_every_documented_exit_status_happens() {
  local cmd status meaning seen=0
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator
  while read -r cmd status meaning; do
    exit_of "$cmd" "$status" || fail "nothing here makes '$cmd' exit $status ($meaning)"
    assert_rc "$status" "abilitysync $cmd (documented: $status $meaning)"
    seen=$((seen + 1))
  done < <("$ABILITYSYNC" codes)
  echo "checked $seen exit statuses"
  stop_emulator
}

run_suite
