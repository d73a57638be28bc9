#!/usr/bin/env bash
# The outbox's promise under ordering races and ambiguous outcomes: the two
# stores agree, nothing acknowledged is lost, deletes never come back.
#
# Each test forces one interleaving with the emulator's faults (a request held
# until the test releases it, one applied late after the client gave up, one
# applied and then answered with a reset or a proxy's 504) instead of hoping
# for it, then checks what each store holds, vector by vector.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

TENANT=reverse_engineer
SVC=race.example
BLOB=abilities_race_example

# A migrated database and an emulator (extra flags pass to the emulator).
setup_stores() {
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator "$@"
}

# A service on them; extra VAR=value settings pass through.
serve() {
  start_service DATABASE_URL="$DB" SYNC_WAIT_MS=400 VDB_QUARANTINE_MS=2000 "$@"
  wait_ready
}

# A service reaching Postgres through a fault proxy named pg (proxy_mode pg ...),
# one connection, statements allowed to wait; extra VAR=value settings pass through.
serve_via_pg_proxy() {
  start_proxy pg "127.0.0.1:$(sed -E 's#^[a-z]+://[^@]*@[^:/]+:([0-9]+)/.*#\1#' <<<"$DB")"
  start_service DATABASE_URL="$(sed -E "s#^([a-z]+://[^@]*@[^:/]+):[0-9]+/#\1:$PROXY_PORT/#" <<<"$DB")" \
    SYNC_WAIT_MS=400 PG_POOL_SIZE=1 PG_STATEMENT_TIMEOUT_MS=30000 "$@"
  wait_ready
}

pg() { psql_q "$DB" -c "$1"; }

vid_of() { psql_q "$DB" -c "select $(vector_id_sql "'$1'")"; }

# The content_hash attribute of every entry the emulator holds for an ability, one per line.
emu_hashes() { # ability_id [blob]
  local vid
  vid=$(vid_of "$1")
  emu GET "/_admin/tenants/$TENANT/blobs/${2:-$BLOB}/ids?attribute=content_hash"
  [ "$CODE" = 200 ] || return 0
  jq -r --argjson v "$vid" '.entries[] | select(.id == $v) | .value' <<<"$BODY"
}

# Holds the next request matching METHOD and PATH-substring; prints the rule id.
hold_next() {
  emu POST /_admin/faults "{\"method\": \"$1\", \"path\": \"$2\", \"hold\": true, \"count\": 1}"
  [ "$CODE" = 201 ] || fail "hold rule: $CODE $BODY"
  jq -r .id <<<"$BODY"
}

wait_held() { # n: until n requests are held
  for _ in $(seq 1 100); do
    emu GET /_admin/held
    [ "$(jq -r .held <<<"$BODY")" -ge "${1:-1}" ] && return
    sleep 0.05
  done
  fail "no request was held"
}

release() { emu POST /_admin/release; }

# Waits until the sync state of $1 is $2 (at most $3 s, default 20).
wait_state() {
  local got=""
  for _ in $(seq 1 $((${3:-20} * 10))); do
    got=$(pg "select state from abilitysync.sync_state where ability_id = '$1'")
    [ "$got" = "$2" ] && return
    sleep 0.1
  done
  fail "sync state of $1: expected $2, got [$got]; $(pg "select state, generation, last_error from abilitysync.sync_state where ability_id = '$1'")"
}

# The vector DB holds exactly one vector for $1, with content hash $2 (and the mirror agrees).
assert_vector() {
  local got
  got=$(emu_hashes "$1" "${3:-$BLOB}")
  assert_eq "$got" "$2" "the vector DB's vectors of $1 (content_hash per entry)"
  assert_eq "$(pg "select content_hash from abilitysync.sync_state where ability_id = '$1'")" "$2" \
    "the sync state's content hash of $1"
}

post() { # json: POST /v1/abilities, sets HASH to the answer's content hash
  api POST /v1/abilities "$1"
  HASH=$(jq -r '.content_hash // empty' <<<"$BODY")
}

test_a_failed_batch_push_never_deletes_an_unchanged_ability() {
  local a b
  setup_stores
  serve
  a=$(ability_json keep-me "$SVC" 8 1)
  b=$(ability_json change-me "$SVC" 8 2)
  api POST /v1/abilities "{\"abilities\": [$a, $b]}"
  assert_eq "$CODE" 201 "$BODY"
  post "$a"
  local ha=$HASH
  # The batch re-sends keep-me unchanged and changes change-me; the vector DB refuses the add.
  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "status": 400, "count": 1}'
  b=$(ability_json change-me "$SVC" 8 2 changed)
  api POST /v1/abilities "{\"abilities\": [$a, $b]}"
  assert_eq "$(jq -r '[.results[].status] | join(",")' <<<"$BODY")" "unchanged,updated" "$BODY"
  sleep 0.5
  assert_vector keep-me "$ha"
  assert_eq "$(pg "select state from abilitysync.sync_state where ability_id = 'keep-me'")" synced
  teardown_all
}

test_a_slow_older_write_never_overwrites_a_newer_one() {
  setup_stores
  serve
  hold_next POST /vectors >/dev/null
  post "$(ability_json slow "$SVC" 8 1 v1)"
  assert_eq "$CODE" 202 "v1 waits for the held POST: $BODY"
  wait_held 1
  post "$(ability_json slow "$SVC" 8 1 v2)"
  local h2=$HASH
  assert_eq "$CODE" 202 "v2 waits behind v1's push: $BODY"
  release
  wait_state slow synced
  assert_vector slow "$h2"
  teardown_all
}

# Holds the outbox's claims whose statement text matches a LIKE pattern
# between their snapshot and their locks, from when this returns until
# release_claims: a statement trigger waits for an advisory lock a background
# session holds. Only a claim that would find a due row is held when the
# third argument says so (`due`); with `fail_once`, the first claim held then
# fails (a Postgres error).
hold_claims() { # pattern [due|any] [fail_once]
  local guard="true" fail=""
  [ "${2:-any}" = due ] && guard="EXISTS (SELECT 1 FROM abilitysync.sync_state WHERE state = 'pending'
      AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now()))"
  [ "${3:-}" = fail_once ] && fail="IF nextval('fail_once') = 1 THEN RAISE EXCEPTION 'the claim fails once'; END IF;"
  pg "CREATE SEQUENCE fail_once;
      CREATE FUNCTION hold_claim() RETURNS trigger LANGUAGE plpgsql AS \$\$
      BEGIN IF current_query() LIKE '$1' AND $guard THEN PERFORM pg_advisory_xact_lock_shared(4242); $fail
      END IF; RETURN NULL; END \$\$;
      CREATE TRIGGER hold_claim BEFORE UPDATE ON abilitysync.sync_state
      FOR EACH STATEMENT EXECUTE FUNCTION hold_claim()" >/dev/null
  psql -X -q "$DB" -c "SELECT pg_advisory_lock(4242)" -c "SELECT pg_sleep(60) /* claim holder */" >/dev/null 2>&1 &
  for _ in $(seq 1 100); do
    [ "$(pg "select count(*) from pg_locks where locktype = 'advisory' and granted")" = 1 ] && return
    sleep 0.05
  done
  fail "the advisory lock was not taken"
}

