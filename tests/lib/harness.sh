#!/usr/bin/env bash
# harness.sh - sourced by every integration suite (tests/integration/*.sh).
#
# A suite defines functions named test_* and ends with `run_suite`. Each test
# runs in its own subshell with `set -euo pipefail`, its output captured; an
# assertion that fails prints why and ends that test only. The last line a
# suite prints is "# summary: P passed, F failed", which tests/run.sh adds up.
#
# Environment (tests/run.sh sets it; a suite can also be run alone):
#   ABILITYSYNC      the binary under test (default: the ASan + UBSan build)
#   TEST_PG_URL      a Postgres server where we may CREATE DATABASE, any dbname
#   TEST_TMP         scratch directory
# shellcheck disable=SC2317,SC2119,SC2120  # test functions are called indirectly; helpers take optional arguments

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export ROOT
ABILITYSYNC=${ABILITYSYNC:-$ROOT/build/asan/abilitysync}
EMULATOR=${EMULATOR:-$ROOT/build/asan/vdb-emulator}
LOADGEN=${LOADGEN:-$ROOT/build/release/loadgen}
export ABILITYSYNC EMULATOR LOADGEN
# Canary secrets every service gets (start_service); none may show anywhere.
CANARY_PGPW=CANARY-PGPW-allsuites-5d2e
CANARY_VDBKEY=CANARY-VDBKEY-allsuites-8a1b
# Sanitizer reports get exit codes no test expects, so they can never pass as a
# "clean failure".
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:exitcode=86:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=87}
TEST_TMP=${TEST_TMP:-$(mktemp -d /tmp/abilitysync-suite.XXXXXX)}
SUITE=$(basename "$0" .sh)
SUITE_TMP="$TEST_TMP/$SUITE"
mkdir -p "$SUITE_TMP"
ANSWERS="$SUITE_TMP/answers" # what api() received, for the OpenAPI check at the suite's end
mkdir -p "$ANSWERS"

# ---- assertions (each ends the current test when it fails) --------------

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

assert_eq() { # got want what
  [ "$1" = "$2" ] || fail "${3:-value}: expected [$2], got [$1]"
}

assert_ne() { # got unwanted what
  [ "$1" != "$2" ] || fail "${3:-value}: did not expect [$2]"
}

assert_contains() { # haystack needle what
  case "$1" in
    *"$2"*) ;;
    *) fail "${3:-output} lacks [$2]; it was:
$1" ;;
  esac
}

assert_not_contains() { # haystack needle what
  case "$1" in
    *"$2"*) fail "${3:-output} contains [$2]; it was:
$1" ;;
    *) ;;
  esac
}

# Runs a command, saving stdout+stderr in $OUT and the exit status in $RC.
run() {
  set +e
  OUT=$("$@" 2>&1)
  RC=$?
  set -e
}

# Like run, but stdout alone in $OUT (JSON, tables) and stderr in $ERR (logs).
run_split() {
  local errfile
  errfile=$(mktemp "$SUITE_TMP/stderr.XXXXXX")
  set +e
  OUT=$("$@" 2>"$errfile")
  RC=$?
  set -e
  ERR=$(cat "$errfile")
  rm -f "$errfile"
}

assert_rc() { # want [what]
  [ "$RC" = "$1" ] || fail "${2:-exit status}: expected $1, got $RC; output:
$OUT${ERR:+
stderr:
$ERR}"
}

# ---- Postgres -------------------------------------------------------------

psql_q() { # url sql...: one value per line, no decoration
  local url=$1
  shift
  psql -X -q -A -t -v ON_ERROR_STOP=1 "$url" "$@"
}

# Prints the URL of a new, empty database on TEST_PG_URL's server. With
# NEW_DB_ENCODING set (e.g. LATIN1), the database has that encoding (C locale).
new_db() {
  local name="t_${SUITE}_${1:-db}_$RANDOM$RANDOM" with=""
  name=$(echo "$name" | tr -c 'a-zA-Z0-9_\n' '_' | cut -c1-63)
  [ -n "${TEST_PG_URL:-}" ] || fail "TEST_PG_URL is not set (run through tests/run.sh)"
  [ -n "${NEW_DB_ENCODING:-}" ] && with=" ENCODING '$NEW_DB_ENCODING' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
  psql_q "$TEST_PG_URL" -c "CREATE DATABASE \"$name\"$with" >/dev/null
  echo "$name" >>"$TEST_TMP/databases"
  db_url "$name"
}

