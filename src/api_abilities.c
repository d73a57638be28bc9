/* Abilities one at a time or in batches: register, read, list, delete (the outbox does the syncing). */
#include "api_call.h"

#include "fullset.h"

/* ---- POST /v1/abilities ----------------------------------------------------------------- */

static const char *status_text(enum outbox_status st)
{
	switch (st) {
	case OB_CREATED: return "created";
	case OB_UPDATED: return "updated";
	case OB_UNCHANGED: return "unchanged";
	case OB_REPAIRED: return "repaired";
	case OB_COLLISION: return "collision";
	case OB_REFUSED: return "refused";
	case OB_WRITTEN: return "written";
	}
	return "?";
}

/* Per ability: what was done, and where its sync stands now. */
static json_t *item_json(const struct ability *a, const struct outbox_item *r)
{
	json_t *o = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s}", "ability_id", a->ability_id, "vector_id",
			      (json_int_t)a->vector_id, "blob_id", a->blob_id, "content_hash", a->content_hash, "status",
			      status_text(r->status), "sync_state", r->sync_state);

	if (r->error && strcmp(r->sync_state, "failed") == 0)
		json_object_set_new(o, "last_error", json_string(r->error));
	return o;
}

static void reply_collision(struct call *c, const struct ability *items, const struct outbox_answer *a)
{
	size_t i;

	for (i = 0; i < a->n; i++) {
		char field[48];

		if (a->items[i].status != OB_COLLISION)
			continue;
		snprintf(field, sizeof(field), c->batch ? "abilities[%zu].ability_id" : "ability_id", i);
		reply_error(c, E_VECTOR_ID_COLLISION, field,
			    "ability_id %s maps to vector_id %lld in %s, which ability %s already uses; nothing "
			    "was written. Choose another ability_id", items[i].ability_id, (long long)items[i].vector_id,
			    items[i].blob_id, a->items[i].other);
		return;
	}
}

/* A 202 says where to look next: the ability (the first one not yet in the vector DB, of a batch). */
static void locate(struct call *c, const char *ability_id)
{
	char href[300];

	snprintf(href, sizeof(href), "/v1/abilities/%s", ability_id);
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Location", href);
}

/* The item was written to the stores (not unchanged, refused or a collision). */
static bool wrote(const struct outbox_item *r)
{
	return r->status == OB_CREATED || r->status == OB_UPDATED || r->status == OB_REPAIRED ||
	       r->status == OB_WRITTEN;
}

/*
 * 201: both stores hold what was written; 202: Postgres does and the vector DB
 * does not yet (pending, or failed: refused, with last_error); 200: nothing
 * needed writing (unchanged).
 */
static int written_status(const struct outbox_answer *a)
{
	bool written = false, pending = false;
	size_t i;

	for (i = 0; i < a->n; i++) {
		const struct outbox_item *r = &a->items[i];

		if (!wrote(r))
			continue;
		written = true;
		pending = pending || strcmp(r->sync_state, "synced") != 0;
	}
	return pending ? 202 : written ? 201 : 200;
}

/* The outbox's answer; the abilities are the outbox's now: `items` is only read here. */
struct registration {
	struct call *c;
	const struct ability *items;
};

static void on_registered(const struct outbox_answer *a, void *arg)
{
	struct registration *g = arg;
	struct call *c = g->c;
	json_t *results, *counts;
	size_t i;

	if (a->pg) {
		reply_pg_failure(c, a->pg);
		goto out;
	}
	if (a->vdb != VDB_OK) { /* vector-DB-only: nothing is acknowledged unless the vector DB has it */
		reply_vdb_failure(c, a->vdb, a->vdb_error);
		goto out;
	}
	for (i = 0; i < a->n; i++) {
		if (a->items[i].status == OB_COLLISION) {
			reply_collision(c, g->items, a);
			goto out;
		}
	}
	for (i = 0; i < a->n && written_status(a) == 202; i++) {
		if (wrote(&a->items[i]) && strcmp(a->items[i].sync_state, "synced") != 0) {
			locate(c, g->items[i].ability_id);
			break;
		}
	}
	if (!c->batch) {
		reply_json(c, written_status(a), item_json(&g->items[0], &a->items[0]));
		goto out;
	}
	results = json_array();
	counts = json_object();
	for (i = 0; i < a->n; i++) {
		const char *st = status_text(a->items[i].status);

		json_array_append_new(results, item_json(&g->items[i], &a->items[i]));
		json_object_set_new(counts, st, json_integer(json_integer_value(json_object_get(counts, st)) + 1));
	}
	reply_json(c, written_status(a), json_pack("{s:o, s:o}", "results", results, "counts", counts));
out:
	free(g);
}

