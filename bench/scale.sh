#!/usr/bin/env bash
# scale.sh - what grows with the rows: restore and reconcile of SMALL and of
# LARGE abilities (default 100,000 and 1,000,000), each a fresh database loaded
# with COPY and a fresh emulator (bench/jobs.sh, SCALE_ROUNDS rounds of each
# job), and the restore of LARGE by two processes on one job against one
# process (a real reconcile of LARGE too; one round each).
#
#   bench/scale.sh                    SCALE_SMALL=100000 SCALE_LARGE=1000000 SCALE_DIM=64 SCALE_ROUNDS=3
#
# A ratio of time per row is the median's (LARGE's median time per row over
# SMALL's) and its min-max the extremes the rounds allow (LARGE's fastest over
# SMALL's slowest, LARGE's slowest over SMALL's fastest): one round of a 5 s
# job moves by 10 % on this machine.
#
# The embeddings have SCALE_DIM (64) numbers: the row count is what is
# measured, and 1,000,000 rows of 3072 numbers (~70 GB of jsonb) do not fit
# the machine's time. At 64 numbers the vector DB is not the bottleneck:
# Postgres is, so a second process has a core to use. Prints a markdown table
# of ratios (LARGE against SMALL: time per row, peak RSS); exits 1 when a run
# did not restore or check every row; the table also goes to
# build/figures/scale.md (the README's, by make readme-tables). RESULTS (a
# file): the figures are appended as key=value lines, for bench/all.sh. Never
# a timed test.
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL=${SCALE_SMALL:-100000}
LARGE=${SCALE_LARGE:-1000000}
DIM=${SCALE_DIM:-64}
RUNS=${SCALE_ROUNDS:-3}
TMP=$(mktemp -d /tmp/abilitysync-scale.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

declare -A S L
run() { # N FILE: bench/jobs.sh at N rows, its figures in FILE; its table to stderr
  echo "== bench/scale.sh: $1 abilities of $DIM dimensions" >&2
  local rc=0
  RESULTS=$2 DIM=$DIM ROUNDS=$RUNS RECONCILE_ROUNDS=$RUNS CEILING=0 SPLIT=$3 bench/jobs.sh "$1" >&2 || rc=$?
  return $rc
}
rc_small=0 rc_large=0
run "$SMALL" "$TMP/small" 0 || rc_small=$?
run "$LARGE" "$TMP/large" 1 || rc_large=$?
while IFS='=' read -r k v; do S[$k]=$v; done <"$TMP/small"
while IFS='=' read -r k v; do L[$k]=$v; done <"$TMP/large"
for k in restore_walls reconcile_walls restore_rss_kb reconcile_rss_kb restore_split_s; do
  [ -n "${L[$k]:-}" ] || { echo "bench/scale.sh: no $k for $LARGE rows (bench/jobs.sh exit $rc_large)" >&2; exit 2; }
done
for k in restore_walls reconcile_walls restore_rss_kb reconcile_rss_kb; do
  [ -n "${S[$k]:-}" ] || { echo "bench/scale.sh: no $k for $SMALL rows (bench/jobs.sh exit $rc_small)" >&2; exit 2; }
done

f() { awk "BEGIN { printf \"$1\", $2 }"; }
# per_row JOB: "median min max" of LARGE's time per row over SMALL's (see above)
per_row() {
  awk -v s="${S[$1_walls]}" -v l="${L[$1_walls]}" -v ns="$SMALL" -v nl="$LARGE" 'BEGIN {
    split(s, a, " "); split(l, b, " ")
    printf "%.4f %.4f %.4f", (b[1] / nl) / (a[1] / ns), (b[2] / nl) / (a[3] / ns), (b[3] / nl) / (a[2] / ns) }'
}
# walls JOB SIDE: "median s (min-max)"
walls() { local -n side=$2; awk -v w="${side[$1_walls]}" 'BEGIN { split(w, a, " "); printf "%.1f s (%.1f-%.1f)", a[1], a[2], a[3] }'; }
row() { # JOB LABEL
  local r
  read -r -a r <<<"$(per_row "$1")"
  echo "| $2 | $(walls "$1" S), $(f %.0f "${S[$1_rss_kb]} / 1024") MB | $(walls "$1" L), $(f %.0f "${L[$1_rss_kb]} / 1024") MB |" \
    "**$(f %.2f "${r[0]}")** ($(f %.2f "${r[1]}")-$(f %.2f "${r[2]}")) | **$(f %.2f "${L[$1_rss_kb]} / ${S[$1_rss_kb]}")** |"
}
table() {
echo "| job, $DIM dimensions (median of $RUNS rounds, min-max) | $SMALL rows | $LARGE rows | time per row, $LARGE / $SMALL | peak RSS, $LARGE / $SMALL |"
echo "|---|---|---|---|---|"
row restore "restore (one process)"
row reconcile "reconcile --dry-run"
echo
echo "Restore of $LARGE rows by two processes on one job: $(f %.1f "${L[restore_split_s]}") s (one round) against" \
  "$(f %.1f "${L[restore_median_s]}") s for one (the median): **$(f %.2f "${L[restore_median_s]} / ${L[restore_split_s]}")×**."
if [ -n "${L[reconcile_real_split_s]:-}" ]; then
  echo "A real reconcile run over them (nothing to repair) by two processes: $(f %.1f "${L[reconcile_real_split_s]}") s" \
    "against $(f %.1f "${L[reconcile_real_s]}") s for one (one round each): **$(f %.2f "${L[reconcile_real_s]} / ${L[reconcile_real_split_s]}")×**."
fi
echo "$(nproc) cores shared by Postgres, abilitysync and the emulator; $(date -u +%Y-%m-%d)."
}
table >"$TMP/table.md"
cat "$TMP/table.md"
if [ "$rc_small" = 0 ] && [ "$rc_large" = 0 ]; then # the README's figure:scale (make readme-tables)
  mkdir -p build/figures
  cp "$TMP/table.md" build/figures/scale.md
fi
if [ -n "${RESULTS:-}" ]; then
  {
    echo "scale_small=$SMALL"
    echo "scale_large=$LARGE"
    echo "scale_dim=$DIM"
    echo "scale_rounds=$RUNS"
    echo "scale_restore_row=$(per_row restore)"
    echo "scale_reconcile_row=$(per_row reconcile)"
    echo "scale_restore_rss=$(f %.4f "${L[restore_rss_kb]} / ${S[restore_rss_kb]}")"
    echo "scale_reconcile_rss=$(f %.4f "${L[reconcile_rss_kb]} / ${S[reconcile_rss_kb]}")"
    echo "scale_restore_large_s=${L[restore_median_s]}"
    echo "scale_reconcile_large_s=${L[reconcile_s]}"
    echo "scale_split_large_s=${L[restore_split_s]}"
    echo "scale_failures=$((S[jobs_failures] + L[jobs_failures]))"
  } >>"$RESULTS"
fi
[ "$rc_small" = 0 ] && [ "$rc_large" = 0 ]
