#!/usr/bin/env bash
# `abilitysync restore` against a real Postgres and the emulator: rebuilding a
# vector DB from a Postgres backup, exactly once even when killed half way and
# resumed, refusing an unmigrated database, dry runs that write nothing,
# progress reporting, and the service's POST /v1/restore jobs.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

TENANT=reverse_engineer
DIM=8
# The CLI retries a failing vector DB briefly, so failures are quick.
# A job killed half way leaves leases on the rows it was pushing: short ones, so a resume is quick.
# A call given up on may land for VDB_QUARANTINE_MS: short too, as a resume waits it out.
CLI_ENV=(VDB_MAX_ATTEMPTS=2 VDB_BACKOFF_MS=10 VDB_BACKOFF_MAX_MS=50 VDB_TIMEOUT_MS=5000 SYNC_LEASE=2
  VDB_QUARANTINE_MS=2000)

migrated_db() {
  DB=$(new_db "${1:-db}")
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
}

pg() { psql_q "$DB" -c "$1"; }

# restore_cmd [VAR=value...] [flags...]: the command line of `abilitysync restore` on $DB and the emulator.
restore_cmd() {
  local envs=()
  while [ $# -gt 0 ] && [[ "$1" =~ ^[A-Z_]+= ]]; do
    envs+=("$1")
    shift
  done
  CMD=(env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM="$DIM" "${CLI_ENV[@]}" "${envs[@]}"
    "$ABILITYSYNC" restore "$@")
}

# restore [VAR=value...] [flags...]: runs it; stdout in $OUT, stderr in $ERR, exit status in $RC.
restore() {
  restore_cmd "$@"
  run_split "${CMD[@]}"
  if [[ " $* " == *" --json "* ]]; then
    jq -e 'type == "object"' <<<"$OUT" >/dev/null 2>&1 || fail "restore $* did not print one JSON object:
$OUT
stderr:
$ERR"
  fi
}

# restore_bg [VAR=value...] [flags...]: runs it in the background; sets BG_PID,
# output in $SUITE_TMP/bg.out and bg.err.
restore_bg() {
  restore_cmd "$@"
  "${CMD[@]}" >"$SUITE_TMP/bg.out" 2>"$SUITE_TMP/bg.err" &
  BG_PID=$!
  STARTED+=("$BG_PID")
}

# Waits for the background restore: its exit status in $RC, stdout in $OUT, stderr in $ERR.
wait_bg() {
  RC=0
  wait "$BG_PID" || RC=$?
  OUT=$(cat "$SUITE_TMP/bg.out")
  ERR=$(cat "$SUITE_TMP/bg.err")
}

# The newest restore job: "status done total".
job() { pg "select status || ' ' || done || ' ' || total from abilitysync.restore_jobs order by id desc limit 1"; }

# Waits until the newest job has recorded some but not all of its rows.
wait_half_way() {
  local row d t s
  for _ in $(seq 1 300); do
    row=$(pg "select done || ' ' || total || ' ' || status from abilitysync.restore_jobs order by id desc limit 1")
    if [ -n "$row" ] && [ "${row%% *}" -gt 0 ]; then
      read -r d t s <<<"$row"
      [ "$s" = running ] && [ "$d" -lt "$t" ] && return
      fail "the restore finished before it could be interrupted half way: $row"
    fi
    kill -0 "$BG_PID" 2>/dev/null || fail "the restore ended before half way: $row; $(cat "$SUITE_TMP/bg.err")"
    sleep 0.05
  done
  fail "the restore recorded no progress in time: $row; $(cat "$SUITE_TMP/bg.err")"
}

# Every live row's vector is in its blob exactly once, and nothing else is there.
assert_each_vector_once() {
  local want got blob
  want=$(pg "select 'abilities_' || regexp_replace(service_name, '[^A-Za-z0-9_]', '_', 'g') || ' ' || vector_id
    from abilities" | sort)
  got=$(cut -d' ' -f1 <<<"$want" | sort -u | while read -r blob; do
    emu GET "/_admin/tenants/$TENANT/blobs/$blob/ids"
    jq -r --arg b "$blob" '.ids[]? | "\($b) \(.)"' <<<"$BODY"
  done | sort)
  if [ "$got" != "$want" ]; then
    { diff <(echo "$want") <(echo "$got") || true; } | head -n 20 >&2
    fail "the vector DB (>) does not hold each row (<) exactly once ($(grep -c . <<<"$got") vectors, $(grep -c . <<<"$want") rows)"
  fi
  assert_eq "$(emu_fingerprint | wc -l)" "$(grep -c . <<<"$want")" "vectors in all blobs"
}

# Slows every add of vectors by MS milliseconds.
slow_adds() { emu POST /_admin/faults "{\"path\": \"/vectors\", \"method\": \"POST\", \"latency_ms\": $1}"; }

test_a_pg_dump_restored_elsewhere_rebuilds_an_identical_vector_db() {
  local dim=3072 acks="$SUITE_TMP/acks" new sample="$SUITE_TMP/sample" results="$SUITE_TMP/results" id svc vid emb i=0
  # 1,000 abilities of 3072 numbers through the API (the whole test takes about 30 s with the ASan build).
  DIM=$dim
  migrated_db original
  start_emulator
  start_service DATABASE_URL="$DB" EMBEDDING_DIM=$dim
  wait_ready
  "$LOADGEN" --url "$SVC_URL" --requests 1000 --concurrency 8 --dim $dim --prefix bk --seed 5 --ack-file "$acks" \
    --json >"$SUITE_TMP/load.json" 2>"$SUITE_TMP/load.err" || fail "loadgen: $(cat "$SUITE_TMP/load.err")"
  assert_eq "$(wc -l <"$acks")" 1000 "abilities acknowledged"
  wait_converged "$DB" 60
  stop_service
  # 20 searches on the original vector DB: ids and distances of the 5 nearest.
  pg "select ability_id, service_name, vector_id, embedding::text
    from (select *, row_number() over (order by ability_id) r from abilities) a where r % 50 = 7 order by ability_id" \
    >"$sample"
  assert_eq "$(wc -l <"$sample")" 20 "abilities searched for"
  : >"$results"
  while IFS='|' read -r id svc vid emb; do
    emu POST "/tenants/$TENANT/blobs/$(blob_of "$svc")/query" "{\"query\": $emb, \"k\": 5}"
    assert_eq "$CODE" 200 "query for $id: $BODY"
    jq -c '{ids, distances}' <<<"$BODY" >>"$results"
  done <"$sample"
  stop_emulator
  # The operator's backup, restored into a new database.
  pg_dump --no-owner --no-privileges "$DB" >"$SUITE_TMP/backup.sql"
  new=$(new_db restored)
  psql -X -q -v ON_ERROR_STOP=1 "$new" -f "$SUITE_TMP/backup.sql" >/dev/null || fail "psql could not load the dump"
  DB=$new
  assert_eq "$(pg "select count(*) from abilities")" 1000 "rows in the restored database"
  # A new, empty vector DB (one that keeps every copy of an id written twice).
  start_emulator --duplicate-ids duplicate
  restore --json
  assert_rc 0 "restore"
  assert_eq "$(jq -c '[.status, .service_name, .total, .done, .failed, (.job_id | type)]' <<<"$OUT")" \
    '["done",null,1000,1000,0,"number"]' "status, service_name, total, done, failed, job_id"
  jq -e '.seconds > 0 and .vectors_per_second > 0' <<<"$OUT" >/dev/null || fail "seconds, rate: $OUT"
  assert_eq "$(job)" "done 1000 1000" "the job row"
  check_stores_agree "$DB" "$acks"
  assert_each_vector_once
  # The same searches give the same answers, and the vectors are the float32 of
  # the embeddings Postgres holds.
  while IFS='|' read -r id svc vid emb; do
    i=$((i + 1))
    emu POST "/tenants/$TENANT/blobs/$(blob_of "$svc")/query" "{\"query\": $emb, \"k\": 5}"
    assert_eq "$(jq -c '{ids, distances}' <<<"$BODY")" "$(sed -n "${i}p" "$results")" "search for $id after the restore"
    emu GET "/tenants/$TENANT/blobs/$(blob_of "$svc")/vectors/$vid"
    assert_eq "$CODE" 200 "the vector of $id"
    echo "$emb" >"$SUITE_TMP/want.$i.json"
    echo "$BODY" >"$SUITE_TMP/got.$i.json"
  done <"$sample"
  # shellcheck disable=SC2016  # ${...} below is JavaScript's
  node -e '
    const fs = require("fs"), dir = process.argv[1];
    for (let i = 1; i <= 20; i++) {
      const want = JSON.parse(fs.readFileSync(`${dir}/want.${i}.json`));
      const got = JSON.parse(fs.readFileSync(`${dir}/got.${i}.json`)).vector;
      if (got.length !== want.length || got.some((x, j) => Math.fround(x) !== Math.fround(want[j]))) {
        console.error(`vector ${i} of the sample differs from its embedding in Postgres`);
        process.exit(1);
      }
    }
  ' "$SUITE_TMP" || fail "a restored vector differs from the embedding in Postgres"
  stop_emulator
}

test_kill_9_half_way_then_resume_writes_each_vector_once() {
  local job_id
  migrated_db
  gen_rows "$DB" k 1000 4 $DIM
  start_emulator --duplicate-ids duplicate
  slow_adds 150
  restore_bg RESTORE_PAGE=50 VDB_BATCH_MAX=25 VDB_MAX_INFLIGHT=2 --json
  wait_half_way
  kill -9 "$BG_PID"
  wait "$BG_PID" 2>/dev/null || true
  job_id=$(pg "select max(id) from abilitysync.restore_jobs")
  emu DELETE /_admin/faults
  restore --resume --json
  assert_rc 0 "resume"
  assert_eq "$(jq -c '[.job_id, .status, .total, .done, .failed]' <<<"$OUT")" "[$job_id,\"done\",1000,1000,0]" \
    "job_id, status, total, done, failed"
  assert_eq "$(pg "select count(*) from abilitysync.restore_jobs")" 1 "jobs (the resumed one continued)"
  assert_eq "$(job)" "done 1000 1000" "the job row"
  assert_each_vector_once
  check_stores_agree "$DB"
  stop_emulator
}

# first_of_two PREFIX: 1,200 rows (ids PREFIX-...), a vector DB that keeps
# duplicates and adds slowly, and a first restore in the background (BG_PID)
# that has recorded some of its pages: parts of 16 pages of 10 rows, 8 of them,
# for a second process to join with --resume.
first_of_two() {
  migrated_db
  gen_rows "$DB" "$1" 1200 4 $DIM
  start_emulator --duplicate-ids duplicate
  slow_adds 100
  restore_bg RESTORE_PAGE=10 VDB_BATCH_MAX=10 --json
  wait_half_way
}

test_two_processes_share_one_restore_and_write_each_vector_once() {
  local a b parts
  first_of_two t
  restore RESTORE_PAGE=10 VDB_BATCH_MAX=10 --resume --json
  assert_rc 0 "the second process"
  b=$OUT
  wait "$BG_PID" || fail "the first process: exit $?: $(cat "$SUITE_TMP/bg.err")"
  a=$(cat "$SUITE_TMP/bg.out")
  assert_contains "$(cat "$SUITE_TMP/bg.err")$ERR" "joining every service"
  assert_eq "$(pg "select count(*) from abilitysync.restore_parts")" 8 "parts"
  parts=$(($(jq .parts <<<"$a") + $(jq .parts <<<"$b")))
  assert_eq "$parts" 8 "parts finished by the first ($(jq .parts <<<"$a")) and the second ($(jq .parts <<<"$b"))"
  if [ "$(jq .parts <<<"$a")" = 0 ] || [ "$(jq .parts <<<"$b")" = 0 ]; then
    fail "each process finished parts: first $(jq -c . <<<"$a"), second $(jq -c . <<<"$b")"
  fi
  assert_eq "$(jq -r .job_id <<<"$a")" "$(jq -r .job_id <<<"$b")" "one job"
  assert_eq "$(pg "select count(*) from abilitysync.restore_jobs")" 1 "jobs"
  assert_eq "$(job)" "done 1200 1200" "the job row: done by whichever process finished the last part"
  assert_eq "$(pg "select count(*) from abilitysync.restore_parts where finished_at is null")" 0 "parts left"
  assert_each_vector_once
  check_stores_agree "$DB"
  stop_emulator
}

# A cancel (what POST /v1/jobs/{id}/cancel writes: the job row's status) stops
# every process on the job after its pages in flight; a resume finishes it.
test_a_cancel_stops_every_process_of_a_job_and_resume_finishes_it() {
  local second rc2=0
  first_of_two x
  restore_cmd RESTORE_PAGE=10 VDB_BATCH_MAX=10 --resume --json
  "${CMD[@]}" >"$SUITE_TMP/second.out" 2>"$SUITE_TMP/second.err" &
  second=$!
  STARTED+=("$second")
  for _ in $(seq 1 100); do
    grep -q "joining" "$SUITE_TMP/second.err" && break
    sleep 0.05
  done
  assert_contains "$(cat "$SUITE_TMP/second.err")" "joining every service"
  pg "update abilitysync.restore_jobs set status = 'cancelled', error = 'cancelled by the test'" >/dev/null
  for _ in $(seq 1 200); do
    kill -0 "$BG_PID" 2>/dev/null || kill -0 "$second" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$BG_PID" 2>/dev/null && fail "the first process still runs 10 s after the cancel"
  kill -0 "$second" 2>/dev/null && fail "the second process still runs 10 s after the cancel"
  wait "$second" || rc2=$?
  assert_eq "$rc2" 1 "the second process after the cancel: $(cat "$SUITE_TMP/second.err")"
  assert_eq "$(jq -r .status "$SUITE_TMP/second.out")" interrupted "the second process's summary"
  assert_eq "$(pg "select status from abilitysync.restore_jobs")" cancelled "the job stays cancelled"
  [ "$(pg "select done from abilitysync.restore_jobs")" -lt 1200 ] || fail "the job finished before the cancel"
  emu DELETE /_admin/faults
  restore --resume --json
  assert_rc 0 "resume after the cancel"
  assert_eq "$(job)" "done 1200 1200" "the job row"
  assert_each_vector_once
  check_stores_agree "$DB"
  stop_emulator
}

test_a_database_without_the_sync_schema_is_refused_until_migrated() {
  DB=$(new_db)
  # What the original application leaves: its table, and drizzle's ledger with its own migration in it.
  psql_q "$DB" -f drizzle-compat/drizzle/0000_abilities.sql >/dev/null
  pg "create schema drizzle; create table drizzle.__drizzle_migrations (id serial primary key, hash text not null,
    created_at bigint); insert into drizzle.__drizzle_migrations (hash, created_at)
    values (encode(sha256('the original app''s 0000'), 'hex'), 1729000000000)" >/dev/null
  gen_rows "$DB" o 60 2 $DIM
  start_emulator
  restore --json
  assert_rc 1 "restore on the original app's database"
  assert_contains "$OUT$ERR" "abilitysync migrate up"
  assert_eq "$(emu_fingerprint)" "no tenant (404)" "the vector DB"
  assert_eq "$(pg "select count(*) from pg_namespace where nspname = 'abilitysync'")" 0 "no schema created"
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  restore --json
  assert_rc 0 "restore after migrate up"
  assert_eq "$(jq -c '[.status, .total, .done]' <<<"$OUT")" '["done",60,60]' "status, total, done"
  check_stores_agree "$DB"
  assert_each_vector_once
  stop_emulator
}

test_dry_run_counts_per_blob_and_writes_nothing() {
  local before
  migrated_db
  gen_rows "$DB" d 10 3 $DIM
  start_emulator
  before=$(db_fingerprint "$DB")
  restore --dry-run --json
  assert_rc 0 "dry run"
  assert_eq "$(jq -S -c '{dry_run, total, blobs}' <<<"$OUT")" \
    '{"blobs":{"abilities_svc_0_example":3,"abilities_svc_1_example":4,"abilities_svc_2_example":3},"dry_run":true,"total":10}'
  assert_eq "$(db_fingerprint "$DB")" "$before" "Postgres after a dry run"
  assert_eq "$(pg "select count(*) from abilitysync.restore_jobs")" 0 "jobs"
  assert_eq "$(emu_writes)" "{}" "writes to the vector DB"
  assert_eq "$(emu_fingerprint)" "no tenant (404)" "the vector DB"
  stop_emulator
}

test_service_flag_restores_one_blob() {
  migrated_db
  gen_rows "$DB" s 30 3 $DIM
  start_emulator
  restore --service svc-1.example --json
  assert_rc 0
  assert_eq "$(jq -c '[.service_name, .total, .done]' <<<"$OUT")" '["svc-1.example",10,10]' "service_name, total, done"
  assert_eq "$(emu_fingerprint | cut -d' ' -f1 | sort | uniq -c | awk '{print $2 " " $1}')" "abilities_svc_1_example 10" \
    "vectors per blob"
  assert_eq "$(pg "select service_name from abilitysync.restore_jobs")" svc-1.example "the job's service"
  stop_emulator
}

test_post_restore_runs_a_job_the_api_reports() {
  local id percent last=0
  migrated_db
  gen_rows "$DB" p 300 3 $DIM
  start_emulator
  slow_adds 300
  start_service DATABASE_URL="$DB" RESTORE_PAGE=50 VDB_BATCH_MAX=25 VDB_MAX_INFLIGHT=1
  wait_ready
  api POST /v1/restore '{}'
  assert_eq "$CODE" 202 "$BODY"
  id=$(jq -r .job_id <<<"$BODY")
  assert_eq "$(jq -c '[.status, .state, .href]' <<<"$BODY")" "[\"running\",\"running\",\"/v1/jobs/restore-$id\"]" "status, state, href"
  api POST /v1/restore '{"resume": true}'
  assert_eq "$CODE" 409 "a second restore while one runs: $BODY"
  assert_eq "$(jq -r .error.code <<<"$BODY")" restore_running
  api POST /v1/restore '{"service_name": "svc-1.example"}'
  assert_eq "$CODE" 409 "a restore of one service while one runs: $BODY"
  for _ in $(seq 1 600); do
    api GET "/v1/jobs/$id"
    assert_eq "$CODE" 200 "GET /v1/jobs/$id: $BODY"
    percent=$(jq .percent_complete <<<"$BODY")
    awk -v p="$percent" -v l="$last" 'BEGIN { exit !(p >= l && p >= 0 && p <= 100) }' ||
      fail "percent_complete went from $last to $percent: $BODY"
    last=$percent
    [ "$(jq -r .status <<<"$BODY")" = running ] || break
    sleep 0.1
  done
  assert_eq "$(jq -c '[.job_id, .kind, .status, .service_name, .total, .done, .failed, .percent_complete, .error]' <<<"$BODY")" \
    "[$id,\"restore\",\"done\",null,300,300,0,100,null]" "the finished job"
  jq -e '.started_at and .updated_at and .finished_at' <<<"$BODY" >/dev/null || fail "times: $BODY"
  api GET /v1/jobs/999999
  assert_eq "$CODE" 404 "an unknown job: $BODY"
  check_stores_agree "$DB"
  assert_each_vector_once
  emu DELETE /_admin/faults
  api POST /v1/restore '{"service_name": "svc-1.example"}'
  assert_eq "$CODE" 202 "a restore of one service once the first is done: $BODY"
  id=$(jq -r .job_id <<<"$BODY")
  wait_job "$id"
  assert_eq "$(jq -c '[.status, .service_name, .total, .done]' <<<"$BODY")" '["done","svc-1.example",100,100]' \
    "the job of one service"
  stop_service
  stop_emulator
}


# POST /v1/jobs/{id}/cancel stops a restore after the pages in flight; resume
# picks the same job up where it stopped, and no vector is written twice.
# GET /v1/jobs lists restores and reconcile runs together, newest first.
test_a_cancelled_restore_resumes_where_it_stopped_and_jobs_are_listed() {
  local id n done_before cursor
  migrated_db
  gen_rows "$DB" k 300 3 $DIM
  start_emulator
  slow_adds 300
  start_service DATABASE_URL="$DB" RESTORE_PAGE=50 VDB_BATCH_MAX=25 VDB_MAX_INFLIGHT=1
  wait_ready
  api POST /v1/restore '{}'
  assert_eq "$CODE" 202 "$BODY"
  id=$(jq -r .id <<<"$BODY")
  n=$(jq -r .job_id <<<"$BODY")
  assert_eq "$id" "restore-$n" "the job's id"
  for _ in $(seq 1 100); do
    api GET "/v1/jobs/$id"
    [ "$(jq -r .done <<<"$BODY")" -gt 0 ] && break
    sleep 0.1
  done
  api POST "/v1/jobs/$id/cancel"
  assert_eq "$CODE" 202 "cancel: $BODY"
  assert_eq "$(jq -r .state <<<"$BODY")" cancelled
  api GET "/v1/jobs/$id"
  assert_eq "$(jq -r '[.state, .status] | join(" ")' <<<"$BODY")" "cancelled cancelled" "the job once cancelled: $BODY"
  assert_contains "$(jq -r .error <<<"$BODY")" "cancelled by" "who cancelled"
  # It stops after the pages in flight; then it can be resumed.
  for _ in $(seq 1 100); do
    api POST /v1/restore '{"resume": true}'
    [ "$CODE" = 409 ] || break
    sleep 0.1
  done
  assert_eq "$CODE" 202 "resume after the cancel: $BODY"
  assert_eq "$(jq -r .id <<<"$BODY")" "$id" "resume picks the cancelled job up"
  done_before=$(pg "select done from abilitysync.restore_jobs where id = $n")
  [ "$done_before" -lt 300 ] || fail "the job finished before it was cancelled"
  emu DELETE /_admin/faults
  wait_job "$id"
  assert_eq "$(jq -c '[.state, .status, .total, .done, .failed]' <<<"$BODY")" '["succeeded","done",300,300,0]' \
    "the resumed job: $BODY"
  check_stores_agree "$DB"
  assert_each_vector_once
  api POST "/v1/jobs/$id/cancel"
  assert_eq "$CODE" 409 "cancelling a finished job: $BODY"
  assert_eq "$(jq -r .code <<<"$BODY")" job_not_running
  api POST /v1/jobs/restore-999999/cancel
  assert_eq "$CODE" 404 "cancelling no job: $BODY"
  api GET /v1/audit
  assert_eq "$(jq -c --arg id "$id" '[.entries[] | select(.action == "POST /v1/jobs/{id}/cancel" and .params.id == $id)
    | .status] | sort' <<<"$BODY")" '[202,409]' "the cancels of $id are in the audit trail: $BODY"

  run env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM="$DIM" "$ABILITYSYNC" reconcile
  api GET '/v1/jobs?limit=1'
  assert_eq "$(jq -r '[.jobs[0].kind, .jobs[0].state, (.jobs | length)] | map(tostring) | join(" ")' <<<"$BODY")" \
    "reconcile succeeded 1" "the newest job first: $BODY"
  api GET "/v1/jobs?limit=1&cursor=$(jq -r .next_cursor <<<"$BODY")"
  assert_eq "$(jq -r '[.jobs[0].id, .next_cursor] | map(tostring) | join(" ")' <<<"$BODY")" "$id null" \
    "the second page: $BODY"
  api GET '/v1/jobs?kind=reconcile&state=succeeded'
  assert_eq "$(jq -r '.jobs | length' <<<"$BODY")" 1 "one reconcile run: $BODY"
  api GET "/v1/jobs/$(jq -r '.jobs[0].id' <<<"$BODY")"
  assert_eq "$(jq -r '[.kind, .percent_complete, .total] | map(tostring) | join(" ")' <<<"$BODY")" \
    "reconcile 100 null" "a reconcile run as a job: $BODY"
  api GET '/v1/jobs?state=done'
  assert_eq "$(jq -r '[.code, .errors[0].pointer] | join(" ")' <<<"$BODY")" "invalid_parameter /state" "$BODY"
  for cursor in ... 1.x.2 1.restore. 1.reconcile.2x 1234567890123456789.restore.1; do
    api GET "/v1/jobs?cursor=$cursor"
    assert_eq "$CODE $(jq -r .code <<<"$BODY")" "422 invalid_parameter" "cursor $cursor: $BODY"
  done
  stop_service
  stop_emulator
}
test_progress_lines_on_stderr_when_not_a_terminal() {
  local lines
  migrated_db
  gen_rows "$DB" g 400 2 $DIM
  start_emulator
  slow_adds 200
  restore PROGRESS_INTERVAL=1 RESTORE_PAGE=40 VDB_BATCH_MAX=20 VDB_MAX_INFLIGHT=1
  assert_rc 0 "restore"
  lines=$(grep -c -E 'restore: job [0-9]+: [0-9]+/[0-9]+ \([0-9]+(\.[0-9]+)?%\)' <<<"$ERR" || true)
  [ "$lines" -ge 2 ] || fail "$lines progress lines in 4 s with PROGRESS_INTERVAL=1: $ERR"
  assert_not_contains "$OUT" "restore: job" "stdout"
  assert_eq "$(grep -c $'\r' <<<"$ERR" || true)" 0 "carriage returns (a bar) on a file"
  grep -o -E 'restore: job [0-9]+: [0-9]+/' <<<"$ERR" | grep -o -E '[0-9]+/$' | tr -d / | sort -n -c ||
    fail "the counts went down: $ERR"
  stop_emulator
}

