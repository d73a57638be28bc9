#include "store.h"

#include "buf.h"
#include "log.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define COMP "store"

/*
 * The write. `input` numbers the rows and says which request brought each;
 * `judged` decides per row from this statement's snapshot (a vector_id held by
 * another live ability; content known unchanged) and `decided` per request (a
 * request is all or nothing). Then, in ability_id order:
 *   up     upserts the mirror row, but only where the content differs from the
 *          row as it is now: ON CONFLICT's WHERE sees the latest committed
 *          version, so a replica writing the same new ability a moment after
 *          another writes nothing;
 *   ss     advances the sync state (pending, generation + 1) for the rows `up`
 *          changed and for rows that never had a sync state (adopted), again
 *          only if the content hash changed or the ability was deleted;
 *   claim  claims (blob, vector_id) in the ledger for those rows; a plain insert,
 *          so two abilities claiming one vector at once fail the statement.
 * A row `ss` did not advance comes back with generation NULL: unchanged.
 */
static const char write_sql[] =
	"WITH input AS ("
	" SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],"
	"  $8::text[], $9::bool[], $10::text[], $11::text[], $13::int[]) WITH ORDINALITY"
	"  AS i(ability_id, vector_id, ability_name, service_name, description, embedding, metadata,"
	"   dynamic_header_keys, dynamic_headers_required, blob_id, content_hash, req, ord)),"
	" judged AS ("
	" SELECT i.*, s.state AS old_state, s.blob_id AS old_blob, s.ability_id IS NOT NULL AS has_state,"
	"  l.ability_id AS owner,"
	"  (l.ability_id IS NOT NULL AND l.ability_id <> i.ability_id AND l.deleted_at IS NULL) AS collides,"
	"  (a.ability_id IS NOT NULL AND s.content_hash = i.content_hash"
	"   AND s.state IN ('pending', 'synced', 'failed')) AS unchanged"
	" FROM input i"
	" LEFT JOIN abilitysync.sync_state s ON s.ability_id = i.ability_id"
	" LEFT JOIN public.abilities a ON a.ability_id = i.ability_id"
	" LEFT JOIN abilitysync.vector_ledger l ON l.blob_id = i.blob_id AND l.vector_id = i.vector_id),"
	" decided AS (SELECT j.*, bool_or(j.collides) OVER (PARTITION BY j.req) AS refused FROM judged j),"
	" todo AS (SELECT * FROM decided WHERE NOT refused AND NOT unchanged),"
	" up AS ("
	" INSERT INTO public.abilities AS a (ability_id, vector_id, ability_name, service_name, description, embedding,"
	"  dynamic_header_keys, dynamic_headers_required, metadata, created_at, updated_at)"
	" SELECT ability_id, vector_id, ability_name, service_name, description, embedding::jsonb,"
	"  dynamic_header_keys::jsonb, dynamic_headers_required, metadata::jsonb, now() AT TIME ZONE 'UTC',"
	"  now() AT TIME ZONE 'UTC'"
	" FROM todo ORDER BY ability_id"
	" ON CONFLICT (ability_id) DO UPDATE SET vector_id = excluded.vector_id, ability_name = excluded.ability_name,"
	"  service_name = excluded.service_name, description = excluded.description, embedding = excluded.embedding,"
	"  dynamic_header_keys = excluded.dynamic_header_keys,"
	"  dynamic_headers_required = excluded.dynamic_headers_required, metadata = excluded.metadata,"
	"  updated_at = excluded.updated_at"
	" WHERE (a.vector_id, a.ability_name, a.service_name, a.description, a.embedding, a.dynamic_header_keys,"
	"  a.dynamic_headers_required, a.metadata) IS DISTINCT FROM (excluded.vector_id, excluded.ability_name,"
	"  excluded.service_name, excluded.description, excluded.embedding, excluded.dynamic_header_keys,"
	"  excluded.dynamic_headers_required, excluded.metadata)"
	" RETURNING ability_id),"
	" ss AS ("
	" INSERT INTO abilitysync.sync_state AS s (ability_id, blob_id, vector_id, content_hash, state, generation,"
	"  attempts, next_attempt_at, last_error, updated_at)"
	" SELECT ability_id, blob_id, vector_id, content_hash, 'pending', 1, 0, now() + $12::interval, NULL, now()"
	" FROM todo WHERE NOT has_state OR ability_id IN (SELECT ability_id FROM up) ORDER BY ability_id"
	" ON CONFLICT (ability_id) DO UPDATE SET blob_id = excluded.blob_id, vector_id = excluded.vector_id,"
	"  content_hash = excluded.content_hash, state = 'pending', generation = s.generation + 1, attempts = 0,"
	"  next_attempt_at = excluded.next_attempt_at, last_error = NULL, updated_at = now()"
	" WHERE s.content_hash IS DISTINCT FROM excluded.content_hash OR s.state IN ('pending_delete', 'deleted')"
	" RETURNING ability_id, generation),"
	" claim AS ("
	" INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id)"
	" SELECT blob_id, vector_id, ability_id FROM todo"
	" WHERE owner IS NULL AND ability_id IN (SELECT ability_id FROM ss) ORDER BY ability_id),"
	" reclaim AS ("
	" UPDATE abilitysync.vector_ledger l SET ability_id = t.ability_id, deleted_at = NULL, last_written_at = now()"
	" FROM todo t WHERE t.owner IS NOT NULL AND t.ability_id IN (SELECT ability_id FROM ss)"
	"  AND l.blob_id = t.blob_id AND l.vector_id = t.vector_id)"
	" SELECT d.ord, d.collides, d.unchanged OR (NOT d.refused AND ss.generation IS NULL), coalesce(d.owner, ''),"
	"  ss.generation, coalesce(d.old_state, ''), coalesce(d.old_blob, ''), d.refused"
	" FROM decided d LEFT JOIN ss USING (ability_id) ORDER BY d.ord";

