/*
 * reconcile.c - one reconcile run, and the timer that runs them inside serve.
 *
 * A run is a chain of callbacks on the loop, one phase after the other:
 *   open     its own connection; the sync schema must be there; a real run
 *            takes the lock exclusive, skips when another ran moments ago,
 *            records itself and its parts, then shares the lock; or, the
 *            lock held by others, shares it and joins their run
 *   parts    a real run takes one part at a time (rows: a key range; part 0:
 *            orphans, then outbox), keeps its counts in the part's row and
 *            takes the next; none left to take but some held by others: it
 *            asks again a moment later; none left at all: it merges them
 *   rows     live rows in ability_id pages: each synced row's vector is
 *            fetched by id (its attributes), rows without sync state are
 *            checked against the ledger for collisions; --deep also rebuilds
 *            the row (content hash) and self-queries the vector
 *   orphans  ledger entries in (blob, vector_id) pages that no live row claims
 *            where they lie: is the vector still there?
 *   outbox   failed and overdue changes in the sync state
 *   finish   the report; a real run records it; the connection (and with it
 *            the locks) is closed
 * A dry run has no parts: one pass, rows then orphans then outbox. A real run
 * queues each page's repairs (drawn from the run's budget) before it reads
 * the next page.
 */
#include "reconcile.h"

#include "ability.h"
#include "buf.h"
#include "clock.h"
#include "job.h"
#include "log.h"
#include "mem.h"
#include "store_job.h"
#include "vdbid.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMP "reconcile"
#define SAMPLE_MAX 10
#define SELF_QUERY_K 3
#define SELF_DISTANCE_MAX 1e-4 /* a vector's cosine distance to itself, float32 rounding included */
#define BLOB_MAX (ABILITY_TEXT_MAX * 2 + 16)
#define PART_WAIT_MS 200 /* parts left, all held by others: ask again after this */

enum cat {
	CAT_MISSING,
	CAT_STALE,
	CAT_ORPHANS,
	CAT_NO_SYNC_STATE,
	CAT_OVERDUE,
	CAT_FAILED,
	CAT_COLLISIONS,
	CAT_INVALID,
	CAT_DIFFERS,
	CAT_STALE_CONTENT,
	CAT_OLD_MODEL,
	CAT_N
};
_Static_assert(CAT_N == RECONCILE_CATEGORIES, "one row of reconcile_categories per category");

const struct drift_category reconcile_categories[RECONCILE_CATEGORIES] = {
	[CAT_MISSING] = {"missing", "a synced row whose vector is gone", "pushing the row again"},
	[CAT_STALE] = {"stale",
		       "a synced row whose vector's `content_hash` attribute is not the one Postgres holds "
		       "(`--deep`: also a row edited in Postgres behind our back)",
		       "pushing the row again"},
	[CAT_ORPHANS] = {"orphans",
			 "a vector still there for a ledger entry or tombstone that no live row claims where it lies, "
			 "naming that ability (a row deleted straight from Postgres, a deleted ability's vector written "
			 "again)",
			 "deleting it"},
	[CAT_NO_SYNC_STATE] = {"no_sync_state",
			       "a live row without sync state: written by the original application, or restored "
			       "from an older dump",
			       "claiming its vector and pushing it"},
	[CAT_OVERDUE] = {"overdue", "a change pending for longer than `RECONCILE_OVERDUE`", "making it due now"},
	[CAT_FAILED] = {"failed", "a change that gave up after `SYNC_MAX_ATTEMPTS`", "queueing it again"},
	[CAT_COLLISIONS] = {"collisions",
			    "a live row whose `vector_id` another live ability holds in its blob, or a vector at a "
			    "ledger entry's place that names another ability",
			    NULL},
	[CAT_INVALID] = {"invalid_rows", "a row that cannot be pushed (its `vector_id`; `--deep`: its embedding)",
			 NULL},
	[CAT_DIFFERS] = {"vector_differs", "`--deep`: the vector does not find itself (distance ~0) by self-query",
			 "pushing the row again"},
	[CAT_STALE_CONTENT] = {"stale_content",
			       "`--deep`: a row in doubt (its last push was ambiguous: a late write may have landed) "
			       "whose vector is not its content",
			       "its verification, once `VDB_QUARANTINE_MS` is over"},
	[CAT_OLD_MODEL] = {"old_embedding_model",
			   "with a model named (`--embedding-model`, or `embedding_model` in the body of "
			   "`POST /v1/reconcile`): a live row whose `metadata.embedding_model` is another one, or none",
			   NULL},
};

struct category {
	long count;
	char *sample[SAMPLE_MAX]; /* the smallest ids, sorted */
	int nsample;
};

/* What a live row turned out to be. */
enum verdict {
	V_FINE, V_SKIP, V_CHECK, V_MISSING, V_STALE, V_NO_STATE, V_COLLISION, V_INVALID, V_DIFFERS, V_STALE_CONTENT, V_ERROR
};

struct row {
	char *ability_id;
	char *state;            /* NULL: no sync state */
	char *hash;             /* the sync state's content hash */
	int64_t generation;     /* of the sync state as judged (-1: none): a repair only if still so */
	bool doubt;             /* --deep: pending, its last push ambiguous: is the vector what it should be? */
	char blob[BLOB_MAX];    /* where its vector belongs now */
	int64_t vector_id;
	struct ability a;       /* --deep: the row rebuilt */
	bool built;
	enum verdict v;
};

/* A ledger entry no live row claims where it lies. */
struct entry {
	char *blob;
	int64_t vector_id;
	char *ability_id;
	int64_t generation;     /* of its ability's sync state when read (-1: none) */
	enum { E_UNKNOWN, E_GONE, E_THERE, E_OTHERS, E_ERROR } seen;
	char *other;            /* E_OTHERS: the ability the vector there names */
};

/* A repair wanted (owned copies: the page may go before it is queued). */
struct repair {
	char *ability_id, *blob;
	int64_t vector_id, generation;
};

enum phase { PH_OPEN, PH_ROWS, PH_ORPHANS, PH_OUTBOX, PH_FINISH };

struct reconcile {
	struct job job;              /* the session, the start, the end, abort (job.h) */
	struct vdb *v;
	struct reconcile_opts o;
	char *service, *service_blob, *host, *model; /* owned copies of what the options borrowed */
	reconcile_done_fn done;
	void *arg;

	enum phase phase;
	int64_t run_id;              /* 0: not recorded (dry run, or not yet) */
	int64_t last_progress_ms;
	char started_at[LOG_TIMESTAMP_LEN]; /* the run's (a joined run began before this process) */
	int64_t started_ms;          /* the same on clock_mono_ms() */
	char *pg_start;              /* the run's start on Postgres' clock */
	char overdue[32];

