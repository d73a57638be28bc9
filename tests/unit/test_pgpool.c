/*
 * pgpool against a real Postgres: a full queue and a server nobody answers
 * fail at once (never a hang), a statement past its deadline fails as
 * transient, a killed connection comes back by itself, and a generic plan
 * does not outlive its table's growth.
 */
#include "mem.h"
#include "pgtest.h"

struct outcome {
	bool done;
	bool ok, unavailable;
	char sqlstate[6];
	char error[512];
	long ms;
};

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long started;

static void on_done(const struct pg_outcome *o, void *arg)
{
	struct outcome *x = arg;

	x->done = true;
	x->ok = o->res != NULL;
	x->unavailable = o->unavailable;
	memcpy(x->sqlstate, o->sqlstate, sizeof(x->sqlstate));
	snprintf(x->error, sizeof(x->error), "%s", o->error);
	x->ms = now_ms() - started;
}

Test(pgpool, a_full_queue_fails_at_once_and_the_rest_go_through)
{
	struct pgtest t;
	struct outcome x[4];
	int i;

	memset(x, 0, sizeof(x));
	pgtest_open(&t, "pool_queue", false, 1);
	pgtest_repool(&t, &(struct pgpool_opts){.size = 1, .queue_max = 2, .statement_timeout_ms = 10000});
	started = now_ms();
	pgpool_query(t.pool, "SELECT pg_sleep(0.3)", 0, NULL, on_done, &x[0]); /* on the connection */
	pgpool_query(t.pool, "SELECT 1", 0, NULL, on_done, &x[1]);            /* queued */
	pgpool_query(t.pool, "SELECT 2", 0, NULL, on_done, &x[2]);            /* queued */
	pgpool_query(t.pool, "SELECT 3", 0, NULL, on_done, &x[3]);            /* no room */
	pgtest_wait(&t, &x[3].done);
	cr_assert(x[3].unavailable, "a full queue says unavailable: %s", x[3].error);
	cr_assert(lt(long, x[3].ms, 200), "at once, not after the sleep (%ld ms)", x[3].ms);
	for (i = 0; i < 3; i++) {
		pgtest_wait(&t, &x[i].done);
		cr_assert(x[i].ok, "statement %d: %s", i, x[i].error);
	}
	pgtest_close(&t);
}

Test(pgpool, a_statement_past_its_deadline_fails_as_transient)
{
	struct pgtest t;
	struct outcome x = {0};

	pgtest_open(&t, "pool_deadline", false, 1);
	pgtest_repool(&t, &(struct pgpool_opts){.size = 1, .queue_max = 4, .statement_timeout_ms = 300});
	started = now_ms();
	pgpool_query(t.pool, "SELECT pg_sleep(5)", 0, NULL, on_done, &x);
	pgtest_wait(&t, &x.done);
	cr_assert(not(x.ok));
	cr_assert(eq(str, x.sqlstate, "57014"), "the server's statement_timeout: %s (%s)", x.sqlstate, x.error);
	cr_assert(pg_state_is_transient(x.sqlstate), "a time-out is 'not now', not 'not this'");
	cr_assert(lt(long, x.ms, 3000), "%ld ms", x.ms);
	pgtest_close(&t);
}

Test(pgpool, nobody_answering_fails_statements_at_once)
{
	struct event_base *base = event_base_new();
	struct pgpool_opts po = {.conninfo = "postgres://postgres@127.0.0.1:1/x", .size = 1, .queue_max = 4,
				 .statement_timeout_ms = 10000};
	struct errbuf err;
	struct pgpool *p = pgpool_new(base, &po, &err);
	struct outcome x = {0};
	struct pgtest t = {.base = base};

	cr_assert(p != NULL, "%s", err.msg);
	started = now_ms();
	pgpool_query(p, "SELECT 1", 0, NULL, on_done, &x);
	pgtest_wait(&t, &x.done);
	cr_assert(x.unavailable, "%s", x.error);
	cr_assert(lt(long, x.ms, 500), "no connection up: fail now, do not queue into a void (%ld ms)", x.ms);
	pgpool_free(p);
	event_base_free(base);
}

