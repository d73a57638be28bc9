#include "keys.h"

#include "mem.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 1024              /* bytes of a key */
#define KEYS_FILE_MAX (1 << 20)   /* bytes of API_KEYS_FILE */

/* Where an entry is, for errors: "API_KEYS entry 3", "/etc/keys line 7". */
struct where {
	const char *source;
	bool lines;
	size_t at;
};

static void say(struct errbuf *err, const struct where *w, const char *what)
{
	err_usage(err, "%s %s %zu: %s", w->source, w->lines ? "line" : "entry", w->at, what);
}

static bool name_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > KEY_NAME_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-", s[i]))
			return false;
	return true;
}

static bool parse_scopes(const char *s, size_t len, unsigned *out)
{
	static const struct {
		const char *name;
		unsigned bit;
	} known[] = {{"read", KEY_READ}, {"write", KEY_WRITE}, {"admin", KEY_ADMIN}};
	const char *end = s + len;

	*out = 0;
	while (s < end) {
		const char *plus = memchr(s, '+', (size_t)(end - s));
		size_t n = (size_t)((plus ? plus : end) - s), k;
		unsigned bit = 0;

		for (k = 0; k < ARRAY_LEN(known); k++)
			if (n == strlen(known[k].name) && memcmp(s, known[k].name, n) == 0)
				bit = known[k].bit;
		if (!bit)
			return false;
		*out |= bit;
		s += n + (plus != NULL);
		if (plus && s == end)
			return false;
	}
	return *out != 0;
}

/* `sha256:<64 hex>`: the digest itself. */
static bool parse_hashed(const char *s, size_t len, uint8_t out[SHA256_LEN])
{
	size_t i;

	if (len != 7 + 2 * SHA256_LEN || strncmp(s, "sha256:", 7) != 0)
		return false;
	for (i = 0; i < SHA256_LEN; i++) {
		int hi = hex_value(s[7 + 2 * i]), lo = hex_value(s[8 + 2 * i]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

/* A key as a client sends it after "Bearer ": visible ASCII, no comma (the list's separator). */
static bool key_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > KEY_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] > '~' || s[i] == ',')
			return false;
	return true;
}

static bool parse_entry(const char *e, size_t len, const struct where *w, size_t index, struct api_key *k,
			struct errbuf *err)
{
	const char *c1 = memchr(e, ':', len), *c2, *key;
	size_t klen;

	memset(k, 0, sizeof(*k));
	if (!c1 || parse_hashed(e, len, k->digest)) {
		/* A bare key: every scope, named by its place in the ring. */
		if (!c1 && !key_ok(e, len)) {
			say(err, w, "a key is 1-1024 visible ASCII characters, no comma or space");
			return false;
		}
		if (!c1)
			sha256(e, len, k->digest);
		snprintf(k->name, sizeof(k->name), "key%zu", index + 1);
		k->scopes = KEY_ALL;
		return true;
	}
	c2 = memchr(c1 + 1, ':', (size_t)(e + len - c1 - 1));
	if (!c2) {
		say(err, w, "expected <name>:<scopes>:<key> or a bare key");
		return false;
	}
	if (!name_ok(e, (size_t)(c1 - e))) {
		say(err, w, "the name is 1-64 of A-Z a-z 0-9 . _ -");
		return false;
	}
	snprintf(k->name, sizeof(k->name), "%.*s", (int)(c1 - e), e);
	if (!parse_scopes(c1 + 1, (size_t)(c2 - c1 - 1), &k->scopes)) {
		err_usage(err, "%s %s %zu (%s): the scopes are read, write and admin joined by + (e.g. read+write)",
			  w->source, w->lines ? "line" : "entry", w->at, k->name);
		return false;
	}
	key = c2 + 1;
	klen = (size_t)(e + len - key);
	if (parse_hashed(key, klen, k->digest))
		return true;
	if (strncmp(key, "sha256:", 7) == 0 || !key_ok(key, klen)) {
		err_usage(err, "%s %s %zu (%s): the key is 1-1024 visible ASCII characters (no comma or space), or "
			  "sha256:<64 hex digits>", w->source, w->lines ? "line" : "entry", w->at, k->name);
		return false;
	}
	sha256(key, klen, k->digest);
	return true;
}