static const char row_columns[] =
	"a.ability_id, a.vector_id, a.ability_name, a.service_name, a.description, a.metadata::text,"
	" a.dynamic_header_keys::text, a.dynamic_headers_required,"
	" to_char(a.created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
	" to_char(a.updated_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),";

static const char row_sync_columns[] =
	" s.state, s.content_hash, s.blob_id, s.attempts, s.last_error,"
	" to_char(s.synced_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
	" FROM public.abilities a LEFT JOIN abilitysync.sync_state s USING (ability_id)";

static const char delete_lookup_sql[] =
	"SELECT service_name, vector_id FROM public.abilities WHERE ability_id = $1";

/* The vector goes in the ledger too (if no one holds it), so reconcile can check the tombstone later. */
static const char delete_sql[] =
	"WITH d AS (DELETE FROM public.abilities WHERE ability_id = $1 RETURNING ability_id),"
	" led AS (INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id) SELECT $2, $3::int, $1 FROM d"
	"  ON CONFLICT (blob_id, vector_id) DO NOTHING)"
	" INSERT INTO abilitysync.sync_state AS s (ability_id, blob_id, vector_id, content_hash, state, generation,"
	"  attempts, next_attempt_at, updated_at)"
	" SELECT $1, $2, $3::int, '', 'pending_delete', 1, 0, now() + $4::interval, now() FROM d"
	" ON CONFLICT (ability_id) DO UPDATE SET state = 'pending_delete', generation = s.generation + 1, attempts = 0,"
	"  next_attempt_at = excluded.next_attempt_at, last_error = NULL, updated_at = now()"
	" RETURNING generation, blob_id, vector_id";

