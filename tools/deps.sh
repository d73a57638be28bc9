#!/usr/bin/env bash
# deps.sh - installs what building, testing and `make run` need, and only what is
# missing: Debian packages with apt-get, drizzle-kit and friends with npm ci.
# Run by `make run` and `make test`; quiet and quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages (bookworm). Why each one is here:
PKGS=(
  make gcc pkg-config libc6-dev      # the release build
  clang libclang-rt-14-dev           # the ASan + UBSan build, the libFuzzer targets (clang's runtimes)
  libpq-dev libjansson-dev libssl-dev # Postgres, JSON, SHA-256 and TLS
  libevent-dev libcurl4-openssl-dev  # the event loop and HTTP server; the vector DB client
  libcriterion-dev                   # unit tests
  postgresql postgresql-client       # a real server for tests and `make run`
  jq curl                            # integration tests read JSON and speak HTTP
  shellcheck yamllint                # the lint suite
  valgrind                           # the soak suite: serve under memcheck, no leak
  prometheus                         # promtool: the shipped alert rules' unit tests (suite lint)
  hyperfine                          # bench: the no-op migration timings
  time                               # bench/jobs.sh: peak RSS and CPU of a job (/usr/bin/time)
  podman podman-compose mmdebstrap uidmap slirp4netns fuse-overlayfs runc
  golang-github-containernetworking-plugin-dnsname
                                     # the containers suite: images built and run for real, compose brought up
  ca-certificates
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# node and npm may come from Debian (nodejs, npm) or elsewhere; only the commands matter.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages, pinned by their lock files: drizzle-kit/drizzle-orm/pg for the
# interop tests, the Dockerfile linter, drizzle-orm/pg for the benchmark's peer
# (bench/peer). Reinstalled when a lock file changes.
for dir in drizzle-compat tools/lint bench/peer; do
  [ -f "$dir/package-lock.json" ] || continue
  if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
     [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "deps: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
done
