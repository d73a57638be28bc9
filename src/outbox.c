#include "outbox.h"

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "sync_rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMP "outbox"
#define RECORD_RETRY_MS 1000   /* a failed recording is tried again after this, doubling */
#define RECORD_RETRY_MAX_MS 10000
#define RECORD_GATHER_US 1000 /* outcomes of pushes still out are awaited this long, to record them together */
#define RECORD_GATHER_MAX 64
#define TABLE_MIN 64

/* ---- abilities in flight ---------------------------------------------------------------
 *
 * An entry exists while a push of its ability is on the wire, being recorded,
 * or about to follow: one per ability per process. A push that finds one
 * queues a waiter and sets `again`; the entry claims the row once more when
 * its push is recorded, and pushes what is current then.
 */

struct reg;

struct waiter {
	struct waiter *next;
	int64_t generation;     /* the caller's write: settled by a push of it or anything newer */
	struct reg *reg;
	size_t item;
};

struct entry {
	struct entry *next;     /* hash chain */
	char *ability_id;
	bool again;             /* claim it again once the push in flight is recorded */
	char *lease;            /* the newest lease a write or claim took while it was busy (not its push's) */
	int64_t lease_gen;      /* the generation it was taken at */
	struct waiter *waiters;
};

struct table {
	struct entry **slots;
	size_t cap, n;
};

/* ---- registrations ---------------------------------------------------------------------- */

/*
 * One caller's write or delete. It lives while its answer is due, while a
 * push reads its abilities, and while its waiters wait (`refs` counts them).
 */
struct reg {
	struct outbox *ob;
	struct ability *items;
	size_t n;
	struct outbox_item *res;
	char **errors;          /* res[i].error, owned */
	char **others;          /* res[i].other, owned */
	size_t waiting;         /* items whose first outcome is not known yet */
	struct event *timer;
	outbox_register_fn done;
	outbox_delete_fn ddone;
	void *arg;
	bool answered;
	int refs;
	char trace[72];
	long wait_ms;
	char *delete_id;        /* a delete */
	bool vdb_only;          /* no Postgres: the answer is the vector DB's verdict */
	enum vdb_status vdb_status;
	char vdb_error[512];
};

/* ---- pushes -------------------------------------------------------------------------------- */

struct item {
	struct entry *e;            /* NULL in vector-DB-only mode */
	const char *ability_id, *blob;
	int64_t vector_id, generation;
	const struct ability *ability; /* NULL: nothing to add (a delete, or a row that cannot be pushed) */
	bool may_exist, doubt, verify, permanent, deleted;
	char *deletes;              /* "blob vector_id,..." to delete, owned */
	const char *lease;          /* the lease it is pushed under, its outcome recorded with (NULL: no Postgres) */
	int attempt;
	/* how it went */
	bool add_ok, deletes_ok, ambiguous, verified, unavailable;
	enum vdb_status status;
	char error[512];
	enum finish_state fin;
};

struct op;
typedef void (*op_recorded_fn)(struct op *op, void *arg);

struct op {
	struct outbox *ob;
	struct item *items;
	size_t n;
	size_t pending;             /* vector DB calls still out */
	size_t unrecorded;          /* items whose outcome is not recorded yet */
	struct vdb_call call;
	char trace[72];
	struct reg *reg;            /* whose abilities the items point to, or NULL */
	struct ability *rows;       /* claimed rows rebuilt (owned) */
	size_t nrows;
	char **owned;               /* strings the items point to */
	size_t nowned, capowned;
	op_recorded_fn recorded;    /* restore pages: once every item is recorded */
	void *recorded_arg;
};

/* An outcome waiting to be recorded. */
struct pending_record {
	struct op *op;
	size_t item;
};

struct outbox {
	struct event_base *base;
	struct vdb *v;
	struct store *s;
	struct outbox_opts o;
	struct table table;
	struct event *tick;
	struct event *record_retry;
	struct event *record_gather;
	bool gather_over;           /* the wait for more outcomes ended: record what there is */
	bool worker_on, claiming, closing;
	bool paused;                /* POST /v1/sync/pause: nothing is pushed, writes are only acknowledged */
	int in_flight;              /* ops */
	int claims_out;             /* follow-up and page claims in flight */
	struct pending_record *queue;
	size_t nqueue, cap;
	size_t recording;           /* outcomes in the statement in flight */
	long record_delay_ms;
	struct outbox_stats stats;
};

static void op_run(struct op *op, int64_t leased_ms);
static void record_next(struct outbox *ob);
static void follow_up(struct outbox *ob, char **ids, size_t n);
static void entry_drop(struct outbox *ob, struct entry *e);
static void give_back(struct outbox *ob, const char *ability_id, const char *lease, int64_t generation);
static void on_given_back(bool released, int64_t generation, const struct pg_outcome *o, void *arg);

long outbox_backoff_ms(const struct outbox_opts *o, int attempt)
{
	long cap = o->backoff_ms;
	int i;

	for (i = 1; i < attempt && cap < o->backoff_max_ms; i++)
		cap *= 2;
	if (cap > o->backoff_max_ms)
		cap = o->backoff_max_ms;
	return (long)clock_jitter_ms((uint32_t)cap);
}

long outbox_default_quarantine_ms(long vdb_timeout_ms)
{
	/* A server still working on a request we gave up on finishes it within a few of our time-outs. */
	long ms = 3 * vdb_timeout_ms;

	return ms < 1000 ? 1000 : ms;
}

/* ---- the table ------------------------------------------------------------------------------ */

