/*
 * job.h - the skeleton every long job (a reconcile run, a restore job) is
 * built on, so that each job holds only its own steps.
 *
 * The skeleton owns: the job's own Postgres session (a lock the job takes is
 * that session's, and goes with it), the start (wait for Postgres, check that
 * the sync schema is there), the first error, stopping, the end on a loop turn
 * of its own (the session closed first, then the result handed over, then
 * the job freed), and abort: no result, the session closed now, the job freed
 * once the requests still out (vector DB, outbox) have come back.
 *
 * A job embeds `struct job` and passes its ops; every callback of a job's own
 * requests starts with `if (job_gone(&x->job)) return;` for Postgres, or
 * `if (!job_back(&x->job)) return;` for a request counted with job_send.
 */
#ifndef ABILITYSYNC_JOB_H
#define ABILITYSYNC_JOB_H

#include "common.h"
#include "pgpool.h"

#include <event2/event.h>

struct job;

struct job_ops {
	const char *comp;   /* the log component */
	/* Postgres is up and the sync schema is there; pg_now: Postgres' clock at the start. */
	void (*started)(struct job *j, const char *pg_now);
	/*
	 * It never started: code "postgres_unavailable" (no connection within
	 * JOB_READY_TIMEOUT_MS), "postgres_error" or "not_migrated"; why in words.
	 */
	void (*refused)(struct job *j, const char *code, const char *why);
	/* After job_end, the session closed: hand the result over. Not called after an abort. */
	void (*report)(struct job *j);
	/* Free the job (its own state and the memory holding `struct job`). */
	void (*release)(struct job *j);
};

#define JOB_READY_TIMEOUT_MS 10000
#define JOB_END_WAIT_MS 10000      /* at the end, for a lost session's backend to be ended */
#define JOB_ERROR_MAX 600

struct job {
	const struct job_ops *ops;
	struct event_base *base;
	struct pgpool *pool;     /* the job's own session; NULL once ended or aborted */
	int64_t started_ms;      /* clock_mono_ms() */
	bool stopping;           /* asked to stop: finish what is out, start nothing */
	bool aborted;            /* no result wanted: callbacks return at once */
	bool over;               /* job_end was called */
	size_t out;              /* requests out (job_send) whose callbacks will come back */
	struct event *later;
	int64_t ending_by_ms;    /* job_end: the report waits until then for a lost session's backend */
	char error[JOB_ERROR_MAX]; /* the first failure; "" while none */
};

/*
 * Opens the job's session (one connection, `queue_max` statements queued at
 * most) and starts it: ops->started or ops->refused follows, never inside
 * this call. A job that `locks` (takes session locks) keeps that one session:
 * once it is lost, the job's statements fail rather than run in a new session
 * that holds none of them; a job without locks reconnects.
 */
void job_start(struct job *j, const struct job_ops *ops, struct event_base *base, const struct pgpool_opts *po,
	       int queue_max, bool locks);

/* Records the first failure (later ones are dropped). */
void job_fail(struct job *j, const char *fmt, ...) PRINTF_LIKE(2, 3);

/* The job is over: on a loop turn of its own the session closes, then ops->report and ops->release run. */
void job_end(struct job *j);

/* Ask the job to stop: it finishes what is out and starts nothing new (the job checks `stopping`). */
void job_stop(struct job *j);

/* No result: the session closes now; the job is freed now, or when the last request out comes back. */
void job_abort(struct job *j);

/* A request out that will call back: held until job_back. */
void job_send(struct job *j);

/* The request came back: false when the job was aborted (it may be freed now): return at once. */
bool job_back(struct job *j) MUSTCHECK;

/* For a Postgres callback: was the job aborted (the session is gone)? */
static inline bool job_gone(const struct job *j)
{
	return j->aborted;
}

/* Seconds since the job started. */
double job_seconds(const struct job *j);

#endif
