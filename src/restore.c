/*
 * restore.c - a restore job: the vector DB rebuilt from the mirror, resumably.
 *
 * The job owns its session (the lock), its row in restore_jobs and the order
 * of pages; the pushing is the outbox's, through the same fenced path as every
 * write (outbox.h): a page is claimed (its rows made pending and leased),
 * pushed, and recorded row by row; then the job's counters and cursor move.
 * Claims and pushes overlap up to PAGES_IN_FLIGHT pages; the job records
 * pages strictly in order, so the cursor only ever covers pages entirely in.
 */
#include "restore.h"

#include "ability.h"
#include "buf.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "progress.h"
#include "vdbid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define COMP "restore"
#define READY_TIMEOUT_MS 10000
#define PAGES_IN_FLIGHT 3
#define BLOB_MAX (ABILITY_TEXT_MAX * 2 + 16)

struct page {
	TAILQ_ENTRY(page) link;
	struct restore *r;
	char *last_id;          /* the cursor once this page is recorded */
	bool claimed, pushed;
	size_t synced, failed, deferred;
	char why[512];          /* the vector DB could not be reached: the job stops here */
};

TAILQ_HEAD(page_list, page);

/*
 * A row that would overwrite another row's vector: both hash to one vector_id
 * in one blob (31 bits: about one pair per blob in 100,000 rows). The owner
 * keeps it: the ability the ledger says holds it, else the smallest
 * ability_id; the loser is recorded failed with the owner's name, never pushed.
 */
struct loser {
	char *ability_id;
	char *owner;
	char *service;
	char blob[BLOB_MAX];
	int64_t vector_id;
};

struct restore {
	struct event_base *base;
	struct vdb *v;
	struct outbox *ob;
	struct store *store;
	struct pgpool *pool;
	struct restore_opts o;
	char *service, *host;
	restore_started_fn started;
	restore_done_fn done;
	void *arg;

	int64_t job_id;
	int64_t total, done_rows, failed_rows;
	struct loser *losers;   /* rows whose vector belongs to another row (by ability_id) */
	size_t nlosers;
	char *fetch_cursor;
	char page_text[16];
	struct page_list pages;
	size_t npages;
	bool fetching, recording, eof, stopping, closing, over, aborted;
	size_t vdb_waiting;     /* pages in the outbox and blob preparations out */
	char **blobs;           /* the blobs of the job's services, prepared before the first page */
	size_t nblobs, blob_next;
	char error[600];        /* why the job stops early */
	struct progress *progress;
	int64_t started_ms;

	struct event *later;
	enum restore_outcome outcome;
	json_t *summary;
	char why[700];
};

static void fetch_more(struct restore *r);
static void record_ready(struct restore *r);
static void maybe_finish(struct restore *r);

/* ---- the end ---------------------------------------------------------------------------- */

static void page_free(struct page *p)
{
	free(p->last_id);
	free(p);
}

static void job_free(struct restore *r)
{
	struct page *p;

	while ((p = TAILQ_FIRST(&r->pages)) != NULL) {
		TAILQ_REMOVE(&r->pages, p, link);
		page_free(p);
	}
	progress_free(r->progress);
	if (r->later)
		event_free(r->later);
	json_decref(r->summary);
	for (size_t i = 0; i < r->nlosers; i++) {
		free(r->losers[i].ability_id);
		free(r->losers[i].owner);
		free(r->losers[i].service);
	}
	free(r->losers);
	for (size_t i = 0; i < r->nblobs; i++)
		free(r->blobs[i]);
	free(r->blobs);
	free(r->fetch_cursor);
	free(r->service);
	free(r->host);
	free(r);
}

static void on_later(evutil_socket_t fd, short what, void *arg)
{
	struct restore *r = arg;

	(void)fd, (void)what;
	pgpool_free(r->pool); /* the lock goes with the session */
	r->pool = NULL;
	if (r->done)
		r->done(r->outcome, r->summary, r->why, r->arg);
	job_free(r);
}

