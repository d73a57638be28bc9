#!/usr/bin/env bash
# `abilitysync serve` over HTTP, against a real Postgres and the emulator: what
# clients see, what each store holds afterwards, and what bad input changes (nothing).
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

TENANT=reverse_engineer


emu_ids() { # blob: the ids the emulator holds, one per line
  emu GET "/_admin/tenants/$TENANT/blobs/$1/ids"
  jq -r '.ids[]?' <<<"$BODY"
}

emu_count() { emu_ids "$1" | grep -c . || true; }

pg() { psql_q "$DB" -c "$1"; }

test_register_then_unchanged_then_updated() {
  setup
  api POST /v1/abilities "$(ability_json a-1 api.github.com 8 1 first)"
  assert_eq "$CODE" 201 "first write; body: $BODY"
  assert_eq "$(jq -r '.status + " " + .sync_state' <<<"$BODY")" "created synced"
  assert_eq "$(jq -r .blob_id <<<"$BODY")" abilities_api_github_com
  api POST /v1/abilities "$(ability_json a-1 api.github.com 8 1 first)"
  assert_eq "$CODE" 200 "same content again"
  assert_eq "$(jq -r .status <<<"$BODY")" unchanged
  assert_eq "$(pg "select generation from abilitysync.sync_state")" 1 "nothing was written the second time"
  api POST /v1/abilities "$(ability_json a-1 api.github.com 8 1 second)"
  assert_eq "$CODE" 201
  assert_eq "$(jq -r .status <<<"$BODY")" updated
  assert_eq "$(pg "select description from abilities")" second
  emu GET "/tenants/$TENANT/blobs/abilities_api_github_com/vectors/$(jq -r .vector_id <<<"$BODY")"
  assert_eq "$(jq -r .attributes.description <<<"$BODY")" second "the vector DB has the new attributes"
  assert_eq "$(emu_count abilities_api_github_com)" 1 "one vector, not two"
  teardown
}

test_both_stores_hold_exactly_what_was_sent() {
  local body hash vid
  setup
  body='{"ability_id":"exact","ability_name":"n","service_name":"s","description":"d","embedding":[0.123456789012,-1e-5,3,1.50e1,0.1,0.2,0.3,-0.000001234]}'
  api POST /v1/abilities "$body"
  assert_eq "$CODE" 201
  hash=$(jq -r .content_hash <<<"$BODY")
  vid=$(jq -r .vector_id <<<"$BODY")
  # The mirror holds the numbers as numeric: the same values, jsonb's spelling.
  assert_eq "$(pg "select embedding::text from abilities")" "[0.123456789012, -0.00001, 3, 15.0, 0.1, 0.2, 0.3, -0.000001234]"
  assert_eq "$(pg "select content_hash from abilitysync.sync_state")" "$hash"
  emu GET "/tenants/$TENANT/blobs/abilities_s/vectors/$vid"
  assert_eq "$(jq -r .attributes.content_hash <<<"$BODY")" "$hash" "the vector's content_hash attribute"
  # The vector DB stores float32: each number must be the float32 of what was sent.
  node -e '
    const sent = [0.123456789012,-1e-5,3,1.50e1,0.1,0.2,0.3,-0.000001234];
    const got = JSON.parse(process.argv[1]).vector;
    if (got.length !== sent.length || got.some((x, i) => Math.fround(x) !== Math.fround(sent[i]))) process.exit(1);
  ' "$BODY" || fail "the vector differs from what was sent: $BODY"
  teardown
}

test_batch_reports_per_ability() {
  local a b c
  setup
  a=$(ability_json b-1 svc.one)
  b=$(ability_json b-2 svc.one 8 2)
  c=$(ability_json b-3 svc.two 8 3)
  api POST /v1/abilities "{\"abilities\": [$a, $b, $c]}"
  assert_eq "$CODE" 201 "$BODY"
  assert_eq "$(jq -c .counts <<<"$BODY")" '{"created":3}'
  assert_eq "$(jq -r '[.results[].sync_state] | unique | join(",")' <<<"$BODY")" synced
  assert_eq "$(emu_count abilities_svc_one),$(emu_count abilities_svc_two)" "2,1"
  b=$(ability_json b-2 svc.one 8 2 changed)
  api POST /v1/abilities "{\"abilities\": [$a, $b]}"
  assert_eq "$CODE" 201
  assert_eq "$(jq -r '[.results[].status] | join(",")' <<<"$BODY")" "unchanged,updated"
  teardown
}

test_get_list_and_pages() {
  local i cursor seen=""
  setup
  for i in 1 2 3 4 5; do api POST /v1/abilities "$(ability_json "p-$i" page.one 8 "$i")"; done
  api POST /v1/abilities "$(ability_json q-1 page.two)"
  api GET /v1/abilities/p-3
  assert_eq "$CODE" 200
  assert_eq "$(jq -r '.ability_name + " " + .sync.state + " " + (has("embedding") | tostring)' <<<"$BODY")" "n_p-3 synced false"
  api GET "/v1/abilities/p-3?include=embedding"
  assert_eq "$(jq '.embedding | length' <<<"$BODY")" 8
  api GET "/v1/abilities?service_name=page.one&limit=2"
  seen=$(jq -r '[.abilities[].ability_id] | join(",")' <<<"$BODY")
  cursor=$(jq -r .next_cursor <<<"$BODY")
  while [ "$cursor" != null ]; do
    api GET "/v1/abilities?service_name=page.one&limit=2&cursor=$cursor"
    seen="$seen,$(jq -r '[.abilities[].ability_id] | join(",")' <<<"$BODY")"
    cursor=$(jq -r .next_cursor <<<"$BODY")
  done
  assert_eq "$seen" "p-1,p-2,p-3,p-4,p-5" "keyset pages"
  api GET /v1/abilities
  assert_eq "$(jq '.abilities | length' <<<"$BODY")" 6
  teardown
}

