/*
 * job.c - the long jobs' skeleton (job.h).
 */
#include "job.h"

#include "clock.h"
#include "log.h"
#include "store_job.h"

#include <stdarg.h>
#include <stdio.h>

static void job_destroy(struct job *j)
{
	if (j->later) {
		event_free(j->later);
		j->later = NULL;
	}
	pgpool_free(j->pool);
	j->pool = NULL;
	j->ops->release(j);
}

void job_fail(struct job *j, const char *fmt, ...)
{
	va_list ap;

	if (j->error[0])
		return;
	va_start(ap, fmt);
	vsnprintf(j->error, sizeof(j->error), fmt, ap);
	va_end(ap);
}

/* ---- the end ------------------------------------------------------------------------ */

/*
 * On a loop turn of its own: the pool may not be freed inside its own
 * callback. A session dropped at its deadline left its backend behind, with
 * the job's locks: the pool ends it through a new connection, waited for a
 * while, so that the locks are free when the job reports.
 */
static void on_later(evutil_socket_t fd, short what, void *arg)
{
	struct job *j = arg;
	struct timeval again = {0, 100000};

	(void)fd, (void)what;
	if (pgpool_ending_backends(j->pool) && clock_mono_ms() < j->ending_by_ms) {
		evtimer_add(j->later, &again);
		return;
	}
	if (pgpool_ending_backends(j->pool))
		log_warn("job", "the backend of the job's lost session could not be ended in %d s: its locks stay until "
			 "the server notices the connection is gone", JOB_END_WAIT_MS / 1000);
	pgpool_free(j->pool); /* closes the session: a lock goes with it */
	j->pool = NULL;
	j->ops->report(j);
	job_destroy(j);
}

void job_end(struct job *j)
{
	struct timeval now = {0, 0};

	if (j->over)
		return;
	j->over = true;
	j->ending_by_ms = clock_mono_ms() + JOB_END_WAIT_MS;
	j->later = evtimer_new(j->base, on_later, j);
	evtimer_add(j->later, &now);
}

void job_stop(struct job *j)
{
	j->stopping = true;
}

void job_abort(struct job *j)
{
	j->aborted = true;
	pgpool_free(j->pool); /* its callbacks see `aborted` and do nothing */
	j->pool = NULL;
	if (j->later)
		evtimer_del(j->later);
	/* Requests out come back (at the latest cancelled when their client is freed); the last frees us. */
	if (j->out == 0)
		job_destroy(j);
}

void job_send(struct job *j)
{
	j->out++;
}

bool job_back(struct job *j)
{
	j->out--;
	if (!j->aborted)
		return true;
	if (j->out == 0)
		job_destroy(j);
	return false;
}

double job_seconds(const struct job *j)
{
	return (double)(clock_mono_ms() - j->started_ms) / 1000.0;
}

/* ---- the start ---------------------------------------------------------------------- */

static void on_schema(bool there, const char *pg_now, const struct pg_outcome *o, void *arg)
{
	struct job *j = arg;
	char why[600];

	if (job_gone(j))
		return;
	if (!o->res) {
		snprintf(why, sizeof(why), "reading the sync schema: %s", o->error);
		j->ops->refused(j, "postgres_error", why);
		return;
	}
	if (!there) {
		j->ops->refused(j, "not_migrated",
				"the sync schema (abilitysync.*) is missing: run `abilitysync migrate up` first");
		return;
	}
	j->ops->started(j, pg_now);
}

static void on_ready(bool ready, const char *why, void *arg)
{
	struct job *j = arg;
	char text[600];

	if (job_gone(j))
		return;
	if (!ready) {
		snprintf(text, sizeof(text), "Postgres is unavailable: %s", why);
		j->ops->refused(j, "postgres_unavailable", text);
		return;
	}
	store_job_schema(j->pool, on_schema, j);
}

/* pgpool_new failed inside job_start: refused on a loop turn of its own, as promised. */
static void on_no_pool(evutil_socket_t fd, short what, void *arg)
{
	struct job *j = arg;

	(void)fd, (void)what;
	event_free(j->later);
	j->later = NULL;
	j->ops->refused(j, "postgres_unavailable", j->error);
}

void job_start(struct job *j, const struct job_ops *ops, struct event_base *base, const struct pgpool_opts *po,
	       int queue_max, bool locks)
{
	struct pgpool_opts o = *po;
	struct errbuf err;
	struct timeval now = {0, 0};

	j->ops = ops;
	j->base = base;
	j->started_ms = clock_mono_ms();
	o.size = 1;
	o.queue_max = queue_max;
	o.one_session = locks; /* the job's locks are its session's: a new session would not hold them */
	if (!(j->pool = pgpool_new(base, &o, &err))) {
		snprintf(j->error, sizeof(j->error), "%.590s", err.msg);
		j->later = evtimer_new(base, on_no_pool, j);
		evtimer_add(j->later, &now);
		return;
	}
	pgpool_wait_ready(j->pool, JOB_READY_TIMEOUT_MS, on_ready, j);
}
