#!/usr/bin/env bash
# run.sh - `make run`: the embedded default, everything on this machine.
#
# Starts a throwaway PostgreSQL cluster (in .run/, removed on exit), applies the
# migrations through the same entrypoint a container uses, and prints where to
# reach everything. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

RUN_DIR=${RUN_DIR:-$ROOT/.run}
BIN=${ABILITYSYNC_BIN:-$ROOT/build/release/abilitysync}
PG_DIR="$RUN_DIR/pg"

cleanup() {
  echo
  echo "run: stopping; the throwaway cluster in $PG_DIR is removed"
  tools/pgcluster.sh stop "$PG_DIR" 2>/dev/null || true
  rm -rf "$RUN_DIR"
}

mkdir -p "$RUN_DIR"
chmod 755 "$RUN_DIR"
base=$(tools/pgcluster.sh start "$PG_DIR")
trap cleanup EXIT
trap 'exit 0' INT TERM
psql -X -q "$base" -c "CREATE DATABASE reverse_engineer" 2>/dev/null || true
DATABASE_URL=${base%/postgres}/reverse_engineer
export DATABASE_URL

ABILITYSYNC_BIN="$BIN" ./docker-entrypoint.sh "$BIN" migrate status

cat <<EOT

  Postgres     $DATABASE_URL
               psql "$DATABASE_URL"
  migrations   $BIN migrate status      (with DATABASE_URL as above)

  Ctrl-C stops everything and removes the cluster.
EOT
while true; do sleep 3600; done
