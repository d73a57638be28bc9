/*
 * restore.h - rebuilding the vector DB from the Postgres mirror.
 *
 * After the mirror came back from a backup (pg_dump, then psql), or when the
 * vector DB lost its data: every live row of `abilities` (or one service's)
 * goes to the vector DB again, as the outbox would push it (same blob, id,
 * attributes, content hash), but in bulk: keyset pages read while earlier
 * pages are on the wire, vectors batched by bytes, several requests in flight.
 *
 * A job row (abilitysync.restore_jobs) holds the status, total, done and
 * failed; its parts (abilitysync.restore_parts: key ranges cut when it
 * starts) each a cursor: the last ability_id whose page is recorded. Any
 * number of processes work on one job (the first starts it, the others join
 * with `resume`), each on the parts it holds the lock of. The pages go
 * through the outbox (outbox.h): claimed (made pending and leased, so no other
 * push of those abilities runs meanwhile), pushed, recorded row by row; then
 * the job's counters and cursor move. A job killed at any moment resumes after
 * the last recorded page of each part; the rows of the pages on the wire then are pending
 * in the outbox, and are pushed again by the resumed job or the retry worker.
 * Nothing ends up twice: a vector is added without its delete first only into
 * a blob this job created (recorded in abilitysync.blobs before the create).
 *
 * One restore job at a time (a session advisory lock, shared by the processes
 * working on it); a dry run only counts. The job's last process ANALYZEs the
 * sync state and the ledger it filled, so that what runs next (a reconcile)
 * is not planned for the tables as they were.
 */
#ifndef ABILITYSYNC_RESTORE_H
#define ABILITYSYNC_RESTORE_H

#include "outbox.h"
#include "pgpool.h"
#include "store.h"
#include "vdb.h"

#include <event2/event.h>
#include <jansson.h>

struct restore_opts {
	struct pgpool_opts pg;  /* the job opens its own connection: the lock is that session's */
	const char *service;    /* NULL: every service */
	bool resume;            /* continue the newest unfinished job (joining the processes on it) */
	bool dry_run;           /* count what would be restored, write nothing */
	int page;               /* rows per page */
	size_t dim;
	long progress_s;        /* a progress line this often when not drawing a bar */
	bool progress_bar;      /* stderr is a terminal: draw a bar */
	const char *host;       /* recorded with the job */
};

enum restore_outcome {
	RESTORE_DONE,    /* every row read; summary counts what failed */
	RESTORE_FAILED,  /* stopped part way (vector DB, Postgres, a stop): resumable */
	RESTORE_REFUSED, /* never started: another restore runs, nothing to resume, no sync schema */
};

/* The job row exists (a dry run has none). */
typedef void (*restore_started_fn)(int64_t job_id, void *arg);
/*
 * summary is borrowed: {"job_id", "status", "service_name", "total", "done",
 * "failed" (the job's, every process's), "parts" (this process finished),
 * "seconds", "vectors_per_second", "error"}; status "running": this process is
 * through, others still restore their parts. For a dry run
 * {"dry_run", "total", "blobs": {blob: n}}; when refused {"refused": code}
 * with code restore_running, nothing_to_resume, not_migrated,
 * postgres_unavailable or postgres_error.
 */
typedef void (*restore_done_fn)(enum restore_outcome outcome, json_t *summary, const char *why, void *arg);

struct restore;

/*
 * Starts a job; the callbacks run never inside this call; after `done` the job
 * is gone. Its pages go through `ob` (the outbox of `st`), like every write.
 */
struct restore *restore_start(struct event_base *base, struct vdb *v, struct outbox *ob, struct store *st,
			      const struct restore_opts *o, restore_started_fn started, restore_done_fn done, void *arg);

/* Finish the pages in flight, then end as interrupted (resumable). */
void restore_stop(struct restore *r);

/* Lets go at once (teardown): `done` will not run. */
void restore_abort(struct restore *r);

#endif
