/*
 * main.c - abilitysync's entry point: subcommands, flags, configuration.
 *
 * Flags are another way to set rows of the config table, so `--dir X` and
 * MIGRATIONS_DIR=X are validated by the same code; each subcommand then gets the
 * finished configuration and returns its exit code.
 */
#include "clock.h"
#include "common.h"
#include "config.h"
#include "errcode.h"
#include "log.h"
#include "mem.h"
#include "migrate.h"
#include "options.h"
#include "pgconn.h"
#include "pgpool.h"
#include "probe.h"
#include "reconcile.h"
#include "restore.h"
#include "service.h"
#include "store.h"
#include "vdb.h"
#include "vdbid.h"

#include <signal.h>
#include <unistd.h>

#include <curl/curl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct flag {
	const char *name;    /* --name */
	const char *metavar; /* NULL: a switch */
	const char *setting; /* the config variable it sets; switches set "true" */
	bool *local;         /* or a switch of this command only */
	const char **value;  /* or a value of this command only */
	const char *help;
};

/* What an exit status of a command means; each command's list ends with {-1, NULL}. */
struct exit_doc {
	int status;
	const char *meaning;
};

struct command {
	const char *name;
	const char *args;    /* synopsis after the name */
	const char *summary;
	unsigned scope;      /* which config rows --help lists */
	const struct flag *flags;
	const char *details; /* extra help text, or NULL */
	int (*run)(struct config *cfg, int argc, char **argv);
	const struct exit_doc *exits;
};

#define EXIT_DOC_USAGE {EXIT_USAGE, "bad usage or configuration: the message names the flag or variable; nothing was done"}

static const char *lookup_env(const char *name, void *ctx)
{
	(void)ctx;
	return getenv(name);
}

static void print_flags(FILE *f, const struct flag *flags)
{
	const struct flag *fl;

	for (fl = flags; fl && fl->name; fl++) {
		char left[64];

		snprintf(left, sizeof(left), "--%s%s%s", fl->name, fl->metavar ? " " : "",
			 fl->metavar ? fl->metavar : "");
		fprintf(f, "  %-26s %s", left, fl->help);
		if (fl->setting)
			fprintf(f, " (%s)", fl->setting);
		fputc('\n', f);
	}
	fprintf(f, "  %-26s %s\n", "-h, --help", "this help");
}

static void command_help(FILE *f, const struct command *c)
{
	fprintf(f, "usage: abilitysync %s %s\n\n%s\n", c->name, c->args, c->summary);
	if (c->details)
		fprintf(f, "\n%s", c->details);
	if (c->exits) {
		const struct exit_doc *x;

		fputs("\nexit status:\n", f);
		for (x = c->exits; x->meaning; x++)
			fprintf(f, "  %d  %s\n", x->status, x->meaning);
	}
	fputs("\noptions:\n", f);
	print_flags(f, c->flags);
	if (c->scope) {
		fputs("\nenvironment (flags override it):\n", f);
		config_print_help(f, c->scope);
	}
}

/*
 * Parses argv[1..] against the command's flags, setting config rows; the
 * remaining arguments are moved to the front of argv. Returns the number of
 * positional arguments, or -1 after printing a usage error (or help: -2).
 */
static int parse_flags(const struct command *c, struct config *cfg, int argc, char **argv)
{
	int i, npos = 0;

	for (i = 1; i < argc; i++) {
		const struct flag *fl;
		const char *arg = argv[i], *eq, *value = NULL;
		struct errbuf err;
		size_t nlen;

		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			command_help(stdout, c);
			return -2;
		}
		if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
			argv[npos++] = argv[i];
			continue;
		}
		eq = strchr(arg, '=');
		nlen = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
		for (fl = c->flags; fl && fl->name; fl++)
			if (strlen(fl->name) == nlen && strncmp(fl->name, arg + 2, nlen) == 0)
				break;
		if (!fl || !fl->name) {
			fprintf(stderr, "abilitysync %s: unknown option %s (see abilitysync %s --help)\n", c->name,
				arg, c->name);
			return -1;
		}
		if (fl->metavar) {
			value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
			if (!value) {
				fprintf(stderr, "abilitysync %s: --%s needs a value (%s)\n", c->name, fl->name,
					fl->metavar);
				return -1;
			}
		} else if (eq) {
			fprintf(stderr, "abilitysync %s: --%s takes no value\n", c->name, fl->name);
			return -1;
		}
		if (fl->local) {
			*fl->local = true;
		} else if (fl->value) {
			*fl->value = value;
		} else if (!config_set(cfg, fl->setting, value ? value : "true", &err)) {
			fprintf(stderr, "abilitysync %s: --%s: %s\n", c->name, fl->name, err.msg);
			return -1;
		}
	}
	return npos;
}

/* Commands without positional arguments refuse any, naming it. */
static bool no_arguments(const char *cmd, int argc, char **argv)
{
	if (argc == 0)
		return true;
	fprintf(stderr, "abilitysync %s: unexpected argument %s\n", cmd, argv[0]);
	return false;
}

/* --service, when given, names a service. */
static bool service_flag_ok(const char *cmd, const char *service)
{
	if (!service || *service)
		return true;
	fprintf(stderr, "abilitysync %s: --service needs a service_name\n", cmd);
	return false;
}

/* ---- migrate ---------------------------------------------------------- */

static bool migrate_json;

