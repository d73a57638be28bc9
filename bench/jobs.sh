#!/usr/bin/env bash
# jobs.sh - restore and reconcile of N abilities (default 100,000) at 3072
# dimensions against the emulator, measured in one run.
#
#   bench/jobs.sh [N]                 (N: BENCH_N, default 100000; make bench runs it through bench/all.sh)
#
# Starts its own PostgreSQL cluster and emulator (release builds), loads N
# generated rows with COPY (bench/gen_rows, piped: nothing on disk), then:
#   1. ROUNDS times: the emulator's ingest ceiling (vdb_push --ceiling, raw
#      libcurl posts of one prebuilt 500-vector body for 10 s, into a scratch
#      blob), then `abilitysync restore` of the N rows into the emptied
#      emulator: vectors/s against that ceiling, CPU and peak RSS;
#   2. (SPLIT=1) the same restore by two processes on one job (the second
#      joins with --resume and takes the parts the first does not hold): the
#      time against one process's (the median of the rounds);
#   3. RECONCILE_ROUNDS times: `abilitysync reconcile --dry-run` over them (a
#      GET per vector, the presence and content_hash check): time (the median
#      of the rounds and their min-max), CPU and peak RSS (the last round's);
#   4. the same reconcile over one service's rows (--service: a quarter of
#      them), to show its memory does not grow with the table;
#   5. (SPLIT=1) a real reconcile (nothing to repair: the dry run's work,
#      recorded part by part) by one process, then by two on one run (the
#      second joins it): the time of two against one's.
# Prints a markdown table. Never a timed test: the numbers are for reading.
# Checks, untimed: restore stored every row (done = N, the emulator holds N
# vectors) and the reconcile finds no drift; otherwise it says so and exits 1.
#
# Environment: ROUNDS (3: ceiling-then-restore rounds; the ratio is printed as
# their median and min-max), RECONCILE_ROUNDS (1), CEILING (1; 0 skips the ceiling: its body has
# 3072 dimensions, so it means nothing at another DIM), SPLIT (1), BUILD_DIR
# (build/release: where the C programs are), DIM (3072),
# JOB_TIMEOUT (3600 s: each job is killed after it), RESULTS (a file: the
# figures are appended to it as key=value lines, for bench/all.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-${BENCH_N:-100000}}
DIM=${DIM:-3072}
JOB_TIMEOUT=${JOB_TIMEOUT:-3600}
ROUNDS=${ROUNDS:-3}
RECONCILE_ROUNDS=${RECONCILE_ROUNDS:-1}
CEILING=${CEILING:-1}
SPLIT=${SPLIT:-1}
B=${BUILD_DIR:-build/release}
TMP=$(mktemp -d /tmp/abilitysync-jobs.XXXXXX)
chmod 755 "$TMP"
emu_pid=""

