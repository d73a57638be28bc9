#include "config.h"

#include "buf.h"
#include "mem.h"
#include "pgconn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum cfg_type { CFG_STR, CFG_INT, CFG_BOOL, CFG_ENUM };

enum {
	CFG_SECRET = 1 << 0,   /* never printed: shown as "(set)" */
	CFG_CONNINFO = 1 << 1, /* printed with the password redacted */
};

typedef bool (*cfg_check_fn)(const char *value, struct errbuf *err);

struct cfg_def {
	const char *name; /* the environment variable */
	enum cfg_type type;
	size_t offset;    /* into struct config */
	const char *def;  /* default as text; NULL = unset */
	long long min, max;
	const char *const *choices;
	cfg_check_fn check;
	unsigned flags;
	unsigned scope;
	const char *accepts; /* for help and errors when the type alone does not say */
	const char *help;
};

static const char *const log_formats[] = {"text", "json", NULL};
static const char *const toast_compressions[] = {"lz4", "pglz", "server", NULL};
static const char *const auth_headers[] = {"authorization", "x-api-key", NULL};
static const char *const write_modes[] = {"delete-then-add", "add", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

static bool check_conninfo(const char *v, struct errbuf *err)
{
	return pg_conninfo_valid(v, err);
}

static bool check_ident(const char *v, struct errbuf *err)
{
	if (!*v || strlen(v) > 63) {
		err_set(err, "must be 1 to 63 bytes (a Postgres identifier)");
		return false;
	}
	return true;
}

static bool check_nonempty(const char *v, struct errbuf *err)
{
	if (!*v) {
		err_set(err, "must not be empty");
		return false;
	}
	return true;
}

static bool check_http_url(const char *v, struct errbuf *err)
{
	if ((strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) || strpbrk(v, "?# \t") ||
	    strlen(strstr(v, "://") + 3) == 0) {
		err_set(err, "must be an http:// or https:// URL without query or fragment");
		return false;
	}
	return true;
}

/* Tenant ids go into URL paths unescaped: keep them to a safe alphabet. */
static bool check_tenant(const char *v, struct errbuf *err)
{
	size_t n = strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-");

	if (!*v || v[n] || n > 128) {
		err_set(err, "must be 1 to 128 of A-Z a-z 0-9 _ . -");
		return false;
	}
	return true;
}

#define OFF(field) offsetof(struct config, field)
#define VDB_SCOPE (SCOPE_SERVE | SCOPE_RECONCILE | SCOPE_RESTORE | SCOPE_PROBE)
#define PG_SCOPE (SCOPE_SERVE | SCOPE_RECONCILE | SCOPE_RESTORE)

/*
 * One row per setting. The macros name the fields every row of a type has;
 * what only some rows have (.choices, .check, .flags, .accepts) follows by
 * name.
 */
#define ROW_STR(name_, field, def_, scope_, help_, ...) \
	{.name = name_, .type = CFG_STR, .offset = OFF(field), .def = def_, .scope = scope_, .help = help_, __VA_ARGS__}
#define ROW_INT(name_, field, def_, min_, max_, scope_, help_, ...)                                           \
	{.name = name_, .type = CFG_INT, .offset = OFF(field), .def = def_, .min = min_, .max = max_, .scope = scope_, \
	 .help = help_, __VA_ARGS__}
#define ROW_BOOL(name_, field, def_, scope_, help_, ...) \
	{.name = name_, .type = CFG_BOOL, .offset = OFF(field), .def = def_, .scope = scope_, .help = help_, __VA_ARGS__}
#define ROW_ENUM(name_, field, def_, scope_, help_, ...) \
	{.name = name_, .type = CFG_ENUM, .offset = OFF(field), .def = def_, .scope = scope_, .help = help_, __VA_ARGS__}

static const struct cfg_def defs[] = {
	ROW_STR("DATABASE_URL", database_url, NULL, SCOPE_ALL,
		"Postgres holding the abilities mirror and the sync state, in a UTF8 database (another encoding is "
		"refused: it would store the UTF-8 text converted). Unset: vector-DB-only mode "
		"(migrate, reconcile and restore need it).",
		.check = check_conninfo, .flags = CFG_CONNINFO, .accepts = "postgres://user:pass@host:port/db or key=value"),
	ROW_STR("DB_HOST", db_host, NULL, SCOPE_MIGRATE,
		"Host to wait for before migrating, instead of the one in DATABASE_URL "
		"(as the original entrypoint's DB_HOST).", .accepts = "a host name or address"),
	ROW_INT("DB_WAIT", db_wait, "0", 0, 86400, SCOPE_MIGRATE,
		"Seconds `migrate` waits for Postgres to accept connections (--wait); "
		"0 tries once. The container entrypoint uses 60."),
	ROW_STR("MIGRATIONS_DIR", migrations_dir, "drizzle-compat/drizzle", SCOPE_MIGRATE,
		"drizzle-kit migrations folder (meta/_journal.json and <tag>.sql) (--dir).",
		.check = check_nonempty, .accepts = "a directory"),
	ROW_STR("MIGRATIONS_SCHEMA", migrations_schema, "drizzle", SCOPE_MIGRATE,
		"Schema of the migration ledger; drizzle's default (--schema).", .check = check_ident),
	ROW_STR("MIGRATIONS_TABLE", migrations_table, "__drizzle_migrations", SCOPE_MIGRATE,
		"Table of the migration ledger; drizzle's default (--table).", .check = check_ident),
	ROW_INT("MIGRATE_LOCK_TIMEOUT", migrate_lock_timeout, "120", 1, 86400, SCOPE_MIGRATE,
		"Seconds a migrator waits for another one to finish before giving up (--lock-timeout)."),
	ROW_BOOL("MIGRATE_ALLOW_OUT_OF_ORDER", migrate_allow_out_of_order, "false", SCOPE_MIGRATE,
		"Apply a pending migration older than one already applied (drizzle-kit would skip it "
		"forever) instead of refusing (--allow-out-of-order)."),
	ROW_BOOL("MIGRATE_ALLOW_CHANGED", migrate_allow_changed, "false", SCOPE_MIGRATE,
		"Accept an applied migration whose file changed since (warn instead of refusing) (--allow-changed)."),
	ROW_STR("VECTOR_DB_API", vector_db_api, "https://dev-beta.infraxa.ai", VDB_SCOPE,
		"Base URL of the Infraxa vector DB API (the emulator for `make run` and the tests).",
		.check = check_http_url, .accepts = "an http(s) URL"),
	ROW_STR("VECTOR_DB_TENANT", vector_db_tenant, "reverse_engineer", VDB_SCOPE,
		"Tenant holding one blob per service (abilities_<service>), as the original app.",
		.check = check_tenant, .accepts = "1-128 of A-Z a-z 0-9 _ . -"),
	ROW_STR("VECTOR_DB_API_KEY", vector_db_api_key, NULL, VDB_SCOPE,
		"Key sent to the vector DB when set (see VECTOR_DB_AUTH_HEADER).",
		.flags = CFG_SECRET, .accepts = "a string"),
	ROW_ENUM("VECTOR_DB_AUTH_HEADER", vector_db_auth_header, "authorization", VDB_SCOPE,
		"How the key is sent: `Authorization: Bearer <key>` or `X-API-Key: <key>` (`abilitysync probe` tells which works).",
		.choices = auth_headers),
	ROW_STR("VECTOR_DB_CA_FILE", vector_db_ca_file, NULL, VDB_SCOPE,
		"CA certificates to verify the vector DB's TLS certificate with, instead of the system's.",
		.accepts = "a PEM file"),
	ROW_BOOL("VECTOR_DB_TLS_VERIFY", vector_db_tls_verify, "true", VDB_SCOPE,
		"Verify the vector DB's TLS certificate and host name. Turn off only for testing."),
	ROW_INT("EMBEDDING_DIM", embedding_dim, "3072", 1, 65536, VDB_SCOPE,
		"Length of every embedding; blobs are created with it."),
	ROW_INT("VDB_TIMEOUT_MS", vdb_timeout_ms, "10000", 100, 600000, VDB_SCOPE,
		"Time limit of one vector DB request attempt (the original app's was 10 s)."),
	ROW_INT("VDB_MAX_INFLIGHT", vdb_max_inflight, "8", 1, 256, VDB_SCOPE,
		"Vector DB requests on the wire at once; the rest queue."),
	ROW_INT("VDB_BATCH_BYTES", vdb_batch_bytes, "8388608", 4096, 1073741824, VDB_SCOPE,
		"Upper bound of one add request's body (a 3072-d vector is about 40 KB of JSON)."),
	ROW_INT("VDB_BATCH_MAX", vdb_batch_max, "256", 1, 10000, VDB_SCOPE,
		"Vectors in one add request at most."),
	ROW_INT("VDB_MAX_ATTEMPTS", vdb_max_attempts, "5", 1, 100, VDB_SCOPE,
		"Attempts per request on transport errors, time-outs, 429 and 5xx (never other 4xx)."),
	ROW_INT("VDB_BACKOFF_MS", vdb_backoff_ms, "200", 1, 600000, VDB_SCOPE,
		"Bound of the first retry delay; it doubles per attempt, with full jitter."),
	ROW_INT("VDB_BACKOFF_MAX_MS", vdb_backoff_max_ms, "10000", 1, 3600000, VDB_SCOPE,
		"Bound of any retry delay."),
	ROW_ENUM("VDB_WRITE_MODE", vdb_write_mode, "delete-then-add", VDB_SCOPE,
		"Re-writing an existing vector id: delete it first (safe whatever the server does), or "
		"just add (for a server that overwrites; `abilitysync probe` tells).", .choices = write_modes),
	ROW_INT("VDB_QUARANTINE_MS", vdb_quarantine_ms, "0", 0, 86400000, VDB_SCOPE,
		"How long after an ambiguous vector DB call (timed out or reset after its request was sent; "
		"500, 502, 504) the server may still apply it: the ability stays pending (in doubt) that long, "
		"then its vector is verified. 0: 3 x VDB_TIMEOUT_MS (at least 1 s)."),
	ROW_STR("LISTEN", listen, "127.0.0.1:8080", SCOPE_SERVE,
		"Where `serve` listens. Beyond loopback it needs API_KEYS (or ALLOW_UNAUTHENTICATED).",
		.check = check_nonempty, .accepts = "host:port"),
	ROW_STR("API_KEYS", api_keys, NULL, SCOPE_SERVE,
		"Keys clients send as `Authorization: Bearer <key>` on /v1/: bare keys (every scope) or "
		"`<name>:<scopes>:<key>`, scopes read, write, admin joined by `+`; a key may be `sha256:<hex>`. "
		"Unset (and no API_KEYS_FILE): no auth, loopback only.",
		.flags = CFG_SECRET, .accepts = "comma-separated entries"),
	ROW_STR("API_KEYS_FILE", api_keys_file, NULL, SCOPE_SERVE,
		"API_KEYS entries from a file, one per line (`#` comments); re-read on SIGHUP, so keys rotate "
		"without a restart.", .accepts = "a path"),
	ROW_BOOL("METRICS_AUTH", metrics_auth, "false", SCOPE_SERVE,
		"/metrics needs a key with the read scope (when keys are set)."),
	ROW_INT("RATE_LIMIT_RPS", rate_limit_rps, "0", 0, 1000000, SCOPE_SERVE,
		"Requests a second to /v1/ per key (callers without a key share one bucket); beyond, 429 with "
		"Retry-After. 0: no limit."),
	ROW_INT("RATE_LIMIT_BURST", rate_limit_burst, "0", 0, 1000000, SCOPE_SERVE,
		"Requests a key may send at once before RATE_LIMIT_RPS applies. 0: as many as RATE_LIMIT_RPS."),
	ROW_INT("AUDIT_RETENTION_DAYS", audit_retention_days, "90", 1, 36500, SCOPE_SERVE,
		"Days the audit trail (abilitysync.audit_log: every admin action, by key name) keeps an entry."),
	ROW_BOOL("ALLOW_UNAUTHENTICATED", allow_unauthenticated, "false", SCOPE_SERVE,
		"Serve beyond loopback without API_KEYS, on purpose."),
	ROW_STR("TLS_CERT_FILE", tls_cert_file, NULL, SCOPE_SERVE,
		"With TLS_KEY_FILE: serve HTTPS.", .accepts = "a PEM certificate chain"),
	ROW_STR("TLS_KEY_FILE", tls_key_file, NULL, SCOPE_SERVE,
		"The key of TLS_CERT_FILE.", .accepts = "a PEM private key"),
	ROW_INT("MAX_BODY_BYTES", max_body_bytes, "16777216", 1024, 1073741824, SCOPE_SERVE,
		"Largest request body; larger ones get 413 before they are read."),
	ROW_INT("HTTP_HEADERS_MAX", http_headers_max, "16384", 1024, 1048576, SCOPE_SERVE,
		"Largest request line plus headers, in bytes; larger: 400 bad_request before any handler runs."),
	ROW_INT("HTTP_READ_TIMEOUT_MS", http_read_timeout_ms, "10000", 100, 3600000, SCOPE_SERVE,
		"A connection that sends nothing for this long (headers or body trickled byte by byte included), or "
		"cannot take the answer for this long, is closed; so is an idle keep-alive connection."),
	ROW_INT("HTTP_MAX_CONNECTIONS", http_max_connections, "4096", 1, 1000000, SCOPE_SERVE,
		"Open client connections at most; beyond, new ones wait in the kernel's accept queue until one closes."),
	ROW_INT("HTTP_MAX_IN_FLIGHT", http_max_in_flight, "1024", 1, 1000000, SCOPE_SERVE,
		"Requests being handled at once at most; beyond, 503 with Retry-After at once (/healthz and "
		"/readyz excepted)."),
	ROW_INT("BATCH_MAX", batch_max, "100", 1, 10000, SCOPE_SERVE,
		"Abilities in one {\"abilities\": [...]} request, at most."),
	ROW_INT("SYNC_WAIT_MS", sync_wait_ms, "2000", 0, 600000, SCOPE_SERVE,
		"How long a write waits for the vector DB before answering 202 (the push goes on); a client may "
		"ask for another wait with Prefer: wait=N (seconds), up to SYNC_WAIT_MAX_MS."),
	ROW_INT("SYNC_WAIT_MAX_MS", sync_wait_max_ms, "30000", 0, 600000, SCOPE_SERVE,
		"The longest wait a client may ask for with Prefer: wait=N."),
	ROW_INT("SHUTDOWN_TIMEOUT", shutdown_timeout, "30", 1, 3600, SCOPE_SERVE,
		"Seconds SIGTERM/SIGINT waits for requests and pushes in flight before exiting."),
	ROW_INT("PG_POOL_SIZE", pg_pool_size, "4", 1, 64, PG_SCOPE,
		"Postgres connections of the service."),
	ROW_ENUM("PG_TOAST_COMPRESSION", pg_toast_compression, "lz4", PG_SCOPE,
		"How the service's sessions compress the embeddings they write (default_toast_compression): "
		"lz4 spends about half the server CPU of pglz on a 3072-number embedding (bench/profile.sh); "
		"server: the server's own setting. Readers, the original app's too, decompress either "
		"transparently.", .choices = toast_compressions),
	ROW_INT("PG_STATEMENT_TIMEOUT_MS", pg_statement_timeout_ms, "10000", 100, 3600000, PG_SCOPE,
		"The server's statement_timeout for the service's statements; ours gives up 2 s later (the "
		"connection is dropped), also on a statement still waiting for a connection: 503."),
	ROW_INT("PG_JOB_STATEMENT_TIMEOUT_MS", pg_job_statement_timeout_ms, "300000", 100, 86400000, PG_SCOPE,
		"The same for reconcile and restore jobs, whose statements read whole pages and answer no client."),
	ROW_INT("PG_LOCK_TIMEOUT_MS", pg_lock_timeout_ms, "5000", 100, 3600000, PG_SCOPE,
		"The server's lock_timeout: a row or table lock another session holds longer fails the statement (503)."),
	ROW_INT("PG_CONNECT_TIMEOUT_MS", pg_connect_timeout_ms, "5000", 100, 600000, PG_SCOPE,
		"A connection attempt that has not finished by then is given up (and tried again with backoff)."),
	ROW_INT("PG_TCP_USER_TIMEOUT_MS", pg_tcp_user_timeout_ms, "10000", 1000, 600000, PG_SCOPE,
		"Data Postgres has not acknowledged for this long drops the connection (a partition with no RST); "
		"idle connections are probed by TCP keepalives as often."),
	ROW_INT("WRITE_GROUP_MAX", write_group_max, "256", 1, 10000, SCOPE_SERVE,
		"Abilities from concurrent requests written in one statement, at most."),
	ROW_INT("WRITE_GROUP_MAX_BYTES", write_group_max_bytes, "67108864", 65536, 1073741824, SCOPE_SERVE,
		"Bytes of abilities (embeddings mostly) written in one statement, at most; a single request larger "
		"than this is written alone."),
	ROW_INT("WRITE_CONCURRENCY", write_concurrency, "1", 1, 64, SCOPE_SERVE,
		"Write and delete statements in flight at once, never two for one ability. One groups the most "
		"requests per statement (least overhead); more lets Postgres use more cores. At most PG_POOL_SIZE - 1."),
	ROW_INT("SYNC_INTERVAL_MS", sync_interval_ms, "1000", 10, 3600000, SCOPE_SERVE | SCOPE_RECONCILE,
		"How often the retry worker looks for due outbox rows."),
	ROW_INT("SYNC_CLAIM_MAX", sync_claim_max, "64", 1, 10000, SCOPE_SERVE | SCOPE_RECONCILE,
		"Outbox rows the retry worker takes at a time."),
	ROW_INT("SYNC_MAX_ATTEMPTS", sync_max_attempts, "10", 1, 1000, SCOPE_SERVE | SCOPE_RECONCILE,
		"Pushes of a row before it is `failed` (see `abilitysync sync retry-failed`)."),
	ROW_INT("SYNC_BACKOFF_MS", sync_backoff_ms, "1000", 1, 3600000, SCOPE_SERVE | SCOPE_RECONCILE,
		"Bound of the first delay between a row's pushes; doubles, with full jitter."),
	ROW_INT("SYNC_BACKOFF_MAX_MS", sync_backoff_max_ms, "300000", 1, 86400000, SCOPE_SERVE | SCOPE_RECONCILE,
		"Bound of any delay between a row's pushes."),
	ROW_INT("SYNC_LEASE", sync_lease, "60", 1, 86400, PG_SCOPE,
		"Seconds one push may hold an ability (one push per ability at a time, across replicas). Its "
		"vector DB calls end before (2 s, or a quarter of it); a push that needs longer stops there, in doubt, "
		"and is verified later."),
	ROW_INT("RECONCILE_INTERVAL", reconcile_interval, "3600", 0, 604800, SCOPE_SERVE,
		"Seconds between reconcile runs inside `serve`; of all replicas, the one holding the lock runs "
		"it, once per period. 0: never."),
	ROW_INT("JOBS_MAX", jobs_max, "2", 1, 16, SCOPE_SERVE,
		"Long jobs (restore, reconcile runs, the periodic one included) one replica runs at once, at most; "
		"one more asked over HTTP gets 503 too_many_jobs with Retry-After."),
	ROW_INT("RECONCILE_MAX_REPAIRS", reconcile_max_repairs, "1000", 0, 10000000, SCOPE_SERVE | SCOPE_RECONCILE,
		"Drifted abilities one reconcile run queues for repair, at most; the rest wait for the next run. "
		"0: report only."),
	ROW_INT("RECONCILE_PAGE", reconcile_page, "256", 1, 10000, SCOPE_SERVE | SCOPE_RECONCILE,
		"Rows read from Postgres at a time while reconciling: memory is bounded by it, whatever the table size."),
	ROW_INT("RECONCILE_OVERDUE", reconcile_overdue, "900", 1, 31536000, SCOPE_SERVE | SCOPE_RECONCILE,
		"Seconds after which a change still pending counts as drift (overdue)."),
	ROW_INT("RECONCILE_PUSH_TIMEOUT", reconcile_push_timeout, "120", 0, 86400, SCOPE_RECONCILE,
		"Seconds `abilitysync reconcile` pushes the repairs it queued before exiting (what is left stays "
		"in the outbox for the service). 0: leave them all to the service."),
	ROW_INT("RESTORE_PAGE", restore_page, "500", 1, 10000, SCOPE_SERVE | SCOPE_RESTORE,
		"Rows read from Postgres at a time while restoring; the job's cursor advances a page at a time."),
	ROW_INT("PROGRESS_INTERVAL", progress_interval, "5", 1, 3600, PG_SCOPE,
		"Seconds between progress lines of restore and reconcile (a restore on a terminal draws a bar instead)."),
	ROW_ENUM("LOG_FORMAT", log_format, "text", SCOPE_ALL,
		"text: one readable line per event; json: one JSON object per line.", .choices = log_formats),
	ROW_ENUM("LOG_LEVEL", log_level, "info", SCOPE_ALL,
		"Least severe level logged.", .choices = log_levels),
};

#define FIELD(c, d, type) ((type *)((char *)(c) + (d)->offset))
#define CFIELD(c, d, type) ((type const *)((const char *)(c) + (d)->offset))

static const struct cfg_def *find_def(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(defs); i++)
		if (strcmp(defs[i].name, name) == 0)
			return &defs[i];
	return NULL;
}

