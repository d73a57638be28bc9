#include "vdb.h"

#include "buf.h"
#include "clock.h"
#include "jsonscan.h"
#include "log.h"
#include "mem.h"
#include "text.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#define COMP "vdb"
#define LOGGED_BODY_MAX 300

/* ---- requests -------------------------------------------------------------
 *
 * A request is one HTTP exchange, retried on transient failures. When it is
 * over (success, final error, retries exhausted or cancelled) its `finish`
 * handler turns it into the operation's next step or into a vdb_result.
 */

enum {
	REQ_NO_RETRY = 1 << 0,   /* probe experiments: one attempt, any answer */
	REQ_NO_AUTH = 1 << 1,    /* send no key, whatever is configured */
	REQ_AUTH_BEARER = 1 << 2,
	REQ_AUTH_API_KEY = 1 << 3,
	REQ_QUIET_404 = 1 << 4,  /* a 404 is an expected answer: no warning */
	REQ_QUIET_4XX = 1 << 5,  /* creates: "already exists" is expected, and its status unknown */
};

struct vdb_req;
typedef void (*req_finish_fn)(struct vdb_req *rq);

struct vdb_req {
	struct vdb *v;
	TAILQ_ENTRY(vdb_req) link;
	uint64_t id;
	const char *method;
	char *path;            /* after the base URL, for logs too */
	struct buf body;
	const char *ext_body;  /* or a body someone else owns for as long as the request lives */
	size_t ext_len;
	struct buf reply;
	bool reply_too_big;
	bool cancelled;
	bool exhausted;        /* retryable failure, but no attempts left */
	long http;
	CURLcode cc;
	char curl_err[CURL_ERROR_SIZE];
	int attempt;
	unsigned flags;
	CURL *easy;
	struct curl_slist *headers; /* while on the wire */
	struct event *retry_ev;
	int64_t started_us;
	int64_t deadline_ms;   /* no attempt starts or runs past it (0: none) */
	bool cut_short;        /* ... and it passed */
	bool past_due;         /* submitted with its deadline gone: fails on the next loop turn */
	bool ambiguous;        /* an attempt may have been applied without a clear answer */
	size_t body_off;       /* how much of the body this attempt has handed to libcurl */
	char tag[80];          /* "req=N" and the caller's trace, for logs */
	req_finish_fn finish;
	void *ctx;
};

TAILQ_HEAD(req_list, vdb_req);

/* Someone waiting for an ensure to finish. */
struct waiter {
	struct waiter *next;
	vdb_done_fn done;
	void *arg;
};

/* What the client knows about the tenant or one blob. */
struct known {
	struct known *next;
	struct vdb *v;
	char *blob;            /* NULL for the tenant */
	enum { K_UNKNOWN, K_ENSURING, K_READY } state;
	struct waiter *waiters;
	char error[512];       /* why the last ensure failed */
	bool created;          /* this client created it (so none of its vectors predate us) */
	enum vdb_status status;
};

/* A result to deliver on the next loop turn (callbacks never run inside the call). */
struct deferred {
	struct deferred *next;
	struct vdb *v;
	struct event *ev;
	vdb_done_fn done;
	void *arg;
	enum vdb_status status;
	char error[512];
};

struct vdb {
	struct event_base *base;
	struct vdb_opts o;
	char *base_url, *tenant, *api_key, *ca_file;
	CURLM *multi;
	struct event *timer;
	struct req_list queued; /* waiting for a slot */
	struct req_list active; /* on the wire, or waiting to be retried */
	uint64_t next_id;
	int pid;                /* in request ids: read once, not a syscall per request */
	struct known tenant_state;
	struct known *blobs;
	struct deferred *deferred;
	struct vdb_stats stats;
	bool freeing;
};

const char *const vdb_ambiguous_call_names[VDB_AMB_CALLS] = {"add", "delete", "other"};
const char *const vdb_ambiguous_reason_names[VDB_AMB_REASONS] = {"timeout", "reset", "5xx", "cancelled"};

const char *vdb_status_name(enum vdb_status s)
{
	switch (s) {
	case VDB_OK: return "ok";
	case VDB_NOT_FOUND: return "not found";
	case VDB_REJECTED: return "rejected";
	case VDB_UNAVAILABLE: return "unavailable";
	case VDB_BAD_REPLY: return "bad reply";
	case VDB_CANCELLED: return "cancelled";
	}
	return "?";
}

static size_t on_reply_data(char *p, size_t size, size_t n, void *arg)
{
	struct vdb_req *rq = arg;
	size_t len = size * n;

	if (rq->reply.len + len > rq->v->o.max_reply) {
		rq->reply_too_big = true;
		return 0; /* makes curl fail the transfer with CURLE_WRITE_ERROR */
	}
	buf_append(&rq->reply, p, len);
	return len;
}

/* The headers of one request: JSON, its id, and the key as configured or as the flags ask. */
static struct curl_slist *request_headers(const struct vdb *v, uint64_t id, unsigned flags)
{
	struct curl_slist *h = NULL;
	struct buf line = BUF_INIT;
	bool bearer = flags & REQ_AUTH_BEARER || (!(flags & REQ_AUTH_API_KEY) && v->o.auth == VDB_AUTH_BEARER);
	char reqid[48];

	snprintf(reqid, sizeof(reqid), "X-Request-Id: abilitysync-%d-%llu", v->pid, (unsigned long long)id);
	h = curl_slist_append(h, reqid);
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Accept: application/json");
	/* No "Expect: 100-continue" round trip before large bodies. */
	h = curl_slist_append(h, "Expect:");
	if (v->api_key && !(flags & REQ_NO_AUTH)) {
		buf_printf(&line, bearer ? "Authorization: Bearer %s" : "X-API-Key: %s", v->api_key);
		h = curl_slist_append(h, line.data);
		/* The key must not linger in freed memory longer than needed. */
		memset(line.data, 0, line.len);
		buf_free(&line);
	}
	if (!h)
		abort();
	return h;
}

/* The configured time limit of an attempt, cut short by the call's deadline. */
static long attempt_timeout_ms(const struct vdb_req *rq)
{
	long ms = rq->v->o.timeout_ms;
	int64_t left;

	if (rq->deadline_ms) {
		left = rq->deadline_ms - clock_mono_ms();
		if (left < ms)
			ms = left > 1 ? (long)left : 1;
	}
	return ms;
}

static size_t body_len(const struct vdb_req *rq)
{
	return rq->ext_body ? rq->ext_len : rq->body.len;
}

static const char *body_data(const struct vdb_req *rq)
{
	return rq->ext_body ? rq->ext_body : rq->body.data;
}

static size_t on_read_body(char *buf, size_t size, size_t n, void *arg)
{
	struct vdb_req *rq = arg;
	size_t want = size * n, left = body_len(rq) - rq->body_off;

	if (want > left)
		want = left;
	memcpy(buf, body_data(rq) + rq->body_off, want);
	rq->body_off += want;
	return want;
}

/*
 * libcurl sends a request again, on a fresh connection, when the reused one
 * died before any answer came: harmless for a read, but the server may have
 * applied the first copy of a write (a duplicate vector). Only a rewind to the
 * start of a body not sent yet is allowed; otherwise the attempt fails, and
 * our own retry decides, knowing the first copy is in doubt.
 */
static int on_seek_body(void *arg, curl_off_t offset, int origin)
{
	struct vdb_req *rq = arg;

	if (origin == SEEK_SET && offset == 0 && rq->body_off == 0)
		return CURL_SEEKFUNC_OK;
	return CURL_SEEKFUNC_CANTSEEK;
}

static CURL *make_easy(struct vdb_req *rq)
{
	struct vdb *v = rq->v;
	CURL *e = curl_easy_init();
	struct buf url = BUF_INIT;

	if (!e)
		abort();
	buf_printf(&url, "%s%s", v->base_url, rq->path);
	curl_easy_setopt(e, CURLOPT_URL, url.data);
	buf_free(&url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, rq);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_reply_data);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, rq);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, rq->curl_err);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, attempt_timeout_ms(rq));
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, attempt_timeout_ms(rq));
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, v->o.tls_verify ? 1L : 0L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, v->o.tls_verify ? 2L : 0L);
	if (v->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, v->ca_file);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, rq->method);
	if (body_len(rq)) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len(rq));
		curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read_body);
		curl_easy_setopt(e, CURLOPT_READDATA, rq);
		curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek_body);
		curl_easy_setopt(e, CURLOPT_SEEKDATA, rq);
	} else if (strcmp(rq->method, "GET") != 0) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	}
	rq->headers = request_headers(v, rq->id, rq->flags);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, rq->headers);
	return e;
}