cleanup() {
  [ -z "$emu_pid" ] || kill -TERM "$emu_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  tools/pgcluster.sh stop "$TMP/pg" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

for t in abilitysync vdb-emulator gen_rows vdb_push; do
  [ -x "$B/$t" ] || { echo "bench: $B/$t missing: run make all bench-tools"; exit 1; }
done
# shellcheck source=bench/lib.sh
. bench/lib.sh

base=$(tools/pgcluster.sh start "$TMP/pg")
base=${base%/postgres}
psql -X -q "$base/postgres" -c "CREATE DATABASE jobs" >/dev/null
export DATABASE_URL="$base/jobs"
"$B/abilitysync" migrate up 2>/dev/null
echo "loading $N rows of $DIM dimensions with COPY ..." >&2
"$B/gen_rows" --rows "$N" --dim "$DIM" --seed 5 2>/dev/null |
  psql -X -q "$DATABASE_URL" -c "\\copy abilities (ability_id, vector_id, ability_name, service_name, description, embedding, dynamic_header_keys, dynamic_headers_required, metadata) FROM STDIN"
psql -X -q "$DATABASE_URL" -c "VACUUM ANALYZE abilities" >/dev/null
# Rows whose vector_id another row of their service already has (31-bit hashes:
# about one pair in 100,000 rows): restore keeps one and fails the other, and
# reconcile counts it as failed. Expected, not lost.
collisions=$(psql -X -A -t "$DATABASE_URL" -c \
  "SELECT count(*) - count(DISTINCT (service_name, vector_id)) FROM abilities")
expect_rc=$([ "$collisions" = 0 ] && echo 0 || echo 3)

"$B/vdb-emulator" --listen 127.0.0.1:0 --port-file "$TMP/emu.port" >"$TMP/emu.log" 2>&1 &
emu_pid=$!
for _ in $(seq 1 100); do [ -s "$TMP/emu.port" ] && break; sleep 0.05; done
VECTOR_DB_API="http://127.0.0.1:$(cat "$TMP/emu.port")"
export VECTOR_DB_API LOG_LEVEL=warn EMBEDDING_DIM=$DIM

measure() { # name command...: wall s, our CPU ms, peak RSS KB, emulator CPU ms, exit status, Postgres CPU ms
  local e0 e1 g0 g1 rc=0 before
  before=$(pg_children "$TMP/pg/data")
  e0=$(ticks "$emu_pid")
  g0=$(pg_ticks "$TMP/pg/data")
  /usr/bin/time -f "%e %U %S %M" -o "$TMP/$1.time" timeout "$JOB_TIMEOUT" "${@:2}" >"$TMP/$1.out" 2>"$TMP/$1.err" || rc=$?
  e1=$(ticks "$emu_pid")
  pg_reaped "$TMP/pg/data" "$before" # the job's backends: counted once reaped
  g1=$(pg_ticks "$TMP/pg/data")
  # GNU time starts with "Command exited with non-zero status N" when it did.
  read -r wall user sys rss < <(tail -n 1 "$TMP/$1.time")
  echo "$wall $(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%d", (u + s) * 1000}') $rss $(((e1 - e0) * 10)) $rc $(((g1 - g0) * 10))"
}
failures=()
json_or_die() { # name key: the key of the job's JSON output, or why it has none
  jq -er "$2" "$TMP/$1.out" 2>/dev/null && return
  echo "jobs: $1 printed no $2 (exit $3; 124: killed after JOB_TIMEOUT=${JOB_TIMEOUT}s):" >&2
  tail -5 "$TMP/$1.err" >&2
  exit 1
}

median3() { # the median, min and max of the numbers on stdin
  sort -g | awk '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.4f %.4f %.4f", m, v[1], v[NR] }'
}
emu_vectors() { curl -fsS "$VECTOR_DB_API/tenants/${VECTOR_DB_TENANT:-reverse_engineer}/blobs" | jq '[.blobs[]?.count] | add // 0'; }

# Every restore starts from the same state: the mirror as the COPY left it (no
# sync state, no ledger, no jobs) and an empty vector DB. A restore over the
# last one's sync state (every row updated twice more, dead tuples left) can be
# slower, and would make the later measurements (the two-process one) unlike
# the first.
fresh_start() {
  curl -fsS -X POST "$VECTOR_DB_API/_admin/reset" >/dev/null
  psql -X -q "$DATABASE_URL" -c "TRUNCATE abilitysync.sync_state, abilitysync.vector_ledger, abilitysync.blobs,
    abilitysync.restore_parts, abilitysync.restore_jobs" -c "VACUUM ANALYZE" >/dev/null
}

