/*
 * loadgen - a load generator for POST /v1/abilities.
 *
 * Every request body is generated before the clock starts, so the run measures
 * the service and not this program's printf. C keep-alive connections (libevent
 * evhttp client, one thread) each keep one request on the wire and take the next
 * body as soon as the answer is in. Latencies are kept per request, so the
 * percentiles are exact, not bucketed.
 *
 * The abilities are deterministic in (prefix, seed, index): a run with the seed
 * of an earlier one resends the same abilities, content and all, which is how
 * the "unchanged" (200) path is measured.
 */
#include "lib/benchkit.h"
#include "buf.h"
#include "clock.h"
#include "common.h"
#include "mem.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG "loadgen"
#define MAX_BODY_TOTAL ((size_t)4 << 30) /* pre-generated bodies beyond this are refused */

/* ---- options -------------------------------------------------------------- */

struct opts {
	const char *url;
	long requests, concurrency, batch, dim, services, timeout_ms;
	const char *prefix, *api_key, *path, *ack_file, *seed_text;
	bool json, help;
};

static struct opts O = {
	.url = "http://127.0.0.1:8080", .requests = 2000, .concurrency = 8, .batch = 1, .dim = 3072,
	.services = 4, .timeout_ms = 30000, .prefix = "bench", .path = "/v1/abilities",
};

static const struct bench_flag flags[] = {
	{"url", "URL", F_STR, &O.url, 0, 0, "base URL of the service, http only (default http://127.0.0.1:8080)"},
	{"requests", "N", F_LONG, &O.requests, 1, 10000000, "requests to send (default 2000)"},
	{"concurrency", "C", F_LONG, &O.concurrency, 1, 4096, "keep-alive connections, one request each (default 8)"},
	{"batch", "B", F_LONG, &O.batch, 1, 10000, "abilities per request; 1 sends the single-object body (default 1)"},
	{"dim", "D", F_LONG, &O.dim, 1, 65536, "numbers per embedding (default 3072)"},
	{"services", "S", F_LONG, &O.services, 1, 1000000,
	 "distinct service_name values, bench-svc-<i % S>.example.com (default 4)"},
	{"prefix", "P", F_STR, &O.prefix, 0, 0, "ability_id prefix; ids are P-<seed>-<i> (default bench)"},
	{"seed", "N", F_STR, &O.seed_text, 0, 0, "fixes the run seed: the same seed resends the same abilities"},
	{"api-key", "KEY", F_STR, &O.api_key, 0, 0, "sent as Authorization: Bearer KEY"},
	{"path", "PATH", F_STR, &O.path, 0, 0, "request path under the base URL (default /v1/abilities)"},
	{"ack-file", "FILE", F_STR, &O.ack_file, 0, 0,
	 "append \"ability_id status\" per ability acknowledged with a 2xx"},
	{"timeout-ms", "MS", F_LONG, &O.timeout_ms, 1, 3600000, "per-request time-out (default 30000)"},
	{"json", NULL, F_BOOL, &O.json, 0, 0, "print one JSON object instead of text"},
	{"help", NULL, F_BOOL, &O.help, 0, 0, "this text"},
	{NULL, NULL, F_STR, NULL, 0, 0, NULL},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: %s [flags]\n\n"
		"Sends --requests POSTs of generated abilities over --concurrency keep-alive\n"
		"connections and reports requests/s, abilities/s, exact latency percentiles,\n"
		"answers by status, transport errors and bytes sent. Bodies are generated\n"
		"before the clock starts.\n\n", PROG);
	bench_print_flags(out, flags);
	fprintf(out, "\nThe status written to --ack-file is per ability: 201 when the answer says it is\n"
		"synced, 202 when pending, 200 when unchanged (from the reply's results); the\n"
		"HTTP status when the reply does not say.\n"
		"Exit status: 0 every request got an answer (any status), 1 transport errors\n"
		"or a failure to start, 2 a bad flag.\n");
}

/* ---- the abilities ---------------------------------------------------------
 *
 * bench/gen_rows.c generates the same abilities for the Postgres baseline: keep
 * the two in step.
 */

static const char *const methods[] = {"GET", "POST", "GET", "PUT", "GET", "DELETE"};