release_claims() {
  pg "select pg_terminate_backend(pid) from pg_stat_activity
      where query like '%claim holder%' and pid <> pg_backend_pid()" >/dev/null
}

wait_claim_held() { # what
  for _ in $(seq 1 100); do
    [ "$(pg "select count(*) from pg_stat_activity where wait_event = 'advisory'")" = 1 ] && return
    sleep 0.05
  done
  fail "$1 was not held"
}

FOLLOW_UPS='%s2.ability_id = ANY%'

# With follow-ups held (hold_claims "$FOLLOW_UPS"): v1's push held, v2 written behind it; v1's push lands
# and v2's follow-up claim takes its snapshot and is held; v3 is written then
# (its hash in H3) and joins the follow-up in flight.
write_while_a_follow_up_claims() { # ability_id
  hold_next POST /vectors >/dev/null
  post "$(ability_json "$1" "$SVC" 8 1 v1)"
  assert_eq "$CODE" 202 "v1 waits for the held POST: $BODY"
  wait_held 1
  post "$(ability_json "$1" "$SVC" 8 1 v2)"
  assert_eq "$CODE" 202 "v2 follows v1's push: $BODY"
  release
  wait_claim_held "v2's follow-up claim"
  post "$(ability_json "$1" "$SVC" 8 1 v3)"
  H3=$HASH
  assert_eq "$CODE" 202 "v3 joins the follow-up in flight: $BODY"
}

# v3 commits before v2's follow-up claim locks the row. The claim leaves a row
# whose generation moved since its snapshot, and the outbox let the ability go
# as "pending" with v3's lease still held: nothing pushed v3 until the lease
# ran out (SYNC_LEASE, 60 s) and a quarantine after it. It now claims such a
# row again.
test_a_write_made_while_its_follow_up_claims_is_pushed() {
  setup_stores
  serve
  hold_claims "$FOLLOW_UPS"
  write_while_a_follow_up_claims busy
  release_claims
  wait_state busy synced 10
  assert_vector busy "$H3"
  teardown_all
}

# The same, paused before the follow-up answers: the entry went without a
# push, and v3's lease (a new one: v1's recording let go of v1's) was never
# given back, so after the resume nothing pushed v3 for SYNC_LEASE. An entry
# that goes without pushing now gives back the lease a write here took.
test_a_pause_during_a_follow_up_gives_the_writes_lease_back() {
  setup_stores
  serve
  hold_claims "$FOLLOW_UPS"
  write_while_a_follow_up_claims paused
  api POST /v1/sync/pause '{"reason": "a follow-up in flight"}'
  assert_eq "$CODE" 200 "$BODY"
  release_claims
  sleep 1
  api POST /v1/sync/resume
  assert_eq "$CODE" 200 "$BODY"
  wait_state paused synced 10
  assert_vector paused "$H3"
  teardown_all
}

# The same, the follow-up claim failing (a Postgres error): the log said "the
# retry worker will", but the worker takes only rows whose lease is free or
# over, and v3's was ours for SYNC_LEASE.
test_a_failed_follow_up_claim_leaves_no_lease_held() {
  setup_stores
  serve
  hold_claims "$FOLLOW_UPS" any fail_once
  write_while_a_follow_up_claims failed
  release_claims
  wait_state failed synced 10
  assert_vector failed "$H3"
  teardown_all
}

# A delete queued behind a write's push, the outbox paused when that push is
# recorded: the entry goes without pushing the delete, whose client was told
# the write's kind (202, sync_state "pending"); now its own, pending_delete.
test_a_delete_behind_a_write_is_answered_pending_delete() {
  setup_stores
  serve SYNC_WAIT_MS=5000
  hold_next POST /vectors >/dev/null
  curl -s -o /dev/null -H 'Content-Type: application/json' \
    --data-binary "$(ability_json del-behind "$SVC" 8 1)" "$SVC_URL/v1/abilities" &
  wait_held 1
  curl -s -o "$SUITE_TMP/del.body" -w '%{http_code}' -X DELETE "$SVC_URL/v1/abilities/del-behind" \
    >"$SUITE_TMP/del.code" &
  local dpid=$!
  for _ in $(seq 1 50); do
    [ "$(pg "select state from abilitysync.sync_state where ability_id = 'del-behind'")" = pending_delete ] && break
    sleep 0.05
  done
  sleep 0.2
  api POST /v1/sync/pause '{"reason": "a push in flight"}'
  release
  wait "$dpid"
  assert_eq "$(cat "$SUITE_TMP/del.code") $(jq -r .sync_state "$SUITE_TMP/del.body")" "202 pending_delete" \
    "the delete's answer: $(cat "$SUITE_TMP/del.body")"
  api POST /v1/sync/resume
  wait_state del-behind deleted 10
  teardown_all
}