# Restore against the ceiling, ROUNDS times: the ceiling measured (raw posts into a
# scratch tenant), the emulator emptied, the whole table restored into it.
ratios=()
walls=()
ceiling=0
for rd in $(seq 1 "$ROUNDS"); do
  echo "round $rd of $ROUNDS: the emulator's ceiling, then restore ..." >&2
  curl -fsS -X POST "$VECTOR_DB_API/_admin/reset" >/dev/null
  if [ "$CEILING" = 1 ]; then
    "$B/vdb_push" --url "$VECTOR_DB_API" --ceiling --seconds 10 --tenant ceiling --json >"$TMP/ceiling.json" 2>/dev/null
    ceiling=$(jq -r '.ceiling.vectors_per_s' "$TMP/ceiling.json")
  fi
  fresh_start
  read -r r_wall r_cpu r_rss r_emu r_rc r_pg <<<"$(measure restore "$B/abilitysync" restore --json)"
  restored=$(json_or_die restore .done "$r_rc")
  vectors=$(emu_vectors)
  r_failed=$(json_or_die restore .failed "$r_rc")
  [ "$r_rc" = "$expect_rc" ] && [ "$restored" = $((N - collisions)) ] && [ "$vectors" = $((N - collisions)) ] &&
    [ "$r_failed" = "$collisions" ] ||
    failures+=("restore (round $rd): exit $r_rc, $restored/$N abilities done, $r_failed failed ($collisions vector_id collisions), $vectors/$N vectors in the emulator")
  ratios+=("$(awk -v d="$restored" -v w="$r_wall" -v c="$ceiling" 'BEGIN { printf "%.4f", (c > 0 ? d / w / c : 0) }')")
  walls+=("$r_wall")
  echo "round $rd: restore $restored in $r_wall s, ceiling $ceiling vectors/s: $(awk -v d="$restored" -v w="$r_wall" 'BEGIN { printf "%.0f", d / w }') vectors/s, ratio ${ratios[-1]}" >&2
done
restore_ratio=$(printf '%s\n' "${ratios[@]}" | median3)
restore_wall=$(printf '%s\n' "${walls[@]}" | median3)

# The same restore by two processes on one job: the second joins once the
# first has cut the job into parts.
split_wall=""
if [ "$SPLIT" = 1 ]; then
  echo "restore by two processes ..." >&2
  fresh_start
  t0=$(date +%s.%N)
  timeout "$JOB_TIMEOUT" "$B/abilitysync" restore --json >"$TMP/split1.out" 2>"$TMP/split1.err" &
  first=$!
  for _ in $(seq 1 600); do
    [ "$(psql -X -A -t "$DATABASE_URL" -c "SELECT count(*) FROM abilitysync.restore_parts p
      JOIN abilitysync.restore_jobs j ON j.id = p.job_id WHERE j.status = 'running'")" -gt 0 ] && break
    sleep 0.05
  done
  s2_rc=0
  timeout "$JOB_TIMEOUT" "$B/abilitysync" restore --resume --json >"$TMP/split2.out" 2>"$TMP/split2.err" || s2_rc=$?
  s1_rc=0
  wait "$first" || s1_rc=$?
  split_wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  vectors=$(emu_vectors)
  parts1=$(jq -r '.parts // "none"' "$TMP/split1.out" 2>/dev/null || echo none)
  parts2=$(jq -r '.parts // "none"' "$TMP/split2.out" 2>/dev/null || echo none)
  [ "$s1_rc" = "$expect_rc" ] && [ "$s2_rc" = "$expect_rc" ] && [ "$vectors" = $((N - collisions)) ] ||
    failures+=("restore by two processes: exit $s1_rc and $s2_rc, $vectors/$N vectors in the emulator ($collisions vector_id collisions)")
  echo "two processes: $split_wall s (parts: $parts1 and $parts2), one: ${restore_wall%% *} s (median)" >&2
