/*
 * api_call.h - what the HTTP API's files share (not a public interface: only
 * src/api*.c include it).
 *
 *   api.c            the server: routing table, keys and scopes, rate limits,
 *                    connections, TLS, libevent's own refusals
 *   api_reply.c      answers (problem details), and reading a request's parts
 *   api_abilities.c  POST/GET/DELETE /v1/abilities, PUT /v1/services/{s}/abilities
 *   api_search.c     POST /v1/search
 *   api_admin.c      sync status/retry/pause, restore, reconcile, jobs, audit
 *   api_ops.c        /healthz, /readyz, /metrics, /v1/openapi.json
 *
 * Handlers only translate HTTP: they check a request, call the store, the
 * outbox or a job, and turn the outcome into an answer. Every call is
 * answered exactly once (reply_* releases the answer's reference).
 */
#ifndef ABILITYSYNC_API_CALL_H
#define ABILITYSYNC_API_CALL_H

#include "api.h"

#include "ability.h"
#include "buf.h"
#include "clock.h"
#include "errcode.h"
#include "jsonscan.h"
#include "keys.h"
#include "log.h"
#include "mem.h"
#include "text.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#define COMP "http"
#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define RETRY_AFTER_S "2"

struct api {
	struct service *svc;
	struct api_opts o;
	struct evhttp *http;
	struct evhttp_bound_socket *sock;
	struct keyring ring;            /* API_KEYS and API_KEYS_FILE; empty: no auth */
	struct bucket *buckets;        /* RATE_LIMIT_RPS: one per key, the last for callers without one */
	struct http_metrics http_counts; /* answers by key, route and status; latency by route */
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
	unsigned pid;                  /* in request ids: read once, not a syscall per request */
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
	char *path_id;                /* {id} of /v1/abilities/{id} (or {service}, ...), decoded */
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


/* ---- answers (api_reply.c): each releases the call's answer reference ---- */
const char *reason(int status);
void call_release(struct call *c);
void reply_typed(struct call *c, int status, const char *type, const char *body, size_t len);
void reply(struct call *c, int status, const char *body, size_t len);          /* application/json */
void reply_json(struct call *c, int status, json_t *j);                         /* takes j */
/* A problem details answer (RFC 9457); `all`: every bad field of a refused body, or NULL. */
void reply_coded(struct call *c, int status, const char *code, const char *field, const char *message,
		 const struct ability_error *all);
/* Its status and code from the table of error codes (errcode.h). */
void reply_error(struct call *c, enum errcode e, const char *field, const char *fmt, ...) PRINTF_LIKE(4, 5);
void reply_refusal(struct call *c, const struct ability_error *err);
void reply_pg_failure(struct call *c, const struct pg_outcome *o);
void reply_vdb_failure(struct call *c, enum vdb_status st, const char *error);

/* ---- a request's parts (api_reply.c): false means answered already ---- */
struct jspan body_of(struct call *c);            /* the body, contiguous and NUL-terminated */
bool json_content(struct call *c) MUSTCHECK;     /* Content-Type: application/json, or 415 */
bool one_of(const char *s, const char *const *list);
const char *query_value(struct call *c, const char *key);
const char *query_not_text(const struct evkeyvalq *q); /* the first parameter that is not UTF-8, or NULL */
bool needs_postgres(struct call *c, const char *what) MUSTCHECK;
bool page_limit(struct call *c, int *limit) MUSTCHECK;
json_t *json_or_null(const char *text);
json_t *string_or_null(const char *s);
/* How long to wait for the vector DB: SYNC_WAIT_MS, or the client's Prefer: wait=N (bounded), in ms. */
long sync_wait_of(struct call *c);
void search_free(struct search *s);       /* api_search.c: a search's state, its wait timer too */

/* ---- the audit trail (api_admin.c) ---- */
void audit_keep_params(struct call *c);
void audit_record(struct call *c, int status);

/* ---- handlers, one per route ---- */
void h_abilities_post(struct call *c);
void h_abilities_list(struct call *c);
void h_ability_get(struct call *c);
void h_ability_delete(struct call *c);
void h_service_set(struct call *c);
void h_search(struct call *c);
void h_sync_status(struct call *c);
void h_sync_retry(struct call *c);
void h_sync_pause(struct call *c);
void h_sync_resume(struct call *c);
void h_reconcile_last(struct call *c);
void h_reconcile_post(struct call *c);
void h_restore_post(struct call *c);
void h_jobs_list(struct call *c);
void h_job_get(struct call *c);
void h_job_cancel(struct call *c);
void h_audit(struct call *c);
void h_openapi(struct call *c);
void h_healthz(struct call *c);
void h_readyz(struct call *c);
void h_metrics(struct call *c);

#endif
