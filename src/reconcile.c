/*
 * reconcile.c - one reconcile run, and the timer that runs them inside serve.
 *
 * A run is a chain of callbacks on the loop, one phase after the other:
 *   open     its own connection; the sync schema must be there; a real run
 *            takes the lock, skips when another ran moments ago, records itself
 *   rows     live rows in ability_id pages: each synced row's vector is
 *            fetched by id (its attributes), rows without sync state are
 *            checked against the ledger for collisions; --deep also rebuilds
 *            the row (content hash) and self-queries the vector
 *   orphans  ledger entries in (blob, vector_id) pages that no live row claims
 *            where they lie: is the vector still there?
 *   outbox   failed and overdue changes in the sync state
 *   finish   the report; a real run records it; the connection (and with it
 *            the lock) is closed
 * A real run queues each page's repairs before it reads the next page.
 */
#include "reconcile.h"

#include "ability.h"
#include "buf.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "vdbid.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMP "reconcile"
#define SAMPLE_MAX 10
#define READY_TIMEOUT_MS 10000
#define SELF_QUERY_K 3
#define SELF_DISTANCE_MAX 1e-4 /* a vector's cosine distance to itself, float32 rounding included */
#define BLOB_MAX (ABILITY_TEXT_MAX * 2 + 16)

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
			 "a vector still there for a ledger entry or tombstone that no live row claims where it lies "
			 "(a row deleted straight from Postgres, a deleted ability's vector written again)",
			 "deleting it"},
	[CAT_NO_SYNC_STATE] = {"no_sync_state",
			       "a live row without sync state: written by the original application, or restored "
			       "from an older dump",
			       "claiming its vector and pushing it"},
	[CAT_OVERDUE] = {"overdue", "a change pending for longer than `RECONCILE_OVERDUE`", "making it due now"},
	[CAT_FAILED] = {"failed", "a change that gave up after `SYNC_MAX_ATTEMPTS`", "queueing it again"},
	[CAT_COLLISIONS] = {"collisions", "a live row whose `vector_id` another live ability holds in its blob",
			    NULL},
	[CAT_INVALID] = {"invalid_rows", "a row that cannot be pushed (its `vector_id`; `--deep`: its embedding)",
			 NULL},
	[CAT_DIFFERS] = {"vector_differs", "`--deep`: the vector does not find itself (distance ~0) by self-query",
			 "pushing the row again"},
	[CAT_STALE_CONTENT] = {"stale_content",
			       "`--deep`: a row in doubt (its last push was ambiguous: a late write may have landed) "
			       "whose vector is not its content",
			       "its verification, once `VDB_QUARANTINE_MS` is over"},
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
	enum { E_UNKNOWN, E_GONE, E_THERE, E_ERROR } seen;
};

enum phase { PH_OPEN, PH_ROWS, PH_ORPHANS, PH_OUTBOX, PH_FINISH };

struct reconcile {
	struct event_base *base;
	struct vdb *v;
	struct pgpool *pool;
	struct reconcile_opts o;
	char *service, *service_blob, *host;
	reconcile_done_fn done;
	void *arg;

	enum phase phase;
	int64_t run_id;              /* 0: not recorded (dry run, or not yet) */
	int64_t started_ms, last_progress_ms;
	char started_at[LOG_TIMESTAMP_LEN];
	char *pg_start;              /* the run's start on Postgres' clock */
	char overdue[32], page_text[16];

	struct category cats[CAT_N];
	long rows_checked, vectors_checked, entries_checked;
	long queued, deferred;
	char error[600];             /* the first failure */

	/* the page at hand */
	char *cursor, *cursor_vid;   /* keyset position (rows, outbox: ability_id; orphans: blob, vector_id) */
	struct row *rows;
	size_t nrows;
	struct entry *entries;
	size_t nentries;
	size_t waiting;              /* vector DB requests of this page still out */
	bool last_page;

	bool stopping, aborted, over;
	struct event *later;         /* the end, on a loop turn of its own */
	json_t *report;
	enum reconcile_outcome outcome;
	char why[600];
};

