#!/usr/bin/env bash
# copy_baseline.sh - what Postgres alone does with abilities rows: the floor
# under any write path of the service.
#
#   DATABASE_URL=postgres://user@host:port/db bench/copy_baseline.sh [N]
#
# Generates N rows (default 2000) shaped like loadgen's abilities (3072-d
# embeddings, 9 significant digits, as a JSON array in the jsonb column) into
# files first, then times with `date +%s%N` around each psql call:
#   (a) COPY abilities (...) FROM STDIN into the emptied table;
#   (b) the same rows, emptied again, as one INSERT ... ON CONFLICT (ability_id)
#       DO UPDATE per 100 rows (the service's conflict clause; every row is new);
#   (c) (b) once more over the rows (b) left: every row takes the DO UPDATE path.
# Each time includes one psql start and connection (a few ms).
#
# The database must be migrated (abilitysync migrate up). The script empties
# `abilities` (TRUNCATE) and refuses when it holds rows that are not the
# benchmarks' (ability_id not starting with "bench"), unless ALLOW_TRUNCATE=1.
#
# Environment: DIM (default 3072), PER (rows per INSERT, default 100), SEED
# (default 1), GEN_ROWS (the generator; default build/release/gen_rows, built
# into a temporary directory when missing).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

die() { echo "copy_baseline: $*" >&2; exit 2; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
esac

rows=${1:-2000}
dim=${DIM:-3072}
per=${PER:-100}
seed=${SEED:-1}
[[ $rows =~ ^[1-9][0-9]{0,7}$ ]] || die "N must be a number from 1 to 99999999, not '$rows'"
[[ $dim =~ ^[1-9][0-9]{0,4}$ ]] || die "DIM must be a positive number, not '$dim'"
[[ $per =~ ^[1-9][0-9]{0,5}$ ]] || die "PER must be a positive number, not '$per'"
[[ $seed =~ ^[0-9]{1,9}$ ]] || die "SEED must be a number, not '$seed'"
[ -n "${DATABASE_URL:-}" ] || die "DATABASE_URL is not set (a migrated database; see --help)"
command -v psql >/dev/null || die "psql not found"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The generator: the one the Makefile builds, else compiled here.
gen=${GEN_ROWS:-$root/build/release/gen_rows}
if [ ! -x "$gen" ]; then
  lib=$root/build/release/libabilitysync.a
  [ -f "$lib" ] || die "$lib is missing: run make first"
  gen=$tmp/gen_rows
  # shellcheck disable=SC2046 # pkg-config prints several words on purpose
  gcc -std=c11 -D_GNU_SOURCE -O2 -I"$root/include" -o "$gen" "$root/bench/gen_rows.c" "$lib" \
    $(pkg-config --cflags --libs libpq jansson libcrypto libssl libevent libcurl) -lm ||
    die "could not build bench/gen_rows.c"
fi

psql_do() {
  psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" "$@"
}

cols="ability_id, vector_id, ability_name, service_name, description, embedding, dynamic_header_keys, dynamic_headers_required, metadata"

# ---- preparation (not timed) ----------------------------------------------

psql_do -c 'SELECT 1 FROM abilities LIMIT 0' >/dev/null 2>&1 ||
  die "no abilities table at the DATABASE_URL (run: abilitysync migrate up)"
foreign=$(psql_do -At -c "SELECT count(*) FROM abilities WHERE ability_id NOT LIKE 'bench%'")
if [ "$foreign" != 0 ] && [ "${ALLOW_TRUNCATE:-}" != 1 ]; then
  die "abilities holds $foreign rows that are not the benchmarks'; this script empties the table (ALLOW_TRUNCATE=1 to allow it)"
fi

"$gen" --rows "$rows" --dim "$dim" --seed "$seed" --format copy >"$tmp/rows.copy"
"$gen" --rows "$rows" --dim "$dim" --seed "$seed" --format insert --per "$per" >"$tmp/rows.sql"
statements=$(( (rows + per - 1) / per ))

# ---- the runs ----------------------------------------------------------------

# Runs psql with the arguments given (stdin passed through) and prints the
# nanoseconds it took.
timed() {
  local t0 t1
  t0=$(date +%s%N)
  psql_do "$@" >/dev/null
  t1=$(date +%s%N)
  echo $((t1 - t0))
}

check_count() {
  local n
  n=$(psql_do -At -c 'SELECT count(*) FROM abilities')
  [ "$n" = "$rows" ] || die "abilities holds $n rows after $1, not $rows"
}

psql_do -c 'TRUNCATE abilities'
copy_ns=$(timed -c "COPY abilities ($cols) FROM STDIN" <"$tmp/rows.copy")
check_count COPY

psql_do -c 'TRUNCATE abilities'
insert_ns=$(timed -f "$tmp/rows.sql")
check_count INSERT

update_ns=$(timed -f "$tmp/rows.sql")
check_count 'INSERT over existing rows'

overhead_ns=$(timed -c 'SELECT 1')

# ---- the report ----------------------------------------------------------------

target=$(printf '%s' "$DATABASE_URL" | sed -E 's#^(postgres(ql)?://)[^@/]*@#\1#')
copy_bytes=$(wc -c <"$tmp/rows.copy")

line() { # label nanoseconds
  awk -v label="$1" -v ns="$2" -v n="$rows" \
    'BEGIN { s = ns / 1e9; printf "  %-38s %d rows in %.3f s = %.0f rows/s\n", label, n, s, n / s }'
}

awk -v n="$rows" -v d="$dim" -v b="$copy_bytes" -v t="$target" \
  'BEGIN { printf "copy_baseline: %d rows (%d-d, %.1f MB as COPY text) into abilities at %s\n", n, d, b / 1e6, t }'

line "(a) COPY FROM STDIN" "$copy_ns"
line "(b) INSERT ON CONFLICT, $per rows each" "$insert_ns"
line "(c) the same over existing rows" "$update_ns"
awk -v c="$copy_ns" -v i="$insert_ns" -v u="$update_ns" -v s="$statements" \
  'BEGIN { printf "  %-38s %.2f (b), %.2f (c); %d statements each\n", "INSERT rows/s over COPY rows/s", c / i, c / u, s }'
awk -v ns="$overhead_ns" 'BEGIN { printf "  %-38s %.3f s, included in each time above\n", "psql start + connect + SELECT 1", ns / 1e9 }'