bool config_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"1", "true", "yes", "on"};
	static const char *const no[] = {"0", "false", "no", "off"};
	size_t i;

	for (i = 0; i < ARRAY_LEN(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

static void describe_accepted(const struct cfg_def *d, struct buf *b)
{
	const char *const *ch;

	switch (d->type) {
	case CFG_INT:
		buf_printf(b, "an integer from %lld to %lld", d->min, d->max);
		break;
	case CFG_BOOL:
		buf_puts(b, "true or false");
		break;
	case CFG_ENUM:
		for (ch = d->choices; *ch; ch++)
			buf_printf(b, "%s%s", ch == d->choices ? "" : " | ", *ch);
		break;
	case CFG_STR:
		buf_puts(b, d->accepts ? d->accepts : "a string");
		break;
	}
}

/* Parses `value` for `d` into the config; on failure says what is accepted. */
static bool apply_value(struct config *c, const struct cfg_def *d, const char *value, struct errbuf *err)
{
	struct errbuf why = {{0}, false};
	struct buf accepted = BUF_INIT;
	const char *const *ch;
	char *end;
	long long n;
	bool ok = false;

	switch (d->type) {
	case CFG_STR:
		if (d->check && !d->check(value, &why))
			break;
		free(*FIELD(c, d, char *));
		*FIELD(c, d, char *) = xstrdup(value);
		ok = true;
		break;
	case CFG_INT:
		errno = 0;
		n = strtoll(value, &end, 10);
		if (errno || end == value || *end) {
			err_set(&why, "not an integer");
			break;
		}
		if (n < d->min || n > d->max) {
			err_set(&why, "out of range");
			break;
		}
		*FIELD(c, d, long long) = n;
		ok = true;
		break;
	case CFG_BOOL:
		ok = config_parse_bool(value, FIELD(c, d, bool));
		if (!ok)
			err_set(&why, "not a boolean");
		break;
	case CFG_ENUM:
		for (ch = d->choices; *ch; ch++) {
			if (strcasecmp(value, *ch) == 0) {
				*FIELD(c, d, int) = (int)(ch - d->choices);
				ok = true;
				break;
			}
		}
		if (!ok)
			err_set(&why, "unknown value");
		break;
	}
	if (ok)
		return true;

	describe_accepted(d, &accepted);
	if (d->flags & (CFG_SECRET | CFG_CONNINFO))
		err_set(err, "%s: %s (accepted: %s)", d->name, why.msg, buf_cstr(&accepted));
	else
		err_set(err, "%s=\"%.200s\": %s (accepted: %s)", d->name, value, why.msg, buf_cstr(&accepted));
	buf_free(&accepted);
	return false;
}

bool config_load(struct config *c, config_lookup_fn lookup, void *ctx, struct errbuf *err)
{
	struct buf errors = BUF_INIT;
	struct errbuf one;
	size_t i;
	bool ok;

	memset(c, 0, sizeof(*c));
	for (i = 0; i < ARRAY_LEN(defs); i++) {
		const struct cfg_def *d = &defs[i];
		const char *v = lookup ? lookup(d->name, ctx) : NULL;

		if (d->def && !apply_value(c, d, d->def, &one))
			abort(); /* a default that fails its own check is a bug in the table */
		if (!v)
			continue;
		/* An empty optional string means unset, as shells make it easy to export "". */
		if (!*v && d->type == CFG_STR && !d->def)
			continue;
		if (!apply_value(c, d, v, &one))
			buf_printf(&errors, "%s%s", errors.len ? "; " : "", one.msg);
	}
	ok = errors.len == 0;
	if (!ok)
		err_set(err, "%s", errors.data);
	buf_free(&errors);
	return ok;
}

bool config_set(struct config *c, const char *name, const char *value, struct errbuf *err)
{
	const struct cfg_def *d = find_def(name);

	if (!d) {
		err_set(err, "%s: no such setting", name);
		return false;
	}
	return apply_value(c, d, value, err);
}

void config_free(struct config *c)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(defs); i++) {
		if (defs[i].type == CFG_STR) {
			free(*FIELD(c, &defs[i], char *));
			*FIELD(c, &defs[i], char *) = NULL;
		}
	}
}

