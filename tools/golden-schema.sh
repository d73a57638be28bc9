#!/usr/bin/env bash
# golden-schema.sh - regenerates schema/schema.sql: `pg_dump --schema-only` of a
# database migrated from scratch, minus the lines that vary between runs. Run it
# (make golden) after adding a migration, review the diff, commit both.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/abilitysync-golden.XXXXXX)
chmod 755 "$dir"
trap 'tools/pgcluster.sh stop "$dir/pg"; rm -rf "$dir"' EXIT
url=$(tools/pgcluster.sh start "$dir/pg")
DATABASE_URL=$url build/release/abilitysync migrate up 2>/dev/null
pg_dump --schema-only --no-owner --no-privileges "$url" |
  grep -v -E '^(-- Dumped (from|by)|\\(un)?restrict )' >schema/schema.sql
echo "wrote schema/schema.sql ($(wc -l <schema/schema.sql) lines)"
