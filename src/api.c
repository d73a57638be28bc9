#include "api.h"

#include "ability.h"
#include "buf.h"
#include "clock.h"
#include "errcode.h"
#include "hash.h"
#include "jsonscan.h"
#include "keys.h"
#include "log.h"
#include "mem.h"
#include "openapi.h"
#include "tcp.h"
#include "text.h"
#include "vdbid.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/http_struct.h> /* major, minor: see evhttp_send_error() */
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <arpa/inet.h>
#include <errno.h>
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
#define SEARCH_FETCH_MAX 400 /* hits asked of the vector DB at most, to find k live ones */
#define RETRY_AFTER_S "2"

struct api {
	struct service *svc;
	struct api_opts o;
	struct evhttp *http;
	struct evhttp_bound_socket *sock;
	struct keyring ring;            /* API_KEYS and API_KEYS_FILE; empty: no auth */
	struct bucket *buckets;        /* RATE_LIMIT_RPS: one per key, the last for callers without one */
	uint64_t *by_key;              /* requests answered per key, the last for callers without one */
	SSL_CTX *ssl;
	TAILQ_HEAD(, call) calls;
	int in_flight;
	int connections;               /* open client connections (counted from their first request) */
	void **conn_set;               /* ... which ones */
	size_t conn_cap, conn_used;
	bool accepting_paused;         /* at max_connections: the listener waits */
	uint64_t rejected_in_flight, paused_accepts;
	uint64_t rejected_body, rejected_header; /* 413 and 400 libevent gave (evhttp_send_error) */
	uint64_t next_id;
	char address[128];
};

/*
 * One request. It holds one reference for its answer (released by reply) and
 * one per push it started (released when the push is over: the push reads the
 * abilities the call holds, and may outlive a 202 answer).
 */
struct call {
	TAILQ_ENTRY(call) link;       /* the api's calls not yet released */
	struct api *api;
	struct evhttp_request *req;
	enum route route;
	char id[72];
	int64_t start_us;
	int refs;
	bool replied;
	char *path_id;                /* {id} of /v1/abilities/{id}, decoded */
	struct evkeyvalq query;
	bool batch;                   /* POST /v1/abilities: {"abilities": [...]} */
	json_t *hits;                 /* search: the vector DB's answer, while the mirror is asked */
	struct search *search;        /* search: what was asked, to ask again for more */
	int limit;                    /* list: the page size asked */
	bool audited;                 /* an admin action: its answer goes into the audit trail */
	char *audit_params;           /* its body, when a small JSON object */
	char key[KEY_NAME_MAX + 1];   /* the caller's key's name, "" without a valid key */
	unsigned scopes;              /* its scopes */
	size_t key_index;             /* its place in the ring (ring.n: none) */
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
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	default: return "Status";
	}
}

static void call_release(struct call *c)
{
	if (--c->refs > 0)
		return;
	c->api->in_flight--;
	TAILQ_REMOVE(&c->api->calls, c, link);
	free(c->path_id);
	json_decref(c->hits);
	free(c->search);
	free(c->audit_params);
	evhttp_clear_headers(&c->query);
	free(c);
}

static void audit_record(struct call *c, int status);

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
		log_warn(COMP, "req=%s%s%s %s -> %d in %.1f ms: %.*s", c->id, c->key[0] ? " key=" : "", c->key,
			 route_name(c->route), status, secs * 1000, (int)(len > 300 ? 300 : len), body);
	else
		log_debug(COMP, "req=%s%s%s %s -> %d in %.1f ms", c->id, c->key[0] ? " key=" : "", c->key,
			  route_name(c->route), status, secs * 1000);
	if (c->audited)
		audit_record(c, status);
	/* Counted by its place in the ring now (a SIGHUP between question and answer may shift it). */
	c->api->by_key[c->key_index < c->api->ring.n ? c->key_index : c->api->ring.n]++;
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

/* A field as the parsers name it (abilities[3].embedding[17]) as a JSON pointer (/abilities/3/embedding/17). */
static void field_pointer(const char *field, struct buf *out)
{
	const char *p;

	for (p = field; *p; p++) {
		if (p == field || *p == '.' || *p == '[')
			buf_append(out, "/", 1);
		if (*p == '.' || *p == '[' || *p == ']')
			continue;
		if (*p == '~' || *p == '/')
			buf_append(out, *p == '~' ? "~0" : "~1", 2);
		else
			buf_append(out, p, 1);
	}
}

/* One entry of a problem's errors array. */
static json_t *field_error(const char *field, const char *code, const char *detail)
{
	struct buf ptr = BUF_INIT;
	json_t *j;

	field_pointer(field, &ptr);
	j = json_pack("{s:s, s:s, s:s}", "pointer", ptr.data ? ptr.data : "", "code", code, "detail", detail);
	buf_free(&ptr);
	return j;
}

/*
 * Every error is a problem details object (RFC 9457): type (one URI per code),
 * title (what the code means), status, detail (this occurrence, in words), plus
 * code, the request id, and for a request field the errors array with its JSON
 * pointer (every bad field of a refused body: `all`). "error" keeps the shape of the first releases ({code, message,
 * field}) for the clients written against it.
 */
static void reply_problem(struct call *c, int status, const char *code, const char *field, const char *detail,
			  const struct ability_error *all)
{
	enum errcode e = errcode_by_name(code);
	char type[96];
	json_t *j, *errors = NULL;
	char *text;
	size_t i;

	snprintf(type, sizeof(type), "urn:abilitysync:problem:%s", code);
	j = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s}", "type", type, "title",
		      e < E_COUNT ? errcode_def(e)->meaning : reason(status), "status", status, "detail", detail,
		      "code", code, "request_id", c->id);
	if (field)
		json_array_append_new(errors = json_array(), field_error(field, code, detail));
	for (i = 0; all && i < all->nothers; i++) {
		if (!errors)
			errors = json_array();
		json_array_append_new(errors, field_error(all->others[i].field, all->others[i].code,
							  all->others[i].message));
	}
	if (errors)
		json_object_set_new(j, "errors", errors);
	if (all && all->more)
		json_object_set_new(j, "errors_left_out", json_integer((json_int_t)all->more));
	json_object_set_new(j, "error", json_pack("{s:s, s:s, s:s?}", "code", code, "message", detail, "field", field));
	text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text)
		abort();
	reply_typed(c, status, "application/problem+json", text, strlen(text));
	free(text);
	json_decref(j);
}

static void reply_coded(struct call *c, int status, const char *code, const char *field, const char *message,
			const struct ability_error *all)
{
	char text[700], name[200];

	snprintf(text, sizeof(text), "%s", message);
	snprintf(name, sizeof(name), "%s", field ? field : "");
	/* Messages echo ids and names from the request, which need not be UTF-8 (%ff in a path). */
	utf8_scrub(text);
	utf8_scrub(name);
	if (status == 503) /* a dependency is away: try again shortly */
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", RETRY_AFTER_S);
	reply_problem(c, status, code, *name ? name : NULL, text, all);
}

/* An error answer: its status and code come from the table of error codes (errcode.h). */
static void reply_error(struct call *c, enum errcode e, const char *field, const char *fmt, ...) PRINTF_LIKE(4, 5);

static void reply_error(struct call *c, enum errcode e, const char *field, const char *fmt, ...)
{
	char message[700];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	reply_coded(c, errcode_def(e)->status, errcode_def(e)->code, field, message, NULL);
}

/* A request body refused by its parser (ability.c: the code and status are the table's too). */
static void reply_refusal(struct call *c, const struct ability_error *err)
{
	reply_coded(c, err->status, err->code, err->field, err->message, err);
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
	reply_error(c, E_UNSUPPORTED_MEDIA_TYPE, NULL, "send the body as Content-Type: application/json (got %s)",
		    ct ? ct : "none");
	return false;
}

/* Is s one of the NULL-terminated list? */
static bool one_of(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(s, *list) == 0)
			return true;
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
	reply_error(c, E_NEEDS_POSTGRES, NULL, "%s needs DATABASE_URL: without Postgres abilitysync runs "
		    "vector-DB-only and keeps no mirror", what);
	return false;
}

/* A database without abilitysync's tables, functions or columns: not migrated (or not fully). */
static bool not_migrated(const struct pg_outcome *o)
{
	static const char *const states[] = {"42P01", "42883", "42703", "3F000"};
	size_t i;

	for (i = 0; i < ARRAY_LEN(states); i++)
		if (strcmp(o->sqlstate, states[i]) == 0)
			return true;
	return false;
}

static void reply_pg_failure(struct call *c, const struct pg_outcome *o)
{
	if (o->unavailable)
		reply_error(c, E_POSTGRES_UNAVAILABLE, NULL, "Postgres is unavailable: %s", o->error);
	else if (not_migrated(o))
		reply_error(c, E_NOT_MIGRATED, NULL, "the database is not migrated (run `abilitysync migrate up`): %s",
			    o->error);
	else
		reply_error(c, E_POSTGRES_ERROR, NULL, "Postgres refused the statement: %s", o->error);
}