static size_t hash_id(const char *s)
{
	size_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

static struct entry *entry_find(struct table *t, const char *id)
{
	struct entry *e;

	if (!t->cap)
		return NULL;
	for (e = t->slots[hash_id(id) & (t->cap - 1)]; e; e = e->next)
		if (strcmp(e->ability_id, id) == 0)
			return e;
	return NULL;
}

static void table_grow(struct table *t)
{
	size_t cap = t->cap ? t->cap * 2 : TABLE_MIN, i;
	struct entry **slots = xcalloc(cap, sizeof(*slots));

	for (i = 0; i < t->cap; i++) {
		struct entry *e = t->slots[i], *next;

		for (; e; e = next) {
			size_t k = hash_id(e->ability_id) & (cap - 1);

			next = e->next;
			e->next = slots[k];
			slots[k] = e;
		}
	}
	free(t->slots);
	t->slots = slots;
	t->cap = cap;
}

static struct entry *entry_add(struct table *t, const char *id)
{
	struct entry *e = xcalloc(1, sizeof(*e));
	size_t k;

	if (t->n + 1 > t->cap / 2)
		table_grow(t);
	e->ability_id = xstrdup(id);
	k = hash_id(id) & (t->cap - 1);
	e->next = t->slots[k];
	t->slots[k] = e;
	t->n++;
	return e;
}

static void entry_remove(struct table *t, struct entry *e)
{
	struct entry **p = &t->slots[hash_id(e->ability_id) & (t->cap - 1)];

	while (*p != e)
		p = &(*p)->next;
	*p = e->next;
	t->n--;
	free(e->ability_id);
	free(e->lease);
	free(e);
}

/* ---- answers ------------------------------------------------------------------------------------ */

static void reg_release(struct reg *r)
{
	size_t i;

	if (--r->refs > 0)
		return;
	if (r->timer)
		event_free(r->timer);
	for (i = 0; i < r->n; i++) {
		if (r->items)
			ability_free(&r->items[i]);
		free(r->errors[i]);
		free(r->others[i]);
	}
	free(r->items);
	free(r->res);
	free(r->errors);
	free(r->others);
	free(r->delete_id);
	free(r);
}

static void reg_answer(struct reg *r)
{
	struct outbox_answer a;
	struct outbox_deleted d;

	if (r->answered)
		return;
	r->answered = true;
	if (r->timer)
		evtimer_del(r->timer);
	if (r->delete_id) {
		memset(&d, 0, sizeof(d));
		d.found = true;
		d.sync_state = r->res[0].sync_state;
		r->ddone(&d, r->arg);
	} else {
		memset(&a, 0, sizeof(a));
		a.items = r->res;
		a.n = r->n;
		a.vdb = r->vdb_status;
		a.vdb_error = r->vdb_error;
		r->done(&a, r->arg);
	}
	reg_release(r);
}

static void on_wait_over(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	reg_answer(arg); /* the pushes go on; the answer says where they stand */
}

static struct reg *reg_new(struct outbox *ob, struct ability *items, size_t n, const char *trace)
{
	struct reg *r = xcalloc(1, sizeof(*r));

	r->ob = ob;
	r->items = items;
	r->n = n;
	r->res = xcalloc(n ? n : 1, sizeof(*r->res));
	r->errors = xcalloc(n ? n : 1, sizeof(char *));
	r->others = xcalloc(n ? n : 1, sizeof(char *));
	r->refs = 1;
	snprintf(r->trace, sizeof(r->trace), "%s", trace ? trace : "");
	return r;
}

static void reg_wait(struct reg *r, long wait_ms)
{
	struct timeval tv = {wait_ms / 1000, (wait_ms % 1000) * 1000};

	if (r->waiting == 0) {
		reg_answer(r);
		return;
	}
	if (wait_ms < 0) /* the answer waits for the pushes, however long */
		return;
	r->timer = evtimer_new(r->ob->base, on_wait_over, r);
	evtimer_add(r->timer, &tv);
}

/* One item's first outcome is known. */
static void reg_settle(struct reg *r, size_t i, const char *sync_state, const char *error)
{
	if (r->answered) /* the answer went; the caller polls GET /v1/abilities/{id} */
		return;
	r->res[i].sync_state = sync_state;
	if (error) {
		free(r->errors[i]);
		r->errors[i] = xstrdup(error);
		r->res[i].error = r->errors[i];
	}
	if (r->waiting > 0 && --r->waiting == 0)
		reg_answer(r);
}

/*
 * A write, delete or claim here took `lease` while the entry was busy: the
 * entry keeps the newest, to give it back if it goes without pushing.
 */
static void entry_hold(struct entry *e, const char *lease, int64_t generation)
{
	if (!lease)
		return;
	free(e->lease);
	e->lease = xstrdup(lease);
	e->lease_gen = generation;
}

static void entry_wait(struct entry *e, struct reg *r, size_t item, int64_t generation)
{
	struct waiter *w = xcalloc(1, sizeof(*w));

	w->generation = generation;
	w->reg = r;
	w->item = item;
	w->next = e->waiters;
	e->waiters = w;
	r->refs++;
}

/*
 * Tells the waiters a push of `generation` settled for: how it went. With
 * generation -1 the entry goes without a push that settles them: each is
 * told its own change is still to be pushed (a delete's: pending_delete,
 * also behind a write's push; a write's: pending, also behind a delete's).
 */
static void entry_notify(struct entry *e, int64_t generation, const char *sync_state, const char *error)
{
	struct waiter **p = &e->waiters;

	while (*p) {
		struct waiter *w = *p;

		if (generation >= 0 && w->generation > generation) {
			p = &w->next;
			continue;
		}
		*p = w->next;
		if (generation < 0)
			sync_state = w->reg->delete_id ? "pending_delete" : "pending";
		reg_settle(w->reg, w->item, sync_state, error);
		reg_release(w->reg);
		free(w);
	}
}

/* ---- one push ------------------------------------------------------------------------------------ */

static char *op_keep(struct op *op, const char *s)
{
	char *copy;

	if (!s)
		return NULL;
	copy = xstrdup(s);
	op->owned = xgrow(op->owned, &op->capowned, op->nowned + 1, sizeof(char *));
	op->owned[op->nowned++] = copy;
	return copy;
}

static struct op *op_new(struct outbox *ob, size_t n, const char *trace)
{
	struct op *op = xcalloc(1, sizeof(*op));

	op->ob = ob;
	op->n = n;
	op->items = xcalloc(n ? n : 1, sizeof(*op->items));
	snprintf(op->trace, sizeof(op->trace), "%s", trace ? trace : "");
	return op;
}

static void op_free(struct op *op)
{
	size_t i;

	for (i = 0; i < op->n; i++)
		free(op->items[i].deletes);
	for (i = 0; i < op->nrows; i++)
		ability_free(&op->rows[i]);
	for (i = 0; i < op->nowned; i++)
		free(op->owned[i]);
	if (op->reg)
		reg_release(op->reg);
	free(op->owned);
	free(op->rows);
	free(op->items);
	free(op);
}

static struct push_facts item_facts(const struct item *it)
{
	return (struct push_facts){.deleted = it->deleted, .permanent = it->permanent, .add_ok = it->add_ok,
				   .deletes_ok = it->deletes_ok, .ambiguous = it->ambiguous, .doubt = it->doubt};
}

static bool item_ok(const struct item *it)
{
	struct push_facts f = item_facts(it);

	return sync_confirmed(&f);
}

static const char *item_sync_state(const struct item *it)
{
	struct push_facts f = item_facts(it);

	return sync_state_after(&f);
}

static void note_failure(struct op *op, struct item *it, const struct vdb_result *r)
{
	struct call_failure f = sync_call_failure(r->status, r->cut_short);

	(void)op;
	if (!it->error[0])
		snprintf(it->error, sizeof(it->error), "%s", r->error);
	it->status = r->status;
	it->unavailable = it->unavailable || f.unavailable;
	it->permanent = it->permanent || f.permanent;
}

static void op_step_done(struct op *op);

/* The vector DB calls are over: tell the waiters, queue the outcomes. */
static void op_pushed(struct op *op)
{
	struct outbox *ob = op->ob;
	size_t i;

	ob->in_flight--;
	for (i = 0; i < op->n; i++) {
		struct item *it = &op->items[i];

		if (item_ok(it)) {
			ob->stats.pushed += !it->deleted;
			ob->stats.deleted += it->deleted;
		} else {
			ob->stats.failed++;
		}
		ob->stats.ambiguous += it->ambiguous;
		if (it->ambiguous)
			log_warn(COMP, "%s%s%s: the vector DB may still apply a call of this push (%s); in doubt for %ld ms, "
				 "then verified", it->ability_id, op->trace[0] ? " for=" : "", op->trace,
				 it->error[0] ? it->error : "answered, after a retry", ob->o.quarantine_ms);
		if (it->e) {
			entry_notify(it->e, it->generation, item_sync_state(it), it->permanent ? it->error : NULL);
		} else if (op->reg) {
			if (!item_ok(it) && op->reg->vdb_status == VDB_OK) {
				op->reg->vdb_status = it->status == VDB_OK ? VDB_UNAVAILABLE : it->status;
				snprintf(op->reg->vdb_error, sizeof(op->reg->vdb_error), "%s", it->error);
			}
			reg_settle(op->reg, i, item_ok(it) ? "synced" : "failed", it->error[0] ? it->error : NULL);
		}
	}
	if (!ob->s || ob->closing) {
		/* Nothing to record: vector-DB-only mode, or going away (the leases say the rest). */
		for (i = 0; i < op->n; i++) {
			struct entry *e = op->items[i].e;

			if (e) {
				entry_notify(e, -1, NULL, NULL);
				entry_remove(&ob->table, e);
			}
		}
		if (op->recorded)
			op->recorded(op, op->recorded_arg);
		op_free(op);
		return;
	}
	op->unrecorded = op->n;
	for (i = 0; i < op->n; i++) {
		ob->queue = xgrow(ob->queue, &ob->cap, ob->nqueue + 1, sizeof(*ob->queue));
		ob->queue[ob->nqueue++] = (struct pending_record){op, i};
	}
	record_next(ob);
}

static void op_step_done(struct op *op)
{
	if (--op->pending == 0)
		op_pushed(op);
}

/* An add covers the items of one blob; which ones, in order, is kept here. */
struct add_ctx {
	struct op *op;
	size_t *items;
	size_t n;
};

static void on_added(const struct vdb_result *r, void *arg)
{
	struct add_ctx *c = arg;
	size_t i;

	for (i = 0; i < c->n; i++) {
		struct item *it = &c->op->items[c->items[i]];

		it->add_ok = r->ok && i < r->n && r->ok[i];
		it->ambiguous = it->ambiguous || (r->maybe && i < r->n && r->maybe[i]);
		if (!it->add_ok)
			note_failure(c->op, it, r);
	}
	op_step_done(c->op);
	free(c->items);
	free(c);
}

struct delete_ctx {
	struct op *op;
	size_t item;
};

static void on_deleted(const struct vdb_result *r, void *arg)
{
	struct delete_ctx *c = arg;
	struct item *it = &c->op->items[c->item];

	it->ambiguous = it->ambiguous || r->ambiguous;
	if (r->status != VDB_OK) {
		it->deletes_ok = false;
		note_failure(c->op, it, r);
	}
	op_step_done(c->op);
	free(c);
}

static bool wants_add(const struct item *it)
{
	return it->ability && !it->permanent && !it->verified;
}

static void start_adds(struct op *op)
{
	struct outbox *ob = op->ob;
	bool *taken = xcalloc(op->n ? op->n : 1, sizeof(bool));
	struct vdb_vector *vecs = xcalloc(op->n ? op->n : 1, sizeof(*vecs));
	size_t i, k;

	/* One add per blob: the items of a service travel together. */
	for (i = 0; i < op->n; i++) {
		struct add_ctx *c;
		size_t n = 0;

		if (taken[i] || !wants_add(&op->items[i]))
			continue;
		c = xcalloc(1, sizeof(*c));
		c->op = op;
		c->items = xcalloc(op->n, sizeof(size_t));
		for (k = i; k < op->n; k++) {
			const struct item *it = &op->items[k];
			const struct ability *a = it->ability;

			if (taken[k] || !wants_add(it) || strcmp(it->blob, op->items[i].blob) != 0)
				continue;
			taken[k] = true;
			vecs[n] = (struct vdb_vector){a->vector_id, a->embedding, a->embedding_len, a->attributes,
						      a->attributes_len, it->may_exist};
			c->items[n++] = k;
		}
		c->n = n;
		op->pending++;
		vdb_add_call(ob->v, &op->call, op->items[i].blob, vecs, n, on_added, c);
	}
	free(vecs);
	free(taken);
}

static void start_deletes(struct op *op)
{
	size_t i;

	for (i = 0; i < op->n; i++) {
		char *list, *pair, *save = NULL;

		if (!op->items[i].deletes || op->items[i].permanent)
			continue;
		list = xstrdup(op->items[i].deletes);
		for (pair = strtok_r(list, ",", &save); pair; pair = strtok_r(NULL, ",", &save)) {
			struct delete_ctx *c;
			char *space = strchr(pair, ' ');

			if (!space)
				continue;
			*space = '\0';
			c = xcalloc(1, sizeof(*c));
			c->op = op;
			c->item = i;
			op->pending++;
			vdb_delete_call(op->ob->v, &op->call, pair, strtoll(space + 1, NULL, 10), on_deleted, c);
		}
		free(list);
	}
}

static void start_pushes(struct op *op)
{
	op->pending++; /* held while the calls start */
	start_adds(op);
	start_deletes(op);
	op_step_done(op);
}

/* ---- verification: reading the vector back --------------------------------------------------- */

struct verify_ctx {
	struct op *op;
	size_t item;
};

static void on_read_back(const struct vdb_result *r, void *arg)
{
	struct verify_ctx *c = arg;
	struct op *op = c->op;
	struct item *it = &op->items[c->item];
	json_t *hash = json_object_get(json_object_get(r->reply, "attributes"), "content_hash");

	switch (sync_readback(r->status, json_is_string(hash) ? json_string_value(hash) : NULL,
			      it->ability->content_hash)) {
	case READBACK_PROVEN:
		it->verified = true;
		it->add_ok = true;
		op->ob->stats.verified_by_read++;
		break;
	case READBACK_UNKNOWN:
		/* Not known either way: try again later (the doubt stays). */
		snprintf(it->error, sizeof(it->error), "verifying: %.490s", r->error);
		it->permanent = false;
		it->verified = false;
		it->status = r->status;
		it->unavailable = true;
		it->add_ok = false;
		it->ability = NULL; /* nothing pushed this time */
		it->deletes_ok = false;
		free(it->deletes);
		it->deletes = NULL;
		it->doubt = true;
		break;
	case READBACK_REWRITE:
		op->ob->stats.repaired++;
		break;
	}
	free(c);
	if (--op->pending == 0)
		start_pushes(op);
}

/* Where the server overwrites, a read-back proves what it holds: verify before writing. */
static void start_verifies(struct op *op)
{
	size_t i;

	op->pending = 1;
	for (i = 0; i < op->n; i++) {
		struct item *it = &op->items[i];
		struct verify_ctx *c;
		enum verify_how how;

		how = sync_verify_how(it->verify, it->permanent, it->ability != NULL, op->ob->o.verify_by_reading);
		if (how == VERIFY_NONE)
			continue;
		op->ob->stats.verifications++;
		if (how == VERIFY_REWRITE) {
			/* A delete is deleted again; elsewhere the row is written again, its delete first. */
			it->may_exist = true;
			op->ob->stats.repaired++;
			continue;
		}
		c = xcalloc(1, sizeof(*c));
		c->op = op;
		c->item = i;
		op->pending++;
		vdb_get_attributes_call(op->ob->v, &op->call, it->blob, it->vector_id, on_read_back, c);
	}
	if (--op->pending == 0)
		start_pushes(op);
}

/*
 * Pushes what op holds. leased_ms is when the statement that leased its rows was
 * sent (pg_outcome.sent_ms): the lease runs from the server's now() of that
 * statement, which is no earlier, so a window counted from the send ends
 * before the lease does however long the statement waited (for a lock, a slow
 * network) or its answer took. Counted from now, it could outlive it (rule 2).
 */
static void op_run(struct op *op, int64_t leased_ms)
{
	struct outbox *ob = op->ob;
	size_t i;

	ob->in_flight++;
	op->call.deadline_ms = leased_ms + sync_call_window_ms(ob->o.lease_ms);
	op->call.trace = op->trace;
	for (i = 0; i < op->n; i++) {
		struct item *it = &op->items[i];

		/* Success is set by the calls; what has nothing to add or delete starts as done. */
		it->add_ok = !it->ability && !it->permanent;
		it->deletes_ok = !it->permanent;
		it->fin = FINISH_PENDING;
	}
	start_verifies(op);
}

/* ---- recording outcomes, grouped ----------------------------------------------------------- */

static void op_item_recorded(struct op *op, size_t i);

static void on_record_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	record_next(arg);
}