static void end_now(struct restore *r, enum restore_outcome outcome, const char *status)
{
	struct timeval now = {0, 0};
	double secs = (double)(clock_mono_ms() - r->started_ms) / 1000.0;

	progress_free(r->progress);
	r->progress = NULL;
	r->over = true;
	r->outcome = outcome;
	if (!r->summary)
		r->summary = json_pack("{s:I, s:s, s:s?, s:I, s:I, s:I, s:f, s:f, s:s?}", "job_id", (json_int_t)r->job_id,
				       "status", status, "service_name", r->service, "total", (json_int_t)r->total,
				       "done", (json_int_t)r->done_rows, "failed", (json_int_t)r->failed_rows, "seconds",
				       secs, "vectors_per_second", secs > 0 ? (double)r->done_rows / secs : 0.0,
				       "error", r->error[0] ? r->error : NULL);
	r->later = evtimer_new(r->base, on_later, r);
	evtimer_add(r->later, &now);
}

static void refuse(struct restore *r, const char *code, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* The job never started: the summary is {"refused": code}, `why` says it in words. */
static void refuse(struct restore *r, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
	r->summary = json_pack("{s:s}", "refused", code);
	end_now(r, RESTORE_REFUSED, "refused");
}

static void on_job_closed(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	bool done = !r->error[0];

	if (r->aborted)
		return;
	if (!o->res)
		log_warn(COMP, "job %lld: recording its end failed: %s", (long long)r->job_id, o->error);
	if (done)
		snprintf(r->why, sizeof(r->why), "done");
	end_now(r, done ? RESTORE_DONE : RESTORE_FAILED, done ? "done" : r->stopping ? "interrupted" : "failed");
}

/* Everything read is recorded (or the job stops): write the job's end. */
static void close_job(struct restore *r)
{
	const char *status = !r->error[0] ? "done" : r->stopping ? "interrupted" : "failed";
	char id[24];
	const char *params[3] = {id, status, r->error[0] ? r->error : NULL};

	r->closing = true;
	snprintf(r->why, sizeof(r->why), "%s", r->error);
	snprintf(id, sizeof(id), "%lld", (long long)r->job_id);
	if (!r->pool || !pgpool_ready(r->pool)) {
		end_now(r, RESTORE_FAILED, status);
		return;
	}
	pgpool_query(r->pool,
		     "UPDATE abilitysync.restore_jobs SET status = $2, error = $3, updated_at = now(),"
		     " finished_at = CASE WHEN $2 = 'done' THEN now() END,"
		     " total = CASE WHEN $2 = 'done' THEN greatest(total, done + failed) ELSE total END"
		     " WHERE id = $1::bigint",
		     3, params, on_job_closed, r);
}

static void stop_with(struct restore *r, const char *fmt, ...) PRINTF_LIKE(2, 3);

/* Something went wrong: read no more; close once what is on the wire is back. */
static void stop_with(struct restore *r, const char *fmt, ...)
{
	va_list ap;

	if (!r->error[0]) {
		va_start(ap, fmt);
		vsnprintf(r->error, sizeof(r->error), fmt, ap);
		va_end(ap);
		log_error(COMP, "job %lld: %s; `abilitysync restore --resume` continues after the last recorded page",
			  (long long)r->job_id, r->error);
	}
	maybe_finish(r);
}

static void maybe_finish(struct restore *r)
{
	if (r->over || r->closing || r->fetching || r->recording || r->vdb_waiting)
		return;
	if (r->error[0] || r->stopping || (r->eof && TAILQ_EMPTY(&r->pages))) {
		if (r->stopping && !r->error[0])
			snprintf(r->error, sizeof(r->error), "stopped");
		close_job(r);
	}
}

/* ---- recording pages, in order ---------------------------------------------------------- */

static void on_page_recorded(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	struct page *p = TAILQ_FIRST(&r->pages);

	if (r->aborted)
		return;
	r->recording = false;
	if (!o->res || PQntuples(o->res) != 1) {
		stop_with(r, "recording a page: %s", o->res ? "the job row is gone" : o->error);
		return;
	}
	r->done_rows = atoll(PQgetvalue(o->res, 0, 0));
	r->failed_rows = atoll(PQgetvalue(o->res, 0, 1));
	if (r->progress)
		progress_set(r->progress, r->done_rows, r->failed_rows);
	TAILQ_REMOVE(&r->pages, p, link);
	r->npages--;
	page_free(p);
	record_ready(r);
	fetch_more(r);
	maybe_finish(r);
}

/* The page's rows are recorded by the outbox; the job's counters and cursor follow. */
static void send_record(struct restore *r, struct page *p)
{
	char ok[24], bad[24], id[24];
	const char *params[4] = {ok, bad, p->last_id, id};

	snprintf(ok, sizeof(ok), "%zu", p->synced + p->deferred);
	snprintf(bad, sizeof(bad), "%zu", p->failed);
	snprintf(id, sizeof(id), "%lld", (long long)r->job_id);
	r->recording = true;
	pgpool_query(r->pool,
		     "UPDATE abilitysync.restore_jobs SET done = done + $1::bigint, failed = failed + $2::bigint,"
		     " cursor = $3, updated_at = now() WHERE id = $4::bigint RETURNING done, failed",
		     4, params, on_page_recorded, r);
}

static void record_ready(struct restore *r)
{
	struct page *p = TAILQ_FIRST(&r->pages);

	if (r->recording || r->over || !p || !p->pushed)
		return;
	if (p->why[0]) {
		stop_with(r, "%s", p->why);
		return;
	}
	send_record(r, p);
}

/* ---- pages through the outbox ------------------------------------------------------------ */

static void page_out(struct restore *r)
{
	if (--r->vdb_waiting == 0 && r->aborted)
		job_free(r);
}

static void on_page_pushed(const struct outbox_page *res, void *arg)
{
	struct page *p = arg;
	struct restore *r = p->r;

	p->synced = res->synced;
	p->failed = res->failed;
	p->deferred = res->deferred;
	if (res->unavailable)
		snprintf(p->why, sizeof(p->why), "%s", res->unavailable);
	p->pushed = true;
	if (r->aborted) {
		page_out(r);
		return;
	}
	r->vdb_waiting--;
	if (res->deferred)
		log_debug(COMP, "job %lld: %zu row(s) of the page up to %s left to the outbox", (long long)r->job_id,
			  res->deferred, p->last_id);
	record_ready(r);
	maybe_finish(r);
}

static void on_page_claimed(size_t rows, const char *last_id, const struct pg_outcome *pg, void *arg)
{
	struct page *p = arg;
	struct restore *r = p->r;

	r->fetching = false;
	if (r->aborted) {
		if (rows == 0)
			page_out(r);
		return;
	}
	if (pg || rows == 0) {
		r->vdb_waiting--;
		TAILQ_REMOVE(&r->pages, p, link);
		r->npages--;
		page_free(p);
		if (pg)
			stop_with(r, "reading abilities: %s", pg->error);
		else
			r->eof = true;
		maybe_finish(r);
		return;
	}
	p->claimed = true;
	p->last_id = xstrdup(last_id);
	free(r->fetch_cursor);
	r->fetch_cursor = xstrdup(last_id);
	r->eof = rows < (size_t)r->o.page;
	fetch_more(r); /* the next page is claimed while this one is on the wire */
}

static const struct loser *find_loser(const struct restore *r, const char *ability_id);

/* A row that lost a vector_id collision is failed, naming the row that keeps the vector. */
static bool is_loser(const char *ability_id, char *why, size_t whylen, void *arg)
{
	struct page *p = arg;
	const struct loser *l = find_loser(p->r, ability_id);

	if (!l)
		return false;
	snprintf(why, whylen, "vector_id collision: vector %lld of blob %s is %s's (both ability ids hash to it); "
		 "not pushed", (long long)l->vector_id, l->blob, l->owner);
	return true;
}

/* ---- collisions, found once per job ---------------------------------------------------- */

static int loser_cmp(const void *a, const void *b)
{
	return strcmp(((const struct loser *)a)->ability_id, ((const struct loser *)b)->ability_id);
}

static int loser_key_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct loser *)elem)->ability_id);
}

