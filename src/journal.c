#include "journal.h"

#include "buf.h"
#include "mem.h"
#include "text.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

size_t journal_split(const char *sql, size_t len, char ***chunks)
{
	static const size_t bplen = sizeof(JOURNAL_BREAKPOINT) - 1;
	char **out = NULL;
	size_t n = 0, cap = 0;
	const char *p = sql, *end = sql + len;

	for (;;) {
		const char *bp = memmem(p, (size_t)(end - p), JOURNAL_BREAKPOINT, bplen);
		const char *stop = bp ? bp : end;

		out = xgrow(out, &cap, n + 1, sizeof(*out));
		out[n++] = xstrndup(p, (size_t)(stop - p));
		if (!bp)
			break;
		p = bp + bplen;
	}
	*chunks = out;
	return n;
}

void journal_entries_free(struct journal_entry *e, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(e[i].tag);
	free(e);
}

static bool tag_ok(const char *tag, const char **why)
{
	size_t len = strlen(tag);

	if (len == 0)
		*why = "is empty";
	else if (len > 200)
		*why = "is longer than 200 bytes";
	else if (strchr(tag, '/') || strchr(tag, '\\'))
		*why = "contains a path separator";
	else if (strcmp(tag, ".") == 0 || strcmp(tag, "..") == 0)
		*why = "is not a file name";
	else
		return true;
	return false;
}

/* Checks one entry and appends it; names the entry in every error. */
static bool parse_entry(json_t *e, size_t i, const char *path, struct journal_entry *out, struct errbuf *err)
{
	json_t *tag = json_object_get(e, "tag");
	json_t *when = json_object_get(e, "when");
	const char *why = NULL;
	json_int_t w;

	if (!json_is_object(e)) {
		err_set(err, "%s: entries[%zu] is not an object", path, i);
		return false;
	}
	if (!json_is_string(tag)) {
		err_set(err, "%s: entries[%zu]: \"tag\" is %s, expected a string", path, i,
			tag ? "not a string" : "missing");
		return false;
	}
	if (strlen(json_string_value(tag)) != json_string_length(tag) ||
	    !tag_ok(json_string_value(tag), &why)) {
		err_set(err, "%s: entries[%zu]: \"tag\" \"%.80s\" %s", path, i, json_string_value(tag),
			why ? why : "contains a NUL byte");
		return false;
	}
	if (!json_is_integer(when)) {
		err_set(err, "%s: entries[%zu] (%s): \"when\" is %s, expected an integer (milliseconds since the epoch)",
			path, i, json_string_value(tag),
			!when ? "missing" : json_is_real(when) ? "not an integer" : "not a number");
		return false;
	}
	w = json_integer_value(when);
	if (w < 0 || w > JOURNAL_MAX_WHEN) {
		err_set(err, "%s: entries[%zu] (%s): \"when\" %lld is out of range (0 to 2^53-1)", path, i,
			json_string_value(tag), (long long)w);
		return false;
	}
	out->tag = xstrdup(json_string_value(tag));
	out->when = (int64_t)w;
	return true;
}

static bool check_unique(const struct journal_entry *e, size_t n, const char *path, struct errbuf *err)
{
	size_t i, k;

	/* Journals hold tens of entries: quadratic is the clear choice. */
	for (i = 0; i < n; i++) {
		for (k = 0; k < i; k++) {
			if (strcmp(e[i].tag, e[k].tag) == 0) {
				err_set(err, "%s: entries[%zu] and entries[%zu] share the tag %s", path, k, i, e[i].tag);
				return false;
			}
			if (e[i].when == e[k].when) {
				err_set(err, "%s: entries[%zu] (%s) and entries[%zu] (%s) share \"when\" %lld; "
					"the ledger tells migrations apart by it", path, k, e[k].tag, i, e[i].tag,
					(long long)e[i].when);
				return false;
			}
		}
	}
	return true;
}

bool journal_parse(const char *text, size_t len, const char *path, struct journal_entry **out,
		   size_t *n, struct errbuf *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *entries, *dialect;
	struct journal_entry *e = NULL;
	size_t i, count = 0;
	bool ok = false;

	*out = NULL;
	*n = 0;
	if (!root) {
		err_set(err, "%s:%d:%d: malformed JSON: %s", path, jerr.line, jerr.column, jerr.text);
		return false;
	}
	if (!json_is_object(root)) {
		err_set(err, "%s: expected a JSON object with an \"entries\" array", path);
		goto out;
	}
	dialect = json_object_get(root, "dialect");
	if (dialect && (!json_is_string(dialect) || strcmp(json_string_value(dialect), "postgresql") != 0)) {
		err_set(err, "%s: \"dialect\" is not \"postgresql\"; abilitysync applies PostgreSQL migrations only", path);
		goto out;
	}
	entries = json_object_get(root, "entries");
	if (!json_is_array(entries)) {
		err_set(err, "%s: \"entries\" is %s, expected an array", path, entries ? "not an array" : "missing");
		goto out;
	}
	e = xcalloc(json_array_size(entries), sizeof(*e));
	for (i = 0; i < json_array_size(entries); i++) {
		if (!parse_entry(json_array_get(entries, i), i, path, &e[i], err))
			goto out;
		count++;
	}
	if (!check_unique(e, count, path, err))
		goto out;
	*out = e;
	*n = count;
	e = NULL;
	ok = true;
out:
	if (e)
		journal_entries_free(e, count);
	json_decref(root);
	return ok;
}