static const char status_sql[] =
	"SELECT json_build_object("
	" 'counts', (SELECT coalesce(json_object_agg(state, n), '{}') FROM"
	"  (SELECT state, count(*) AS n FROM abilitysync.sync_state GROUP BY state) c),"
	" 'oldest_pending_seconds', (SELECT round(extract(epoch FROM now() - min(updated_at))::numeric, 3)"
	"  FROM abilitysync.sync_state WHERE state IN ('pending', 'pending_delete')),"
	" 'last_errors', (SELECT coalesce(json_agg(e), '[]') FROM"
	"  (SELECT ability_id, state, attempts, last_error, updated_at FROM abilitysync.sync_state"
	"   WHERE last_error IS NOT NULL ORDER BY updated_at DESC LIMIT 10) e),"
	" 'reconcile', (SELECT json_build_object('run_id', id, 'status', status, 'finished_at', finished_at,"
	"   'total', report->'total', 'drift', (SELECT json_object_agg(k, v->'count') FROM jsonb_each(report->'drift') d(k, v)))"
	"  FROM abilitysync.reconcile_runs WHERE report IS NOT NULL ORDER BY id DESC LIMIT 1))::text";

/* Claims due rows with SKIP LOCKED (replicas share the work) and leases them. */
static const char claim_sql[] =
	"WITH c AS ("
	" UPDATE abilitysync.sync_state s SET next_attempt_at = now() + $2::interval, attempts = s.attempts + 1"
	" WHERE s.ability_id IN (SELECT ability_id FROM abilitysync.sync_state"
	"  WHERE state IN ('pending', 'pending_delete') AND next_attempt_at <= now()"
	"  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
	" RETURNING s.ability_id, s.generation, s.state, s.blob_id, s.vector_id, s.content_hash, s.attempts)"
	" SELECT c.ability_id, c.generation, c.state, c.blob_id, c.vector_id, c.content_hash, c.attempts,"
	"  a.ability_name, a.service_name, a.description, a.embedding::text, a.metadata::text,"
	"  (SELECT string_agg(l.blob_id || ' ' || l.vector_id, ',') FROM abilitysync.vector_ledger l"
	"   WHERE l.ability_id = c.ability_id AND l.deleted_at IS NULL"
	"   AND (c.state = 'pending_delete' OR NOT (l.blob_id = c.blob_id AND l.vector_id = c.vector_id)))"
	" FROM c LEFT JOIN public.abilities a USING (ability_id)";

/*
 * Pushed rows become synced (or deleted) only if no newer write came in
 * meanwhile (same generation); their vectors' ledger rows follow. Rows that
 * failed wait for their retry, or become failed after max_attempts.
 */
static const char finish_sql[] =
	"WITH d AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $7::text[],"
	"  $8::bool[]) AS d(ability_id, generation, stale, error, retry_in, content_hash, permanent)),"
	" ok AS ("
	" UPDATE abilitysync.sync_state s SET state = CASE WHEN s.state = 'pending_delete' THEN 'deleted' ELSE 'synced' END,"
	"  content_hash = coalesce(d.content_hash, s.content_hash),"
	"  attempts = 0, last_error = NULL, synced_at = now(), updated_at = now()"
	" FROM d WHERE d.error IS NULL AND s.ability_id = d.ability_id AND s.generation = d.generation"
	" RETURNING s.ability_id, s.state, s.blob_id, s.vector_id),"
	" led AS ("
	" UPDATE abilitysync.vector_ledger l"
	"  SET deleted_at = CASE WHEN ok.state = 'deleted' THEN now() END, last_written_at = now()"
	" FROM ok WHERE l.ability_id = ok.ability_id AND l.blob_id = ok.blob_id AND l.vector_id = ok.vector_id),"
	" gone AS ("
	" UPDATE abilitysync.vector_ledger l SET deleted_at = now()"
	" FROM d, unnest(string_to_array(d.stale, ',')) AS v(pair)"
	" WHERE d.error IS NULL AND l.ability_id = d.ability_id AND l.blob_id = split_part(v.pair, ' ', 1)"
	"  AND l.vector_id = split_part(v.pair, ' ', 2)::int),"
	" bad AS ("
	" UPDATE abilitysync.sync_state s SET last_error = d.error, next_attempt_at = now() + d.retry_in::interval,"
	"  state = CASE WHEN d.permanent OR s.attempts >= $6::int THEN 'failed' ELSE s.state END, updated_at = now()"
	" FROM d WHERE d.error IS NOT NULL AND s.ability_id = d.ability_id AND s.generation = d.generation)"
	" SELECT count(*) FROM ok";

