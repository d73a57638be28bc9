#include "emu_http.h"

#include "buf.h"
#include "emu_fault.h"
#include "jsonscan.h"
#include "log.h"
#include "mem.h"
#include "tcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define COMP "emulator"
#define MAX_SEGS 8   /* the longest route has 7 path segments */
#define MAX_PARAMS 3 /* {t}, {b}, {id} */
#define MAX_ROUTES 16
#define ID_RANGE "an integer from 0 to 9223372036854775807"

struct counters {
	unsigned long long requests;
	unsigned long long by_route[MAX_ROUTES];
	unsigned long long by_status[600];
	unsigned long long injected, resets, delayed;
	unsigned long long vectors_stored, vectors_received, bytes_received;
};

/*
 * A request waiting: out a latency fault, for a release (held), to have the
 * answer it already got sent late (send_reply), or for a reset, which must
 * not run inside libevent's callback.
 */
struct delayed {
	struct emu_server *s;
	struct evhttp_request *req;
	struct event *timer;
	struct emu_fault_action act;
	bool held;             /* its timer is armed by POST /_admin/release */
	bool send_reply;       /* served already: only its answer (status below) is left to send */
	int status;
	struct delayed *prev, *next;
};

struct emu_server {
	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *sock;
	struct emu_config cfg;
	struct emu_store store;
	struct emu_faults faults;
	struct counters counters;
	struct delayed *delayed;
	struct buf body; /* the body being handled: kept, so its pages stay mapped between requests */
};

struct call;
typedef void (*handler_fn)(struct call *c);

struct route {
	enum evhttp_cmd_type method;
	const char *pattern; /* "{...}" segments match any one segment */
	handler_fn fn;
};

/* One request being handled. */
struct call {
	struct emu_server *s;
	struct evhttp_request *req;
	const char *method;
	const char *raw_path;
	char *path; /* a copy of raw_path, split in place into seg[] */
	char *seg[MAX_SEGS + 1];
	size_t nseg;
	bool admin; /* under /_admin/: never faulted, authenticated or counted */
	const struct route *routes;
	int route;       /* index into routes, or -1 */
	bool path_known; /* a route has this path with another method: 405, not 404 */
	const char *param[MAX_PARAMS];
	struct jspan body;
	bool have_body;
	bool capture;    /* an `applied` fault: the answer is prepared, not sent (status below) */
	int captured;
};

/* ---- configuration ------------------------------------------------------ */

static const char *const auth_header_names[] = {"authorization", "x-api-key"};

void emu_config_init(struct emu_config *c)
{
	memset(c, 0, sizeof(*c));
	c->duplicate_ids = EMU_DUP_OVERWRITE;
	c->get_vector = true;
	c->query_attributes = true;
	c->exists_status = 409;
	c->auth_header = EMU_AUTH_AUTHORIZATION;
	c->max_body = EMU_DEFAULT_MAX_BODY;
}

void emu_config_free(struct emu_config *c)
{
	free(c->api_key);
	c->api_key = NULL;
}

static void config_copy(struct emu_config *dst, const struct emu_config *src)
{
	*dst = *src;
	dst->api_key = src->api_key ? xstrdup(src->api_key) : NULL;
}

bool emu_auth_header_parse(const char *s, enum emu_auth_header *out)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(auth_header_names); i++) {
		if (strcasecmp(s, auth_header_names[i]) == 0) {
			*out = (enum emu_auth_header)i;
			return true;
		}
	}
	return false;
}

const char *emu_auth_header_name(enum emu_auth_header h)
{
	return auth_header_names[h];
}

/* ---- replies ------------------------------------------------------------ */

static void count_status(struct emu_server *s, int status)
{
	if (status >= 0 && (size_t)status < ARRAY_LEN(s->counters.by_status))
		s->counters.by_status[status]++;
}

static void reply_raw(struct call *c, int status, const char *data, size_t len)
{
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Content-Type", "application/json");
	evbuffer_add(evhttp_request_get_output_buffer(c->req), data, len);
	if (!c->admin)
		count_status(c->s, status);
	log_debug(COMP, "%s %s -> %d%s", c->method, c->raw_path, status, c->capture ? " (held back by a fault)" : "");
	if (c->capture) {
		c->captured = status;
		return;
	}
	evhttp_send_reply(c->req, status, NULL, NULL);
}

static void reply_buf(struct call *c, int status, struct buf *b)
{
	reply_raw(c, status, buf_cstr(b), b->len);
	buf_free(b);
}

/* Answers with j (taken over). */
static void reply_json(struct call *c, int status, json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT);

	if (!text)
		abort(); /* out of memory: see mem.h */
	reply_raw(c, status, text, strlen(text));
	free(text);
	json_decref(j);
}

static void reply_detail(struct call *c, int status, const char *fmt, ...) PRINTF_LIKE(3, 4);

static void reply_detail(struct call *c, int status, const char *fmt, ...)
{
	struct buf msg = BUF_INIT, b = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&msg, fmt, ap);
	va_end(ap);
	buf_puts(&b, "{\"detail\":");
	buf_json_str(&b, buf_cstr(&msg), msg.len);
	buf_putc(&b, '}');
	buf_free(&msg);
	reply_buf(c, status, &b);
}

static void put_float(struct buf *b, double v, bool first)
{
	/* %.9g: every float32 comes back exactly when read as a float32. */
	buf_printf(b, first ? "%.9g" : ",%.9g", v);
}

static void put_attrs(struct buf *b, const char *attrs)
{
	buf_puts(b, attrs ? attrs : "{}");
}

/* ---- reading requests --------------------------------------------------- */

/*
 * The body, contiguous and followed by a NUL (so strtof can never run past
 * the end). Copied into the server's buffer rather than pulled up in place:
 * a pull-up allocates fresh memory for every request, and page faults on
 * 20 MB cost more than the copy.
 */
static struct jspan call_body(struct call *c)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
	struct buf *b = &c->s->body;
	size_t len = evbuffer_get_length(in);

	if (c->have_body)
		return c->body;
	buf_reset(b);
	buf_reserve(b, len);
	if (evbuffer_copyout(in, b->data, len) != (ev_ssize_t)len)
		abort(); /* the buffer holds len bytes: cannot happen */
	b->len = len;
	b->data[len] = '\0';
	c->body.p = b->data;
	c->body.len = len;
	c->have_body = true;
	return c->body;
}

