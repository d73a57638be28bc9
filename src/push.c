#include "push.h"

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMP "push"

/* One ability on its way: a vector to add and/or vectors to delete. */
struct push_item {
	const char *ability_id;
	const char *blob;
	int64_t vector_id;
	int64_t generation;
	const struct ability *ability; /* NULL: nothing to add (a delete, or a row that cannot be pushed) */
	bool may_exist;
	char *stale;                   /* "blob vector_id,..." to delete, or NULL */
	int attempt;
	bool add_ok, deletes_ok;
	bool permanent;
	char error[512];
};

/* An outcome waiting to be recorded; the pusher owns its strings. */
struct outcome {
	char *ability_id, *content_hash, *stale, *error;
	int64_t generation;
	long retry_in_ms;
	bool permanent;
};

struct push_op {
	struct pusher *p;
	struct push_item *items;
	size_t n;
	size_t pending;          /* vector DB operations still running */
	enum vdb_status status;  /* of the first failure */
	push_fn done;
	void *arg;
	bool record;             /* write outcomes to the store */
	struct ability *rows;    /* claimed rows rebuilt as abilities (the worker's) */
	size_t nrows;
	char **owned;            /* strings the worker's items point to */
	size_t nowned;
};

struct pusher {
	struct event_base *base;
	struct vdb *v;
	struct store *s;
	struct push_opts o;
	struct event *tick;
	bool worker_on;
	bool claiming;
	int in_flight;           /* push operations */
	struct outcome *queue;   /* outcomes waiting to be recorded */
	size_t nqueue, cap;
	size_t recording;        /* outcomes in the statement in flight */
	struct pusher_stats stats;
};

long push_backoff_ms(const struct push_opts *o, int attempt)
{
	long cap = o->backoff_ms;
	int i;

	for (i = 1; i < attempt && cap < o->backoff_max_ms; i++)
		cap *= 2;
	if (cap > o->backoff_max_ms)
		cap = o->backoff_max_ms;
	return (long)clock_jitter_ms((uint32_t)cap);
}

/* ---- recording outcomes, grouped ------------------------------------------------ */

static void record_next(struct pusher *p);

static void free_outcome(struct outcome *d)
{
	free(d->ability_id);
	free(d->content_hash);
	free(d->stale);
	free(d->error);
}

static void on_recorded(const struct pg_outcome *o, void *arg)
{
	struct pusher *p = arg;
	size_t i;

	if (!o->res)
		log_warn(COMP, "recording %zu push outcomes failed (%s); those rows stay pending and are pushed again",
			 p->recording, o->error);
	for (i = 0; i < p->recording; i++)
		free_outcome(&p->queue[i]);
	memmove(p->queue, p->queue + p->recording, (p->nqueue - p->recording) * sizeof(*p->queue));
	p->nqueue -= p->recording;
	p->recording = 0;
	record_next(p);
}

static void record_next(struct pusher *p)
{
	struct push_done *view;
	size_t i;

	if (p->recording || p->nqueue == 0 || !p->s)
		return;
	p->recording = p->nqueue;
	view = xcalloc(p->recording, sizeof(*view));
	for (i = 0; i < p->recording; i++) {
		const struct outcome *d = &p->queue[i];

		view[i] = (struct push_done){d->ability_id, d->generation, d->content_hash, d->stale, d->error,
					     d->retry_in_ms, d->permanent};
	}
	store_finish_pushes(p->s, view, p->recording, on_recorded, p);
	free(view);
}

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static void record(struct pusher *p, const struct push_item *it, const char *content_hash)
{
	struct outcome *d;
	bool ok = it->add_ok && it->deletes_ok;

	p->queue = xgrow(p->queue, &p->cap, p->nqueue + 1, sizeof(*p->queue));
	d = &p->queue[p->nqueue++];
	memset(d, 0, sizeof(*d));
	d->ability_id = xstrdup(it->ability_id);
	d->generation = it->generation;
	d->content_hash = ok ? dup_or_null(content_hash) : NULL;
	d->stale = ok ? dup_or_null(it->stale) : NULL;
	d->error = ok ? NULL : xstrdup(it->error[0] ? it->error : "not pushed");
	d->retry_in_ms = push_backoff_ms(&p->o, it->attempt);
	d->permanent = it->permanent;
}

/* ---- one push operation ------------------------------------------------------------ */