static void start_next(struct vdb *v);

/* The call's deadline came before this attempt could start: it never reaches the server. */
static bool past_deadline(struct vdb_req *rq)
{
	if (!rq->deadline_ms || clock_mono_ms() < rq->deadline_ms)
		return false;
	rq->cc = CURLE_OPERATION_TIMEDOUT;
	rq->http = 0;
	rq->cut_short = true;
	snprintf(rq->curl_err, sizeof(rq->curl_err), "not sent: the call's deadline passed first");
	rq->exhausted = true;
	log_warn(COMP, "%s %s %s: not sent, its deadline passed (%d attempt(s) made)", rq->tag, rq->method, rq->path,
		 rq->attempt);
	rq->v->stats.failures++;
	rq->finish(rq);
	return true;
}

static void start(struct vdb_req *rq)
{
	struct vdb *v = rq->v;

	if (past_deadline(rq))
		return;
	rq->attempt++;
	rq->body_off = 0;
	rq->http = 0;
	rq->cc = CURLE_OK;
	rq->curl_err[0] = '\0';
	rq->reply_too_big = false;
	buf_reset(&rq->reply);
	rq->started_us = clock_mono_us();
	rq->easy = make_easy(rq);
	TAILQ_INSERT_TAIL(&v->active, rq, link);
	v->stats.inflight++;
	v->stats.requests++;
	if (curl_multi_add_handle(v->multi, rq->easy) != CURLM_OK)
		abort(); /* only fails on misuse */
}

static void req_free(struct vdb_req *rq)
{
	if (rq->retry_ev)
		event_free(rq->retry_ev);
	if (rq->headers)
		curl_slist_free_all(rq->headers);
	buf_free(&rq->body);
	buf_free(&rq->reply);
	free(rq->path);
	free(rq);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg);

/* Queues a request; it starts when a slot is free. */
static void submit(struct vdb_req *rq)
{
	struct vdb *v = rq->v;

	if (v->freeing) {
		rq->cancelled = true;
		rq->finish(rq);
		return;
	}
	if (!rq->past_due && rq->deadline_ms && clock_mono_ms() >= rq->deadline_ms) {
		/*
		 * Its deadline went before it was asked for (a lease's statement that
		 * waited): it fails, but never inside the call that asked for it, whose
		 * caller may be freed by the callback (an outbox delete was).
		 */
		struct timeval now = {0, 0};

		rq->past_due = true;
		if (!rq->retry_ev)
			rq->retry_ev = evtimer_new(v->base, on_retry_timer, rq);
		TAILQ_INSERT_TAIL(&v->active, rq, link);
		evtimer_add(rq->retry_ev, &now);
		return;
	}
	TAILQ_INSERT_TAIL(&v->queued, rq, link);
	v->stats.queued++;
	start_next(v);
}

static void start_next(struct vdb *v)
{
	while (v->stats.inflight < v->o.max_inflight && !TAILQ_EMPTY(&v->queued)) {
		struct vdb_req *rq = TAILQ_FIRST(&v->queued);

		TAILQ_REMOVE(&v->queued, rq, link);
		v->stats.queued--;
		start(rq);
	}
}

static struct vdb_req *req_new(struct vdb *v, const char *method, req_finish_fn finish, void *ctx,
			       const char *fmt, ...) PRINTF_LIKE(5, 6);

static struct vdb_req *req_new(struct vdb *v, const char *method, req_finish_fn finish, void *ctx,
			       const char *fmt, ...)
{
	struct vdb_req *rq = xcalloc(1, sizeof(*rq));
	struct buf path = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&path, fmt, ap);
	va_end(ap);
	rq->v = v;
	rq->id = ++v->next_id;
	rq->method = method;
	rq->path = buf_steal(&path);
	rq->finish = finish;
	rq->ctx = ctx;
	snprintf(rq->tag, sizeof(rq->tag), "req=%llu", (unsigned long long)rq->id);
	return rq;
}

/* A call's deadline and trace go to each of its requests. */
static void req_call(struct vdb_req *rq, const struct vdb_call *call)
{
	if (!call)
		return;
	rq->deadline_ms = call->deadline_ms;
	if (call->trace && *call->trace)
		snprintf(rq->tag, sizeof(rq->tag), "req=%llu for=%.60s", (unsigned long long)rq->id, call->trace);
}

/*
 * Could the attempt just over have been applied by the server, though we do
 * not know it? Only writes matter. A 500, 502 or 504 may come after the work
 * was done (a proxy's time-out, a crash after the commit); a transport error
 * after the whole request went out (a time-out, a reset mid-answer) may too.
 * Before the request was fully sent, a refused connection, a 4xx, a 429 or a
 * 503: nothing happened.
 */
static bool attempt_ambiguous(const struct vdb_req *rq)
{
	long sent = 0;
	curl_off_t up = 0;

	if (strcmp(rq->method, "GET") == 0)
		return false;
	if (rq->cc == CURLE_OK)
		return rq->http == 500 || rq->http == 502 || rq->http == 504;
	if (rq->cc == CURLE_SEND_FAIL_REWIND) /* a first copy went out on a connection that then died */
		return true;
	curl_easy_getinfo(rq->easy, CURLINFO_REQUEST_SIZE, &sent);
	curl_easy_getinfo(rq->easy, CURLINFO_SIZE_UPLOAD_T, &up);
	return sent > 0 && ((size_t)up >= body_len(rq) || rq->body_off >= body_len(rq));
}

/* Counts an ambiguous attempt by its call and why it is ambiguous. */
static void count_ambiguous(struct vdb_req *rq, bool cancelled)
{
	enum vdb_ambiguous_call call = VDB_AMB_OTHER;
	enum vdb_ambiguous_reason why;

	if (strcmp(rq->method, "DELETE") == 0)
		call = VDB_AMB_DELETE;
	else if (strcmp(rq->method, "POST") == 0 && strstr(rq->path, "/vectors"))
		call = VDB_AMB_ADD;
	if (cancelled)
		why = VDB_AMB_CANCELLED;
	else if (rq->cc == CURLE_OK)
		why = VDB_AMB_5XX;
	else if (rq->cc == CURLE_OPERATION_TIMEDOUT)
		why = VDB_AMB_TIMEOUT;
	else
		why = VDB_AMB_RESET;
	rq->v->stats.ambiguous[call][why]++;
}

static bool transient_curl_error(CURLcode cc)
{
	switch (cc) {
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CIPHER:
	case CURLE_LOGIN_DENIED:
	case CURLE_WRITE_ERROR: /* our own limit on reply size */
		return false;
	default:
		return true;
	}
}

static bool retryable(const struct vdb_req *rq)
{
	if (rq->cc != CURLE_OK)
		return transient_curl_error(rq->cc);
	return rq->http == 429 || rq->http >= 500;
}

/* One line describing how the attempt ended, body included (truncated). */
static void describe_attempt(const struct vdb_req *rq, char *out, size_t outlen)
{
	struct buf b = BUF_INIT;
	size_t i, n;

	if (rq->reply_too_big) {
		buf_printf(&b, "reply larger than %zu bytes", rq->v->o.max_reply);
	} else if (rq->cc != CURLE_OK) {
		buf_printf(&b, "%s", rq->curl_err[0] ? rq->curl_err : curl_easy_strerror(rq->cc));
	} else {
		buf_printf(&b, "HTTP %ld", rq->http);
		if (rq->reply.len) {
			buf_puts(&b, ": ");
			n = rq->reply.len < LOGGED_BODY_MAX ? rq->reply.len : LOGGED_BODY_MAX;
			for (i = 0; i < n; i++) {
				char c = rq->reply.data[i];

				buf_putc(&b, c == '\n' || c == '\r' || c == '\t' ? ' ' : c);
			}
			if (rq->reply.len > n)
				buf_printf(&b, "... (%zu bytes)", rq->reply.len);
		}
	}
	snprintf(out, outlen, "%s", b.data);
	utf8_scrub(out); /* the body is the server's, cut at LOGGED_BODY_MAX: it goes into logs, answers, Postgres */
	buf_free(&b);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
	struct vdb_req *rq = arg;

	(void)fd, (void)what;
	TAILQ_REMOVE(&rq->v->active, rq, link);
	submit(rq);
}