# A full set leased its rows and gave the leases back once applied, by token.
# A write of the same replica made in between kept that token (a replica's
# lease is its own) and pushed under it: the set's release let go of it with
# the push in flight, another replica took the row and pushed a newer
# version, and the older push landed last (synced, the vector DB stale until
# a deep reconcile). The set now takes no lease; the retry worker pushes its
# rows. Replica a's set, then a's write (its push held), then b's write; the
# set's release, if any, and a's retry claims wait for the test.
test_a_full_set_never_lets_go_of_a_lease_a_later_push_holds() {
  local a h3
  setup_stores
  pg "CREATE FUNCTION hold_two() RETURNS trigger LANGUAGE plpgsql AS \$\$
      BEGIN
        IF current_query() LIKE '%lease_owner = NULL %' THEN PERFORM pg_advisory_xact_lock_shared(4242); END IF;
        IF current_query() LIKE '%ORDER BY next_attempt_at LIMIT%' THEN PERFORM pg_advisory_xact_lock_shared(4243);
        END IF;
        RETURN NULL; END \$\$;
      CREATE TRIGGER hold_two BEFORE UPDATE ON abilitysync.sync_state
      FOR EACH STATEMENT EXECUTE FUNCTION hold_two()" >/dev/null
  psql -X -q "$DB" -c "SELECT pg_advisory_lock(4242)" -c "SELECT pg_sleep(60) /* release holder */" >/dev/null 2>&1 &
  psql -X -q "$DB" -c "SELECT pg_advisory_lock(4243)" -c "SELECT pg_sleep(60) /* claim holder */" >/dev/null 2>&1 &
  for _ in $(seq 1 100); do
    [ "$(pg "select count(*) from pg_locks where locktype = 'advisory' and granted")" = 2 ] && break
    sleep 0.05
  done
  serve SYNC_INTERVAL_MS=3600000
  a=$SVC_URL
  serve SYNC_INTERVAL_MS=300
  SVC_URL=$a api PUT "/v1/services/$SVC/abilities" "{\"abilities\": [$(ability_json in-set "$SVC" 8 1 v1)]}"
  assert_eq "$CODE" 202 "the set: $BODY"
  hold_next POST /vectors >/dev/null
  SVC_URL=$a post "$(ability_json in-set "$SVC" 8 1 v2)"
  assert_eq "$CODE" 202 "a's v2 waits for its held push: $BODY"
  wait_held 1
  pg "select pg_terminate_backend(pid) from pg_stat_activity
      where query like '%release holder%' and pid <> pg_backend_pid()" >/dev/null
  for _ in $(seq 1 100); do
    [ "$(pg "select count(*) from pg_locks where locktype = 'advisory' and objid = 4242")" = 0 ] && break
    sleep 0.05
  done
  post "$(ability_json in-set "$SVC" 8 1 v3)"
  h3=$HASH
  assert_eq "$CODE" 202 "b's v3 leaves the row to a's push in flight: $BODY"
  release
  release_claims
  wait_state in-set synced 10
  sleep 1 # a late push would show now
  assert_vector in-set "$h3"
  teardown_all
}

# With give-backs held (hold_claims on them): v1 of $1 written while paused,
# its lease's give-back held; then resumed.
write_while_paused() { # ability_id
  api POST /v1/sync/pause '{"reason": "a write while paused"}'
  post "$(ability_json "$1" "$SVC" 8 1 v1)"
  assert_eq "$CODE $(jq -r .sync_state <<<"$BODY")" "202 pending" "v1 is kept, not pushed: $BODY"
  wait_claim_held "v1's lease given back"
  api POST /v1/sync/resume
  sleep 0.5 # a check of the pause in flight is answered
}

# A write answered while paused gives its lease back (may_push); so do rows
# a claim took just before a pause. A write of the same replica made right
# after the resume kept that lease's token (a replica's lease is its own) and
# pushed under it while the release was on its way: the release let go of it
# with the push in flight, another replica pushed a newer version (synced)
# and the older push landed last. The ability now stays busy here until the
# lease is back; a write made meanwhile follows up under a lease of its own.
test_a_lease_given_back_after_a_pause_is_never_one_a_push_holds() {
  local a h3
  setup_stores
  hold_claims '%lease_owner = NULL %'
  serve SYNC_INTERVAL_MS=3600000
  a=$SVC_URL
  write_while_paused given-back
  hold_next POST /vectors >/dev/null
  post "$(ability_json given-back "$SVC" 8 1 v2)"
  assert_eq "$CODE" 202 "v2 waits for its push: $BODY"
  release_claims
  for _ in $(seq 1 100); do
    [ "$(pg "select count(*) from pg_locks where locktype = 'advisory'")" = 0 ] && break
    sleep 0.05
  done
  wait_held 1
  serve SYNC_INTERVAL_MS=300
  post "$(ability_json given-back "$SVC" 8 1 v3)"
  h3=$HASH
  assert_eq "$CODE" 202 "b's v3 leaves the row to a's push in flight: $BODY"
  release
  wait_state given-back synced 10
  sleep 1 # a late push would show now
  assert_vector given-back "$h3"
  teardown_all
}

# The same give-back, with the answers out of order: a write of the same
# replica kept the lease's token just before the release let go of it, and
# the write's answer came after the release's (another connection; here the
# proxy holds it). The ability was no longer busy by then, and the write
# pushed under the lease let go of. The release now says at which generation
# it let go, and a generation other than the one the lease was taken at
# keeps the ability busy: it is claimed again under a lease of its own.
test_a_lease_given_back_before_a_writes_answer_is_never_one_it_pushes_under() {
  local a wpid h3
  setup_stores
  hold_claims '%lease_owner = NULL %'
  serve_via_pg_proxy PG_POOL_SIZE=4 SYNC_INTERVAL_MS=3600000
  a=$SVC_URL
  write_while_paused out-of-order
  proxy_mode pg hold-answer abilitysync_write
  curl -s -o /dev/null -H 'Content-Type: application/json' \
    --data-binary "$(ability_json out-of-order "$SVC" 8 1 v2)" "$a/v1/abilities" &
  wpid=$!
  for _ in $(seq 1 100); do
    [ "$(pg "select generation from abilitysync.sync_state where ability_id = 'out-of-order'")" = 2 ] && break
    sleep 0.05
  done
  assert_eq "$(pg "select generation from abilitysync.sync_state where ability_id = 'out-of-order'")" 2 \
    "v2 is committed, its answer held"
  hold_next POST /vectors >/dev/null
  release_claims
  for _ in $(seq 1 100); do
    [ "$(pg "select count(*) from pg_locks where locktype = 'advisory'")" = 0 ] && break
    sleep 0.05
  done
  wait_held 1 # the give-back's answer is in, and the ability was claimed again and pushed (held)
  proxy_mode pg pass
  wait "$wpid"
  serve SYNC_INTERVAL_MS=300
  post "$(ability_json out-of-order "$SVC" 8 1 v3)"
  h3=$HASH
  assert_eq "$CODE" 202 "b's v3 leaves the row to a's push in flight: $BODY"
  release
  wait_state out-of-order synced 10
  sleep 1 # a late push would show now
  assert_vector out-of-order "$h3"
  teardown_all
}

