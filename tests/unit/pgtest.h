/*
 * pgtest.h - unit tests against the real Postgres the test runner starts
 * (TEST_PG_URL): a fresh database per test, migrated with the project's own
 * migrations, and a libevent loop to run the store's statements on.
 */
#ifndef ABILITYSYNC_PGTEST_H
#define ABILITYSYNC_PGTEST_H

#include "ability.h"
#include "log.h"
#include "migrate.h"
#include "pgpool.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pgtest {
	char dbname[64];
	char url[512];
	struct event_base *base;
	struct pgpool *pool;
};

/* TEST_PG_URL with its database replaced by `db`. */
static inline void pgtest_url(const char *db, char *out, size_t len)
{
	const char *base = getenv("TEST_PG_URL");
	const char *slash;

	cr_assert(base != NULL, "TEST_PG_URL is not set: run the unit tests through tests/run.sh, which starts Postgres");
	slash = strrchr(base, '/');
	cr_assert(slash && slash > base + 12, "TEST_PG_URL has no database: %s", base);
	snprintf(out, len, "%.*s/%s", (int)(slash - base), base, db);
}

static inline void pgtest_quiet(void *arg, const char *message)
{
	(void)arg, (void)message; /* NOTICEs ("does not exist, skipping") are not the test's */
}

static inline void pgtest_exec(const char *url, const char *sql)
{
	PGconn *c = PQconnectdb(url);
	PGresult *r;

	cr_assert(PQstatus(c) == CONNECTION_OK, "connecting to %s: %s", url, PQerrorMessage(c));
	PQsetNoticeProcessor(c, pgtest_quiet, NULL);
	r = PQexec(c, sql);
	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
		  PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

/* One value of a query, as text (the caller frees). */
static inline char *pgtest_value(const struct pgtest *t, const char *sql)
{
	PGconn *c = PQconnectdb(t->url);
	PGresult *r;
	char *v;

	cr_assert(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
	r = PQexec(c, sql);
	cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", sql, PQerrorMessage(c));
	v = strdup(PQgetisnull(r, 0, 0) ? "(null)" : PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
	return v;
}

/* Polls `sql` until its one value is `want` (at most 10 s). */
static inline void pgtest_wait_value(const struct pgtest *t, const char *sql, const char *want)
{
	char *v = NULL;
	int i;

	for (i = 0; i < 200; i++) {
		free(v);
		v = pgtest_value(t, sql);
		if (strcmp(v, want) == 0)
			break;
		usleep(50000);
	}
	cr_assert(strcmp(v, want) == 0, "%s: %s, not %s", sql, v, want);
	free(v);
}

/* Runs the loop until *flag (at most 20 s: a hang fails the test rather than the run). */
static inline void pgtest_wait(struct pgtest *t, const bool *flag)
{
	struct timeval slice = {0, 20000};
	int i;

	for (i = 0; i < 1000 && !*flag; i++) {
		event_base_loopexit(t->base, &slice);
		event_base_dispatch(t->base);
	}
	cr_assert(flag[0], "no answer within 20 s");
}

static inline void pgtest_on_ready(bool ready, const char *why, void *arg)
{
	cr_assert(ready, "the pool did not connect: %s", why);
	*(bool *)arg = true;
}

/* The test's pool replaced by one with these options (on its database), connected. */
static inline void pgtest_repool(struct pgtest *t, const struct pgpool_opts *opts)
{
	struct pgpool_opts po = *opts;
	struct errbuf err;
	bool ready = false;

	pgpool_free(t->pool);
	po.conninfo = t->url;
	po.application_name = "unit";
	t->pool = pgpool_new(t->base, &po, &err);
	cr_assert(t->pool != NULL, "%s", err.msg);
	pgpool_wait_ready(t->pool, 10000, pgtest_on_ready, &ready);
	pgtest_wait(t, &ready);
}

/* A fresh database, migrated (migrate: false leaves it empty), and a pool of `size` on a new loop. */
static inline void pgtest_open(struct pgtest *t, const char *name, bool migrate, int size)
{
	char admin[512], sql[128];
	struct pgpool_opts po = {0};
	struct migrate_opts mo = {0};

	memset(t, 0, sizeof(*t));
	log_setup(LOG_TEXT, LL_WARN); /* the migrator's lines are not the test's */
	snprintf(t->dbname, sizeof(t->dbname), "u_%s_%d", name, (int)getpid());
	pgtest_url("postgres", admin, sizeof(admin));
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", t->dbname);
	pgtest_exec(admin, sql);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", t->dbname);
	pgtest_exec(admin, sql);
	pgtest_url(t->dbname, t->url, sizeof(t->url));
	if (migrate) {
		mo.conninfo = t->url;
		mo.dir = "drizzle-compat/drizzle";
		mo.schema = "drizzle";
		mo.table = "__drizzle_migrations";
		mo.wait_s = 5;
		mo.lock_timeout_s = 10;
		cr_assert(eq(int, migrate_up(&mo), EXIT_OK), "migrating %s", t->dbname);
	}
	t->base = event_base_new();
	po.size = size;
	po.queue_max = 64;
	po.statement_timeout_ms = 10000;
	pgtest_repool(t, &po);
}

static inline void pgtest_close(struct pgtest *t)
{
	char admin[512], sql[128];

	pgpool_free(t->pool);
	event_base_free(t->base);
	pgtest_url("postgres", admin, sizeof(admin));
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", t->dbname);
	pgtest_exec(admin, sql);
}

/* One ability of dimension 4 from its fields (the embedding's first number varies it). */
static inline void pgtest_ability(struct ability *a, const char *id, const char *service, double x)
{
	char body[512];
	struct ability *out = NULL;
	size_t n = 0;
	bool batch;
	struct ability_error err;

	snprintf(body, sizeof(body),
		 "{\"ability_id\":\"%s\",\"ability_name\":\"n\",\"service_name\":\"%s\",\"description\":\"d\","
		 "\"embedding\":[%g,0.5,0.25,0.125]}",
		 id, service, x);
	cr_assert(ability_parse_body(body, strlen(body), 4, 1, &out, &n, &batch, &err), "%s", err.message);
	*a = out[0];
	free(out);
}

#endif