static void on_record_gather(evutil_socket_t fd, short what, void *arg)
{
	struct outbox *ob = arg;

	(void)fd, (void)what;
	ob->gather_over = true;
	record_next(ob);
}

static void on_recorded(const enum finish_state *res, const double *lag, size_t n, const struct pg_outcome *o,
			void *arg)
{
	struct outbox *ob = arg;
	size_t i, done = ob->recording;
	struct pending_record *batch;

	ob->recording = 0;
	if (!res || n != done) {
		/*
		 * Not recorded: the rows keep their leases and stay as they were. The
		 * outcomes are kept (an ambiguous one must not be forgotten) and tried
		 * again; the abilities stay busy meanwhile, so nothing overtakes them.
		 */
		if (!ob->closing) {
			struct timeval tv;

			log_warn(COMP, "recording %zu push outcomes failed (%s); trying again in %ld ms", done, o->error,
				 ob->record_delay_ms);
			tv.tv_sec = ob->record_delay_ms / 1000;
			tv.tv_usec = (ob->record_delay_ms % 1000) * 1000;
			evtimer_add(ob->record_retry, &tv);
			ob->record_delay_ms = ob->record_delay_ms * 2 > RECORD_RETRY_MAX_MS ? RECORD_RETRY_MAX_MS
											   : ob->record_delay_ms * 2;
		}
		return;
	}
	ob->record_delay_ms = RECORD_RETRY_MS;
	batch = xcalloc(done ? done : 1, sizeof(*batch));
	memcpy(batch, ob->queue, done * sizeof(*batch));
	memmove(ob->queue, ob->queue + done, (ob->nqueue - done) * sizeof(*ob->queue));
	ob->nqueue -= done;
	for (i = 0; i < done; i++) {
		batch[i].op->items[batch[i].item].fin = res[i];
		if (lag[i] >= 0)
			histogram_observe(&ob->stats.sync_lag, lag[i]);
	}
	for (i = 0; i < done; i++)
		op_item_recorded(batch[i].op, batch[i].item);
	free(batch);
	record_next(ob);
}