static void describe_value(const struct config *c, const struct cfg_def *d, struct buf *b)
{
	const char *s;
	char *red;

	switch (d->type) {
	case CFG_STR:
		s = *CFIELD(c, d, char *);
		if (!s) {
			buf_puts(b, "(unset)");
		} else if (d->flags & CFG_SECRET) {
			buf_puts(b, "(set)");
		} else if (d->flags & CFG_CONNINFO) {
			red = pg_redact_conninfo(s);
			buf_puts(b, red);
			free(red);
		} else {
			buf_puts(b, s);
		}
		break;
	case CFG_INT:
		buf_printf(b, "%lld", *CFIELD(c, d, long long));
		break;
	case CFG_BOOL:
		buf_puts(b, *CFIELD(c, d, bool) ? "true" : "false");
		break;
	case CFG_ENUM:
		buf_puts(b, d->choices[*CFIELD(c, d, int)]);
		break;
	}
}

static const char *no_env(const char *name, void *ctx)
{
	(void)name, (void)ctx;
	return NULL;
}

char *config_describe(const struct config *c)
{
	return config_describe_changes(c, NULL);
}

char *config_describe_changes(const struct config *c, size_t *elided)
{
	struct buf b = BUF_INIT;
	struct buf v = BUF_INIT, d = BUF_INIT;
	struct config defaults;
	struct errbuf err;
	size_t i, n = 0;

	if (elided) {
		*elided = 0;
		if (!config_load(&defaults, no_env, NULL, &err))
			abort(); /* the table's own defaults are valid (a unit test says so) */
	}
	for (i = 0; i < ARRAY_LEN(defs); i++) {
		buf_reset(&v);
		describe_value(c, &defs[i], &v);
		if (elided) {
			buf_reset(&d);
			describe_value(&defaults, &defs[i], &d);
			if (v.len == d.len && memcmp(buf_cstr(&v), buf_cstr(&d), v.len) == 0) {
				(*elided)++;
				continue;
			}
		}
		buf_printf(&b, "%s%s=", n++ ? " " : "", defs[i].name);
		if (strpbrk(buf_cstr(&v), " \t\"") || v.len == 0)
			buf_json_str(&b, buf_cstr(&v), v.len);
		else
			buf_append(&b, v.data, v.len);
	}
	buf_free(&v);
	buf_free(&d);
	if (elided)
		config_free(&defaults);
	return buf_steal(&b);
}

