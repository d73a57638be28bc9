/* Reading a drizzle-kit migrations folder: the journal, the files, the split, the hash. */
#include "journal.h"

#include "buf.h"
#include "mem.h"
#include "text.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIXTURE_DIR "tests/fixtures/drizzle-doc"

static bool parse(const char *json, struct errbuf *err, struct journal_entry **e, size_t *n)
{
	return journal_parse(json, strlen(json), "meta/_journal.json", e, n, err);
}

static void expect_parse_error(const char *json, const char *needle)
{
	struct journal_entry *e = NULL;
	struct errbuf err = {{0}, false};
	size_t n = 99;

	cr_assert(not(parse(json, &err, &e, &n)), "accepted: %s", json);
	cr_assert(eq(ptr, e, NULL));
	cr_assert(eq(sz, n, 0));
	cr_assert(not(eq(ptr, strstr(err.msg, needle), NULL)), "error \"%s\" lacks \"%s\"", err.msg, needle);
	cr_assert(not(eq(ptr, strstr(err.msg, "meta/_journal.json"), NULL)), "error does not name the file: %s",
		  err.msg);
}

Test(journal, parses_entries_in_file_order_ignoring_idx)
{
	const char *json = "{\"version\":\"7\",\"dialect\":\"postgresql\",\"entries\":["
			   "{\"idx\":5,\"when\":20,\"tag\":\"0001_b\",\"breakpoints\":true},"
			   "{\"idx\":0,\"when\":10,\"tag\":\"0000_a\",\"breakpoints\":false}]}";
	struct journal_entry *e;
	struct errbuf err;
	size_t n;

	cr_assert(parse(json, &err, &e, &n), "%s", err.msg);
	cr_assert(eq(sz, n, 2));
	cr_assert(eq(str, e[0].tag, "0001_b"));
	cr_assert(eq(i64, e[0].when, 20));
	cr_assert(eq(str, e[1].tag, "0000_a"));
	cr_assert(eq(i64, e[1].when, 10));
	journal_entries_free(e, n);
}

Test(journal, empty_journal_is_fine)
{
	struct journal_entry *e;
	struct errbuf err;
	size_t n;

	cr_assert(parse("{\"version\":\"7\",\"dialect\":\"postgresql\",\"entries\":[]}", &err, &e, &n));
	cr_assert(eq(sz, n, 0));
	journal_entries_free(e, n);
}

Test(journal, malformed_json_names_line_and_column)
{
	expect_parse_error("{\n  \"entries\": [\n    {\"tag\": \"x\",}\n  ]\n}", "meta/_journal.json:3:");
}

Test(journal, rejects_bad_entries_naming_them)
{
	expect_parse_error("[]", "\"entries\" array");
	expect_parse_error("{\"dialect\":\"postgresql\"}", "\"entries\" is missing");
	expect_parse_error("{\"entries\":{}}", "\"entries\" is not an array");
	expect_parse_error("{\"dialect\":\"mysql\",\"entries\":[]}", "PostgreSQL migrations only");
	expect_parse_error("{\"entries\":[1]}", "entries[0] is not an object");
	expect_parse_error("{\"entries\":[{\"when\":1}]}", "entries[0]: \"tag\" is missing");
	expect_parse_error("{\"entries\":[{\"when\":1,\"tag\":7}]}", "\"tag\" is not a string");
	expect_parse_error("{\"entries\":[{\"when\":1,\"tag\":\"\"}]}", "is empty");
	expect_parse_error("{\"entries\":[{\"when\":1,\"tag\":\"../../etc/passwd\"}]}", "path separator");
	expect_parse_error("{\"entries\":[{\"when\":1,\"tag\":\"a\\u0000b\"}]}", "NUL");
	expect_parse_error("{\"entries\":[{\"tag\":\"0000_a\"}]}", "(0000_a): \"when\" is missing");
	expect_parse_error("{\"entries\":[{\"tag\":\"0000_a\",\"when\":1.5}]}", "\"when\" is not an integer");
	expect_parse_error("{\"entries\":[{\"tag\":\"0000_a\",\"when\":\"1795392939498\"}]}", "\"when\" is not a number");
	expect_parse_error("{\"entries\":[{\"tag\":\"0000_a\",\"when\":-1}]}", "out of range");
	expect_parse_error("{\"entries\":[{\"tag\":\"0000_a\",\"when\":9007199254740992}]}", "out of range");
	expect_parse_error("{\"entries\":[{\"tag\":\"a\",\"when\":1},{\"tag\":\"a\",\"when\":2}]}", "share the tag a");
	expect_parse_error("{\"entries\":[{\"tag\":\"a\",\"when\":1},{\"tag\":\"b\",\"when\":1}]}", "share \"when\" 1");
	expect_parse_error("{\"entries\":[],\"entries\":[]}", "duplicate");
}

