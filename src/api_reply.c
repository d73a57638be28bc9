/* The answers every route gives and the parts of a request every handler reads. */
#include "api_call.h"

/* ---- answers ------------------------------------------------------------------ */

const char *reason(int status)
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

void call_release(struct call *c)
{
	if (--c->refs > 0)
		return;
	c->api->in_flight--;
	TAILQ_REMOVE(&c->api->calls, c, link);
	free(c->path_id);
	json_decref(c->hits);
	search_free(c->search);
	free(c->audit_params);
	evhttp_clear_headers(&c->query);
	free(c);
}

void reply_typed(struct call *c, int status, const char *type, const char *body, size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
	double secs = (double)(clock_mono_us() - c->start_us) / 1e6;

	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "X-Request-Id", c->id);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evbuffer_add(evhttp_request_get_output_buffer(c->req), body, len);
	evhttp_send_reply(c->req, status, reason(status), NULL);
	c->replied = true;
	/* Counted by its place in the ring now (a SIGHUP between question and answer may shift it). */
	http_metrics_observe(&c->api->http_counts, c->key_index < c->api->ring.n ? c->key_index : c->api->ring.n,
			     c->route, status, secs);
	if (status >= 500 && c->route != ROUTE_READYZ) /* not ready is a normal answer there */
		log_warn(COMP, "req=%s%s%s %s -> %d in %.1f ms: %.*s", c->id, c->key[0] ? " key=" : "", c->key,
			 route_name(c->route), status, secs * 1000, (int)(len > 300 ? 300 : len), body);
	else
		log_debug(COMP, "req=%s%s%s %s -> %d in %.1f ms", c->id, c->key[0] ? " key=" : "", c->key,
			  route_name(c->route), status, secs * 1000);
	if (c->audited)
		audit_record(c, status);
	call_release(c);
}

void reply(struct call *c, int status, const char *body, size_t len)
{
	reply_typed(c, status, "application/json", body, len);
}

void reply_json(struct call *c, int status, json_t *j)
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

void reply_coded(struct call *c, int status, const char *code, const char *field, const char *message,
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
void reply_error(struct call *c, enum errcode e, const char *field, const char *fmt, ...) PRINTF_LIKE(4, 5);

void reply_error(struct call *c, enum errcode e, const char *field, const char *fmt, ...)
{
	char message[700];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	reply_coded(c, errcode_def(e)->status, errcode_def(e)->code, field, message, NULL);
}

/* A request body refused by its parser (ability.c: the code and status are the table's too). */
void reply_refusal(struct call *c, const struct ability_error *err)
{
	reply_coded(c, err->status, err->code, err->field, err->message, err);
}

/* ---- requests -------------------------------------------------------------------- */

/* The body as one contiguous span (NUL-terminated for the parsers). */
struct jspan body_of(struct call *c)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
	size_t len = evbuffer_get_length(in);
	struct jspan s;

	evbuffer_add(in, "", 1);
	s.p = (const char *)evbuffer_pullup(in, -1);
	s.len = len;
	return s;
}

bool json_content(struct call *c)
{
	const char *ct = evhttp_find_header(evhttp_request_get_input_headers(c->req), "Content-Type");

	if (ct && (strncasecmp(ct, "application/json", 16) == 0) && (ct[16] == '\0' || ct[16] == ';' || ct[16] == ' '))
		return true;
	reply_error(c, E_UNSUPPORTED_MEDIA_TYPE, NULL, "send the body as Content-Type: application/json (got %s)",
		    ct ? ct : "none");
	return false;
}

/* Is s one of the NULL-terminated list? */
bool one_of(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(s, *list) == 0)
			return true;
	return false;
}

const char *query_value(struct call *c, const char *key)
{
	return evhttp_find_header(&c->query, key);
}

/* The first parameter whose name or value is not UTF-8 (everything sent on goes into JSON or SQL), or NULL. */
const char *query_not_text(const struct evkeyvalq *q)
{
	const struct evkeyval *kv;
	size_t bad;

	TAILQ_FOREACH(kv, q, next) {
		if (!utf8_valid(kv->key, strlen(kv->key), &bad) || !utf8_valid(kv->value, strlen(kv->value), &bad))
			return kv->key;
	}
	return NULL;
}

bool needs_postgres(struct call *c, const char *what)
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

void reply_pg_failure(struct call *c, const struct pg_outcome *o)
{
	if (o->unavailable)
		reply_error(c, E_POSTGRES_UNAVAILABLE, NULL, "Postgres is unavailable: %s", o->error);
	else if (not_migrated(o))
		reply_error(c, E_NOT_MIGRATED, NULL, "the database is not migrated (run `abilitysync migrate up`): %s",
			    o->error);
	else
		reply_error(c, E_POSTGRES_ERROR, NULL, "Postgres refused the statement: %s", o->error);
}

void reply_vdb_failure(struct call *c, enum vdb_status st, const char *error)
{
	if (st == VDB_UNAVAILABLE || st == VDB_CANCELLED)
		reply_error(c, E_VECTOR_DB_UNAVAILABLE, NULL, "the vector DB is unavailable: %s", error);
	else
		reply_error(c, E_VECTOR_DB_ERROR, NULL, "the vector DB refused: %s", error);
}

json_t *json_or_null(const char *text)
{
	json_error_t jerr;
	json_t *j = text ? json_loads(text, JSON_DECODE_ANY, &jerr) : NULL;

	return j ? j : json_null();
}

json_t *string_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
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
bool page_limit(struct call *c, int *limit)
{
	if (api_parse_limit(query_value(c, "limit"), limit))
		return true;
	reply_error(c, E_INVALID_PARAMETER, "limit", "limit must be an integer from 1 to %d", LIST_MAX);
	return false;
}

/*
 * How long a write waits for the vector DB: SYNC_WAIT_MS, or what the client
 * prefers (RFC 7240 `Prefer: wait=N`, seconds) up to SYNC_WAIT_MAX_MS; an
 * honoured preference is echoed in Preference-Applied.
 */
long sync_wait_of(struct call *c)
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
