/*
 * The jobs' store against a real Postgres: reconcile pages through the live
 * abilities once each, restore pages claim rows in order, a restore job
 * resumes at the last page it recorded, and the parts of a restore job or a
 * reconcile run are shared by sessions (a dead one's taken again).
 */
#include "locktest.h"
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
		store_reconcile_rows(t->pool, cursor[0] ? cursor : NULL, NULL, service, limit, deep, on_recon_rows, &page);
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
static struct store *new_store(struct pgtest *t)
{
	struct store_opts so = {.group_max = 16,
				.group_max_bytes = 1 << 20,
				.write_concurrency = 1,
				.max_attempts = 3,
				.lease_ms = 30000,
				.quarantine_ms = 1000,
				.owner = "replica-a"};

	return store_new(t->pool, &so);
}

static struct store *seed(struct pgtest *t)
{
	struct store *s = new_store(t);
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
	/* Their pushes are over (nothing pushes here): a restore page leaves a row under a live lease. */
	pgtest_exec(t->url, "UPDATE abilitysync.sync_state SET lease_until = NULL, lease_owner = NULL");
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

struct ledger_page {
	bool done;
	char error[512];
	size_t scanned;
	char last[64];          /* "blob vector_id" */
	struct idlist suspects; /* ability ids */
};

static void on_ledger_page(const struct recon_entry *e, size_t n, const struct recon_scan *scan,
			   const struct pg_outcome *o, void *arg)
{
	struct ledger_page *p = arg;
	size_t i;

	p->done = true;
	snprintf(p->error, sizeof(p->error), "%s", o->res ? "" : o->error);
	p->scanned = scan->scanned;
	if (scan->last_blob)
		snprintf(p->last, sizeof(p->last), "%s %lld", scan->last_blob, (long long)scan->last_vector_id);
	for (i = 0; i < n; i++)
		idlist_add(&p->suspects, e[i].ability_id);
}

/* The ledger page by page as reconcile reads it: the keys read per page in *pages, the suspects in *out. */
static void ledger_walk(struct pgtest *t, const char *blob, const char *overdue, int limit, char *out, size_t len,
			char *pages, size_t plen)
{
	struct idlist all = {0};
	struct ledger_page page;
	char *pg_start = pgtest_value(t, "SELECT now()::text"), blob_after[64] = "";
	long long vid_after = 0;
	size_t used = 0;

	pages[0] = '\0';
	do {
		memset(&page, 0, sizeof(page));
		store_reconcile_entries(t->pool, blob_after[0] ? blob_after : NULL, vid_after, blob, overdue, pg_start,
					limit, on_ledger_page, &page);
		pgtest_wait(t, &page.done);
		cr_assert(eq(str, page.error, ""), "a ledger page failed: %s", page.error);
		cr_assert(page.scanned <= (size_t)limit, "a page reads %zu keys, over its %d", page.scanned, limit);
		used += (size_t)snprintf(pages + used, plen - used, "%s%zu", used ? "," : "", page.scanned);
		for (size_t i = 0; i < page.suspects.n; i++)
			idlist_add(&all, page.suspects.id[i]);
		if (page.scanned)
			cr_assert(sscanf(page.last, "%63s %lld", blob_after, &vid_after) == 2, "last key: %s", page.last);
	} while (page.scanned == (size_t)limit);
	idlist_join(&all, out, len);
	free(pg_start);
}

Test(store_job, a_ledger_page_reads_a_page_of_keys_however_few_are_suspect)
{
	struct pgtest t;
	struct store *s;
	struct ledger_page first = {0};
	char ids[256], pages[64], *second, *pg_start;

	pgtest_open(&t, "recon_entries", true, 1);
	s = seed(&t);
	/* an orphan after every healthy entry: no live row, no sync state */
	pgtest_exec(t.url, "INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id)"
			   " VALUES ('zz-orphans', 1, 'gone')");

	pg_start = pgtest_value(&t, "SELECT now()::text");
	store_reconcile_entries(t.pool, NULL, 0, NULL, "1 hour", pg_start, 2, on_ledger_page, &first);
	pgtest_wait(&t, &first.done);
	second = pgtest_value(&t, "SELECT blob_id || ' ' || vector_id FROM abilitysync.vector_ledger"
				  " ORDER BY blob_id, vector_id OFFSET 1 LIMIT 1");
	cr_assert(eq(str, first.error, ""), "%s", first.error);
	cr_assert(first.scanned == 2 && first.suspects.n == 0,
		  "the first page reads the ledger's first 2 keys and finds nothing there (read %zu, suspects %zu);"
		  " it does not run on to the orphan at the end",
		  first.scanned, first.suspects.n);
	cr_assert(eq(str, first.last, second), "the next page starts after the second key");

	ledger_walk(&t, NULL, "1 hour", 2, ids, sizeof(ids), pages, sizeof(pages));
	cr_assert(eq(str, pages, "2,2,2,2,0"), "8 keys (a4's stays until its vector goes), 2 a page");
	cr_assert(eq(str, ids, "gone"), "the orphan, and not a4: its delete is in flight");

	ledger_walk(&t, NULL, "0 seconds", 3, ids, sizeof(ids), pages, sizeof(pages));
	cr_assert(eq(str, pages, "3,3,2"));
	cr_assert(eq(str, ids, "a4 gone"), "a4's delete is overdue at once: both are suspects, by key");

	ledger_walk(&t, "zz-orphans", "1 hour", 2, ids, sizeof(ids), pages, sizeof(pages));
	cr_assert(eq(str, pages, "1"), "one blob's keys only");
	cr_assert(eq(str, ids, "gone"));

	free(second);
	free(pg_start);
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

	store_claim_page(s, NULL, NULL, NULL, 4, on_claimed, &page);
	pgtest_wait(&t, &page.done);
	cr_assert(eq(str, page.error, ""), "%s", page.error);
	idlist_join(&page, ids, sizeof(ids));
	cr_assert(eq(str, ids, "a1 a2 a3 a5"), "the first page: the first 4 live rows by id");

	memset(&page, 0, sizeof(page));
	store_claim_page(s, "a5", NULL, "svc-odd", 4, on_claimed, &page);
	pgtest_wait(&t, &page.done);
	idlist_join(&page, ids, sizeof(ids));
	cr_assert(eq(str, ids, "a7"), "after a5, of svc-odd: only a7");

	/* The first page's pushes are over too. */
	pgtest_exec(t.url, "UPDATE abilitysync.sync_state SET lease_until = NULL, lease_owner = NULL");
	memset(&page, 0, sizeof(page));
	store_claim_page(s, "a1", "a5", NULL, 4, on_claimed, &page);
	pgtest_wait(&t, &page.done);
	idlist_join(&page, ids, sizeof(ids));
	cr_assert(eq(str, ids, "a2 a3 a5"), "a part's page: after a1, up to a5 included");

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
	char error[512];
};

static void on_job(const struct restore_job_row *job, const struct pg_outcome *o, void *arg)
{
	struct jobs *j = arg;

	j->done = true;
	snprintf(j->error, sizeof(j->error), "%s", o->res ? "" : o->error);
	j->found = job != NULL;
	if (job)
		j->row = *job;
}

struct flag {
	bool done, yes;
	char text[64];
	char error[512];
};

static void on_flag(bool yes, const char *text, const struct pg_outcome *o, void *arg)
{
	struct flag *f = arg;

	f->done = true;
	f->yes = yes;
	snprintf(f->text, sizeof(f->text), "%s", text ? text : "(null)");
	snprintf(f->error, sizeof(f->error), "%s", o->res ? "" : o->error);
}

static bool try_lock(struct pgtest *t, struct pgpool *p, bool exclusive)
{
	struct flag f = {0};

	store_restore_try_lock(p, exclusive, on_flag, &f);
	pgtest_wait(t, &f.done);
	cr_assert(eq(str, f.error, ""), "the restore lock: %s", f.error);
	return f.yes;
}

static void job_open(struct pgtest *t, bool resume, const char *service, struct jobs *j)
{
	memset(j, 0, sizeof(*j));
	store_restore_open(t->pool, resume, service, "host-a", 2, on_job, j);
	pgtest_wait(t, &j->done);
	cr_assert(eq(str, j->error, ""), "opening a restore job: %s", j->error);
}

static void job_page(struct pgtest *t, int64_t id, int part, size_t ok, size_t failed, const char *cursor,
		     bool finished, struct jobs *j)
{
	memset(j, 0, sizeof(*j));
	store_restore_record_page(t->pool, id, part, ok, failed, cursor, finished, on_job, j);
	pgtest_wait(t, &j->done);
	cr_assert(j->found, "recording a page: %s", j->error);
}

/* The job's status after this process closes it as `status`. */
static void job_close(struct pgtest *t, int64_t id, const char *status, bool *job_done, char *now, size_t len)
{
	struct flag f = {0};

	store_restore_close(t->pool, id, status, NULL, on_flag, &f);
	pgtest_wait(t, &f.done);
	cr_assert(eq(str, f.error, ""), "closing the job: %s", f.error);
	*job_done = f.yes;
	snprintf(now, len, "%s", f.text);
}

struct part {
	bool done, found;
	int part;
	char range[80];
	char error[512];
};

static void on_part(const struct restore_part_row *part, const struct pg_outcome *o, void *arg)
{
	struct part *p = arg;

	p->done = true;
	snprintf(p->error, sizeof(p->error), "%s", o->res ? "" : o->error);
	p->found = part != NULL;
	if (part) {
		p->part = part->part;
		snprintf(p->range, sizeof(p->range), "(%s, %s]", part->after ? part->after : "-",
			 part->upto ? part->upto : "-");
	}
}

/* The part a session takes: "N (after, upto]", or "none". */
static char *take_part(struct pgtest *t, struct pgpool *p, int64_t job, char *out, size_t len)
{
	struct part got = {0};

	store_restore_claim_part(p, job, on_part, &got);
	pgtest_wait(t, &got.done);
	cr_assert(eq(str, got.error, ""), "taking a part: %s", got.error);
	if (got.found)
		snprintf(out, len, "%d %s", got.part, got.range);
	else
		snprintf(out, len, "none");
	return out;
}

static void on_done(const struct pg_outcome *o, void *arg)
{
	cr_assert(o->res != NULL, "%s", o->error);
	*(bool *)arg = true;
}

/* Another process's session. */
static struct pgpool *session(struct pgtest *t)
{
	struct pgpool_opts po = {.conninfo = t->url, .size = 1, .queue_max = 8, .statement_timeout_ms = 10000};
	struct pgpool *p;
	struct errbuf err;
	bool ready = false;

