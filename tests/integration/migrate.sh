#!/usr/bin/env bash
# `abilitysync migrate` against a real PostgreSQL: the drizzle ledger, the lock,
# refusals, failures that leave nothing behind, waiting, and bad input.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

DIR=drizzle-compat/drizzle
LEDGER='drizzle.__drizzle_migrations'
# How many migrations the folder holds (the tests follow the folder, not a number written here).
NMIG=$(jq '.entries | length' "$DIR/meta/_journal.json")

migrate() { "$ABILITYSYNC" migrate "$@"; }

# mkmig FOLDER TAG WHEN SQL: adds a migration to a scratch folder.
mkmig() {
  local dir=$1 tag=$2 when=$3 sql=$4
  mkdir -p "$dir/meta"
  printf '%s' "$sql" >"$dir/$tag.sql"
  echo "$tag $when" >>"$dir/entries"
  jq -R -s 'split("\n") | map(select(length > 0) | split(" ")) | to_entries
    | map({idx: .key, version: "7", when: (.value[1] | tonumber), tag: .value[0], breakpoints: true})
    | {version: "7", dialect: "postgresql", entries: .}' "$dir/entries" >"$dir/meta/_journal.json"
}

# The advisory-lock key `migrate` uses for a database (status exits 3 while things are pending).
lock_key() {
  local out
  out=$(DATABASE_URL="$1" "$ABILITYSYNC" migrate status --json) || [ $? = 3 ]
  jq -r .lock_key <<<"$out"
}

# Holds the migration lock from another session, named by its application_name.
hold_lock() { # db key application_name
  psql -X -q "$1" -c "set application_name = '$3'" -c "select pg_advisory_lock($2)" -c "select pg_sleep(60)" \
    >/dev/null 2>&1 &
  for _ in $(seq 1 50); do
    [ "$(psql_q "$1" -c "select count(*) from pg_locks l join pg_stat_activity a using (pid)
      where a.application_name = '$3' and l.locktype = 'advisory' and l.granted")" = 1 ] && return
    sleep 0.1
  done
  fail "the lock holder did not get the lock"
}

# Ends that session (killing psql alone would leave its backend sleeping with the lock).
release_lock() { # db application_name
  psql_q "$1" -c "select pg_terminate_backend(pid) from pg_stat_activity where application_name = '$2'" >/dev/null
}

ledger_rows() { psql_q "$1" -c "select id || ' ' || hash || ' ' || created_at from $LEDGER order by id"; }
exists() { psql_q "$1" -c "select to_regclass('$2') is not null"; }

test_fresh_database_gets_every_migration_recorded_as_drizzle_does() {
  local db
  db=$(new_db)
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up
  assert_rc 0
  assert_contains "$OUT" "committed $NMIG migration(s)"
  # One row per migration: sha256 of the whole file, created_at = the journal's `when`.
  local want="" i=1 tag when
  while read -r tag when; do
    want+="$i $(sha256sum "$DIR/$tag.sql" | cut -d' ' -f1) $when"$'\n'
    i=$((i + 1))
  done < <(jq -r '.entries[] | "\(.tag) \(.when)"' "$DIR/meta/_journal.json")
  assert_eq "$(ledger_rows "$db")" "${want%$'\n'}" "ledger rows"
  assert_eq "$(exists "$db" public.abilities)" t "abilities table"
  assert_eq "$(exists "$db" abilitysync.sync_state)" t "sync_state table"
}

test_second_up_is_a_noop_that_takes_no_lock() {
  local db
  db=$(new_db)
  DATABASE_URL="$db" migrate up
  # Hold the migration lock from another session: an up-to-date `up` must not wait for it.
  hold_lock "$db" "$(lock_key "$db")" other-migrator
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --lock-timeout 1
  release_lock "$db" other-migrator
  assert_rc 0
  assert_contains "$OUT" "up to date: $NMIG migration(s) applied, none pending"
  assert_eq "$(psql_q "$db" -c "select count(*) from $LEDGER")" "$NMIG" "ledger rows"
}

