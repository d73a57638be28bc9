/*
 * The long jobs' skeleton: it refuses a database without the sync schema,
 * starts on one with it, ends with the session closed before the report and
 * the job freed after it, and an aborted job lives until its last request out
 * comes back.
 */
#include "job.h"
#include "pgtest.h"

struct tjob {
	struct job job; /* first */
	char events[256];
	char code[32];
	bool pool_open_at_report;
	bool *released;
};

static void note(struct tjob *t, const char *what)
{
	size_t len = strlen(t->events);

	snprintf(t->events + len, sizeof(t->events) - len, "%s%s", len ? " " : "", what);
}

static void t_started(struct job *j, const char *pg_now)
{
	struct tjob *t = (struct tjob *)j;

	cr_assert(pg_now && strlen(pg_now) > 10, "Postgres' clock at the start");
	note(t, "started");
}

static void t_refused(struct job *j, const char *code, const char *why)
{
	struct tjob *t = (struct tjob *)j;

	cr_assert(why && *why, "a refusal says why");
	snprintf(t->code, sizeof(t->code), "%s", code);
	note(t, "refused");
	job_end(j);
}

static void t_report(struct job *j)
{
	struct tjob *t = (struct tjob *)j;

	t->pool_open_at_report = j->pool != NULL;
	note(t, "report");
}

/* The test keeps the struct (to read it afterwards); release says it was called. */
static void t_release(struct job *j)
{
	struct tjob *t = (struct tjob *)j;

	note(t, "release");
	*t->released = true;
}

static const struct job_ops ops = {"test", t_started, t_refused, t_report, t_release};

static void start(struct pgtest *pt, struct tjob *t, bool *released)
{
	struct pgpool_opts po = {.conninfo = pt->url, .statement_timeout_ms = 10000};

	memset(t, 0, sizeof(*t));
	t->released = released;
	job_start(&t->job, &ops, pt->base, &po, 4, true);
}

Test(job, a_database_without_the_sync_schema_is_refused)
{
	struct pgtest pt;
	struct tjob t;
	bool released = false;

	pgtest_open(&pt, "job_empty", false, 1);
	start(&pt, &t, &released);
	pgtest_wait(&pt, &released);
	cr_assert(eq(str, t.code, "not_migrated"));
	cr_assert(eq(str, t.events, "refused report release"));
	cr_assert(not(t.pool_open_at_report), "the session (and any lock) is gone before the report");
	pgtest_close(&pt);
}

/* Runs the loop until the job has started (at most 20 s). */
static void wait_started(struct pgtest *pt, struct tjob *t)
{
	int i;

	for (i = 0; i < 1000 && !strstr(t->events, "started"); i++) {
		struct timeval slice = {0, 20000};

		event_base_loopexit(pt->base, &slice);
		event_base_dispatch(pt->base);
	}
	cr_assert(strstr(t->events, "started") != NULL, "the job did not start: %s", t->events);
}

static void end_later(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	job_end(arg);
}

Test(job, a_migrated_database_starts_it_and_the_end_comes_on_its_own_turn)
{
	struct pgtest pt;
	struct tjob t;
	bool released = false;
	struct timeval now = {0, 0};

	pgtest_open(&pt, "job_ok", true, 1);
	start(&pt, &t, &released);
	wait_started(&pt, &t);
	cr_assert(t.job.pool != NULL, "the job's own session is open while it runs");
	cr_assert(eq(str, t.code, ""));
	event_base_once(pt.base, -1, EV_TIMEOUT, end_later, &t.job, &now);
	pgtest_wait(&pt, &released);
	cr_assert(eq(str, t.events, "started report release"));
	pgtest_close(&pt);
}

Test(job, an_aborted_job_lives_until_its_last_request_comes_back)
{
	struct pgtest pt;
	struct tjob t;
	bool released = false;

	pgtest_open(&pt, "job_abort", true, 1);
	start(&pt, &t, &released);
	wait_started(&pt, &t);
	job_send(&t.job); /* two requests out (vector DB calls, say) */
	job_send(&t.job);
	job_abort(&t.job);
	cr_assert(t.job.pool == NULL, "the session closes at once");
	cr_assert(not(released), "requests are still out: their callbacks will touch the job");
	cr_assert(not(job_back(&t.job)), "a callback after an abort returns at once");
	cr_assert(not(released));
	cr_assert(not(job_back(&t.job)));
	cr_assert(released, "the last one back frees it");
	cr_assert(eq(str, t.events, "started release"), "no report after an abort");
	pgtest_close(&pt);
}