static void default_text(const struct cfg_def *d, struct buf *b)
{
	if (!d->def)
		buf_puts(b, "unset");
	else
		buf_puts(b, d->def);
}

static void wrap(FILE *f, const char *text, int indent, int width)
{
	const char *p = text;
	int col = indent;

	while (*p) {
		const char *w = p;
		int len;

		while (*w && *w != ' ')
			w++;
		len = (int)(w - p);
		if (col > indent && col + 1 + len > width) {
			fprintf(f, "\n%*s", indent, "");
			col = indent;
		} else if (col > indent) {
			fputc(' ', f);
			col++;
		}
		fprintf(f, "%.*s", len, p);
		col += len;
		p = *w ? w + 1 : w;
	}
	fputc('\n', f);
}

void config_print_help(FILE *f, unsigned scope)
{
	struct buf line = BUF_INIT;
	size_t i;

	for (i = 0; i < ARRAY_LEN(defs); i++) {
		const struct cfg_def *d = &defs[i];

		if (!(d->scope & scope))
			continue;
		buf_reset(&line);
		buf_printf(&line, "%s [default: ", d->help);
		default_text(d, &line);
		buf_puts(&line, "; accepts: ");
		describe_accepted(d, &line);
		buf_puts(&line, d->flags & CFG_SECRET ? "; secret]" : "]");
		fprintf(f, "  %s\n      ", d->name);
		wrap(f, line.data, 6, 78);
	}
	buf_free(&line);
}

