#!/usr/bin/env bash
# Who may do what: scoped API keys over every route, keys rotated by SIGHUP
# from a file (plain or sha256), limits per key, /metrics behind a key, and
# key names (never keys) in the logs. The real binary over real sockets.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

KEYS='reader:read:kr-7f3a,writer:write:kw-91cc,boss:admin:ka-0d2e,kall-55b1'

pg() { psql_q "$DB" -c "$1"; }


as() { # KEY METHOD PATH [BODY]: one request with that key ("-": none)
  local key=$1
  shift
  if [ "$key" = - ]; then
    api "$@"
  else
    api "$1" "$2" "${3:-}" -H "Authorization: Bearer $key"
  fi
}

# Every route of the route table, one request each that succeeds for a key with the scope.
# METHOD PATH BODY SCOPE (open: anyone).
route_requests() {
  local ok emb='[1,2,3,4,5,6,7,8]'
  ok=$(ability_json "m-\$KEY" scoped.svc)
  cat <<EOF
POST|/v1/abilities|$ok|write
GET|/v1/abilities||read
GET|/v1/abilities/m-kall-55b1||read
DELETE|/v1/abilities/d-\$KEY||write
PUT|/v1/services/scoped.svc/abilities?dry_run=true|{"abilities": [$ok]}|write
POST|/v1/search|{"service_name": "scoped.svc", "embedding": $emb}|read
GET|/v1/sync/status||read
POST|/v1/sync/retry|{"dry_run": true}|admin
POST|/v1/sync/pause|{"reason": "matrix"}|admin
POST|/v1/sync/resume||admin
GET|/v1/reconcile/last||read
POST|/v1/reconcile|{"dry_run": true}|admin
POST|/v1/restore|{}|admin
GET|/v1/jobs||read
GET|/v1/jobs/1||read
POST|/v1/jobs/restore-1/cancel||admin
GET|/v1/audit||admin
GET|/v1/openapi.json||open
GET|/healthz||open
GET|/readyz||open
GET|/metrics||open
EOF
}

test_every_route_answers_each_scope_as_documented() {
  local method path body scope key name want matrix="$SUITE_TMP/matrix" n=0 routes
  setup API_KEYS="$KEYS" LOG_LEVEL=debug
  routes=$(grep -c '^	{EVHTTP_REQ_' src/api.c)
  assert_eq "$(route_requests | wc -l)" "$routes" "a request for every route of src/api.c's table"
  for key in kw-91cc kall-55b1; do as kall-55b1 POST /v1/abilities "$(ability_json "d-$key" scoped.svc)"; done
  as kall-55b1 POST /v1/abilities "$(ability_json m-kall-55b1 scoped.svc)"
  printf '%-8s %-34s %-6s %-6s %-6s %-6s %-6s\n' method route none read write admin all >"$matrix"
  while IFS='|' read -r method path body scope; do
    local row
    row=$(printf '%-8s %-34s' "$method" "$(sed -E 's#/(m|d)-[^/]*$#/{id}#; s#/services/[^/]*/#/services/{service}/#; s#\?.*##' <<<"$path")")
    for key in - kr-7f3a kw-91cc ka-0d2e kall-55b1; do
      case $key in -) name=none ;; kr-7f3a) name="read" ;; kw-91cc) name="write" ;; ka-0d2e) name="admin" ;; *) name=all ;; esac
      if [ "$scope" = open ] || [ "$name" = all ] || [ "$name" = "$scope" ]; then
        want=allowed
      elif [ "$name" = none ]; then
        want=401
      else
        want=403
      fi
      as "$key" "$method" "${path//\$KEY/$key}" "${body//\$KEY/$key}"
      case $want in
        allowed) [[ $CODE != 401 && $CODE != 403 && $CODE != 000 ]] || fail "$method $path as $name: $CODE $BODY" ;;
        401) assert_eq "$CODE $(jq -r .error.code <<<"$BODY")" "401 unauthorized" "$method $path without a key" ;;
        403)
          assert_eq "$CODE $(jq -r .error.code <<<"$BODY")" "403 forbidden" "$method $path as $name"
          assert_contains "$(jq -r .error.message <<<"$BODY")" "lacks the $scope scope" "the 403 names the scope"
          ;;
      esac
      row+=$(printf ' %-6s' "$CODE")
      n=$((n + 1))
    done
    echo "$row" >>"$matrix"
  done < <(route_requests)
  [ "$n" -ge 60 ] || fail "only $n requests"
  assert_contains "$(cat "$SVC_LOG")" "key=writer POST /v1/abilities -> 201" "the key's name in the request's log line"
  assert_not_contains "$(cat "$SVC_LOG")" "kw-91cc" "a key in the service's log"
  { echo 'one request per route, by the scope of the key sent (all: a bare key):'; cat "$matrix"; } >"$TEST_TMP/security.matrix"
  cat "$matrix"
  teardown
}