/* The body as a JSON object (small bodies only); NULL after answering 400. */
static json_t *body_object(struct call *c)
{
	struct jspan body = call_body(c);
	json_error_t jerr;
	json_t *root = json_loadb(body.p, body.len, JSON_REJECT_DUPLICATES, &jerr);

	if (!root) {
		reply_detail(c, 400, "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		reply_detail(c, 400, "the request body must be a JSON object");
		return NULL;
	}
	return root;
}

static struct emu_tenant *path_tenant(struct call *c)
{
	struct emu_tenant *t = emu_tenant_find(&c->s->store, c->param[0]);

	if (!t)
		reply_detail(c, 404, "Tenant '%.200s' not found", c->param[0]);
	return t;
}

static struct emu_blob *path_blob(struct call *c, struct emu_tenant **tp)
{
	struct emu_tenant *t = path_tenant(c);
	struct emu_blob *b;

	if (!t)
		return NULL;
	b = emu_blob_find(t, c->param[1]);
	if (!b)
		reply_detail(c, 404, "Blob '%.200s' not found in tenant '%s'", c->param[1], t->id);
	if (tp)
		*tp = t;
	return b;
}

/* The {id} of the path; false after answering 400. */
static bool path_id(struct call *c, int64_t *id)
{
	const char *s = c->param[2];
	size_t n = strlen(s);
	unsigned long long v;

	if (n == 0 || n > 19 || strspn(s, "0123456789") != n || (v = strtoull(s, NULL, 10)) > INT64_MAX) {
		reply_detail(c, 400, "vector id must be " ID_RANGE ", got '%.40s'", s);
		return false;
	}
	*id = (int64_t)v;
	return true;
}

/* Destructive deletes want ?confirm=true; false after answering 400. */
static bool confirmed(struct call *c, const char *what, const char *name)
{
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(c->req));
	struct evkeyvalq args = {0};
	const char *v = NULL;
	bool ok;

	if (query && evhttp_parse_query_str(query, &args) == 0)
		v = evhttp_find_header(&args, "confirm");
	ok = v && strcasecmp(v, "true") == 0;
	evhttp_clear_headers(&args);
	if (!ok)
		reply_detail(c, 400, "deleting %s '%s' needs ?confirm=true", what, name);
	return ok;
}

static bool name_member(json_t *root, const char *key, const char **out, struct errbuf *err)
{
	json_t *v = json_object_get(root, key);

	if (!v) {
		err_set(err, "%s is required", key);
		return false;
	}
	if (!json_is_string(v) || !emu_name_valid(json_string_value(v))) {
		err_set(err, "%s must be a string of 1 to %d characters from A-Z a-z 0-9 _ . -", key, EMU_NAME_MAX);
		return false;
	}
	*out = json_string_value(v);
	return true;
}

/* ---- scanning big bodies in place --------------------------------------- */

/* A member of the request object that a handler wants. */
struct member {
	const char *key;
	struct jspan val;
	bool found;
};

static bool malformed(struct errbuf *err, const char *base, const char *at, const char *what)
{
	err_set(err, "malformed JSON at offset %zu: %s", (size_t)(at - base), what);
	return false;
}

static const char *skip_checked(const char *base, const char *p, const char *end, struct errbuf *err)
{
	struct js_error je = {.what = "malformed value"};
	const char *q = js_skip_value(p, end, &je);

	if (!q)
		malformed(err, base, p + je.offset, je.what);
	return q;
}

static bool pick_member(struct member *want, size_t n, struct jspan key, struct jspan val, struct errbuf *err)
{
	size_t i;

	/* key includes its quotes; names with escapes never match our plain keys. */
	for (i = 0; i < n; i++) {
		if (strlen(want[i].key) != key.len - 2 || memcmp(key.p + 1, want[i].key, key.len - 2) != 0)
			continue;
		if (want[i].found) {
			err_set(err, "duplicate member '%s'", want[i].key);
			return false;
		}
		want[i].found = true;
		want[i].val = val;
	}
	return true;
}

/* One "key": value at p; returns the byte after the value, or NULL. */
static const char *scan_member(const char *base, const char *p, const char *end, struct member *want, size_t n,
			       struct errbuf *err)
{
	struct jspan key, val;
	const char *q;

	if (p >= end || *p != '"') {
		malformed(err, base, p, "expected a member name");
		return NULL;
	}
	if (!(q = skip_checked(base, p, end, err)))
		return NULL;
	key.p = p;
	key.len = (size_t)(q - p);
	p = js_skip_ws(q, end);
	if (p >= end || *p != ':') {
		malformed(err, base, p, "expected :");
		return NULL;
	}
	val.p = js_skip_ws(p + 1, end);
	if (!(q = skip_checked(base, val.p, end, err)))
		return NULL;
	val.len = (size_t)(q - val.p);
	return pick_member(want, n, key, val, err) ? q : NULL;
}

/*
 * Checks the grammar of the whole body, which must be one object, in a single
 * pass, and picks out the members in `want`.
 */
static bool scan_object(struct jspan body, struct member *want, size_t n, struct errbuf *err)
{
	const char *base = body.p, *end = body.p + body.len;
	const char *p = js_skip_ws(base, end);

	if (p >= end || *p != '{') {
		err_set(err, "the request body must be a JSON object");
		return false;
	}
	p = js_skip_ws(p + 1, end);
	if (p < end && *p == '}')
		goto close;
	for (;;) {
		if (!(p = scan_member(base, p, end, want, n, err)))
			return false;
		p = js_skip_ws(p, end);
		if (p < end && *p == '}')
			break;
		if (p >= end || *p != ',')
			return malformed(err, base, p, "expected , or }");
		p = js_skip_ws(p + 1, end);
	}
close:
	if (js_skip_ws(p + 1, end) != end)
		return malformed(err, base, p + 1, "unexpected text after the object");
	return true;
}

static bool span_is_null(struct jspan v)
{
	return v.len == 4 && memcmp(v.p, "null", 4) == 0;
}

static const char *not_a_number(const char *p, const char *end, const char *label, size_t j, struct errbuf *err)
{
	const char *q = js_skip_value(p, end, NULL);
	int len = q ? (int)(q - p) : 0;

	err_set(err, "%s[%zu] must be a finite number, got %.*s%s", label, j, len > 40 ? 40 : len, p,
		len > 40 ? "..." : "");
	return NULL;
}

/*
 * Parses the array of numbers at p (grammar already checked) into dst, which
 * has room for b->dim floats. `label` names the array in errors ("vectors[3]",
 * "query"). Returns the byte after the array, or NULL.
 */
static const char *parse_floats(const char *p, const char *end, float *dst, const struct emu_blob *b,
				const char *label, struct errbuf *err)
{
	size_t j = 0;

	if (*p != '[') {
		err_set(err, "%s must be an array of numbers", label);
		return NULL;
	}
	p = js_skip_ws(p + 1, end);
	while (*p != ']') {
		const char *q = js_number_end(p, end);
		int len = q ? (int)(q - p) : 0;

		if (!q)
			return not_a_number(p, end, label, j, err);
		/* Past FLT_MAX strtof gives infinity: as js_number_fits_float32 decides, for free. */
		if (j < b->dim && isinf(dst[j] = strtof(p, NULL))) {
			err_set(err, "%s[%zu] = %.*s is out of float32 range", label, j, len > 40 ? 40 : len, p);
			return NULL;
		}
		j++;
		p = js_skip_ws(q, end);
		if (*p == ',')
			p = js_skip_ws(p + 1, end);
	}
	if (j != b->dim) {
		err_set(err, "%s has %zu dimensions, blob '%s' has %zu", label, j, b->id, b->dim);
		return NULL;
	}
	return p + 1;
}

