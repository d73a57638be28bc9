#include "api.h"

#include "ability.h"
#include "buf.h"
#include "clock.h"
#include "hash.h"
#include "jsonscan.h"
#include "log.h"
#include "mem.h"
#include "tcp.h"
#include "text.h"
#include "vdbid.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#define COMP "http"
#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define SEARCH_K_DEFAULT 10
#define SEARCH_K_MAX 100

struct api {
	struct service *svc;
	struct api_opts o;
	struct evhttp *http;
	struct evhttp_bound_socket *sock;
	uint8_t (*keys)[SHA256_LEN];   /* sha256 of each key: compared in constant time, length hidden */
	size_t nkeys;
	SSL_CTX *ssl;
	int in_flight;
	uint64_t next_id;
	char address[128];
};

/*
 * One request. It holds one reference for its answer (released by reply) and
 * one per push it started (released when the push is over: the push reads the
 * abilities the call holds, and may outlive a 202 answer).
 */
struct call {
	struct api *api;
	struct evhttp_request *req;
	enum route route;
	char id[72];
	int64_t start_us;
	int refs;
	bool replied;
	char *path_id;                /* {id} of /v1/abilities/{id}, decoded */
	struct evkeyvalq query;
	struct ability *items;        /* POST /v1/abilities */
	size_t n;
	bool batch;
	struct write_result *writes;
	bool *pushed;                 /* per item, once the push is over */
	bool push_over;
	struct event *wait;           /* answer 202 when the vector DB is slow */
	char delete_blob[ABILITY_TEXT_MAX * 2 + 16];
	int64_t delete_vector;
	json_t *hits;                 /* search: the vector DB's answer, while the mirror is asked */
	int limit;                    /* list: the page size asked */
};

/* ---- answers ------------------------------------------------------------------ */

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Entity";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	default: return "Status";
	}
}

static void call_release(struct call *c)
{
	size_t i;

	if (--c->refs > 0)
		return;
	c->api->in_flight--;
	if (c->wait)
		event_free(c->wait);
	for (i = 0; i < c->n; i++)
		ability_free(&c->items[i]);
	free(c->items);
	free(c->writes);
	free(c->pushed);
	free(c->path_id);
	json_decref(c->hits);
	evhttp_clear_headers(&c->query);
	free(c);
}

static void reply_typed(struct call *c, int status, const char *type, const char *body, size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
	double secs = (double)(clock_mono_us() - c->start_us) / 1e6;

	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "X-Request-Id", c->id);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evbuffer_add(evhttp_request_get_output_buffer(c->req), body, len);
	evhttp_send_reply(c->req, status, reason(status), NULL);
	c->replied = true;
	http_metrics_observe(&c->api->svc->http, c->route, status, secs);
	if (status >= 500 && c->route != ROUTE_READYZ) /* not ready is a normal answer there */
		log_warn(COMP, "req=%s %s -> %d in %.1f ms: %.*s", c->id, route_name(c->route), status, secs * 1000,
			 (int)(len > 300 ? 300 : len), body);
	else
		log_debug(COMP, "req=%s %s -> %d in %.1f ms", c->id, route_name(c->route), status, secs * 1000);
	call_release(c);
}

static void reply(struct call *c, int status, const char *body, size_t len)
{
	reply_typed(c, status, "application/json", body, len);
}

static void reply_json(struct call *c, int status, json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));

	if (!text)
		abort();
	reply(c, status, text, strlen(text));
	free(text);
	json_decref(j);
}

static void reply_error(struct call *c, int status, const char *code, const char *field, const char *fmt, ...)
	PRINTF_LIKE(5, 6);

static void reply_error(struct call *c, int status, const char *code, const char *field, const char *fmt, ...)
{
	char message[700], name[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	snprintf(name, sizeof(name), "%s", field ? field : "");
	/* Messages echo ids and names from the request, which need not be UTF-8 (%ff in a path). */
	utf8_scrub(message);
	utf8_scrub(name);
	reply_json(c, status, json_pack("{s:{s:s, s:s, s:s?}}", "error", "code", code, "message", message, "field",
					*name ? name : NULL));
}

/* ---- requests -------------------------------------------------------------------- */

/* The body as one contiguous span (NUL-terminated for the parsers). */
static struct jspan body_of(struct call *c)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
	size_t len = evbuffer_get_length(in);
	struct jspan s;

	evbuffer_add(in, "", 1);
	s.p = (const char *)evbuffer_pullup(in, -1);
	s.len = len;
	return s;
}

static bool json_content(struct call *c)
{
	const char *ct = evhttp_find_header(evhttp_request_get_input_headers(c->req), "Content-Type");

	if (ct && (strncasecmp(ct, "application/json", 16) == 0) && (ct[16] == '\0' || ct[16] == ';' || ct[16] == ' '))
		return true;
	reply_error(c, 415, "unsupported_media_type", NULL, "send the body as Content-Type: application/json (got %s)",
		    ct ? ct : "none");
	return false;
}

static const char *query_value(struct call *c, const char *key)
{
	return evhttp_find_header(&c->query, key);
}

/* The first parameter whose name or value is not UTF-8 (everything sent on goes into JSON or SQL), or NULL. */
static const char *query_not_text(const struct evkeyvalq *q)
{
	const struct evkeyval *kv;
	size_t bad;

	TAILQ_FOREACH(kv, q, next) {
		if (!utf8_valid(kv->key, strlen(kv->key), &bad) || !utf8_valid(kv->value, strlen(kv->value), &bad))
			return kv->key;
	}
	return NULL;
}

static bool needs_postgres(struct call *c, const char *what)
{
	if (c->api->svc->store)
		return true;
	reply_error(c, 501, "needs_postgres", NULL, "%s needs DATABASE_URL: without Postgres abilitysync runs "
		    "vector-DB-only and keeps no mirror", what);
	return false;
}

static void reply_pg_failure(struct call *c, const struct pg_outcome *o)
{
	if (o->unavailable)
		reply_error(c, 503, "postgres_unavailable", NULL, "Postgres is unavailable: %s", o->error);
	else
		reply_error(c, 500, "postgres_error", NULL, "Postgres refused the statement: %s", o->error);
}

