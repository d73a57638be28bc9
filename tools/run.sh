#!/usr/bin/env bash
# run.sh - `make run`: the embedded default, everything on this machine.
#
# A throwaway PostgreSQL cluster, the vector DB emulator, and abilitysync
# itself, started through the same entrypoint a container uses (wait for
# Postgres, migrate, serve). It prints where each one is and a curl example
# that registers an ability and searches for it.
#
# Everything lives in a private directory under the system's temp dir
# (/tmp/abilitysync-run.XXXXXX, removed at exit), reachable by the postgres
# user whatever the checkout's own permissions (a clone in a 0700 home works).
# SIGINT, SIGTERM or SIGHUP, to this script or to the `make` running it, stop
# everything it started within seconds; a second `make run` right after works.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BIN=${ABILITYSYNC_BIN:-$ROOT/build/release/abilitysync}
EMU=${EMULATOR_BIN:-$ROOT/build/release/vdb-emulator}
PORT=${PORT:-8080}
EMU_PORT=${EMU_PORT:-8765}
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/abilitysync-run.XXXXXX")
chmod 755 "$RUN_DIR"
PG_DIR="$RUN_DIR/pg"
pids=()
stopping=false

# shellcheck disable=SC2317  # cleanup and watch_parent run from traps and in the background
cleanup() {
  $stopping && return
  stopping=true
  echo
  echo "run: stopping the service, the emulator and the throwaway cluster; removing $RUN_DIR"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  tools/pgcluster.sh stop "$PG_DIR" >/dev/null 2>&1 || tools/pgcluster.sh kill "$PG_DIR" >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 0' INT TERM HUP

# `make` that gets a signal passes it on; a supervisor that kills only `make`
# leaves us orphaned: notice the parent going away, and stop too.
watch_parent() {
  local parent=$PPID
  while kill -0 "$parent" 2>/dev/null; do sleep 1; done
  kill -TERM $$ 2>/dev/null || true
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

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

# The service's log goes to a file, shown here by a tail: the script waits on
# the service itself, so a signal reaches it directly.
ABILITYSYNC_BIN="$BIN" ./docker-entrypoint.sh "$BIN" serve >"$RUN_DIR/service.log" 2>&1 &
service=$!
pids+=("$service")
for _ in $(seq 1 300); do grep -q "serving on" "$RUN_DIR/service.log" 2>/dev/null && break; sleep 0.1; done
URL=$(grep -o 'serving on http://[^;]*' "$RUN_DIR/service.log" | head -n 1 | sed 's/serving on //')
[ -n "$URL" ] || { cat "$RUN_DIR/service.log"; echo "run: the service did not start; see above"; exit 1; }

# An example ability with a 3072-number embedding, and a search for it.
awk 'BEGIN { srand(7); e = ""
  for (i = 0; i < 3072; i++) e = e (i ? "," : "") sprintf("%.9f", rand() * 2 - 1)
  printf "{\"ability_id\":\"github-get-user\",\"ability_name\":\"get_user\",\"service_name\":\"api.github.com\",\"description\":\"Fetch a GitHub user by login\",\"embedding\":[%s],\"metadata\":{\"dynamic_header_keys\":[],\"request_method\":\"GET\",\"request_url\":\"https://api.github.com/users/{login}\"}}\n", e
  printf "{\"service_name\":\"api.github.com\",\"k\":3,\"embedding\":[%s]}\n", e > "/dev/stderr" }' \
  >"$RUN_DIR/example-ability.json" 2>"$RUN_DIR/example-search.json"

cat <<EOT

  abilitysync   $URL      (log: $RUN_DIR/service.log)
  vector DB     $VECTOR_DB_API  (the emulator; log: $RUN_DIR/emulator.log)
  Postgres      $DATABASE_URL

  Register an ability, look at it, search for it:

    curl -s -H 'Content-Type: application/json' --data-binary @$RUN_DIR/example-ability.json $URL/v1/abilities
    curl -s $URL/v1/abilities/github-get-user
    curl -s -H 'Content-Type: application/json' --data-binary @$RUN_DIR/example-search.json $URL/v1/search
    curl -s $URL/v1/sync/status

  Ctrl-C (or SIGTERM) stops everything and removes $RUN_DIR.

EOT
tail -n +1 -f "$RUN_DIR/service.log" &
pids+=($!)
watch_parent &
pids+=($!)
set +e
wait "$service"
rc=$?
set -e
$stopping || echo "run: the service exited (status $rc)"
exit "$rc"
