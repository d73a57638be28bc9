/*
 * The store against a real Postgres: what one write statement decides, the
 * leases claims take, and that an outcome is recorded only under the lease.
 */
#include "locktest.h"
#include "clock.h"
#include "store.h"

struct writes {
	bool done;
	size_t n;
	struct write_result r[4];
	char other[4][64];
	char lease[4][128];     /* the lease each was written under, if leased */
	char error[512];
};

static void on_written(const struct write_result *res, size_t n, const struct pg_outcome *o, void *arg)
{
	struct writes *w = arg;
	size_t i;

	w->done = true;
	snprintf(w->error, sizeof(w->error), "%s", res ? "" : o->error);
	w->n = res ? n : 0;
	for (i = 0; res && i < n && i < 4; i++) {
		w->r[i] = res[i];
		w->r[i].state = NULL; /* valid during the callback only */
		w->r[i].stale = NULL;
		snprintf(w->other[i], sizeof(w->other[i]), "%s", res[i].other ? res[i].other : "");
		w->r[i].other = NULL;
		snprintf(w->lease[i], sizeof(w->lease[i]), "%s", res[i].lease ? res[i].lease : "");
		w->r[i].lease = NULL;
	}
}

static void write_one(struct pgtest *t, struct store *s, const struct ability *a, struct writes *w)
{
	memset(w, 0, sizeof(*w));
	store_write(s, a, 1, on_written, w);
	pgtest_wait(t, &w->done);
	cr_assert(eq(str, w->error, ""), "the write failed: %s", w->error);
	cr_assert(eq(sz, w->n, 1));
}

static struct store *new_store(struct pgtest *t, const char *owner, long lease_ms)
{
	struct store_opts so = {.group_max = 16,
				.group_max_bytes = 1 << 20,
				.write_concurrency = 1,
				.max_attempts = 3,
				.lease_ms = lease_ms,
				.quarantine_ms = 1000,
				.owner = owner};

	return store_new(t->pool, &so);
}

