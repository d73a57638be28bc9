/*
 * store.h - what the service writes to and reads from Postgres.
 *
 * The store alone knows SQL and row shapes: callers get typed rows, never a
 * PGresult. A write is one statement (data-modifying CTEs): the `abilities`
 * row, its sync state (pending, generation + 1, leased to this replica when
 * no other holds it) and its claim on (blob, vector_id) in the ledger commit
 * together or not at all, so an acknowledged write is never half there.
 * Unchanged content writes nothing; a mirror row edited behind our back is put
 * back; a vector_id another live ability holds in the same blob is refused.
 *
 * Writes from concurrent requests are grouped: while a write statement runs,
 * new ones queue, and the next statement carries all of them (one round trip,
 * one transaction, one WAL flush). Rows go in ability_id order, so two groups
 * never wait on each other in a cycle.
 *
 * The sync rules (leases, generations, doubt) are the outbox's (outbox.h);
 * the store carries them out in SQL: every statement that starts a push takes
 * the ability's lease (or reports who holds it), and the statement recording a
 * push's outcome only changes rows still under the lease it was pushed under
 * (once another replica has taken the row, even a lease this replica takes
 * back is another lease).
 */
#ifndef ABILITYSYNC_STORE_H
#define ABILITYSYNC_STORE_H

#include "ability.h"
#include "pgpool.h"

#define STORE_STATE_MAX 16

struct store_opts {
	int group_max;         /* abilities in one write statement, at most */
	size_t group_max_bytes;/* and bytes of them (a request larger than this goes alone) */
	int write_concurrency; /* write statements in flight, at most */
	int max_attempts;      /* pushes before a row is `failed` */
	long lease_ms;         /* how long a push may hold an ability */
	long quarantine_ms;    /* how long an ambiguous vector DB call may still land */
	const char *owner;     /* this replica's name on the leases it takes */
};

enum write_outcome {
	WRITE_WRITTEN,   /* row and sync state written: the vector DB needs it (generation below) */
	WRITE_UNCHANGED, /* same content: nothing written */
	WRITE_COLLISION, /* its (blob, vector_id) belongs to another live ability */
	WRITE_REFUSED,   /* another ability of the same request collided: nothing of it was written */
};

/* How one ability of a write went. Strings are valid during the callback only. */
struct write_result {
	enum write_outcome outcome;
	int64_t generation;             /* WRITE_WRITTEN */
	const char *state;              /* the sync state before this write ("" when none) */
	bool leased;                    /* WRITE_WRITTEN: this replica holds its lease (else another pushes it) */
	bool doubt;                     /* an earlier ambiguous call may still land: a push now cannot settle it */
	bool may_exist;                 /* a vector may already be at (blob, vector_id) */
	const char *stale;              /* "blob vector_id,..." of its other vectors that may exist, or NULL */
	const char *lease;              /* leased: the lease (push under it, record with it) */
	const char *other;              /* WRITE_COLLISION: the ability holding the vector */
	bool repaired;                  /* WRITE_WRITTEN: the same content, its mirror row edited or deleted behind
					   our back: put back, and pushed again as a new generation */
};

/* res: n results in the order given, or NULL when the statement failed (see o). */
typedef void (*store_write_fn)(const struct write_result *res, size_t n, const struct pg_outcome *o, void *arg);

/*
 * A row taken for a push (by the retry worker, a follow-up, a restore page):
 * its sync state and what the mirror holds now. Strings valid during the
 * callback only.
 */
struct claimed_row {
	const char *ability_id;
	int64_t generation;
	const char *state;          /* pending, pending_delete */
	const char *blob_id;        /* where the sync state says its vector is */
	int64_t vector_id;
	int attempts;
	bool leased;                /* false: left (restore pages only: a live lease holds it, or it changed) */
	bool doubt;                 /* an ambiguous call may still land: this push cannot settle it */
	bool verify;                /* the doubt window is over: verify before it can be synced */
	bool may_exist;
	const char *deletes;        /* "blob vector_id,..." to delete (stale vectors; for a delete, its own) */
	const char *collision;      /* another live ability holds the mirror row's (blob, vector_id), or NULL */
	const char *lease;          /* leased: the lease it was taken under (its outcome is recorded with it) */
	bool gone;                  /* no mirror row: the vector goes */
	const char *ability_name, *service_name, *description, *embedding, *metadata; /* the mirror row */
};

typedef void (*store_claim_fn)(const struct claimed_row *rows, size_t n, const struct pg_outcome *o, void *arg);

struct store;

struct store *store_new(struct pgpool *pool, const struct store_opts *o);
void store_free(struct store *s);

