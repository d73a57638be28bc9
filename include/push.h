/*
 * push.h - getting abilities to the vector DB, and recording that they got there.
 *
 * Two ways in. A request that wrote abilities pushes them at once, with the
 * exact tokens the client sent, and learns whether the vector DB holds them
 * (201) or not yet (202). The retry worker claims due rows from the outbox
 * (sync_state, FOR UPDATE SKIP LOCKED, leased so replicas share the work),
 * rebuilds them from the mirror and pushes them again, with exponential backoff
 * and full jitter between a row's attempts; after max_attempts a row is
 * `failed` until `abilitysync sync retry-failed`.
 *
 * Either way the outcome is recorded against the generation that was pushed: a
 * newer write that raced in stays pending. Outcomes are recorded in groups,
 * one statement for everything that finished meanwhile.
 *
 * Without Postgres (vector-DB-only mode) pushes go straight to the vector DB
 * and nothing is recorded.
 */
#ifndef ABILITYSYNC_PUSH_H
#define ABILITYSYNC_PUSH_H

#include "ability.h"
#include "store.h"
#include "vdb.h"

struct push_opts {
	long interval_ms;     /* how often the worker looks for due rows */
	int claim_max;        /* rows per claim */
	long lease_s;         /* how long a claimed row is ours */
	long backoff_ms;      /* first delay between a row's attempts; doubles */
	long backoff_max_ms;
	size_t dim;
};

/* Per item: pushed or not. `error` explains the first failure (NULL when all went). */
typedef void (*push_fn)(const bool *ok, size_t n, const char *error, enum vdb_status status, void *arg);

struct pusher_stats {
	uint64_t pushed, failed, deleted, claimed, claims;
	uint64_t idle_claims;  /* claims that found nothing due */
	int in_flight;
};

struct pusher;

/* store may be NULL: vector-DB-only mode. */
struct pusher *pusher_new(struct event_base *base, struct vdb *v, struct store *s, const struct push_opts *o);
void pusher_free(struct pusher *p);

/* Pushes freshly written abilities (they must stay valid until `done`). writes: NULL without Postgres. */
void pusher_push(struct pusher *p, const struct ability *items, const struct write_result *writes, size_t n,
		 push_fn done, void *arg);

/* Deletes an ability's vector after its row was deleted (generation from the delete). */
void pusher_delete(struct pusher *p, const char *ability_id, const char *blob, int64_t vector_id, int64_t generation,
		   push_fn done, void *arg);

void pusher_start_worker(struct pusher *p);
void pusher_stop_worker(struct pusher *p);

/* Anything still on its way (a push, a claim, an outcome to record)? */
bool pusher_busy(const struct pusher *p);

void pusher_get_stats(const struct pusher *p, struct pusher_stats *out);

/* The delay before a row's next attempt: full jitter under min(max, base * 2^(attempt-1)). */
long push_backoff_ms(const struct push_opts *o, int attempt);

#endif
