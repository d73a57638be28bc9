#!/usr/bin/env bash
# The containers, built and run for real with podman (no Docker engine, no
# image registry here): the base image is built offline with mmdebstrap from
# the Debian mirror and tagged as the Dockerfile's base; the image is built
# from the Dockerfile; a stand-in for the compose file's Postgres image is
# built from the same base (tests/containers/postgres/). Then: the image is
# small and runs as a non-root user, its HEALTHCHECK passes, two containers
# started at once migrate once and both serve, a registration reaches both
# stores, `podman stop` ends it with status 0 and nothing acknowledged lost,
# and the compose file comes up with podman-compose, serves, and goes down.
#
# Where podman cannot run (not installed, no user namespaces), the suite says
# `skipped: <reason>` in its summary line instead of passing silently.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

# Podman's own configuration for this kind of machine: runc (crun fails on
# hybrid cgroups), cgroupfs, no default ulimits (refused here).
PODMAN_DIR=${PODMAN_DIR:-/var/tmp/abilitysync-podman}
export CONTAINERS_CONF="$PODMAN_DIR/containers.conf"
BASE=docker.io/library/debian:bookworm-slim
IMAGE=localhost/abilitysync:test
PG_IMAGE=docker.io/library/postgres:15-bookworm
EMU_IMAGE=localhost/abilitysync-emulator:local

skip_reason() {
  local t
  for t in podman mmdebstrap; do
    command -v "$t" >/dev/null || { echo "$t is not installed (make deps installs it)"; return; }
  done
  [ "$(id -u)" = 0 ] || [ -s /etc/subuid ] || { echo "no subordinate uids for rootless podman"; return; }
}

prepare_podman() {
  mkdir -p "$PODMAN_DIR"
  cat >"$CONTAINERS_CONF" <<'EOF'
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[containers]
default_ulimits = []
EOF
  # What an earlier run that was killed left behind (this suite's names only).
  local c
  for c in $(podman ps -a --format '{{.Names}}' | grep -E '^(abilitysync-test-[a-z]+-|abilitysynctest)[0-9]'); do
    podman rm -f -t 0 "$c" >/dev/null 2>&1 || true
  done
  for c in $(podman network ls --format '{{.Name}}' | grep -E '^abilitysynctest[0-9]'); do podman network rm "$c" >/dev/null 2>&1 || true; done
  for c in $(podman volume ls --format '{{.Name}}' | grep -E '^abilitysynctest[0-9]'); do podman volume rm "$c" >/dev/null 2>&1 || true; done
}

# The Dockerfile's base, built once per machine (podman keeps it).
base_image() {
  podman image exists "$BASE" && return
  # The merged-usr hook instead of the usrmerge package, which drags in perl (50 MB).
  mmdebstrap --variant=minbase --format=tar --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' bookworm "$PODMAN_DIR/rootfs.tar" >"$SUITE_TMP/mmdebstrap.log" 2>&1 ||
    fail "mmdebstrap: $(tail -n 5 "$SUITE_TMP/mmdebstrap.log")"
  podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' "$PODMAN_DIR/rootfs.tar" "$BASE" >/dev/null
  rm -f "$PODMAN_DIR/rootfs.tar"
}

build() { # TAG CONTEXT [podman build args]
  local tag=$1 dir=$2
  shift 2
  podman build --format docker --isolation=chroot --network=host -t "$tag" "$@" "$dir" \
    >"$SUITE_TMP/build.$(basename "$tag").log" 2>&1 || fail "podman build $tag: $(tail -n 15 "$SUITE_TMP/build.$(basename "$tag").log")"
}

# Built once per run (the layer cache makes an unchanged tree quick), so the
# images tested are always those of this checkout.
images() {
  [ ! -f "$SUITE_TMP/images.built" ] || return 0
  base_image
  build "$IMAGE" .
  build "$EMU_IMAGE" . --target emulator
  build "$PG_IMAGE" tests/containers/postgres
  podman tag "$IMAGE" localhost/abilitysync:local # the name the compose file gives it
  : >"$SUITE_TMP/images.built"
}

