/*
 * fuzz_journal - a drizzle migrations folder's text: the same bytes read as
 * meta/_journal.json (journal_parse), split into statements on the breakpoint
 * (journal_split) and scanned for statements that cannot run inside the
 * migration's transaction (sql_find_nontransactional, sql_count_statements).
 *
 * Invariants:
 *   - a refused journal leaves nothing behind, and the message names the file,
 *     the entry (entries[i]) when one is at fault, and is valid UTF-8 (logs
 *     may be JSON); an accepted one is what jansson reads: the same entries in
 *     file order, tags that are file names (1-200 bytes, no separator, no NUL,
 *     not . or ..), unique, and `when` unique integers in 0..2^53-1;
 *   - the split: one piece more than there are (non-overlapping) breakpoints,
 *     no piece holds a breakpoint, and the pieces joined with the breakpoint
 *     are the text again;
 *   - the scanner: a problem lies inside the text, its statement number is at
 *     most the count of statements, the statement at its offset starts with
 *     the word it names; a whole statement put in front shifts the answer by
 *     exactly one statement and its length; the same answer twice.
 */
#include "fuzz.h"

#include "journal.h"
#include "sqlscan.h"
#include "text.h"

#include <ctype.h>
#include <jansson.h>
#include <strings.h>

#define PATH "drizzle/meta/_journal.json"
#define PREFIX "select 1;\n"

static void check_journal(const char *text, size_t len)
{
	struct journal_entry *e = (struct journal_entry *)1, *e2;
	struct errbuf err, err2;
	json_error_t jerr;
	json_t *root, *entries;
	size_t n = 99, n2, i, k, bad;
	bool ok, ok2;

	memset(&err, 0, sizeof(err));
	ok = journal_parse(text, len, PATH, &e, &n, &err);
	ok2 = journal_parse(text, len, PATH, &e2, &n2, &err2);
	CHECK(ok == ok2, "accepted once, refused once");
	if (!ok) {
		CHECK(!e && n == 0, "a refusal left %zu entries behind", n);
		CHECK(strcmp(err.msg, err2.msg) == 0, "two different refusals:\n  %s\n  %s", err.msg, err2.msg);
		CHECK(strncmp(err.msg, PATH, strlen(PATH)) == 0, "the refusal does not name the file: %s", err.msg);
		CHECK(utf8_valid(err.msg, strlen(err.msg), &bad), "the refusal is not UTF-8 at byte %zu: %s", bad, err.msg);
		/* An entry at fault is named by its index, one that jansson sees too. */
		if (strncmp(err.msg + strlen(PATH), ": entries[", 10) == 0) {
			char *end;
			unsigned long at = strtoul(err.msg + strlen(PATH) + 10, &end, 10);

			root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
			CHECK(*end == ']' && at < json_array_size(json_object_get(root, "entries")),
			      "names an entry that is not there: %s", err.msg);
			json_decref(root);
		}
		return;
	}
	journal_entries_free(e2, n2);

	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	CHECK(json_is_object(root), "accepted what jansson does not read as an object");
	entries = json_object_get(root, "entries");
	CHECK(json_is_array(entries) && json_array_size(entries) == n, "%zu entries, jansson sees %zu", n,
	      json_array_size(entries));
	for (i = 0; i < n; i++) {
		json_t *je = json_array_get(entries, i);
		const char *tag = e[i].tag;
		size_t tlen = strlen(tag);

		CHECK(strcmp(json_string_value(json_object_get(je, "tag")), tag) == 0, "entries[%zu]: tag [%s]", i, tag);
		CHECK(json_string_length(json_object_get(je, "tag")) == tlen, "entries[%zu]: the tag holds a NUL", i);
		CHECK(json_integer_value(json_object_get(je, "when")) == e[i].when, "entries[%zu]: when", i);
		CHECK(tlen >= 1 && tlen <= 200, "entries[%zu]: a tag of %zu bytes", i, tlen);
		CHECK(!strpbrk(tag, "/\\") && strcmp(tag, ".") != 0 && strcmp(tag, "..") != 0,
		      "entries[%zu]: the tag [%s] is no file name", i, tag);
		CHECK(utf8_valid(tag, tlen, &bad), "entries[%zu]: the tag is not UTF-8", i);
		CHECK(e[i].when >= 0 && e[i].when <= JOURNAL_MAX_WHEN, "entries[%zu]: when %lld", i, (long long)e[i].when);
		for (k = 0; k < i; k++)
			CHECK(strcmp(e[k].tag, tag) != 0 && e[k].when != e[i].when, "entries[%zu] and [%zu] clash", k, i);
	}
	json_decref(root);
	journal_entries_free(e, n);
}