/* Explains a folder with no journal: wrong path, or drizzle v1's layout. */
static void explain_missing_journal(const char *dir, const char *jpath, struct errbuf *err)
{
	struct stat st;
	DIR *d;
	struct dirent *de;
	bool v1 = false;

	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		err_usage(err, "%s: no such directory (set MIGRATIONS_DIR or --dir)", dir);
		return;
	}
	d = opendir(dir);
	while (d && (de = readdir(d)) != NULL && !v1) {
		char *p;

		if (de->d_name[0] == '.')
			continue;
		p = xmalloc(strlen(dir) + strlen(de->d_name) + 16);
		sprintf(p, "%s/%s/migration.sql", dir, de->d_name);
		v1 = stat(p, &st) == 0;
		free(p);
	}
	if (d)
		closedir(d);
	if (v1)
		err_usage(err, "%s: missing, and %s looks like drizzle v1's folder layout "
			"(<timestamp>_<name>/migration.sql), which abilitysync does not read yet", jpath, dir);
	else
		err_usage(err, "%s: missing; is %s a drizzle-kit migrations folder?", jpath, dir);
}

static bool load_migration(const char *dir, const struct journal_entry *e, size_t i, struct migration *m,
			   struct errbuf *err)
{
	struct buf sql = BUF_INIT;
	struct errbuf rerr;
	size_t bad;
	const char *nul;

	m->tag = xstrdup(e->tag);
	m->when = e->when;
	m->path = xmalloc(strlen(dir) + strlen(e->tag) + 6);
	sprintf(m->path, "%s/%s.sql", dir, e->tag);
	if (!buf_read_file(&sql, m->path, JOURNAL_MAX_FILE, &rerr)) {
		if (errno == ENOENT)
			err_set(err, "%s: missing (journal entry %zu, tag %s)", m->path, i, e->tag);
		else
			err_set(err, "%s (journal entry %zu)", rerr.msg, i);
		buf_free(&sql);
		return false;
	}
	if (!utf8_valid(buf_cstr(&sql), sql.len, &bad)) {
		err_set(err, "%s: not valid UTF-8 (byte %zu); drizzle would hash and run a mangled copy", m->path, bad);
		buf_free(&sql);
		return false;
	}
	nul = memchr(buf_cstr(&sql), '\0', sql.len);
	if (nul) {
		err_set(err, "%s: contains a NUL byte (byte %zu)", m->path, (size_t)(nul - sql.data));
		buf_free(&sql);
		return false;
	}
	sha256_hex(buf_cstr(&sql), sql.len, m->hash);
	m->nchunks = journal_split(buf_cstr(&sql), sql.len, &m->chunks);
	buf_free(&sql);
	return true;
}

static void migration_free(struct migration *m)
{
	size_t i;

	for (i = 0; i < m->nchunks; i++)
		free(m->chunks[i]);
	free(m->chunks);
	free(m->tag);
	free(m->path);
}

bool journal_load(const char *dir, struct journal *j, struct errbuf *err)
{
	struct buf text = BUF_INIT;
	struct journal_entry *e = NULL;
	char *jpath = xmalloc(strlen(dir) + 24);
	struct errbuf rerr;
	size_t n = 0, i;
	bool ok = false;

	memset(j, 0, sizeof(*j));
	sprintf(jpath, "%s/meta/_journal.json", dir);
	if (!buf_read_file(&text, jpath, JOURNAL_MAX_FILE, &rerr)) {
		if (errno == ENOENT)
			explain_missing_journal(dir, jpath, err);
		else
			err_set(err, "%s", rerr.msg);
		goto out;
	}
	if (!journal_parse(buf_cstr(&text), text.len, jpath, &e, &n, err))
		goto out;

	j->dir = xstrdup(dir);
	j->m = xcalloc(n, sizeof(*j->m));
	for (i = 0; i < n; i++) {
		if (!load_migration(dir, &e[i], i, &j->m[j->n], err)) {
			migration_free(&j->m[j->n]);
			goto out;
		}
		j->n++;
		if (i > 0 && e[i].when <= e[i - 1].when)
			j->when_unordered = true;
	}
	ok = true;
out:
	if (!ok)
		journal_free(j);
	journal_entries_free(e, n);
	buf_free(&text);
	free(jpath);
	return ok;
}

void journal_free(struct journal *j)
{
	size_t i;

	for (i = 0; i < j->n; i++)
		migration_free(&j->m[i]);
	free(j->m);
	free(j->dir);
	memset(j, 0, sizeof(*j));
}