static void reply_vdb_failure(struct call *c, enum vdb_status st, const char *error)
{
	if (st == VDB_UNAVAILABLE || st == VDB_CANCELLED)
		reply_error(c, 503, "vector_db_unavailable", NULL, "the vector DB is unavailable: %s", error);
	else
		reply_error(c, 502, "vector_db_error", NULL, "the vector DB refused: %s", error);
}

/* ---- POST /v1/abilities ----------------------------------------------------------------- */

static const char *write_status(const struct write_result *w)
{
	if (w->outcome == WRITE_UNCHANGED)
		return "unchanged";
	return w->state[0] && strcmp(w->state, "deleted") != 0 ? "updated" : "created";
}

/* Per ability: what was done, and where its sync stands now. */
static json_t *item_json(const struct call *c, size_t i, const char **sync)
{
	const struct ability *a = &c->items[i];
	const struct write_result *w = c->writes ? &c->writes[i] : NULL;

	if (!w)
		*sync = c->pushed && c->pushed[i] ? "synced" : "failed";
	else if (w->outcome == WRITE_UNCHANGED)
		*sync = w->state[0] ? w->state : "pending";
	else
		*sync = c->pushed && c->pushed[i] ? "synced" : "pending";
	return json_pack("{s:s, s:I, s:s, s:s, s:s, s:s}", "ability_id", a->ability_id, "vector_id",
			 (json_int_t)a->vector_id, "blob_id", a->blob_id, "content_hash", a->content_hash, "status",
			 w ? write_status(w) : "written", "sync_state", *sync);
}

static void reply_written(struct call *c)
{
	json_t *results = json_array(), *counts = json_object();
	bool any_written = false, any_pending = false;
	size_t i;

	if (c->wait)
		evtimer_del(c->wait);
	for (i = 0; i < c->n; i++) {
		const char *sync;
		json_t *item = item_json(c, i, &sync);
		const char *status = json_string_value(json_object_get(item, "status"));

		json_object_set_new(counts, status, json_integer(json_integer_value(json_object_get(counts, status)) + 1));
		if (!c->writes || c->writes[i].outcome == WRITE_WRITTEN) {
			any_written = true;
			any_pending = any_pending || strcmp(sync, "synced") != 0;
		}
		json_array_append_new(results, item);
	}
	if (c->batch) {
		reply_json(c, any_pending ? 202 : any_written ? 201 : 200,
			   json_pack("{s:o, s:o}", "results", results, "counts", counts));
		return;
	}
	json_decref(counts);
	reply_json(c, any_pending ? 202 : any_written ? 201 : 200, json_incref(json_array_get(results, 0)));
	json_decref(results);
}

static void on_sync_wait(evutil_socket_t fd, short what, void *arg)
{
	struct call *c = arg;

	(void)fd, (void)what;
	if (!c->replied)
		reply_written(c); /* the push goes on; this answer says "pending" */
}

static void on_pushed(const bool *ok, size_t n, const char *error, enum vdb_status st, void *arg)
{
	struct call *c = arg;

	c->pushed = xcalloc(n ? n : 1, sizeof(bool));
	memcpy(c->pushed, ok, n * sizeof(bool));
	c->push_over = true;
	if (!c->replied) {
		if (!c->writes && error) /* vector-DB-only: nothing is acknowledged unless the vector DB has it */
			reply_vdb_failure(c, st, error);
		else
			reply_written(c);
	}
	call_release(c);
}

static void reply_collision(struct call *c)
{
	size_t i;

	for (i = 0; i < c->n; i++) {
		const struct ability *a = &c->items[i];
		char field[48];

		if (c->writes[i].outcome != WRITE_COLLISION)
			continue;
		snprintf(field, sizeof(field), c->batch ? "abilities[%zu].ability_id" : "ability_id", i);
		reply_error(c, 409, "vector_id_collision", field,
			    "ability_id %s maps to vector_id %lld in %s, which ability %s already uses; nothing "
			    "was written. Choose another ability_id", a->ability_id, (long long)a->vector_id,
			    a->blob_id, c->writes[i].other);
		return;
	}
}

static void on_written(const struct write_result *res, size_t n, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct api *a = c->api;
	struct timeval wait = {a->o.sync_wait_ms / 1000, (a->o.sync_wait_ms % 1000) * 1000};
	size_t i, written = 0;

	if (!res) {
		reply_pg_failure(c, o);
		return;
	}
	c->writes = xcalloc(n, sizeof(*c->writes));
	memcpy(c->writes, res, n * sizeof(*res));
	for (i = 0; i < n; i++) {
		if (res[i].outcome == WRITE_COLLISION) {
			reply_collision(c);
			return;
		}
		written += res[i].outcome == WRITE_WRITTEN;
	}
	if (written == 0) {
		reply_written(c);
		return;
	}
	/* Committed: from here the ability reaches the vector DB eventually; try now. */
	c->refs++;
	c->wait = evtimer_new(a->svc->base, on_sync_wait, c);
	evtimer_add(c->wait, &wait);
	pusher_push(a->svc->pusher, c->items, c->writes, c->n, on_pushed, c);
}

static void h_abilities_post(struct call *c)
{
	struct service *svc = c->api->svc;
	struct ability_error err;
	struct jspan body;

	if (!json_content(c))
		return;
	body = body_of(c);
	if (!ability_parse_body(body.p, body.len, c->api->o.dim, c->api->o.batch_max, &c->items, &c->n, &c->batch,
				&err)) {
		reply_error(c, err.status, err.code, err.field, "%s", err.message);
		return;
	}
	if (!svc->store) {
		/* Vector-DB-only: the answer waits for the vector DB, whatever it takes. */
		c->refs++;
		pusher_push(svc->pusher, c->items, NULL, c->n, on_pushed, c);
		return;
	}
	store_write(svc->store, c->items, c->n, on_written, c);
}

/* ---- GET /v1/abilities/{id}, GET /v1/abilities -------------------------------------------- */

static json_t *json_or_null(const char *text)
{
	json_error_t jerr;
	json_t *j = text ? json_loads(text, JSON_DECODE_ANY, &jerr) : NULL;

	return j ? j : json_null();
}

static json_t *nullable(PGresult *res, int r, int col)
{
	return PQgetisnull(res, r, col) ? json_null() : json_string(PQgetvalue(res, r, col));
}