Test(journal, largest_exact_js_integer_is_accepted)
{
	struct journal_entry *e;
	struct errbuf err;
	size_t n;

	cr_assert(parse("{\"entries\":[{\"tag\":\"x\",\"when\":9007199254740991}]}", &err, &e, &n), "%s", err.msg);
	cr_assert(eq(i64, e[0].when, 9007199254740991LL));
	journal_entries_free(e, n);
}

/*
 * Found by fuzz_journal: refusals quoted text cut mid-character, so the
 * message was not UTF-8 (a JSON log line of it is not JSON): a tag of 121
 * "é" shown as its first 80 bytes after an odd "!", and jansson's own error
 * text quoting the bytes near a bad escape.
 */
Test(journal, fuzz_regressions)
{
	struct buf json = BUF_INIT;
	struct journal_entry *e;
	struct errbuf err;
	size_t n, i, bad;

	buf_puts(&json, "{\"entries\":[{\"tag\":\"!");
	for (i = 0; i < 120; i++)
		buf_puts(&json, "\xc3\xa9");
	buf_puts(&json, "\",\"when\":1}]}");
	cr_assert(not(parse(json.data, &err, &e, &n)));
	cr_assert(utf8_valid(err.msg, strlen(err.msg), &bad), "not UTF-8 at %zu: %s", bad, err.msg);
	cr_assert(not(eq(ptr, strstr(err.msg, "entries[0]: \"tag\" \"!\xc3\xa9"), NULL)), "%s", err.msg);
	cr_assert(not(eq(ptr, strstr(err.msg, "is longer than 200 bytes"), NULL)), "%s", err.msg);
	buf_free(&json);

	cr_assert(not(parse("\"=\\\xc3\xa9", &err, &e, &n)));
	cr_assert(utf8_valid(err.msg, strlen(err.msg), &bad), "not UTF-8 at %zu: %s", bad, err.msg);
	cr_assert(not(eq(ptr, strstr(err.msg, "meta/_journal.json:1:"), NULL)), "%s", err.msg);
}

static size_t split(const char *s, char ***chunks)
{
	return journal_split(s, strlen(s), chunks);
}

static void free_chunks(char **c, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(c[i]);
	free(c);
}

Test(journal, split_matches_javascript_split)
{
	char **c;
	size_t n;

	n = split("", &c);
	cr_assert(eq(sz, n, 1));
	cr_assert(eq(str, c[0], ""));
	free_chunks(c, n);

	n = split("a;--> statement-breakpoint\nb;", &c);
	cr_assert(eq(sz, n, 2));
	cr_assert(eq(str, c[0], "a;"));
	cr_assert(eq(str, c[1], "\nb;"), "the leading newline is kept, as drizzle sends it");
	free_chunks(c, n);

	n = split("--> statement-breakpoint--> statement-breakpoint", &c);
	cr_assert(eq(sz, n, 3), "N separators give N+1 chunks, empty ones kept");
	cr_assert(eq(str, c[0], ""));
	cr_assert(eq(str, c[1], ""));
	cr_assert(eq(str, c[2], ""));
	free_chunks(c, n);

	n = split("select '--> statement-breakpoint'", &c);
	cr_assert(eq(sz, n, 2), "quotes are not looked into, exactly like drizzle");
	free_chunks(c, n);
}

Test(journal, loads_the_drizzle_experiment_folder_with_drizzles_hash)
{
	struct journal j;
	struct errbuf err;

	cr_assert(journal_load(FIXTURE_DIR, &j, &err), "%s", err.msg);
	cr_assert(eq(sz, j.n, 1));
	cr_assert(eq(str, j.m[0].tag, "0000_solid_living_mummy"));
	cr_assert(eq(i64, j.m[0].when, 1795392939498LL));
	/* The value real drizzle-kit stored for this file (reference §2.5). */
	cr_assert(eq(str, j.m[0].hash, "2ef5f4ade52c1aa809fcf24be3872488f0341758a8f06baf827f09dd13d5f72d"));
	cr_assert(eq(sz, j.m[0].nchunks, 3));
	cr_assert(eq(int, strncmp(j.m[0].chunks[0], "CREATE TABLE \"abilities\" (\n", 27), 0));
	cr_assert(eq(str, j.m[0].chunks[1],
		     "\nCREATE INDEX \"idx_abilities_service_name\" ON \"abilities\" USING btree (\"service_name\");"));
	cr_assert(eq(str, j.m[0].chunks[2],
		     "\nCREATE INDEX \"idx_abilities_dynamic_headers\" ON \"abilities\" USING btree "
		     "(\"dynamic_headers_required\");"));
	cr_assert(not(j.when_unordered));
	journal_free(&j);
}