fi
c_walls=()
for rd in $(seq 1 "$RECONCILE_ROUNDS"); do
  echo "reconcile ($rd of $RECONCILE_ROUNDS) ..." >&2
  read -r c_wall c_cpu c_rss c_emu c_rc c_pg <<<"$(measure reconcile "$B/abilitysync" reconcile --dry-run --json)"
  checked=$(json_or_die reconcile .checked.vectors "$c_rc")
  drift=$(json_or_die reconcile .total "$c_rc")
  c_failed=$(json_or_die reconcile .drift.failed.count "$c_rc")
  [ "$c_rc" = "$expect_rc" ] && [ "$checked" -ge $((N - collisions)) ] && [ "$drift" = "$collisions" ] &&
    [ "$c_failed" = "$collisions" ] ||
    failures+=("reconcile --dry-run (round $rd): exit $c_rc, $checked/$N vectors checked, $drift drifted ($c_failed failed; $collisions vector_id collisions)")
  c_walls+=("$c_wall")
done
reconcile_wall=$(printf '%s\n' "${c_walls[@]}" | median3)
# A real run by one process, then by two (the second joins once the first has
# cut the run into parts): both print the run's report, every row checked once.
real_reconcile() { # processes: wall seconds
  local t0 first rc1=0 rc2=0 i
  psql -X -q "$DATABASE_URL" -c "TRUNCATE abilitysync.reconcile_parts, abilitysync.reconcile_runs" >/dev/null
  t0=$(date +%s.%N)
  timeout "$JOB_TIMEOUT" "$B/abilitysync" reconcile --json >"$TMP/real1.out" 2>"$TMP/real1.err" &
  first=$!
  if [ "$1" = 2 ]; then
    for _ in $(seq 1 600); do
      [ "$(psql -X -A -t "$DATABASE_URL" -c "SELECT count(*) FROM abilitysync.reconcile_parts")" -gt 0 ] && break
      sleep 0.05
    done
    timeout "$JOB_TIMEOUT" "$B/abilitysync" reconcile --json >"$TMP/real2.out" 2>"$TMP/real2.err" || rc2=$?
  fi
  wait "$first" || rc1=$?
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", b - a }'
  for i in $(seq 1 "$1"); do
    [ "$(jq -c '[.status, .checked.rows]' "$TMP/real$i.out" 2>/dev/null)" = "[\"ok\",$N]" ] ||
      echo "real reconcile by $1 process(es): process $i (exit $rc1/$rc2) printed $(head -c 300 "$TMP/real$i.out")" >&2
  done
}
real1_wall=""
real2_wall=""
if [ "$SPLIT" = 1 ]; then
  echo "real reconcile by one process, then by two ..." >&2
  real1_wall=$(real_reconcile 1 2>"$TMP/real.check")
  real2_wall=$(real_reconcile 2 2>>"$TMP/real.check")
  [ ! -s "$TMP/real.check" ] || failures+=("$(cat "$TMP/real.check")")
  echo "real reconcile: two processes $real2_wall s, one $real1_wall s" >&2
fi
half_service=$(psql -X -A -t "$DATABASE_URL" -c "SELECT service_name FROM abilities GROUP BY 1 ORDER BY 1 LIMIT 1")
read -r h_wall _ h_rss _ h_rc _ <<<"$(measure half "$B/abilitysync" reconcile --dry-run --json --service "$half_service")"
h_checked=$(json_or_die half .checked.vectors "$h_rc")

