/*
 * vdb-emulator: an in-memory Infraxa vector DB for `make run`, the tests and
 * the benchmarks. See include/emu_http.h for what it serves.
 */
#include "emu_http.h"

#include "log.h"
#include "mem.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define COMP "emulator"
#define PROG "vdb-emulator"

struct options {
	struct emu_config cfg;
	char *host;
	int port;
	const char *port_file;
	bool help;
};

enum flag_id {
	F_LISTEN, F_PORT_FILE, F_DUPLICATE_IDS, F_API_KEY, F_AUTH_HEADER, F_EXISTS_STATUS,
	F_NO_GET_VECTOR, F_NO_QUERY_ATTRIBUTES, F_MAX_BODY, F_ADMIN_OPEN, F_HELP,
};

struct flag {
	const char *name;
	enum flag_id id;
	const char *arg; /* NULL: takes no value */
	const char *help;
};

static const struct flag flags[] = {
	{"--listen", F_LISTEN, "HOST:PORT", "address to serve (default 127.0.0.1:8765; port 0 picks a free one)"},
	{"--port-file", F_PORT_FILE, "PATH", "write the bound port number to PATH once listening"},
	{"--duplicate-ids", F_DUPLICATE_IDS, "MODE",
	 "what adding an existing id does: overwrite (default), reject (409), duplicate"},
	{"--api-key", F_API_KEY, "KEY", "require KEY on every API request but /health"},
	{"--auth-header", F_AUTH_HEADER, "STYLE",
	 "where the key goes: authorization (Bearer KEY, default) or x-api-key"},
	{"--exists-status", F_EXISTS_STATUS, "N", "status for creating a tenant or blob that exists (default 409)"},
	{"--no-get-vector", F_NO_GET_VECTOR, NULL, "GET .../vectors/{id} leaves the floats out"},
	{"--no-query-attributes", F_NO_QUERY_ATTRIBUTES, NULL, "query replies leave attributes out"},
	{"--max-body", F_MAX_BODY, "BYTES", "largest request body; larger gets 413 (default 64 MiB)"},
	{"--admin-open", F_ADMIN_OPEN, NULL, "serve /_admin/ to any peer, not only loopback"},
	{"--help", F_HELP, NULL, "this text"},
};

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: " PROG " [flags]\n\nAn in-memory emulator of the Infraxa vector DB HTTP API.\n\n");
	for (i = 0; i < ARRAY_LEN(flags); i++) {
		char left[64];

		snprintf(left, sizeof(left), "%s%s%s", flags[i].name, flags[i].arg ? " " : "",
			 flags[i].arg ? flags[i].arg : "");
		fprintf(f, "  %-28s %s\n", left, flags[i].help);
	}
	fprintf(f, "\nLOG_FORMAT=json and LOG_LEVEL=debug|info|warn|error are read from the environment.\n"
		   "SIGTERM or SIGINT stops it (exit 0).\n");
}

static bool parse_long(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* HOST:PORT, HOST may be [v6]. */
static bool parse_listen(const char *s, struct options *o)
{
	const char *colon = strrchr(s, ':');
	const char *host = s;
	size_t hlen;
	long long port;

	if (!colon || !parse_long(colon + 1, 0, 65535, &port))
		return false;
	hlen = (size_t)(colon - s);
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
		host++;
		hlen -= 2;
	}
	if (hlen == 0)
		return false;
	free(o->host);
	o->host = xstrndup(host, hlen);
	o->port = (int)port;
	return true;
}

static bool apply_flag(struct options *o, enum flag_id id, const char *v)
{
	long long n;

	switch (id) {
	case F_LISTEN:
		return parse_listen(v, o);
	case F_PORT_FILE:
		o->port_file = v;
		return *v != '\0';
	case F_DUPLICATE_IDS:
		return emu_dup_mode_parse(v, &o->cfg.duplicate_ids);
	case F_API_KEY:
		free(o->cfg.api_key);
		o->cfg.api_key = xstrdup(v);
		return *v != '\0';
	case F_AUTH_HEADER:
		return emu_auth_header_parse(v, &o->cfg.auth_header);
	case F_EXISTS_STATUS:
		if (!parse_long(v, 100, 599, &n))
			return false;
		o->cfg.exists_status = (int)n;
		return true;
	case F_MAX_BODY:
		if (!parse_long(v, 1, (long long)1 << 40, &n))
			return false;
		o->cfg.max_body = (size_t)n;
		return true;
	case F_NO_GET_VECTOR:
		o->cfg.get_vector = false;
		return true;
	case F_NO_QUERY_ATTRIBUTES:
		o->cfg.query_attributes = false;
		return true;
	case F_ADMIN_OPEN:
		o->cfg.admin_open = true;
		return true;
	case F_HELP:
		o->help = true;
		return true;
	}
	return false;
}

static const struct flag *find_flag(const char *arg, size_t len)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(flags); i++)
		if (strlen(flags[i].name) == len && strncmp(flags[i].name, arg, len) == 0)
			return &flags[i];
	return NULL;
}

