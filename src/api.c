/* The server: routes, keys and scopes, rate limits, connections, TLS (api_call.h lists the other parts). */
#include "api_call.h"

#include "hash.h"
#include "tcp.h"

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http_struct.h> /* major, minor: see evhttp_send_error() */
#include <event2/listener.h>
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <unistd.h>


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
	{EVHTTP_REQ_PUT, "/v1/services/", true, ROUTE_SERVICE_SET, h_service_set, KEY_WRITE, true, "/abilities"},
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
	http_metrics_keys(&a->http_counts, a->ring.n + 1);
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
	snprintf(c->id, sizeof(c->id), "%08x-%llu", c->api->pid, (unsigned long long)++c->api->next_id);
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
			/* An audited route is recorded whatever the answer: a refused attempt is worth a line too. */
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
	tcp_nodelay(req); /* once per connection: it stays set */
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
	a->pid = (unsigned)getpid();
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

uint64_t api_requests(const struct api *a)
{
	return a->next_id;
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
	http_metrics_free(&a->http_counts);
	free(a->conn_set);
	free(a);
}