	p = pgpool_new(t->base, &po, &err);
	cr_assert(p != NULL, "%s", err.msg);
	pgpool_wait_ready(p, 10000, pgtest_on_ready, &ready);
	pgtest_wait(t, &ready);
	return p;
}

Test(store_job, a_restore_job_is_cut_into_parts_that_sessions_share_and_resume)
{
	struct pgtest t;
	struct store *s;
	struct jobs j;
	struct pgpool *other;
	int64_t first, second;
	bool job_done, shared = false;
	char got[128], status[64];
	char *v;

	pgtest_open(&t, "restore_parts", true, 1);
	s = seed(&t);
	other = session(&t);

	cr_assert(try_lock(&t, t.pool, true), "the restore lock is free in a fresh database");
	cr_assert(not(try_lock(&t, other, false)), "no process joins while a job is being made");
	job_open(&t, false, NULL, &j);
	cr_assert(j.found);
	first = j.row.id;
	cr_assert(eq(i64, j.row.total, 6), "a new job counts the live rows it will restore");
	cr_assert(eq(i64, j.row.parts_left, 4), "6 rows cut every 2: three parts and an open-ended last one");
	cr_assert(not(try_lock(&t, other, true)), "a second job never starts beside one");

	/* Shared from now on: a second session joins and takes the parts the first has not. */
	store_restore_share_lock(t.pool, on_done, &shared);
	pgtest_wait(&t, &shared);
	cr_assert(try_lock(&t, other, false), "a second process joins the job");
	cr_assert(not(try_lock(&t, other, true)), "and no new job starts while both work");
	cr_assert(eq(str, take_part(&t, t.pool, first, got, sizeof(got)), "0 (-, a2]"));
	cr_assert(eq(str, take_part(&t, t.pool, first, got, sizeof(got)), "1 (a2, a5]"),
		  "a session never takes a part it holds");
	cr_assert(eq(str, take_part(&t, other, first, got, sizeof(got)), "2 (a5, a7]"),
		  "another session takes the first part no one holds");

	job_page(&t, first, 0, 2, 0, "a2", true, &j);
	cr_assert(eq(i64, j.row.done, 2));
	cr_assert(eq(i64, j.row.parts_left, 3), "part 0 is finished");
	job_page(&t, first, 2, 1, 0, "a6", false, &j);
	cr_assert(eq(i64, j.row.parts_left, 3), "a page that is not the part's last leaves it open");

	/* The second process dies: its part 2 is free again, at its cursor. */
	pgpool_free(other);
	other = session(&t);
	cr_assert(eq(str, take_part(&t, other, first, got, sizeof(got)), "2 (a6, a7]"),
		  "a part whose process is gone is taken again after its cursor");
	cr_assert(eq(str, take_part(&t, other, first, got, sizeof(got)), "3 (a7, -]"));
	cr_assert(eq(str, take_part(&t, other, first, got, sizeof(got)), "none"), "every part is taken");

	job_page(&t, first, 1, 1, 1, "a5", true, &j);
	job_page(&t, first, 2, 1, 0, "a7", true, &j);
	job_close(&t, first, "done", &job_done, status, sizeof(status));
	cr_assert(not(job_done), "one process done, a part left: the job is not");
	cr_assert(eq(str, status, "running"));
	job_close(&t, first, "interrupted", &job_done, status, sizeof(status));
	cr_assert(eq(str, status, "running"), "one process interrupted while another holds a part: the job runs on");
	job_page(&t, first, 3, 0, 0, NULL, true, &j);
	cr_assert(eq(i64, j.row.parts_left, 0));
	cr_assert(eq(i64, j.row.done, 5));
	cr_assert(eq(i64, j.row.failed, 1));
	job_close(&t, first, "done", &job_done, status, sizeof(status));
	cr_assert(job_done, "the last part finished: the job is done");
	job_open(&t, true, NULL, &j);
	cr_assert(not(j.found), "a finished job is never resumed");

	/* A job begun before parts existed resumes after its cursor, cut into parts then. */
	pgtest_exec(t.url, "INSERT INTO abilitysync.restore_jobs (status, total, done, cursor)"
			   " VALUES ('interrupted', 6, 3, 'a5')");
	job_open(&t, true, NULL, &j);
	cr_assert(j.found, "an unfinished job is resumed");
	cr_assert(eq(i64, j.row.done, 3), "with its counters");
	cr_assert(eq(i64, j.row.parts_left, 2));
	cr_assert(eq(str, take_part(&t, t.pool, j.row.id, got, sizeof(got)), "0 (a5, a7]"));
	job_open(&t, true, "svc-odd", &j);
	cr_assert(not(j.found), "a job of all services is not resumed for one service");

	job_open(&t, false, NULL, &j);
	second = j.row.id;
	job_open(&t, false, NULL, &j);
	cr_assert(j.row.id > second);
	v = pgtest_value(&t, "SELECT string_agg(status, ' ' ORDER BY id) FROM abilitysync.restore_jobs");
	cr_assert(eq(str, v, "done interrupted interrupted running"), "a new job marks the one still running interrupted");
	free(v);

	pgpool_free(other);
	store_free(s);
	pgtest_close(&t);
}

/* ---- reconcile runs in parts ------------------------------------------------------------ */

struct run {
	bool done, found;
	int64_t id;
	char started_at[40];
	char error[512];
};

static void on_run(const struct recon_run *run, const struct pg_outcome *o, void *arg)
{
	struct run *r = arg;

	r->done = true;
	snprintf(r->error, sizeof(r->error), "%s", o->res ? "" : o->error);
	r->found = run != NULL;
	if (run) {
		r->id = run->id;
		snprintf(r->started_at, sizeof(r->started_at), "%s", run->started_at);
	}
}

static bool recon_lock(struct pgtest *t, struct pgpool *p, bool exclusive)
{
	struct flag f = {0};

	store_reconcile_try_lock(p, exclusive, on_flag, &f);
	pgtest_wait(t, &f.done);
	cr_assert(eq(str, f.error, ""), "the reconcile lock: %s", f.error);
	return f.yes;
}

/* The running run a session would join with these options (0: none). */
static int64_t recon_join(struct pgtest *t, struct pgpool *p, const char *model)
{
	struct run r = {0};

	store_reconcile_join(p, false, NULL, model, on_run, &r);
	pgtest_wait(t, &r.done);
	cr_assert(eq(str, r.error, ""), "looking for a run: %s", r.error);
	return r.found ? r.id : 0;
}

struct rpart {
	bool done;
	char got[160];
	char error[512];
};

static void on_rpart(const struct recon_part *part, const struct pg_outcome *o, void *arg)
{
	struct rpart *p = arg;

	p->done = true;
	snprintf(p->error, sizeof(p->error), "%s", o->res ? "" : o->error);
	if (part->part >= 0)
		snprintf(p->got, sizeof(p->got), "%d (%s, %s]", part->part, part->after ? part->after : "-",
			 part->upto ? part->upto : "-");
	else
		snprintf(p->got, sizeof(p->got), "none: %s, %ld left%s", part->status ? part->status : "gone",
			 part->left, part->report ? ", reported" : "");
}

/* "N (after, upto]", or "none: <run status>, N left[, reported]". */
static char *recon_part(struct pgtest *t, struct pgpool *p, int64_t run, char *out, size_t len)
{
	struct rpart got = {0};

	store_reconcile_claim_part(p, run, on_rpart, &got);
	pgtest_wait(t, &got.done);
	cr_assert(eq(str, got.error, ""), "taking a part: %s", got.error);
	snprintf(out, len, "%s", got.got);
	return out;
}

/* Is the part this session took still unfinished? (If not, it is let go.) */
static bool recon_part_open(struct pgtest *t, struct pgpool *p, int64_t run, int part)
{
	struct flag f = {0};

	store_reconcile_part_check(p, run, part, on_flag, &f);
	pgtest_wait(t, &f.done);
	cr_assert(eq(str, f.error, ""), "checking a part: %s", f.error);
	return f.yes;
}

static void recon_part_done(struct pgtest *t, struct pgpool *p, int64_t run, int part, long rows)
{
	char report[64];
	bool done = false;

	snprintf(report, sizeof(report), "{\"checked\": {\"rows\": %ld}}", rows);
	store_reconcile_part_done(p, run, part, report, on_done, &done);
	pgtest_wait(t, &done);
	cr_assert(not(recon_part_open(t, p, run, part)), "a finished part is let go");
}

struct count {
	bool done;
	long n;
	char error[512];
};

static void on_count(long n, const struct pg_outcome *o, void *arg)
{
	struct count *c = arg;

	c->done = true;
	c->n = n;
	snprintf(c->error, sizeof(c->error), "%s", o->res ? "" : o->error);
}

static long recon_reserve(struct pgtest *t, struct pgpool *p, int64_t run, long n)
{
	struct count c = {0};

	store_reconcile_reserve(p, run, n, 4, on_count, &c);
	pgtest_wait(t, &c.done);
	cr_assert(eq(str, c.error, ""), "the repair budget: %s", c.error);
	return c.n;
}

static void on_texts(const char *const *texts, size_t n, const struct pg_outcome *o, void *arg)
{
	struct count *c = arg;
	size_t i;

	c->done = true;
	snprintf(c->error, sizeof(c->error), "%s", o->res ? "" : o->error);
	for (i = 0; i < n; i++)
		c->n += strstr(texts[i], "\"rows\"") ? 1 : 0;
}

static char *run_status(struct pgtest *t, int64_t run)
{
	char sql[128];

	snprintf(sql, sizeof(sql), "SELECT status FROM abilitysync.reconcile_runs WHERE id = %lld", (long long)run);
	return pgtest_value(t, sql);
}

/* A session closed lets its locks go once its backend is gone: wait for that. */
static void wait_lock_holders(struct pgtest *t, int n)
{
	char want[16];

	snprintf(want, sizeof(want), "%d", n);
	pgtest_wait_value(t, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = "
			  ABILITYSYNC_LOCK_CLASS_TEXT " AND objid = 1 AND objsubid = 2", want);
}

static void recon_end(struct pgtest *t, int64_t run, bool alone)
{
	bool done = false;

	store_reconcile_record_end(t->pool, run, "failed", "{}", 0, "the vector DB went away", alone, on_done, &done);
	pgtest_wait(t, &done);
}

Test(store_job, a_reconcile_run_is_cut_into_parts_that_sessions_share)
{
	struct pgtest t;
	struct store *s;
	struct pgpool *other;
	struct run r = {0};
	struct count reports = {0};
	char got[160], sql[160];
	bool shared = false, locked = false;
	int64_t run;
	char *v;

	pgtest_open(&t, "reconcile_parts", true, 1);
	s = seed(&t);
	other = session(&t);
	pgtest_exec(t.url, "INSERT INTO abilitysync.reconcile_runs (dry_run) VALUES (false)"); /* its process is gone */

	cr_assert(recon_lock(&t, t.pool, true), "the reconcile lock is free");
	cr_assert(not(recon_lock(&t, other, false)), "no process joins while a run is being made");
	store_reconcile_record_run(t.pool, false, false, NULL, "m1", "host-a", 2, on_run, &r);
	pgtest_wait(&t, &r.done);
	cr_assert(r.found, "recording the run: %s", r.error);
	run = r.id;
	cr_assert(eq(sz, strlen(r.started_at), 24), "started_at in ISO 8601: %s", r.started_at);
	v = pgtest_value(&t, "SELECT string_agg(status || ' ' || coalesce(error, '-'), ', ' ORDER BY id)"
			     " FROM abilitysync.reconcile_runs");
	cr_assert(eq(str, v, "failed interrupted: no process was left working on it, running -"),
		  "a new run fails the one no process works on");
	free(v);
	v = pgtest_value(&t, "SELECT string_agg(part || ' (' || coalesce(after_id, '-') || ', ' || coalesce(upto_id, '-')"
			     " || ']', ' ' ORDER BY part) FROM abilitysync.reconcile_parts");
	cr_assert(eq(str, v, "0 (-, -] 1 (-, a2] 2 (a2, a5] 3 (a5, a7] 4 (a7, -]"),
		  "part 0 (the ledger and the outbox), then the 6 live rows cut every 2, the last part open-ended");
	free(v);

	store_reconcile_share_lock(t.pool, on_done, &shared);
	pgtest_wait(&t, &shared);
	cr_assert(recon_lock(&t, other, false), "a second process shares the lock");
	cr_assert(not(recon_lock(&t, other, true)), "and no new run starts while both work");
	cr_assert(eq(i64, recon_join(&t, other, "m1"), run), "the run with the same options is joined");
	cr_assert(eq(i64, recon_join(&t, other, "m2"), 0), "a run with other options is not");

	cr_assert(eq(str, recon_part(&t, t.pool, run, got, sizeof(got)), "0 (-, -]"));
	cr_assert(eq(str, recon_part(&t, t.pool, run, got, sizeof(got)), "1 (-, a2]"),
		  "a session never takes a part it holds");
	cr_assert(eq(str, recon_part(&t, other, run, got, sizeof(got)), "2 (a2, a5]"),
		  "another session takes the first part no one holds");
	cr_assert(recon_part_open(&t, other, run, 2), "a part just taken is unfinished");
	cr_assert(eq(i64, recon_reserve(&t, t.pool, run, 3), 3));
	cr_assert(eq(i64, recon_reserve(&t, other, run, 3), 1), "the budget of 4 is the run's, whoever draws on it");
	cr_assert(eq(i64, recon_reserve(&t, t.pool, run, 1), 0));
	recon_part_done(&t, t.pool, run, 0, 0);
	recon_part_done(&t, t.pool, run, 1, 2);

	/*
	 * The race a claim can lose, forced: its snapshot saw part 0 unfinished,
	 * the part was finished and let go, then the claim's lock came. The check
	 * that follows every claim must see it finished, and let it go.
	 */
	snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(" ABILITYSYNC_RECONCILE_PART_LOCK_CLASS_TEXT ", %lld)",
		 (long long)(run % 2047 * 1048576));
	pgpool_query(other, sql, 0, NULL, on_done, &locked);
	pgtest_wait(&t, &locked);
	cr_assert(not(recon_part_open(&t, other, run, 0)), "a finished part taken late is not worked on again");
	v = pgtest_value(&t, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
			     " AND classid = " ABILITYSYNC_RECONCILE_PART_LOCK_CLASS_TEXT);
	cr_assert(eq(str, v, "1"), "and its lock is let go (only part 2's is held)");
	free(v);

