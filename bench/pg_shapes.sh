#!/usr/bin/env bash
# pg_shapes.sh - where Postgres' CPU per registered ability goes beyond COPY's
# per row: the same rows written in the shapes of the service's work, one step
# added at a time, inside Postgres alone (no network, no service, no vector DB).
#
#   bench/pg_shapes.sh [N]     (N rows, default 3000)
#
# Starts its own cluster (tools/pgcluster.sh; sessions compress TOAST with lz4,
# as the service's and compare.sh's COPY do), migrates it, stages N generated
# rows (bench/gen_rows, loadgen's shapes: 3072 numbers) in an unlogged table,
# then for each shape empties the tables, checkpoints, and measures the CPU of
# every process of the cluster (bench/lib.sh pg_ticks) while it runs:
#   copy        COPY of the rows from a file (the floor make bench compares with)
#   insert      INSERT ... SELECT of the staged rows, text -> jsonb: the row work
#   +outbox     the write's shape: the row upserted (ON CONFLICT ... WHERE IS
#               DISTINCT FROM), its sync state and its ledger entry inserted
#   +outcome    then each sync state marked synced (a second write of it)
#   +commits    the same two statements a group of GROUP rows (default 5) at a
#               time, each its own transaction (a WAL flush per commit), as the
#               service commits each write group and each outcome
#   +sessions   that in SESSIONS sessions at once (default 4), each on its
#               share of the rows, as the service's pool runs them
# Prints ms of cluster CPU per row for each, its ratio to COPY's, the median of
# ROUNDS (default 3) rounds in alternating order. SHAPES_PGOPTIONS adds
# settings to every session (e.g. "-c synchronous_commit=off", to see what the
# commits' WAL flushes cost). Never a test: the numbers are for reading.
# shellcheck source=bench/lib.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

N=${1:-3000}
ROUNDS=${ROUNDS:-3}
GROUP=${GROUP:-5}
SESSIONS=${SESSIONS:-4}
B=${BUILD_DIR:-build/release}
[[ $N =~ ^[1-9][0-9]{0,6}$ ]] || { echo "pg_shapes: N must be a number of rows from 1 to 9999999, not '$N'" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || { echo "pg_shapes: ROUNDS must be 1 to 99, not '$ROUNDS'" >&2; exit 2; }
[[ $GROUP =~ ^[1-9][0-9]{0,3}$ ]] || { echo "pg_shapes: GROUP must be 1 to 9999, not '$GROUP'" >&2; exit 2; }
[[ $SESSIONS =~ ^[1-9][0-9]?$ ]] || { echo "pg_shapes: SESSIONS must be 1 to 99, not '$SESSIONS'" >&2; exit 2; }
for f in "$B/abilitysync" "$B/gen_rows"; do
  [ -x "$f" ] || { echo "pg_shapes: $f is missing: run make all bench-tools" >&2; exit 2; }
done

TMP=$(mktemp -d /tmp/pg_shapes.XXXXXX)
chmod 755 "$TMP"
trap 'tools/pgcluster.sh stop "$TMP/pg" >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
url=$(tools/pgcluster.sh start "$TMP/pg")
psql -X -q "$url" -c "CREATE DATABASE shapes" >/dev/null
export DATABASE_URL=${url%/postgres}/shapes PGOPTIONS="-c default_toast_compression=lz4 ${SHAPES_PGOPTIONS:-}"
"$B/abilitysync" migrate up >/dev/null 2>&1 || { echo "pg_shapes: migrate up failed" >&2; exit 1; }
"$B/gen_rows" --rows "$N" --seed 7 >"$TMP/rows.copy"
chmod 644 "$TMP/rows.copy"
q() { psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }
cols="ability_id, vector_id, ability_name, service_name, description, embedding, dynamic_header_keys, dynamic_headers_required, metadata"
q -c "CREATE UNLOGGED TABLE stage (ord serial PRIMARY KEY, ability_id text, vector_id int, ability_name text,
  service_name text, description text, embedding text, dynamic_header_keys text, dynamic_headers_required bool,
  metadata text)" \
  -c "\\copy stage ($cols) FROM '$TMP/rows.copy'" -c "VACUUM ANALYZE stage"

