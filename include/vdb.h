/*
 * vdb.h - the vector DB client: the Infraxa HTTP API, asynchronously.
 *
 * Requests run on the caller's libevent loop through libcurl's multi interface
 * (curl_multi_socket_action): nothing here blocks, at most `max_inflight`
 * requests are on the wire, connections are kept alive and reused, and the rest
 * wait in a queue. Transport errors, time-outs, 429 and 5xx are retried with
 * exponential backoff and full jitter, up to `max_attempts`; other 4xx are not.
 * Every request has an id that appears in its log lines; non-2xx bodies are
 * logged verbatim (truncated); the API key never is.
 *
 * The API leaves things undocumented (reference/infraxa-api.md §1.6), so:
 *   - "already exists" on a tenant or blob is success whatever status the
 *     server uses: the client looks the object up instead of reading the code;
 *   - re-adding an existing id has unknown effects: `delete-then-add` (the
 *     default) deletes it first, `add` relies on a server that overwrites
 *     (`abilitysync probe` tells which);
 *   - a delete of a missing vector (404) is success;
 *   - replies are parsed defensively: wrong types, missing fields, truncated or
 *     oversized bodies give a clear error, never a crash.
 *
 * Every operation ends in exactly one call of its callback, also when the
 * client is freed with the request still pending (status VDB_CANCELLED).
 */
#ifndef ABILITYSYNC_VDB_H
#define ABILITYSYNC_VDB_H

#include "common.h"
#include "metrics.h"

#include <event2/event.h>
#include <jansson.h>

enum vdb_write_mode { VDB_DELETE_THEN_ADD, VDB_ADD };
enum vdb_auth { VDB_AUTH_BEARER, VDB_AUTH_X_API_KEY };

struct vdb_opts {
	const char *base_url;  /* VECTOR_DB_API */
	const char *tenant;    /* VECTOR_DB_TENANT */
	const char *api_key;   /* NULL or "": no key sent */
	enum vdb_auth auth;
	const char *ca_file;   /* NULL: the system's CA store */
	bool tls_verify;
	long timeout_ms;       /* per attempt */
	int max_inflight;
	size_t batch_bytes;    /* request body bound for adds */
	size_t batch_max;      /* vectors per add request */
	int max_attempts;      /* 1: no retries */
	long backoff_ms;       /* first retry delay bound; doubles per attempt */
	long backoff_max_ms;
	enum vdb_write_mode write_mode;
	int dimension;         /* of the blobs this client creates */
	size_t max_reply;      /* larger replies are an error */
};

enum vdb_status {
	VDB_OK,
	VDB_NOT_FOUND,   /* get: no such vector */
	VDB_REJECTED,    /* a 4xx the client does not retry: the request itself is wrong */
	VDB_UNAVAILABLE, /* transport error, time-out, 429 or 5xx, after the last attempt */
	VDB_BAD_REPLY,   /* a 2xx whose body is not what the API returns */
	VDB_CANCELLED,   /* the client was freed first */
};

struct vdb_result {
	enum vdb_status status;
	long http;          /* the last HTTP status; 0 when there was none */
	int attempts;       /* of the last request the operation made */
	uint64_t req;       /* its id, as in the logs */
	char error[512];    /* what went wrong, for logs and for clients */
	json_t *reply;      /* get, query, list: the parsed reply; valid during the callback */
	const bool *ok;     /* add: per vector, in the order given */
	const bool *maybe;  /* add: per vector, a request carrying it may have been applied unbeknown */
	size_t n;
	/*
	 * A write may have been applied though the answer does not say so: an
	 * attempt timed out or broke after its request was fully sent, got a 500,
	 * 502 or 504, or was cancelled on the wire. Whatever the status, the
	 * server may still apply it later; only the absence of this flag makes
	 * the outcome certain. (A refused connection, a 4xx, a 429 or a 503, or an
	 * attempt cut before its request went out, surely did nothing.)
	 */
	bool ambiguous;
	bool cut_short;     /* the call's deadline (vdb_call) passed before it could finish */
};

/*
 * Bounds and names a write: no attempt starts after `deadline_ms`
 * (clock_mono_ms), and none runs past it (its time-out is cut short); `trace`
 * (a request id) appears in the log lines of the call's requests. A call whose
 * deadline has already passed sends nothing and fails on the next turn of the
 * loop, not inside the call itself.
 */
struct vdb_call {
	int64_t deadline_ms;  /* 0: none */
	const char *trace;    /* NULL: none */
};

typedef void (*vdb_done_fn)(const struct vdb_result *r, void *arg);

/* One vector to add. The texts are copied before vdb_add returns. */
struct vdb_vector {
	int64_t id;
	const char *embedding;  /* a JSON array of numbers, sent as is */
	size_t embedding_len;
	const char *attributes; /* a JSON object */
	size_t attributes_len;
	bool may_exist;         /* delete-then-add deletes first only when it may exist */
};

/* Ambiguous attempts (see vdb_result.ambiguous), by call and by reason. */
enum vdb_ambiguous_call { VDB_AMB_ADD, VDB_AMB_DELETE, VDB_AMB_OTHER, VDB_AMB_CALLS };
enum vdb_ambiguous_reason { VDB_AMB_TIMEOUT, VDB_AMB_RESET, VDB_AMB_5XX, VDB_AMB_CANCELLED, VDB_AMB_REASONS };
extern const char *const vdb_ambiguous_call_names[VDB_AMB_CALLS];
extern const char *const vdb_ambiguous_reason_names[VDB_AMB_REASONS];