/* Takes --flag VALUE and --flag=VALUE. Says what is wrong, naming the flag. */
static bool parse_args(int argc, char **argv, struct options *o)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *arg = argv[i], *eq = strchr(arg, '='), *val = eq ? eq + 1 : NULL;
		const struct flag *f = find_flag(arg, eq ? (size_t)(eq - arg) : strlen(arg));

		if (!f) {
			fprintf(stderr, PROG ": unknown flag %s (see --help)\n", arg);
			return false;
		}
		if (f->arg && !val) {
			if (i + 1 >= argc) {
				fprintf(stderr, PROG ": %s needs a value: %s\n", f->name, f->arg);
				return false;
			}
			val = argv[++i];
		}
		if (!f->arg && val) {
			fprintf(stderr, PROG ": %s takes no value\n", f->name);
			return false;
		}
		if (!apply_flag(o, f->id, val)) {
			fprintf(stderr, PROG ": %s: bad value '%s' (%s)\n", f->name, val, f->help);
			return false;
		}
	}
	return true;
}

static void setup_log(void)
{
	static const char *const levels[] = {"debug", "info", "warn", "error"};
	const char *fmt = getenv("LOG_FORMAT"), *lvl = getenv("LOG_LEVEL");
	enum log_level level = LL_INFO;
	size_t i;

	for (i = 0; lvl && i < ARRAY_LEN(levels); i++)
		if (strcasecmp(lvl, levels[i]) == 0)
			level = (enum log_level)i;
	log_setup(fmt && strcasecmp(fmt, "json") == 0 ? LOG_JSON : LOG_TEXT, level);
}

/* Written whole under a temporary name, so a reader never sees half a number. */
static bool write_port_file(const char *path, int port)
{
	size_t n = strlen(path) + 5;
	char *tmp = xmalloc(n);
	FILE *f;
	bool ok;

	snprintf(tmp, n, "%s.tmp", path);
	f = fopen(tmp, "w");
	ok = f && fprintf(f, "%d\n", port) > 0;
	ok = f && fclose(f) == 0 && ok;
	ok = ok && rename(tmp, path) == 0;
	if (!ok) {
		log_error(COMP, "cannot write the port file %s: %s", path, strerror(errno));
		remove(tmp);
	}
	free(tmp);
	return ok;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	log_info(COMP, "signal %d: stopping", (int)sig);
	event_base_loopbreak(arg);
}

static void log_start(const struct options *o, int port)
{
	const struct emu_config *c = &o->cfg;
	bool v6 = strchr(o->host, ':') != NULL;

	log_info(COMP, "listening on %s%s%s:%d, duplicate ids: %s, get vector: %s, query attributes: %s, "
		 "exists status: %d, api key: %s, max body: %zu bytes, admin: %s",
		 v6 ? "[" : "", o->host, v6 ? "]" : "", port, emu_dup_mode_name(c->duplicate_ids),
		 c->get_vector ? "on" : "off", c->query_attributes ? "on" : "off", c->exists_status,
		 c->api_key ? emu_auth_header_name(c->auth_header) : "none", c->max_body,
		 c->admin_open ? "open" : "loopback only");
}

static int serve(const struct options *o)
{
	struct event_base *base = event_base_new();
	struct event *sigterm = NULL, *sigint = NULL;
	struct emu_server *s;
	struct errbuf err;
	int rc = EXIT_FAIL;

	if (!base) {
		log_error(COMP, "cannot create the event loop");
		return EXIT_FAIL;
	}
	s = emu_server_new(base, &o->cfg, o->host, o->port, &err);
	if (!s) {
		log_error(COMP, "%s", err.msg);
		goto out;
	}
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	if (!sigterm || !sigint || evsignal_add(sigterm, NULL) || evsignal_add(sigint, NULL)) {
		log_error(COMP, "cannot watch for signals");
		goto out;
	}
	if (o->port_file && !write_port_file(o->port_file, emu_server_port(s)))
		goto out;
	log_start(o, emu_server_port(s));
	if (event_base_dispatch(base) < 0)
		log_error(COMP, "the event loop failed");
	else
		rc = EXIT_OK;
out:
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	emu_server_free(s);
	event_base_free(base);
	return rc;
}

int main(int argc, char **argv)
{
	struct options o;
	int rc;

	memset(&o, 0, sizeof(o));
	emu_config_init(&o.cfg);
	o.host = xstrdup("127.0.0.1");
	o.port = 8765;
	setup_log();
	/* A client that hangs up must not kill the server on the next write. */
	signal(SIGPIPE, SIG_IGN);
	if (!parse_args(argc, argv, &o)) {
		rc = EXIT_USAGE;
	} else if (o.help) {
		usage(stdout);
		rc = EXIT_OK;
	} else {
		rc = serve(&o);
	}
	emu_config_free(&o.cfg);
	free(o.host);
	libevent_global_shutdown();
	return rc;
}