# A restore page in the service took a row whose lease was already this
# replica's (a write's push of it in flight), keeping the token, and its
# answer came after that push's recording had let the lease go (another
# connection; here the proxy holds the page's answer): the ability was no
# longer busy, the page pushed its snapshot's content under the lease let go
# of, after another replica's newer version (synced). A page now leaves a
# row under a live lease, ours too: the push holding it pushes what is
# current.
test_a_restore_page_never_takes_a_lease_a_push_here_holds() {
  local a h2
  setup_stores
  serve_via_pg_proxy PG_POOL_SIZE=4 SYNC_INTERVAL_MS=3600000
  a=$SVC_URL
  hold_next POST /vectors >/dev/null
  post "$(ability_json in-page "$SVC" 8 1 v1)"
  assert_eq "$CODE" 202 "v1 waits for its held push: $BODY"
  wait_held 1
  proxy_mode pg hold-answer abilitysync_claim_page
  api POST /v1/restore '{}'
  assert_eq "$CODE" 202 "the restore: $BODY"
  local job
  job=$(jq -r .job_id <<<"$BODY")
  for _ in $(seq 1 100); do
    [ "$(pg "select count(*) from pg_stat_activity where state = 'idle' and query like '% pm AS (%'")" = 1 ] && break
    sleep 0.05
  done
  assert_eq "$(pg "select count(*) from pg_stat_activity where state = 'idle' and query like '% pm AS (%'")" 1 \
    "the page's statement is through, its answer held"
  release
  wait_state in-page synced 10
  serve SYNC_INTERVAL_MS=300
  post "$(ability_json in-page "$SVC" 8 1 v2)"
  h2=$HASH
  assert_eq "$CODE $(jq -r .sync_state <<<"$BODY")" "201 synced" "b pushes v2 at once: $BODY"
  proxy_mode pg pass
  SVC_URL=$a wait_job "$job" 20
  sleep 1 # a late push would show now
  assert_vector in-page "$h2"
  teardown_all
}

# A write whose answer is slow (the fault proxy holds it) after it committed,
# and a delete of the same ability by the same replica: the delete kept the
# write's lease token, was answered first, pushed the delete and recorded it
# (the lease let go); then the write's answer came, nothing said the ability
# was busy, and it pushed v1: the deleted ability's vector came back. A
# replica's writes and deletes of one ability now go out one statement at a
# time, so their answers come in the order they were sent.
test_a_delete_answered_before_an_earlier_writes_answer_stays_deleted() {
  local a wpid dpid
  setup_stores
  serve_via_pg_proxy PG_POOL_SIZE=4
  a=$SVC_URL
  proxy_mode pg hold-answer abilitysync_write
  curl -s -o /dev/null -H 'Content-Type: application/json' \
    --data-binary "$(ability_json late-write "$SVC" 8 1 v1)" "$a/v1/abilities" &
  wpid=$!
  for _ in $(seq 1 100); do
    [ "$(pg "select count(*) from abilitysync.sync_state where ability_id = 'late-write'")" = 1 ] && break
    sleep 0.05
  done
  assert_eq "$(pg "select count(*) from abilitysync.sync_state where ability_id = 'late-write'")" 1 \
    "v1 is committed, its answer held"
  curl -s -o /dev/null -X DELETE "$a/v1/abilities/late-write" &
  dpid=$!
  for _ in $(seq 1 40); do # the delete commits now, unless it waits for the write's answer (2 s)
    [ "$(pg "select state in ('pending_delete', 'deleted') from abilitysync.sync_state
      where ability_id = 'late-write'")" = t ] && break
    sleep 0.05
  done
  proxy_mode pg pass
  wait "$wpid" "$dpid"
  wait_state late-write deleted 10
  sleep 1 # a late push would show now
  assert_eq "$(emu_hashes late-write)" "" "the deleted ability's vectors"
  teardown_all
}

# The retry worker's claim of a due row answered after a pause: the row was
# pushed anyway (a pause promises nothing is pushed until resumed), under a
# lease that a write made meanwhile may already have given back. The rows of
# such a claim now go back unpushed.
test_a_claim_answered_after_a_pause_pushes_nothing() {
  setup_stores
  serve SYNC_BACKOFF_MS=100 SYNC_BACKOFF_MAX_MS=200
  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "status": 503}'
  post "$(ability_json due "$SVC" 8 1)"
  assert_eq "$CODE" 202 "the vector DB refuses it for now: $BODY"
  hold_claims '%ORDER BY next_attempt_at%' due
  wait_claim_held "the retry worker's claim"
  emu DELETE /_admin/faults
  api POST /v1/sync/pause '{"reason": "a claim in flight"}'
  assert_eq "$CODE" 200 "$BODY"
  release_claims
  sleep 1
  assert_eq "$(emu_hashes due)" "" "nothing is pushed while paused"
  assert_eq "$(pg "select state || ' ' || (lease_owner is null) from abilitysync.sync_state where ability_id = 'due'")" \
    "pending true" "the claim's lease went back"
  api POST /v1/sync/resume
  assert_eq "$CODE" 200 "$BODY"
  wait_state due synced 10
  teardown_all
}

# A tombstone still owns its vector until its delete is settled. c-14068 is
# deleted and its DELETE held (the client gives up: ambiguous, in doubt); the
# original application writes c-33647 (same blob, same vector_id); reconcile
# handed c-33647 the ledger entry (its owner's row was gone) and pushed it,
# synced; then the held DELETE landed and c-14068's check deleted the slot
# again: c-33647 synced with no vector. Reconcile now waits for the tombstone,
# and a run after it settles gives c-33647 its vector.
test_a_tombstone_in_doubt_never_deletes_a_colliding_rows_vector() {
  local vid
  setup_stores
  serve VDB_TIMEOUT_MS=1000 VDB_MAX_ATTEMPTS=1 VDB_QUARANTINE_MS=8000 SYNC_BACKOFF_MS=200
  assert_eq "$(vid_of c-14068)" "$(vid_of c-33647)" "the pair collides"
  post "$(ability_json c-14068 "$SVC")"
  assert_eq "$CODE" 201 "$BODY"
  vid=$(vid_of c-14068)
  hold_next DELETE "/vectors/$vid" >/dev/null
  api DELETE /v1/abilities/c-14068
  assert_eq "$CODE" 202 "$BODY"
  wait_held 1
  for _ in $(seq 1 50); do
    [ "$(pg "select doubt_until > now() from abilitysync.sync_state where ability_id = 'c-14068'")" = t ] && break
    sleep 0.1
  done
  assert_eq "$(pg "select state || ' ' || (doubt_until > now()) from abilitysync.sync_state where ability_id = 'c-14068'")" \
    "pending_delete true" "the delete is in doubt"
  insert_rows "$DB" "$SVC" 8 c-33647 # the original application writes it
  RECONCILE_PUSH_TIMEOUT=5 DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=8 \
    "$ABILITYSYNC" reconcile >"$SUITE_TMP/reconcile.out" 2>&1 || true
  sleep 1 # c-33647's push, if reconcile queued one
  release # c-14068's DELETE is applied now, inside its doubt window
  wait_state c-14068 deleted 20
  sleep 0.5
  if [ "$(pg "select state from abilitysync.sync_state where ability_id = 'c-33647'")" = synced ]; then
    assert_eq "$(emu_hashes c-33647 | wc -l)" 1 "c-33647 is synced: its vector must be there"
  fi
  RECONCILE_PUSH_TIMEOUT=5 DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=8 \
    "$ABILITYSYNC" reconcile >"$SUITE_TMP/reconcile2.out" 2>&1 || true
  wait_state c-33647 synced 10
  assert_eq "$(emu_hashes c-33647 | wc -l)" 1 "the run after the tombstone settled gives c-33647 its vector"
  teardown_all
}

