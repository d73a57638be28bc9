/*
 * API keys: entries, scopes, hashed keys, files, and errors that name the
 * entry without quoting the key.
 */
#include "keys.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const struct api_key *find(const struct keyring *r, const char *k)
{
	return keyring_find(r, k, strlen(k));
}

Test(keys, bare_keys_have_every_scope_and_a_name_by_position)
{
	struct keyring r = {0};
	struct errbuf err;
	const struct api_key *k;

	cr_assert(keyring_add(&r, "k1, k2", false, "API_KEYS", &err), "%s", err.msg);
	cr_assert(eq(sz, r.n, 2));
	k = find(&r, "k2");
	cr_assert(k != NULL);
	cr_assert(eq(str, (char *)k->name, "key2"));
	cr_assert(eq(u32, k->scopes, KEY_ALL));
	cr_assert(find(&r, "k3") == NULL);
	cr_assert(find(&r, "k") == NULL, "a prefix is not the key");
	keyring_free(&r);
}

Test(keys, named_entries_carry_their_scopes)
{
	struct keyring r = {0};
	struct errbuf err;
	const struct api_key *k;
	char text[32];

	cr_assert(keyring_add(&r, "ingest:write:k1,ops:read+admin:k2:with:colons", false, "API_KEYS", &err), "%s",
		  err.msg);
	k = find(&r, "k1");
	cr_assert(k != NULL);
	cr_assert(eq(str, (char *)k->name, "ingest"));
	cr_assert(eq(u32, k->scopes, KEY_WRITE));
	k = find(&r, "k2:with:colons");
	cr_assert(k != NULL);
	cr_assert(eq(str, (char *)k->name, "ops"), "the key is everything after the second colon");
	cr_assert(eq(u32, k->scopes, KEY_READ | KEY_ADMIN));
	key_scopes_text(k->scopes, text, sizeof(text));
	cr_assert(eq(str, text, "read+admin"));
	keyring_free(&r);
}

Test(keys, a_key_given_as_its_sha256_matches_the_plain_key)
{
	struct keyring r = {0};
	struct errbuf err;
	uint8_t d[SHA256_LEN];
	char hex[SHA256_HEX_LEN + 1], line[128];

	sha256("s3cret", 6, d);
	hex_encode(d, SHA256_LEN, hex);
	snprintf(line, sizeof(line), "ci:read:sha256:%s", hex);
	cr_assert(keyring_add(&r, line, false, "API_KEYS", &err), "%s", err.msg);
	cr_assert(find(&r, "s3cret") != NULL);
	cr_assert(find(&r, line + 8) == NULL, "the hash itself is not the key");
	keyring_free(&r);
	snprintf(line, sizeof(line), "sha256:%s", hex);
	cr_assert(keyring_add(&r, line, false, "API_KEYS", &err), "a bare hashed key: %s", err.msg);
	cr_assert(find(&r, "s3cret") != NULL);
	cr_assert(eq(u32, find(&r, "s3cret")->scopes, KEY_ALL));
	keyring_free(&r);
}

static void expect_refused(const char *text, const char *says)
{
	struct keyring r = {0};
	struct errbuf err;

	cr_assert(keyring_add(&r, "good:read:g00d", false, "API_KEYS", &err));
	cr_assert(not(keyring_add(&r, text, false, "API_KEYS", &err)), "accepted: %s", text);
	cr_assert(err.usage, "a bad entry is a configuration error (exit 2)");
	cr_assert(strstr(err.msg, says) != NULL, "[%s] does not say [%s]", err.msg, says);
	cr_assert(strstr(err.msg, "SECRETKEY") == NULL, "the error quotes the key: %s", err.msg);
	cr_assert(eq(sz, r.n, 1), "a refused list adds nothing");
	cr_assert(find(&r, "g00d") != NULL);
	keyring_free(&r);
}

Test(keys, bad_entries_are_named_and_the_key_never_quoted)
{
	expect_refused("a:read:SECRETKEY,b:SECRETKEY", "API_KEYS entry 2: expected <name>:<scopes>:<key>");
	expect_refused("ops:reed:SECRETKEY", "entry 1 (ops): the scopes are read, write and admin");
	expect_refused("ops:read+:SECRETKEY", "the scopes are");
	expect_refused("ops::SECRETKEY", "the scopes are");
	expect_refused("b@d:read:SECRETKEY", "entry 1: the name is");
	expect_refused("ops:read:sha256:SECRETKEY", "sha256:<64 hex digits>");
	expect_refused("x:read:SECRETKEY,y:admin:SECRETKEY", "entry 2 (y): the same key as x");
	expect_refused("good:write:SECRETKEY", "the same name as another key: good");
	expect_refused("ops:read:SECRET KEY", "the key is 1-1024 visible ASCII");
}

Test(keys, a_file_has_one_entry_a_line_and_comments)
{
	struct keyring r = {0};
	struct errbuf err;
	char path[] = "/tmp/abilitysync-keys.XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");

	cr_assert(f != NULL);
	fputs("# rotated 2026-12-01\n\ningest:write:k1\n  ops:read+admin:k2  \n# old: k0\n", f);
	fclose(f);
	cr_assert(keyring_add_file(&r, path, &err), "%s", err.msg);
	cr_assert(eq(sz, r.n, 2));
	cr_assert(find(&r, "k2") != NULL);
	cr_assert(eq(str, (char *)find(&r, "k2")->name, "ops"));
	cr_assert(find(&r, "k0") == NULL, "a comment is not a key");
	keyring_free(&r);

	f = fopen(path, "w");
	fputs("ingest:write:k1\nops:bogus:SECRETKEY\n", f);
	fclose(f);
	cr_assert(not(keyring_add_file(&r, path, &err)));
	cr_assert(strstr(err.msg, " line 2 (ops): the scopes") != NULL, "%s", err.msg);
	cr_assert(strstr(err.msg, path) != NULL, "the error names the file: %s", err.msg);
	unlink(path);
	cr_assert(not(keyring_add_file(&r, path, &err)));
	cr_assert(strstr(err.msg, "No such file") != NULL, "%s", err.msg);
}
