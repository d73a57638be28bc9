#!/usr/bin/env bash
# all.sh - `make bench`: the figures the project is judged by, each a ratio of
# two measurements taken in this run on this machine, as one markdown table.
#
#   bench/all.sh                  REG_N=5000 registrations per system, BENCH_N=100000 abilities
#   REG_N=1000 BENCH_N=5000 bench/all.sh      a quick run (minutes, not the published size)
#
# Runs, one after the other (nothing else of this benchmark runs meanwhile):
#   bench/compare.sh REG_N   abilitysync serve and bench/peer (the original app's
#                            registration path: fetch to the vector DB, then a
#                            drizzle-orm upsert) under the same load, each with a
#                            fresh emulator and database of the same cluster; COPY
#                            of the same rows; no-op `abilitysync migrate up` vs
#                            `npx drizzle-kit migrate`; the loss check.
#   bench/jobs.sh BENCH_N    restore of BENCH_N abilities vs the emulator's ingest
#                            ceiling, and by two processes vs one; reconcile
#                            --dry-run of them: time, peak RSS.
#   bench/scale.sh           (SCALE=0 skips it) restore and reconcile of 100,000
#                            and 1,000,000 abilities of 64 dimensions: time per
#                            row and peak RSS, large against small; the large
#                            restore by two processes against one.
# Their own, more detailed, tables go to stderr as they finish; stdout gets the
# one table. Exit 1 when an acknowledged ability is missing from Postgres or the
# vector DB (either system), or restore/reconcile did not cover every row; 2 on
# a failure to measure. Never part of `make test`.
#
# Environment: REG_N, BENCH_N, BUILD_DIR (build/release: the C programs, e.g. of
# a `git archive HEAD` built elsewhere while the tree is being edited),
# STEP_TIMEOUT (5400 s: each of the two scripts is killed after it), and every
# variable of compare.sh (CONCURRENCY, PEER_POOL_SIZE, ORDER, ...) and jobs.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
REG_N=${REG_N:-5000}
BENCH_N=${BENCH_N:-100000}
STEP_TIMEOUT=${STEP_TIMEOUT:-5400}
export BUILD_DIR=${BUILD_DIR:-build/release}
TMP=$(mktemp -d /tmp/abilitysync-bench-all.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export RESULTS=$TMP/results
: >"$RESULTS"

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
t0=$(date +%s)

declare -A RC R
step() { # name command...: its stdout to stderr as well; its exit status in RC[name]
  local rc=0
  echo "== bench/all.sh: ${*:2} (timeout ${STEP_TIMEOUT}s)" >&2
  timeout "$STEP_TIMEOUT" "${@:2}" >"$TMP/$1.out" || rc=$?
  cat "$TMP/$1.out" >&2
  echo >&2
  RC[$1]=$rc
}
step compare bench/compare.sh "$REG_N"
step jobs bench/jobs.sh "$BENCH_N"
RC[scale]=skipped
[ "${SCALE:-1}" = 0 ] || step scale bench/scale.sh

# The figures, key=value lines the two scripts appended.
while IFS='=' read -r k v; do R[$k]=$v; done <"$RESULTS"
if [ -z "${R[abilitysync_thr]:-}" ] || [ -z "${R[peer_thr]:-}" ] || [ -z "${R[mig_abilitysync_ms]:-}" ]; then
  echo "bench/all.sh: bench/compare.sh measured nothing (exit ${RC[compare]}): see above" >&2
  exit 2
fi
if [ -z "${R[restore_s]:-}" ] || [ -z "${R[reconcile_s]:-}" ]; then
  echo "bench/all.sh: bench/jobs.sh measured nothing (exit ${RC[jobs]}): see above" >&2
  exit 2
fi

f() { awk "BEGIN { printf \"$1\", $2 }"; } # f FORMAT EXPRESSION
# spread KEY: "**median** (min–max)" of a ratio compare.sh or jobs.sh measured over rounds.
spread() { awk '{ printf "**%.2f** (%.2f–%.2f)", $1, $2, $3 }' <<<"${R[$1]}"; }
mb() { f "%.0f" "$1 / 1024"; }
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)