# The vector DB client's "this process created the blob" outlived what it
# knew: a 404 on another blob makes it forget every blob, and a restore then
# found blob a "created by us" (its epoch: now), so a's vector was added again
# without its delete first: two copies on a server that keeps duplicates.
test_a_restore_after_a_forgotten_blob_never_duplicates() {
  setup_stores --duplicate-ids duplicate
  serve
  post "$(ability_json dup-a a.example 8 1)"
  assert_eq "$CODE" 201 "$BODY"
  emu POST /_admin/faults '{"method": "POST", "path": "abilities_b_example/vectors", "status": 404, "count": 1}'
  post "$(ability_json dup-b b.example 8 2)"
  assert_eq "$CODE" 201 "$BODY"
  api POST /v1/restore '{}'
  assert_eq "$CODE" 202 "$BODY"
  wait_job "$(jq -r .job_id <<<"$BODY")" 20
  assert_eq "$(jq -r .status <<<"$BODY")" "done" "$BODY"
  assert_eq "$(emu_hashes dup-b abilities_b_example | wc -l)" 1 "entries of dup-b after the restore"
  assert_eq "$(emu_hashes dup-a abilities_a_example | wc -l)" 1 "entries of dup-a after the restore"
  teardown_all
}

test_a_slow_earlier_write_never_resurrects_a_delete() {
  setup_stores
  serve
  hold_next POST /vectors >/dev/null
  post "$(ability_json doomed "$SVC" 8 1)"
  wait_held 1
  api DELETE /v1/abilities/doomed
  assert_eq "$CODE" 202 "the delete waits behind the write's push: $BODY"
  release
  wait_state doomed deleted
  assert_eq "$(emu_hashes doomed)" "" "the deleted ability's vector"
  teardown_all
}

test_restore_inside_the_server_never_duplicates() {
  local i
  setup_stores --duplicate-ids duplicate
  serve
  for i in 1 2 3 4 5; do post "$(ability_json "r-$i" "$SVC" 8 "$i")"; done
  wait_converged "$DB" 10
  api POST /v1/restore '{}'
  assert_eq "$CODE" 202 "$BODY"
  wait_job "$(jq -r .job_id <<<"$BODY")" 20
  assert_eq "$(jq -r .status <<<"$BODY")" "done" "$BODY"
  for i in 1 2 3 4 5; do
    assert_eq "$(emu_hashes "r-$i" | wc -l)" 1 "entries of r-$i after the restore"
  done
  teardown_all
}

# Two replicas; the first one's push outlives its lease (held past SYNC_LEASE,
# then applied by the server within the quarantine window): whatever the second
# replica pushes meanwhile, the end state is the last write.
test_a_push_that_outlives_its_lease_never_lands_over_a_newer_write() {
  local first h2 settings=(SYNC_LEASE=3 VDB_TIMEOUT_MS=6000 VDB_MAX_ATTEMPTS=1 VDB_QUARANTINE_MS=6000)
  setup_stores
  serve "${settings[@]}"
  first=$SVC_URL
  start_service DATABASE_URL="$DB" SYNC_WAIT_MS=400 "${settings[@]}"
  wait_ready
  hold_next POST /vectors >/dev/null
  SVC_URL=$first post "$(ability_json leased "$SVC" 8 1 v1)"
  wait_held 1
  sleep 3 # the lease is over; the other replica's worker may take the row
  post "$(ability_json leased "$SVC" 8 1 v2)"
  h2=$HASH
  sleep 1
  release # v1 lands now
  wait_state leased synced 30
  sleep 2 # a late write would show now
  assert_vector leased "$h2"
  teardown_all
}

# The lease runs from the server's now() of the statement that took it, which is
# when the statement arrived, not when its answer came back. Replica a reaches
# Postgres over a link that holds every packet 5 s each way: its write leases
# the row (2 s) at arrival and a hears of it 5 s later, long after the lease
# (and the quarantine a takeover waits) ran out and replica b wrote and pushed
# a newer version. a must not push then: its v1 would land over b's v2 while
# Postgres says v2 is synced, until a's own late bookkeeping repaired it.
test_a_write_answered_after_its_lease_never_pushes_under_it() {
  local a t0 h2 curl_pid settings=(SYNC_LEASE=2 VDB_QUARANTINE_MS=1000 VDB_MAX_ATTEMPTS=1 SYNC_INTERVAL_MS=3600000)
  setup_stores
  serve_via_pg_proxy "${settings[@]}"
  a=$SVC_URL
  SVC_URL=$a post "$(ability_json warm-up "$SVC" 8 9)" # the write statement is prepared on a's connection
  assert_eq "$CODE" 201 "$BODY"
  serve "${settings[@]}"
  proxy_mode pg delay 5000
  curl -s -o "$SUITE_TMP/a.body" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary "$(ability_json slowed "$SVC" 8 1 v1)" "$a/v1/abilities" >"$SUITE_TMP/a.code" &
  curl_pid=$!
  for _ in $(seq 1 150); do
    [ "$(pg "select count(*) from abilitysync.sync_state where ability_id = 'slowed'")" = 1 ] && break
    sleep 0.05
  done
  t0=$(date +%s%N)
  [ "$(pg "select count(*) from abilitysync.sync_state where ability_id = 'slowed'")" = 1 ] ||
    fail "a's write never reached Postgres"
  sleep 3.5 # a's lease and the quarantine after it are over; a has not heard back yet
  post "$(ability_json slowed "$SVC" 8 1 v2)"
  h2=$HASH
  assert_eq "$CODE $(jq -r '.status + " " + .sync_state' <<<"$BODY")" "201 updated synced" \
    "b takes the row over and pushes v2 at once: $BODY"
  sleep "$(((t0 + 6500000000 - $(date +%s%N)) / 1000000))e-3" # a heard back at t0 + 5 s and did what it does
  assert_vector slowed "$h2"
  proxy_mode pg pass
  wait "$curl_pid"
  assert_eq "$(cat "$SUITE_TMP/a.code")" 202 "a's answer to v1: $(cat "$SUITE_TMP/a.body")"
  sleep 6 # a's bookkeeping of v1 is through now
  assert_vector slowed "$h2"
  assert_eq "$(pg "select state from abilitysync.sync_state where ability_id = 'slowed'")" synced
  teardown_all
}