test_a_vector_db_outage_fails_the_job_and_resume_finishes_it() {
  local job_id
  migrated_db
  gen_rows "$DB" v 400 2 $DIM
  start_emulator --duplicate-ids duplicate
  slow_adds 200
  restore_bg RESTORE_PAGE=40 VDB_BATCH_MAX=20 VDB_MAX_INFLIGHT=1 --json
  wait_half_way
  # The vector DB starts failing every add.
  emu DELETE /_admin/faults
  emu POST /_admin/faults '{"path": "/vectors", "method": "POST", "status": 503}'
  wait_bg
  assert_rc 1 "restore while the vector DB fails"
  assert_eq "$(jq -r .status <<<"$OUT")" failed "status printed"
  job_id=$(jq -r .job_id <<<"$OUT")
  assert_eq "$(pg "select status || ' ' || (error is not null and error <> '') || ' ' || (done < total)
    from abilitysync.restore_jobs where id = $job_id")" "failed true true" "the job: status, error, done < total"
  emu DELETE /_admin/faults
  restore --resume --json
  assert_rc 0 "resume"
  assert_eq "$(jq -c '[.job_id, .status, .total, .done]' <<<"$OUT")" "[$job_id,\"done\",400,400]" "job_id, status, total, done"
  assert_each_vector_once
  check_stores_agree "$DB"
  stop_emulator
}

