#!/usr/bin/env bash
# Interop with the real drizzle-kit (npm, pinned in drizzle-compat/package.json):
# either tool takes over a database the other migrated, one migration each way,
# and the ledgers and schemas come out identical.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

LEDGER='drizzle.__drizzle_migrations'

# A scratch copy of drizzle-compat/ whose journal keeps the first N entries (all by default).
drizzle_copy() { # name [entries]
  local d="$SUITE_TMP/$1" n=${2:-}
  [ -x drizzle-compat/node_modules/.bin/drizzle-kit ] || fail "drizzle-kit is not installed: run make deps"
  rm -rf "$d" && mkdir -p "$d"
  cp -r drizzle-compat/schema.ts drizzle-compat/drizzle.config.ts drizzle-compat/package.json drizzle-compat/drizzle "$d/"
  ln -s "$ROOT/drizzle-compat/node_modules" "$d/node_modules"
  if [ -n "$n" ]; then
    jq --indent 2 ".entries |= .[:$n]" drizzle-compat/drizzle/meta/_journal.json >"$d/drizzle/meta/_journal.json"
  fi
  echo "$d"
}

drizzle_kit() { # dir db args...
  local dir=$1 db=$2
  shift 2
  (cd "$dir" && DATABASE_URL="$db" ./node_modules/.bin/drizzle-kit "$@")
}

ledger() { psql_q "$1" -c "select id || ' ' || hash || ' ' || created_at from $LEDGER order by id"; }

# The ledger a database migrated by abilitysync alone has: the reference.
reference_ledger() {
  local db
  db=$(new_db ref)
  DATABASE_URL="$db" "$ABILITYSYNC" migrate up 2>/dev/null
  ledger "$db"
}

assert_same_as_reference() { # db
  assert_eq "$(ledger "$1")" "$(reference_ledger)" "ledger rows"
  diff -u schema/schema.sql <(schema_dump "$1") || fail "pg_dump --schema-only differs"
}

test_drizzle_kit_check_is_clean_and_generate_finds_nothing_new() {
  local d
  d=$(drizzle_copy check)
  run drizzle_kit "$d" postgres://unused@127.0.0.1/x check
  assert_rc 0
  assert_contains "$OUT" "Everything's fine"
  assert_not_contains "$OUT" "Warning"
  run drizzle_kit "$d" postgres://unused@127.0.0.1/x generate
  assert_rc 0
  assert_contains "$OUT" "No schema changes, nothing to migrate"
  diff -r drizzle-compat/drizzle "$d/drizzle" || fail "generate wrote files"
}

test_drizzle_kit_then_abilitysync_finds_nothing_pending() {
  local db d
  db=$(new_db)
  d=$(drizzle_copy all)
  run drizzle_kit "$d" "$db" migrate
  assert_rc 0 "drizzle-kit migrate"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate status
  assert_rc 0 "abilitysync status after drizzle-kit"
  assert_contains "$OUT" "$(jq '.entries | length' drizzle-compat/drizzle/meta/_journal.json) applied, 0 pending, 0 out of order, 0 changed"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up
  assert_rc 0
  assert_contains "$OUT" "up to date"
  assert_same_as_reference "$db"
}

test_abilitysync_then_drizzle_kit_finds_nothing_pending() {
  local db d before
  db=$(new_db)
  d=$(drizzle_copy all)
  DATABASE_URL="$db" "$ABILITYSYNC" migrate up 2>/dev/null
  before=$(ledger "$db")
  # Re-running 0001 would fail (CREATE SCHEMA "abilitysync" has no IF NOT EXISTS).
  run drizzle_kit "$d" "$db" migrate
  assert_rc 0 "drizzle-kit migrate after abilitysync"
  assert_eq "$(ledger "$db")" "$before" "drizzle-kit added nothing"
  assert_same_as_reference "$db"
}

test_drizzle_kit_first_migration_then_abilitysync_the_second() {
  local db one all
  db=$(new_db)
  one=$(drizzle_copy one 1)
  all=$(drizzle_copy all)
  run drizzle_kit "$one" "$db" migrate
  assert_rc 0
  assert_eq "$(psql_q "$db" -c "select count(*) from $LEDGER")" 1
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up
  assert_rc 0
  assert_contains "$OUT" "applying $(($(jq '.entries | length' drizzle-compat/drizzle/meta/_journal.json) - 1)) migration(s)"
  assert_contains "$OUT" "applied 0001_sync_schema"
  run drizzle_kit "$all" "$db" migrate
  assert_rc 0 "drizzle-kit with everything applied"
  assert_same_as_reference "$db"
}

test_abilitysync_first_migration_then_drizzle_kit_the_second() {
  local db one all
  db=$(new_db)
  one=$(drizzle_copy one 1)
  all=$(drizzle_copy all)
  DATABASE_URL="$db" "$ABILITYSYNC" migrate up --dir "$one/drizzle" 2>/dev/null
  assert_eq "$(psql_q "$db" -c "select count(*) from $LEDGER")" 1
  run drizzle_kit "$all" "$db" migrate
  assert_rc 0 "drizzle-kit applies the second"
  assert_eq "$(psql_q "$db" -c "select to_regclass('abilitysync.sync_state') is not null")" t
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate status
  assert_rc 0 "abilitysync sees nothing pending"
  assert_same_as_reference "$db"
}

run_suite