/* Why a push failed, as the sync state's last_error keeps it: with the request (or job) behind it. */
static void failure_text(const struct op *op, const struct item *it, char *out, size_t len)
{
	snprintf(out, len, "%.512s%s%.72s%s", it->error[0] ? it->error : "not pushed", op->trace[0] ? " (for=" : "",
		 op->trace, op->trace[0] ? ")" : "");
}

static void record_next(struct outbox *ob)
{
	struct push_done *view;
	char (*why)[600];
	size_t i;

	if (ob->recording || ob->nqueue == 0 || ob->closing || evtimer_pending(ob->record_retry, NULL))
		return;
	/*
	 * Pushes still out end within a moment: their outcomes wait for them and go
	 * in one statement (a statement and a commit for every two or three outcomes
	 * cost Postgres more than the outcomes do). The answers do not wait: they
	 * went when the pushes ended.
	 */
	if (evtimer_pending(ob->record_gather, NULL)) {
		if (ob->nqueue < RECORD_GATHER_MAX)
			return;
		evtimer_del(ob->record_gather);
	} else if (ob->in_flight > 0 && ob->nqueue < RECORD_GATHER_MAX && !ob->gather_over) {
		struct timeval tv = {0, RECORD_GATHER_US};

		evtimer_add(ob->record_gather, &tv);
		return;
	}
	ob->gather_over = false;
	ob->recording = ob->nqueue;
	view = xcalloc(ob->recording, sizeof(*view));
	why = xcalloc(ob->recording, sizeof(*why));
	for (i = 0; i < ob->recording; i++) {
		const struct op *op = ob->queue[i].op;
		const struct item *it = &op->items[ob->queue[i].item];
		bool ok = item_ok(it);

		if (!ok)
			failure_text(op, it, why[i], sizeof(why[i]));

		view[i] = (struct push_done){it->ability_id,
					     it->generation,
					     it->permanent ? PUSH_PERMANENT : ok ? PUSH_OK : PUSH_FAILED,
					     it->ambiguous,
					     ok && !it->ambiguous && !it->doubt,
					     it->deleted,
					     ok && it->ability ? it->ability->content_hash : NULL,
					     ok ? it->deletes : NULL,
					     ok ? NULL : why[i],
					     ok ? 0 : outbox_backoff_ms(&ob->o, it->attempt), /* no random draw when unused */
					     it->lease};
	}
	store_finish_pushes(ob->s, view, ob->recording, on_recorded, ob);
	free(view);
	free(why);
}

