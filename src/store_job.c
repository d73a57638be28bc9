/*
 * store_job.c - the long jobs' statements and row shapes (store_job.h).
 */
#include "store_job.h"
#include "store_locks.h"

#include "buf.h"
#include "mem.h"
#include "text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every call: its typed callback and argument, and what the trampoline needs to build rows. */
struct call {
	union {
		store_flag_fn flag;
		store_count_fn count;
		store_recon_rows_fn recon_rows;
		store_owners_fn owners;
		store_rows_fn rows;
		store_entries_fn entries;
		store_changes_fn changes;
		store_restore_job_fn job;
		store_part_fn part;
		store_recon_run_fn run;
		store_recon_part_fn recon_part;
		store_texts_fn texts;
		store_collisions_fn collisions;
		store_services_fn services;
		pg_done_fn plain;
	} fn;
	void *arg;
};

static struct call *call_new(void *arg)
{
	struct call *c = xcalloc(1, sizeof(*c));

	c->arg = arg;
	return c;
}

/* ---- common ------------------------------------------------------------------------ */

static void on_flag(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;

	if (pg_rows(o) == 1)
		c->fn.flag(pg_bool(o, 0, 0), pg_text(o, 0, 1), o, c->arg);
	else
		c->fn.flag(false, NULL, o, c->arg);
	free(c);
}

static void flag_query(struct pgpool *p, const char *sql, int nparams, const char *const *params, store_flag_fn done,
		       void *arg)
{
	struct call *c = call_new(arg);

	c->fn.flag = done;
	pgpool_query(p, sql, nparams, params, on_flag, c);
}

void store_job_schema(struct pgpool *p, store_flag_fn done, void *arg)
{
	flag_query(p,
		   "SELECT to_regclass('abilitysync.reconcile_runs') IS NOT NULL"
		   " AND to_regclass('abilitysync.restore_jobs') IS NOT NULL"
		   " AND to_regclass('abilitysync.restore_parts') IS NOT NULL"
		   " AND to_regclass('abilitysync.reconcile_parts') IS NOT NULL"
		   " AND to_regclass('abilitysync.vector_ledger') IS NOT NULL, now()::text",
		   0, NULL, done, arg);
}

static void on_count(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;

	c->fn.count(pg_rows(o) == 1 ? (long)pg_int8(o, 0, 0) : 0, o, c->arg);
	free(c);
}

static void count_query(struct pgpool *p, const char *sql, int nparams, const struct pg_param *params,
			store_count_fn done, void *arg)
{
	struct call *c = call_new(arg);

	c->fn.count = done;
	pgpool_query_params(p, sql, nparams, params, on_count, c);
}

/*
 * A part's lock: (its kind's part class, job or run and part in 31 bits);
 * parts of one job never share one. pg_try_advisory_lock takes a lock this
 * session holds again, hence NOT_HELD_HERE.
 */
#define PART_KEY(job, part) "((" job ") % 2047 * 1048576 + (" part "))"
#define NOT_HELD_HERE(cls, key)                                                                              \
	" NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid()"   \
	" AND l.objsubid = 2 AND l.classid = " cls "::oid AND l.objid = " key "::oid)"

/* ---- reconcile --------------------------------------------------------------------- */

/*
 * (class, 1): exclusive while a real run is started (and its parts cut),
 * shared by every process working on it; so a new run starts only when no
 * process reconciles, and any number may join a running one.
 */
void store_reconcile_try_lock(struct pgpool *p, bool exclusive, store_flag_fn done, void *arg)
{
	flag_query(p,
		   exclusive ? "SELECT pg_try_advisory_lock(" ABILITYSYNC_LOCK_CLASS_TEXT ", 1), NULL"
			     : "SELECT pg_try_advisory_lock_shared(" ABILITYSYNC_LOCK_CLASS_TEXT ", 1), NULL",
		   0, NULL, done, arg);
}

void store_reconcile_share_lock(struct pgpool *p, pg_done_fn done, void *arg)
{
	pgpool_query(p,
		     "SELECT pg_advisory_lock_shared(" ABILITYSYNC_LOCK_CLASS_TEXT ", 1),"
		     " pg_advisory_unlock(" ABILITYSYNC_LOCK_CLASS_TEXT ", 1)",
		     0, NULL, done, arg);
}

void store_reconcile_last_run(struct pgpool *p, store_flag_fn done, void *arg)
{
	flag_query(p,
		   "SELECT max(started_at) IS NOT NULL, extract(epoch FROM now() - max(started_at))::text"
		   " FROM abilitysync.reconcile_runs WHERE NOT dry_run",
		   0, NULL, done, arg);
}

#define RUN_COLUMNS                                                                                    \
	" id, to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"              \
	" extract(epoch FROM clock_timestamp() - started_at), started_at::text"

static void on_run(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct recon_run r;
	bool one = pg_rows(o) == 1;

	if (one)
		r = (struct recon_run){pg_int8(o, 0, 0), pg_text(o, 0, 1), atof(pg_text(o, 0, 2)), pg_text(o, 0, 3)};
	c->fn.run(one ? &r : NULL, o, c->arg);
	free(c);
}

/*
 * A real run (the lock held exclusive) fails the runs still marked running
 * (no process is left on them) and is cut into parts: part 0 the ledger and
 * the outbox, then the live rows (of its service) in key order every
 * `part_rows`, the last open-ended.
 */