test_delete_leaves_a_tombstone_and_removes_the_vector() {
  setup
  api POST /v1/abilities "$(ability_json d-1 del.svc)"
  api DELETE /v1/abilities/d-1
  assert_eq "$CODE" 200 "$BODY"
  assert_eq "$(jq -r .sync_state <<<"$BODY")" deleted
  api GET /v1/abilities/d-1
  assert_eq "$CODE" 404
  assert_eq "$(emu_count abilities_del_svc)" 0 "the vector is gone"
  assert_eq "$(pg "select state from abilitysync.sync_state where ability_id = 'd-1'")" deleted "tombstone"
  assert_eq "$(pg "select deleted_at is not null from abilitysync.vector_ledger")" t "ledger"
  api DELETE /v1/abilities/d-1
  assert_eq "$CODE" 404 "deleting twice"
  api POST /v1/abilities "$(ability_json d-1 del.svc)"
  assert_eq "$CODE" 201 "registering it again"
  assert_eq "$(jq -r .status <<<"$BODY")" created
  assert_eq "$(emu_count abilities_del_svc)" 1
  teardown
}

test_search_finds_the_ability_and_joins_the_mirror() {
  local q
  setup
  api POST /v1/abilities "$(ability_json s-1 search.svc 8 11 "the one")"
  api POST /v1/abilities "$(ability_json s-2 search.svc 8 12 "another")"
  q=$(ability_json s-1 search.svc 8 11 | jq -c '{service_name, embedding, k: 2}')
  api POST /v1/search "$q"
  assert_eq "$CODE" 200 "$BODY"
  assert_eq "$(jq -r '.results[0].ability_id + " " + .results[0].description + " " + (.results[0].in_mirror | tostring)' <<<"$BODY")" \
    "s-1 the one true"
  jq -e '.results[0].distance < 0.000001 and .count == 2' <<<"$BODY" >/dev/null || fail "distances: $BODY"
  api POST /v1/search "$(jq -c '.service_name = "nothing.here"' <<<"$q")"
  assert_eq "$CODE" 200
  assert_eq "$(jq .count <<<"$BODY")" 0 "a service with no abilities"
  teardown
}


# A search answers k live abilities when at least k exist: hits whose mirror
# row is gone (a delete on its way to a vector DB that refuses it) are dropped,
# and the vector DB is asked for more to fill k. min_score cuts the far ones.
test_search_returns_k_live_results_and_honours_min_score() {
  local q i
  setup SYNC_WAIT_MS=300 VDB_MAX_ATTEMPTS=1 SYNC_BACKOFF_MS=60000 SYNC_BACKOFF_MAX_MS=60000
  for i in $(seq -w 1 14); do
    api POST /v1/abilities "$(ability_json "k-$i" k.svc 8 "$((100 + 10#$i))")"
  done
  wait_converged "$DB" 30
  # Twelve of fourteen go; the vector DB refuses their deletes, so their vectors stay.
  emu POST /_admin/faults '{"path": "/vectors/", "method": "DELETE", "status": 503}'
  for i in $(seq -w 1 12); do
    api DELETE "/v1/abilities/k-$i"
    [[ $CODE == 20[02] ]] || fail "delete k-$i: $CODE $BODY"
  done
  q=$(ability_json k-01 k.svc 8 101 | jq -c '{service_name, embedding, k: 2}')
  api POST /v1/search "$q"
  assert_eq "$CODE" 200 "$BODY"
  assert_eq "$(jq -c '[.count, ([.results[].ability_id] | sort)]' <<<"$BODY")" '[2,["k-13","k-14"]]' \
    "the two live abilities, found past twelve deleted nearer ones: $BODY"
  jq -e 'all(.results[]; .in_mirror and (.score - (1 - .distance) | fabs) < 1e-9)' <<<"$BODY" >/dev/null ||
    fail "scores: $BODY"
  api POST /v1/search "$(jq -c '.k = 5' <<<"$q")"
  assert_eq "$(jq .count <<<"$BODY")" 2 "fewer live than k: all of them: $BODY"
  api POST /v1/search "$(jq -c '.min_score = 1' <<<"$q")"
  assert_eq "$(jq .count <<<"$BODY")" 0 "nothing live is that close: $BODY"
  api POST /v1/search "$(jq -c '.min_score = 2' <<<"$q")"
  assert_eq "$CODE $(jq -r '.errors[0].pointer' <<<"$BODY")" "422 /min_score" "$BODY"
  emu DELETE /_admin/faults
  teardown
}

# The service's sessions compress the embeddings they write with lz4
# (PG_TOAST_COMPRESSION: half pglz's server CPU, bench/profile.sh); pglz or the
# server's own setting on request. Readers decompress either.
test_embeddings_are_written_with_the_toast_compression_asked_for() {
  setup EMBEDDING_DIM=512
  api POST /v1/abilities "$(ability_json z-1 toast.svc 512 3)"
  assert_eq "$CODE" 201 "$BODY"
  assert_eq "$(psql_q "$DB" -c "select pg_column_compression(embedding) from abilities where ability_id = 'z-1'")" lz4 \
    "the default"
  stop_service
  start_service DATABASE_URL="$DB" EMBEDDING_DIM=512 PG_TOAST_COMPRESSION=pglz
  wait_ready
  api POST /v1/abilities "$(ability_json z-2 toast.svc 512 4)"
  assert_eq "$(psql_q "$DB" -c "select pg_column_compression(embedding) from abilities where ability_id = 'z-2'")" pglz \
    "PG_TOAST_COMPRESSION=pglz"
  api GET '/v1/abilities/z-1?include=embedding'
  assert_eq "$(jq '.embedding | length' <<<"$BODY")" 512 "an lz4 row read back by a pglz session"
  teardown
}

# ?consistency=strong reads this client's writes: the service's changes
# acknowledged before the search are waited for (SYNC_WAIT_MS, or Prefer: wait=N)
# before the vector DB is asked; past the wait the answer says "eventual".
test_a_strong_search_waits_for_earlier_writes() {
  local q t0 ms
  setup SYNC_WAIT_MS=200 SYNC_WAIT_MAX_MS=10000
  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "latency_ms": 1500, "count": 1}'
  api POST /v1/abilities "$(ability_json c-1 strong.svc 8 21)"
  assert_eq "$CODE $(jq -r .sync_state <<<"$BODY")" "202 pending" "a write the vector DB takes 1.5 s to store"
  q=$(ability_json c-1 strong.svc 8 21 | jq -c '{service_name, embedding, k: 1}')
  api POST /v1/search "$q"
  assert_eq "$(jq -c '[.count, .consistency]' <<<"$BODY")" '[0,null]' "an eventual search meanwhile: $BODY"
  t0=$(date +%s%N)
  api POST '/v1/search?consistency=strong' "$q" -H 'Prefer: wait=5'
  ms=$((($(date +%s%N) - t0) / 1000000))
  assert_eq "$CODE $(jq -c '[.consistency, .results[0].ability_id]' <<<"$BODY")" '200 ["strong","c-1"]' \
    "a strong search ($ms ms): $BODY"
  # The write's acknowledged-to-synced latency: the vector DB's 1.5 s, at least.
  api GET /metrics
  grep -q -E '^abilitysync_sync_latency_seconds_count [1-9]' <<<"$BODY" || fail "no sync latency counted"
  awk '/^abilitysync_sync_latency_seconds_sum / { exit !($2 >= 1.4) }' <<<"$BODY" ||
    fail "sync latency sum: $(grep abilitysync_sync_latency_seconds_sum <<<"$BODY")"

  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "hold": true, "count": 1}'
  api POST /v1/abilities "$(ability_json c-2 strong.svc 8 22)"
  assert_eq "$CODE" 202 "a write the vector DB holds"
  t0=$(date +%s%N)
  api POST '/v1/search?consistency=strong' "$q" -H 'Prefer: wait=1'
  ms=$((($(date +%s%N) - t0) / 1000000))
  assert_eq "$CODE $(jq -r .consistency <<<"$BODY")" "200 eventual" "past its wait: $BODY"
  { [ "$ms" -ge 900 ] && [ "$ms" -lt 5000 ]; } || fail "a strong search waited $ms ms with Prefer: wait=1"
  api POST '/v1/search?consistency=sometimes' "$q"
  assert_eq "$CODE $(jq -r '.errors[0].pointer' <<<"$BODY")" "422 /consistency" "$BODY"
  emu DELETE /_admin/faults
  teardown
}

