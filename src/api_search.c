/* Similarity search: the vector DB's hits, joined with the mirror so only live abilities are answered. */
#include "api_call.h"

#include "vdbid.h"

#include <event2/event.h>

#define SEARCH_K_DEFAULT 10
#define SEARCH_K_MAX 100
#define SEARCH_POLL_MS 25 /* consistency=strong: how often the backlog is looked at */
#define SEARCH_FETCH_MAX 400 /* hits asked of the vector DB at most, to find k live ones */

/* ---- POST /v1/search ---------------------------------------------------------------------------- */

static json_t *hit_json(json_t *hits, size_t i, json_t *row_attrs)
{
	json_t *attrs = json_array_get(json_object_get(hits, "attributes"), i);
	json_t *o = json_pack("{s:I, s:f}", "vector_id", json_integer_value(json_array_get(json_object_get(hits, "ids"), i)),
			      "distance", json_number_value(json_array_get(json_object_get(hits, "distances"), i)));
	static const char *const keys[] = {"ability_id", "ability_name", "description"};
	size_t k;

	for (k = 0; k < ARRAY_LEN(keys); k++) {
		json_t *v = row_attrs ? json_object_get(row_attrs, keys[k]) : json_object_get(attrs, keys[k]);

		json_object_set(o, keys[k], v ? v : json_null());
	}
	json_object_set(o, "metadata", row_attrs ? json_object_get(row_attrs, "metadata") : json_null());
	json_object_set_new(o, "in_mirror", json_boolean(row_attrs != NULL));
	return o;
}

/*
 * A search: k live hits are wanted. The vector DB is asked for more than k
 * (a hit whose mirror row is gone, a delete on its way, is dropped), and
 * asked again for twice as many while it answered all it was asked and fewer
 * than k were live, up to SEARCH_FETCH_MAX.
 */
struct search {
	struct jspan emb;             /* in the request's body, alive as long as the call */
	long k, fetch;
	double min_score;             /* -2: any */
	char blob[ABILITY_TEXT_MAX * 2 + 16];
	bool strong;                  /* ?consistency=strong: the service's earlier writes first */
	bool consistent;              /* ... and they were all in the vector DB when it was asked */
	int64_t deadline_ms;          /* how long they are waited for */
	char as_of[64];               /* the moment the search came, as Postgres tells time */
	struct event *wait;
};

void search_free(struct search *s)
{
	if (!s)
		return;
	if (s->wait)
		event_free(s->wait);
	free(s);
}

static void on_searched(const struct vdb_result *r, void *arg);

static bool ask_again(struct call *c, size_t live)
{
	struct search *s = c->search;
	size_t asked = json_array_size(json_object_get(c->hits, "ids"));

	if (live >= (size_t)s->k || asked < (size_t)s->fetch || s->fetch >= SEARCH_FETCH_MAX)
		return false;
	s->fetch = s->fetch * 2 > SEARCH_FETCH_MAX ? SEARCH_FETCH_MAX : s->fetch * 2;
	json_decref(c->hits);
	c->hits = NULL;
	vdb_query(c->api->svc->vdb, s->blob, s->emb.p, s->emb.len, (int)s->fetch, on_searched, c);
	return true;
}

/* Joins the vector DB's hits with the mirror's rows (rows NULL: no mirror, every hit counts). */
static void reply_hits(struct call *c, const struct vector_row *rows, size_t nrows, bool mirror)
{
	json_t *ids = json_object_get(c->hits, "ids"), *results = json_array();
	json_t *distances = json_object_get(c->hits, "distances");
	size_t i, r, live = 0;

	for (i = 0; i < json_array_size(ids) && live < (size_t)c->search->k; i++) {
		json_t *row = NULL, *hit;

		if (1.0 - json_number_value(json_array_get(distances, i)) < c->search->min_score)
			break; /* nearest first: the rest are further */
		for (r = 0; rows && r < nrows && !row; r++)
			if (rows[r].vector_id == json_integer_value(json_array_get(ids, i)))
				row = json_pack("{s:s, s:s, s:s, s:o}", "ability_id", rows[r].ability_id, "ability_name",
						rows[r].ability_name, "description", rows[r].description, "metadata",
						json_or_null(rows[r].metadata));
		if (mirror && !row)
			continue; /* deleted, or on its way out: not a result */
		hit = hit_json(c->hits, i, row);
		json_object_set_new(hit, "score", json_real(1.0 - json_number_value(json_array_get(distances, i))));
		json_array_append_new(results, hit);
		json_decref(row);
		live++;
	}
	if (i == json_array_size(ids) && mirror && ask_again(c, live)) {
		json_decref(results);
		return;
	}
	if (c->search->strong)
		reply_json(c, 200, json_pack("{s:o, s:I, s:s}", "results", results, "count",
					     (json_int_t)json_array_size(results), "consistency",
					     c->search->consistent ? "strong" : "eventual"));
	else
		reply_json(c, 200, json_pack("{s:o, s:I}", "results", results, "count",
					     (json_int_t)json_array_size(results)));
}

