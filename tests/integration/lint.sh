#!/usr/bin/env bash
# Static checks that keep the deliverables honest: shell scripts, the compose
# file, the Dockerfile, and the README's generated configuration table.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

test_shell_scripts_are_shellcheck_clean() {
  shellcheck -s sh docker-entrypoint.sh tests/containers/postgres/postgres-entrypoint.sh
  shellcheck -x tools/*.sh tests/run.sh tests/lib/*.sh tests/integration/*.sh bench/*.sh .ci/run
}

test_compose_file_and_alert_rules_are_yamllint_clean() {
  yamllint -s docker-compose.yml deploy/prometheus/alerts.yml deploy/prometheus/alerts.test.yml
}

# The OpenAPI document passes Redocly's linter, and the JSON the service
# serves is the YAML's (make openapi).
test_openapi_document_lints_clean_and_is_current() {
  [ -x tools/lint/node_modules/.bin/redocly ] || fail "@redocly/cli is not installed: run make deps"
  REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true tools/lint/node_modules/.bin/redocly lint --config api/redocly.yaml api/openapi.yaml
  node tools/openapi.js --check
}

# The shipped alert rules are valid, pass their own unit tests, and read only
# metrics the service exports (a renamed metric would silence an alert).
test_alert_rules_pass_promtool_and_read_exported_metrics() {
  local m n=0
  command -v promtool >/dev/null || fail "promtool is not installed: run make deps (Debian package prometheus)"
  promtool check rules deploy/prometheus/alerts.yml
  (cd deploy/prometheus && promtool test rules alerts.test.yml)
  while read -r m; do
    grep -q "\"$m\"" src/*.c || fail "alerts.yml reads $m, which no source file exports"
    n=$((n + 1))
  done < <(grep -o 'abilitysync_[a-z_]*' deploy/prometheus/alerts.yml | sort -u)
  [ "$n" -ge 5 ] || fail "only $n metrics found in alerts.yml"
}

test_dockerfile_lints_clean() {
  [ -x tools/lint/node_modules/.bin/dockerfile-utils ] || fail "dockerfile-utils is not installed: run make deps"
  tools/lint/node_modules/.bin/dockerfile-utils lint Dockerfile
}

# The properties the container promises, read off the Dockerfile itself.
test_dockerfile_is_multistage_nonroot_with_healthcheck_and_entrypoint() {
  local runtime
  [ "$(grep -c '^FROM ' Dockerfile)" -ge 2 ] || fail "not multi-stage"
  grep -q '^FROM debian:bookworm' Dockerfile || fail "not Debian bookworm"
  runtime=$(awk '/^FROM /{stage++} stage >= 2' Dockerfile)
  assert_contains "$runtime" "USER abilitysync" "runtime stage"
  assert_contains "$runtime" "HEALTHCHECK" "runtime stage"
  assert_contains "$runtime" 'ENTRYPOINT ["docker-entrypoint.sh"]' "runtime stage"
  assert_not_contains "$runtime" "-dev " "runtime stage packages"
  assert_not_contains "$runtime" " gcc" "runtime stage packages"
}

# assert_readme_block BLOCK WHAT ARGS...: the README's block BLOCK is what `abilitysync ARGS` prints.
assert_readme_block() {
  local block=$1 what=$2 want got
  shift 2
  want=$("$ABILITYSYNC" "$@")
  [ "$(grep -c '^| ' <<<"$want")" -ge 5 ] || fail "abilitysync $* prints no table: $want"
  got=$(sed -n "/<!-- $block:begin -->/,/<!-- $block:end -->/p" README.md | sed '1d;$d')
  [ "$got" = "$want" ] || {
    diff <(echo "$want") <(echo "$got") || true
    fail "README.md's $what is stale: regenerate it with 'make readme-tables' (abilitysync $*)"
  }
}

test_readme_configuration_table_is_the_generated_one() {
  assert_readme_block config-table "configuration table" config --markdown
}

test_readme_exit_statuses_and_error_codes_are_the_generated_ones() {
  assert_readme_block codes "exit statuses and error codes" codes --markdown
}

test_readme_drift_categories_are_the_generated_ones() {
  assert_readme_block drift "drift categories" codes --drift --markdown
  [ "$(grep -c '^| `' <<<"$("$ABILITYSYNC" codes --drift --markdown)")" -ge 10 ] || fail "too few drift categories"
}

# ARCHITECTURE.md's layering: no module uses one that uses it back.
test_the_module_graph_has_no_cycle() {
  tools/modgraph.sh --check
}

# Row shapes stay in the store: the service's modules get typed rows. The
# migrator's statements are the store's too (store_ledger.c: blocking libpq).
test_only_the_stores_and_pgpool_read_postgres_results() {
  local readers
  readers=$(grep -l -E 'PQgetvalue|PQntuples|PQgetisnull|pg_text\(|pg_int8\(|pg_bool\(' src/*.c | xargs -n1 basename | tr '\n' ' ')
  assert_eq "$readers" "pgpool.c store.c store_job.c store_ledger.c " "modules that read a Postgres result"
  ! grep -l 'libpq-fe.h' include/*.h | grep -v -E 'include/(pgconn|store_ledger)\.h' || fail "a header outside the migrator's connection and statements includes libpq"
}

test_ci_runs_exactly_the_readme_test_command() {
  grep -q '^make test$' .ci/run || fail ".ci/run does not run 'make test'"
  grep -q 'make test' README.md || fail "README.md does not show 'make test'"
  grep -q 'apt-get' .ci/run || fail ".ci/run installs nothing with apt-get"
}

run_suite