/* Non-overlapping occurrences of the breakpoint, left to right (what String.split finds). */
static size_t count_breakpoints(const char *s, size_t len)
{
	const size_t bplen = strlen(JOURNAL_BREAKPOINT);
	size_t n = 0, i = 0;

	while (i + bplen <= len) {
		if (memcmp(s + i, JOURNAL_BREAKPOINT, bplen) == 0) {
			n++;
			i += bplen;
		} else {
			i++;
		}
	}
	return n;
}

static void check_split(const char *sql, size_t len)
{
	const size_t bplen = strlen(JOURNAL_BREAKPOINT);
	char **chunks;
	size_t n = journal_split(sql, len, &chunks), i, at = 0;

	CHECK(n == count_breakpoints(sql, len) + 1, "%zu pieces for %zu breakpoints", n, count_breakpoints(sql, len));
	for (i = 0; i < n; i++) {
		size_t clen = strlen(chunks[i]);

		CHECK(!strstr(chunks[i], JOURNAL_BREAKPOINT), "piece %zu holds a breakpoint", i);
		CHECK(at + clen <= len && memcmp(sql + at, chunks[i], clen) == 0, "piece %zu is not the text at %zu", i, at);
		at += clen;
		if (i + 1 < n) {
			CHECK(at + bplen <= len && memcmp(sql + at, JOURNAL_BREAKPOINT, bplen) == 0,
			      "no breakpoint after piece %zu", i);
			at += bplen;
		}
		free(chunks[i]);
	}
	CHECK(at == len, "the pieces cover %zu of %zu bytes", at, len);
	free(chunks);
}

/* The first word of a statement: an identifier as the scanner reads one. */
static size_t word_len(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len && (isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '$' || (unsigned char)s[i] >= 0x80))
		i++;
	return i;
}

static bool holds_ci(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word), i;

	for (i = 0; i + n <= len; i++)
		if (strncasecmp(s + i, word, n) == 0)
			return true;
	return false;
}

static void check_scan(const char *sql, size_t len)
{
	struct sql_problem p, p2, q;
	size_t count = sql_count_statements(sql, len), plen = strlen(PREFIX);
	bool found = sql_find_nontransactional(sql, len, &p);
	char *prefixed;

	CHECK(sql_find_nontransactional(sql, len, &p2) == found, "found once, not found once");
	CHECK(sql_count_statements(sql, len) == count, "two counts");
	if (found) {
		size_t w;

		CHECK(p2.statement == p.statement && p2.offset == p.offset && strcmp(p.what, p2.what) == 0, "two answers");
		CHECK(p.what && *p.what && p.why && *p.why, "a problem without words");
		CHECK(p.statement >= 1 && p.statement <= count, "statement %zu of %zu", p.statement, count);
		CHECK(p.offset < len, "offset %zu past %zu bytes", p.offset, len);
		if (strncmp(p.what, "...", 3) != 0) {
			w = word_len(sql + p.offset, len - p.offset);
			CHECK(w > 0 && strncasecmp(sql + p.offset, p.what, w) == 0 && (p.what[w] == ' ' || !p.what[w]),
			      "%s at %zu, where the text says %.*s", p.what, p.offset, (int)w, sql + p.offset);
		} else {
			CHECK(holds_ci(sql + p.offset, len - p.offset, "concurrently"), "... CONCURRENTLY where there is none");
		}
	}
	/* A statement in front: everything moves by one statement and its length. */
	prefixed = malloc(plen + len);
	memcpy(prefixed, PREFIX, plen);
	memcpy(prefixed + plen, sql, len);
	CHECK(sql_count_statements(prefixed, plen + len) == count + 1, "a statement in front: %zu, not %zu + 1",
	      sql_count_statements(prefixed, plen + len), count);
	CHECK(sql_find_nontransactional(prefixed, plen + len, &q) == found, "a statement in front changes the finding");
	if (found)
		CHECK(q.statement == p.statement + 1 && q.offset == p.offset + plen && strcmp(q.what, p.what) == 0,
		      "a statement in front: statement %zu at %zu (%s), was %zu at %zu (%s)", q.statement, q.offset, q.what,
		      p.statement, p.offset, p.what);
	free(prefixed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_copy(data, size);
	size_t bad;

	check_journal(text, size);
	check_scan(text, size);
	/* journal_load refuses files that are not UTF-8 or hold a NUL before it splits them. */
	if (utf8_valid(text, size, &bad) && !memchr(text, '\0', size)) {
		char **chunks;
		size_t n = journal_split(text, size, &chunks), i;

		check_split(text, size);
		for (i = 0; i < n; i++) {
			check_scan(chunks[i], strlen(chunks[i]));
			free(chunks[i]);
		}
		free(chunks);
	}
	free(text);
	return 0;
}