/* `vectors`, parsed straight into the blob's staging room; *n = how many. */
static bool parse_vectors(const struct member *m, struct emu_blob *b, size_t *n, struct errbuf *err)
{
	const char *p, *end;
	char label[48];
	size_t i;

	*n = 0;
	if (!m->found) {
		err_set(err, "vectors is required");
		return false;
	}
	p = m->val.p;
	end = p + m->val.len;
	if (*p != '[') {
		err_set(err, "vectors must be an array of arrays of numbers");
		return false;
	}
	p = js_skip_ws(p + 1, end);
	for (i = 0; *p != ']'; i++) {
		float *dst = emu_blob_stage(b, i + 1) + i * b->dim;

		snprintf(label, sizeof(label), "vectors[%zu]", i);
		if (!(p = parse_floats(p, end, dst, b, label, err)))
			return false;
		p = js_skip_ws(p, end);
		if (*p == ',')
			p = js_skip_ws(p + 1, end);
	}
	*n = i;
	return true;
}

/* A small member (ids, attributes, k) as a jansson value; NULL with err set. */
static json_t *load_member(const struct member *m, struct errbuf *err)
{
	json_error_t jerr;
	json_t *v = json_loadb(m->val.p, m->val.len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);

	if (!v)
		err_set(err, "%s: %s", m->key, jerr.text);
	return v;
}

/* ids and attributes run parallel to vectors: arrays of the same length. */
static bool parallel_array(const json_t *arr, const char *key, const char *what, size_t n, struct errbuf *err)
{
	if (!json_is_array(arr)) {
		err_set(err, "%s must be an array of %s, one per vector", key, what);
		return false;
	}
	if (json_array_size(arr) != n) {
		err_set(err, "%s has %zu entries, vectors has %zu", key, json_array_size(arr), n);
		return false;
	}
	return true;
}

/* Optional `ids`: *out stays NULL when absent or null. */
static bool parse_ids(const struct member *m, size_t n, int64_t **out, struct errbuf *err)
{
	int64_t *ids = NULL;
	json_t *arr, *v;
	size_t i;
	bool ok = false;

	*out = NULL;
	if (!m->found || span_is_null(m->val))
		return true;
	if (!(arr = load_member(m, err)))
		return false;
	if (!parallel_array(arr, "ids", "integers", n, err))
		goto out;
	ids = xmalloc((n ? n : 1) * sizeof(*ids));
	json_array_foreach(arr, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			err_set(err, "ids[%zu] must be " ID_RANGE, i);
			goto out;
		}
		ids[i] = json_integer_value(v);
	}
	*out = ids;
	ids = NULL;
	ok = true;
out:
	free(ids);
	json_decref(arr);
	return ok;
}

static void free_attrs(char **attrs, size_t n)
{
	size_t i;

	if (!attrs)
		return;
	for (i = 0; i < n; i++)
		free(attrs[i]);
	free(attrs);
}

static char *dump_compact(const json_t *v)
{
	char *text = json_dumps(v, JSON_COMPACT);

	if (!text)
		abort(); /* out of memory: see mem.h */
	return text;
}

/* Optional `attributes`: one object (as compact text) or null per vector. */
static bool parse_attrs(const struct member *m, size_t n, char ***out, struct errbuf *err)
{
	char **attrs = NULL;
	json_t *arr, *v;
	size_t i;
	bool ok = false;

	*out = NULL;
	if (!m->found || span_is_null(m->val))
		return true;
	if (!(arr = load_member(m, err)))
		return false;
	if (!parallel_array(arr, "attributes", "objects", n, err))
		goto out;
	attrs = xcalloc(n ? n : 1, sizeof(*attrs));
	json_array_foreach(arr, i, v) {
		if (!json_is_object(v) && !json_is_null(v)) {
			err_set(err, "attributes[%zu] must be an object or null", i);
			goto out;
		}
		attrs[i] = json_is_object(v) ? dump_compact(v) : NULL;
	}
	*out = attrs;
	attrs = NULL;
	ok = true;
out:
	free_attrs(attrs, n);
	json_decref(arr);
	return ok;
}

/* ---- API handlers --------------------------------------------------------- */

static void h_health(struct call *c)
{
	static const char ok[] = "{\"status\":\"ok\"}";

	reply_raw(c, 200, ok, sizeof(ok) - 1);
}

static bool max_vectors_member(json_t *root, long long *out, struct errbuf *err)
{
	json_t *v = json_object_get(root, "max_vectors");

	*out = 0;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_integer(v) || json_integer_value(v) <= 0) {
		err_set(err, "max_vectors must be a positive integer or null");
		return false;
	}
	*out = json_integer_value(v);
	return true;
}

static json_t *tenant_json(const struct emu_tenant *t)
{
	return json_pack("{s:s, s:o}", "tenant_id", t->id, "max_vectors",
			 t->max_vectors ? json_integer(t->max_vectors) : json_null());
}

static void h_tenant_create(struct call *c)
{
	json_t *root = body_object(c);
	struct errbuf err;
	const char *id;
	long long max;

	if (!root)
		return;
	if (!name_member(root, "tenant_id", &id, &err) || !max_vectors_member(root, &max, &err))
		reply_detail(c, 400, "%s", err.msg);
	else if (emu_tenant_find(&c->s->store, id))
		reply_detail(c, c->s->cfg.exists_status, "Tenant '%s' already exists", id);
	else
		reply_json(c, 201, tenant_json(emu_tenant_add(&c->s->store, id, max)));
	json_decref(root);
}

static void h_tenant_list(struct call *c)
{
	json_t *arr = json_array();
	size_t i;

	for (i = 0; i < c->s->store.n; i++) {
		const struct emu_tenant *t = c->s->store.tenants[i];

		json_array_append_new(arr, json_pack("{s:s, s:I, s:I}", "tenant_id", t->id, "blobs",
						     (json_int_t)t->nblobs, "vectors",
						     (json_int_t)emu_tenant_vectors(t)));
	}
	reply_json(c, 200, json_pack("{s:o}", "tenants", arr));
}

static void h_tenant_delete(struct call *c)
{
	struct emu_tenant *t = path_tenant(c);

	json_t *j;

	if (!t || !confirmed(c, "tenant", t->id))
		return;
	j = json_pack("{s:s}", "deleted", t->id);
	emu_tenant_delete(&c->s->store, c->param[0]);
	reply_json(c, 200, j);
}