# A delete whose statement is answered after its lease's window: its push
# fails at once ("not sent, its deadline passed"), on a later turn of the
# loop, not inside the call that asked for it (which freed the request the
# delete's answer was still to come from: a use after free, found by the
# soak); the delete is answered 202 and the retry worker pushes it later.
test_a_delete_answered_after_its_window_is_answered_then_pushed() {
  setup_stores
  serve_via_pg_proxy SYNC_LEASE=2 VDB_QUARANTINE_MS=1000 SYNC_INTERVAL_MS=500 SYNC_BACKOFF_MS=100
  post "$(ability_json late-delete "$SVC" 8 1)"
  assert_eq "$CODE" 201 "$BODY"
  proxy_mode pg delay 1500 # a round trip takes 3 s, the push's window is 1.5 s
  api DELETE /v1/abilities/late-delete
  assert_eq "$CODE $(jq -r .sync_state <<<"$BODY")" "202 pending_delete" "$BODY"
  proxy_mode pg pass
  wait_state late-delete deleted 20
  assert_eq "$(emu_hashes late-delete)" "" "the deleted ability's vector"
  grep -q "not sent, its deadline passed" "$SVC_LOG" || fail "the first push was sent: $(tail -n 20 "$SVC_LOG")"
  teardown_all
}

# A resend of the same content puts back a mirror row edited or deleted
# behind our back, as a new generation pushed again (201): claims judge by the
# generation whether what they read is current, and a put-back row without a
# new one was taken as gone by a claim whose snapshot missed it.
test_an_edited_mirror_row_is_put_back_by_a_resend() {
  local body h
  setup_stores
  serve
  body=$(ability_json tamper "$SVC" 8 1 original)
  post "$body"
  assert_eq "$CODE" 201
  h=$HASH
  pg "update abilities set description = 'edited behind our back' where ability_id = 'tamper'" >/dev/null
  post "$body"
  assert_eq "$CODE" 201 "$BODY"
  assert_eq "$(pg "select description from abilities where ability_id = 'tamper'")" original "the mirror row"
  assert_eq "$(jq -r .status <<<"$BODY")" repaired "$BODY"
  assert_eq "$(pg "select state || ' ' || generation from abilitysync.sync_state where ability_id = 'tamper'")" \
    "synced 2" "put back as a new generation, pushed"
  pg "delete from abilities where ability_id = 'tamper'" >/dev/null
  post "$body"
  assert_eq "$CODE" 201 "$BODY"
  assert_eq "$(jq -r .status <<<"$BODY")" repaired "$BODY"
  assert_eq "$(pg "select description from abilities where ability_id = 'tamper'")" original "the deleted row is back"
  assert_eq "$(pg "select state || ' ' || generation from abilitysync.sync_state where ability_id = 'tamper'")" \
    "synced 3"
  assert_vector tamper "$h"
  post "$body"
  assert_eq "$CODE" 200 "$BODY"
  assert_eq "$(jq -r .status <<<"$BODY")" unchanged "an intact row is left alone: $BODY"
  teardown_all
}

test_a_pending_row_whose_mirror_row_vanished_becomes_a_tombstone() {
  setup_stores
  serve SYNC_BACKOFF_MS=200 SYNC_BACKOFF_MAX_MS=400
  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "status": 503}'
  post "$(ability_json vanished "$SVC" 8 1)"
  assert_eq "$CODE" 202
  pg "delete from abilities where ability_id = 'vanished'" >/dev/null
  emu DELETE /_admin/faults
  wait_state vanished deleted
  assert_eq "$(emu_hashes vanished)" "" "no row, no vector"
  teardown_all
}

test_a_reconcile_repair_never_overwrites_a_fresh_tombstone() {
  local vid
  setup_stores
  serve
  post "$(ability_json tomb "$SVC" 8 1)"
  assert_eq "$CODE" 201
  vid=$(vid_of tomb)
  emu DELETE "/tenants/$TENANT/blobs/$BLOB/vectors/$vid" # the vector is lost: reconcile will call it missing
  hold_next GET "/vectors/$vid" >/dev/null
  RECONCILE_PUSH_TIMEOUT=0 DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=8 \
    "$ABILITYSYNC" reconcile >"$SUITE_TMP/reconcile.out" 2>&1 &
  local rpid=$!
  wait_held 1
  api DELETE /v1/abilities/tomb # while reconcile looks at its vector
  assert_eq "$CODE" 200 "$BODY"
  release
  wait "$rpid" || true
  sleep 1
  wait_state tomb deleted
  assert_eq "$(emu_hashes tomb)" "" "the deleted ability's vector"
  teardown_all
}

# An ability the original application wrote: a row without sync state, and its vector.
adopt() { # id service
  local vid blob
  insert_rows "$DB" "$2" 8 "$1"
  vid=$(vid_of "$1")
  blob=$(blob_of "$2")
  emu POST /tenants '{"tenant_id": "reverse_engineer"}'
  emu POST "/tenants/$TENANT/blobs" "{\"blob_id\": \"$blob\", \"blob_type\": \"dense\", \"dimension\": 8}"
  emu POST "/tenants/$TENANT/blobs/$blob/vectors" \
    "{\"vectors\": [[1,2,3,4,5,6,7,8]], \"ids\": [$vid], \"attributes\": [{\"ability_id\": \"$1\"}]}"
  [ "$CODE" = 200 ] || [ "$CODE" = 201 ] || fail "adding the original app's vector: $CODE $BODY"
}

test_an_adopted_row_is_rewritten_without_a_duplicate() {
  setup_stores --duplicate-ids duplicate
  adopt adopted "$SVC"
  serve
  post "$(ability_json adopted "$SVC" 8 1 rewritten)"
  assert_eq "$CODE" 201 "$BODY"
  assert_vector adopted "$HASH"
  teardown_all
}

test_a_service_move_deletes_the_old_vector_and_records_it() {
  local vid
  setup_stores
  adopt mover old.example
  serve
  post "$(ability_json mover new.example 8 1)"
  assert_eq "$CODE" 201 "$BODY"
  vid=$(vid_of mover)
  assert_eq "$(emu_hashes mover abilities_old_example)" "" "the vector in the old blob"
  assert_eq "$(emu_hashes mover abilities_new_example)" "$HASH" "the vector in the new blob"
  assert_eq "$(pg "select ability_id || ' ' || (deleted_at is not null) from abilitysync.vector_ledger
    where blob_id = 'abilities_old_example' and vector_id = $vid")" "mover true" "the ledger knows the old vector went"
  teardown_all
}