db_url() { # dbname: TEST_PG_URL with its database replaced
  echo "$TEST_PG_URL" | sed -E "s#^([a-z]+://[^/]*)(/[^?]*)?#\1/$1#"
}

# The schema of a database as pg_dump prints it, without the lines that vary
# between runs and client versions.
schema_dump() {
  pg_dump --schema-only --no-owner --no-privileges "$1" |
    grep -v -E '^(-- Dumped (from|by)|\\(un)?restrict )'
}

# ---- the vector DB emulator ---------------------------------------------

# Starts an emulator on a free port with the given flags; sets EMU_URL and EMU_PID.
# Its log is $SUITE_TMP/emulator.<pid>.log. Stopped by stop_emulator (or at exit).
start_emulator() {
  local portfile
  portfile=$(mktemp "$SUITE_TMP/emu-port.XXXXXX")
  rm -f "$portfile"
  "$EMULATOR" --listen 127.0.0.1:0 --port-file "$portfile" "$@" >"$SUITE_TMP/emulator.log" 2>&1 &
  EMU_PID=$!
  for _ in $(seq 1 100); do
    if [ -s "$portfile" ]; then
      EMU_URL="http://127.0.0.1:$(cat "$portfile")"
      mv "$SUITE_TMP/emulator.log" "$SUITE_TMP/emulator.$EMU_PID.log"
      export EMU_URL EMU_PID
      STARTED+=("$EMU_PID")
      return
    fi
    kill -0 "$EMU_PID" 2>/dev/null || { cat "$SUITE_TMP/emulator.log" >&2; fail "the emulator did not start"; }
    sleep 0.05
  done
  fail "the emulator did not write its port"
}

# Stops the emulator with SIGTERM and fails the test when it does not exit 0
# (a sanitizer report or a leak at exit makes it exit 86/87).
stop_emulator() {
  local rc=0
  [ -n "${EMU_PID:-}" ] || return 0
  kill -TERM "$EMU_PID" 2>/dev/null || true
  wait "$EMU_PID" || rc=$?
  EMU_PID=
  [ "$rc" = 0 ] || fail "the emulator exited with status $rc"
}