# The statements, over the staged rows with ord in (lo, hi].
write_sql() {
  echo "WITH up AS (INSERT INTO abilities AS a ($cols, created_at, updated_at)
   SELECT ability_id, vector_id, ability_name, service_name, description, embedding::jsonb,
    dynamic_header_keys::jsonb, dynamic_headers_required, metadata::jsonb, now(), now()
   FROM stage WHERE ord > $1 AND ord <= $2 ORDER BY ability_id
   ON CONFLICT (ability_id) DO UPDATE SET embedding = excluded.embedding, updated_at = excluded.updated_at
   WHERE (a.ability_name, a.description, a.embedding, a.metadata)
    IS DISTINCT FROM (excluded.ability_name, excluded.description, excluded.embedding, excluded.metadata)
   RETURNING ability_id, vector_id, abilitysync.blob_name(service_name) AS blob_id),
  ss AS (INSERT INTO abilitysync.sync_state AS s (ability_id, blob_id, vector_id, content_hash, state,
    generation, lease_until, lease_owner)
   SELECT ability_id, blob_id, vector_id, md5(ability_id), 'pending', 1, now() + interval '30 seconds', 'bench'
   FROM up ORDER BY ability_id
   ON CONFLICT (ability_id) DO UPDATE SET generation = s.generation + 1
   RETURNING ability_id, blob_id, vector_id)
  INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id)
   SELECT blob_id, vector_id, ability_id FROM ss ORDER BY blob_id, vector_id"
}
outcome_sql() {
  echo "UPDATE abilitysync.sync_state s SET state = 'synced', synced_at = now(), attempts = 1,
    lease_until = NULL, lease_owner = NULL, updated_at = now()
   FROM stage g WHERE g.ord > $1 AND g.ord <= $2 AND s.ability_id = g.ability_id AND s.state = 'pending'"
}

groups() { # from to: the rows (from, to] a group at a time, each statement its own transaction
  echo "DO \$\$ DECLARE lo int := $1; BEGIN
      WHILE lo < $2 LOOP
        $(write_sql lo "least(lo + $GROUP, $2)"); COMMIT;
        $(outcome_sql lo "least(lo + $GROUP, $2)"); COMMIT;
        lo := lo + $GROUP;
      END LOOP; END \$\$"
}

run_shape() { # shape -> prints cluster CPU ticks
  local before after kids data=$TMP/pg/data
  kids=$(pg_children "$data")
  q -c "TRUNCATE abilities, abilitysync.sync_state, abilitysync.vector_ledger" -c "CHECKPOINT" >/dev/null
  pg_reaped "$data" "$kids" # that session's CPU is not the shape's
  kids=$(pg_children "$data")
  before=$(pg_ticks "$data")
  case $1 in
    copy) q -c "\\copy abilities ($cols) FROM '$TMP/rows.copy'" ;;
    insert) q -c "INSERT INTO abilities ($cols, created_at, updated_at) SELECT ability_id, vector_id, ability_name,
      service_name, description, embedding::jsonb, dynamic_header_keys::jsonb, dynamic_headers_required,
      metadata::jsonb, now(), now() FROM stage" ;;
    outbox) q -c "$(write_sql 0 "$N")" ;;
    outcome) q -c "$(write_sql 0 "$N")" -c "$(outcome_sql 0 "$N")" ;;
    commits) q -c "$(groups 0 "$N")" ;;
    sessions) # SESSIONS sessions at once, each on its share of the rows
      local i pids=()
      for ((i = 0; i < SESSIONS; i++)); do
        q -c "$(groups $((N * i / SESSIONS)) $((N * (i + 1) / SESSIONS)))" & pids+=($!)
      done
      for i in "${pids[@]}"; do wait "$i"; done ;;
  esac
  pg_reaped "$data" "$kids"
  after=$(pg_ticks "$data")
  [ "$(q -At -c "SELECT count(*) FROM abilities")" = "$N" ] || { echo "pg_shapes: $1 did not write $N rows" >&2; exit 1; }
  echo $((after - before))
}

shapes=(copy insert outbox outcome commits sessions)
hz=$(getconf CLK_TCK)
declare -A ticks
for ((r = 0; r < ROUNDS; r++)); do
  for ((k = 0; k < ${#shapes[@]}; k++)); do # each round starts one shape later
    s=${shapes[$(((k + r) % ${#shapes[@]}))]}
    ticks[$s]+="$(run_shape "$s") "
  done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
copy_ms=$(median <<<"${ticks[copy]}" | awk -v hz="$hz" -v n="$N" '{printf "%.4f", $1 * 1000 / hz / n}')
echo "| shape ($N rows of 3072 numbers, median of $ROUNDS rounds) | Postgres CPU ms per row | / COPY's |"
echo "|---|---|---|"
for s in "${shapes[@]}"; do
  m=$(median <<<"${ticks[$s]}")
  awk -v s="$s" -v t="$m" -v hz="$hz" -v n="$N" -v c="$copy_ms" -v g="$GROUP" -v p="$SESSIONS" 'BEGIN {
    label["copy"] = "COPY from a file"; label["insert"] = "INSERT ... SELECT, text -> jsonb (the row work)"
    label["outbox"] = "+ the upsert, its sync state and ledger entry"; label["outcome"] = "+ each sync state marked synced"
    label["commits"] = "+ both in transactions of " g " rows"
    label["sessions"] = "+ in " p " sessions at once"
    ms = t * 1000 / hz / n; printf "| %s | %.3f | %.2f |\n", label[s], ms, ms / c }'
done
echo
echo "Every process of the cluster (pg_ticks); one session but in the last; $(nproc) cores; $(date -u +%Y-%m-%d)."
