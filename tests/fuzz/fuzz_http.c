/*
 * fuzz_http - what the request handler decides before a handler runs: the
 * request target parsed as libevent parses it (evhttp_uri_parse_with_flags,
 * the query with evhttp_parse_query_str), routed by api_match_route for every
 * method, ?limit= read by api_parse_limit, and the same bytes as the body of
 * POST /v1/search (api_parse_search, embeddings of 4 and of 8 numbers).
 *
 * Invariants:
 *   - routing is the route table's (a model of it here): OK, NOT_FOUND,
 *     BAD_METHOD or BAD_ID exactly when the model says so, for every method;
 *     BAD_METHOD lists the methods that have the path (non-empty, without the
 *     one asked), NOT_FOUND for one method is NOT_FOUND for all;
 *   - an id is non-empty, holds no NUL, is valid UTF-8 and is the path's
 *     last segment percent-decoded; encoding it again and routing gives the
 *     same route and the same id;
 *   - every error answer on_request would build from the target (404, 405,
 *     bad_path, bad_query) can be built as JSON (valid UTF-8);
 *   - api_parse_limit agrees with strtol's grammar and the range 1..1000;
 *   - api_parse_search OK: the embedding span lies in the body and holds
 *     exactly dim numbers, the service is a 1..255-byte string, k is 1..100
 *     (10 when absent), and jansson reads the same; a refusal is a complete
 *     400/422 answer in UTF-8, with no service left behind.
 */
#include "fuzz.h"

#include "api.h"
#include "jsonscan.h"
#include "text.h"

#include <ctype.h>
#include <sys/queue.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>

static const enum evhttp_cmd_type methods[] = {
	EVHTTP_REQ_GET, EVHTTP_REQ_POST, EVHTTP_REQ_HEAD, EVHTTP_REQ_PUT, EVHTTP_REQ_DELETE,
	EVHTTP_REQ_OPTIONS, EVHTTP_REQ_TRACE, EVHTTP_REQ_CONNECT, EVHTTP_REQ_PATCH,
};

/* The routes as the README lists them. */
static const struct {
	enum evhttp_cmd_type method;
	const char *path;
	bool with_id;
	enum route route;
	const char *name;
	const char *suffix; /* after the id */
} model[] = {
	{EVHTTP_REQ_POST, "/v1/abilities", false, ROUTE_ABILITIES_POST, "POST", NULL},
	{EVHTTP_REQ_GET, "/v1/abilities", false, ROUTE_ABILITIES_LIST, "GET", NULL},
	{EVHTTP_REQ_GET, "/v1/abilities/", true, ROUTE_ABILITY_GET, "GET", NULL},
	{EVHTTP_REQ_DELETE, "/v1/abilities/", true, ROUTE_ABILITY_DELETE, "DELETE", NULL},
	{EVHTTP_REQ_PUT, "/v1/services/", true, ROUTE_SERVICE_SET, "PUT", "/abilities"},
	{EVHTTP_REQ_POST, "/v1/search", false, ROUTE_SEARCH, "POST", NULL},
	{EVHTTP_REQ_GET, "/v1/sync/status", false, ROUTE_SYNC_STATUS, "GET", NULL},
	{EVHTTP_REQ_POST, "/v1/sync/retry", false, ROUTE_SYNC_RETRY, "POST", NULL},
	{EVHTTP_REQ_POST, "/v1/sync/pause", false, ROUTE_SYNC_PAUSE, "POST", NULL},
	{EVHTTP_REQ_POST, "/v1/sync/resume", false, ROUTE_SYNC_RESUME, "POST", NULL},
	{EVHTTP_REQ_GET, "/v1/reconcile/last", false, ROUTE_RECONCILE_LAST, "GET", NULL},
	{EVHTTP_REQ_POST, "/v1/reconcile", false, ROUTE_RECONCILE_POST, "POST", NULL},
	{EVHTTP_REQ_POST, "/v1/restore", false, ROUTE_RESTORE_POST, "POST", NULL},
	{EVHTTP_REQ_GET, "/v1/jobs", false, ROUTE_JOBS_LIST, "GET", NULL},
	{EVHTTP_REQ_GET, "/v1/jobs/", true, ROUTE_JOB_GET, "GET", NULL},
	{EVHTTP_REQ_POST, "/v1/jobs/", true, ROUTE_JOB_CANCEL, "POST", "/cancel"},
	{EVHTTP_REQ_GET, "/v1/audit", false, ROUTE_AUDIT, "GET", NULL},
	{EVHTTP_REQ_GET, "/v1/openapi.json", false, ROUTE_OPENAPI, "GET", NULL},
	{EVHTTP_REQ_GET, "/healthz", false, ROUTE_HEALTHZ, "GET", NULL},
	{EVHTTP_REQ_GET, "/readyz", false, ROUTE_READYZ, "GET", NULL},
	{EVHTTP_REQ_GET, "/metrics", false, ROUTE_METRICS, "GET", NULL},
};