/* One row of store_get/store_list as the API shows it (the embedding is spliced in by the caller). */
static json_t *row_json(PGresult *res, int r)
{
	json_t *sync = PQgetisnull(res, r, 11) ? json_null()
		: json_pack("{s:o, s:o, s:o, s:I, s:o, s:o}", "state", nullable(res, r, 11), "content_hash",
			    nullable(res, r, 12), "blob_id", nullable(res, r, 13), "attempts",
			    (json_int_t)atoll(PQgetvalue(res, r, 14)), "last_error", nullable(res, r, 15), "synced_at",
			    nullable(res, r, 16));

	return json_pack("{s:s, s:I, s:s, s:s, s:s, s:o, s:o, s:b, s:o, s:o, s:o}", "ability_id", PQgetvalue(res, r, 0),
			 "vector_id", (json_int_t)atoll(PQgetvalue(res, r, 1)), "ability_name", PQgetvalue(res, r, 2),
			 "service_name", PQgetvalue(res, r, 3), "description", PQgetvalue(res, r, 4), "metadata",
			 json_or_null(PQgetvalue(res, r, 5)), "dynamic_header_keys", json_or_null(PQgetvalue(res, r, 6)),
			 "dynamic_headers_required", PQgetvalue(res, r, 7)[0] == 't', "created_at",
			 nullable(res, r, 8), "updated_at", nullable(res, r, 9), "sync", sync);
}

static void on_got(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct buf out = BUF_INIT;
	json_t *row;
	char *text;

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	if (PQntuples(o->res) == 0) {
		reply_error(c, 404, "not_found", NULL, "no ability %s", c->path_id);
		return;
	}
	row = row_json(o->res, 0);
	text = json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(row);
	/* The embedding goes out as the mirror holds it, without a trip through doubles. */
	buf_append(&out, text, strlen(text) - 1);
	if (!PQgetisnull(o->res, 0, 10))
		buf_printf(&out, ",\"embedding\":%s", PQgetvalue(o->res, 0, 10));
	buf_putc(&out, '}');
	reply(c, 200, out.data, out.len);
	free(text);
	buf_free(&out);
}

static void h_ability_get(struct call *c)
{
	const char *inc = query_value(c, "include");

	if (!needs_postgres(c, "reading an ability"))
		return;
	if (inc && strcmp(inc, "embedding") != 0) {
		reply_error(c, 422, "invalid_parameter", "include", "include accepts only \"embedding\"");
		return;
	}
	store_get(c->api->svc->store, c->path_id, inc != NULL, on_got, c);
}

static void on_listed(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	json_t *items = json_array();
	int limit = c->limit;
	int r, n;

	if (!o->res) {
		json_decref(items);
		reply_pg_failure(c, o);
		return;
	}
	n = PQntuples(o->res);
	for (r = 0; r < n && r < limit; r++)
		json_array_append_new(items, row_json(o->res, r));
	reply_json(c, 200, json_pack("{s:o, s:o}", "abilities", items, "next_cursor",
				     n > limit ? json_string(PQgetvalue(o->res, limit - 1, 0)) : json_null()));
}

bool api_parse_limit(const char *text, int *limit)
{
	char *end = NULL;
	long n;

	*limit = LIST_DEFAULT;
	if (!text)
		return true;
	n = strtol(text, &end, 10);
	if (!*text || *end || n < 1 || n > LIST_MAX)
		return false;
	*limit = (int)n;
	return true;
}

static void h_abilities_list(struct call *c)
{
	int limit;

	if (!needs_postgres(c, "listing abilities"))
		return;
	if (!api_parse_limit(query_value(c, "limit"), &limit)) {
		reply_error(c, 422, "invalid_parameter", "limit", "limit must be an integer from 1 to %d", LIST_MAX);
		return;
	}
	c->limit = limit;
	/* One more than asked tells whether there is a next page. */
	store_list(c->api->svc->store, query_value(c, "service_name"), query_value(c, "cursor"), limit + 1,
		   on_listed, c);
}

/* ---- DELETE /v1/abilities/{id} -------------------------------------------------------------- */

static void on_delete_pushed(const bool *ok, size_t n, const char *error, enum vdb_status st, void *arg)
{
	struct call *c = arg;

	(void)error, (void)st;
	c->push_over = true;
	if (!c->replied) {
		evtimer_del(c->wait);
		reply_json(c, n && ok[0] ? 200 : 202, json_pack("{s:s, s:s}", "ability_id", c->path_id, "sync_state",
								 n && ok[0] ? "deleted" : "pending_delete"));
	}
	call_release(c);
}

static void on_delete_wait(evutil_socket_t fd, short what, void *arg)
{
	struct call *c = arg;

	(void)fd, (void)what;
	if (!c->replied)
		reply_json(c, 202, json_pack("{s:s, s:s}", "ability_id", c->path_id, "sync_state", "pending_delete"));
}

static void on_deleted(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct api *a = c->api;
	struct timeval wait = {a->o.sync_wait_ms / 1000, (a->o.sync_wait_ms % 1000) * 1000};

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	if (PQntuples(o->res) == 0) {
		reply_error(c, 404, "not_found", NULL, "no ability %s", c->path_id); /* deleted meanwhile */
		return;
	}
	c->refs++;
	c->wait = evtimer_new(a->svc->base, on_delete_wait, c);
	evtimer_add(c->wait, &wait);
	pusher_delete(a->svc->pusher, c->path_id, PQgetvalue(o->res, 0, 1), atoll(PQgetvalue(o->res, 0, 2)),
		      atoll(PQgetvalue(o->res, 0, 0)), on_delete_pushed, c);
}

static void on_delete_looked_up(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	const char *service;

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	if (PQntuples(o->res) == 0) {
		reply_error(c, 404, "not_found", NULL, "no ability %s", c->path_id);
		return;
	}
	service = PQgetvalue(o->res, 0, 0);
	vdb_blob_name(service, strlen(service), c->delete_blob, sizeof(c->delete_blob));
	c->delete_vector = atoll(PQgetvalue(o->res, 0, 1));
	store_delete(c->api->svc->store, c->path_id, c->delete_blob, c->delete_vector, on_deleted, c);
}

static void h_ability_delete(struct call *c)
{
	if (!needs_postgres(c, "deleting an ability"))
		return;
	store_delete_lookup(c->api->svc->store, c->path_id, on_delete_looked_up, c);
}

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