static void reply_vdb_failure(struct call *c, enum vdb_status st, const char *error)
{
	if (st == VDB_UNAVAILABLE || st == VDB_CANCELLED)
		reply_error(c, E_VECTOR_DB_UNAVAILABLE, NULL, "the vector DB is unavailable: %s", error);
	else
		reply_error(c, E_VECTOR_DB_ERROR, NULL, "the vector DB refused: %s", error);
}

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

/*
 * How long a write waits for the vector DB: SYNC_WAIT_MS, or what the client
 * prefers (RFC 7240 `Prefer: wait=N`, seconds) up to SYNC_WAIT_MAX_MS; an
 * honoured preference is echoed in Preference-Applied.
 */
static long sync_wait_of(struct call *c)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(c->req), "Prefer");
	const char *p = h;
	long max = c->api->o.sync_wait_max_ms;

	while (p && *p) {
		char *end;
		long secs;

		p += strspn(p, " \t,");
		if (strncasecmp(p, "wait=", 5) == 0 && p[5] >= '0' && p[5] <= '9') {
			secs = strtol(p + 5, &end, 10);
			if (*end == '\0' || *end == ',' || *end == ';' || *end == ' ') {
				char applied[32];
				long ms = secs > max / 1000 ? max : secs * 1000;

				snprintf(applied, sizeof(applied), "wait=%ld", ms / 1000);
				evhttp_add_header(evhttp_request_get_output_headers(c->req), "Preference-Applied", applied);
				return ms;
			}
		}
		p = strchr(p, ',');
	}
	return c->api->o.sync_wait_ms;
}

/* A 202 says where to look next: the ability (the first one not yet in the vector DB, of a batch). */
static void locate(struct call *c, const char *ability_id)
{
	char href[300];

	snprintf(href, sizeof(href), "/v1/abilities/%s", ability_id);
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Location", href);
}

/* The item was written to a store (not unchanged, repaired or refused). */
static bool wrote(const struct outbox_item *r)
{
	return r->status == OB_CREATED || r->status == OB_UPDATED || r->status == OB_WRITTEN;
}

/*
 * 201: both stores hold what was written; 202: Postgres does and the vector DB
 * does not yet (pending, or failed: refused, with last_error); 200: nothing
 * needed writing (unchanged, or only the mirror row was put back).
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

static void h_abilities_post(struct call *c)
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

static json_t *json_or_null(const char *text)
{
	json_error_t jerr;
	json_t *j = text ? json_loads(text, JSON_DECODE_ANY, &jerr) : NULL;

	return j ? j : json_null();
}

static json_t *string_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

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

static void h_ability_get(struct call *c)
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

/* ?limit= of a paged listing, or a 422 answered. */
static bool page_limit(struct call *c, int *limit)
{
	if (api_parse_limit(query_value(c, "limit"), limit))
		return true;
	reply_error(c, E_INVALID_PARAMETER, "limit", "limit must be an integer from 1 to %d", LIST_MAX);
	return false;
}

static void h_abilities_list(struct call *c)
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

static void h_ability_delete(struct call *c)
{
	if (!needs_postgres(c, "deleting an ability"))
		return;
	outbox_delete(c->api->svc->outbox, c->path_id, c->id, sync_wait_of(c), on_deleted, c);
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
};

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
	reply_json(c, 200, json_pack("{s:o, s:I}", "results", results, "count", (json_int_t)json_array_size(results)));
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
	if (start == body.p + body.len || *start != '{' || !js_member(body, "embedding", emb, &dup))
		return ability_refuse(err, E_MISSING_FIELD, "embedding",
			      "the body must be an object with service_name and embedding");
	if (!js_number_array(*emb, &count, &je))
		return ability_refuse(err, E_INVALID_EMBEDDING, "embedding", "embedding[%zu]: %s", je.index, je.what);
	if (count != dim)
		return ability_refuse(err, E_WRONG_DIMENSION, "embedding", "embedding has %zu numbers; EMBEDDING_DIM is %zu",
			      count, dim);
	buf_append(&rest, body.p, (size_t)(emb->p - body.p));
	buf_putc(&rest, '0');
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

static void h_search(struct call *c)
{
	struct search *s;
	struct ability_error err;

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
	vdb_query(c->api->svc->vdb, s->blob, s->emb.p, s->emb.len, (int)s->fetch, on_searched, c);
}

/* ---- status, health, readiness, metrics ------------------------------------------------------------ */

static void on_status(const char *text, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct outbox_stats st;
	json_t *j;

	if (!text) {
		reply_pg_failure(c, o);
		return;
	}
	j = json_or_null(text);
	outbox_get_stats(c->api->svc->outbox, &st);
	json_object_set_new(j, "mode", json_string("postgres"));
	json_object_set_new(j, "pushes",
			    json_pack("{s:I, s:I, s:I, s:i, s:I, s:I, s:I, s:I}", "pushed", (json_int_t)st.pushed, "failed",
				      (json_int_t)st.failed, "deleted", (json_int_t)st.deleted, "in_flight", st.in_flight,
				      "coalesced", (json_int_t)st.coalesced, "superseded", (json_int_t)st.superseded,
				      "ambiguous", (json_int_t)st.ambiguous, "verifications", (json_int_t)st.verifications));
	reply_json(c, 200, j);
}

static void h_sync_status(struct call *c)
{
	if (!needs_postgres(c, "the sync status"))
		return;
	store_status(c->api->svc->store, on_status, c);
}

/* ---- reconcile runs and restore jobs ------------------------------------------------------ */

static void on_last_reconcile(const char *text, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	if (!text) {
		reply_error(c, E_NOT_FOUND, NULL, "no reconcile run is recorded yet (RECONCILE_INTERVAL, or "
			    "`abilitysync reconcile`)");
		return;
	}
	/* The report exactly as the run stored it: the same object `reconcile --json` printed. */
	reply(c, 200, text, strlen(text));
}

static void h_reconcile_last(struct call *c)
{
	if (!needs_postgres(c, "reconcile"))
		return;
	store_last_reconcile(c->api->svc->store, on_last_reconcile, c);
}

/* 202: the job's row exists; Location and href name it. */
static void reply_job_started(struct call *c, const char *kind, int64_t id)
{
	char href[48];

	snprintf(href, sizeof(href), "/v1/jobs/%s-%lld", kind, (long long)id);
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Location", href);
	reply_json(c, 202, json_pack("{s:s, s:I, s:s, s:s, s:s, s:s}", "id", href + 9, "job_id", (json_int_t)id, "kind",
				     kind, "state", "running", "status", "running", "href", href));
}

static void on_restore_answer(int64_t job_id, const char *code, const char *why, void *arg)
{
	struct call *c = arg;

	if (job_id > 0) {
		reply_job_started(c, "restore", job_id);
	} else if (strcmp(code, "restore_running") == 0 || strcmp(code, "nothing_to_resume") == 0) {
		reply_error(c, errcode_by_name(code), NULL, "%s", why);
	} else if (strcmp(code, "not_migrated") == 0) {
		reply_error(c, E_NOT_MIGRATED, NULL, "%s", why);
	} else {
		reply_error(c, E_POSTGRES_UNAVAILABLE, NULL, "%s", why);
	}
}

/*
 * A job's body: an object of optional fields, or nothing. NULL and answered
 * when it is not JSON or not an object; an empty object for no body.
 */
static json_t *job_body(struct call *c, const char *fields)
{
	struct jspan body = body_of(c);
	json_error_t jerr;
	json_t *j;

	if (body.len && !json_content(c))
		return NULL;
	if (!body.len)
		return json_object();
	if (!(j = json_loadb(body.p, body.len, 0, &jerr))) {
		reply_error(c, E_MALFORMED_JSON, NULL, "the body is not valid JSON: %s", jerr.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		reply_error(c, E_INVALID_BODY, NULL, "the body must be an object: {%s}", fields);
		return NULL;
	}
	return j;
}

/* Is there room for one more long job in this replica (JOBS_MAX)? Answered when not. */
static bool job_room(struct call *c)
{
	int running = service_jobs_running(c->api->svc);

	if (running < c->api->o.jobs_max)
		return true;
	reply_error(c, E_TOO_MANY_JOBS, NULL, "%d long jobs run in this replica (JOBS_MAX=%d): GET /v1/jobs?state=running",
		    running, c->api->o.jobs_max);
	return false;
}

static bool service_name_value(json_t *v)
{
	return json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) <= ABILITY_TEXT_MAX;
}

