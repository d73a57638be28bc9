#!/usr/bin/env bash
# readme-tables.sh - rewrites the README's generated blocks:
#   - from the binary: the configuration (abilitysync config --markdown), the
#     exit statuses and error codes (abilitysync codes --markdown) and the
#     drift categories (--drift); the lint suite fails when they are stale;
#   - from the last measuring runs: each <!-- figure:NAME --> block becomes
#     build/figures/NAME.md (`make bench`) or NAME.txt (a suite's figures, kept
#     by tests/run.sh when it passed). A block without a file is left alone and
#     named, so a figure in the README is always one some command printed.
# Run it (make readme-tables) after changing a table or measuring.
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
trap 'rm -f "$tmp" "$tmp.names"' EXIT
"$bin" config --markdown >"$tmp"
replace config-table "$tmp"
"$bin" codes --markdown >"$tmp"
replace codes "$tmp"
"$bin" codes --drift --markdown >"$tmp"
replace drift "$tmp"
echo "README.md: configuration table, exit statuses / error codes and drift categories regenerated"

sed -nE 's/^<!-- (figure:[a-z0-9-]+):begin -->$/\1/p' README.md >"$tmp.names"
while read -r name; do
  f=build/figures/${name#figure:}
  if [ -f "$f.md" ]; then
    src=$f.md
    cp "$src" "$tmp"
  elif [ -f "$f.txt" ]; then
    src=$f.txt
    { echo '```'; cat "$src"; echo '```'; } >"$tmp"
  else
    echo "README.md: $name left as it was: no $f.md or $f.txt (run the command that measures it)"
    continue
  fi
  replace "$name" "$tmp"
  echo "README.md: $name regenerated from $src"
done <"$tmp.names"