/* Another key of the ring with this name or this key, or NULL. */
static const struct api_key *clash(const struct api_key *keys, size_t n, const struct api_key *k, bool *same_key)
{
	size_t i;

	for (i = 0; i < n; i++) {
		*same_key = memcmp(keys[i].digest, k->digest, SHA256_LEN) == 0;
		if (*same_key || strcmp(keys[i].name, k->name) == 0)
			return &keys[i];
	}
	return NULL;
}

static const char *trim(const char *s, const char *end, size_t *len)
{
	while (s < end && (*s == ' ' || *s == '\t' || *s == '\r'))
		s++;
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	*len = (size_t)(end - s);
	return s;
}

bool keyring_add(struct keyring *r, const char *text, bool lines, const char *source, struct errbuf *err)
{
	struct api_key *keys = xcalloc(r->n + 1, sizeof(*keys));
	size_t n = r->n, cap = r->n + 1, at = 0;
	const char *p = text;
	char sep = lines ? '\n' : ',';

	if (r->n)
		memcpy(keys, r->keys, r->n * sizeof(*keys));
	while (*p) {
		const char *end = strchr(p, sep), *e;
		struct where w = {source, lines, ++at};
		const struct api_key *other;
		bool same_key = false;
		size_t len;

		if (!end)
			end = p + strlen(p);
		e = trim(p, end, &len);
		p = *end ? end + 1 : end;
		if (len == 0 || (lines && e[0] == '#'))
			continue;
		keys = xgrow(keys, &cap, n + 1, sizeof(*keys));
		if (!parse_entry(e, len, &w, n, &keys[n], err))
			goto fail;
		if ((other = clash(keys, n, &keys[n], &same_key))) {
			err_usage(err, "%s %s %zu (%s): %s %s", source, lines ? "line" : "entry", at, keys[n].name,
				  same_key ? "the same key as" : "the same name as another key:", other->name);
			goto fail;
		}
		n++;
	}
	OPENSSL_cleanse(keys + n, (cap - n) * sizeof(*keys));
	free(r->keys);
	r->keys = keys;
	r->n = n;
	return true;
fail:
	OPENSSL_cleanse(keys, cap * sizeof(*keys));
	free(keys);
	return false;
}

bool keyring_add_file(struct keyring *r, const char *path, struct errbuf *err)
{
	FILE *f = fopen(path, "r");
	char *text;
	size_t len;
	bool ok;

	if (!f) {
		err_usage(err, "API_KEYS_FILE %s: %s", path, strerror(errno));
		return false;
	}
	text = xmalloc(KEYS_FILE_MAX + 1);
	len = fread(text, 1, KEYS_FILE_MAX + 1, f);
	ok = !ferror(f) && len <= KEYS_FILE_MAX && !memchr(text, '\0', len);
	fclose(f);
	if (!ok) {
		err_usage(err, "API_KEYS_FILE %s: cannot be read as text of at most %d bytes", path, KEYS_FILE_MAX);
	} else {
		text[len] = '\0';
		ok = keyring_add(r, text, true, path, err);
	}
	OPENSSL_cleanse(text, len < KEYS_FILE_MAX ? len : KEYS_FILE_MAX);
	free(text);
	return ok;
}

const struct api_key *keyring_find(const struct keyring *r, const char *presented, size_t len)
{
	uint8_t d[SHA256_LEN];
	size_t i, found = r->n;

	sha256(presented, len, d);
	for (i = 0; i < r->n; i++) {
		size_t hit = (size_t)(CRYPTO_memcmp(d, r->keys[i].digest, SHA256_LEN) == 0);

		found = hit * i + (1 - hit) * found;
	}
	return found < r->n ? &r->keys[found] : NULL;
}

void keyring_free(struct keyring *r)
{
	if (r->keys)
		OPENSSL_cleanse(r->keys, r->n * sizeof(*r->keys));
	free(r->keys);
	r->keys = NULL;
	r->n = 0;
}

void key_scopes_text(unsigned scopes, char *out, size_t len)
{
	snprintf(out, len, "%s%s%s%s%s", scopes & KEY_READ ? "read" : "",
		 (scopes & KEY_READ) && (scopes & (KEY_WRITE | KEY_ADMIN)) ? "+" : "", scopes & KEY_WRITE ? "write" : "",
		 (scopes & KEY_WRITE) && (scopes & KEY_ADMIN) ? "+" : "", scopes & KEY_ADMIN ? "admin" : "");
}