/* POST /v1/restore {"service_name"?: S, "resume"?: bool}: starts a job, answers once its row exists. */
static void h_restore_post(struct call *c)
{
	struct service *svc = c->api->svc;
	json_t *j, *v;
	const char *key, *service = NULL;
	bool resume = false;

	if (!needs_postgres(c, "restore") || !(j = job_body(c, "\"service_name\"?, \"resume\"?")))
		return;
	json_object_foreach(j, key, v) {
		if (strcmp(key, "service_name") == 0 && service_name_value(v)) {
			service = json_string_value(v);
		} else if (strcmp(key, "resume") == 0 && json_is_boolean(v)) {
			resume = json_is_true(v);
		} else {
			bool known = strcmp(key, "service_name") == 0 || strcmp(key, "resume") == 0;

			reply_error(c, known ? E_INVALID_FIELD : E_UNKNOWN_FIELD, key,
				    known ? "%s: service_name is a string of 1 to 255 bytes, resume a boolean"
					  : "%s is not a field of a restore (service_name, resume)", key);
			json_decref(j);
			return;
		}
	}
	if (svc->restore) {
		json_decref(j);
		reply_error(c, E_RESTORE_RUNNING, NULL, "this replica is running restore job %lld: GET /v1/jobs/%lld",
			    (long long)svc->restore_job, (long long)svc->restore_job);
		return;
	}
	if (!job_room(c)) {
		json_decref(j);
		return;
	}
	service_start_restore(svc, service, resume, on_restore_answer, c);
	json_decref(j);
}

static void on_reconcile_answer(int64_t run_id, const char *code, const char *why, void *arg)
{
	struct call *c = arg;

	if (run_id > 0) {
		reply_job_started(c, "reconcile", run_id);
	} else if (strcmp(code, "reconcile_running") == 0) {
		reply_error(c, E_RECONCILE_RUNNING, NULL, "%s", why);
	} else {
		reply_error(c, E_POSTGRES_UNAVAILABLE, NULL, "%s", why ? why : "the run did not start");
	}
}

/* POST /v1/reconcile {"dry_run"?: bool (true), "service_name"?: S, "deep"?: bool}: a run as a job. */
static void h_reconcile_post(struct call *c)
{
	struct service *svc = c->api->svc;
	json_t *j, *v;
	const char *key, *service = NULL;
	bool dry = true, deep = false;

	if (!needs_postgres(c, "reconcile") || !(j = job_body(c, "\"dry_run\"?, \"service_name\"?, \"deep\"?")))
		return;
	json_object_foreach(j, key, v) {
		if (strcmp(key, "service_name") == 0 && service_name_value(v)) {
			service = json_string_value(v);
		} else if ((strcmp(key, "dry_run") == 0 || strcmp(key, "deep") == 0) && json_is_boolean(v)) {
			*(strcmp(key, "deep") == 0 ? &deep : &dry) = json_is_true(v);
		} else {
			bool known = strcmp(key, "service_name") == 0 || strcmp(key, "dry_run") == 0 ||
				     strcmp(key, "deep") == 0;

			reply_error(c, known ? E_INVALID_FIELD : E_UNKNOWN_FIELD, key,
				    known ? "%s: service_name is a string of 1 to 255 bytes, dry_run and deep booleans"
					  : "%s is not a field of a reconcile (dry_run, service_name, deep)", key);
			json_decref(j);
			return;
		}
	}
	if (svc->reconcile) {
		json_decref(j);
		reply_error(c, E_RECONCILE_RUNNING, NULL, "this replica is running reconcile-%lld: GET /v1/jobs/reconcile-%lld",
			    (long long)svc->reconcile_run, (long long)svc->reconcile_run);
		return;
	}
	if (!job_room(c)) {
		json_decref(j);
		return;
	}
	service_start_reconcile(svc, service, dry, deep, on_reconcile_answer, c);
	json_decref(j);
}

static void on_pause_changed(const char *text, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	bool pause = c->route == ROUTE_SYNC_PAUSE;
	json_error_t jerr;
	json_t *p;

	if (!o->res || !text) {
		reply_pg_failure(c, o);
		return;
	}
	/* This replica at once; the others at their next look at Postgres (a few seconds). */
	outbox_set_paused(c->api->svc->outbox, pause);
	p = json_loads(text, JSON_DECODE_ANY, &jerr);
	reply_json(c, 200, json_pack("{s:b, s:o}", "paused", pause, pause ? "pause" : "ended", p ? p : json_null()));
}

/* POST /v1/sync/pause {"reason"?}: every replica stops pushing; writes are still acknowledged (202, pending). */
static void h_sync_pause(struct call *c)
{
	json_t *j, *v;
	const char *key, *reason = NULL;

	if (!needs_postgres(c, "pausing the outbox") || !(j = job_body(c, "\"reason\"?")))
		return;
	json_object_foreach(j, key, v) {
		if (strcmp(key, "reason") == 0 && json_is_string(v) && json_string_length(v) <= 1000) {
			reason = json_string_value(v);
		} else {
			reply_error(c, strcmp(key, "reason") == 0 ? E_INVALID_FIELD : E_UNKNOWN_FIELD, key,
				    strcmp(key, "reason") == 0 ? "reason is a string of at most 1000 bytes"
							       : "%s is not a field of a pause (reason)", key);
			json_decref(j);
			return;
		}
	}
	store_sync_pause(c->api->svc->store, c->key[0] ? c->key : NULL, reason, c->id, on_pause_changed, c);
	json_decref(j);
}

/* POST /v1/sync/resume: pushing goes on, on every replica. */
static void h_sync_resume(struct call *c)
{
	if (!needs_postgres(c, "resuming the outbox"))
		return;
	store_sync_resume(c->api->svc->store, on_pause_changed, c);
}

static void on_retried(int64_t matched, int64_t retried, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;

	if (!o->res)
		reply_pg_failure(c, o);
	else
		reply_json(c, 200, json_pack("{s:I, s:I}", "matched", (json_int_t)matched, "retried", (json_int_t)retried));
}

/*
 * POST /v1/sync/retry {"state"?: "failed" | "pending", "service_name"?, "error_contains"?,
 * "older_than_s"?, "dry_run"?}: the changes picked are due now (after fixing what failed them).
 */
static void h_sync_retry(struct call *c)
{
	static const char fields[] = "\"state\"?, \"service_name\"?, \"error_contains\"?, \"older_than_s\"?, \"dry_run\"?";
	struct retry_selector sel = {false, NULL, NULL, -1, false};
	json_t *j, *v;
	const char *key;

	if (!needs_postgres(c, "retrying changes") || !(j = job_body(c, fields)))
		return;
	json_object_foreach(j, key, v) {
		const char *text = json_string_value(v);

		if (strcmp(key, "state") == 0 && text && (strcmp(text, "failed") == 0 || strcmp(text, "pending") == 0)) {
			sel.pending = strcmp(text, "pending") == 0;
		} else if (strcmp(key, "service_name") == 0 && service_name_value(v)) {
			sel.service = text;
		} else if (strcmp(key, "error_contains") == 0 && text && *text && json_string_length(v) <= 255) {
			sel.error_contains = text;
		} else if (strcmp(key, "older_than_s") == 0 && json_is_integer(v) && json_integer_value(v) >= 0 &&
			   json_integer_value(v) <= 100LL * 365 * 86400) {
			sel.older_than_s = (int64_t)json_integer_value(v);
		} else if (strcmp(key, "dry_run") == 0 && json_is_boolean(v)) {
			sel.dry_run = json_is_true(v);
		} else {
			static const char *const names[] = {"state", "service_name", "error_contains", "older_than_s",
							    "dry_run", NULL};
			bool known = one_of(key, names);

			reply_error(c, known ? E_INVALID_FIELD : E_UNKNOWN_FIELD, key,
				    known ? "%s: state is failed or pending, service_name and error_contains strings of 1 "
					    "to 255 bytes, older_than_s a whole number of seconds, dry_run a boolean"
					  : "%s is not a selector of a retry (state, service_name, error_contains, "
					    "older_than_s, dry_run)", key);
			json_decref(j);
			return;
		}
	}
	store_sync_retry(c->api->svc->store, &sel, on_retried, c);
	json_decref(j);
}

/* ---- jobs: restore jobs and reconcile runs ------------------------------------------ */

static json_t *count_or_null(int64_t n)
{
	return n >= 0 ? json_integer((json_int_t)n) : json_null();
}