static bool blob_type_member(json_t *root, const char **out, struct errbuf *err)
{
	json_t *v = json_object_get(root, "blob_type");

	if (!v) {
		err_set(err, "blob_type is required");
		return false;
	}
	if (!json_is_string(v) || (strcmp(json_string_value(v), "dense") && strcmp(json_string_value(v), "kge"))) {
		err_set(err, "blob_type must be \"dense\" or \"kge\"");
		return false;
	}
	*out = json_string_value(v);
	return true;
}

static bool dimension_member(json_t *root, size_t *out, struct errbuf *err)
{
	json_t *v = json_object_get(root, "dimension");

	if (!v) {
		err_set(err, "dimension is required");
		return false;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > EMU_DIM_MAX) {
		err_set(err, "dimension must be an integer from 1 to %d", EMU_DIM_MAX);
		return false;
	}
	*out = (size_t)json_integer_value(v);
	return true;
}

static json_t *blob_json(const struct emu_blob *b, bool with_count)
{
	json_t *j = json_pack("{s:s, s:s, s:I}", "blob_id", b->id, "blob_type", b->type, "dimension",
			      (json_int_t)b->dim);

	if (with_count)
		json_object_set_new(j, "count", json_integer((json_int_t)b->count));
	return j;
}

static void h_blob_create(struct call *c)
{
	struct emu_tenant *t = path_tenant(c);
	const char *id, *type;
	struct errbuf err;
	json_t *root;
	size_t dim;

	if (!t || !(root = body_object(c)))
		return;
	if (!name_member(root, "blob_id", &id, &err) || !blob_type_member(root, &type, &err) ||
	    !dimension_member(root, &dim, &err))
		reply_detail(c, 400, "%s", err.msg);
	else if (emu_blob_find(t, id))
		reply_detail(c, c->s->cfg.exists_status, "Blob '%s' already exists in tenant '%s'", id, t->id);
	else
		reply_json(c, 201, blob_json(emu_blob_add(t, id, type, dim), false));
	json_decref(root);
}

static void h_blob_list(struct call *c)
{
	struct emu_tenant *t = path_tenant(c);
	json_t *arr;
	size_t i;

	if (!t)
		return;
	arr = json_array();
	for (i = 0; i < t->nblobs; i++)
		json_array_append_new(arr, blob_json(t->blobs[i], true));
	reply_json(c, 200, json_pack("{s:o}", "blobs", arr));
}

static void h_blob_delete(struct call *c)
{
	struct emu_tenant *t = NULL;
	struct emu_blob *b = path_blob(c, &t);
	json_t *j;

	if (!b || !confirmed(c, "blob", b->id))
		return;
	j = json_pack("{s:s}", "deleted", b->id);
	emu_blob_delete(t, c->param[1]);
	reply_json(c, 200, j);
}

static void reply_ids(struct call *c, const int64_t *ids, size_t n)
{
	struct buf b = BUF_INIT;
	size_t i;

	buf_puts(&b, "{\"ids\":[");
	for (i = 0; i < n; i++)
		buf_printf(&b, i ? ",%lld" : "%lld", (long long)ids[i]);
	buf_printf(&b, "],\"count\":%zu}", n);
	reply_buf(c, 200, &b);
}

static void commit_and_reply(struct call *c, struct emu_tenant *t, struct emu_blob *b,
			     const struct emu_batch *batch)
{
	int64_t *out = xmalloc((batch->n ? batch->n : 1) * sizeof(*out));
	struct errbuf err;

	switch (emu_blob_commit(t, b, batch, c->s->cfg.duplicate_ids, out, &err)) {
	case EMU_ADD_OK:
		c->s->counters.vectors_stored += batch->n;
		reply_ids(c, out, batch->n);
		break;
	case EMU_ADD_EXISTS:
		reply_detail(c, 409, "%s", err.msg);
		break;
	case EMU_ADD_INVALID:
		reply_detail(c, 400, "%s", err.msg);
		break;
	}
	free(out);
}

/*
 * The bulk of the traffic: the floats go from the text straight into the
 * blob's spare room; nothing is visible until the whole request checks out.
 */
static void h_vectors_add(struct call *c)
{
	struct member m[] = {{"vectors", {NULL, 0}, false}, {"ids", {NULL, 0}, false},
			     {"attributes", {NULL, 0}, false}};
	struct emu_batch batch = {0, NULL, NULL};
	struct emu_tenant *t = NULL;
	struct emu_blob *b = path_blob(c, &t);
	int64_t *ids = NULL;
	char **attrs = NULL;
	struct errbuf err;

	if (!b)
		return;
	if (!scan_object(call_body(c), m, ARRAY_LEN(m), &err) || !parse_vectors(&m[0], b, &batch.n, &err)) {
		reply_detail(c, 400, "%s", err.msg);
		return;
	}
	c->s->counters.vectors_received += batch.n;
	if (!parse_ids(&m[1], batch.n, &ids, &err) || !parse_attrs(&m[2], batch.n, &attrs, &err)) {
		reply_detail(c, 400, "%s", err.msg);
		free(ids);
		return;
	}
	batch.ids = ids;
	batch.attrs = attrs;
	commit_and_reply(c, t, b, &batch); /* takes the attribute strings either way */
	free(ids);
	free(attrs);
}

static void h_vector_get(struct call *c)
{
	struct emu_blob *b = path_blob(c, NULL);
	struct buf out = BUF_INIT;
	const float *v;
	int64_t id;
	size_t e, i;

	if (!b || !path_id(c, &id))
		return;
	e = emu_blob_lookup(b, id);
	if (e == EMU_NONE) {
		reply_detail(c, 404, "Vector not found: %lld", (long long)id);
		return;
	}
	buf_printf(&out, "{\"id\":%lld,\"attributes\":", (long long)id);
	put_attrs(&out, b->attrs[e]);
	if (c->s->cfg.get_vector) {
		buf_puts(&out, ",\"vector\":[");
		v = emu_blob_vector(b, e);
		for (i = 0; i < b->dim; i++)
			put_float(&out, v[i], i == 0);
		buf_putc(&out, ']');
	}
	buf_putc(&out, '}');
	reply_buf(c, 200, &out);
}

static void h_vector_attrs(struct call *c)
{
	struct emu_blob *b = path_blob(c, NULL);
	struct buf out = BUF_INIT;
	json_t *root, *attrs;
	int64_t id;

	if (!b || !path_id(c, &id) || !(root = body_object(c)))
		return;
	attrs = json_object_get(root, "attributes");
	if (!json_is_object(attrs)) {
		reply_detail(c, 400, attrs ? "attributes must be a JSON object" : "attributes is required");
	} else if (emu_blob_set_attrs(b, id, dump_compact(attrs)) == 0) {
		reply_detail(c, 404, "Vector not found: %lld", (long long)id);
	} else {
		buf_printf(&out, "{\"id\":%lld,\"attributes\":", (long long)id);
		put_attrs(&out, b->attrs[emu_blob_lookup(b, id)]);
		buf_putc(&out, '}');
		reply_buf(c, 200, &out);
	}
	json_decref(root);
}

