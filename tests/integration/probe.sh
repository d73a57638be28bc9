#!/usr/bin/env bash
# `abilitysync probe` against the emulator in each of its behaviours: what it
# finds, what it recommends, that it leaves nothing behind and never prints the key.
# shellcheck disable=SC2317,SC2119  # test functions are called indirectly; new_db takes an optional name
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"

# probe [flags]: runs it against the emulator with small vectors; sets OUT (stdout), ERR and RC.
probe() {
  run_split env VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=64 "$ABILITYSYNC" probe --max-batch 64 "$@"
}

assert_left_clean() {
  emu GET /tenants
  assert_eq "$(jq '.tenants | length' <<<"$BODY")" 0 "tenants left on the server"
}

probe_finds_mode() { # emulator mode, recommended VDB_WRITE_MODE
  start_emulator --duplicate-ids "$1"
  probe --json
  assert_rc 0
  assert_eq "$(jq -r .duplicate_ids <<<"$OUT")" "$1" "duplicate-id behaviour"
  assert_eq "$(jq -r .recommended.VDB_WRITE_MODE <<<"$OUT")" "$2" "recommended write mode"
  assert_eq "$(jq -r .cleaned_up <<<"$OUT")" true
  assert_left_clean
  stop_emulator
}

test_finds_a_server_that_overwrites() { probe_finds_mode overwrite add; }
test_finds_a_server_that_rejects() { probe_finds_mode reject delete-then-add; }
test_finds_a_server_that_duplicates() { probe_finds_mode duplicate delete-then-add; }

test_reports_in_words_too() {
  start_emulator
  probe
  assert_rc 0
  assert_contains "$OUT" "re-adding an id    overwrite"
  assert_contains "$OUT" "GET by id          returns the vector, exact at float32"
  assert_contains "$OUT" "tenant exists      answers 409"
  assert_contains "$OUT" "recommended configuration:"
  assert_contains "$OUT" "VDB_WRITE_MODE=add"
  assert_contains "$OUT" "largest batch      64 vectors"
  stop_emulator
}

test_finds_which_header_carries_the_key_and_never_prints_it() {
  start_emulator --api-key 'k3y-Wz9q' --auth-header x-api-key
  run_split env VECTOR_DB_API="$EMU_URL" EMBEDDING_DIM=64 VECTOR_DB_API_KEY='k3y-Wz9q' "$ABILITYSYNC" probe --json --max-batch 4
  assert_rc 0
  assert_eq "$(jq -r '[.key_needed, .bearer_works, .x_api_key_works] | map(tostring) | join(",")' <<<"$OUT")" "true,false,true"
  assert_eq "$(jq -r .recommended.VECTOR_DB_AUTH_HEADER <<<"$OUT")" x-api-key
  assert_not_contains "$OUT$ERR" "k3y-Wz9q" "probe output and logs"
  assert_left_clean
  stop_emulator
}

test_a_needed_key_that_is_missing_stops_it_clearly() {
  start_emulator --api-key 'k3y-Wz9q'
  probe
  assert_rc 1
  assert_contains "$OUT" "the server wants a key (HTTP 401 without one): set VECTOR_DB_API_KEY"
  emu GET /_admin/counters
  assert_eq "$(jq '.by_route["POST /tenants"] // 0' <<<"$BODY")" 0 "tenants created"
  stop_emulator
}

test_reports_what_already_exists_answers() {
  start_emulator --exists-status 400
  probe --json
  assert_rc 0
  assert_eq "$(jq -r '[.tenant_exists_status, .blob_exists_status] | map(tostring) | join(",")' <<<"$OUT")" "400,400"
  stop_emulator
}

test_reports_a_get_without_the_vector() {
  start_emulator --no-get-vector
  probe --json
  assert_rc 0
  assert_eq "$(jq -r .get_returns_vector <<<"$OUT")" false
  stop_emulator
}

test_finds_the_largest_batch() {
  # 64 numbers of ~10 bytes: ~700 bytes a vector; 12 KB lets 16 through, not 32.
  start_emulator --max-body 12000
  probe --json
  assert_rc 0
  assert_eq "$(jq -r '[.largest_batch, .refused_batch] | map(tostring) | join(",")' <<<"$OUT")" "16,32"
  assert_eq "$(jq -r .recommended.VDB_BATCH_MAX <<<"$OUT")" 8 "half of the largest accepted"
  assert_left_clean
  stop_emulator
}

test_an_unreachable_server_is_said_so() {
  run_split env VECTOR_DB_API="http://127.0.0.1:$(( (RANDOM % 1000) + 1 ))" "$ABILITYSYNC" probe
  assert_rc 1
  assert_contains "$OUT" "reachable          no:"
}

run_suite