static json_t *job_json(const struct job_row *j)
{
	char id[48], href[64];
	json_t *percent = json_null();

	snprintf(id, sizeof(id), "%s-%lld", j->kind, (long long)j->id);
	snprintf(href, sizeof(href), "/v1/jobs/%s", id);
	if (strcmp(j->state, "succeeded") == 0) {
		percent = json_real(100.0);
	} else if (j->total > 0) {
		double p = (double)(j->done + j->failed) * 100.0 / (double)j->total;

		percent = json_real((double)(long)((p > 100.0 ? 100.0 : p) * 10.0) / 10.0);
	} else if (j->total == 0) {
		percent = json_real(0.0);
	}
	return json_pack("{s:s, s:s, s:I, s:s, s:s, s:o, s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:s}", "id", id,
			 "kind", j->kind, "job_id", (json_int_t)j->id, "state", j->state, "status", j->status,
			 "service_name", string_or_null(j->service_name), "dry_run", j->dry_run, "total",
			 count_or_null(j->total), "done", count_or_null(j->done), "failed", count_or_null(j->failed),
			 "percent_complete", percent, "started_at", string_or_null(j->started_at), "updated_at",
			 string_or_null(j->updated_at), "finished_at", string_or_null(j->finished_at), "error",
			 string_or_null(j->error), "href", href);
}

/*
 * A job's id in the API: <kind>-<n> (restore-12, reconcile-5); a bare number
 * is a restore job's (the ids of the first releases).
 */
static bool job_ref(const char *s, const char **kind, int64_t *id)
{
	static const char *const kinds[] = {"restore", "reconcile"};
	const char *digits = s;
	size_t i, n;

	*kind = "restore";
	for (i = 0; i < ARRAY_LEN(kinds); i++) {
		size_t k = strlen(kinds[i]);

		if (strncmp(s, kinds[i], k) == 0 && s[k] == '-') {
			*kind = kinds[i];
			digits = s + k + 1;
		}
	}
	n = strspn(digits, "0123456789");
	if (n == 0 || digits[n] || n > 18)
		return false;
	*id = strtoll(digits, NULL, 10);
	return true;
}

static void on_job(const struct job_row *jobs, size_t n, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;

	if (!o->res)
		reply_pg_failure(c, o);
	else if (n == 0)
		reply_error(c, E_NOT_FOUND, NULL, "no job %s", c->path_id);
	else
		reply_json(c, 200, job_json(&jobs[0]));
}

static void h_job_get(struct call *c)
{
	const char *kind;
	int64_t id;

	if (!needs_postgres(c, "jobs"))
		return;
	if (!job_ref(c->path_id, &kind, &id)) {
		reply_error(c, E_NOT_FOUND, NULL, "no job %s (job ids are restore-N or reconcile-N)", c->path_id);
		return;
	}
	store_job(c->api->svc->store, kind, id, on_job, c);
}

static void on_jobs_listed(const struct job_row *jobs, size_t n, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	json_t *items;
	size_t i, shown;

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	shown = n > (size_t)c->limit ? (size_t)c->limit : n;
	items = json_array();
	for (i = 0; i < shown; i++)
		json_array_append_new(items, job_json(&jobs[i]));
	reply_json(c, 200, json_pack("{s:o, s:o}", "jobs", items, "next_cursor",
				     n > shown ? json_string(jobs[shown - 1].cursor) : json_null()));
}

/* A next_cursor of GET /v1/jobs: <microseconds>.<kind>.<id>. */
static bool jobs_cursor_valid(const char *s)
{
	size_t us = strspn(s, "0123456789"), id;
	const char *kind = s + us + 1;

	if (us == 0 || us > 18 || s[us] != '.')
		return false;
	if (strncmp(kind, "restore.", 8) == 0)
		kind += 8;
	else if (strncmp(kind, "reconcile.", 10) == 0)
		kind += 10;
	else
		return false;
	id = strspn(kind, "0123456789");
	return id > 0 && id <= 18 && kind[id] == '\0';
}

/* GET /v1/jobs?kind=K&state=S&limit=N&cursor=C: newest first. */
static void h_jobs_list(struct call *c)
{
	static const char *const kinds[] = {"restore", "reconcile", NULL};
	static const char *const states[] = {"queued", "running", "succeeded", "failed", "cancelled", NULL};
	const char *kind = query_value(c, "kind"), *state = query_value(c, "state"), *cursor = query_value(c, "cursor");
	int limit;

	if (!needs_postgres(c, "jobs"))
		return;
	if (kind && !one_of(kind, kinds)) {
		reply_error(c, E_INVALID_PARAMETER, "kind", "kind is restore or reconcile, not %s", kind);
		return;
	}
	if (state && !one_of(state, states)) {
		reply_error(c, E_INVALID_PARAMETER, "state",
			    "state is queued, running, succeeded, failed or cancelled, not %s", state);
		return;
	}
	if (cursor && !jobs_cursor_valid(cursor)) {
		reply_error(c, E_INVALID_PARAMETER, "cursor", "cursor must be a next_cursor of a page");
		return;
	}
	if (!page_limit(c, &limit))
		return;
	c->limit = limit;
	store_jobs_list(c->api->svc->store, kind, state, cursor, limit + 1, on_jobs_listed, c);
}

static void on_job_cancelled(bool cancelled, const char *before, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct service *svc = c->api->svc;
	const char *kind;
	int64_t id;
	char href[64];

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	if (!before) {
		reply_error(c, E_NOT_FOUND, NULL, "no job %s", c->path_id);
		return;
	}
	if (!cancelled) {
		reply_error(c, E_JOB_NOT_RUNNING, NULL, "job %s is %s: only a running job can be cancelled", c->path_id,
			    before);
		return;
	}
	(void)job_ref(c->path_id, &kind, &id);
	/* This replica runs it: stop now. Another does: it sees the row at its next page. */
	if (strcmp(kind, "restore") == 0 && svc->restore && svc->restore_job == id)
		restore_stop(svc->restore);
	else if (strcmp(kind, "reconcile") == 0 && svc->reconcile && svc->reconcile_run == id)
		reconcile_stop(svc->reconcile);
	else if (strcmp(kind, "reconcile") == 0)
		(void)reconciler_cancel(svc->reconciler, id);
	snprintf(href, sizeof(href), "/v1/jobs/%s-%lld", kind, (long long)id);
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Location", href);
	reply_json(c, 202, json_pack("{s:s, s:s, s:s}", "id", href + 9, "state", "cancelled", "href", href));
}

/* POST /v1/jobs/{id}/cancel: the job stops after the page it is on; a cancelled restore resumes later. */
static void h_job_cancel(struct call *c)
{
	const char *kind;
	int64_t id;
	char why[256];

	if (!needs_postgres(c, "jobs"))
		return;
	if (!job_ref(c->path_id, &kind, &id)) {
		reply_error(c, E_NOT_FOUND, NULL, "no job %s (job ids are restore-N or reconcile-N)", c->path_id);
		return;
	}
	snprintf(why, sizeof(why), "cancelled by %s%s (request %s)", c->key[0] ? "key " : "a caller without a key",
		 c->key, c->id);
	store_job_cancel(c->api->svc->store, kind, id, why, on_job_cancelled, c);
}

/* ---- the audit trail ------------------------------------------------------------------------ */

#define AUDIT_PARAMS_MAX 4096

/* What an audited request asked: its body, when a small JSON object, and the id in its path ("id"). */
static void audit_keep_params(struct call *c)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
	size_t len = evbuffer_get_length(in);
	json_t *j = NULL;

	if (len > 0 && len <= AUDIT_PARAMS_MAX)
		j = json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		j = c->path_id ? json_object() : NULL;
	}
	if (j && c->path_id)
		json_object_set_new(j, "id", json_string(c->path_id));
	if (j)
		c->audit_params = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
}

static void on_audit_recorded(const struct pg_outcome *o, void *arg)
{
	char *what = arg;

	if (!o->res)
		log_error(COMP, "audit: %s was answered but could not be recorded: %s", what, o->error);
	free(what);
}

/* An audited route was answered: who (the key's name), what, when, how it went. */
static void audit_record(struct call *c, int status)
{
	struct store *st = c->api->svc->store;
	const char *action = route_name(c->route);
	struct audit_entry e = {c->key[0] ? c->key : NULL, action, c->audit_params, status, c->id};
	char what[160];

	if (!st)
		return;
	snprintf(what, sizeof(what), "req=%s%s%s %s -> %d", c->id, c->key[0] ? " key=" : "", c->key, action, status);
	log_info(COMP, "audit: %s", what);
	store_audit_record(st, &e, c->api->o.audit_days, on_audit_recorded, xstrdup(what));
}

static void on_audit_listed(const struct audit_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	json_t *entries = json_array(), *params;
	size_t i, shown = n > (size_t)c->limit ? (size_t)c->limit : n;

	if (!o->res) {
		json_decref(entries);
		reply_pg_failure(c, o);
		return;
	}
	for (i = 0; i < shown; i++) {
		params = rows[i].params ? json_loads(rows[i].params, 0, NULL) : NULL;
		json_array_append_new(entries,
				      json_pack("{s:I, s:o, s:o, s:s, s:o, s:i, s:o, s:o}", "id", (json_int_t)rows[i].id,
						"at", string_or_null(rows[i].at), "key", string_or_null(rows[i].key_name),
						"action", rows[i].action, "params", params ? params : json_null(),
						"status", rows[i].status, "request_id", string_or_null(rows[i].request_id),
						"host", string_or_null(rows[i].host)));
	}
	reply_json(c, 200, json_pack("{s:o, s:o}", "entries", entries, "next_before",
				     n > shown ? json_integer((json_int_t)rows[shown - 1].id) : json_null()));
}

