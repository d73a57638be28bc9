/*
 * store_job.h - what the long jobs (reconcile runs, restore jobs) read from and
 * write to Postgres: the job's row, its lock, its pages, its repairs.
 *
 * Part of the store (the service's statements are in store.h): the SQL and
 * the row shapes are here, callers get typed rows, strings valid during the
 * callback only. Unlike the service's store, each call takes the job's own
 * pool: a job holds its advisory lock in its own session, and the lock goes
 * when that session does. Every callback runs exactly once, never inside the
 * call; `o->res` is NULL when the statement failed (o->error says why).
 */
#ifndef ABILITYSYNC_STORE_JOB_H
#define ABILITYSYNC_STORE_JOB_H

#include "pgpool.h"
#include "store.h"

/* yes/no with a text (what it is depends on the call). */
typedef void (*store_flag_fn)(bool yes, const char *text, const struct pg_outcome *o, void *arg);

/* Is the sync schema there (abilitysync's job tables and ledger)? text: now() on Postgres' clock. */
void store_job_schema(struct pgpool *p, store_flag_fn done, void *arg);

/* ---- reconcile --------------------------------------------------------------------- */

/*
 * The reconcile lock, tried: exclusive to start a real run (no process works
 * on one then), shared to work on a running one; yes when taken.
 */
void store_reconcile_try_lock(struct pgpool *p, bool exclusive, store_flag_fn done, void *arg);

/* Holding it exclusive: holds it shared instead, so that others may join. */
void store_reconcile_share_lock(struct pgpool *p, pg_done_fn done, void *arg);

/* Seconds since the last real run started (text, NULL: never). */
void store_reconcile_last_run(struct pgpool *p, store_flag_fn done, void *arg);

/* A run: its id, when it started (ISO 8601, UTC; and as Postgres' text), seconds since. */
struct recon_run {
	int64_t id;
	const char *started_at;
	double seconds;
	const char *pg_started_at;
};
typedef void (*store_recon_run_fn)(const struct recon_run *run, const struct pg_outcome *o, void *arg);

/*
 * A run's row (a real one, or a dry one started over HTTP). A real one (the
 * lock held exclusive) is cut into parts: part 0 the ledger and the outbox,
 * then the live rows (of its service) every part_rows in key order; runs
 * still marked running are failed then, as no process is left on them.
 */
void store_reconcile_record_run(struct pgpool *p, bool dry_run, bool deep, const char *service, const char *model,
				const char *host, int part_rows, store_recon_run_fn done, void *arg);

/* The lock held shared: the newest running real run with these options (run NULL: none). */
void store_reconcile_join(struct pgpool *p, bool deep, const char *service, const char *model,
			  store_recon_run_fn done, void *arg);

/* A part taken (part -1: none), with what decides what comes next when none is. */
struct recon_part {
	int part;                  /* 0: the ledger and the outbox; else live rows in (after, upto] */
	const char *after, *upto;  /* NULL: open */
	const char *status;        /* the run's */
	const char *report;        /* the run's, once it is over */
	long left;                 /* parts not finished (the one taken included) */
};
typedef void (*store_recon_part_fn)(const struct recon_part *part, const struct pg_outcome *o, void *arg);

/* The first unfinished part of a running run that no session holds, locked for this session. */
void store_reconcile_claim_part(struct pgpool *p, int64_t run_id, store_recon_part_fn done, void *arg);

/* The part is checked: its report (JSON text) is kept (store_reconcile_part_check then lets it go). */
void store_reconcile_part_done(struct pgpool *p, int64_t run_id, int part, const char *report, pg_done_fn done,
			       void *arg);

/*
 * Is the part this session holds still unfinished (yes)? If not, its lock is
 * let go: after a claim (another process may have finished it meanwhile) and
 * after store_reconcile_part_done.
 */
void store_reconcile_part_check(struct pgpool *p, int64_t run_id, int part, store_flag_fn done, void *arg);

/* Texts, one a row. */
typedef void (*store_texts_fn)(const char *const *texts, size_t n, const struct pg_outcome *o, void *arg);

/* The finished parts' reports (JSON texts). */
void store_reconcile_part_reports(struct pgpool *p, int64_t run_id, store_texts_fn done, void *arg);

/* Takes up to n of the run's `max` repairs (every process's count): how many it got. */
void store_reconcile_reserve(struct pgpool *p, int64_t run_id, long n, long max, store_count_fn done, void *arg);