# curl against the emulator: emu METHOD PATH [JSON]. Sets BODY and CODE (the
# HTTP status; 000 when the connection failed). Call it directly, not in $(...).
emu() {
  local method=$1 path=$2 data=${3:-} out
  out=$(mktemp "$SUITE_TMP/emu-out.XXXXXX")
  if [ -n "$data" ]; then
    CODE=$(curl -s -o "$out" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json' \
      --data-binary "$data" "$EMU_URL$path" || true)
  else
    CODE=$(curl -s -o "$out" -w '%{http_code}' -X "$method" "$EMU_URL$path" || true)
  fi
  BODY=$(cat "$out")
  rm -f "$out"
  : "$BODY" "$CODE" # read by the caller (not exported: a listing can outgrow the environment)
}

# ---- the fault proxy ---------------------------------------------------------

# start_proxy NAME HOST:PORT: a TCP proxy to HOST:PORT (tests/tools/faultproxy.js)
# whose behaviour proxy_mode changes; sets PROXY_PORT. Stopped at the test's end.
start_proxy() {
  local portfile="$SUITE_TMP/proxy.$1.port"
  rm -f "$portfile"
  echo pass >"$SUITE_TMP/proxy.$1.mode"
  node "$ROOT/tests/tools/faultproxy.js" --target "$2" --port-file "$portfile" \
    --mode-file "$SUITE_TMP/proxy.$1.mode" >"$SUITE_TMP/proxy.$1.log" 2>&1 &
  STARTED+=("$!")
  for _ in $(seq 1 100); do
    [ -s "$portfile" ] && { PROXY_PORT=$(cat "$portfile"); export PROXY_PORT; return; }
    sleep 0.05
  done
  fail "the fault proxy did not start: $(cat "$SUITE_TMP/proxy.$1.log")"
}

# proxy_mode NAME MODE [VALUE]: pass, blackhole, stall, reset, delay MS, drip BYTES, hold-answer TEXT
# (applies within 50 ms).
proxy_mode() {
  local want
  echo "$2 ${3:-}" >"$SUITE_TMP/proxy.$1.mode.new"
  mv "$SUITE_TMP/proxy.$1.mode.new" "$SUITE_TMP/proxy.$1.mode"
  want=$(echo "$2 ${3:-}" | xargs)
  for _ in $(seq 1 100); do
    [ "$(cat "$SUITE_TMP/proxy.$1.mode.applied" 2>/dev/null)" = "$want" ] && return
    sleep 0.02
  done
  fail "the fault proxy did not apply \"$want\""
}

# ---- the service -----------------------------------------------------------

# Starts `abilitysync serve` with the given VAR=value settings (LISTEN defaults to
# a free port, VECTOR_DB_API to the emulator, EMBEDDING_DIM to 8); waits until it
# answers /healthz. Sets SVC_URL and SVC_PID; its log is $SUITE_TMP/service.<pid>.log.
# SVC_WRAP, when set, is a command line the service runs under (valgrind ...); SVC_PID is then its pid.
start_service() {
  local log="$SUITE_TMP/service.starting.$RANDOM.log" args=() a
  # Every service of every suite holds canary secrets: a Postgres password
  # (trust auth never asks for it) and a vector DB key (the emulator asks for
  # none unless told), unless the test sets its own. No answer (api) and no
  # service log (run_suite) may ever show them.
  for a in "$@"; do
    [[ $a =~ ^DATABASE_URL=postgres(ql)?://[^:@/]+@ ]] && a=$(sed -E "s#^(DATABASE_URL=postgres(ql)?://[^:@/]+)@#\1:$CANARY_PGPW@#" <<<"$a")
    args+=("$a")
  done
  # shellcheck disable=SC2086 # SVC_WRAP is words
  env LISTEN=127.0.0.1:0 VECTOR_DB_API="${EMU_URL:-http://127.0.0.1:9}" EMBEDDING_DIM=8 SYNC_INTERVAL_MS=200 \
    VECTOR_DB_API_KEY="$CANARY_VDBKEY" "${args[@]}" ${SVC_WRAP:-} "$ABILITYSYNC" serve >"$log" 2>&1 &
  SVC_PID=$!
  for _ in $(seq 1 200); do
    if grep -q "serving on" "$log" 2>/dev/null; then
      SVC_URL=$(grep -o 'serving on https\?://[^;]*' "$log" | head -n 1 | sed 's/serving on //')
      mv "$log" "$SUITE_TMP/service.$SVC_PID.log"
      SVC_LOG="$SUITE_TMP/service.$SVC_PID.log"
      export SVC_URL SVC_PID SVC_LOG
      STARTED+=("$SVC_PID")
      return
    fi
    kill -0 "$SVC_PID" 2>/dev/null || { cat "$log" >&2; fail "the service did not start"; }
    sleep 0.05
  done
  cat "$log" >&2
  fail "the service did not say where it listens"
}

# setup [VAR=value...]: a migrated database ($DB), an emulator, and a service on
# both (SYNC_WAIT_MS=2000 unless given), ready; teardown stops the service and
# the emulator. Suites with other needs define their own.
setup() {
  DB=$(new_db db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator
  start_service DATABASE_URL="$DB" SYNC_WAIT_MS=2000 "$@"
  wait_ready
}

teardown() {
  stop_service
  stop_emulator
}

# Waits until GET /readyz answers 200 (at most $1 seconds, default 15).
# free_port: a TCP port nothing on this machine listens on (for programs that take no port 0).
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  fail "no free port"
}

wait_ready() {
  for _ in $(seq 1 $((${1:-15} * 10))); do
    [ "$(curl -sk -o /dev/null -w '%{http_code}' "$SVC_URL/readyz")" = 200 ] && return
    sleep 0.1
  done
  fail "the service never became ready: $(curl -sk "$SVC_URL/readyz")"
}

# SIGTERM, then the exit status must be 0 (a sanitizer report or a leak is not).
stop_service() {
  local pid=${1:-$SVC_PID} rc=0
  kill -TERM "$pid" 2>/dev/null || return 0
  wait "$pid" || rc=$?
  [ "$rc" = 0 ] || { tail -n 40 "$SUITE_TMP/service.$pid.log" >&2; fail "the service exited with status $rc"; }
}

# api METHOD PATH [JSON [extra curl args...]]: sets BODY and CODE, like emu.
api() {
  local method=$1 path=$2 data=${3:-}
  shift 3 2>/dev/null || shift $#
  if [ -n "$data" ]; then
    answer -X "$method" -H 'Content-Type: application/json' --data-binary "$data" "$@" "$SVC_URL$path"
  else
    answer -X "$method" "$@" "$SVC_URL$path"
  fi
}

# answer CURL-ARGS...: one request of curl's (api's too), kept for the OpenAPI
# check at the suite's end and checked for secrets; CODE and BODY hold the answer.
answer() {
  local out meta method=GET url="" a prev=""
  for a in "$@"; do
    case $prev in -X) method=$a ;; esac
    case $a in http://* | https://*) url=$a ;; --data* | -d) [ "$method" != GET ] || method=POST ;; esac
    prev=$a
  done
  out=$(mktemp "$ANSWERS/XXXXXXXX")
  meta=$(curl -s -o "$out.body" -w '%{http_code}\t%{content_type}' "$@" || true)
  CODE=${meta%%$'\t'*}
  touch "$out.body"
  printf '%s\t%s\t%s\t%s\n' "$method" "/${url#*://*/}" "$CODE" "${meta#*$'\t'}" >"$out.meta"
  rm -f "$out"
  BODY=$(cat "$out.body")
  if [[ $BODY == *"$CANARY_PGPW"* || $BODY == *"$CANARY_VDBKEY"* ]]; then
    fail "an answer shows a secret: $method $url -> $CODE $BODY"
  fi
  : "$BODY" "$CODE" # read by the caller (not exported: a listing can outgrow the environment)
}

# wait_job ID [SECONDS]: polls GET /v1/jobs/ID (at most SECONDS, default 30)
# until the job is no longer running; BODY and CODE hold the last answer.
wait_job() {
  for _ in $(seq 1 $((${2:-30} * 10))); do
    api GET "/v1/jobs/$1"
    [ "$(jq -r .status <<<"$BODY")" = running ] || return 0
    sleep 0.1
  done
}

# An ability as JSON: ability_json ID [SERVICE] [DIM] [SEED] [DESCRIPTION].
ability_json() {
  awk -v id="$1" -v svc="${2:-api.example.com}" -v dim="${3:-8}" -v seed="${4:-1}" -v desc="${5:-does a thing}" '
    BEGIN {
      srand(seed); e = ""
      for (i = 0; i < dim; i++) e = e (i ? "," : "") sprintf("%.9f", rand() * 2 - 1)
      printf "{\"ability_id\":\"%s\",\"ability_name\":\"n_%s\",\"service_name\":\"%s\",", id, id, svc
      printf "\"description\":\"%s\",\"embedding\":[%s],", desc, e
      printf "\"metadata\":{\"dynamic_header_keys\":[\"%s::cookie\"],\"request_method\":\"GET\"}}", svc
    }'
}

# ---- invariants ------------------------------------------------------------

# Waits (at most $2 seconds) until the outbox of database $1 has nothing left to push.
wait_converged() {
  local n
  for _ in $(seq 1 $((${2:-60} * 10))); do
    n=$(psql_q "$1" -c "select count(*) from abilitysync.sync_state where state not in ('synced', 'deleted')")
    [ "$n" = 0 ] && return
    sleep 0.1
  done
  fail "the outbox did not drain in ${2:-60} s: $(psql_q "$1" -c "select state, count(*), max(last_error)
    from abilitysync.sync_state group by state")"
}

# The vector DB (emulator) and the mirror (database $1) hold the same abilities:
# every live row has exactly one vector, in its blob, whose content_hash
# attribute is the row's; no other vector exists; every ability id listed in
# file $2 (acknowledged writes, "id status" per line) has a live row.
check_stores_agree() {
  local db=$1 acks=${2:-} mirror vdb missing blob
  mirror=$(psql_q "$db" -c "select s.blob_id || ' ' || s.vector_id || ' ' || s.content_hash
    from abilities a join abilitysync.sync_state s using (ability_id)" | sort)
  vdb=""
  for blob in $(psql_q "$db" -c "select distinct blob_id from abilitysync.vector_ledger order by 1"); do
    emu GET "/_admin/tenants/reverse_engineer/blobs/$blob/ids?attribute=content_hash"
    [ "$CODE" = 200 ] || [ "$CODE" = 404 ] || fail "listing $blob: $CODE $BODY"
    [ "$CODE" = 200 ] && vdb+=$(jq -r --arg b "$blob" '.entries[] | "\($b) \(.id) \(.value)"' <<<"$BODY")$'\n'
  done
  vdb=$(sort <<<"${vdb%$'\n'}" | sed '/^$/d')
  if [ "$mirror" != "$vdb" ]; then
    diff <(echo "$mirror") <(echo "$vdb") | head -n 20 >&2
    fail "the mirror (<) and the vector DB (>) differ"
  fi
  if [ -n "$acks" ]; then
    missing=$(comm -23 <(cut -d' ' -f1 "$acks" | sort -u) \
      <(psql_q "$db" -c "select ability_id from abilities order by 1" | sort))
    [ -z "$missing" ] || fail "acknowledged but not in the mirror: $(head -n 5 <<<"$missing")"
  fi
}

# ---- rows and fingerprints (reconcile, restore) ------------------------------

# The SQL of the vector_id abilitysync computes for an ability id (text expression $1).
vector_id_sql() {
  echo "abs(('x' || left(encode(sha256(convert_to($1, 'UTF8')), 'hex'), 8))::bit(32)::int)"
}

# A deterministic embedding of $2 numbers in (-1, 1) for the ability id (text expression $1), as jsonb.
embedding_sql() {
  echo "(select jsonb_agg(round((('x' || substr(md5($1 || '/' || i), 1, 8))::bit(32)::int)::numeric / 2147483648, 9)
    order by i) from generate_series(1, $2) i)"
}

# insert_rows DB SERVICE DIM ID...: rows written straight into public.abilities,
# behind abilitysync's back (as the original app or an operator would): no
# sync state, no ledger entry; the vector_id abilitysync would compute.
insert_rows() {
  local db=$1 svc=$2 dim=$3 values="" id
  shift 3
  for id in "$@"; do values+="${values:+,}('$id')"; done
  psql_q "$db" -c "insert into abilities (ability_id, vector_id, ability_name, service_name, description,
      embedding, dynamic_header_keys, dynamic_headers_required, metadata)
    select id, $(vector_id_sql id), 'n_' || replace(id, '-', '_'), '$svc', 'written directly: ' || id,
      $(embedding_sql id "$dim"), '[]', false, '{}'
    from (values $values) v(id)" >/dev/null
}