/* Full jitter: anywhere between 0 and min(max, base * 2^(attempt-1)); at least Retry-After. */
static long backoff_ms(const struct vdb_req *rq, curl_off_t retry_after_s)
{
	const struct vdb_opts *o = &rq->v->o;
	long cap = o->backoff_ms;
	int i;

	for (i = 1; i < rq->attempt && cap < o->backoff_max_ms; i++)
		cap *= 2;
	if (cap > o->backoff_max_ms)
		cap = o->backoff_max_ms;
	cap = (long)clock_jitter_ms((uint32_t)cap);
	if (retry_after_s > 0 && retry_after_s * 1000 > cap)
		cap = retry_after_s * 1000 > o->backoff_max_ms ? o->backoff_max_ms : (long)retry_after_s * 1000;
	return cap;
}

/* An attempt is over: retry it, or hand it to its operation. */
static void attempt_done(struct vdb_req *rq, curl_off_t retry_after_s)
{
	struct vdb *v = rq->v;
	long ms = (long)((clock_mono_us() - rq->started_us) / 1000);
	char what[LOGGED_BODY_MAX + 160];
	bool ok = rq->cc == CURLE_OK && rq->http >= 200 && rq->http < 300;

	v->stats.by_class[rq->cc == CURLE_OK && rq->http >= 100 && rq->http < 600 ? rq->http / 100 : 0]++;
	histogram_observe(&v->stats.latency, (double)(clock_mono_us() - rq->started_us) / 1e6);
	if (ok || (rq->http == 404 && rq->flags & REQ_QUIET_404)) {
		log_debug(COMP, "%s %s %s: HTTP %ld in %ld ms", rq->tag, rq->method,
			  rq->path, rq->http, ms);
		rq->finish(rq);
		return;
	}
	describe_attempt(rq, what, sizeof(what));
	if (retryable(rq) && !(rq->flags & REQ_NO_RETRY) && rq->attempt < v->o.max_attempts && !v->freeing) {
		struct timeval tv;
		long delay = backoff_ms(rq, retry_after_s);

		log_warn(COMP, "%s %s %s: %s, after %ld ms (attempt %d of %d); retrying in %.1f s",
			 rq->tag, rq->method, rq->path, what, ms, rq->attempt, v->o.max_attempts,
			 (double)delay / 1000.0);
		v->stats.retries++;
		tv.tv_sec = delay / 1000;
		tv.tv_usec = (delay % 1000) * 1000;
		if (!rq->retry_ev)
			rq->retry_ev = evtimer_new(v->base, on_retry_timer, rq);
		TAILQ_INSERT_TAIL(&v->active, rq, link);
		evtimer_add(rq->retry_ev, &tv);
		return;
	}
	rq->exhausted = retryable(rq) && !(rq->flags & REQ_NO_RETRY);
	if (!(rq->flags & REQ_NO_RETRY))
		log_msg(rq->flags & REQ_QUIET_4XX && rq->cc == CURLE_OK && rq->http >= 400 && rq->http < 500 ? LL_DEBUG
														  : LL_WARN,
			COMP, "%s %s %s: %s, after %ld ms (attempt %d of %d)%s", rq->tag,
			 rq->method, rq->path, what, ms, rq->attempt, v->o.max_attempts,
			 rq->exhausted ? "; giving up" : "");
	v->stats.failures++;
	rq->finish(rq);
}

/* Collects the transfers curl has finished. */
static void reap(struct vdb *v)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(v->multi, &left)) != NULL) {
		struct vdb_req *rq = NULL;
		curl_off_t retry_after = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&rq);
		rq->cc = msg->data.result;
		curl_easy_getinfo(rq->easy, CURLINFO_RESPONSE_CODE, &rq->http);
		curl_easy_getinfo(rq->easy, CURLINFO_RETRY_AFTER, &retry_after);
		if (attempt_ambiguous(rq)) {
			rq->ambiguous = true;
			count_ambiguous(rq, false);
		}
		curl_multi_remove_handle(v->multi, rq->easy);
		curl_easy_cleanup(rq->easy);
		rq->easy = NULL;
		if (rq->headers) {
			curl_slist_free_all(rq->headers);
			rq->headers = NULL;
		}
		TAILQ_REMOVE(&v->active, rq, link);
		v->stats.inflight--;
		attempt_done(rq, retry_after);
	}
	start_next(v);
}

/* ---- libcurl multi on libevent ---------------------------------------- */

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
	struct vdb *v = arg;
	int running;
	int action = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);

	curl_multi_socket_action(v->multi, fd, action, &running);
	reap(v);
}

static int on_socket_change(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct vdb *v = userp;
	struct event *ev = socketp;
	short kind;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (ev)
			event_free(ev);
		return 0;
	}
	kind = (short)(EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0));
	if (ev) {
		event_del(ev);
		event_assign(ev, v->base, s, kind, on_socket_event, v);
	} else {
		ev = event_new(v->base, s, kind, on_socket_event, v);
		curl_multi_assign(v->multi, s, ev);
	}
	event_add(ev, NULL);
	return 0;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct vdb *v = arg;
	int running;

	(void)fd, (void)what;
	curl_multi_socket_action(v->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	reap(v);
}

static int on_timer_change(CURLM *multi, long ms, void *userp)
{
	struct vdb *v = userp;
	struct timeval tv;

	(void)multi;
	if (ms < 0) {
		evtimer_del(v->timer);
		return 0;
	}
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(v->timer, &tv);
	return 0;
}

/* ---- results -------------------------------------------------------------- */

static void result_init(struct vdb_result *r, const struct vdb_req *rq)
{
	memset(r, 0, sizeof(*r));
	if (rq) {
		r->http = rq->http;
		r->attempts = rq->attempt;
		r->req = rq->id;
		r->ambiguous = rq->ambiguous;
		r->cut_short = rq->cut_short || (rq->deadline_ms && clock_mono_ms() >= rq->deadline_ms);
	}
}

/* The status and message of a request that did not succeed. */
static void result_failure(struct vdb_result *r, const struct vdb_req *rq, const char *op)
{
	char what[LOGGED_BODY_MAX + 160];

	result_init(r, rq);
	if (rq->cancelled) {
		r->status = VDB_CANCELLED;
		snprintf(r->error, sizeof(r->error), "%s: cancelled (client shutting down)", op);
		return;
	}
	describe_attempt(rq, what, sizeof(what));
	if (rq->reply_too_big)
		r->status = VDB_BAD_REPLY;
	else if (rq->exhausted || retryable(rq))
		r->status = VDB_UNAVAILABLE;
	else
		r->status = rq->cc == CURLE_OK && rq->http == 404 ? VDB_NOT_FOUND : VDB_REJECTED;
	snprintf(r->error, sizeof(r->error), "%s %s %s: %s%s", op, rq->method, rq->path, what,
		 rq->exhausted ? " (after retries)" : "");
	utf8_scrub(r->error);
}

static bool req_ok(const struct vdb_req *rq)
{
	return !rq->cancelled && rq->cc == CURLE_OK && rq->http >= 200 && rq->http < 300;
}

/* Parses a reply body; an empty body parses as null. */
static json_t *parse_reply(const char *body, size_t len, char *why, size_t whylen)
{
	json_error_t jerr;
	json_t *j;

	if (len == 0)
		return json_null();
	j = json_loadb(body, len, JSON_DECODE_ANY, &jerr);
	if (!j)
		snprintf(why, whylen, "reply is not JSON (%s at byte %d)", jerr.text, jerr.position);
	return j;
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct deferred *d = arg, **pp;
	struct vdb_result r;

	(void)fd, (void)what;
	for (pp = &d->v->deferred; *pp != d; pp = &(*pp)->next)
		;
	*pp = d->next;
	memset(&r, 0, sizeof(r));
	r.status = d->status;
	snprintf(r.error, sizeof(r.error), "%s", d->error);
	event_free(d->ev);
	d->done(&r, d->arg);
	free(d);
}