test_lock_timeout_names_the_holder() {
  local db
  db=$(new_db)
  hold_lock "$db" "$(lock_key "$db")" stuck-migrator
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --lock-timeout 1
  release_lock "$db" stuck-migrator
  assert_rc 1
  assert_contains "$OUT" "timed out after 1 s waiting for the migration lock"
  assert_contains "$OUT" '"stuck-migrator"'
  assert_eq "$(exists "$db" "$LEDGER")" f "nothing applied"
}

test_status_and_plan_report_without_changing_anything() {
  local db
  db=$(new_db)
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate status
  assert_rc 3 "status with pending migrations"
  assert_contains "$OUT" "pending       0000_abilities"
  assert_contains "$OUT" "0 applied, $NMIG pending"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate status --json
  assert_rc 3
  assert_eq "$(jq -r '.pending, .migrations[1].state' <<<"$OUT" | paste -sd,)" "$NMIG,pending" "status json"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate plan
  assert_rc 3 "plan with pending migrations"
  assert_contains "$OUT" 'CREATE TABLE IF NOT EXISTS "abilities"'
  assert_contains "$OUT" 'CREATE SCHEMA "abilitysync";'
  assert_contains "$OUT" "-- statement 3 of 8"
  assert_eq "$(exists "$db" "$LEDGER")" f "ledger after status and plan"
  assert_eq "$(exists "$db" public.abilities)" f "abilities after plan"
  DATABASE_URL="$db" migrate up
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate status
  assert_rc 0 "status when up to date"
  assert_contains "$OUT" "$NMIG applied, 0 pending"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate plan
  assert_rc 0 "plan when up to date"
  assert_contains "$OUT" "nothing to apply"
}

test_eight_concurrent_migrators_apply_each_migration_once() {
  local db i pids=() rc=0 committed
  db=$(new_db)
  for i in $(seq 1 8); do
    DATABASE_URL="$db" "$ABILITYSYNC" migrate up >"$SUITE_TMP/conc.$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { rc=$?; echo "migrator $((i + 1)) exited $rc"; cat "$SUITE_TMP/conc.$((i + 1)).log"; }
  done
  assert_eq "$rc" 0 "every migrator's exit status"
  committed=$(cat "$SUITE_TMP"/conc.*.log | grep -c "committed $NMIG migration(s)" || true)
  assert_eq "$committed" 1 "migrators that applied"
  assert_eq "$(psql_q "$db" -c "select count(*), count(distinct created_at) from $LEDGER")" "$NMIG|$NMIG" "ledger"
}

test_out_of_order_migration_is_refused_then_applied_when_allowed() {
  local db a="$SUITE_TMP/ooo-a" b="$SUITE_TMP/ooo-b"
  db=$(new_db)
  rm -rf "$a" "$b"
  mkmig "$a" 0000_one 1000 'create table one (i int);'
  mkmig "$a" 0002_three 3000 'create table three (i int);'
  mkmig "$b" 0000_one 1000 'create table one (i int);'
  mkmig "$b" 0001_late_branch 2000 'create table two (i int);'
  mkmig "$b" 0002_three 3000 'create table three (i int);'
  DATABASE_URL="$db" migrate up --dir "$a"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate status --dir "$b"
  assert_rc 4 "status exit code"
  assert_contains "$OUT" "out-of-order  0001_late_branch"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --dir "$b"
  assert_rc 4 "up exit code"
  assert_contains "$OUT" "0001_late_branch (when 2000) is not applied, but a newer migration is; drizzle-kit would skip it forever"
  assert_eq "$(exists "$db" public.two)" f "refused means nothing applied"
  run env DATABASE_URL="$db" MIGRATE_ALLOW_OUT_OF_ORDER=true "$ABILITYSYNC" migrate up --dir "$b"
  assert_rc 0
  assert_eq "$(exists "$db" public.two)" t "applied when allowed"
  assert_eq "$(psql_q "$db" -c "select string_agg(created_at::text, ',' order by id) from $LEDGER")" "1000,3000,2000"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate status --dir "$b"
  assert_rc 0 "status afterwards"
}

