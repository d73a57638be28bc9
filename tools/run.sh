#!/usr/bin/env bash
# run.sh - `make run`: the embedded default, everything on this machine.
#
# A throwaway PostgreSQL cluster (in .run/, removed on exit), the vector DB
# emulator, and abilitysync itself, started through the same entrypoint a
# container uses (wait for Postgres, migrate, serve). It prints where each one
# is and a curl example that registers an ability and searches for it.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

RUN_DIR=${RUN_DIR:-$ROOT/.run}
BIN=${ABILITYSYNC_BIN:-$ROOT/build/release/abilitysync}
EMU=${EMULATOR_BIN:-$ROOT/build/release/vdb-emulator}
PG_DIR="$RUN_DIR/pg"
PORT=${PORT:-8080}
EMU_PORT=${EMU_PORT:-8765}
pids=()

cleanup() {
  echo
  echo "run: stopping; the throwaway cluster in $PG_DIR is removed"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  tools/pgcluster.sh stop "$PG_DIR" 2>/dev/null || true
  rm -rf "$RUN_DIR"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

mkdir -p "$RUN_DIR"
chmod 755 "$RUN_DIR"
trap cleanup EXIT
trap 'exit 0' INT TERM

base=$(tools/pgcluster.sh start "$PG_DIR")
psql -X -q "$base" -c "CREATE DATABASE reverse_engineer" 2>/dev/null || true
export DATABASE_URL=${base%/postgres}/reverse_engineer

port_free "$EMU_PORT" || EMU_PORT=0
port_free "$PORT" || { echo "run: port $PORT is taken; set PORT=... (using a free one)"; PORT=0; }
"$EMU" --listen "127.0.0.1:$EMU_PORT" --port-file "$RUN_DIR/emu.port" >"$RUN_DIR/emulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$RUN_DIR/emu.port" ] && break; sleep 0.05; done
VECTOR_DB_API="http://127.0.0.1:$(cat "$RUN_DIR/emu.port")"
export VECTOR_DB_API
export LISTEN="127.0.0.1:$PORT"

ABILITYSYNC_BIN="$BIN" ./docker-entrypoint.sh "$BIN" serve 2>&1 | tee "$RUN_DIR/service.log" &
pids+=($!)
for _ in $(seq 1 300); do grep -q "serving on" "$RUN_DIR/service.log" 2>/dev/null && break; sleep 0.1; done
URL=$(grep -o 'serving on http://[^;]*' "$RUN_DIR/service.log" | head -n 1 | sed 's/serving on //')
[ -n "$URL" ] || { echo "run: the service did not start; see above"; exit 1; }

# An example ability with a 3072-number embedding, and a search for it.
awk 'BEGIN { srand(7); e = ""
  for (i = 0; i < 3072; i++) e = e (i ? "," : "") sprintf("%.9f", rand() * 2 - 1)
  printf "{\"ability_id\":\"github-get-user\",\"ability_name\":\"get_user\",\"service_name\":\"api.github.com\",\"description\":\"Fetch a GitHub user by login\",\"embedding\":[%s],\"metadata\":{\"dynamic_header_keys\":[],\"request_method\":\"GET\",\"request_url\":\"https://api.github.com/users/{login}\"}}\n", e
  printf "{\"service_name\":\"api.github.com\",\"k\":3,\"embedding\":[%s]}\n", e > "/dev/stderr" }' \
  >"$RUN_DIR/example-ability.json" 2>"$RUN_DIR/example-search.json"

cat <<EOT

  abilitysync   $URL      (log: $RUN_DIR/service.log)
  vector DB     $VECTOR_DB_API  (the emulator)
  Postgres      $DATABASE_URL

  Register an ability, look at it, search for it:

    curl -s -H 'Content-Type: application/json' --data-binary @$RUN_DIR/example-ability.json $URL/v1/abilities
    curl -s $URL/v1/abilities/github-get-user
    curl -s -H 'Content-Type: application/json' --data-binary @$RUN_DIR/example-search.json $URL/v1/search
    curl -s $URL/v1/sync/status

  Ctrl-C stops everything and removes the cluster.

EOT
wait "${pids[1]}"