void h_abilities_post(struct call *c)
{
	struct ability_error err;
	struct jspan body;
	struct ability *items = NULL;
	struct registration *g;
	size_t n = 0;
	struct api *a = c->api;

	if (!json_content(c))
		return;
	body = body_of(c);
	if (!ability_parse_body(body.p, body.len, a->o.dim, a->o.batch_max, &items, &n, &c->batch, &err)) {
		reply_refusal(c, &err);
		return;
	}
	g = xcalloc(1, sizeof(*g));
	g->c = c;
	g->items = items;
	outbox_register(a->svc->outbox, items, n, c->id, sync_wait_of(c), on_registered, g);
}

/* ---- GET /v1/abilities/{id}, GET /v1/abilities -------------------------------------------- */

/* One ability as the API shows it (the embedding is spliced in by the caller). */
static json_t *row_json(const struct ability_row *w)
{
	json_t *sync = !w->has_sync ? json_null()
		: json_pack("{s:o, s:o, s:o, s:I, s:o, s:o}", "state", string_or_null(w->state), "content_hash",
			    string_or_null(w->content_hash), "blob_id", string_or_null(w->blob_id), "attempts",
			    (json_int_t)w->attempts, "last_error", string_or_null(w->last_error), "synced_at",
			    string_or_null(w->synced_at));

	return json_pack("{s:s, s:I, s:s, s:s, s:s, s:o, s:o, s:b, s:o, s:o, s:o}", "ability_id", w->ability_id,
			 "vector_id", (json_int_t)w->vector_id, "ability_name", w->ability_name, "service_name",
			 w->service_name, "description", w->description, "metadata", json_or_null(w->metadata),
			 "dynamic_header_keys", json_or_null(w->dynamic_header_keys), "dynamic_headers_required",
			 w->dynamic_headers_required, "created_at", string_or_null(w->created_at), "updated_at",
			 string_or_null(w->updated_at), "sync", sync);
}

static void on_got(const struct ability_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct buf out = BUF_INIT;
	json_t *row;
	char *text;

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	if (n == 0) {
		reply_error(c, E_NOT_FOUND, NULL, "no ability %s", c->path_id);
		return;
	}
	row = row_json(&rows[0]);
	text = json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(row);
	/* The embedding goes out as the mirror holds it, without a trip through doubles. */
	buf_append(&out, text, strlen(text) - 1);
	if (rows[0].embedding)
		buf_printf(&out, ",\"embedding\":%s", rows[0].embedding);
	buf_putc(&out, '}');
	reply(c, 200, out.data, out.len);
	free(text);
	buf_free(&out);
}

void h_ability_get(struct call *c)
{
	const char *inc = query_value(c, "include");

	if (!needs_postgres(c, "reading an ability"))
		return;
	if (inc && strcmp(inc, "embedding") != 0) {
		reply_error(c, E_INVALID_PARAMETER, "include", "include accepts only \"embedding\"");
		return;
	}
	store_get(c->api->svc->store, c->path_id, inc != NULL, on_got, c);
}

static void on_listed(const struct ability_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	json_t *items;
	size_t limit = (size_t)c->limit, r;

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	items = json_array();
	for (r = 0; r < n && r < limit; r++)
		json_array_append_new(items, row_json(&rows[r]));
	reply_json(c, 200, json_pack("{s:o, s:o}", "abilities", items, "next_cursor",
				     n > limit ? json_string(rows[limit - 1].ability_id) : json_null()));
}

void h_abilities_list(struct call *c)
{
	int limit;

	if (!needs_postgres(c, "listing abilities"))
		return;
	if (!page_limit(c, &limit))
		return;
	c->limit = limit;
	/* One more than asked tells whether there is a next page. */
	store_list(c->api->svc->store, query_value(c, "service_name"), query_value(c, "cursor"), limit + 1,
		   on_listed, c);
}

/* ---- DELETE /v1/abilities/{id} -------------------------------------------------------------- */