test_a_move_back_while_the_old_delete_is_slow_keeps_the_vector() {
  local vid
  setup_stores
  serve
  post "$(ability_json hopper a.example 8 1 one)"
  assert_eq "$CODE" 201
  vid=$(vid_of hopper)
  hold_next DELETE "abilities_a_example/vectors/$vid" >/dev/null
  post "$(ability_json hopper b.example 8 1 two)" # moves to b: a's vector must go (held)
  wait_held 1
  post "$(ability_json hopper a.example 8 1 three)" # and back to a
  local h3=$HASH
  release
  wait_state hopper synced
  sleep 0.5
  assert_eq "$(emu_hashes hopper abilities_a_example)" "$h3" "the vector in a"
  assert_eq "$(emu_hashes hopper abilities_b_example)" "" "nothing left in b"
  assert_eq "$(pg "select deleted_at is null from abilitysync.vector_ledger
    where blob_id = 'abilities_a_example' and vector_id = $vid")" t "the ledger: a's vector is live"
  teardown_all
}

test_shutdown_with_pushes_in_flight_exits_cleanly_and_loses_nothing() {
  setup_stores
  serve SHUTDOWN_TIMEOUT=1 SYNC_LEASE=3
  hold_next POST /vectors >/dev/null
  post "$(ability_json in-flight "$SVC" 8 1)"
  assert_eq "$CODE" 202
  wait_held 1
  stop_service # SIGTERM: the push is still held when SHUTDOWN_TIMEOUT ends
  assert_contains "$(cat "$SVC_LOG")" "SHUTDOWN_TIMEOUT"
  release
  serve SYNC_LEASE=3
  wait_state in-flight synced 30
  assert_vector in-flight "$HASH"
  teardown_all
}

test_colliding_ids_written_at_once_get_201_and_409() {
  local blocker first="$SUITE_TMP/first.out" second="$SUITE_TMP/second.out" outcome
  setup_stores
  serve WRITE_CONCURRENCY=2 PG_POOL_SIZE=4
  # c-14068 and c-33647 hash to one vector_id.
  assert_eq "$(vid_of c-14068)" "$(vid_of c-33647)" "the pair collides"
  # An uncommitted row for c-14068 stalls its write after the statement took its
  # snapshot, while c-33647's write runs in another statement at the same time.
  psql_q "$DB" -c "begin; insert into abilities (ability_id, vector_id, ability_name, service_name, description,
    embedding) values ('c-14068', 0, 'x', 'x', 'x', '[]'); select pg_sleep(2); rollback" >/dev/null &
  blocker=$!
  sleep 0.3
  (api POST /v1/abilities "$(ability_json c-14068 "$SVC")"; echo "$CODE $BODY" >"$first") &
  sleep 0.3
  (api POST /v1/abilities "$(ability_json c-33647 "$SVC" 8 2)"; echo "$CODE $BODY" >"$second") &
  wait "$blocker"
  for _ in $(seq 1 50); do [ -s "$first" ] && [ -s "$second" ] && break; sleep 0.1; done
  outcome="$(cut -d' ' -f1 "$first") $(cut -d' ' -f1 "$second")"
  case "$outcome" in
    "201 409") assert_contains "$(cat "$second")" "ability c-14068 already uses" "the 409 names the holder" ;;
    "409 201") assert_contains "$(cat "$first")" "ability c-33647 already uses" "the 409 names the holder" ;;
    *) fail "expected one 201 and one 409, got $outcome: $(cat "$first" "$second")" ;;
  esac
  assert_contains "$(cat "$first" "$second")" vector_id_collision
  assert_eq "$(pg "select count(*) from abilities")" 1 "one of the two was written"
  teardown_all
}

# ---- ambiguous outcomes: the write happened, the answer was lost ---------------------

test_a_write_that_lands_after_its_timeout_is_repaired() {
  setup_stores
  serve VDB_TIMEOUT_MS=1000 VDB_MAX_ATTEMPTS=1 VDB_QUARANTINE_MS=4000 SYNC_BACKOFF_MS=200
  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "latency_ms": 3000, "count": 1}'
  post "$(ability_json ghost "$SVC" 8 1 v1)"
  assert_eq "$CODE" 202 "v1 timed out: $BODY"
  post "$(ability_json ghost "$SVC" 8 1 v2)"
  local h2=$HASH
  assert_eq "$(jq -r .sync_state <<<"$BODY")" pending "v2 is in doubt until v1's window ends: $BODY"
  sleep 3 # v1 lands now, over v2
  wait_state ghost synced 20
  assert_vector ghost "$h2"
  teardown_all
}

test_reconcile_deep_reports_a_ghost_write_as_stale_content_until_verified() {
  setup_stores
  serve VDB_TIMEOUT_MS=1000 VDB_MAX_ATTEMPTS=1 VDB_QUARANTINE_MS=30000 SYNC_BACKOFF_MS=200
  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "latency_ms": 2000, "count": 1}'
  post "$(ability_json deep-ghost "$SVC" 8 1 v1)"
  post "$(ability_json deep-ghost "$SVC" 8 1 v2)"
  sleep 2.5 # v1 landed over v2; the row is in doubt for 30 s
  run_split env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=8 "$ABILITYSYNC" reconcile --dry-run --deep --json
  assert_rc 3 "a deep dry run with drift"
  assert_eq "$(jq -c '[.drift.stale_content.count, .drift.stale_content.sample]' <<<"$OUT")" '[1,["deep-ghost"]]' \
    "stale content: $(jq -c .drift <<<"$OUT")"
  run_split env DATABASE_URL="$DB" VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=8 "$ABILITYSYNC" reconcile --dry-run --json
  assert_rc 0 "without --deep a row in doubt is the outbox's business"
  teardown_all
}

test_a_write_that_lands_after_a_delete_is_deleted_again() {
  setup_stores
  serve VDB_TIMEOUT_MS=1000 VDB_MAX_ATTEMPTS=1 VDB_QUARANTINE_MS=4000 SYNC_BACKOFF_MS=200
  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "latency_ms": 3000, "count": 1}'
  post "$(ability_json ghost-del "$SVC" 8 1)"
  api DELETE /v1/abilities/ghost-del
  sleep 3 # the add lands after the delete
  wait_state ghost-del deleted 20
  assert_eq "$(emu_hashes ghost-del)" "" "the deleted ability's vector"
  teardown_all
}