	/* The second process dies: its part is free again. */
	pgpool_free(other);
	wait_lock_holders(&t, 1);
	other = session(&t);
	cr_assert(recon_lock(&t, other, false));
	cr_assert(eq(str, recon_part(&t, other, run, got, sizeof(got)), "2 (a2, a5]"),
		  "a part whose process is gone is taken again");
	cr_assert(eq(str, recon_part(&t, other, run, got, sizeof(got)), "3 (a5, a7]"));
	cr_assert(eq(str, recon_part(&t, other, run, got, sizeof(got)), "4 (a7, -]"));
	cr_assert(eq(str, recon_part(&t, t.pool, run, got, sizeof(got)), "none: running, 3 left"),
		  "the parts left are another's: this process waits");
	recon_part_done(&t, other, run, 2, 2);
	recon_part_done(&t, other, run, 3, 2);
	recon_part_done(&t, other, run, 4, 0);
	cr_assert(eq(str, recon_part(&t, t.pool, run, got, sizeof(got)), "none: running, 0 left"),
		  "every part is checked: time to merge");
	store_reconcile_part_reports(t.pool, run, on_texts, &reports);
	pgtest_wait(&t, &reports.done);
	cr_assert(eq(long, reports.n, 5), "each part's counts are kept: %s", reports.error);