static const char recon_record_sql[] =
	"WITH stale AS (UPDATE abilitysync.reconcile_runs SET status = 'failed', finished_at = now(),"
	"  error = 'interrupted: no process was left working on it'"
	"  WHERE NOT $4::bool AND NOT dry_run AND status = 'running'),"
	" r AS (INSERT INTO abilitysync.reconcile_runs (dry_run, deep, service_name, host, embedding_model)"
	"  VALUES ($4::bool, $1::bool, $2, $3, $5) RETURNING *),"
	" b AS (SELECT ability_id FROM (SELECT ability_id, row_number() OVER (ORDER BY ability_id) AS rn"
	"  FROM public.abilities WHERE NOT $4::bool AND ($2::text IS NULL OR service_name = $2)) q"
	"  WHERE rn % $6::bigint = 0),"
	" bounds AS (SELECT ability_id AS upto FROM b UNION ALL SELECT NULL),"
	" cut AS (SELECT row_number() OVER w AS part, lag(upto) OVER w AS after, upto FROM bounds"
	"  WINDOW w AS (ORDER BY upto NULLS LAST)),"
	" parts AS (INSERT INTO abilitysync.reconcile_parts (run_id, part, after_id, upto_id)"
	"  SELECT r.id, 0, NULL, NULL FROM r WHERE NOT $4::bool"
	"  UNION ALL SELECT r.id, cut.part, cut.after, cut.upto FROM r, cut WHERE NOT $4::bool)"
	" SELECT" RUN_COLUMNS " FROM r";

void store_reconcile_record_run(struct pgpool *p, bool dry_run, bool deep, const char *service, const char *model,
				const char *host, int part_rows, store_recon_run_fn done, void *arg)
{
	struct call *c = call_new(arg);
	struct num rows = num(part_rows > 0 ? part_rows : 1);
	const char *params[6] = {deep ? "true" : "false", service, host, dry_run ? "true" : "false", model, rows.s};

	c->fn.run = done;
	pgpool_query(p, recon_record_sql, 6, params, on_run, c);
}

void store_reconcile_join(struct pgpool *p, bool deep, const char *service, const char *model,
			  store_recon_run_fn done, void *arg)
{
	struct call *c = call_new(arg);
	const char *params[3] = {deep ? "true" : "false", service, model};

	c->fn.run = done;
	pgpool_query(p,
		     "SELECT" RUN_COLUMNS " FROM abilitysync.reconcile_runs r WHERE status = 'running' AND NOT dry_run"
		     " AND deep = $1::bool AND service_name IS NOT DISTINCT FROM $2"
		     " AND embedding_model IS NOT DISTINCT FROM $3"
		     " AND EXISTS (SELECT 1 FROM abilitysync.reconcile_parts p WHERE p.run_id = r.id)"
		     " ORDER BY id DESC LIMIT 1",
		     3, params, on_run, c);
}

static void on_recon_part(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct recon_part r = {-1, NULL, NULL, NULL, NULL, 0};

	if (pg_rows(o) == 1)
		r = (struct recon_part){pg_text(o, 0, 0) ? (int)pg_int8(o, 0, 0) : -1, pg_text(o, 0, 1),
					pg_text(o, 0, 2), pg_text(o, 0, 3), pg_text(o, 0, 4), (long)pg_int8(o, 0, 5)};
	c->fn.recon_part(&r, o, c->arg);
	free(c);
}

void store_reconcile_claim_part(struct pgpool *p, int64_t run_id, store_recon_part_fn done, void *arg)
{
	struct call *c = call_new(arg);
	struct num id = num(run_id);
	const char *params[1] = {id.s};

	c->fn.recon_part = done;
	/* In part order, locks tried one row at a time (the fence keeps the volatile call out of the sort). */
	pgpool_query(p,
		     "WITH run AS (SELECT status, report FROM abilitysync.reconcile_runs WHERE id = $1::bigint),"
		     " c AS (SELECT q.part, q.after_id, q.upto_id FROM"
		     "  (SELECT part, after_id, upto_id FROM abilitysync.reconcile_parts"
		     "   WHERE run_id = $1::bigint AND finished_at IS NULL AND (SELECT status FROM run) = 'running'"
		     "   AND" NOT_HELD_HERE(ABILITYSYNC_RECONCILE_PART_LOCK_CLASS_TEXT, PART_KEY("$1::bigint", "part"))
		     "   ORDER BY part OFFSET 0) q"
		     "  WHERE pg_try_advisory_lock(" ABILITYSYNC_RECONCILE_PART_LOCK_CLASS_TEXT ","
		     " " PART_KEY("$1::bigint", "q.part") "::int) LIMIT 1)"
		     " SELECT c.part, c.after_id, c.upto_id, (SELECT status FROM run), (SELECT report::text FROM run),"
		     " (SELECT count(*) FROM abilitysync.reconcile_parts WHERE run_id = $1::bigint AND finished_at IS NULL)"
		     " FROM (SELECT 1) one LEFT JOIN c ON true",
		     1, params, on_recon_part, c);
}

void store_reconcile_part_done(struct pgpool *p, int64_t run_id, int part, const char *report, pg_done_fn done,
			       void *arg)
{
	struct num id = num(run_id), pt = num(part);
	const char *params[3] = {id.s, pt.s, report};

	pgpool_query(p,
		     "UPDATE abilitysync.reconcile_parts SET finished_at = now(), report = $3::jsonb"
		     " WHERE run_id = $1::bigint AND part = $2::int AND finished_at IS NULL",
		     3, params, done, arg);
}

