#!/usr/bin/env bash
# Bounded answers when a dependency hangs or a client is hostile. The faults
# here do not fail fast: a TCP proxy (tests/tools/faultproxy.js) between the
# service and Postgres, or the vector DB, stops forwarding without a reset (a
# dead load balancer, a partition), a session holds a lock, Postgres refuses to
# write, clients trickle headers and bodies or send huge ones. Every request
# must still be answered in bounded time, with the defaults; the bounds are
# asserted loosely (behaviour, not latency figures).
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

pg() { psql_q "$DB" -c "$1"; }

# secs_of CMD...: runs CMD (an api call), sets SECS to how long it took, in seconds with decimals.
secs_of() {
  local t0 t1
  t0=$(date +%s%N)
  "$@"
  t1=$(date +%s%N)
  SECS=$(awk -v n=$((t1 - t0)) 'BEGIN {printf "%.2f", n / 1e9}')
}

le() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a <= b)}'; }

# A database reached through a proxy named pg; the service on it, the emulator direct.
setup_pg_proxy() {
  local port
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  port=$(sed -E 's#^[a-z]+://[^@]*@[^:/]+:([0-9]+)/.*#\1#' <<<"$DB")
  start_proxy pg "127.0.0.1:$port"
  PROXIED_DB=$(sed -E "s#^([a-z]+://[^@]*@[^:/]+):[0-9]+/#\1:$PROXY_PORT/#" <<<"$DB")
  start_emulator
  start_service DATABASE_URL="$PROXIED_DB" "$@"
  wait_ready
}

test_postgres_that_stops_answering_gives_503_in_bounded_time_and_recovers() {
  local i acks="$SUITE_TMP/acks"
  setup_pg_proxy SYNC_WAIT_MS=500 VDB_QUARANTINE_MS=3000
  : >"$acks"
  for i in 1 2 3; do
    api POST /v1/abilities "$(ability_json "before-$i" pg.hang)"
    [[ $CODE == 20[012] ]] && echo "before-$i $CODE" >>"$acks"
  done
  proxy_mode pg blackhole
  secs_of api POST /v1/abilities "$(ability_json during pg.hang)"
  assert_eq "$CODE" 503 "a write while Postgres hangs: $BODY"
  le "$SECS" 15 || fail "the write was answered after $SECS s (bound: 15 s)"
  local write_s=$SECS read_s ready_s
  assert_eq "$(jq -r .error.code <<<"$BODY")" postgres_unavailable
  assert_contains "$(curl -s -D - -o /dev/null "$SVC_URL/v1/abilities")" "Retry-After" "a 503's headers"
  secs_of api GET /v1/abilities/before-1
  assert_eq "$CODE" 503 "a read while Postgres hangs: $BODY"
  le "$SECS" 15 || fail "the read was answered after $SECS s"
  read_s=$SECS
  secs_of api GET /readyz
  assert_eq "$CODE" 503 "readiness: $BODY"
  le "$SECS" 5 || fail "/readyz took $SECS s"
  ready_s=$SECS
  secs_of api GET /healthz
  assert_eq "$CODE" 200 "liveness does not depend on Postgres"
  le "$SECS" 1 || fail "/healthz took $SECS s"
  echo "Postgres hanging: a write 503 in $write_s s, a read 503 in $read_s s, /readyz 503 in $ready_s s," \
    "/healthz 200 in $SECS s" | tee "$TEST_TMP/bounded.pg"
  proxy_mode pg pass
  for _ in $(seq 1 300); do
    api GET /readyz
    [ "$CODE" = 200 ] && break
    sleep 0.1
  done
  assert_eq "$CODE" 200 "readiness within 30 s of the partition healing: $BODY"
  api POST /v1/abilities "$(ability_json after pg.hang)"
  [[ $CODE == 20[12] ]] || fail "a write after the partition healed: $CODE $BODY"
  echo "after $CODE" >>"$acks"
  wait_converged "$DB" 60
  check_stores_agree "$DB" "$acks"
  stop_service
  stop_emulator
}