Test(pgpool, a_killed_connection_comes_back_by_itself)
{
	struct pgtest t;
	struct outcome x;
	char sql[256];
	int i;
	bool back = false;

	pgtest_open(&t, "pool_reconnect", false, 1);
	snprintf(sql, sizeof(sql),
		 "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '%s'"
		 " AND application_name = 'unit'",
		 t.dbname);
	free(pgtest_value(&t, sql));
	for (i = 0; i < 100 && !back; i++) { /* at most 10 s */
		memset(&x, 0, sizeof(x));
		pgpool_query(t.pool, "SELECT 1", 0, NULL, on_done, &x);
		pgtest_wait(&t, &x.done);
		back = x.ok;
		if (!back) {
			cr_assert(x.unavailable, "a broken connection says unavailable: %s", x.error);
			usleep(100 * 1000);
			{
				struct timeval slice = {0, 1000};

				event_base_loopexit(t.base, &slice);
				event_base_dispatch(t.base);
			}
		}
	}
	cr_assert(back, "the pool reconnected");
	pgtest_close(&t);
}

/*
 * A job's pool (one session): the session's locks go with it, so a new
 * session must not take its place: once it is lost, every statement fails,
 * saying so, and no connection comes back.
 */
Test(pgpool, a_lost_one_session_pool_never_reconnects)
{
	struct pgtest t;
	struct pgpool_opts po = {.size = 1, .queue_max = 8, .statement_timeout_ms = 10000, .one_session = true};
	struct outcome x;
	char sql[256], *held;
	int i;

	pgtest_open(&t, "pool_one_session", false, 1);
	pgtest_repool(&t, &po);
	memset(&x, 0, sizeof(x));
	pgpool_query(t.pool, "SELECT pg_advisory_lock(42)", 0, NULL, on_done, &x);
	pgtest_wait(&t, &x.done);
	cr_assert(x.ok, "%s", x.error);
	snprintf(sql, sizeof(sql),
		 "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '%s'"
		 " AND application_name = 'unit'",
		 t.dbname);
	free(pgtest_value(&t, sql));
	for (i = 0; i < 20; i++) { /* 2 s: the old pool was back within 0.2 */
		memset(&x, 0, sizeof(x));
		pgpool_query(t.pool, "SELECT 1", 0, NULL, on_done, &x);
		pgtest_wait(&t, &x.done);
		cr_assert(not(x.ok), "statement %d ran in a new session, which holds none of the old one's locks", i);
		cr_assert(strstr(x.error, "the Postgres session was lost") != NULL, "statement %d: %s", i, x.error);
		usleep(100 * 1000);
		{
			struct timeval slice = {0, 1000};

			event_base_loopexit(t.base, &slice);
			event_base_dispatch(t.base);
		}
	}
	cr_assert(not(pgpool_ready(t.pool)), "the pool says it is not ready");
	held = pgtest_value(&t, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 42");
	cr_assert(eq(str, held, "0"), "the lock went with the session");
	free(held);
	pgtest_close(&t);
}

static void on_settings(const struct pg_outcome *o, void *arg)
{
	char *out = arg;
	const char *v = o->res ? PQgetvalue(o->res, 0, 0) : o->error;

	snprintf(out, 128, "%.100s", v);
}

/*
 * The sessions' settings: no JIT (a restore page's statement spent 1.3-1.5 s
 * compiling once the tables grew), custom plans, the toast compression asked;
 * read committed, which the statements' rules are written for, even where the
 * database's default is serializable (40001s under load otherwise); UTF-8.
 */
Test(pgpool, sessions_run_read_committed_in_utf8_without_jit_with_custom_plans)
{
	struct pgtest t;
	char got[128] = "", sql[160];

	pgtest_open(&t, "pool_settings", false, 1);
	snprintf(sql, sizeof(sql), "ALTER DATABASE %s SET default_transaction_isolation = 'serializable'", t.dbname);
	pgtest_exec(t.url, sql);
	pgtest_repool(&t, &(struct pgpool_opts){.size = 1, .queue_max = 2, .statement_timeout_ms = 10000,
						 .toast_compression = "pglz"});
	pgpool_query(t.pool,
		     "SELECT current_setting('jit') || ' ' || current_setting('plan_cache_mode') || ' '"
		     " || current_setting('default_toast_compression') || ' ' || current_setting('transaction_isolation')"
		     " || ' ' || current_setting('client_encoding')",
		     0, NULL, on_settings, got);
	while (!got[0])
		event_base_loop(t.base, EVLOOP_ONCE);
	cr_assert(eq(str, got, "off force_custom_plan pglz read committed UTF8"));
	pgtest_close(&t);
}

struct rows {
	bool done;
	char text[1024]; /* the first column of every row, "; " between, or the error */
};

static void on_rows(const struct pg_outcome *o, void *arg)
{
	struct rows *r = arg;
	size_t len = 0;
	int i;

	r->text[0] = '\0';
	for (i = 0; o->res && i < PQntuples(o->res) && len < sizeof(r->text); i++)
		len += (size_t)snprintf(r->text + len, sizeof(r->text) - len, "%s%s", i ? "; " : "", PQgetvalue(o->res, i, 0));
	if (!o->res)
		snprintf(r->text, sizeof(r->text), "error: %s", o->error);
	r->done = true;
}

/* Runs one statement through the pool (prepared when stmt) and returns its rows' first column. */
static char *pool_rows(struct pgtest *t, const struct pg_stmt *stmt, const char *sql, const char *param,
		      struct rows *r)
{
	struct pg_param p = {.data = param, .len = param ? strlen(param) : 0};

	r->done = false;
	if (stmt)
		pgpool_execute(t->pool, stmt, 1, &p, on_rows, r);
	else
		pgpool_query_params(t->pool, sql, param ? 1 : 0, &p, on_rows, r);
	pgtest_wait(t, &r->done);
	return r->text;
}

/*
 * A generic statement keeps one plan, which is made again as the session's
 * runs of such statements double: a plan made while its table was empty (a
 * sequential scan) is not kept once the table has grown. Statements that do
 * not ask for a generic plan still get custom ones on the same session.
 */
Test(pgpool, a_generic_plan_is_made_again_as_the_session_runs_double)
{
	static const struct pg_stmt stmt = {
		"unit_generic",
		"SELECT count(*)::text || ' ' || current_setting('plan_cache_mode') FROM t JOIN unnest($1::int[]) AS u(k)"
		" USING (k)",
		true};
	struct pgtest t;
	struct rows r;
	const char *explain = "EXPLAIN (COSTS OFF) EXECUTE unit_generic('{1,2}')";
	int runs;

	pgtest_open(&t, "pool_generic", false, 1);
	pgtest_exec(t.url, "CREATE TABLE t (k int PRIMARY KEY, v text) WITH (autovacuum_enabled = false)");
	cr_assert(eq(str, pool_rows(&t, &stmt, NULL, "{1,2}", &r), "0 force_generic_plan"));
	cr_assert(eq(str, pool_rows(&t, NULL, "SELECT current_setting('plan_cache_mode') || $1", "", &r),
		     "force_custom_plan"),
		  "a statement with parameters that asks for nothing: custom");
	/* A statement without parameters leaves the session as it is: generic after the next run. */
	pool_rows(&t, &stmt, NULL, "{1,2}", &r);
	cr_assert(strstr(pool_rows(&t, NULL, explain, NULL, &r), "Seq Scan on t") != NULL, "planned for an empty table: %s",
		  r.text);

	pgtest_exec(t.url, "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100000) g");
	for (runs = 3; runs <= 15; runs++)
		cr_assert(eq(str, pool_rows(&t, &stmt, NULL, "{1,2}", &r), "2 force_generic_plan"));
	cr_assert(strstr(pool_rows(&t, NULL, explain, NULL, &r), "Seq Scan on t") != NULL,
		  "the plan is kept for 16 runs: %s", r.text);
	cr_assert(eq(str, pool_rows(&t, &stmt, NULL, "{1,2}", &r), "2 force_generic_plan")); /* the 16th */
	cr_assert(strstr(pool_rows(&t, NULL, explain, NULL, &r), "Index Only Scan using t_pkey") != NULL,
		  "planned again for 100,000 rows: %s", r.text);
	pgtest_close(&t);
}

/*
 * Statements go to an idle connection already in the plan mode they need:
 * writes and custom-plan queries (readiness probes, claims) that alternate on
 * an otherwise idle pool keep to their own sessions instead of switching one
 * session's mode back and forth.
 */
Test(pgpool, statements_go_where_their_plan_mode_is_already_set)
{
	static const struct pg_stmt generic = {
		"unit_generic_pid", "SELECT pg_backend_pid() || ' ' || current_setting('plan_cache_mode') || $1::text", true};
	struct pgtest t;
	struct rows r;
	char first[sizeof(r.text)], custom[sizeof(r.text)];
	int i;

	pgtest_open(&t, "pool_affinity", false, 2);
	snprintf(first, sizeof(first), "%s", pool_rows(&t, &generic, NULL, "", &r));
	cr_assert(strstr(first, " force_generic_plan") != NULL, "%s", first);
	for (i = 0; i < 3; i++) {
		snprintf(custom, sizeof(custom), "%s",
			 pool_rows(&t, NULL, "SELECT pg_backend_pid() || ' ' || current_setting('plan_cache_mode') || $1",
				   "", &r));
		cr_assert(strstr(custom, " force_custom_plan") != NULL, "%s", custom);
		cr_assert(eq(str, pool_rows(&t, &generic, NULL, "", &r), first),
			  "the generic statement stays on its session (after a custom query on %s)", custom);
	}
	cr_assert(atol(custom) != atol(first), "the custom queries ran on another session: %s, %s", custom, first);
	pgtest_close(&t);
}

/*
 * A statement's plan mode and its preparation go ahead of it in one round
 * trip, and the mode holds even when the statement then fails (its
 * transaction rolled back would otherwise take the SET with it, and the pool
 * would believe the session in a mode it is not in).
 */
Test(pgpool, the_plan_mode_holds_when_the_statement_after_it_fails)
{
	static const struct pg_stmt divide = {"unit_divide", "SELECT (1 / $1::int)::text", true};
	static const struct pg_stmt mode = {"unit_mode", "SELECT current_setting('plan_cache_mode') || $1::text", true};
	struct pgtest t;
	struct rows r;

	pgtest_open(&t, "pool_mode_holds", false, 1);
	cr_assert(eq(str, pool_rows(&t, NULL, "SELECT current_setting('plan_cache_mode') || $1", "", &r),
		     "force_custom_plan"));
	cr_assert(strstr(pool_rows(&t, &divide, NULL, "0", &r), "division by zero") != NULL, "%s", r.text);
	cr_assert(eq(str, pool_rows(&t, &mode, NULL, "", &r), "force_generic_plan"));
	cr_assert(eq(str, pool_rows(&t, &divide, NULL, "1", &r), "1"), "prepared despite the failure before");
	pgtest_close(&t);
}

/* A parameter handed over is the pool's: it reaches the server as it was, not copied (LSan: and freed). */
Test(pgpool, a_handed_parameter_reaches_the_server)
{
	struct pgtest t;
	struct rows r;
	struct pg_param p[2] = {{.len = 5, .handed = xstrdup("hello")}, {.data = "world", .len = 5}};

	pgtest_open(&t, "pool_handed", false, 1);
	r.done = false;
	pgpool_query_params(t.pool, "SELECT $1::text || ' ' || $2::text", 2, p, on_rows, &r);
	pgtest_wait(&t, &r.done);
	cr_assert(eq(str, r.text, "hello world"));
	pgtest_close(&t);
}