static const struct loser *find_loser(const struct restore *r, const char *ability_id)
{
	return r->nlosers ? bsearch(ability_id, r->losers, r->nlosers, sizeof(*r->losers), loser_key_cmp) : NULL;
}

/*
 * Every row that shares its vector_id with another row (of any service: the
 * blob is named in C, as the client names it), and the ledger's live owners of
 * those vector_ids. One pass over ability_id and service_name: the embeddings
 * are not read. The vector_id is vdb_vector_id's (bigint: abs of INT_MIN is
 * the row's own error later).
 */
static const char collisions_sql[] =
	"WITH a AS (SELECT ability_id, service_name,"
	"  abs(('x' || left(encode(sha256(convert_to(ability_id, 'UTF8')), 'hex'), 8))::bit(32)::int::bigint) AS v"
	"  FROM public.abilities),"
	" c AS (SELECT ability_id, service_name, v FROM (SELECT *, count(*) OVER (PARTITION BY v) AS n FROM a) x"
	"  WHERE n > 1)"
	" SELECT 'row', ability_id, service_name, v FROM c"
	" UNION ALL SELECT 'ledger', l.ability_id, l.blob_id, l.vector_id FROM abilitysync.vector_ledger l"
	"  WHERE l.deleted_at IS NULL AND l.vector_id IN (SELECT v FROM c)"
	" ORDER BY 4";