/*
 * Writes abilities (they must stay valid until `done`). Writes and deletes go
 * out through one queue, WRITE_CONCURRENCY statements at a time, never two in
 * flight for one ability: each `done` is called in the order the statements
 * touching an ability were asked for (a lease kept by a later one is never
 * let go before an earlier one's answer is in).
 */
void store_write(struct store *s, const struct ability *items, size_t n, store_write_fn done, void *arg);

/* ---- the outbox ------------------------------------------------------------------ */

/* A delete: the row goes, a pending_delete tombstone stays (leased like a write). */
struct delete_result {
	bool found;
	int64_t generation;
	const char *blob_id;
	int64_t vector_id;
	bool leased, doubt;
	const char *deletes;        /* "blob vector_id,..." every vector of it that may exist */
	const char *lease;          /* leased: the lease (its outcome is recorded with it) */
};
typedef void (*store_delete_fn)(const struct delete_result *r, const struct pg_outcome *o, void *arg);
void store_delete(struct store *s, const char *ability_id, store_delete_fn done, void *arg);

/* Due rows (pending, their time come, no live lease), leased: the retry worker's. */
void store_claim_due(struct store *s, int limit, store_claim_fn done, void *arg);

/* These rows, if pending and not leased by another replica: a push that must follow another. */
void store_claim_ids(struct store *s, const char *const *ids, size_t n, store_claim_fn done, void *arg);

/*
 * A restore page: up to `limit` mirror rows after `after` and up to `upto`
 * (NULL: open) of `service` (NULL: all), by ability_id. Each gets a sync state if it
 * had none, is made pending and leased, unless a live lease holds it (this
 * replica's too) or it changed since the page's snapshot (leased false: left
 * to whoever holds or changed it). may_exist uses the blob epochs (store_blob_*).
 */
void store_claim_page(struct store *s, const char *after, const char *upto, const char *service, int limit,
		      store_claim_fn done, void *arg);

/* A push's outcome, recorded against the generation it pushed. */
enum push_result { PUSH_OK, PUSH_FAILED, PUSH_PERMANENT };

struct push_done {
	const char *ability_id;
	int64_t generation;
	enum push_result result;
	bool ambiguous;           /* a call may have been applied without our knowing: doubt moves out */
	bool clears_doubt;        /* confirmed, and begun after any doubt window: nothing older can land */
	bool deleted;             /* PUSH_OK means its vector is gone (a tombstone, or no mirror row) */
	const char *content_hash; /* PUSH_OK, not deleted: what the vector DB now holds */
	const char *deletes;      /* vectors deleted on the way ("blob vector_id,...") */
	const char *error;        /* not PUSH_OK: why */
	long retry_in_ms;
	const char *lease;        /* the lease it was pushed under: recorded only if the row still has it */
};

/* What became of a recorded push. */
enum finish_state {
	FINISH_SYNCED,     /* synced (or deleted): settled */
	FINISH_PENDING,    /* retried later: failed, or in doubt until verified */
	FINISH_FAILED,     /* gave up (or refused for good): `failed` */
	FINISH_SUPERSEDED, /* a newer generation came meanwhile: it is due now */
	FINISH_LOST,       /* this replica's lease had ended and another took the row */
};

/*
 * res[i] for items[i]; NULL when the statement failed. lag[i]: for a row now
 * synced or deleted, the seconds since the vector DB began to lag it (its
 * oldest change not yet there was acknowledged: sync_state.pending_since),
 * else -1.
 */
typedef void (*store_finish_fn)(const enum finish_state *res, const double *lag, size_t n,
				const struct pg_outcome *o, void *arg);
void store_finish_pushes(struct store *s, const struct push_done *items, size_t n, store_finish_fn done, void *arg);

/*
 * Blob epochs: before creating a blob, `store_blob_creating`; once the create
 * succeeded (2xx: it did not exist), `store_blob_created`. Vectors whose ledger
 * entry predates the epoch cannot be in the blob.
 */
void store_blob_creating(struct store *s, const char *blob, pg_done_fn done, void *arg);
void store_blob_created(struct store *s, const char *blob, pg_done_fn done, void *arg);

/* ---- a service's full set -------------------------------------------------------------- */

/*
 * Stages abilities of a full set: set_id names the set (unique to its
 * request), ord is items[0]'s place in it. Nothing is visible to anyone until
 * store_apply_set.
 */
void store_stage(struct store *s, const char *set_id, int64_t ord, const struct ability *items, size_t n,
		 pg_done_fn done, void *arg);

