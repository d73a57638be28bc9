#!/usr/bin/env bash
# readme-tables.sh - rewrites the README's generated tables from the binary:
# the configuration (abilitysync config --markdown) and the exit statuses and
# error codes (abilitysync codes --markdown). The lint suite fails when they
# are stale; run this (make readme-tables) after changing either table.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${ABILITYSYNC:-build/release/abilitysync}

# replace BLOCK FILE: the lines between <!-- BLOCK:begin --> and <!-- BLOCK:end --> become FILE.
replace() {
  awk -v begin="<!-- $1:begin -->" -v end="<!-- $1:end -->" -v file="$2" '
    $0 == begin { print; while ((getline line < file) > 0) print line; skip = 1; next }
    $0 == end { skip = 0 }
    !skip' README.md >README.md.new
  mv README.md.new README.md
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
"$bin" config --markdown >"$tmp"
replace config-table "$tmp"
"$bin" codes --markdown >"$tmp"
replace codes "$tmp"
echo "README.md: configuration table and exit statuses / error codes regenerated"