static void h_vector_delete(struct call *c)
{
	struct emu_blob *b = path_blob(c, NULL);
	int64_t id;

	if (!b || !path_id(c, &id))
		return;
	if (emu_blob_delete_id(b, id) == 0)
		reply_detail(c, 404, "Vector not found: %lld", (long long)id);
	else
		reply_json(c, 200, json_pack("{s:b, s:I}", "deleted", 1, "id", (json_int_t)id));
}

static bool parse_k(const struct member *m, size_t *k, struct errbuf *err)
{
	json_t *v;
	bool ok;

	*k = 10;
	if (!m->found)
		return true;
	if (!(v = load_member(m, err)))
		return false;
	ok = json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= EMU_K_MAX;
	if (ok)
		*k = (size_t)json_integer_value(v);
	else
		err_set(err, "k must be an integer from 1 to %d", EMU_K_MAX);
	json_decref(v);
	return ok;
}

static bool parse_query(const struct member *m, const struct emu_blob *b, float *q, struct errbuf *err)
{
	if (!m->found) {
		err_set(err, "query is required");
		return false;
	}
	return parse_floats(m->val.p, m->val.p + m->val.len, q, b, "query", err) != NULL;
}

static void reply_hits(struct call *c, const struct emu_blob *b, const struct emu_hit *hits, size_t n)
{
	struct buf out = BUF_INIT;
	size_t i;

	buf_puts(&out, "{\"ids\":[");
	for (i = 0; i < n; i++)
		buf_printf(&out, i ? ",%lld" : "%lld", (long long)hits[i].id);
	buf_puts(&out, "],\"distances\":[");
	for (i = 0; i < n; i++)
		put_float(&out, hits[i].distance, i == 0);
	buf_putc(&out, ']');
	if (c->s->cfg.query_attributes) {
		buf_puts(&out, ",\"attributes\":[");
		for (i = 0; i < n; i++) {
			if (i)
				buf_putc(&out, ',');
			put_attrs(&out, b->attrs[hits[i].entry]);
		}
		buf_putc(&out, ']');
	}
	buf_printf(&out, ",\"count\":%zu}", n);
	reply_buf(c, 200, &out);
}

static void h_query(struct call *c)
{
	struct member m[] = {{"query", {NULL, 0}, false}, {"k", {NULL, 0}, false}};
	struct emu_blob *b = path_blob(c, NULL);
	struct emu_hit *hits;
	struct errbuf err;
	size_t k;
	float *q;

	if (!b)
		return;
	q = xmalloc(b->dim * sizeof(*q));
	if (!scan_object(call_body(c), m, ARRAY_LEN(m), &err) || !parse_k(&m[1], &k, &err) ||
	    !parse_query(&m[0], b, q, &err)) {
		reply_detail(c, 400, "%s", err.msg);
		free(q);
		return;
	}
	hits = xmalloc(k * sizeof(*hits));
	reply_hits(c, b, hits, emu_blob_query(b, q, k, hits));
	free(hits);
	free(q);
}

/* ---- the API's routes ------------------------------------------------------ */

static const struct route api_routes[] = {
	{EVHTTP_REQ_GET, "/health", h_health},
	{EVHTTP_REQ_POST, "/tenants", h_tenant_create},
	{EVHTTP_REQ_GET, "/tenants", h_tenant_list},
	{EVHTTP_REQ_DELETE, "/tenants/{t}", h_tenant_delete},
	{EVHTTP_REQ_POST, "/tenants/{t}/blobs", h_blob_create},
	{EVHTTP_REQ_GET, "/tenants/{t}/blobs", h_blob_list},
	{EVHTTP_REQ_DELETE, "/tenants/{t}/blobs/{b}", h_blob_delete},
	{EVHTTP_REQ_POST, "/tenants/{t}/blobs/{b}/vectors", h_vectors_add},
	{EVHTTP_REQ_GET, "/tenants/{t}/blobs/{b}/vectors/{id}", h_vector_get},
	{EVHTTP_REQ_DELETE, "/tenants/{t}/blobs/{b}/vectors/{id}", h_vector_delete},
	{EVHTTP_REQ_PUT, "/tenants/{t}/blobs/{b}/vectors/{id}/attributes", h_vector_attrs},
	{EVHTTP_REQ_POST, "/tenants/{t}/blobs/{b}/query", h_query},
};

_Static_assert(ARRAY_LEN(api_routes) <= MAX_ROUTES, "counters.by_route is too small");

static const char *method_name(enum evhttp_cmd_type m)
{
	switch (m) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	case EVHTTP_REQ_TRACE: return "TRACE";
	case EVHTTP_REQ_CONNECT: return "CONNECT";
	case EVHTTP_REQ_PATCH: return "PATCH";
	}
	return "?";
}

/* ---- admin handlers ------------------------------------------------------- */

static size_t release_held(struct emu_server *s, unsigned rule);
static size_t count_held(const struct emu_server *s);

static void a_faults_add(struct call *c)
{
	struct jspan body = call_body(c);
	struct errbuf err;
	unsigned id;

	if (!emu_fault_add_json(&c->s->faults, body.p, body.len, &id, &err))
		reply_detail(c, 400, "%s", err.msg);
	else
		reply_json(c, 201, json_pack("{s:I}", "id", (json_int_t)id));
}

/* Clearing the rules lets their held requests go on too: nothing stays stuck. */
static void a_faults_clear(struct call *c)
{
	size_t n = c->s->faults.n;

	emu_faults_clear(&c->s->faults);
	reply_json(c, 200, json_pack("{s:I, s:I}", "cleared", (json_int_t)n, "released",
				     (json_int_t)release_held(c->s, 0)));
}

/* POST /_admin/release {"id"?: rule}: held requests go on (after their rule's latency). */
static void a_release(struct call *c)
{
	struct jspan body = call_body(c);
	json_error_t jerr;
	json_t *j = body.len ? json_loadb(body.p, body.len, 0, &jerr) : NULL;
	json_t *id = json_object_get(j, "id");

	if (body.len && (!json_is_object(j) || (id && !json_is_integer(id)) || json_object_size(j) > (id ? 1u : 0u))) {
		json_decref(j);
		reply_detail(c, 400, "the body is {} or {\"id\": <fault rule id>}");
		return;
	}
	reply_json(c, 200, json_pack("{s:I}", "released",
				     (json_int_t)release_held(c->s, id ? (unsigned)json_integer_value(id) : 0)));
	json_decref(j);
}

static void a_held(struct call *c)
{
	reply_json(c, 200, json_pack("{s:I}", "held", (json_int_t)count_held(c->s)));
}