# A refused request names every bad field it has (RFC 9457 errors, a JSON
# pointer each), not only the first; and still changes nothing.
test_a_refusal_names_every_bad_field() {
  local body
  setup API_KEYS=k1 BATCH_MAX=5
  body='{"abilities": [
    {"ability_id": "ok-1", "ability_name": "n", "service_name": "s", "description": "d", "embedding": [1,2,3,4,5,6,7,8]},
    {"ability_id": "bad id", "ability_name": "", "service_name": "s", "description": "d", "embedding": [1,2,3]},
    {"ability_id": "ok-3", "ability_name": "n", "service_name": "s", "description": "d", "embedding": [1,2,3,4,5,6,7,8], "colour": "red"},
    {"ability_name": "n", "service_name": "s", "description": "d", "embedding": [1,2,3,4,5,6,7,"x"]}]}'
  api POST /v1/abilities "$body" -H 'Authorization: Bearer k1'
  assert_eq "$CODE" 422 "$BODY"
  assert_eq "$(jq -c '[.errors[] | .pointer + " " + .code]' <<<"$BODY")" \
    '["/abilities/1/embedding wrong_dimension","/abilities/1/ability_id invalid_ability_id","/abilities/1/ability_name empty_field","/abilities/2/colour unknown_field","/abilities/3/embedding/7 invalid_embedding","/abilities/3/ability_id missing_field"]' \
    "every bad field: $BODY"
  assert_eq "$(jq -r '.code + " " + .error.code' <<<"$BODY")" "wrong_dimension wrong_dimension" "the first one is the answer's code"
  assert_eq "$(pg "select count(*) from abilities")" 0 "nothing written"
  teardown
}

# POST /v1/sync/pause (a vector DB maintenance window): every replica, not
# only the one asked, stops pushing; writes and deletes are still acknowledged
# and kept (202, pending); POST /v1/sync/resume pushes what waited.
test_a_paused_outbox_keeps_writes_and_pushes_them_once_resumed() {
  local one one_pid two t0 ms
  setup SYNC_LEASE=2 SYNC_WAIT_MS=2000
  one=$SVC_URL
  one_pid=$SVC_PID
  api POST /v1/abilities "$(ability_json p-0 pause.svc)"
  assert_eq "$CODE" 201 "before the pause: $BODY"
  start_service DATABASE_URL="$DB" SYNC_LEASE=2 SYNC_WAIT_MS=2000
  two=$SVC_URL
  SVC_URL=$one api POST /v1/sync/pause '{"reason": "vector DB maintenance"}'
  assert_eq "$CODE $(jq -c '[.paused, .pause.reason]' <<<"$BODY")" '200 [true,"vector DB maintenance"]' "$BODY"
  for _ in $(seq 1 150); do
    curl -s "$two/metrics" | grep -q '^abilitysync_outbox_paused 1$' && break
    sleep 0.1
  done
  assert_contains "$(curl -s "$two/metrics")" "abilitysync_outbox_paused 1" "the other replica learned of the pause"
  t0=$(date +%s%N)
  SVC_URL=$two api POST /v1/abilities "$(ability_json p-1 pause.svc)"
  ms=$((($(date +%s%N) - t0) / 1000000))
  assert_eq "$CODE $(jq -r .sync_state <<<"$BODY")" "202 pending" "a write while paused: $BODY"
  [ "$ms" -lt 1500 ] || fail "a paused write waited ${ms} ms for a push that cannot come"
  SVC_URL=$two api DELETE /v1/abilities/p-0
  assert_eq "$CODE $(jq -r .sync_state <<<"$BODY")" "202 pending_delete" "a delete while paused: $BODY"
  sleep 1
  assert_eq "$(emu_count abilities_pause_svc)" 1 "nothing pushed while paused (p-0 still there, p-1 not yet)"
  SVC_URL=$one api GET /v1/sync/status
  assert_eq "$(jq -r .paused.reason <<<"$BODY")" "vector DB maintenance" "the status says so: $BODY"
  SVC_URL=$one api POST /v1/sync/resume
  assert_eq "$CODE $(jq -c '[.paused, .ended.reason]' <<<"$BODY")" '200 [false,"vector DB maintenance"]' "$BODY"
  wait_converged "$DB" 30
  assert_eq "$(emu_count abilities_pause_svc)" 1 "after the resume: p-1 pushed, p-0 deleted"
  emu GET "/tenants/reverse_engineer/blobs/abilities_pause_svc/vectors/$(pg "select vector_id from abilities where ability_id = 'p-1'")"
  assert_eq "$CODE" 200 "p-1's vector"
  stop_service
  SVC_URL=$one SVC_PID=$one_pid
  teardown
}
# bad STATUS CODE WHAT CURL-ARGS...: the request must be refused with that status and code.
# It carries the key k1 unless BAD_KEY says otherwise ("" for none).
bad() {
  local status=$1 code=$2 what=$3 out got_code key=${BAD_KEY-k1}
  shift 3
  if [ -n "$key" ]; then
    answer -H "Authorization: Bearer $key" "$@"
  else
    answer "$@"
  fi
  got_code=$CODE
  out=$BODY
  [ "$got_code" = "$status" ] || fail "$what: expected $status, got $got_code: $out"
  if [ "$code" != - ]; then
    [ "$(jq -r .code <<<"$out" 2>/dev/null)" = "$code" ] || fail "$what: expected code $code: $out"
  fi
  BAD_COUNT=$((BAD_COUNT + 1))
}