	/* a real run's parts */
	bool joining;                /* the lock was held: sharing it, to join the run going */
	int part;                    /* the part at hand (-1: none) */
	char *upto;                  /* rows: the part's last ability_id (NULL: open) */
	long parts;                  /* parts this process checked */
	long merged;                 /* parts merged into the counts below (the run's report) */
	bool run_over;               /* another process ended the run: record nothing */
	struct event *wait;

	/* counts of the part at hand (a dry run: of everything); the run's once merged */
	struct category cats[CAT_N];
	long rows_checked, vectors_checked, entries_checked;
	long queued, deferred;

	/* the page's repairs, copied: their budget is asked for first */
	struct repair *repairs;
	size_t nrepairs;
	enum { RQ_ROWS, RQ_ORPHANS, RQ_CHANGES } repair_kind;

	/* the page at hand; job.out counts its vector DB requests still out */
	char *cursor;                /* keyset position (rows, outbox: ability_id; orphans: blob) */
	int64_t cursor_vid;          /* orphans: vector_id */
	struct row *rows;
	size_t nrows;
	struct entry *entries;
	size_t nentries;
	bool last_page;

	json_t *report;
	enum reconcile_outcome outcome;
	char why[600];
};

static void next_page(struct reconcile *r);
static void phase_over(struct reconcile *r);
static void finish(struct reconcile *r, enum reconcile_outcome outcome, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* ---- small things ------------------------------------------------------------------ */

/* Keeps id if it is among the SAMPLE_MAX smallest of the category, in order. */
static void keep_sample(struct category *k, const char *id)
{
	int i, at;

	for (at = 0; at < k->nsample && strcmp(k->sample[at], id) < 0; at++)
		;
	if (at == SAMPLE_MAX || (at < k->nsample && strcmp(k->sample[at], id) == 0))
		return;
	if (k->nsample == SAMPLE_MAX)
		free(k->sample[--k->nsample]);
	for (i = k->nsample; i > at; i--)
		k->sample[i] = k->sample[i - 1];
	k->sample[at] = xstrdup(id);
	k->nsample++;
}

/* Counts one drifted ability. */
static void note(struct reconcile *r, enum cat c, const char *id)
{
	r->cats[c].count++;
	keep_sample(&r->cats[c], id);
}

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static void free_repairs(struct reconcile *r)
{
	size_t i;

	for (i = 0; i < r->nrepairs; i++) {
		free(r->repairs[i].ability_id);
		free(r->repairs[i].blob);
	}
	free(r->repairs);
	r->repairs = NULL;
	r->nrepairs = 0;
}

static void free_page(struct reconcile *r)
{
	size_t i;

	free_repairs(r);
	for (i = 0; i < r->nrows; i++) {
		free(r->rows[i].ability_id);
		free(r->rows[i].state);
		free(r->rows[i].hash);
		if (r->rows[i].built)
			ability_free(&r->rows[i].a);
	}
	free(r->rows);
	r->rows = NULL;
	r->nrows = 0;
	for (i = 0; i < r->nentries; i++) {
		free(r->entries[i].blob);
		free(r->entries[i].ability_id);
		free(r->entries[i].other);
	}
	free(r->entries);
	r->entries = NULL;
	r->nentries = 0;
}

static void set_cursor(struct reconcile *r, const char *at, int64_t vid)
{
	free(r->cursor);
	r->cursor = dup_or_null(at);
	r->cursor_vid = vid;
}

static void progress(struct reconcile *r)
{
	int64_t now = clock_mono_ms();
	long drift = 0;
	int c;

	if (!r->o.progress_s || now - r->last_progress_ms < r->o.progress_s * 1000)
		return;
	r->last_progress_ms = now;
	for (c = 0; c < CAT_N; c++)
		drift += r->cats[c].count;
	log_info(COMP, "%s: %ld rows, %ld vectors, %ld ledger entries checked; %ld drifted so far",
		 r->phase == PH_ROWS ? "rows" : r->phase == PH_ORPHANS ? "orphans" : "outbox", r->rows_checked,
		 r->vectors_checked, r->entries_checked, drift);
}

/* ---- the end -------------------------------------------------------------------------- */

/* The counts: {"checked", "drift", "repairs"} (a part's row keeps them so); adds "total" when asked. */
static json_t *counts_json(const struct reconcile *r, bool with_total)
{
	json_t *drift = json_object(), *out;
	long total = 0;
	int c, i;

	for (c = 0; c < CAT_N; c++) {
		json_t *sample = json_array();

		for (i = 0; i < r->cats[c].nsample; i++)
			json_array_append_new(sample, json_string(r->cats[c].sample[i]));
		json_object_set_new(drift, reconcile_categories[c].name,
				    json_pack("{s:I, s:o}", "count", (json_int_t)r->cats[c].count, "sample", sample));
		total += r->cats[c].count;
	}
	out = json_pack("{s:{s:I, s:I, s:I}, s:o, s:{s:I, s:I}}", "checked", "rows", (json_int_t)r->rows_checked,
			"vectors", (json_int_t)r->vectors_checked, "ledger_entries", (json_int_t)r->entries_checked,
			"drift", drift, "repairs", "queued", (json_int_t)r->queued, "deferred",
			(json_int_t)r->deferred);
	if (with_total)
		json_object_set_new(out, "total", json_integer((json_int_t)total));
	return out;
}

/* Adds a part's counts (counts_json's shape, read back from its row) to the run's. */
static void absorb(struct reconcile *r, const json_t *part)
{
	const json_t *checked = json_object_get(part, "checked"), *repairs = json_object_get(part, "repairs");
	const json_t *drift = json_object_get(part, "drift"), *sample;
	size_t i;
	int c;

	r->rows_checked += (long)json_integer_value(json_object_get(checked, "rows"));
	r->vectors_checked += (long)json_integer_value(json_object_get(checked, "vectors"));
	r->entries_checked += (long)json_integer_value(json_object_get(checked, "ledger_entries"));
	r->queued += (long)json_integer_value(json_object_get(repairs, "queued"));
	r->deferred += (long)json_integer_value(json_object_get(repairs, "deferred"));
	for (c = 0; c < CAT_N; c++) {
		const json_t *k = json_object_get(drift, reconcile_categories[c].name), *id;

		r->cats[c].count += (long)json_integer_value(json_object_get(k, "count"));
		sample = json_object_get(k, "sample");
		json_array_foreach(sample, i, id)
			if (json_is_string(id))
				keep_sample(&r->cats[c], json_string_value(id));
	}
	r->merged++;
}

/* The part's counts start again from zero. */
static void reset_counts(struct reconcile *r)
{
	int c, i;

	for (c = 0; c < CAT_N; c++) {
		for (i = 0; i < r->cats[c].nsample; i++)
			free(r->cats[c].sample[i]);
		r->cats[c].count = 0;
		r->cats[c].nsample = 0;
	}
	r->rows_checked = r->vectors_checked = r->entries_checked = 0;
	r->queued = r->deferred = 0;
}

static json_t *build_report(struct reconcile *r, const char *status)
{
	char finished[LOG_TIMESTAMP_LEN];
	json_t *report;

	log_timestamp(finished);
	report = json_pack("{s:o, s:b, s:b, s:s?, s:s?, s:s, s:s?, s:s, s:s, s:f}", "run_id",
			   r->run_id ? json_integer((json_int_t)r->run_id) : json_null(), "dry_run", r->o.dry_run,
			   "deep", r->o.deep, "service_name", r->service, "embedding_model", r->o.embedding_model,
			   "status", status, "error", r->job.error[0] ? r->job.error : NULL, "started_at",
			   r->started_at, "finished_at", finished, "seconds",
			   (double)(clock_mono_ms() - r->started_ms) / 1000.0);
	json_object_update_new(report, counts_json(r, true));
	if (!r->o.dry_run && r->run_id)
		json_object_set_new(report, "parts", json_integer((json_int_t)r->merged));
	return report;
}

static struct reconcile *of(struct job *j)
{
	return (struct reconcile *)j; /* `job` is the first member */
}

static void run_report(struct job *j)
{
	struct reconcile *r = of(j);

	if (r->run_id && !r->o.dry_run && r->outcome != RECONCILE_SKIPPED)
		log_info(COMP, "run %lld: this process checked %ld of its parts", (long long)r->run_id, r->parts);
	if (r->done)
		r->done(r->outcome, r->report, r->why, r->arg);
}

static void run_release(struct job *j)
{
	struct reconcile *r = of(j);

	free_page(r);
	reset_counts(r); /* frees the samples */
	json_decref(r->report);
	if (r->wait)
		event_free(r->wait);
	free(r->cursor);
	free(r->upto);
	free(r->pg_start);
	free(r->service);
	free(r->service_blob);
	free(r->model);
	free(r->host);
	free(r);
}

static void on_recorded(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (job_gone(&r->job))
		return;
	if (!o->res)
		log_warn(COMP, "run %lld: recording the report failed: %s", (long long)r->run_id, o->error);
	job_end(&r->job);
}

static bool can_record(const struct reconcile *r)
{
	return r->run_id && !r->run_over && r->job.pool && pgpool_ready(r->job.pool);
}

/*
 * The report, recorded with the run. A real run's failure is the run's only
 * if no other process works on it (else they go on, taking over this
 * process's part).
 */
static void record_report(struct reconcile *r)
{
	const char *status = r->outcome == RECONCILE_DONE ? "ok" : "failed";
	char *text;

	r->report = build_report(r, status);
	if (!can_record(r)) {
		job_end(&r->job);
		return;
	}
	text = json_dumps(r->report, JSON_COMPACT | JSON_REAL_PRECISION(10));
	store_reconcile_record_end(r->job.pool, r->run_id, status, text, r->queued,
				   r->job.error[0] ? r->job.error : NULL,
				   r->outcome == RECONCILE_FAILED && !r->o.dry_run, on_recorded, r);
	free(text);
}

static void absorb_texts(struct reconcile *r, const char *const *texts, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		json_t *part = json_loads(texts[i], 0, NULL);

		if (part)
			absorb(r, part);
		json_decref(part);
	}
}