/*
 * Its own statement, so that it sees what committed before the lock was
 * taken: a claim's snapshot is older than its lock, and the part may have
 * been finished (and let go) in between.
 */
void store_reconcile_part_check(struct pgpool *p, int64_t run_id, int part, store_flag_fn done, void *arg)
{
	struct num id = num(run_id), pt = num(part);
	const char *params[2] = {id.s, pt.s};

	flag_query(p,
		   "SELECT coalesce(f.open, false), CASE WHEN coalesce(f.open, false) THEN NULL"
		   " ELSE pg_advisory_unlock(" ABILITYSYNC_RECONCILE_PART_LOCK_CLASS_TEXT ", "
		   PART_KEY("$1::bigint", "$2::int") "::int)::text END"
		   " FROM (SELECT 1) one LEFT JOIN (SELECT finished_at IS NULL AS open FROM abilitysync.reconcile_parts"
		   "  WHERE run_id = $1::bigint AND part = $2::int) f ON true",
		   2, params, done, arg);
}

static void on_texts(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	int n = pg_rows(o), t;
	const char **texts = xcalloc((size_t)n + 1, sizeof(*texts));

	for (t = 0; t < n; t++)
		texts[t] = pg_text(o, t, 0);
	c->fn.texts(texts, (size_t)n, o, c->arg);
	free(texts);
	free(c);
}

void store_reconcile_part_reports(struct pgpool *p, int64_t run_id, store_texts_fn done, void *arg)
{
	struct call *c = call_new(arg);
	struct num id = num(run_id);
	const char *params[1] = {id.s};

	c->fn.texts = done;
	pgpool_query(p,
		     "SELECT report::text FROM abilitysync.reconcile_parts"
		     " WHERE run_id = $1::bigint AND report IS NOT NULL ORDER BY part",
		     1, params, on_texts, c);
}

void store_reconcile_reserve(struct pgpool *p, int64_t run_id, long n, long max, store_count_fn done, void *arg)
{
	struct call *c = call_new(arg);
	struct num id = num(run_id), want = num(n), most = num(max);
	const char *params[3] = {id.s, want.s, most.s};

	c->fn.count = done;
	pgpool_query(p,
		     "WITH o AS (SELECT id, repairs FROM abilitysync.reconcile_runs WHERE id = $1::bigint FOR UPDATE),"
		     " g AS (SELECT id, least($2::int, greatest($3::int - repairs, 0)) AS n FROM o)"
		     " UPDATE abilitysync.reconcile_runs r SET repairs = r.repairs + g.n FROM g WHERE r.id = g.id"
		     " RETURNING g.n",
		     3, params, on_count, c);
}

/*
 * `alone`: only when no other session shares the reconcile lock (a process
 * failing leaves the run to the others still on it).
 */
void store_reconcile_record_end(struct pgpool *p, int64_t run_id, const char *status, const char *report,
				long repairs, const char *error, bool alone, pg_done_fn done, void *arg)
{
	struct num id = num(run_id), n = num(repairs);
	const char *params[6] = {id.s, status, report, n.s, error, alone ? "true" : "false"};

	/* A run another process ended (ok, or failed) stays as it ended. */
	pgpool_query(p,
		     "UPDATE abilitysync.reconcile_runs SET finished_at = coalesce(finished_at, now()),"
		     " status = CASE status WHEN 'cancelled' THEN status ELSE $2 END, report = $3::jsonb,"
		     " repairs = $4::int, error = coalesce(error, $5) WHERE id = $1::bigint"
		     " AND status IN ('running', 'cancelled')"
		     " AND (NOT $6::bool OR pg_try_advisory_lock(" ABILITYSYNC_LOCK_CLASS_TEXT ", 1))",
		     6, params, done, arg);
}

/*
 * The page's bounds are given to sync_state too: a merge join would otherwise
 * read sync_state from its first key to the page for every page (measured at
 * 1,000,000 rows: 460 ms a page at 70 % of the way, against 2 ms bounded).
 */
static const char recon_rows_sql[] =
	"SELECT a.ability_id, a.service_name, s.state, s.content_hash, coalesce(s.generation, -1),"
	" s.doubt_until IS NOT NULL, %s, a.metadata->>'embedding_model'"
	" FROM public.abilities a LEFT JOIN abilitysync.sync_state s ON s.ability_id = a.ability_id"
	"  AND ($1::text IS NULL OR s.ability_id > $1) AND ($4::text IS NULL OR s.ability_id <= $4)"
	" WHERE ($1::text IS NULL OR a.ability_id > $1) AND ($4::text IS NULL OR a.ability_id <= $4)"
	"  AND ($2::text IS NULL OR a.service_name = $2)"
	" ORDER BY a.ability_id LIMIT $3::int";

static void on_recon_rows(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	int n = pg_rows(o), t;
	struct recon_row *rows = xcalloc((size_t)n + 1, sizeof(*rows));

	for (t = 0; t < n; t++)
		rows[t] = (struct recon_row){pg_text(o, t, 0), pg_text(o, t, 1), pg_text(o, t, 2), pg_text(o, t, 3),
					     pg_int8(o, t, 4), pg_bool(o, t, 5), pg_text(o, t, 6), pg_text(o, t, 7),
					     pg_text(o, t, 8), pg_text(o, t, 9), pg_text(o, t, 10)};
	c->fn.recon_rows(rows, (size_t)n, o, c->arg);
	free(rows);
	free(c);
}