test_file_changed_after_apply_is_refused_naming_it() {
  local db d="$SUITE_TMP/changed"
  db=$(new_db)
  rm -rf "$d"
  mkmig "$d" 0000_one 1000 'create table one (i int);'
  DATABASE_URL="$db" migrate up --dir "$d"
  printf '%s' 'create table one (i bigint);' >"$d/0000_one.sql"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --dir "$d"
  assert_rc 4
  assert_contains "$OUT" "$d/0000_one.sql changed after it was applied"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate status --dir "$d"
  assert_rc 4
  assert_contains "$OUT" "changed       0000_one"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --dir "$d" --allow-changed
  assert_rc 0
  assert_contains "$OUT" "accepted: --allow-changed"
}

test_null_created_at_row_is_refused() {
  local db
  db=$(new_db)
  DATABASE_URL="$db" migrate up
  psql_q "$db" -c "insert into $LEDGER (hash, created_at) values ('x', null)"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up
  assert_rc 4
  assert_contains "$OUT" "1 row(s) with created_at NULL; drizzle-kit would re-run every migration"
}

test_failing_statement_names_tag_index_and_error_and_leaves_nothing() {
  local db d="$SUITE_TMP/failing"
  db=$(new_db)
  rm -rf "$d"
  mkmig "$d" 0000_ok 1000 'create table first_one (i int);'
  mkmig "$d" 0001_bad 2000 $'create table second_one (i int);\n--> statement-breakpoint\ncreate tabel oops (i int);\n--> statement-breakpoint\nselect 1;'
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --dir "$d"
  assert_rc 1
  assert_contains "$OUT" "$d/0001_bad.sql statement 2 of 3 failed"
  assert_contains "$OUT" 'syntax error at or near "tabel"'
  assert_contains "$OUT" "SQLSTATE 42601"
  assert_contains "$OUT" "nothing from this run was applied"
  assert_eq "$(exists "$db" public.first_one)" f "earlier migration of the run"
  assert_eq "$(exists "$db" public.second_one)" f "earlier statement of the migration"
  assert_eq "$(psql_q "$db" -c "select count(*) from pg_namespace where nspname = 'drizzle'")" 0 "the ledger's schema"
}

test_statement_that_cannot_run_in_a_transaction_is_reported_first() {
  local db d="$SUITE_TMP/nontx"
  db=$(new_db)
  rm -rf "$d"
  mkmig "$d" 0000_ok 1000 'create table t (a int);'
  mkmig "$d" 0001_index 2000 $'-- CONCURRENTLY in a comment is fine\nselect 1;\n--> statement-breakpoint\nCREATE INDEX CONCURRENTLY t_a ON t (a);'
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --dir "$d"
  assert_rc 4
  assert_contains "$OUT" "$d/0001_index.sql statement 2 of 2: CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
  assert_eq "$(exists "$db" public.t)" f "nothing applied"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate plan --dir "$d"
  assert_rc 4 "plan refuses too"
}

test_bad_folders_are_refused_naming_the_file() {
  local db d="$SUITE_TMP/bad"
  db=$(new_db)
  rm -rf "$d" && mkdir -p "$d/meta"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --dir "$d"
  assert_rc 2 "missing journal: not a migrations folder (a configuration error)"
  assert_contains "$OUT" "$d/meta/_journal.json: missing"
  printf '{"entries": [ {"tag": "0000_x", "when": 1,} ]}' >"$d/meta/_journal.json"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --dir "$d"
  assert_rc 1 "malformed journal"
  assert_contains "$OUT" "$d/meta/_journal.json:1:"
  assert_contains "$OUT" "malformed JSON"
  printf '{"entries": [ {"tag": "0000_x", "when": 1.5} ]}' >"$d/meta/_journal.json"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --dir "$d"
  assert_rc 1 "non-integer when"
  assert_contains "$OUT" 'entries[0] (0000_x): "when" is not an integer'
  printf '{"entries": [ {"tag": "0000_x", "when": 1} ]}' >"$d/meta/_journal.json"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --dir "$d"
  assert_rc 1 "missing sql"
  assert_contains "$OUT" "$d/0000_x.sql: missing (journal entry 0, tag 0000_x)"
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up --dir "$SUITE_TMP/nowhere"
  assert_rc 2 "missing folder (a configuration error)"
  assert_contains "$OUT" "$SUITE_TMP/nowhere: no such directory"
  assert_eq "$(exists "$db" "$LEDGER")" f "database untouched"
}