/* Joins the vector DB's hits with the mirror's rows (rows may be NULL: no mirror). */
static void reply_hits(struct call *c, PGresult *rows)
{
	json_t *ids = json_object_get(c->hits, "ids"), *results = json_array();
	size_t i;
	int r;

	for (i = 0; i < json_array_size(ids); i++) {
		json_t *row = NULL;

		for (r = 0; rows && r < PQntuples(rows) && !row; r++)
			if (atoll(PQgetvalue(rows, r, 1)) == json_integer_value(json_array_get(ids, i)))
				row = json_pack("{s:s, s:s, s:s, s:o}", "ability_id", PQgetvalue(rows, r, 0), "ability_name",
						PQgetvalue(rows, r, 2), "description", PQgetvalue(rows, r, 3), "metadata",
						json_or_null(PQgetvalue(rows, r, 4)));
		json_array_append_new(results, hit_json(c->hits, i, row));
		json_decref(row);
	}
	reply_json(c, 200, json_pack("{s:o, s:I}", "results", results, "count", (json_int_t)json_array_size(results)));
}

static void on_search_rows(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;

	if (!o->res)
		log_warn(COMP, "req=%s: search results not joined with the mirror: %s", c->id, o->error);
	reply_hits(c, o->res);
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
		reply_hits(c, NULL);
		return;
	}
	buf_putc(&ids, '{');
	json_array_foreach(json_object_get(c->hits, "ids"), i, x)
		buf_printf(&ids, "%s%lld", i ? "," : "", (long long)json_integer_value(x));
	buf_putc(&ids, '}');
	store_by_vectors(c->api->svc->store, c->path_id, ids.data, on_search_rows, c);
	buf_free(&ids);
}

static bool refuse(struct ability_error *err, int status, const char *code, const char *field, const char *fmt, ...)
	PRINTF_LIKE(5, 6);

static bool refuse(struct ability_error *err, int status, const char *code, const char *field, const char *fmt, ...)
{
	va_list ap;

	err->status = status;
	err->code = code;
	snprintf(err->field, sizeof(err->field), "%s", field);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	utf8_scrub(err->field);
	utf8_scrub(err->message);
	return false;
}

/* Checks {"service_name", "embedding", "k"?}: the embedding in place, the rest with jansson. */
bool api_parse_search(struct jspan body, size_t dim, struct jspan *emb, char **service, long *k,
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

	*service = NULL;
	if (start == body.p + body.len || *start != '{' || !js_member(body, "embedding", emb, &dup))
		return refuse(err, 422, "missing_field", "embedding",
			      "the body must be an object with service_name and embedding");
	if (!js_number_array(*emb, &count, &je))
		return refuse(err, 422, "invalid_embedding", "embedding", "embedding[%zu]: %s", je.index, je.what);
	if (count != dim)
		return refuse(err, 422, "wrong_dimension", "embedding", "embedding has %zu numbers; EMBEDDING_DIM is %zu",
			      count, dim);
	buf_append(&rest, body.p, (size_t)(emb->p - body.p));
	buf_putc(&rest, '0');
	buf_append(&rest, emb->p + emb->len, (size_t)(body.p + body.len - emb->p - emb->len));
	o = json_loadb(rest.data, rest.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!o) {
		refuse(err, 400, "malformed_json", "", "the body is not valid JSON: %s", jerr.text);
		goto out;
	}
	json_object_foreach(o, key, v) {
		if (strcmp(key, "service_name") && strcmp(key, "embedding") && strcmp(key, "k")) {
			refuse(err, 422, "unknown_field", key, "%s is not a field of a search (service_name, embedding, k)", key);
			goto out;
		}
	}
	v = json_object_get(o, "service_name");
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > ABILITY_TEXT_MAX) {
		refuse(err, 422, "invalid_field", "service_name", "service_name must be a string of 1 to %d bytes",
		       ABILITY_TEXT_MAX);
		goto out;
	}
	v = json_object_get(o, "k");
	*k = v ? (long)json_integer_value(v) : SEARCH_K_DEFAULT;
	if (v && (!json_is_integer(v) || *k < 1 || *k > SEARCH_K_MAX)) {
		refuse(err, 422, "invalid_field", "k", "k must be an integer from 1 to %d", SEARCH_K_MAX);
		goto out;
	}
	*service = xstrdup(json_string_value(json_object_get(o, "service_name")));
	ok = true;
out:
	json_decref(o);
	buf_free(&rest);
	return ok;
}

static bool parse_search(struct call *c, struct jspan body, struct jspan *emb, long *k)
{
	struct ability_error err;

	if (api_parse_search(body, c->api->o.dim, emb, &c->path_id, k, &err))
		return true;
	reply_error(c, err.status, err.code, err.field, "%s", err.message);
	return false;
}

static void h_search(struct call *c)
{
	char blob[ABILITY_TEXT_MAX * 2 + 16];
	struct jspan emb;
	long k;

	if (!json_content(c) || !parse_search(c, body_of(c), &emb, &k))
		return;
	vdb_blob_name(c->path_id, strlen(c->path_id), blob, sizeof(blob));
	vdb_query(c->api->svc->vdb, blob, emb.p, emb.len, (int)k, on_searched, c);
}

/* ---- status, health, readiness, metrics ------------------------------------------------------------ */

static void on_status(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct pusher_stats ps;
	json_t *j;

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	j = json_or_null(PQgetvalue(o->res, 0, 0));
	pusher_get_stats(c->api->svc->pusher, &ps);
	json_object_set_new(j, "mode", json_string("postgres"));
	json_object_set_new(j, "pushes", json_pack("{s:I, s:I, s:I, s:i}", "pushed", (json_int_t)ps.pushed, "failed",
						   (json_int_t)ps.failed, "deleted", (json_int_t)ps.deleted, "in_flight",
						   ps.in_flight));
	reply_json(c, 200, j);
}

static void h_sync_status(struct call *c)
{
	if (!c->api->svc->store) {
		reply_json(c, 200, json_pack("{s:s, s:{}}", "mode", "vector-db-only", "counts"));
		return;
	}
	store_status(c->api->svc->store, on_status, c);
}

/* ---- reconcile runs and restore jobs ------------------------------------------------------ */