/* A real run failing here: the parts finished so far count in its report too. */
static void on_parts_so_far(const char *const *texts, size_t n, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (job_gone(&r->job))
		return;
	if (o->res)
		absorb_texts(r, texts, n);
	record_report(r);
}

static void finish(struct reconcile *r, enum reconcile_outcome outcome, const char *fmt, ...)
{
	va_list ap;

	if (r->job.over || r->phase == PH_FINISH)
		return;
	r->phase = PH_FINISH;
	r->outcome = outcome;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
	if (outcome == RECONCILE_FAILED)
		job_fail(&r->job, "%s", r->why);
	free_page(r);
	if (outcome == RECONCILE_SKIPPED)
		job_end(&r->job);
	else if (outcome == RECONCILE_FAILED && !r->o.dry_run && can_record(r))
		store_reconcile_part_reports(r->job.pool, r->run_id, on_parts_so_far, r);
	else
		record_report(r);
}

/* A Postgres statement failed: the run ends, saying where. */
static bool pg_failed(struct reconcile *r, const struct pg_outcome *o, const char *what)
{
	if (o->res)
		return false;
	job_fail(&r->job, "%s: %.500s", what, o->error);
	finish(r, RECONCILE_FAILED, "Postgres: %s: %s", what, o->error);
	return true;
}

/* A vector DB request failed: the page ends with this error. */
static void vdb_failed(struct reconcile *r, const char *error)
{
	job_fail(&r->job, "the vector DB: %.500s", error);
}

/* ---- repairs: as far as the run's budget goes, the rest deferred to the next run ------ */

static void on_requeued(long n, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (job_gone(&r->job) || pg_failed(r, o, "queueing repairs"))
		return;
	r->queued += n;
	next_page(r);
}

static void on_budget(long granted, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	struct recon_place *places;
	const char **ids;
	size_t n, i;

	if (job_gone(&r->job) || pg_failed(r, o, "drawing on the repair budget"))
		return;
	n = granted <= 0 ? 0 : (size_t)granted < r->nrepairs ? (size_t)granted : r->nrepairs;
	r->deferred += (long)(r->nrepairs - n);
	if (n == 0) {
		next_page(r);
		return;
	}
	places = xcalloc(n, sizeof(*places));
	ids = xcalloc(n, sizeof(*ids));
	for (i = 0; i < n; i++) {
		const struct repair *x = &r->repairs[i];

		places[i] = (struct recon_place){x->ability_id, x->blob, x->vector_id, x->generation};
		ids[i] = x->ability_id;
	}
	if (r->repair_kind == RQ_ROWS)
		store_reconcile_requeue_rows(r->job.pool, places, n, on_requeued, r);
	else if (r->repair_kind == RQ_ORPHANS)
		store_reconcile_requeue_orphans(r->job.pool, places, n, on_requeued, r);
	else
		store_reconcile_requeue_changes(r->job.pool, ids, n, on_requeued, r);
	free(places);
	free(ids);
	free_repairs(r); /* the statement has its own copy */
}

/* The page's repairs, at most `most` of this kind, are gathered (a dry run gathers none). */
static void begin_repairs(struct reconcile *r, size_t most, int kind)
{
	free_repairs(r);
	r->repairs = xcalloc(most + 1, sizeof(*r->repairs));
	r->repair_kind = kind;
}