test_unreachable_database_gives_up_after_the_wait() {
  local port start secs
  port=$(( (RANDOM % 1000) + 1 ))
  start=$(date +%s)
  run env DATABASE_URL="postgres://postgres@127.0.0.1:$port/x" "$ABILITYSYNC" migrate up --wait 2
  secs=$(($(date +%s) - start))
  assert_rc 1
  assert_contains "$OUT" "waiting for postgres at 127.0.0.1:$port/x (attempt 1"
  assert_contains "$OUT" "gave up waiting for postgres at 127.0.0.1:$port/x after 2."
  [ "$secs" -le 5 ] || fail "took $secs s for a 2 s wait"
  run env DATABASE_URL="postgres://postgres@127.0.0.1:$port/x" "$ABILITYSYNC" migrate up
  assert_rc 1 "without --wait"
  assert_contains "$OUT" "use --wait SECONDS"
}

test_server_that_refuses_us_is_not_waited_for() {
  local start
  start=$(date +%s)
  run env DATABASE_URL="$(db_url no_such_database)" "$ABILITYSYNC" migrate up --wait 30
  assert_rc 1
  assert_contains "$OUT" 'database "no_such_database" does not exist'
  [ $(($(date +%s) - start)) -le 5 ] || fail "waited for a server that answered"
}

# A database in another encoding would keep the service's UTF-8 text converted
# (the original app then reads it garbled) or refuse whole writes: refused
# before anything is created, naming the encoding.
test_a_database_not_in_utf8_is_refused_naming_its_encoding() {
  local url
  url=$(NEW_DB_ENCODING=LATIN1 new_db latin1)
  run env DATABASE_URL="$url" "$ABILITYSYNC" migrate up
  assert_rc 1
  assert_contains "$OUT" "the database's encoding is LATIN1, not UTF8"
  assert_contains "$OUT" "ENCODING 'UTF8'"
  assert_eq "$(exists "$url" "$LEDGER")" f "no ledger created"
  assert_eq "$(exists "$url" public.abilities)" f "no table created"
}

test_without_database_url_it_says_so() {
  run env -u DATABASE_URL "$ABILITYSYNC" migrate up
  assert_rc 2
  assert_contains "$OUT" "DATABASE_URL is not set"
}

test_ledger_location_is_configurable() {
  local db
  db=$(new_db)
  run env DATABASE_URL="$db" MIGRATIONS_SCHEMA=ops "$ABILITYSYNC" migrate up --table "My Migrations"
  assert_rc 0
  assert_eq "$(psql_q "$db" -c 'select count(*) from ops."My Migrations"')" "$NMIG"
  assert_eq "$(exists "$db" "$LEDGER")" f "default ledger"
}

test_ledger_upgraded_by_drizzle_v1_gets_names() {
  local db want
  db=$(new_db)
  psql_q "$db" -c 'create schema drizzle' -c "create table $LEDGER (id serial primary key, hash text not null,
    created_at bigint, name text, applied_at timestamptz default now())"
  DATABASE_URL="$db" migrate up
  # drizzle v1 names a migration <when as UTC yyyymmddHHMMSS>_<tag without its number>.
  want=$(jq -r '.entries[] | "\(.when) \(.tag)"' "$DIR/meta/_journal.json" | while read -r when tag; do
    echo "$(date -u -d "@$((when / 1000))" +%Y%m%d%H%M%S)_${tag#*_}"
  done | paste -sd,)
  assert_eq "$(psql_q "$db" -c "select string_agg(name, ',' order by id) from $LEDGER")" "$want" "v1 names"
}