/* Lets go of a staged set that will not be applied (refused, or its request gone). */
void store_stage_drop(struct store *s, const char *set_id, pg_done_fn done, void *arg);

enum set_action { SET_ADD, SET_UPDATE, SET_UNCHANGED, SET_DELETE, SET_COLLISION, SET_REFUSED };

/* An ability of the set, or of the service and not in the set (SET_DELETE). Strings valid during the callback. */
struct set_row {
	const char *ability_id;
	enum set_action action;
	const char *other;          /* SET_COLLISION: the ability holding its vector */
};
typedef void (*store_set_fn)(const struct set_row *rows, size_t n, const struct pg_outcome *o, void *arg);

/*
 * The staged set against the service's abilities now, by ability_id: with
 * dry_run what applying it would do, else done in one statement (written as a
 * write writes, the service's other abilities deleted as a delete does; no
 * lease taken: the retry worker pushes them). A collision refuses the
 * whole set (SET_COLLISION and SET_REFUSED rows, nothing changed). The staged
 * rows go when the statement succeeds.
 */
void store_apply_set(struct store *s, const char *set_id, const char *service, bool dry_run, store_set_fn done,
		     void *arg);

/* ---- reads for the API -------------------------------------------------------------- */

/* One ability as the API shows it; strings valid during the callback. */
struct ability_row {
	const char *ability_id, *ability_name, *service_name, *description;
	int64_t vector_id;
	const char *metadata, *dynamic_header_keys; /* JSON text */
	bool dynamic_headers_required;
	const char *created_at, *updated_at;        /* ISO 8601, or NULL */
	const char *embedding;                      /* JSON text; NULL unless asked */
	bool has_sync;                              /* the fields below are set */
	const char *state, *content_hash, *blob_id, *last_error, *synced_at;
	int attempts;
};
typedef void (*store_rows_fn)(const struct ability_row *rows, size_t n, const struct pg_outcome *o, void *arg);

void store_get(struct store *s, const char *ability_id, bool with_embedding, store_rows_fn done, void *arg);

/* Up to `limit` abilities after `cursor` (NULL: from the start), by ability_id; no embedding. */
void store_list(struct store *s, const char *service, const char *cursor, int limit, store_rows_fn done, void *arg);

/* A mirror row found by its vector: what search joins. */
struct vector_row {
	const char *ability_id, *ability_name, *description, *metadata;
	int64_t vector_id;
};
typedef void (*store_vectors_fn)(const struct vector_row *rows, size_t n, const struct pg_outcome *o, void *arg);

/* Mirror rows of a service's vectors (ids: "{1,2}"). */
void store_by_vectors(struct store *s, const char *service, const char *ids, store_vectors_fn done, void *arg);

/*
 * {"counts": {...}, "oldest_pending_seconds": x, "last_errors": [...],
 * "reconcile": {run_id, status, finished_at, total, drift: {category: count}}
 * of the last finished run, or null}, as JSON text (NULL on failure).
 */
typedef void (*store_text_fn)(const char *text, const struct pg_outcome *o, void *arg);
void store_status(struct store *s, store_text_fn done, void *arg);

/*
 * Lets go of a lease taken here that no push will use (the outbox paused or
 * closing, an entry going without a push): no vector DB call was made under
 * it, so whoever pushes the row next takes it over without doubt. Only while
 * the row is still under that lease; `done` says whether it was, and the
 * row's generation then: a statement of this replica that took the lease
 * again (it keeps the token) and moved the row on may be answered after this.
 */
typedef void (*store_give_back_fn)(bool released, int64_t generation, const struct pg_outcome *o, void *arg);
void store_give_back(struct store *s, const char *ability_id, const char *lease, store_give_back_fn done, void *arg);

/*
 * The outbox paused for every replica (an admin action: who, why, which
 * request): the pause as JSON text, the one already in force if any. Resumed:
 * the pause that ended, "null" when none was in force.
 */
void store_sync_pause(struct store *s, const char *key, const char *reason, const char *request_id,
		      store_text_fn done, void *arg);
void store_sync_resume(struct store *s, store_text_fn done, void *arg);

/* The newest reconcile run: its report as stored (text), or while running a summary object; NULL: none. */
void store_last_reconcile(struct store *s, store_text_fn done, void *arg);

/*
 * A long job of any kind (restore, reconcile) as the jobs API shows it:
 * state is one of queued, running, succeeded, failed, cancelled for every
 * kind, status the kind's own word; total, done, failed are -1 where the kind
 * does not count them (reconcile). cursor pages after this row.
 */
