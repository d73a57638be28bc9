/*
 * service.h - `abilitysync serve`: one event loop, the parts it runs, and what
 * the HTTP handlers may use of them.
 *
 * serve.c builds and owns everything here; api.c only borrows it.
 */
#ifndef ABILITYSYNC_SERVICE_H
#define ABILITYSYNC_SERVICE_H

#include "config.h"
#include "metrics.h"
#include "pgpool.h"
#include "outbox.h"
#include "reconcile.h"
#include "restore.h"
#include "store.h"
#include "vdb.h"

#include <event2/event.h>
#include <jansson.h>

struct service {
	struct event_base *base;
	const struct config *cfg;
	struct pgpool *pool;     /* NULL: vector-DB-only mode */
	struct store *store;     /* NULL: vector-DB-only mode */
	struct vdb *vdb;
	struct outbox *outbox;
	char owner[OWNER_MAX];   /* this replica's name on the leases it takes */

	/* Readiness, refreshed by timers in serve.c. */
	bool pg_migrated;
	char pg_why[512];
	bool vdb_up;
	char vdb_why[512];
	int64_t pg_asked_ms, vdb_asked_ms; /* a check outstanding since (clock_mono_ms), or 0 */

	/* The outbox as last counted (for /metrics): per-state counts and the oldest pending age. */
	json_t *outbox_counts;
	bool stopping;

	struct reconciler *reconciler; /* NULL: RECONCILE_INTERVAL=0, or no Postgres */
	struct restore_opts restore_opts; /* what a restore started over HTTP runs with (but its service) */
	struct reconcile_opts reconcile_opts; /* what a reconcile started over HTTP runs with (but dry, deep, service) */
	struct reconcile *reconcile;   /* the reconcile run started over HTTP in this replica, if any */
	int64_t reconcile_run;
	void *reconcile_arg;           /* service.c's, until the run ends */
	struct restore *restore;       /* the restore job this replica runs, if any */
	int64_t restore_job;
	void *restore_arg;             /* serve.c's, until the job ends */
};

/*
 * How POST /v1/restore learns how its start went: job_id > 0 once the job row
 * exists; otherwise `code` (restore_running, nothing_to_resume, not_migrated,
 * postgres_unavailable, postgres_error) and `why`.
 */
typedef void (*service_restore_fn)(int64_t job_id, const char *code, const char *why, void *arg);

/* Starts a restore job in this replica; `answer` runs once, never inside this call. */
void service_start_restore(struct service *svc, const char *service_name, bool resume, service_restore_fn answer,
			   void *arg);

/*
 * Starts a reconcile run in this replica, recorded as a job (a dry one too);
 * `answer` as for a restore: job_id > 0 once its row exists, else the code
 * reconcile_running (another replica's real run holds the lock),
 * postgres_unavailable or postgres_error, and why.
 */
void service_start_reconcile(struct service *svc, const char *service_name, const char *embedding_model,
			     bool dry_run, bool deep,
			     service_restore_fn answer, void *arg);

/*
 * Ready to take writes: Postgres up and migrated (or off), the vector DB up,
 * not stopping. A check left unanswered for a few seconds (a dependency that
 * hangs) counts as down.
 */
bool service_ready(const struct service *svc);

/* Long jobs this replica runs now: its restore, its reconcile run started over HTTP, its periodic run. */
int service_jobs_running(const struct service *svc);

/* Is a check of Postgres (or the vector DB) unanswered for too long? */
bool service_pg_stalled(const struct service *svc);
bool service_vdb_stalled(const struct service *svc);

int serve_run(const struct config *cfg);

#endif