# The job's Postgres session ends while it waits for the vector DB: its locks
# went with it, so it stops rather than go on in a new session that holds
# none (another process may take its parts meanwhile); a resume finishes it.
test_a_lost_postgres_session_ends_the_job_and_resume_finishes_it() {
  local job_id ended
  migrated_db
  gen_rows "$DB" s 400 2 $DIM
  start_emulator --duplicate-ids duplicate
  slow_adds 600
  restore_bg RESTORE_PAGE=40 VDB_BATCH_MAX=40 VDB_MAX_INFLIGHT=1 --json
  wait_half_way
  ended=$(pg "select count(pg_terminate_backend(pid)) from (select distinct pid from pg_locks
    where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())) l")
  assert_eq "$ended" 1 "backends holding the job's locks, ended"
  wait_bg
  assert_rc 1 "restore after its session ended"
  assert_eq "$(jq -r .status <<<"$OUT")" failed "status printed"
  assert_contains "$ERR" "the Postgres session was lost"
  job_id=$(jq -r .job_id <<<"$OUT")
  assert_eq "$(pg "select status from abilitysync.restore_jobs where id = $job_id")" running \
    "the job row (nobody could record the failure; no process holds it)"
  # The adds the first process gave up on may still land (the vector DB is slow): the
  # resume takes their rows over in doubt and settles them once that window is out.
  emu DELETE /_admin/faults
  restore --resume --json
  assert_rc 0 "resume"
  assert_eq "$(jq -c '[.job_id, .status, .total, .done, .unsettled]' <<<"$OUT")" "[$job_id,\"done\",400,400,0]" \
    "job_id, status, total, done, unsettled"
  assert_each_vector_once
  check_stores_agree "$DB"
  stop_emulator
}

