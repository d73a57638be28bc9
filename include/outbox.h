/*
 * outbox.h - how an ability gets from a write into both stores, and stays
 * right there: the registration and delete workflow and the sync rules.
 *
 * Postgres is the source of truth and the outbox: a write commits the row and
 * its pending sync state together, then the vector DB is told. Every push, from
 * whatever cause (a registration, a delete, the retry worker, a restore page, a
 * reconcile repair), goes through one path with one fencing rule:
 *
 *   1. One push per ability at a time. Across replicas: a push needs the
 *      ability's lease (sync_state.lease_until/lease_owner), taken by the
 *      statement that writes or claims the row; a write that finds the lease
 *      held leaves the push to the holder. Within a replica: a push that finds
 *      one in flight for the same ability queues behind it and coalesces.
 *   2. A push never outlives its lease. Its vector DB calls carry a deadline
 *      (the lease's end, less a margin) after which no attempt starts or runs;
 *      the lease is counted from when its statement was sent, not answered, so
 *      a statement that waited on a lock or a slow link leaves less time.
 *      A lease that ran out without being released therefore means a request
 *      may still be on its way: whoever takes the row over puts it in doubt.
 *   3. A push reads what it pushes when it starts (the write's own content, or
 *      the mirror row as it is now), carries that generation, and its outcome
 *      counts only for it: recorded against a newer generation, it stands down
 *      and the newest is pushed at once. A delete is a generation like any
 *      other, so nothing older lands after it.
 *   4. An ambiguous call (timed out or reset after the request was sent; 500,
 *      502, 504) may still be applied by the server, later. Such an outcome
 *      puts the ability in doubt until the quarantine window has passed; a
 *      newer push meanwhile cannot settle it. After the window the row is
 *      verified: read back (where the server overwrites, VDB_WRITE_MODE=add) or
 *      written again with its delete first (where it may keep duplicates).
 *      Only a confirmed outcome with no doubt left marks a row synced.
 *   5. What may be in the vector DB comes from Postgres, never from memory: the
 *      ledger entry of the vector (or a mirror row the original application
 *      wrote) says whether a delete must come first; the ledger's other live
 *      entries of the ability are deleted on the way.
 *
 * Without Postgres (vector-DB-only mode) there is no outbox: a write is pushed
 * as it comes and answered with the vector DB's verdict.
 */
#ifndef ABILITYSYNC_OUTBOX_H
#define ABILITYSYNC_OUTBOX_H

#include "ability.h"
#include "metrics.h"
#include "store.h"
#include "vdb.h"

/* Room for a lease owner's name (options_owner). */
#define OWNER_MAX 160

struct outbox_opts {
	long interval_ms;       /* how often the retry worker looks for due rows */
	int claim_max;          /* rows per claim */
	long lease_ms;          /* a push's lease; its calls end before it does */
	long quarantine_ms;     /* how long after an ambiguous call the vector may still change */
	long backoff_ms;        /* first delay between a row's attempts; doubles */
	long backoff_max_ms;
	size_t dim;
	bool verify_by_reading; /* the server overwrites (VDB_WRITE_MODE=add): a read-back proves the content */
};

/* How one ability of a registration went. */
/* OB_WRITTEN: vector-DB-only mode, where there is no mirror to tell a creation from an update. */
enum outbox_status { OB_CREATED, OB_UPDATED, OB_UNCHANGED, OB_REPAIRED, OB_COLLISION, OB_REFUSED, OB_WRITTEN };

struct outbox_item {
	enum outbox_status status;
	const char *sync_state;  /* synced, pending, failed (refused by the vector DB), or as stored (unchanged) */
	const char *error;       /* failed: what the vector DB said; collision: the message */
	const char *other;       /* collision: the ability holding the vector */
};

/*
 * A registration's answer: either `pg` (the write failed: pg->unavailable for
 * 503), or, in vector-DB-only mode with vdb != VDB_OK, the push's failure, or
 * the items. Everything is valid during the callback only.
 */
struct outbox_answer {
	const struct pg_outcome *pg;
	enum vdb_status vdb;
	const char *vdb_error;
	const struct outbox_item *items;
	size_t n;
};

typedef void (*outbox_register_fn)(const struct outbox_answer *a, void *arg);

/* A delete's answer: `pg` on failure; else found, and deleted (synced) or pending_delete. */
struct outbox_deleted {
	const struct pg_outcome *pg;
	bool found;
	const char *sync_state;
};

typedef void (*outbox_delete_fn)(const struct outbox_deleted *d, void *arg);