static void start_fetching(struct restore *r);
static void finish_dry_run(struct restore *r);

static bool is_row(PGresult *res, int t)
{
	return strcmp(PQgetvalue(res, t, 0), "row") == 0;
}

/*
 * The rows[0..n) of one (blob, vector_id): which keeps the vector? The
 * ledger's live owner when it is one of them (lines lo..hi of res hold
 * everything of this vector_id), else the smallest ability_id.
 */
static const char *owner_of(PGresult *res, int lo, int hi, const int *rows, int n, const char *blob)
{
	const char *owner = NULL;
	int t, k;

	for (t = lo; t < hi; t++) {
		if (is_row(res, t) || strcmp(PQgetvalue(res, t, 2), blob) != 0)
			continue;
		for (k = 0; k < n; k++)
			if (strcmp(PQgetvalue(res, rows[k], 1), PQgetvalue(res, t, 1)) == 0)
				return PQgetvalue(res, t, 1);
	}
	for (k = 0; k < n; k++)
		if (!owner || strcmp(PQgetvalue(res, rows[k], 1), owner) < 0)
			owner = PQgetvalue(res, rows[k], 1);
	return owner;
}

static void add_loser(struct restore *r, PGresult *res, int t, const char *blob, const char *owner)
{
	int64_t v = atoll(PQgetvalue(res, t, 3));
	struct loser *l;

	r->losers = xrealloc(r->losers, (r->nlosers + 1) * sizeof(*r->losers));
	l = &r->losers[r->nlosers++];
	*l = (struct loser){xstrdup(PQgetvalue(res, t, 1)), xstrdup(owner), xstrdup(PQgetvalue(res, t, 2)), "", v};
	snprintf(l->blob, sizeof(l->blob), "%s", blob);
	log_warn(COMP, "%s shares vector_id %lld in blob %s with %s, which keeps it: %s", l->ability_id, (long long)v,
		 blob, owner, r->o.dry_run ? "a restore would fail it" : "not pushed");
}

static void on_collisions(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	int nres, lo, hi, t, u, n, *rows;
	char (*blobs)[BLOB_MAX];

	if (r->aborted)
		return;
	if (!o->res) {
		r->fetching = false;
		if (r->o.dry_run)
			refuse(r, "postgres_error", "looking for vector_id collisions: %s", o->error);
		else
			stop_with(r, "looking for vector_id collisions: %s", o->error);
		return;
	}
	nres = PQntuples(o->res);
	blobs = xcalloc((size_t)nres + 1, sizeof(*blobs));
	rows = xcalloc((size_t)nres + 1, sizeof(*rows));
	for (t = 0; t < nres; t++)
		if (is_row(o->res, t))
			vdb_blob_name(PQgetvalue(o->res, t, 2), (size_t)PQgetlength(o->res, t, 2), blobs[t],
				      sizeof(blobs[t]));
	/* Sorted by vector_id, a few lines each (31-bit hashes): within one, group by blob. */
	for (lo = 0; lo < nres; lo = hi) {
		for (hi = lo + 1; hi < nres && strcmp(PQgetvalue(o->res, hi, 3), PQgetvalue(o->res, lo, 3)) == 0; hi++)
			;
		for (t = lo; t < hi; t++) {
			const char *owner;

			if (!is_row(o->res, t))
				continue;
			for (n = 0, u = lo; u < hi; u++)
				if (is_row(o->res, u) && strcmp(blobs[u], blobs[t]) == 0)
					rows[n++] = u;
			owner = n > 1 ? owner_of(o->res, lo, hi, rows, n, blobs[t]) : NULL;
			if (owner && strcmp(owner, PQgetvalue(o->res, t, 1)) != 0)
				add_loser(r, o->res, t, blobs[t], owner);
		}
	}
	free(rows);
	free(blobs);
	if (r->nlosers)
		qsort(r->losers, r->nlosers, sizeof(*r->losers), loser_cmp);
	if (r->o.dry_run)
		finish_dry_run(r);
	else
		start_fetching(r);
}