/* Delivers a result without a request behind it on the next loop turn. */
static void defer(struct vdb *v, vdb_done_fn done, void *arg, enum vdb_status st, const char *error)
{
	struct deferred *d = xcalloc(1, sizeof(*d));
	struct timeval now = {0, 0};

	d->v = v;
	d->done = done;
	d->arg = arg;
	d->status = v->freeing ? VDB_CANCELLED : st;
	snprintf(d->error, sizeof(d->error), "%s", error ? error : "");
	d->next = v->deferred;
	v->deferred = d;
	d->ev = evtimer_new(v->base, on_deferred, d);
	evtimer_add(d->ev, &now);
}

/* ---- tenant and blobs ------------------------------------------------------ */

static struct known *known_blob(struct vdb *v, const char *blob)
{
	struct known *k;

	for (k = v->blobs; k; k = k->next)
		if (strcmp(k->blob, blob) == 0)
			return k;
	k = xcalloc(1, sizeof(*k));
	k->v = v;
	k->blob = xstrdup(blob);
	k->next = v->blobs;
	v->blobs = k;
	return k;
}

static void known_settle(struct known *k, enum vdb_status st, long http, const char *error)
{
	struct waiter *w = k->waiters, *next;
	struct vdb_result r;

	k->state = st == VDB_OK ? K_READY : K_UNKNOWN;
	k->status = st;
	snprintf(k->error, sizeof(k->error), "%s", error ? error : "");
	k->waiters = NULL;
	memset(&r, 0, sizeof(r));
	r.status = st;
	r.http = http;
	snprintf(r.error, sizeof(r.error), "%s", k->error);
	for (; w; w = next) {
		next = w->next;
		w->done(&r, w->arg);
		free(w);
	}
}

/* Adds a waiter; true when the caller must start the ensure. */
static bool known_wait(struct vdb *v, struct known *k, vdb_done_fn done, void *arg)
{
	struct waiter *w, **tail;

	if (k->state == K_READY) {
		defer(v, done, arg, VDB_OK, NULL);
		return false;
	}
	w = xcalloc(1, sizeof(*w));
	w->done = done;
	w->arg = arg;
	for (tail = &k->waiters; *tail; tail = &(*tail)->next)
		;
	*tail = w;
	if (k->state == K_ENSURING)
		return false;
	k->state = K_ENSURING;
	k->created = false; /* only this ensure's create counts: a blob forgotten and found again predates it */
	return true;
}

/* A create answered non-2xx: does the object exist anyway? Look it up. */
struct ensure_ctx {
	struct known *k;
	long create_http;       /* how the server answered the create */
	char create_error[512]; /* what it said, for when the lookup finds nothing */
};

static void on_lookup_done(struct vdb_req *rq)
{
	struct ensure_ctx *c = rq->ctx;
	struct vdb_result r;
	const char *name = c->k->blob ? c->k->blob : rq->v->tenant;
	enum vdb_status st;
	char why[400];

	if (!req_ok(rq)) {
		result_failure(&r, rq, "looking it up");
		known_settle(c->k, r.status == VDB_NOT_FOUND ? VDB_REJECTED : r.status, c->create_http, c->create_error);
		goto out;
	}
	result_init(&r, rq);
	st = vdb_check_reply(c->k->blob ? VDB_REPLY_BLOBS : VDB_REPLY_TENANTS, rq->reply.data, rq->reply.len, 0, name,
			     rq->v->o.dimension, NULL, why, sizeof(why));
	if (st == VDB_BAD_REPLY) {
		snprintf(r.error, sizeof(r.error), "listing %s: %s", rq->path, why);
		utf8_scrub(r.error);
		known_settle(c->k, VDB_BAD_REPLY, rq->http, r.error);
	} else if (st == VDB_NOT_FOUND) {
		known_settle(c->k, VDB_REJECTED, c->create_http, c->create_error);
	} else if (st == VDB_REJECTED) {
		known_settle(c->k, VDB_REJECTED, rq->http, why);
	} else {
		log_info(COMP, "%s %s already exists (the create was answered HTTP %ld)", c->k->blob ? "blob" : "tenant",
			 name, c->create_http);
		known_settle(c->k, VDB_OK, rq->http, NULL);
	}
out:
	free(c);
	req_free(rq);
}

static void on_create_done(struct vdb_req *rq)
{
	struct ensure_ctx *c = rq->ctx;
	struct vdb *v = rq->v;
	struct vdb_result r;
	struct vdb_req *look;

	if (req_ok(rq)) {
		log_info(COMP, "created %s %s", c->k->blob ? "blob" : "tenant", c->k->blob ? c->k->blob : v->tenant);
		c->k->created = true;
		known_settle(c->k, VDB_OK, rq->http, NULL);
		free(c);
		req_free(rq);
		return;
	}
	result_failure(&r, rq, c->k->blob ? "creating the blob" : "creating the tenant");
	if (r.status != VDB_REJECTED && r.status != VDB_NOT_FOUND) {
		known_settle(c->k, r.status, r.http, r.error);
		free(c);
		req_free(rq);
		return;
	}
	/* "Already exists" comes as 400, 409 or 422 depending on the server: look instead. */
	c->create_http = rq->http;
	snprintf(c->create_error, sizeof(c->create_error), "%s", r.error);
	if (c->k->blob)
		look = req_new(v, "GET", on_lookup_done, c, "/tenants/%s/blobs", v->tenant);
	else
		look = req_new(v, "GET", on_lookup_done, c, "/tenants");
	req_free(rq);
	submit(look);
}

static void start_tenant_create(struct vdb *v)
{
	struct ensure_ctx *c = xcalloc(1, sizeof(*c));
	struct vdb_req *rq;

	c->k = &v->tenant_state;
	rq = req_new(v, "POST", on_create_done, c, "/tenants");
	rq->flags |= REQ_QUIET_4XX;
	buf_puts(&rq->body, "{\"tenant_id\":");
	buf_json_str(&rq->body, v->tenant, strlen(v->tenant));
	buf_putc(&rq->body, '}');
	submit(rq);
}

void vdb_ensure_tenant(struct vdb *v, vdb_done_fn done, void *arg)
{
	if (known_wait(v, &v->tenant_state, done, arg))
		start_tenant_create(v);
}

static void on_tenant_for_blob(const struct vdb_result *r, void *arg)
{
	struct known *k = arg;
	struct ensure_ctx *c;
	struct vdb_req *rq;
	struct vdb *v;

	if (r->status != VDB_OK) {
		known_settle(k, r->status, r->http, r->error);
		return;
	}
	v = k->v;
	c = xcalloc(1, sizeof(*c));
	c->k = k;
	rq = req_new(v, "POST", on_create_done, c, "/tenants/%s/blobs", v->tenant);
	rq->flags |= REQ_QUIET_4XX;
	buf_puts(&rq->body, "{\"blob_id\":");
	buf_json_str(&rq->body, k->blob, strlen(k->blob));
	buf_printf(&rq->body, ",\"blob_type\":\"dense\",\"dimension\":%d}", v->o.dimension);
	submit(rq);
}

void vdb_ensure_blob(struct vdb *v, const char *blob, vdb_done_fn done, void *arg)
{
	struct known *k = known_blob(v, blob);

	if (known_wait(v, k, done, arg))
		vdb_ensure_tenant(v, on_tenant_for_blob, k);
}

void vdb_forget_blobs(struct vdb *v)
{
	struct known *k;

	if (v->tenant_state.state == K_READY)
		v->tenant_state.state = K_UNKNOWN;
	for (k = v->blobs; k; k = k->next)
		if (k->state == K_READY)
			k->state = K_UNKNOWN;
}

/* ---- adding vectors -----------------------------------------------------
 *
 * An add is three phases: ensure the blob; in delete-then-add mode delete the
 * vectors that may exist (404 is fine); post the batches. Each phase waits for
 * all its requests; the callback says per vector what was written.
 *
 * The batch bodies are built once, when the add is asked for, straight from the
 * caller's texts into buffers of the exact size (a 3072-d vector is ~40 KB of
 * text: copies cost more than anything else the client does). Requests point
 * at their batch's body. A vector whose delete failed is left out by building
 * its batch again from the old body, where each vector's texts are recorded.
 */

struct add_op;

struct add_batch {
	struct add_op *op;
	size_t first, count;   /* the batch's items: op->items[first .. first + count) */
	struct buf body;
	bool blob_recreated;   /* after a 404 the blob was created again, once */
};