/* Copied: the page may go before its repairs are queued. */
static void add_repair(struct reconcile *r, const char *id, const char *blob, int64_t vector_id, int64_t generation)
{
	if (!r->o.dry_run)
		r->repairs[r->nrepairs++] = (struct repair){xstrdup(id), dup_or_null(blob), vector_id, generation};
}

/* Queues the page's repairs the budget allows, then goes on to the next page. */
static void queue_repairs(struct reconcile *r)
{
	if (r->nrepairs == 0)
		next_page(r);
	else
		store_reconcile_reserve(r->job.pool, r->run_id, (long)r->nrepairs, r->o.max_repairs, on_budget, r);
}

/* ---- rows: live abilities and their vectors ------------------------------------------- */

static enum cat verdict_cat(enum verdict v)
{
	switch (v) {
	case V_MISSING:
		return CAT_MISSING;
	case V_STALE:
		return CAT_STALE;
	case V_NO_STATE:
		return CAT_NO_SYNC_STATE;
	case V_COLLISION:
		return CAT_COLLISIONS;
	case V_INVALID:
		return CAT_INVALID;
	case V_DIFFERS:
		return CAT_DIFFERS;
	case V_STALE_CONTENT:
		return CAT_STALE_CONTENT;
	default:
		return CAT_N;
	}
}

static bool needs_repair(const struct row *w)
{
	return w->v == V_MISSING || w->v == V_STALE || w->v == V_NO_STATE || w->v == V_DIFFERS;
}

/* The page is judged: count it, queue what can be repaired, go on. */
static void rows_page_done(struct reconcile *r)
{
	size_t i;
	bool error = false;

	for (i = 0; i < r->nrows; i++) {
		struct row *w = &r->rows[i];
		enum cat c = verdict_cat(w->v);

		error = error || w->v == V_ERROR;
		if (c != CAT_N)
			note(r, c, w->ability_id);
	}
	if (error) {
		finish(r, RECONCILE_FAILED, "%s", r->job.error);
		return;
	}
	begin_repairs(r, r->nrows, RQ_ROWS);
	for (i = 0; i < r->nrows; i++) {
		const struct row *w = &r->rows[i];

		if (needs_repair(w))
			add_repair(r, w->ability_id, w->blob, w->vector_id, w->generation);
	}
	queue_repairs(r);
}

/* A row about to be pushed again must be pushable: else it is invalid, and left alone. */
static void on_full_rows(const struct ability_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	size_t t, i;

	if (job_gone(&r->job) || pg_failed(r, o, "reading abilities"))
		return;
	for (t = 0; t < n; t++) {
		const struct ability_row *x = &rows[t];
		struct ability a;
		struct ability_error aerr;

		for (i = 0; i < r->nrows && strcmp(r->rows[i].ability_id, x->ability_id) != 0; i++)
			;
		if (i == r->nrows)
			continue;
		if (!x->embedding || !ability_from_row(x->ability_id, x->ability_name, x->service_name, x->description,
						       x->embedding, x->metadata, r->o.dim, &a, &aerr))
			r->rows[i].v = V_INVALID;
		else
			ability_free(&a);
	}
	rows_page_done(r);
}

static void validate_repairs(struct reconcile *r)
{
	const char **ids = xcalloc(r->nrows + 1, sizeof(*ids));
	size_t i, n = 0;

	for (i = 0; i < r->nrows; i++)
		if (needs_repair(&r->rows[i]) && !r->rows[i].built)
			ids[n++] = r->rows[i].ability_id;
	if (n)
		store_reconcile_full_rows(r->job.pool, ids, n, on_full_rows, r);
	free(ids);
	if (!n)
		rows_page_done(r);
}

/* A check of the page came back: the page is judged once none is out. */
static void row_settled(struct reconcile *r)
{
	if (job_back(&r->job) && r->job.out == 0)
		validate_repairs(r);
}

/* --deep: the vector must find itself, at distance ~0, among its nearest. */
struct row_ctx {
	struct reconcile *r;
	struct row *w;
};

static void on_self_query(const struct vdb_result *res, void *arg)
{
	struct row_ctx *c = arg;
	struct reconcile *r = c->r;
	struct row *w = c->w;

	free(c);
	if (job_gone(&r->job)) {
		row_settled(r);
		return;
	}
	if (res->status != VDB_OK) {
		w->v = V_ERROR;
		vdb_failed(r, res->error);
	} else {
		json_t *ids = json_object_get(res->reply, "ids"), *dist = json_object_get(res->reply, "distances");
		size_t i;
		bool found = false;

		for (i = 0; i < json_array_size(ids); i++)
			found = found || (json_integer_value(json_array_get(ids, i)) == w->vector_id &&
					  fabs(json_number_value(json_array_get(dist, i))) <= SELF_DISTANCE_MAX);
		if (!found)
			w->v = V_DIFFERS;
	}
	row_settled(r);
}

static void on_vector(const struct vdb_result *res, void *arg)
{
	struct row_ctx *c = arg;
	struct reconcile *r = c->r;
	struct row *w = c->w;
	json_t *attrs;
	const char *owner, *hash;

	if (job_gone(&r->job)) {
		free(c);
		row_settled(r);
		return;
	}
	r->vectors_checked++;
	if (res->status == VDB_NOT_FOUND) {
		w->v = w->doubt ? V_STALE_CONTENT : V_MISSING;
	} else if (res->status != VDB_OK) {
		w->v = V_ERROR;
		vdb_failed(r, res->error);
	} else {
		attrs = json_object_get(res->reply, "attributes");
		owner = json_string_value(json_object_get(attrs, "ability_id"));
		hash = json_string_value(json_object_get(attrs, "content_hash"));
		if (owner && strcmp(owner, w->ability_id) != 0)
			w->v = V_COLLISION; /* another ability's vector, written by someone else */
		else if (!hash || strcmp(hash, w->hash) != 0 || (w->built && strcmp(w->a.content_hash, w->hash) != 0))
			w->v = w->doubt ? V_STALE_CONTENT : V_STALE;
		else if (w->built) {
			/* Same content: does the vector itself match? */
			job_send(&r->job);
			vdb_query(r->v, w->blob, w->a.embedding, w->a.embedding_len, SELF_QUERY_K, on_self_query, c);
			row_settled(r);
			return;
		} else {
			w->v = V_FINE;
		}
	}
	free(c);
	row_settled(r);
}

static void check_vectors(struct reconcile *r)
{
	size_t i;

	job_send(&r->job); /* held while the requests go out */
	for (i = 0; i < r->nrows; i++) {
		struct row *w = &r->rows[i];
		struct row_ctx *c;

		if (w->v != V_CHECK)
			continue;
		c = xcalloc(1, sizeof(*c));
		c->r = r;
		c->w = w;
		job_send(&r->job);
		vdb_get_attributes(r->v, w->blob, w->vector_id, on_vector, c);
	}
	row_settled(r);
}

