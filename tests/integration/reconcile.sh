#!/usr/bin/env bash
# `abilitysync reconcile` against a real Postgres and the emulator: drift made
# behind the service's back (vectors deleted, attributes overwritten, rows
# deleted or inserted directly, outbox rows failed or stuck) is counted exactly
# by a dry run that changes nothing, repaired by a real run, and the periodic
# run inside `serve` happens once per period across replicas.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

TENANT=reverse_engineer
DIM=8
# The CLI retries a failing vector DB briefly, so failures are quick.
CLI_ENV=("EMBEDDING_DIM=$DIM" VDB_MAX_ATTEMPTS=2 VDB_BACKOFF_MS=10 VDB_BACKOFF_MAX_MS=50 VDB_TIMEOUT_MS=2000
  SYNC_INTERVAL_MS=50 SYNC_BACKOFF_MS=50 SYNC_BACKOFF_MAX_MS=200)

# A migrated database, an emulator, and a service on both; extra VAR=value settings pass through.
setup() {
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator
  start_service DATABASE_URL="$DB" EMBEDDING_DIM=$DIM "$@"
  wait_ready
}

pg() { psql_q "$DB" -c "$1"; }

# rec [VAR=value...] [flags...]: `abilitysync reconcile` on $DB and the emulator;
# stdout in $OUT, stderr in $ERR, exit status in $RC.
rec() {
  local envs=()
  while [ $# -gt 0 ] && [[ "$1" =~ ^[A-Z_]+= ]]; do
    envs+=("$1")
    shift
  done
  run_split env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" "${CLI_ENV[@]}" "${envs[@]}" \
    "$ABILITYSYNC" reconcile "$@"
  if [[ " $* " == *" --json "* ]]; then
    jq -e 'type == "object"' <<<"$OUT" >/dev/null 2>&1 || fail "reconcile $* did not print one JSON object:
$OUT
stderr:
$ERR"
  fi
}

# The drift counts of the last report, {"category": count}, keys sorted.
counts() { jq -S -c '.drift | map_values(.count)' <<<"$OUT"; }
# The sample ids of one category, comma-separated.
sample() { jq -r --arg c "$1" '.drift[$c].sample | join(",")' <<<"$OUT"; }
# counts_json missing stale orphans no_sync_state overdue failed collisions invalid_rows vector_differs
# (stale_content, the tenth, is 0 here: it takes an ambiguous push, the outbox suite provokes it;
# old_embedding_model, the eleventh, too: it needs a model named, see its own test)
counts_json() {
  printf '{"collisions":%s,"failed":%s,"invalid_rows":%s,"missing":%s,"no_sync_state":%s,"old_embedding_model":0,"orphans":%s,"overdue":%s,"stale":%s,"stale_content":0,"vector_differs":%s}' \
    "$7" "$6" "$8" "$1" "$4" "$3" "$5" "$2" "$9"
}
NO_DRIFT=$(counts_json 0 0 0 0 0 0 0 0 0)

# register SERVICE PREFIX N: abilities PREFIX-01..PREFIX-N through the API, in one batch.
register() {
  local svc=$1 prefix=$2 n=$3 i items="" seed
  seed=$(($(printf '%s' "$prefix" | cksum | cut -d' ' -f1) % 100000))
  for i in $(seq -f %02g 1 "$n"); do
    items+="${items:+,}$(ability_json "$prefix-$i" "$svc" $DIM "$((seed + 10#$i))" "ability $prefix-$i")"
  done
  api POST /v1/abilities "{\"abilities\": [$items]}"
  assert_eq "$CODE" 201 "registering $n abilities of $svc: $BODY"
}

vid() { pg "select vector_id from abilitysync.sync_state where ability_id = '$1'"; }
vpath() { echo "/tenants/$TENANT/blobs/$(blob_of "$1")/vectors/$(vid "$2")"; } # service id

# Deletes an ability's vector in the vector DB, behind the service's back.
vector_delete() { # service id
  emu DELETE "$(vpath "$1" "$2")"
  assert_eq "$CODE" 200 "deleting the vector of $2: $BODY"
}

# The vector DB's writes of vectors (adds, deletes, attribute updates), by route.
vector_writes() { emu_writes | jq -S -c 'with_entries(select(.key | contains("/vectors")))'; }

# Everything reconcile could change: both stores, and the vector writes the emulator served.
fingerprint() {
  db_fingerprint "$DB"
  emu_fingerprint
  vector_writes
}

test_dry_run_counts_each_kind_of_drift_and_changes_nothing() {
  local saved before after
  setup
  register one.svc one 20
  register two.svc two 20
  wait_converged "$DB" 30
  stop_service
  # missing: three vectors deleted in the vector DB.
  vector_delete one.svc one-03
  vector_delete one.svc one-07
  vector_delete two.svc two-05
  # stale: attributes overwritten (one replaced whole, one with another description and hash).
  emu PUT "$(vpath one.svc one-04)/attributes" '{"attributes": {"note": "overwritten by hand"}}'
  assert_eq "$CODE" 200 "$BODY"
  emu GET "$(vpath two.svc two-06)"
  emu PUT "$(vpath two.svc two-06)/attributes" \
    "$(jq -c '{attributes: (.attributes | .description = "edited in the vector DB" | .content_hash = "0123abcd")}' <<<"$BODY")"
  assert_eq "$CODE" 200 "$BODY"
  # orphans: two rows deleted in Postgres directly; one ability deleted through the
  # API whose vector was then added back to the vector DB by hand.
  pg "delete from abilities where ability_id in ('one-10', 'two-10')" >/dev/null
  emu GET "$(vpath one.svc one-12)"
  saved=$BODY
  start_service DATABASE_URL="$DB" EMBEDDING_DIM=$DIM
  api DELETE /v1/abilities/one-12
  assert_eq "$CODE" 200 "$BODY"
  assert_eq "$(jq -r .sync_state <<<"$BODY")" deleted
  stop_service
  emu POST "/tenants/$TENANT/blobs/abilities_one_svc/vectors" \
    "$(jq -c '{vectors: [.vector], ids: [.id], attributes: [.attributes]}' <<<"$saved")"
  assert_eq "$CODE" 200 "adding the deleted vector back: $BODY"
  # no_sync_state: two sync states deleted, two rows inserted directly.
  pg "delete from abilitysync.sync_state where ability_id in ('one-14', 'two-14')" >/dev/null
  insert_rows "$DB" one.svc $DIM one-21
  insert_rows "$DB" two.svc $DIM two-21
  # failed, and a change pending for an hour.
  pg "update abilitysync.sync_state set state = 'failed', attempts = 10, last_error = 'gave up'
    where ability_id = 'one-16'" >/dev/null
  pg "update abilitysync.sync_state set state = 'pending', updated_at = now() - interval '1 hour',
    next_attempt_at = now() - interval '1 hour' where ability_id = 'two-16'" >/dev/null

  before=$(fingerprint)
  rec --dry-run --json
  assert_rc 3 "a dry run that finds drift"
  assert_eq "$(counts)" "$(counts_json 3 2 3 4 1 1 0 0 0)" "drift counts"
  assert_eq "$(sample missing)" "one-03,one-07,two-05" "missing sample"
  assert_eq "$(sample stale)" "one-04,two-06" "stale sample"
  assert_eq "$(sample orphans)" "one-10,one-12,two-10" "orphans sample"
  assert_eq "$(sample no_sync_state)" "one-14,one-21,two-14,two-21" "no_sync_state sample"
  assert_eq "$(sample overdue)" "two-16" "overdue sample"
  assert_eq "$(sample failed)" "one-16" "failed sample"
  assert_eq "$(jq -c '[.run_id, .dry_run, .deep, .service_name, .status, .error, .total, .checked.rows]' <<<"$OUT")" \
    '[null,true,false,null,"ok",null,14,39]' "run_id, dry_run, deep, service_name, status, error, total, checked.rows"
  jq -e '(.started_at | test("Z$")) and (.finished_at | test("Z$")) and (.seconds | type == "number")
    and (.repairs.queued == 0)' <<<"$OUT" >/dev/null || fail "times or repairs of a dry run: $OUT"
  after=$(fingerprint)
  [ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after") | head -n 40 >&2 || true; fail "the dry run changed something"; }

  rec --json
  assert_rc 0 "a real run that repairs everything"
  assert_eq "$(counts)" "$(counts_json 3 2 3 4 1 1 0 0 0)" "what the real run found"
  assert_eq "$(jq -c '[.dry_run, .status, .total, .repairs.queued, .repairs.deferred, (.run_id | type)]' <<<"$OUT")" \
    '[false,"ok",14,14,0,"number"]' "dry_run, status, total, queued, deferred, run_id"
  assert_eq "$(pg "select count(*) || ' ' || bool_and(status = 'ok') || ' ' || bool_and(not dry_run) || ' ' ||
    max(report->>'total') || ' ' || max(id) from abilitysync.reconcile_runs")" "1 true true 14 $(jq .run_id <<<"$OUT")" \
    "the recorded run"
  rec --dry-run --json
  assert_rc 0 "a dry run after the repair"
  assert_eq "$(counts)" "$NO_DRIFT" "drift after the repair"
  assert_eq "$(jq .total <<<"$OUT")" 0 "total after the repair"
  check_stores_agree "$DB"
  emu GET "$(vpath two.svc two-06)"
  assert_eq "$(jq -r .attributes.description <<<"$BODY")" "ability two-06" "the overwritten attributes are back"
  assert_eq "$(pg "select count(*) from abilities")" 39 "no row was added or removed"
  stop_emulator
}

test_service_flag_restricts_every_category_to_one_service() {
  setup
  register one.svc one 6
  register two.svc two 6
  wait_converged "$DB" 30
  stop_service
  vector_delete one.svc one-02
  vector_delete two.svc two-02
  vector_delete two.svc two-03
  pg "delete from abilities where ability_id = 'two-04'" >/dev/null
  insert_rows "$DB" two.svc $DIM two-07
  rec --dry-run --json --service one.svc
  assert_rc 3
  assert_eq "$(jq -c '[.service_name, .total, .checked.rows]' <<<"$OUT")" '["one.svc",1,6]' "service_name, total, rows"
  assert_eq "$(counts)" "$(counts_json 1 0 0 0 0 0 0 0 0)" "one.svc"
  assert_eq "$(sample missing)" one-02
  rec --dry-run --json --service two.svc
  assert_rc 3
  assert_eq "$(counts)" "$(counts_json 2 0 1 1 0 0 0 0 0)" "two.svc"
  assert_eq "$(sample missing),$(sample orphans),$(sample no_sync_state)" "two-02,two-03,two-04,two-07"
  # A real run for one service repairs that service only.
  rec --json --service one.svc
  assert_rc 0 "$ERR"
  assert_eq "$(jq .repairs.queued <<<"$OUT")" 1 "repairs queued for one.svc"
  rec --dry-run --json
  assert_rc 3
  assert_eq "$(counts)" "$(counts_json 2 0 1 1 0 0 0 0 0)" "all services after repairing one.svc"
  emu GET "$(vpath one.svc one-02)"
  assert_eq "$CODE" 200 "one-02's vector is back"
  stop_emulator
}

test_max_repairs_defers_the_rest_to_the_next_run() {
  local i
  setup
  register one.svc one 10
  wait_converged "$DB" 30
  stop_service
  for i in 01 03 05 07 09; do vector_delete one.svc "one-$i"; done
  rec RECONCILE_MAX_REPAIRS=2 --json
  assert_rc 3 "repairs left for the next run"
  assert_eq "$(jq -c '[.drift.missing.count, .repairs.queued, .repairs.deferred, .status]' <<<"$OUT")" '[5,2,3,"ok"]' \
    "missing, queued, deferred, status"
  assert_eq "$(emu_fingerprint | wc -l)" 7 "vectors after repairing two of five"
  rec --dry-run --json
  assert_rc 3
  assert_eq "$(jq .drift.missing.count <<<"$OUT")" 3 "missing after the first run"
  rec --json
  assert_rc 0 "$ERR"
  assert_eq "$(jq -c '[.repairs.queued, .repairs.deferred]' <<<"$OUT")" '[3,0]' "queued, deferred of the second run"
  rec --dry-run --json
  assert_rc 0
  assert_eq "$(jq .total <<<"$OUT")" 0 "drift after the second run"
  check_stores_agree "$DB"
  stop_emulator
}

test_an_unreachable_vector_db_fails_the_run_and_changes_nothing() {
  local before
  setup
  register one.svc one 5
  wait_converged "$DB" 30
  stop_service
  vector_delete one.svc one-02
  pg "delete from abilitysync.sync_state where ability_id = 'one-03'" >/dev/null
  before=$(db_fingerprint "$DB" public.abilities abilitysync.sync_state abilitysync.vector_ledger)
  # Every request answered 503.
  emu POST /_admin/faults '{"status": 503}'
  rec --json
  assert_rc 1 "the vector DB answering 503"
  assert_eq "$(jq -r .status <<<"$OUT")" failed "status"
  [ "$(jq -r '.error // ""' <<<"$OUT")" != "" ] || fail "no error in the report: $OUT"
  grep -qi 'vector db' <<<"$ERR" || fail "stderr does not name the vector DB: $ERR"
  # The emulator gone altogether (EMU_URL still names its port).
  stop_emulator
  rec --json
  assert_rc 1 "the vector DB not listening"
  assert_eq "$(jq -r .status <<<"$OUT")" failed "status"
  grep -qi 'vector db' <<<"$ERR" || fail "stderr does not name the vector DB: $ERR"
  rec --dry-run --json
  assert_rc 1 "a dry run without the vector DB"
  assert_eq "$(db_fingerprint "$DB" public.abilities abilitysync.sync_state abilitysync.vector_ledger)" "$before" \
    "Postgres after the failed runs"
  assert_eq "$(pg "select count(*) from abilitysync.reconcile_runs where status <> 'failed'")" 0 \
    "no run recorded as anything but failed"
}

# Replaces an ability's vector in the vector DB with another embedding, same id and attributes.
replace_embedding() { # service id
  local path
  path=$(vpath "$1" "$2")
  emu GET "$path"
  emu POST "${path%/*}" "$(jq -c '{vectors: [[.vector[] | -. + 0.5]], ids: [.id], attributes: [.attributes]}' <<<"$BODY")"
  assert_eq "$CODE" 200 "replacing the vector of $2: $BODY"
}

# The vector DB holds the float32 of each number of the ability's embedding in Postgres.
assert_embedding_matches() { # service id
  emu GET "$(vpath "$1" "$2")"
  node -e '
    const want = JSON.parse(process.argv[1]), got = JSON.parse(process.argv[2]).vector;
    if (got.length !== want.length || got.some((x, i) => Math.fround(x) !== Math.fround(want[i]))) process.exit(1);
  ' "$(pg "select embedding::text from abilities where ability_id = '$2'")" "$BODY" ||
    fail "the vector of $2 differs from its embedding in Postgres: $BODY"
}

test_deep_finds_a_vector_whose_embedding_was_replaced() {
  setup
  register one.svc one 6
  wait_converged "$DB" 30
  stop_service
  replace_embedding one.svc one-04
  rec --dry-run --json
  assert_rc 0 "without --deep the attributes agree"
  assert_eq "$(counts)" "$NO_DRIFT" "drift without --deep"
  rec --dry-run --deep --json
  assert_rc 3
  assert_eq "$(jq .deep <<<"$OUT")" true "deep"
  assert_eq "$(counts)" "$(counts_json 0 0 0 0 0 0 0 0 1)" "drift with --deep"
  assert_eq "$(sample vector_differs)" one-04
  rec --deep --json
  assert_rc 0 "$ERR"
  assert_embedding_matches one.svc one-04
  rec --dry-run --deep --json
  assert_rc 0
  assert_eq "$(jq .total <<<"$OUT")" 0 "drift after the deep repair"
  stop_emulator
}

# Embedding provenance: metadata.embedding_model names the model that made an
# embedding; a run told the current model reports the rows made by another (or
# by none) as old_embedding_model, and repairs nothing of them (the client
# re-embeds). The CLI and POST /v1/reconcile both take it.
test_rows_embedded_with_another_model_are_reported() {
  local a items="" id
  setup RECONCILE_INTERVAL=0
  for id in m-1 m-2 m-3 m-4; do
    a=$(ability_json "$id" model.svc $DIM 7)
    case $id in
      m-1 | m-2) a=$(jq -c '.metadata.embedding_model = "embed-3@2026-10"' <<<"$a") ;;
      m-3) a=$(jq -c '.metadata.embedding_model = "embed-2@2025-01"' <<<"$a") ;;
    esac
    items+="${items:+,}$a"
  done
  api POST /v1/abilities "{\"abilities\": [$items]}"
  assert_eq "$CODE" 201 "$BODY"
  wait_converged "$DB" 30
  api GET /v1/abilities/m-3
  assert_eq "$(jq -r .metadata.embedding_model <<<"$BODY")" "embed-2@2025-01" "the provenance, as stored and shown"
  api POST /v1/abilities "$(ability_json m-5 model.svc $DIM 7 | jq -c '.metadata.embedding_model = 3')"
  assert_eq "$CODE $(jq -r '.errors[0].pointer' <<<"$BODY")" "422 /metadata/embedding_model" "a model that is not a name"
  rec --dry-run --json --embedding-model "embed-3@2026-10"
  assert_rc 3 "drift: rows of another model"
  assert_eq "$(jq -c '.drift.old_embedding_model | [.count, .sample]' <<<"$OUT")" '[2,["m-3","m-4"]]' "$OUT"
  rec --dry-run --json
  assert_eq "$(jq -c '.drift.old_embedding_model.count' <<<"$OUT")" 0 "without a model named, nothing of it"
  api POST /v1/reconcile '{"dry_run": false, "embedding_model": "embed-3@2026-10"}'
  assert_eq "$CODE" 202 "$BODY"
  wait_job "$(jq -r .id <<<"$BODY")"
  api GET /v1/reconcile/last
  assert_eq "$(jq -c '[.dry_run, .drift.old_embedding_model.count, .repairs.queued]' <<<"$BODY")" '[false,2,0]' \
    "a real run reports them and repairs nothing: $BODY"
  stop_service
  stop_emulator
}

test_deep_finds_a_row_edited_directly_in_postgres() {
  setup
  register one.svc one 6
  wait_converged "$DB" 30
  stop_service
  pg "update abilities set description = 'edited in Postgres' where ability_id = 'one-05'" >/dev/null
  rec --dry-run --json
  assert_rc 0 "without --deep the sync state and the vector agree"
  assert_eq "$(jq .total <<<"$OUT")" 0
  rec --dry-run --deep --json
  assert_rc 3
  assert_eq "$(counts)" "$(counts_json 0 1 0 0 0 0 0 0 0)" "drift with --deep"
  assert_eq "$(sample stale)" one-05
  rec --deep --json
  assert_rc 0 "$ERR"
  emu GET "$(vpath one.svc one-05)"
  assert_eq "$(jq -r .attributes.description <<<"$BODY")" "edited in Postgres" "the vector DB follows Postgres"
  rec --dry-run --deep --json
  assert_rc 0
  check_stores_agree "$DB"
  stop_emulator
}

test_a_vector_id_collision_is_reported_and_never_repaired() {
  local owner
  setup
  # Both ids map to vector_id 91458538 (see tests/unit/test_vdbid.c).
  api POST /v1/abilities "$(ability_json collide-8533 same.svc)"
  assert_eq "$CODE" 201
  api POST /v1/abilities "$(ability_json other same.svc 8 2)"
  wait_converged "$DB" 30
  stop_service
  insert_rows "$DB" same.svc $DIM collide-12320
  owner=$(emu_fingerprint)
  rec --dry-run --json
  assert_rc 3
  assert_eq "$(jq -c '[.drift.collisions.count, .drift.collisions.sample]' <<<"$OUT")" '[1,["collide-12320"]]' "collisions"
  rec --json
  assert_rc 3 "a collision is left for a human"
  assert_eq "$(jq .drift.collisions.count <<<"$OUT")" 1 "collisions found by the real run"
  assert_eq "$(emu_fingerprint)" "$owner" "vector 91458538 still holds collide-8533"
  rec --dry-run --json
  assert_rc 3
  assert_eq "$(jq -c '[.drift.collisions.count, .drift.collisions.sample]' <<<"$OUT")" '[1,["collide-12320"]]' \
    "collisions after the real run"
  assert_eq "$(pg "select ability_id || ' ' || state from abilitysync.sync_state where vector_id = 91458538")" \
    "collide-8533 synced" "the owner's sync state"
  stop_emulator
}

# A deleted ability's ledger entry (collide-8533, its delete settled) whose
# place holds a vector the original application wrote for a live row of the
# same vector_id (collide-12320, no sync state yet). The run's ledger part
# (part 0, first) took that vector for the deleted ability's orphan and
# deleted it: the live row was missing from the vector DB until a later run.
# A vector that names another ability is reported as a collision, never
# deleted; the live row there is claimed and pushed by the rows part.
test_a_vector_that_names_another_ability_is_never_taken_for_an_orphan() {
  setup
  api POST /v1/abilities "$(ability_json collide-8533 same.svc)"
  assert_eq "$CODE" 201 "$BODY"
  api DELETE /v1/abilities/collide-8533
  wait_converged "$DB" 30
  stop_service
  insert_rows "$DB" same.svc $DIM collide-12320
  emu POST "/tenants/$TENANT/blobs/$(blob_of same.svc)/vectors" \
    '{"vectors": [[1, 0, 0, 0, 0, 0, 0, 0]], "ids": [91458538], "attributes": [{"ability_id": "collide-12320"}]}'
  assert_eq "$CODE" 200 "the original app's vector: $BODY"
  rec --json
  assert_rc 3 "$ERR"
  assert_eq "$(jq -c '[.drift.orphans.count, .drift.collisions.count, .drift.collisions.sample]' <<<"$OUT")" \
    '[0,1,["collide-12320"]]' "orphans, collisions"
  emu GET "/tenants/$TENANT/blobs/$(blob_of same.svc)/vectors/91458538"
  assert_eq "$CODE $(jq -r '.attributes.ability_id // .vector.attributes.ability_id // empty' <<<"$BODY")" \
    "200 collide-12320" "the live row's vector after the run"
  rec --json
  assert_rc 0 "the live row was claimed and pushed by the first run: $OUT"
  stop_emulator
}

test_invalid_rows_are_reported_and_never_pushed() {
  local before
  setup
  register one.svc one 3
  wait_converged "$DB" 30
  stop_service
  insert_rows "$DB" one.svc 7 one-bad
  before=$(emu_fingerprint)
  rec --dry-run --json
  assert_rc 3
  assert_eq "$(jq -c '[.drift.invalid_rows.count, .drift.invalid_rows.sample]' <<<"$OUT")" '[1,["one-bad"]]' "invalid_rows"
  rec --json
  assert_rc 3 "an invalid row is left for a human"
  assert_eq "$(jq -c '[.drift.invalid_rows.count, .drift.invalid_rows.sample, .repairs.queued]' <<<"$OUT")" \
    '[1,["one-bad"],0]' "invalid_rows, repairs queued"
  assert_eq "$(emu_fingerprint)" "$before" "nothing pushed"
  stop_emulator
}

test_a_repair_the_vector_db_refuses_is_not_reported_as_repaired() {
  setup
  register one.svc one 3
  wait_converged "$DB" 30
  stop_service
  vector_delete one.svc one-02
  emu POST /_admin/faults '{"path": "/vectors", "method": "POST", "status": 400, "body": "{\"detail\": \"refused\"}"}'
  rec SYNC_MAX_ATTEMPTS=2 RECONCILE_PUSH_TIMEOUT=10 --json
  assert_rc 3 "a run whose repair could not be pushed"
  assert_eq "$(jq -c '[.drift.missing.count, .repairs.queued]' <<<"$OUT")" '[1,1]' "missing, queued"
  emu DELETE /_admin/faults
  rec --dry-run --json
  assert_rc 3 "the drift is still there"
  assert_eq "$(jq .total <<<"$OUT")" 1 "drift left"
  stop_emulator
}

test_two_replicas_run_once_per_period_and_serve_the_last_report() {
  local urls=() pids=() gaps n i before after run_id cat
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator
  for i in 1 2; do
    start_service DATABASE_URL="$DB" EMBEDDING_DIM=$DIM RECONCILE_INTERVAL=2
    urls+=("$SVC_URL")
    pids+=("$SVC_PID")
  done
  SVC_URL=${urls[0]}
  wait_ready
  register one.svc one 5
  sleep 9
  n=$(pg "select count(*) from abilitysync.reconcile_runs where not dry_run")
  { [ "$n" -ge 3 ] && [ "$n" -le 5 ]; } ||
    fail "$n real runs in 9 s with two replicas and RECONCILE_INTERVAL=2: $(pg "select id, started_at, host, status
      from abilitysync.reconcile_runs order by id")"
  assert_eq "$(pg "select count(*) from abilitysync.reconcile_runs where dry_run")" 0 "dry runs"
  gaps=$(pg "select round(extract(epoch from started_at - lag(started_at) over (order by started_at))::numeric, 2)
    from abilitysync.reconcile_runs order by started_at offset 1")
  for i in $gaps; do
    awk -v g="$i" 'BEGIN { exit !(g >= 1.4) }' || fail "two runs $i s apart (at least 1.5 s expected): $gaps"
  done
  for i in 0 1; do
    SVC_URL=${urls[$i]}
    # A run in progress is served as a summary ("running"): ask again once it is over.
    for _ in $(seq 1 20); do
      before=$(pg "select max(id) from abilitysync.reconcile_runs where report is not null")
      api GET /v1/reconcile/last
      after=$(pg "select max(id) from abilitysync.reconcile_runs where report is not null")
      [ "$(jq -r .status <<<"$BODY")" = running ] || break
      sleep 0.1
    done
    assert_eq "$CODE" 200 "GET /v1/reconcile/last on replica $i: $BODY"
    run_id=$(jq .run_id <<<"$BODY")
    { [ "$run_id" -ge "$before" ] && [ "$run_id" -le "$after" ]; } ||
      fail "replica $i served run $run_id, the newest was $before..$after"
    assert_eq "$(jq -S -c . <<<"$BODY")" "$(pg "select report from abilitysync.reconcile_runs where id = $run_id" | jq -S -c .)" \
      "the report served and the one recorded"
    assert_eq "$(jq -c '[.dry_run, .status, (.drift | keys | length)]' <<<"$BODY")" '[false,"ok",11]' "dry_run, status, categories"
    api GET /metrics
    for cat in missing stale orphans no_sync_state overdue failed collisions invalid_rows vector_differs stale_content \
      old_embedding_model; do
      grep -q -E "^abilitysync_drift\{category=\"$cat\"\} [0-9]+$" <<<"$BODY" ||
        fail "replica $i: no abilitysync_drift line for $cat: $(grep drift <<<"$BODY")"
    done
  done
  for i in "${pids[@]}"; do stop_service "$i"; done
  stop_emulator
}

# A real run's parts, shared: `reconcile` in the background on $DB (page 1: a
# part is 16 rows; killed after 60 s), stdout and stderr in
# $SUITE_TMP/rec.NAME.{out,err}, pid in $BG.
rec_bg() { # name [VAR=value...]
  local name=$1
  shift
  timeout 60 env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" "${CLI_ENV[@]}" RECONCILE_PAGE=1 LOG_LEVEL=debug "$@" \
    "$ABILITYSYNC" reconcile --json >"$SUITE_TMP/rec.$name.out" 2>"$SUITE_TMP/rec.$name.err" &
  BG=$!
}
# The parts a background run's process took, one number a line.
parts_taken() { grep -oE 'run [0-9]+: part [0-9]+: (rows|the ledger)' "$SUITE_TMP/rec.$1.err" | awk '{print $4}' | tr -d :; }
# The part of rows a background run is in the middle of (taken, not yet checked), once it is (5 s at most).
part_in_hand() {
  local p
  for _ in $(seq 1 500); do
    p=$(grep -oE 'part [0-9]+: rows' "$SUITE_TMP/rec.$1.err" | tail -n 1 | awk '{print $2}' | tr -d :)
    if [ -n "$p" ] && ! grep -q "part $p checked" "$SUITE_TMP/rec.$1.err"; then
      echo "$p"
      return
    fi
    sleep 0.01
  done
  fail "reconcile $1 was never in the middle of a part: $(cat "$SUITE_TMP/rec.$1.err")"
}
# Waits (5 s at most) for a line in a background run's log.
wait_log() { # name pattern
  for _ in $(seq 1 100); do
    grep -q -E "$2" "$SUITE_TMP/rec.$1.err" && return
    sleep 0.05
  done
  fail "no '$2' in reconcile $1's log: $(cat "$SUITE_TMP/rec.$1.err")"
}
# 60 abilities, every sixth vector deleted behind the service's back, each check of a vector slowed.
drift_sixty() {
  local i
  setup
  register one.svc one 60
  wait_converged "$DB" 30
  stop_service
  for i in 03 09 15 21 27 33 39 45 51 57; do vector_delete one.svc "one-$i"; done
  emu POST /_admin/faults '{"method": "GET", "path": "/vectors/", "latency_ms": 40}'
  assert_eq "$CODE" 201 "slowing the checks: $BODY"
}

test_two_processes_share_one_run_and_count_each_row_once() {
  local a b rc_a rc_b report
  drift_sixty
  rec_bg a RECONCILE_MAX_REPAIRS=4
  a=$BG
  wait_log a 'part [0-9]+: rows'
  rec_bg b RECONCILE_MAX_REPAIRS=4
  b=$BG
  wait "$a" && rc_a=0 || rc_a=$?
  wait "$b" && rc_b=0 || rc_b=$?
  assert_eq "$rc_a $rc_b" "3 3" "both exit statuses (repairs deferred): $(cat "$SUITE_TMP"/rec.[ab].err)"
  grep -q "joining it" "$SUITE_TMP/rec.b.err" || fail "b did not join a's run: $(cat "$SUITE_TMP/rec.b.err")"
  if [ -z "$(parts_taken a)" ] || [ -z "$(parts_taken b)" ]; then
    fail "a took parts [$(parts_taken a | xargs)], b [$(parts_taken b | xargs)]: each should have some"
  fi
  assert_eq "$({ parts_taken a; parts_taken b; } | sort -n | xargs)" "0 1 2 3 4" "the parts taken, by both"
  # Both end with the run's report: the one recorded.
  report=$(pg "select report from abilitysync.reconcile_runs where not dry_run" | jq -S -c 'del(.finished_at, .seconds)')
  assert_eq "$(jq -S -c 'del(.finished_at, .seconds)' "$SUITE_TMP/rec.a.out")" "$report" "a's report and the run's"
  assert_eq "$(jq -S -c 'del(.finished_at, .seconds)' "$SUITE_TMP/rec.b.out")" "$report" "b's report and the run's"
  assert_eq "$(jq -c '[.status, .parts, .checked.rows, .drift.missing.count, .total, .repairs.queued, .repairs.deferred]' \
    <<<"$report")" '["ok",5,60,10,10,4,6]' "status, parts, rows, missing, total, queued, deferred"
  assert_eq "$(jq -r '.drift.missing.sample | join(" ")' <<<"$report")" \
    "one-03 one-09 one-15 one-21 one-27 one-33 one-39 one-45 one-51 one-57" "the missing, merged from the parts"
  assert_eq "$(pg "select count(*) filter (where finished_at is null), count(*) from abilitysync.reconcile_parts")" \
    "0|5" "unfinished and all parts"
  assert_eq "$(pg "select repairs from abilitysync.reconcile_runs")" 4 "repairs recorded"
  emu DELETE /_admin/faults
  rec --json
  assert_rc 0 "the second run: $ERR"
  assert_eq "$(jq -c '[.parts, .drift.missing.count, .repairs.queued]' <<<"$OUT")" '[2,6,6]' "parts, missing, queued"
  check_stores_agree "$DB"
  stop_emulator
}

# Two processes on one run, caught with a in the middle of a part of rows: pids
# in $A and $B, that part in $PART. a's extra settings are the arguments.
two_on_one_run() {
  rec_bg a "$@"
  A=$BG
  wait_log a 'part [0-9]+: rows'
  rec_bg b
  B=$BG
  wait_log b 'joining it'
  PART=$(part_in_hand a)
}

test_a_process_killed_mid_run_leaves_its_part_to_the_other() {
  local a b rc_b part
  drift_sixty
  two_on_one_run
  a=$A b=$B part=$PART
  pkill -KILL -P "$a" # the process under timeout
  wait "$a" 2>/dev/null || true
  wait "$b" && rc_b=0 || rc_b=$?
  assert_eq "$rc_b" 0 "b's exit status: $(cat "$SUITE_TMP/rec.b.err")"
  parts_taken b | grep -qx "$part" || fail "b never took part $part, the one a was killed in: $(parts_taken b | xargs)"
  assert_eq "$(jq -c '[.status, .parts, .checked.rows]' "$SUITE_TMP/rec.b.out")" '["ok",5,60]' \
    "status, parts, rows checked (a's unfinished part again, by b)"
  assert_eq "$(pg "select status, count(*) filter (where p.finished_at is null) from abilitysync.reconcile_runs r
    join abilitysync.reconcile_parts p on p.run_id = r.id group by status")" "ok|0" "the run's status, parts unfinished"
  emu DELETE /_admin/faults
  check_stores_agree "$DB"
  rec --dry-run --json
  assert_rc 0 "nothing left: $OUT"
  stop_emulator
}

test_a_process_that_fails_leaves_its_part_to_the_other() {
  local a b rc_a rc_b part
  drift_sixty
  start_proxy vdb "${EMU_URL#http://}"
  two_on_one_run VECTOR_DB_API="http://127.0.0.1:$PROXY_PORT"
  a=$A b=$B part=$PART
  proxy_mode vdb reset # a's vector DB goes away in the middle of a part
  wait "$a" && rc_a=0 || rc_a=$?
  wait "$b" && rc_b=0 || rc_b=$?
  assert_eq "$rc_a $rc_b" "1 0" "exit statuses: a failed, b finished the run: $(cat "$SUITE_TMP"/rec.[ab].err)"
  assert_eq "$(jq -r .status "$SUITE_TMP/rec.a.out")" failed "a's report"
  parts_taken b | grep -qx "$part" || fail "b never took part $part, the one a failed in: $(parts_taken b | xargs)"
  assert_eq "$(jq -c '[.status, .parts, .checked.rows]' "$SUITE_TMP/rec.b.out")" '["ok",5,60]' "b's report"
  assert_eq "$(pg "select status, error is null from abilitysync.reconcile_runs")" "ok|t" \
    "a failure is not the run's while another process works on it"
  check_stores_agree "$DB"
  stop_emulator
}

test_the_service_repairs_drift_periodically() {
  setup RECONCILE_INTERVAL=1
  register one.svc one 5
  wait_converged "$DB" 30
  vector_delete one.svc one-03
  for _ in $(seq 1 100); do
    emu GET "$(vpath one.svc one-03)"
    [ "$CODE" = 200 ] && break
    sleep 0.1
  done
  assert_eq "$CODE" 200 "the deleted vector is back within 10 s"
  [ "$(pg "select count(*) from abilitysync.reconcile_runs
    where not dry_run and (report->'drift'->'missing'->>'count')::int = 1
      and report->'drift'->'missing'->'sample' = '[\"one-03\"]'")" -ge 1 ] ||
    fail "no recorded run found one-03 missing: $(pg "select id, report->'drift'->'missing' from abilitysync.reconcile_runs")"
  wait_converged "$DB" 10
  check_stores_agree "$DB"
  stop_service
  stop_emulator
}


# POST /v1/reconcile runs a reconcile as a job: a dry run first (the default),
# which finds the drift and changes nothing, then a repair; a held run can be
# cancelled and says so.
test_post_reconcile_runs_a_dry_run_then_a_repair_as_jobs() {
  local id
  setup RECONCILE_INTERVAL=0
  register one.svc job 4
  wait_converged "$DB" 30
  vector_delete one.svc job-02
  api POST /v1/reconcile '{}'
  assert_eq "$CODE" 202 "a dry run: $BODY"
  id=$(jq -r .id <<<"$BODY")
  [[ $id == reconcile-* ]] || fail "the run's id: $BODY"
  wait_job "$id"
  assert_eq "$(jq -c '[.kind, .state, .dry_run, .percent_complete]' <<<"$BODY")" '["reconcile","succeeded",true,100]' \
    "the dry run as a job: $BODY"
  api GET /v1/reconcile/last
  assert_eq "$(jq -c '[.dry_run, .drift.missing.count, .drift.missing.sample]' <<<"$BODY")" '[true,1,["job-02"]]' \
    "the dry run's report: $BODY"
  emu GET "$(vpath one.svc job-02)"
  assert_eq "$CODE" 404 "a dry run repairs nothing"
  assert_eq "$(pg "select count(*) from abilitysync.reconcile_parts")" 0 "a dry run is not cut into parts"

  api POST /v1/reconcile '{"dry_run": false, "service_name": "one.svc"}'
  assert_eq "$CODE" 202 "a repair: $BODY"
  wait_job "$(jq -r .id <<<"$BODY")"
  assert_eq "$(jq -c '[.state, .dry_run, .service_name]' <<<"$BODY")" '["succeeded",false,"one.svc"]' "the repair: $BODY"
  for _ in $(seq 1 100); do
    curl -s "$SVC_URL/metrics" | grep -q '^abilitysync_last_success_timestamp_seconds{job="reconcile"} ' && break
    sleep 0.1
  done
  assert_contains "$(curl -s "$SVC_URL/metrics")" 'abilitysync_last_success_timestamp_seconds{job="reconcile"} ' \
    "the last good real run, for the alert that no run finished"
  wait_converged "$DB" 30
  emu GET "$(vpath one.svc job-02)"
  assert_eq "$CODE" 200 "the repair put the vector back"

  emu POST /_admin/faults '{"method": "GET", "path": "/vectors/", "hold": true, "count": 1}'
  api POST /v1/reconcile '{"dry_run": false}'
  id=$(jq -r .id <<<"$BODY")
  api POST /v1/reconcile '{}'
  assert_eq "$CODE" 409 "a second run in this replica: $BODY"
  assert_eq "$(jq -r .code <<<"$BODY")" reconcile_running
  api POST "/v1/jobs/$id/cancel"
  assert_eq "$CODE" 202 "cancelling the held run: $BODY"
  emu DELETE /_admin/faults
  for _ in $(seq 1 100); do
    api POST /v1/reconcile '{}'
    [ "$CODE" = 409 ] || break
    sleep 0.1
  done
  assert_eq "$CODE" 202 "a new run once the cancelled one stopped: $BODY"
  api GET "/v1/jobs/$id"
  assert_eq "$(jq -r .state <<<"$BODY")" cancelled "the cancelled run: $BODY"
  api POST /v1/reconcile '{"dry_run": "yes"}'
  assert_eq "$(jq -r '[.status, .code, .errors[0].pointer] | map(tostring) | join(" ")' <<<"$BODY")" \
    "422 invalid_field /dry_run" "a bad field: $BODY"
  stop_service
  stop_emulator
}
test_last_report_is_404_until_a_run_is_recorded() {
  setup RECONCILE_INTERVAL=0
  api GET /v1/reconcile/last
  assert_eq "$CODE" 404 "$BODY"
  assert_eq "$(jq -r .error.code <<<"$BODY")" not_found
  rec --dry-run --json
  api GET /v1/reconcile/last
  assert_eq "$CODE" 404 "after a dry run, which records nothing: $BODY"
  rec --json
  assert_rc 0 "$ERR"
  api GET /v1/reconcile/last
  assert_eq "$CODE" 200 "after a run of the CLI: $BODY"
  assert_eq "$(jq -S -c . <<<"$BODY")" "$(jq -S -c . <<<"$OUT")" "the report served and the one the CLI printed"
  stop_service
  stop_emulator
}

test_bad_usage_and_configuration_are_refused() {
  run env DATABASE_URL=postgres://127.0.0.1:9/x VECTOR_DB_API=http://127.0.0.1:9 "$ABILITYSYNC" reconcile --bogus
  assert_rc 2 "an unknown flag"
  assert_contains "$OUT" "--bogus"
  run env -u DATABASE_URL VECTOR_DB_API=http://127.0.0.1:9 "$ABILITYSYNC" reconcile --dry-run
  assert_rc 2 "no DATABASE_URL"
  assert_contains "$OUT" "DATABASE_URL"
  DB=$(new_db)
  start_emulator
  run env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=$DIM "$ABILITYSYNC" reconcile --dry-run
  assert_rc 1 "a database never migrated"
  assert_contains "$OUT" "migrate"
  stop_emulator
}

run_suite