static void op_finish(struct push_op *op)
{
	struct pusher *p = op->p;
	bool *ok = xcalloc(op->n ? op->n : 1, sizeof(bool));
	const char *first_error = NULL;
	size_t i;

	for (i = 0; i < op->n; i++) {
		struct push_item *it = &op->items[i];

		ok[i] = it->add_ok && it->deletes_ok;
		if (ok[i]) {
			p->stats.pushed += it->ability != NULL;
			p->stats.deleted += it->ability == NULL;
		} else {
			p->stats.failed++;
			if (!first_error)
				first_error = it->error;
		}
		if (op->record)
			record(p, it, it->ability ? it->ability->content_hash : NULL);
	}
	record_next(p);
	p->in_flight--;
	if (op->done)
		op->done(ok, op->n, first_error, first_error ? op->status : VDB_OK, op->arg);
	free(ok);
	for (i = 0; i < op->n; i++)
		free(op->items[i].stale);
	for (i = 0; i < op->nrows; i++)
		ability_free(&op->rows[i]);
	for (i = 0; i < op->nowned; i++)
		free(op->owned[i]);
	free(op->owned);
	free(op->rows);
	free(op->items);
	free(op);
}

static void note_failure(struct push_op *op, struct push_item *it, const struct vdb_result *r)
{
	if (!it->error[0])
		snprintf(it->error, sizeof(it->error), "%s", r->error);
	if (op->status == VDB_OK)
		op->status = r->status;
}

static void op_step_done(struct push_op *op)
{
	if (--op->pending == 0)
		op_finish(op);
}

/* An add covers the items of one blob; which ones, in order, is kept here. */
struct add_ctx {
	struct push_op *op;
	size_t *items;
	size_t n;
};

static void on_added(const struct vdb_result *r, void *arg)
{
	struct add_ctx *c = arg;
	size_t i;

	for (i = 0; i < c->n; i++) {
		struct push_item *it = &c->op->items[c->items[i]];

		it->add_ok = r->ok && i < r->n && r->ok[i];
		if (!it->add_ok)
			note_failure(c->op, it, r);
	}
	op_step_done(c->op);
	free(c->items);
	free(c);
}

struct delete_ctx {
	struct push_op *op;
	size_t item;
};

static void on_deleted(const struct vdb_result *r, void *arg)
{
	struct delete_ctx *c = arg;
	struct push_item *it = &c->op->items[c->item];

	if (r->status != VDB_OK) {
		it->deletes_ok = false;
		note_failure(c->op, it, r);
	}
	op_step_done(c->op);
	free(c);
}

static void start_adds(struct push_op *op)
{
	struct pusher *p = op->p;
	bool *taken = xcalloc(op->n ? op->n : 1, sizeof(bool));
	struct vdb_vector *vecs = xcalloc(op->n ? op->n : 1, sizeof(*vecs));
	size_t i, k;

	/* One add per blob: the items of a service travel together. */
	for (i = 0; i < op->n; i++) {
		struct add_ctx *c;
		size_t n = 0;

		if (taken[i] || !op->items[i].ability)
			continue;
		c = xcalloc(1, sizeof(*c));
		c->op = op;
		c->items = xcalloc(op->n, sizeof(size_t));
		for (k = i; k < op->n; k++) {
			const struct push_item *it = &op->items[k];
			const struct ability *a = it->ability;

			if (taken[k] || !a || strcmp(it->blob, op->items[i].blob) != 0)
				continue;
			taken[k] = true;
			vecs[n] = (struct vdb_vector){a->vector_id, a->embedding, a->embedding_len, a->attributes,
						      a->attributes_len, it->may_exist};
			c->items[n++] = k;
		}
		c->n = n;
		op->pending++;
		vdb_add(p->v, op->items[i].blob, vecs, n, on_added, c);
	}
	free(vecs);
	free(taken);
}

static void start_deletes(struct push_op *op)
{
	size_t i;

	for (i = 0; i < op->n; i++) {
		char *list, *pair, *save = NULL;

		if (!op->items[i].stale)
			continue;
		list = xstrdup(op->items[i].stale);
		for (pair = strtok_r(list, ",", &save); pair; pair = strtok_r(NULL, ",", &save)) {
			struct delete_ctx *c = xcalloc(1, sizeof(*c));
			char *space = strchr(pair, ' ');

			if (!space) {
				free(c);
				continue;
			}
			*space = '\0';
			c->op = op;
			c->item = i;
			op->pending++;
			vdb_delete(op->p->v, pair, strtoll(space + 1, NULL, 10), on_deleted, c);
		}
		free(list);
	}
}

