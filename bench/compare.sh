#!/usr/bin/env bash
# compare.sh - abilitysync against a peer that does what the original TypeScript
# app does (bench/peer/: Node 20, node:http, fetch, drizzle-orm + pg), measured
# in one run on this machine and printed as ratios.
#
#   bench/compare.sh [N]          N abilities per system (default 2000; bench/all.sh: REG_N)
#
# Needs (built, not built here: other work may be under way in the tree):
#   make all bench-tools          build/release/{abilitysync,vdb-emulator,loadgen,gen_rows}
#   make deps                     drizzle-compat/node_modules (drizzle-kit), psql, jq, curl, node,
#                                 bench/peer/node_modules
#   (cd bench/peer && npm ci)     the peer's drizzle-orm 0.45.4 and pg 8.23.1 from its lock file;
#                                 this script runs it when bench/peer/node_modules is missing or stale
#
# Starts its own Postgres cluster (tools/pgcluster.sh). For each system, one
# after the other: a fresh vector DB emulator, a fresh database migrated by
# `abilitysync migrate up` (the `abilities` table both systems write), the
# service, then build/release/loadgen (same --seed, N single-ability POSTs of
# DIM-d embeddings over C keep-alive connections). A CHECKPOINT goes before
# each load and each COPY, so that none pays for the pages another left dirty
# (the cluster's CPU is counted whole: backends, checkpointer, WAL writer,
# autovacuum). Per system: abilities/s, exact p50/p99, errors, CPU of the
# service process, and its peak RSS (VmHWM of /proc/PID/status, read after
# the load and the vector DB drain). Then: COPY of
# the same rows (build/release/gen_rows, same ids) into a fresh table, median
# of 3; and a no-op migration (nothing pending) by `abilitysync migrate up` and
# by `npx drizzle-kit migrate` (hyperfine when installed, else a loop).
#
# Afterwards, untimed: every ability a system acknowledged (a 2xx, loadgen
# --ack-file) must have its row in that system's database and the row's vector
# in its emulator, and both systems must hold the same (ability_id, vector_id)
# pairs. Any loss is printed loudly and the exit status is 1.
#
# Environment: COPY_TOAST (lz4: the COPY session's default_toast_compression,
# the service's PG_TOAST_COMPRESSION default; the peer keeps the server's, pglz,
# as the original app does), ROUNDS (3: rounds of abilitysync, peer and COPY, the order of the
# two systems alternating, each on a fresh database and emulator; every ratio is
# printed as its median over the rounds and its min-max), CONCURRENCY (16), DIM
# (3072), SEED (11), ORDER ("abilitysync peer": which system runs first in odd rounds), MIGRATE_RUNS (10), DRAIN_TIMEOUT (120 s: how long
# to wait for abilitysync's pushes still in flight after the load),
# LOAD_TIMEOUT (1800 s: loadgen, and hyperfine, is killed after it),
# PEER_POOL_SIZE (10: the peer's pg.Pool max; 10 is node-postgres' default,
# which a plain drizzle(DATABASE_URL) client gets), RESULTS (a file: the
# figures are appended to it as key=value lines, for bench/all.sh),
# WAIT_QUIET (0: seconds to wait for the 1-minute load average to fall below
# LOAD_MAX, 1.0, before starting), PEER_UPSERT_SET (excluded; see
# bench/peer/server.js), BUILD_DIR (build/release: where the C programs are,
# e.g. those of a clean `git archive HEAD` built elsewhere while the tree is
# being edited), KEEP_TMP=1 keeps the logs. Never a timed test.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
ROOT=$(pwd)
N=${1:-2000}
C=${CONCURRENCY:-16}
DIM=${DIM:-3072}
SEED=${SEED:-11}
ORDER=${ORDER:-"abilitysync peer"}
MIGRATE_RUNS=${MIGRATE_RUNS:-10}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-1800}
PEER_POOL_SIZE=${PEER_POOL_SIZE:-10}
WAIT_QUIET=${WAIT_QUIET:-0}
ROUNDS=${ROUNDS:-3}
COPY_TOAST=${COPY_TOAST:-lz4} # as abilitysync's sessions compress (PG_TOAST_COMPRESSION): the same work
LOAD_MAX=${LOAD_MAX:-1.0}
TENANT=reverse_engineer
B=${BUILD_DIR:-build/release}
case "$B" in /*) ;; *) B=$ROOT/$B ;; esac
export NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false

die() { echo "compare: $*" >&2; exit 1; }

# ---- prerequisites -----------------------------------------------------------------

for t in abilitysync vdb-emulator loadgen gen_rows; do
  [ -x "$B/$t" ] || die "$B/$t missing: run make all bench-tools"
done
for c in psql jq curl node npx awk; do
  command -v "$c" >/dev/null || die "$c missing: run make deps"
done
[ -x drizzle-compat/node_modules/.bin/drizzle-kit ] || die "drizzle-kit missing: run make deps"
if [ ! -f bench/peer/node_modules/.package-lock.json ] ||
  [ bench/peer/package-lock.json -nt bench/peer/node_modules/.package-lock.json ]; then
  echo "compare: npm ci in bench/peer" >&2
  (cd bench/peer && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

load1() { cut -d' ' -f1 /proc/loadavg; }
quiet() { awk -v l="$(load1)" -v m="$LOAD_MAX" 'BEGIN { exit !(l < m) }'; }
waited=0
while ! quiet && [ "$waited" -lt "$WAIT_QUIET" ]; do
  [ "$waited" = 0 ] && echo "compare: load average $(load1) >= $LOAD_MAX: waiting up to ${WAIT_QUIET}s" >&2
  sleep 10
  waited=$((waited + 10))
done
LOAD_AT_START=$(load1)

TMP=$(mktemp -d /tmp/abilitysync-compare.XXXXXX)
chmod 755 "$TMP"
pids=()

cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  tools/pgcluster.sh stop "$TMP/pg" >/dev/null 2>&1 || true
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "compare: logs kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

HZ=$(getconf CLK_TCK)
# shellcheck source=bench/lib.sh
. bench/lib.sh
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
now_ns() { date +%s%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; } # calc FORMAT EXPRESSION

# Waits for "$2 http://host:port" in log $1 of process $3; prints the URL.
wait_url() {
  local log=$1 marker=$2 pid=$3 url=""
  for _ in $(seq 1 200); do
    url=$(grep -o "$marker http://[^; ]*" "$log" 2>/dev/null | sed "s/$marker //" || true)
    [ -n "$url" ] && { echo "$url"; return; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "compare: no '$marker' line in $log:" >&2
  cat "$log" >&2
  exit 1
}

start_emulator() { # name: sets EMU_PID, EMU_URL
  "$B/vdb-emulator" --listen 127.0.0.1:0 --port-file "$TMP/emu.$1.port" >"$TMP/emu.$1.log" 2>&1 &
  EMU_PID=$!
  pids+=("$EMU_PID")
  for _ in $(seq 1 200); do [ -s "$TMP/emu.$1.port" ] && break; sleep 0.05; done
  [ -s "$TMP/emu.$1.port" ] || { cat "$TMP/emu.$1.log" >&2; die "the emulator did not start"; }
  EMU_URL="http://127.0.0.1:$(cat "$TMP/emu.$1.port")"
}

new_db() { # name: a fresh database migrated by abilitysync; prints its URL
  psql -X -q "$BASE/postgres" -c "CREATE DATABASE $1" >/dev/null
  DATABASE_URL="$BASE/$1" "$B/abilitysync" migrate up >"$TMP/migrate.$1.log" 2>&1 ||
    { cat "$TMP/migrate.$1.log" >&2; die "migrate up failed on $1"; }
  echo "$BASE/$1"
}

emu_total() { # emulator URL: vectors over every blob of the tenant
  curl -fsS "$1/tenants/$TENANT/blobs" 2>/dev/null | jq '[.blobs[]?.count] | add // 0' 2>/dev/null || echo 0
}

stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

BASE=$(tools/pgcluster.sh start "$TMP/pg")
BASE=${BASE%/postgres}
"$B/gen_rows" --rows "$N" --dim "$DIM" --seed "$SEED" --prefix bench >"$TMP/rows.copy" 2>/dev/null

# The cluster's CPU so far, in ticks: the postmaster, the children it reaped
# (backends that ended), and the live ones (backends, WAL writer, checkpointer).

# ---- one system under load ------------------------------------------------------------
# Keys of the per-round figures: "<system>.<round>".
declare -A LOST THR P50 P99 ERR STATUS HWM CPU PGCPU EMUCPU LGCPU DRAIN EMU_URLS DBS COPY_RATE COPY_PGCPU
PEER_STATS='{}'

run_system() { # abilitysync | peer, round
  local sys=$1 rd=$2 k="$1.$2" db svc url lg_rc=0 s0 s1 g0 g1 e0 e1 waited last now stable before
  db=$(new_db "bench_${sys}_$rd")
  DBS[$k]=$db
  start_emulator "$sys$rd"
  EMU_URLS[$k]=$EMU_URL
  if [ "$sys" = abilitysync ]; then
    DATABASE_URL="$db" VECTOR_DB_API="$EMU_URL" VECTOR_DB_TENANT="$TENANT" EMBEDDING_DIM="$DIM" \
      LISTEN=127.0.0.1:0 "$B/abilitysync" serve >"$TMP/$k.log" 2>&1 &
    svc=$!
    pids+=("$svc")
    url=$(wait_url "$TMP/$k.log" "serving on" "$svc")
  else
    DATABASE_URL="$db" VECTOR_DB_API="$EMU_URL" VECTOR_DB_TENANT="$TENANT" EMBEDDING_DIM="$DIM" \
      PORT=0 PG_POOL_SIZE="$PEER_POOL_SIZE" UPSERT_SET="${PEER_UPSERT_SET:-excluded}" node bench/peer/server.js >"$TMP/$k.log" 2>&1 &
    svc=$!
    pids+=("$svc")
    url=$(wait_url "$TMP/$k.log" "listening on" "$svc")
  fi

  # As before COPY: what earlier runs left dirty is written now, not in this window.
  before=$(pg_children "$TMP/pg/data")
  psql -X -q "$db" -c "CHECKPOINT" >/dev/null
  pg_reaped "$TMP/pg/data" "$before"
  s0=$(ticks "$svc")
  g0=$(pg_ticks "$TMP/pg/data")
  e0=$(ticks "$EMU_PID")
  timeout "$LOAD_TIMEOUT" "$B/loadgen" --url "$url" --requests "$N" --concurrency "$C" --dim "$DIM" --seed "$SEED" --json \
    --ack-file "$TMP/ack.$k" >"$TMP/load.$k.json" 2>"$TMP/load.$k.err" || lg_rc=$?
  s1=$(ticks "$svc")
  jq -e .abilities "$TMP/load.$k.json" >/dev/null 2>&1 ||
    { cat "$TMP/load.$k.err" >&2; die "loadgen against $sys failed (exit $lg_rc)"; }

  # abilitysync may answer 202 and push on: wait (untimed) until the emulator
  # holds N vectors, or nothing moved for 10 s, or DRAIN_TIMEOUT.
  waited=0 last=-1 stable=0
  while [ "$waited" -lt $((DRAIN_TIMEOUT * 10)) ]; do
    now=$(emu_total "$EMU_URL")
    [ "$now" -ge "$N" ] && break
    if [ "$now" = "$last" ]; then stable=$((stable + 1)); else stable=0; fi
    [ "$stable" -ge 100 ] && break
    last=$now
    sleep 0.1
    waited=$((waited + 1))
  done
  g1=$(pg_ticks "$TMP/pg/data") # after the drain: the outbox's marks are Postgres work of the registration too
  e1=$(ticks "$EMU_PID")
  DRAIN[$k]=$(calc "%.1f" "$waited / 10")

  HWM[$k]=$(status_kb "$svc" VmHWM)
  CPU[$k]=$(calc "%.3f" "($s1 - $s0) * 1000 / $HZ / $N")
  PGCPU[$k]=$(calc "%.3f" "($g1 - $g0) * 1000 / $HZ / $N")
  EMUCPU[$k]=$(calc "%.3f" "($e1 - $e0) * 1000 / $HZ / $N")
  if [ "$sys" = peer ]; then PEER_STATS=$(curl -fsS "$url/_stats" 2>/dev/null || echo '{}'); fi
  stop_pid "$svc"

  THR[$k]=$(jq '.abilities_ok_per_s' "$TMP/load.$k.json")
  LGCPU[$k]=$(jq --argjson n "$N" '.cpu_ms / $n' "$TMP/load.$k.json")
  P50[$k]=$(jq '.latency_ms.p50' "$TMP/load.$k.json")
  P99[$k]=$(jq '.latency_ms.p99' "$TMP/load.$k.json")
  ERR[$k]=$(jq '(.abilities - .abilities_ok) + .transport_errors' "$TMP/load.$k.json")
  STATUS[$k]=$(jq -r '[.status | to_entries[] | "\(.key): \(.value)"] | join(", ")' "$TMP/load.$k.json")
}

# COPY of the same rows into the same (empty) table, once per round: rows/s and the cluster's CPU per row.
copy_db=$(new_db bench_copy)
run_copy() { # round
  local t0 g0 g1 ns before
  before=$(pg_children "$TMP/pg/data")
  psql -X -q "$copy_db" -c "TRUNCATE abilities" >/dev/null
  psql -X -q "$copy_db" -c "CHECKPOINT" >/dev/null
  pg_reaped "$TMP/pg/data" "$before"
  g0=$(pg_ticks "$TMP/pg/data")
  t0=$(now_ns)
  PGOPTIONS="-c default_toast_compression=$COPY_TOAST" psql -X -q "$copy_db" -c "\\copy abilities (ability_id, vector_id, ability_name, service_name, description, embedding, dynamic_header_keys, dynamic_headers_required, metadata) FROM '$TMP/rows.copy'"
  ns=$(($(now_ns) - t0))
  pg_reaped "$TMP/pg/data" "$before" # COPY's backend: its CPU is counted once it is reaped
  g1=$(pg_ticks "$TMP/pg/data")
  COPY_RATE[copy.$1]=$(calc "%.1f" "$N / ($ns / 1e9)")
  COPY_PGCPU[copy.$1]=$(calc "%.3f" "($g1 - $g0) * 1000 / $HZ / $N")
  COPY_ROWS=$(psql -X -At "$copy_db" -c "SELECT count(*) FROM abilities")
}

# Rounds alternate the order (ORDER, then reversed, ...), each system on a fresh
# database and emulator, then COPY: no system always runs on a warmer machine.
for rd in $(seq 1 "$ROUNDS"); do
  order=$ORDER
  [ $((rd % 2)) = 0 ] && order=$(echo "$ORDER" | awk '{ for (i = NF; i > 0; i--) printf "%s%s", $i, (i > 1 ? " " : "") }')
  echo "compare: round $rd of $ROUNDS: $order, COPY" >&2
  for sys in $order; do
    case "$sys" in abilitysync | peer) run_system "$sys" "$rd" ;; *) die "ORDER: unknown system $sys" ;; esac
  done
  for sys in abilitysync peer; do [ -n "${THR[$sys.$rd]:-}" ] || die "ORDER must name both abilitysync and peer"; done
  run_copy "$rd"
done

# ---- no-op migrations: nothing pending -------------------------------------------------------
mig_db=$(new_db bench_migrate)
export DATABASE_URL=$mig_db MIGRATIONS_DIR=$ROOT/drizzle-compat/drizzle
# Each must succeed and change nothing before it is timed.
(cd drizzle-compat && "$B/abilitysync" migrate up) >"$TMP/noop.abilitysync.log" 2>&1 ||
  { cat "$TMP/noop.abilitysync.log" >&2; die "abilitysync migrate up failed"; }
grep -q "up to date" "$TMP/noop.abilitysync.log" || { cat "$TMP/noop.abilitysync.log" >&2; die "abilitysync found migrations pending"; }
ledger_before=$(psql -X -At "$mig_db" -c "SELECT count(*) FROM drizzle.__drizzle_migrations")
(cd drizzle-compat && timeout 300 npx drizzle-kit migrate) >"$TMP/noop.drizzle.log" 2>&1 ||
  { cat "$TMP/noop.drizzle.log" >&2; die "npx drizzle-kit migrate failed"; }
[ "$(psql -X -At "$mig_db" -c "SELECT count(*) FROM drizzle.__drizzle_migrations")" = "$ledger_before" ] ||
  die "drizzle-kit applied something: not a no-op"

if command -v hyperfine >/dev/null; then
  MIG_TOOL="hyperfine, $MIGRATE_RUNS runs + 1 warm-up, mean"
  (cd drizzle-compat && timeout "$LOAD_TIMEOUT" hyperfine -N --warmup 1 --runs "$MIGRATE_RUNS" --export-json "$TMP/migrate.json" \
    -n abilitysync "$B/abilitysync migrate up" \
    -n npx "npx drizzle-kit migrate" \
    -n bin "./node_modules/.bin/drizzle-kit migrate") >"$TMP/hyperfine.log" 2>&1 ||
    { cat "$TMP/hyperfine.log" >&2; die "hyperfine failed"; }
  mig_ms() { jq --arg n "$1" '.results[] | select(.command == $n) | .mean * 1000' "$TMP/migrate.json"; }
  MIG_A=$(mig_ms abilitysync) MIG_NPX=$(mig_ms npx) MIG_BIN=$(mig_ms bin)
else
  MIG_TOOL="a loop of $MIGRATE_RUNS, mean"
  loop_ms() {
    local i t0 total=0
    for ((i = 0; i < MIGRATE_RUNS; i++)); do
      t0=$(now_ns)
      (cd drizzle-compat && timeout 300 "$@") >/dev/null 2>&1 || die "$* failed"
      total=$((total + $(now_ns) - t0))
    done
    calc "%.2f" "$total / $MIGRATE_RUNS / 1e6"
  }
  MIG_A=$(loop_ms "$B/abilitysync" migrate up)
  MIG_NPX=$(loop_ms npx drizzle-kit migrate)
  MIG_BIN=$(loop_ms ./node_modules/.bin/drizzle-kit migrate)
fi
unset DATABASE_URL MIGRATIONS_DIR

# ---- verification (untimed): every row and every vector, both systems, every round ------------
failures=()
VERIFY=()
q() { psql -X -At "$1" -c "$2"; }
for rd in $(seq 1 "$ROUNDS"); do
  for sys in abilitysync peer; do
    k="$sys.$rd" db=${DBS[$sys.$rd]} emu=${EMU_URLS[$sys.$rd]}
    # Acknowledged (a 2xx answer named it): each must have its row, and the
    # vector of that row in the blob its service names.
    awk '{print $1}' "$TMP/ack.$k" | sort -u >"$TMP/acked.$k"
    acked=$(wc -l <"$TMP/acked.$k")
    rows=$(q "$db" "SELECT count(*) FROM abilities")
    q "$db" "SELECT ability_id || ' abilities_' || regexp_replace(service_name, '[^A-Za-z0-9_]', '_', 'g') || ' ' || vector_id
             FROM abilities" | sort >"$TMP/pg.$k.rows"
    for blob in $(curl -fsS "$emu/tenants/$TENANT/blobs" | jq -r '.blobs[]?.blob_id'); do
      curl -fsS "$emu/_admin/tenants/$TENANT/blobs/$blob/ids" | jq -r --arg b "$blob" '.ids[] | "\($b) \(.)"'
    done | sort -u >"$TMP/emu.$k.pairs"
    vectors=$(wc -l <"$TMP/emu.$k.pairs")
    no_row=$(join "$TMP/acked.$k" "$TMP/pg.$k.rows" -v 1 | wc -l)
    join "$TMP/acked.$k" "$TMP/pg.$k.rows" | awk '{print $2, $3}' | sort -u >"$TMP/acked.$k.pairs"
    no_vector=$(comm -23 "$TMP/acked.$k.pairs" "$TMP/emu.$k.pairs" | wc -l)
    line="round $rd, $sys: $acked/$N acknowledged; $rows rows in Postgres, $vectors vectors in its emulator;"
    line="$line acknowledged but lost: $no_row without a row, $no_vector without their vector"
    VERIFY+=("$line")
    LOST[$sys]=$((${LOST[$sys]:-0} + no_row + no_vector))
    if [ "$no_row" != 0 ] || [ "$no_vector" != 0 ]; then failures+=("$line"); fi
  done
  q "${DBS[abilitysync.$rd]}" "SELECT ability_id || ' ' || vector_id FROM abilities ORDER BY 1" >"$TMP/a.ids"
  q "${DBS[peer.$rd]}" "SELECT ability_id || ' ' || vector_id FROM abilities ORDER BY 1" >"$TMP/p.ids"
  if cmp -s "$TMP/a.ids" "$TMP/p.ids"; then
    VERIFY+=("round $rd: both stored the same $(wc -l <"$TMP/a.ids") (ability_id, vector_id) pairs")
  else
    failures+=("round $rd: the two systems stored different (ability_id, vector_id) pairs ($(diff "$TMP/a.ids" "$TMP/p.ids" | grep -c '^[<>]' || true) lines differ)")
  fi
done
VERIFY+=("the peer's counters (last round): $(echo "$PEER_STATS" | jq -c 'del(.memory)')")
[ "$COPY_ROWS" = "$N" ] || failures+=("COPY loaded $COPY_ROWS/$N rows")

# ---- the table: per round ratios, their median and spread ------------------------------------
# stats EXPR: the median, min and max over the rounds of EXPR, an awk expression of
# per-round values written as NAME (looked up as NAME[rd]).
declare -A V
for rd in $(seq 1 "$ROUNDS"); do
  for sys in abilitysync peer; do
    V[${sys}_thr.$rd]=${THR[$sys.$rd]} V[${sys}_p50.$rd]=${P50[$sys.$rd]} V[${sys}_p99.$rd]=${P99[$sys.$rd]}
    V[${sys}_hwm.$rd]=${HWM[$sys.$rd]} V[${sys}_cpu.$rd]=${CPU[$sys.$rd]} V[${sys}_pgcpu.$rd]=${PGCPU[$sys.$rd]}
    V[${sys}_emucpu.$rd]=${EMUCPU[$sys.$rd]} V[${sys}_lgcpu.$rd]=${LGCPU[$sys.$rd]}
  done
  V[copy_rps.$rd]=${COPY_RATE[copy.$rd]}
  V[copy_pgcpu.$rd]=${COPY_PGCPU[copy.$rd]}
done
per_round() { # awk-expression with names: one value per round, one per line
  local rd expr
  for rd in $(seq 1 "$ROUNDS"); do
    expr=$1
    for name in abilitysync_thr abilitysync_p50 abilitysync_p99 abilitysync_hwm abilitysync_cpu abilitysync_pgcpu \
      abilitysync_emucpu abilitysync_lgcpu peer_thr peer_p50 peer_p99 peer_hwm peer_cpu peer_pgcpu peer_emucpu \
      peer_lgcpu copy_rps copy_pgcpu; do
      expr=${expr//$name/(${V[$name.$rd]})}
    done
    calc "%.6f\n" "$expr"
  done
}
stats() { # expr: "median min max"
  per_round "$1" | sort -g | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.6g %.6g %.6g\n", m, v[1], v[NR] }'
}
cell() { # expr [format]: "**median** (min–max)"
  local m lo hi
  read -r m lo hi <<<"$(stats "$1")"
  printf '**%s** (%s–%s)' "$(calc "${2:-%.2f}" "$m")" "$(calc "${2:-%.2f}" "$lo")" "$(calc "${2:-%.2f}" "$hi")"
}
med() { stats "$1" | awk '{ print $1 }'; }
mb() { calc "%.1f" "$1 / 1024"; }
printf '| ratio (median over %s rounds, min–max) | value | numerator (median) | denominator (median) |\n' "$ROUNDS"
printf '|---|---|---|---|\n'
printf '| abilitysync throughput / peer throughput | %s | %s abilities/s | %s abilities/s |\n' \
  "$(cell 'abilitysync_thr / peer_thr')" "$(calc %.1f "$(med abilitysync_thr)")" "$(calc %.1f "$(med peer_thr)")"
printf '| abilitysync throughput / COPY rows/s | %s | %s abilities/s | %s rows/s (\\copy, one per round) |\n' \
  "$(cell 'abilitysync_thr / copy_rps')" "$(calc %.1f "$(med abilitysync_thr)")" "$(calc %.1f "$(med copy_rps)")"
printf '| abilitysync service CPU per ability / the peer'"'"'s | %s | %s ms | %s ms |\n' \
  "$(cell 'abilitysync_cpu / peer_cpu')" "$(calc %.3f "$(med abilitysync_cpu)")" "$(calc %.3f "$(med peer_cpu)")"
printf '| Postgres CPU per ability: abilitysync / COPY'"'"'s per row | %s | %s ms | %s ms |\n' \
  "$(cell 'abilitysync_pgcpu / copy_pgcpu')" "$(calc %.3f "$(med abilitysync_pgcpu)")" "$(calc %.3f "$(med copy_pgcpu)")"
printf '| Postgres CPU per ability: peer / COPY'"'"'s per row | %s | %s ms | %s ms |\n' \
  "$(cell 'peer_pgcpu / copy_pgcpu')" "$(calc %.3f "$(med peer_pgcpu)")" "$(calc %.3f "$(med copy_pgcpu)")"
printf '| abilitysync p99 / peer p99 | %s | %s ms | %s ms |\n' \
  "$(cell 'abilitysync_p99 / peer_p99')" "$(calc %.1f "$(med abilitysync_p99)")" "$(calc %.1f "$(med peer_p99)")"
printf '| abilitysync peak RSS / peer peak RSS | %s | %s MB | %s MB |\n' \
  "$(cell 'abilitysync_hwm / peer_hwm')" "$(mb "$(med abilitysync_hwm)")" "$(mb "$(med peer_hwm)")"
printf '| drizzle-kit no-op migrate / abilitysync no-op migrate | **%s** | %s ms (npx drizzle-kit migrate) | %s ms (abilitysync migrate up) |\n' \
  "$(calc %.1f "$MIG_NPX / $MIG_A")" "$(calc %.1f "$MIG_NPX")" "$(calc %.1f "$MIG_A")"
printf '| drizzle-kit (bin, no npx) no-op migrate / abilitysync | %s | %s ms | %s ms |\n' \
  "$(calc %.1f "$MIG_BIN / $MIG_A")" "$(calc %.1f "$MIG_BIN")" "$(calc %.1f "$MIG_A")"
echo
for rd in $(seq 1 "$ROUNDS"); do
  echo "round $rd: abilitysync ${THR[abilitysync.$rd]} abilities/s, p99 ${P99[abilitysync.$rd]} ms, errors ${ERR[abilitysync.$rd]} (${STATUS[abilitysync.$rd]}), drain ${DRAIN[abilitysync.$rd]} s;" \
    "peer ${THR[peer.$rd]} abilities/s, p99 ${P99[peer.$rd]} ms, errors ${ERR[peer.$rd]} (${STATUS[peer.$rd]}), drain ${DRAIN[peer.$rd]} s;" \
    "COPY ${COPY_RATE[copy.$rd]} rows/s; Postgres CPU ms per ability: abilitysync ${PGCPU[abilitysync.$rd]}, peer ${PGCPU[peer.$rd]}, COPY ${COPY_PGCPU[copy.$rd]};" \
    "emulator and loadgen CPU ms per ability: abilitysync ${EMUCPU[abilitysync.$rd]} and ${LGCPU[abilitysync.$rd]}, peer ${EMUCPU[peer.$rd]} and ${LGCPU[peer.$rd]}"
done
echo
echo "$N abilities of $DIM dimensions per system per round, $ROUNDS rounds (order alternating from: $ORDER), concurrency $C, seed $SEED;" \
  "abilitysync serve (release, defaults) vs bench/peer (node $(node --version), one process, pg pool $PEER_POOL_SIZE, upsert SET ${PEER_UPSERT_SET:-excluded});" \
  "Postgres CPU: the cluster's processes (backends, WAL writer, checkpointer) from the load's start to the vector DB's drain;" \
  "migrate timed with $MIG_TOOL; C programs from $B."
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); nproc $(nproc), shared by Postgres, the service, the emulator and loadgen; load average at start $LOAD_AT_START."
echo
for v in "${VERIFY[@]}"; do echo "check: $v"; done
if [ -n "${RESULTS:-}" ]; then
  {
    echo "reg_n=$N"
    echo "reg_concurrency=$C"
    echo "rounds=$ROUNDS"
    for sys in abilitysync peer; do
      for m in thr p50 p99 hwm cpu pgcpu emucpu lgcpu; do echo "${sys}_${m}=$(med "${sys}_$m")"; done
      echo "${sys}_hwm_kb=$(med "${sys}_hwm")"
      echo "${sys}_cpu_ms=$(calc %.3f "$(med "${sys}_cpu")")"
      echo "${sys}_p99_ms=$(med "${sys}_p99")"
      echo "${sys}_status=${STATUS[$sys.1]}"
      echo "${sys}_lost=${LOST[$sys]}"
    done
    echo "copy_rps=$(med copy_rps)"
    echo "copy_pgcpu=$(med copy_pgcpu)"
    echo "r_thr_peer=$(stats 'abilitysync_thr / peer_thr')"
    echo "r_thr_copy=$(stats 'abilitysync_thr / copy_rps')"
    echo "r_cpu_peer=$(stats 'abilitysync_cpu / peer_cpu')"
    echo "r_pgcpu_copy=$(stats 'abilitysync_pgcpu / copy_pgcpu')"
    echo "r_peer_pgcpu_copy=$(stats 'peer_pgcpu / copy_pgcpu')"
    echo "r_p99_peer=$(stats 'abilitysync_p99 / peer_p99')"
    echo "r_hwm_peer=$(stats 'abilitysync_hwm / peer_hwm')"
    echo "mig_abilitysync_ms=$MIG_A"
    echo "mig_npx_ms=$MIG_NPX"
    echo "mig_bin_ms=$MIG_BIN"
    echo "mig_tool=$MIG_TOOL"
    echo "peer_pool=$PEER_POOL_SIZE"
    echo "node_version=$(node --version)"
    echo "compare_failures=${#failures[@]}"
  } >>"$RESULTS"
fi
if [ ${#failures[@]} -gt 0 ]; then
  {
    echo
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! CHECK FAILED (data lost, or the systems did different work): this run's numbers do not count"
    for f in "${failures[@]}"; do echo "!!!   $f"; done
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  }
  echo "compare: CHECK FAILED, see above" >&2
  exit 1
fi