/*
 * The run's end: status, the report (JSON text), repairs queued, the first
 * error; `alone`: only if no other process shares the lock (else the run is
 * theirs to end). A run already ended (ok, failed) is left as it is.
 */
void store_reconcile_record_end(struct pgpool *p, int64_t run_id, const char *status, const char *report,
				long repairs, const char *error, bool alone, pg_done_fn done, void *arg);

/* A live ability as reconcile judges it. */
struct recon_row {
	const char *ability_id, *service_name;
	const char *state;          /* NULL: no sync state */
	const char *content_hash;   /* the sync state's */
	int64_t generation;         /* -1: no sync state */
	bool in_doubt;              /* its last push was ambiguous */
	const char *ability_name, *description, *embedding, *metadata; /* `deep` only, else NULL */
	const char *embedding_model; /* metadata.embedding_model, or NULL */
};
typedef void (*store_recon_rows_fn)(const struct recon_row *rows, size_t n, const struct pg_outcome *o, void *arg);

/*
 * Up to `limit` live abilities in (after, upto] (NULL: open), of one service
 * (NULL: all), by ability_id.
 */
void store_reconcile_rows(struct pgpool *p, const char *after, const char *upto, const char *service, int limit,
			  bool deep, store_recon_rows_fn done, void *arg);

/* A place in the vector DB and who it is for. */
struct recon_place {
	const char *ability_id;
	const char *blob_id;
	int64_t vector_id;
	int64_t generation;         /* of the ability's sync state when judged; -1: none */
};

/* For each place (0-based index into `places`), the live ability the ledger says holds it, if any. */
struct recon_owner {
	size_t index;
	const char *ability_id;
};
typedef void (*store_owners_fn)(const struct recon_owner *owners, size_t n, const struct pg_outcome *o, void *arg);
void store_reconcile_owners(struct pgpool *p, const struct recon_place *places, size_t n, store_owners_fn done,
			    void *arg);

/* The mirror rows of `ids`, to see whether they can be pushed (store.h's row; no sync fields). */
void store_reconcile_full_rows(struct pgpool *p, const char *const *ids, size_t n, store_rows_fn done, void *arg);

/*
 * Repairs of live rows: claim each place in the ledger unless another live
 * ability holds it, and make the sync state pending there, only where it is
 * still the generation judged (a write or delete since is never overwritten).
 * done: how many were queued.
 */
void store_reconcile_requeue_rows(struct pgpool *p, const struct recon_place *rows, size_t n, store_count_fn done,
				  void *arg);

/* A ledger entry that no live row claims where it lies (maybe an orphan). */
struct recon_entry {
	const char *blob_id;
	int64_t vector_id;
	const char *ability_id;
	const char *service_name;   /* its ability's live row's, NULL: none */
	int64_t generation;         /* of its ability's sync state; -1: none */
};
/* What a page read of the ledger: its last key (the next page's cursor) and how many keys. */
struct recon_scan {
	const char *last_blob;      /* NULL: nothing after the cursor */
	int64_t last_vector_id;
	size_t scanned;             /* < limit: the ledger's end */
};
typedef void (*store_entries_fn)(const struct recon_entry *e, size_t n, const struct recon_scan *scan,
				 const struct pg_outcome *o, void *arg);

/*
 * The next `limit` ledger keys after (after_blob, after_vid) (NULL: the
 * first), of one blob (NULL: all), and those of them no live row claims,
 * leaving out changes younger than `overdue` that started before `pg_start`
 * (in flight: not drift). A statement reads a page's keys however few are
 * suspect, so a long healthy ledger is paged like any other.
 */
void store_reconcile_entries(struct pgpool *p, const char *after_blob, int64_t after_vid, const char *blob,
			     const char *overdue, const char *pg_start, int limit, store_entries_fn done, void *arg);

/* Repairs of orphans: the entry is live again, its ability pending (a live row) or pending_delete. */
void store_reconcile_requeue_orphans(struct pgpool *p, const struct recon_place *entries, size_t n,
				     store_count_fn done, void *arg);

/* A change that gave up (failed) or is overdue. */
struct recon_change {
	const char *ability_id;
	bool failed;
};
typedef void (*store_changes_fn)(const struct recon_change *c, size_t n, const struct pg_outcome *o, void *arg);
void store_reconcile_changes(struct pgpool *p, const char *after, const char *blob, const char *overdue,
			     const char *pg_start, int limit, store_changes_fn done, void *arg);

