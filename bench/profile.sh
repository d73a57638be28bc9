#!/usr/bin/env bash
# profile.sh - where the CPU goes under the registration load: perf (Debian's
# linux-perf) samples the service and, apart, the Postgres cluster while
# loadgen sends N single-ability POSTs, then prints the top symbols of each,
# and what each statement cost the server (pg_stat_statements, from Debian's
# postgresql package: calls, planning and execution per call and per ability),
# and the plpgsql trigger's own time per ability.
#
#   bench/profile.sh [N]          N abilities (default 3000), DIM 3072, concurrency 16
#
# Needs `make all bench-tools` (build/release) and perf. Starts its own Postgres
# cluster (tools/pgcluster.sh), emulator and service; nothing is kept unless
# KEEP_TMP=1 (then perf.service.data and perf.postgres.data stay for
# `perf report -i`). Environment: DIM, CONCURRENCY, TOP (30 symbols), BUILD_DIR.
# Never a timed test; the percentages are shares of the samples of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
N=${1:-3000}
DIM=${DIM:-3072}
C=${CONCURRENCY:-16}
TOP=${TOP:-30}
B=${BUILD_DIR:-build/release}
command -v perf >/dev/null || { echo "profile: perf missing: apt-get install linux-perf" >&2; exit 2; }
for t in abilitysync vdb-emulator loadgen; do
  [ -x "$B/$t" ] || { echo "profile: $B/$t missing: run make all bench-tools" >&2; exit 2; }
done
TMP=$(mktemp -d /tmp/abilitysync-profile.XXXXXX)
chmod 755 "$TMP"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  tools/pgcluster.sh stop "$TMP/pg" >/dev/null 2>&1 || true
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "profile: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

wait_for() { # file pattern
  for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.05; done
  echo "profile: no '$2' in $1:" >&2
  cat "$1" >&2
  exit 1
}

base=$(PGCLUSTER_OPTIONS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on -c track_functions=pl" \
  tools/pgcluster.sh start "$TMP/pg")
base=${base%/postgres}
psql -X -q "$base/postgres" -c "CREATE DATABASE profile" >/dev/null
psql -X -q "$base/profile" -c "CREATE EXTENSION pg_stat_statements" >/dev/null
DATABASE_URL="$base/profile" "$B/abilitysync" migrate up >/dev/null 2>&1
"$B/vdb-emulator" --listen 127.0.0.1:0 --port-file "$TMP/emu.port" >"$TMP/emu.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do [ -s "$TMP/emu.port" ] && break; sleep 0.05; done
DATABASE_URL="$base/profile" VECTOR_DB_API="http://127.0.0.1:$(cat "$TMP/emu.port")" EMBEDDING_DIM="$DIM" \
  LISTEN=127.0.0.1:0 "$B/abilitysync" serve >"$TMP/service.log" 2>&1 &
svc=$!
pids+=("$svc")
wait_for "$TMP/service.log" "serving on"
url=$(grep -o 'serving on http://[^; ]*' "$TMP/service.log" | sed 's/serving on //')

# A warm-up (connections, prepared statements, blobs), then the profiled load.
"$B/loadgen" --url "$url" --requests 200 --concurrency "$C" --dim "$DIM" --seed 99 --json >/dev/null 2>&1
pm=$(head -n 1 "$TMP/pg/data/postmaster.pid")
pg_pids=$(pgrep -d, -P "$pm")
perf record -F 999 -g -o "$TMP/perf.service.data" -p "$svc" >/dev/null 2>"$TMP/perf.service.err" &
p1=$!
perf record -F 999 -g -o "$TMP/perf.postgres.data" -p "$pg_pids" >/dev/null 2>"$TMP/perf.postgres.err" &
p2=$!
psql -X -q "$base/profile" -c "SELECT pg_stat_statements_reset(), pg_stat_reset()" >/dev/null
sleep 0.5
"$B/loadgen" --url "$url" --requests "$N" --concurrency "$C" --dim "$DIM" --seed 11 --json >"$TMP/load.json"
kill -INT "$p1" "$p2"
wait "$p1" "$p2" 2>/dev/null || true

top() { # perf data file: the symbols with the most samples (self), as "percent symbol [object]"
  perf report -i "$1" --stdio --no-children -g none --sort dso,symbol --percent-limit 0.5 2>/dev/null |
    grep -E '^ +[0-9]' | awk -v n="$TOP" 'NR <= n' # reads it all: head would end perf with SIGPIPE (pipefail)
}
echo "## bench/profile.sh: $N abilities of $DIM dimensions, concurrency $C, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "loadgen: $(jq -c '{abilities_ok_per_s, latency_ms: {p50: .latency_ms.p50, p99: .latency_ms.p99}}' "$TMP/load.json")"
echo
echo "### the service (abilitysync serve): top symbols, self time"
echo '```'
top "$TMP/perf.service.data"
echo '```'
echo
echo "### Postgres (every backend and helper of the cluster): top symbols, self time"
echo '```'
top "$TMP/perf.postgres.data"
echo '```'
echo
echo "### Postgres: the statements that cost most (pg_stat_statements: ms of planning and of execution, waits included; per ability: over the $N)"
echo '```'
psql -X -q -P footer=off "$base/profile" -c "
  SELECT calls, round((total_plan_time / nullif(calls, 0))::numeric, 3) AS plan_per_call,
    round((total_exec_time / nullif(calls, 0))::numeric, 3) AS exec_per_call,
    round((total_plan_time / $N)::numeric, 3) AS plan_per_ability,
    round((total_exec_time / $N)::numeric, 3) AS exec_per_ability,
    left(regexp_replace(query, '\\s+', ' ', 'g'), 60) AS statement
  FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid AND d.datname = 'profile'
  WHERE query NOT LIKE '%pg_stat_statements%'
  ORDER BY total_plan_time + total_exec_time DESC LIMIT 8"
echo '```'
echo
echo "### Postgres: plpgsql functions (the sync state's trigger; track_functions=pl, its timing included)"
echo '```'
psql -X -q -P footer=off "$base/profile" -c "
  SELECT funcname, calls, round((self_time * 1000 / $N)::numeric, 2) AS self_us_per_ability
  FROM pg_stat_user_functions ORDER BY self_time DESC"
echo '```'
