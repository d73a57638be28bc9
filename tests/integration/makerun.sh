#!/usr/bin/env bash
# `make run`, as a newcomer runs it: from a clone in a 0700 directory (as
# root's home is), it serves and prints its URLs; SIGTERM to `make` alone, or
# SIGHUP to the script, stops everything it started within seconds and removes
# its directory; a second `make run` right after gets the same port.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

MAKE_PID=""
RUN_DIR=""

# A copy of this checkout (sources and the release build, times kept so make
# finds it up to date) in a fresh directory of mode 0700.
clone_into_private_home() {
  local home="$SUITE_TMP/home.$RANDOM"
  mkdir -m 700 "$home"
  mkdir "$home/abilitysync"
  tar -cf - --exclude=./build --exclude='*/node_modules' --exclude=./.git . | tar -C "$home/abilitysync" -xf -
  mkdir -p "$home/abilitysync/build"
  cp -a build/release "$home/abilitysync/build/"
  echo "$home/abilitysync"
}

# start_make_run CLONE PORT: `make run` in its own process group, SIGHUP at its
# default as in a terminal (a suite run under nohup ignores it, and a shell
# cannot trap a signal ignored when it started); waits for its banner.
start_make_run() {
  local log="$SUITE_TMP/make-run.$RANDOM.log"
  (cd "$1" && exec setsid env --default-signal=HUP make --no-print-directory run NO_DEPS=1 PORT="$2" EMU_PORT=0) \
    >"$log" 2>&1 &
  MAKE_PID=$!
  for _ in $(seq 1 600); do
    grep -q 'Ctrl-C (or SIGTERM) stops everything' "$log" && break
    kill -0 "$MAKE_PID" 2>/dev/null || break
    sleep 0.1
  done
  grep -q 'Ctrl-C (or SIGTERM) stops everything' "$log" || fail "make run printed no banner: $(tail -n 30 "$log")"
  RUN_DIR=$(grep -o '/tmp/abilitysync-run\.[A-Za-z0-9]*' "$log" | head -n 1)
  SVC_URL=$(sed -nE 's/^  abilitysync +(http:[^ ]+) .*/\1/p' "$log")
  RUN_LOG=$log
  : "$SVC_URL" "$RUN_LOG"
}

# Everything `make run` started, by what it leaves in the process table.
run_processes() {
  pgrep -f -- "$RUN_DIR" || true
  pgrep -f -- "$1/build/release/abilitysync serve" || true
}

# assert_all_gone CLONE SECONDS
assert_all_gone() {
  local left
  for _ in $(seq 1 $(($2 * 10))); do
    left=$(run_processes "$1")
    [ -z "$left" ] && [ ! -e "$RUN_DIR" ] && return 0
    sleep 0.1
  done
  fail "after $2 s: still running: $(ps -o pid=,args= -p "$(echo "$left" | paste -sd,)" 2>/dev/null); $RUN_DIR $([ -e "$RUN_DIR" ] && echo 'still there' || echo removed)"
}

after_each() {
  [ -n "$MAKE_PID" ] || return 0
  kill -TERM -- "-$MAKE_PID" 2>/dev/null || true
  [ -z "$RUN_DIR" ] || tools/pgcluster.sh kill "$RUN_DIR/pg" >/dev/null 2>&1 || true
  MAKE_PID=""
}

test_from_a_0700_home_it_serves_and_TERM_to_make_alone_stops_everything() {
  local clone t0
  clone=$(clone_into_private_home)
  start_make_run "$clone" 0
  assert_contains "$(cat "$RUN_LOG")" "(log: $RUN_DIR/service.log)"
  assert_contains "$(cat "$RUN_LOG")" "Postgres      postgres://"
  [ -d "$RUN_DIR/pg" ] || fail "the cluster is not under $RUN_DIR"
  api POST /v1/abilities "$(cat "$RUN_DIR/example-ability.json")"
  assert_eq "$CODE" 201 "the README's example registration: $BODY"
  api POST /v1/search "$(cat "$RUN_DIR/example-search.json")"
  assert_eq "$(jq -r '.results[0].ability_id' <<<"$BODY")" github-get-user "the README's example search"
  [ -n "$(run_processes "$clone")" ] || fail "no process found to watch"
  t0=$(date +%s%N)
  kill -TERM "$MAKE_PID" # make alone, as a supervisor would
  assert_all_gone "$clone" 10
  echo "TERM to make: everything gone in $((($(date +%s%N) - t0) / 1000000)) ms"
  assert_contains "$(cat "$RUN_LOG")" "run: stopping the service, the emulator and the throwaway cluster"
  MAKE_PID=""
}

test_HUP_stops_everything_and_a_second_run_gets_the_same_port() {
  local clone port script
  clone=$(clone_into_private_home)
  port=$(free_port)
  start_make_run "$clone" "$port"
  assert_eq "$SVC_URL" "http://127.0.0.1:$port" "the port asked for"
  script=$(pgrep -P "$MAKE_PID" -f tools/run.sh || true) # make's child: the script itself
  [ -n "$script" ] || fail "tools/run.sh is not running under make"
  kill -HUP "$script"
  assert_all_gone "$clone" 10
  wait "$MAKE_PID" 2>/dev/null || true
  start_make_run "$clone" "$port"
  assert_eq "$SVC_URL" "http://127.0.0.1:$port" "the second run's port"
  api GET /healthz
  assert_eq "$CODE" 200 "the second run serves"
  kill -INT -- "-$MAKE_PID" # Ctrl-C in a terminal: the whole group
  assert_all_gone "$clone" 10
  MAKE_PID=""
}

run_suite
