#!/usr/bin/env bash
# modgraph.sh - the product's module graph (src/X.c with include/X.h is module
# X; X uses Y when X.c or X.h includes Y.h), from the #include lines.
#
#   tools/modgraph.sh           "X -> Y Z" per module, then "no cycle" or the cycle
#   tools/modgraph.sh --check   exit 1 (naming the loop) when the graph has a cycle
# The lint suite runs --check: a module that depends on one that depends on it
# back has no place in the layering ARCHITECTURE.md describes.
set -euo pipefail
cd "$(dirname "$0")/.."

edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
for c in src/*.c; do
  m=$(basename "$c" .c)
  h=include/$m.h
  [ -f "$h" ] || h=/dev/null
  cat "$c" "$h" | sed -nE 's/^#include "([a-z_]+)\.h"/\1/p' | sort -u |
    while read -r dep; do
      if [ "$dep" != "$m" ] && [ -f "src/$dep.c" ]; then echo "$m $dep"; fi
    done
  echo "$m $m" # every module, even one without dependencies
done >"$edges"

if [ "${1:-}" != --check ]; then
  awk '$1 != $2 { d[$1] = d[$1] " " $2 } { m[$1] = 1 } END { for (k in m) print k " ->" d[k] }' "$edges" | sort
fi
if loop=$(tsort "$edges" 2>&1 >/dev/null) && [ -z "$loop" ]; then
  [ "${1:-}" = --check ] || echo "no cycle"
else
  echo "the module graph has a cycle:"
  sed -n 's/^tsort: //p' <<<"$loop" | tail -n +2 | tr '\n' ' '
  echo
  exit 1
fi