/* A scratch folder with a journal and files, removed by the fixture. */
static char tmpdir[64];

static void mkfile(const char *rel, const void *data, size_t len)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
	f = fopen(path, "wb");
	cr_assert(not(eq(ptr, f, NULL)));
	cr_assert(eq(sz, fwrite(data, 1, len, f), len));
	fclose(f);
}

static void setup_tmp(void)
{
	char meta[96];

	strcpy(tmpdir, "/tmp/abilitysync-journal-XXXXXX");
	cr_assert(not(eq(ptr, mkdtemp(tmpdir), NULL)));
	snprintf(meta, sizeof(meta), "%s/meta", tmpdir);
	mkdir(meta, 0755);
}

static void teardown_tmp(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		cr_log_warn("could not remove %s", tmpdir);
}

static void expect_load_error(const char *needle)
{
	struct journal j;
	struct errbuf err = {{0}, false};

	cr_assert(not(journal_load(tmpdir, &j, &err)));
	cr_assert(eq(sz, j.n, 0));
	cr_assert(not(eq(ptr, strstr(err.msg, needle), NULL)), "error \"%s\" lacks \"%s\"", err.msg, needle);
}

#define JOURNAL2 "{\"dialect\":\"postgresql\",\"entries\":[{\"tag\":\"0000_a\",\"when\":10},{\"tag\":\"0001_b\",\"when\":5}]}"

Test(journal_folder, missing_journal_names_the_path, .init = setup_tmp, .fini = teardown_tmp)
{
	expect_load_error("meta/_journal.json: missing");
}

Test(journal_folder, missing_directory_says_so, .init = setup_tmp, .fini = teardown_tmp)
{
	struct journal j;
	struct errbuf err;

	cr_assert(not(journal_load("/nonexistent/drizzle", &j, &err)));
	cr_assert(not(eq(ptr, strstr(err.msg, "/nonexistent/drizzle: no such directory"), NULL)), "%s", err.msg);
}

Test(journal_folder, v1_layout_is_recognised, .init = setup_tmp, .fini = teardown_tmp)
{
	char sub[128];

	snprintf(sub, sizeof(sub), "%s/20261123001539_solid", tmpdir);
	mkdir(sub, 0755);
	mkfile("20261123001539_solid/migration.sql", "select 1;", 9);
	expect_load_error("drizzle v1");
}

Test(journal_folder, missing_sql_file_names_it, .init = setup_tmp, .fini = teardown_tmp)
{
	mkfile("meta/_journal.json", JOURNAL2, strlen(JOURNAL2));
	mkfile("0000_a.sql", "select 1;", 9);
	expect_load_error("0001_b.sql: missing (journal entry 1, tag 0001_b)");
}

Test(journal_folder, invalid_utf8_names_file_and_byte, .init = setup_tmp, .fini = teardown_tmp)
{
	mkfile("meta/_journal.json", JOURNAL2, strlen(JOURNAL2));
	mkfile("0000_a.sql", "select 'caf\xe9';", 14);
	mkfile("0001_b.sql", "", 0);
	expect_load_error("0000_a.sql: not valid UTF-8 (byte 11)");
}

Test(journal_folder, nul_byte_is_refused, .init = setup_tmp, .fini = teardown_tmp)
{
	mkfile("meta/_journal.json", JOURNAL2, strlen(JOURNAL2));
	mkfile("0000_a.sql", "select 1;\0", 10);
	mkfile("0001_b.sql", "", 0);
	expect_load_error("0000_a.sql: contains a NUL byte (byte 9)");
}

Test(journal_folder, hashes_raw_bytes_bom_and_crlf_included, .init = setup_tmp, .fini = teardown_tmp)
{
	static const char body[] = "\xef\xbb\xbfselect 1;\r\n--> statement-breakpoint\r\nselect 2;";
	struct journal j;
	struct errbuf err;
	char expect[65];

	mkfile("meta/_journal.json", JOURNAL2, strlen(JOURNAL2));
	mkfile("0000_a.sql", body, sizeof(body) - 1);
	mkfile("0001_b.sql", "", 0);
	cr_assert(journal_load(tmpdir, &j, &err), "%s", err.msg);
	sha256_hex(body, sizeof(body) - 1, expect);
	cr_assert(eq(str, j.m[0].hash, expect));
	/* sha256 of the empty file, as drizzle records a custom placeholder-free file. */
	cr_assert(eq(str, j.m[1].hash, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
	cr_assert(eq(sz, j.m[0].nchunks, 2));
	cr_assert(eq(sz, j.m[1].nchunks, 1));
	cr_assert(j.when_unordered, "10 then 5 is out of order, as drizzle-kit check warns");
	journal_free(&j);
}