# post_bad STATUS CODE WHAT BODY: a POST /v1/abilities with a JSON body.
post_bad() {
  bad "$1" "$2" "$3" -X POST -H 'Content-Type: application/json' --data-binary "$4" "$SVC_URL/v1/abilities"
}

test_forty_bad_requests_change_nothing() {
  local ok base e7 e9 big
  BAD_COUNT=0
  setup API_KEYS=k1,k2 BATCH_MAX=3
  ok=$(ability_json good good.svc)
  api POST /v1/abilities "$ok" -H "Authorization: Bearer k1"
  assert_eq "$CODE" 201
  base='"ability_id":"x","ability_name":"n","service_name":"s","description":"d"'
  e7='[1,2,3,4,5,6,7]'
  e9='[1,2,3,4,5,6,7,8,9]'
  post_bad 422 wrong_dimension "7 numbers" "{$base,\"embedding\":$e7}"
  post_bad 422 wrong_dimension "9 numbers" "{$base,\"embedding\":$e9}"
  post_bad 422 wrong_dimension "no numbers" "{$base,\"embedding\":[]}"
  post_bad 400 malformed_json "NaN" "{$base,\"embedding\":[1,2,3,4,5,6,7,NaN]}"
  post_bad 400 malformed_json "Infinity" "{$base,\"embedding\":[1,2,3,4,5,6,7,Infinity]}"
  post_bad 400 malformed_json "-Infinity" "{$base,\"embedding\":[-Infinity,2,3,4,5,6,7,8]}"
  post_bad 422 invalid_embedding "1e999" "{$base,\"embedding\":[1,2,3,4,5,6,7,1e999]}"
  post_bad 422 invalid_embedding "beyond float32" "{$base,\"embedding\":[1,2,3,4,5,6,7,3.5e38]}"
  post_bad 422 invalid_embedding "beyond numeric" "{$base,\"embedding\":[1,2,3,4,5,6,7,1e-16384]}"
  post_bad 422 invalid_embedding "a string" "{$base,\"embedding\":[1,2,3,\"4\",5,6,7,8]}"
  post_bad 422 invalid_embedding "nested array" "{$base,\"embedding\":[1,2,3,[4],5,6,7,8]}"
  post_bad 422 invalid_embedding "null" "{$base,\"embedding\":[1,2,3,null,5,6,7,8]}"
  post_bad 422 invalid_embedding "a boolean" "{$base,\"embedding\":[1,2,3,true,5,6,7,8]}"
  post_bad 422 invalid_embedding "an object" "{$base,\"embedding\":{\"a\":1}}"
  post_bad 422 missing_field "no embedding" "{$base}"
  post_bad 422 missing_field "no ability_id" "{\"ability_name\":\"n\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4,5,6,7,8]}"
  post_bad 422 missing_field "no ability_name" "{\"ability_id\":\"x\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4,5,6,7,8]}"
  post_bad 422 missing_field "no service_name" "{\"ability_id\":\"x\",\"ability_name\":\"n\",\"description\":\"d\",\"embedding\":[1,2,3,4,5,6,7,8]}"
  post_bad 422 missing_field "no description" "{\"ability_id\":\"x\",\"ability_name\":\"n\",\"service_name\":\"s\",\"embedding\":[1,2,3,4,5,6,7,8]}"
  post_bad 422 wrong_type "ability_id a number" "{\"ability_id\":7,\"ability_name\":\"n\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4,5,6,7,8]}"
  post_bad 422 empty_field "empty ability_name" "{\"ability_id\":\"x\",\"ability_name\":\"\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4,5,6,7,8]}"
  post_bad 422 invalid_ability_id "a space in ability_id" "{\"ability_id\":\"a b\",\"ability_name\":\"n\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4,5,6,7,8]}"
  post_bad 422 too_long "a 300-byte ability_id" "{\"ability_id\":\"$(printf 'a%.0s' $(seq 1 300))\",\"ability_name\":\"n\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4,5,6,7,8]}"
  big=$(head -c 20000 /dev/zero | tr '\0' 'x')
  post_bad 422 too_long "a 20 KB description" "{\"ability_id\":\"x\",\"ability_name\":\"n\",\"service_name\":\"s\",\"description\":\"$big\",\"embedding\":[1,2,3,4,5,6,7,8]}"
  post_bad 422 wrong_type "metadata an array" "{$base,\"embedding\":[1,2,3,4,5,6,7,8],\"metadata\":[]}"
  post_bad 422 wrong_type "dynamic_header_keys a string" "{$base,\"embedding\":[1,2,3,4,5,6,7,8],\"metadata\":{\"dynamic_header_keys\":\"x\"}}"
  post_bad 422 wrong_type "dynamic_header_keys with a number" "{$base,\"embedding\":[1,2,3,4,5,6,7,8],\"metadata\":{\"dynamic_header_keys\":[1]}}"
  post_bad 422 unknown_field "a misspelt field" "{$base,\"embedding\":[1,2,3,4,5,6,7,8],\"embeding\":[]}"
  post_bad 400 malformed_json "a duplicate key" "{$base,\"ability_id\":\"y\",\"embedding\":[1,2,3,4,5,6,7,8]}"
  post_bad 400 malformed_json "truncated JSON" "{$base,\"embedding\":[1,2,3"
  post_bad 422 wrong_type "an array body" "[1,2,3]"
  post_bad 400 malformed_json "an empty body" ""
  post_bad 400 invalid_utf8 "bad UTF-8" "$(printf '{"ability_id":"x","ability_name":"\xff","service_name":"s","description":"d","embedding":[1,2,3,4,5,6,7,8]}')"
  post_bad 422 empty_batch "an empty batch" '{"abilities": []}'
  post_bad 422 batch_too_large "4 abilities, BATCH_MAX 3" "{\"abilities\":[$ok,$ok,$ok,$ok]}"
  post_bad 422 wrong_dimension "one bad ability in a batch" "{\"abilities\":[$ok,{$base,\"embedding\":$e7}]}"
  post_bad 422 duplicate_ability "one ability twice in a batch" "{\"abilities\":[$ok,$ok]}"
  post_bad 422 wrong_type "abilities not an array" '{"abilities": {}}'
  post_bad 422 unknown_field "a field beside abilities" "{\"abilities\":[$ok],\"dry_run\":true}"
  bad 415 unsupported_media_type "text/plain" -X POST -H 'Content-Type: text/plain' --data-binary "$ok" "$SVC_URL/v1/abilities"
  bad 415 unsupported_media_type "no content type" -X POST -H 'Content-Type:' --data-binary "$ok" "$SVC_URL/v1/abilities"
  head -c 20000000 /dev/zero | tr '\0' ' ' >"$SUITE_TMP/20mb.json"
  bad 413 payload_too_large "a 20 MB body" -X POST -H 'Content-Type: application/json' --data-binary "@$SUITE_TMP/20mb.json" "$SVC_URL/v1/abilities"
  bad 404 not_found "an unknown route" "$SVC_URL/v1/nowhere"
  bad 405 method_not_allowed "PUT on the collection" -X PUT "$SVC_URL/v1/abilities"
  bad 405 method_not_allowed "PATCH on an ability" -X PATCH "$SVC_URL/v1/abilities/x"
  BAD_KEY="" bad 401 unauthorized "no key" -X POST -H 'Content-Type: application/json' --data-binary "$ok" "$SVC_URL/v1/abilities"
  BAD_KEY=nope bad 401 unauthorized "a wrong key" -X POST -H 'Content-Type: application/json' --data-binary "$ok" "$SVC_URL/v1/abilities"
  bad 422 wrong_dimension "a search of the wrong dimension" -X POST -H 'Content-Type: application/json' --data-binary '{"service_name":"s","embedding":[1,2]}' "$SVC_URL/v1/search"
  bad 422 invalid_field "k = 0" -X POST -H 'Content-Type: application/json' --data-binary '{"service_name":"s","embedding":[1,2,3,4,5,6,7,8],"k":0}' "$SVC_URL/v1/search"
  bad 422 invalid_field "a search without service_name" -X POST -H 'Content-Type: application/json' --data-binary '{"embedding":[1,2,3,4,5,6,7,8]}' "$SVC_URL/v1/search"
  bad 422 invalid_parameter "limit=0" "$SVC_URL/v1/abilities?limit=0"
  bad 422 invalid_parameter "include=bogus" "$SVC_URL/v1/abilities/good?include=bogus"
  bad 404 not_found "GET an unknown ability" "$SVC_URL/v1/abilities/nobody"
  bad 404 not_found "DELETE an unknown ability" -X DELETE "$SVC_URL/v1/abilities/nobody"
  # Found by fuzzing: a key cut mid-character into the error's field once aborted the service.
  printf '{"abiLity: [0.10, eers.5\xda\x9a\xce\xa2Ues%%t_met.5\xda\x8a\xce\xa2, "d%%er_keys"2e2}}' >"$SUITE_TMP/cut.json"
  bad 400 malformed_json "a long key cut mid-character" -X POST -H 'Content-Type: application/json' --data-binary "@$SUITE_TMP/cut.json" "$SVC_URL/v1/abilities"
  bad 400 bad_path "an id that is not UTF-8" "$SVC_URL/v1/abilities/%ff"
  bad 400 bad_path "DELETE of an id that is not UTF-8" -X DELETE "$SVC_URL/v1/abilities/caf%e9"
  bad 400 bad_query "a service_name that is not UTF-8" "$SVC_URL/v1/abilities?service_name=%c3"
  [ "$BAD_COUNT" -ge 40 ] || fail "only $BAD_COUNT bad requests"
  # Nothing changed anywhere: the one good ability is all there is.
  assert_eq "$(pg "select count(*) from abilities")" 1 "rows"
  assert_eq "$(pg "select count(*) || ' ' || max(generation) from abilitysync.sync_state")" "1 1" "sync state"
  assert_eq "$(pg "select count(*) from abilitysync.vector_ledger")" 1 "ledger"
  emu GET "/tenants/$TENANT/blobs"
  assert_eq "$(jq -c '[.blobs[] | {blob_id, count}]' <<<"$BODY")" '[{"blob_id":"abilities_good_svc","count":1}]' "vector DB"
  teardown
}