/* Failed changes go back to what they were for; overdue ones are due now. done: how many. */
void store_reconcile_requeue_changes(struct pgpool *p, const char *const *ids, size_t n, store_count_fn done,
				     void *arg);

/* ---- restore ----------------------------------------------------------------------- */

/*
 * Fresh planner statistics for the sync state and the ledger, once a restore
 * has filled them: until autovacuum gets to them, the next statements (a
 * reconcile's pages, the outbox's claims) would be planned for the tables as
 * they were, empty after a fresh start, and a page could scan them whole.
 */
void store_restore_analyze(struct pgpool *p, pg_done_fn done, void *arg);

/*
 * The restore lock, tried: exclusive to start a job (or make a resumed one's
 * parts), shared to work on one; yes when taken; text: the id of a job marked
 * running, or NULL.
 */
void store_restore_try_lock(struct pgpool *p, bool exclusive, store_flag_fn done, void *arg);

/* Held exclusive: becomes shared (other processes may join the job from now on). */
void store_restore_share_lock(struct pgpool *p, pg_done_fn done, void *arg);

/* A restore job as it starts, resumes or records a page. */
struct restore_job_row {
	int64_t id, total, done, failed;
	int64_t parts_left;         /* parts not finished (by any process) */
	bool cancelled;             /* someone cancelled it (POST /v1/jobs/{id}/cancel): stop */
};
typedef void (*store_restore_job_fn)(const struct restore_job_row *job, const struct pg_outcome *o, void *arg);

/*
 * With the lock held exclusive: a new job (jobs still marked running are
 * marked interrupted), or with `resume` the newest unfinished one of this
 * service (job NULL: none), running again. A job without parts gets them:
 * its rows (after its cursor, for a job begun before parts existed) cut every
 * part_rows in key order.
 */
void store_restore_open(struct pgpool *p, bool resume, const char *service, const char *host, int part_rows,
			store_restore_job_fn done, void *arg);

/* A part to work on: its rows are (after, upto]; NULL bounds are open. */
struct restore_part_row {
	int part;
	const char *after;          /* where it resumes: its cursor, else its lower bound */
	const char *upto;
};
typedef void (*store_part_fn)(const struct restore_part_row *part, const struct pg_outcome *o, void *arg);

/*
 * The first unfinished part of the job no session holds (not even this one),
 * locked for this session until it ends; part NULL: none left to take.
 */
void store_restore_claim_part(struct pgpool *p, int64_t job_id, store_part_fn done, void *arg);

/*
 * A page of a part is in: the part's and the job's counters and cursors move;
 * `finished`: it was the part's last. Also once cancelled. job NULL: its row
 * is gone.
 */
void store_restore_record_page(struct pgpool *p, int64_t job_id, int part, size_t ok, size_t failed,
			       const char *cursor, bool finished, store_restore_job_fn done, void *arg);

/*
 * This process is through: done is the job's only when no part is left;
 * interrupted or failed (with the error) only when no other session holds an
 * unfinished part (otherwise the job stays running: they go on). A cancelled
 * job stays so. Flag: the job is done; text: its status (NULL: cancelled or
 * gone).
 */
void store_restore_close(struct pgpool *p, int64_t job_id, const char *status, const char *error, store_flag_fn done,
			 void *arg);

/*
 * Rows that share their vector_id with another row, and the ledger's live
 * owners of those vector_ids, sorted by vector_id: is_row rows name their
 * service, ledger lines their blob.
 */
struct restore_collision {
	bool is_row;
	const char *ability_id;
	const char *where;          /* is_row: service_name; else blob_id */
	int64_t vector_id;
};
typedef void (*store_collisions_fn)(const struct restore_collision *c, size_t n, const struct pg_outcome *o,
				    void *arg);
void store_restore_collisions(struct pgpool *p, store_collisions_fn done, void *arg);

/* Abilities per service (one service, or NULL: all), by service_name. */
struct service_count {
	const char *service_name;
	int64_t n;
};
typedef void (*store_services_fn)(const struct service_count *s, size_t n, const struct pg_outcome *o, void *arg);
void store_restore_services(struct pgpool *p, const char *service, store_services_fn done, void *arg);

#endif
