#!/bin/sh
# docker-entrypoint.sh - start-up of an abilitysync container (and of a host).
#
# With DATABASE_URL set: wait for Postgres (for DB_HOST when it is set, as the
# original application's entrypoint did; up to DB_WAIT seconds, default 60),
# apply the committed drizzle migrations (one replica at a time: the others wait
# on the migration lock, or find nothing to do), then exec the command.
# Without DATABASE_URL: say that Postgres is off and exec the command at once.
#
# The command defaults to `abilitysync serve`. ABILITYSYNC_BIN names the binary
# when it is not on PATH (tests run this script on the host that way).
set -eu

ABILITYSYNC_BIN=${ABILITYSYNC_BIN:-abilitysync}
DB_WAIT=${DB_WAIT:-60}
export DB_WAIT

log() {
  ts=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
  if [ "${LOG_FORMAT:-text}" = json ]; then
    printf '{"ts":"%s","level":"%s","component":"entrypoint","msg":"%s"}\n' "$ts" "$1" "$2" >&2
  else
    printf '%s %-5s entrypoint: %s\n' "$ts" "$(echo "$1" | tr '[:lower:]' '[:upper:]')" "$2" >&2
  fi
}

if [ "$#" -eq 0 ]; then
  set -- "$ABILITYSYNC_BIN" serve
fi

if [ -n "${DATABASE_URL:-}" ]; then
  log info "DATABASE_URL is set: waiting up to ${DB_WAIT} s for Postgres${DB_HOST:+ at $DB_HOST (DB_HOST)}, then applying migrations"
  if ! "$ABILITYSYNC_BIN" migrate up --wait "$DB_WAIT"; then
    log error "migrations did not apply (see above); not starting $1"
    exit 1
  fi
else
  log info "DATABASE_URL is not set: Postgres is off (vector-DB-only mode); no migrations to apply"
fi

log info "starting: $*"
exec "$@"