Test(store, a_write_then_the_same_content_then_new_content)
{
	struct pgtest t;
	struct store *s;
	struct ability a1, a2;
	struct writes w;
	char *v;

	pgtest_open(&t, "store_write", true, 2);
	s = new_store(&t, "replica-a", 30000);
	pgtest_ability(&a1, "get-user", "api.github.com", 1.0);
	pgtest_ability(&a2, "get-user", "api.github.com", 2.0);

	write_one(&t, s, &a1, &w);
	cr_assert(eq(int, w.r[0].outcome, WRITE_WRITTEN));
	cr_assert(eq(i64, w.r[0].generation, 1));
	cr_assert(w.r[0].leased, "the writer holds the lease of what it wrote");

	write_one(&t, s, &a1, &w);
	cr_assert(eq(int, w.r[0].outcome, WRITE_UNCHANGED), "the same content writes nothing");

	write_one(&t, s, &a2, &w);
	cr_assert(eq(int, w.r[0].outcome, WRITE_WRITTEN));
	cr_assert(eq(i64, w.r[0].generation, 2), "new content is a new generation");

	v = pgtest_value(&t, "SELECT state || ' ' || generation || ' ' || split_part(lease_owner, '#', 1)"
			     " FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "pending 2 replica-a"));
	free(v);
	v = pgtest_value(&t, "SELECT lease_owner FROM abilitysync.sync_state");
	cr_assert(eq(str, w.lease[0], v), "the write says which lease it took");
	free(v);
	v = pgtest_value(&t, "SELECT embedding->>0 FROM abilities WHERE ability_id = 'get-user'");
	cr_assert(eq(str, v, "2"), "the mirror row holds the last write");
	free(v);
	ability_free(&a1);
	ability_free(&a2);
	store_free(s);
	pgtest_close(&t);
}

/* c-14068 and c-33647 hash to one vector_id: in one blob the second is refused, in another it is fine. */
Test(store, a_vector_id_another_live_ability_holds_is_refused)
{
	struct pgtest t;
	struct store *s;
	struct ability a, b, c;
	struct writes w;

	pgtest_open(&t, "store_collide", true, 2);
	s = new_store(&t, "replica-a", 30000);
	pgtest_ability(&a, "c-14068", "svc.one", 1.0);
	pgtest_ability(&b, "c-33647", "svc.one", 1.0);
	pgtest_ability(&c, "c-33647", "svc.two", 1.0);
	cr_assert(eq(i64, a.vector_id, b.vector_id), "the pair collides");

	write_one(&t, s, &a, &w);
	cr_assert(eq(int, w.r[0].outcome, WRITE_WRITTEN));
	write_one(&t, s, &b, &w);
	cr_assert(eq(int, w.r[0].outcome, WRITE_COLLISION));
	cr_assert(eq(str, w.other[0], "c-14068"), "the collision names the holder");
	write_one(&t, s, &c, &w);
	cr_assert(eq(int, w.r[0].outcome, WRITE_WRITTEN), "another blob: no collision");
	ability_free(&a);
	ability_free(&b);
	ability_free(&c);
	store_free(s);
	pgtest_close(&t);
}

/* Sends the write of `a` without waiting: writes sent while one is in flight are grouped. */
static void write_in_flight(struct store *s, const struct ability *a, struct writes *w)
{
	memset(w, 0, sizeof(*w));
	store_write(s, a, 1, on_written, w);
}

/* Writes `first` and `second` in one group (behind `x`'s write, in flight) and waits for all three. */
static void write_grouped(struct pgtest *t, struct store *s, const struct ability *x, const struct ability *first,
			  const struct ability *second, struct writes *w1, struct writes *w2)
{
	struct writes wx;

	write_in_flight(s, x, &wx);
	write_in_flight(s, first, w1);
	write_in_flight(s, second, w2);
	pgtest_wait(t, &wx.done);
	pgtest_wait(t, &w1->done);
	pgtest_wait(t, &w2->done);
	cr_assert(eq(str, w1->error, ""), "%s", w1->error);
	cr_assert(eq(str, w2->error, ""), "%s", w2->error);
}

/*
 * A batch holding the vector's owner and an ability that collides with it:
 * the ledger entry matches two of the input's rows, and the write used to
 * judge each of them once per match ("the write returned 3 rows for 2
 * abilities", the batch failed instead of naming the collision).
 */
Test(store, a_batch_with_a_vectors_owner_and_its_collider_names_the_collision)
{
	struct pgtest t;
	struct store *s;
	struct ability batch[2], a, a3, x;
	struct writes w = {0}, wa, wb;
	char *v;

	pgtest_open(&t, "store_collide_batch", true, 2);
	s = new_store(&t, "replica-a", 30000);
	pgtest_ability(&a, "c-14068", "svc.one", 1.0);
	pgtest_ability(&batch[0], "c-14068", "svc.one", 2.0);
	pgtest_ability(&batch[1], "c-33647", "svc.one", 1.0);
	write_one(&t, s, &a, &w);
	cr_assert(eq(int, w.r[0].outcome, WRITE_WRITTEN));

	memset(&w, 0, sizeof(w));
	store_write(s, batch, 2, on_written, &w);
	pgtest_wait(&t, &w.done);
	cr_assert(eq(str, w.error, ""), "the write failed: %s", w.error);
	cr_assert(eq(sz, w.n, 2));
	cr_assert(eq(int, w.r[0].outcome, WRITE_REFUSED), "the owner's update goes with its batch");
	cr_assert(eq(int, w.r[1].outcome, WRITE_COLLISION));
	cr_assert(eq(str, w.other[1], "c-14068"), "the collision names the holder");
	v = pgtest_value(&t, "SELECT embedding->>0 FROM abilities WHERE ability_id = 'c-14068'");
	cr_assert(eq(str, v, "1"), "nothing of the batch was written");
	free(v);

	/* The collider first, the owner after, in two requests grouped together: the owner writes. */
	pgtest_ability(&x, "someone-else", "svc.two", 1.0);
	pgtest_ability(&a3, "c-14068", "svc.one", 3.0);
	write_grouped(&t, s, &x, &batch[1], &a3, &wb, &wa);
	cr_assert(eq(int, wb.r[0].outcome, WRITE_COLLISION));
	cr_assert(eq(str, wb.other[0], "c-14068"));
	cr_assert(eq(int, wa.r[0].outcome, WRITE_WRITTEN), "the owner is not refused for a collider before it");
	v = pgtest_value(&t, "SELECT embedding->>0 FROM abilities WHERE ability_id = 'c-14068'");
	cr_assert(eq(str, v, "3"));
	free(v);
	ability_free(&a3);
	ability_free(&x);
	ability_free(&a);
	ability_free(&batch[0]);
	ability_free(&batch[1]);
	store_free(s);
	pgtest_close(&t);
}

/*
 * Two abilities of one vector in one statement, which no ledger entry names
 * live: the first to come holds it, the second collides with it, whether they
 * came in one batch or in two requests grouped together. Before, a batch
 * failed (both claimed the vector: a unique violation, retried alone, again)
 * and two requests reclaiming a deleted entry were both written, to one
 * vector: the later push overwrote the earlier one's.
 */
Test(store, two_abilities_of_one_vector_in_one_write_the_second_collides_with_the_first)
{
	struct pgtest t;
	struct store *s;
	struct ability batch[2], x;
	struct writes w = {0}, wa, wb;
	char sql[1024];
	char *v;

	pgtest_open(&t, "store_collide_input", true, 2);
	s = new_store(&t, "replica-a", 30000);
	pgtest_ability(&batch[0], "c-14068", "svc.one", 1.0);
	pgtest_ability(&batch[1], "c-33647", "svc.one", 1.0);
	pgtest_ability(&x, "someone-else", "svc.two", 1.0);

	store_write(s, batch, 2, on_written, &w);
	pgtest_wait(&t, &w.done);
	cr_assert(eq(str, w.error, ""), "the batch failed: %s", w.error);
	cr_assert(eq(int, w.r[0].outcome, WRITE_REFUSED), "the first goes with its batch");
	cr_assert(eq(int, w.r[1].outcome, WRITE_COLLISION));
	cr_assert(eq(str, w.other[1], "c-14068"), "the collision names the first");

	/* The vector's entry, deleted: whoever writes first reclaims it. */
	snprintf(sql, sizeof(sql),
		 "INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id, deleted_at)"
		 " VALUES ('%s', %lld, 'gone', now())",
		 batch[0].blob_id, (long long)batch[0].vector_id);
	pgtest_exec(t.url, sql);
	write_grouped(&t, s, &x, &batch[0], &batch[1], &wa, &wb);
	cr_assert(eq(int, wa.r[0].outcome, WRITE_WRITTEN));
	cr_assert(eq(int, wb.r[0].outcome, WRITE_COLLISION), "one vector, two abilities: the later collides");
	cr_assert(eq(str, wb.other[0], "c-14068"));
	v = pgtest_value(&t, "SELECT string_agg(ability_id, ',' ORDER BY ability_id) FROM abilities");
	cr_assert(eq(str, v, "c-14068,someone-else"));
	free(v);
	v = pgtest_value(&t, "SELECT ability_id || ' ' || (deleted_at IS NULL) FROM abilitysync.vector_ledger"
			     " WHERE ability_id LIKE 'c-%' OR ability_id = 'gone'");
	cr_assert(eq(str, v, "c-14068 true"), "the ledger names the writer");
	free(v);
	ability_free(&batch[0]);
	ability_free(&batch[1]);
	ability_free(&x);
	store_free(s);
	pgtest_close(&t);
}

struct claims {
	bool done;
	size_t n;
	bool leased;
	bool gone;
	int64_t generation;
	char lease[128];
};

static void on_claimed(const struct claimed_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct claims *c = arg;

	c->done = true;
	cr_assert(o->res != NULL, "claim failed: %s", o->error);
	c->n = n;
	if (n) {
		c->leased = rows[0].leased;
		c->gone = rows[0].gone;
		c->generation = rows[0].generation;
		snprintf(c->lease, sizeof(c->lease), "%s", rows[0].lease ? rows[0].lease : "");
	}
}

/* Claims what is due for `s`, into *c. */
static void claim_due(struct pgtest *t, struct store *s, struct claims *c)
{
	memset(c, 0, sizeof(*c));
	store_claim_due(s, 10, on_claimed, c);
	pgtest_wait(t, &c->done);
}

struct finishes {
	double lag;
	bool done;
	enum finish_state state;
};

static void on_finished(const enum finish_state *res, const double *lag, size_t n, const struct pg_outcome *o,
			void *arg)
{
	struct finishes *f = arg;

	f->done = true;
	cr_assert(res && n == 1, "finish failed: %s", o->error);
	f->state = res[0];
	f->lag = lag[0];
}

static double last_lag; /* finish_ok's: the lag the store returned */

static enum finish_state finish_ok(struct pgtest *t, struct store *s, const struct ability *a, int64_t generation,
				   const char *lease)
{
	struct finishes f = {0};
	struct push_done d = {.ability_id = a->ability_id,
			      .generation = generation,
			      .result = PUSH_OK,
			      .clears_doubt = true,
			      .content_hash = a->content_hash,
			      .lease = lease};

	store_finish_pushes(s, &d, 1, on_finished, &f);
	pgtest_wait(t, &f.done);
	last_lag = f.lag;
	return f.state;
}

/*
 * The acknowledged-to-synced latency runs from the first change the vector DB
 * did not have: a rewrite while pending keeps it, a change after synced starts
 * it again.
 */
Test(store, the_sync_lag_runs_from_the_oldest_change_not_yet_pushed)
{
	struct pgtest t;
	struct store *s;
	struct ability a1, a2, a3;
	struct writes w;

	pgtest_open(&t, "store_lag", true, 2);
	s = new_store(&t, "replica-a", 30000);
	pgtest_ability(&a1, "get-user", "api.github.com", 1.0);
	pgtest_ability(&a2, "get-user", "api.github.com", 2.0);
	pgtest_ability(&a3, "get-user", "api.github.com", 3.0);
	write_one(&t, s, &a1, &w);
	usleep(300 * 1000);
	write_one(&t, s, &a2, &w);
	cr_assert(eq(int, finish_ok(&t, s, &a2, w.r[0].generation, w.lease[0]), FINISH_SYNCED));
	cr_assert(last_lag >= 0.3, "a rewrite while pending keeps its start: %.3f s", last_lag);
	write_one(&t, s, &a3, &w);
	cr_assert(eq(int, finish_ok(&t, s, &a3, w.r[0].generation, w.lease[0]), FINISH_SYNCED));
	cr_assert(last_lag >= 0 && last_lag < 0.3, "a change after synced starts again: %.3f s", last_lag);
	ability_free(&a1);
	ability_free(&a2);
	ability_free(&a3);
	store_free(s);
	pgtest_close(&t);
}

/*
 * Replica a writes and holds the lease; b finds nothing due. Once a's lease
 * has run out b claims the row, and a's late outcome is refused (lost), b's
 * is recorded.
 */
Test(store, an_outcome_is_recorded_only_under_the_lease)
{
	struct pgtest t;
	struct store *a, *b;
	struct ability x;
	struct writes w;
	struct claims c = {0};
	char *v;

	pgtest_open(&t, "store_lease", true, 3);
	a = new_store(&t, "replica-a", 300);
	b = new_store(&t, "replica-b", 30000);
	pgtest_ability(&x, "get-user", "api.github.com", 1.0);
	write_one(&t, a, &x, &w);
	cr_assert(w.r[0].leased);

	claim_due(&t, b, &c);
	cr_assert(eq(sz, c.n, 0), "a row leased by another replica is not due");

	usleep(400 * 1000); /* a's lease runs out */
	claim_due(&t, b, &c);
	cr_assert(eq(sz, c.n, 1), "once the lease has run out the row is due");
	cr_assert(c.leased);
	cr_assert(eq(i64, c.generation, 1));

	cr_assert(eq(int, finish_ok(&t, a, &x, 1, w.lease[0]), FINISH_LOST),
		  "a's lease is gone: its outcome is not recorded");
	v = pgtest_value(&t, "SELECT state || ' ' || split_part(lease_owner, '#', 1) FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "pending replica-b"));
	free(v);
	cr_assert(eq(int, finish_ok(&t, b, &x, 1, c.lease), FINISH_SYNCED));
	v = pgtest_value(&t, "SELECT state || ' ' || coalesce(lease_owner, '-') FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "synced -"));
	free(v);
	ability_free(&x);
	store_free(a);
	store_free(b);
	pgtest_close(&t);
}

/*
 * The soak's lost vectors: replica a pushed X (its ADD confirmed) but could
 * not record it (Postgres down) and its lease ran out; b took X over, its
 * delete-then-add deleted the vector and failed to add it; a took X again
 * (a new lease, its old push still unrecorded). a's old outcome must not
 * count under that new lease: it said "synced" about a vector that b has
 * deleted since.
 */
Test(store, an_outcome_counts_only_under_the_lease_it_was_pushed_under)
{
	struct pgtest t;
	struct store *a, *b;
	struct ability x;
	struct writes w;
	struct claims c = {0};
	struct finishes f = {0};
	struct push_done failed;
	char *v;

	pgtest_open(&t, "store_token", true, 3);
	a = new_store(&t, "replica-a", 300);
	b = new_store(&t, "replica-b", 300);
	pgtest_ability(&x, "get-user", "api.github.com", 1.0);
	write_one(&t, a, &x, &w); /* a's lease, generation 1: a pushes, its record is held up */
	cr_assert(w.r[0].leased);

	usleep(400 * 1000);
	claim_due(&t, b, &c);
	cr_assert(eq(sz, c.n, 1), "b takes the row over");
	failed = (struct push_done){.ability_id = x.ability_id, .generation = 1, .result = PUSH_FAILED,
				    .error = "adding: HTTP 503", .retry_in_ms = 0, .lease = c.lease};
	store_finish_pushes(b, &failed, 1, on_finished, &f);
	pgtest_wait(&t, &f.done);
	cr_assert(eq(int, f.state, FINISH_PENDING), "b's push failed: pending");

	usleep(1300 * 1000); /* the doubt of b's takeover (its lease end + the quarantine) is over: X is due */
	claim_due(&t, a, &c);
	cr_assert(eq(sz, c.n, 1), "a takes the row again");

	cr_assert(eq(int, finish_ok(&t, a, &x, 1, w.lease[0]), FINISH_LOST),
		  "a's old push was not made under this lease: its outcome is stale");
	v = pgtest_value(&t, "SELECT state FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "pending"), "not synced: the vector b deleted is not there");
	free(v);
	cr_assert(eq(int, finish_ok(&t, a, &x, 1, c.lease), FINISH_SYNCED), "a push under the new lease counts");
	ability_free(&x);
	store_free(a);
	store_free(b);
	pgtest_close(&t);
}

/* Nobody took the row since: a replica that takes back its own run-out lease keeps it, and its push counts. */
Test(store, a_lease_nobody_took_since_stays_the_same_lease)
{
	struct pgtest t;
	struct store *a;
	struct ability x;
	struct writes w;
	struct claims c = {0};

	pgtest_open(&t, "store_same", true, 2);
	a = new_store(&t, "replica-a", 300);
	pgtest_ability(&x, "get-user", "api.github.com", 1.0);
	write_one(&t, a, &x, &w);
	usleep(400 * 1000); /* a could not record its push; its lease ran out */
	claim_due(&t, a, &c);
	cr_assert(eq(sz, c.n, 1));
	cr_assert(eq(str, c.lease, w.lease[0]), "the same lease: no other push can have happened");
	cr_assert(eq(int, finish_ok(&t, a, &x, 1, w.lease[0]), FINISH_SYNCED), "a's push, recorded late, counts");
	ability_free(&x);
	store_free(a);
	pgtest_close(&t);
}

struct counts {
	bool done;
	long n;
};

static void on_counted(long n, const struct pg_outcome *o, void *arg)
{
	struct counts *c = arg;

	c->done = true;
	cr_assert(o->res != NULL, "%s", o->error);
	c->n = n;
}

Test(store, readiness_counts_the_migrations_in_the_ledger)
{
	struct pgtest t;
	struct counts c = {0};

	pgtest_open(&t, "store_ready", true, 1);
	store_count_migrations(t.pool, "drizzle.__drizzle_migrations", "{0,1}", on_counted, &c);
	pgtest_wait(&t, &c.done);
	cr_assert(eq(long, c.n, 0), "no migration has `when` 0 or 1");
	memset(&c, 0, sizeof(c));
	store_count_migrations(t.pool, "drizzle.__drizzle_migrations", NULL, on_counted, &c);
	pgtest_wait(&t, &c.done);
	cr_assert(eq(long, c.n, 1), "without a journal: the sync schema is there");
	pgtest_close(&t);
}

/*
 * A write of an ability whose last push's outcome is being recorded. The
 * outcome statement (here a session doing what it does) holds the sync state,
 * then updates the ledger entry; the write used to lock the ledger entry first
 * and then wait for the sync state: a deadlock, which Postgres broke after
 * deadlock_timeout by failing the write (retried alone: that long a stall for
 * its client). The write now takes the sync states first, as the outcome and
 * the claims do, and simply waits its turn.
 */
Test(store, a_write_waits_for_an_outcome_being_recorded_without_a_deadlock)
{
	struct pgtest t;
	struct store *s;
	struct ability a1, a2;
	struct writes w;
	PGconn *rec;

	locktest_open(&t, "store_lock_order");
	s = new_store(&t, "replica-a", 30000);
	pgtest_ability(&a1, "get-user", "api.github.com", 1.0);
	pgtest_ability(&a2, "get-user", "api.github.com", 2.0);
	write_one(&t, s, &a1, &w);

	rec = locktest_hold(&t, "SELECT 1 FROM abilitysync.sync_state WHERE ability_id = 'get-user' FOR UPDATE");
	write_in_flight(s, &a2, &w);
	locktest_runs_without_waiting(&t, rec, "UPDATE abilitysync.vector_ledger SET last_written_at = now()"
					       " WHERE ability_id = 'get-user'");
	pgtest_wait(&t, &w.done);
	cr_assert(eq(str, w.error, ""), "%s", w.error);
	cr_assert(eq(int, w.r[0].outcome, WRITE_WRITTEN));
	cr_assert(eq(i64, w.r[0].generation, 2));
	ability_free(&a1);
	ability_free(&a2);
	store_free(s);
	pgtest_close(&t);
}

struct deletes {
	bool done, found;
	char error[512];
};

static void on_deleted_row(const struct delete_result *r, const struct pg_outcome *o, void *arg)
{
	struct deletes *d = arg;

	d->done = true;
	d->found = r && r->found;
	snprintf(d->error, sizeof(d->error), "%s", r ? "" : o->error);
}

/*
 * The same order for a delete of a row the ledger has no entry for (written
 * before the ledger, or by the original application): it takes the sync
 * state before it inserts the entry (that insert, read by nothing, runs at
 * the statement's end), so a claim holding the sync state and inserting the
 * same entry does not wait for it. A guard: the statement has always run so.
 */
Test(store, a_delete_waits_for_a_claim_without_a_deadlock)
{
	struct pgtest t;
	struct store *s;
	struct deletes d = {0};
	PGconn *claim;
	char *v;

	locktest_open(&t, "store_delete_lock_order");
	s = new_store(&t, "replica-a", 30000);
	pgtest_exec(t.url, "INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding)"
			   " VALUES ('old-row', 7, 'n', 's', 'd', '[1]');"
			   " INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state, generation)"
			   " VALUES ('old-row', 'abilities_s', 7, 'h', 'pending', 1)");

	claim = locktest_hold(&t, "SELECT 1 FROM abilitysync.sync_state WHERE ability_id = 'old-row' FOR UPDATE");
	store_delete(s, "old-row", on_deleted_row, &d);
	locktest_runs_without_waiting(&t, claim, "INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id)"
					" VALUES ('abilities_s', 7, 'old-row') ON CONFLICT (blob_id, vector_id)"
					" DO UPDATE SET last_written_at = now()");
	pgtest_wait(&t, &d.done);
	cr_assert(eq(str, d.error, ""), "%s", d.error);
	cr_assert(d.found);
	v = pgtest_value(&t, "SELECT state || ' ' || generation FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "pending_delete 2"));
	free(v);
	store_free(s);
	pgtest_close(&t);
}

/*
 * A delete of an ability by one replica while another replica's write of it
 * is under way (within one replica they go out one after the other). The write holds
 * the sync state and then upserts the mirror row; the delete used to delete
 * the mirror row first and then wait for the sync state: a deadlock, which
 * Postgres broke after deadlock_timeout by failing the delete (its client got
 * an error after that long a stall). The delete now takes the sync state
 * first, as every other statement does, and simply waits its turn. Here the
 * write is held at the ledger (a session holds its entry) until the delete
 * waits too.
 */
Test(store, a_delete_waits_for_a_write_of_its_ability_without_a_deadlock)
{
	struct pgtest t;
	struct store *s, *b;
	struct ability a1, a2;
	struct writes w;
	struct deletes d = {0};
	PGconn *held;
	int64_t t0, took;
	char *v;

	locktest_open(&t, "store_delete_write_order");
	s = new_store(&t, "replica-a", 30000);
	b = new_store(&t, "replica-b", 30000);
	pgtest_ability(&a1, "get-user", "api.github.com", 1.0);
	pgtest_ability(&a2, "get-user", "api.github.com", 2.0);
	write_one(&t, s, &a1, &w);

	held = locktest_hold(&t, "SELECT 1 FROM abilitysync.vector_ledger WHERE ability_id = 'get-user' FOR UPDATE");
	write_in_flight(s, &a2, &w);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "1");
	store_delete(b, "get-user", on_deleted_row, &d);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "2");
	locktest_commit(held);
	t0 = clock_mono_ms();
	pgtest_wait(&t, &w.done);
	pgtest_wait(&t, &d.done);
	took = clock_mono_ms() - t0;
	cr_assert(eq(str, d.error, ""), "the delete failed: %s", d.error);
	cr_assert(eq(str, w.error, ""), "the write failed: %s", w.error);
	cr_assert(took < 2500, "the write and the delete took %lld ms: they deadlocked", (long long)took);
	cr_assert(eq(int, w.r[0].outcome, WRITE_WRITTEN));
	cr_assert(d.found, "the delete came second: it found the written row");
	v = pgtest_value(&t, "SELECT state || ' ' || generation || ' ' || (SELECT count(*) FROM abilities)"
			     " FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "pending_delete 3 0"), "written (2), then deleted (3): %s", v);
	free(v);
	ability_free(&a1);
	ability_free(&a2);
	store_free(b);
	store_free(s);
	pgtest_close(&t);
}

struct set_outcome {
	bool done;
	size_t n;
	char error[512];
	char rows[256]; /* "<ability_id> <action>;" for each row */
};

static void on_staged(const struct pg_outcome *o, void *arg)
{
	struct set_outcome *x = arg;

	x->done = true;
	snprintf(x->error, sizeof(x->error), "%s", o->res ? "" : o->error);
}

static void on_set_applied(const struct set_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct set_outcome *x = arg;
	size_t i, at = 0;

	x->done = true;
	x->n = n;
	snprintf(x->error, sizeof(x->error), "%s", o->res ? "" : o->error);
	for (i = 0; i < n && at < sizeof(x->rows); i++)
		at += (size_t)snprintf(x->rows + at, sizeof(x->rows) - at, "%s %d;", rows[i].ability_id,
				       (int)rows[i].action);
}

/*
 * A statement keeps this replica's lease on a row it already holds (the
 * token stays), and its lease ran from when that statement began: a write
 * group that waited (here for get-user's lock) set list-repos's lease to end
 * before the end a later write of it had just set, while that write's push
 * may send until its own lease's end. Another replica then took the row over
 * early, its doubt window too short for that push. A kept lease only grows.
 */
Test(store, a_write_that_keeps_this_replicas_lease_never_shortens_it)
{
	struct pgtest t;
	struct store *s, *later;
	struct ability group[2], x0, x2;
	struct writes w, w2;
	PGconn *held;
	char *v, *before, sql[512];

	locktest_open(&t, "store_lease_kept");
	s = new_store(&t, "replica-a", 30000);
	later = new_store(&t, "replica-a", 30000);
	pgtest_ability(&group[0], "get-user", "api.github.com", 1.0);
	pgtest_ability(&group[1], "list-repos", "api.github.com", 1.0);
	pgtest_ability(&x2, "list-repos", "api.github.com", 2.0);
	pgtest_ability(&x0, "list-repos", "api.github.com", 4.0);
	write_one(&t, s, &group[0], &w);
	write_one(&t, s, &x0, &w);
	ability_free(&group[0]);
	pgtest_ability(&group[0], "get-user", "api.github.com", 3.0);
	held = locktest_hold(&t, "SELECT 1 FROM abilitysync.sync_state WHERE ability_id = 'get-user' FOR UPDATE");
	memset(&w, 0, sizeof(w));
	store_write(s, group, 2, on_written, &w);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "1");
	usleep(300 * 1000);
	write_one(&t, later, &x2, &w2);
	cr_assert(w2.r[0].leased, "the later write leases list-repos");
	before = pgtest_value(&t, "SELECT lease_until::text FROM abilitysync.sync_state WHERE ability_id = 'list-repos'");
	locktest_commit(held);
	pgtest_wait(&t, &w.done);
	cr_assert(eq(str, w.error, ""), "the group failed: %s", w.error);
	cr_assert(eq(int, w.r[1].outcome, WRITE_WRITTEN));
	cr_assert(w.r[1].leased, "the group keeps this replica's lease");
	snprintf(sql, sizeof(sql), "SELECT lease_until::text || CASE WHEN lease_until < '%s' THEN ' (shortened)' ELSE '' END"
		 " FROM abilitysync.sync_state WHERE ability_id = 'list-repos'", before);
	v = pgtest_value(&t, sql);
	cr_assert(strstr(v, "shortened") == NULL, "list-repos's lease ends at %s; the later write's ended at %s", v,
		  before);
	free(v);
	free(before);
	ability_free(&group[0]);
	ability_free(&group[1]);
	ability_free(&x0);
	ability_free(&x2);
	store_free(later);
	store_free(s);
	pgtest_close(&t);
}

/*
 * The same for a service's full set that leaves out an ability being
 * written: the set used to delete the left-out ability's mirror row and then
 * wait for its sync state, which the write held while it waited to upsert
 * that row. The set now locks the sync states of its abilities and of the
 * service's others in one pass, in ability_id order, before anything else.
 */
Test(store, a_full_set_waits_for_a_write_of_an_ability_it_removes_without_a_deadlock)
{
	struct pgtest t;
	struct store *s;
	struct ability gone1, gone2, kept;
	struct writes w;
	struct set_outcome staged = {0}, applied = {0};
	PGconn *held;
	int64_t t0, took;
	char *v;

	locktest_open(&t, "store_set_write_order");
	s = new_store(&t, "replica-a", 30000);
	pgtest_ability(&gone1, "get-user", "api.github.com", 1.0);
	pgtest_ability(&gone2, "get-user", "api.github.com", 2.0);
	pgtest_ability(&kept, "list-repos", "api.github.com", 1.0);
	write_one(&t, s, &gone1, &w);
	write_one(&t, s, &kept, &w);
	store_stage(s, "set-1", 0, &kept, 1, on_staged, &staged);
	pgtest_wait(&t, &staged.done);
	cr_assert(eq(str, staged.error, ""), "%s", staged.error);

	held = locktest_hold(&t, "SELECT 1 FROM abilitysync.vector_ledger WHERE ability_id = 'get-user' FOR UPDATE");
	write_in_flight(s, &gone2, &w);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "1");
	store_apply_set(s, "set-1", "api.github.com", false, on_set_applied, &applied);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "2");
	locktest_commit(held);
	t0 = clock_mono_ms();
	pgtest_wait(&t, &w.done);
	pgtest_wait(&t, &applied.done);
	took = clock_mono_ms() - t0;
	cr_assert(eq(str, applied.error, ""), "the set failed: %s", applied.error);
	cr_assert(eq(str, w.error, ""), "the write failed: %s", w.error);
	cr_assert(took < 2500, "the write and the set took %lld ms: they deadlocked", (long long)took);
	cr_assert(eq(int, w.r[0].outcome, WRITE_WRITTEN));
	cr_assert(eq(sz, applied.n, 2), "%s", applied.rows);
	v = pgtest_value(&t, "SELECT string_agg(ability_id || ' ' || state || ' ' || generation, ', ' ORDER BY ability_id)"
			     " FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "get-user pending_delete 3, list-repos pending 1"), "written (2), then deleted (3): %s", v);
	free(v);
	ability_free(&gone1);
	ability_free(&gone2);
	ability_free(&kept);
	store_free(s);
	pgtest_close(&t);
}

/*
 * A write of a row the original application wrote (no sync state yet) while
 * a delete of it holds the row and inserts the sync state (here a session
 * doing what the delete does). The write used to insert the sync state
 * first when nothing in its group was unchanged, then wait for the row: a
 * deadlock with the delete. It now upserts the rows before it inserts any
 * sync state, whatever the group holds, as a delete and a full set do.
 */
Test(store, a_write_of_a_row_without_a_sync_state_waits_for_its_delete_without_a_deadlock)
{
	struct pgtest t;
	struct store *s;
	struct ability a;
	struct writes w;
	PGconn *del;
	char *v;

	locktest_open(&t, "store_legacy_order");
	s = new_store(&t, "replica-a", 30000);
	pgtest_exec(t.url, "INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding)"
			   " VALUES ('legacy-row', 7, 'n', 'api.github.com', 'd', '[1]')");
	pgtest_ability(&a, "legacy-row", "api.github.com", 1.0);

	del = locktest_hold(&t, "SELECT 1 FROM abilities WHERE ability_id = 'legacy-row' FOR UPDATE");
	write_in_flight(s, &a, &w);
	locktest_runs_without_waiting(&t, del, "INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id,"
					       " content_hash, state, generation) VALUES ('legacy-row',"
					       " 'abilities_api_github_com', 7, '', 'pending_delete', 1)"
					       " ON CONFLICT (ability_id) DO NOTHING");
	pgtest_wait(&t, &w.done);
	cr_assert(eq(str, w.error, ""), "%s", w.error);
	cr_assert(eq(int, w.r[0].outcome, WRITE_WRITTEN));
	v = pgtest_value(&t, "SELECT state || ' ' || generation FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "pending 2"), "the write came second: %s", v);
	free(v);
	ability_free(&a);
	store_free(s);
	pgtest_close(&t);
}

struct retried {
	bool done;
	int64_t matched, retried;
	char error[512];
};

static void on_retried(int64_t matched, int64_t retried, const struct pg_outcome *o, void *arg)
{
	struct retried *r = arg;

	r->done = true;
	r->matched = matched;
	r->retried = retried;
	snprintf(r->error, sizeof(r->error), "%s", o->res ? "" : o->error);
}

/*
 * An operator's retry of failed changes while an outcome is being recorded
 * for two of them (here a session holding `b` and about to take `c`, in
 * ability_id order as the outcome does). The retry used to lock the rows in
 * the table's order (c was written before b), so it held c and waited for b:
 * a deadlock. It now locks them in ability_id order first.
 */
Test(store, a_retry_of_failed_changes_locks_them_in_key_order)
{
	struct pgtest t;
	struct store *s;
	struct retried r = {0};
	struct retry_selector sel = {.pending = false, .older_than_s = -1};
	PGconn *rec;

	locktest_open(&t, "store_retry_order");
	s = new_store(&t, "replica-a", 30000);
	pgtest_exec(t.url, "INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state,"
			   " generation) VALUES ('c', 'abilities_s', 3, 'h', 'failed', 1),"
			   " ('b', 'abilities_s', 2, 'h', 'failed', 1)");
	rec = locktest_hold(&t, "SELECT 1 FROM abilitysync.sync_state WHERE ability_id = 'b' FOR UPDATE");
	store_sync_retry(s, &sel, on_retried, &r);
	locktest_runs_without_waiting(&t, rec, "UPDATE abilitysync.sync_state SET updated_at = now() WHERE ability_id = 'c'");
	pgtest_wait(&t, &r.done);
	cr_assert(eq(str, r.error, ""), "the retry failed: %s", r.error);
	cr_assert(eq(i64, r.retried, 2));
	store_free(s);
	pgtest_close(&t);
}

/*
 * A retry of failed changes that waits for one of them (a, held) while the
 * other (x, a failed delete) is written again by a replica, whose push fails
 * too (x failed at generation 2). The retry used to decide between pending
 * and pending_delete from its snapshot, where x had no mirror row: the live
 * x was made pending_delete and its vector deleted. A change written again
 * meanwhile is now left as the write left it.
 */
Test(store, a_retry_leaves_a_change_written_while_it_waited_as_it_is)
{
	struct pgtest t;
	struct store *s;
	struct retried r = {0};
	struct retry_selector sel = {.pending = false, .older_than_s = -1};
	PGconn *rec;
	char *v;

	locktest_open(&t, "store_retry_stale");
	s = new_store(&t, "replica-a", 30000);
	pgtest_exec(t.url, "INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state,"
			   " generation) VALUES ('a', 'abilities_s', 1, 'h', 'failed', 1),"
			   " ('x', 'abilities_s', 2, 'h', 'failed', 1)");
	rec = locktest_hold(&t, "SELECT 1 FROM abilitysync.sync_state WHERE ability_id = 'a' FOR UPDATE");
	store_sync_retry(s, &sel, on_retried, &r);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "1");
	pgtest_exec(t.url, "INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding)"
			   " VALUES ('x', 2, 'n', 's', 'd', '[1]');"
			   " UPDATE abilitysync.sync_state SET generation = 2 WHERE ability_id = 'x'");
	locktest_commit(rec);
	pgtest_wait(&t, &r.done);
	cr_assert(eq(str, r.error, ""), "the retry failed: %s", r.error);
	cr_assert(eq(i64, r.retried, 1), "a is retried, x (written meanwhile) is not");
	v = pgtest_value(&t, "SELECT state || ' ' || generation FROM abilitysync.sync_state WHERE ability_id = 'x'");
	cr_assert(eq(str, v, "failed 2"), "x has a live row: it is never made pending_delete (%s)", v);
	free(v);
	store_free(s);
	pgtest_close(&t);
}

/*
 * Holds the store's claims (the statements that lock due rows SKIP LOCKED)
 * just after they took their snapshot, until the returned session commits: a
 * statement trigger waits for an advisory lock that session holds. Without
 * it the window between a claim's snapshot and its locks is microseconds.
 */
static PGconn *pause_claims(struct pgtest *t)
{
	pgtest_exec(t->url, "CREATE FUNCTION pause_claim() RETURNS trigger LANGUAGE plpgsql AS $$"
			    " BEGIN IF current_query() LIKE '%SKIP LOCKED%' THEN"
			    "  PERFORM pg_advisory_xact_lock_shared(4242); END IF; RETURN NULL; END $$;"
			    " CREATE TRIGGER pause_claim BEFORE UPDATE ON abilitysync.sync_state"
			    "  FOR EACH STATEMENT EXECUTE FUNCTION pause_claim()");
	return locktest_hold(t, "SELECT pg_advisory_xact_lock(4242), 1");
}

/*
 * A claim of a deleted ability (pending_delete, due) whose snapshot was taken
 * just before a write re-created it and committed. The claim locked the sync
 * state at the write's generation but could not see the row the write
 * inserted (FOR SHARE follows updates, not inserts): it took the live
 * ability as gone, and its vector was deleted under the write's generation
 * and lease token. A claim now takes only rows whose generation is the one
 * its snapshot saw; the write's change is left to the write.
 */
static void claim_while_recreated(const char *name, bool due)
{
	struct pgtest t;
	struct store *s;
	struct claims c = {0};
	const char *ids[] = {"a1"};
	PGconn *paused;
	char *v;

	locktest_open(&t, name);
	s = new_store(&t, "replica-a", 30000);
	pgtest_exec(t.url, "INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state,"
			   " generation) VALUES ('a1', 'abilities_s', 1, '', 'pending_delete', 2)");
	paused = pause_claims(&t);
	if (due)
		store_claim_due(s, 10, on_claimed, &c);
	else
		store_claim_ids(s, ids, 1, on_claimed, &c);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "1");
	pgtest_exec(t.url, "INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding)"
			   " VALUES ('a1', 1, 'n', 's', 'again', '[1]');"
			   " UPDATE abilitysync.sync_state SET state = 'pending', generation = 3, content_hash = 'h'"
			   " WHERE ability_id = 'a1'");
	locktest_commit(paused);
	pgtest_wait(&t, &c.done);
	cr_assert(eq(sz, c.n, 0), "the claim took a1 (generation %lld, %s) though a write re-created it after its"
				  " snapshot", (long long)c.generation, c.gone ? "as gone: its vector would be deleted" : "live");
	v = pgtest_value(&t, "SELECT state || ' ' || generation || ' ' || (lease_owner IS NULL)"
			     " FROM abilitysync.sync_state WHERE ability_id = 'a1'");
	cr_assert(eq(str, v, "pending 3 true"), "the write's change is left as the write left it (%s)", v);
	free(v);
	store_free(s);
	pgtest_close(&t);
}

Test(store, a_claim_of_due_rows_leaves_an_ability_recreated_after_its_snapshot)
{
	claim_while_recreated("store_claim_due_stale", true);
}

Test(store, a_follow_up_claim_leaves_an_ability_recreated_after_its_snapshot)
{
	claim_while_recreated("store_claim_ids_stale", false);
}

/*
 * An ability whose delete failed (its vector may still be in the vector DB),
 * registered again with the content it had. The tombstone kept the old
 * content hash, so the write took the content as unchanged: the row came
 * back, its sync state stayed `failed` at the delete's generation, and
 * nothing was pushed (a live ability whose vector may be gone, reported as a
 * failed delete). A tombstone's content hash is now empty, as a new one's is.
 */
Test(store, an_ability_registered_again_after_its_delete_failed_is_pushed)
{
	struct pgtest t;
	struct store *s;
	struct ability a;
	struct writes w;
	struct deletes d = {0};
	char *v;

	pgtest_open(&t, "store_rewrite_failed_delete", true, 2);
	s = new_store(&t, "replica-a", 30000);
	pgtest_ability(&a, "get-user", "api.github.com", 1.0);
	write_one(&t, s, &a, &w);
	store_delete(s, "get-user", on_deleted_row, &d);
	pgtest_wait(&t, &d.done);
	cr_assert(d.found, "the delete failed: %s", d.error);
	pgtest_exec(t.url, "UPDATE abilitysync.sync_state SET state = 'failed', lease_until = NULL, lease_owner = NULL");

	write_one(&t, s, &a, &w);
	cr_assert(eq(int, w.r[0].outcome, WRITE_WRITTEN));
	cr_assert(eq(i64, w.r[0].generation, 3), "registered again: a new generation to push");
	cr_assert(w.r[0].leased, "the writer pushes it");
	v = pgtest_value(&t, "SELECT state || ' ' || generation FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "pending 3"), "%s", v);
	free(v);
	ability_free(&a);
	store_free(s);
	pgtest_close(&t);
}

/*
 * A write that puts back a mirror row deleted behind our back (the same
 * content as its pending sync state) commits while a claim of due rows is
 * between its snapshot and its locks. The write left the generation as it
 * was, so the claim took the row at the generation it saw, found no mirror
 * row and took the live ability as gone: its vector was deleted and the
 * outcome recorded it deleted. A put-back row is now a new generation, which
 * the claim leaves to the write.
 */
Test(store, a_claim_leaves_a_row_a_write_put_back_after_its_snapshot)
{
	struct pgtest t;
	struct store *s;
	struct claims c = {0};
	struct ability a;
	struct writes w;
	PGconn *paused;
	char sql[1024];

	locktest_open(&t, "store_claim_put_back");
	s = new_store(&t, "replica-a", 30000);
	pgtest_ability(&a, "a1", "s", 1.0);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state, generation)"
		 " VALUES ('a1', '%s', %lld, '%s', 'pending', 1)",
		 a.blob_id, (long long)a.vector_id, a.content_hash);
	pgtest_exec(t.url, sql);
	paused = pause_claims(&t);
	store_claim_due(s, 10, on_claimed, &c);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "1");
	write_one(&t, s, &a, &w);
	cr_assert(eq(int, w.r[0].outcome, WRITE_WRITTEN), "the row is put back");
	cr_assert(w.r[0].repaired, "with the content it had");
	cr_assert(eq(i64, w.r[0].generation, 2), "as a new generation");
	locktest_commit(paused);
	pgtest_wait(&t, &c.done);
	cr_assert(eq(sz, c.n, 0), "the claim took a1 (generation %lld, %s) though a write put its row back after the"
				  " claim's snapshot", (long long)c.generation, c.gone ? "as gone: its vector would be deleted" : "live");
	ability_free(&a);
	store_free(s);
	pgtest_close(&t);
}