static void op_run(struct push_op *op)
{
	size_t i;

	op->p->in_flight++;
	for (i = 0; i < op->n; i++) {
		struct push_item *it = &op->items[i];

		/* Success is set by on_added; what has nothing to add starts as done. */
		it->add_ok = !it->ability && !it->permanent;
		it->deletes_ok = !it->permanent;
	}
	op->pending = 1; /* held while the requests are started */
	start_adds(op);
	start_deletes(op);
	op_step_done(op);
}

static struct push_op *op_new(struct pusher *p, size_t n, push_fn done, void *arg)
{
	struct push_op *op = xcalloc(1, sizeof(*op));

	op->p = p;
	op->n = n;
	op->items = xcalloc(n ? n : 1, sizeof(*op->items));
	op->done = done;
	op->arg = arg;
	op->record = p->s != NULL;
	return op;
}

/* "blob vector_id" of a vector, as the store writes stale lists. */
static char *vector_ref(const char *blob, int64_t vector_id)
{
	struct buf b = BUF_INIT;

	buf_printf(&b, "%s %lld", blob, (long long)vector_id);
	return buf_steal(&b);
}

void pusher_push(struct pusher *p, const struct ability *items, const struct write_result *writes, size_t n,
		 push_fn done, void *arg)
{
	struct push_op *op = op_new(p, n, done, arg);
	size_t i;

	for (i = 0; i < n; i++) {
		struct push_item *it = &op->items[i];
		const struct write_result *w = writes ? &writes[i] : NULL;

		it->ability = &items[i];
		it->ability_id = items[i].ability_id;
		it->blob = items[i].blob_id;
		it->vector_id = items[i].vector_id;
		it->generation = w ? w->generation : 0;
		it->attempt = 1;
		/* A vector can only be there if a sync state says it was ever pushed and not deleted. */
		it->may_exist = !w || (w->state[0] && strcmp(w->state, "deleted") != 0);
		if (w && w->old_blob[0] && strcmp(w->old_blob, items[i].blob_id) != 0)
			it->stale = vector_ref(w->old_blob, items[i].vector_id);
	}
	op_run(op);
}

void pusher_delete(struct pusher *p, const char *ability_id, const char *blob, int64_t vector_id, int64_t generation,
		   push_fn done, void *arg)
{
	struct push_op *op = op_new(p, 1, done, arg);
	struct push_item *it = &op->items[0];

	op->owned = xcalloc(1, sizeof(char *));
	op->owned[op->nowned++] = xstrdup(ability_id);
	it->ability_id = op->owned[0];
	it->blob = blob;
	it->vector_id = vector_id;
	it->generation = generation;
	it->attempt = 1;
	it->stale = vector_ref(blob, vector_id);
	op_run(op);
}

/* ---- the retry worker ---------------------------------------------------------------- */

static void schedule_tick(struct pusher *p, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	if (p->worker_on)
		evtimer_add(p->tick, &tv);
}

static void on_worker_pushed(const bool *ok, size_t n, const char *error, enum vdb_status st, void *arg)
{
	struct pusher *p = arg;
	size_t i, good = 0;

	(void)st;
	for (i = 0; i < n; i++)
		good += ok[i];
	if (good < n)
		log_warn(COMP, "retry worker: %zu of %zu pushed; first failure: %s", good, n, error ? error : "?");
	else
		log_debug(COMP, "retry worker: pushed %zu", n);
	p->claiming = false;
	/* A full claim means more is due: go on at once, else wait for the next period. */
	schedule_tick(p, n == (size_t)p->o.claim_max ? 0 : p->o.interval_ms);
}

static char *keep(struct push_op *op, const char *s)
{
	char *copy = xstrdup(s);

	op->owned[op->nowned++] = copy;
	return copy;
}

