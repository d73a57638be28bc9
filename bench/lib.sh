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