static void on_deleted(const struct outbox_deleted *d, void *arg)
{
	struct call *c = arg;

	if (d->pg)
		reply_pg_failure(c, d->pg);
	else if (!d->found)
		reply_error(c, E_NOT_FOUND, NULL, "no ability %s", c->path_id);
	else if (strcmp(d->sync_state, "deleted") == 0)
		reply_json(c, 200, json_pack("{s:s, s:s}", "ability_id", c->path_id, "sync_state", d->sync_state));
	else {
		locate(c, c->path_id);
		reply_json(c, 202,
			   json_pack("{s:s, s:s}", "ability_id", c->path_id, "sync_state", d->sync_state));
	}
}

void h_ability_delete(struct call *c)
{
	if (!needs_postgres(c, "deleting an ability"))
		return;
	outbox_delete(c->api->svc->outbox, c->path_id, c->id, sync_wait_of(c), on_deleted, c);
}

/* ---- PUT /v1/services/{service}/abilities ---------------------------------------------- */

static const char *const set_actions[] = {"add", "update", "unchanged", "delete", "collision", "refused"};

static void reply_set_collision(struct call *c, const struct fullset_answer *a)
{
	size_t i;

	for (i = 0; i < a->n && a->rows[i].action != SET_COLLISION; i++)
		;
	reply_error(c, E_VECTOR_ID_COLLISION, NULL, "ability_id %s maps to the vector_id that ability %s already "
		    "uses in this service's blob; nothing was changed. Choose another ability_id", a->rows[i].ability_id,
		    a->rows[i].other);
}

/*
 * The plan, or what was done: counts and ids per action. 200 for a dry run
 * or a set that changed nothing; 202 when the vector DB has changes to take
 * (the retry worker pushes them; the service's listing shows their state).
 */
static void on_set(const struct fullset_answer *a, void *arg)
{
	struct call *c = arg;
	bool dry = query_value(c, "dry_run") && strcmp(query_value(c, "dry_run"), "true") == 0;
	json_t *lists[4], *counts, *j;
	size_t i, changed = 0;
	char href[300];

	if (a->refused) {
		reply_refusal(c, a->refused);
		return;
	}
	if (a->pg) {
		reply_pg_failure(c, a->pg);
		return;
	}
	for (i = 0; i < a->n; i++) {
		if (a->rows[i].action == SET_COLLISION) {
			reply_set_collision(c, a);
			return;
		}
	}
	for (i = 0; i < 4; i++)
		lists[i] = json_array();
	for (i = 0; i < a->n; i++) {
		if (a->rows[i].action <= SET_DELETE)
			json_array_append_new(lists[a->rows[i].action], json_string(a->rows[i].ability_id));
		changed += a->rows[i].action != SET_UNCHANGED;
	}
	counts = json_object();
	j = json_pack("{s:s, s:b, s:I}", "service_name", c->path_id, "dry_run", dry, "abilities", (json_int_t)a->count);
	for (i = 0; i < 4; i++) {
		json_object_set_new(counts, set_actions[i], json_integer((json_int_t)json_array_size(lists[i])));
		json_object_set_new(j, set_actions[i], lists[i]);
	}
	json_object_set_new(j, "counts", counts);
	if (!dry && changed) {
		snprintf(href, sizeof(href), "/v1/abilities?service_name=%s", c->path_id);
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "Location", href);
	}
	reply_json(c, !dry && changed ? 202 : 200, j);
}

/* PUT /v1/services/{service}/abilities[?dry_run=true] {"abilities": [...]}: the service's complete set. */
void h_service_set(struct call *c)
{
	struct api *a = c->api;
	const char *dry = query_value(c, "dry_run");
	struct fullset_opts o;
	struct jspan body;

	if (!needs_postgres(c, "a full-set sync"))
		return;
	if (strlen(c->path_id) > ABILITY_TEXT_MAX) {
		reply_error(c, E_INVALID_PARAMETER, "service_name", "the service name is over %d bytes", ABILITY_TEXT_MAX);
		return;
	}
	if (dry && strcmp(dry, "true") != 0 && strcmp(dry, "false") != 0) {
		reply_error(c, E_INVALID_PARAMETER, "dry_run", "dry_run is true or false, not %s", dry);
		return;
	}
	if (!json_content(c))
		return;
	body = body_of(c);
	o = (struct fullset_opts){a->svc->base, c->path_id, a->o.dim, a->o.batch_max, dry && strcmp(dry, "true") == 0,
				  c->id};
	fullset_run(a->svc->store, a->svc->outbox, body.p, body.len, &o, on_set, c);
}