static json_t *fault_json(const struct emu_fault_rule *r)
{
	static const char *const kinds[] = {"latency", "reply", "reset"};

	return json_pack("{s:I, s:s, s:s, s:s, s:i, s:I, s:f, s:I, s:b, s:b}", "id", (json_int_t)r->id, "path",
			 r->path, "method", r->method, "kind", kinds[r->kind], "status", r->status, "remaining",
			 (json_int_t)r->remaining, "fraction", r->fraction, "latency_ms", (json_int_t)r->latency_ms,
			 "hold", r->hold, "applied", r->applied);
}

static void a_faults_list(struct call *c)
{
	json_t *arr = json_array();
	size_t i;

	for (i = 0; i < c->s->faults.n; i++)
		json_array_append_new(arr, fault_json(&c->s->faults.rules[i]));
	reply_json(c, 200, json_pack("{s:o}", "faults", arr));
}

/* ?attribute=NAME: every entry's id with that attribute's value, for checkers. */
static void reply_id_values(struct call *c, const struct emu_blob *b, const char *name)
{
	struct buf out = BUF_INIT;
	json_error_t jerr;
	size_t e;

	buf_puts(&out, "{\"entries\":[");
	for (e = 0; e < b->count; e++) {
		json_t *attrs = b->attrs[e] ? json_loads(b->attrs[e], 0, &jerr) : NULL;
		json_t *v = json_object_get(attrs, name);
		char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

		buf_printf(&out, "%s{\"id\":%lld,\"value\":%s}", e ? "," : "", (long long)b->ids[e], text ? text : "null");
		free(text);
		json_decref(attrs);
	}
	buf_printf(&out, "],\"count\":%zu}", b->count);
	reply_buf(c, 200, &out);
}

static void a_ids_list(struct call *c)
{
	struct emu_blob *b = path_blob(c, NULL);
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(c->req));
	struct evkeyvalq args = {0};
	const char *attr = NULL;
	int64_t *ids;

	if (!b)
		return;
	if (query && evhttp_parse_query_str(query, &args) == 0)
		attr = evhttp_find_header(&args, "attribute");
	if (attr) {
		reply_id_values(c, b, attr);
		evhttp_clear_headers(&args);
		return;
	}
	evhttp_clear_headers(&args);
	ids = xmalloc((b->count ? b->count : 1) * sizeof(*ids));
	emu_blob_ids_sorted(b, ids);
	reply_ids(c, ids, b->count);
	free(ids);
}

static void a_ids_clear(struct call *c)
{
	struct emu_blob *b = path_blob(c, NULL);

	if (b)
		reply_json(c, 200, json_pack("{s:I}", "cleared", (json_int_t)emu_blob_clear(b)));
}

static void a_reset(struct call *c)
{
	emu_store_free(&c->s->store);
	emu_faults_clear(&c->s->faults);
	memset(&c->s->counters, 0, sizeof(c->s->counters));
	reply_json(c, 200, json_pack("{s:b}", "reset", 1));
}


static void a_counters(struct call *c)
{
	const struct counters *n = &c->s->counters;
	json_t *routes = json_object(), *statuses = json_object();
	char key[160];
	size_t i;

	for (i = 0; i < ARRAY_LEN(api_routes); i++) {
		if (!n->by_route[i])
			continue;
		snprintf(key, sizeof(key), "%s %s", method_name(api_routes[i].method), api_routes[i].pattern);
		json_object_set_new(routes, key, json_integer((json_int_t)n->by_route[i]));
	}
	for (i = 0; i < ARRAY_LEN(n->by_status); i++) {
		if (!n->by_status[i])
			continue;
		snprintf(key, sizeof(key), "%zu", i);
		json_object_set_new(statuses, key, json_integer((json_int_t)n->by_status[i]));
	}
	reply_json(c, 200, json_pack("{s:I, s:o, s:o, s:{s:I, s:I, s:I}, s:I, s:I, s:I}",
				     "requests", (json_int_t)n->requests, "by_route", routes, "by_status", statuses,
				     "faults", "injected", (json_int_t)n->injected, "resets", (json_int_t)n->resets,
				     "delayed", (json_int_t)n->delayed, "vectors_stored", (json_int_t)n->vectors_stored,
				     "vectors_received", (json_int_t)n->vectors_received, "bytes_received",
				     (json_int_t)n->bytes_received));
}

static void a_config_get(struct call *c)
{
	const struct emu_config *cfg = &c->s->cfg;

	reply_json(c, 200, json_pack("{s:s, s:b, s:b, s:i, s:o, s:s, s:b, s:I}", "duplicate_ids",
				     emu_dup_mode_name(cfg->duplicate_ids), "get_vector", cfg->get_vector,
				     "query_attributes", cfg->query_attributes, "exists_status", cfg->exists_status,
				     "api_key", cfg->api_key ? json_string("(set)") : json_null(), "auth_header",
				     emu_auth_header_name(cfg->auth_header), "admin_open", cfg->admin_open,
				     "max_body", (json_int_t)cfg->max_body));
}

static bool set_bool(json_t *v, const char *key, bool *out, struct errbuf *err)
{
	if (!json_is_boolean(v)) {
		err_set(err, "%s must be true or false", key);
		return false;
	}
	*out = json_is_true(v);
	return true;
}

static bool set_api_key(json_t *v, char **out, struct errbuf *err)
{
	if (!json_is_null(v) && (!json_is_string(v) || !*json_string_value(v))) {
		err_set(err, "api_key must be a non-empty string, or null for none");
		return false;
	}
	free(*out);
	*out = json_is_null(v) ? NULL : xstrdup(json_string_value(v));
	return true;
}

static bool config_apply(struct emu_config *cfg, const char *key, json_t *v, struct errbuf *err)
{
	if (strcmp(key, "duplicate_ids") == 0) {
		if (json_is_string(v) && emu_dup_mode_parse(json_string_value(v), &cfg->duplicate_ids))
			return true;
		err_set(err, "duplicate_ids must be \"overwrite\", \"reject\" or \"duplicate\"");
		return false;
	}
	if (strcmp(key, "get_vector") == 0)
		return set_bool(v, key, &cfg->get_vector, err);
	if (strcmp(key, "query_attributes") == 0)
		return set_bool(v, key, &cfg->query_attributes, err);
	if (strcmp(key, "exists_status") == 0) {
		if (json_is_integer(v) && json_integer_value(v) >= 100 && json_integer_value(v) <= 599) {
			cfg->exists_status = (int)json_integer_value(v);
			return true;
		}
		err_set(err, "exists_status must be an integer from 100 to 599");
		return false;
	}
	if (strcmp(key, "api_key") == 0)
		return set_api_key(v, &cfg->api_key, err);
	if (strcmp(key, "auth_header") == 0) {
		if (json_is_string(v) && emu_auth_header_parse(json_string_value(v), &cfg->auth_header))
			return true;
		err_set(err, "auth_header must be \"authorization\" or \"x-api-key\"");
		return false;
	}
	err_set(err, "unknown member '%s' (known: duplicate_ids, get_vector, query_attributes, exists_status, "
		"api_key, auth_header)", key);
	return false;
}