static void on_last_reconcile(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	if (PQntuples(o->res) == 0) {
		reply_error(c, 404, "not_found", NULL, "no reconcile run is recorded yet (RECONCILE_INTERVAL, or "
			    "`abilitysync reconcile`)");
		return;
	}
	if (!PQgetisnull(o->res, 0, 0)) {
		/* The report exactly as the run stored it: the same object `reconcile --json` printed. */
		reply(c, 200, PQgetvalue(o->res, 0, 0), strlen(PQgetvalue(o->res, 0, 0)));
		return;
	}
	reply_json(c, 200, json_pack("{s:I, s:s, s:s}", "run_id", (json_int_t)atoll(PQgetvalue(o->res, 0, 1)), "status",
				     PQgetvalue(o->res, 0, 2), "started_at", PQgetvalue(o->res, 0, 3)));
}

static void h_reconcile_last(struct call *c)
{
	if (!needs_postgres(c, "reconcile"))
		return;
	store_last_reconcile(c->api->svc->store, on_last_reconcile, c);
}

static void on_restore_answer(int64_t job_id, const char *code, const char *why, void *arg)
{
	struct call *c = arg;

	if (job_id > 0) {
		char href[48];

		snprintf(href, sizeof(href), "/v1/jobs/%lld", (long long)job_id);
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "Location", href);
		reply_json(c, 202, json_pack("{s:I, s:s, s:s, s:s}", "job_id", (json_int_t)job_id, "kind", "restore",
					     "status", "running", "href", href));
	} else if (strcmp(code, "restore_running") == 0 || strcmp(code, "nothing_to_resume") == 0) {
		reply_error(c, 409, code, NULL, "%s", why);
	} else if (strcmp(code, "not_migrated") == 0) {
		reply_error(c, 503, code, NULL, "%s", why);
	} else {
		reply_error(c, 503, "postgres_unavailable", NULL, "%s", why);
	}
}

/* POST /v1/restore {"service_name"?: S, "resume"?: bool}: starts a job, answers once its row exists. */
static void h_restore_post(struct call *c)
{
	struct service *svc = c->api->svc;
	struct jspan body;
	json_t *j = NULL, *v;
	json_error_t jerr;
	const char *key, *service = NULL;
	bool resume = false;

	if (!needs_postgres(c, "restore"))
		return;
	body = body_of(c);
	if (body.len && !json_content(c))
		return;
	if (body.len && !(j = json_loadb(body.p, body.len, 0, &jerr))) {
		reply_error(c, 400, "malformed_json", NULL, "the body is not valid JSON: %s", jerr.text);
		return;
	}
	if (j && !json_is_object(j)) {
		json_decref(j);
		reply_error(c, 422, "invalid_body", NULL, "the body must be an object: {\"service_name\"?, \"resume\"?}");
		return;
	}
	json_object_foreach(j, key, v) {
		if (strcmp(key, "service_name") == 0 && json_is_string(v) && json_string_length(v) > 0 &&
		    json_string_length(v) <= ABILITY_TEXT_MAX) {
			service = json_string_value(v);
		} else if (strcmp(key, "resume") == 0 && json_is_boolean(v)) {
			resume = json_is_true(v);
		} else {
			bool known = strcmp(key, "service_name") == 0 || strcmp(key, "resume") == 0;

			reply_error(c, 422, known ? "invalid_field" : "unknown_field", key,
				    known ? "%s: service_name is a string of 1 to 255 bytes, resume a boolean"
					  : "%s is not a field of a restore (service_name, resume)", key);
			json_decref(j);
			return;
		}
	}
	if (svc->restore) {
		json_decref(j);
		reply_error(c, 409, "restore_running", NULL, "this replica is running restore job %lld: GET /v1/jobs/%lld",
			    (long long)svc->restore_job, (long long)svc->restore_job);
		return;
	}
	service_start_restore(svc, service, resume, on_restore_answer, c);
	json_decref(j);
}

static void on_job(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	PGresult *res = o->res;
	double total, progressed, percent;

	if (!res) {
		reply_pg_failure(c, o);
		return;
	}
	if (PQntuples(res) == 0) {
		reply_error(c, 404, "not_found", NULL, "no job %s", c->path_id);
		return;
	}
	total = atof(PQgetvalue(res, 0, 3));
	progressed = atof(PQgetvalue(res, 0, 4)) + atof(PQgetvalue(res, 0, 5));
	percent = total > 0 ? progressed * 100.0 / total : strcmp(PQgetvalue(res, 0, 1), "done") == 0 ? 100.0 : 0.0;
	if (percent > 100.0)
		percent = 100.0;
	reply_json(c, 200,
		   json_pack("{s:I, s:s, s:s, s:o, s:I, s:I, s:I, s:f, s:o, s:o, s:o, s:o}", "job_id",
			     (json_int_t)atoll(PQgetvalue(res, 0, 0)), "kind", "restore", "status", PQgetvalue(res, 0, 1),
			     "service_name", nullable(res, 0, 2), "total", (json_int_t)atoll(PQgetvalue(res, 0, 3)),
			     "done", (json_int_t)atoll(PQgetvalue(res, 0, 4)), "failed",
			     (json_int_t)atoll(PQgetvalue(res, 0, 5)), "percent_complete",
			     (double)(long)(percent * 10.0) / 10.0, "started_at", nullable(res, 0, 6), "updated_at",
			     nullable(res, 0, 7), "finished_at", nullable(res, 0, 8), "error", nullable(res, 0, 9)));
}

static void h_job_get(struct call *c)
{
	size_t n = strspn(c->path_id, "0123456789");

	if (!needs_postgres(c, "jobs"))
		return;
	if (n == 0 || c->path_id[n] || n > 18) {
		reply_error(c, 404, "not_found", NULL, "no job %s (job ids are numbers)", c->path_id);
		return;
	}
	store_job(c->api->svc->store, c->path_id, on_job, c);
}

static void h_healthz(struct call *c)
{
	reply_json(c, 200, json_pack("{s:s}", "status", "ok"));
}

static void h_readyz(struct call *c)
{
	struct service *svc = c->api->svc;
	json_t *j = json_object();

	json_object_set_new(j, "ready", json_boolean(service_ready(svc)));
	if (!svc->pool)
		json_object_set_new(j, "postgres", json_string("off (vector-DB-only mode)"));
	else if (!pgpool_ready(svc->pool))
		json_object_set_new(j, "postgres", json_string("unreachable"));
	else if (!svc->pg_migrated)
		json_object_set_new(j, "postgres", json_sprintf("not migrated: %s", svc->pg_why));
	else
		json_object_set_new(j, "postgres", json_string("up"));
	json_object_set_new(j, "vector_db", svc->vdb_up ? json_string("up") : json_sprintf("down: %s", svc->vdb_why));
	if (svc->stopping)
		json_object_set_new(j, "stopping", json_true());
	reply_json(c, json_is_true(json_object_get(j, "ready")) ? 200 : 503, j);
}

