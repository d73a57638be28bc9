#!/usr/bin/env bash
# A service's full set (PUT /v1/services/{service}/abilities): the dry run's plan
# is what the apply then does, the apply changes both stores (deletes are
# tombstones, pushed by the outbox), a bad set or a collision changes nothing,
# every full-set sync is in the audit trail, and a large set is read in groups.
# shellcheck disable=SC2317  # test functions are called indirectly
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

S=shop.example

# set_json ABILITY_JSON...: {"abilities": [...]}.
set_json() {
  local IFS=,
  echo "{\"abilities\": [$*]}"
}

# put_set BODY [?query]: PUT the set of $S.
put_set() { api PUT "/v1/services/$S/abilities${2:-}" "$1"; }

rows_of() { psql_q "$DB" -c "select ability_id from abilities where service_name = '$1' order by 1" | tr '\n' ' '; }

# The plan without what differs between a dry run and an apply.
plan_of() { jq -S -c 'del(.dry_run)' <<<"$1"; }

test_the_dry_run_plan_is_what_the_apply_then_does() {
  local plan before_db before_vdb
  setup
  api POST /v1/abilities "$(set_json "$(ability_json a-1 $S)" "$(ability_json a-2 $S)" "$(ability_json a-3 $S)" \
    "$(ability_json o-1 other.example)")"
  assert_eq "$CODE" 201 "the abilities before: $BODY"
  wait_converged "$DB"
  local body
  body=$(set_json "$(ability_json a-2 $S)" "$(ability_json a-3 $S 8 1 'does it better')" "$(ability_json a-4 $S)")
  before_db=$(db_fingerprint "$DB")
  before_vdb=$(emu_fingerprint)

  put_set "$body" '?dry_run=true'
  assert_eq "$CODE" 200 "a dry run: $BODY"
  plan=$BODY
  assert_eq "$(jq -c '[.dry_run, .abilities, .counts.add, .counts.update, .counts.unchanged, .counts.delete]' <<<"$plan")" \
    '[true,3,1,1,1,1]' "the plan's counts: $plan"
  assert_eq "$(jq -c '[.add, .update, .unchanged, .delete]' <<<"$plan")" '[["a-4"],["a-3"],["a-2"],["a-1"]]' "the plan"
  assert_eq "$(db_fingerprint "$DB")" "$before_db" "Postgres after a dry run"
  assert_eq "$(emu_fingerprint)" "$before_vdb" "the vector DB after a dry run"
  assert_eq "$(psql_q "$DB" -c 'select count(*) from abilitysync.fullset_stage')" 0 "staged rows left by a dry run"

  put_set "$body"
  assert_eq "$CODE" 202 "the apply: $BODY"
  assert_eq "$(plan_of "$BODY")" "$(plan_of "$plan")" "what the apply did, against the dry run's plan"
  assert_eq "$(jq -r .dry_run <<<"$BODY")" false "the apply says it is not a dry run"
  assert_eq "$(rows_of $S)" "a-2 a-3 a-4 " "the service's rows"
  assert_eq "$(rows_of other.example)" "o-1 " "another service's rows"
  wait_converged "$DB" 30
  assert_eq "$(psql_q "$DB" -c "select state from abilitysync.sync_state where ability_id = 'a-1'")" \
    deleted "a-1's sync state (a tombstone, its vector deleted)"
  check_stores_agree "$DB"
  assert_eq "$(psql_q "$DB" -c "select description from abilities where ability_id = 'a-3'")" "does it better"
  api GET /v1/abilities/a-1
  assert_eq "$CODE" 404 "a-1 after the set"

  put_set "$body"
  assert_eq "$CODE $(jq -c '.counts' <<<"$BODY")" '200 {"add":0,"update":0,"unchanged":3,"delete":0}' \
    "the same set again"
  teardown
}

test_an_empty_set_deletes_every_ability_of_the_service() {
  setup
  api POST /v1/abilities "$(set_json "$(ability_json e-1 $S)" "$(ability_json e-2 $S)" "$(ability_json o-2 other.example)")"
  wait_converged "$DB"
  put_set '{"abilities": []}'
  assert_eq "$CODE $(jq -c '[.counts.delete, .delete]' <<<"$BODY")" '202 [2,["e-1","e-2"]]' "an empty set: $BODY"
  wait_converged "$DB" 30
  check_stores_agree "$DB"
  assert_eq "$(rows_of $S)" "" "the service's rows"
  assert_eq "$(rows_of other.example)" "o-2 " "another service's rows"
  put_set '{}'
  assert_eq "$CODE $(jq -r .code <<<"$BODY")" "422 missing_field" "a body without abilities (not an empty set)"
  teardown
}