# The job's connection stops answering (a flow forgotten by the network: no
# RST): its statement is given up at its deadline, and the backend left
# behind, which still holds the job's locks, is ended through a new
# connection before the job reports; a resume then finishes the job.
test_a_stalled_job_session_has_its_backend_ended_and_resume_finishes_it() {
  local port proxied
  migrated_db
  gen_rows "$DB" st 400 2 $DIM
  start_emulator --duplicate-ids duplicate
  slow_adds 300
  port=$(sed -E 's#^[a-z]+://[^@]*@[^:/]+:([0-9]+)/.*#\1#' <<<"$DB")
  start_proxy pg "127.0.0.1:$port"
  proxied=$(sed -E "s#^([a-z]+://[^@]*@[^:/]+):[0-9]+/#\1:$PROXY_PORT/#" <<<"$DB")
  restore_bg DATABASE_URL="$proxied" PG_JOB_STATEMENT_TIMEOUT_MS=1000 PG_STATEMENT_TIMEOUT_MS=1000 \
    RESTORE_PAGE=40 VDB_BATCH_MAX=40 VDB_MAX_INFLIGHT=1 --json
  wait_half_way
  proxy_mode pg stall
  wait_bg
  assert_rc 1 "restore after its session stalled"
  assert_contains "$ERR" "the Postgres session was lost"
  assert_eq "$(pg "select count(*) from pg_locks where locktype = 'advisory'")" 0 \
    "advisory locks held once the job reported"
  assert_contains "$ERR" "reconnecting only to end its backend"
  proxy_mode pg pass
  emu DELETE /_admin/faults
  restore --resume --json
  assert_rc 0 "resume"
  assert_eq "$(jq -c '[.status, .total, .done]' <<<"$OUT")" '["done",400,400]' "status, total, done"
  assert_each_vector_once
  check_stores_agree "$DB"
  stop_emulator
}

