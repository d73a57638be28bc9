/*
 * reconcile.h - finding drift between the mirror and the vector DB, and
 * queueing its repair.
 *
 * The vector DB cannot be listed, so the inventory is Postgres: the live rows
 * of `abilities`, their sync state, and the ledger of every vector ever
 * written. A run walks them in keyset pages (memory bounded by a page,
 * whatever the table size) and asks the vector DB about each vector by id,
 * with the client's bounded concurrency. It counts drift by category
 * (reconcile_categories below: the one list, which the report, the metrics,
 * `abilitysync codes --drift` and the README use), with the smallest ids of
 * each as samples.
 *
 * A dry run reads only: no lock, no record (unless started over HTTP, where it
 * is a job to poll), nothing changed anywhere, so it also runs against a
 * read-only standby.
 *
 * A real run records itself in abilitysync.reconcile_runs and is cut into
 * parts (abilitysync.reconcile_parts: the ledger and the outbox, then key
 * ranges of the live rows), so that several processes check one run. The
 * first takes the reconcile lock exclusive to start it, then shares it; a
 * process finding a run going with the same options joins it (the replicas'
 * periodic runs, `abilitysync reconcile`); one with other options skips. Each
 * takes parts no one holds and keeps each one's counts and samples in its
 * row; the process that finds every part finished merges them into the run's
 * report, and every process on the run ends with that report. A process that
 * dies leaves its part to the others. Repairs go through the outbox: what
 * drifted is marked pending (or pending_delete), at most max_repairs
 * abilities a run (a budget every process draws from), and the outbox worker
 * pushes them like any write. Collisions and invalid rows are left to a human.
 */
#ifndef ABILITYSYNC_RECONCILE_H
#define ABILITYSYNC_RECONCILE_H

#include "pgpool.h"
#include "vdb.h"

#include <event2/event.h>
#include <jansson.h>

/* A kind of drift: its name in reports and metrics, what it is, how a real run repairs it. */
struct drift_category {
	const char *name;
	const char *what;   /* markdown */
	const char *repair; /* NULL: left to a person */
};

#define RECONCILE_CATEGORIES 11
extern const struct drift_category reconcile_categories[RECONCILE_CATEGORIES];

/* A real run's rows are cut into parts of this many pages. */
#define RECONCILE_PART_PAGES 16

struct reconcile_opts {
	struct pgpool_opts pg;  /* the run opens its own connection: the lock is that session's */
	bool dry_run;
	bool deep;
	const char *service;    /* NULL: every service */
	const char *embedding_model; /* set: rows whose metadata.embedding_model differs count as old_embedding_model */
	int page;               /* rows per Postgres page */
	long max_repairs;       /* abilities queued per run, at most */
	long overdue_s;
	size_t dim;
	double min_gap_s;       /* skip when a real run started less than this ago (periodic runs); 0: never */
	long progress_s;        /* a progress line this often (0: none) */
	const char *host;       /* recorded with the run */
	/*
	 * Called with the run's id once its row exists, before any check (NULL:
	 * none); set, it has a dry run recorded too (started over HTTP, as a job).
	 */
	void (*recorded)(int64_t run_id, void *arg);
};

enum reconcile_outcome {
	RECONCILE_DONE,    /* report complete (status "ok") */
	/* a run is being started, or one with other options runs, or one ran within min_gap_s; report NULL */
	RECONCILE_SKIPPED,
	RECONCILE_FAILED,  /* report says how far it got (status "failed") and why */
};

/* report is borrowed: valid during the call. `why` explains a skip or a failure. */
typedef void (*reconcile_done_fn)(enum reconcile_outcome outcome, json_t *report, const char *why, void *arg);

struct reconcile;

/* Starts a run; `done` runs once, never inside this call, after which the run is gone. */
struct reconcile *reconcile_start(struct event_base *base, struct vdb *v, const struct reconcile_opts *o,
				  reconcile_done_fn done, void *arg);

/* Asks a run to stop after the page it is on; it then ends as failed ("stopped"). */
void reconcile_stop(struct reconcile *r);

/* Lets go of a run at once (teardown): `done` will not run; what it waits for is cancelled. */
void reconcile_abort(struct reconcile *r);

/* The report's verdict for `abilitysync reconcile`: 0 nothing left, 3 drift left, 1 failed. */
int reconcile_exit_code(json_t *report);

/* ---- periodic runs inside `serve` ------------------------------------------------ */

struct reconciler;

/* Every interval_s (with a little jitter), a real run; runs less than 0.75 interval apart are skipped. */
struct reconciler *reconciler_new(struct event_base *base, struct vdb *v, const struct reconcile_opts *o,
				  long interval_s);
/* Stops the timer and asks a run in progress to stop. */
void reconciler_stop(struct reconciler *rc);
bool reconciler_busy(const struct reconciler *rc);
/* Stops this replica's run `run_id` (cancelled), if it is the one running: true then. */
bool reconciler_cancel(struct reconciler *rc, int64_t run_id);
void reconciler_free(struct reconciler *rc);

struct reconciler_stats {
	uint64_t ok, failed, skipped;
};
void reconciler_get_stats(const struct reconciler *rc, struct reconciler_stats *out);

#endif
