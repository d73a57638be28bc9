#!/usr/bin/env bash
# vdb-emulator from the outside, with curl: every endpoint, its strictness, the
# duplicate-id modes, fault injection, counters, auth, body limits, a full-size
# batch and float32 round trips. Every test stops the emulator with SIGTERM and
# wants exit 0, so leaks and sanitizer reports fail the test that caused them.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

# ---- helpers --------------------------------------------------------------

# emu_file METHOD PATH FILE: like emu, with the body read from a file (big bodies).
emu_file() {
  local out
  out=$(mktemp "$SUITE_TMP/emu-out.XXXXXX")
  CODE=$(curl -s -o "$out" -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' \
    --data-binary "@$3" "$EMU_URL$2" || true)
  BODY=$(cat "$out")
  rm -f "$out"
}

# emu_h HEADER METHOD PATH [JSON]: like emu, with one extra request header.
emu_h() {
  local header=$1 method=$2 path=$3 data=${4:-} out
  out=$(mktemp "$SUITE_TMP/emu-out.XXXXXX")
  if [ -n "$data" ]; then
    CODE=$(curl -s -o "$out" -w '%{http_code}' -X "$method" -H "$header" -H 'Content-Type: application/json' \
      --data-binary "$data" "$EMU_URL$path" || true)
  else
    CODE=$(curl -s -o "$out" -w '%{http_code}' -X "$method" -H "$header" "$EMU_URL$path" || true)
  fi
  BODY=$(cat "$out")
  rm -f "$out"
}

# expect CODE [BODY]: the last reply's status, and its body exactly.
expect() {
  assert_eq "$CODE" "$1" "status (body: $BODY)"
  [ $# -lt 2 ] || assert_eq "$BODY" "$2" "body"
}

# Tenant t with blob b of the given dimension.
make_blob() {
  emu POST /tenants '{"tenant_id":"t"}'
  expect 201
  emu POST /tenants/t/blobs "{\"blob_id\":\"b\",\"blob_type\":\"dense\",\"dimension\":${1:-3}}"
  expect 201
}

V=/tenants/t/blobs/b/vectors
IDS=/_admin/tenants/t/blobs/b/ids

stored_ids() {
  emu GET "$IDS"
  expect 200
  jq -c .ids <<<"$BODY"
}

counter() { # jq path into /_admin/counters
  emu GET /_admin/counters
  jq -r "$1" <<<"$BODY"
}

ms_now() { echo $(($(date +%s%N) / 1000000)); }

# curl's own exit status for one request (52: empty reply, 56: connection reset).
curl_rc() {
  local rc=0
  curl -s -o /dev/null "$@" || rc=$?
  echo "$rc"
}

# make_batch FILE N DIM: ids 0..N-1 and N random vectors with 17-digit floats.
# shellcheck disable=SC2016  # JavaScript, not shell, in single quotes
make_batch() {
  node -e '
    const [file, n, dim] = [process.argv[1], +process.argv[2], +process.argv[3]];
    const vecs = [];
    for (let i = 0; i < n; i++) {
      const v = [];
      for (let j = 0; j < dim; j++) v.push((Math.random() * 2 - 1) / 3);
      vecs.push("[" + v.join(",") + "]");
    }
    const ids = Array.from({length: n}, (_, i) => i);
    require("fs").writeFileSync(file, `{"ids":[${ids.join(",")}],"vectors":[${vecs.join(",")}]}`);
  ' "$1" "$2" "$3"
}

# same_float32 SENT_JSON_ARRAY GOT_JSON_ARRAY: equal element by element once rounded to float32.
# shellcheck disable=SC2016  # JavaScript, not shell, in single quotes
same_float32() {
  node -e '
    const fs = require("fs");
    const sent = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    const got = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
    if (sent.length !== got.length) { console.log(`length ${got.length}, sent ${sent.length}`); process.exit(1); }
    for (let i = 0; i < sent.length; i++) {
      if (Math.fround(got[i]) !== Math.fround(sent[i])) {
        console.log(`[${i}] sent ${sent[i]} (float32 ${Math.fround(sent[i])}), got ${got[i]}`);
        process.exit(1);
      }
    }
  ' "$1" "$2"
}

# ---- basics -----------------------------------------------------------------

test_health_unknown_routes_and_wrong_methods() {
  start_emulator
  emu GET /health
  expect 200 '{"status":"ok"}'
  emu GET /nope
  expect 404 '{"detail":"Not Found"}'
  emu GET /tenants/t/blobs/b/vectors/1/nope
  expect 404 '{"detail":"Not Found"}'
  emu PATCH /tenants
  expect 405
  emu GET /tenants/t/blobs/b/query
  expect 405
  assert_contains "$(cat "$SUITE_TMP/emulator.$EMU_PID.log")" "listening on 127.0.0.1:${EMU_URL##*:}, duplicate ids: overwrite"
  stop_emulator
}

test_tenants_create_list_delete() {
  start_emulator
  emu POST /tenants '{"tenant_id":"acme.prod-1","max_vectors":1000}'
  expect 201 '{"tenant_id":"acme.prod-1","max_vectors":1000}'
  emu POST /tenants '{"tenant_id":"plain"}'
  expect 201 '{"tenant_id":"plain","max_vectors":null}'
  emu POST /tenants '{"tenant_id":"plain"}'
  expect 409 '{"detail":"Tenant '"'plain'"' already exists"}'
  emu GET /tenants
  expect 200 '{"tenants":[{"tenant_id":"acme.prod-1","blobs":0,"vectors":0},{"tenant_id":"plain","blobs":0,"vectors":0}]}'
  emu DELETE /tenants/plain
  expect 400
  assert_contains "$BODY" "confirm=true"
  emu DELETE '/tenants/plain?confirm=false'
  expect 400
  emu DELETE '/tenants/plain?confirm=true'
  expect 200 '{"deleted":"plain"}'
  emu DELETE '/tenants/plain?confirm=true'
  expect 404
  emu GET /tenants
  expect 200 '{"tenants":[{"tenant_id":"acme.prod-1","blobs":0,"vectors":0}]}'
  stop_emulator
}

test_tenant_bodies_are_checked() {
  start_emulator
  emu POST /tenants '{"tenant_id":"a/b"}'
  expect 400
  assert_contains "$BODY" "tenant_id"
  emu POST /tenants "{\"tenant_id\":\"$(printf 'x%.0s' $(seq 1 129))\"}"
  expect 400
  emu POST /tenants '{"max_vectors":5}'
  expect 400 '{"detail":"tenant_id is required"}'
  emu POST /tenants '{"tenant_id":"t","max_vectors":0}'
  expect 400
  assert_contains "$BODY" "max_vectors"
  emu POST /tenants '{"tenant_id":"t",'
  expect 400
  assert_contains "$BODY" "malformed JSON"
  emu POST /tenants '["t"]'
  expect 400
  emu GET /tenants
  expect 200 '{"tenants":[]}'
  stop_emulator
}

test_exists_status_by_flag_and_by_config() {
  start_emulator --exists-status 200
  make_blob 3
  emu POST /tenants '{"tenant_id":"t"}'
  expect 200
  emu POST /tenants/t/blobs '{"blob_id":"b","blob_type":"dense","dimension":3}'
  expect 200
  assert_contains "$BODY" "already exists"
  emu POST /_admin/config '{"exists_status":422}'
  expect 200
  assert_contains "$BODY" '"exists_status":422'
  emu POST /tenants '{"tenant_id":"t"}'
  expect 422
  stop_emulator
}

test_blobs_create_list_delete() {
  start_emulator
  emu POST /tenants/nobody/blobs '{"blob_id":"b","blob_type":"dense","dimension":3}'
  expect 404
  emu POST /tenants '{"tenant_id":"t"}'
  emu POST /tenants/t/blobs '{"blob_id":"abilities_api_github_com","blob_type":"dense","dimension":3072}'
  expect 201 '{"blob_id":"abilities_api_github_com","blob_type":"dense","dimension":3072}'
  emu POST /tenants/t/blobs '{"blob_id":"g","blob_type":"kge","dimension":128}'
  expect 201
  emu POST /tenants/t/blobs '{"blob_id":"g","blob_type":"kge","dimension":128}'
  expect 409
  emu POST /tenants/t/blobs '{"blob_id":"x","blob_type":"sparse","dimension":3}'
  expect 400
  assert_contains "$BODY" "blob_type"
  emu POST /tenants/t/blobs '{"blob_id":"x","blob_type":"dense","dimension":0}'
  expect 400
  assert_contains "$BODY" "dimension"
  emu POST /tenants/t/blobs '{"blob_id":"x","blob_type":"dense","dimension":65537}'
  expect 400
  emu POST /tenants/t/blobs '{"blob_id":"x","blob_type":"dense"}'
  expect 400 '{"detail":"dimension is required"}'
  emu GET /tenants/t/blobs
  expect 200 '{"blobs":[{"blob_id":"abilities_api_github_com","blob_type":"dense","dimension":3072,"count":0},{"blob_id":"g","blob_type":"kge","dimension":128,"count":0}]}'
  emu GET /tenants/nobody/blobs
  expect 404
  emu DELETE /tenants/t/blobs/g
  expect 400
  assert_contains "$BODY" "confirm=true"
  emu DELETE '/tenants/t/blobs/g?confirm=true'
  expect 200 '{"deleted":"g"}'
  emu DELETE '/tenants/t/blobs/g?confirm=true'
  expect 404
  emu GET /tenants
  expect 200 '{"tenants":[{"tenant_id":"t","blobs":1,"vectors":0}]}'
  stop_emulator
}

# ---- vectors ------------------------------------------------------------------

test_vectors_add_get_update_delete() {
  start_emulator
  make_blob 3
  emu POST "$V" '{"vectors":[[1,0,0],[0,0.5,-2.25]],"ids":[10,20],"attributes":[{"name":"a","n":[1,{"x":null}]},null]}'
  expect 200 '{"ids":[10,20],"count":2}'
  emu GET "$V/10"
  expect 200 '{"id":10,"attributes":{"name":"a","n":[1,{"x":null}]},"vector":[1,0,0]}'
  emu GET "$V/20"
  expect 200 '{"id":20,"attributes":{},"vector":[0,0.5,-2.25]}'
  emu PUT "$V/20/attributes" '{"attributes":{"desc":"new"}}'
  expect 200 '{"id":20,"attributes":{"desc":"new"}}'
  emu PUT "$V/20/attributes" '{"attributes":[1]}'
  expect 400
  emu PUT "$V/99/attributes" '{"attributes":{}}'
  expect 404
  emu GET "$V/20"
  expect 200 '{"id":20,"attributes":{"desc":"new"},"vector":[0,0.5,-2.25]}'
  emu DELETE "$V/20"
  expect 200 '{"deleted":true,"id":20}'
  emu GET "$V/20"
  expect 404 '{"detail":"Vector not found: 20"}'
  emu DELETE "$V/20"
  expect 404
  emu GET "$V/abc"
  expect 400
  emu GET "$V/-1"
  expect 400
  emu GET "$V/9223372036854775808"
  expect 400
  emu GET "$V/9223372036854775807"
  expect 404
  emu GET /tenants/t/blobs
  expect 200 '{"blobs":[{"blob_id":"b","blob_type":"dense","dimension":3,"count":1}]}'
  stop_emulator
}

test_server_assigns_ids_above_the_largest_seen() {
  start_emulator
  make_blob 2
  emu POST "$V" '{"vectors":[[1,2],[3,4]]}'
  expect 200 '{"ids":[0,1],"count":2}'
  emu POST "$V" '{"vectors":[[1,2]],"ids":[41]}'
  expect 200
  emu POST "$V" '{"vectors":[[1,2],[5,6]]}'
  expect 200 '{"ids":[42,43],"count":2}'
  emu POST "$V" '{"vectors":[]}'
  expect 200 '{"ids":[],"count":0}'
  stop_emulator
}

test_vector_requests_are_strict_and_atomic() {
  start_emulator
  emu POST /tenants '{"tenant_id":"t","max_vectors":3}'
  emu POST /tenants/t/blobs '{"blob_id":"b","blob_type":"dense","dimension":3}'
  emu POST "$V" '{"vectors":[[1,2,3],[1,2,3],[1,2,3],[1,2]],"ids":[1,2,3,4]}'
  expect 400 "{\"detail\":\"vectors[3] has 2 dimensions, blob 'b' has 3\"}"
  emu POST "$V" '{"vectors":[[1,2,3],[1,2,3,4]]}'
  expect 400 "{\"detail\":\"vectors[1] has 4 dimensions, blob 'b' has 3\"}"
  emu POST "$V" '{"vectors":[[1,"2",3]]}'
  expect 400
  assert_contains "$BODY" 'vectors[0][1]'
  emu POST "$V" '{"vectors":[[1,2,1e39]]}'
  expect 400
  assert_contains "$BODY" 'vectors[0][2]'
  emu POST "$V" '{"vectors":[[1,2,NaN]]}'
  expect 400
  emu POST "$V" '{"vectors":[[1,2,3]],'
  expect 400
  assert_contains "$BODY" "malformed JSON"
  emu POST "$V" '{"vectors":[[1,2,3]]} x'
  expect 400
  emu POST "$V" '{"ids":[1]}'
  expect 400 '{"detail":"vectors is required"}'
  emu POST "$V" '{"vectors":[1,2,3]}'
  expect 400
  emu POST "$V" '{"vectors":{"a":1}}'
  expect 400
  emu POST "$V" '{"vectors":[[1,2,3]],"vectors":[[1,2,3]]}'
  expect 400
  emu POST "$V" '{"vectors":[[1,2,3],[4,5,6]],"ids":[1]}'
  expect 400 '{"detail":"ids has 1 entries, vectors has 2"}'
  emu POST "$V" '{"vectors":[[1,2,3]],"ids":[-1]}'
  expect 400
  assert_contains "$BODY" 'ids[0]'
  emu POST "$V" '{"vectors":[[1,2,3]],"ids":[1.5]}'
  expect 400
  emu POST "$V" '{"vectors":[[1,2,3]],"ids":[9223372036854775808]}'
  expect 400
  emu POST "$V" '{"vectors":[[1,2,3]],"attributes":[{}, {}]}'
  expect 400
  emu POST "$V" '{"vectors":[[1,2,3],[1,2,3]],"attributes":[{}, "x"]}'
  expect 400
  assert_contains "$BODY" 'attributes[1]'
  emu POST "$V" '{"vectors":[[1,2,3],[1,2,3],[1,2,3],[1,2,3]]}'
  expect 400
  assert_contains "$BODY" "at most 3 vectors"
  emu POST /tenants/t/blobs/nope/vectors '{"vectors":[[1,2,3]]}'
  expect 404
  emu POST /tenants/nope/blobs/b/vectors '{"vectors":[[1,2,3]]}'
  expect 404
  # Nothing of any refused request was stored.
  assert_eq "$(stored_ids)" "[]" "stored ids"
  emu POST "$V" '{"vectors":[[1,2,3],[4,5,6],[7,8,9]],"ids":[1,2,3]}'
  expect 200
  assert_eq "$(stored_ids)" "[1,2,3]" "stored ids"
  stop_emulator
}

test_duplicate_ids_overwrite_is_the_default() {
  start_emulator
  make_blob 3
  emu POST "$V" '{"vectors":[[1,0,0]],"ids":[1],"attributes":[{"v":1}]}'
  emu POST "$V" '{"vectors":[[0,1,0]],"ids":[1]}'
  expect 200 '{"ids":[1],"count":1}'
  assert_eq "$(stored_ids)" "[1]" "stored ids"
  emu GET "$V/1"
  expect 200 '{"id":1,"attributes":{},"vector":[0,1,0]}'
  stop_emulator
}

test_duplicate_ids_reject_by_flag() {
  start_emulator --duplicate-ids reject
  make_blob 3
  emu POST "$V" '{"vectors":[[1,0,0]],"ids":[1]}'
  expect 200
  emu POST "$V" '{"vectors":[[0,1,0],[0,0,1]],"ids":[2,1]}'
  expect 409 '{"detail":"Vector id 1 already exists"}'
  assert_eq "$(stored_ids)" "[1]" "stored ids (nothing of the refused batch)"
  emu GET "$V/1"
  expect 200 '{"id":1,"attributes":{},"vector":[1,0,0]}'
  stop_emulator
}

test_duplicate_ids_duplicate_by_flag() {
  start_emulator --duplicate-ids duplicate
  make_blob 3
  emu POST "$V" '{"vectors":[[1,0,0]],"ids":[1]}'
  emu POST "$V" '{"vectors":[[0,1,0],[0,0,1]],"ids":[1,2]}'
  expect 200
  assert_eq "$(stored_ids)" "[1,1,2]" "stored ids"
  emu GET "$V/1"
  expect 200
  emu DELETE "$V/1"
  expect 200
  assert_eq "$(stored_ids)" "[2]" "stored ids after deleting id 1"
  stop_emulator
}

test_duplicate_ids_mode_by_config() {
  start_emulator
  make_blob 3
  emu POST /_admin/config '{"duplicate_ids":"reject"}'
  expect 200
  assert_contains "$BODY" '"duplicate_ids":"reject"'
  emu POST "$V" '{"vectors":[[1,0,0]],"ids":[1]}'
  emu POST "$V" '{"vectors":[[1,0,0]],"ids":[1]}'
  expect 409
  emu POST /_admin/config '{"duplicate_ids":"duplicate"}'
  emu POST "$V" '{"vectors":[[1,0,0]],"ids":[1]}'
  expect 200
  assert_eq "$(stored_ids)" "[1,1]" "stored ids"
  emu POST /_admin/config '{"duplicate_ids":"sometimes"}'
  expect 400
  emu POST /_admin/config '{"get_vector":false,"duplicate_ids":"bogus"}'
  expect 400
  emu GET /_admin/config
  assert_eq "$(jq -c '[.duplicate_ids, .get_vector]' <<<"$BODY")" '["duplicate",true]' "config unchanged by a refused update"
  stop_emulator
}

test_get_vector_and_query_attributes_switches() {
  start_emulator --no-get-vector --no-query-attributes
  make_blob 2
  emu POST "$V" '{"vectors":[[1,0]],"ids":[1],"attributes":[{"a":1}]}'
  emu GET "$V/1"
  expect 200 '{"id":1,"attributes":{"a":1}}'
  emu POST /tenants/t/blobs/b/query '{"query":[1,0],"k":1}'
  expect 200 '{"ids":[1],"distances":[0],"count":1}'
  emu POST /_admin/config '{"get_vector":true,"query_attributes":true}'
  expect 200
  emu GET "$V/1"
  expect 200 '{"id":1,"attributes":{"a":1},"vector":[1,0]}'
  emu POST /tenants/t/blobs/b/query '{"query":[1,0],"k":1}'
  expect 200 '{"ids":[1],"distances":[0],"attributes":[{"a":1}],"count":1}'
  stop_emulator
}

test_query_orders_by_cosine_distance_then_id() {
  start_emulator
  make_blob 3
  emu POST "$V" '{"vectors":[[0,1,0],[2,0,0],[1,1,0],[-1,0,0],[0,0,1],[0,0,0]],"ids":[5,4,3,2,1,6],"attributes":[{"n":5},{"n":4},null,{},{},{}]}'
  expect 200
  emu POST /tenants/t/blobs/b/query '{"query":[1,0,0],"k":10}'
  expect 200
  assert_eq "$(jq -c .ids <<<"$BODY")" "[4,3,1,5,6,2]" "ids"
  assert_eq "$(jq -c '[.distances[] | . * 1000 | round]' <<<"$BODY")" "[0,293,1000,1000,1000,2000]" "distances x 1000"
  assert_eq "$(jq -c '.attributes[0:2]' <<<"$BODY")" '[{"n":4},{}]' "attributes"
  emu POST /tenants/t/blobs/b/query '{"query":[1,0,0],"k":2}'
  expect 200
  assert_eq "$(jq -c '[.ids, .count]' <<<"$BODY")" "[[4,3],2]" "top 2"
  emu POST /tenants/t/blobs/b/query '{"query":[1,0,0],"k":0}'
  expect 400
  assert_contains "$BODY" "k must be"
  emu POST /tenants/t/blobs/b/query '{"query":[1,0,0],"k":1001}'
  expect 400
  emu POST /tenants/t/blobs/b/query '{"query":[1,0],"k":1}'
  expect 400 "{\"detail\":\"query has 2 dimensions, blob 'b' has 3\"}"
  emu POST /tenants/t/blobs/b/query '{"query":[1,0,true],"k":1}'
  expect 400
  assert_contains "$BODY" "query[2]"
  emu POST /tenants/t/blobs/nope/query '{"query":[1,0,0],"k":1}'
  expect 404
  stop_emulator
}

# ---- admin ------------------------------------------------------------------

test_admin_ids_list_and_clear() {
  start_emulator
  make_blob 2
  emu POST "$V" '{"vectors":[[1,0],[1,0],[1,0]],"ids":[30,7,12]}'
  emu GET "$IDS"
  expect 200 '{"ids":[7,12,30],"count":3}'
  emu DELETE "$IDS"
  expect 200 '{"cleared":3}'
  emu GET "$IDS"
  expect 200 '{"ids":[],"count":0}'
  emu GET /_admin/tenants/t/blobs/nope/ids
  expect 404
  emu POST "$V" '{"vectors":[[1,0]]}'
  expect 200 '{"ids":[31],"count":1}'
  stop_emulator
}

test_admin_counters() {
  start_emulator
  make_blob 2
  emu POST "$V" '{"vectors":[[1,0],[0,1]]}'
  emu POST "$V" '{"vectors":[[1,0,0]]}'
  emu GET "$V/0"
  emu GET "$V/5"
  emu POST /_admin/faults '{"path":"/health","status":503,"count":1}'
  emu GET /health
  emu GET /_admin/counters
  expect 200
  assert_eq "$(jq -c '.requests' <<<"$BODY")" 7 "requests (admin ones are not counted)"
  assert_eq "$(jq -c '.by_route["POST /tenants/{t}/blobs/{b}/vectors"]' <<<"$BODY")" 2 "vectors route"
  assert_eq "$(jq -c '.by_route["GET /tenants/{t}/blobs/{b}/vectors/{id}"]' <<<"$BODY")" 2 "get route"
  assert_eq "$(jq -c '.by_status' <<<"$BODY")" '{"200":2,"201":2,"400":1,"404":1,"503":1}' "by status"
  assert_eq "$(jq -c '.faults' <<<"$BODY")" '{"injected":1,"resets":0,"delayed":0}' "faults"
  assert_eq "$(jq -c '[.vectors_received, .vectors_stored]' <<<"$BODY")" '[2,2]' "vectors"
  [ "$(jq '.bytes_received' <<<"$BODY")" -gt 100 ] || fail "bytes_received: $BODY"
  stop_emulator
}

test_admin_reset() {
  start_emulator
  make_blob 2
  emu POST /_admin/faults '{"path":"/nothing-matches","status":500}'
  emu POST /_admin/reset
  expect 200
  emu GET /tenants
  expect 200 '{"tenants":[]}'
  emu GET /_admin/faults
  expect 200 '{"faults":[]}'
  assert_eq "$(counter .requests)" 1 "requests since the reset"
  stop_emulator
}

test_admin_answers_loopback_peers_only() {
  local ip port
  ip=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+\.' | grep -v '^127\.' | head -n 1 || true)
  [ -n "$ip" ] || fail "this test needs a non-loopback IPv4 address"
  start_emulator --listen 0.0.0.0:0
  port=${EMU_URL##*:}
  emu GET /_admin/counters
  expect 200
  CODE=$(curl -s -o /dev/null -w '%{http_code}' "http://$ip:$port/_admin/counters")
  assert_eq "$CODE" 403 "admin from $ip"
  CODE=$(curl -s -o /dev/null -w '%{http_code}' "http://$ip:$port/tenants")
  assert_eq "$CODE" 200 "the API from $ip"
  stop_emulator
  start_emulator --listen 0.0.0.0:0 --admin-open
  CODE=$(curl -s -o /dev/null -w '%{http_code}' "http://$ip:${EMU_URL##*:}/_admin/counters")
  assert_eq "$CODE" 200 "admin from $ip with --admin-open"
  stop_emulator
}

# ---- faults -------------------------------------------------------------------

test_fault_status_for_the_next_n_then_normal() {
  start_emulator
  emu POST /_admin/faults '{"path":"/tenants","status":503,"count":2}'
  expect 201 '{"id":1}'
  emu GET /health
  expect 200
  emu GET /tenants
  expect 503 '{"detail":"injected fault"}'
  emu POST /tenants '{"tenant_id":"t"}'
  expect 503
  emu POST /tenants '{"tenant_id":"t"}'
  expect 201
  emu POST /_admin/faults '{"status":429,"body":"{\"detail\":\"slow down\"}","count":1}'
  expect 201 '{"id":2}'
  emu GET /tenants
  expect 429 '{"detail":"slow down"}'
  emu GET /tenants
  expect 200
  stop_emulator
}

test_fault_reset_closes_without_an_answer() {
  local rc
  start_emulator
  emu POST /_admin/faults '{"path":"/health","reset":true,"count":1}'
  expect 201
  rc=$(curl_rc "$EMU_URL/health")
  case "$rc" in
    52 | 56) ;;
    *) fail "curl exit status $rc, expected 52 or 56" ;;
  esac
  emu GET /health
  expect 200
  assert_eq "$(counter .faults.resets)" 1 "resets"
  stop_emulator
}

test_fault_latency_delays_without_blocking_the_loop() {
  local start elapsed fast slow
  start_emulator
  emu POST /_admin/faults '{"path":"/tenants","latency_ms":600,"count":1}'
  expect 201
  start=$(ms_now)
  emu GET /tenants
  elapsed=$(($(ms_now) - start))
  expect 200 '{"tenants":[]}'
  [ "$elapsed" -ge 600 ] || fail "answered after $elapsed ms, wanted >= 600"
  # While one request waits, others are served at once.
  emu POST /_admin/faults '{"path":"/tenants","latency_ms":1500,"count":1}'
  curl -s -o /dev/null "$EMU_URL/tenants" &
  slow=$!
  sleep 0.2
  start=$(ms_now)
  emu GET /health
  fast=$(($(ms_now) - start))
  expect 200
  [ "$fast" -lt 700 ] || fail "/health took $fast ms while another request was delayed"
  wait "$slow"
  assert_eq "$(counter .faults.delayed)" 2 "delayed"
  stop_emulator
}

test_fault_latency_then_status_and_a_client_that_gives_up() {
  local late
  start_emulator
  emu POST /_admin/faults '{"path":"/tenants","latency_ms":700,"status":500,"count":1}'
  # The client gives up first; the server must cope when the timer fires.
  curl -s -o /dev/null --max-time 0.2 "$EMU_URL/tenants" || true
  sleep 1
  emu GET /tenants
  expect 200
  # Shutting down while a request waits: it gets a 503 and nothing leaks.
  emu POST /_admin/faults '{"path":"/tenants","latency_ms":60000}'
  curl -s -o "$SUITE_TMP/late.out" -w '%{http_code}' "$EMU_URL/tenants" >"$SUITE_TMP/late.code" &
  late=$!
  sleep 0.3
  stop_emulator
  wait "$late"
  assert_eq "$(cat "$SUITE_TMP/late.code")" 503 "delayed request at shutdown"
}

test_fault_fraction_zero_never_fires() {
  start_emulator
  emu POST /_admin/faults '{"status":500,"fraction":0}'
  expect 201
  for _ in $(seq 1 20); do
    emu GET /health
    expect 200
  done
  assert_eq "$(counter .faults.injected)" 0 "injected"
  stop_emulator
}

test_fault_path_and_method_matching() {
  start_emulator
  make_blob 2
  emu POST /_admin/faults '{"path":"/blobs/b","method":"delete","status":500}'
  emu GET /tenants/t/blobs
  expect 200
  emu POST "$V" '{"vectors":[[1,0]],"ids":[1]}'
  expect 200
  emu DELETE "$V/1"
  expect 500
  emu DELETE '/tenants/t/blobs/b?confirm=true'
  expect 500
  emu GET "$V/1"
  expect 200
  emu DELETE /_admin/faults
  expect 200
  emu DELETE "$V/1"
  expect 200
  stop_emulator
}

test_fault_rules_are_bounded_and_never_hit_admin() {
  start_emulator
  for _ in $(seq 1 64); do
    emu POST /_admin/faults '{"status":500}'
    expect 201
  done
  emu POST /_admin/faults '{"status":500}'
  expect 400
  assert_contains "$BODY" "64"
  emu POST /_admin/faults '{"statuss":500}'
  expect 400
  emu GET /_admin/counters
  expect 200
  emu GET /health
  expect 500
  emu DELETE /_admin/faults
  expect 200 '{"cleared":64,"released":0}'
  emu GET /health
  expect 200
  stop_emulator
}

# ---- auth and limits ------------------------------------------------------------

test_auth_bearer() {
  start_emulator --api-key s3cret
  emu GET /tenants
  expect 401 '{"detail":"Not authenticated"}'
  emu_h 'Authorization: Bearer wrong' GET /tenants
  expect 401
  emu_h 'X-API-Key: s3cret' GET /tenants
  expect 401
  emu_h 'Authorization: Bearer s3cret' GET /tenants
  expect 200
  emu GET /health
  expect 200
  emu GET /_admin/counters
  expect 200
  stop_emulator
}

test_auth_x_api_key_and_by_config() {
  start_emulator --api-key k1 --auth-header x-api-key
  emu_h 'Authorization: Bearer k1' GET /tenants
  expect 401
  emu_h 'X-API-Key: k1' GET /tenants
  expect 200
  emu POST /_admin/config '{"api_key":null}'
  expect 200
  assert_contains "$BODY" '"api_key":null'
  emu GET /tenants
  expect 200
  emu POST /_admin/config '{"api_key":"k2","auth_header":"authorization"}'
  assert_contains "$BODY" '"api_key":"(set)"'
  emu GET /tenants
  expect 401
  emu_h 'Authorization: Bearer k2' GET /tenants
  expect 200
  stop_emulator
}

test_body_over_max_body_is_413() {
  start_emulator --max-body 1000
  head -c 5000 /dev/zero | tr '\0' ' ' >"$SUITE_TMP/big.json"
  emu_file POST /tenants "$SUITE_TMP/big.json"
  expect 413
  emu POST /tenants '{"tenant_id":"t"}'
  expect 201
  stop_emulator
}

test_bad_flags_exit_2_naming_the_flag() {
  run "$EMULATOR" --duplicate-ids sometimes
  assert_rc 2
  assert_contains "$OUT" "--duplicate-ids"
  run "$EMULATOR" --bogus
  assert_rc 2
  assert_contains "$OUT" "--bogus"
  run "$EMULATOR" --listen nowhere
  assert_rc 2
  assert_contains "$OUT" "--listen"
  run "$EMULATOR" --exists-status 99
  assert_rc 2
  run "$EMULATOR" --max-body
  assert_rc 2
  assert_contains "$OUT" "--max-body"
  run "$EMULATOR" --help
  assert_rc 0
  assert_contains "$OUT" "--duplicate-ids"
}

test_sigint_exits_0() {
  local rc=0
  start_emulator
  kill -INT "$EMU_PID"
  wait "$EMU_PID" || rc=$?
  EMU_PID=
  assert_eq "$rc" 0 "exit status after SIGINT"
}

# ---- size and precision ------------------------------------------------------------

test_a_500_by_3072_batch_round_trips_at_float32() {
  local body="$SUITE_TMP/batch.json"
  start_emulator
  make_blob 3072
  make_batch "$body" 500 3072
  emu_file POST "$V" "$body"
  expect 200
  assert_eq "$(jq .count <<<"$BODY")" 500 "count"
  emu GET "$IDS"
  assert_eq "$(jq .count <<<"$BODY")" 500 "stored ids"
  emu GET "$V/137"
  expect 200
  jq -c .vector <<<"$BODY" >"$SUITE_TMP/got.json"
  node -e 'const b = JSON.parse(require("fs").readFileSync(process.argv[1])); console.log(JSON.stringify(b.vectors[137]))' \
    "$body" >"$SUITE_TMP/sent.json"
  same_float32 "$SUITE_TMP/sent.json" "$SUITE_TMP/got.json" || fail "vector 137 did not round-trip at float32"
  # The vector itself is its own nearest neighbour.
  jq -c '{query: ., k: 3}' "$SUITE_TMP/sent.json" >"$SUITE_TMP/query.json"
  emu_file POST /tenants/t/blobs/b/query "$SUITE_TMP/query.json"
  expect 200
  assert_eq "$(jq .ids[0] <<<"$BODY")" 137 "nearest id"
  jq -e '.distances[0] < 1e-6 and .distances[1] > 1e-6' <<<"$BODY" >/dev/null || fail "distances: $(jq -c .distances <<<"$BODY")"
  stop_emulator
}

test_edge_floats_round_trip_at_float32() {
  local sent='[0.1234567890123456789,-3.4028234663852886e38,1.1754943508222875e-38,1e-45,0.1,-0,123456789.123,7e-39]'
  start_emulator
  make_blob 8
  emu POST "$V" "{\"vectors\":[$sent],\"ids\":[1]}"
  expect 200
  emu GET "$V/1"
  expect 200
  echo "$sent" >"$SUITE_TMP/sent.json"
  jq -c .vector <<<"$BODY" >"$SUITE_TMP/got.json"
  same_float32 "$SUITE_TMP/sent.json" "$SUITE_TMP/got.json" || fail "edge values did not round-trip: $BODY"
  stop_emulator
}

run_suite
