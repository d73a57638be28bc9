/*
 * keys.h - the API keys: who a caller is (a key's name) and what it may do
 * (its scopes).
 *
 * An entry is a bare key (every scope; named key1, key2, ... by position) or
 * `<name>:<scopes>:<key>`, scopes being read, write and admin joined by `+`.
 * A key may be given as `sha256:<64 hex digits>` so a file holds no plaintext.
 * API_KEYS holds entries separated by commas; API_KEYS_FILE one per line
 * (blank lines and `#` comments skipped). Only the SHA-256 of each key is
 * kept; a presented key is compared with every one in constant time, so
 * neither its length nor which entry matched shows in the timing. Errors name
 * the entry (by position or line) and never quote a key.
 */
#ifndef ABILITYSYNC_KEYS_H
#define ABILITYSYNC_KEYS_H

#include "common.h"
#include "hash.h"

enum key_scope {
	KEY_READ = 1,   /* GET endpoints and search */
	KEY_WRITE = 2,  /* register, delete */
	KEY_ADMIN = 4,  /* restore, reconcile, sync retry: anything touching many abilities at once */
};
#define KEY_ALL (KEY_READ | KEY_WRITE | KEY_ADMIN)
#define KEY_NAME_MAX 64

struct api_key {
	char name[KEY_NAME_MAX + 1];
	unsigned scopes;
	uint8_t digest[SHA256_LEN];
};

struct keyring {
	struct api_key *keys;
	size_t n;
};

/*
 * Adds the entries of `text` (a comma-separated list, or with `lines` one per
 * line with comments) to *r. `source` names where they come from in errors
 * ("API_KEYS", or the file's path). On error *r is unchanged.
 */
bool keyring_add(struct keyring *r, const char *text, bool lines, const char *source, struct errbuf *err) MUSTCHECK;

/* Adds the entries of a file (one per line). */
bool keyring_add_file(struct keyring *r, const char *path, struct errbuf *err) MUSTCHECK;

/* The key a caller presented, or NULL. Takes the same time whichever entry matches, if any. */
const struct api_key *keyring_find(const struct keyring *r, const char *presented, size_t len);

void keyring_free(struct keyring *r);

/* "read", "write", "admin", or "read+admin" and the like, into out. */
void key_scopes_text(unsigned scopes, char *out, size_t len);

#endif
