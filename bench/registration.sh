#!/usr/bin/env bash
# registration.sh - registration throughput over HTTP at 3072 dimensions, as a
# ratio to a raw COPY of the same rows into the same table, in one run.
#
#   bench/registration.sh [N]          (alone: make bench runs bench/all.sh)
#
# Starts its own PostgreSQL cluster, the vector DB emulator and `abilitysync
# serve` (release builds), all on this machine. For each concurrency it uses a
# fresh database: COPY of N generated rows (bench/gen_rows: the same shape as
# the load generator's abilities), then N registrations through the service.
# Prints a markdown table: abilities/s, latency, the ratio to COPY, and the CPU
# each process spent per ability (the machine's cores are shared by all of
# them, the emulator included, which on a real deployment runs elsewhere).
# Never a timed test: the numbers are for reading, not for asserting.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
DIM=${DIM:-3072}
CONCURRENCIES=${CONCURRENCIES:-"1 4 8 16"}
B=${BUILD_DIR:-build/release}
TMP=$(mktemp -d /tmp/abilitysync-bench.XXXXXX)
chmod 755 "$TMP"
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  tools/pgcluster.sh stop "$TMP/pg" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. bench/lib.sh
db_ticks() { # database name: CPU ticks of its backends
  local s=0 p
  for p in $(pgrep -f "postgres: postgres $1 " || true); do s=$((s + $(ticks "$p"))); done
  echo "$s"
}

base=$(tools/pgcluster.sh start "$TMP/pg")
base=${base%/postgres}
"$B/vdb-emulator" --listen 127.0.0.1:0 --port-file "$TMP/emu.port" >"$TMP/emu.log" 2>&1 &
pids+=($!)
emu_pid=$!
for _ in $(seq 1 100); do [ -s "$TMP/emu.port" ] && break; sleep 0.05; done
emu="http://127.0.0.1:$(cat "$TMP/emu.port")"
"$B/gen_rows" --rows "$N" --dim "$DIM" --seed 11 >"$TMP/rows.copy" 2>/dev/null ||
  { echo "bench: $B/gen_rows missing: run make bench-tools"; exit 1; }

echo "| clients | abilities/s | p50 ms | p99 ms | COPY rows/s | ratio | CPU ms per ability: service / postgres / emulator |"
echo "|---|---|---|---|---|---|---|"
for c in $CONCURRENCIES; do
  db="bench_c$c"
  psql -X -q "$base/postgres" -c "CREATE DATABASE $db" >/dev/null
  curl -fsS -X POST "$emu/_admin/reset" >/dev/null # every run starts from an empty vector DB
  DATABASE_URL="$base/$db" "$B/abilitysync" migrate up 2>/dev/null

  # The floor: COPY of the same rows into the same (empty) table.
  start=$(date +%s%N)
  psql -X -q "$base/$db" -c "\\copy abilities (ability_id, vector_id, ability_name, service_name, description, embedding, dynamic_header_keys, dynamic_headers_required, metadata) FROM '$TMP/rows.copy'"
  copy_s=$(echo "$(date +%s%N) $start" | awk '{printf "%.3f", ($1 - $2) / 1e9}')
  psql -X -q "$base/$db" -c "TRUNCATE abilities" >/dev/null

  DATABASE_URL="$base/$db" VECTOR_DB_API="$emu" LISTEN=127.0.0.1:0 \
    "$B/abilitysync" serve >"$TMP/serve.$c.log" 2>&1 &
  svc=$!
  pids+=("$svc")
  url=""
  for _ in $(seq 1 100); do
    url=$(grep -o 'serving on http://[^;]*' "$TMP/serve.$c.log" 2>/dev/null | sed 's/serving on //' || true)
    [ -n "$url" ] && break
    sleep 0.05
  done
  [ -n "$url" ] || { echo "bench: the service did not start:"; cat "$TMP/serve.$c.log"; exit 1; }
  s0=$(ticks "$svc") e0=$(ticks "$emu_pid") p0=$(db_ticks "$db")
  "$B/loadgen" --url "$url" --requests "$N" --concurrency "$c" --dim "$DIM" --seed 11 --json \
    >"$TMP/load.$c.json" 2>/dev/null
  s1=$(ticks "$svc") e1=$(ticks "$emu_pid") p1=$(db_ticks "$db")
  jq -e ".abilities_ok == .abilities" "$TMP/load.$c.json" >/dev/null ||
    { echo "bench: not every registration succeeded:"; cat "$TMP/load.$c.json"; exit 1; }
  kill -TERM "$svc"
  wait "$svc" || true
  jq -r --arg c "$c" --arg copy "$copy_s" --arg n "$N" \
    --arg svc "$(((s1 - s0) * 10))" --arg pg "$(((p1 - p0) * 10))" --arg emu "$(((e1 - e0) * 10))" '
    ($n | tonumber) as $n | ($n / ($copy | tonumber)) as $copy_rate |
    "| \($c) | \(.abilities_ok_per_s | floor) | \(.latency_ms.p50 * 10 | round / 10) | \(.latency_ms.p99 * 10 | round / 10) | \($copy_rate | floor) | \((.abilities_ok_per_s / $copy_rate) * 100 | round / 100) | \(($svc | tonumber) / $n * 100 | round / 100) / \(($pg | tonumber) / $n * 100 | round / 100) / \(($emu | tonumber) / $n * 100 | round / 100) |"' \
    "$TMP/load.$c.json"
done
echo
echo "$N abilities of $DIM dimensions per row; $(nproc) cores shared by Postgres, the service, the emulator and the load generator; $(date -u +%Y-%m-%d)."