test_keys_rotate_on_sighup_without_a_restart() {
  local file="$SUITE_TMP/keys" hashed
  printf '# the ingest job\ningest:write:old-key-1\nops:read:ops-key\n' >"$file"
  setup API_KEYS_FILE="$file"
  as old-key-1 POST /v1/abilities "$(ability_json r-1 rot.svc)"
  assert_eq "$CODE" 201 "the file's key works: $BODY"
  hashed=$(printf '%s' new-key-2 | sha256sum | cut -d' ' -f1)
  printf 'ingest:write:sha256:%s\nops:read:ops-key\n' "$hashed" >"$file"
  kill -HUP "$SVC_PID"
  for _ in $(seq 1 50); do grep -q 're-read API_KEYS_FILE' "$SVC_LOG" && break; sleep 0.1; done
  as old-key-1 POST /v1/abilities "$(ability_json r-2 rot.svc)"
  assert_eq "$CODE" 401 "the rotated-out key: $BODY"
  as new-key-2 POST /v1/abilities "$(ability_json r-2 rot.svc)"
  assert_eq "$CODE" 201 "the new key, given as its sha256: $BODY"
  # A broken file changes nothing: the keys stay, the log names the line.
  printf 'ingest:write:sha256:%s\nops:raed:ops-key\n' "$hashed" >"$file"
  kill -HUP "$SVC_PID"
  for _ in $(seq 1 50); do grep -q 'the keys stay as they were' "$SVC_LOG" && break; sleep 0.1; done
  assert_contains "$(cat "$SVC_LOG")" "$file line 2 (ops): the scopes are" "the log names the file and line"
  as new-key-2 GET /v1/sync/status
  assert_eq "$CODE" 403 "the old keys still apply (ingest has write only)"
  as ops-key GET /v1/sync/status
  assert_eq "$CODE" 200 "$BODY"
  kill -0 "$SVC_PID" || fail "SIGHUP stopped the service"
  assert_not_contains "$(cat "$SVC_LOG")" "new-key-2" "a key in the log"
  assert_not_contains "$(cat "$SVC_LOG")" "ops-key" "a key in the log"
  teardown
}

test_a_key_over_its_rate_gets_429_and_the_others_do_not() {
  local codes="" t0 ms body=""
  setup API_KEYS="$KEYS" RATE_LIMIT_RPS=1 RATE_LIMIT_BURST=3
  t0=$(date +%s%N)
  for _ in 1 2 3 4 5; do
    as kr-7f3a GET /v1/sync/status
    codes+="$CODE "
    [ "$CODE" = 429 ] && body=$BODY
  done
  ms=$((($(date +%s%N) - t0) / 1000000))
  # A token comes back every second: within one, the fifth is refused too;
  # on a machine slow enough to take longer, it may have earned one.
  if [ "$ms" -lt 1000 ]; then
    assert_eq "$codes" "200 200 200 429 429 " "a burst of 3, then 429 (5 requests in $ms ms)"
  else
    assert_eq "${codes:0:16}" "200 200 200 429 " "a burst of 3, then 429 (5 requests in $ms ms)"
  fi
  assert_eq "$(jq -r .error.code <<<"$body")" rate_limited
  assert_contains "$(jq -r .error.message <<<"$body")" "reader: over RATE_LIMIT_RPS=1"
  assert_contains "$(curl -s -D - -o /dev/null -H 'Authorization: Bearer kr-7f3a' "$SVC_URL/v1/sync/status")" \
    "Retry-After: 1" "a 429 says when to try again"
  as ka-0d2e GET /v1/sync/status
  assert_eq "$CODE" 403 "another key has its own bucket (and no read scope)"
  as kall-55b1 GET /v1/sync/status
  assert_eq "$CODE" 200 "another key is not limited by the first"
  api GET /healthz
  assert_eq "$CODE" 200 "probes are never limited"
  sleep 1.1
  as kr-7f3a GET /v1/sync/status
  assert_eq "$CODE" 200 "tokens come back at RATE_LIMIT_RPS"
  teardown
}