/* A failed row goes back to what it was for: an upsert if its row exists, else a delete. */
static const char retry_failed_sql[] =
	"WITH r AS (UPDATE abilitysync.sync_state s SET state = CASE WHEN EXISTS"
	" (SELECT 1 FROM public.abilities a WHERE a.ability_id = s.ability_id) THEN 'pending' ELSE 'pending_delete' END,"
	" attempts = 0, next_attempt_at = now(), updated_at = now() WHERE s.state = 'failed' RETURNING 1)"
	" SELECT count(*) FROM r";

/* The statements run for every ability: prepared once per connection. */
static const struct pg_stmt write_stmt = {"abilitysync_write", write_sql};
static const struct pg_stmt finish_stmt = {"abilitysync_finish", finish_sql};
static const struct pg_stmt claim_stmt = {"abilitysync_claim", claim_sql};

/* ---- building parameters -------------------------------------------------------- */

/* ---- grouped writes ------------------------------------------------------------- */

struct write_req {
	TAILQ_ENTRY(write_req) link;
	const struct ability *items;
	size_t n;
	store_write_fn done;
	void *arg;
	bool alone;             /* retried by itself after its group failed on a race */
};

TAILQ_HEAD(write_list, write_req);

/* One write statement in flight and the requests it carries. */
struct write_group {
	struct store *s;
	struct write_list reqs;
	size_t rows;
};

struct store {
	struct pgpool *pool;
	struct store_opts o;
	struct write_list waiting;
	int in_flight;
	char grace[32];
};

static void pump(struct store *s);

static bool group_has(const struct write_group *g, const struct ability *a)
{
	const struct write_req *r;
	size_t i;

	TAILQ_FOREACH(r, &g->reqs, link)
		for (i = 0; i < r->n; i++)
			if (strcmp(r->items[i].ability_id, a->ability_id) == 0)
				return true;
	return false;
}

/* The 12 row arrays of a group ($1..$11, $13), binary, in request order. */
static void build_params(const struct write_group *g, struct buf p[12])
{
	static const uint32_t oids[12] = {PG_OID_TEXT, PG_OID_INT4, PG_OID_TEXT, PG_OID_TEXT, PG_OID_TEXT, PG_OID_TEXT,
					  PG_OID_TEXT, PG_OID_TEXT, PG_OID_BOOL, PG_OID_TEXT, PG_OID_TEXT, PG_OID_INT4};
	struct pg_array arr[12];
	const struct write_req *r;
	size_t i, k;
	int req = 0;

	for (k = 0; k < 12; k++)
		pg_array_begin(&arr[k], &p[k], oids[k]);
	TAILQ_FOREACH(r, &g->reqs, link) {
		req++;
		for (i = 0; i < r->n; i++) {
			const struct ability *a = &r->items[i];

			pg_array_text(&arr[0], a->ability_id, strlen(a->ability_id));
			pg_array_int4(&arr[1], (int32_t)a->vector_id);
			pg_array_text(&arr[2], a->ability_name, strlen(a->ability_name));
			pg_array_text(&arr[3], a->service_name, strlen(a->service_name));
			pg_array_text(&arr[4], a->description, strlen(a->description));
			pg_array_text(&arr[5], a->embedding, a->embedding_len);
			pg_array_text(&arr[6], a->metadata_text, strlen(a->metadata_text));
			pg_array_text(&arr[7], a->dynamic_header_keys, strlen(a->dynamic_header_keys));
			pg_array_bool(&arr[8], a->dynamic_headers_required);
			pg_array_text(&arr[9], a->blob_id, strlen(a->blob_id));
			pg_array_text(&arr[10], a->content_hash, strlen(a->content_hash));
			pg_array_int4(&arr[11], req);
		}
	}
	for (k = 0; k < 12; k++)
		pg_array_end(&arr[k]);
}