test_health_metrics_and_readiness_need_no_key() {
  setup API_KEYS=secret
  api GET /healthz
  assert_eq "$CODE" 200
  api GET /readyz
  assert_eq "$CODE" 200 "$BODY"
  api GET /metrics
  assert_eq "$CODE" 200
  api GET /v1/abilities
  assert_eq "$CODE" 401
  api GET /v1/abilities "" -H "Authorization: Bearer secret"
  assert_eq "$CODE" 200
  teardown
}

# libcurl's and libpq's error texts name hosts, users and databases: a caller
# without a key sees only what is up.
test_readiness_tells_why_only_to_a_caller_with_a_key() {
  local state
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_service DATABASE_URL="$DB" VECTOR_DB_API="http://127.0.0.1:$(free_port)" API_KEYS=secret
  for _ in $(seq 1 100); do
    api GET /readyz "" -H "Authorization: Bearer secret"
    [[ $(jq -r .vector_db <<<"$BODY") == down:* ]] && break
    sleep 0.1
  done
  assert_eq "$CODE" 503 "$BODY"
  assert_contains "$(jq -r .vector_db <<<"$BODY")" "127.0.0.1" "with the key: why it is down"
  api GET /readyz
  assert_eq "$CODE" 503
  state=$(jq -r .vector_db <<<"$BODY")
  assert_eq "$state" down "without a key: the state only ($BODY)"
  assert_not_contains "$BODY" "127.0.0.1" "an unauthenticated answer"
  api GET /readyz "" -H "Authorization: Bearer wrong"
  assert_eq "$(jq -r .vector_db <<<"$BODY")" down "a wrong key is no key"
  stop_service
}