void store_reconcile_rows(struct pgpool *p, const char *after, const char *upto, const char *service, int limit,
			  bool deep, store_recon_rows_fn done, void *arg)
{
	struct call *c = call_new(arg);
	struct buf sql = BUF_INIT;
	struct num lim = num(limit);
	const char *params[4] = {after, service, lim.s, upto};

	c->fn.recon_rows = done;
	buf_printf(&sql, recon_rows_sql,
		   deep ? "a.ability_name, a.description, a.embedding::text, a.metadata::text"
			: "NULL, NULL, NULL, NULL");
	pgpool_query(p, sql.data, 4, params, on_recon_rows, c);
	buf_free(&sql);
}

/* Parameters of a set of places: one binary array per column, in the order the statement unnests them. */
struct place_arrays {
	struct buf b[4];
	struct pg_param params[4];
};

enum place_col { P_ABILITY, P_BLOB, P_VECTOR, P_GENERATION };

static void place_arrays_build(struct place_arrays *pa, const struct recon_place *pl, size_t n,
			       const enum place_col *cols, int ncols)
{
	static const uint32_t oids[] = {PG_OID_TEXT, PG_OID_TEXT, PG_OID_INT4, PG_OID_INT8};
	struct pg_array arr;
	size_t i;
	int k;

	for (k = 0; k < ncols; k++) {
		pa->b[k] = (struct buf)BUF_INIT;
		pg_array_begin(&arr, &pa->b[k], oids[cols[k]]);
		for (i = 0; i < n; i++) {
			switch (cols[k]) {
			case P_ABILITY:
				pg_array_text(&arr, pl[i].ability_id, strlen(pl[i].ability_id));
				break;
			case P_BLOB:
				pg_array_text(&arr, pl[i].blob_id, strlen(pl[i].blob_id));
				break;
			case P_VECTOR:
				pg_array_int4(&arr, (int32_t)pl[i].vector_id);
				break;
			case P_GENERATION:
				pg_array_int8(&arr, pl[i].generation);
				break;
			}
		}
		pg_array_end(&arr);
		pa->params[k] = pg_array_param(&pa->b[k]);
	}
}

static void place_arrays_free(struct place_arrays *pa, int ncols)
{
	int k;

	for (k = 0; k < ncols; k++)
		buf_free(&pa->b[k]);
}

/* Owners of the ledger entries at the places ($1 blobs, $2 vector ids), numbered from 1 in order. */
static const char owners_sql[] =
	"SELECT q.i, l.ability_id FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS q(blob_id, vector_id, i)"
	" JOIN abilitysync.vector_ledger l ON l.blob_id = q.blob_id AND l.vector_id = q.vector_id"
	" WHERE l.deleted_at IS NULL AND EXISTS (SELECT 1 FROM public.abilities a WHERE a.ability_id = l.ability_id)";

static void on_owners(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	int n = pg_rows(o), t;
	struct recon_owner *w = xcalloc((size_t)n + 1, sizeof(*w));

	for (t = 0; t < n; t++)
		w[t] = (struct recon_owner){(size_t)pg_int8(o, t, 0) - 1, pg_text(o, t, 1)};
	c->fn.owners(w, (size_t)n, o, c->arg);
	free(w);
	free(c);
}

void store_reconcile_owners(struct pgpool *p, const struct recon_place *places, size_t n, store_owners_fn done,
			    void *arg)
{
	static const enum place_col cols[] = {P_BLOB, P_VECTOR};
	struct call *c = call_new(arg);
	struct place_arrays pa;

	c->fn.owners = done;
	place_arrays_build(&pa, places, n, cols, 2);
	pgpool_query_params(p, owners_sql, 2, pa.params, on_owners, c);
	place_arrays_free(&pa, 2);
}

static void on_full_rows(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	int n = pg_rows(o), t;
	struct ability_row *rows = xcalloc((size_t)n + 1, sizeof(*rows));

	for (t = 0; t < n; t++)
		rows[t] = (struct ability_row){.ability_id = pg_text(o, t, 0),
					       .ability_name = pg_text(o, t, 1),
					       .service_name = pg_text(o, t, 2),
					       .description = pg_text(o, t, 3),
					       .embedding = pg_text(o, t, 4),
					       .metadata = pg_text(o, t, 5)};
	c->fn.rows(rows, (size_t)n, o, c->arg);
	free(rows);
	free(c);
}

void store_reconcile_full_rows(struct pgpool *p, const char *const *ids, size_t n, store_rows_fn done, void *arg)
{
	struct call *c = call_new(arg);
	struct buf b = BUF_INIT;
	struct pg_array arr;
	struct pg_param param;
	size_t i;

	c->fn.rows = done;
	pg_array_begin(&arr, &b, PG_OID_TEXT);
	for (i = 0; i < n; i++)
		pg_array_text(&arr, ids[i], strlen(ids[i]));
	pg_array_end(&arr);
	param = pg_array_param(&b);
	pgpool_query_params(p,
			    "SELECT ability_id, ability_name, service_name, description, embedding::text, metadata::text"
			    " FROM public.abilities WHERE ability_id = ANY($1::text[])",
			    1, &param, on_full_rows, c);
	buf_free(&b);
}