static void h_audit(struct call *c)
{
	const char *before = query_value(c, "before");
	size_t n = before ? strspn(before, "0123456789") : 0;
	int limit;

	if (!needs_postgres(c, "the audit trail"))
		return;
	if (!page_limit(c, &limit))
		return;
	if (before && (n == 0 || before[n] || n > 18)) {
		reply_error(c, E_INVALID_PARAMETER, "before", "before must be an entry id (next_before of a page)");
		return;
	}
	c->limit = limit;
	store_audit_list(c->api->svc->store, before ? strtoll(before, NULL, 10) : 0, limit + 1, on_audit_listed, c);
}

static void h_openapi(struct call *c)
{
	reply_typed(c, 200, "application/json", openapi_json, openapi_json_len);
}

static void h_healthz(struct call *c)
{
	reply_json(c, 200, json_pack("{s:s}", "status", "ok"));
}

/* A check's state: the detailed text, or only its first words (before ':') for a caller without a key. */
static json_t *check_state(bool detail, json_t *text)
{
	const char *s = json_string_value(text);
	json_t *short_form;

	if (detail || !strchr(s, ':'))
		return text;
	short_form = json_stringn(s, (size_t)(strchr(s, ':') - s));
	json_decref(text);
	return short_form;
}

/*
 * Readiness: what is up. Error texts (libpq's and libcurl's name hosts, users
 * and databases) only for a caller with a valid key, or when no key is needed.
 */
static void h_readyz(struct call *c)
{
	struct service *svc = c->api->svc;
	json_t *j = json_object();
	bool detail = c->api->ring.n == 0 || (c->scopes & KEY_READ);

	json_object_set_new(j, "ready", json_boolean(service_ready(svc)));
	if (!svc->pool)
		json_object_set_new(j, "postgres", json_string("off (vector-DB-only mode)"));
	else if (!pgpool_ready(svc->pool))
		json_object_set_new(j, "postgres", json_string("unreachable"));
	else if (service_pg_stalled(svc))
		json_object_set_new(j, "postgres", json_sprintf("no answer for %lld ms",
							       (long long)(clock_mono_ms() - svc->pg_asked_ms)));
	else if (!svc->pg_migrated)
		json_object_set_new(j, "postgres", check_state(detail, json_sprintf("not migrated: %s", svc->pg_why)));
	else
		json_object_set_new(j, "postgres", json_string("up"));
	if (service_vdb_stalled(svc))
		json_object_set_new(j, "vector_db", json_sprintf("no answer for %lld ms",
								 (long long)(clock_mono_ms() - svc->vdb_asked_ms)));
	else if (svc->vdb_up)
		json_object_set_new(j, "vector_db", json_string("up"));
	else
		json_object_set_new(j, "vector_db", check_state(detail, json_sprintf("down: %s", svc->vdb_why)));
	if (svc->stopping)
		json_object_set_new(j, "stopping", json_true());
	reply_json(c, json_is_true(json_object_get(j, "ready")) ? 200 : 503, j);
}

/* Freshness per blob (one per service): what waits for the vector DB, and for how long. */
static void render_backlog(const struct service *svc, struct buf *out)
{
	json_t *by_blob = json_object_get(svc->outbox_counts, "by_blob"), *b;
	json_t *last = json_object_get(svc->outbox_counts, "last_success");
	json_t *restore = json_object_get(svc->outbox_counts, "restore");
	const char *blob;
	char label[300];

	metrics_header(out, "abilitysync_backlog_pending", "gauge",
		       "Changes waiting for the vector DB (pending, pending_delete), by blob (one per service).");
	json_object_foreach(by_blob, blob, b) {
		snprintf(label, sizeof(label), "blob=\"%s\"", blob);
		metrics_value(out, "abilitysync_backlog_pending", label, json_number_value(json_object_get(b, "pending")));
	}
	metrics_header(out, "abilitysync_backlog_oldest_pending_seconds", "gauge",
		       "Age of the oldest change waiting for the vector DB, by blob.");
	json_object_foreach(by_blob, blob, b) {
		snprintf(label, sizeof(label), "blob=\"%s\"", blob);
		metrics_value(out, "abilitysync_backlog_oldest_pending_seconds", label,
			      json_number_value(json_object_get(b, "oldest_pending_seconds")));
	}
	metrics_header(out, "abilitysync_last_success_timestamp_seconds", "gauge",
		       "When the last real reconcile run finished ok, and the last restore job done (any replica); "
		       "absent: never.");
	if (json_is_number(json_object_get(last, "reconcile")))
		metrics_value(out, "abilitysync_last_success_timestamp_seconds", "job=\"reconcile\"",
			      json_number_value(json_object_get(last, "reconcile")));
	if (json_is_number(json_object_get(last, "restore")))
		metrics_value(out, "abilitysync_last_success_timestamp_seconds", "job=\"restore\"",
			      json_number_value(json_object_get(last, "restore")));
	metrics_header(out, "abilitysync_restore_rows", "gauge",
		       "The running restore job (any replica): its rows in total, done and failed; absent: none runs.");
	if (json_is_object(restore)) {
		metrics_value(out, "abilitysync_restore_rows", "count=\"total\"",
			      json_number_value(json_object_get(restore, "total")));
		metrics_value(out, "abilitysync_restore_rows", "count=\"done\"",
			      json_number_value(json_object_get(restore, "done")));
		metrics_value(out, "abilitysync_restore_rows", "count=\"failed\"",
			      json_number_value(json_object_get(restore, "failed")));
	}
}

static void render_outbox(const struct service *svc, struct buf *out)
{
	static const char *const states[] = {"pending", "synced", "pending_delete", "deleted", "failed"};
	json_t *counts = json_object_get(svc->outbox_counts, "counts");
	size_t i;

	if (!svc->outbox_counts)
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
		      json_number_value(json_object_get(svc->outbox_counts, "oldest_pending_seconds")));
	metrics_header(out, "abilitysync_outbox_paused", "gauge",
		       "1 while the outbox is paused (POST /v1/sync/pause): nothing is pushed.");
	metrics_value(out, "abilitysync_outbox_paused", NULL, outbox_paused(svc->outbox));
	metrics_header(out, "abilitysync_outbox_in_doubt", "gauge",
		       "Abilities whose vector is in doubt (an ambiguous call may still land), awaiting verification.");
	metrics_value(out, "abilitysync_outbox_in_doubt", NULL,
		      json_number_value(json_object_get(svc->outbox_counts, "in_doubt")));
	render_backlog(svc, out);
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
	metrics_header(out, "abilitysync_vdb_ambiguous_total", "counter",
		       "Vector DB write attempts that may have been applied unbeknown, by call and reason.");
	for (i = 0; i < VDB_AMB_CALLS; i++) {
		size_t k;

		for (k = 0; k < VDB_AMB_REASONS; k++) {
			char labels[64];

			snprintf(labels, sizeof(labels), "call=\"%s\",reason=\"%s\"", vdb_ambiguous_call_names[i],
				 vdb_ambiguous_reason_names[k]);
			metrics_value(out, "abilitysync_vdb_ambiguous_total", labels, (double)vs.ambiguous[i][k]);
		}
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
	metrics_header(out, "abilitysync_pg_backends_ended_total", "counter",
		       "Backends of connections dropped at their deadline that a later connection ended.");
	metrics_value(out, "abilitysync_pg_backends_ended_total", NULL, (double)st.backends_ended);
}