test_request_ids_are_echoed_or_made() {
  local headers id
  setup
  headers=$(curl -s -D - -o /dev/null -H 'X-Request-Id: trace-42' "$SVC_URL/healthz")
  assert_contains "$headers" "X-Request-Id: trace-42"
  headers=$(curl -s -D - -o /dev/null -H 'X-Request-Id: bad id with spaces' "$SVC_URL/healthz")
  assert_not_contains "$headers" "bad id"
  assert_contains "$headers" "X-Request-Id: "
  id=$(sed -n 's/^X-Request-Id: \([^\r]*\).*/\1/p' <<<"$headers")
  assert_contains "$(cat "$SVC_LOG")" "the client's X-Request-Id (18 bytes) is not 1-64 of" "the log says it was replaced"
  assert_contains "$(cat "$SVC_LOG")" "this request is $id"
  teardown
}

# The README's statements that once did not hold (issue 20), one by one.
test_half_a_tls_configuration_is_refused_naming_both() {
  run env TLS_CERT_FILE=/etc/hostname "$ABILITYSYNC" serve
  assert_rc 2 "only the certificate"
  assert_contains "$OUT" "TLS_CERT_FILE and TLS_KEY_FILE go together"
  run env TLS_KEY_FILE=/etc/hostname "$ABILITYSYNC" serve
  assert_rc 2 "only the key"
  assert_contains "$OUT" "only TLS_KEY_FILE is set"
  run env TLS_CERT_FILE=/nonexistent TLS_KEY_FILE=/nonexistent "$ABILITYSYNC" serve
  assert_rc 2 "files that cannot be loaded"
  assert_contains "$OUT" "TLS_CERT_FILE=/nonexistent"
  run env LISTEN=nohost:8080 "$ABILITYSYNC" serve
  assert_rc 2 "a host that is not one"
  run "$ABILITYSYNC" serve --listen bogus
  assert_rc 2 "no port"
}

test_write_concurrency_over_the_pool_is_said_and_capped() {
  setup WRITE_CONCURRENCY=8 PG_POOL_SIZE=3
  assert_contains "$(cat "$SVC_LOG")" "WRITE_CONCURRENCY=8 is more than PG_POOL_SIZE - 1"
  assert_contains "$(cat "$SVC_LOG")" "2 write statements run at once"
  teardown
}

test_a_refusing_vector_db_is_told_at_once_and_an_unmigrated_database_says_migrate() {
  local other
  setup SYNC_WAIT_MS=5000
  emu POST /_admin/faults '{"path": "/vectors", "method": "POST", "status": 400, "body": "{\"detail\": \"dimension mismatch\"}"}'
  api POST /v1/abilities "$(ability_json refused ref.svc)"
  assert_eq "$CODE" 202 "acknowledged: Postgres has it; $BODY"
  assert_eq "$(jq -r '.sync_state' <<<"$BODY")" failed "the answer says the vector write failed"
  assert_contains "$(jq -r '.last_error' <<<"$BODY")" "dimension mismatch"
  assert_eq "$(pg "select state from abilitysync.sync_state where ability_id = 'refused'")" failed
  teardown
  other=$(new_db)
  start_emulator
  start_service DATABASE_URL="$other"
  api POST /v1/abilities "$(ability_json early x)"
  assert_eq "$CODE" 503 "$BODY"
  assert_eq "$(jq -r .error.code <<<"$BODY")" not_migrated
  assert_contains "$(jq -r .error.message <<<"$BODY")" "abilitysync migrate up"
  stop_service
  stop_emulator
}

# The service speaks UTF-8 to Postgres; a LATIN1 database would have stored its
# text converted (the original app then reads "cafÃ©") or refused whole write
# groups for a character LATIN1 lacks. It is not used: writes 503, and
# /readyz says why to a caller with a key.
test_a_database_not_in_utf8_is_not_used_and_readiness_says_why() {
  local url
  url=$(NEW_DB_ENCODING=LATIN1 new_db latin1)
  start_emulator
  start_service DATABASE_URL="$url" API_KEYS=secret
  api POST /v1/abilities "$(ability_json enc-1 enc.svc)" -H "Authorization: Bearer secret"
  assert_eq "$CODE" 503 "$BODY"
  assert_eq "$(jq -r .error.code <<<"$BODY")" postgres_unavailable
  for _ in $(seq 1 50); do # the pool's first attempt
    api GET /readyz "" -H "Authorization: Bearer secret"
    [[ $(jq -r .postgres <<<"$BODY") == *encoding* ]] && break
    sleep 0.1
  done
  assert_eq "$CODE" 503 "$BODY"
  assert_contains "$(jq -r .postgres <<<"$BODY")" "the database's encoding is LATIN1, not UTF8"
  api GET /readyz
  assert_eq "$(jq -r .postgres <<<"$BODY")" unreachable "without a key: the state only ($BODY)"
  assert_eq "$(psql_q "$url" -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'abilitysync'")" 0 "nothing created"
  stop_service
  stop_emulator
}

test_refuses_to_listen_openly_without_keys() {
  run env LISTEN=0.0.0.0:0 "$ABILITYSYNC" serve
  assert_rc 2 "a configuration error"
  assert_contains "$OUT" "LISTEN=0.0.0.0:0 is not loopback and API_KEYS is empty"
  start_emulator
  start_service LISTEN=0.0.0.0:0 ALLOW_UNAUTHENTICATED=true
  stop_service
  stop_emulator
}

test_vector_db_only_mode_acknowledges_only_what_the_vector_db_has() {
  start_emulator
  start_service VDB_MAX_ATTEMPTS=2 VDB_BACKOFF_MS=10
  api POST /v1/abilities "$(ability_json v-1 only.svc)"
  assert_eq "$CODE" 201 "$BODY"
  assert_eq "$(emu_count abilities_only_svc)" 1
  assert_eq "$(jq -r .status <<<"$BODY")" written "without a mirror there is no created or updated"
  api GET /v1/abilities/v-1
  assert_eq "$CODE" 501
  assert_eq "$(jq -r .error.code <<<"$BODY")" needs_postgres
  api GET /v1/sync/status
  assert_eq "$CODE" 501 "the sync status needs Postgres: $BODY"
  emu POST /_admin/faults '{"path": "/vectors", "status": 500}'
  api POST /v1/abilities "$(ability_json v-2 only.svc)"
  assert_eq "$CODE" 503 "nothing acknowledged when the vector DB fails: $BODY"
  assert_eq "$(jq -r .error.code <<<"$BODY")" vector_db_unavailable
  stop_service
  stop_emulator
}