static void put_ability(struct buf *b, const char *id, uint64_t seed, size_t index, double *scratch)
{
	size_t svc = index % (size_t)O.services;

	buf_puts(b, "{\"ability_id\":");
	buf_json_str(b, id, strlen(id));
	buf_printf(b, ",\"ability_name\":\"bench_op_%zu\",\"service_name\":\"bench-svc-%zu.example.com\"", index, svc);
	buf_printf(b, ",\"description\":\"Benchmark ability %zu: lists the items of bench service %zu, "
		   "filtered by status and owner, newest first, with cursor pagination and an optional "
		   "projection of fields.\",\"embedding\":", index, svc);
	bench_put_embedding(b, seed, index, (size_t)O.dim, scratch);
	buf_printf(b, ",\"metadata\":{\"dynamic_header_keys\":%s,\"request_method\":\"%s\","
		   "\"request_url\":\"https://bench-svc-%zu.example.com/v1/items?page=%zu\"}}",
		   index % 3 == 0 ? "[\"X-Tenant-Id\"]" : "[]", methods[index % ARRAY_LEN(methods)], svc, index);
}

/* ---- the run ---------------------------------------------------------------- */

struct body {
	char *data;
	size_t len;
};

struct conn;

struct run {
	struct event_base *base;
	char *host;
	int port;
	char *path;          /* base URL path + --path */
	char *host_header;
	char *auth_header;
	uint64_t seed;
	char **ids;          /* requests * batch ability ids */
	struct body *bodies; /* one per request */
	size_t nreq, next, answered;
	struct conn *conns;
	int64_t *lat_us;     /* per answered request */
	size_t nlat;
	uint64_t by_status[600];
	uint64_t transport_errors, bytes_sent, abilities_answered, abilities_ok;
	const char *last_error;
	FILE *ack;
	int64_t t0_us, t1_us;
	double cpu_ms;       /* this process's CPU while the load ran (generating the bodies excluded) */
};

struct conn {
	struct run *run;
	struct evhttp_connection *evcon;
	size_t req;          /* the request on the wire */
	int64_t start_us;
	const char *error;   /* set by the error callback of the request on the wire */
};

static bool parse_url(struct run *r, struct errbuf *err)
{
	struct evhttp_uri *u = evhttp_uri_parse(O.url);
	const char *scheme, *host, *base;
	struct buf b = BUF_INIT;
	size_t len;

	if (!u || !(scheme = evhttp_uri_get_scheme(u)) || strcmp(scheme, "http") != 0 ||
	    !(host = evhttp_uri_get_host(u)) || !*host) {
		err_set(err, "--url: \"%s\" is not an http://host[:port] URL", O.url);
		if (u)
			evhttp_uri_free(u);
		return false;
	}
	r->host = xstrdup(host);
	r->port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
	base = evhttp_uri_get_path(u) ? evhttp_uri_get_path(u) : "";
	len = strlen(base);
	while (len > 0 && base[len - 1] == '/')
		len--;
	buf_append(&b, base, len);
	if (O.path[0] != '/')
		buf_putc(&b, '/');
	buf_puts(&b, O.path);
	r->path = buf_steal(&b);
	buf_printf(&b, r->port == 80 ? "%s" : "%s:%d", host, r->port);
	r->host_header = buf_steal(&b);
	evhttp_uri_free(u);
	return true;
}

static bool parse_seed(struct run *r)
{
	char *end;

	if (!O.seed_text) {
		uint64_t s = (uint64_t)clock_wall_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)clock_mono_us();

		r->seed = bench_splitmix64(&s) % 1000000000u; /* short: it is part of every id */
		return true;
	}
	r->seed = strtoull(O.seed_text, &end, 10);
	return *O.seed_text && *O.seed_text != '-' && !*end;
}

/* Builds every body; the clock has not started. */
static void generate(struct run *r)
{
	size_t b = (size_t)O.batch, i, k;
	double *scratch = xmalloc((size_t)O.dim * sizeof(double));
	struct buf body = BUF_INIT, id = BUF_INIT;

	r->ids = xcalloc(r->nreq * b, sizeof(*r->ids));
	r->bodies = xcalloc(r->nreq, sizeof(*r->bodies));
	for (i = 0; i < r->nreq; i++) {
		if (b > 1)
			buf_puts(&body, "{\"abilities\":[");
		for (k = 0; k < b; k++) {
			size_t index = i * b + k;

			buf_printf(&id, "%s-%" PRIu64 "-%zu", O.prefix, r->seed, index);
			r->ids[index] = buf_steal(&id);
			if (k)
				buf_putc(&body, ',');
			put_ability(&body, r->ids[index], r->seed, index, scratch);
		}
		if (b > 1)
			buf_puts(&body, "]}");
		r->bodies[i].len = body.len;
		r->bodies[i].data = buf_steal(&body);
	}
	free(scratch);
}