static void render_outbox(const struct service *svc, struct buf *out)
{
	static const char *const states[] = {"pending", "synced", "pending_delete", "deleted", "failed"};
	json_t *counts = json_object_get(svc->outbox, "counts");
	size_t i;

	if (!svc->outbox)
		return;
	metrics_header(out, "abilitysync_outbox_rows", "gauge", "Sync-state rows by state (counted periodically).");
	for (i = 0; i < ARRAY_LEN(states); i++) {
		char labels[48];

		snprintf(labels, sizeof(labels), "state=\"%s\"", states[i]);
		metrics_value(out, "abilitysync_outbox_rows", labels,
			      (double)json_integer_value(json_object_get(counts, states[i])));
	}
	metrics_header(out, "abilitysync_outbox_oldest_pending_seconds", "gauge", "Age of the oldest pending change.");
	metrics_value(out, "abilitysync_outbox_oldest_pending_seconds", NULL,
		      json_number_value(json_object_get(svc->outbox, "oldest_pending_seconds")));
}

static void render_vdb(const struct service *svc, struct buf *out)
{
	static const char *const classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
	struct vdb_stats vs;
	size_t i;

	vdb_get_stats(svc->vdb, &vs);
	metrics_header(out, "abilitysync_vdb_replies_total", "counter", "Vector DB replies by class (none: no reply).");
	for (i = 0; i < ARRAY_LEN(classes); i++) {
		char labels[32];

		snprintf(labels, sizeof(labels), "class=\"%s\"", classes[i]);
		metrics_value(out, "abilitysync_vdb_replies_total", labels, (double)vs.by_class[i]);
	}
	metrics_header(out, "abilitysync_vdb_retries_total", "counter", "Vector DB requests retried.");
	metrics_value(out, "abilitysync_vdb_retries_total", NULL, (double)vs.retries);
	metrics_header(out, "abilitysync_vdb_failures_total", "counter", "Vector DB attempts that failed.");
	metrics_value(out, "abilitysync_vdb_failures_total", NULL, (double)vs.failures);
	metrics_header(out, "abilitysync_vdb_in_flight", "gauge", "Vector DB requests on the wire.");
	metrics_value(out, "abilitysync_vdb_in_flight", NULL, vs.inflight);
	metrics_header(out, "abilitysync_vdb_request_duration_seconds", "histogram", "Vector DB attempts.");
	metrics_histogram(out, "abilitysync_vdb_request_duration_seconds", NULL, &vs.latency);
}

static void render_pg(const struct service *svc, struct buf *out)
{
	struct pgpool_stats st;

	if (!svc->pool)
		return;
	pgpool_get_stats(svc->pool, &st);
	metrics_header(out, "abilitysync_pg_connections", "gauge", "Postgres pool connections by state.");
	metrics_value(out, "abilitysync_pg_connections", "state=\"up\"", st.up);
	metrics_value(out, "abilitysync_pg_connections", "state=\"busy\"", st.busy);
	metrics_value(out, "abilitysync_pg_connections", "state=\"configured\"", st.size);
	metrics_header(out, "abilitysync_pg_queued_statements", "gauge", "Statements waiting for a connection.");
	metrics_value(out, "abilitysync_pg_queued_statements", NULL, st.queued);
	metrics_header(out, "abilitysync_pg_statements_total", "counter", "Statements sent to Postgres.");
	metrics_value(out, "abilitysync_pg_statements_total", NULL, (double)st.statements);
	metrics_header(out, "abilitysync_pg_failures_total", "counter", "Statements that failed.");
	metrics_value(out, "abilitysync_pg_failures_total", NULL, (double)st.failures);
}

/* Drift as the last finished reconcile run (of any replica) found it, and this replica's runs. */
static void render_reconcile(const struct service *svc, struct buf *out)
{
	json_t *last = json_object_get(svc->outbox, "reconcile");
	json_t *drift = json_object_get(last, "drift"), *n;
	struct reconciler_stats rs;
	const char *cat;

	if (json_is_object(drift)) {
		metrics_header(out, "abilitysync_drift", "gauge", "Drift the last reconcile run found, by category.");
		json_object_foreach(drift, cat, n) {
			char label[64];

			snprintf(label, sizeof(label), "category=\"%s\"", cat);
			metrics_value(out, "abilitysync_drift", label, json_number_value(n));
		}
		metrics_header(out, "abilitysync_reconcile_last_run_id", "gauge", "Id of the last finished reconcile run.");
		metrics_value(out, "abilitysync_reconcile_last_run_id", NULL,
			      json_number_value(json_object_get(last, "run_id")));
	}
	reconciler_get_stats(svc->reconciler, &rs);
	metrics_header(out, "abilitysync_reconcile_runs_total", "counter",
		       "Periodic reconcile runs of this replica, by result (skipped: another replica ran it).");
	metrics_value(out, "abilitysync_reconcile_runs_total", "result=\"ok\"", (double)rs.ok);
	metrics_value(out, "abilitysync_reconcile_runs_total", "result=\"failed\"", (double)rs.failed);
	metrics_value(out, "abilitysync_reconcile_runs_total", "result=\"skipped\"", (double)rs.skipped);
}

static void render_metrics(struct call *c)
{
	struct service *svc = c->api->svc;
	struct pusher_stats ps;
	struct buf out = BUF_INIT;

	http_metrics_render(&svc->http, &out);
	render_vdb(svc, &out);
	render_pg(svc, &out);
	render_outbox(svc, &out);
	pusher_get_stats(svc->pusher, &ps);
	metrics_header(&out, "abilitysync_pushes_total", "counter", "Abilities pushed to the vector DB, by result.");
	metrics_value(&out, "abilitysync_pushes_total", "result=\"pushed\"", (double)ps.pushed);
	metrics_value(&out, "abilitysync_pushes_total", "result=\"deleted\"", (double)ps.deleted);
	metrics_value(&out, "abilitysync_pushes_total", "result=\"failed\"", (double)ps.failed);
	metrics_header(&out, "abilitysync_retry_claimed_total", "counter", "Outbox rows the retry worker claimed.");
	metrics_value(&out, "abilitysync_retry_claimed_total", NULL, (double)ps.claimed);
	render_reconcile(svc, &out);
	metrics_header(&out, "abilitysync_ready", "gauge", "1 when /readyz says ready.");
	metrics_value(&out, "abilitysync_ready", NULL, service_ready(svc));
	reply_typed(c, 200, "text/plain; version=0.0.4", out.data, out.len);
	buf_free(&out);
}