/* The entry's push is recorded: push again what came meanwhile, or let it go. */
static void op_item_recorded(struct op *op, size_t i)
{
	struct outbox *ob = op->ob;
	struct item *it = &op->items[i];
	struct entry *e = it->e;

	if (it->fin == FINISH_SUPERSEDED)
		ob->stats.superseded++;
	if (e && (e->again || it->fin == FINISH_SUPERSEDED) && it->fin != FINISH_LOST && !ob->paused) {
		char *id = xstrdup(e->ability_id);

		e->again = false;
		follow_up(ob, &id, 1);
		free(id);
	} else if (e) {
		entry_drop(ob, e);
	}
	it->e = NULL;
	if (--op->unrecorded == 0) {
		if (op->recorded)
			op->recorded(op, op->recorded_arg);
		op_free(op);
	}
}

/* ---- items from claimed rows ---------------------------------------------------------------------- */

/* Turns one claimed row into an item: an add, a delete, or a row that cannot be pushed. */
static void item_from_row(struct op *op, const struct claimed_row *row, struct item *it)
{
	struct ability *a = &op->rows[op->nrows];
	struct ability_error err;

	it->ability_id = op_keep(op, row->ability_id);
	it->generation = row->generation;
	it->blob = op_keep(op, row->blob_id);
	it->vector_id = row->vector_id;
	it->attempt = row->attempts;
	it->may_exist = row->may_exist;
	it->doubt = row->doubt;
	it->verify = row->verify;
	it->deletes = row->deletes ? xstrdup(row->deletes) : NULL;
	it->lease = op_keep(op, row->lease);
	if (strcmp(row->state, "pending_delete") == 0 || row->gone) {
		/* The mirror is the source of truth: no row, no vector. */
		it->deleted = true;
		return;
	}
	if (row->collision) {
		snprintf(it->error, sizeof(it->error), "vector_id collision: vector %lld of blob %s belongs to %s",
			 (long long)row->vector_id, row->blob_id, row->collision);
		it->permanent = true;
		return;
	}
	if (!row->embedding || !ability_from_row(it->ability_id, row->ability_name, row->service_name,
						 row->description, row->embedding, row->metadata, op->ob->o.dim, a, &err)) {
		snprintf(it->error, sizeof(it->error), "the mirror row cannot be pushed: %s",
			 row->embedding ? err.message : "no embedding");
		it->permanent = true;
		return;
	}
	op->nrows++;
	it->ability = a;
	it->blob = a->blob_id;
	it->vector_id = a->vector_id;
}

/* Rows claimed for pushing (this replica holds their leases): push each that is not already on its way. */
static struct op *op_from_rows(struct outbox *ob, const struct claimed_row *rows, size_t n, const char *trace,
			       outbox_skip_fn skip, void *skip_arg, size_t *deferred)
{
	struct op *op = op_new(ob, n, trace);
	size_t r, k = 0;

	op->rows = xcalloc(n ? n : 1, sizeof(*op->rows));
	for (r = 0; r < n; r++) {
		struct entry *e = entry_find(&ob->table, rows[r].ability_id);
		struct item *it = &op->items[k];

		if (!rows[r].leased) {
			(*deferred)++;
			continue;
		}
		if (e) {
			/* Its push is on the way here: it claims the row again when recorded. */
			e->again = true;
			entry_hold(e, rows[r].lease, rows[r].generation);
			ob->stats.coalesced++;
			(*deferred)++;
			continue;
		}
		item_from_row(op, &rows[r], it);
		if (skip && skip(rows[r].ability_id, it->error, sizeof(it->error), skip_arg)) {
			it->permanent = true;
			it->ability = NULL;
		}
		it->e = entry_add(&ob->table, rows[r].ability_id);
		k++;
	}
	op->n = k;
	return op;
}

/* ---- the retry worker and follow-ups ------------------------------------------------------------- */

static void schedule_tick(struct outbox *ob, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	if (ob->worker_on && !ob->closing)
		evtimer_add(ob->tick, &tv);
}

static void on_worker_recorded(struct op *op, void *arg)
{
	size_t i, good = 0;

	(void)arg;
	for (i = 0; i < op->n; i++)
		good += op->items[i].fin == FINISH_SYNCED;
	if (good < op->n)
		log_info(COMP, "retry worker: %zu of %zu settled", good, op->n);
	else
		log_debug(COMP, "retry worker: settled %zu", op->n);
}

/*
 * Rows claimed just before a pause are not pushed: their leases go back at
 * once (give_back), so a write made meanwhile is not left waiting for them to
 * run out, and nothing is pushed under a lease such a write may already have
 * given back.
 */
static void give_back_claimed(struct outbox *ob, const struct claimed_row *rows, size_t n)
{
	size_t r;

	for (r = 0; r < n; r++)
		if (rows[r].leased && rows[r].lease)
			give_back(ob, rows[r].ability_id, rows[r].lease, rows[r].generation);
}

static void on_claimed_due(const struct claimed_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct outbox *ob = arg;
	struct op *op;
	size_t deferred = 0;

	ob->claiming = false;
	if (!o->res) {
		log_debug(COMP, "retry worker: claim failed: %s", o->error);
		schedule_tick(ob, ob->o.interval_ms);
		return;
	}
	if (n == 0 || ob->closing) {
		ob->stats.idle_claims++;
		schedule_tick(ob, ob->o.interval_ms);
		return;
	}
	if (ob->paused) {
		give_back_claimed(ob, rows, n);
		schedule_tick(ob, ob->o.interval_ms);
		return;
	}
	ob->stats.claims++;
	ob->stats.claimed += n;
	op = op_from_rows(ob, rows, n, "retry", NULL, NULL, &deferred);
	op->recorded = on_worker_recorded;
	op->recorded_arg = ob;
	log_debug(COMP, "retry worker: claimed %zu", n);
	/* A full claim means more is due: go on at once, else wait for the next period. */
	schedule_tick(ob, n == (size_t)ob->o.claim_max ? 0 : ob->o.interval_ms);
	if (op->n == 0) {
		op_free(op);
		return;
	}
	op_run(op, o->sent_ms);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct outbox *ob = arg;

	(void)fd, (void)what;
	if (!ob->worker_on || ob->claiming || !ob->s || ob->closing)
		return;
	if (ob->paused) {
		schedule_tick(ob, ob->o.interval_ms);
		return;
	}
	ob->claiming = true;
	store_claim_due(ob->s, ob->o.claim_max, on_claimed_due, ob);
}