/*
 * The sync states locked first (store_locks.h), then the ledger claim (of two
 * rows on one vector, the one with a sync state, else the first by id: one
 * upsert cannot take a key twice; an entry another ability holds, only if its
 * row is gone, the entry unchanged since the snapshot (ENTRY_SAW) and its sync
 * state settled: a tombstone whose delete is still to come, or in doubt,
 * deletes that slot, the new owner's vector with it), then the
 * sync state made pending where its vector belongs now, only if still the
 * generation judged ($4; -1: none then). The outbox worker then pushes the row
 * as the mirror has it and deletes the vectors the ledger lists elsewhere.
 */
/*
 * The ledger entry `l` (its latest version, locked) is as the statement's
 * snapshot had it (every write of an entry sets last_written_at). Whether
 * its owner's row exists is read from the snapshot: an owner registered
 * again while the requeue waited for the entry has a row it cannot see.
 */
#define ENTRY_SAW(l)                                                                                           \
	" EXISTS (SELECT 1 FROM abilitysync.vector_ledger l0 WHERE l0.blob_id = " l ".blob_id"                   \
	"  AND l0.vector_id = " l ".vector_id AND l0.ability_id = " l ".ability_id"                              \
	"  AND l0.last_written_at = " l ".last_written_at)"

static const char requeue_rows_sql[] =
	"WITH r AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[])"
	"  AS r(ability_id, blob_id, vector_id, generation)),"
	LOCK_STATES("st", "SELECT ability_id FROM r")
	" claim AS ("
	" INSERT INTO abilitysync.vector_ledger AS l (blob_id, vector_id, ability_id)"
	" SELECT DISTINCT ON (blob_id, vector_id) blob_id, vector_id, ability_id FROM r WHERE " STATES_LOCKED("st")
	"  ORDER BY blob_id, vector_id, generation = -1, ability_id"
	" ON CONFLICT (blob_id, vector_id) DO UPDATE SET ability_id = excluded.ability_id, deleted_at = NULL,"
	"  last_written_at = now()"
	" WHERE l.ability_id = excluded.ability_id OR l.deleted_at IS NOT NULL"
	"  OR (NOT EXISTS (SELECT 1 FROM public.abilities a WHERE a.ability_id = l.ability_id) AND" ENTRY_SAW("l")
	"   AND NOT EXISTS (SELECT 1 FROM abilitysync.sync_state o WHERE o.ability_id = l.ability_id"
	"    AND o.state <> 'deleted'))"
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

void store_reconcile_requeue_rows(struct pgpool *p, const struct recon_place *rows, size_t n, store_count_fn done,
				  void *arg)
{
	static const enum place_col cols[] = {P_ABILITY, P_BLOB, P_VECTOR, P_GENERATION};
	struct place_arrays pa;

	place_arrays_build(&pa, rows, n, cols, 4);
	count_query(p, requeue_rows_sql, 4, pa.params, done, arg);
	place_arrays_free(&pa, 4);
}

/*
 * A page scans at most `limit` ledger keys, suspect or not, so a healthy
 * ledger costs a page's work per statement rather than one scan of it all;
 * the suspects come first, then one row with the scan's last key and count.
 * An entry with no sync state is a suspect too (IS NOT TRUE: SQL's NULL
 * would leave it out).
 */
static const char entries_sql[] =
	"WITH k AS (SELECT blob_id, vector_id, ability_id FROM abilitysync.vector_ledger"
	"  WHERE ($1::text IS NULL OR (blob_id, vector_id) > ($1, $2::int)) AND ($3::text IS NULL OR blob_id = $3)"
	"  ORDER BY blob_id, vector_id LIMIT $6::int)"
	" SELECT k.blob_id, k.vector_id, k.ability_id, a.service_name, coalesce(s.generation, -1), NULL::bigint"
	" FROM k"
	" LEFT JOIN abilitysync.sync_state s ON s.ability_id = k.ability_id"
	" LEFT JOIN public.abilities a ON a.ability_id = k.ability_id"
	" WHERE (a.ability_id IS NOT NULL AND s.state IN ('synced', 'pending', 'failed')"
	"   AND s.blob_id = k.blob_id AND s.vector_id = k.vector_id) IS NOT TRUE"
	"  AND (s.state IN ('pending', 'pending_delete') AND s.updated_at > now() - $4::interval"
	"   AND s.updated_at < $5::timestamptz) IS NOT TRUE"
	" UNION ALL"
	" SELECT * FROM (SELECT blob_id, vector_id, NULL, NULL, NULL::bigint, count(*) OVER ()"
	"  FROM k ORDER BY blob_id DESC, vector_id DESC LIMIT 1) e"
	" ORDER BY 1, 2, 6 NULLS FIRST";

static void on_entries(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	int n = pg_rows(o), t;
	struct recon_entry *e = xcalloc((size_t)n + 1, sizeof(*e));
	struct recon_scan scan = {0};

	if (n > 0) { /* the scan's own row closes the result */
		n--;
		scan = (struct recon_scan){pg_text(o, n, 0), pg_int8(o, n, 1), (size_t)pg_int8(o, n, 5)};
	}
	for (t = 0; t < n; t++)
		e[t] = (struct recon_entry){pg_text(o, t, 0), pg_int8(o, t, 1), pg_text(o, t, 2), pg_text(o, t, 3),
					    pg_int8(o, t, 4)};
	c->fn.entries(e, (size_t)n, &scan, o, c->arg);
	free(e);
	free(c);
}

void store_reconcile_entries(struct pgpool *p, const char *after_blob, int64_t after_vid, const char *blob,
			     const char *overdue, const char *pg_start, int limit, store_entries_fn done, void *arg)
{
	struct call *c = call_new(arg);
	struct num vid = num(after_vid), lim = num(limit);
	const char *params[6] = {after_blob, vid.s, blob, overdue, pg_start, lim.s};

	c->fn.entries = done;
	pgpool_query(p, entries_sql, 6, params, on_entries, c);
}

