/*
 * The jobs' store against a real Postgres: reconcile pages through the live
 * abilities once each, restore pages claim rows in order, and a restore job
 * resumes at the last page it recorded.
 */
#include "pgtest.h"
#include "store.h"
#include "store_job.h"

#define IDS_MAX 16

struct idlist {
	bool done;
	size_t n;
	char id[IDS_MAX][32];
	bool with_embedding;    /* every row came with its embedding */
	char error[512];
};

static void idlist_add(struct idlist *l, const char *id)
{
	cr_assert(l->n < IDS_MAX);
	snprintf(l->id[l->n++], sizeof(l->id[0]), "%s", id);
}

/* "a b c": the ids collected. */
static void idlist_join(const struct idlist *l, char *out, size_t len)
{
	size_t i, used = 0;

	out[0] = '\0';
	for (i = 0; i < l->n && used < len; i++)
		used += (size_t)snprintf(out + used, len - used, "%s%s", i ? " " : "", l->id[i]);
}

static void on_recon_rows(const struct recon_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct idlist *l = arg;
	size_t i;

	l->done = true;
	snprintf(l->error, sizeof(l->error), "%s", rows && o->res ? "" : o->error);
	l->with_embedding = n > 0;
	for (i = 0; i < n; i++) {
		idlist_add(l, rows[i].ability_id);
		l->with_embedding = l->with_embedding && rows[i].embedding != NULL;
	}
}

/*
 * Every live ability after `after` of `service`, page by page as reconcile
 * reads them (`limit` a page); the pages' sizes joined in *pages.
 */
static void recon_walk(struct pgtest *t, const char *after, const char *service, int limit, bool deep,
		       char *out, size_t len, char *pages, size_t plen)
{
	struct idlist all = {0}, page;
	size_t used = 0;
	char cursor[32];

	snprintf(cursor, sizeof(cursor), "%s", after ? after : "");
	pages[0] = '\0';
	do {
		memset(&page, 0, sizeof(page));
		store_reconcile_rows(t->pool, cursor[0] ? cursor : NULL, service, limit, deep, on_recon_rows, &page);
		pgtest_wait(t, &page.done);
		cr_assert(eq(str, page.error, ""), "a reconcile page failed: %s", page.error);
		cr_assert(page.n == 0 || page.with_embedding == deep, "deep pages carry the embedding, others do not");
		used += (size_t)snprintf(pages + used, plen - used, "%s%zu", used ? "," : "", page.n);
		for (size_t i = 0; i < page.n; i++)
			idlist_add(&all, page.id[i]);
		if (page.n)
			snprintf(cursor, sizeof(cursor), "%s", page.id[page.n - 1]);
	} while (page.n == (size_t)limit);
	idlist_join(&all, out, len);
}

static void on_claimed(const struct claimed_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct idlist *l = arg;
	size_t i;

	l->done = true;
	snprintf(l->error, sizeof(l->error), "%s", rows && o->res ? "" : o->error);
	for (i = 0; i < n; i++) {
		cr_assert(rows[i].leased, "%s: a restore page leases what it takes", rows[i].ability_id);
		cr_assert(eq(str, (char *)rows[i].state, "pending"));
		idlist_add(l, rows[i].ability_id);
	}
}

struct written {
	bool done;
	char error[512];
};

static void on_written(const struct write_result *res, size_t n, const struct pg_outcome *o, void *arg)
{
	struct written *w = arg;

	(void)n;
	w->done = true;
	snprintf(w->error, sizeof(w->error), "%s", res ? "" : o->error);
}

static void on_deleted(const struct delete_result *r, const struct pg_outcome *o, void *arg)
{
	struct written *w = arg;

	w->done = true;
	snprintf(w->error, sizeof(w->error), "%s", r && r->found ? "" : o->error[0] ? o->error : "not found");
}