static void next_page(struct reconcile *r);
static void finish(struct reconcile *r, enum reconcile_outcome outcome, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* ---- small things ------------------------------------------------------------------ */

static struct pg_param array_param(const struct buf *b)
{
	return (struct pg_param){b->data, b->len, true};
}

static char *copy_value(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? NULL : xstrdup(PQgetvalue(res, row, col));
}

/* Counts one drifted ability; keeps the SAMPLE_MAX smallest ids in order. */
static void note(struct reconcile *r, enum cat c, const char *id)
{
	struct category *k = &r->cats[c];
	int i, at;

	k->count++;
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

/* May one more repair join the batch being built (n so far)? What may not is deferred. */
static bool take_repair(struct reconcile *r, size_t n)
{
	if (r->o.dry_run)
		return false;
	if (r->queued + (long)n < r->o.max_repairs)
		return true;
	r->deferred++;
	return false;
}

static void fail_with(struct reconcile *r, const char *what, const char *error)
{
	if (!r->error[0])
		snprintf(r->error, sizeof(r->error), "%s: %.500s", what, error);
}

static void free_page(struct reconcile *r)
{
	size_t i;

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
	}
	free(r->entries);
	r->entries = NULL;
	r->nentries = 0;
}

static void set_cursor(struct reconcile *r, const char *a, const char *b)
{
	free(r->cursor);
	free(r->cursor_vid);
	r->cursor = a ? xstrdup(a) : NULL;
	r->cursor_vid = b ? xstrdup(b) : NULL;
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

static json_t *build_report(struct reconcile *r, const char *status)
{
	json_t *drift = json_object();
	char finished[LOG_TIMESTAMP_LEN];
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
	log_timestamp(finished);
	return json_pack("{s:o, s:b, s:b, s:s?, s:s, s:s?, s:s, s:s, s:f, s:{s:I, s:I, s:I}, s:o, s:I, s:{s:I, s:I}}",
			 "run_id", r->run_id ? json_integer((json_int_t)r->run_id) : json_null(), "dry_run",
			 r->o.dry_run, "deep", r->o.deep, "service_name", r->service, "status", status, "error",
			 r->error[0] ? r->error : NULL, "started_at", r->started_at, "finished_at", finished, "seconds",
			 (double)(clock_mono_ms() - r->started_ms) / 1000.0, "checked", "rows",
			 (json_int_t)r->rows_checked, "vectors", (json_int_t)r->vectors_checked, "ledger_entries",
			 (json_int_t)r->entries_checked, "drift", drift, "total", (json_int_t)total, "repairs", "queued",
			 (json_int_t)r->queued, "deferred", (json_int_t)r->deferred);
}

static void run_free(struct reconcile *r)
{
	int c, i;

	free_page(r);
	for (c = 0; c < CAT_N; c++)
		for (i = 0; i < r->cats[c].nsample; i++)
			free(r->cats[c].sample[i]);
	if (r->later)
		event_free(r->later);
	json_decref(r->report);
	free(r->cursor);
	free(r->cursor_vid);
	free(r->pg_start);
	free(r->service);
	free(r->service_blob);
	free(r->host);
	free(r);
}

/* On a loop turn of its own: the pool may not be freed inside its own callback. */
static void on_later(evutil_socket_t fd, short what, void *arg)
{
	struct reconcile *r = arg;

	(void)fd, (void)what;
	pgpool_free(r->pool); /* closes the session: the lock goes with it */
	r->pool = NULL;
	if (r->done)
		r->done(r->outcome, r->report, r->why, r->arg);
	run_free(r);
}

static void end_now(struct reconcile *r)
{
	struct timeval now = {0, 0};

	r->over = true;
	r->later = evtimer_new(r->base, on_later, r);
	evtimer_add(r->later, &now);
}

static void on_recorded(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (r->aborted)
		return;
	if (!o->res)
		log_warn(COMP, "run %lld: recording the report failed: %s", (long long)r->run_id, o->error);
	end_now(r);
}

static void finish(struct reconcile *r, enum reconcile_outcome outcome, const char *fmt, ...)
{
	const char *status = outcome == RECONCILE_DONE ? "ok" : "failed";
	char *text, repairs[24], id[24];
	va_list ap;

	if (r->over)
		return;
	r->phase = PH_FINISH;
	r->outcome = outcome;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
	if (outcome == RECONCILE_FAILED && !r->error[0])
		snprintf(r->error, sizeof(r->error), "%s", r->why);
	free_page(r);
	if (outcome == RECONCILE_SKIPPED || !r->run_id || !r->pool || !pgpool_ready(r->pool)) {
		if (outcome != RECONCILE_SKIPPED)
			r->report = build_report(r, status);
		end_now(r);
		return;
	}
	r->report = build_report(r, status);
	text = json_dumps(r->report, JSON_COMPACT | JSON_REAL_PRECISION(10));
	snprintf(repairs, sizeof(repairs), "%ld", r->queued);
	snprintf(id, sizeof(id), "%lld", (long long)r->run_id);
	{
		const char *params[5] = {id, status, text, repairs, r->error[0] ? r->error : NULL};

		pgpool_query(r->pool,
			     "UPDATE abilitysync.reconcile_runs SET finished_at = now(), status = $2, report = $3::jsonb,"
			     " repairs = $4::int, error = $5 WHERE id = $1::bigint",
			     5, params, on_recorded, r);
	}
	free(text);
}

/* A Postgres statement failed: the run ends, saying where. */
static bool pg_failed(struct reconcile *r, const struct pg_outcome *o, const char *what)
{
	if (o->res)
		return false;
	fail_with(r, what, o->error);
	finish(r, RECONCILE_FAILED, "Postgres: %s: %s", what, o->error);
	return true;
}

/* ---- rows: live abilities and their vectors ------------------------------------------- */

static const char rows_sql[] =
	"SELECT a.ability_id, a.service_name, s.state, s.content_hash, %s, coalesce(s.generation, -1),"
	" s.doubt_until IS NOT NULL"
	" FROM public.abilities a LEFT JOIN abilitysync.sync_state s USING (ability_id)"
	" WHERE ($1::text IS NULL OR a.ability_id > $1) AND ($2::text IS NULL OR a.service_name = $2)"
	" ORDER BY a.ability_id LIMIT $3::int";

/* Owners of the ledger entries where rows without sync state belong ($1 blobs, $2 vector ids). */
static const char owners_sql[] =
	"SELECT q.i, l.ability_id FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS q(blob_id, vector_id, i)"
	" JOIN abilitysync.vector_ledger l ON l.blob_id = q.blob_id AND l.vector_id = q.vector_id"
	" WHERE l.deleted_at IS NULL AND EXISTS (SELECT 1 FROM public.abilities a WHERE a.ability_id = l.ability_id)";

/*
 * Repairs of live rows: claim (blob, vector_id) in the ledger unless another
 * live ability holds it, then mark the sync state pending where its vector
 * belongs now, but only if it is still the generation that was judged ($4;
 * -1: none then): a write or a delete since (a fresh tombstone) is never
 * overwritten. The outbox worker then pushes the row as it is in the mirror
 * and deletes the vectors the ledger lists elsewhere.
 */
static const char requeue_rows_sql[] =
	"WITH r AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[])"
	"  AS r(ability_id, blob_id, vector_id, generation)),"
	" claim AS ("
	" INSERT INTO abilitysync.vector_ledger AS l (blob_id, vector_id, ability_id)"
	" SELECT blob_id, vector_id, ability_id FROM r ORDER BY blob_id, vector_id"
	" ON CONFLICT (blob_id, vector_id) DO UPDATE SET ability_id = excluded.ability_id, deleted_at = NULL,"
	"  last_written_at = now()"
	" WHERE l.ability_id = excluded.ability_id OR l.deleted_at IS NOT NULL"
	"  OR NOT EXISTS (SELECT 1 FROM public.abilities a WHERE a.ability_id = l.ability_id)"
	" RETURNING l.ability_id),"
	" ins AS ("
	" INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state, generation,"
	"  attempts, next_attempt_at, updated_at)"
	" SELECT ability_id, blob_id, vector_id, '', 'pending', 1, 0, now(), now() FROM r"
	" WHERE generation = -1 AND ability_id IN (SELECT ability_id FROM claim) ORDER BY ability_id"
	" ON CONFLICT (ability_id) DO NOTHING RETURNING 1),"
	" upd AS ("
	" UPDATE abilitysync.sync_state s SET blob_id = r.blob_id, vector_id = r.vector_id, state = 'pending',"
	"  generation = s.generation + 1, attempts = 0, next_attempt_at = now(), last_error = NULL, updated_at = now()"
	" FROM r WHERE s.ability_id = r.ability_id AND s.generation = r.generation"
	"  AND r.ability_id IN (SELECT ability_id FROM claim) RETURNING 1)"
	" SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM upd)";

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

static void on_requeued(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (r->aborted || pg_failed(r, o, "queueing repairs"))
		return;
	r->queued += atol(PQgetvalue(o->res, 0, 0));
	next_page(r);
}

/* The page is judged: count it, queue what can be repaired, go on. */
static void rows_page_done(struct reconcile *r)
{
	struct buf b[4] = {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT};
	struct pg_array arr[4];
	struct pg_param params[4];
	size_t i, n = 0;
	bool error = false;

	for (i = 0; i < r->nrows; i++) {
		struct row *w = &r->rows[i];
		enum cat c = verdict_cat(w->v);

		error = error || w->v == V_ERROR;
		if (c != CAT_N)
			note(r, c, w->ability_id);
	}
	if (error) {
		finish(r, RECONCILE_FAILED, "%s", r->error);
		return;
	}
	pg_array_begin(&arr[0], &b[0], PG_OID_TEXT);
	pg_array_begin(&arr[1], &b[1], PG_OID_TEXT);
	pg_array_begin(&arr[2], &b[2], PG_OID_INT4);
	pg_array_begin(&arr[3], &b[3], PG_OID_INT8);
	for (i = 0; i < r->nrows; i++) {
		const struct row *w = &r->rows[i];

		if (!needs_repair(w))
			continue;
		if (!take_repair(r, n))
			continue;
		pg_array_text(&arr[0], w->ability_id, strlen(w->ability_id));
		pg_array_text(&arr[1], w->blob, strlen(w->blob));
		pg_array_int4(&arr[2], (int32_t)w->vector_id);
		pg_array_int8(&arr[3], w->generation);
		n++;
	}
	for (i = 0; i < 4; i++) {
		pg_array_end(&arr[i]);
		params[i] = array_param(&b[i]);
	}
	if (n)
		pgpool_query_params(r->pool, requeue_rows_sql, 4, params, on_requeued, r);
	for (i = 0; i < 4; i++)
		buf_free(&b[i]);
	if (!n)
		next_page(r);
}

static const char full_rows_sql[] =
	"SELECT ability_id, ability_name, service_name, description, embedding::text, metadata::text"
	" FROM public.abilities WHERE ability_id = ANY($1::text[])";

/* A row about to be pushed again must be pushable: else it is invalid, and left alone. */
static void on_full_rows(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	int t;
	size_t i;

	if (r->aborted || pg_failed(r, o, "reading abilities"))
		return;
	for (t = 0; t < PQntuples(o->res); t++) {
		const char *id = PQgetvalue(o->res, t, 0);
		struct ability a;
		struct ability_error aerr;

		for (i = 0; i < r->nrows && strcmp(r->rows[i].ability_id, id) != 0; i++)
			;
		if (i == r->nrows)
			continue;
		if (PQgetisnull(o->res, t, 4) ||
		    !ability_from_row(id, PQgetvalue(o->res, t, 1), PQgetvalue(o->res, t, 2), PQgetvalue(o->res, t, 3),
				      PQgetvalue(o->res, t, 4), PQgetisnull(o->res, t, 5) ? NULL : PQgetvalue(o->res, t, 5),
				      r->o.dim, &a, &aerr))
			r->rows[i].v = V_INVALID;
		else
			ability_free(&a);
	}
	rows_page_done(r);
}

static void validate_repairs(struct reconcile *r)
{
	struct buf b = BUF_INIT;
	struct pg_array arr;
	struct pg_param param;
	size_t i, n = 0;

	pg_array_begin(&arr, &b, PG_OID_TEXT);
	for (i = 0; i < r->nrows; i++)
		if (needs_repair(&r->rows[i]) && !r->rows[i].built) {
			pg_array_text(&arr, r->rows[i].ability_id, strlen(r->rows[i].ability_id));
			n++;
		}
	pg_array_end(&arr);
	param = array_param(&b);
	if (n)
		pgpool_query_params(r->pool, full_rows_sql, 1, &param, on_full_rows, r);
	buf_free(&b);
	if (!n)
		rows_page_done(r);
}

static void row_settled(struct reconcile *r)
{
	if (--r->waiting == 0 && !r->aborted)
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

	if (r->aborted) {
		free(c);
		if (--r->waiting == 0)
			run_free(r);
		return;
	}
	if (res->status != VDB_OK) {
		w->v = V_ERROR;
		fail_with(r, "the vector DB", res->error);
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
	free(c);
	row_settled(r);
}

static void on_vector(const struct vdb_result *res, void *arg)
{
	struct row_ctx *c = arg;
	struct reconcile *r = c->r;
	struct row *w = c->w;
	json_t *attrs;
	const char *owner, *hash;

	if (r->aborted) {
		free(c);
		if (--r->waiting == 0)
			run_free(r);
		return;
	}
	r->vectors_checked++;
	if (res->status == VDB_NOT_FOUND) {
		w->v = w->doubt ? V_STALE_CONTENT : V_MISSING;
	} else if (res->status != VDB_OK) {
		w->v = V_ERROR;
		fail_with(r, "the vector DB", res->error);
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
			c->r->waiting++;
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

	r->waiting = 1; /* held while the requests go out */
	for (i = 0; i < r->nrows; i++) {
		struct row *w = &r->rows[i];
		struct row_ctx *c;

		if (w->v != V_CHECK)
			continue;
		c = xcalloc(1, sizeof(*c));
		c->r = r;
		c->w = w;
		r->waiting++;
		vdb_get_attributes(r->v, w->blob, w->vector_id, on_vector, c);
	}
	row_settled(r);
}

static bool same_place(const struct row *a, const struct row *b)
{
	return a->vector_id == b->vector_id && strcmp(a->blob, b->blob) == 0;
}

static void on_owners(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	size_t *index;
	size_t i, j, k = 0;
	int t;

	if (r->aborted || pg_failed(r, o, "reading the ledger"))
		return;
	/* The statement numbers the rows without sync state in page order: map back. */
	index = xcalloc(r->nrows + 1, sizeof(size_t));
	for (i = 0; i < r->nrows; i++)
		if (r->rows[i].v == V_NO_STATE)
			index[++k] = i;
	for (t = 0; t < PQntuples(o->res); t++) {
		size_t q = (size_t)atol(PQgetvalue(o->res, t, 0));
		struct row *w = q >= 1 && q <= k ? &r->rows[index[q]] : NULL;

		if (w && strcmp(PQgetvalue(o->res, t, 1), w->ability_id) != 0)
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
	struct buf b[2] = {BUF_INIT, BUF_INIT};
	struct pg_array arr[2];
	struct pg_param params[2];
	size_t i, n = 0;

	pg_array_begin(&arr[0], &b[0], PG_OID_TEXT);
	pg_array_begin(&arr[1], &b[1], PG_OID_INT4);
	for (i = 0; i < r->nrows; i++) {
		const struct row *w = &r->rows[i];

		if (w->v != V_NO_STATE)
			continue;
		pg_array_text(&arr[0], w->blob, strlen(w->blob));
		pg_array_int4(&arr[1], (int32_t)w->vector_id);
		n++;
	}
	pg_array_end(&arr[0]);
	pg_array_end(&arr[1]);
	params[0] = array_param(&b[0]);
	params[1] = array_param(&b[1]);
	if (n)
		pgpool_query_params(r->pool, owners_sql, 2, params, on_owners, r);
	buf_free(&b[0]);
	buf_free(&b[1]);
	if (!n)
		check_vectors(r);
}

/* Where the row's vector belongs, and what to do with it. */
static void judge_row(struct reconcile *r, PGresult *res, int t, struct row *w)
{
	const char *id = PQgetvalue(res, t, 0), *service = PQgetvalue(res, t, 1);
	struct ability_error aerr;
	struct errbuf err;

	w->ability_id = xstrdup(id);
	w->state = copy_value(res, t, 2);
	w->hash = copy_value(res, t, 3);
	w->generation = atoll(PQgetvalue(res, t, 8));
	vdb_blob_name(service, strlen(service), w->blob, sizeof(w->blob));
	r->rows_checked++;
	if (!vdb_vector_id(id, strlen(id), &w->vector_id, &err)) {
		w->v = V_INVALID;
		return;
	}
	if (!w->state || strcmp(w->state, "deleted") == 0)
		w->v = V_NO_STATE;
	else if (strcmp(w->state, "synced") == 0)
		w->v = V_CHECK;
	else if (r->o.deep && strcmp(w->state, "pending") == 0 && PQgetvalue(res, t, 9)[0] == 't')
		w->v = V_CHECK, w->doubt = true; /* in doubt: its verification is due later; what is there now? */
	else
		w->v = V_SKIP; /* pending, failed: the outbox phase looks at those */
	if (r->o.deep && w->v != V_SKIP) {
		w->built = ability_from_row(id, PQgetvalue(res, t, 4), service, PQgetvalue(res, t, 5),
					    PQgetvalue(res, t, 6), PQgetvalue(res, t, 7), r->o.dim, &w->a, &aerr);
		if (!w->built)
			w->v = V_INVALID;
	}
}

static void on_rows(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	int t, n;

	if (r->aborted || pg_failed(r, o, "reading abilities"))
		return;
	n = PQntuples(o->res);
	r->last_page = n < r->o.page;
	if (n == 0) {
		r->phase = PH_ORPHANS;
		set_cursor(r, NULL, NULL);
		next_page(r);
		return;
	}
	r->rows = xcalloc((size_t)n, sizeof(*r->rows));
	r->nrows = (size_t)n;
	for (t = 0; t < n; t++)
		judge_row(r, o->res, t, &r->rows[t]);
	set_cursor(r, r->rows[n - 1].ability_id, NULL);
	check_owners(r);
}

static void read_rows(struct reconcile *r)
{
	struct buf sql = BUF_INIT;
	const char *params[3] = {r->cursor, r->service, r->page_text};

	buf_printf(&sql, rows_sql,
		   r->o.deep ? "a.ability_name, a.description, a.embedding::text, a.metadata::text"
			     : "NULL, NULL, NULL, NULL");
	pgpool_query(r->pool, sql.data, 3, params, on_rows, r);
	buf_free(&sql);
}

/* ---- orphans: ledger entries without a live row there ------------------------------ */

static const char entries_sql[] =
	"SELECT l.blob_id, l.vector_id, l.ability_id, a.service_name, coalesce(s.generation, -1)"
	" FROM abilitysync.vector_ledger l"
	" LEFT JOIN abilitysync.sync_state s ON s.ability_id = l.ability_id"
	" LEFT JOIN public.abilities a ON a.ability_id = l.ability_id"
	" WHERE ($1::text IS NULL OR (l.blob_id, l.vector_id) > ($1, $2::int))"
	"  AND ($3::text IS NULL OR l.blob_id = $3)"
	"  AND NOT (a.ability_id IS NOT NULL AND s.state IN ('synced', 'pending', 'failed')"
	"   AND s.blob_id = l.blob_id AND s.vector_id = l.vector_id)"
	"  AND NOT (s.state IN ('pending', 'pending_delete') AND s.updated_at > now() - $4::interval"
	"   AND s.updated_at < $5::timestamptz)"
	" ORDER BY l.blob_id, l.vector_id LIMIT $6::int";

/*
 * Repairs of orphans, through the outbox: the ledger entry is live again (the
 * worker deletes what the ledger lists), and its ability's sync state becomes
 * pending_delete (no live row: the vector goes) or pending (a live row
 * elsewhere: its vector is pushed again and the old one deleted).
 */
static const char requeue_orphans_sql[] =
	"WITH o AS (SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[])"
	"  AS o(blob_id, vector_id, ability_id, generation)),"
	" led AS ("
	" UPDATE abilitysync.vector_ledger l SET deleted_at = NULL FROM o"
	" WHERE l.blob_id = o.blob_id AND l.vector_id = o.vector_id AND l.ability_id = o.ability_id"
	" RETURNING l.blob_id, l.vector_id, l.ability_id, o.generation),"
	" owners AS ("
	" SELECT DISTINCT ON (ability_id) blob_id, vector_id, ability_id, generation,"
	"  EXISTS (SELECT 1 FROM public.abilities a WHERE a.ability_id = led.ability_id) AS live"
	" FROM led ORDER BY ability_id, blob_id, vector_id),"
	" ins AS ("
	" INSERT INTO abilitysync.sync_state (ability_id, blob_id, vector_id, content_hash, state, generation,"
	"  attempts, next_attempt_at, updated_at)"
	" SELECT ability_id, blob_id, vector_id, '', CASE WHEN live THEN 'pending' ELSE 'pending_delete' END, 1, 0,"
	"  now(), now() FROM owners WHERE generation = -1 ORDER BY ability_id"
	" ON CONFLICT (ability_id) DO NOTHING RETURNING 1),"
	" upd AS ("
	" UPDATE abilitysync.sync_state s SET state = CASE WHEN w.live THEN 'pending' ELSE 'pending_delete' END,"
	"  generation = s.generation + 1, attempts = 0, next_attempt_at = now(), last_error = NULL, updated_at = now(),"
	"  blob_id = CASE WHEN w.live THEN s.blob_id ELSE w.blob_id END,"
	"  vector_id = CASE WHEN w.live THEN s.vector_id ELSE w.vector_id END"
	" FROM owners w WHERE s.ability_id = w.ability_id AND s.generation = w.generation RETURNING 1)"
	" SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM upd)";

static void entries_page_done(struct reconcile *r)
{
	struct buf b[4] = {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT};
	struct pg_array arr[4];
	struct pg_param params[4];
	size_t i, n = 0;

	for (i = 0; i < r->nentries; i++)
		if (r->entries[i].seen == E_ERROR) {
			finish(r, RECONCILE_FAILED, "%s", r->error);
			return;
		}
	pg_array_begin(&arr[0], &b[0], PG_OID_TEXT);
	pg_array_begin(&arr[1], &b[1], PG_OID_INT4);
	pg_array_begin(&arr[2], &b[2], PG_OID_TEXT);
	pg_array_begin(&arr[3], &b[3], PG_OID_INT8);
	for (i = 0; i < r->nentries; i++) {
		const struct entry *e = &r->entries[i];

		if (e->seen != E_THERE)
			continue;
		note(r, CAT_ORPHANS, e->ability_id);
		if (!take_repair(r, n))
			continue;
		pg_array_text(&arr[0], e->blob, strlen(e->blob));
		pg_array_int4(&arr[1], (int32_t)e->vector_id);
		pg_array_text(&arr[2], e->ability_id, strlen(e->ability_id));
		pg_array_int8(&arr[3], e->generation);
		n++;
	}
	for (i = 0; i < 4; i++) {
		pg_array_end(&arr[i]);
		params[i] = array_param(&b[i]);
	}
	if (n)
		pgpool_query_params(r->pool, requeue_orphans_sql, 4, params, on_requeued, r);
	for (i = 0; i < 4; i++)
		buf_free(&b[i]);
	if (!n)
		next_page(r);
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
	if (r->aborted) {
		if (--r->waiting == 0)
			run_free(r);
		return;
	}
	if (res->status == VDB_NOT_FOUND) {
		e->seen = E_GONE;
	} else if (res->status == VDB_OK) {
		e->seen = E_THERE;
	} else {
		e->seen = E_ERROR;
		fail_with(r, "the vector DB", res->error);
	}
	if (--r->waiting == 0)
		entries_page_done(r);
}

static void on_entries(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	int t, n;
	size_t i;

	if (r->aborted || pg_failed(r, o, "reading the ledger"))
		return;
	n = PQntuples(o->res);
	r->last_page = n < r->o.page;
	if (n == 0) {
		r->phase = PH_OUTBOX;
		set_cursor(r, NULL, NULL);
		next_page(r);
		return;
	}
	r->entries = xcalloc((size_t)n, sizeof(*r->entries));
	for (t = 0; t < n; t++) {
		const char *service = PQgetisnull(o->res, t, 3) ? NULL : PQgetvalue(o->res, t, 3);
		struct entry *e = &r->entries[r->nentries];
		char blob[BLOB_MAX];
		int64_t vid;
		struct errbuf err;

		if (t == n - 1)
			set_cursor(r, PQgetvalue(o->res, t, 0), PQgetvalue(o->res, t, 1));
		if (service) {
			/* A live row whose vector belongs right here is the rows phase's business. */
			const char *id = PQgetvalue(o->res, t, 2);

			vdb_blob_name(service, strlen(service), blob, sizeof(blob));
			if (vdb_vector_id(id, strlen(id), &vid, &err) && strcmp(blob, PQgetvalue(o->res, t, 0)) == 0 &&
			    vid == atoll(PQgetvalue(o->res, t, 1)))
				continue;
		}
		e->blob = xstrdup(PQgetvalue(o->res, t, 0));
		e->vector_id = atoll(PQgetvalue(o->res, t, 1));
		e->ability_id = xstrdup(PQgetvalue(o->res, t, 2));
		e->generation = atoll(PQgetvalue(o->res, t, 4));
		r->nentries++;
	}
	r->waiting = 1;
	for (i = 0; i < r->nentries; i++) {
		struct entry_ctx *c = xcalloc(1, sizeof(*c));

		c->r = r;
		c->e = &r->entries[i];
		r->waiting++;
		r->entries_checked++;
		vdb_get_attributes(r->v, c->e->blob, c->e->vector_id, on_entry, c);
	}
	if (--r->waiting == 0)
		entries_page_done(r);
}

static void read_entries(struct reconcile *r)
{
	const char *params[6] = {r->cursor, r->cursor_vid, r->service_blob, r->overdue, r->pg_start, r->page_text};

	pgpool_query(r->pool, entries_sql, 6, params, on_entries, r);
}

/* ---- outbox: failed and overdue changes ----------------------------------------------- */

static const char outbox_sql[] =
	"SELECT s.ability_id, s.state = 'failed' FROM abilitysync.sync_state s"
	" WHERE ($1::text IS NULL OR s.ability_id > $1) AND ($2::text IS NULL OR s.blob_id = $2)"
	"  AND (s.state = 'failed' OR (s.state IN ('pending', 'pending_delete')"
	"   AND s.updated_at < now() - $3::interval AND s.updated_at < $4::timestamptz))"
	" ORDER BY s.ability_id LIMIT $5::int";

/* A failed change goes back to what it was for; an overdue one is made due now. */
static const char requeue_outbox_sql[] =
	"WITH r AS ("
	" UPDATE abilitysync.sync_state s SET state = CASE WHEN s.state <> 'failed' THEN s.state"
	"  WHEN EXISTS (SELECT 1 FROM public.abilities a WHERE a.ability_id = s.ability_id) THEN 'pending'"
	"  ELSE 'pending_delete' END,"
	"  attempts = 0, next_attempt_at = now(), last_error = NULL, updated_at = now()"
	" WHERE s.ability_id = ANY($1::text[]) AND s.state IN ('failed', 'pending', 'pending_delete') RETURNING 1)"
	" SELECT count(*) FROM r";

static void on_outbox(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	struct buf b = BUF_INIT;
	struct pg_array arr;
	struct pg_param param;
	size_t n = 0;
	int t, rows;

	if (r->aborted || pg_failed(r, o, "reading the outbox"))
		return;
	rows = PQntuples(o->res);
	r->last_page = rows < r->o.page;
	if (rows == 0) {
		finish(r, RECONCILE_DONE, "done");
		return;
	}
	set_cursor(r, PQgetvalue(o->res, rows - 1, 0), NULL);
	pg_array_begin(&arr, &b, PG_OID_TEXT);
	for (t = 0; t < rows; t++) {
		const char *id = PQgetvalue(o->res, t, 0);

		note(r, PQgetvalue(o->res, t, 1)[0] == 't' ? CAT_FAILED : CAT_OVERDUE, id);
		if (take_repair(r, n)) {
			pg_array_text(&arr, id, strlen(id));
			n++;
		}
	}
	pg_array_end(&arr);
	param = array_param(&b);
	if (n)
		pgpool_query_params(r->pool, requeue_outbox_sql, 1, &param, on_requeued, r);
	buf_free(&b);
	if (!n)
		next_page(r);
}

static void read_outbox(struct reconcile *r)
{
	const char *params[5] = {r->cursor, r->service_blob, r->overdue, r->pg_start, r->page_text};

	pgpool_query(r->pool, outbox_sql, 5, params, on_outbox, r);
}

/* ---- the chain ---------------------------------------------------------------------------- */

static void next_page(struct reconcile *r)
{
	bool was_last = r->last_page;

	free_page(r);
	progress(r);
	if (r->stopping) {
		finish(r, RECONCILE_FAILED, "stopped before the end");
		return;
	}
	r->last_page = false;
	switch (r->phase) {
	case PH_ROWS:
		if (was_last && r->cursor) {
			r->phase = PH_ORPHANS;
			set_cursor(r, NULL, NULL);
			read_entries(r);
		} else {
			read_rows(r);
		}
		break;
	case PH_ORPHANS:
		if (was_last && r->cursor) {
			r->phase = PH_OUTBOX;
			set_cursor(r, NULL, NULL);
			read_outbox(r);
		} else {
			read_entries(r);
		}
		break;
	case PH_OUTBOX:
		if (was_last && r->cursor)
			finish(r, RECONCILE_DONE, "done");
		else
			read_outbox(r);
		break;
	default:
		break;
	}
}

static void begin_rows(struct reconcile *r);

/* A vector DB that is down would fail every check only after each one's retries: ask once first. */
static void on_health(const struct vdb_result *res, void *arg)
{
	struct reconcile *r = arg;

	r->waiting--;
	if (r->aborted) {
		if (r->waiting == 0)
			run_free(r);
		return;
	}
	if (res->status != VDB_OK) {
		fail_with(r, "the vector DB", res->error);
		finish(r, RECONCILE_FAILED, "the vector DB is unavailable: %s", res->error);
		return;
	}
	begin_rows(r);
}

static void check_vector_db(struct reconcile *r)
{
	r->waiting++;
	vdb_health(r->v, on_health, r);
}

static void begin_rows(struct reconcile *r)
{
	char name[48];

	if (r->run_id)
		snprintf(name, sizeof(name), "run %lld", (long long)r->run_id);
	else
		snprintf(name, sizeof(name), "dry run");
	log_info(COMP, "%s%s: checking %s against the vector DB", name, r->o.deep ? " (deep)" : "",
		 r->service ? r->service : "every service");
	r->phase = PH_ROWS;
	set_cursor(r, NULL, NULL);
	read_rows(r);
}

static void on_run_recorded(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (r->aborted || pg_failed(r, o, "recording the run"))
		return;
	r->run_id = atoll(PQgetvalue(o->res, 0, 0));
	check_vector_db(r);
}

static void record_run(struct reconcile *r)
{
	const char *params[3] = {r->o.deep ? "true" : "false", r->service, r->host};

	pgpool_query(r->pool,
		     "INSERT INTO abilitysync.reconcile_runs (dry_run, deep, service_name, host)"
		     " VALUES (false, $1::bool, $2, $3) RETURNING id",
		     3, params, on_run_recorded, r);
}

static void on_last_run(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	double ago;

	if (r->aborted || pg_failed(r, o, "reading the last run"))
		return;
	if (!PQgetisnull(o->res, 0, 0) && (ago = atof(PQgetvalue(o->res, 0, 0))) < r->o.min_gap_s) {
		finish(r, RECONCILE_SKIPPED, "another run started %.1f s ago", ago);
		return;
	}
	record_run(r);
}

static void on_locked(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;

	if (r->aborted || pg_failed(r, o, "taking the reconcile lock"))
		return;
	if (PQgetvalue(o->res, 0, 0)[0] != 't') {
		finish(r, RECONCILE_SKIPPED, "another replica is reconciling");
		return;
	}
	if (r->o.min_gap_s > 0)
		pgpool_query(r->pool,
			     "SELECT extract(epoch FROM now() - max(started_at)) FROM abilitysync.reconcile_runs"
			     " WHERE NOT dry_run",
			     0, NULL, on_last_run, r);
	else
		record_run(r);
}

static void on_schema(const struct pg_outcome *o, void *arg)
{
	struct reconcile *r = arg;
	if (r->aborted || pg_failed(r, o, "reading the sync schema"))
		return;
	if (PQgetvalue(o->res, 0, 0)[0] != 't') {
		finish(r, RECONCILE_FAILED, "the sync schema (abilitysync.*) is missing: run `abilitysync migrate up` first");
		return;
	}
	r->pg_start = xstrdup(PQgetvalue(o->res, 0, 1));
	if (r->o.dry_run) {
		check_vector_db(r);
		return;
	}
	pgpool_query(r->pool, "SELECT pg_try_advisory_lock(" ABILITYSYNC_LOCK_CLASS_TEXT ", 1)", 0, NULL, on_locked, r);
}

static void on_ready(bool ready, const char *why, void *arg)
{
	struct reconcile *r = arg;

	if (r->aborted)
		return;
	if (!ready) {
		fail_with(r, "Postgres", why);
		finish(r, RECONCILE_FAILED, "Postgres is unavailable: %s", why);
		return;
	}
	pgpool_query(r->pool,
		     "SELECT to_regclass('abilitysync.reconcile_runs') IS NOT NULL"
		     " AND to_regclass('abilitysync.vector_ledger') IS NOT NULL, now()::text",
		     0, NULL, on_schema, r);
}

struct reconcile *reconcile_start(struct event_base *base, struct vdb *v, const struct reconcile_opts *o,
				  reconcile_done_fn done, void *arg)
{
	struct reconcile *r = xcalloc(1, sizeof(*r));
	struct pgpool_opts po = o->pg;
	struct errbuf err;

	r->base = base;
	r->v = v;
	r->o = *o;
	r->o.service = NULL;
	r->o.host = NULL;
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
	snprintf(r->page_text, sizeof(r->page_text), "%d", o->page);
	r->started_ms = r->last_progress_ms = clock_mono_ms();
	log_timestamp(r->started_at);
	po.size = 1;
	po.queue_max = 4;
	if (!(r->pool = pgpool_new(base, &po, &err))) {
		fail_with(r, "Postgres", err.msg);
		finish(r, RECONCILE_FAILED, "%s", err.msg);
		return r;
	}
	pgpool_wait_ready(r->pool, READY_TIMEOUT_MS, on_ready, r);
	return r;
}

void reconcile_stop(struct reconcile *r)
{
	r->stopping = true;
}

void reconcile_abort(struct reconcile *r)
{
	r->aborted = true;
	r->done = NULL;
	pgpool_free(r->pool); /* its callbacks see `aborted` and do nothing */
	r->pool = NULL;
	/* Requests to the vector DB come back (at the latest cancelled when it is freed); the last frees us. */
	if (r->waiting == 0)
		run_free(r);
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