wait_for_state() { # ability_id state [seconds]
  for _ in $(seq 1 $((${3:-15} * 10))); do
    [ "$(pg "select state from abilitysync.sync_state where ability_id = '$1'")" = "$2" ] && return
    sleep 0.1
  done
  fail "$1 never became $2: $(pg "select state, attempts, last_error from abilitysync.sync_state where ability_id = '$1'")"
}

test_a_vector_db_outage_answers_202_and_the_worker_catches_up() {
  setup SYNC_WAIT_MS=300 VDB_MAX_ATTEMPTS=1 SYNC_BACKOFF_MS=100 SYNC_BACKOFF_MAX_MS=200
  emu POST /_admin/faults '{"path": "/vectors", "method": "POST", "status": 503}'
  api POST /v1/abilities "$(ability_json o-1 outage.svc)"
  assert_eq "$CODE" 202 "$BODY"
  assert_eq "$(jq -r .sync_state <<<"$BODY")" pending
  assert_eq "$(pg "select count(*) from abilities")" 1 "acknowledged means in Postgres"
  for _ in $(seq 1 100); do
    curl -s "$SVC_URL/metrics" | grep -q '^abilitysync_backlog_pending{blob="abilities_outage_svc"} 1$' && break
    sleep 0.1
  done
  assert_contains "$(curl -s "$SVC_URL/metrics")" 'abilitysync_backlog_pending{blob="abilities_outage_svc"} 1' \
    "the backlog of the service, while the vector DB is away"
  assert_contains "$(curl -s "$SVC_URL/metrics")" 'abilitysync_backlog_oldest_pending_seconds{blob="abilities_outage_svc"}'
  emu DELETE /_admin/faults
  wait_for_state o-1 synced
  assert_eq "$(emu_count abilities_outage_svc)" 1 "the retry worker pushed it"
  teardown
}

test_rows_that_keep_failing_become_failed_until_retried() {
  setup SYNC_WAIT_MS=100 VDB_MAX_ATTEMPTS=1 SYNC_MAX_ATTEMPTS=2 SYNC_BACKOFF_MS=50 SYNC_BACKOFF_MAX_MS=100 \
    VDB_QUARANTINE_MS=100 # a 500 may have been applied: each attempt is in doubt that long
  emu POST /_admin/faults '{"path": "/vectors", "method": "POST", "status": 500, "body": "{\"detail\": \"disk on fire\"}"}'
  api POST /v1/abilities "$(ability_json f-1 fail.svc)"
  assert_eq "$CODE" 202
  wait_for_state f-1 failed
  api GET /v1/sync/status
  assert_eq "$(jq -r .counts.failed <<<"$BODY")" 1
  assert_contains "$(jq -r '.last_errors[0].last_error' <<<"$BODY")" "disk on fire"
  api GET /metrics
  assert_contains "$BODY" 'abilitysync_outbox_rows{state="failed"} 1'
  emu DELETE /_admin/faults
  run env DATABASE_URL="$DB" "$ABILITYSYNC" sync retry-failed
  assert_rc 0
  assert_contains "$OUT" "1 failed row(s) made pending again"
  wait_for_state f-1 synced
  teardown
}


# POST /v1/sync/retry picks failed changes by service, error text and age
# (a dry run counts them first), and only those are pushed again.
test_sync_retry_picks_failed_changes_by_selector() {
  setup SYNC_WAIT_MS=100 VDB_MAX_ATTEMPTS=1 SYNC_MAX_ATTEMPTS=1 SYNC_BACKOFF_MS=50 SYNC_BACKOFF_MAX_MS=100 \
    VDB_QUARANTINE_MS=100
  emu POST /_admin/faults '{"path": "abilities_hot_svc/vectors", "method": "POST", "status": 400, "body": "{\"detail\": \"disk on fire\"}"}'
  emu POST /_admin/faults '{"path": "abilities_cold_svc/vectors", "method": "POST", "status": 400, "body": "{\"detail\": \"quota exceeded\"}"}'
  api POST /v1/abilities "$(ability_json h-1 hot.svc)"
  api POST /v1/abilities "$(ability_json h-2 hot.svc)"
  api POST /v1/abilities "$(ability_json c-1 cold.svc)"
  wait_for_state h-1 failed
  wait_for_state h-2 failed
  wait_for_state c-1 failed
  emu DELETE /_admin/faults
  api POST /v1/sync/retry '{"service_name": "hot.svc", "dry_run": true}'
  assert_eq "$CODE $(jq -c '[.matched, .retried]' <<<"$BODY")" "200 [2,0]" "a dry run counts: $BODY"
  api POST /v1/sync/retry '{"older_than_s": 3600}'
  assert_eq "$(jq -c '[.matched, .retried]' <<<"$BODY")" "[0,0]" "none failed an hour ago: $BODY"
  api POST /v1/sync/retry '{"error_contains": "disk on fire"}'
  assert_eq "$CODE $(jq -c '[.matched, .retried]' <<<"$BODY")" "200 [2,2]" "the ones the disk failed: $BODY"
  wait_for_state h-1 synced
  wait_for_state h-2 synced
  sleep 0.5
  assert_eq "$(pg "select state from abilitysync.sync_state where ability_id = 'c-1'")" failed "the other stays failed"
  api POST /v1/sync/retry '{"state": "gone"}'
  assert_eq "$CODE $(jq -r '.errors[0].pointer' <<<"$BODY")" "422 /state" "a bad selector: $BODY"
  api POST /v1/sync/retry '{}'
  assert_eq "$(jq -c '[.matched, .retried]' <<<"$BODY")" "[1,1]" "every failed one: $BODY"
  wait_for_state c-1 synced
  teardown
}
# The request travels with its push: the vector DB's log lines and the sync
# state's last_error name it, so a failure can be tied to the call that caused it.
test_a_failed_push_names_its_request() {
  local err
  setup SYNC_WAIT_MS=100 VDB_MAX_ATTEMPTS=1 SYNC_BACKOFF_MS=30000 SYNC_BACKOFF_MAX_MS=30000 VDB_QUARANTINE_MS=100
  emu POST /_admin/faults '{"path": "/vectors", "method": "POST", "status": 400, "body": "{\"detail\": \"bad vector\"}"}'
  api POST /v1/abilities "$(ability_json traced-1 trace.svc)" -H 'X-Request-Id: trace-me-42'
  [[ $CODE == 20[12] ]] || fail "$CODE $BODY"
  for _ in $(seq 1 50); do
    err=$(pg "select coalesce(last_error, '') from abilitysync.sync_state where ability_id = 'traced-1'")
    [ -n "$err" ] && break
    sleep 0.1
  done
  assert_contains "$err" "bad vector"
  assert_contains "$err" "(for=trace-me-42)"
  assert_contains "$(cat "$SVC_LOG")" "for=trace-me-42"
  teardown
}