/*
 * The sync states locked first, then the ledger entry is live again (the
 * worker deletes what the ledger lists; a write of the entry like any other,
 * so a requeue that read it before, waiting for its locks, leaves it:
 * ENTRY_SAW), and its ability's sync state becomes
 * pending_delete (no live row: the vector goes) or pending (a live row
 * elsewhere: pushed again, the old one deleted), only where it is still the
 * generation judged.
 */
static const char requeue_orphans_sql[] =
	"WITH o AS (SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[])"
	"  AS o(blob_id, vector_id, ability_id, generation)),"
	LOCK_STATES("st", "SELECT ability_id FROM o")
	" led AS ("
	" UPDATE abilitysync.vector_ledger l SET deleted_at = NULL, last_written_at = now() FROM o"
	" WHERE l.blob_id = o.blob_id AND l.vector_id = o.vector_id AND l.ability_id = o.ability_id AND " STATES_LOCKED("st")
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

void store_reconcile_requeue_orphans(struct pgpool *p, const struct recon_place *entries, size_t n,
				     store_count_fn done, void *arg)
{
	static const enum place_col cols[] = {P_BLOB, P_VECTOR, P_ABILITY, P_GENERATION};
	struct place_arrays pa;

	place_arrays_build(&pa, entries, n, cols, 4);
	count_query(p, requeue_orphans_sql, 4, pa.params, done, arg);
	place_arrays_free(&pa, 4);
}

static void on_changes(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	int n = pg_rows(o), t;
	struct recon_change *w = xcalloc((size_t)n + 1, sizeof(*w));

	for (t = 0; t < n; t++)
		w[t] = (struct recon_change){pg_text(o, t, 0), pg_bool(o, t, 1)};
	c->fn.changes(w, (size_t)n, o, c->arg);
	free(w);
	free(c);
}

void store_reconcile_changes(struct pgpool *p, const char *after, const char *blob, const char *overdue,
			     const char *pg_start, int limit, store_changes_fn done, void *arg)
{
	struct call *c = call_new(arg);
	struct num lim = num(limit);
	const char *params[5] = {after, blob, overdue, pg_start, lim.s};

	c->fn.changes = done;
	pgpool_query(p,
		     "SELECT s.ability_id, s.state = 'failed' FROM abilitysync.sync_state s"
		     " WHERE ($1::text IS NULL OR s.ability_id > $1) AND ($2::text IS NULL OR s.blob_id = $2)"
		     "  AND (s.state = 'failed' OR (s.state IN ('pending', 'pending_delete')"
		     "   AND s.updated_at < now() - $3::interval AND s.updated_at < $4::timestamptz))"
		     " ORDER BY s.ability_id LIMIT $5::int",
		     5, params, on_changes, c);
}

void store_reconcile_requeue_changes(struct pgpool *p, const char *const *ids, size_t n, store_count_fn done,
				     void *arg)
{
	struct buf b = BUF_INIT;
	struct pg_array arr;
	struct pg_param param;
	size_t i;

	pg_array_begin(&arr, &b, PG_OID_TEXT);
	for (i = 0; i < n; i++)
		pg_array_text(&arr, ids[i], strlen(ids[i]));
	pg_array_end(&arr);
	param = pg_array_param(&b);
	count_query(p,
		    "WITH m AS (SELECT s.ability_id, s.generation FROM abilitysync.sync_state s"
		    "  WHERE s.ability_id = ANY($1::text[]) AND s.state IN ('failed', 'pending', 'pending_delete')),"
		    LOCK_STATES("st", "SELECT ability_id FROM m")
		    " r AS (UPDATE abilitysync.sync_state s SET state = " REQUEUED_STATE("s") ","
		    "  attempts = 0, next_attempt_at = now(), last_error = NULL, updated_at = now() FROM m"
		    " WHERE s.ability_id = m.ability_id AND s.generation = m.generation"
		    "  AND s.state IN ('failed', 'pending', 'pending_delete') AND " STATES_LOCKED("st")
		    " RETURNING 1)"
		    " SELECT count(*) FROM r",
		    1, &param, done, arg);
	buf_free(&b);
}

/* ---- restore ----------------------------------------------------------------------- */

/*
 * (class, 2): exclusive while a job is created or its parts are made, shared
 * by every process working on it; so a new job waits for no one and starts
 * only when no process restores, and any number may join a running one.
 */
void store_restore_try_lock(struct pgpool *p, bool exclusive, store_flag_fn done, void *arg)
{
#define RUNNING_JOB " (SELECT max(id) FROM abilitysync.restore_jobs WHERE status = 'running')::text"
	flag_query(p,
		   exclusive ? "SELECT pg_try_advisory_lock(" ABILITYSYNC_LOCK_CLASS_TEXT ", 2)," RUNNING_JOB
			     : "SELECT pg_try_advisory_lock_shared(" ABILITYSYNC_LOCK_CLASS_TEXT ", 2)," RUNNING_JOB,
		   0, NULL, done, arg);
#undef RUNNING_JOB
}

void store_restore_share_lock(struct pgpool *p, pg_done_fn done, void *arg)
{
	pgpool_query(p,
		     "SELECT pg_advisory_lock_shared(" ABILITYSYNC_LOCK_CLASS_TEXT ", 2),"
		     " pg_advisory_unlock(" ABILITYSYNC_LOCK_CLASS_TEXT ", 2)",
		     0, NULL, done, arg);
}