# A restore beside a service taking registrations waits only for its own rows
# (leases, doubt windows): what is registered meanwhile is the service's to
# push, so it neither holds the restore up to its deadline nor counts as left.
test_a_restore_beside_a_busy_service_waits_only_for_its_own_rows() {
  local loader start ms
  migrated_db
  gen_rows "$DB" b 200 2 $DIM
  start_emulator
  slow_adds 300
  start_service DATABASE_URL="$DB" SYNC_WAIT_MS=0 EMBEDDING_DIM=$DIM
  wait_ready
  (
    for i in $(seq 1 400); do
      curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
        --data-binary "$(ability_json "live-$i" api.example.com $DIM "$i")" "$SVC_URL/v1/abilities"
      sleep 0.05
    done
  ) &
  loader=$!
  STARTED+=("$loader")
  sleep 1
  start=$(date +%s%N)
  restore --json
  ms=$((($(date +%s%N) - start) / 1000000))
  kill "$loader" 2>/dev/null || fail "the registrations ended before the restore did"
  wait "$loader" 2>/dev/null || true
  assert_rc 0 "restore beside the service"
  assert_eq "$(jq -c '[.status, .unsettled]' <<<"$OUT")" '["done",0]' "status, unsettled"
  # Its deadline (SYNC_LEASE 2 + 10 + VDB_QUARANTINE_MS 2 s) is what waiting for everyone's rows took.
  [ "$ms" -lt 12000 ] || fail "the restore took $ms ms: it waited for the service's registrations"
  emu DELETE /_admin/faults
  wait_converged "$DB"
  check_stores_agree "$DB"
  stop_service
  stop_emulator
}