static bool same_place(const struct row *a, const struct row *b)
{
	return a->vector_id == b->vector_id && strcmp(a->blob, b->blob) == 0;
}

static void on_owners(const struct recon_owner *owners, size_t n, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	size_t *index;
	size_t i, j, k = 0;

	if (job_gone(&r->job) || pg_failed(r, o, "reading the ledger"))
		return;
	/* The places asked were the rows without sync state, in page order: map back. */
	index = xcalloc(r->nrows + 1, sizeof(size_t));
	for (i = 0; i < r->nrows; i++)
		if (r->rows[i].v == V_NO_STATE)
			index[k++] = i;
	for (j = 0; j < n; j++) {
		struct row *w = owners[j].index < k ? &r->rows[index[owners[j].index]] : NULL;

		if (w && strcmp(owners[j].ability_id, w->ability_id) != 0)
			w->v = V_COLLISION;
	}
	free(index);
	/* Two rows of this page without sync state on one vector: the second collides. */
	for (i = 0; i < r->nrows; i++)
		for (j = 0; j < i && r->rows[i].v == V_NO_STATE; j++)
			if (r->rows[j].v == V_NO_STATE && same_place(&r->rows[j], &r->rows[i]))
				r->rows[i].v = V_COLLISION;
	check_vectors(r);
}

/* Rows without sync state would claim a vector: does another live ability hold it? */
static void check_owners(struct reconcile *r)
{
	struct recon_place *places = xcalloc(r->nrows + 1, sizeof(*places));
	size_t i, n = 0;

	for (i = 0; i < r->nrows; i++) {
		const struct row *w = &r->rows[i];

		if (w->v == V_NO_STATE)
			places[n++] = (struct recon_place){w->ability_id, w->blob, w->vector_id, w->generation};
	}
	if (n)
		store_reconcile_owners(r->job.pool, places, n, on_owners, r);
	free(places);
	if (!n)
		check_vectors(r);
}

/* Where the row's vector belongs, and what to do with it. */
static void judge_row(struct reconcile *r, const struct recon_row *x, struct row *w)
{
	struct ability_error aerr;
	struct errbuf err;

	w->ability_id = xstrdup(x->ability_id);
	w->state = dup_or_null(x->state);
	w->hash = dup_or_null(x->content_hash);
	w->generation = x->generation;
	vdb_blob_name(x->service_name, strlen(x->service_name), w->blob, sizeof(w->blob));
	r->rows_checked++;
	if (r->o.embedding_model && (!x->embedding_model || strcmp(x->embedding_model, r->o.embedding_model) != 0))
		note(r, CAT_OLD_MODEL, x->ability_id); /* re-embedding is the client's: reported, not repaired */
	if (!vdb_vector_id(x->ability_id, strlen(x->ability_id), &w->vector_id, &err)) {
		w->v = V_INVALID;
		return;
	}
	if (!w->state || strcmp(w->state, "deleted") == 0)
		w->v = V_NO_STATE;
	else if (strcmp(w->state, "synced") == 0)
		w->v = V_CHECK;
	else if (r->o.deep && strcmp(w->state, "pending") == 0 && x->in_doubt)
		w->v = V_CHECK, w->doubt = true; /* in doubt: its verification is due later; what is there now? */
	else
		w->v = V_SKIP; /* pending, failed: the outbox phase looks at those */
	if (r->o.deep && w->v != V_SKIP) {
		w->built = x->embedding && ability_from_row(x->ability_id, x->ability_name, x->service_name,
							    x->description, x->embedding, x->metadata, r->o.dim,
							    &w->a, &aerr);
		if (!w->built)
			w->v = V_INVALID;
	}
}

static void on_rows(const struct recon_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	size_t t;

	if (job_gone(&r->job) || pg_failed(r, o, "reading abilities"))
		return;
	r->last_page = n < (size_t)r->o.page;
	if (n == 0) {
		phase_over(r);
		return;
	}
	r->rows = xcalloc(n, sizeof(*r->rows));
	r->nrows = n;
	for (t = 0; t < n; t++)
		judge_row(r, &rows[t], &r->rows[t]);
	set_cursor(r, r->rows[n - 1].ability_id, 0);
	check_owners(r);
}

static void read_rows(struct reconcile *r)
{
	store_reconcile_rows(r->job.pool, r->cursor, r->upto, r->service, r->o.page, r->o.deep, on_rows, r);
}

/* ---- orphans: ledger entries without a live row there ------------------------------ */

static void entries_page_done(struct reconcile *r)
{
	size_t i;

	for (i = 0; i < r->nentries; i++)
		if (r->entries[i].seen == E_ERROR) {
			finish(r, RECONCILE_FAILED, "%s", r->job.error);
			return;
		}
	begin_repairs(r, r->nentries, RQ_ORPHANS);
	for (i = 0; i < r->nentries; i++) {
		const struct entry *e = &r->entries[i];

		if (e->seen == E_OTHERS)
			note(r, CAT_COLLISIONS, e->other);
		if (e->seen != E_THERE)
			continue;
		note(r, CAT_ORPHANS, e->ability_id);
		add_repair(r, e->ability_id, e->blob, e->vector_id, e->generation);
	}
	queue_repairs(r);
}

struct entry_ctx {
	struct reconcile *r;
	struct entry *e;
};

static void on_entry(const struct vdb_result *res, void *arg)
{
	struct entry_ctx *c = arg;
	struct reconcile *r = c->r;
	struct entry *e = c->e;

	free(c);
	if (!job_back(&r->job))
		return;
	if (res->status == VDB_NOT_FOUND) {
		e->seen = E_GONE;
	} else if (res->status == VDB_OK) {
		/*
		 * A vector that names another ability (the original app's, of a
		 * live row with the same vector_id) is not this entry's to delete:
		 * it is reported as a collision, for a person (a row of that
		 * ability there is claimed and pushed by the rows phase).
		 */
		const char *owner = json_string_value(
			json_object_get(json_object_get(res->reply, "attributes"), "ability_id"));

		e->seen = owner && strcmp(owner, e->ability_id) != 0 ? E_OTHERS : E_THERE;
		if (e->seen == E_OTHERS) {
			e->other = xstrdup(owner);
			log_info(COMP, "vector %lld of %s names %s, not %s (the ledger's): not deleted, a collision",
				 (long long)e->vector_id, e->blob, owner, e->ability_id);
		}
	} else {
		e->seen = E_ERROR;
		vdb_failed(r, res->error);
	}
	if (r->job.out == 0)
		entries_page_done(r);
}