/* Turns one claimed row into a push item: an add, a delete, or a row that cannot be pushed. */
static void item_from_row(struct push_op *op, PGresult *res, int r, struct push_item *it)
{
	const char *state = PQgetvalue(res, r, 2);
	bool gone = PQgetisnull(res, r, 10); /* no abilities row left */
	struct ability_error err;
	struct ability *a = &op->rows[op->nrows];

	it->ability_id = keep(op, PQgetvalue(res, r, 0));
	it->generation = strtoll(PQgetvalue(res, r, 1), NULL, 10);
	it->blob = keep(op, PQgetvalue(res, r, 3));
	it->vector_id = strtoll(PQgetvalue(res, r, 4), NULL, 10);
	it->attempt = atoi(PQgetvalue(res, r, 6));
	it->may_exist = true;
	if (!PQgetisnull(res, r, 12))
		it->stale = xstrdup(PQgetvalue(res, r, 12));
	if (strcmp(state, "pending_delete") == 0 || gone) {
		/* The mirror is the source of truth: no row, no vector. */
		if (!it->stale)
			it->stale = vector_ref(it->blob, it->vector_id);
		else if (strcmp(state, "pending_delete") != 0) {
			char *more = vector_ref(it->blob, it->vector_id);
			struct buf b = BUF_INIT;

			buf_printf(&b, "%s,%s", it->stale, more);
			free(more);
			free(it->stale);
			it->stale = buf_steal(&b);
		}
		return;
	}
	if (!ability_from_row(it->ability_id, PQgetvalue(res, r, 7), PQgetvalue(res, r, 8), PQgetvalue(res, r, 9),
			      PQgetvalue(res, r, 10), PQgetvalue(res, r, 11), op->p->o.dim, a, &err)) {
		snprintf(it->error, sizeof(it->error), "the mirror row cannot be pushed: %s", err.message);
		it->permanent = true;
		return;
	}
	op->nrows++;
	it->ability = a;
	if (strcmp(it->blob, a->blob_id) != 0) {
		/* service_name changed behind our back: the vector moves, the old one goes. */
		char *old = vector_ref(it->blob, it->vector_id);

		if (it->stale) {
			struct buf b = BUF_INIT;

			buf_printf(&b, "%s,%s", it->stale, old);
			free(old);
			free(it->stale);
			old = buf_steal(&b);
		}
		it->stale = old;
	}
	it->blob = a->blob_id;
}

static void on_claimed(const struct pg_outcome *o, void *arg)
{
	struct pusher *p = arg;
	struct push_op *op;
	int r, n;

	if (!o->res) {
		log_debug(COMP, "retry worker: claim failed: %s", o->error);
		p->claiming = false;
		schedule_tick(p, p->o.interval_ms);
		return;
	}
	n = PQntuples(o->res);
	if (n == 0) {
		p->stats.idle_claims++;
		p->claiming = false;
		schedule_tick(p, p->o.interval_ms);
		return;
	}
	p->stats.claims++;
	p->stats.claimed += (uint64_t)n;
	op = op_new(p, (size_t)n, on_worker_pushed, p);
	op->rows = xcalloc((size_t)n, sizeof(*op->rows));
	op->owned = xcalloc((size_t)n * 2, sizeof(char *));
	for (r = 0; r < n; r++)
		item_from_row(op, o->res, r, &op->items[r]);
	log_debug(COMP, "retry worker: claimed %d", n);
	op_run(op);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct pusher *p = arg;

	(void)fd, (void)what;
	if (!p->worker_on || p->claiming || !p->s)
		return;
	p->claiming = true;
	store_claim(p->s, p->o.claim_max, p->o.lease_s, on_claimed, p);
}

void pusher_start_worker(struct pusher *p)
{
	p->worker_on = p->s != NULL;
	schedule_tick(p, p->o.interval_ms);
}

void pusher_stop_worker(struct pusher *p)
{
	p->worker_on = false;
	evtimer_del(p->tick);
}

bool pusher_busy(const struct pusher *p)
{
	return p->in_flight > 0 || p->claiming || p->nqueue > 0;
}

void pusher_get_stats(const struct pusher *p, struct pusher_stats *out)
{
	*out = p->stats;
	out->in_flight = p->in_flight;
}

struct pusher *pusher_new(struct event_base *base, struct vdb *v, struct store *s, const struct push_opts *o)
{
	struct pusher *p = xcalloc(1, sizeof(*p));

	p->base = base;
	p->v = v;
	p->s = s;
	p->o = *o;
	p->tick = evtimer_new(base, on_tick, p);
	return p;
}

void pusher_free(struct pusher *p)
{
	size_t i;

	if (!p)
		return;
	event_free(p->tick);
	for (i = 0; i < p->nqueue; i++)
		free_outcome(&p->queue[i]);
	free(p->queue);
	free(p);
}