/* ---- claiming pages --------------------------------------------------------------------- */

static void fetch_more(struct restore *r)
{
	struct page *p;
	char trace[48];

	if (r->fetching || r->eof || r->stopping || r->error[0] || r->over || r->npages >= PAGES_IN_FLIGHT)
		return;
	p = xcalloc(1, sizeof(*p));
	p->r = r;
	TAILQ_INSERT_TAIL(&r->pages, p, link);
	r->npages++;
	r->fetching = true;
	r->vdb_waiting++;
	snprintf(trace, sizeof(trace), "restore-%lld", (long long)r->job_id);
	outbox_restore_page(r->ob, r->fetch_cursor, r->service, r->o.page, trace, is_loser, on_page_claimed,
			    on_page_pushed, p);
}

/* ---- blobs, prepared once per job --------------------------------------------------------------
 *
 * A blob this job creates (it did not exist: the create answered 2xx) holds
 * none of the vectors written before: its epoch, recorded before the create,
 * lets the pages add without deleting first. A blob that existed is left
 * alone (its vectors may be there: deletes stay on).
 */

static void prepare_next_blob(struct restore *r);

static void on_epoch(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;

	if (r->aborted)
		return;
	if (!o->res)
		log_warn(COMP, "job %lld: recording blob %s's creation: %s (its vectors will be deleted before "
			 "they are added)", (long long)r->job_id, r->blobs[r->blob_next - 1], o->error);
	prepare_next_blob(r);
}

static void on_blob_ensured(const struct vdb_result *res, void *arg)
{
	struct restore *r = arg;
	const char *blob = r->blobs[r->blob_next - 1];

	r->vdb_waiting--;
	if (r->aborted) {
		if (r->vdb_waiting == 0)
			job_free(r);
		return;
	}
	if (res->status == VDB_OK && vdb_created_blob(r->v, blob)) {
		store_blob_created(r->store, blob, on_epoch, r);
		return;
	}
	if (res->status == VDB_UNAVAILABLE || res->status == VDB_CANCELLED) {
		stop_with(r, "creating blob %s: %s", blob, res->error);
		return;
	}
	if (res->status != VDB_OK) /* a blob the server will not create: its rows fail, the others go on */
		log_warn(COMP, "job %lld: %s", (long long)r->job_id, res->error);
	prepare_next_blob(r);
}

static void on_creating(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;

	if (r->aborted)
		return;
	if (!o->res) {
		stop_with(r, "recording blobs: %s", o->error);
		return;
	}
	r->vdb_waiting++;
	vdb_ensure_blob(r->v, r->blobs[r->blob_next - 1], on_blob_ensured, r);
}

static void prepare_next_blob(struct restore *r)
{
	const char *blob;

	while (r->blob_next < r->nblobs) {
		blob = r->blobs[r->blob_next++];
		if (vdb_knows_blob(r->v, blob))
			continue; /* ensured long ago by this process: its vectors may be there */
		store_blob_creating(r->store, blob, on_creating, r);
		return;
	}
	r->fetching = false;
	fetch_more(r);
	maybe_finish(r);
}

static void on_services(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	int t, n;

	if (r->aborted)
		return;
	if (!o->res) {
		r->fetching = false;
		stop_with(r, "listing services: %s", o->error);
		return;
	}
	n = PQntuples(o->res);
	r->blobs = xcalloc((size_t)n + 1, sizeof(char *));
	for (t = 0; t < n; t++) {
		const char *service = PQgetvalue(o->res, t, 0);
		size_t len = strlen(service) * 2 + sizeof(VDB_BLOB_PREFIX);

		r->blobs[r->nblobs] = xmalloc(len);
		vdb_blob_name(service, strlen(service), r->blobs[r->nblobs], len);
		r->nblobs++;
	}
	prepare_next_blob(r);
}

/* ---- starting ------------------------------------------------------------------------------- */