/* A live row whose vector belongs right where the entry lies is the rows phase's business. */
static bool claimed_by_its_row(const struct recon_entry *x)
{
	char blob[BLOB_MAX];
	int64_t vid;
	struct errbuf err;

	if (!x->service_name)
		return false;
	vdb_blob_name(x->service_name, strlen(x->service_name), blob, sizeof(blob));
	return vdb_vector_id(x->ability_id, strlen(x->ability_id), &vid, &err) && strcmp(blob, x->blob_id) == 0 &&
	       vid == x->vector_id;
}

static void on_entries(const struct recon_entry *rows, size_t n, const struct recon_scan *scan,
		       const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	size_t t, i;

	if (job_gone(&r->job) || pg_failed(r, o, "reading the ledger"))
		return;
	r->last_page = scan->scanned < (size_t)r->o.page;
	if (scan->scanned == 0) {
		phase_over(r);
		return;
	}
	set_cursor(r, scan->last_blob, scan->last_vector_id);
	r->entries_checked += (long)scan->scanned;
	r->entries = xcalloc(n + 1, sizeof(*r->entries));
	for (t = 0; t < n; t++) {
		struct entry *e = &r->entries[r->nentries];

		if (claimed_by_its_row(&rows[t]))
			continue;
		e->blob = xstrdup(rows[t].blob_id);
		e->vector_id = rows[t].vector_id;
		e->ability_id = xstrdup(rows[t].ability_id);
		e->generation = rows[t].generation;
		r->nentries++;
	}
	job_send(&r->job); /* held while the requests go out */
	for (i = 0; i < r->nentries; i++) {
		struct entry_ctx *c = xcalloc(1, sizeof(*c));

		c->r = r;
		c->e = &r->entries[i];
		job_send(&r->job);
		vdb_get_attributes(r->v, c->e->blob, c->e->vector_id, on_entry, c);
	}
	if (job_back(&r->job) && r->job.out == 0)
		entries_page_done(r);
}

static void read_entries(struct reconcile *r)
{
	store_reconcile_entries(r->job.pool, r->cursor, r->cursor_vid, r->service_blob, r->overdue, r->pg_start,
				r->o.page, on_entries, r);
}

/* ---- outbox: failed and overdue changes ----------------------------------------------- */

static void on_changes(const struct recon_change *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	size_t t;

	if (job_gone(&r->job) || pg_failed(r, o, "reading the outbox"))
		return;
	r->last_page = n < (size_t)r->o.page;
	if (n == 0) {
		phase_over(r);
		return;
	}
	set_cursor(r, rows[n - 1].ability_id, 0);
	begin_repairs(r, n, RQ_CHANGES);
	for (t = 0; t < n; t++) {
		note(r, rows[t].failed ? CAT_FAILED : CAT_OVERDUE, rows[t].ability_id);
		add_repair(r, rows[t].ability_id, NULL, 0, -1);
	}
	queue_repairs(r);
}

static void read_changes(struct reconcile *r)
{
	store_reconcile_changes(r->job.pool, r->cursor, r->service_blob, r->overdue, r->pg_start, r->o.page,
				on_changes, r);
}

/* ---- the chain ---------------------------------------------------------------------------- */

static void next_page(struct reconcile *r)
{
	bool was_last = r->last_page;

	free_page(r);
	progress(r);
	if (r->job.stopping) {
		finish(r, RECONCILE_FAILED, "stopped before the end");
		return;
	}
	r->last_page = false;
	if (was_last && r->cursor) {
		phase_over(r);
		return;
	}
	switch (r->phase) {
	case PH_ROWS:
		read_rows(r);
		break;
	case PH_ORPHANS:
		read_entries(r);
		break;
	case PH_OUTBOX:
		read_changes(r);
		break;
	default:
		break;
	}
}

/* ---- parts: a real run's work, shared by the processes on it -------------------------------- */

static void claim_part(struct reconcile *r);

static void on_part_let_go(bool open, const char *text, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	(void)open, (void)text;
	if (job_gone(&r->job) || pg_failed(r, o, "letting a part go"))
		return;
	reset_counts(r);
	r->parts++;
	r->part = -1;
	claim_part(r);
}

/* Kept: the lock goes only now, so no process finds the part unfinished and free. */
static void on_part_kept(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (job_gone(&r->job) || pg_failed(r, o, "recording a part"))
		return;
	store_reconcile_part_check(r->job.pool, r->run_id, r->part, on_part_let_go, r);
}

/* The part is checked: its counts go to its row, and the next part is taken. */
static void part_over(struct reconcile *r)
{
	json_t *counts = counts_json(r, false);
	char *text = json_dumps(counts, JSON_COMPACT);

	log_debug(COMP, "run %lld: part %d checked: %ld rows, %ld vectors, %ld ledger entries", (long long)r->run_id,
		  r->part, r->rows_checked, r->vectors_checked, r->entries_checked);
	store_reconcile_part_done(r->job.pool, r->run_id, r->part, text, on_part_kept, r);
	free(text);
	json_decref(counts);
}

/* The phase's last page is done: the next phase, or the end of the part (of a dry run: the end). */
static void phase_over(struct reconcile *r)
{
	switch (r->phase) {
	case PH_ROWS:
		if (r->part > 0) {
			part_over(r);
			return;
		}
		r->phase = PH_ORPHANS;
		set_cursor(r, NULL, 0);
		read_entries(r);
		break;
	case PH_ORPHANS:
		r->phase = PH_OUTBOX;
		set_cursor(r, NULL, 0);
		read_changes(r);
		break;
	case PH_OUTBOX:
		if (r->part == 0)
			part_over(r);
		else
			finish(r, RECONCILE_DONE, "done");
		break;
	default:
		break;
	}
}

/* The part taken is still unfinished: its work begins (rows: after the cursor, up to `upto`). */
static void on_part_checked(bool open, const char *text, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	(void)text;
	if (job_gone(&r->job) || pg_failed(r, o, "taking a part of the run"))
		return;
	if (!open) { /* another process finished it between our claim's snapshot and its lock */
		log_debug(COMP, "run %lld: part %d was finished meanwhile", (long long)r->run_id, r->part);
		r->part = -1;
		claim_part(r);
		return;
	}
	if (r->part == 0) {
		log_debug(COMP, "run %lld: part 0: the ledger and the outbox", (long long)r->run_id);
		r->phase = PH_ORPHANS;
		set_cursor(r, NULL, 0);
		read_entries(r);
		return;
	}
	log_debug(COMP, "run %lld: part %d: rows after %s, up to %s", (long long)r->run_id, r->part,
		  r->cursor ? r->cursor : "the start", r->upto ? r->upto : "the end");
	r->phase = PH_ROWS;
	read_rows(r);
}