struct add_item {
	int64_t id;
	bool may_exist;
	bool postable;         /* not deleted, or deleted without error */
	size_t emb_off, emb_len;   /* its texts in its batch's body */
	size_t attr_off, attr_len;
};

struct add_op {
	struct vdb *v;
	char *blob;
	struct add_item *items;
	bool *ok;
	bool *maybe;           /* per item: a request carrying it may have been applied unbeknown */
	struct vdb_call call;
	char trace[64];
	size_t n;
	struct add_batch *batches;
	size_t nbatches;
	size_t pending;        /* requests of the current phase still running */
	struct vdb_result fail;/* the first failure: it explains the others */
	long http;             /* of the last post, for a result without failure */
	int attempts;          /* the most any post needed */
	uint64_t req;
	vdb_done_fn done;
	void *arg;
};

static void add_note_failure(struct add_op *op, const struct vdb_result *r)
{
	if (op->fail.status == VDB_OK)
		op->fail = *r;
}

static void add_finish(struct add_op *op)
{
	struct vdb_result r = op->fail;
	size_t i, written = 0;

	for (i = 0; i < op->n; i++)
		written += op->ok[i];
	op->v->stats.vectors_added += written;
	if (written == op->n) {
		r.status = VDB_OK;
		r.http = op->http;
		r.attempts = op->attempts;
		r.req = op->req;
	} else if (r.status == VDB_OK) {
		r.status = VDB_UNAVAILABLE;
	}
	r.reply = NULL;
	r.ok = op->ok;
	r.maybe = op->maybe;
	r.ambiguous = false;
	for (i = 0; i < op->n; i++)
		r.ambiguous = r.ambiguous || op->maybe[i];
	r.n = op->n;
	op->done(&r, op->arg);
	for (i = 0; i < op->nbatches; i++)
		buf_free(&op->batches[i].body);
	free(op->batches);
	free(op->items);
	free(op->ok);
	free(op->maybe);
	free(op->blob);
	free(op);
}

static void post_batch(struct add_batch *b);

static void batch_done(struct add_op *op)
{
	if (--op->pending == 0)
		add_finish(op);
}

static void on_blob_recreated(const struct vdb_result *r, void *arg)
{
	struct add_batch *b = arg;

	if (r->status != VDB_OK) {
		add_note_failure(b->op, r);
		batch_done(b->op);
		return;
	}
	post_batch(b);
}

static void on_post_done(struct vdb_req *rq)
{
	struct add_batch *b = rq->ctx;
	struct add_op *op = b->op;
	struct vdb_result r;
	size_t i;

	op->http = rq->http;
	op->req = rq->id;
	if (rq->attempt > op->attempts)
		op->attempts = rq->attempt;
	for (i = b->first; i < b->first + b->count && rq->ambiguous; i++)
		op->maybe[i] = op->items[i].postable;
	if (req_ok(rq)) {
		for (i = b->first; i < b->first + b->count; i++)
			op->ok[i] = op->items[i].postable;
	} else if (rq->http == 404 && !rq->cancelled && !b->blob_recreated) {
		/* The server lost the blob (or the tenant): create it again, once. */
		log_warn(COMP, "%s: blob %s is gone from the server; creating it again", rq->tag, op->blob);
		b->blob_recreated = true;
		vdb_forget_blobs(op->v);
		req_free(rq);
		vdb_ensure_blob(op->v, op->blob, on_blob_recreated, b);
		return;
	} else {
		result_failure(&r, rq, "adding vectors");
		add_note_failure(op, &r);
	}
	req_free(rq);
	batch_done(op);
}

static void post_batch(struct add_batch *b)
{
	struct add_op *op = b->op;
	struct vdb_req *rq = req_new(op->v, "POST", on_post_done, b, "/tenants/%s/blobs/%s/vectors", op->v->tenant,
				     op->blob);

	req_call(rq, &op->call);
	rq->ext_body = b->body.data;
	rq->ext_len = b->body.len;
	submit(rq);
}

/*
 * Writes a batch body for items [first, first + count) whose texts come from
 * `texts(item, &emb, &emb_len, &attr, &attr_len)`, skipping items not postable,
 * and records where each one's texts landed.
 */
typedef void (*item_texts_fn)(const void *src, size_t i, const char **emb, size_t *elen, const char **attr,
			      size_t *alen);

static void write_body(struct add_op *op, struct add_batch *b, item_texts_fn texts, const void *src)
{
	size_t i, size = 64, k = 0;
	struct buf *out = &b->body;

	for (i = b->first; i < b->first + b->count; i++) {
		const char *e, *a;
		size_t el, al;

		texts(src, i, &e, &el, &a, &al);
		size += el + (al ? al : 2) + 24;
	}
	buf_reset(out);
	buf_reserve(out, size);
	buf_puts(out, "{\"vectors\":[");
	for (i = b->first; i < b->first + b->count; i++) {
		struct add_item *it = &op->items[i];
		const char *e, *a;
		size_t el, al;

		if (!it->postable)
			continue;
		texts(src, i, &e, &el, &a, &al);
		if (k++)
			buf_putc(out, ',');
		it->emb_off = out->len;
		it->emb_len = el;
		buf_append(out, e, el);
	}
	buf_puts(out, "],\"ids\":[");
	for (i = b->first, k = 0; i < b->first + b->count; i++)
		if (op->items[i].postable)
			buf_printf(out, "%s%lld", k++ ? "," : "", (long long)op->items[i].id);
	buf_puts(out, "],\"attributes\":[");
	for (i = b->first, k = 0; i < b->first + b->count; i++) {
		struct add_item *it = &op->items[i];
		const char *e, *a;
		size_t el, al;

		if (!it->postable)
			continue;
		texts(src, i, &e, &el, &a, &al);
		if (k++)
			buf_putc(out, ',');
		it->attr_off = out->len;
		it->attr_len = al ? al : 2;
		if (al)
			buf_append(out, a, al);
		else
			buf_puts(out, "{}");
	}
	buf_puts(out, "]}");
}

static void texts_from_caller(const void *src, size_t i, const char **emb, size_t *elen, const char **attr,
			      size_t *alen)
{
	const struct vdb_vector *v = &((const struct vdb_vector *)src)[i];

	*emb = v->embedding, *elen = v->embedding_len;
	*attr = v->attributes, *alen = v->attributes_len;
}

/* Texts recorded in a batch's previous body (src is that body). */
struct old_body {
	const struct add_op *op;
	const char *data;
};

static void texts_from_old_body(const void *src, size_t i, const char **emb, size_t *elen, const char **attr,
				size_t *alen)
{
	const struct old_body *ob = src;
	const struct add_item *it = &ob->op->items[i];

	*emb = ob->data + it->emb_off, *elen = it->emb_len;
	*attr = ob->data + it->attr_off, *alen = it->attr_len;
}

/* Groups the vectors into batches bounded by bytes and count, and writes their bodies. */
static void build_batches(struct add_op *op, const struct vdb_vector *vecs)
{
	const struct vdb_opts *o = &op->v->o;
	size_t cap = 0, i, bytes = 0;
	struct add_batch *b = NULL;

	for (i = 0; i < op->n; i++) {
		size_t need = vecs[i].embedding_len + vecs[i].attributes_len + 32;

		if (b && (b->count == o->batch_max || bytes + need > o->batch_bytes))
			b = NULL;
		if (!b) {
			op->batches = xgrow(op->batches, &cap, op->nbatches + 1, sizeof(*op->batches));
			b = &op->batches[op->nbatches++];
			memset(b, 0, sizeof(*b));
			b->op = op;
			b->first = i;
			bytes = 0;
		}
		b->count++;
		bytes += need;
	}
	for (i = 0; i < op->nbatches; i++)
		write_body(op, &op->batches[i], texts_from_caller, vecs);
}

/* After the deletes: batches holding a vector that must not be posted are written again without it. */
static void post_all(struct add_op *op)
{
	size_t i, j, live;

	op->pending = 1; /* held while the posts are submitted */
	for (i = 0; i < op->nbatches; i++) {
		struct add_batch *b = &op->batches[i];

		for (j = b->first, live = 0; j < b->first + b->count; j++)
			live += op->items[j].postable;
		if (live == 0)
			continue;
		if (live < b->count) {
			struct old_body ob = {op, NULL};
			struct buf old = b->body;

			ob.data = old.data;
			memset(&b->body, 0, sizeof(b->body));
			write_body(op, b, texts_from_old_body, &ob);
			buf_free(&old);
		}
		op->pending++;
		post_batch(b);
	}
	batch_done(op);
}

