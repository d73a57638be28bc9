#!/usr/bin/env bash
# pgcluster.sh - a throwaway PostgreSQL cluster on a private port and socket dir.
#
#   tools/pgcluster.sh start DIR [PORT]   init (once) and start; prints the URL
#   tools/pgcluster.sh stop DIR           stop (fast shutdown)
#   tools/pgcluster.sh kill DIR           stop immediately (like a crash)
#   tools/pgcluster.sh url DIR            print the URL of a cluster started here
#
# PostgreSQL refuses to run as root, so as root the cluster belongs to the
# `postgres` user (Debian's postgresql package creates it). Authentication is
# `trust` on 127.0.0.1 only: this is for tests and `make run`, never production.
set -euo pipefail

die() { echo "pgcluster: $*" >&2; exit 1; }

bindir() {
  local d
  d=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$d" ] || [ ! -x "$d/pg_ctl" ]; then
    die "PostgreSQL server binaries not found (apt-get install postgresql)"
  fi
  echo "$d"
}

# Runs a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# A port nobody listens on, below the kernel's ephemeral range: a client
# socket's local port (everything that binds port 0 gets one up there) would
# otherwise make the server's bind fail later, and a restarted cluster keeps
# its port.
free_port() {
  local p lo
  lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$lo" -gt 11000 ] || lo=32768
  for _ in $(seq 1 50); do
    p=$((10000 + RANDOM % (lo - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  die "no free port found"
}

start() {
  local dir=$1 port=${2:-} bin
  bin=$(bindir)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "user postgres missing (apt-get install postgresql)"
    chown postgres: "$dir"
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi
  [ -n "$port" ] || port=$(cat "$dir/port" 2>/dev/null || free_port)
  echo "$port" >"$dir/port"
  as_owner mkdir -p "$dir/sock"
  # fsync off: these clusters hold test data only, and a test's kill -9 hits the
  # service, not the kernel.
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200 ${PGCLUSTER_OPTIONS:-}" \
    start >/dev/null || { tail -n 20 "$dir/server.log" >&2; die "pg_ctl start failed"; }
  url "$dir"
}

stop() {
  local dir=$1 mode=${2:-fast}
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_owner "$(bindir)/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
}

url() {
  local dir=$1
  [ -f "$dir/port" ] || die "$dir: no cluster started here"
  echo "postgres://postgres@127.0.0.1:$(cat "$dir/port")/postgres"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop "$2" fast ;;
  kill) stop "$2" immediate ;;
  url) url "$2" ;;
  *) die "usage: pgcluster.sh start DIR [PORT] | stop DIR | kill DIR | url DIR" ;;
esac