struct follow_ctx {
	struct outbox *ob;
	char **ids;
	size_t n;
};

static void on_claimed_again(const struct claimed_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct follow_ctx *x = arg;
	struct outbox *ob = x->ob;
	struct op *op = op_new(ob, n, "follow-up");
	char **again = xcalloc(x->n ? x->n : 1, sizeof(char *));
	size_t i, r, k = 0;

	ob->claims_out--;
	op->rows = xcalloc(n ? n : 1, sizeof(*op->rows));
	op->n = 0;
	for (i = 0; i < x->n; i++) {
		struct entry *e = entry_find(&ob->table, x->ids[i]);
		const struct claimed_row *row = NULL;

		for (r = 0; r < n && !row; r++)
			if (strcmp(rows[r].ability_id, x->ids[i]) == 0)
				row = &rows[r];
		if (!e)
			continue;
		if (!row && e->again && o->res && !ob->closing && !ob->paused) {
			/*
			 * A write of it here committed after this claim's
			 * snapshot, which leaves the row (CLAIM_SAW): claim it
			 * once more, with a snapshot that sees the write.
			 */
			e->again = false;
			again[k++] = x->ids[i];
			continue;
		}
		if (!row || ob->closing || ob->paused) {
			/*
			 * Settled meanwhile, or another replica holds it now
			 * (that one pushes what is current), or paused (the
			 * lease just taken goes back with the entry).
			 */
			if (!o->res)
				log_warn(COMP, "%s: claiming it again failed (%s); the retry worker will", x->ids[i], o->error);
			if (row && ob->paused)
				entry_hold(e, row->lease, row->generation);
			entry_drop(ob, e);
			continue;
		}
		free(e->lease); /* the claim holds it now; its push's recording lets go of it */
		e->lease = NULL;
		item_from_row(op, row, &op->items[op->n]);
		op->items[op->n].e = e;
		op->n++;
		free(x->ids[i]);
		x->ids[i] = NULL;
	}
	if (k)
		follow_up(ob, again, k);
	free(again);
	for (i = 0; i < x->n; i++)
		free(x->ids[i]);
	free(x->ids);
	free(x);
	if (op->n == 0) {
		op_free(op);
		return;
	}
	op_run(op, o->sent_ms);
}

struct drop_ctx {
	struct outbox *ob;
	char *id;
	int64_t generation;     /* the lease's */
};

/*
 * The lease is back. Let go at another generation than it was taken at, the
 * row moved on meanwhile: another replica's write (it pushes nothing while we
 * hold the lease), or one of ours that took the lease again, its answer not
 * in yet (it came on another connection, after this one; it then pushed under
 * the lease let go of). Either way the ability stays busy and is claimed
 * again.
 */
static void on_dropped(bool released, int64_t generation, const struct pg_outcome *o, void *arg)
{
	struct drop_ctx *x = arg;
	struct outbox *ob = x->ob;
	struct entry *e = entry_find(&ob->table, x->id);

	ob->claims_out--;
	on_given_back(released, generation, o, NULL);
	if (e) {
		if ((e->again || (released && generation != x->generation)) && !ob->paused && !ob->closing) {
			char *id = x->id;

			e->again = false;
			follow_up(ob, &id, 1);
		} else if (e->lease && !ob->closing) {
			entry_drop(ob, e); /* a write here took another lease meanwhile (paused): that one goes back too */
		} else {
			entry_notify(e, -1, NULL, NULL);
			entry_remove(&ob->table, e);
		}
	}
	free(x->id);
	free(x);
}

/*
 * Lets an entry go without pushing: a lease a write (or a claim) took while it
 * was busy, not shared with its push, goes back first (else nothing takes the
 * row until it runs out); the entry stays busy until then, so no push of it
 * starts under the lease being given back.
 */
static void entry_drop(struct outbox *ob, struct entry *e)
{
	struct drop_ctx *x;
	const char *id = e->ability_id, *lease = e->lease;

	if (!e->lease || ob->closing) {
		entry_notify(e, -1, NULL, NULL);
		entry_remove(&ob->table, e);
		return;
	}
	x = xcalloc(1, sizeof(*x));
	x->ob = ob;
	x->id = xstrdup(e->ability_id);
	x->generation = e->lease_gen;
	e->again = false;
	ob->claims_out++;
	store_give_back(ob->s, id, lease, on_dropped, x);
	free(e->lease);
	e->lease = NULL;
}

/*
 * Gives back a lease taken here that no push will use. A write of the ability
 * here keeps the lease's token (LEASE_TOKEN in store.c), so the ability stays
 * busy until Postgres has the lease back (entry_drop): a write made meanwhile
 * follows up under a lease of its own. It pushed under this one, and the
 * release let go of it with that push in flight: another replica pushed a
 * newer version and the older push landed last. A push of it on its way here
 * gives the lease back when it goes; while closing no write pushes.
 */
static void give_back(struct outbox *ob, const char *ability_id, const char *lease, int64_t generation)
{
	struct entry *e = entry_find(&ob->table, ability_id);

	if (e) {
		entry_hold(e, lease, generation);
		return;
	}
	if (ob->closing) {
		store_give_back(ob->s, ability_id, lease, on_given_back, NULL);
		return;
	}
	e = entry_add(&ob->table, ability_id);
	entry_hold(e, lease, generation);
	entry_drop(ob, e);
}

/* Claims these abilities again (their entries stay busy) and pushes what is current. */
static void follow_up(struct outbox *ob, char **ids, size_t n)
{
	struct follow_ctx *x = xcalloc(1, sizeof(*x));
	size_t i;

	x->ob = ob;
	x->n = n;
	x->ids = xcalloc(n ? n : 1, sizeof(char *));
	for (i = 0; i < n; i++)
		x->ids[i] = xstrdup(ids[i]);
	ob->claims_out++;
	store_claim_ids(ob->s, (const char *const *)x->ids, n, on_claimed_again, x);
}

/* ---- registrations ----------------------------------------------------------------------------------- */

static enum outbox_status status_of(const struct write_result *w)
{
	switch (w->outcome) {
	case WRITE_UNCHANGED: return OB_UNCHANGED;
	case WRITE_COLLISION: return OB_COLLISION;
	case WRITE_REFUSED: return OB_REFUSED;
	case WRITE_WRITTEN: break;
	}
	if (w->repaired)
		return OB_REPAIRED;
	return w->state[0] && strcmp(w->state, "deleted") != 0 ? OB_UPDATED : OB_CREATED;
}