/* Drift as the last finished reconcile run (of any replica) found it, and this replica's runs. */
static void render_reconcile(const struct service *svc, struct buf *out)
{
	json_t *last = json_object_get(svc->outbox_counts, "reconcile");
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

/* Requests answered per key name (key=""; callers without a key); a SIGHUP starts the counts again. */
static void render_by_key(const struct api *a, struct buf *out)
{
	char label[KEY_NAME_MAX + 16];
	size_t i;

	metrics_header(out, "abilitysync_http_requests_by_key_total", "counter",
		       "Requests answered, by the name of the API key sent (\"\": none or not valid).");
	for (i = 0; i <= a->ring.n; i++) {
		snprintf(label, sizeof(label), "key=\"%s\"", i < a->ring.n ? a->ring.keys[i].name : "");
		metrics_value(out, "abilitysync_http_requests_by_key_total", label, (double)a->by_key[i]);
	}
}

static void render_metrics(struct call *c)
{
	struct service *svc = c->api->svc;
	struct outbox_stats ps;
	struct buf out = BUF_INIT;

	http_metrics_render(&svc->http, &out);
	render_vdb(svc, &out);
	render_pg(svc, &out);
	render_outbox(svc, &out);
	outbox_get_stats(svc->outbox, &ps);
	metrics_header(&out, "abilitysync_pushes_total", "counter", "Abilities pushed to the vector DB, by result.");
	metrics_value(&out, "abilitysync_pushes_total", "result=\"pushed\"", (double)ps.pushed);
	metrics_value(&out, "abilitysync_pushes_total", "result=\"deleted\"", (double)ps.deleted);
	metrics_value(&out, "abilitysync_pushes_total", "result=\"failed\"", (double)ps.failed);
	metrics_header(&out, "abilitysync_retry_claimed_total", "counter", "Outbox rows the retry worker claimed.");
	metrics_value(&out, "abilitysync_retry_claimed_total", NULL, (double)ps.claimed);
	metrics_header(&out, "abilitysync_push_fencing_total", "counter",
		       "Pushes that waited behind another of the same ability (coalesced) or whose outcome a newer "
		       "write overtook (superseded).");
	metrics_value(&out, "abilitysync_push_fencing_total", "event=\"coalesced\"", (double)ps.coalesced);
	metrics_value(&out, "abilitysync_push_fencing_total", "event=\"superseded\"", (double)ps.superseded);
	metrics_header(&out, "abilitysync_ambiguous_pushes_total", "counter",
		       "Pushes with a vector DB call that may have been applied unbeknown (time-out or reset after "
		       "sending, 500/502/504).");
	metrics_value(&out, "abilitysync_ambiguous_pushes_total", NULL, (double)ps.ambiguous);
	metrics_header(&out, "abilitysync_verifications_total", "counter",
		       "Abilities verified after their doubt window, by result (read_back: the vector matched, nothing "
		       "written; rewritten: written again).");
	metrics_value(&out, "abilitysync_verifications_total", "result=\"read_back\"", (double)ps.verified_by_read);
	metrics_value(&out, "abilitysync_verifications_total", "result=\"rewritten\"", (double)ps.repaired);
	render_reconcile(svc, &out);
	metrics_header(&out, "abilitysync_http_connections", "gauge", "Open client connections.");
	metrics_value(&out, "abilitysync_http_connections", NULL, c->api->connections);
	metrics_header(&out, "abilitysync_http_rejected_total", "counter",
		       "Requests and connections turned away by a limit, by reason (in_flight: 503 at "
		       "HTTP_MAX_IN_FLIGHT; connections: times accepting paused at HTTP_MAX_CONNECTIONS; "
		       "body: 413 over MAX_BODY_BYTES; headers: 400 for a request line or headers over "
		       "HTTP_HEADERS_MAX or unparsable).");
	metrics_value(&out, "abilitysync_http_rejected_total", "reason=\"in_flight\"",
		      (double)c->api->rejected_in_flight);
	metrics_value(&out, "abilitysync_http_rejected_total", "reason=\"connections\"",
		      (double)c->api->paused_accepts);
	metrics_value(&out, "abilitysync_http_rejected_total", "reason=\"body\"", (double)c->api->rejected_body);
	metrics_value(&out, "abilitysync_http_rejected_total", "reason=\"headers\"", (double)c->api->rejected_header);
	render_by_key(c->api, &out);
	metrics_header(&out, "abilitysync_ready", "gauge", "1 when /readyz says ready.");
	metrics_value(&out, "abilitysync_ready", NULL, service_ready(svc));
	reply_typed(c, 200, "text/plain; version=0.0.4", out.data, out.len);
	buf_free(&out);
}

static void on_metrics_outbox(const char *text, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	json_error_t jerr;
	json_t *fresh = text ? json_loads(text, 0, &jerr) : NULL;

	(void)o;
	/* Without Postgres right now, the last count is shown (its age is in the log). */
	if (fresh) {
		json_decref(c->api->svc->outbox_counts);
		c->api->svc->outbox_counts = fresh;
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
	unsigned scope;         /* what a key needs (keys.h); 0: open to anyone */
	bool audited;           /* its answer is recorded in the audit trail */
	const char *suffix;     /* with_id: what follows the id ("/cancel"), or NULL */
};

static const struct route_def route_table[] = {
	{EVHTTP_REQ_POST, "/v1/abilities", false, ROUTE_ABILITIES_POST, h_abilities_post, KEY_WRITE, false, NULL},
	{EVHTTP_REQ_GET, "/v1/abilities", false, ROUTE_ABILITIES_LIST, h_abilities_list, KEY_READ, false, NULL},
	{EVHTTP_REQ_GET, "/v1/abilities/", true, ROUTE_ABILITY_GET, h_ability_get, KEY_READ, false, NULL},
	{EVHTTP_REQ_DELETE, "/v1/abilities/", true, ROUTE_ABILITY_DELETE, h_ability_delete, KEY_WRITE, false, NULL},
	{EVHTTP_REQ_POST, "/v1/search", false, ROUTE_SEARCH, h_search, KEY_READ, false, NULL},
	{EVHTTP_REQ_GET, "/v1/sync/status", false, ROUTE_SYNC_STATUS, h_sync_status, KEY_READ, false, NULL},
	{EVHTTP_REQ_POST, "/v1/sync/retry", false, ROUTE_SYNC_RETRY, h_sync_retry, KEY_ADMIN, true, NULL},
	{EVHTTP_REQ_POST, "/v1/sync/pause", false, ROUTE_SYNC_PAUSE, h_sync_pause, KEY_ADMIN, true, NULL},
	{EVHTTP_REQ_POST, "/v1/sync/resume", false, ROUTE_SYNC_RESUME, h_sync_resume, KEY_ADMIN, true, NULL},
	{EVHTTP_REQ_GET, "/v1/reconcile/last", false, ROUTE_RECONCILE_LAST, h_reconcile_last, KEY_READ, false, NULL},
	{EVHTTP_REQ_POST, "/v1/reconcile", false, ROUTE_RECONCILE_POST, h_reconcile_post, KEY_ADMIN, true, NULL},
	{EVHTTP_REQ_POST, "/v1/restore", false, ROUTE_RESTORE_POST, h_restore_post, KEY_ADMIN, true, NULL},
	{EVHTTP_REQ_GET, "/v1/jobs", false, ROUTE_JOBS_LIST, h_jobs_list, KEY_READ, false, NULL},
	{EVHTTP_REQ_GET, "/v1/jobs/", true, ROUTE_JOB_GET, h_job_get, KEY_READ, false, NULL},
	{EVHTTP_REQ_POST, "/v1/jobs/", true, ROUTE_JOB_CANCEL, h_job_cancel, KEY_ADMIN, true, "/cancel"},
	{EVHTTP_REQ_GET, "/v1/audit", false, ROUTE_AUDIT, h_audit, KEY_ADMIN, false, NULL},
	{EVHTTP_REQ_GET, "/v1/openapi.json", false, ROUTE_OPENAPI, h_openapi, 0, false, NULL},
	{EVHTTP_REQ_GET, "/healthz", false, ROUTE_HEALTHZ, h_healthz, 0, false, NULL},
	{EVHTTP_REQ_GET, "/readyz", false, ROUTE_READYZ, h_readyz, 0, false, NULL},
	{EVHTTP_REQ_GET, "/metrics", false, ROUTE_METRICS, h_metrics, 0, false, NULL},
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
	const char *end;

	if (!d->with_id)
		return strcmp(path, d->path) == 0;
	if (strncmp(path, d->path, n) != 0 || !path[n])
		return false;
	end = strchr(path + n, '/');
	if (d->suffix ? !end || strcmp(end, d->suffix) != 0 : end != NULL)
		return false;
	if (!end)
		end = path + strlen(path);
	if (id) {
		char *raw = xstrndup(path + n, (size_t)(end - path - n));

		*id = evhttp_uridecode(raw, 0, &len);
		free(raw);
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

/* Who the caller is: the key it presented, if it is one of ours. */
static void identify(struct call *c)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(c->req), "Authorization");
	const struct api_key *k;

	c->key_index = c->api->ring.n;
	if (c->api->ring.n == 0 || !h || strncasecmp(h, "Bearer ", 7) != 0 ||
	    !(k = keyring_find(&c->api->ring, h + 7, strlen(h + 7))))
		return;
	snprintf(c->key, sizeof(c->key), "%s", k->name);
	c->scopes = k->scopes;
	c->key_index = (size_t)(k - c->api->ring.keys);
}

static void reply_unauthorized(struct call *c)
{
	bool presented = evhttp_find_header(evhttp_request_get_input_headers(c->req), "Authorization") != NULL;

	evhttp_add_header(evhttp_request_get_output_headers(c->req), "WWW-Authenticate", "Bearer realm=\"abilitysync\"");
	reply_error(c, E_UNAUTHORIZED, NULL, presented ? "the API key is not valid" : "send Authorization: Bearer <API key>");
}

/*
 * With keys configured, /v1/ needs one whatever the route (an unknown caller
 * learns nothing of the routes), but for the API's own description.
 */
static bool authenticated(struct call *c, const char *path)
{
	if (c->api->ring.n == 0 || strncmp(path, "/v1/", 4) != 0 || c->key[0] || strcmp(path, "/v1/openapi.json") == 0)
		return true;
	reply_unauthorized(c);
	return false;
}

/* The route's scope, held by the caller's key (403 naming the scope needed otherwise). */
static bool permitted(struct call *c, const struct route_def *d)
{
	unsigned need = d->route == ROUTE_METRICS && c->api->o.metrics_auth ? KEY_READ : d->scope;
	char has[32], needs[16];

	if (c->api->ring.n == 0 || need == 0 || (c->scopes & need))
		return true;
	if (!c->key[0]) {
		reply_unauthorized(c);
		return false;
	}
	key_scopes_text(need, needs, sizeof(needs));
	key_scopes_text(c->scopes, has, sizeof(has));
	reply_error(c, E_FORBIDDEN, NULL, "the key %s (%s) lacks the %s scope %s %s needs", c->key, has, needs,
		    method_text(d->method), d->path);
	return false;
}

/* ---- rate limits: a token bucket per key --------------------------------------------- */

struct bucket {
	double tokens;
	int64_t at_us;
};

/* The state kept per key (rate buckets, request counts), sized to the ring; the last is for no key. */
static void per_key_reset(struct api *a)
{
	size_t i;

	free(a->buckets);
	a->buckets = NULL;
	free(a->by_key);
	a->by_key = xcalloc(a->ring.n + 1, sizeof(*a->by_key));
	if (a->o.rate_rps <= 0)
		return;
	a->buckets = xcalloc(a->ring.n + 1, sizeof(*a->buckets));
	for (i = 0; i <= a->ring.n; i++)
		a->buckets[i] = (struct bucket){(double)a->o.rate_burst, clock_mono_us()};
}

/* A token for this caller's key (callers without one share the last bucket), or 429 with Retry-After. */
static bool within_rate(struct call *c, const char *path)
{
	struct api *a = c->api;
	struct bucket *b;
	int64_t now = clock_mono_us();
	char after[16];

	if (!a->buckets || strncmp(path, "/v1/", 4) != 0)
		return true;
	b = &a->buckets[c->key_index <= a->ring.n ? c->key_index : a->ring.n];
	b->tokens += (double)(now - b->at_us) / 1e6 * a->o.rate_rps;
	if (b->tokens > a->o.rate_burst)
		b->tokens = a->o.rate_burst;
	b->at_us = now;
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
		return true;
	}
	snprintf(after, sizeof(after), "%d", (int)((1.0 - b->tokens) / a->o.rate_rps) + 1);
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", after);
	reply_error(c, E_RATE_LIMITED, NULL, "%s: over RATE_LIMIT_RPS=%g (burst %d); try again in %s s",
		    c->key[0] ? c->key : "callers without a key", a->o.rate_rps, a->o.rate_burst, after);
	return false;
}

/* The client's X-Request-Id when it is short and plain, else one of ours. */
static void request_id(struct call *c)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(c->req), "X-Request-Id");
	size_t n = h ? strspn(h, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") : 0;

	if (h && n > 0 && n <= 64 && h[n] == '\0') {
		snprintf(c->id, sizeof(c->id), "%s", h);
		return;
	}
	snprintf(c->id, sizeof(c->id), "%08x-%llu", (unsigned)getpid(), (unsigned long long)++c->api->next_id);
	if (h) /* it would not be safe in logs and headers as it is: say which one it became */
		log_info(COMP, "req=%s: the client's X-Request-Id (%zu bytes) is not 1-64 of A-Z a-z 0-9 . _ : -; "
			 "this request is %s", c->id, strlen(h), c->id);
}

