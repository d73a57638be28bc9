/*
 * api.h - the HTTP API (libevent's evhttp), versioned under /v1: abilities
 * (one or a batch, read, list, delete, a service's full set), search, the
 * sync's status and controls, restore and reconcile jobs, the audit trail,
 * and /healthz /readyz /metrics /v1/openapi.json. api/openapi.yaml describes
 * every route and answer; the route table in api.c says which scope each needs.
 *
 * Every answer carries X-Request-Id (the client's, when it sent a sane one);
 * every error, libevent's own refusals included, is a problem details object
 * (RFC 9457, application/problem+json). With API_KEYS set, /v1/ wants
 * `Authorization: Bearer <key>` (compared in constant time).
 */
#ifndef ABILITYSYNC_API_H
#define ABILITYSYNC_API_H

#include "ability.h"
#include "jsonscan.h"
#include "service.h"

#include <event2/http.h>

struct api_opts {
	const char *listen;      /* host:port */
	const char *api_keys;    /* entries, comma-separated (keys.h); NULL: none */
	const char *api_keys_file; /* entries, one per line; re-read by api_reload_keys; NULL: none */
	bool metrics_auth;       /* /metrics needs a key with the read scope */
	double rate_rps;         /* per key; 0: no limit */
	int rate_burst;
	int audit_days;          /* audit entries are kept this long */
	bool allow_open;         /* serve beyond loopback without keys */
	size_t max_body;
	size_t batch_max;
	size_t dim;
	long sync_wait_ms;       /* how long a write waits for the vector DB before answering 202 */
	long sync_wait_max_ms;   /* the longest a client may ask for (Prefer: wait=N) */
	int jobs_max;            /* long jobs this replica runs at once, at most */
	size_t headers_max;      /* request line and headers, bytes */
	long read_timeout_ms;    /* a connection silent (or not reading) this long is closed */
	int max_connections;     /* open at once; beyond, accepting pauses */
	int max_in_flight;       /* requests handled at once; beyond, 503 */
	const char *tls_cert;    /* both set: HTTPS */
	const char *tls_key;
};

struct api;

struct api *api_new(struct service *svc, const struct api_opts *o, struct errbuf *err) MUSTCHECK;

/*
 * Re-reads API_KEYS_FILE (SIGHUP): the new keys take effect for the next
 * request. On any error, or a file that would leave no key at all, the old
 * keys stay and the error is logged.
 */
bool api_reload_keys(struct api *a);

/* Stops accepting connections; requests already in flight go on. */
void api_stop_accepting(struct api *a);

/* Requests not answered yet, and calls still waiting for their push. */
int api_in_flight(const struct api *a);

/* Requests received since the start: a count that only grows. */
uint64_t api_requests(const struct api *a);

void api_free(struct api *a);

/* Where it listens (host:port, the port bound when 0 was asked), for logs. */
const char *api_address(const struct api *a);

/*
 * What the request handler decides before any handler runs, as pure functions
 * (on_request uses them; the fuzz tests drive them).
 *
 * api_match_route: the route for `method` on `path` (the URI's path, still
 * percent-encoded). OK: *route set and, for routes with an id, *id the id
 * decoded (free it). NOT_FOUND: no route has this path. BAD_METHOD: routes
 * have this path for other methods, listed in `allow` ("GET, DELETE"). BAD_ID:
 * *route set, but the id decodes to nothing or holds a NUL (%00).
 */
enum api_match { API_MATCH_OK, API_MATCH_NOT_FOUND, API_MATCH_BAD_METHOD, API_MATCH_BAD_ID };
enum api_match api_match_route(enum evhttp_cmd_type method, const char *path, enum route *route, char **id,
			       char *allow, size_t allowlen) MUSTCHECK;

/* GET /v1/abilities?limit=: NULL gives the default; false unless an integer from 1 to 1000. */
bool api_parse_limit(const char *text, int *limit) MUSTCHECK;

/*
 * The body of POST /v1/search, {"service_name", "embedding", "k"?,
 * "min_score"?}, for embeddings of `dim` numbers: *emb is the embedding's span
 * of the body, *service the service (free it), *k the neighbours asked,
 * *min_score the least cosine similarity (1 - distance) wanted (-2: any). On
 * failure err is the answer (status, code, field, message).
 */
bool api_parse_search(struct jspan body, size_t dim, struct jspan *emb, char **service, long *k, double *min_score,
		      struct ability_error *err) MUSTCHECK;

/* The bodies the admin routes take (reqbody.h), NULL-terminated: the fuzz tests drive each. */
struct body_spec;
extern const struct body_spec *const api_admin_bodies[];

#endif