static void take_part(struct reconcile *r, const struct recon_part *p)
{
	r->part = p->part;
	free(r->upto);
	r->upto = dup_or_null(p->upto);
	set_cursor(r, p->after, 0);
	store_reconcile_part_check(r->job.pool, r->run_id, r->part, on_part_checked, r);
}

static void on_merged(const char *const *texts, size_t n, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (job_gone(&r->job) || pg_failed(r, o, "reading the parts' counts"))
		return;
	absorb_texts(r, texts, n);
	finish(r, RECONCILE_DONE, "done");
}

/* Another process ended the run: its report is this process's too (recorded already). */
static void run_ended_elsewhere(struct reconcile *r, const struct recon_part *p)
{
	r->run_over = true;
	if (p->status && strcmp(p->status, "ok") == 0 && p->report && (r->report = json_loads(p->report, 0, NULL))) {
		r->phase = PH_FINISH;
		r->outcome = RECONCILE_DONE;
		snprintf(r->why, sizeof(r->why), "done");
		job_end(&r->job);
		return;
	}
	if (p->status && strcmp(p->status, "cancelled") == 0)
		finish(r, RECONCILE_FAILED, "run %lld was cancelled", (long long)r->run_id);
	else
		finish(r, RECONCILE_FAILED, "run %lld %s", (long long)r->run_id,
		       p->status ? "failed in another process" : "is gone");
}

static void on_wait(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	claim_part(arg);
}

static void on_part(const struct recon_part *p, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	struct timeval tv = {0, PART_WAIT_MS * 1000};

	if (job_gone(&r->job) || pg_failed(r, o, "taking a part of the run"))
		return;
	if (p->part >= 0)
		take_part(r, p);
	else if (!p->status || strcmp(p->status, "running") != 0)
		run_ended_elsewhere(r, p);
	else if (p->left == 0) /* every part is checked: the counts become the run's */
		store_reconcile_part_reports(r->job.pool, r->run_id, on_merged, r);
	else { /* the parts left are others': one may die and leave its part */
		if (!r->wait)
			r->wait = evtimer_new(r->job.base, on_wait, r);
		evtimer_add(r->wait, &tv);
	}
}

static void claim_part(struct reconcile *r)
{
	if (r->job.stopping) {
		finish(r, RECONCILE_FAILED, "stopped before the end");
		return;
	}
	store_reconcile_claim_part(r->job.pool, r->run_id, on_part, r);
}

/* ---- the start ----------------------------------------------------------------------------- */

static void begin(struct reconcile *r)
{
	char name[48];

	if (r->run_id)
		snprintf(name, sizeof(name), "run %lld", (long long)r->run_id);
	else
		snprintf(name, sizeof(name), "dry run");
	log_info(COMP, "%s%s: checking %s against the vector DB", name, r->o.deep ? " (deep)" : "",
		 r->service ? r->service : "every service");
	if (!r->o.dry_run) {
		claim_part(r);
		return;
	}
	r->phase = PH_ROWS;
	set_cursor(r, NULL, 0);
	read_rows(r);
}

/* A vector DB that is down would fail every check only after each one's retries: ask once first. */
static void on_health(const struct vdb_result *res, void *arg)
{
	struct reconcile *r = arg;

	if (!job_back(&r->job))
		return;
	if (res->status != VDB_OK) {
		vdb_failed(r, res->error);
		finish(r, RECONCILE_FAILED, "the vector DB is unavailable: %s", res->error);
		return;
	}
	begin(r);
}

static void check_vector_db(struct reconcile *r)
{
	job_send(&r->job);
	vdb_health(r->v, on_health, r);
}

/* The run this process works on (its own, or one it joined): its clock is the run's. */
static void take_run(struct reconcile *r, const struct recon_run *run)
{
	r->run_id = run->id;
	snprintf(r->started_at, sizeof(r->started_at), "%s", run->started_at);
	r->started_ms = clock_mono_ms() - (int64_t)(run->seconds * 1000.0);
	free(r->pg_start);
	r->pg_start = xstrdup(run->pg_started_at);
	if (r->o.recorded)
		r->o.recorded(run->id, r->arg);
}

static void on_shared(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (job_gone(&r->job) || pg_failed(r, o, "sharing the reconcile lock"))
		return;
	check_vector_db(r);
}

static void on_run_recorded(const struct recon_run *run, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (job_gone(&r->job) || pg_failed(r, o, "recording the run"))
		return;
	take_run(r, run);
	if (r->o.dry_run)
		check_vector_db(r);
	else /* the run and its parts exist: others may join from now on */
		store_reconcile_share_lock(r->job.pool, on_shared, r);
}

static void record_run(struct reconcile *r)
{
	store_reconcile_record_run(r->job.pool, r->o.dry_run, r->o.deep, r->service, r->o.embedding_model, r->host,
				   r->o.page * RECONCILE_PART_PAGES, on_run_recorded, r);
}

static void on_joined(const struct recon_run *run, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (job_gone(&r->job) || pg_failed(r, o, "looking for the run to join"))
		return;
	if (!run) {
		finish(r, RECONCILE_SKIPPED,
		       "another process is reconciling (a run with other options, or one starting or ending)");
		return;
	}
	log_info(COMP, "run %lld: joining it (started %s)", (long long)run->id, run->started_at);
	take_run(r, run);
	check_vector_db(r);
}

static void on_last_run(bool ran, const char *seconds_ago, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	double ago;

	if (job_gone(&r->job) || pg_failed(r, o, "reading the last run"))
		return;
	if (ran && seconds_ago && (ago = atof(seconds_ago)) < r->o.min_gap_s) {
		finish(r, RECONCILE_SKIPPED, "another run started %.1f s ago", ago);
		return;
	}
	record_run(r);
}

/*
 * Exclusive: no process works on a run, a new one starts (unless one started
 * moments ago). Held by others: shared, to join theirs.
 */
static void on_locked(bool locked, const char *text, const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	(void)text;
	if (job_gone(&r->job) || pg_failed(r, o, "taking the reconcile lock"))
		return;
	if (!locked && !r->joining) {
		r->joining = true;
		store_reconcile_try_lock(r->job.pool, false, on_locked, r);
	} else if (!locked) {
		finish(r, RECONCILE_SKIPPED, "another process is starting a run");
	} else if (r->joining) {
		store_reconcile_join(r->job.pool, r->o.deep, r->service, r->o.embedding_model, on_joined, r);
	} else if (r->o.min_gap_s > 0) {
		store_reconcile_last_run(r->job.pool, on_last_run, r);
	} else {
		record_run(r);
	}
}

static void run_started(struct job *j, const char *pg_now)
{
	struct reconcile *r = of(j);

	r->pg_start = xstrdup(pg_now);
	if (r->o.dry_run && r->o.recorded)
		record_run(r); /* a job to poll, so recorded; no lock: a dry run changes nothing */
	else if (r->o.dry_run)
		check_vector_db(r);
	else
		store_reconcile_try_lock(r->job.pool, true, on_locked, r);
}