	recon_end(&t, run, true);
	v = run_status(&t, run);
	cr_assert(eq(str, v, "running"), "a failure is not the run's while another process shares it");
	free(v);
	pgpool_free(other);
	wait_lock_holders(&t, 1);
	recon_end(&t, run, true);
	v = run_status(&t, run);
	cr_assert(eq(str, v, "failed"), "alone, it is");
	free(v);
	pgtest_exec(t.url, "UPDATE abilitysync.reconcile_runs SET status = 'ok' WHERE status = 'failed' AND report = '{}'");
	recon_end(&t, run, true);
	v = run_status(&t, run);
	cr_assert(eq(str, v, "ok"), "a run another process ended is left as it ended");
	free(v);
	cr_assert(eq(str, recon_part(&t, t.pool, run, got, sizeof(got)), "none: ok, 0 left, reported"),
		  "an ended run gives no part, and its report");

	store_free(s);
	pgtest_close(&t);
}

/*
 * A reconcile requeue of c-14068 (no sync state) whose vector's ledger entry
 * names c-33647 (the same vector_id: deleted, its vector not yet) while
 * c-33647 is registered again (here a session doing what the write does: it
 * holds the entry, writes it and the row). The requeue waited for the entry,
 * then judged the owner's row missing from its snapshot and took the entry
 * from a live ability: both were pushed to one vector, whichever landed last
 * won. An entry whose owner's row it cannot see is now taken only if the
 * entry is as the snapshot had it.
 */