static void on_restore_job(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct restore_job_row j;
	bool one = pg_rows(o) == 1;

	if (one)
		j = (struct restore_job_row){pg_int8(o, 0, 0), pg_int8(o, 0, 1), pg_int8(o, 0, 2), pg_int8(o, 0, 3),
					     pg_int8(o, 0, 4), pg_bool(o, 0, 5)};
	c->fn.job(one ? &j : NULL, o, c->arg);
	free(c);
}

/*
 * The job's parts, when it has none: its rows after `cursor` (a job begun
 * before parts existed resumes after its cursor) in key order, cut every
 * `rows`; the last part is open-ended, so rows added meanwhile are restored
 * too.
 */
#define PARTS_CTE(job, service, cursor, rows)                                                                   \
	" b AS (SELECT ability_id FROM (SELECT ability_id, row_number() OVER (ORDER BY ability_id) AS rn"       \
	"  FROM public.abilities WHERE (" service "::text IS NULL OR service_name = " service ")"               \
	"  AND (" cursor "::text IS NULL OR ability_id > " cursor ")) q WHERE rn % " rows "::bigint = 0),"     \
	" bounds AS (SELECT ability_id AS upto FROM b UNION ALL SELECT NULL),"                                   \
	" cut AS (SELECT row_number() OVER w - 1 AS part, lag(upto) OVER w AS after, upto FROM bounds"          \
	"  WINDOW w AS (ORDER BY upto NULLS LAST)),"                                                             \
	" parts AS (INSERT INTO abilitysync.restore_parts (job_id, part, after_id, upto_id)"                    \
	"  SELECT " job ", cut.part, coalesce(cut.after, " cursor "), cut.upto FROM cut"                         \
	"  WHERE " job " IS NOT NULL"                                                                           \
	"  AND NOT EXISTS (SELECT 1 FROM abilitysync.restore_parts x WHERE x.job_id = " job ")"                 \
	"  RETURNING 1)"

#define JOB_COLUMNS                                                                                             \
	" id, total, done, failed,"                                                                             \
	" (SELECT count(*) FROM abilitysync.restore_parts p WHERE p.job_id = id AND p.finished_at IS NULL)"      \
	" + (SELECT count(*) FROM parts), false"

static const char restore_resume_sql[] =
	"WITH j AS (UPDATE abilitysync.restore_jobs SET status = 'running', host = $2, error = NULL,"
	"  updated_at = now() WHERE id = (SELECT id FROM abilitysync.restore_jobs"
	"  WHERE status IN ('running', 'interrupted', 'failed', 'cancelled')"
	"  AND service_name IS NOT DISTINCT FROM $1"
	"  ORDER BY id DESC LIMIT 1) RETURNING *),"
	PARTS_CTE("(SELECT id FROM j)", "$1", "(SELECT cursor FROM j)", "$3")
	" SELECT" JOB_COLUMNS " FROM j";

static const char restore_new_sql[] =
	"WITH stale AS (UPDATE abilitysync.restore_jobs SET status = 'interrupted', updated_at = now()"
	"  WHERE status = 'running'),"
	" j AS (INSERT INTO abilitysync.restore_jobs (service_name, total, host)"
	"  SELECT $1, count(*), $2 FROM public.abilities WHERE $1::text IS NULL OR service_name = $1"
	"  RETURNING *),"
	PARTS_CTE("(SELECT id FROM j)", "$1", "NULL", "$3")
	" SELECT" JOB_COLUMNS " FROM j";

void store_restore_open(struct pgpool *p, bool resume, const char *service, const char *host, int part_rows,
			store_restore_job_fn done, void *arg)
{
	struct call *c = call_new(arg);
	struct num rows = num(part_rows);
	const char *params[3] = {service, host, rows.s};

	c->fn.job = done;
	pgpool_query(p, resume ? restore_resume_sql : restore_new_sql, 3, params, on_restore_job, c);
}

static void on_part(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct restore_part_row r;
	bool one = pg_rows(o) == 1;

	if (one)
		r = (struct restore_part_row){(int)pg_int8(o, 0, 0), pg_text(o, 0, 1), pg_text(o, 0, 2)};
	c->fn.part(one ? &r : NULL, o, c->arg);
	free(c);
}

void store_restore_claim_part(struct pgpool *p, int64_t job_id, store_part_fn done, void *arg)
{
	struct call *c = call_new(arg);
	struct num id = num(job_id);
	const char *params[1] = {id.s};

	c->fn.part = done;
	/* In part order, locks tried one row at a time (the fence keeps the volatile call out of the sort). */
	pgpool_query(p,
		     "SELECT part, coalesce(cursor, after_id), upto_id FROM"
		     " (SELECT part, cursor, after_id, upto_id FROM abilitysync.restore_parts p"
		     "  WHERE job_id = $1::bigint AND finished_at IS NULL"
		     "  AND" NOT_HELD_HERE(ABILITYSYNC_PART_LOCK_CLASS_TEXT, PART_KEY("$1::bigint", "p.part"))
		     "  ORDER BY part OFFSET 0) q"
		     " WHERE pg_try_advisory_lock(" ABILITYSYNC_PART_LOCK_CLASS_TEXT ", " PART_KEY("$1::bigint", "q.part")
		     "::int) LIMIT 1",
		     1, params, on_part, c);
}