static void run_refused(struct job *j, const char *code, const char *why)
{
	struct reconcile *r = of(j);

	if (strcmp(code, "postgres_error") == 0)
		finish(r, RECONCILE_FAILED, "Postgres: %s", why);
	else
		finish(r, RECONCILE_FAILED, "%s", why);
}

static const struct job_ops reconcile_job = {COMP, run_started, run_refused, run_report, run_release};

struct reconcile *reconcile_start(struct event_base *base, struct vdb *v, const struct reconcile_opts *o,
				  reconcile_done_fn done, void *arg)
{
	struct reconcile *r = xcalloc(1, sizeof(*r));

	r->v = v;
	r->o = *o;
	r->o.service = NULL;
	r->o.host = NULL;
	r->o.embedding_model = r->model = o->embedding_model ? xstrdup(o->embedding_model) : NULL;
	r->o.pg.conninfo = NULL;
	r->done = done;
	r->arg = arg;
	r->host = o->host ? xstrdup(o->host) : NULL;
	if (o->service) {
		r->service = xstrdup(o->service);
		r->service_blob = xmalloc(strlen(o->service) + sizeof(VDB_BLOB_PREFIX));
		vdb_blob_name(o->service, strlen(o->service), r->service_blob,
			      strlen(o->service) + sizeof(VDB_BLOB_PREFIX));
	}
	snprintf(r->overdue, sizeof(r->overdue), "%ld seconds", o->overdue_s);
	r->part = -1;
	r->last_progress_ms = r->started_ms = clock_mono_ms();
	log_timestamp(r->started_at);
	job_start(&r->job, &reconcile_job, base, &o->pg, 4, !o->dry_run); /* a dry run takes no lock */
	return r;
}

void reconcile_stop(struct reconcile *r)
{
	job_stop(&r->job);
}

void reconcile_abort(struct reconcile *r)
{
	r->done = NULL;
	job_abort(&r->job);
}

int reconcile_exit_code(json_t *report)
{
	json_t *drift = json_object_get(report, "drift");
	long left;

	if (!json_is_string(json_object_get(report, "status")) ||
	    strcmp(json_string_value(json_object_get(report, "status")), "ok") != 0)
		return EXIT_FAIL;
	if (json_is_true(json_object_get(report, "dry_run")))
		return json_integer_value(json_object_get(report, "total")) > 0 ? EXIT_PENDING : EXIT_OK;
	left = (long)json_integer_value(json_object_get(json_object_get(report, "repairs"), "deferred"));
	left += (long)json_integer_value(json_object_get(json_object_get(drift, "collisions"), "count"));
	left += (long)json_integer_value(json_object_get(json_object_get(drift, "invalid_rows"), "count"));
	left += (long)json_integer_value(json_object_get(json_object_get(drift, "stale_content"), "count"));
	left += (long)json_integer_value(json_object_get(json_object_get(drift, "old_embedding_model"), "count"));
	return left > 0 ? EXIT_PENDING : EXIT_OK;
}

/* ---- the timer inside serve ------------------------------------------------------------------ */

struct reconciler {
	struct event_base *base;
	struct vdb *v;
	struct reconcile_opts o;
	long interval_s;
	struct event *tick;
	struct reconcile *run;
	struct reconciler_stats stats;
	bool stopped;
	char *host;
};

static void schedule(struct reconciler *rc)
{
	/* ±10 % so that replicas started together drift apart. */
	long ms = rc->interval_s * 900 + (long)clock_jitter_ms((uint32_t)(rc->interval_s * 200));
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	if (!rc->stopped)
		evtimer_add(rc->tick, &tv);
}

static void on_periodic_done(enum reconcile_outcome outcome, json_t *report, const char *why, void *arg)
{
	struct reconciler *rc = arg;

	rc->run = NULL;
	switch (outcome) {
	case RECONCILE_SKIPPED:
		rc->stats.skipped++;
		log_debug(COMP, "skipped: %s", why);
		break;
	case RECONCILE_DONE:
		rc->stats.ok++;
		log_info(COMP, "run %lld: %lld drifted, %lld repairs queued, %lld deferred, in %.1f s",
			 (long long)json_integer_value(json_object_get(report, "run_id")),
			 (long long)json_integer_value(json_object_get(report, "total")),
			 (long long)json_integer_value(json_object_get(json_object_get(report, "repairs"), "queued")),
			 (long long)json_integer_value(json_object_get(json_object_get(report, "repairs"), "deferred")),
			 json_number_value(json_object_get(report, "seconds")));
		break;
	case RECONCILE_FAILED:
		rc->stats.failed++;
		log_warn(COMP, "run failed: %s", why);
		break;
	}
	schedule(rc);
}

static void on_periodic(evutil_socket_t fd, short what, void *arg)
{
	struct reconciler *rc = arg;

	(void)fd, (void)what;
	if (rc->stopped || rc->run)
		return;
	rc->run = reconcile_start(rc->base, rc->v, &rc->o, on_periodic_done, rc);
}

struct reconciler *reconciler_new(struct event_base *base, struct vdb *v, const struct reconcile_opts *o,
				  long interval_s)
{
	struct reconciler *rc = xcalloc(1, sizeof(*rc));

	rc->base = base;
	rc->v = v;
	rc->o = *o;
	rc->host = o->host ? xstrdup(o->host) : NULL;
	rc->o.host = rc->host;
	rc->o.service = NULL; /* periodic runs cover every service */
	rc->o.dry_run = false;
	rc->o.min_gap_s = 0.75 * (double)interval_s;
	rc->interval_s = interval_s;
	rc->tick = evtimer_new(base, on_periodic, rc);
	schedule(rc);
	return rc;
}

void reconciler_stop(struct reconciler *rc)
{
	if (!rc)
		return;
	rc->stopped = true;
	evtimer_del(rc->tick);
	if (rc->run)
		reconcile_stop(rc->run);
}

bool reconciler_busy(const struct reconciler *rc)
{
	return rc && rc->run;
}

bool reconciler_cancel(struct reconciler *rc, int64_t run_id)
{
	if (!rc || !rc->run || rc->run->run_id != run_id)
		return false;
	log_info(COMP, "run %lld was cancelled: stopping after the page it is on", (long long)run_id);
	reconcile_stop(rc->run);
	return true;
}

void reconciler_get_stats(const struct reconciler *rc, struct reconciler_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (rc)
		*out = rc->stats;
}

void reconciler_free(struct reconciler *rc)
{
	if (!rc)
		return;
	if (rc->run)
		reconcile_abort(rc->run);
	event_free(rc->tick);
	free(rc->host);
	free(rc);
}