struct job_row {
	const char *kind;
	int64_t id;
	const char *state, *status, *service_name;
	int64_t total, done, failed;
	bool dry_run;
	const char *started_at, *updated_at, *finished_at, *error; /* NULL when null */
	const char *cursor;
};
typedef void (*store_jobs_fn)(const struct job_row *jobs, size_t n, const struct pg_outcome *o, void *arg);

/* One job (n 0: none such). */
void store_job(struct store *s, const char *kind, int64_t id, store_jobs_fn done, void *arg);

/* Up to `limit` jobs, newest first, of one kind and state (NULL: any), after `cursor` (NULL: the newest). */
void store_jobs_list(struct store *s, const char *kind, const char *state, const char *cursor, int limit,
		     store_jobs_fn done, void *arg);

/*
 * Marks a running job cancelled (error: why), for whichever replica runs it to
 * see: cancelled true when it was running; before: its status before (NULL: no
 * such job).
 */
typedef void (*store_cancel_fn)(bool cancelled, const char *before, const struct pg_outcome *o, void *arg);
void store_job_cancel(struct store *s, const char *kind, int64_t id, const char *why, store_cancel_fn done,
		      void *arg);

/* ---- the audit trail ---------------------------------------------------------------- */

/* An admin action, answered. */
struct audit_entry {
	const char *key_name;       /* NULL: no keys configured */
	const char *action;         /* "POST /v1/restore" */
	const char *params;         /* a JSON object, or NULL */
	int status;
	const char *request_id;
};

/* Records it (with this replica's name); entries older than retention_days go in the same statement. */
void store_audit_record(struct store *s, const struct audit_entry *e, int retention_days, pg_done_fn done,
			void *arg);

struct audit_row {
	int64_t id;
	const char *at, *key_name, *action, *params, *request_id, *host; /* NULL when null */
	int status;
};
typedef void (*store_audit_fn)(const struct audit_row *rows, size_t n, const struct pg_outcome *o, void *arg);

/* Up to `limit` entries, newest first, older than entry `before` (0: from the newest). */
void store_audit_list(struct store *s, int64_t before, int limit, store_audit_fn done, void *arg);

typedef void (*store_count_fn)(long n, const struct pg_outcome *o, void *arg);

/* Which changes a retry picks: the failed ones (or the pending ones), narrowed by the others when set. */
struct retry_selector {
	bool pending;               /* pending and pending_delete rather than failed */
	const char *service;        /* NULL: every service */
	const char *error_contains; /* NULL: any error */
	int64_t older_than_s;       /* -1: any age */
	bool dry_run;               /* count only */
};

/* The changes picked are due now, attempts reset (failed ones pending again): how many matched, how many changed. */
typedef void (*store_retry_fn)(int64_t matched, int64_t retried, const struct pg_outcome *o, void *arg);
void store_sync_retry(struct store *s, const struct retry_selector *sel, store_retry_fn done, void *arg);

/*
 * Changes of one blob (NULL: all) about to be pushed: pending and due within
 * `horizon_ms` (0: now; a backoff or a doubt window that ends within it
 * counts), or leased (pushed now, or by a process that died: due once the
 * lease runs out); only those pending for `older_ms` at least (0: all), so
 * that a process waiting for its own changes does not wait for every
 * registration that arrives meanwhile.
 */
void store_count_waiting(struct store *s, const char *blob, long horizon_ms, long older_ms, store_count_fn done,
			 void *arg);

/*
 * Changes of one blob on their way to the vector DB (pending, pending_delete)
 * that were acknowledged at or before `as_of` (a timestamp this function gave;
 * NULL: now): how many, and the as_of used, to ask again with. Failed ones are
 * not counted (they wait for a retry).
 */
typedef void (*store_lag_fn)(long n, const char *as_of, const struct pg_outcome *o, void *arg);
void store_count_lagging(struct store *s, const char *blob, const char *as_of, store_lag_fn done, void *arg);

/*
 * Changes not settled of one blob (NULL: all): pending (or pending_delete)
 * for `older_ms` at least, and failed: every one, or (!every_failed) those
 * that failed within `older_ms` (the others are counted elsewhere).
 */
void store_count_unsettled(struct store *s, const char *blob, bool every_failed, long older_ms,
			   store_count_fn done, void *arg);

/*
 * Readiness: how many of the migrations whose `when`s are in `whens` (an
 * array literal such as "{1,2}") the ledger table (schema-qualified) holds;
 * whens NULL: 1 when the sync schema is there, else 0. On the service's pool,
 * also when there is no store.
 */
void store_count_migrations(struct pgpool *p, const char *ledger, const char *whens, store_count_fn done, void *arg);

#endif