static void begin(struct restore *r, PGresult *res)
{
	char label[48];

	r->job_id = atoll(PQgetvalue(res, 0, 0));
	r->total = atoll(PQgetvalue(res, 0, 1));
	r->done_rows = atoll(PQgetvalue(res, 0, 2));
	r->failed_rows = atoll(PQgetvalue(res, 0, 3));
	r->fetch_cursor = PQgetisnull(res, 0, 4) ? NULL : xstrdup(PQgetvalue(res, 0, 4));
	log_info(COMP, "job %lld: %s %s: %lld abilities%s%s", (long long)r->job_id,
		 r->o.resume ? "resuming" : "restoring", r->service ? r->service : "every service", (long long)r->total,
		 r->fetch_cursor ? ", after " : "", r->fetch_cursor ? r->fetch_cursor : "");
	snprintf(label, sizeof(label), "job %lld", (long long)r->job_id);
	r->progress = progress_new(r->base, COMP, label, r->total, r->done_rows, r->o.progress_s, r->o.progress_bar);
	progress_set(r->progress, r->done_rows, r->failed_rows);
	if (r->started)
		r->started(r->job_id, r->arg);
	r->fetching = true; /* until the collisions are known: nothing is read before */
	pgpool_query(r->pool, collisions_sql, 0, NULL, on_collisions, r);
}

static void start_fetching(struct restore *r)
{
	const char *params[1] = {r->service};

	r->fetching = true; /* until the blobs are prepared */
	pgpool_query(r->pool,
		     "SELECT DISTINCT service_name FROM public.abilities WHERE $1::text IS NULL OR service_name = $1",
		     1, params, on_services, r);
}

static void on_job(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;

	if (r->aborted)
		return;
	if (!o->res) {
		refuse(r, "postgres_error", "creating the job: %s", o->error);
		return;
	}
	if (PQntuples(o->res) == 0) {
		refuse(r, "nothing_to_resume", "nothing to resume: no unfinished restore job%s%s (start one without --resume)",
		       r->service ? " for service " : "", r->service ? r->service : "");
		return;
	}
	begin(r, o->res);
}

static void on_locked(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	const char *params[2] = {r->service, r->host};

	if (r->aborted)
		return;
	if (!o->res) {
		refuse(r, "postgres_error", "taking the restore lock: %s", o->error);
		return;
	}
	if (PQgetvalue(o->res, 0, 0)[0] != 't') {
		refuse(r, "restore_running", "another restore is running (job %s); wait for it, or stop it and use --resume",
		       PQgetisnull(o->res, 0, 1) ? "?" : PQgetvalue(o->res, 0, 1));
		return;
	}
	/* We hold the lock: any job still marked running belongs to a process that is gone. */
	if (r->o.resume)
		pgpool_query(r->pool,
			     "UPDATE abilitysync.restore_jobs SET status = 'running', host = $2, error = NULL,"
			     " updated_at = now() WHERE id = (SELECT id FROM abilitysync.restore_jobs"
			     "  WHERE status IN ('running', 'interrupted', 'failed') AND service_name IS NOT DISTINCT FROM $1"
			     "  ORDER BY id DESC LIMIT 1)"
			     " RETURNING id, total, done, failed, cursor",
			     2, params, on_job, r);
	else
		pgpool_query(r->pool,
			     "WITH stale AS (UPDATE abilitysync.restore_jobs SET status = 'interrupted', updated_at = now()"
			     "  WHERE status = 'running')"
			     " INSERT INTO abilitysync.restore_jobs (service_name, total, host)"
			     " SELECT $1, count(*), $2 FROM public.abilities WHERE $1::text IS NULL OR service_name = $1"
			     " RETURNING id, total, done, failed, cursor",
			     2, params, on_job, r);
}

static void on_counted(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	json_t *blobs = json_object();
	int64_t total = 0;
	int t;

	if (r->aborted)
		return;
	if (!o->res) {
		json_decref(blobs);
		refuse(r, "postgres_error", "counting abilities: %s", o->error);
		return;
	}
	for (t = 0; t < PQntuples(o->res); t++) {
		const char *service = PQgetvalue(o->res, t, 0);
		char *blob = xmalloc(strlen(service) + sizeof(VDB_BLOB_PREFIX));
		int64_t n = atoll(PQgetvalue(o->res, t, 1));

		vdb_blob_name(service, strlen(service), blob, strlen(service) + sizeof(VDB_BLOB_PREFIX));
		json_object_set_new(blobs, blob, json_integer(json_integer_value(json_object_get(blobs, blob)) + n));
		total += n;
		free(blob);
	}
	r->summary = json_pack("{s:b, s:s?, s:I, s:o}", "dry_run", true, "service_name", r->service, "total",
			       (json_int_t)total, "blobs", blobs);
	/* The rows a real run would fail for a vector_id collision: counted next (on_collisions). */
	r->fetching = true;
	pgpool_query(r->pool, collisions_sql, 0, NULL, on_collisions, r);
}