static void parse_row(PGresult *res, int row, struct write_result *w)
{
	memset(w, 0, sizeof(*w));
	if (PQgetvalue(res, row, 1)[0] == 't') {
		w->outcome = WRITE_COLLISION;
		snprintf(w->other, sizeof(w->other), "%s", PQgetvalue(res, row, 3));
	} else if (PQgetvalue(res, row, 7)[0] == 't') {
		w->outcome = WRITE_REFUSED;
	} else if (PQgetvalue(res, row, 2)[0] == 't') {
		w->outcome = WRITE_UNCHANGED;
	} else {
		w->outcome = WRITE_WRITTEN;
		w->generation = strtoll(PQgetvalue(res, row, 4), NULL, 10);
	}
	snprintf(w->state, sizeof(w->state), "%s", PQgetvalue(res, row, 5));
	snprintf(w->old_blob, sizeof(w->old_blob), "%s", PQgetvalue(res, row, 6));
}

static void on_group_done(const struct pg_outcome *o, void *arg)
{
	struct write_group *g = arg;
	struct store *s = g->s;
	struct write_req *r;
	int row = 0;
	bool race = !o->res && strcmp(o->sqlstate, "23505") == 0;

	s->in_flight--;
	if (race && g->rows > 1) {
		/* Two groups claimed one vector at once: run each request alone, in order, to tell who collides. */
		log_info(COMP, "a concurrent write claimed the same vector; retrying %zu rows one request at a time", g->rows);
		while ((r = TAILQ_LAST(&g->reqs, write_list)) != NULL) {
			TAILQ_REMOVE(&g->reqs, r, link);
			r->alone = true;
			TAILQ_INSERT_HEAD(&s->waiting, r, link);
		}
		free(g);
		pump(s);
		return;
	}
	while ((r = TAILQ_FIRST(&g->reqs)) != NULL) {
		TAILQ_REMOVE(&g->reqs, r, link);
		if (o->res && PQntuples(o->res) == (int)g->rows) {
			struct write_result *res = xcalloc(r->n, sizeof(*res));
			size_t i;

			for (i = 0; i < r->n; i++)
				parse_row(o->res, row++, &res[i]);
			r->done(res, r->n, o, r->arg);
			free(res);
		} else {
			struct pg_outcome failed = *o;

			failed.res = NULL;
			if (o->res)
				snprintf(failed.error, sizeof(failed.error), "the write returned %d rows for %zu abilities",
					 PQntuples(o->res), g->rows);
			r->done(NULL, r->n, &failed, r->arg);
		}
		free(r);
	}
	free(g);
	pump(s);
}

static void send_group(struct store *s, struct write_group *g)
{
	struct buf p[12];
	struct pg_param params[13];
	int k;

	memset(p, 0, sizeof(p));
	build_params(g, p);
	for (k = 0; k < 12; k++)
		params[k < 11 ? k : 12] = (struct pg_param){p[k].data, p[k].len, true};
	params[11] = (struct pg_param){s->grace, strlen(s->grace), false};
	s->in_flight++;
	pgpool_execute(s->pool, &write_stmt, 13, params, on_group_done, g);
	for (k = 0; k < 12; k++)
		buf_free(&p[k]);
}

/* Takes waiting requests into a group: in arrival order, no ability twice, up to group_max rows. */
static struct write_group *take_group(struct store *s)
{
	struct write_group *g = xcalloc(1, sizeof(*g));
	struct write_req *r;