test_metrics_can_require_a_read_key() {
  setup API_KEYS="$KEYS" METRICS_AUTH=true
  api GET /metrics
  assert_eq "$CODE" 401 "without a key"
  as kw-91cc GET /metrics
  assert_eq "$CODE" 403 "a write-only key"
  as kr-7f3a GET /metrics
  assert_eq "$CODE" 200
  assert_contains "$BODY" "abilitysync_ready"
  assert_contains "$BODY" 'abilitysync_http_requests_total{route="GET /metrics",status="403",key="writer"} 1' \
    "requests by route, status and key name"
  assert_contains "$BODY" 'abilitysync_http_requests_total{route="GET /metrics",status="401",key=""} 1' \
    "requests without a key"
  assert_not_contains "$BODY" "kw-91cc" "a key in the metrics"
  api GET /healthz
  assert_eq "$CODE" 200 "liveness stays open"
  teardown
}

test_bad_key_entries_refuse_to_start_naming_the_entry() {
  run env LISTEN=127.0.0.1:0 API_KEYS='ok:read:Secret-1,bad:rw:Secret-2' "$ABILITYSYNC" serve
  assert_rc 2 "a bad entry is a usage error"
  assert_contains "$OUT" "API_KEYS entry 2 (bad): the scopes are read, write and admin"
  assert_not_contains "$OUT" "Secret-" "the error quotes a key"
  run env LISTEN=127.0.0.1:0 API_KEYS_FILE=/nonexistent/keys "$ABILITYSYNC" serve
  assert_rc 2
  assert_contains "$OUT" "API_KEYS_FILE /nonexistent/keys: No such file or directory"
}

test_admin_actions_are_audited_by_key_name_and_kept_for_the_retention() {
  local first
  setup API_KEYS="$KEYS" AUDIT_RETENTION_DAYS=30
  pg "insert into abilitysync.audit_log (at, action, status, request_id) values (now() - interval '31 days', 'old', 200, 'r0')"
  api POST /v1/restore '{"service_name": "audit.svc"}' -H 'Authorization: Bearer ka-0d2e' -H 'X-Request-Id: audit-1'
  assert_eq "$CODE" 202 "$BODY"
  as kr-7f3a POST /v1/restore '{}'
  assert_eq "$CODE" 403
  for _ in $(seq 1 50); do
    as ka-0d2e GET /v1/audit
    [ "$(jq '.entries | length' <<<"$BODY")" -ge 2 ] && break
    sleep 0.1
  done
  assert_eq "$(jq -c '[.entries[] | [.key, .action, .status]]' <<<"$BODY")" \
    '[["reader","POST /v1/restore",403],["boss","POST /v1/restore",202]]' "newest first, refusals too"
  assert_eq "$(jq -c '.entries[1] | [.params, .request_id, (.host | length > 0), (.at | test("^20..-..-..T"))]' <<<"$BODY")" \
    '[{"service_name":"audit.svc"},"audit-1",true,true]' "what was asked, the request id, the replica, when"
  assert_eq "$(pg "select count(*) from abilitysync.audit_log where action = 'old'")" 0 "an entry past AUDIT_RETENTION_DAYS"
  as ka-0d2e GET '/v1/audit?limit=1'
  first=$(jq -r '.entries[0].key' <<<"$BODY")
  assert_eq "$first" reader
  as ka-0d2e GET "/v1/audit?limit=1&before=$(jq -r .next_before <<<"$BODY")"
  assert_eq "$(jq -r '.entries[0].key + " " + (.next_before | tostring)' <<<"$BODY")" "boss null" "the next page"
  as kr-7f3a GET /v1/audit
  assert_eq "$CODE" 403 "the trail is for admin keys"
  as ka-0d2e GET '/v1/audit?before=x'
  assert_eq "$CODE $(jq -r .error.field <<<"$BODY")" "422 before"
  assert_not_contains "$(pg "select string_agg(coalesce(key_name, '') || coalesce(params::text, ''), ' ') from abilitysync.audit_log")" \
    "ka-0d2e" "a key in the trail"
  teardown
}