awk -v n="$N" -v ceiling="$ceiling" -v rw="$r_wall" -v rc="$r_cpu" -v rr="$r_rss" -v re="$r_emu" -v done="$restored" \
  -v cw="$c_wall" -v cc="$c_cpu" -v cr="$c_rss" -v ce="$c_emu" -v checked="$checked" -v drift="$drift" \
  -v rp="$r_pg" -v cp="$c_pg" \
  -v hw="$h_wall" -v hr="$h_rss" -v hc="$h_checked" -v dim="$DIM" -v col="$collisions" -v rr3="$restore_ratio" \
  -v sw="$split_wall" -v w3="$restore_wall" -v k1="$real1_wall" -v k2="$real2_wall" -v cw3="$reconcile_wall" \
  -v crd="$RECONCILE_ROUNDS" 'BEGIN {
  rate = done / rw
  printf "| job | abilities | time | rate | ratio | CPU ms per ability: abilitysync / emulator / Postgres | peak RSS |\n"
  printf "|---|---|---|---|---|---|---|\n"
  if (ceiling > 0)
    printf "| emulator ingest ceiling (raw posts) | | 10 s | %d vectors/s | 1 | | |\n", ceiling
  split(rr3, q, " ")
  if (ceiling > 0)
    printf "| restore (last of the rounds) | %d | %.1f s | %d vectors/s | **%.2f** (%.2f–%.2f) of the ceiling, median of the rounds | %.2f / %.2f / %.2f | %.0f MB |\n", done, rw, rate, q[1], q[2], q[3], rc / done, re / done, rp / done, rr / 1024
  else
    printf "| restore (last of the rounds) | %d | %.1f s | %d vectors/s | | %.2f / %.2f / %.2f | %.0f MB |\n", done, rw, rate, rc / done, re / done, rp / done, rr / 1024
  split(w3, w, " ")
  if (sw != "")
    printf "| restore by two processes | %d | %.1f s | %d vectors/s | **%.2f** × one process (%.1f s, median) | | |\n", done, sw, done / sw, w[1] / sw, w[1]
  split(cw3, c3, " ")
  if (crd > 1)
    printf "| reconcile --dry-run (median of %d rounds, min-max) | %d | %.1f s (%.1f-%.1f) | %d checks/s | | %.2f / %.2f / %.2f | %.0f MB |\n", crd, checked, c3[1], c3[2], c3[3], checked / c3[1], cc / checked, ce / checked, cp / checked, cr / 1024
  else
    printf "| reconcile --dry-run | %d | %.1f s | %d checks/s | | %.2f / %.2f / %.2f | %.0f MB |\n", checked, cw, checked / cw, cc / checked, ce / checked, cp / checked, cr / 1024
  printf "| reconcile --dry-run, one service | %d | %.1f s | %d checks/s | | | %.0f MB |\n", hc, hw, hc / hw, hr / 1024
  if (k1 != "" && k2 != "")
    printf "| reconcile (real) by two processes | %d | %.1f s | %d checks/s | **%.2f** × one process (%.1f s) | | |\n", n, k2, n / k2, k1 / k2, k1
  printf "\n%d abilities of %d dimensions; %d vector_id collisions (restore keeps one row of a pair, fails the other; reconcile counts it failed); reconcile found %d drifted; ", n, dim, col, drift
}'
echo "$(nproc) cores shared by Postgres, abilitysync and the emulator; $(date -u +%Y-%m-%d)."
if [ -n "${RESULTS:-}" ]; then
  {
    echo "jobs_n=$N"
    echo "ceiling_vps=$ceiling"
    echo "restore_done=$restored"
    echo "r_restore_ceiling=$restore_ratio"
    echo "restore_s=$r_wall"
    echo "restore_median_s=${restore_wall%% *}"
    echo "restore_split_s=$split_wall"
    echo "restore_rss_kb=$r_rss"
    echo "restore_pgcpu_ms=$(awk -v p="$r_pg" -v d="$restored" 'BEGIN { printf "%.4f", (d > 0 ? p / d : 0) }')"
    echo "reconcile_checked=$checked"
    echo "reconcile_drift=$drift"
    echo "collisions=$collisions"
    echo "reconcile_s=${reconcile_wall%% *}"
    echo "reconcile_walls=$reconcile_wall"
    echo "restore_walls=$restore_wall"
    echo "reconcile_rss_kb=$c_rss"
    echo "reconcile_half_checked=$h_checked"
    echo "reconcile_half_rss_kb=$h_rss"
    echo "reconcile_real_s=$real1_wall"
    echo "reconcile_real_split_s=$real2_wall"
    echo "jobs_failures=${#failures[@]}"
  } >>"$RESULTS"
fi
if [ ${#failures[@]} -gt 0 ]; then
  for f in "${failures[@]}"; do echo "jobs: LOST: $f" >&2; echo "LOST: $f"; done
  exit 1
fi