	g->s = s;
	TAILQ_INIT(&g->reqs);
	while ((r = TAILQ_FIRST(&s->waiting)) != NULL) {
		size_t i;
		bool clash = false;

		if (g->rows && (r->alone || g->rows + r->n > (size_t)s->o.group_max))
			break;
		for (i = 0; i < r->n && !clash; i++)
			clash = group_has(g, &r->items[i]);
		if (clash)
			break;
		TAILQ_REMOVE(&s->waiting, r, link);
		TAILQ_INSERT_TAIL(&g->reqs, r, link);
		g->rows += r->n;
		if (r->alone)
			break;
	}
	return g;
}

static void pump(struct store *s)
{
	while (s->in_flight < s->o.write_concurrency && !TAILQ_EMPTY(&s->waiting))
		send_group(s, take_group(s));
}

void store_write(struct store *s, const struct ability *items, size_t n, store_write_fn done, void *arg)
{
	struct write_req *r = xcalloc(1, sizeof(*r));

	r->items = items;
	r->n = n;
	r->done = done;
	r->arg = arg;
	TAILQ_INSERT_TAIL(&s->waiting, r, link);
	pump(s);
}

/* ---- single statements ------------------------------------------------------------ */

void store_get(struct store *s, const char *ability_id, bool with_embedding, pg_done_fn done, void *arg)
{
	struct buf sql = BUF_INIT;
	const char *params[1] = {ability_id};

	buf_printf(&sql, "SELECT %s %s %s WHERE a.ability_id = $1", row_columns,
		   with_embedding ? "a.embedding::text," : "NULL::text,", row_sync_columns);
	pgpool_query(s->pool, sql.data, 1, params, done, arg);
	buf_free(&sql);
}

void store_list(struct store *s, const char *service, const char *cursor, int limit, pg_done_fn done, void *arg)
{
	struct buf sql = BUF_INIT;
	char lim[16];
	const char *params[3] = {service, cursor, lim};

	snprintf(lim, sizeof(lim), "%d", limit);
	buf_printf(&sql, "SELECT %s NULL::text, %s WHERE ($1::text IS NULL OR a.service_name = $1)"
		   " AND ($2::text IS NULL OR a.ability_id > $2) ORDER BY a.ability_id LIMIT $3::int", row_columns,
		   row_sync_columns);
	pgpool_query(s->pool, sql.data, 3, params, done, arg);
	buf_free(&sql);
}

void store_delete_lookup(struct store *s, const char *ability_id, pg_done_fn done, void *arg)
{
	const char *params[1] = {ability_id};

	pgpool_query(s->pool, delete_lookup_sql, 1, params, done, arg);
}

void store_delete(struct store *s, const char *ability_id, const char *blob_id, int64_t vector_id, pg_done_fn done,
		  void *arg)
{
	char vid[24];
	const char *params[4] = {ability_id, blob_id, vid, s->grace};

	snprintf(vid, sizeof(vid), "%lld", (long long)vector_id);
	pgpool_query(s->pool, delete_sql, 4, params, done, arg);
}

void store_status(struct store *s, pg_done_fn done, void *arg)
{
	pgpool_query(s->pool, status_sql, 0, NULL, done, arg);
}

/* A text parameter. */
static struct pg_param text_param(const char *s)
{
	return (struct pg_param){s, s ? strlen(s) : 0, false};
}

void store_claim(struct store *s, int limit, long lease_s, pg_done_fn done, void *arg)
{
	char lim[16], lease[32];
	struct pg_param params[2];

	snprintf(lim, sizeof(lim), "%d", limit);
	snprintf(lease, sizeof(lease), "%ld seconds", lease_s);
	params[0] = text_param(lim);
	params[1] = text_param(lease);
	pgpool_execute(s->pool, &claim_stmt, 2, params, done, arg);
}