static void on_search_rows(const struct vector_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;

	if (!o->res)
		log_warn(COMP, "req=%s: search results not joined with the mirror: %s", c->id, o->error);
	reply_hits(c, o->res ? rows : NULL, n, o->res != NULL);
}

static void on_searched(const struct vdb_result *r, void *arg)
{
	struct call *c = arg;
	struct buf ids = BUF_INIT;
	json_t *x;
	size_t i;

	if (r->status == VDB_NOT_FOUND) {
		/* No blob for that service yet: nothing registered there. */
		reply_json(c, 200, json_pack("{s:[], s:i}", "results", "count", 0));
		return;
	}
	if (r->status != VDB_OK) {
		reply_vdb_failure(c, r->status, r->error);
		return;
	}
	c->hits = json_incref(r->reply);
	if (!c->api->svc->store) {
		reply_hits(c, NULL, 0, false);
		return;
	}
	buf_putc(&ids, '{');
	json_array_foreach(json_object_get(c->hits, "ids"), i, x)
		buf_printf(&ids, "%s%lld", i ? "," : "", (long long)json_integer_value(x));
	buf_putc(&ids, '}');
	store_by_vectors(c->api->svc->store, c->path_id, ids.data, on_search_rows, c);
	buf_free(&ids);
}

/* Checks {"service_name", "embedding", "k"?}: the embedding in place, the rest with jansson. */
bool api_parse_search(struct jspan body, size_t dim, struct jspan *emb, char **service, long *k, double *min_score,
		      struct ability_error *err)
{
	const char *start = js_skip_ws(body.p, body.p + body.len);
	struct buf rest = BUF_INIT;
	struct js_error je = {.what = NULL};
	json_error_t jerr;
	json_t *o = NULL, *v;
	const char *key;
	size_t count;
	bool dup, ok = false;

	memset(err, 0, sizeof(*err));
	*service = NULL;
	if (memchr(body.p, '\0', body.len)) /* never JSON, and jansson reads some as the end of the text */
		return ability_refuse(err, E_MALFORMED_JSON, "", "the body is not valid JSON: a NUL byte at byte %zu",
				      (size_t)((const char *)memchr(body.p, '\0', body.len) - body.p));
	if (start == body.p + body.len || *start != '{' || !js_member(body, "embedding", emb, &dup))
		return ability_refuse(err, E_MISSING_FIELD, "embedding",
			      "the body must be an object with service_name and embedding");
	if (!js_number_array(*emb, &count, &je))
		return ability_refuse(err, E_INVALID_EMBEDDING, "embedding", "embedding[%zu]: %s", je.index, je.what);
	if (count != dim)
		return ability_refuse(err, E_WRONG_DIMENSION, "embedding", "embedding has %zu numbers; EMBEDDING_DIM is %zu",
			      count, dim);
	buf_append(&rest, body.p, (size_t)(emb->p - body.p));
	buf_append(&rest, "null", 4); /* nothing can extend it into another value (a 0 could: [...].5) */
	buf_append(&rest, emb->p + emb->len, (size_t)(body.p + body.len - emb->p - emb->len));
	o = json_loadb(rest.data, rest.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!o) {
		ability_refuse(err, E_MALFORMED_JSON, "", "the body is not valid JSON: %s", jerr.text);
		goto out;
	}
	json_object_foreach(o, key, v) {
		if (strcmp(key, "service_name") && strcmp(key, "embedding") && strcmp(key, "k") && strcmp(key, "min_score")) {
			ability_refuse(err, E_UNKNOWN_FIELD, key,
				       "%s is not a field of a search (service_name, embedding, k, min_score)", key);
			goto out;
		}
	}
	v = json_object_get(o, "service_name");
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > ABILITY_TEXT_MAX) {
		ability_refuse(err, E_INVALID_FIELD, "service_name", "service_name must be a string of 1 to %d bytes",
		       ABILITY_TEXT_MAX);
		goto out;
	}
	v = json_object_get(o, "k");
	*k = v ? (long)json_integer_value(v) : SEARCH_K_DEFAULT;
	if (v && (!json_is_integer(v) || *k < 1 || *k > SEARCH_K_MAX)) {
		ability_refuse(err, E_INVALID_FIELD, "k", "k must be an integer from 1 to %d", SEARCH_K_MAX);
		goto out;
	}
	v = json_object_get(o, "min_score");
	*min_score = v ? json_number_value(v) : -2.0; /* cosine similarity is never below -1 */
	if (v && (!json_is_number(v) || *min_score < -1.0 || *min_score > 1.0)) {
		ability_refuse(err, E_INVALID_FIELD, "min_score", "min_score must be a number from -1 to 1 (a cosine "
			       "similarity: 1 - distance)");
		goto out;
	}
	*service = xstrdup(json_string_value(json_object_get(o, "service_name")));
	ok = true;