# Canary secrets in every secret setting; scenarios that put libpq's and
# libcurl's errors into logs (Postgres unreachable, the vector DB failing and
# gone), every command that prints configuration, jobs, the audit trail: no
# canary may show in any log, answer, or row the service wrote.
test_no_secret_leaves_the_process() {
  local out="$SUITE_TMP/seen" keys="$SUITE_TMP/canary-keys" url bad_url c n=0
  local canaries=(CANARY-PGPW-71c2 CANARY-SSLPW-9e04 CANARY-VDBKEY-3b8d CANARY-APIKEY-5a1f CANARY-FILEKEY-c7d3)
  openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 -keyout "$SUITE_TMP/key.pem" \
    -out "$SUITE_TMP/cert.pem" 2>/dev/null
  printf 'viewer:read:CANARY-FILEKEY-c7d3\n' >"$keys"
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  url=$(sed -E 's#://([^:@/]+)@#://\1:CANARY-PGPW-71c2@#' <<<"$DB")'?sslpassword=CANARY-SSLPW-9e04&application_name=canary'
  bad_url=$(sed -E 's#@([^:/]+):[0-9]+/#@\1:9/#' <<<"$url")
  local secrets=(DATABASE_URL="$url" VECTOR_DB_API_KEY=CANARY-VDBKEY-3b8d API_KEYS=ops:read+write+admin:CANARY-APIKEY-5a1f
    API_KEYS_FILE="$keys" TLS_CERT_FILE="$SUITE_TMP/cert.pem" TLS_KEY_FILE="$SUITE_TMP/key.pem" LOG_LEVEL=debug)
  : >"$out"
  say() { printf '%s %s\n' "$CODE" "$BODY" >>"$out"; }
  ops() { api "$1" "$2" "${3:-}" -k -H 'Authorization: Bearer CANARY-APIKEY-5a1f'; say; }
  start_emulator
  start_service "${secrets[@]}" SYNC_WAIT_MS=500 VDB_MAX_ATTEMPTS=1
  wait_ready
  ops POST /v1/abilities "$(ability_json c-1 canary.svc)"
  ops POST /v1/abilities "{\"abilities\": [$(ability_json c-2 canary.svc), $(ability_json c-3 canary.svc)]}"
  ops POST /v1/abilities '{"ability_id": '
  api GET /v1/abilities "" -k -H 'Authorization: Bearer wrong'; say
  api POST /v1/abilities "$(ability_json c-4 canary.svc)" -k -H 'Authorization: Bearer CANARY-FILEKEY-c7d3'; say
  api GET /readyz "" -k; say
  ops GET /readyz
  ops GET /metrics
  ops GET /v1/sync/status
  emu POST /_admin/faults '{"method": "POST", "path": "/vectors", "status": 500}'
  ops POST /v1/abilities "$(ability_json c-5 canary.svc 8 2)"
  ops POST /v1/restore '{}'
  sleep 1
  ops GET "/v1/jobs/$(jq -r '.job_id // 1' <<<"$BODY")"
  ops GET /v1/audit
  kill -HUP "$SVC_PID"
  stop_emulator
  ops POST /v1/abilities "$(ability_json c-6 canary.svc)"
  sleep 1.5
  ops GET /readyz
  ops GET /v1/sync/status
  stop_service
  # Postgres unreachable: libpq's errors in the log and the answers.
  start_service "${secrets[@]}" DATABASE_URL="$bad_url" VECTOR_DB_API=http://127.0.0.1:9
  ops POST /v1/abilities "$(ability_json c-7 canary.svc)"
  ops GET /readyz
  stop_service
  # Every command that prints configuration or talks to both stores.
  for c in "config" "serve --help" "migrate status" "reconcile" "restore" "sync" "probe"; do
    # shellcheck disable=SC2086 # c is words
    env "${secrets[@]}" VECTOR_DB_API=http://127.0.0.1:9 VDB_TIMEOUT_MS=500 DB_WAIT=0 timeout -k 2 8 "$ABILITYSYNC" $c \
      >>"$out" 2>&1 || true
  done
  env "${secrets[@]}" DATABASE_URL="$bad_url" "$ABILITYSYNC" migrate status >>"$out" 2>&1 || true
  pg_dump --data-only "$DB" >>"$out"
  cat "$SUITE_TMP"/service.*.log >>"$out"
  for c in "${canaries[@]}" $(grep -v -- '-----' "$SUITE_TMP/key.pem"); do
    if grep -q -F -- "$c" "$out"; then
      grep -n -F -- "$c" "$out" | head -n 3 >&2
      fail "a secret left the process: ${c:0:20}..."
    fi
    n=$((n + 1))
  done
  [ "$(wc -l <"$out")" -gt 100 ] || fail "the scenarios printed only $(wc -l <"$out") lines"
  assert_contains "$(cat "$out")" "Connection refused" "libpq's and libcurl's errors were in the output"
  assert_contains "$(cat "$out")" "key=ops" "the key's name was"
  echo "no secret in $(wc -l <"$out") lines of logs, answers, command output and rows ($n secrets looked for)"
}