static void finish_dry_run(struct restore *r)
{
	struct timeval now = {0, 0};
	size_t i, n = 0;

	r->fetching = false;
	for (i = 0; i < r->nlosers; i++) /* losers of this run's service only */
		n += !r->service || strcmp(r->losers[i].service, r->service) == 0;
	json_object_set_new(r->summary, "collisions", json_integer((json_int_t)n));
	snprintf(r->why, sizeof(r->why), "dry run");
	r->over = true;
	r->outcome = RESTORE_DONE;
	r->later = evtimer_new(r->base, on_later, r);
	evtimer_add(r->later, &now);
}

static void on_schema(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	const char *params[1] = {r->service};

	if (r->aborted)
		return;
	if (!o->res) {
		refuse(r, "postgres_error", "reading the sync schema: %s", o->error);
		return;
	}
	if (PQgetvalue(o->res, 0, 0)[0] != 't') {
		refuse(r, "not_migrated", "the sync schema (abilitysync.*) is missing: run `abilitysync migrate up` first");
		return;
	}
	if (r->o.dry_run) {
		pgpool_query(r->pool,
			     "SELECT service_name, count(*) FROM public.abilities WHERE $1::text IS NULL OR service_name = $1"
			     " GROUP BY service_name ORDER BY service_name",
			     1, params, on_counted, r);
		return;
	}
	pgpool_query(r->pool,
		     "SELECT pg_try_advisory_lock(" ABILITYSYNC_LOCK_CLASS_TEXT ", 2),"
		     " (SELECT max(id) FROM abilitysync.restore_jobs WHERE status = 'running')",
		     0, NULL, on_locked, r);
}

static void on_ready(bool ready, const char *why, void *arg)
{
	struct restore *r = arg;

	if (r->aborted)
		return;
	if (!ready) {
		refuse(r, "postgres_unavailable", "Postgres is unavailable: %s", why);
		return;
	}
	pgpool_query(r->pool, "SELECT to_regclass('abilitysync.restore_jobs') IS NOT NULL", 0, NULL, on_schema, r);
}

struct restore *restore_start(struct event_base *base, struct vdb *v, struct outbox *ob, struct store *st,
			      const struct restore_opts *o, restore_started_fn started, restore_done_fn done, void *arg)
{
	struct restore *r = xcalloc(1, sizeof(*r));
	struct pgpool_opts po = o->pg;
	struct errbuf err;

	r->base = base;
	r->v = v;
	r->ob = ob;
	r->store = st;
	r->o = *o;
	r->o.service = NULL;
	r->o.host = NULL;
	r->o.pg.conninfo = NULL;
	r->service = o->service ? xstrdup(o->service) : NULL;
	r->host = o->host ? xstrdup(o->host) : NULL;
	r->started = started;
	r->done = done;
	r->arg = arg;
	r->started_ms = clock_mono_ms();
	TAILQ_INIT(&r->pages);
	snprintf(r->page_text, sizeof(r->page_text), "%d", o->page);
	po.size = 1;
	po.queue_max = 8;
	if (!(r->pool = pgpool_new(base, &po, &err))) {
		refuse(r, "postgres_unavailable", "%s", err.msg);
		return r;
	}
	pgpool_wait_ready(r->pool, READY_TIMEOUT_MS, on_ready, r);
	return r;
}

void restore_stop(struct restore *r)
{
	if (r->stopping || r->over)
		return;
	r->stopping = true;
	log_info(COMP, "job %lld: stopping after the pages in flight", (long long)r->job_id);
	maybe_finish(r);
}

void restore_abort(struct restore *r)
{
	r->aborted = true;
	r->done = NULL;
	pgpool_free(r->pool);
	r->pool = NULL;
	if (r->vdb_waiting == 0)
		job_free(r);
}