CONTAINERS=()
cleanup_containers() {
  local c
  for c in "${CONTAINERS[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
  CONTAINERS=()
}

COMPOSE=() # the project directory and name while a compose project is up
compose_down() {
  [ ${#COMPOSE[@]} -eq 2 ] || return 0
  # down reads the file too, which insists on the keys being set.
  (cd "${COMPOSE[0]}" && ABILITYSYNC_API_KEYS=down podman-compose -p "${COMPOSE[1]}" down -v \
    >"$SUITE_TMP/compose.down.log" 2>&1)
  local rc=$?
  COMPOSE=()
  return "$rc"
}

# The harness calls it when a test ends, whichever way.
after_each() {
  cleanup_containers
  compose_down || true
}

# run_pg NAME PORT: the stand-in Postgres on the host's loopback.
run_pg() {
  CONTAINERS+=("$1")
  podman run -d --name "$1" --network=host -e POSTGRES_PASSWORD=postgres -e POSTGRES_DB=reverse_engineer \
    -e PGPORT="$2" "$PG_IMAGE" >/dev/null
}

# run_svc NAME PORT PGPORT: abilitysync from the image, through its entrypoint.
run_svc() {
  CONTAINERS+=("$1")
  podman run -d --name "$1" --network=host -e LISTEN="127.0.0.1:$2" -e LOG_FORMAT=text \
    -e DATABASE_URL="postgres://postgres:postgres@127.0.0.1:$3/reverse_engineer" -e VECTOR_DB_API="$EMU_URL" \
    -e EMBEDDING_DIM=8 -e SYNC_WAIT_MS=2000 "$IMAGE" >/dev/null
}

wait_http() { # URL [seconds]
  for _ in $(seq 1 $((${2:-60} * 10))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return
    sleep 0.1
  done
  fail "$1 never answered 200"
}

test_the_image_is_small_and_runs_as_a_non_root_user() {
  local size user
  images
  size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
  user=$(podman run --rm --entrypoint id "$IMAGE" -un)
  assert_eq "$user" abilitysync "the user the image runs as"
  assert_eq "$(podman run --rm --entrypoint sh "$IMAGE" -c 'command -v vdb-emulator || echo none')" none \
    "the runtime image holds abilitysync alone"
  echo "image $IMAGE: $((size / 1000000)) MB ($(podman image inspect --format '{{.Size}}' "$BASE" | awk '{printf "%d", $1 / 1e6}') MB of it the base)" |
    tee "$TEST_TMP/containers.size"
  [ "$size" -lt 100000000 ] || fail "the image is $size bytes (goal: under 100 MB)"
}

test_two_containers_migrate_once_serve_pass_their_healthcheck_and_stop_cleanly() {
  local pgport p1 p2 rc n
  images
  start_emulator --listen 127.0.0.1:0
  pgport=$(free_port)
  p1=$(free_port)
  p2=$(free_port)
  run_pg "abilitysync-test-pg-$$" "$pgport"
  # Both started at once, before Postgres is even up: each waits, one migrates, the other finds nothing to do.
  run_svc "abilitysync-test-a-$$" "$p1" "$pgport" &
  local first=$!
  run_svc "abilitysync-test-b-$$" "$p2" "$pgport"
  wait "$first"
  CONTAINERS+=("abilitysync-test-a-$$" "abilitysync-test-b-$$")
  wait_http "http://127.0.0.1:$p1/readyz" 90
  wait_http "http://127.0.0.1:$p2/readyz" 90
  n=$(podman logs "abilitysync-test-a-$$" 2>&1 | grep -c "committed [0-9]* migration" || true)
  n=$((n + $(podman logs "abilitysync-test-b-$$" 2>&1 | grep -c "committed [0-9]* migration" || true)))
  assert_eq "$n" 1 "containers that applied the migrations"
  assert_eq "$(podman exec "abilitysync-test-pg-$$" psql -q -A -t -p "$pgport" -d reverse_engineer \
    -c 'select count(*), count(distinct created_at) from drizzle.__drizzle_migrations')" \
    "$(jq '.entries | length' drizzle-compat/drizzle/meta/_journal.json)|$(jq '.entries | length' drizzle-compat/drizzle/meta/_journal.json)" \
    "each migration applied once"
  podman healthcheck run "abilitysync-test-a-$$" || fail "the HEALTHCHECK failed"
  SVC_URL="http://127.0.0.1:$p1" api POST /v1/abilities "$(ability_json in-a-box ctr.example)"
  assert_eq "$CODE" 201 "a registration through the container: $BODY"
  emu GET "/_admin/tenants/reverse_engineer/blobs/abilities_ctr_example/ids"
  assert_eq "$(jq -c .ids <<<"$BODY")" "[$(SVC_URL="http://127.0.0.1:$p1" api GET /v1/abilities/in-a-box; jq .vector_id <<<"$BODY")]" \
    "the vector DB holds it"
  podman stop -t 30 "abilitysync-test-a-$$" >/dev/null
  rc=$(podman inspect --format '{{.State.ExitCode}}' "abilitysync-test-a-$$")
  assert_eq "$rc" 0 "podman stop: the exit status"
  assert_contains "$(podman logs "abilitysync-test-a-$$" 2>&1)" "SIGTERM"
  SVC_URL="http://127.0.0.1:$p2" api GET /v1/abilities/in-a-box
  assert_eq "$(jq -r .sync.state <<<"$BODY")" synced "the write, seen from the other container"
  cleanup_containers
  stop_emulator
}

test_the_compose_file_comes_up_serves_and_goes_down() {
  local dir="$SUITE_TMP/compose" project="abilitysynctest$$" port url
  images
  command -v podman-compose >/dev/null || fail "podman-compose is not installed (make deps installs it)"
  mkdir -p "$dir"
  cp docker-compose.yml "$dir/"
  port=$(free_port)
  url="http://127.0.0.1:$port"
  export ABILITYSYNC_API_KEYS=k1 ABILITYSYNC_PORT=$port
  COMPOSE=("$dir" "$project")
  # The images are built already; the project name keeps its containers and volume apart.
  (cd "$dir" && podman-compose -p "$project" up -d --no-build abilitysync >"$SUITE_TMP/compose.up.log" 2>&1) ||
    fail "podman-compose up: $(tail -n 20 "$SUITE_TMP/compose.up.log")"
  for _ in $(seq 1 900); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ] && break
    sleep 0.1
  done
  # No systemd here to schedule healthchecks: run each once, as the engine would.
  podman healthcheck run "${project}_postgres_1" || fail "the Postgres container's healthcheck (pg_isready) failed"
  podman healthcheck run "${project}_abilitysync_1" || fail "abilitysync's HEALTHCHECK failed"
  SVC_URL=$url api POST /v1/abilities "$(ability_json composed compose.example 3072)" -H 'Authorization: Bearer k1'
  [[ $CODE == 20[12] ]] || {
    (cd "$dir" && podman-compose -p "$project" logs >"$SUITE_TMP/compose.logs" 2>&1) || true
    fail "a registration through compose: $CODE $BODY; $(tail -n 30 "$SUITE_TMP/compose.logs")"
  }
  SVC_URL=$url api GET /v1/abilities/composed "" -H 'Authorization: Bearer k1'
  assert_eq "$CODE" 200 "read back: $BODY"
  assert_eq "$(jq -r .sync.state <<<"$BODY")" synced "the registration reached the vector DB"
  compose_down || fail "podman-compose down: $(tail -n 20 "$SUITE_TMP/compose.down.log")"
  [ "$(podman ps -a --filter "name=$project" --format '{{.Names}}' | grep -c .)" = 0 ] || fail "containers left"
  ! podman volume exists "${project}_pgdata" || fail "down -v left the volume ${project}_pgdata"
}

reason=$(skip_reason)
if [ -n "$reason" ]; then
  echo "# summary: 0 passed, 0 failed (skipped: $reason)"
  exit 0
fi
prepare_podman
run_suite
rc=$?
[ ! -f "$TEST_TMP/containers.size" ] || sed 's/^/# /' "$TEST_TMP/containers.size"
exit "$rc"