# The original application's own table and rows, before abilitysync ever ran.
original_app_sql() {
  cat <<'SQL'
CREATE TABLE abilities (
  ability_id TEXT PRIMARY KEY,
  vector_id INTEGER NOT NULL,
  ability_name TEXT NOT NULL,
  service_name TEXT NOT NULL,
  description TEXT NOT NULL,
  embedding JSONB NOT NULL,
  dynamic_header_keys JSONB DEFAULT '[]',
  dynamic_headers_required BOOLEAN DEFAULT false,
  metadata JSONB DEFAULT '{}',
  created_at TIMESTAMP DEFAULT NOW(),
  updated_at TIMESTAMP DEFAULT NOW()
);
CREATE INDEX idx_abilities_service_name ON abilities(service_name);
CREATE INDEX idx_abilities_dynamic_headers ON abilities(dynamic_headers_required);
INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding, metadata)
SELECT 'ability-' || i, i, 'name_' || i, 'api.github.com', 'does thing ' || i,
       jsonb_build_array(i * 0.5, -1.25e-3, 0), jsonb_build_object('n', i)
FROM generate_series(1, 500) AS i;
SQL
}

test_adopts_a_database_the_original_app_created() {
  local db before after
  db=$(new_db)
  original_app_sql | psql_q "$db" >/dev/null
  before=$(psql_q "$db" -c "select count(*), md5(string_agg(t::text, '' order by ability_id)) from abilities t")
  run env DATABASE_URL="$db" "$ABILITYSYNC" migrate up
  assert_rc 0
  after=$(psql_q "$db" -c "select count(*), md5(string_agg(t::text, '' order by ability_id)) from abilities t")
  assert_eq "$after" "$before" "rows"
  assert_eq "$(schema_dump "$db")" "$(cat schema/schema.sql)" "schema after adoption"
}

test_schema_matches_the_golden_dump() {
  local db
  db=$(new_db)
  DATABASE_URL="$db" migrate up
  diff -u schema/schema.sql <(schema_dump "$db") || fail "schema differs from schema/schema.sql"
}

test_json_logs_are_one_object_per_line() {
  local db line n=0
  db=$(new_db)
  run env DATABASE_URL="$db" LOG_FORMAT=json "$ABILITYSYNC" migrate up
  assert_rc 0
  while IFS= read -r line; do
    jq -e 'has("ts") and has("level") and has("component") and has("msg")' <<<"$line" >/dev/null ||
      fail "not a JSON log line: $line"
    n=$((n + 1))
  done <<<"$OUT"
  [ "$n" -ge 4 ] || fail "expected several log lines, got $n"
}

test_bad_configuration_names_the_variable() {
  run env DATABASE_URL=postgres://x@127.0.0.1/x DB_WAIT=soon MIGRATE_LOCK_TIMEOUT=0 "$ABILITYSYNC" migrate up
  assert_rc 2
  assert_contains "$OUT" 'DB_WAIT="soon": not an integer (accepted: an integer from 0 to 86400)'
  assert_contains "$OUT" 'MIGRATE_LOCK_TIMEOUT="0": out of range'
  run "$ABILITYSYNC" migrate up --wait=-3
  assert_rc 2
  assert_contains "$OUT" '--wait: DB_WAIT="-3": out of range'
  run "$ABILITYSYNC" migrate up --bogus
  assert_rc 2
  assert_contains "$OUT" "unknown option --bogus"
  run "$ABILITYSYNC" migrate sideways
  assert_rc 2
  assert_contains "$OUT" "unknown action sideways"
}

test_passwords_never_reach_the_logs() {
  run env DATABASE_URL='postgres://app:hunter2@127.0.0.1:1/db' "$ABILITYSYNC" migrate up
  assert_rc 1
  assert_contains "$OUT" "DATABASE_URL=postgres://app:***@127.0.0.1:1/db"
  assert_not_contains "$OUT" hunter2
  run env DATABASE_URL='host=127.0.0.1 port=1 password=hunter2' "$ABILITYSYNC" config
  assert_contains "$OUT" "password=***"
  assert_not_contains "$OUT" hunter2
}

test_help_describes_actions_options_and_environment() {
  run "$ABILITYSYNC" migrate --help
  assert_rc 0
  assert_contains "$OUT" "usage: abilitysync migrate [up|status|plan]"
  assert_contains "$OUT" "--allow-out-of-order"
  assert_contains "$OUT" "MIGRATE_LOCK_TIMEOUT"
  assert_contains "$OUT" "exit status"
}

run_suite
