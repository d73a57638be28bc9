#!/usr/bin/env bash
# vdb.sh - the vector DB client's push rate as a ratio to the emulator's raw
# ingest ceiling, measured in one run (vdb_push --compare) against a fresh
# emulator on this machine.
#
#   bench/vdb.sh [VECTORS]            (alone: make bench runs bench/all.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD_DIR:-build/release}
TMP=$(mktemp -d /tmp/abilitysync-vdb-bench.XXXXXX)
emu_pid=""
cleanup() {
  [ -z "$emu_pid" ] || kill -TERM "$emu_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

"$B/vdb-emulator" --listen 127.0.0.1:0 --port-file "$TMP/port" >"$TMP/emu.log" 2>&1 &
emu_pid=$!
for _ in $(seq 1 100); do [ -s "$TMP/port" ] && break; sleep 0.05; done
[ -s "$TMP/port" ] || { echo "bench: the emulator did not start:"; cat "$TMP/emu.log"; exit 1; }
"$B/vdb_push" --url "http://127.0.0.1:$(cat "$TMP/port")" --vectors "${1:-20000}" \
  --emulator-pid "$emu_pid" --compare