static const char *stored_state(const char *state)
{
	static const char *const known[] = {"pending", "synced", "pending_delete", "deleted", "failed"};
	size_t i;

	for (i = 0; i < ARRAY_LEN(known); i++)
		if (strcmp(state, known[i]) == 0)
			return known[i];
	return "pending";
}

static void on_given_back(bool released, int64_t generation, const struct pg_outcome *o, void *arg)
{
	(void)released, (void)generation, (void)arg;
	if (!o->res)
		log_debug(COMP, "letting go of unused leases failed (%s): they run out by themselves (SYNC_LEASE)",
			  o->error);
}

/*
 * May this replica push what it just leased? Not while paused or closing; then
 * the lease goes back (give_back). No vector DB call was made under it, so
 * whoever pushes the row later takes it over without doubt.
 */
static bool may_push(struct outbox *ob, const char *ability_id, const char *lease, int64_t generation)
{
	if (!ob->paused && !ob->closing)
		return true;
	if (lease)
		give_back(ob, ability_id, lease, generation);
	return false;
}

/* The write is committed: answer what needs no push, push what this replica may. */
static void on_written(const struct write_result *res, size_t n, const struct pg_outcome *o, void *arg)
{
	struct reg *r = arg;
	struct outbox *ob = r->ob;
	struct op *op;
	size_t i, k = 0;

	if (!res) {
		struct outbox_answer a = {o, VDB_OK, NULL, NULL, 0};

		r->answered = true;
		r->done(&a, r->arg);
		reg_release(r);
		return;
	}
	op = op_new(ob, n, r->trace);
	for (i = 0; i < n; i++) {
		const struct write_result *w = &res[i];
		struct entry *e;

		r->res[i].status = status_of(w);
		if (w->outcome == WRITE_COLLISION) {
			r->others[i] = xstrdup(w->other);
			r->res[i].other = r->others[i];
		}
		if (w->outcome != WRITE_WRITTEN) {
			r->res[i].sync_state = stored_state(w->state);
			continue;
		}
		r->res[i].sync_state = "pending";
		if (w->leased && (e = entry_find(&ob->table, r->items[i].ability_id)) != NULL)
			entry_hold(e, w->lease, w->generation);
		if (!w->leased || !may_push(ob, r->items[i].ability_id, w->lease, w->generation))
			continue; /* another replica's push of it runs (that one pushes what is current), or none may */
		r->waiting++;
		if ((e = entry_find(&ob->table, r->items[i].ability_id)) != NULL) {
			/* A push of it is on the way here: this write follows it. */
			ob->stats.coalesced++;
			e->again = true;
			entry_wait(e, r, i, w->generation);
			continue;
		}
		e = entry_add(&ob->table, r->items[i].ability_id);
		entry_wait(e, r, i, w->generation);
		op->items[k] = (struct item){.e = e,
					     .ability_id = r->items[i].ability_id,
					     .blob = r->items[i].blob_id,
					     .vector_id = r->items[i].vector_id,
					     .generation = w->generation,
					     .ability = &r->items[i],
					     .may_exist = w->may_exist,
					     .doubt = w->doubt,
					     .deletes = w->stale ? xstrdup(w->stale) : NULL,
					     .lease = op_keep(op, w->lease),
					     .attempt = 1};
		k++;
	}
	op->n = k;
	if (k) {
		op->reg = r;
		r->refs++;
		op_run(op, o->sent_ms);
	} else {
		op_free(op);
	}
	reg_wait(r, r->wait_ms);
}

/* Without Postgres: push as it comes; the answer is the vector DB's verdict. */
static void register_without_postgres(struct outbox *ob, struct reg *r)
{
	struct op *op = op_new(ob, r->n, r->trace);
	size_t i;

	r->vdb_only = true;
	for (i = 0; i < r->n; i++) {
		op->items[i] = (struct item){.ability_id = r->items[i].ability_id,
					     .blob = r->items[i].blob_id,
					     .vector_id = r->items[i].vector_id,
					     .ability = &r->items[i],
					     .may_exist = true,
					     .attempt = 1};
		r->res[i] = (struct outbox_item){OB_WRITTEN, "pending", NULL, NULL};
	}
	r->waiting = r->n;
	op->reg = r;
	r->refs++;
	op_run(op, clock_mono_ms()); /* no lease: the window is only a bound on the calls */
	reg_wait(r, -1);
}

void outbox_register(struct outbox *ob, struct ability *items, size_t n, const char *trace, long wait_ms,
		     outbox_register_fn done, void *arg)
{
	struct reg *r = reg_new(ob, items, n, trace);

	r->done = done;
	r->arg = arg;
	r->wait_ms = wait_ms;
	if (!ob->s) {
		register_without_postgres(ob, r);
		return;
	}
	store_write(ob->s, items, n, on_written, r);
}

static void on_store_deleted(const struct delete_result *d, const struct pg_outcome *o, void *arg)
{
	struct reg *r = arg;
	struct outbox *ob = r->ob;
	struct entry *e;
	struct op *op;

	if (!d || !d->found) {
		struct outbox_deleted a = {d ? NULL : o, false, NULL};

		r->answered = true;
		r->ddone(&a, r->arg);
		reg_release(r);
		return;
	}
	r->res[0].sync_state = "pending_delete";
	if (d->leased && (e = entry_find(&ob->table, r->delete_id)) != NULL)
		entry_hold(e, d->lease, d->generation);
	if (d->leased && may_push(ob, r->delete_id, d->lease, d->generation)) {
		r->waiting = 1;
		if ((e = entry_find(&ob->table, r->delete_id)) != NULL) {
			/* A push of it is on the way here: the delete follows it, never the other way round. */
			ob->stats.coalesced++;
			e->again = true;
			entry_wait(e, r, 0, d->generation);
		} else {
			e = entry_add(&ob->table, r->delete_id);
			entry_wait(e, r, 0, d->generation);
			op = op_new(ob, 1, r->trace);
			op->items[0] = (struct item){.e = e,
						     .ability_id = op_keep(op, r->delete_id),
						     .blob = op_keep(op, d->blob_id),
						     .vector_id = d->vector_id,
						     .generation = d->generation,
						     .doubt = d->doubt,
						     .deleted = true,
						     .deletes = d->deletes ? xstrdup(d->deletes) : NULL,
						     .lease = op_keep(op, d->lease),
						     .attempt = 1};
			op_run(op, o->sent_ms);
		}
	}
	reg_wait(r, r->wait_ms);
}