# Found by the canary scan: a vector DB that refuses connections while the
# blobs are prepared failed the job but never ended the process.
test_a_vector_db_that_refuses_connections_fails_the_job_at_once() {
  local port
  migrated_db
  gen_rows "$DB" r 20 2 $DIM
  port=$(free_port)
  SECONDS=0
  EMU_URL="http://127.0.0.1:$port" restore_cmd VDB_MAX_ATTEMPTS=2 --json
  run_split timeout -k 2 30 "${CMD[@]}"
  assert_rc 1 "restore with no vector DB"
  [ "$SECONDS" -le 15 ] || fail "it took $SECONDS s to give up"
  assert_eq "$(jq -r .status <<<"$OUT")" failed "$OUT"
  assert_contains "$ERR" "creating blob"
  assert_eq "$(pg "select status from abilitysync.restore_jobs order by id desc limit 1")" failed
}

test_rows_that_cannot_be_written_end_done_with_failures() {
  migrated_db
  gen_rows "$DB" f 20 2 $DIM
  insert_rows "$DB" svc-0.example 7 f-seven-numbers
  # The original app set no limit on service_name: a 600-byte one once overran the blob name's buffer.
  insert_rows "$DB" "$(printf 's%.0s' $(seq 1 600))" $DIM f-long-service
  start_emulator
  restore --json
  assert_rc 3 "a restore with a row of the wrong dimension"
  assert_eq "$(jq -c '[.status, .total, .failed]' <<<"$OUT")" '["done",22,2]' "status, total, failed"
  assert_contains "$(pg "select last_error from abilitysync.sync_state where ability_id = 'f-long-service'")" \
    "service_name"
  assert_eq "$(emu_fingerprint | wc -l)" 20 "vectors written"
  stop_emulator
}