test_an_applied_write_whose_answer_was_lost_leaves_no_duplicate() {
  setup_stores --duplicate-ids duplicate
  serve VDB_QUARANTINE_MS=1500 VDB_BACKOFF_MS=50
  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "applied": true, "reset": true, "count": 1}'
  post "$(ability_json dup "$SVC" 8 1)"
  wait_state dup synced 20
  assert_vector dup "$HASH"
  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "applied": true, "status": 504, "count": 1}'
  post "$(ability_json dup "$SVC" 8 1 again)"
  wait_state dup synced 20
  assert_vector dup "$HASH"
  teardown_all
}

test_a_ghost_write_is_repaired_even_when_the_read_back_fails() {
  local vid
  setup_stores
  serve VDB_WRITE_MODE=add VDB_TIMEOUT_MS=1000 VDB_MAX_ATTEMPTS=1 VDB_QUARANTINE_MS=3000 SYNC_BACKOFF_MS=200
  vid=$(vid_of ghost-get)
  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "latency_ms": 2500, "count": 1}'
  emu POST /_admin/faults "{\"method\": \"GET\", \"path\": \"/vectors/$vid\", \"status\": 503, \"count\": 2}"
  post "$(ability_json ghost-get "$SVC" 8 1 v1)"
  post "$(ability_json ghost-get "$SVC" 8 1 v2)"
  local h2=$HASH
  sleep 2.5
  wait_state ghost-get synced 25
  assert_vector ghost-get "$h2"
  teardown_all
}

# The blob the service names in C and the one abilitysync.blob_name() names in
# SQL (for rows the original app wrote) are the same, for any service name.
test_blob_names_agree_between_c_and_sql() {
  local svc i=0 body blob
  rm -f "$SUITE_TMP/blobs"
  setup_stores
  serve
  for svc in api.github.com 'caf\u00e9.example' 'emoji\ud83d\ude00.io' '\u65e5\u672c' A_z-9 'a b/c'; do
    i=$((i + 1))
    # The names are JSON string bodies: \u escapes become the characters (a 4-byte one among them).
    body=$(ability_json "blob-$i" x 8 "$i" | jq -c --arg s "$svc" '.service_name = ("\"" + $s + "\"" | fromjson)')
    api POST /v1/abilities "$body"
    assert_eq "$CODE" 201 "$svc: $BODY"
    blob=$(jq -r .blob_id <<<"$BODY")
    assert_eq "$(pg "select abilitysync.blob_name(service_name) from abilities where ability_id = 'blob-$i'")" "$blob" \
      "the blob of service $(jq -r .service_name <<<"$body")"
    echo "$blob" >>"$SUITE_TMP/blobs"
  done
  # What JavaScript's replace(/[^a-zA-Z0-9_]/g, '_') makes of them: one '_' per UTF-16 unit.
  assert_eq "$(paste -sd' ' "$SUITE_TMP/blobs")" "abilities_api_github_com abilities_caf__example abilities_emoji___io \
abilities___ abilities_A_z_9 abilities_a_b_c"
  teardown_all
}

teardown_all() {
  local pid
  for pid in "${STARTED[@]}"; do
    [ "$pid" = "${EMU_PID:-}" ] && continue
    kill -0 "$pid" 2>/dev/null && stop_service "$pid"
  done
  stop_emulator
}


# What verification costs: nothing on the fast path; for an ambiguous call,
# after the window, the rewrite (a delete and an add, delete-then-add mode).
test_verification_costs_calls_only_after_an_ambiguous_outcome() {
  local c0 c1 c2 adds deletes reads i
  setup_stores
  serve VDB_QUARANTINE_MS=500 SYNC_INTERVAL_MS=100
  calls() { # "adds deletes reads" of vectors so far
    emu GET /_admin/counters
    jq -r '[.by_route["POST /tenants/{t}/blobs/{b}/vectors"] // 0, .by_route["DELETE /tenants/{t}/blobs/{b}/vectors/{id}"] // 0,
      .by_route["GET /tenants/{t}/blobs/{b}/vectors/{id}"] // 0] | join(" ")' <<<"$BODY"
  }
  c0=$(calls)
  for i in $(seq 1 20); do
    api POST /v1/abilities "$(ability_json "fast-$i" "$SVC")"
    assert_eq "$CODE" 201 "$BODY"
  done
  c1=$(calls)
  read -r adds deletes reads <<<"$(paste -d' ' <(tr ' ' '\n' <<<"$c1") <(tr ' ' '\n' <<<"$c0") | awk '{printf "%d ", $1 - $2}')"
  assert_eq "$adds $deletes $reads" "20 0 0" "the fast path: one add per new ability, no delete, no read"
  for i in $(seq 1 5); do # each add: applied, then answered 504 once
    emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "applied": true, "status": 504, "count": 1}'
    api POST /v1/abilities "$(ability_json "doubt-$i" "$SVC")"
    [[ $CODE == 20[12] ]] || fail "$CODE $BODY"
    # The next fault only once this ability's calls are over: its client retry, still in
    # flight when the answer is 202, would take the next fault (and leave that ability sure).
    wait_state "doubt-$i" synced
  done
  c2=$(calls)
  read -r adds deletes reads <<<"$(paste -d' ' <(tr ' ' '\n' <<<"$c2") <(tr ' ' '\n' <<<"$c1") | awk '{printf "%d ", $1 - $2}')"
  # Each: the add that was applied but answered 504, the client's retry (when the push's call window
  # still allows one: not always on a loaded machine), then (after the window) the rewrite.
  assert_eq "$deletes $reads" "5 0" "5 ambiguous adds verified by a delete each (and an add), no read"
  { [ "$adds" -ge 10 ] && [ "$adds" -le 15 ]; } || fail "5 ambiguous adds cost $adds adds (10 to 15 expected)"
  echo "verification: 20 registrations on the fast path cost 20 adds, 0 deletes, 0 reads; 5 ambiguous adds cost 2 calls more each (a delete and an add, after VDB_QUARANTINE_MS)" |
    tee "$TEST_TMP/outbox.verification"
  for i in $(seq 1 5); do assert_vector "doubt-$i" "$(pg "select content_hash from abilitysync.sync_state where ability_id = 'doubt-$i'")"; done
  stop_service
  stop_emulator
}

run_suite
rc=$?
[ ! -f "$TEST_TMP/outbox.verification" ] || sed 's/^/# /' "$TEST_TMP/outbox.verification"
exit "$rc"