/*
 * The status an ability got, in the API's vocabulary: the reply's per-item
 * results tell a batch's abilities apart (one may be unchanged, another
 * pending); without them, the HTTP status speaks for all.
 */
static int item_status(json_t *item, int http)
{
	const char *status = json_string_value(json_object_get(item, "status"));
	const char *sync = json_string_value(json_object_get(item, "sync_state"));

	if (status && strcmp(status, "unchanged") == 0)
		return 200;
	if (sync)
		return strcmp(sync, "synced") == 0 ? 201 : 202;
	return http;
}

static void write_acks(struct run *r, size_t req, int http, struct evbuffer *in)
{
	size_t b = (size_t)O.batch, k, len = evbuffer_get_length(in);
	json_t *reply = len ? json_loadb((const char *)evbuffer_pullup(in, -1), len, 0, NULL) : NULL;
	json_t *results = json_object_get(reply, "results");

	for (k = 0; k < b; k++) {
		json_t *item = b == 1 && !results ? reply : json_array_get(results, k);

		fprintf(r->ack, "%s %d\n", r->ids[req * b + k], item ? item_status(item, http) : http);
	}
	fflush(r->ack); /* an acknowledgement on disk as soon as it is in: the checks may run after a crash */
	json_decref(reply);
}

static void conn_send(struct conn *c);

static void on_request_error(enum evhttp_request_error e, void *arg)
{
	struct conn *c = arg;

	switch (e) {
	case EVREQ_HTTP_TIMEOUT: c->error = "time-out"; break;
	case EVREQ_HTTP_EOF: c->error = "connection closed before the answer"; break;
	case EVREQ_HTTP_INVALID_HEADER: c->error = "invalid answer header"; break;
	case EVREQ_HTTP_BUFFER_ERROR: c->error = "connection error (refused or reset)"; break;
	case EVREQ_HTTP_DATA_TOO_LONG: c->error = "answer too long"; break;
	default: c->error = "request cancelled"; break;
	}
}

static void on_response(struct evhttp_request *req, void *arg)
{
	struct conn *c = arg;
	struct run *r = c->run;
	int http = req ? evhttp_request_get_response_code(req) : 0;
	size_t b = (size_t)O.batch;

	r->answered++;
	if (http < 100 || http >= 600) {
		r->transport_errors++;
		r->last_error = c->error ? c->error : "connection failed (refused, reset or unreachable)";
	} else {
		r->lat_us[r->nlat++] = clock_mono_us() - c->start_us;
		r->by_status[http]++;
		r->abilities_answered += b;
		if (http < 300) {
			r->abilities_ok += b;
			if (r->ack)
				write_acks(r, c->req, http, evhttp_request_get_input_buffer(req));
		}
	}
	if (r->answered == r->nreq) {
		r->t1_us = clock_mono_us();
		event_base_loopbreak(r->base);
		return;
	}
	conn_send(c);
}

/*
 * Without TCP_NODELAY the tail of a body waits for the server's delayed ACK
 * (40 ms on Linux): that would be measured as service latency. evhttp creates
 * the socket when it (re)connects, inside evhttp_make_request, so this runs
 * after every request is queued: the data goes out later, from the loop.
 */
static void set_nodelay(struct conn *c)
{
	evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(c->evcon));
	int one = 1;

	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void add_header(struct evhttp_request *req, const char *name, const char *value)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), name, value);
}

/* Puts the next body on this connection, if any is left. */
static void conn_send(struct conn *c)
{
	struct run *r = c->run;

	while (r->next < r->nreq) {
		struct evhttp_request *req = evhttp_request_new(on_response, c);
		const struct body *body = &r->bodies[r->next];

		c->req = r->next++;
		c->error = NULL;
		evhttp_request_set_error_cb(req, on_request_error);
		add_header(req, "Host", r->host_header);
		add_header(req, "Content-Type", "application/json");
		if (r->auth_header)
			add_header(req, "Authorization", r->auth_header);
		/* By reference: the bodies are big and must not be copied on the clock. */
		evbuffer_add_reference(evhttp_request_get_output_buffer(req), body->data, body->len, NULL, NULL);
		c->start_us = clock_mono_us();
		if (evhttp_make_request(c->evcon, req, EVHTTP_REQ_POST, r->path) == 0) {
			set_nodelay(c);
			return;
		}
		/* libevent freed the request; count it and try the next one. */
		r->answered++;
		r->transport_errors++;
		r->last_error = "the request could not be queued";
	}
	if (r->answered == r->nreq && !r->t1_us) {
		r->t1_us = clock_mono_us();
		event_base_loopbreak(r->base);
	}
}

