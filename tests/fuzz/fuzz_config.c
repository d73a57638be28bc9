/*
 * fuzz_config - the environment read as configuration (config_load). The
 * input is lines NAME=value, looked up as getenv would find them (the first
 * line of a name wins).
 *
 * Invariants:
 *   - refused: the error names a variable the input set; the config is
 *     still complete and frees cleanly;
 *   - a secret never leaves: the value of VECTOR_DB_API_KEY or API_KEYS, and
 *     the password in DATABASE_URL's userinfo (8 bytes or more, and found
 *     nowhere else in the input), appears neither in the error nor in the
 *     config lines (config_describe, config_describe_changes);
 *   - accepted: setting any variable of the input again to its own value
 *     (config_set) is accepted too: one set of rules for env and flags.
 */
#include "fuzz.h"

#include "common.h"
#include "config.h"

#include <stdbool.h>

#define LINES_MAX 64

struct env {
	char *names[LINES_MAX];
	char *values[LINES_MAX];
	bool asked[LINES_MAX]; /* config_load looked this one up: a variable it knows */
	size_t n;
};

static const char *lookup(const char *name, void *ctx)
{
	struct env *e = ctx;
	size_t i;

	for (i = 0; i < e->n; i++) {
		if (strcmp(e->names[i], name) == 0) {
			e->asked[i] = true;
			return e->values[i];
		}
	}
	return NULL;
}

/* The line lookup finds for a name (it is set: the caller found it). */
static size_t index_of(const struct env *e, const char *name)
{
	size_t i;

	for (i = 0; i < e->n && strcmp(e->names[i], name) != 0; i++)
		;
	return i;
}

static void parse(char *text, struct env *e)
{
	char *line = text, *next, *eq;

	for (; line && *line && e->n < LINES_MAX; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		eq = strchr(line, '=');
		if (!eq || eq == line)
			continue;
		*eq = '\0';
		e->names[e->n] = line;
		e->values[e->n] = eq + 1;
		e->n++;
	}
}

static size_t occurrences(const char *hay, const char *needle)
{
	size_t n = 0;
	const char *p = hay;

	while ((p = strstr(p, needle)) != NULL) {
		n++;
		p++;
	}
	return n;
}

/* A secret worth looking for: long enough not to occur by chance, and only once in the input. */
static bool hunt(const char *secret, const char *input)
{
	return secret && strlen(secret) >= 8 && occurrences(input, secret) == 1 && strspn(secret, "Q") < strlen(secret);
}

/* What the configuration shows of itself: the error, the config line, the changed values. */
static char *shown(struct env *e)
{
	struct config c;
	struct errbuf err = {{0}, false};
	char *line, *changes, *all;
	size_t elided;

	(void)config_load(&c, lookup, e, &err);
	line = config_describe(&c);
	changes = config_describe_changes(&c, &elided);
	if (asprintf(&all, "%s\n%s\n%s", err.msg, line, changes) < 0)
		abort();
	free(line);
	free(changes);
	config_free(&c);
	return all;
}

/*
 * The secret is in what the configuration shows, and not once it is replaced
 * by as many Qs: then it came from the value (a name or a default holding the
 * same letters is not a leak).
 */
static void no_leak(struct env *e, size_t at, const char *secret, const char *all)
{
	char *saved = e->values[at], *copy = strdup(saved), *p = strstr(copy, secret), *again;

	if (!strstr(all, secret) || !p) {
		free(copy);
		return;
	}
	memset(p, 'Q', strlen(secret));
	e->values[at] = copy;
	again = shown(e);
	e->values[at] = saved;
	CHECK(strstr(again, secret) != NULL, "%s's secret [%s] is shown: %s", e->names[at], secret, all);
	free(again);
	free(copy);
}

/* The password of postgres://user:password@host/... as libpq reads it (up to the first '@'), or NULL. */
static char *url_password(const char *url)
{
	const char *p = url, *colon, *at;

	if (strncmp(p, "postgres://", 11) != 0 && strncmp(p, "postgresql://", 13) != 0)
		return NULL; /* key=value pairs: a password= is a secret parameter, the unit tests' part */
	p = strstr(p, "://") + 3;
	at = strchr(p, '@');
	colon = strchr(p, ':');
	if (!at || !colon || colon > at || (strchr(p, '/') && strchr(p, '/') < at))
		return NULL;
	return strndup(colon + 1, (size_t)(at - colon - 1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *input = fuzz_cstr(data, size), *text = fuzz_cstr(data, size);
	static const char *const names[3] = {"VECTOR_DB_API_KEY", "API_KEYS", "DATABASE_URL"};
	const char *secrets[3] = {NULL, NULL, NULL};
	char *password = NULL, *line, *changes, *all;
	struct config c;
	struct errbuf err = {{0}, false};
	struct env e = {{0}, {0}, {0}, 0};
	size_t i, elided;
	bool ok, named = false;

	parse(text, &e);
	secrets[0] = lookup(names[0], &e);
	secrets[1] = lookup(names[1], &e);
	if (lookup(names[2], &e))
		secrets[2] = password = url_password(lookup(names[2], &e));
	memset(e.asked, 0, sizeof(e.asked));
	ok = config_load(&c, lookup, &e, &err);
	if (!ok) {
		for (i = 0; i < e.n && !named; i++)
			named = strstr(err.msg, e.names[i]) != NULL;
		CHECK(named, "the error names no variable of the input: %s", err.msg);
	}
	line = config_describe(&c);
	changes = config_describe_changes(&c, &elided);
	if (asprintf(&all, "%s\n%s\n%s", err.msg, line, changes) < 0)
		abort();
	for (i = 0; i < 3; i++)
		if (hunt(secrets[i], input))
			no_leak(&e, index_of(&e, names[i]), secrets[i], all);
	if (ok) {
		for (i = 0; i < e.n; i++) {
			struct errbuf again = {{0}, false};

			if (!e.asked[i])
				continue; /* not a variable, or a later line of a name the first one set */
			CHECK(config_set(&c, e.names[i], e.values[i], &again),
			      "%s=%s was accepted from the environment, refused by config_set: %s", e.names[i],
			      e.values[i], again.msg);
		}
	}
	free(all);
	free(line);
	free(changes);
	free(password);
	config_free(&c);
	free(text);
	free(input);
	return 0;
}