Test(store_job, a_requeue_leaves_a_vector_its_owner_took_back_while_it_waited)
{
	struct pgtest t;
	struct count c = {0};
	struct recon_place place = {"c-14068", "abilities_s", 7, -1};
	PGconn *w;
	char *v;

	locktest_open(&t, "recon_requeue_owner_back");
	pgtest_exec(t.url, "INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding)"
			   " VALUES ('c-14068', 7, 'n', 's', 'd', '[1]');"
			   " INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state, generation)"
			   " VALUES ('c-33647', 'abilities_s', 7, '', 'pending_delete', 2);"
			   " INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id, last_written_at)"
			   " VALUES ('abilities_s', 7, 'c-33647', now() - interval '1 hour')");
	w = locktest_hold(&t, "WITH l AS (UPDATE abilitysync.vector_ledger SET last_written_at = now()"
			      "  WHERE blob_id = 'abilities_s' AND vector_id = 7 RETURNING 1),"
			      " a AS (INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description,"
			      "  embedding) VALUES ('c-33647', 7, 'n', 's', 'd', '[2]') RETURNING 1),"
			      " s AS (UPDATE abilitysync.sync_state SET state = 'pending', generation = 3"
			      "  WHERE ability_id = 'c-33647' RETURNING 1)"
			      " SELECT 1 FROM l, a, s");
	store_reconcile_requeue_rows(t.pool, &place, 1, on_count, &c);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "1");
	locktest_commit(w);
	pgtest_wait(&t, &c.done);
	cr_assert(eq(str, c.error, ""), "the requeue failed: %s", c.error);
	v = pgtest_value(&t, "SELECT ability_id FROM abilitysync.vector_ledger");
	cr_assert(eq(str, v, "c-33647"), "the vector stays with the ability that took it back (%s)", v);
	free(v);
	cr_assert(eq(i64, c.n, 0), "c-14068 is not queued onto c-33647's vector");
	pgtest_close(&t);
}