void store_restore_record_page(struct pgpool *p, int64_t job_id, int part, size_t ok, size_t failed,
			       const char *cursor, bool finished, store_restore_job_fn done, void *arg)
{
	struct call *c = call_new(arg);
	struct num good = num((int64_t)ok), bad = num((int64_t)failed), id = num(job_id), pt = num(part);
	const char *params[6] = {good.s, bad.s, cursor, id.s, pt.s, finished ? "true" : "false"};

	c->fn.job = done;
	pgpool_query(p,
		     "WITH pt AS (UPDATE abilitysync.restore_parts SET done = done + $1::bigint,"
		     "  failed = failed + $2::bigint, cursor = coalesce($3, cursor),"
		     "  finished_at = CASE WHEN $6::boolean THEN now() END"
		     "  WHERE job_id = $4::bigint AND part = $5::int)"
		     " UPDATE abilitysync.restore_jobs SET done = done + $1::bigint, failed = failed + $2::bigint,"
		     " cursor = coalesce($3, cursor), updated_at = now() WHERE id = $4::bigint"
		     " RETURNING id, total, done, failed,"
		     " (SELECT count(*) FROM abilitysync.restore_parts p WHERE p.job_id = id AND p.finished_at IS NULL)"
		     " - $6::boolean::int, status = 'cancelled'",
		     6, params, on_restore_job, c);
}

void store_restore_close(struct pgpool *p, int64_t job_id, const char *status, const char *error, store_flag_fn done,
			 void *arg)
{
	struct num id = num(job_id);
	const char *params[3] = {id.s, status, error};

	/*
	 * "done" from one process means its share: the job is done once no part
	 * is left. Its other ends are the job's only when no other session holds
	 * an unfinished part (status NULL: the job's stays as it is).
	 */
	flag_query(p,
		   "WITH left_ AS (SELECT count(*) AS n, count(*) FILTER (WHERE EXISTS (SELECT 1 FROM pg_locks l"
		   "   WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.pid <> pg_backend_pid()"
		   "   AND l.classid = " ABILITYSYNC_PART_LOCK_CLASS_TEXT "::oid"
		   "   AND l.objid = " PART_KEY("$1::bigint", "p.part") "::oid)) AS held"
		   "  FROM abilitysync.restore_parts p WHERE job_id = $1::bigint AND finished_at IS NULL),"
		   " s AS (SELECT CASE WHEN $2 = 'done' THEN CASE WHEN n = 0 THEN 'done' END"
		   "  WHEN held > 0 THEN NULL ELSE $2 END AS status FROM left_)"
		   " UPDATE abilitysync.restore_jobs j SET status = coalesce(s.status, j.status),"
		   " error = CASE WHEN s.status IS NULL THEN j.error ELSE $3 END, updated_at = now(),"
		   " finished_at = CASE WHEN s.status = 'done' THEN now() END,"
		   " total = CASE WHEN s.status = 'done' THEN greatest(total, done + failed) ELSE total END"
		   " FROM s WHERE j.id = $1::bigint AND j.status <> 'cancelled'"
		   " RETURNING j.status = 'done', j.status",
		   3, params, done, arg);
}

/*
 * Tables this role does not own are skipped by Postgres with a warning, not
 * an error.
 */
void store_restore_analyze(struct pgpool *p, pg_done_fn done, void *arg)
{
	pgpool_query(p, "ANALYZE abilitysync.sync_state, abilitysync.vector_ledger", 0, NULL, done, arg);
}

/*
 * Every row sharing its vector_id with another row (of any service: the blob
 * is named in C, as the client names it), and the ledger's live owners of
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
	" SELECT true, ability_id, service_name, v FROM c"
	" UNION ALL SELECT false, l.ability_id, l.blob_id, l.vector_id FROM abilitysync.vector_ledger l"
	"  WHERE l.deleted_at IS NULL AND l.vector_id IN (SELECT v FROM c)"
	" ORDER BY 4";

static void on_collisions(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	int n = pg_rows(o), t;
	struct restore_collision *w = xcalloc((size_t)n + 1, sizeof(*w));

	for (t = 0; t < n; t++)
		w[t] = (struct restore_collision){pg_bool(o, t, 0), pg_text(o, t, 1), pg_text(o, t, 2), pg_int8(o, t, 3)};
	c->fn.collisions(w, (size_t)n, o, c->arg);
	free(w);
	free(c);
}

void store_restore_collisions(struct pgpool *p, store_collisions_fn done, void *arg)
{
	struct call *c = call_new(arg);

	c->fn.collisions = done;
	pgpool_query(p, collisions_sql, 0, NULL, on_collisions, c);
}

static void on_services(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	int n = pg_rows(o), t;
	struct service_count *w = xcalloc((size_t)n + 1, sizeof(*w));

	for (t = 0; t < n; t++)
		w[t] = (struct service_count){pg_text(o, t, 0), pg_int8(o, t, 1)};
	c->fn.services(w, (size_t)n, o, c->arg);
	free(w);
	free(c);
}

void store_restore_services(struct pgpool *p, const char *service, store_services_fn done, void *arg)
{
	struct call *c = call_new(arg);
	const char *params[1] = {service};

	c->fn.services = done;
	pgpool_query(p,
		     "SELECT service_name, count(*) FROM public.abilities WHERE $1::text IS NULL OR service_name = $1"
		     " GROUP BY service_name ORDER BY service_name",
		     1, params, on_services, c);
}