test_a_vector_id_collision_is_refused_whole() {
  setup
  # Both ids map to vector_id 91458538 (see tests/unit/test_vdbid.c).
  api POST /v1/abilities "$(ability_json collide-8533 same.svc)"
  assert_eq "$CODE" 201
  api POST /v1/abilities "{\"abilities\": [$(ability_json innocent same.svc), $(ability_json collide-12320 same.svc)]}"
  assert_eq "$CODE" 409 "$BODY"
  assert_eq "$(jq -r '.error.code + " " + .error.field' <<<"$BODY")" "vector_id_collision abilities[1].ability_id"
  assert_contains "$(jq -r .error.message <<<"$BODY")" "which ability collide-8533 already uses"
  assert_eq "$(pg "select string_agg(ability_id, ',') from abilities")" collide-8533 "nothing of the batch was written"
  api POST /v1/abilities "$(ability_json collide-12320 other.svc)"
  assert_eq "$CODE" 201 "another service, another blob: no collision"
  teardown
}

test_metrics_count_requests_and_vector_db_calls() {
  setup
  api POST /v1/abilities "$(ability_json m-1 metrics.svc)"
  api POST /v1/abilities "$(ability_json m-1 metrics.svc)"
  api GET /v1/abilities/nobody
  api GET /metrics
  assert_contains "$BODY" 'abilitysync_http_requests_total{route="POST /v1/abilities",status="201",key=""} 1'
  assert_contains "$BODY" 'abilitysync_http_requests_total{route="POST /v1/abilities",status="200",key=""} 1'
  assert_contains "$BODY" 'abilitysync_http_requests_total{route="GET /v1/abilities/{id}",status="404",key=""} 1'
  assert_contains "$BODY" 'abilitysync_http_request_duration_seconds_count{route="POST /v1/abilities"} 2'
  assert_contains "$BODY" 'abilitysync_vdb_replies_total{class="2xx"}'
  assert_contains "$BODY" 'abilitysync_pushes_total{result="pushed"} 1'
  assert_contains "$BODY" 'abilitysync_pg_connections{state="up"}'
  assert_contains "$BODY" 'abilitysync_ready 1'
  teardown
}

test_readiness_follows_the_vector_db() {
  setup
  stop_emulator
  for _ in $(seq 1 100); do
    api GET /readyz
    [ "$CODE" = 503 ] && break
    sleep 0.1
  done
  assert_eq "$CODE" 503 "not ready without the vector DB"
  assert_contains "$(jq -r .vector_db <<<"$BODY")" "down"
  stop_service
}

test_sigterm_finishes_what_is_in_flight() {
  local pids=() i
  setup SYNC_WAIT_MS=5000
  emu POST /_admin/faults '{"path": "/vectors", "method": "POST", "latency_ms": 2000}'
  for i in 1 2 3 4; do
    curl -s -o "$SUITE_TMP/term.$i" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      --data-binary "$(ability_json "t-$i" term.svc 8 "$i")" "$SVC_URL/v1/abilities" >"$SUITE_TMP/term.$i.code" &
    pids+=($!)
  done
  # In flight: written to Postgres, their pushes held up by the vector DB (on a busy machine this takes a while).
  for _ in $(seq 1 100); do
    [ "$(pg "select count(*) from abilitysync.sync_state")" = 4 ] && break
    sleep 0.05
  done
  kill -TERM "$SVC_PID"
  for i in "${pids[@]}"; do wait "$i"; done
  for i in 1 2 3 4; do
    assert_eq "$(cat "$SUITE_TMP/term.$i.code")" 201 "request $i in flight at SIGTERM: $(cat "$SUITE_TMP/term.$i")"
  done
  wait "$SVC_PID" || fail "the service did not exit 0 after SIGTERM"
  assert_contains "$(cat "$SVC_LOG")" "stopped: every request answered, every push recorded"
  assert_eq "$(pg "select count(*) from abilitysync.sync_state where state = 'synced'")" 4
  stop_emulator
}

test_postgres_going_away_gives_fast_503s_and_comes_back() {
  local pgdir="$SUITE_TMP/own-pg" url start
  rm -rf "$pgdir"
  own_pg "$pgdir"
  url=$(tools/pgcluster.sh start "$pgdir")
  DB=$url
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator
  start_service DATABASE_URL="$DB"
  wait_ready
  api POST /v1/abilities "$(ability_json pg-1 pg.svc)"
  assert_eq "$CODE" 201
  tools/pgcluster.sh stop "$pgdir"
  start=$(date +%s%N)
  api POST /v1/abilities "$(ability_json pg-2 pg.svc)"
  assert_eq "$CODE" 503 "$BODY"
  assert_eq "$(jq -r .error.code <<<"$BODY")" postgres_unavailable
  [ $((($(date +%s%N) - start) / 1000000)) -lt 2000 ] || fail "the 503 took more than 2 s"
  tools/pgcluster.sh start "$pgdir" >/dev/null
  for _ in $(seq 1 100); do
    api POST /v1/abilities "$(ability_json pg-2 pg.svc)"
    [ "$CODE" = 201 ] && break
    sleep 0.1
  done
  assert_eq "$CODE" 201 "back without a restart"
  assert_eq "$(psql_q "$DB" -c "select count(*) from abilities")" 2
  teardown
  tools/pgcluster.sh stop "$pgdir"
}

test_https_when_given_a_certificate() {
  openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 -keyout "$SUITE_TMP/key.pem" \
    -out "$SUITE_TMP/cert.pem" 2>/dev/null
  setup TLS_CERT_FILE="$SUITE_TMP/cert.pem" TLS_KEY_FILE="$SUITE_TMP/key.pem"
  assert_contains "$SVC_URL" "https://"
  assert_eq "$(curl -s -k "$SVC_URL/healthz" | jq -r .status)" ok
  assert_eq "$(curl -s -o /dev/null -w '%{http_code}' -k -X POST -H 'Content-Type: application/json' \
    --data-binary "$(ability_json tls-1 tls.svc)" "$SVC_URL/v1/abilities")" 201
  teardown
}

run_suite