out:
	json_decref(o);
	buf_free(&rest);
	return ok;
}

static void ask_vdb(struct call *c)
{
	struct search *s = c->search;

	vdb_query(c->api->svc->vdb, s->blob, s->emb.p, s->emb.len, (int)s->fetch, on_searched, c);
}

static void on_lagging(long n, const char *as_of, const struct pg_outcome *o, void *arg);

static void on_wait_over(evutil_socket_t fd, short what, void *arg)
{
	struct call *c = arg;

	(void)fd, (void)what;
	store_count_lagging(c->api->svc->store, c->search->blob, c->search->as_of, on_lagging, c);
}

/*
 * ?consistency=strong: the service's changes acknowledged before the search
 * came are waited for (SYNC_WAIT_MS, or Prefer: wait=N) before the vector DB is
 * asked; the answer says whether they all made it ("strong") or not.
 */
static void on_lagging(long n, const char *as_of, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct search *s = c->search;
	struct timeval tv = {0, SEARCH_POLL_MS * 1000};

	if (!o->res)
		log_warn(COMP, "req=%s: the search does not wait for earlier writes: %s", c->id, o->error);
	if (!o->res || n == 0 || clock_mono_ms() >= s->deadline_ms) {
		s->consistent = o->res && n == 0;
		ask_vdb(c);
		return;
	}
	snprintf(s->as_of, sizeof(s->as_of), "%s", as_of);
	if (!s->wait)
		s->wait = evtimer_new(c->api->svc->base, on_wait_over, c);
	evtimer_add(s->wait, &tv);
}

void h_search(struct call *c)
{
	struct search *s;
	struct ability_error err;
	const char *consistency = query_value(c, "consistency");

	if (consistency && strcmp(consistency, "strong") != 0 && strcmp(consistency, "eventual") != 0) {
		reply_error(c, E_INVALID_PARAMETER, "consistency", "consistency is strong or eventual, not %s", consistency);
		return;
	}
	if (!json_content(c))
		return;
	s = c->search = xcalloc(1, sizeof(*s));
	if (!api_parse_search(body_of(c), c->api->o.dim, &s->emb, &c->path_id, &s->k, &s->min_score, &err)) {
		reply_refusal(c, &err);
		return;
	}
	/* Half as many again, and a few: most of the time one question is enough. */
	s->fetch = s->k + s->k / 2 + 5;
	vdb_blob_name(c->path_id, strlen(c->path_id), s->blob, sizeof(s->blob));
	s->strong = consistency && strcmp(consistency, "strong") == 0;
	if (!s->strong || !c->api->svc->store) { /* vector-DB-only: a write is answered once it is there */
		s->consistent = true;
		ask_vdb(c);
		return;
	}
	s->deadline_ms = clock_mono_ms() + sync_wait_of(c);
	store_count_lagging(c->api->svc->store, s->blob, NULL, on_lagging, c);
}