/*
 * The reconcile's requeue of failed and overdue rows (a, x) while a's sync
 * state is held: x, an ability whose delete failed (no row), is registered
 * again and its push fails too (failed at generation 2, a live row) before
 * the requeue locks it. The requeue read "no row" from its snapshot and
 * "failed" from the latest version: it made the live ability pending_delete,
 * and the retry worker deleted its vector. It now requeues a row only at the
 * generation its snapshot saw, as the operator's retry does.
 */
Test(store_job, a_reconcile_requeue_leaves_a_change_written_while_it_waited_as_it_is)
{
	struct pgtest t;
	struct count c = {0};
	const char *ids[2] = {"a", "x"};
	PGconn *rec;
	char *v;

	locktest_open(&t, "recon_requeue_changes_stale");
	pgtest_exec(t.url, "INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state,"
			   " generation) VALUES ('a', 'abilities_s', 1, 'h', 'failed', 1),"
			   " ('x', 'abilities_s', 2, '', 'failed', 1)");
	rec = locktest_hold(&t, "SELECT 1 FROM abilitysync.sync_state WHERE ability_id = 'a' FOR UPDATE");
	store_reconcile_requeue_changes(t.pool, ids, 2, on_count, &c);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "1");
	pgtest_exec(t.url, "INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding)"
			   " VALUES ('x', 2, 'n', 's', 'd', '[1]');"
			   " UPDATE abilitysync.sync_state SET generation = 2, content_hash = 'h2' WHERE ability_id = 'x'");
	locktest_commit(rec);
	pgtest_wait(&t, &c.done);
	cr_assert(eq(str, c.error, ""), "the requeue failed: %s", c.error);
	cr_assert(eq(i64, c.n, 1), "a is requeued, x (written meanwhile) is not");
	v = pgtest_value(&t, "SELECT state || ' ' || generation FROM abilitysync.sync_state WHERE ability_id = 'x'");
	cr_assert(eq(str, v, "failed 2"), "x has a live row: it is never made pending_delete (%s)", v);
	free(v);
	pgtest_close(&t);
}

/*
 * Two processes on one reconcile run. One requeues y (the original app's
 * row, no sync state) onto vector 7, whose ledger entry names x, deleted and
 * settled; its statement waits for z's sync state. Meanwhile the other finds
 * vector 7 still in the vector DB (an orphan): it reopens x's entry and makes
 * x pending_delete, to delete it. The reopening left the entry's
 * last_written_at as it was, so the first took the entry as its snapshot had
 * it (ENTRY_SAW) and gave it to y: y's add and x's delete of one vector were
 * both pushed, and whichever landed last won (y synced with no vector). A
 * reopened entry is a written one now.
 */
Test(store_job, a_requeue_leaves_a_vector_an_orphan_requeue_reopened_while_it_waited)
{
	struct pgtest t;
	struct count c = {0}, o = {0};
	struct recon_place rows[2] = {{"y", "abilities_s", 7, -1}, {"z", "abilities_s", 9, 1}};
	struct recon_place orphan = {"x", "abilities_s", 7, 2};
	PGconn *w;
	char *v;

	locktest_open(&t, "recon_requeue_orphan_reopened");
	pgtest_exec(t.url, "INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding)"
			   " VALUES ('y', 7, 'n', 's', 'd', '[1]'), ('z', 9, 'n', 's', 'd', '[2]');"
			   " INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state, generation)"
			   " VALUES ('x', 'abilities_s', 7, '', 'deleted', 2), ('z', 'abilities_s', 9, 'h', 'synced', 1);"
			   " INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id, last_written_at, deleted_at)"
			   " VALUES ('abilities_s', 7, 'x', now() - interval '1 hour', now() - interval '1 hour'),"
			   " ('abilities_s', 9, 'z', now() - interval '1 hour', NULL)");
	w = locktest_hold(&t, "SELECT 1 FROM abilitysync.sync_state WHERE ability_id = 'z' FOR UPDATE");
	store_reconcile_requeue_rows(t.pool, rows, 2, on_count, &c);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "1");
	store_reconcile_requeue_orphans(t.pool, &orphan, 1, on_count, &o);
	pgtest_wait(&t, &o.done);
	cr_assert(eq(str, o.error, ""), "the orphan's requeue failed: %s", o.error);
	cr_assert(eq(i64, o.n, 1), "x is queued to delete vector 7");
	locktest_commit(w);
	pgtest_wait(&t, &c.done);
	cr_assert(eq(str, c.error, ""), "the requeue failed: %s", c.error);
	v = pgtest_value(&t, "SELECT ability_id FROM abilitysync.vector_ledger WHERE vector_id = 7");
	cr_assert(eq(str, v, "x"), "vector 7 stays x's until its delete is settled (%s)", v);
	free(v);
	pgtest_close(&t);
}

/*
 * A reconcile page that requeues two rows of one vector no ledger entry names
 * (c-new without a sync state, c-old synced but missing from the vector DB):
 * the ledger claim took the key twice in one upsert, which Postgres refuses
 * ("cannot affect row a second time"), and every run failed on that page.
 * Now the row that has a sync state claims it; the other is left as it was.
 */