struct vdb_stats {
	uint64_t requests, retries, failures;
	uint64_t by_class[6];   /* replies: 1xx..5xx, and [0] for no reply */
	uint64_t ambiguous[VDB_AMB_CALLS][VDB_AMB_REASONS];
	uint64_t vectors_added;
	int inflight, queued;
	struct histogram latency; /* seconds per attempt */
};

struct vdb;

struct vdb *vdb_new(struct event_base *base, const struct vdb_opts *o, struct errbuf *err) MUSTCHECK;
void vdb_free(struct vdb *v);

/* Creates the tenant (once per client; concurrent callers share one request). */
void vdb_ensure_tenant(struct vdb *v, vdb_done_fn done, void *arg);
/* Creates the tenant and the blob, dense, of the configured dimension (cached). */
void vdb_ensure_blob(struct vdb *v, const char *blob, vdb_done_fn done, void *arg);
/* Forgets what ensure learnt, e.g. after the server lost its state. */
void vdb_forget_blobs(struct vdb *v);
/* True when this client created the blob (ensured it with a 2xx create): none of its vectors predate us. */
bool vdb_created_blob(struct vdb *v, const char *blob);
/* True when this client has ensured the blob already (an ensure now sends nothing). */
bool vdb_knows_blob(struct vdb *v, const char *blob);

/* Adds vectors to a blob (ensured first), in batches bounded by bytes and count. */
void vdb_add(struct vdb *v, const char *blob, const struct vdb_vector *vecs, size_t n, vdb_done_fn done,
	     void *arg);
void vdb_add_call(struct vdb *v, const struct vdb_call *call, const char *blob, const struct vdb_vector *vecs,
		  size_t n, vdb_done_fn done, void *arg);
void vdb_get(struct vdb *v, const char *blob, int64_t id, vdb_done_fn done, void *arg);
/*
 * The same, for its attributes: r->reply is {"id", "attributes", "vector_length"
 * (when the server sent the vector)}; the vector itself is checked in place,
 * not parsed into a DOM.
 */
void vdb_get_attributes(struct vdb *v, const char *blob, int64_t id, vdb_done_fn done, void *arg);
void vdb_get_attributes_call(struct vdb *v, const struct vdb_call *call, const char *blob, int64_t id,
			     vdb_done_fn done, void *arg);
void vdb_delete(struct vdb *v, const char *blob, int64_t id, vdb_done_fn done, void *arg);
void vdb_delete_call(struct vdb *v, const struct vdb_call *call, const char *blob, int64_t id, vdb_done_fn done,
		     void *arg);
void vdb_put_attributes(struct vdb *v, const char *blob, int64_t id, const char *attrs, size_t len,
			vdb_done_fn done, void *arg);
/* reply: {"ids": [...], "distances": [...], "attributes": [...] or absent}, checked. */
void vdb_query(struct vdb *v, const char *blob, const char *vector, size_t len, int k, vdb_done_fn done,
	       void *arg);
void vdb_health(struct vdb *v, vdb_done_fn done, void *arg);

/*
 * One request exactly as given, sent once, whatever the answer: for `probe`,
 * which studies the server. r->http and r->reply (when JSON) tell what came back.
 */
enum vdb_raw_auth { VDB_RAW_CONFIGURED, VDB_RAW_NO_AUTH, VDB_RAW_BEARER, VDB_RAW_X_API_KEY };
void vdb_raw(struct vdb *v, const char *method, const char *path, const char *body, size_t len,
	     unsigned auth, vdb_done_fn done, void *arg);

/*
 * What the client makes of a 2xx reply body, by the code it runs on the wire
 * (pure: no client needed; the fuzz tests drive it). `id`: the vector asked
 * for (gets); `name` and `dimension`: the tenant or blob looked for (lists,
 * read when a create was refused). VDB_OK, or VDB_BAD_REPLY with `why` saying
 * what is wrong; lists also give VDB_NOT_FOUND (not listed) and VDB_REJECTED
 * (the blob exists with another dimension). *reply, when asked for, gets the
 * parsed reply whenever the body parsed (what callbacks see; for gets: an
 * object whose vector is null or numbers); decref it. GET and GET_LIGHT judge
 * a body alike.
 * Replies to adds, deletes and attribute updates are judged by status alone.
 */
enum vdb_reply_kind {
	VDB_REPLY_GET,       /* vdb_get: {"id", "attributes"?, "vector"?}, the vector's numbers as reals */
	VDB_REPLY_GET_LIGHT, /* vdb_get_attributes: the same, the vector scanned in place */
	VDB_REPLY_QUERY,     /* vdb_query: {"ids", "distances", "attributes"?} */
	VDB_REPLY_TENANTS,   /* GET /tenants */
	VDB_REPLY_BLOBS,     /* GET /tenants/{t}/blobs */
};
enum vdb_status vdb_check_reply(enum vdb_reply_kind kind, const char *body, size_t len, int64_t id,
				const char *name, int dimension, json_t **reply, char *why, size_t whylen) MUSTCHECK;

/* Ends every pending operation now (callbacks with VDB_CANCELLED; writes on the wire are ambiguous). */
void vdb_cancel_all(struct vdb *v);

void vdb_get_stats(const struct vdb *v, struct vdb_stats *out);
const char *vdb_status_name(enum vdb_status s);

/*
 * Runs the loop until *flag becomes true: for the command-line tools, which do
 * one thing at a time. Never call it from a callback.
 */
void vdb_run_until(struct vdb *v, const bool *flag);

#endif