static const struct flag migrate_flags[] = {
	{"wait", "SECONDS", "DB_WAIT", NULL, NULL, "wait this long for Postgres to come up"},
	{"dir", "DIR", "MIGRATIONS_DIR", NULL, NULL, "the drizzle-kit migrations folder"},
	{"schema", "NAME", "MIGRATIONS_SCHEMA", NULL, NULL, "schema of the ledger"},
	{"table", "NAME", "MIGRATIONS_TABLE", NULL, NULL, "table of the ledger"},
	{"lock-timeout", "SECONDS", "MIGRATE_LOCK_TIMEOUT", NULL, NULL, "wait this long for another migrator"},
	{"allow-out-of-order", NULL, "MIGRATE_ALLOW_OUT_OF_ORDER", NULL, NULL,
	 "apply a migration older than the newest applied one"},
	{"allow-changed", NULL, "MIGRATE_ALLOW_CHANGED", NULL, NULL, "accept applied files that changed since"},
	{"json", NULL, NULL, &migrate_json, NULL, "status: print one JSON object"},
	{NULL, NULL, NULL, NULL, NULL, NULL},
};

static const char migrate_details[] =
	"  up      apply what is pending (the default), in one transaction, holding a\n"
	"          session advisory lock so that concurrent starts take turns\n"
	"  status  list every migration: applied, pending, out-of-order (older than an\n"
	"          applied one; drizzle-kit would skip it) or changed (edited after apply)\n"
	"  plan    print the SQL `up` would run, in order; changes nothing\n";

static int cmd_migrate(struct config *cfg, int argc, char **argv)
{
	struct migrate_opts o = {
		.conninfo = cfg->database_url,
		.db_host = cfg->db_host,
		.dir = cfg->migrations_dir,
		.schema = cfg->migrations_schema,
		.table = cfg->migrations_table,
		.wait_s = (int)cfg->db_wait,
		.lock_timeout_s = (int)cfg->migrate_lock_timeout,
		.allow_out_of_order = cfg->migrate_allow_out_of_order,
		.allow_changed = cfg->migrate_allow_changed,
		.json = migrate_json,
	};
	const char *verb = argc > 0 ? argv[0] : "up";

	if (argc > 1) {
		fprintf(stderr, "abilitysync migrate: unexpected argument %s\n", argv[1]);
		return EXIT_USAGE;
	}
	if (strcmp(verb, "up") == 0)
		return migrate_up(&o);
	if (strcmp(verb, "status") == 0)
		return migrate_status(&o);
	if (strcmp(verb, "plan") == 0)
		return migrate_plan(&o);
	fprintf(stderr, "abilitysync migrate: unknown action %s (up, status or plan)\n", verb);
	return EXIT_USAGE;
}

/* ---- the vector DB ---------------------------------------------------- */

static bool probe_json;
static const char *probe_max_batch;

static const struct flag probe_flags[] = {
	{"url", "URL", "VECTOR_DB_API", NULL, NULL, "the server to study"},
	{"max-batch", "N", NULL, NULL, &probe_max_batch, "largest batch to try, in vectors (default 1024)"},
	{"json", NULL, NULL, &probe_json, NULL, "print one JSON object"},
	{NULL, NULL, NULL, NULL, NULL, NULL},
};

static const char probe_details[] =
	"On a scratch tenant it creates and deletes, the probe finds out: whether the\n"
	"API key is needed and which header carries it, what \"already exists\"\n"
	"answers, what re-adding an existing id does (overwrite, reject, duplicate),\n"
	"whether GET returns the vector, and the largest batch accepted (doubling up\n"
	"to --max-batch). It prints the configuration it recommends and never the key.\n"
	"Exit status 0 when the server was studied and left clean.\n";

static int cmd_probe(struct config *cfg, int argc, char **argv)
{
	struct vdb_opts vo;
	struct probe_opts po;
	char *end;

	if (!no_arguments("probe", argc, argv))
		return EXIT_USAGE;
	options_vdb(cfg, &vo);
	memset(&po, 0, sizeof(po));
	po.vdb = &vo;
	po.json = probe_json;
	po.max_batch = 1024;
	if (probe_max_batch) {
		po.max_batch = strtoul(probe_max_batch, &end, 10);
		if (*end || po.max_batch < 1 || po.max_batch > 100000) {
			fprintf(stderr, "abilitysync probe: --max-batch: \"%s\" is not a number from 1 to 100000\n",
				probe_max_batch);
			return EXIT_USAGE;
		}
	}
	return probe_run(&po);
}

/* ---- serve, sync, healthcheck --------------------------------------------- */

static const struct flag no_flags[] = {{NULL, NULL, NULL, NULL, NULL, NULL}};

static const struct flag serve_flags[] = {
	{"listen", "HOST:PORT", "LISTEN", NULL, NULL, "where to listen"},
	{NULL, NULL, NULL, NULL, NULL, NULL},
};

static const char serve_details[] =
	"Registers abilities over HTTP (POST /v1/abilities), writes them to Postgres\n"
	"with their sync state in one transaction, pushes them to the vector DB, and\n"
	"retries what did not get there. Without DATABASE_URL it writes to the vector\n"
	"DB alone. SIGTERM/SIGINT stop it cleanly. The README lists the routes.\n";

static int cmd_serve(struct config *cfg, int argc, char **argv)
{
	if (!no_arguments("serve", argc, argv))
		return EXIT_USAGE;
	return serve_run(cfg);
}

struct wait_result {
	bool done;
	bool ok;
	char text[600];
};

static void on_retry_failed(int64_t matched, int64_t n, const struct pg_outcome *o, void *arg)
{
	struct wait_result *w = arg;

	(void)matched;
	w->ok = n >= 0;
	if (w->ok)
		snprintf(w->text, sizeof(w->text), "%lld", (long long)n);
	else
		snprintf(w->text, sizeof(w->text), "%s", o->error);
	w->done = true;
}

static const char sync_details[] =
	"  retry-failed  make every `failed` row pending again (attempts reset), so the\n"
	"                service pushes it at once: after fixing what made them fail\n";