void store_finish_pushes(struct store *s, const struct push_done *items, size_t n, pg_done_fn done, void *arg)
{
	struct buf b[7];
	struct pg_array arr[7];
	struct pg_param params[8];
	char attempts[16];
	size_t i;
	int k;

	memset(b, 0, sizeof(b));
	pg_array_begin(&arr[0], &b[0], PG_OID_TEXT);
	pg_array_begin(&arr[1], &b[1], PG_OID_INT8);
	for (k = 2; k < 6; k++)
		pg_array_begin(&arr[k], &b[k], PG_OID_TEXT);
	pg_array_begin(&arr[6], &b[6], PG_OID_BOOL);
	for (i = 0; i < n; i++) {
		const struct push_done *d = &items[i];
		char retry[32];

		snprintf(retry, sizeof(retry), "%ld milliseconds", d->retry_in_ms);
		pg_array_text(&arr[0], d->ability_id, strlen(d->ability_id));
		pg_array_int8(&arr[1], d->generation);
		pg_array_text(&arr[2], d->stale, d->stale ? strlen(d->stale) : 0);
		pg_array_text(&arr[3], d->error, d->error ? strlen(d->error) : 0);
		pg_array_text(&arr[4], retry, strlen(retry));
		pg_array_text(&arr[5], d->content_hash, d->content_hash ? strlen(d->content_hash) : 0);
		pg_array_bool(&arr[6], d->permanent);
	}
	for (k = 0; k < 7; k++)
		pg_array_end(&arr[k]);
	snprintf(attempts, sizeof(attempts), "%d", s->o.max_attempts);
	/* $1..$5 the arrays, $6 max attempts, $7 content hashes, $8 permanent. */
	for (k = 0; k < 5; k++)
		params[k] = (struct pg_param){b[k].data, b[k].len, true};
	params[5] = text_param(attempts);
	params[6] = (struct pg_param){b[5].data, b[5].len, true};
	params[7] = (struct pg_param){b[6].data, b[6].len, true};
	pgpool_execute(s->pool, &finish_stmt, 8, params, done, arg);
	for (k = 0; k < 7; k++)
		buf_free(&b[k]);
}

void store_by_vectors(struct store *s, const char *service, const char *ids, pg_done_fn done, void *arg)
{
	const char *params[2] = {service, ids};

	pgpool_query(s->pool,
		     "SELECT ability_id, vector_id, ability_name, description, metadata::text FROM public.abilities"
		     " WHERE service_name = $1 AND vector_id = ANY($2::int[])",
		     2, params, done, arg);
}

void store_last_reconcile(struct store *s, pg_done_fn done, void *arg)
{
	pgpool_query(s->pool,
		     "SELECT report::text, id, status, to_char(started_at AT TIME ZONE 'UTC',"
		     " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM abilitysync.reconcile_runs ORDER BY id DESC LIMIT 1",
		     0, NULL, done, arg);
}

void store_job(struct store *s, const char *job_id, pg_done_fn done, void *arg)
{
	const char *params[1] = {job_id};

	pgpool_query(s->pool,
		     "SELECT id, status, service_name, total, done, failed,"
		     " to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
		     " to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
		     " to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), error"
		     " FROM abilitysync.restore_jobs WHERE id = $1::bigint",
		     1, params, done, arg);
}

void store_retry_failed(struct store *s, pg_done_fn done, void *arg)
{
	pgpool_query(s->pool, retry_failed_sql, 0, NULL, done, arg);
}

struct store *store_new(struct pgpool *pool, const struct store_opts *o)
{
	struct store *s = xcalloc(1, sizeof(*s));

	s->pool = pool;
	s->o = *o;
	TAILQ_INIT(&s->waiting);
	snprintf(s->grace, sizeof(s->grace), "%ld seconds", o->push_grace_s);
	return s;
}

void store_free(struct store *s)
{
	struct write_req *r;
	struct pg_outcome o;

	if (!s)
		return;
	memset(&o, 0, sizeof(o));
	o.unavailable = true;
	snprintf(o.error, sizeof(o.error), "shutting down");
	while ((r = TAILQ_FIRST(&s->waiting)) != NULL) {
		TAILQ_REMOVE(&s->waiting, r, link);
		r->done(NULL, r->n, &o, r->arg);
		free(r);
	}
	free(s);
}
