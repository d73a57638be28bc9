# lib.sh - what the bench scripts share; sourced, never run.
# shellcheck shell=bash

# ticks PID: the CPU (user + system, in clock ticks) a process has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# pg_ticks DATADIR: the CPU ticks of a whole cluster so far: the postmaster
# with its reaped children (backends that ended, COPY's) and the live ones.
pg_ticks() {
  local pm c
  pm=$(head -n 1 "$1/postmaster.pid")
  { awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat"
    for c in $(pgrep -P "$pm"); do awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || true; done
  } | awk '{ s += $1 } END { print s + 0 }'
}

# pg_children DATADIR: the postmaster's children now, one pid per line.
pg_children() { pgrep -P "$(head -n 1 "$1/postmaster.pid")" || true; }

# pg_reaped DATADIR BEFORE: waits (at most 5 s) until every child of the
# postmaster that is not in BEFORE (pg_children's output then) has ended and
# been reaped. pg_ticks finds a live backend in /proc and a reaped one in the
# postmaster's cutime; one that has ended but is not reaped yet is in
# neither, and a COPY's backend, read right after psql exits, often was: its
# whole CPU lost (0.002 ms a row in one make bench).
pg_reaped() {
  local c new
  for _ in $(seq 1 100); do
    new=0
    for c in $(pg_children "$1"); do
      grep -qx "$c" <<<"$2" || { new=1; break; }
    done
    [ "$new" = 0 ] && return 0
    sleep 0.05
  done
}