static void count_connection(struct api *a, struct evhttp_request *req);

static struct call *call_new(struct api *a, struct evhttp_request *req)
{
	struct call *c = xcalloc(1, sizeof(*c));

	c->api = a;
	c->req = req;
	c->refs = 1;
	c->route = ROUTE_OTHER;
	c->key_index = a->ring.n; /* no key until identify() finds one */
	c->start_us = clock_mono_us();
	TAILQ_INIT(&c->query);
	TAILQ_INSERT_TAIL(&a->calls, c, link);
	a->in_flight++;
	request_id(c);
	return c;
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct api *a = arg;
	struct call *c;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	enum route route;
	const char *bad;
	char allow[64];
	size_t i;

	tcp_nodelay(req);
	count_connection(a, req);
	c = call_new(a, req);
	if (!path || !*path)
		path = "/";
	if (a->in_flight > a->o.max_in_flight && strcmp(path, "/healthz") != 0 && strcmp(path, "/readyz") != 0) {
		a->rejected_in_flight++;
		reply_error(c, E_OVERLOADED, NULL, "%d requests are being handled (HTTP_MAX_IN_FLIGHT); try again shortly",
			    a->o.max_in_flight);
		return;
	}
	if (query && evhttp_parse_query_str(query, &c->query) != 0) {
		reply_error(c, E_BAD_QUERY, NULL, "the query string cannot be parsed");
		return;
	}
	if ((bad = query_not_text(&c->query))) {
		reply_error(c, E_BAD_QUERY, bad, "the query parameter %s is not UTF-8 text", bad);
		return;
	}
	identify(c);
	if (!authenticated(c, path))
		return;
	switch (api_match_route(m, path, &route, &c->path_id, allow, sizeof(allow))) {
	case API_MATCH_NOT_FOUND:
		reply_error(c, E_NOT_FOUND, NULL, "no route %s %s", method_text(m), path);
		return;
	case API_MATCH_BAD_METHOD:
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "Allow", allow);
		reply_error(c, E_METHOD_NOT_ALLOWED, NULL, "%s is not allowed on %s (allowed: %s)", method_text(m),
			    path, allow);
		return;
	case API_MATCH_BAD_ID:
		c->route = route;
		reply_error(c, E_BAD_PATH, NULL, "the id in %s cannot be decoded", path);
		return;
	case API_MATCH_OK:
		break;
	}
	c->route = route;
	for (i = 0; i < ARRAY_LEN(route_table); i++) {
		if (route_table[i].route == route) {
			/* An admin route is audited whatever the answer: a refused attempt is worth a line too. */
			c->audited = route_table[i].audited;
			if (c->audited)
				audit_keep_params(c);
			if (!permitted(c, &route_table[i]) || !within_rate(c, path))
				return;
			route_table[i].handler(c);
			return;
		}
	}
}

/* ---- answers libevent gives by itself ---------------------------------------------- */

/*
 * libevent 2.1 answers some requests before any handler sees them: a body over
 * MAX_BODY_BYTES (413, before it is read), a request line or header block it cannot
 * parse or that is over HTTP_HEADERS_MAX (400), an Expect it does not know (417), a
 * method outside the allowed set (501). Each of those answers goes through
 * evhttp_send_error(), which libevent exports and calls through the PLT, so defining it
 * here replaces its HTML page with the JSON error every other answer has (libevent 2.2
 * added evhttp_set_errorcb for this). Its callers give no context, hence the one
 * pointer below: the api this process serves. The service suite's 20 MB body and the
 * contract suite's error codes fail if a libevent build stops calling this.
 */
static struct api *serving;