/* a1..a7, odd ones of svc-odd, even ones of svc-even; a4 deleted (a tombstone, no live row). */
static struct store *seed(struct pgtest *t)
{
	struct store_opts so = {.group_max = 16,
				.group_max_bytes = 1 << 20,
				.write_concurrency = 1,
				.max_attempts = 3,
				.lease_ms = 30000,
				.quarantine_ms = 1000,
				.owner = "replica-a"};
	struct store *s = store_new(t->pool, &so);
	struct ability a[7];
	struct written w = {0};
	char id[8];
	int i;

	for (i = 0; i < 7; i++) {
		snprintf(id, sizeof(id), "a%d", i + 1);
		pgtest_ability(&a[i], id, i % 2 ? "svc-even" : "svc-odd", (double)i);
	}
	store_write(s, a, 7, on_written, &w);
	pgtest_wait(t, &w.done);
	cr_assert(eq(str, w.error, ""), "seeding: %s", w.error);
	memset(&w, 0, sizeof(w));
	store_delete(s, "a4", on_deleted, &w);
	pgtest_wait(t, &w.done);
	cr_assert(eq(str, w.error, ""), "deleting a4: %s", w.error);
	for (i = 0; i < 7; i++)
		ability_free(&a[i]);
	return s;
}

Test(store_job, reconcile_pages_visit_every_live_ability_once_in_order)
{
	struct pgtest t;
	struct store *s;
	char ids[256], pages[64];

	pgtest_open(&t, "recon_pages", true, 1);
	s = seed(&t);

	recon_walk(&t, NULL, NULL, 2, false, ids, sizeof(ids), pages, sizeof(pages));
	cr_assert(eq(str, ids, "a1 a2 a3 a5 a6 a7"), "every live ability once, by id; the deleted a4 is not live");
	cr_assert(eq(str, pages, "2,2,2,0"));

	recon_walk(&t, "a3", NULL, 2, true, ids, sizeof(ids), pages, sizeof(pages));
	cr_assert(eq(str, ids, "a5 a6 a7"), "a run resumed after a3 sees the rest");
	cr_assert(eq(str, pages, "2,1"));

	recon_walk(&t, NULL, "svc-even", 5, false, ids, sizeof(ids), pages, sizeof(pages));
	cr_assert(eq(str, ids, "a2 a6"), "one service's pages hold only its abilities");

	store_free(s);
	pgtest_close(&t);
}

Test(store_job, restore_pages_claim_rows_in_order_from_the_cursor)
{
	struct pgtest t;
	struct store *s;
	struct idlist page = {0};
	char ids[256];
	char *v;

	pgtest_open(&t, "restore_pages", true, 1);
	s = seed(&t);

	store_claim_page(s, NULL, NULL, 4, on_claimed, &page);
	pgtest_wait(&t, &page.done);
	cr_assert(eq(str, page.error, ""), "%s", page.error);
	idlist_join(&page, ids, sizeof(ids));
	cr_assert(eq(str, ids, "a1 a2 a3 a5"), "the first page: the first 4 live rows by id");

	memset(&page, 0, sizeof(page));
	store_claim_page(s, "a5", "svc-odd", 4, on_claimed, &page);
	pgtest_wait(&t, &page.done);
	idlist_join(&page, ids, sizeof(ids));
	cr_assert(eq(str, ids, "a7"), "after a5, of svc-odd: only a7");

	v = pgtest_value(&t, "SELECT state FROM abilitysync.sync_state WHERE ability_id = 'a4'");
	cr_assert(eq(str, v, "pending_delete"), "a restore page never takes a tombstone back to live");
	free(v);
	store_free(s);
	pgtest_close(&t);
}

struct jobs {
	bool done;
	bool found;
	struct restore_job_row row;
	char cursor[32];
	char error[512];
};