# One connection's flow dies (a NAT or load balancer forgets it: no RST, no FIN)
# while new connections work. The statement on it is given up at its deadline,
# and the backend left behind on the server, which would otherwise sit there
# (idle, or holding its transaction's locks) for as long as the server's
# keepalives allow, is ended through a connection that works.
test_a_stalled_connection_has_its_backend_ended() {
  local before pid left="" i t0
  setup_pg_proxy PG_POOL_SIZE=2 PG_STATEMENT_TIMEOUT_MS=1000 SYNC_WAIT_MS=500
  api POST /v1/abilities "$(ability_json first pg.stall)"
  [[ $CODE == 20[12] ]] || fail "a write before the stall: $CODE $BODY"
  before=$(pg "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
  [ -n "$before" ] || fail "no backend of the service in pg_stat_activity"
  proxy_mode pg stall
  t0=$(date +%s%N)
  for i in 1 2 3; do
    secs_of api POST /v1/abilities "$(ability_json "during-$i" pg.stall)"
    le "$SECS" 15 || fail "write $i was answered after $SECS s"
  done
  for _ in $(seq 1 300); do
    left=""
    for pid in $before; do
      [ -n "$(pg "SELECT 1 FROM pg_stat_activity WHERE pid = $pid")" ] && left="$left $pid"
    done
    [ -z "$left" ] && break
    sleep 0.1
  done
  [ -z "$left" ] || fail "backends of stalled connections still there after 30 s:$left $(tail -n 5 "$SVC_LOG")"
  echo "the pool's $(wc -w <<<"$before") connections stalled (new ones work): their backends ended $(awk -v n=$(($(date +%s%N) - t0)) 'BEGIN {printf "%.1f", n / 1e9}') s after the stall" |
    tee "$TEST_TMP/bounded.stall"
  assert_contains "$(curl -s "$SVC_URL/metrics")" "abilitysync_pg_backends_ended_total " "the metric"
  [ "$(curl -s "$SVC_URL/metrics" | awk '$1 == "abilitysync_pg_backends_ended_total" {print $2}')" -ge 1 ] ||
    fail "abilitysync_pg_backends_ended_total stayed 0"
  grep -q "ended [0-9]* backend" "$SVC_LOG" || fail "the log does not say a backend was ended"
  stop_service
  stop_emulator
}

test_a_vector_db_that_stops_answering_still_gets_writes_acknowledged() {
  local acks="$SUITE_TMP/acks"
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator
  start_proxy vdb "${EMU_URL#http://}"
  start_service DATABASE_URL="$DB" VECTOR_DB_API="http://127.0.0.1:$PROXY_PORT" SYNC_WAIT_MS=1000
  wait_ready
  proxy_mode vdb blackhole
  secs_of api POST /v1/abilities "$(ability_json hung vdb.hang)"
  assert_eq "$CODE" 202 "acknowledged, pending: $BODY"
  le "$SECS" 2.5 || fail "answered after $SECS s (SYNC_WAIT_MS is 1 s)"
  echo "vector DB hanging: a write 202 in $SECS s (SYNC_WAIT_MS 1 s)" | tee "$TEST_TMP/bounded.vdb"
  echo "hung 202" >"$acks"
  proxy_mode vdb drip 100
  api POST /v1/abilities "$(ability_json dripped vdb.hang)"
  assert_eq "$CODE" 202 "a vector DB dripping its answers: $BODY"
  echo "dripped 202" >>"$acks"
  proxy_mode vdb pass
  wait_converged "$DB" 90
  check_stores_agree "$DB" "$acks"
  stop_service
  stop_emulator
}

test_a_held_lock_makes_a_write_fail_in_bounded_time_not_hang() {
  local blocker
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator
  start_service DATABASE_URL="$DB" PG_LOCK_TIMEOUT_MS=1000
  wait_ready
  api POST /v1/abilities "$(ability_json locked lock.svc 8 1 one)"
  assert_eq "$CODE" 201
  psql_q "$DB" -c "begin; select 1 from abilities where ability_id = 'locked' for update; select pg_sleep(8); commit" \
    >/dev/null &
  blocker=$!
  sleep 0.5
  secs_of api POST /v1/abilities "$(ability_json locked lock.svc 8 1 two)"
  assert_eq "$CODE" 503 "the row is locked by another session: $BODY"
  assert_contains "$BODY" "lock timeout"
  le "$SECS" 5 || fail "answered after $SECS s (lock_timeout 1 s)"
  echo "a row lock held: the write 503 in $SECS s (PG_LOCK_TIMEOUT_MS 1 s)" | tee "$TEST_TMP/bounded.lock"
  assert_eq "$(pg "select description from abilities where ability_id = 'locked'")" one "nothing half-written"
  kill "$blocker" 2>/dev/null || true
  wait "$blocker" 2>/dev/null || true
  stop_service
  stop_emulator
}

test_a_postgres_that_cannot_write_answers_503_and_writes_nothing() {
  DB=$(new_db)
  DATABASE_URL="$DB" "$ABILITYSYNC" migrate up 2>/dev/null
  start_emulator
  start_service DATABASE_URL="$DB?options=-c%20default_transaction_read_only%3Don"
  wait_ready
  api POST /v1/abilities "$(ability_json ro ro.svc)"
  assert_eq "$CODE" 503 "a read-only Postgres: $BODY"
  assert_contains "$BODY" "read-only transaction"
  assert_eq "$(pg "select count(*) from abilities")" 0 "nothing written"
  assert_eq "$(pg "select count(*) from abilitysync.sync_state")" 0 "no sync state either"
  stop_service
  stop_emulator
}

# A node script holds N connections that trickle header bytes, or bodies, or
# idle; meanwhile /healthz must answer quickly and the service's memory stay put.
test_slowloris_and_oversized_headers_are_bounded() {
  local rss0 rss1 peak out big_headers
  start_emulator
  start_service HTTP_READ_TIMEOUT_MS=3000
  wait_ready
  rss0=$(awk '/^VmRSS/ {print $2}' "/proc/$SVC_PID/status")
  node -e '
    const net = require("net");
    const [host, port] = process.argv[1].replace("http://", "").split(":");
    const socks = [];
    for (let i = 0; i < 1000; i++) {
      const s = net.connect(Number(port), host);
      s.on("error", () => {});
      s.on("connect", () => {
        if (i % 2) s.write("POST /v1/abilities HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{");
        else s.write("GET /v1/abilities HTTP/1.1\r\nHost: x\r\n");
      });
      socks.push(s);
    }
    let n = 0;
    const drip = setInterval(() => { for (const s of socks) if (!s.destroyed) s.write(n % 2 ? "X" : "a"); n++; }, 1000);
    setTimeout(() => { clearInterval(drip); for (const s of socks) s.destroy(); process.exit(0); }, 9000);
  ' "$SVC_URL" &
  local loris=$!
  sleep 2
  for _ in 1 2 3 4 5; do
    secs_of api GET /healthz
    assert_eq "$CODE" 200 "/healthz among 1,000 slow connections"
    le "$SECS" 1 || fail "/healthz took $SECS s among 1,000 slow connections"
    sleep 0.5
  done
  rss1=$(awk '/^VmRSS/ {print $2}' "/proc/$SVC_PID/status")
  wait "$loris" || true
  peak=$(awk '/^VmHWM/ {print $2}' "/proc/$SVC_PID/status")
  [ "$peak" -le $((rss0 + 32768)) ] || fail "the service grew from $rss0 kB to a peak of $peak kB"
  out=$(curl -s -w ' %{http_code}' -H "X-Big: $(head -c 20000 /dev/zero | tr '\0' a)" "$SVC_URL/healthz")
  [ "${out##* }" = 400 ] || fail "20 KB of headers got $out"
  assert_eq "$(jq -r .error.code <<<"${out% *}")" bad_request "20 KB of headers: $out"
  big_headers=${out##* }
  # A connection that stops sending is closed after HTTP_READ_TIMEOUT_MS.
  out=$(node -e '
    const net = require("net");
    const [host, port] = process.argv[1].replace("http://", "").split(":");
    const t0 = Date.now();
    const s = net.connect(Number(port), host, () => s.write("GET /healthz HTTP/1.1\r\n"));
    s.on("close", () => { console.log(((Date.now() - t0) / 1000).toFixed(1)); process.exit(0); });
    setTimeout(() => { console.log("open"); process.exit(0); }, 10000);
  ' "$SVC_URL")
  [ "$out" != open ] || fail "a connection that stopped sending was still open after 10 s"
  le "$out" 6 || fail "a silent connection was closed after $out s (HTTP_READ_TIMEOUT_MS 3 s)"
  echo "1,000 slow connections: /healthz under 1 s; RSS ${rss0} kB before, ${rss1} kB during, peak ${peak} kB;" \
    "a silent connection closed after ${out} s; 20 KB of headers: $big_headers bad_request" | tee "$TEST_TMP/bounded.slowloris"
  stop_service
  stop_emulator
}

run_suite
rc=$?
for f in pg stall vdb lock slowloris; do
  [ ! -f "$TEST_TMP/bounded.$f" ] || sed 's/^/# /' "$TEST_TMP/bounded.$f"
done
exit "$rc"