/* Bytes the connections' output buffers handed to the kernel. */
static void on_output_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct run *r = arg;

	(void)buf;
	r->bytes_sent += info->n_deleted;
}

static bool open_conns(struct run *r)
{
	struct timeval tv = {O.timeout_ms / 1000, (O.timeout_ms % 1000) * 1000};
	long i;

	r->conns = xcalloc((size_t)O.concurrency, sizeof(*r->conns));
	for (i = 0; i < O.concurrency; i++) {
		struct conn *c = &r->conns[i];

		c->run = r;
		c->evcon = evhttp_connection_base_new(r->base, NULL, r->host, (unsigned short)r->port);
		if (!c->evcon)
			return false;
		evhttp_connection_set_timeout_tv(c->evcon, &tv);
		evhttp_connection_set_retries(c->evcon, 0);
		evbuffer_add_cb(bufferevent_get_output(evhttp_connection_get_bufferevent(c->evcon)),
				on_output_drained, r);
	}
	return true;
}

static void run_free(struct run *r)
{
	size_t i;

	for (i = 0; r->conns && i < (size_t)O.concurrency; i++)
		if (r->conns[i].evcon)
			evhttp_connection_free(r->conns[i].evcon);
	free(r->conns);
	for (i = 0; r->ids && i < r->nreq * (size_t)O.batch; i++)
		free(r->ids[i]);
	for (i = 0; r->bodies && i < r->nreq; i++)
		free(r->bodies[i].data);
	free(r->ids);
	free(r->bodies);
	free(r->lat_us);
	free(r->host);
	free(r->path);
	free(r->host_header);
	free(r->auth_header);
	if (r->ack)
		fclose(r->ack);
	if (r->base)
		event_base_free(r->base);
}

/* ---- the report ---------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest rank over the sorted samples, in ms. */
static double pct_ms(const struct run *r, double q)
{
	size_t rank;

	if (!r->nlat)
		return 0;
	rank = (size_t)ceil(q * (double)r->nlat);
	return (double)r->lat_us[rank ? rank - 1 : 0] / 1000.0;
}

static json_t *report_json(const struct run *r, double secs)
{
	json_t *status = json_object();
	char key[8];
	int s;

	for (s = 0; s < 600; s++) {
		if (!r->by_status[s])
			continue;
		snprintf(key, sizeof(key), "%d", s);
		json_object_set_new(status, key, json_integer((json_int_t)r->by_status[s]));
	}
	return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, "
			 "s:{s:f, s:f, s:f, s:f}, s:o, s:I, s:s?, s:I, s:f}",
			 "url", O.url, "path", r->path, "seed", (json_int_t)r->seed, "concurrency",
			 (json_int_t)O.concurrency, "batch", (json_int_t)O.batch, "requests", (json_int_t)r->nreq,
			 "abilities", (json_int_t)(r->nreq * (size_t)O.batch), "abilities_ok", (json_int_t)r->abilities_ok,
			 "seconds", secs, "requests_per_s", (double)r->nlat / secs, "abilities_per_s",
			 (double)r->abilities_answered / secs, "abilities_ok_per_s", (double)r->abilities_ok / secs,
			 "latency_ms", "p50", pct_ms(r, 0.50), "p90", pct_ms(r, 0.90), "p99", pct_ms(r, 0.99), "max",
			 pct_ms(r, 1.0), "status", status, "transport_errors", (json_int_t)r->transport_errors,
			 "last_transport_error", r->last_error, "bytes_sent", (json_int_t)r->bytes_sent, "cpu_ms",
			 r->cpu_ms);
}

