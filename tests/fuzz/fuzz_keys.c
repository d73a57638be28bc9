/*
 * fuzz_keys - API_KEYS and API_KEYS_FILE text (keyring_add), read both as a
 * comma-separated list and as lines.
 *
 * Invariants:
 *   - refused: the ring is exactly as it was, the error is a usage error
 *     (exit 2) that names API_KEYS, and it never quotes a key: no key of the
 *     text (8 bytes or more) appears in it;
 *   - accepted: the ring grew by the entries of the text (blank ones and, in
 *     files, comments left out), names are unique, 1-64 of A-Z a-z 0-9 . _ -,
 *     scopes a non-empty part of read+write+admin; every key given in plain
 *     is found again by keyring_find, under its entry's name, and a key that
 *     is not in the text is not found.
 */
#include "fuzz.h"

#include "keys.h"

#include <stdbool.h>

/* The entries of text as keyring_add splits them: trimmed, blank (and # lines) left out. */
struct entry {
	const char *p;
	size_t len;
};

static size_t split(const char *text, bool lines, struct entry *out, size_t max)
{
	char sep = lines ? '\n' : ',';
	const char *p = text;
	size_t n = 0;

	while (*p && n < max) {
		const char *end = strchr(p, sep), *s = p, *e;

		if (!end)
			end = p + strlen(p);
		e = end;
		while (s < e && (*s == ' ' || *s == '\t' || *s == '\r'))
			s++;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
			e--;
		p = *end ? end + 1 : end;
		if (e == s || (lines && *s == '#'))
			continue;
		out[n++] = (struct entry){s, (size_t)(e - s)};
	}
	return n;
}

/* The key part of an entry: all of a bare one, after the second colon of a named one. */
static struct entry key_of(struct entry e)
{
	const char *c1 = memchr(e.p, ':', e.len), *c2;

	if (!c1)
		return e;
	c2 = memchr(c1 + 1, ':', (size_t)(e.p + e.len - c1 - 1));
	if (!c2)
		return e;
	return (struct entry){c2 + 1, (size_t)(e.p + e.len - c2 - 1)};
}

/* The fixed words of keys.c's messages: a key made of them is no leak when it shows. */
static const char templates[] =
	"API_KEYS entry line expected <name>:<scopes>:<key> or a bare key; the name is 1-64 of A-Z a-z 0-9 . _ - "
	"the scopes are read, write and admin joined by + (e.g. read+write) the key is 1-1024 visible ASCII "
	"characters (no comma or space), or sha256:<64 hex digits> a key is 1-1024 visible ASCII characters, no "
	"comma or space the same key as the same name as another key:";

/*
 * Does msg quote key k? Names are quoted on purpose and the messages have
 * fixed words: a key keys.c would accept (8 bytes or more, not one of those
 * words) counts when it shows in msg clear of every name.
 */
static bool quoted(const char *msg, struct entry k, const struct entry *entries, size_t n)
{
	size_t len = strlen(msg), i, at, b;
	bool *named, found = false;

	if (k.len < 8 || k.len > len || memmem(templates, sizeof(templates) - 1, k.p, k.len))
		return false;
	for (i = 0; i < k.len; i++)
		if (k.p[i] <= ' ' || k.p[i] > '~' || k.p[i] == ',')
			return false; /* not a key keys.c accepts: a message may well hold such text */
	named = calloc(len + 1, sizeof(bool));
	CHECK(named != NULL, "out of memory");
	/* Where messages put names: "(name)", and after "the same key as " or "another key: ". */
	for (at = 0, b = 0; at < len; at++) {
		b += msg[at] == '(';
		named[at] = b > 0;
		b -= msg[at] == ')' && b > 0;
	}
	for (const char *const *tail = (const char *const[]){"the same key as ", "another key: ", NULL}; *tail; tail++) {
		const char *t = strstr(msg, *tail);

		for (at = t ? (size_t)(t - msg) + strlen(*tail) : len; at < len; at++)
			named[at] = true;
	}
	for (i = 0; i < n; i++) {
		const char *colon = memchr(entries[i].p, ':', entries[i].len);
		size_t nl = colon ? (size_t)(colon - entries[i].p) : 0;

		for (at = 0; nl && at + nl <= len; at++)
			if (memcmp(msg + at, entries[i].p, nl) == 0)
				for (b = at; b < at + nl; b++)
					named[b] = true;
	}
	for (at = 0; at + k.len <= len && !found; at++) {
		if (memcmp(msg + at, k.p, k.len) != 0)
			continue;
		found = true;
		for (b = at; b < at + k.len; b++)
			found = found && !named[b];
	}
	free(named);
	return found;
}

static void check(const char *text, bool lines)
{
	struct keyring r = {0};
	struct errbuf err;
	struct entry entries[256];
	size_t n = split(text, lines, entries, 256), i, j;
	bool ok;

	CHECK(keyring_add(&r, "seed:read:seed-key-0", false, "API_KEYS", &err), "%s", err.msg);
	ok = keyring_add(&r, text, lines, "API_KEYS", &err);
	if (!ok) {
		CHECK(r.n == 1 && keyring_find(&r, "seed-key-0", 10) != NULL, "a refused text changed the ring");
		CHECK(err.usage, "not a usage error: %s", err.msg);
		CHECK(strstr(err.msg, "API_KEYS") != NULL, "the error does not name API_KEYS: %s", err.msg);
		for (i = 0; i < n; i++)
			CHECK(!quoted(err.msg, key_of(entries[i]), entries, n), "the error quotes a key: %s", err.msg);
		keyring_free(&r);
		return;
	}
	CHECK(r.n == 1 + n || n == 256, "%zu entries, %zu keys", n, r.n);
	for (i = 0; i < r.n; i++) {
		const struct api_key *k = &r.keys[i];
		size_t len = strlen(k->name);

		CHECK(len >= 1 && len <= KEY_NAME_MAX && strspn(k->name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
									 "0123456789._-") == len,
		      "a bad name: %s", k->name);
		CHECK(k->scopes && !(k->scopes & ~(unsigned)KEY_ALL), "scopes %u", k->scopes);
		for (j = 0; j < i; j++)
			CHECK(strcmp(r.keys[j].name, k->name) != 0, "the name %s twice", k->name);
	}
	for (i = 0; i < n && n < 256; i++) {
		struct entry k = key_of(entries[i]);
		const struct api_key *found;

		if (k.len >= 7 && strncmp(k.p, "sha256:", 7) == 0)
			continue;
		found = keyring_find(&r, k.p, k.len);
		CHECK(found == &r.keys[1 + i], "entry %zu's key is not found as its own", i + 1);
	}
	CHECK(keyring_find(&r, "\x01not-a-key", 10) == NULL, "a key nobody gave is found");
	keyring_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_cstr(data, size);

	check(text, false);
	check(text, true);
	free(text);
	return 0;
}