static void on_job(const struct restore_job_row *job, const struct pg_outcome *o, void *arg)
{
	struct jobs *j = arg;

	j->done = true;
	snprintf(j->error, sizeof(j->error), "%s", o->res ? "" : o->error);
	j->found = job != NULL;
	if (job) {
		j->row = *job;
		snprintf(j->cursor, sizeof(j->cursor), "%s", job->cursor ? job->cursor : "(none)");
		j->row.cursor = NULL;
	}
}

static void on_flag(bool yes, const char *text, const struct pg_outcome *o, void *arg)
{
	(void)text;
	cr_assert(o->res != NULL, "%s", o->error);
	cr_assert(yes, "the restore lock is free in a fresh database");
	*(bool *)arg = true;
}

static void on_closed(const struct pg_outcome *o, void *arg)
{
	cr_assert(o->res != NULL, "closing the job: %s", o->error);
	*(bool *)arg = true;
}

static void job_open(struct pgtest *t, bool resume, const char *service, struct jobs *j)
{
	memset(j, 0, sizeof(*j));
	store_restore_open(t->pool, resume, service, "host-a", on_job, j);
	pgtest_wait(t, &j->done);
	cr_assert(eq(str, j->error, ""), "opening a restore job: %s", j->error);
}

static void job_page(struct pgtest *t, int64_t id, size_t ok, size_t failed, const char *cursor, struct jobs *j)
{
	memset(j, 0, sizeof(*j));
	store_restore_record_page(t->pool, id, ok, failed, cursor, on_job, j);
	pgtest_wait(t, &j->done);
	cr_assert(j->found, "recording a page: %s", j->error);
}

static void job_close(struct pgtest *t, int64_t id, const char *status)
{
	bool closed = false;

	store_restore_close(t->pool, id, status, NULL, on_closed, &closed);
	pgtest_wait(t, &closed);
}

Test(store_job, a_restore_job_resumes_at_the_last_page_it_recorded)
{
	struct pgtest t;
	struct store *s;
	struct jobs j;
	int64_t first, second;
	bool locked = false;
	char *v;

	pgtest_open(&t, "restore_resume", true, 1);
	s = seed(&t);
	store_restore_try_lock(t.pool, on_flag, &locked);
	pgtest_wait(&t, &locked);

	job_open(&t, false, NULL, &j);
	cr_assert(j.found);
	first = j.row.id;
	cr_assert(eq(i64, j.row.total, 6), "a new job counts the live rows it will restore");
	cr_assert(eq(str, j.cursor, "(none)"));
	job_page(&t, first, 2, 0, "a2", &j);
	job_page(&t, first, 1, 1, "a5", &j);
	cr_assert(eq(i64, j.row.done, 3));
	cr_assert(eq(i64, j.row.failed, 1));

	/* The process died: the job is still marked running. */
	job_open(&t, true, NULL, &j);
	cr_assert(j.found, "an unfinished job is resumed");
	cr_assert(eq(i64, j.row.id, first));
	cr_assert(eq(str, j.cursor, "a5"), "it resumes after the last recorded page");
	cr_assert(eq(i64, j.row.done, 3), "with its counters");
	cr_assert(eq(i64, j.row.failed, 1));

	job_open(&t, true, "svc-odd", &j);
	cr_assert(not(j.found), "a job of all services is not resumed for one service");

	job_page(&t, first, 2, 0, "a7", &j);
	job_close(&t, first, "done");
	job_open(&t, true, NULL, &j);
	cr_assert(not(j.found), "a finished job is never resumed");

	job_open(&t, false, NULL, &j);
	second = j.row.id;
	cr_assert(second > first);
	job_open(&t, false, NULL, &j);
	cr_assert(j.row.id > second);
	v = pgtest_value(&t, "SELECT string_agg(status, ' ' ORDER BY id) FROM abilitysync.restore_jobs");
	cr_assert(eq(str, v, "done interrupted running"), "a new job marks the one still running interrupted");
	free(v);

	store_free(s);
	pgtest_close(&t);
}