# Why registration cannot reach COPY's rate here: every process of a
# registration shares the cores, and COPY's rows do only the Postgres part.
cpu_budget() {
  local svc=${R[abilitysync_cpu]} pg=${R[abilitysync_pgcpu]} emu=${R[abilitysync_emucpu]} lg=${R[abilitysync_lgcpu]} n sum
  n=$(nproc)
  sum=$(f %.4f "$svc + $pg + $emu + $lg")
  echo "Where a registration's CPU goes (medians, ms per ability, every process on these $n cores): the service" \
    "$(f %.3f "$svc"), Postgres $(f %.3f "$pg"), the emulator (the vector DB's side) $(f %.3f "$emu"), loadgen" \
    "$(f %.3f "$lg"): $(f %.2f "$sum") ms, so the cores allow at most $(f %.0f "$n * 1000 / $sum") abilities/s" \
    "(measured: $(f %.0f "${R[abilitysync_thr]}")/s). A \`COPY\` row costs Postgres $(f %.3f "${R[copy_pgcpu]}") ms" \
    "(and psql's reading of the file) and makes no vector DB work: 0.9 of COPY's rate would leave" \
    "$(f %.2f "$n * 1000 / (0.9 * ${R[copy_rps]})") ms of the cores per ability, against the" \
    "$(f %.2f "$sum") a registration takes here ($(f %.2f "$pg + $emu") of them Postgres and the vector DB)."
}