/* All of the changes or none: they are applied to a copy first. */
static void a_config_set(struct call *c)
{
	json_t *root = body_object(c), *v;
	struct emu_config next;
	struct errbuf err;
	const char *key;
	bool ok = true;

	if (!root)
		return;
	config_copy(&next, &c->s->cfg);
	json_object_foreach(root, key, v) {
		if (!(ok = config_apply(&next, key, v, &err)))
			break;
	}
	json_decref(root);
	if (!ok) {
		emu_config_free(&next);
		reply_detail(c, 400, "%s", err.msg);
		return;
	}
	emu_config_free(&c->s->cfg);
	c->s->cfg = next;
	a_config_get(c);
}

static const struct route admin_routes[] = {
	{EVHTTP_REQ_POST, "/_admin/faults", a_faults_add},
	{EVHTTP_REQ_GET, "/_admin/faults", a_faults_list},
	{EVHTTP_REQ_DELETE, "/_admin/faults", a_faults_clear},
	{EVHTTP_REQ_POST, "/_admin/release", a_release},
	{EVHTTP_REQ_GET, "/_admin/held", a_held},
	{EVHTTP_REQ_GET, "/_admin/counters", a_counters},
	{EVHTTP_REQ_GET, "/_admin/config", a_config_get},
	{EVHTTP_REQ_POST, "/_admin/config", a_config_set},
	{EVHTTP_REQ_GET, "/_admin/tenants/{t}/blobs/{b}/ids", a_ids_list},
	{EVHTTP_REQ_DELETE, "/_admin/tenants/{t}/blobs/{b}/ids", a_ids_clear},
	{EVHTTP_REQ_POST, "/_admin/reset", a_reset},
};

/* ---- dispatch --------------------------------------------------------------- */

/* Matches the path's segments against a pattern such as "/tenants/{t}/blobs". */
static bool route_matches(const char *pattern, char *const *seg, size_t nseg, const char **param)
{
	const char *p = pattern + 1;
	size_t i, np = 0;

	for (i = 0; i < nseg; i++) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);

		if (*p == '{')
			param[np++] = seg[i];
		else if (strlen(seg[i]) != len || memcmp(seg[i], p, len) != 0)
			return false;
		if (!slash)
			return i + 1 == nseg;
		p = slash + 1;
	}
	return false;
}

static void find_route(struct call *c, const struct route *table, size_t n)
{
	enum evhttp_cmd_type m = evhttp_request_get_command(c->req);
	const char *param[MAX_PARAMS];
	size_t i;

	c->routes = table;
	c->route = -1;
	for (i = 0; i < n; i++) {
		if (!route_matches(table[i].pattern, c->seg, c->nseg, param))
			continue;
		c->path_known = true;
		if (table[i].method != m)
			continue;
		c->route = (int)i;
		memcpy(c->param, param, sizeof(param));
		return;
	}
}

static void split_path(struct call *c)
{
	char *p = c->path;

	if (*p != '/')
		return; /* no segments: matches no route */
	while (c->nseg < ARRAY_LEN(c->seg)) {
		c->seg[c->nseg++] = p + 1;
		if (!(p = strchr(p + 1, '/')))
			break;
		*p = '\0';
	}
}

static void call_init(struct call *c, struct emu_server *s, struct evhttp_request *req)
{
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));

	memset(c, 0, sizeof(*c));
	c->s = s;
	c->req = req;
	c->method = method_name(evhttp_request_get_command(req));
	c->raw_path = path ? path : "";
	c->path = xstrdup(c->raw_path);
	split_path(c);
	c->admin = c->nseg > 0 && strcmp(c->seg[0], "_admin") == 0;
	if (c->admin)
		find_route(c, admin_routes, ARRAY_LEN(admin_routes));
	else
		find_route(c, api_routes, ARRAY_LEN(api_routes));
}

static void call_free(struct call *c)
{
	free(c->path);
}

static void dispatch(struct call *c)
{
	if (c->route >= 0)
		c->routes[c->route].fn(c);
	else if (c->path_known)
		reply_detail(c, 405, "Method Not Allowed");
	else
		reply_detail(c, 404, "Not Found");
}

static bool authorized(struct call *c)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(c->req);
	const char *key = c->s->cfg.api_key, *got;

	if (!key || (c->nseg == 1 && strcmp(c->seg[0], "health") == 0))
		return true;
	if (c->s->cfg.auth_header == EMU_AUTH_X_API_KEY) {
		got = evhttp_find_header(h, "X-API-Key");
		return got && strcmp(got, key) == 0;
	}
	got = evhttp_find_header(h, "Authorization");
	return got && strncasecmp(got, "Bearer ", 7) == 0 && strcmp(got + 7, key) == 0;
}

static void serve_api(struct call *c)
{
	if (authorized(c)) {
		dispatch(c);
		return;
	}
	if (c->s->cfg.auth_header == EMU_AUTH_AUTHORIZATION)
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "WWW-Authenticate", "Bearer");
	reply_detail(c, 401, "Not authenticated");
}

static bool peer_is_loopback(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	const struct sockaddr *sa = evcon ? evhttp_connection_get_addr(evcon) : NULL;
	const struct in6_addr *a6;

	if (sa && sa->sa_family == AF_INET)
		return ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24 == 127;
	if (!sa || sa->sa_family != AF_INET6)
		return false;
	a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}

static void serve_admin(struct call *c)
{
	if (!c->s->cfg.admin_open && !peer_is_loopback(c->req)) {
		reply_detail(c, 403, "/_admin/ answers loopback peers only (start the emulator with --admin-open)");
		return;
	}
	dispatch(c);
}

/* ---- faults ----------------------------------------------------------------- */

/*
 * Closes the connection so that the peer sees a reset, not an answer.
 * evhttp_connection_free() shuts the socket down for writing (a FIN) before it
 * closes it; to send the RST alone, the socket under the descriptor is closed
 * now (with SO_LINGER 0) by putting a fresh, unconnected one in its place,
 * which libevent then shuts down and closes harmlessly.
 */
static void abort_socket(evutil_socket_t fd)
{
	struct linger lg = {1, 0};
	int spare;

	if (fd < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	spare = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (spare < 0)
		return; /* the close in evhttp_connection_free() still resets, after a FIN */
	dup2(spare, fd);
	close(spare);
}

static void reset_connection(struct call *c)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(c->req);

	c->s->counters.resets++;
	if (!evcon) {
		/* The client left while we waited: libevent handed the request to us. */
		evhttp_request_free(c->req);
		return;
	}
	abort_socket(bufferevent_getfd(evhttp_connection_get_bufferevent(evcon)));
	evhttp_connection_free(evcon);
}

static void delay(struct emu_server *s, struct evhttp_request *req, struct emu_fault_action *act, bool held);