static void on_metrics_outbox(const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	json_error_t jerr;
	json_t *fresh = o->res ? json_loads(PQgetvalue(o->res, 0, 0), 0, &jerr) : NULL;

	/* Without Postgres right now, the last count is shown (its age is in the log). */
	if (fresh) {
		json_decref(c->api->svc->outbox);
		c->api->svc->outbox = fresh;
	}
	render_metrics(c);
}

/* A scrape counts the outbox now: stale depth is how alerts go wrong. */
static void h_metrics(struct call *c)
{
	if (c->api->svc->store)
		store_status(c->api->svc->store, on_metrics_outbox, c);
	else
		render_metrics(c);
}

/* ---- routing ----------------------------------------------------------------------------------------- */

struct route_def {
	enum evhttp_cmd_type method;
	const char *path;       /* exact, or a prefix when `with_id` */
	bool with_id;
	enum route route;
	void (*handler)(struct call *c);
};

static const struct route_def route_table[] = {
	{EVHTTP_REQ_POST, "/v1/abilities", false, ROUTE_ABILITIES_POST, h_abilities_post},
	{EVHTTP_REQ_GET, "/v1/abilities", false, ROUTE_ABILITIES_LIST, h_abilities_list},
	{EVHTTP_REQ_GET, "/v1/abilities/", true, ROUTE_ABILITY_GET, h_ability_get},
	{EVHTTP_REQ_DELETE, "/v1/abilities/", true, ROUTE_ABILITY_DELETE, h_ability_delete},
	{EVHTTP_REQ_POST, "/v1/search", false, ROUTE_SEARCH, h_search},
	{EVHTTP_REQ_GET, "/v1/sync/status", false, ROUTE_SYNC_STATUS, h_sync_status},
	{EVHTTP_REQ_GET, "/v1/reconcile/last", false, ROUTE_RECONCILE_LAST, h_reconcile_last},
	{EVHTTP_REQ_POST, "/v1/restore", false, ROUTE_RESTORE_POST, h_restore_post},
	{EVHTTP_REQ_GET, "/v1/jobs/", true, ROUTE_JOB_GET, h_job_get},
	{EVHTTP_REQ_GET, "/healthz", false, ROUTE_HEALTHZ, h_healthz},
	{EVHTTP_REQ_GET, "/readyz", false, ROUTE_READYZ, h_readyz},
	{EVHTTP_REQ_GET, "/metrics", false, ROUTE_METRICS, h_metrics},
};

static const char *method_text(enum evhttp_cmd_type m)
{
	switch (m) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_PATCH: return "PATCH";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	default: return "?";
	}
}

/* Does `path` match the route? For routes with an id, *id gets the decoded id (NULL: it cannot be decoded). */
static bool path_matches(const struct route_def *d, const char *path, char **id)
{
	size_t n = strlen(d->path);
	size_t len;

	if (!d->with_id)
		return strcmp(path, d->path) == 0;
	if (strncmp(path, d->path, n) != 0 || !path[n] || strchr(path + n, '/'))
		return false;
	if (id) {
		*id = evhttp_uridecode(path + n, 0, &len);
		if (*id && (strlen(*id) != len || !utf8_valid(*id, len, &len))) { /* an encoded NUL, or not text */
			free(*id);
			*id = NULL;
		}
	}
	return true;
}

enum api_match api_match_route(enum evhttp_cmd_type method, const char *path, enum route *route, char **id,
			       char *allow, size_t allowlen)
{
	const struct route_def *d = NULL;
	struct buf methods = BUF_INIT;
	enum api_match m;
	size_t i;

	*route = ROUTE_OTHER;
	*id = NULL;
	for (i = 0; i < ARRAY_LEN(route_table) && !d; i++) {
		if (!path_matches(&route_table[i], path, NULL))
			continue;
		if (route_table[i].method == method)
			d = &route_table[i];
		else
			buf_printf(&methods, "%s%s", methods.len ? ", " : "", method_text(route_table[i].method));
	}
	if (allowlen)
		snprintf(allow, allowlen, "%s", d ? "" : buf_cstr(&methods));
	m = d ? API_MATCH_OK : methods.len ? API_MATCH_BAD_METHOD : API_MATCH_NOT_FOUND;
	buf_free(&methods);
	if (!d)
		return m;
	*route = d->route;
	if (d->with_id && (!path_matches(d, path, id) || !*id || !**id)) {
		free(*id);
		*id = NULL;
		return API_MATCH_BAD_ID;
	}
	return API_MATCH_OK;
}

static bool authorized(struct call *c, const char *path)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(c->req), "Authorization");
	uint8_t digest[SHA256_LEN];
	size_t i;
	int match = 0;

	if (c->api->nkeys == 0 || strncmp(path, "/v1/", 4) != 0)
		return true;
	if (h && strncasecmp(h, "Bearer ", 7) == 0) {
		sha256(h + 7, strlen(h + 7), digest);
		for (i = 0; i < c->api->nkeys; i++)
			match |= CRYPTO_memcmp(digest, c->api->keys[i], SHA256_LEN) == 0;
		if (match)
			return true;
	}
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "WWW-Authenticate", "Bearer realm=\"abilitysync\"");
	reply_error(c, 401, "unauthorized", NULL, h ? "the API key is not valid" : "send Authorization: Bearer <API key>");
	return false;
}