# The table, on stdout; kept in build/figures/bench.md when it counts
# (`make readme-tables` copies it into the README).
report() {
  echo "## abilitysync: \`make bench\`, $STARTED"
  echo
  echo "| figure (both sides measured in this run; median of ${R[rounds]} rounds, min–max) | ratio | abilitysync | reference | aim |"
  echo "|---|---|---|---|---|"
  echo "| registration throughput / the peer's | $(spread r_thr_peer) |" \
    "$(f %.0f "${R[abilitysync_thr]}") abilities/s | $(f %.0f "${R[peer_thr]}") abilities/s (peer) | ≥ 2 |"
  echo "| registration throughput / raw \`COPY\` of the same rows | $(spread r_thr_copy) |" \
    "$(f %.0f "${R[abilitysync_thr]}") abilities/s | $(f %.0f "${R[copy_rps]}") rows/s (COPY) | ≥ 0.9 |"
  echo "| service CPU per ability / the peer's | $(spread r_cpu_peer) |" \
    "$(f %.3f "${R[abilitysync_cpu]}") ms | $(f %.3f "${R[peer_cpu]}") ms (peer) | ≤ 0.2 ms ours |"
  echo "| Postgres CPU per ability / COPY's per row | $(spread r_pgcpu_copy) |" \
    "$(f %.3f "${R[abilitysync_pgcpu]}") ms | $(f %.3f "${R[copy_pgcpu]}") ms (COPY; the peer: $(f %.3f "${R[peer_pgcpu]}") ms, $(spread r_peer_pgcpu_copy)) | ≤ 1.15 |"
  echo "| p99 latency / the peer's | $(spread r_p99_peer) |" \
    "$(f %.1f "${R[abilitysync_p99_ms]}") ms | $(f %.1f "${R[peer_p99_ms]}") ms (peer) | ≤ 0.5 |"
  echo "| peak RSS under that load / the peer's | $(spread r_hwm_peer) |" \
    "$(mb "${R[abilitysync_hwm_kb]}") MB | $(mb "${R[peer_hwm_kb]}") MB (peer) | ≤ 0.1 |"
  echo "| restore of ${R[restore_done]} abilities: vectors/s / the emulator's ingest ceiling | $(spread r_restore_ceiling) |" \
    "$(f %.0f "${R[restore_done]} / ${R[restore_s]}") vectors/s ($(f %.1f "${R[restore_s]}") s, $(mb "${R[restore_rss_kb]}") MB peak RSS) | $(f %.0f "${R[ceiling_vps]}") vectors/s (raw posts; the last round's) | ≥ 0.85 |"
  echo "| reconcile --dry-run of ${R[reconcile_checked]} abilities: peak RSS / over ${R[reconcile_half_checked]} of them | **$(f %.2f "${R[reconcile_rss_kb]} / ${R[reconcile_half_rss_kb]}")** |" \
    "$(f %.1f "${R[reconcile_s]}") s ($(f %.0f "${R[reconcile_checked]} / ${R[reconcile_s]}") checks/s), $(mb "${R[reconcile_rss_kb]}") MB peak RSS | $(mb "${R[reconcile_half_rss_kb]}") MB peak RSS | flat (≈ 1) |"
  if [ -n "${R[restore_split_s]:-}" ]; then
    echo "| restore of ${R[restore_done]} abilities by two processes on one job: speed / one process's | **$(f %.2f "${R[restore_median_s]} / ${R[restore_split_s]}")** |" \
      "$(f %.1f "${R[restore_split_s]}") s (one round) | $(f %.1f "${R[restore_median_s]}") s (one process; median of the rounds) | > 1 |"
  fi
  if [ -n "${R[reconcile_real_split_s]:-}" ]; then
    echo "| reconcile (real) of ${R[jobs_n]} abilities by two processes on one run: speed / one process's | **$(f %.2f "${R[reconcile_real_s]} / ${R[reconcile_real_split_s]}")** |" \
      "$(f %.1f "${R[reconcile_real_split_s]}") s (one round) | $(f %.1f "${R[reconcile_real_s]}") s (one process, one round) | > 1 |"
  fi
  if [ -n "${R[scale_restore_row]:-}" ]; then
    echo "| reconcile --dry-run, time per row: ${R[scale_large]} rows / ${R[scale_small]} (${R[scale_dim]} dimensions, ${R[scale_rounds]} rounds; peak RSS ratio) | $(spread scale_reconcile_row) |" \
      "$(f %.1f "${R[scale_reconcile_large_s]}") s for ${R[scale_large]} (median) | RSS $(f %.2f "${R[scale_reconcile_rss]}") | ≤ 1.1, RSS flat |"
    echo "| restore, time per row: ${R[scale_large]} rows / ${R[scale_small]} (${R[scale_dim]} dimensions, ${R[scale_rounds]} rounds; peak RSS ratio) | $(spread scale_restore_row) |" \
      "$(f %.1f "${R[scale_restore_large_s]}") s for ${R[scale_large]} (median) | RSS $(f %.2f "${R[scale_restore_rss]}") | ≤ 1.1, RSS flat |"
    echo "| restore of ${R[scale_large]} rows (${R[scale_dim]} dimensions) by two processes: speed / one process's | **$(f %.2f "${R[scale_restore_large_s]} / ${R[scale_split_large_s]}")** |" \
      "$(f %.1f "${R[scale_split_large_s]}") s (one round) | $(f %.1f "${R[scale_restore_large_s]}") s (one process, median) | > 1 |"
  fi
  echo "| no-op migrate: \`npx drizzle-kit migrate\` time / \`abilitysync migrate up\` | **$(f %.1f "${R[mig_npx_ms]} / ${R[mig_abilitysync_ms]}")** |" \
    "$(f %.1f "${R[mig_abilitysync_ms]}") ms | $(f %.0f "${R[mig_npx_ms]}") ms (drizzle-kit via npx; $(f %.0f "${R[mig_bin_ms]}") ms without npx) | ≥ 10 |"
  echo
  echo "Registration: ${R[reg_n]} abilities of ${DIM:-3072} dimensions per system, single-ability POSTs over ${R[reg_concurrency]}" \
    "keep-alive connections (loadgen); peer: bench/peer on node ${R[node_version]}, pg pool ${R[peer_pool]}; answers:" \
    "abilitysync ${R[abilitysync_status]}, peer ${R[peer_status]}. CPU per ability (service process): abilitysync" \
    "${R[abilitysync_cpu_ms]} ms, peer ${R[peer_cpu_ms]} ms. Rounds: ${R[rounds]}, abilitysync and peer in alternating order, then COPY, each on a fresh database and emulator. Postgres CPU: every process of the cluster, from the load's start to the vector DB's drain. Migrate: ${R[mig_tool]}." \
    "Restore/reconcile: ${R[jobs_n]} abilities loaded with COPY, every restore (the two-process one too) from the same state: no sync state, an empty emulator."
  echo
  cpu_budget
  echo
  echo "Machine: $(nproc) cores ($cpu), shared by Postgres, the service or the peer, the emulator and the load" \
    "generator; load average at start $LOAD_AT_START; $(($(date +%s) - t0)) s in all."
  echo
  lost=$((R[abilitysync_lost] + R[peer_lost]))
  if [ "$lost" = 0 ] && [ "${RC[compare]}" = 0 ] && [ "${R[jobs_failures]}" = 0 ] && [ "${RC[jobs]}" = 0 ] &&
    [ "${R[scale_failures]:-0}" = 0 ] && { [ "${RC[scale]}" = 0 ] || [ "${RC[scale]}" = skipped ]; }; then
    echo "Loss check: passed. Every acknowledged ability is in Postgres and its vector in the vector DB" \
      "(abilitysync and peer); restore wrote ${R[restore_done]}/${R[jobs_n]}; reconcile checked ${R[reconcile_checked]}/${R[jobs_n]}, ${R[reconcile_drift]} drifted;" \
      "${R[collisions]} vector_id collisions among the generated rows (one row of each pair kept, the other failed, as expected)."
  else
    echo "Loss check: **FAILED**: acknowledged but lost: abilitysync ${R[abilitysync_lost]}, peer ${R[peer_lost]};" \
      "compare.sh exit ${RC[compare]}, jobs.sh exit ${RC[jobs]} (${R[jobs_failures]} failed checks), scale.sh exit ${RC[scale]}; see stderr. These numbers do not count."
    return 1
  fi
}

rc=0
report >"$TMP/report.md" || rc=$?
cat "$TMP/report.md"
if [ "$rc" = 0 ]; then
  mkdir -p build/figures
  cp "$TMP/report.md" build/figures/bench.md
  echo "bench/all.sh: the table is in build/figures/bench.md; \`make readme-tables\` copies it into README.md" >&2
fi
exit "$rc"