static void report_text(const struct run *r, double secs)
{
	int s;

	printf("%s: %zu requests x %ld abilities to http://%s%s, concurrency %ld, seed %" PRIu64 "\n", PROG,
	       r->nreq, O.batch, r->host_header, r->path, O.concurrency, r->seed);
	printf("  seconds          %.3f\n", secs);
	printf("  requests/s       %.1f  (%zu answered)\n", (double)r->nlat / secs, r->nlat);
	printf("  abilities/s      %.1f  (%" PRIu64 " answered; 2xx: %" PRIu64 ", %.1f/s)\n",
	       (double)r->abilities_answered / secs, r->abilities_answered, r->abilities_ok,
	       (double)r->abilities_ok / secs);
	printf("  latency ms       p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", pct_ms(r, 0.50), pct_ms(r, 0.90),
	       pct_ms(r, 0.99), pct_ms(r, 1.0));
	printf("  status          ");
	for (s = 0; s < 600; s++)
		if (r->by_status[s])
			printf(" %d: %" PRIu64, s, r->by_status[s]);
	printf("%s\n", r->nlat ? "" : " (none)");
	printf("  transport errors %" PRIu64 "%s%s\n", r->transport_errors, r->last_error ? "  last: " : "",
	       r->last_error ? r->last_error : "");
	printf("  bytes sent       %" PRIu64 "  (%.1f MB/s)\n", r->bytes_sent, (double)r->bytes_sent / secs / 1e6);
}

static void report(struct run *r)
{
	double secs = (double)(r->t1_us - r->t0_us) / 1e6;

	if (secs <= 0)
		secs = 1e-6;
	qsort(r->lat_us, r->nlat, sizeof(*r->lat_us), cmp_i64);
	if (O.json) {
		json_t *j = report_json(r, secs);

		json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(6));
		putchar('\n');
		json_decref(j);
	} else {
		report_text(r, secs);
	}
}

/* ---- main ---------------------------------------------------------------------------- */

/* Checks the flags against each other and the environment; returns an exit code. */
static int prepare(struct run *r)
{
	struct errbuf err;
	double estimate = (double)O.requests * (double)O.batch * ((double)O.dim * 14.0 + 600.0);

	if (!parse_url(r, &err)) {
		fprintf(stderr, "%s: %s (see --help)\n", PROG, err.msg);
		return EXIT_USAGE;
	}
	if (!parse_seed(r))
		return bench_bad_flag(PROG, "seed", "not an unsigned integer");
	if (!*O.prefix || strlen(O.prefix) > 200)
		return bench_bad_flag(PROG, "prefix", "must be 1 to 200 characters");
	if (estimate > (double)MAX_BODY_TOTAL)
		return bench_bad_flag(PROG, "requests", "--requests x --batch x --dim would pre-generate more than 4 GiB of bodies");
	if (O.api_key) {
		struct buf b = BUF_INIT;

		buf_printf(&b, "Bearer %s", O.api_key);
		r->auth_header = buf_steal(&b);
	}
	if (O.ack_file && !(r->ack = fopen(O.ack_file, "a"))) {
		fprintf(stderr, "%s: --ack-file: cannot open %s: %m\n", PROG, O.ack_file);
		return EXIT_FAIL;
	}
	r->nreq = (size_t)O.requests;
	r->lat_us = xcalloc(r->nreq, sizeof(*r->lat_us));
	r->base = event_base_new();
	if (!r->base) {
		fprintf(stderr, "%s: libevent failed to start\n", PROG);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

static int run_load(struct run *r)
{
	double cpu0;
	long i;

	if (!open_conns(r)) {
		fprintf(stderr, "%s: cannot create connections to %s:%d\n", PROG, r->host, r->port);
		return EXIT_FAIL;
	}
	cpu0 = bench_self_cpu_ms();
	r->t0_us = clock_mono_us();
	for (i = 0; i < O.concurrency; i++)
		conn_send(&r->conns[i]);
	if (r->answered < r->nreq)
		event_base_dispatch(r->base);
	if (!r->t1_us)
		r->t1_us = clock_mono_us();
	r->cpu_ms = bench_self_cpu_ms() - cpu0;
	report(r);
	return r->transport_errors ? EXIT_FAIL : EXIT_OK;
}

int main(int argc, char **argv)
{
	struct run r;
	int rc;

	memset(&r, 0, sizeof(r));
	signal(SIGPIPE, SIG_IGN); /* a server that hangs up is a transport error, not our death */
	if ((rc = bench_parse_flags(PROG, flags, argc, argv)) != EXIT_OK)
		return rc;
	if (O.help) {
		usage(stdout);
		return EXIT_OK;
	}
	rc = prepare(&r);
	if (rc == EXIT_OK) {
		int64_t g0 = clock_mono_ms();

		generate(&r);
		if (!O.json)
			fprintf(stderr, "%s: generated %zu bodies in %.1f s\n", PROG, r.nreq,
				(double)(clock_mono_ms() - g0) / 1000.0);
		rc = run_load(&r);
	}
	run_free(&r);
	return rc;
}