/* The client's X-Request-Id when it is short and plain, else one of ours. */
static void request_id(struct call *c)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(c->req), "X-Request-Id");
	size_t n = h ? strspn(h, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") : 0;

	if (h && n > 0 && n <= 64 && h[n] == '\0')
		snprintf(c->id, sizeof(c->id), "%s", h);
	else
		snprintf(c->id, sizeof(c->id), "%08x-%llu", (unsigned)getpid(), (unsigned long long)++c->api->next_id);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct api *a = arg;
	struct call *c = xcalloc(1, sizeof(*c));
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	enum route route;
	const char *bad;
	char allow[64];
	size_t i;

	tcp_nodelay(req);
	c->api = a;
	c->req = req;
	c->refs = 1;
	c->route = ROUTE_OTHER;
	c->start_us = clock_mono_us();
	TAILQ_INIT(&c->query);
	a->in_flight++;
	request_id(c);
	if (!path || !*path)
		path = "/";
	if (query && evhttp_parse_query_str(query, &c->query) != 0) {
		reply_error(c, 400, "bad_query", NULL, "the query string cannot be parsed");
		return;
	}
	if ((bad = query_not_text(&c->query))) {
		reply_error(c, 400, "bad_query", bad, "the query parameter %s is not UTF-8 text", bad);
		return;
	}
	if (!authorized(c, path))
		return;
	switch (api_match_route(m, path, &route, &c->path_id, allow, sizeof(allow))) {
	case API_MATCH_NOT_FOUND:
		reply_error(c, 404, "not_found", NULL, "no route %s %s", method_text(m), path);
		return;
	case API_MATCH_BAD_METHOD:
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "Allow", allow);
		reply_error(c, 405, "method_not_allowed", NULL, "%s is not allowed on %s (allowed: %s)", method_text(m),
			    path, allow);
		return;
	case API_MATCH_BAD_ID:
		c->route = route;
		reply_error(c, 400, "bad_path", NULL, "the id in %s cannot be decoded", path);
		return;
	case API_MATCH_OK:
		break;
	}
	c->route = route;
	for (i = 0; i < ARRAY_LEN(route_table); i++) {
		if (route_table[i].route == route) {
			route_table[i].handler(c);
			return;
		}
	}
}

/* ---- setup ------------------------------------------------------------------------------------------------ */

static bool split_listen(const char *listen, char *host, size_t hostlen, int *port)
{
	const char *colon = strrchr(listen, ':');
	char *end;
	long p;

	if (!colon || colon == listen)
		return false;
	p = strtol(colon + 1, &end, 10);
	if (*end || p < 0 || p > 65535 || (size_t)(colon - listen) >= hostlen)
		return false;
	if (listen[0] == '[' && colon[-1] == ']')
		snprintf(host, hostlen, "%.*s", (int)(colon - listen - 2), listen + 1);
	else
		snprintf(host, hostlen, "%.*s", (int)(colon - listen), listen);
	*port = (int)p;
	return true;
}

static bool loopback(const char *host)
{
	struct in_addr v4;

	if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0)
		return true;
	return inet_pton(AF_INET, host, &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

static void load_keys(struct api *a, const char *list)
{
	char *copy = xstrdup(list), *tok, *save = NULL;

	a->keys = xcalloc(strlen(list) / 2 + 1, sizeof(*a->keys));
	for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
		sha256(tok, strlen(tok), a->keys[a->nkeys++]);
	memset(copy, 0, strlen(list));
	free(copy);
}

static struct bufferevent *tls_bufferevent(struct event_base *base, void *arg)
{
	struct api *a = arg;

	return bufferevent_openssl_socket_new(base, -1, SSL_new(a->ssl), BUFFEREVENT_SSL_ACCEPTING,
					      BEV_OPT_CLOSE_ON_FREE);
}

static bool setup_tls(struct api *a, struct errbuf *err)
{
	unsigned long e;

	a->ssl = SSL_CTX_new(TLS_server_method());
	if (!a->ssl)
		abort();
	SSL_CTX_set_min_proto_version(a->ssl, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(a->ssl, a->o.tls_cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(a->ssl, a->o.tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(a->ssl) != 1) {
		e = ERR_get_error();
		err_set(err, "TLS_CERT_FILE=%s / TLS_KEY_FILE=%s: %s", a->o.tls_cert, a->o.tls_key,
			ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "cannot be loaded");
		return false;
	}
	evhttp_set_bevcb(a->http, tls_bufferevent, a);
	return true;
}

struct api *api_new(struct service *svc, const struct api_opts *o, struct errbuf *err)
{
	struct api *a = xcalloc(1, sizeof(*a));
	char host[96];
	int port;
	evutil_socket_t fd;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	a->svc = svc;
	a->o = *o;
	if (!split_listen(o->listen, host, sizeof(host), &port)) {
		err_set(err, "LISTEN=\"%s\": expected host:port", o->listen);
		goto fail;
	}
	if (o->api_keys && *o->api_keys)
		load_keys(a, o->api_keys);
	if (a->nkeys == 0 && !loopback(host) && !o->allow_open) {
		err_set(err, "LISTEN=%s is not loopback and API_KEYS is empty: set API_KEYS, or "
			"ALLOW_UNAUTHENTICATED=true to serve without keys on purpose", o->listen);
		goto fail;
	}
	a->http = evhttp_new(svc->base);
	evhttp_set_max_body_size(a->http, (ev_ssize_t)o->max_body);
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE | EVHTTP_REQ_PUT |
					    EVHTTP_REQ_HEAD | EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	evhttp_set_timeout(a->http, 60);
	evhttp_set_gencb(a->http, on_request, a);
	if (o->tls_cert && o->tls_key && !setup_tls(a, err))
		goto fail;
	a->sock = evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)port);
	if (!a->sock) {
		err_set(err, "LISTEN=%s: cannot listen there (in use, or not an address of this host)", o->listen);
		goto fail;
	}
	fd = evhttp_bound_socket_get_fd(a->sock);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						      : ((struct sockaddr_in *)&ss)->sin_port);
	snprintf(a->address, sizeof(a->address), "%s%s:%d", o->tls_cert ? "https://" : "http://", host, port);
	return a;
fail:
	api_free(a);
	return NULL;
}

void api_stop_accepting(struct api *a)
{
	if (a->sock) {
		evhttp_del_accept_socket(a->http, a->sock);
		a->sock = NULL;
	}
}

int api_in_flight(const struct api *a)
{
	return a->in_flight;
}

const char *api_address(const struct api *a)
{
	return a->address;
}

void api_free(struct api *a)
{
	if (!a)
		return;
	if (a->http)
		evhttp_free(a->http);
	if (a->ssl)
		SSL_CTX_free(a->ssl);
	free(a->keys);
	free(a);
}