Test(store_job, a_requeue_of_two_rows_of_one_vector_claims_it_once)
{
	struct pgtest t;
	struct count c = {0};
	char *v;
	struct recon_place places[2] = {{"c-14068", "abilities_s", 7, -1}, {"c-33647", "abilities_s", 7, 0}};

	pgtest_open(&t, "recon_requeue_twice", true, 1);
	pgtest_exec(t.url, "INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding)"
			   " VALUES ('c-14068', 7, 'n', 's', 'd', '[1]'), ('c-33647', 7, 'n', 's', 'd', '[2]');"
			   " INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state, generation)"
			   " VALUES ('c-33647', 'abilities_s', 7, 'h', 'synced', 4)");
	places[1].generation = 4;
	store_reconcile_requeue_rows(t.pool, places, 2, on_count, &c);
	pgtest_wait(&t, &c.done);
	cr_assert(eq(str, c.error, ""), "the requeue failed: %s", c.error);
	cr_assert(eq(i64, c.n, 1), "one row requeued");
	v = pgtest_value(&t, "SELECT string_agg(ability_id || ' ' || (deleted_at IS NULL), ',') FROM abilitysync.vector_ledger");
	cr_assert(eq(str, v, "c-33647 true"), "the row with a sync state holds the vector");
	free(v);
	v = pgtest_value(&t, "SELECT string_agg(ability_id || ' ' || state || ' ' || generation, ',' ORDER BY ability_id)"
			     " FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "c-33647 pending 5"), "it is pushed again; the other is not made pending");
	free(v);
	pgtest_close(&t);
}

/*
 * A reconcile requeue (of `place`, a row or else an orphaned ledger entry) of
 * c-14068, synced at generation 3, with the ledger entries `ledger`, while a
 * session doing what a write or an outcome does holds its sync state and
 * then updates its ledger entries: the update must not wait (the requeue
 * waits for the sync state before it touches the ledger), and the requeue
 * then makes the row pending again.
 */
static void requeue_while_its_state_is_held(const char *db, const char *ledger, const struct recon_place *place,
					    bool orphan)
{
	struct pgtest t;
	struct count c = {0};
	PGconn *w;
	char sql[512];
	char *v;

	locktest_open(&t, db);
	pgtest_exec(t.url, "INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding)"
			   " VALUES ('c-14068', 7, 'n', 's', 'd', '[1]');"
			   " INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state, generation)"
			   " VALUES ('c-14068', 'abilities_s', 7, 'h', 'synced', 3)");
	snprintf(sql, sizeof(sql),
		 "INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id, deleted_at) VALUES %s", ledger);
	pgtest_exec(t.url, sql);
	w = locktest_hold(&t, "SELECT 1 FROM abilitysync.sync_state WHERE ability_id = 'c-14068' FOR UPDATE");
	if (orphan)
		store_reconcile_requeue_orphans(t.pool, place, 1, on_count, &c);
	else
		store_reconcile_requeue_rows(t.pool, place, 1, on_count, &c);
	locktest_runs_without_waiting(&t, w, "UPDATE abilitysync.vector_ledger SET last_written_at = now()"
					     " WHERE ability_id = 'c-14068'");
	pgtest_wait(&t, &c.done);
	cr_assert(eq(str, c.error, ""), "the requeue failed: %s", c.error);
	cr_assert(eq(i64, c.n, 1), "the row is requeued");
	v = pgtest_value(&t, "SELECT state || ' ' || generation FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "pending 4"));
	free(v);
	pgtest_close(&t);
}

/*
 * The requeue used to claim the ledger entry first and then wait for the
 * sync state: a deadlock, which Postgres broke after deadlock_timeout (a
 * failed requeue ends the whole reconcile run). It now locks the sync states
 * first, as every other statement does.
 */
Test(store_job, a_requeue_waits_for_a_write_of_its_ability_without_a_deadlock)
{
	struct recon_place place = {"c-14068", "abilities_s", 7, 3};

	requeue_while_its_state_is_held("recon_requeue_order", "('abilities_s', 7, 'c-14068', NULL)", &place, false);
}

/* The same for an orphaned ledger entry of the ability (its row and sync state elsewhere). */
Test(store_job, an_orphan_requeue_waits_for_an_outcome_of_its_ability_without_a_deadlock)
{
	struct recon_place place = {"c-14068", "abilities_old", 9, 3};

	requeue_while_its_state_is_held("recon_orphan_order",
					"('abilities_s', 7, 'c-14068', NULL), ('abilities_old', 9, 'c-14068', now())", &place,
					true);
}

struct claimed_text {
	bool done;
	size_t n;
	char error[512];
	char rows[256]; /* "<ability_id> <generation> <description>;" for each row */
};

static void on_claimed_text(const struct claimed_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct claimed_text *x = arg;
	size_t i, at = 0;

	x->done = true;
	x->n = n;
	snprintf(x->error, sizeof(x->error), "%s", rows && o->res ? "" : o->error);
	for (i = 0; i < n && at < sizeof(x->rows); i++)
		at += rows[i].leased ? (size_t)snprintf(x->rows + at, sizeof(x->rows) - at, "%s %lld %s;",
							rows[i].ability_id, (long long)rows[i].generation,
							rows[i].description)
				     : (size_t)snprintf(x->rows + at, sizeof(x->rows) - at, "%s (left);", rows[i].ability_id);
}

/*
 * A restore page over a row without a sync state (a1, the original
 * application's) and one with (a2) while a write of both holds a2's sync
 * state and is about to insert a1's (here a session doing what it does). The
 * page used to insert a1's and then wait for a2's, in one pass: a deadlock
 * (the page's statement failed after deadlock_timeout and stopped the
 * restore). It now locks the sync states that exist first, as a write does.
 */
Test(store_job, a_restore_page_waits_for_a_write_of_its_rows_without_a_deadlock)
{
	struct pgtest t;
	struct store *s;
	struct claimed_text page = {0};
	PGconn *w;

	locktest_open(&t, "restore_page_order");
	s = new_store(&t);
	pgtest_exec(t.url, "INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding)"
			   " VALUES ('a1', 1, 'n', 's', 'd', '[1]'), ('a2', 2, 'n', 's', 'd', '[2]');"
			   " INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state, generation)"
			   " VALUES ('a2', 'abilities_s', 2, 'h', 'synced', 1)");
	w = locktest_hold(&t, "SELECT 1 FROM abilitysync.sync_state WHERE ability_id = 'a2' FOR UPDATE");
	store_claim_page(s, NULL, NULL, NULL, 4, on_claimed_text, &page);
	locktest_runs_without_waiting(&t, w, "INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id,"
					     " content_hash, state, generation) VALUES ('a1', 'abilities_s', 1, 'h2', 'pending', 1)"
					     " ON CONFLICT (ability_id) DO NOTHING");
	pgtest_wait(&t, &page.done);
	cr_assert(eq(str, page.error, ""), "the page failed: %s", page.error);
	cr_assert(eq(str, page.rows, "a1 (left);a2 1 d;"), "a1, written meanwhile, is the write's to push: %s",
		  page.rows);
	store_free(s);
	pgtest_close(&t);
}

/*
 * A restore page that waits for one of its rows (a1, held) while another of
 * its rows (a2) is written, pushed and recorded synced by a replica, and a
 * third (a3) deleted. The page took a2 at its latest sync state (generation
 * 2) with a2's mirror row as it was when the statement began: it pushed the
 * old content under generation 2, and the outcome recorded it synced (the
 * acknowledged write was lost until a deep reconcile); and it took a3 back
 * to pending with its old content (the delete came back). The page now
 * leaves a row whose generation moved since its snapshot to whoever moved it.
 * A fourth (a4, pending) is pushed and recorded by another replica: the same
 * generation, but the snapshot's ledger said its vector could not exist in
 * the blob (created after the entry was last written), and the page took it
 * and added it again without a delete first (a second copy). A row whose sync
 * state was touched since the snapshot is left too. A fifth (a5) is written
 * by this replica (its lease is ours): the page left it, but said it was
 * leased (the lease is ours), and the outbox pushed the snapshot's old
 * content under the write's lease, landing after the write's own push
 * (stale while synced, or a second copy). A row left is never said leased.
 */
Test(store_job, a_restore_page_leaves_rows_changed_while_it_waited)
{
	struct pgtest t;
	struct store *s;
	struct claimed_text page = {0};
	PGconn *held;
	char *v;

	locktest_open(&t, "restore_page_stale");
	s = new_store(&t);
	pgtest_exec(t.url, "INSERT INTO abilities (ability_id, vector_id, ability_name, service_name, description, embedding)"
			   " VALUES ('a1', 1, 'n', 's', 'one', '[1]'), ('a2', 2, 'n', 's', 'old', '[2]'),"
			   " ('a3', 3, 'n', 's', 'three', '[3]'), ('a4', 4, 'n', 's', 'four', '[4]'),"
			   " ('a5', 5, 'n', 's', 'five', '[5]');"
			   " INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state, generation)"
			   " VALUES ('a1', 'abilities_s', 1, 'h', 'synced', 1), ('a2', 'abilities_s', 2, 'h', 'synced', 1),"
			   " ('a3', 'abilities_s', 3, 'h', 'synced', 1), ('a4', 'abilities_s', 4, 'h', 'pending', 1),"
			   " ('a5', 'abilities_s', 5, 'h', 'synced', 1);"
			   " INSERT INTO abilitysync.blobs (blob_id, created_at) VALUES ('abilities_s', now());"
			   " INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id, last_written_at)"
			   " VALUES ('abilities_s', 4, 'a4', now() - interval '1 hour')");
	held = locktest_hold(&t, "SELECT 1 FROM abilitysync.sync_state WHERE ability_id = 'a1' FOR UPDATE");
	store_claim_page(s, NULL, NULL, NULL, 5, on_claimed_text, &page);
	pgtest_wait_value(&t, LOCKTEST_WAITING, "1");
	pgtest_exec(t.url, "UPDATE abilities SET description = 'new' WHERE ability_id = 'a2';"
			   " UPDATE abilitysync.sync_state SET generation = 2, content_hash = 'h2' WHERE ability_id = 'a2';"
			   " DELETE FROM abilities WHERE ability_id = 'a3';"
			   " UPDATE abilitysync.sync_state SET state = 'deleted', generation = 2 WHERE ability_id = 'a3';"
			   " UPDATE abilitysync.vector_ledger SET last_written_at = now() WHERE ability_id = 'a4';"
			   " UPDATE abilitysync.sync_state SET state = 'synced', updated_at = now() WHERE ability_id = 'a4';"
			   " UPDATE abilities SET description = 'new five' WHERE ability_id = 'a5';"
			   " UPDATE abilitysync.sync_state SET state = 'pending', generation = 2, content_hash = 'h5',"
			   "  lease_owner = 'replica-a#7', lease_until = now() + interval '1 minute' WHERE ability_id = 'a5'");
	locktest_commit(held);
	pgtest_wait(&t, &page.done);
	cr_assert(eq(str, page.error, ""), "the page failed: %s", page.error);
	cr_assert(eq(str, page.rows, "a1 1 one;a2 (left);a3 (left);a4 (left);a5 (left);"), "%s", page.rows);
	v = pgtest_value(&t, "SELECT string_agg(ability_id || ' ' || state || ' ' || generation, ', ' ORDER BY ability_id)"
			     " FROM abilitysync.sync_state");
	cr_assert(eq(str, v, "a1 pending 1, a2 synced 2, a3 deleted 2, a4 synced 1, a5 pending 2"), "%s", v);
	free(v);
	store_free(s);
	pgtest_close(&t);
}