void evhttp_send_error(struct evhttp_request *req, int status, const char *why)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct call *c;

	(void)why;
	if (req->major == 0) { /* the request line never parsed: answer in HTTP/1.1 */
		req->major = 1;
		req->minor = 1;
	}
	evhttp_clear_headers(h);
	evhttp_add_header(h, "Connection", "close");
	if (!serving) {
		evhttp_send_reply(req, status, reason(status), NULL);
		return;
	}
	c = call_new(serving, req);
	switch (status) {
	case 413:
		serving->rejected_body++;
		reply_error(c, E_PAYLOAD_TOO_LARGE, NULL, "the body is over MAX_BODY_BYTES (%zu bytes); nothing was read",
			    serving->o.max_body);
		break;
	case 417:
		reply_error(c, E_EXPECTATION_FAILED, NULL, "the only Expect this server knows is 100-continue");
		break;
	case 501:
		reply_error(c, E_METHOD_NOT_IMPLEMENTED, NULL, "no route takes this method");
		break;
	default:
		serving->rejected_header++;
		reply_coded(c, status, errcode_def(E_BAD_REQUEST)->code, NULL,
			    "the request line or headers cannot be parsed, or are over HTTP_HEADERS_MAX", NULL);
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

static bool host_resolves(const char *host)
{
	struct evutil_addrinfo hints, *ai = NULL;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = EVUTIL_AI_PASSIVE;
	rc = evutil_getaddrinfo(*host ? host : NULL, "0", &hints, &ai);
	if (ai)
		evutil_freeaddrinfo(ai);
	return rc == 0;
}

static bool loopback(const char *host)
{
	struct in_addr v4;

	if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0)
		return true;
	return inet_pton(AF_INET, host, &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

/* The keys of API_KEYS and API_KEYS_FILE, into a new ring (*r untouched on error). */
static bool load_keys(const struct api_opts *o, struct keyring *r, struct errbuf *err)
{
	struct keyring fresh = {0};

	if ((o->api_keys && !keyring_add(&fresh, o->api_keys, false, "API_KEYS", err)) ||
	    (o->api_keys_file && !keyring_add_file(&fresh, o->api_keys_file, err))) {
		keyring_free(&fresh);
		return false;
	}
	keyring_free(r);
	*r = fresh;
	return true;
}

static void log_keys(const struct api *a, const char *what)
{
	struct buf names = BUF_INIT;
	char scopes[32];
	size_t i;

	for (i = 0; i < a->ring.n; i++) {
		key_scopes_text(a->ring.keys[i].scopes, scopes, sizeof(scopes));
		buf_printf(&names, "%s%s (%s)", i ? ", " : "", a->ring.keys[i].name, scopes);
	}
	log_info(COMP, "%s %zu API key(s)%s%s", what, a->ring.n, a->ring.n ? ": " : "", buf_cstr(&names));
	buf_free(&names);
}

bool api_reload_keys(struct api *a)
{
	struct keyring r = {0};
	struct errbuf err;

	if (!a->o.api_keys_file) {
		log_info(COMP, "SIGHUP: no API_KEYS_FILE to re-read; the keys stay as they are");
		return true;
	}
	if (!load_keys(&a->o, &r, &err)) {
		log_error(COMP, "SIGHUP: %s; the keys stay as they were", err.msg);
		return false;
	}
	if (r.n == 0 && a->ring.n > 0) {
		log_error(COMP, "SIGHUP: %s holds no key now, which would open the API to anyone; the keys stay as "
			  "they were", a->o.api_keys_file);
		keyring_free(&r);
		return false;
	}
	keyring_free(&a->ring);
	a->ring = r;
	per_key_reset(a);
	log_keys(a, "SIGHUP: re-read API_KEYS_FILE:");
	return true;
}

/*
 * Connections are counted from their first request on (libevent 2.1's evhttp
 * tells of a connection only then, and of its end by a close callback). At
 * max_connections the listener stops accepting, and new clients wait in the
 * kernel's accept queue until one closes. A connection that never finishes its
 * headers is closed by the read timeout (HTTP_READ_TIMEOUT_MS).
 */
/* The connections counted: a set of pointers (open addressing, linear probing, tombstones). */
#define CONN_GONE ((void *)1)

static size_t conn_slot(const struct api *a, const void *evcon)
{
	return ((uintptr_t)evcon >> 4) * 11400714819323198485ull & (a->conn_cap - 1);
}

static bool conn_has(const struct api *a, const void *evcon)
{
	size_t i;

	if (!a->conn_cap)
		return false;
	for (i = conn_slot(a, evcon); a->conn_set[i]; i = (i + 1) & (a->conn_cap - 1))
		if (a->conn_set[i] == evcon)
			return true;
	return false;
}

static void conn_add(struct api *a, void *evcon);

static void conn_rehash(struct api *a, size_t cap)
{
	void **old = a->conn_set;
	size_t oldcap = a->conn_cap, i;

	a->conn_set = xcalloc(cap, sizeof(void *));
	a->conn_cap = cap;
	a->conn_used = 0;
	for (i = 0; i < oldcap; i++)
		if (old[i] && old[i] != CONN_GONE)
			conn_add(a, old[i]);
	free(old);
}

static void conn_add(struct api *a, void *evcon)
{
	size_t i;

	if ((a->conn_used + 1) * 2 > a->conn_cap)
		conn_rehash(a, a->conn_cap ? a->conn_cap * 2 : 64);
	for (i = conn_slot(a, evcon); a->conn_set[i] && a->conn_set[i] != CONN_GONE; i = (i + 1) & (a->conn_cap - 1))
		;
	a->conn_used += a->conn_set[i] == NULL;
	a->conn_set[i] = evcon;
}

static void conn_remove(struct api *a, const void *evcon)
{
	size_t i;

	for (i = conn_slot(a, evcon); a->conn_set[i]; i = (i + 1) & (a->conn_cap - 1)) {
		if (a->conn_set[i] == evcon) {
			a->conn_set[i] = CONN_GONE;
			return;
		}
	}
}

static void on_connection_closed(struct evhttp_connection *evcon, void *arg)
{
	struct api *a = arg;

	conn_remove(a, evcon);
	a->connections--;
	if (a->accepting_paused && a->connections < a->o.max_connections && a->sock) {
		evconnlistener_enable(evhttp_bound_socket_get_listener(a->sock));
		a->accepting_paused = false;
		log_info(COMP, "accepting connections again (%d open)", a->connections);
	}
}

static void count_connection(struct api *a, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);

	if (!evcon || conn_has(a, evcon))
		return;
	conn_add(a, evcon);
	evhttp_connection_set_closecb(evcon, on_connection_closed, a);
	if (++a->connections >= a->o.max_connections && !a->accepting_paused && a->sock) {
		evconnlistener_disable(evhttp_bound_socket_get_listener(a->sock));
		a->accepting_paused = true;
		a->paused_accepts++;
		log_warn(COMP, "HTTP_MAX_CONNECTIONS=%d connections are open: not accepting more until one closes",
			 a->o.max_connections);
	}
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
		err_usage(err, "TLS_CERT_FILE=%s / TLS_KEY_FILE=%s: %s", a->o.tls_cert, a->o.tls_key,
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
	TAILQ_INIT(&a->calls);
	if (!split_listen(o->listen, host, sizeof(host), &port)) {
		err_usage(err, "LISTEN=\"%s\": expected host:port (e.g. 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080)",
			  o->listen);
		goto fail;
	}
	if (!load_keys(o, &a->ring, err))
		goto fail;
	per_key_reset(a);
	if (a->ring.n)
		log_keys(a, "serving with");
	if (a->ring.n == 0 && !loopback(host) && !o->allow_open) {
		err_usage(err, "LISTEN=%s is not loopback and API_KEYS is empty: set API_KEYS, or "
			"ALLOW_UNAUTHENTICATED=true to serve without keys on purpose", o->listen);
		goto fail;
	}
	a->http = evhttp_new(svc->base);
	evhttp_set_max_body_size(a->http, (ev_ssize_t)o->max_body);
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE | EVHTTP_REQ_PUT |
					    EVHTTP_REQ_HEAD | EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	evhttp_set_max_headers_size(a->http, (ev_ssize_t)o->headers_max);
	{
		struct timeval tv = {o->read_timeout_ms / 1000, (o->read_timeout_ms % 1000) * 1000};

		evhttp_set_timeout_tv(a->http, &tv);
	}
	evhttp_set_gencb(a->http, on_request, a);
	if ((o->tls_cert != NULL) != (o->tls_key != NULL)) {
		err_usage(err, "TLS_CERT_FILE and TLS_KEY_FILE go together: set both to serve HTTPS, or neither for HTTP "
			  "(only %s is set)", o->tls_cert ? "TLS_CERT_FILE" : "TLS_KEY_FILE");
		goto fail;
	}
	if (!host_resolves(host)) {
		err_usage(err, "LISTEN=%s: %s is not a host name or address this machine can listen on", o->listen, host);
		goto fail;
	}
	if (o->tls_cert && o->tls_key && !setup_tls(a, err))
		goto fail;
	a->sock = evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)port);
	if (!a->sock) {
		if (errno == EADDRNOTAVAIL)
			err_usage(err, "LISTEN=%s: not an address of this host", o->listen);
		else
			err_set(err, "LISTEN=%s: cannot listen there: %s", o->listen, strerror(errno));
		goto fail;
	}
	fd = evhttp_bound_socket_get_fd(a->sock);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						      : ((struct sockaddr_in *)&ss)->sin_port);
	snprintf(a->address, sizeof(a->address), "%s%s:%d", o->tls_cert ? "https://" : "http://", host, port);
	serving = a;
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
	struct call *c;

	if (!a)
		return;
	if (a->http)
		evhttp_free(a->http);
	if (serving == a)
		serving = NULL;
	/* Calls still waiting for something that will never come (a job let go at teardown). */
	while ((c = TAILQ_FIRST(&a->calls)) != NULL) {
		c->refs = 1;
		call_release(c);
	}
	if (a->ssl)
		SSL_CTX_free(a->ssl);
	keyring_free(&a->ring);
	free(a->buckets);
	free(a->by_key);
	free(a->conn_set);
	free(a);
}