static void md_cell(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '|')
			fputs("\\|", f);
		else
			fputc(*s, f);
	}
}

void config_print_markdown(FILE *f)
{
	static const char *const scopes[] = {"serve", "migrate", "reconcile", "restore", "probe"};
	struct buf cell = BUF_INIT;
	size_t i, s;

	fputs("| Variable | Default | Accepts | Read by | Meaning |\n", f);
	fputs("|---|---|---|---|---|\n", f);
	for (i = 0; i < ARRAY_LEN(defs); i++) {
		const struct cfg_def *d = &defs[i];

		fprintf(f, "| `%s` | ", d->name);
		buf_reset(&cell);
		default_text(d, &cell);
		fprintf(f, d->def ? "`%s`" : "%s", buf_cstr(&cell));
		fputs(" | ", f);
		buf_reset(&cell);
		describe_accepted(d, &cell);
		md_cell(f, buf_cstr(&cell));
		fputs(" | ", f);
		if (d->scope == SCOPE_ALL) {
			fputs("all", f);
		} else {
			bool first = true;

			for (s = 0; s < ARRAY_LEN(scopes); s++) {
				if (d->scope & (1u << s)) {
					fprintf(f, "%s%s", first ? "" : ", ", scopes[s]);
					first = false;
				}
			}
		}
		fputs(" | ", f);
		md_cell(f, d->help);
		fputs(d->flags & CFG_SECRET ? " Secret: never logged. |\n" : " |\n", f);
	}
	buf_free(&cell);
}
