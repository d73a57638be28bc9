/*
 * store.h - what the service writes to and reads from Postgres.
 *
 * Every statement is here, in one place. A write is one statement (data-
 * modifying CTEs): the `abilities` row, its sync state (pending, generation+1)
 * and its claim on (blob, vector_id) in the ledger commit together or not at
 * all, so an acknowledged write is never half there. Unchanged content (same
 * content hash) writes nothing; a vector_id another live ability holds in the
 * same blob is refused.
 *
 * Writes from concurrent requests are grouped: while a write statement runs,
 * new ones queue, and the next statement carries all of them (one round trip,
 * one transaction, one WAL flush). Rows go in ability_id order, so two groups
 * never wait on each other in a cycle.
 */
#ifndef ABILITYSYNC_STORE_H
#define ABILITYSYNC_STORE_H

#include "ability.h"
#include "pgpool.h"

#define STORE_STATE_MAX 16

struct store_opts {
	int group_max;         /* abilities in one write statement, at most */
	int write_concurrency; /* write statements in flight, at most */
	long push_grace_s;     /* a fresh write is left to its request this long before the retry worker may take it */
	int max_attempts;      /* pushes before a row is `failed` */
};

enum write_outcome {
	WRITE_WRITTEN,   /* row and sync state written: the vector DB needs it (generation below) */
	WRITE_UNCHANGED, /* same content: nothing written */
	WRITE_COLLISION, /* its (blob, vector_id) belongs to another live ability */
	WRITE_REFUSED,   /* another ability of the same request collided: nothing of it was written */
};

struct write_result {
	enum write_outcome outcome;
	int64_t generation;             /* WRITE_WRITTEN */
	char state[STORE_STATE_MAX];    /* the sync state before this write ("" when none) */
	char old_blob[ABILITY_TEXT_MAX * 2 + 16]; /* the blob it was in before ("" when none) */
	char other[ABILITY_ID_MAX + 1]; /* WRITE_COLLISION: the ability holding the vector */
};

/* res: n results in the order given, or NULL when the statement failed (see o). */
typedef void (*store_write_fn)(const struct write_result *res, size_t n, const struct pg_outcome *o, void *arg);

struct store;

struct store *store_new(struct pgpool *pool, const struct store_opts *o);
void store_free(struct store *s);

/* Writes abilities (they must stay valid until `done`). */
void store_write(struct store *s, const struct ability *items, size_t n, store_write_fn done, void *arg);

/* ---- single statements: `done` gets the pg_outcome; its res holds the rows ---- */

/*
 * One ability with its sync state: columns ability_id, vector_id, ability_name,
 * service_name, description, metadata, dynamic_header_keys,
 * dynamic_headers_required, created_at, updated_at, embedding (NULL unless
 * asked), state, content_hash, blob_id, attempts, last_error, synced_at.
 */
void store_get(struct store *s, const char *ability_id, bool with_embedding, pg_done_fn done, void *arg);

/* Up to `limit` abilities after `cursor` (NULL: from the start), by ability_id; same columns, no embedding. */
void store_list(struct store *s, const char *service, const char *cursor, int limit, pg_done_fn done, void *arg);

/* Step 1 of a delete: service_name, vector_id of the row (no row: nothing to delete). */
void store_delete_lookup(struct store *s, const char *ability_id, pg_done_fn done, void *arg);

/* Step 2: deletes the row and leaves a pending_delete tombstone; returns generation, blob_id, vector_id. */
void store_delete(struct store *s, const char *ability_id, const char *blob_id, int64_t vector_id, pg_done_fn done,
		  void *arg);

/*
 * One row, one column: {"counts": {...}, "oldest_pending_seconds": x,
 * "last_errors": [...], "reconcile": {run_id, status, finished_at, total,
 * drift: {category: count}} of the last finished run, or null} as text.
 */
void store_status(struct store *s, pg_done_fn done, void *arg);

/*
 * Claims up to `limit` due rows for pushing, leasing them for `lease_s`:
 * ability_id, generation, state, blob_id, vector_id, content_hash, attempts,
 * ability_name, service_name, description, embedding, metadata (NULL when the
 * row is gone), stale (other live vectors of the ability: "blob vector_id,...").
 */
void store_claim(struct store *s, int limit, long lease_s, pg_done_fn done, void *arg);

/* A pushed item: mark it synced (or deleted) if its generation is still current. */
struct push_done {
	const char *ability_id;
	int64_t generation;
	const char *content_hash; /* what the vector DB now holds; NULL: keep the recorded one */
	const char *stale;        /* vectors deleted on the way ("blob vector_id,..."), or NULL */
	const char *error;        /* NULL: pushed; else why not */
	long retry_in_ms;         /* when not pushed */
	bool permanent;           /* the row itself cannot be pushed: `failed` at once */
};

void store_finish_pushes(struct store *s, const struct push_done *items, size_t n, pg_done_fn done, void *arg);

/* Mirror rows of a service's vectors (ids: "{1,2}"): ability_id, vector_id, ability_name, description, metadata. */
void store_by_vectors(struct store *s, const char *service, const char *ids, pg_done_fn done, void *arg);

/* The newest reconcile run: report (text, NULL while running), id, status, started_at. */
void store_last_reconcile(struct store *s, pg_done_fn done, void *arg);

/* A restore job: id, status, service_name, total, done, failed, started_at, updated_at, finished_at, error. */
void store_job(struct store *s, const char *job_id, pg_done_fn done, void *arg);

/* The number of `failed` rows made pending again (one row, one column). */
void store_retry_failed(struct store *s, pg_done_fn done, void *arg);

#endif