void outbox_delete(struct outbox *ob, const char *ability_id, const char *trace, long wait_ms,
		   outbox_delete_fn done, void *arg)
{
	struct reg *r = reg_new(ob, NULL, 1, trace);

	r->ddone = done;
	r->arg = arg;
	r->wait_ms = wait_ms;
	r->delete_id = xstrdup(ability_id);
	store_delete(ob->s, ability_id, on_store_deleted, r);
}

/* ---- restore pages ------------------------------------------------------------------------------------ */

struct page_ctx {
	struct outbox *ob;
	outbox_claimed_fn claimed;
	outbox_page_fn done;
	void *arg;
	outbox_skip_fn skip;
	char trace[72];
	struct outbox_page page;
	char unavailable[512];
};

static void on_page_recorded(struct op *op, void *arg)
{
	struct page_ctx *x = arg;
	size_t i;

	for (i = 0; i < op->n; i++) {
		const struct item *it = &op->items[i];

		if (it->fin == FINISH_SYNCED) {
			x->page.synced++;
		} else if (it->fin == FINISH_FAILED) {
			x->page.failed++;
		} else {
			x->page.deferred++;
			if (it->unavailable && !x->unavailable[0])
				snprintf(x->unavailable, sizeof(x->unavailable), "%s", it->error);
		}
	}
	x->page.unavailable = x->unavailable[0] ? x->unavailable : NULL;
	x->done(&x->page, x->arg);
	free(x);
}

static void on_page_claimed(const struct claimed_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct page_ctx *x = arg;
	struct outbox *ob = x->ob;
	struct op *op;

	ob->claims_out--;
	x->claimed(o->res ? n : 0, n ? rows[n - 1].ability_id : NULL, o->res ? NULL : o, x->arg);
	if (!o->res || n == 0) {
		free(x);
		return;
	}
	op = op_from_rows(ob, rows, n, x->trace, x->skip, x->arg, &x->page.deferred);
	op->recorded = on_page_recorded;
	op->recorded_arg = x;
	if (op->n == 0 || ob->closing) {
		op->unrecorded = 0;
		on_page_recorded(op, x);
		op->recorded = NULL;
		op_free(op);
		return;
	}
	op_run(op, o->sent_ms);
}

void outbox_restore_page(struct outbox *ob, const char *after, const char *upto, const char *service, int limit,
			 const char *trace, outbox_skip_fn skip, outbox_claimed_fn claimed, outbox_page_fn done, void *arg)
{
	struct page_ctx *x = xcalloc(1, sizeof(*x));

	x->ob = ob;
	x->claimed = claimed;
	x->done = done;
	x->arg = arg;
	x->skip = skip;
	snprintf(x->trace, sizeof(x->trace), "%s", trace ? trace : "restore");
	ob->claims_out++;
	store_claim_page(ob->s, after, upto, service, limit, on_page_claimed, x);
}

/* ---- a service's full set ------------------------------------------------------------------------------ */

struct set_ctx {
	struct outbox *ob;
	store_set_fn done;
	void *arg;
};

/* The set took no lease (store.h): the worker pushes its rows now rather than at its next period. */
static void on_set_applied(const struct set_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct set_ctx *x = arg;
	struct outbox *ob = x->ob;

	if (o->res && n && !ob->claiming && !ob->closing && ob->worker_on) {
		evtimer_del(ob->tick);
		schedule_tick(ob, 0);
	}
	x->done(rows, n, o, x->arg);
	free(x);
}

void outbox_apply_set(struct outbox *ob, const char *set_id, const char *service, bool dry_run, store_set_fn done,
		      void *arg)
{
	struct set_ctx *x = xcalloc(1, sizeof(*x));

	*x = (struct set_ctx){ob, done, arg};
	store_apply_set(ob->s, set_id, service, dry_run, on_set_applied, x);
}

/* ---- the whole ---------------------------------------------------------------------------------------- */

void outbox_start_worker(struct outbox *ob)
{
	ob->worker_on = ob->s != NULL;
	schedule_tick(ob, ob->o.interval_ms);
}

void outbox_set_paused(struct outbox *ob, bool paused)
{
	if (ob->paused == paused)
		return;
	ob->paused = paused;
	log_info(COMP, "%s", paused ? "paused: writes are acknowledged and kept, nothing is pushed until resumed"
				    : "resumed: pushing what waited (what a paused write leased, once its lease runs out)");
}

bool outbox_paused(const struct outbox *ob)
{
	return ob->paused;
}

void outbox_stop_worker(struct outbox *ob)
{
	ob->worker_on = false;
	evtimer_del(ob->tick);
}

bool outbox_busy(const struct outbox *ob)
{
	return ob->in_flight > 0 || ob->claiming || ob->nqueue > 0 || ob->claims_out > 0;
}

void outbox_get_stats(const struct outbox *ob, struct outbox_stats *out)
{
	*out = ob->stats;
	out->in_flight = ob->in_flight;
}

struct outbox *outbox_new(struct event_base *base, struct vdb *v, struct store *s, const struct outbox_opts *o)
{
	struct outbox *ob = xcalloc(1, sizeof(*ob));

	ob->base = base;
	ob->v = v;
	ob->s = s;
	ob->o = *o;
	ob->tick = evtimer_new(base, on_tick, ob);
	ob->record_retry = evtimer_new(base, on_record_retry, ob);
	ob->record_gather = evtimer_new(base, on_record_gather, ob);
	ob->record_delay_ms = RECORD_RETRY_MS;
	return ob;
}

void outbox_close(struct outbox *ob)
{
	ob->closing = true;
	outbox_stop_worker(ob);
	evtimer_del(ob->record_retry);
	evtimer_del(ob->record_gather);
}

void outbox_free(struct outbox *ob)
{
	size_t i;

	if (!ob)
		return;
	ob->closing = true;
	/* Outcomes never recorded: their rows keep their leases (another replica takes them over, in doubt). */
	for (i = 0; i < ob->nqueue; i++) {
		struct op *op = ob->queue[i].op;
		struct item *it = &op->items[ob->queue[i].item];

		if (it->e) {
			entry_notify(it->e, -1, NULL, NULL);
			entry_remove(&ob->table, it->e);
			it->e = NULL;
		}
		if (--op->unrecorded == 0) {
			if (op->recorded)
				op->recorded(op, op->recorded_arg);
			op_free(op);
		}
	}
	for (i = 0; i < ob->table.cap; i++) {
		while (ob->table.slots[i]) {
			entry_notify(ob->table.slots[i], -1, NULL, NULL);
			entry_remove(&ob->table, ob->table.slots[i]);
		}
	}
	free(ob->table.slots);
	free(ob->queue);
	event_free(ob->tick);
	event_free(ob->record_retry);
	event_free(ob->record_gather);
	free(ob);
}