static int cmd_sync(struct config *cfg, int argc, char **argv)
{
	char owner[OWNER_MAX];
	struct event_base *base;
	struct pgpool_opts po;
	struct store_opts so;
	struct pgpool *pool;
	struct store *st;
	struct errbuf err;
	struct wait_result w = {false, false, ""};
	struct pg_wait_opts wo = {cfg->database_url, NULL, (int)cfg->db_wait, "sync", "abilitysync sync"};
	PGconn *probe;

	if (argc != 1 || strcmp(argv[0], "retry-failed") != 0) {
		fprintf(stderr, "abilitysync sync: expected retry-failed\n");
		return EXIT_USAGE;
	}
	if (!cfg->database_url) {
		log_error("sync", "DATABASE_URL is not set: the outbox lives in Postgres");
		return EXIT_USAGE;
	}
	/* Connect once in the foreground, for a clear error; then the pool does the work. */
	if (!(probe = pg_connect_wait(&wo, &err))) {
		log_error("sync", "%s", err.msg);
		return EXIT_FAIL;
	}
	PQfinish(probe);
	base = event_base_new();
	options_pgpool(cfg, "abilitysync sync", &po);
	po.size = 1;
	if (!(pool = pgpool_new(base, &po, &err))) {
		log_error("sync", "%s", err.msg);
		event_base_free(base);
		return EXIT_FAIL;
	}
	/* It connected a moment ago: give the pool a few seconds to do the same. */
	for (int64_t until = clock_mono_ms() + 10000; !pgpool_ready(pool) && clock_mono_ms() < until;)
		event_base_loop(base, EVLOOP_ONCE);
	options_owner(owner, sizeof(owner));
	options_store(cfg, owner, &so);
	st = store_new(pool, &so);
	store_sync_retry(st, &(struct retry_selector){false, NULL, NULL, -1, false}, on_retry_failed, &w);
	pgpool_run_until(pool, &w.done);
	if (w.ok)
		printf("%s failed row(s) made pending again\n", w.text);
	else
		log_error("sync", "%s", w.text);
	store_free(st);
	pgpool_free(pool);
	event_base_free(base);
	return w.ok ? EXIT_OK : EXIT_FAIL;
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p, (void)arg;
	return size * n;
}