/*
 * A restore page pushed and recorded: `synced` settled, `failed` refused or
 * given up, `deferred` left to the outbox (another push of it runs, it is in
 * doubt, or it failed for now), `unavailable` why the vector DB could not be
 * reached (NULL: it could).
 */
struct outbox_page {
	size_t synced, failed, deferred;
	const char *unavailable;
};

/* The page was claimed: `rows` of them up to `last_id` (0 rows: the table is done), or `pg` failed. */
typedef void (*outbox_claimed_fn)(size_t rows, const char *last_id, const struct pg_outcome *pg, void *arg);
typedef void (*outbox_page_fn)(const struct outbox_page *p, void *arg);

/* A row a restore must not push: true, with `why` it is failed instead. */
typedef bool (*outbox_skip_fn)(const char *ability_id, char *why, size_t whylen, void *arg);

struct outbox_stats {
	uint64_t pushed, deleted, failed, claimed, claims;
	uint64_t idle_claims;       /* claims that found nothing due */
	uint64_t coalesced;         /* pushes that waited for another of the same ability */
	uint64_t superseded;        /* outcomes a newer generation overtook */
	uint64_t ambiguous;         /* pushes with a call that may have landed unbeknown */
	uint64_t verifications;     /* rows verified after their doubt window */
	uint64_t verified_by_read;  /* ... of which a read-back matched: nothing written */
	uint64_t repaired;          /* ... of which the vector was written again */
	int in_flight;
	struct histogram sync_lag;  /* acknowledged -> in the vector DB (synced or deleted), seconds */
};

struct outbox;

/* store may be NULL: vector-DB-only mode. */
struct outbox *outbox_new(struct event_base *base, struct vdb *v, struct store *s, const struct outbox_opts *o);

/*
 * Stops everything at once (teardown): no new pushes, claims or records;
 * pushes still on the wire settle their callers when cancelled. Their rows
 * keep their leases and are taken over, in doubt, by any replica.
 */
void outbox_close(struct outbox *ob);
void outbox_free(struct outbox *ob);

/*
 * Writes abilities (taken over: freed by the outbox) and pushes what the write
 * changed. `done` runs once: when every push is over, or after wait_ms with
 * what is known then (the pushes go on).
 */
void outbox_register(struct outbox *ob, struct ability *items, size_t n, const char *trace, long wait_ms,
		     outbox_register_fn done, void *arg);

/* Deletes an ability: tombstone first, then its vectors; `done` as above. */
void outbox_delete(struct outbox *ob, const char *ability_id, const char *trace, long wait_ms,
		   outbox_delete_fn done, void *arg);

/*
 * Claims the next restore page in (after, upto] (every mirror row, made pending
 * and leased: see store_claim_page) and pushes it: `claimed` once the page is
 * known (the next one can be claimed then), `done` once it is recorded (not
 * when `claimed` said 0 rows or a failure).
 */
void outbox_restore_page(struct outbox *ob, const char *after, const char *upto, const char *service, int limit,
			 const char *trace, outbox_skip_fn skip, outbox_claimed_fn claimed, outbox_page_fn done, void *arg);

/*
 * A service's full set, staged under set_id (store_stage): with dry_run the
 * plan; else applied in one statement, and what it changed is left to the
 * retry worker, woken at once. The statement takes no lease (a push of one
 * of its rows in flight keeps the one it has), so nothing here lets go of a
 * lease a later write of this replica pushes under.
 */
void outbox_apply_set(struct outbox *ob, const char *set_id, const char *service, bool dry_run, store_set_fn done,
		      void *arg);

void outbox_start_worker(struct outbox *ob);
void outbox_stop_worker(struct outbox *ob);

/*
 * Paused (POST /v1/sync/pause, for every replica through Postgres): the worker
 * claims nothing and writes and deletes are acknowledged without a push (202,
 * pending); pushes already on their way finish. Resumed, the worker takes
 * what waited; what a paused write leased, once its lease (SYNC_LEASE) runs out.
 */
void outbox_set_paused(struct outbox *ob, bool paused);
bool outbox_paused(const struct outbox *ob);

/* Anything still on its way (a push, a claim, an outcome to record)? */
bool outbox_busy(const struct outbox *ob);

void outbox_get_stats(const struct outbox *ob, struct outbox_stats *out);

/* The delay before a row's next attempt: full jitter under min(max, base * 2^(attempt-1)). */
long outbox_backoff_ms(const struct outbox_opts *o, int attempt);

/* The quarantine window when none is configured: how long a request may still land after we gave up. */
long outbox_default_quarantine_ms(long vdb_timeout_ms);

#endif