struct add_delete {
	struct add_op *op;
	size_t item;
};

static void on_delete_for_add(struct vdb_req *rq)
{
	struct add_delete *d = rq->ctx;
	struct add_op *op = d->op;
	struct vdb_result r;

	op->maybe[d->item] = op->maybe[d->item] || rq->ambiguous;
	if (!req_ok(rq) && !(rq->http == 404 && !rq->cancelled)) {
		result_failure(&r, rq, "deleting before re-adding");
		add_note_failure(op, &r);
		op->items[d->item].postable = false;
	}
	free(d);
	req_free(rq);
	if (--op->pending == 0)
		post_all(op);
}

static void on_blob_for_add(const struct vdb_result *r, void *arg)
{
	struct add_op *op = arg;
	size_t i;

	if (r->status != VDB_OK) {
		add_note_failure(op, r);
		add_finish(op);
		return;
	}
	if (op->v->o.write_mode == VDB_ADD) {
		post_all(op);
		return;
	}
	op->pending = 1; /* held while the deletes are submitted */
	for (i = 0; i < op->n; i++) {
		struct add_delete *d;
		struct vdb_req *rq;

		if (!op->items[i].may_exist)
			continue;
		d = xcalloc(1, sizeof(*d));
		d->op = op;
		d->item = i;
		rq = req_new(op->v, "DELETE", on_delete_for_add, d, "/tenants/%s/blobs/%s/vectors/%lld", op->v->tenant,
			     op->blob, (long long)op->items[i].id);
		req_call(rq, &op->call);
		rq->flags |= REQ_QUIET_404;
		op->pending++;
		submit(rq);
	}
	if (--op->pending == 0)
		post_all(op);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static void on_add_refused(const struct vdb_result *r, void *arg)
{
	(void)r;
	add_finish(arg); /* op->fail already says why; nothing was sent */
}

/* Two vectors with one id in one add would overwrite each other. */
static bool find_duplicate_id(const struct vdb_vector *vecs, size_t n, int64_t *dup)
{
	int64_t *sorted = xmalloc((n ? n : 1) * sizeof(*sorted));
	size_t i;
	bool found = false;

	for (i = 0; i < n; i++)
		sorted[i] = vecs[i].id;
	qsort(sorted, n, sizeof(*sorted), cmp_i64);
	for (i = 1; i < n && !found; i++) {
		if (sorted[i] == sorted[i - 1]) {
			*dup = sorted[i];
			found = true;
		}
	}
	free(sorted);
	return found;
}

void vdb_add(struct vdb *v, const char *blob, const struct vdb_vector *vecs, size_t n, vdb_done_fn done, void *arg)
{
	vdb_add_call(v, NULL, blob, vecs, n, done, arg);
}

void vdb_add_call(struct vdb *v, const struct vdb_call *call, const char *blob, const struct vdb_vector *vecs,
		  size_t n, vdb_done_fn done, void *arg)
{
	struct add_op *op = xcalloc(1, sizeof(*op));
	size_t i;
	int64_t dup;

	op->v = v;
	op->blob = xstrdup(blob);
	op->n = n;
	op->done = done;
	op->arg = arg;
	if (call) {
		op->call = *call;
		snprintf(op->trace, sizeof(op->trace), "%s", call->trace ? call->trace : "");
		op->call.trace = op->trace;
	}
	op->items = xcalloc(n ? n : 1, sizeof(*op->items));
	op->ok = xcalloc(n ? n : 1, sizeof(bool));
	op->maybe = xcalloc(n ? n : 1, sizeof(bool));
	if (find_duplicate_id(vecs, n, &dup)) {
		op->fail.status = VDB_REJECTED;
		snprintf(op->fail.error, sizeof(op->fail.error),
			 "adding vectors: id %lld appears twice in one add; the second would overwrite the first",
			 (long long)dup);
		defer(v, on_add_refused, op, VDB_REJECTED, NULL);
		return;
	}
	for (i = 0; i < n; i++) {
		op->items[i].id = vecs[i].id;
		op->items[i].may_exist = vecs[i].may_exist;
		op->items[i].postable = true;
	}
	build_batches(op, vecs);
	vdb_ensure_blob(v, blob, on_blob_for_add, op);
}

/* ---- single requests ------------------------------------------------------- */

/* A request that ends an operation directly: its callback and what to check. */
struct simple_op {
	vdb_done_fn done;
	void *arg;
	const char *what;  /* for messages */
	enum { REPLY_IGNORED, REPLY_CHECKED, REPLY_IF_JSON } reply;
	enum vdb_reply_kind kind; /* REPLY_CHECKED: how (vdb_check_reply) */
	int64_t id;
	bool missing_ok;   /* 404 counts as success (delete) */
};

/* The body as JSON when it is JSON, else NULL: for callers that only look. */
static json_t *reply_if_json(const struct vdb_req *rq)
{
	json_error_t jerr;

	return rq->reply.len ? json_loadb(rq->reply.data, rq->reply.len, JSON_DECODE_ANY, &jerr) : NULL;
}

/*
 * A GET reply, {"id", "attributes"?, "vector"?}, read the same way for
 * vdb_get and vdb_get_attributes, so that both judge a body alike (found by
 * fuzz_vdb_reply: they disagreed on "vector": null, on vectors of strings, on
 * members that jansson refuses). The vector (3072 numbers) is checked in place:
 * null, or an array of numbers finite as float32; the rest goes to jansson with
 * the vector replaced by null. `light` (a reconcile reads one such reply per
 * ability) never turns the vector into a DOM: the reply is {"id",
 * "attributes", "vector_length" (when the server sent the vector)}. Otherwise
 * the vector comes back parsed, its numbers as reals.
 */
static json_t *parse_get(const char *body, size_t len, bool light, char *whyout, size_t whylen)
{
	const char *p = body, *end = p + len, *after;
	struct jspan obj, id = {NULL, 0}, attrs = {NULL, 0}, vec = {NULL, 0};
	struct js_error jerr;
	json_error_t perr;
	struct buf rest = BUF_INIT;
	json_t *dom = NULL, *out = NULL, *val;
	size_t count = 0;
	bool dup = false, has_vector;
	const char *why = NULL;

	p = js_skip_ws(p, end);
	after = p < end && *p == '{' ? js_skip_value(p, end, &jerr) : NULL;
	if (!after || js_skip_ws(after, end) != end) {
		why = "not a JSON object";
		goto fail;
	}
	obj = (struct jspan){p, (size_t)(after - p)};
	if ((js_member(obj, "id", &id, &dup) && dup) || (js_member(obj, "attributes", &attrs, &dup) && dup) ||
	    (js_member(obj, "vector", &vec, &dup) && dup)) {
		why = "a member appears twice";
		goto fail;
	}
	has_vector = vec.p && !(vec.len == 4 && memcmp(vec.p, "null", 4) == 0);
	if (has_vector && !js_number_array(vec, &count, &jerr)) {
		why = "\"vector\" is not an array of numbers";
		goto fail;
	}
	if (vec.p) {
		buf_append(&rest, body, (size_t)(vec.p - body));
		buf_puts(&rest, "null");
		buf_append(&rest, vec.p + vec.len, (size_t)(end - vec.p - vec.len));
	} else {
		buf_append(&rest, body, len);
	}
	dom = json_loadb(rest.data, rest.len, 0, &perr);
	if (!dom) {
		snprintf(whyout, whylen, "reply is not JSON (%s)", perr.text);
		buf_free(&rest);
		return NULL;
	}
	/* A member name written with escapes ("ve\u0063tor") is the same member to jansson. */
	val = json_object_get(dom, "vector");
	if (vec.p ? !json_is_null(val) : val != NULL) {
		why = "\"vector\" is written with escapes";
		goto fail;
	}
	if (light) {
		out = json_object();
		if ((val = json_object_get(dom, "id")))
			json_object_set(out, "id", val);
		if ((val = json_object_get(dom, "attributes")))
			json_object_set(out, "attributes", val);
		if (has_vector)
			json_object_set_new(out, "vector_length", json_integer((json_int_t)count));
	} else {
		out = json_incref(dom);
		if (has_vector) {
			if (!(val = json_loadb(vec.p, vec.len, JSON_DECODE_INT_AS_REAL, &perr))) {
				why = "\"vector\" is not an array of numbers";
				goto fail;
			}
			json_object_set_new(out, "vector", val);
		}
	}
	json_decref(dom);
	buf_free(&rest);
	return out;
fail:
	json_decref(out);
	json_decref(dom);
	buf_free(&rest);
	snprintf(whyout, whylen, "%s", why);
	return NULL;
}

static void on_simple_done(struct vdb_req *rq)
{
	struct simple_op *op = rq->ctx;
	struct vdb_result r;
	char why[400];
	json_t *reply = NULL;

	if (req_ok(rq)) {
		result_init(&r, rq);
		r.status = VDB_OK;
		if (op->reply == REPLY_CHECKED) {
			r.status = vdb_check_reply(op->kind, rq->reply.data, rq->reply.len, op->id, NULL, 0, &reply, why,
						   sizeof(why));
			if (r.status != VDB_OK) {
				snprintf(r.error, sizeof(r.error), "%s %s: %s", op->what, rq->path, why);
				utf8_scrub(r.error);
			}
		} else if (op->reply == REPLY_IF_JSON) {
			reply = reply_if_json(rq);
		}
	} else if (op->missing_ok && !rq->cancelled && rq->cc == CURLE_OK && rq->http == 404) {
		result_init(&r, rq);
		r.status = VDB_OK;
	} else {
		result_failure(&r, rq, op->what);
		if (op->reply == REPLY_IF_JSON && !rq->cancelled)
			reply = reply_if_json(rq);
	}
	r.reply = reply;
	op->done(&r, op->arg);
	json_decref(reply);
	free(op);
	req_free(rq);
}

static struct vdb_req *simple(struct vdb *v, const char *method, const char *what, vdb_done_fn done, void *arg,
			      struct simple_op **opp)
{
	struct simple_op *op = xcalloc(1, sizeof(*op));
	struct vdb_req *rq = req_new(v, method, on_simple_done, op, "%s", "");

	op->done = done;
	op->arg = arg;
	op->what = what;
	*opp = op;
	return rq;
}

static void set_path(struct vdb_req *rq, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void set_path(struct vdb_req *rq, const char *fmt, ...)
{
	struct buf p = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&p, fmt, ap);
	va_end(ap);
	free(rq->path);
	rq->path = buf_steal(&p);
}

static bool check_get(json_t *reply, int64_t id, char *why, size_t whylen)
{
	json_t *rid = json_object_get(reply, "id");
	json_t *attrs = json_object_get(reply, "attributes");
	json_t *vec = json_object_get(reply, "vector");

	if (!json_is_object(reply))
		snprintf(why, whylen, "not a JSON object");
	else if (rid && (!json_is_integer(rid) || json_integer_value(rid) != id))
		snprintf(why, whylen, "\"id\" is not %lld", (long long)id);
	else if (attrs && !json_is_object(attrs) && !json_is_null(attrs))
		snprintf(why, whylen, "\"attributes\" is not an object");
	else if (vec && !json_is_array(vec) && !json_is_null(vec))
		snprintf(why, whylen, "\"vector\" is not an array");
	else
		return true;
	return false;
}

static bool check_query(json_t *reply, int64_t unused, char *why, size_t whylen)
{
	json_t *ids = json_object_get(reply, "ids");
	json_t *dist = json_object_get(reply, "distances");
	json_t *attrs = json_object_get(reply, "attributes");
	json_t *x;
	size_t i;

	(void)unused;
	if (!json_is_object(reply) || !json_is_array(ids) || !json_is_array(dist)) {
		snprintf(why, whylen, "expected an object with arrays \"ids\" and \"distances\"");
		return false;
	}
	if (json_array_size(ids) != json_array_size(dist) ||
	    (attrs && !json_is_null(attrs) && (!json_is_array(attrs) || json_array_size(attrs) != json_array_size(ids)))) {
		snprintf(why, whylen, "\"ids\" has %zu entries, \"distances\" %zu, \"attributes\" %zu", json_array_size(ids),
			 json_array_size(dist), json_array_size(attrs));
		return false;
	}
	json_array_foreach(ids, i, x) {
		if (!json_is_integer(x) || json_integer_value(x) < 0) {
			snprintf(why, whylen, "ids[%zu] is not a non-negative integer", i);
			return false;
		}
		if (!json_is_number(json_array_get(dist, i))) {
			snprintf(why, whylen, "distances[%zu] is not a number", i);
			return false;
		}
	}
	return true;
}

/* Does the list at reply[list_key] hold an object whose id_key is `name`? */
static json_t *find_listed(json_t *reply, const char *list_key, const char *id_key, const char *name)
{
	json_t *list = json_is_array(reply) ? reply : json_object_get(reply, list_key);
	json_t *item;
	size_t i;

	json_array_foreach(list, i, item) {
		json_t *id = json_is_string(item) ? item : json_object_get(item, id_key);

		if (json_is_string(id) && strcmp(json_string_value(id), name) == 0)
			return item;
	}
	return NULL;
}

enum vdb_status vdb_check_reply(enum vdb_reply_kind kind, const char *body, size_t len, int64_t id,
				const char *name, int dimension, json_t **out, char *why, size_t whylen)
{
	enum vdb_status st = VDB_OK;
	json_t *reply, *item;
	char detail[256];

	if (out)
		*out = NULL;
	if (whylen)
		why[0] = '\0';
	reply = kind == VDB_REPLY_GET || kind == VDB_REPLY_GET_LIGHT
			? parse_get(body, len, kind == VDB_REPLY_GET_LIGHT, why, whylen)
			: parse_reply(body, len, why, whylen);
	if (!reply) {
		st = VDB_BAD_REPLY;
		goto done;
	}
	switch (kind) {
	case VDB_REPLY_GET:
	case VDB_REPLY_GET_LIGHT:
	case VDB_REPLY_QUERY:
		if (!(kind == VDB_REPLY_QUERY ? check_query : check_get)(reply, id, detail, sizeof(detail))) {
			snprintf(why, whylen, "unexpected reply: %s", detail);
			st = VDB_BAD_REPLY;
		}
		break;
	case VDB_REPLY_TENANTS:
	case VDB_REPLY_BLOBS:
		item = kind == VDB_REPLY_BLOBS ? find_listed(reply, "blobs", "blob_id", name)
					       : find_listed(reply, "tenants", "tenant_id", name);
		if (!item) {
			snprintf(why, whylen, "%s is not listed", name);
			st = VDB_NOT_FOUND;
		} else if (kind == VDB_REPLY_BLOBS && json_is_integer(json_object_get(item, "dimension")) &&
			   json_integer_value(json_object_get(item, "dimension")) != dimension) {
			snprintf(why, whylen, "blob %s exists with dimension %lld, but EMBEDDING_DIM is %d", name,
				 (long long)json_integer_value(json_object_get(item, "dimension")), dimension);
			st = VDB_REJECTED;
		}
		break;
	}
done:
	/* jansson quotes the text near an error, which may be cut mid-character: why goes into logs, answers, Postgres. */
	if (whylen)
		utf8_scrub(why);
	if (out)
		*out = reply; /* also when a check failed: callbacks may log what came */
	else
		json_decref(reply);
	return st;
}

static void get_vector(struct vdb *v, const struct vdb_call *call, const char *blob, int64_t id,
		       enum vdb_reply_kind kind, vdb_done_fn done, void *arg)
{
	struct simple_op *op;
	struct vdb_req *rq = simple(v, "GET", "getting a vector", done, arg, &op);

	req_call(rq, call);
	set_path(rq, "/tenants/%s/blobs/%s/vectors/%lld", v->tenant, blob, (long long)id);
	op->reply = REPLY_CHECKED;
	op->kind = kind;
	op->id = id;
	rq->flags |= REQ_QUIET_404;
	submit(rq);
}

void vdb_get(struct vdb *v, const char *blob, int64_t id, vdb_done_fn done, void *arg)
{
	get_vector(v, NULL, blob, id, VDB_REPLY_GET, done, arg);
}

void vdb_get_attributes(struct vdb *v, const char *blob, int64_t id, vdb_done_fn done, void *arg)
{
	get_vector(v, NULL, blob, id, VDB_REPLY_GET_LIGHT, done, arg);
}

void vdb_get_attributes_call(struct vdb *v, const struct vdb_call *call, const char *blob, int64_t id,
			     vdb_done_fn done, void *arg)
{
	get_vector(v, call, blob, id, VDB_REPLY_GET_LIGHT, done, arg);
}

bool vdb_knows_blob(struct vdb *v, const char *blob)
{
	struct known *k;

	for (k = v->blobs; k; k = k->next)
		if (strcmp(k->blob, blob) == 0)
			return k->state == K_READY;
	return false;
}

bool vdb_created_blob(struct vdb *v, const char *blob)
{
	struct known *k;

	for (k = v->blobs; k; k = k->next)
		if (strcmp(k->blob, blob) == 0)
			return k->state == K_READY && k->created;
	return false;
}

void vdb_delete(struct vdb *v, const char *blob, int64_t id, vdb_done_fn done, void *arg)
{
	vdb_delete_call(v, NULL, blob, id, done, arg);
}

void vdb_delete_call(struct vdb *v, const struct vdb_call *call, const char *blob, int64_t id, vdb_done_fn done,
		     void *arg)
{
	struct simple_op *op;
	struct vdb_req *rq = simple(v, "DELETE", "deleting a vector", done, arg, &op);

	req_call(rq, call);
	set_path(rq, "/tenants/%s/blobs/%s/vectors/%lld", v->tenant, blob, (long long)id);
	op->missing_ok = true;
	rq->flags |= REQ_QUIET_404;
	submit(rq);
}

void vdb_put_attributes(struct vdb *v, const char *blob, int64_t id, const char *attrs, size_t len,
			vdb_done_fn done, void *arg)
{
	struct simple_op *op;
	struct vdb_req *rq = simple(v, "PUT", "updating attributes", done, arg, &op);

	set_path(rq, "/tenants/%s/blobs/%s/vectors/%lld/attributes", v->tenant, blob, (long long)id);
	buf_puts(&rq->body, "{\"attributes\":");
	buf_append(&rq->body, attrs, len);
	buf_putc(&rq->body, '}');
	submit(rq);
}

void vdb_query(struct vdb *v, const char *blob, const char *vector, size_t len, int k, vdb_done_fn done, void *arg)
{
	struct simple_op *op;
	struct vdb_req *rq = simple(v, "POST", "querying", done, arg, &op);

	set_path(rq, "/tenants/%s/blobs/%s/query", v->tenant, blob);
	op->reply = REPLY_CHECKED;
	op->kind = VDB_REPLY_QUERY;
	buf_puts(&rq->body, "{\"query\":");
	buf_append(&rq->body, vector, len);
	buf_printf(&rq->body, ",\"k\":%d}", k);
	submit(rq);
}

void vdb_health(struct vdb *v, vdb_done_fn done, void *arg)
{
	struct simple_op *op;
	struct vdb_req *rq = simple(v, "GET", "checking health", done, arg, &op);

	set_path(rq, "/health");
	rq->flags |= REQ_NO_RETRY;
	submit(rq);
}

void vdb_raw(struct vdb *v, const char *method, const char *path, const char *body, size_t len, unsigned auth,
	     vdb_done_fn done, void *arg)
{
	struct simple_op *op;
	struct vdb_req *rq = simple(v, method, "probing", done, arg, &op);

	set_path(rq, "%s", path);
	op->reply = REPLY_IF_JSON;
	rq->flags |= REQ_NO_RETRY | REQ_QUIET_404;
	if (auth == VDB_RAW_NO_AUTH)
		rq->flags |= REQ_NO_AUTH;
	else if (auth == VDB_RAW_BEARER)
		rq->flags |= REQ_AUTH_BEARER;
	else if (auth == VDB_RAW_X_API_KEY)
		rq->flags |= REQ_AUTH_API_KEY;
	if (len)
		buf_append(&rq->body, body, len);
	submit(rq);
}

/* ---- the client ------------------------------------------------------------ */

static char *copy_opt(const char *s)
{
	return s && *s ? xstrdup(s) : NULL;
}

struct vdb *vdb_new(struct event_base *base, const struct vdb_opts *o, struct errbuf *err)
{
	struct vdb *v;
	size_t len;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		err_set(err, "libcurl failed to initialise");
		return NULL;
	}
	v = xcalloc(1, sizeof(*v));
	v->base = base;
	v->o = *o;
	v->pid = (int)getpid();
	v->base_url = xstrdup(o->base_url);
	len = strlen(v->base_url);
	while (len > 0 && v->base_url[len - 1] == '/')
		v->base_url[--len] = '\0';
	v->tenant = xstrdup(o->tenant);
	v->api_key = copy_opt(o->api_key);
	v->ca_file = copy_opt(o->ca_file);
	v->o.base_url = v->base_url;
	v->o.tenant = v->tenant;
	v->o.api_key = v->api_key;
	v->o.ca_file = v->ca_file;
	v->tenant_state.v = v;
	TAILQ_INIT(&v->queued);
	TAILQ_INIT(&v->active);
	v->timer = evtimer_new(base, on_timeout, v);
	v->multi = curl_multi_init();
	if (!v->multi || !v->timer)
		abort();
	curl_multi_setopt(v->multi, CURLMOPT_SOCKETFUNCTION, on_socket_change);
	curl_multi_setopt(v->multi, CURLMOPT_SOCKETDATA, v);
	curl_multi_setopt(v->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
	curl_multi_setopt(v->multi, CURLMOPT_TIMERDATA, v);
	curl_multi_setopt(v->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->max_inflight);
	curl_multi_setopt(v->multi, CURLMOPT_MAXCONNECTS, (long)o->max_inflight);
	return v;
}

/* Ends a request that never finished, calling its operation with VDB_CANCELLED. */
static void cancel(struct vdb_req *rq)
{
	if (rq->easy) {
		/* On the wire: it may still be applied, and we will never know. */
		if (strcmp(rq->method, "GET") != 0) {
			rq->ambiguous = true;
			count_ambiguous(rq, true);
		}
		curl_multi_remove_handle(rq->v->multi, rq->easy);
		curl_easy_cleanup(rq->easy);
		rq->easy = NULL;
	}
	if (rq->retry_ev)
		evtimer_del(rq->retry_ev);
	rq->cancelled = true;
	rq->finish(rq);
}

/* Ends everything pending with VDB_CANCELLED, callbacks included. */
static void cancel_everything(struct vdb *v)
{
	/* Cancelling can make operations submit their next step: submit() cancels those at once. */
	while (!TAILQ_EMPTY(&v->queued) || !TAILQ_EMPTY(&v->active) || v->deferred) {
		struct vdb_req *rq;

		if ((rq = TAILQ_FIRST(&v->queued)) != NULL) {
			TAILQ_REMOVE(&v->queued, rq, link);
			cancel(rq);
		} else if ((rq = TAILQ_FIRST(&v->active)) != NULL) {
			TAILQ_REMOVE(&v->active, rq, link);
			cancel(rq);
		} else {
			struct deferred *d = v->deferred;

			d->status = VDB_CANCELLED;
			event_del(d->ev);
			on_deferred(-1, 0, d);
		}
	}
}

void vdb_cancel_all(struct vdb *v)
{
	bool was = v->freeing;

	v->freeing = true;
	cancel_everything(v);
	v->freeing = was;
}

void vdb_free(struct vdb *v)
{
	struct known *k, *next;

	if (!v)
		return;
	v->freeing = true;
	cancel_everything(v);
	for (k = v->blobs; k; k = next) {
		next = k->next;
		free(k->blob);
		free(k);
	}
	curl_multi_cleanup(v->multi);
	event_free(v->timer);
	if (v->api_key)
		memset(v->api_key, 0, strlen(v->api_key));
	free(v->api_key);
	free(v->ca_file);
	free(v->tenant);
	free(v->base_url);
	free(v);
	curl_global_cleanup();
}

void vdb_get_stats(const struct vdb *v, struct vdb_stats *out)
{
	*out = v->stats;
}

void vdb_run_until(struct vdb *v, const bool *flag)
{
	while (!*flag)
		event_base_loop(v->base, EVLOOP_ONCE);
}
