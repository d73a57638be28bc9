/*
 * restore.c - a restore job: the vector DB rebuilt from the mirror, resumably.
 *
 * The job owns its session (the lock), its row in restore_jobs and the order
 * of pages; the pushing is the outbox's, through the same fenced path as every
 * write (outbox.h): a page is claimed (its rows made pending and leased),
 * pushed, and recorded row by row; then the job's counters and cursor move.
 * Claims and pushes overlap up to PAGES_IN_FLIGHT pages; the job records
 * pages strictly in order, so a cursor only ever covers pages entirely in.
 *
 * The rows are cut into parts (key ranges, PART_PAGES pages each) when the
 * job starts; this process takes one part at a time (a session lock: another
 * process joining the job takes others), reads it page by page after its
 * cursor, and records the last page as the part's end. The job is done when
 * no part is left, whichever process finished the last one.
 */
#include "restore.h"

#include "ability.h"
#include "buf.h"
#include "clock.h"
#include "job.h"
#include "log.h"
#include "mem.h"
#include "progress.h"
#include "store_job.h"
#include "vdbid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define COMP "restore"
#define PAGES_IN_FLIGHT 3
#define PART_PAGES 16
#define BLOB_MAX (ABILITY_TEXT_MAX * 2 + 16)

struct page {
	TAILQ_ENTRY(page) link;
	struct restore *r;
	char *last_id;          /* the part's cursor once this page is recorded */
	int part;
	bool claimed, pushed;
	bool ends_part;         /* the part's last page (maybe empty): recording it finishes the part */
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
	struct job job;         /* the session, the start, the end, abort (job.h); job.out: pages in the
				   outbox and blob preparations out */
	struct vdb *v;
	struct outbox *ob;
	struct store *store;
	struct restore_opts o;
	char *service, *host;
	restore_started_fn started;
	restore_done_fn done;
	void *arg;