/* For the container's HEALTHCHECK: GET /healthz on LISTEN (0.0.0.0 means this host). */
static int cmd_healthcheck(struct config *cfg, int argc, char **argv)
{
	const char *colon = strrchr(cfg->listen, ':');
	bool any = strncmp(cfg->listen, "0.0.0.0:", 8) == 0 || strncmp(cfg->listen, "[::]:", 5) == 0;
	char url[256];
	CURL *e;
	long status = 0;
	CURLcode cc;

	(void)argv;
	if (argc > 0 || !colon)
		return EXIT_USAGE;
	snprintf(url, sizeof(url), "%s://%s%s/healthz", cfg->tls_cert_file ? "https" : "http",
		 any ? "127.0.0.1" : "", any ? colon : cfg->listen);
	e = curl_easy_init();
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 3000L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L); /* our own certificate, on our own host */
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	cc = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(e);
	if (cc != CURLE_OK || status != 200) {
		fprintf(stderr, "unhealthy: %s -> %s\n", url, cc != CURLE_OK ? curl_easy_strerror(cc) : "not 200");
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/* ---- reconcile and restore: jobs on an event loop ---------------------------- */

/* The loop and vector DB client the long jobs run on, after a foreground look at Postgres. */
struct job_env {
	struct event_base *base;
	struct vdb *vdb;
	struct event *sigterm, *sigint;
};

static int job_env_open(struct config *cfg, const char *cmd, struct job_env *env)
{
	struct pg_wait_opts wo = {cfg->database_url, NULL, (int)cfg->db_wait, cmd, NULL};
	struct vdb_opts vo;
	struct errbuf err;
	PGconn *probe;

	memset(env, 0, sizeof(*env));
	if (!cfg->database_url) {
		log_error(cmd, "DATABASE_URL is not set: %s works from the Postgres mirror", cmd);
		return EXIT_USAGE;
	}
	/* One connection in the foreground for a clear error (password, database); the job opens its own. */
	if (!(probe = pg_connect_wait(&wo, &err))) {
		log_error(cmd, "%s", err.msg);
		return EXIT_FAIL;
	}
	PQfinish(probe);
	if (!(env->base = event_base_new())) {
		log_error(cmd, "cannot create the event loop");
		return EXIT_FAIL;
	}
	options_vdb(cfg, &vo);
	if (!(env->vdb = vdb_new(env->base, &vo, &err))) {
		log_error(cmd, "%s", err.msg);
		event_base_free(env->base);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

static void job_env_close(struct job_env *env)
{
	if (env->sigterm)
		event_free(env->sigterm);
	if (env->sigint)
		event_free(env->sigint);
	vdb_free(env->vdb);
	if (env->base)
		event_base_free(env->base);
}

static void job_env_signals(struct job_env *env, event_callback_fn fn, void *arg)
{
	env->sigterm = evsignal_new(env->base, SIGTERM, fn, arg);
	env->sigint = evsignal_new(env->base, SIGINT, fn, arg);
	evsignal_add(env->sigterm, NULL);
	evsignal_add(env->sigint, NULL);
}

static void print_json(json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10));

	puts(text);
	free(text);
}

static bool reconcile_dry, reconcile_json, reconcile_deep;
static const char *reconcile_service, *reconcile_model;

static const struct flag reconcile_flags[] = {
	{"dry-run", NULL, NULL, &reconcile_dry, NULL, "report only: change nothing anywhere, record nothing"},
	{"json", NULL, NULL, &reconcile_json, NULL, "print the report as one JSON object"},
	{"service", "NAME", NULL, NULL, &reconcile_service, "only this service_name (its blob)"},
	{"deep", NULL, NULL, &reconcile_deep, NULL,
	 "also rebuild each row's content hash and self-query each vector (reads every embedding)"},
	{"embedding-model", "MODEL", NULL, NULL, &reconcile_model,
	 "count the rows whose metadata.embedding_model is not MODEL (old_embedding_model)"},
	{NULL, NULL, NULL, NULL, NULL, NULL},
};

static const char reconcile_details[] =
	"Compares the mirror with the vector DB (which cannot be listed: Postgres and\n"
	"the ledger of every vector written are the inventory) and counts drift by\n"
	"category (`abilitysync codes --drift` lists them and their repairs). A real\n"
	"run records itself in abilitysync.reconcile_runs, cut into parts that any\n"
	"number of processes share: one going with the same options is joined (this\n"
	"process takes parts no one holds and prints the run's whole report), one\n"
	"with other options makes this one exit 1. It queues the repairs in the\n"
	"outbox (RECONCILE_MAX_REPAIRS a run at most) and pushes them before exiting\n"
	"(RECONCILE_PUSH_TIMEOUT). Collisions and invalid rows are left to you.\n";

struct reconcile_wait {
	bool done;
	enum reconcile_outcome outcome;
	json_t *report;
	char why[700];
};

static void on_reconciled(enum reconcile_outcome outcome, json_t *report, const char *why, void *arg)
{
	struct reconcile_wait *w = arg;

	w->done = true;
	w->outcome = outcome;
	w->report = json_incref(report);
	snprintf(w->why, sizeof(w->why), "%s", why);
}

static void print_report_text(json_t *report)
{
	json_t *drift = json_object_get(report, "drift"), *cat;
	const char *name;

	json_t *checked = json_object_get(report, "checked");
	char what[48];

	if (json_is_integer(json_object_get(report, "run_id")))
		snprintf(what, sizeof(what), "run %lld", (long long)json_integer_value(json_object_get(report, "run_id")));
	else
		snprintf(what, sizeof(what), "dry run");
	printf("reconcile %s: %s in %.1f s; checked %lld rows, %lld vectors, %lld ledger entries\n", what,
	       json_string_value(json_object_get(report, "status")), json_number_value(json_object_get(report, "seconds")),
	       (long long)json_integer_value(json_object_get(checked, "rows")),
	       (long long)json_integer_value(json_object_get(checked, "vectors")),
	       (long long)json_integer_value(json_object_get(checked, "ledger_entries")));
	json_object_foreach(drift, name, cat) {
		json_t *sample = json_object_get(cat, "sample"), *id;
		size_t i;

		printf("  %-15s %6lld", name, (long long)json_integer_value(json_object_get(cat, "count")));
		json_array_foreach(sample, i, id)
			printf("%s%s", i ? ", " : "  e.g. ", json_string_value(id));
		putchar('\n');
	}
	printf("  %-15s %6lld\n", "total", (long long)json_integer_value(json_object_get(report, "total")));
	if (!json_is_true(json_object_get(report, "dry_run")))
		printf("  repairs queued %lld, deferred to the next run %lld\n",
		       (long long)json_integer_value(json_object_get(json_object_get(report, "repairs"), "queued")),
		       (long long)json_integer_value(json_object_get(json_object_get(report, "repairs"), "deferred")));
	if (json_is_string(json_object_get(report, "error")))
		printf("  error: %s\n", json_string_value(json_object_get(report, "error")));
}

/* An outbox of a command-line job: its own small pool, store and lease name. */
struct outbox_env {
	struct pgpool *pool;
	struct store *store;
	struct outbox *ob;
	char owner[OWNER_MAX];
};

static bool outbox_env_open(struct config *cfg, struct job_env *env, const char *cmd, struct outbox_env *oe)
{
	struct pgpool_opts po;
	struct store_opts so;
	struct outbox_opts oo;
	struct errbuf err;

	memset(oe, 0, sizeof(*oe));
	options_pgpool(cfg, cmd, &po);
	po.size = 2;
	if (!(oe->pool = pgpool_new(env->base, &po, &err))) {
		log_error(cmd, "%s", err.msg);
		return false;
	}
	for (int64_t until = clock_mono_ms() + 10000; !pgpool_ready(oe->pool) && clock_mono_ms() < until;)
		event_base_loop(env->base, EVLOOP_ONCE);
	options_owner(oe->owner, sizeof(oe->owner));
	options_store(cfg, oe->owner, &so);
	oe->store = store_new(oe->pool, &so);
	options_outbox(cfg, &oo);
	oo.interval_ms = 100;
	oe->ob = outbox_new(env->base, env->vdb, oe->store, &oo);
	return true;
}

static void outbox_env_close(struct job_env *env, struct outbox_env *oe)
{
	if (oe->ob) {
		/* What is still on its way settles (a push recorded, or its lease left to run out). */
		while (outbox_busy(oe->ob))
			event_base_loop(env->base, EVLOOP_ONCE);
	}
	outbox_free(oe->ob);
	store_free(oe->store);
	pgpool_free(oe->pool);
}

struct count_result {
	bool done;
	long n;
};

static void on_counted(long n, const struct pg_outcome *o, void *arg)
{
	struct count_result *c = arg;

	(void)o;
	c->n = n;
	c->done = true;
}

/* The count a store_count_* call started into c, once Postgres answered. */
static long count_wait(struct job_env *env, struct count_result *c)
{
	while (!c->done)
		event_base_loop(env->base, EVLOOP_ONCE);
	return c->n;
}

/*
 * Runs the outbox worker until nothing of `blob` (NULL: any) pending since
 * before `began` (clock_mono_ms) is due or leased (a lease of a process that
 * died runs out first), or, with `windows`, will be due before the deadline
 * (a backoff or a doubt window ends), or the time is up. Changes that began
 * later (registrations meanwhile) are the service's to push.
 */
static void drain_outbox(struct job_env *env, struct outbox_env *oe, const char *blob, int64_t began,
			 int64_t deadline, bool windows)
{
	struct timeval tick = {0, 200000};
	struct count_result c;
	bool told = false;
	long waiting;

	outbox_start_worker(oe->ob);
	for (;;) {
		c = (struct count_result){false, -1};
		store_count_waiting(oe->store, blob, windows ? (long)(deadline - clock_mono_ms()) : 0,
				    (long)(clock_mono_ms() - began), on_counted, &c);
		waiting = count_wait(env, &c);
		if ((waiting == 0 && !outbox_busy(oe->ob)) || waiting < 0 || clock_mono_ms() >= deadline)
			break;
		if (!told)
			log_info("outbox", "pushing %ld change(s) still waiting (leases to run out, backoffs, doubt windows), "
				 "for %lld s at most", waiting, (long long)(deadline - clock_mono_ms() + 999) / 1000);
		told = true;
		event_base_loopexit(env->base, &tick);
		event_base_dispatch(env->base);
	}
	outbox_stop_worker(oe->ob);
	while (outbox_busy(oe->ob))
		event_base_loop(env->base, EVLOOP_ONCE);
}

/*
 * Changes of `blob` (NULL: any) pending since before `began` (clock_mono_ms)
 * and still pending, and failed ones (every one, or those that failed since
 * `began`); -1 when Postgres could not tell.
 */
static long count_unsettled(struct job_env *env, struct outbox_env *oe, const char *blob, int64_t began,
			    bool every_failed)
{
	struct count_result c = {false, -1};

	store_count_unsettled(oe->store, blob, every_failed, (long)(clock_mono_ms() - began), on_counted, &c);
	return count_wait(env, &c);
}

/* Pushes what the run queued, with the outbox worker itself; returns the changes still unsettled. */
static long push_repairs(struct config *cfg, struct job_env *env)
{
	struct outbox_env oe;
	struct outbox_stats ps;
	char blob[ABILITY_TEXT_MAX * 2 + 16];
	int64_t began;
	long left;

	if (!outbox_env_open(cfg, env, "abilitysync reconcile", &oe))
		return -1;
	if (reconcile_service)
		vdb_blob_name(reconcile_service, strlen(reconcile_service), blob, sizeof(blob));
	began = clock_mono_ms();
	drain_outbox(env, &oe, reconcile_service ? blob : NULL, began, began + cfg->reconcile_push_timeout * 1000,
		     false);
	left = count_unsettled(env, &oe, reconcile_service ? blob : NULL, began, true);
	outbox_get_stats(oe.ob, &ps);
	log_msg(left ? LL_WARN : LL_INFO, "reconcile",
		"repairs pushed: %llu written, %llu deleted, %llu attempts failed; %ld change(s) still pending or "
		"failed%s", (unsigned long long)ps.pushed, (unsigned long long)ps.deleted, (unsigned long long)ps.failed,
		left, left > 0 ? " (see GET /v1/sync/status; the service's outbox worker retries pending ones)" : "");
	outbox_env_close(env, &oe);
	return left;
}

static int cmd_reconcile(struct config *cfg, int argc, char **argv)
{
	struct job_env env;
	struct reconcile_opts o;
	struct reconcile_wait w;
	char host[256] = "";
	int rc;

	if (!no_arguments("reconcile", argc, argv))
		return EXIT_USAGE;
	if (!service_flag_ok("reconcile", reconcile_service))
		return EXIT_USAGE;
	if ((rc = job_env_open(cfg, "reconcile", &env)) != EXIT_OK)
		return rc;
	memset(&w, 0, sizeof(w));
	options_reconcile(cfg, "abilitysync reconcile", &o);
	gethostname(host, sizeof(host) - 1);
	o.dry_run = reconcile_dry;
	o.deep = reconcile_deep;
	o.service = reconcile_service;
	o.embedding_model = reconcile_model;
	o.host = host;
	reconcile_start(env.base, env.vdb, &o, on_reconciled, &w);
	while (!w.done)
		event_base_loop(env.base, EVLOOP_ONCE);
	if (w.outcome == RECONCILE_SKIPPED) {
		log_error("reconcile", "not run: %s", w.why);
		job_env_close(&env);
		return EXIT_FAIL;
	}
	if (w.outcome == RECONCILE_FAILED)
		log_error("reconcile", "%s", w.why);
	if (reconcile_json)
		print_json(w.report);
	else
		print_report_text(w.report);
	fflush(stdout);
	rc = reconcile_exit_code(w.report);
	if (!reconcile_dry && w.outcome == RECONCILE_DONE && cfg->reconcile_push_timeout > 0 &&
	    json_integer_value(json_object_get(json_object_get(w.report, "repairs"), "queued")) > 0 &&
	    push_repairs(cfg, &env) != 0 && rc == EXIT_OK)
		rc = EXIT_PENDING;
	json_decref(w.report);
	job_env_close(&env);
	return rc;
}

static bool restore_resume, restore_dry, restore_json;
static const char *restore_service;

static const struct flag restore_flags[] = {
	{"service", "NAME", NULL, NULL, &restore_service, "only this service_name (its blob)"},
	{"resume", NULL, NULL, &restore_resume, NULL, "continue the newest unfinished job where it stopped, or join the processes restoring it"},
	{"dry-run", NULL, NULL, &restore_dry, NULL, "count what would be restored, per blob; write nothing"},
	{"json", NULL, NULL, &restore_json, NULL, "print the summary as one JSON object"},
	{NULL, NULL, NULL, NULL, NULL, NULL},
};

static const char restore_details[] =
	"Rebuilds the vector DB from the Postgres mirror, e.g. after restoring a\n"
	"pg_dump: creates the tenant and blobs, streams the rows in pages\n"
	"(RESTORE_PAGE), batches vectors by bytes with several requests in flight.\n"
	"Progress: a bar on a terminal, else a line every PROGRESS_INTERVAL seconds.\n"
	"The job (abilitysync.restore_jobs) records each page as it completes: after\n"
	"a crash, a kill or Ctrl-C, --resume goes on from there and writes nothing\n"
	"twice. Run `abilitysync migrate up` first on a database the original\n"
	"application made.\n";

struct restore_wait {
	bool done;
	enum restore_outcome outcome;
	json_t *summary;
	char why[700];
	struct restore *job;
	int signals;
};

static void on_restored(enum restore_outcome outcome, json_t *summary, const char *why, void *arg)
{
	struct restore_wait *w = arg;

	w->done = true;
	w->job = NULL;
	w->outcome = outcome;
	w->summary = json_incref(summary);
	snprintf(w->why, sizeof(w->why), "%s", why);
}

static void on_restore_signal(evutil_socket_t sig, short what, void *arg)
{
	struct restore_wait *w = arg;

	(void)what;
	if (++w->signals > 1 || !w->job) {
		log_warn("restore", "second signal: exiting now; --resume goes on after the last recorded page");
		exit(EXIT_FAIL);
	}
	log_info("restore", "%s: finishing the pages in flight, then stopping (again to exit at once)",
		 sig == SIGTERM ? "SIGTERM" : "SIGINT");
	restore_stop(w->job);
}

static bool status_is(const json_t *summary, const char *status)
{
	const char *s = json_string_value(json_object_get(summary, "status"));

	return s && strcmp(s, status) == 0;
}

static int cmd_restore(struct config *cfg, int argc, char **argv)
{
	struct job_env env;
	struct outbox_env oe;
	struct restore_opts o;
	struct restore_wait w;
	char host[256] = "";
	long unsettled = 0;
	int rc;

	if (!no_arguments("restore", argc, argv))
		return EXIT_USAGE;
	if (!service_flag_ok("restore", restore_service))
		return EXIT_USAGE;
	if (restore_resume && restore_dry) {
		fprintf(stderr, "abilitysync restore: --resume and --dry-run do not go together\n");
		return EXIT_USAGE;
	}
	if ((rc = job_env_open(cfg, "restore", &env)) != EXIT_OK)
		return rc;
	memset(&w, 0, sizeof(w));
	options_restore(cfg, "abilitysync restore", &o);
	gethostname(host, sizeof(host) - 1);
	o.service = restore_service;
	o.resume = restore_resume;
	o.dry_run = restore_dry;
	o.host = host;
	o.progress_bar = isatty(STDERR_FILENO) && !restore_json && cfg->log_format == 0;
	if (!outbox_env_open(cfg, &env, "abilitysync restore", &oe)) {
		job_env_close(&env);
		return EXIT_FAIL;
	}
	job_env_signals(&env, on_restore_signal, &w);
	w.job = restore_start(env.base, env.vdb, oe.ob, oe.store, &o, NULL, on_restored, &w);
	while (!w.done)
		event_base_loop(env.base, EVLOOP_ONCE);
	if (w.outcome == RESTORE_DONE && !restore_dry && status_is(w.summary, "done")) {
		/*
		 * This process finished the job (one that shared it and ends first leaves
		 * this to the last). Rows another push held (a process killed half way
		 * leaves leases) are pushed once free, and rows in doubt (a call of a push
		 * that ended unrecorded may still land) once their window is out: done
		 * means done.
		 */
		char blob[ABILITY_TEXT_MAX * 2 + 16];
		struct outbox_opts oo;
		int64_t began;

		options_outbox(cfg, &oo);
		if (restore_service)
			vdb_blob_name(restore_service, strlen(restore_service), blob, sizeof(blob));
		began = clock_mono_ms();
		drain_outbox(&env, &oe, restore_service ? blob : NULL, began,
			     began + (cfg->sync_lease + 10) * 1000 + oo.quarantine_ms, true);
		/* rows failed before the wait are the summary's `failed` */
		unsettled = count_unsettled(&env, &oe, restore_service ? blob : NULL, began, false);
		json_object_set_new(w.summary, "unsettled", json_integer(unsettled));
		if (unsettled < 0)
			log_warn("restore", "could not count the changes still pending: Postgres did not answer");
		else if (unsettled > 0)
			log_warn("restore", "%ld change(s)%s still pending, or failed while waiting for them, after the "
				 "restore (GET /v1/sync/status lists them; a running service's outbox worker pushes pending ones)",
				 unsettled, restore_service ? " of the service" : "");
	}
	outbox_env_close(&env, &oe);
	if (w.outcome == RESTORE_REFUSED) {
		log_error("restore", "%s", w.why);
		rc = EXIT_FAIL;
	} else {
		if (restore_json)
			print_json(w.summary);
		else if (json_is_true(json_object_get(w.summary, "dry_run")))
			printf("dry run: %lld abilities would be restored\n",
			       (long long)json_integer_value(json_object_get(w.summary, "total")));
		else
			printf("job %lld %s: %lld of %lld restored, %lld failed, in %.1f s (%.0f vectors/s)\n",
			       (long long)json_integer_value(json_object_get(w.summary, "job_id")),
			       json_string_value(json_object_get(w.summary, "status")),
			       (long long)json_integer_value(json_object_get(w.summary, "done")),
			       (long long)json_integer_value(json_object_get(w.summary, "total")),
			       (long long)json_integer_value(json_object_get(w.summary, "failed")),
			       json_number_value(json_object_get(w.summary, "seconds")),
			       json_number_value(json_object_get(w.summary, "vectors_per_second")));
		if (!restore_json && json_is_true(json_object_get(w.summary, "dry_run"))) {
			const char *blob;
			json_t *n;

			json_object_foreach(json_object_get(w.summary, "blobs"), blob, n)
				printf("  %-40s %lld\n", blob, (long long)json_integer_value(n));
		}
		if (w.outcome == RESTORE_FAILED)
			log_error("restore", "%s", w.why);
		rc = w.outcome == RESTORE_FAILED ? EXIT_FAIL
		     : json_integer_value(json_object_get(w.summary, "failed")) > 0 || unsettled != 0 ? EXIT_PENDING
												: EXIT_OK;
	}
	json_decref(w.summary);
	job_env_close(&env);
	return rc;
}

/* ---- config, version, help ------------------------------------------- */

static bool config_markdown;

static const struct flag config_flags[] = {
	{"markdown", NULL, NULL, &config_markdown, NULL, "print the README's configuration table"},
	{NULL, NULL, NULL, NULL, NULL, NULL},
};

static bool codes_markdown, codes_drift;

static const struct flag codes_flags[] = {
	{"markdown", NULL, NULL, &codes_markdown, NULL, "print the README's tables"},
	{"drift", NULL, NULL, &codes_drift, NULL, "reconcile's drift categories instead"},
	{NULL, NULL, NULL, NULL, NULL, NULL},
};

static int cmd_config(struct config *cfg, int argc, char **argv)
{
	char *line, *p, *tok;

	if (!no_arguments("config", argc, argv))
		return EXIT_USAGE;
	if (config_markdown) {
		config_print_markdown(stdout);
		return EXIT_OK;
	}
	/* The effective configuration, one NAME=value per line, secrets redacted. */
	line = config_describe(cfg);
	for (p = line; (tok = strsep(&p, " ")) != NULL;)
		puts(tok);
	free(line);
	return EXIT_OK;
}

static int cmd_version(struct config *cfg, int argc, char **argv)
{
	(void)cfg;
	if (!no_arguments("version", argc, argv))
		return EXIT_USAGE;
	printf("abilitysync %s\n", ABILITYSYNC_VERSION);
	return EXIT_OK;
}


static const struct exit_doc serve_exits[] = {
	{EXIT_OK, "stopped by SIGTERM or SIGINT: every request answered; pushes still on the wire at SHUTDOWN_TIMEOUT "
		  "are left to the outbox"},
	{EXIT_FAIL, "could not start (the port is in use, no event loop) or failed while running"},
	EXIT_DOC_USAGE,
	{-1, NULL},
};
static const struct exit_doc migrate_exits[] = {
	{EXIT_OK, "done, or nothing to do"},
	{EXIT_FAIL, "failed: Postgres unreachable or its database not UTF8, a statement failed (all rolled back), a bad "
		   "migration file"},
	EXIT_DOC_USAGE,
	{EXIT_PENDING, "status, plan: something is pending"},
	{EXIT_REFUSED, "refused: the ledger and the folder disagree (out of order, changed after apply)"},
	{-1, NULL},
};
static const struct exit_doc probe_exits[] = {
	{EXIT_OK, "the server was studied and left clean"},
	{EXIT_FAIL, "the server could not be reached or studied"},
	EXIT_DOC_USAGE,
	{-1, NULL},
};
static const struct exit_doc reconcile_exits[] = {
	{EXIT_OK, "no drift (dry run), or everything repaired"},
	{EXIT_FAIL, "failed: Postgres or the vector DB (named) went away, or the run was stopped"},
	EXIT_DOC_USAGE,
	{EXIT_PENDING, "drift left: found by a dry run, deferred, unrepairable (collisions, invalid rows, stale content), "
		       "or still pending"},
	{-1, NULL},
};
static const struct exit_doc restore_exits[] = {
	{EXIT_OK, "restored"},
	{EXIT_FAIL, "failed or refused (another restore runs, nothing to resume, not migrated); resumable"},
	EXIT_DOC_USAGE,
	{EXIT_PENDING, "restored, but some rows could not be (`failed` in the sync status), or are still pending once "
		       "their leases and doubt windows are out (or could not be counted)"},
	{-1, NULL},
};
static const struct exit_doc sync_exits[] = {
	{EXIT_OK, "the failed rows are pending again (the count is printed)"},
	{EXIT_FAIL, "Postgres could not be reached"},
	EXIT_DOC_USAGE,
	{-1, NULL},
};
static const struct exit_doc healthcheck_exits[] = {
	{EXIT_OK, "the local service answered /healthz with 200"},
	{EXIT_FAIL, "it did not (one line on stderr says what happened)"},
	EXIT_DOC_USAGE,
	{-1, NULL},
};
static const struct exit_doc plain_exits[] = {
	{EXIT_OK, "printed"},
	EXIT_DOC_USAGE,
	{-1, NULL},
};

static int cmd_codes(struct config *cfg, int argc, char **argv);

static const struct command commands[] = {
	{"serve", "[--listen HOST:PORT]", "Run the HTTP service.", SCOPE_SERVE, serve_flags, serve_details, cmd_serve,
	 serve_exits},
	{"migrate", "[up|status|plan] [options]", "Apply the drizzle-kit migrations, drizzle-compatibly.",
	 SCOPE_MIGRATE, migrate_flags, migrate_details, cmd_migrate, migrate_exits},
	{"probe", "[--url URL] [--max-batch N] [--json]", "Find out how a vector DB server behaves.", SCOPE_PROBE,
	 probe_flags, probe_details, cmd_probe, probe_exits},
	{"reconcile", "[--dry-run] [--json] [--service NAME] [--deep] [--embedding-model MODEL]",
	 "Find drift between Postgres and the vector DB, and repair it.", SCOPE_RECONCILE, reconcile_flags,
	 reconcile_details, cmd_reconcile, reconcile_exits},
	{"restore", "[--service NAME] [--resume] [--dry-run] [--json]",
	 "Rebuild the vector DB from Postgres, resumably.", SCOPE_RESTORE, restore_flags, restore_details,
	 cmd_restore, restore_exits},
	{"sync", "retry-failed", "Requeue the outbox rows that failed.", SCOPE_SERVE, no_flags, sync_details,
	 cmd_sync, sync_exits},
	{"healthcheck", "", "Exit 0 when the local service answers /healthz (for HEALTHCHECK).", SCOPE_SERVE,
	 no_flags, NULL, cmd_healthcheck, healthcheck_exits},
	{"config", "[--markdown]", "Print the effective configuration (secrets redacted).", 0, config_flags,
	 NULL, cmd_config, plain_exits},
	{"codes", "[--markdown] [--drift]",
	 "Print every command's exit statuses and the HTTP API's error codes (or reconcile's drift categories).", 0,
	 codes_flags, NULL, cmd_codes, plain_exits},
	{"version", "", "Print the version.", 0, no_flags, NULL, cmd_version, plain_exits},
};

static void print_drift_categories(bool markdown)
{
	const struct drift_category *d;
	size_t i;

	if (markdown)
		printf("| category | what | repaired by |\n|---|---|---|\n");
	for (i = 0; i < RECONCILE_CATEGORIES; i++) {
		d = &reconcile_categories[i];
		if (markdown)
			printf("| `%s` | %s | %s |\n", d->name, d->what, d->repair ? d->repair : "nothing: a person decides");
		else
			printf("%-15s %s. Repaired by: %s.\n", d->name, d->what,
			       d->repair ? d->repair : "nothing, a person decides");
	}
}

/* The README's tables of exit statuses and error codes (abilitysync codes --markdown), or of drift. */
static int cmd_codes(struct config *cfg, int argc, char **argv)
{
	size_t i;
	const struct exit_doc *x;

	(void)cfg;
	if (!no_arguments("codes", argc, argv))
		return EXIT_USAGE;
	if (codes_drift) {
		print_drift_categories(codes_markdown);
		return EXIT_OK;
	}
	if (!codes_markdown) {
		for (i = 0; i < ARRAY_LEN(commands); i++)
			for (x = commands[i].exits; x && x->meaning; x++)
				printf("%-12s %d  %s\n", commands[i].name, x->status, x->meaning);
		return EXIT_OK;
	}
	printf("| command | exit status | meaning |\n|---|---|---|\n");
	for (i = 0; i < ARRAY_LEN(commands); i++)
		for (x = commands[i].exits; x && x->meaning; x++)
			printf("| `%s` | %d | %s |\n", commands[i].name, x->status, x->meaning);
	printf("\n");
	errcode_print_markdown(stdout);
	return EXIT_OK;
}

static const struct command *find_command(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(commands); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void usage(FILE *f)
{
	size_t i;

	fputs("usage: abilitysync <command> [options]\n\n"
	      "Keeps the abilities of a Postgres mirror and a vector DB in step.\n\ncommands:\n", f);
	for (i = 0; i < ARRAY_LEN(commands); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fputs("\n`abilitysync <command> --help` describes a command and its options.\n\n"
	      "environment (every command reads the same variables):\n", f);
	config_print_help(f, SCOPE_ALL);
}

int main(int argc, char **argv)
{
	const struct command *c;
	struct config cfg;
	struct errbuf err;
	char **args = argv + 1; /* the command's own argv: args[0] is its name */
	int npos, rc;

	if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0)
		return cmd_version(NULL, 0, NULL);
	c = find_command(argv[1]);
	if (!c) {
		fprintf(stderr, "abilitysync: unknown command %s (see abilitysync --help)\n", argv[1]);
		return EXIT_USAGE;
	}
	if (!config_load(&cfg, lookup_env, NULL, &err)) {
		log_setup((enum log_format)cfg.log_format, LL_INFO);
		log_error("config", "%s", err.msg);
		config_free(&cfg);
		return EXIT_USAGE;
	}
	npos = parse_flags(c, &cfg, argc - 1, args); /* leaves the positional arguments in args[0..npos) */
	if (npos < 0) {
		config_free(&cfg);
		return npos == -2 ? EXIT_OK : EXIT_USAGE;
	}
	log_setup((enum log_format)cfg.log_format, (enum log_level)cfg.log_level);
	if (c->scope && c->run != cmd_healthcheck) {
		/*
		 * Once, short: what differs from the defaults (secrets redacted); every
		 * value at debug level. Read-only looks (migrate status/plan) keep their
		 * stderr quiet.
		 */
		bool looking = c->run == cmd_migrate && npos > 0 && strcmp(args[0], "up") != 0;
		size_t elided;
		char *line = config_describe_changes(&cfg, &elided), *all = config_describe(&cfg);

		log_msg(looking ? LL_DEBUG : LL_INFO, "config", "abilitysync %s %s: %s%s(%zu more at their defaults: "
			"`abilitysync config` lists every value)", ABILITYSYNC_VERSION, c->name, line, *line ? " " : "",
			elided);
		log_debug("config", "every value: %s", all);
		free(line);
		free(all);
	}
	rc = c->run(&cfg, npos, args);
	config_free(&cfg);
	return rc;
}
