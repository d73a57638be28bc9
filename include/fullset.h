/*
 * fullset.h - a service's full set (PUT /v1/services/{service}/abilities):
 * "make this service's abilities exactly these".
 *
 * The body is read a group of abilities at a time: each group is checked,
 * staged in Postgres (store_stage) and let go before the next is parsed, so
 * the memory a set takes beyond its request body is one group's
 * (FULLSET_GROUP_BYTES), however many thousands it holds. Once all are staged,
 * one statement plans it (dry run) or applies it (outbox_apply_set): the
 * writes and the deletes commit together or not at all. A set with a bad
 * ability changes nothing, and every bad one is named.
 */
#ifndef ABILITYSYNC_FULLSET_H
#define ABILITYSYNC_FULLSET_H

#include "ability.h"
#include "outbox.h"
#include "store.h"

#define FULLSET_GROUP_BYTES (8u << 20) /* parsed abilities held at once, about */

struct fullset_answer {
	const struct ability_error *refused; /* the set is not acceptable (nothing changed) */
	const struct pg_outcome *pg;         /* Postgres failed it (nothing changed) */
	const struct set_row *rows;          /* otherwise: each ability and its action, by ability_id */
	size_t n;
	size_t count;                        /* abilities in the set */
};
typedef void (*fullset_fn)(const struct fullset_answer *a, void *arg);

struct event_base;

struct fullset_opts {
	struct event_base *base; /* a set refused is read on a group per turn of its loop */
	const char *service;
	size_t dim;
	size_t group_max;        /* abilities staged per statement, at most */
	bool dry_run;
	const char *trace;       /* the request id, for the log */
};

/* `body` must stay valid until `done`, which runs once. */
void fullset_run(struct store *st, struct outbox *ob, const char *body, size_t len, const struct fullset_opts *o,
		 fullset_fn done, void *arg);

#endif