/* The id part of a path of a route with an id: from the prefix to the suffix (or the end). */
static size_t model_id_len(size_t i, const char *path)
{
	const char *start = path + strlen(model[i].path), *slash = strchr(start, '/');

	return (size_t)((slash ? slash : start + strlen(start)) - start);
}

static bool model_has_path(size_t i, const char *path)
{
	size_t n = strlen(model[i].path);
	const char *slash;

	if (!model[i].with_id)
		return strcmp(path, model[i].path) == 0;
	if (strncmp(path, model[i].path, n) != 0 || !path[n])
		return false;
	slash = strchr(path + n, '/');
	return model[i].suffix ? slash && strcmp(slash, model[i].suffix) == 0 : !slash;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* %XX decoded (both digits hex), anything else as it is; *len the decoded length. */
static char *percent_decode(const char *s, size_t *len)
{
	char *out = malloc(strlen(s) + 1);
	size_t n = 0;

	for (; *s; s++) {
		if (s[0] == '%' && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
			out[n++] = (char)(hexval(s[1]) * 16 + hexval(s[2]));
			s += 2;
		} else {
			out[n++] = *s;
		}
	}
	out[n] = '\0';
	*len = n;
	return out;
}

/* An error answer as reply_error builds it: the texts cut to its buffers, scrubbed, packed. */
static void answer_buildable(const char *field, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void answer_buildable(const char *field, const char *fmt, ...)
{
	char message[700], name[200];
	json_t *j;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	snprintf(name, sizeof(name), "%s", field ? field : "");
	utf8_scrub(message);
	utf8_scrub(name);
	j = json_pack("{s:{s:s, s:s, s:s?}}", "error", "code", "x", "message", message, "field", *name ? name : NULL);
	CHECK(j, "the error answer cannot be built: [%s] [%s]", message, name);
	json_decref(j);
}

static const char *method_name(enum evhttp_cmd_type m)
{
	return m == EVHTTP_REQ_GET ? "GET" : m == EVHTTP_REQ_POST ? "POST" : m == EVHTTP_REQ_DELETE ? "DELETE" : "X";
}

static void check_route(const char *path)
{
	size_t m, i, nf = 0;

	for (m = 0; m < ARRAY_LEN(methods); m++) {
		enum evhttp_cmd_type meth = methods[m];
		char allow[64], want_allow[64] = "", *id = (char *)1, *dec = NULL;
		enum route route = ROUTE_COUNT;
		enum api_match got = api_match_route(meth, path, &route, &id, allow, sizeof(allow));
		int hit = -1;
		size_t declen = 0, bad;

		for (i = 0; i < ARRAY_LEN(model); i++) {
			if (!model_has_path(i, path))
				continue;
			if (model[i].method == meth && hit < 0)
				hit = (int)i;
			else if (model[i].method != meth)
				snprintf(want_allow + strlen(want_allow), sizeof(want_allow) - strlen(want_allow), "%s%s",
					 want_allow[0] ? ", " : "", model[i].name);
		}
		if (hit < 0) {
			CHECK(!id && route == ROUTE_OTHER, "no route, yet a route or an id");
			if (want_allow[0]) {
				CHECK(got == API_MATCH_BAD_METHOD, "%s %s: %d, expected BAD_METHOD", method_name(meth), path, (int)got);
				CHECK(strcmp(allow, want_allow) == 0, "%s: allow [%s], expected [%s]", path, allow, want_allow);
				CHECK(!strstr(allow, method_name(meth)), "allow [%s] lists the method asked", allow);
				answer_buildable(NULL, "%s is not allowed on %s (allowed: %s)", method_name(meth), path, allow);
			} else {
				CHECK(got == API_MATCH_NOT_FOUND, "%s %s: %d, expected NOT_FOUND", method_name(meth), path, (int)got);
				answer_buildable(NULL, "no route %s %s", method_name(meth), path);
				nf++;
			}
			continue;
		}
		CHECK(route == model[hit].route, "%s %s: route %d, expected %d", method_name(meth), path, (int)route,
		      (int)model[hit].route);
		if (!model[hit].with_id) {
			CHECK(got == API_MATCH_OK && !id, "%s %s: %d", method_name(meth), path, (int)got);
			continue;
		}
		{
			char *raw = strndup(path + strlen(model[hit].path), model_id_len((size_t)hit, path));

			dec = percent_decode(raw, &declen);
			free(raw);
		}
		if (declen == 0 || strlen(dec) != declen || !utf8_valid(dec, declen, &bad)) {
			CHECK(got == API_MATCH_BAD_ID && !id, "%s %s: %d, expected BAD_ID", method_name(meth), path, (int)got);
			answer_buildable(NULL, "the id in %s cannot be decoded", path);
		} else {
			char *again, *enc = evhttp_uriencode(id, -1, 0), *id2 = NULL;
			enum route route2;

			CHECK(got == API_MATCH_OK && id, "%s %s: %d, expected OK", method_name(meth), path, (int)got);
			CHECK(strcmp(id, dec) == 0, "id [%s], decoded [%s]", id, dec);
			CHECK(*id && utf8_valid(id, strlen(id), &bad), "id [%s]", id);
			again = malloc(strlen(model[hit].path) + strlen(enc) + 16);
			sprintf(again, "%s%s%s", model[hit].path, enc, model[hit].suffix ? model[hit].suffix : "");
			CHECK(api_match_route(meth, again, &route2, &id2, NULL, 0) == API_MATCH_OK && route2 == route &&
				      strcmp(id2, id) == 0, "encoded again as %s: another route or id", again);
			free(id2);
			free(again);
			free(enc);
		}
		free(dec);
		free(id);
	}
	CHECK(nf == 0 || nf == ARRAY_LEN(methods), "%s: not found for %zu methods only", path, nf);
}

/* strtol's grammar, by hand: space, a sign, digits, nothing after; then the range. */
static bool reference_limit(const char *s, int *limit)
{
	long long v = 0;
	bool neg = false, digits = false;

	while (isspace((unsigned char)*s))
		s++;
	if (*s == '+' || *s == '-')
		neg = *s++ == '-';
	for (; *s >= '0' && *s <= '9'; s++) {
		digits = true;
		if (v < 1000000)
			v = v * 10 + (*s - '0');
	}
	if (!digits || *s)
		return false;
	if (neg)
		v = -v;
	if (v < 1 || v > 1000)
		return false;
	*limit = (int)v;
	return true;
}

static void check_limit(const char *text)
{
	int got = -1, want = -1;
	bool ok = api_parse_limit(text, &got);

	CHECK(ok == reference_limit(text, &want), "limit [%s]: %s", text, ok ? "accepted" : "refused");
	if (ok)
		CHECK(got == want, "limit [%s]: %d, expected %d", text, got, want);
}

static void check_target(const char *target)
{
	struct evhttp_uri *uri = evhttp_uri_parse_with_flags(target, EVHTTP_URI_NONCONFORMANT);
	struct evkeyvalq q;
	struct evkeyval *kv;
	const char *path, *query, *limit;
	size_t bad;
	int got;

	/* The raw target as a path too: what a client's proxy might hand on. */
	check_route(target);
	CHECK(api_parse_limit(NULL, &got) && got == 100, "no limit is not the default");
	if (!uri)
		return; /* libevent answers 400 itself */
	path = evhttp_uri_get_path(uri);
	query = evhttp_uri_get_query(uri);
	if (!path || !*path)
		path = "/";
	check_route(path);
	TAILQ_INIT(&q);
	if (query && evhttp_parse_query_str(query, &q) == 0) {
		TAILQ_FOREACH(kv, &q, next) {
			if (!utf8_valid(kv->key, strlen(kv->key), &bad) || !utf8_valid(kv->value, strlen(kv->value), &bad)) {
				answer_buildable(kv->key, "the query parameter %s is not UTF-8 text", kv->key);
				goto out;
			}
		}
		limit = evhttp_find_header(&q, "limit");
		if (limit)
			check_limit(limit);
	}
out:
	evhttp_clear_headers(&q);
	evhttp_uri_free(uri);
}

static void check_search(const char *body, size_t len, size_t dim)
{
	struct jspan span = {body, len}, emb = {NULL, 0};
	struct ability_error err;
	struct js_error je;
	json_error_t jerr;
	json_t *o, *e, *kv;
	char *service = (char *)1;
	long k = -1;
	double min_score = 9;
	size_t count = 0, bad;

	memset(&err, 0, sizeof(err));
	if (!api_parse_search(span, dim, &emb, &service, &k, &min_score, &err)) {
		CHECK(!service, "a refusal left a service behind");
		CHECK(err.status == 400 || err.status == 422, "status %d", err.status);
		CHECK(err.code && *err.code && err.message[0], "an incomplete refusal");
		CHECK(utf8_valid(err.message, strlen(err.message), &bad), "the message is not UTF-8: %s", err.message);
		CHECK(utf8_valid(err.field, strlen(err.field), &bad), "the field is not UTF-8: %s", err.field);
		return;
	}
	CHECK(emb.p >= body && emb.p + emb.len <= body + len, "the embedding lies outside the body");
	CHECK(js_number_array(emb, &count, &je) && count == dim, "the embedding holds %zu numbers, not %zu", count, dim);
	CHECK(emb.len >= 2 && emb.p[0] == '[' && emb.p[emb.len - 1] == ']', "the span is not the array");
	CHECK(service && *service && strlen(service) <= ABILITY_TEXT_MAX, "service [%s]", service ? service : "(null)");
	CHECK(k >= 1 && k <= 100, "k %ld", k);
	CHECK(min_score == -2.0 || (min_score >= -1.0 && min_score <= 1.0), "min_score %g", min_score);

	o = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
	CHECK(json_is_object(o), "accepted what jansson does not read: %s", jerr.text);
	e = json_object_get(o, "embedding");
	CHECK(json_is_array(e) && json_array_size(e) == dim, "jansson sees another embedding");
	CHECK(strcmp(json_string_value(json_object_get(o, "service_name")), service) == 0, "another service");
	CHECK(json_string_length(json_object_get(o, "service_name")) == strlen(service), "a service with a NUL");
	kv = json_object_get(o, "k");
	CHECK(kv ? json_number_value(kv) == (double)k : k == 10, "k %ld", k);
	CHECK(json_object_size(o) == 2u + (kv != NULL), "other members accepted");
	json_decref(o);
	free(service);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_cstr(data, size), *body = fuzz_copy(data, size);

	check_target(text);
	check_limit(text);
	check_search(body, size, 4);
	check_search(body, size, 8);
	free(text);
	free(body);
	return 0;
}