	int64_t job_id;
	int64_t total, done_rows, failed_rows;
	struct loser *losers;   /* rows whose vector belongs to another row (by ability_id) */
	size_t nlosers;
	int part;               /* the part being read; -1: the next fetch takes one */
	char *fetch_cursor;     /* in the part: the last id claimed */
	char *part_upto;
	int64_t parts_finished;  /* by this process */
	bool joined;            /* others work on the job (the lock is shared): this process takes parts they left */
	struct restore_job_row opened;
	struct page_list pages;
	size_t npages;
	bool fetching, recording, eof, closing;
	char **blobs;           /* the blobs of the job's services, prepared before the first page */
	size_t nblobs, blob_next;
	struct progress *progress;

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

static struct restore *of(struct job *j)
{
	return (struct restore *)j; /* `job` is the first member */
}

static void job_release(struct job *j)
{
	struct restore *r = of(j);
	struct page *p;

	while ((p = TAILQ_FIRST(&r->pages)) != NULL) {
		TAILQ_REMOVE(&r->pages, p, link);
		page_free(p);
	}
	progress_free(r->progress);
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
	free(r->part_upto);
	free(r->service);
	free(r->host);
	free(r);
}

static void job_report(struct job *j)
{
	struct restore *r = of(j);

	if (r->done)
		r->done(r->outcome, r->summary, r->why, r->arg);
}

static void end_now(struct restore *r, enum restore_outcome outcome, const char *status)
{
	double secs = job_seconds(&r->job);

	progress_free(r->progress);
	r->progress = NULL;
	r->outcome = outcome;
	if (!r->summary)
		r->summary = json_pack("{s:I, s:s, s:s?, s:I, s:I, s:I, s:I, s:f, s:f, s:s?}", "job_id",
				       (json_int_t)r->job_id, "status", status, "service_name", r->service, "total",
				       (json_int_t)r->total, "done", (json_int_t)r->done_rows, "failed",
				       (json_int_t)r->failed_rows, "parts", (json_int_t)r->parts_finished, "seconds", secs,
				       "vectors_per_second", secs > 0 ? (double)r->done_rows / secs : 0.0, "error",
				       r->job.error[0] ? r->job.error : NULL);
	job_end(&r->job);
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

static void on_analyzed(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;

	if (job_gone(&r->job))
		return;
	if (!o->res)
		log_warn(COMP, "job %lld: ANALYZE of the sync state failed (autovacuum's will come later): %s",
			 (long long)r->job_id, o->error);
	end_now(r, RESTORE_DONE, "done");
}

static void on_job_closed(bool job_done, const char *status, const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	bool done = !r->job.error[0];
	bool share = done && o->res && !job_done && status && strcmp(status, "running") == 0;

	if (job_gone(&r->job))
		return;
	if (!o->res)
		log_warn(COMP, "job %lld: recording its end failed: %s", (long long)r->job_id, o->error);
	if (share) {
		snprintf(r->why, sizeof(r->why), "done with the parts this process took; other processes are restoring "
			 "the job's other parts");
		log_info(COMP, "job %lld: %s", (long long)r->job_id, r->why);
	} else if (done) {
		snprintf(r->why, sizeof(r->why), "done");
	}
	if (done && job_done) { /* the job's last process: the tables it filled get statistics */
		store_restore_analyze(r->job.pool, on_analyzed, r);
		return;
	}
	end_now(r, done ? RESTORE_DONE : RESTORE_FAILED,
		share ? "running" : done ? "done" : r->job.stopping ? "interrupted" : "failed");
}

/* Everything read is recorded (or the job stops): write the job's end. */
static void close_job(struct restore *r)
{
	const char *status = !r->job.error[0] ? "done" : r->job.stopping ? "interrupted" : "failed";

	r->closing = true;
	snprintf(r->why, sizeof(r->why), "%s", r->job.error);
	if (!r->job.pool || !pgpool_ready(r->job.pool)) {
		end_now(r, RESTORE_FAILED, status);
		return;
	}
	store_restore_close(r->job.pool, r->job_id, status, r->job.error[0] ? r->job.error : NULL, on_job_closed, r);
}

static void vstop_with(struct restore *r, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);

static void vstop_with(struct restore *r, const char *fmt, va_list ap)
{
	if (!r->job.error[0]) {
		vsnprintf(r->job.error, sizeof(r->job.error), fmt, ap);
		log_error(COMP, "job %lld: %s; `abilitysync restore --resume` continues after the last recorded page",
			  (long long)r->job_id, r->job.error);
	}
	maybe_finish(r);
}

static void stop_with(struct restore *r, const char *fmt, ...) PRINTF_LIKE(2, 3);

/* Something went wrong: read no more; close once what is on the wire is back. */
static void stop_with(struct restore *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vstop_with(r, fmt, ap);
	va_end(ap);
}

static void stop_preparing(struct restore *r, const char *fmt, ...) PRINTF_LIKE(2, 3);

/*
 * A step before the first page failed (collisions, services, blobs): reading
 * is held back by `fetching` until they are done, so it is released here, or
 * the job would wait for a first page that never comes.
 */
static void stop_preparing(struct restore *r, const char *fmt, ...)
{
	va_list ap;

	r->fetching = false;
	va_start(ap, fmt);
	vstop_with(r, fmt, ap);
	va_end(ap);
}

static void maybe_finish(struct restore *r)
{
	if (r->job.over || r->closing || r->fetching || r->recording || r->job.out)
		return;
	if (r->job.error[0] || r->job.stopping || (r->eof && TAILQ_EMPTY(&r->pages))) {
		if (r->job.stopping)
			job_fail(&r->job, "stopped");
		close_job(r);
	}
}

/* ---- recording pages, in order ---------------------------------------------------------- */

static void on_page_recorded(const struct restore_job_row *job, const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	struct page *p = TAILQ_FIRST(&r->pages);

	if (job_gone(&r->job))
		return;
	r->recording = false;
	if (!job) {
		stop_with(r, "recording a page: %s", o->res ? "the job row is gone" : o->error);
		return;
	}
	r->done_rows = job->done;
	r->failed_rows = job->failed;
	if (r->progress)
		progress_set(r->progress, r->done_rows, r->failed_rows);
	r->parts_finished += p->ends_part;
	TAILQ_REMOVE(&r->pages, p, link);
	r->npages--;
	page_free(p);
	if (job->cancelled && !r->job.stopping) {
		log_info(COMP, "job %lld was cancelled: stopping after the pages in flight (resume picks it up)",
			 (long long)r->job_id);
		restore_stop(r);
	}
	record_ready(r);
	fetch_more(r);
	maybe_finish(r);
}

/* The page's rows are recorded by the outbox; the job's counters and cursor follow. */
static void send_record(struct restore *r, struct page *p)
{
	r->recording = true;
	store_restore_record_page(r->job.pool, r->job_id, p->part, p->synced + p->deferred, p->failed, p->last_id,
				  p->ends_part, on_page_recorded, r);
}

static void record_ready(struct restore *r)
{
	struct page *p = TAILQ_FIRST(&r->pages);

	if (r->recording || r->job.over || !p || !p->pushed)
		return;
	if (p->why[0]) {
		stop_with(r, "%s", p->why);
		return;
	}
	send_record(r, p);
}

/* ---- pages through the outbox ------------------------------------------------------------ */

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
	if (!job_back(&r->job))
		return;
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
	if (pg) {
		if (!job_back(&r->job)) /* no push follows */
			return;
		TAILQ_REMOVE(&r->pages, p, link);
		r->npages--;
		page_free(p);
		stop_with(r, "reading abilities: %s", pg->error);
		return;
	}
	if (rows == 0) { /* the part ended with the page before: this one only records that */
		if (!job_back(&r->job))
			return;
		p->ends_part = p->pushed = true;
		r->part = -1;
		record_ready(r);
		fetch_more(r);
		maybe_finish(r);
		return;
	}
	if (job_gone(&r->job)) /* the push follows: on_page_pushed */
		return;
	p->claimed = true;
	p->last_id = xstrdup(last_id);
	free(r->fetch_cursor);
	r->fetch_cursor = xstrdup(last_id);
	if (rows < (size_t)r->o.page) {
		p->ends_part = true;
		r->part = -1;
	}
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

static void start_fetching(struct restore *r);
static void finish_dry_run(struct restore *r);

/*
 * The rows c[lo..hi) (one vector_id) in one blob, rows[0..n): which keeps the
 * vector? The ledger's live owner when it is one of them, else the smallest
 * ability_id.
 */
static const char *owner_of(const struct restore_collision *c, size_t lo, size_t hi, const size_t *rows, size_t n,
			    const char *blob)
{
	const char *owner = NULL;
	size_t t, k;

	for (t = lo; t < hi; t++) {
		if (c[t].is_row || strcmp(c[t].where, blob) != 0)
			continue;
		for (k = 0; k < n; k++)
			if (strcmp(c[rows[k]].ability_id, c[t].ability_id) == 0)
				return c[t].ability_id;
	}
	for (k = 0; k < n; k++)
		if (!owner || strcmp(c[rows[k]].ability_id, owner) < 0)
			owner = c[rows[k]].ability_id;
	return owner;
}

static void add_loser(struct restore *r, const struct restore_collision *c, const char *blob, const char *owner)
{
	struct loser *l;

	r->losers = xrealloc(r->losers, (r->nlosers + 1) * sizeof(*r->losers));
	l = &r->losers[r->nlosers++];
	*l = (struct loser){xstrdup(c->ability_id), xstrdup(owner), xstrdup(c->where), "", c->vector_id};
	snprintf(l->blob, sizeof(l->blob), "%s", blob);
	log_warn(COMP, "%s shares vector_id %lld in blob %s with %s, which keeps it: %s", l->ability_id,
		 (long long)l->vector_id, blob, owner, r->o.dry_run ? "a restore would fail it" : "not pushed");
}

static void on_collisions(const struct restore_collision *c, size_t nres, const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	size_t lo, hi, t, u, n, *rows;
	char (*blobs)[BLOB_MAX];

	if (job_gone(&r->job))
		return;
	if (!o->res) {
		if (r->o.dry_run) {
			r->fetching = false;
			refuse(r, "postgres_error", "looking for vector_id collisions: %s", o->error);
		} else {
			stop_preparing(r, "looking for vector_id collisions: %s", o->error);
		}
		return;
	}
	blobs = xcalloc(nres + 1, sizeof(*blobs));
	rows = xcalloc(nres + 1, sizeof(*rows));
	for (t = 0; t < nres; t++)
		if (c[t].is_row)
			vdb_blob_name(c[t].where, strlen(c[t].where), blobs[t], sizeof(blobs[t]));
	/* Sorted by vector_id, a few lines each (31-bit hashes): within one, group by blob. */
	for (lo = 0; lo < nres; lo = hi) {
		for (hi = lo + 1; hi < nres && c[hi].vector_id == c[lo].vector_id; hi++)
			;
		for (t = lo; t < hi; t++) {
			const char *owner;

			if (!c[t].is_row)
				continue;
			for (n = 0, u = lo; u < hi; u++)
				if (c[u].is_row && strcmp(blobs[u], blobs[t]) == 0)
					rows[n++] = u;
			owner = n > 1 ? owner_of(c, lo, hi, rows, n, blobs[t]) : NULL;
			if (owner && strcmp(owner, c[t].ability_id) != 0)
				add_loser(r, &c[t], blobs[t], owner);
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

static void on_part_claimed(const struct restore_part_row *part, const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;

	if (job_gone(&r->job))
		return;
	r->fetching = false;
	if (!o->res) {
		stop_with(r, "taking a part of the job: %s", o->error);
		return;
	}
	if (!part) { /* every part is finished or another process's */
		r->eof = true;
		maybe_finish(r);
		return;
	}
	r->part = part->part;
	free(r->fetch_cursor);
	free(r->part_upto);
	r->fetch_cursor = part->after ? xstrdup(part->after) : NULL;
	r->part_upto = part->upto ? xstrdup(part->upto) : NULL;
	log_debug(COMP, "job %lld: part %d: after %s, up to %s", (long long)r->job_id, r->part,
		  r->fetch_cursor ? r->fetch_cursor : "the start", r->part_upto ? r->part_upto : "the end");
	fetch_more(r);
}

static void fetch_more(struct restore *r)
{
	struct page *p;
	char trace[48];

	if (r->fetching || r->eof || r->job.stopping || r->job.error[0] || r->job.over ||
	    r->npages >= PAGES_IN_FLIGHT)
		return;
	if (r->part < 0) {
		r->fetching = true;
		store_restore_claim_part(r->job.pool, r->job_id, on_part_claimed, r);
		return;
	}
	p = xcalloc(1, sizeof(*p));
	p->r = r;
	p->part = r->part;
	TAILQ_INSERT_TAIL(&r->pages, p, link);
	r->npages++;
	r->fetching = true;
	job_send(&r->job);
	snprintf(trace, sizeof(trace), "restore-%lld", (long long)r->job_id);
	outbox_restore_page(r->ob, r->fetch_cursor, r->part_upto, r->service, r->o.page, trace, is_loser,
			    on_page_claimed, on_page_pushed, p);
}

/* ---- blobs, prepared once per job --------------------------------------------------------------
 *
 * A blob this job creates (it did not exist: the create answered 2xx) holds
 * none of the vectors written before: its epoch, recorded before the create,
 * lets the pages add without deleting first. A blob that existed is left
 * alone (its vectors may be there: deletes stay on). A process joining a job
 * records no epoch: the blob's creation is the first process's to record, and
 * two records of one creation could date it after a vector written into it.
 */

static void prepare_next_blob(struct restore *r);

static void on_epoch(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;

	if (job_gone(&r->job))
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

	if (!job_back(&r->job))
		return;
	if (res->status == VDB_OK && vdb_created_blob(r->v, blob) && !r->joined) {
		store_blob_created(r->store, blob, on_epoch, r);
		return;
	}
	if (res->status == VDB_UNAVAILABLE || res->status == VDB_CANCELLED) {
		stop_preparing(r, "creating blob %s: %s", blob, res->error);
		return;
	}
	if (res->status != VDB_OK) /* a blob the server will not create: its rows fail, the others go on */
		log_warn(COMP, "job %lld: %s", (long long)r->job_id, res->error);
	prepare_next_blob(r);
}

static void on_creating(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;

	if (job_gone(&r->job))
		return;
	if (!o->res) {
		stop_preparing(r, "recording blobs: %s", o->error);
		return;
	}
	job_send(&r->job);
	vdb_ensure_blob(r->v, r->blobs[r->blob_next - 1], on_blob_ensured, r);
}

static void prepare_next_blob(struct restore *r)
{
	const char *blob;

	while (r->blob_next < r->nblobs) {
		blob = r->blobs[r->blob_next++];
		if (vdb_knows_blob(r->v, blob))
			continue; /* ensured long ago by this process: its vectors may be there */
		if (r->joined) {
			job_send(&r->job);
			vdb_ensure_blob(r->v, blob, on_blob_ensured, r);
		} else {
			store_blob_creating(r->store, blob, on_creating, r);
		}
		return;
	}
	r->fetching = false;
	fetch_more(r);
	maybe_finish(r);
}

static char *blob_of(const char *service)
{
	size_t len = strlen(service) * 2 + sizeof(VDB_BLOB_PREFIX);
	char *blob = xmalloc(len);

	vdb_blob_name(service, strlen(service), blob, len);
	return blob;
}

static void on_services(const struct service_count *s, size_t n, const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	size_t t;

	if (job_gone(&r->job))
		return;
	if (!o->res) {
		stop_preparing(r, "listing services: %s", o->error);
		return;
	}
	r->blobs = xcalloc(n + 1, sizeof(char *));
	for (t = 0; t < n; t++)
		r->blobs[r->nblobs++] = blob_of(s[t].service_name);
	prepare_next_blob(r);
}

/* ---- starting ------------------------------------------------------------------------------- */

static void begin(struct restore *r, const struct restore_job_row *job)
{
	char label[48];

	r->job_id = job->id;
	r->total = job->total;
	r->done_rows = job->done;
	r->failed_rows = job->failed;
	r->part = -1;
	log_info(COMP, "job %lld: %s %s: %lld abilities, %lld done, %lld part(s) left", (long long)r->job_id,
		 !r->o.resume ? "restoring" : r->joined ? "joining" : "resuming",
		 r->service ? r->service : "every service", (long long)r->total, (long long)r->done_rows,
		 (long long)job->parts_left);
	snprintf(label, sizeof(label), "job %lld", (long long)r->job_id);
	r->progress =
		progress_new(r->job.base, COMP, label, r->total, r->done_rows, r->o.progress_s, r->o.progress_bar);
	progress_set(r->progress, r->done_rows, r->failed_rows);
	if (r->started)
		r->started(r->job_id, r->arg);
	r->fetching = true; /* until the collisions are known: nothing is read before */
	store_restore_collisions(r->job.pool, on_collisions, r);
}

static void start_fetching(struct restore *r)
{
	r->fetching = true; /* until the blobs are prepared */
	store_restore_services(r->job.pool, r->service, on_services, r);
}

static void on_shared(const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;

	if (job_gone(&r->job))
		return;
	if (!o->res) {
		refuse(r, "postgres_error", "sharing the restore lock: %s", o->error);
		return;
	}
	begin(r, &r->opened);
}

static void on_job(const struct restore_job_row *job, const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;

	if (job_gone(&r->job))
		return;
	if (!o->res) {
		refuse(r, "postgres_error", "creating the job: %s", o->error);
		return;
	}
	if (!job) {
		refuse(r, "nothing_to_resume", "nothing to resume: no unfinished restore job%s%s (start one without --resume)",
		       r->service ? " for service " : "", r->service ? r->service : "");
		return;
	}
	if (r->joined) {
		begin(r, job);
		return;
	}
	r->opened = *job; /* the job and its parts exist: others may join from now on */
	store_restore_share_lock(r->job.pool, on_shared, r);
}

static void on_locked(bool locked, const char *running, const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;

	if (job_gone(&r->job))
		return;
	if (!o->res) {
		refuse(r, "postgres_error", "taking the restore lock: %s", o->error);
		return;
	}
	if (!locked && !r->joined && r->o.resume) { /* processes work on a job: join it */
		r->joined = true;
		store_restore_try_lock(r->job.pool, false, on_locked, r);
		return;
	}
	if (!locked && r->joined) {
		refuse(r, "restore_running", "a restore job is being started (job %s); --resume joins it in a moment",
		       running ? running : "?");
		return;
	}
	if (!locked) {
		refuse(r, "restore_running",
		       "another restore is running (job %s); wait for it, or join it with --resume",
		       running ? running : "?");
		return;
	}
	/*
	 * Exclusive: any job still marked running belongs to a process that is
	 * gone. Shared: others work on the newest unfinished job, joined here.
	 */
	store_restore_open(r->job.pool, r->o.resume, r->service, r->host, r->o.page * PART_PAGES, on_job, r);
}

static void on_counted(const struct service_count *s, size_t n, const struct pg_outcome *o, void *arg)
{
	struct restore *r = arg;
	json_t *blobs = json_object();
	int64_t total = 0;
	size_t t;

	if (job_gone(&r->job))
		return;
	if (!o->res) {
		json_decref(blobs);
		refuse(r, "postgres_error", "counting abilities: %s", o->error);
		return;
	}
	for (t = 0; t < n; t++) {
		char *blob = blob_of(s[t].service_name);

		json_object_set_new(blobs, blob, json_integer(json_integer_value(json_object_get(blobs, blob)) + s[t].n));
		total += s[t].n;
		free(blob);
	}
	r->summary = json_pack("{s:b, s:s?, s:I, s:o}", "dry_run", true, "service_name", r->service, "total",
			       (json_int_t)total, "blobs", blobs);
	/* The rows a real run would fail for a vector_id collision: counted next (on_collisions). */
	r->fetching = true;
	store_restore_collisions(r->job.pool, on_collisions, r);
}

static void finish_dry_run(struct restore *r)
{
	size_t i, n = 0;

	r->fetching = false;
	for (i = 0; i < r->nlosers; i++) /* losers of this run's service only */
		n += !r->service || strcmp(r->losers[i].service, r->service) == 0;
	json_object_set_new(r->summary, "collisions", json_integer((json_int_t)n));
	snprintf(r->why, sizeof(r->why), "dry run");
	r->outcome = RESTORE_DONE;
	job_end(&r->job);
}

static void job_started(struct job *j, const char *pg_now)
{
	struct restore *r = of(j);

	(void)pg_now;
	if (r->o.dry_run)
		store_restore_services(r->job.pool, r->service, on_counted, r);
	else
		store_restore_try_lock(r->job.pool, true, on_locked, r); /* shared only when joining (on_locked) */
}

static void job_refused(struct job *j, const char *code, const char *why)
{
	refuse(of(j), code, "%s", why);
}

static const struct job_ops restore_job = {COMP, job_started, job_refused, job_report, job_release};

struct restore *restore_start(struct event_base *base, struct vdb *v, struct outbox *ob, struct store *st,
			      const struct restore_opts *o, restore_started_fn started, restore_done_fn done, void *arg)
{
	struct restore *r = xcalloc(1, sizeof(*r));

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
	TAILQ_INIT(&r->pages);
	job_start(&r->job, &restore_job, base, &o->pg, 8, !o->dry_run); /* a dry run takes no lock */
	return r;
}

void restore_stop(struct restore *r)
{
	if (r->job.stopping || r->job.over)
		return;
	job_stop(&r->job);
	log_info(COMP, "job %lld: stopping after the pages in flight", (long long)r->job_id);
	maybe_finish(r);
}

void restore_abort(struct restore *r)
{
	r->done = NULL;
	job_abort(&r->job);
}