# gen_rows DB PREFIX N SERVICES DIM: N rows PREFIX-00001... straight into
# public.abilities, row g in service svc-<g % SERVICES>.example.
gen_rows() {
  psql_q "$1" -c "insert into abilities (ability_id, vector_id, ability_name, service_name, description,
      embedding, dynamic_header_keys, dynamic_headers_required, metadata)
    select id, $(vector_id_sql id), 'n_' || g, 'svc-' || (g % $4) || '.example', 'generated ' || id,
      $(embedding_sql id "$5"), '[]', false, jsonb_build_object('g', g)
    from generate_series(1, $3) g, lateral (select '$2-' || lpad(g::text, 5, '0') as id) x" >/dev/null
}

# blob_of SERVICE: the blob holding a service's vectors.
blob_of() { echo "abilities_$(printf '%s' "$1" | tr -c 'A-Za-z0-9_' '_')"; }

# db_fingerprint DB [TABLE...]: every row of the tables (default: public.abilities
# and every abilitysync table) as text; equal before and after = nothing changed.
db_fingerprint() {
  local db=$1 t
  shift
  [ $# -gt 0 ] || set -- public.abilities abilitysync.sync_state abilitysync.vector_ledger \
    abilitysync.reconcile_runs abilitysync.restore_jobs
  for t in "$@"; do
    echo "== $t"
    psql_q "$db" -c "select x::text from $t x order by 1"
  done
}

# emu_fingerprint: every vector of the emulator's tenant reverse_engineer as
# "blob id content_hash", sorted (a vector stored twice shows twice).
emu_fingerprint() {
  local blob
  emu GET /tenants/reverse_engineer/blobs
  [ "$CODE" = 200 ] || { echo "no tenant ($CODE)"; return 0; }
  for blob in $(jq -r '.blobs[].blob_id' <<<"$BODY"); do
    emu GET "/_admin/tenants/reverse_engineer/blobs/$blob/ids?attribute=content_hash"
    jq -r --arg b "$blob" '.entries[] | "\($b) \(.id) \(.value)"' <<<"$BODY"
  done | sort
}

# emu_writes: how many writing requests (anything but GET and query) the emulator served, by route.
emu_writes() {
  emu GET /_admin/counters
  jq -S -c '.by_route | with_entries(select((.key | startswith("GET ") | not) and (.key | endswith("/query") | not)))' \
    <<<"$BODY"
}

# ---- running a suite ------------------------------------------------------

PASSED=0
FAILED=0
STARTED=() # processes a test started: whatever is left when it ends is killed
OWN_PG=()  # Postgres clusters a test started itself (own_pg DIR): stopped when it ends

# own_pg DIR: the test starts a cluster of its own in DIR (tools/pgcluster.sh);
# call it in the test's shell, before, so that a failing test leaves no server behind.
own_pg() { OWN_PG+=("$1"); }

kill_leftovers() {
  local pid dir
  # A suite may define after_each: its own leftovers (containers...).
  if declare -F after_each >/dev/null; then after_each || true; fi
  for pid in "${STARTED[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
  done
  for dir in "${OWN_PG[@]}"; do
    "$ROOT/tools/pgcluster.sh" kill "$dir" >/dev/null 2>&1 || true
  done
}

run_suite() {
  local fn name start ms rc log
  for fn in $(declare -F | awk '{print $3}' | grep '^test_'); do
    if [ -n "${ONLY:-}" ] && [[ "$fn" != *"$ONLY"* ]]; then continue; fi
    name=${fn#test_}
    log="$SUITE_TMP/$name.log"
    start=$(date +%s%N)
    (
      set -Eeuo pipefail
      trap 'echo "FAIL: unexpected exit status $? at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND" >&2' ERR
      trap kill_leftovers EXIT
      cd "$ROOT"
      "$fn"
    ) >"$log" 2>&1
    rc=$?
    if [ "$rc" = 0 ] && grep -l -e "$CANARY_PGPW" -e "$CANARY_VDBKEY" "$SUITE_TMP"/service.*.log >"$log.leaks" 2>/dev/null; then
      echo "FAIL: a canary secret is in a service log: $(tr '\n' ' ' <"$log.leaks")" >>"$log"
      rc=1
    fi
    ms=$((($(date +%s%N) - start) / 1000000))
    if [ "$rc" = 0 ]; then
      PASSED=$((PASSED + 1))
      printf 'ok     %-58s %4d.%01ds\n' "$SUITE/$name" $((ms / 1000)) $((ms % 1000 / 100))
    else
      FAILED=$((FAILED + 1))
      printf 'FAILED %-58s %4d.%01ds (log: %s)\n' "$SUITE/$name" $((ms / 1000)) $((ms % 1000 / 100)) "$log"
      tail -n 30 "$log" | sed 's/^/    | /'
    fi
  done
  check_answers
  echo "# summary: $PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}

# Every answer the suite's tests received through api() must be one the
# OpenAPI document describes (tests/tools/validate-answers.js): one more test.
check_answers() {
  local log="$SUITE_TMP/answers_match_the_openapi_document.log"
  [ -n "$(find "$ANSWERS" -name '*.meta' -print -quit)" ] || return 0
  if node "$ROOT/tests/tools/validate-answers.js" "$ANSWERS" >"$log" 2>&1; then
    PASSED=$((PASSED + 1))
    printf 'ok     %-58s %s\n' "$SUITE/answers_match_the_openapi_document" "$(tail -n 1 "$log")"
  else
    FAILED=$((FAILED + 1))
    printf 'FAILED %-58s (log: %s)\n' "$SUITE/answers_match_the_openapi_document" "$log"
    tail -n 30 "$log" | sed 's/^/    | /'
  fi
}