# Two ability ids whose vector_id is the same (453346338): found by bench/jobs.sh
# in 100,000 generated rows, where the second once overwrote the first's vector.
COLLIDING=(bench-copy-5-50963 bench-copy-5-94467)

# owner_in_vdb BLOB: the ability_id attribute of vector 453346338.
owner_in_vdb() {
  emu GET "/_admin/tenants/reverse_engineer/blobs/$1/ids?attribute=ability_id"
  jq -r '.entries[] | select(.id == 453346338) | .value' <<<"$BODY"
}

test_a_vector_id_collision_keeps_one_owner_and_fails_the_other() {
  local blob
  blob=$(blob_of svc-0.example)
  migrated_db
  gen_rows "$DB" c 10 2 $DIM
  insert_rows "$DB" svc-0.example $DIM "${COLLIDING[@]}"
  # The same pair in two services: two blobs, no collision.
  insert_rows "$DB" other.example $DIM bench-copy-5-50963x
  start_emulator
  restore --dry-run --json
  assert_rc 0 "a dry run"
  assert_eq "$(jq -c '[.total, .collisions]' <<<"$OUT")" '[13,1]' "the dry run counts the collision"
  assert_contains "$ERR" "${COLLIDING[1]} shares vector_id 453346338 in blob $blob with ${COLLIDING[0]}, which keeps it: a restore would fail it"
  restore --dry-run --json --service other.example
  assert_eq "$(jq -c '[.total, .collisions]' <<<"$OUT")" '[1,0]' "a dry run of another service"
  restore --json
  assert_rc 3 "a restore with a collision"
  assert_eq "$(jq -c '[.status, .total, .failed]' <<<"$OUT")" '["done",13,1]' "status, total, failed"
  assert_eq "$(owner_in_vdb "$blob")" "${COLLIDING[0]}" "the smaller ability_id keeps the vector"
  assert_contains "$(pg "select state || ': ' || last_error from abilitysync.sync_state where ability_id = '${COLLIDING[1]}'")" \
    "failed: vector_id collision: vector 453346338 of blob $blob is ${COLLIDING[0]}'s"
  assert_contains "$ERR" "${COLLIDING[1]} shares vector_id 453346338 in blob $blob with ${COLLIDING[0]}"
  assert_eq "$(emu_fingerprint | wc -l)" 12 "vectors written"
  stop_emulator
  # When the ledger says the other one holds the vector (it was registered
  # through abilitysync), that one keeps it.
  migrated_db ledger
  insert_rows "$DB" svc-0.example $DIM "${COLLIDING[@]}"
  pg "insert into abilitysync.vector_ledger (blob_id, vector_id, ability_id) values ('$blob', 453346338, '${COLLIDING[1]}')" >/dev/null
  start_emulator
  restore --json
  assert_rc 3 "a restore with a collision"
  assert_eq "$(owner_in_vdb "$blob")" "${COLLIDING[1]}" "the ledger's owner keeps the vector"
  assert_eq "$(pg "select ability_id from abilitysync.sync_state where state = 'failed'")" "${COLLIDING[0]}"
  stop_emulator
}

test_bad_usage_and_nothing_to_resume() {
  migrated_db
  start_emulator
  restore --bogus
  assert_rc 2 "an unknown flag"
  assert_contains "$OUT$ERR" "--bogus"
  restore --resume
  assert_rc 1 "--resume with no unfinished job"
  grep -q -i -E 'nothing to resume|no .*to resume' <<<"$OUT$ERR" || fail "no message saying there is nothing to resume: $OUT$ERR"
  run env -u DATABASE_URL VECTOR_DB_API="$EMU_URL" "$ABILITYSYNC" restore
  assert_rc 2 "no DATABASE_URL"
  assert_contains "$OUT" DATABASE_URL
  stop_emulator
}

run_suite