# TLS both ways: the service speaks TLS 1.2 at least and a plain request to its
# port fails cleanly; the vector DB client trusts VECTOR_DB_CA_FILE and refuses
# a server that CA did not sign (openssl s_server stands in for a TLS vector DB).
test_tls_both_ways() {
  local dir="$SUITE_TMP/tls" port svc=()
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 1 \
    -keyout "$dir/vdb-key.pem" -out "$dir/vdb.pem" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=other -days 1 -keyout "$dir/other-key.pem" \
    -out "$dir/other.pem" 2>/dev/null
  echo '{"status": "ok"}' >"$dir/health"
  port=$(free_port)
  (cd "$dir" && exec openssl s_server -accept "127.0.0.1:$port" -cert vdb.pem -key vdb-key.pem -WWW -quiet) \
    >/dev/null 2>&1 &
  STARTED+=("$!")
  for _ in $(seq 1 50); do curl -s --cacert "$dir/vdb.pem" "https://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  svc=(VECTOR_DB_API="https://127.0.0.1:$port" TLS_CERT_FILE="$dir/vdb.pem" TLS_KEY_FILE="$dir/vdb-key.pem")
  start_service "${svc[@]}" VECTOR_DB_CA_FILE="$dir/other.pem"
  for _ in $(seq 1 50); do api GET /readyz "" -k; [[ $(jq -r .vector_db <<<"$BODY") == down:* ]] && break; sleep 0.1; done
  assert_eq "$CODE" 503 "a vector DB whose certificate the CA did not sign: $BODY"
  assert_contains "$(jq -r .vector_db <<<"$BODY")" "certificate" "the refusal says why"
  stop_service
  start_service "${svc[@]}" VECTOR_DB_CA_FILE="$dir/vdb.pem"
  wait_ready
  assert_eq "$(curl -sk "$SVC_URL/readyz" | jq -r .vector_db)" up "the CA that signed it"
  run openssl s_client -connect "${SVC_URL#https://}" -tls1_1 -cipher 'DEFAULT@SECLEVEL=0' </dev/null
  assert_ne "$RC" 0 "a TLS 1.1 handshake"
  assert_contains "$OUT" "alert protocol version"
  run openssl s_client -connect "${SVC_URL#https://}" -tls1_2 </dev/null
  assert_contains "$OUT" "Protocol  : TLSv1.2"
  run curl -s -m 5 "http://${SVC_URL#https://}/healthz"
  assert_ne "$RC" 0 "plain HTTP to the TLS port"
  [ "$RC" != 28 ] || fail "plain HTTP to the TLS port hung until curl's time-out"
  assert_eq "$(curl -sk "$SVC_URL/healthz" | jq -r .status)" ok "still serving"
  stop_service
}

run_suite
rc=$?
[ ! -f "$TEST_TMP/security.matrix" ] || sed 's/^/# /' "$TEST_TMP/security.matrix"
exit "$rc"