/* An `applied` fault: the request is served, then its answer is lost, late or replaced. */
static void apply_then(struct call *c, const struct emu_fault_action *act)
{
	struct emu_fault_action after = {act->kind, act->latency_ms, act->status, NULL, false, false, act->rule};
	struct evbuffer *out = evhttp_request_get_output_buffer(c->req);

	c->capture = true;
	serve_api(c);
	c->capture = false;
	c->s->counters.injected++;
	switch (act->kind) {
	case EMU_FAULT_REPLY:
		evbuffer_drain(out, evbuffer_get_length(out));
		evhttp_remove_header(evhttp_request_get_output_headers(c->req), "Content-Type");
		reply_raw(c, act->status, act->body, strlen(act->body));
		break;
	case EMU_FAULT_RESET:
		delay(c->s, c->req, &after, false); /* not inside libevent's callback */
		break;
	case EMU_FAULT_PASS:
		after.kind = EMU_FAULT_PASS;
		delay(c->s, c->req, &after, false);
		c->s->delayed->send_reply = true;
		c->s->delayed->status = c->captured;
		break;
	}
}

static void carry_out(struct call *c, const struct emu_fault_action *act)
{
	if (act->applied) {
		apply_then(c, act);
		return;
	}
	switch (act->kind) {
	case EMU_FAULT_PASS:
		serve_api(c);
		break;
	case EMU_FAULT_REPLY:
		c->s->counters.injected++;
		reply_raw(c, act->status, act->body, strlen(act->body));
		break;
	case EMU_FAULT_RESET:
		reset_connection(c);
		break;
	}
}

static void delayed_drop(struct delayed *d)
{
	if (d->prev)
		d->prev->next = d->next;
	else
		d->s->delayed = d->next;
	if (d->next)
		d->next->prev = d->prev;
	event_free(d->timer);
	emu_fault_action_free(&d->act);
	free(d);
}

static void delayed_fire(evutil_socket_t fd, short what, void *arg)
{
	struct delayed *d = arg;
	struct call c;

	(void)fd;
	(void)what;
	if (d->send_reply) {
		/* The answer was made when the request was served; sent now, or dropped if the client left. */
		evhttp_send_reply(d->req, d->status, NULL, NULL);
		delayed_drop(d);
		return;
	}
	call_init(&c, d->s, d->req);
	carry_out(&c, &d->act);
	call_free(&c);
	delayed_drop(d);
}

static void arm(struct delayed *d)
{
	struct timeval tv = {d->act.latency_ms / 1000, (d->act.latency_ms % 1000) * 1000};

	d->held = false;
	evtimer_add(d->timer, &tv);
}

/* Carries the action out from a timer (or, held, once released), `act` taken over. */
static void delay(struct emu_server *s, struct evhttp_request *req, struct emu_fault_action *act, bool held)
{
	struct delayed *d = xcalloc(1, sizeof(*d));

	d->s = s;
	d->req = req;
	d->act = *act;
	d->held = held;
	d->timer = evtimer_new(s->base, delayed_fire, d);
	if (!d->timer)
		abort(); /* out of memory: see mem.h */
	d->next = s->delayed;
	if (d->next)
		d->next->prev = d;
	s->delayed = d;
	if (act->latency_ms > 0 || held)
		s->counters.delayed++;
	if (!held)
		arm(d);
}

/* Lets held requests go on (those of rule `rule`, or all when 0); returns how many. */
static size_t release_held(struct emu_server *s, unsigned rule)
{
	struct delayed *d;
	size_t n = 0;

	for (d = s->delayed; d; d = d->next) {
		if (d->held && (rule == 0 || d->act.rule == rule)) {
			arm(d);
			n++;
		}
	}
	return n;
}

static size_t count_held(const struct emu_server *s)
{
	const struct delayed *d;
	size_t n = 0;

	for (d = s->delayed; d; d = d->next)
		n += d->held;
	return n;
}

/* Answers the requests still waiting with a 503, and gives the loop one turn to send them. */
static void cancel_delayed(struct emu_server *s)
{
	if (!s->delayed)
		return;
	while (s->delayed) {
		struct evhttp_request *req = s->delayed->req;

		delayed_drop(s->delayed);
		evhttp_send_error(req, 503, "the emulator is shutting down");
	}
	event_base_loop(s->base, EVLOOP_NONBLOCK);
}

static void arrive(struct call *c)
{
	struct counters *n = &c->s->counters;
	struct emu_fault_action act;

	n->requests++;
	n->bytes_received += evbuffer_get_length(evhttp_request_get_input_buffer(c->req));
	if (c->route >= 0)
		n->by_route[c->route]++;
	if (!emu_fault_match(&c->s->faults, c->method, c->raw_path, &act)) {
		serve_api(c);
		return;
	}
	if (act.hold) {
		delay(c->s, c->req, &act, true);
		return;
	}
	/* A reset frees the connection, which must not happen inside libevent's callback for it. */
	if (!act.applied && (act.latency_ms > 0 || act.kind == EMU_FAULT_RESET)) {
		delay(c->s, c->req, &act, false);
		return;
	}
	carry_out(c, &act);
	emu_fault_action_free(&act);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct call c;

	tcp_nodelay(req);
	call_init(&c, arg, req);
	if (c.admin)
		serve_admin(&c);
	else
		arrive(&c);
	call_free(&c);
}

/* ---- the server --------------------------------------------------------------- */

struct emu_server *emu_server_new(struct event_base *base, const struct emu_config *cfg, const char *host,
				  int port, struct errbuf *err)
{
	struct emu_server *s = xcalloc(1, sizeof(*s));

	s->base = base;
	config_copy(&s->cfg, cfg);
	emu_store_init(&s->store);
	emu_faults_init(&s->faults);
	s->http = evhttp_new(base);
	if (!s->http)
		abort(); /* out of memory: see mem.h */
	evhttp_set_max_body_size(s->http, (ev_ssize_t)cfg->max_body);
	/* Every method reaches the router, which answers 405 rather than libevent's 501. */
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
						    EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
						    EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	/* Read an oversized body to its end before answering 413, so the client sees the answer. */
	evhttp_set_flags(s->http, EVHTTP_SERVER_LINGERING_CLOSE);
	evhttp_set_gencb(s->http, on_request, s);
	s->sock = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)port);
	if (!s->sock) {
		err_set(err, "cannot listen on %s:%d: %s", host, port, strerror(errno));
		emu_server_free(s);
		return NULL;
	}
	return s;
}

int emu_server_port(const struct emu_server *s)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(evhttp_bound_socket_get_fd(s->sock), (struct sockaddr *)&ss, &len) != 0)
		return -1;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void emu_server_free(struct emu_server *s)
{
	if (!s)
		return;
	cancel_delayed(s);
	if (s->http)
		evhttp_free(s->http);
	emu_store_free(&s->store);
	emu_faults_clear(&s->faults);
	emu_config_free(&s->cfg);
	buf_free(&s->body);
	free(s);
}