test_a_bad_set_changes_nothing_and_names_every_bad_ability() {
  local before
  setup
  api POST /v1/abilities "$(ability_json b-1 $S)"
  wait_converged "$DB"
  before=$(db_fingerprint "$DB")
  put_set "$(set_json "$(ability_json b-2 $S)" "$(ability_json b-3 $S 7)" "$(ability_json b-4 $S)" \
    "$(ability_json b-5 other.example)" "$(ability_json b-2 $S)")"
  assert_eq "$CODE" 422 "a set with bad abilities: $BODY"
  assert_eq "$(jq -r '[.errors[] | .pointer + " " + .code] | join(",")' <<<"$BODY")" \
    "/abilities/1/embedding wrong_dimension,/abilities/3/service_name invalid_field" "every bad ability: $BODY"
  put_set "$(set_json "$(ability_json b-2 $S)" "$(ability_json b-4 $S)" "$(ability_json b-2 $S)")"
  assert_eq "$CODE $(jq -r '.errors[0].pointer' <<<"$BODY")" "422 /abilities/2/ability_id" "an id twice: $BODY"
  api PUT "/v1/services/$S/abilities?dry_run=maybe" '{"abilities": []}'
  assert_eq "$CODE $(jq -r .code <<<"$BODY")" "422 invalid_parameter" "dry_run=maybe"
  assert_eq "$(db_fingerprint "$DB")" "$before" "Postgres after the refused sets"
  assert_eq "$(psql_q "$DB" -c 'select count(*) from abilitysync.fullset_stage')" 0 "staged rows of refused sets"

  # c-14068 and c-33647 map to one vector_id in one blob: the set is refused whole.
  api POST /v1/abilities "$(ability_json c-14068 $S)"
  wait_converged "$DB"
  before=$(db_fingerprint "$DB")
  put_set "$(set_json "$(ability_json b-1 $S)" "$(ability_json c-33647 $S)")"
  assert_eq "$CODE $(jq -r .code <<<"$BODY")" "409 vector_id_collision" "a set colliding with a live ability: $BODY"
  assert_contains "$(jq -r .detail <<<"$BODY")" "c-33647" "the colliding ability named"
  assert_eq "$(db_fingerprint "$DB")" "$before" "Postgres after a refused collision"
  teardown
}

test_every_full_set_sync_is_audited_and_needs_the_write_scope() {
  setup API_KEYS=ingest:write:kw,reader:read:kr,ops:read+admin:ka
  api PUT "/v1/services/$S/abilities?dry_run=true" "$(set_json "$(ability_json d-1 $S)")" -H 'Authorization: Bearer kr'
  assert_eq "$CODE $(jq -r .code <<<"$BODY")" "403 forbidden" "a read key"
  api PUT "/v1/services/$S/abilities?dry_run=true" "$(set_json "$(ability_json d-1 $S)")" -H 'Authorization: Bearer kw'
  assert_eq "$CODE" 200 "a write key, dry run"
  api PUT "/v1/services/$S/abilities" "$(set_json "$(ability_json d-1 $S)")" -H 'Authorization: Bearer kw'
  assert_eq "$CODE" 202 "a write key"
  api GET '/v1/audit?limit=3' '' -H 'Authorization: Bearer ka'
  assert_eq "$(jq -c '[.entries[] | [.key, .action, .params.id, .params.dry_run, .status]]' <<<"$BODY")" \
    "[[\"ingest\",\"PUT /v1/services/{service}/abilities\",\"$S\",null,202],[\"ingest\",\"PUT /v1/services/{service}/abilities\",\"$S\",\"true\",200],[\"reader\",\"PUT /v1/services/{service}/abilities\",\"$S\",\"true\",403]]" \
    "the audit trail: $BODY"
  teardown
}

# A set of 3072-number embeddings larger than every group: staged a group at a
# time, so the service's peak memory grows by the body, not by the set parsed
# (each ability parsed holds its embedding about three times).
test_a_large_set_is_read_in_groups() {
  local n=400 f="$SUITE_TMP/large.json" rss0 rss1 bytes grown
  DB=$(new_db large)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator
  # The release build: ASan's quarantine keeps freed memory, which is what this measures.
  ABILITYSYNC=$ROOT/build/release/abilitysync start_service DATABASE_URL="$DB" EMBEDDING_DIM=3072 \
    MAX_BODY_BYTES=67108864 BATCH_MAX=50
  wait_ready
  {
    printf '{"abilities": ['
    for i in $(seq 1 $n); do
      [ "$i" = 1 ] || printf ','
      ability_json "big-$i" $S 3072 "$i"
    done
    printf ']}'
  } >"$f"
  bytes=$(stat -c %s "$f")
  rss0=$(awk '/VmHWM/ {print $2}' "/proc/$SVC_PID/status")
  api PUT "/v1/services/$S/abilities" "@$f"
  assert_eq "$CODE $(jq -c '[.abilities, .counts.add]' <<<"$BODY")" "202 [$n,$n]" "a set of $n abilities ($bytes bytes)"
  rss1=$(awk '/VmHWM/ {print $2}' "/proc/$SVC_PID/status")
  grown=$(((rss1 - rss0) * 1024))
  echo "figure: a set of $n abilities of 3072 numbers, $((bytes / 1048576)) MB: peak RSS grew $((grown / 1048576)) MB" \
    "($((grown * 100 / bytes))% of the body)"
  # The body twice (libevent's buffer, then one contiguous copy for the parser) and one
  # group parsed (FULLSET_GROUP_BYTES, 8 MB): not the set parsed, which is three bodies more.
  [ "$grown" -lt $((bytes * 2 + 16 * 1048576)) ] || fail "peak RSS grew by $grown bytes for a body of $bytes"
  assert_eq "$(psql_q "$DB" -c "select count(*) from abilities where service_name = '$S'")" "$n" "rows"
  wait_converged "$DB" 120
  check_stores_agree "$DB"
  teardown
}

run_suite "$@"
