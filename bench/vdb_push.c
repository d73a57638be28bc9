/*
 * vdb_push - how fast the project's vector DB client gets vectors into a
 * server, and how close that is to what the server can take.
 *
 * Client mode pushes --vectors vectors through vdb_add (src/vdb.c) with the
 * batching and concurrency options the service uses (VDB_BATCH_MAX,
 * VDB_BATCH_BYTES, VDB_MAX_INFLIGHT, VDB_WRITE_MODE) and reports vectors/s and
 * this process's CPU per vector. Ceiling mode leaves the client library out:
 * --inflight connections post one prebuilt body of --ceiling-batch vectors over
 * and over (same ids: the server overwrites), which is the most the server can
 * ingest with nothing but libcurl in front of it. The ratio client/ceiling is
 * the number to quote; --compare runs both and prints it.
 *
 * With --emulator-pid the server's CPU per vector comes from /proc/PID/stat,
 * read before and after each measurement.
 */
#include "lib/benchkit.h"
#include "buf.h"
#include "clock.h"
#include "common.h"
#include "log.h"
#include "mem.h"
#include "vdb.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG "vdb_push"
#define EMBEDDING_POOL 256 /* distinct embeddings, reused: the server parses them all the same */

/* ---- options -------------------------------------------------------------- */

struct opts {
	const char *url, *tenant, *blob, *api_key, *write_mode;
	long vectors, dim, batch, batch_bytes, inflight, per_add, timeout_ms, attempts;
	long emulator_pid, seconds, ceiling_batch;
	bool ceiling, compare, json, help;
};

static struct opts O = {
	.url = "http://127.0.0.1:8765", .tenant = "bench", .blob = "abilities_bench_vdb_push", .write_mode = "add",
	.vectors = 5000, .dim = 3072, .batch = 256, .batch_bytes = 8388608, .inflight = 8, .timeout_ms = 30000,
	.attempts = 5, .seconds = 5, .ceiling_batch = 500,
};

static const struct bench_flag flags[] = {
	{"url", "URL", F_STR, &O.url, 0, 0, "the vector DB (emulator) base URL (default http://127.0.0.1:8765)"},
	{"vectors", "N", F_LONG, &O.vectors, 1, 10000000, "vectors to push in client mode (default 5000)"},
	{"dim", "D", F_LONG, &O.dim, 1, 65536, "numbers per vector (default 3072)"},
	{"batch", "N", F_LONG, &O.batch, 1, 10000, "VDB_BATCH_MAX: vectors per add request (default 256)"},
	{"batch-bytes", "N", F_LONG, &O.batch_bytes, 4096, 1073741824,
	 "VDB_BATCH_BYTES: add request body bound (default 8388608)"},
	{"inflight", "N", F_LONG, &O.inflight, 1, 256,
	 "VDB_MAX_INFLIGHT; in ceiling mode, connections (default 8)"},
	{"per-add", "N", F_LONG, &O.per_add, 1, 1000000, "vectors per vdb_add call (default: --batch)"},
	{"write-mode", "MODE", F_STR, &O.write_mode, 0, 0,
	 "VDB_WRITE_MODE: add, or delete-then-add (a DELETE per vector first) (default add)"},
	{"attempts", "N", F_LONG, &O.attempts, 1, 100, "VDB_MAX_ATTEMPTS (default 5)"},
	{"timeout-ms", "MS", F_LONG, &O.timeout_ms, 100, 600000, "per-request time-out (default 30000)"},
	{"tenant", "NAME", F_STR, &O.tenant, 0, 0, "tenant to write to, created if missing (default bench)"},
	{"blob", "NAME", F_STR, &O.blob, 0, 0, "blob to write to, created if missing (default abilities_bench_vdb_push)"},
	{"api-key", "KEY", F_STR, &O.api_key, 0, 0, "sent as Authorization: Bearer KEY"},
	{"emulator-pid", "PID", F_LONG, &O.emulator_pid, 1, 4194304, "also report that process's CPU per vector"},
	{"ceiling", NULL, F_BOOL, &O.ceiling, 0, 0, "measure the server's ingest ceiling only (no client library)"},
	{"compare", NULL, F_BOOL, &O.compare, 0, 0, "client mode, then the ceiling, then the ratio"},
	{"seconds", "S", F_LONG, &O.seconds, 1, 600, "how long the ceiling posts (default 5)"},
	{"ceiling-batch", "N", F_LONG, &O.ceiling_batch, 1, 100000, "vectors in the ceiling's body (default 500)"},
	{"json", NULL, F_BOOL, &O.json, 0, 0, "print one JSON object instead of text"},
	{"help", NULL, F_BOOL, &O.help, 0, 0, "this text"},
	{NULL, NULL, F_STR, NULL, 0, 0, NULL},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: %s [flags]\n\n"
		"Pushes --vectors vectors into a running vector DB through the project's client\n"
		"(vdb_add) and reports vectors/s and CPU ms per vector; --ceiling measures what\n"
		"the server ingests with raw libcurl posts of one prebuilt body; --compare does\n"
		"both and prints client/ceiling. Vectors are generated before the clock starts.\n\n", PROG);
	bench_print_flags(out, flags);
	fprintf(out, "\nExit status: 0 every vector was written, 1 some were not (or the server was\n"
		"unreachable), 2 a bad flag.\n");
}

static char *make_embedding(uint64_t seed, size_t index, size_t dim, size_t *len)
{
	double *scratch = xmalloc(dim * sizeof(*scratch));
	struct buf b = BUF_INIT;

	bench_put_embedding(&b, seed, index, dim, scratch);
	free(scratch);
	*len = b.len;
	return buf_steal(&b);
}

/* Attributes the size and shape of the service's: the ability's fields, its metadata, its hash. */
static char *make_attributes(size_t index, size_t *len)
{
	struct buf b = BUF_INIT;

	buf_printf(&b, "{\"ability_id\":\"bench-vdb-%zu\",\"ability_name\":\"bench_op_%zu\",\"content_hash\":"
		   "\"%016zx%016zx%016zx%016zx\",\"description\":\"Benchmark ability %zu: lists the items of "
		   "bench service %zu, filtered by status and owner, newest first, with cursor pagination and an "
		   "optional projection of fields.\",\"dynamic_header_keys\":%s,\"request_method\":\"GET\","
		   "\"request_url\":\"https://bench-svc-%zu.example.com/v1/items?page=%zu\",\"service_name\":"
		   "\"bench-svc-%zu.example.com\"}", index, index, index * 7919, index * 104729, index ^ 0x5bd1e995,
		   ~index, index, index % 4, index % 3 ? "[]" : "[\"X-Tenant-Id\"]", index % 4, index, index % 4);
	*len = b.len;
	return buf_steal(&b);
}

/* ---- CPU ---------------------------------------------------------------------- */

/* utime + stime of a process in ms, from /proc/PID/stat; -1 when it cannot be read. */
static double proc_cpu_ms(long pid)
{
	char path[64], line[1024], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if (!(f = fopen(path, "r")))
		return -1;
	n = fread(line, 1, sizeof(line) - 1, f);
	fclose(f);
	line[n] = '\0';
	/* The command name may hold spaces and parentheses: fields count from the last ')'. */
	if (!(p = strrchr(line, ')')) ||
	    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* What one measurement found. */
struct result {
	const char *mode;
	uint64_t vectors, failed, requests, retries;
	double seconds, self_cpu_ms, emu_cpu_ms; /* emu_cpu_ms < 0: not measured */
	char error[512];
};

struct cpu_mark {
	int64_t us;
	double self, emu;
};

static void mark(struct cpu_mark *m)
{
	m->emu = proc_cpu_ms(O.emulator_pid);
	m->self = bench_self_cpu_ms();
	m->us = clock_mono_us();
}

static void settle(struct result *r, const struct cpu_mark *t0)
{
	struct cpu_mark t1;

	mark(&t1);
	r->seconds = (double)(t1.us - t0->us) / 1e6;
	r->self_cpu_ms = t1.self - t0->self;
	r->emu_cpu_ms = t0->emu >= 0 && t1.emu >= 0 ? t1.emu - t0->emu : -1;
}

/* ---- client mode ------------------------------------------------------------------ */

struct push {
	struct vdb *v;
	struct vdb_vector *vecs;
	size_t n, per_add, next, pending;
	bool done;
	struct result *res;
};

static void push_next(struct push *p);

static void on_added(const struct vdb_result *r, void *arg)
{
	struct push *p = arg;
	size_t i;

	for (i = 0; i < r->n; i++) {
		p->res->vectors += r->ok[i];
		p->res->failed += !r->ok[i];
	}
	if (r->status != VDB_OK && !p->res->error[0])
		snprintf(p->res->error, sizeof(p->res->error), "%s", r->error);
	p->pending--;
	push_next(p);
	if (p->pending == 0 && p->next == p->n)
		p->done = true;
}

static void push_next(struct push *p)
{
	size_t count = p->n - p->next < p->per_add ? p->n - p->next : p->per_add;

	if (count == 0)
		return;
	p->pending++;
	p->next += count;
	vdb_add(p->v, O.blob, p->vecs + p->next - count, count, on_added, p);
}

static struct vdb *client_new(struct event_base *base, struct errbuf *err)
{
	struct vdb_opts o;

	memset(&o, 0, sizeof(o));
	o.base_url = O.url;
	o.tenant = O.tenant;
	o.api_key = O.api_key;
	o.auth = VDB_AUTH_BEARER;
	o.tls_verify = true;
	o.timeout_ms = O.timeout_ms;
	o.max_inflight = (int)O.inflight;
	o.batch_bytes = (size_t)O.batch_bytes;
	o.batch_max = (size_t)O.batch;
	o.max_attempts = (int)O.attempts;
	o.backoff_ms = 200;
	o.backoff_max_ms = 10000;
	o.write_mode = strcmp(O.write_mode, "add") == 0 ? VDB_ADD : VDB_DELETE_THEN_ADD;
	o.dimension = (int)O.dim;
	o.max_reply = 256u << 20;
	return vdb_new(base, &o, err);
}

struct setup {
	bool done, ok;
};

static void on_setup(const struct vdb_result *r, void *arg)
{
	struct setup *st = arg;

	st->ok = r->status == VDB_OK;
	if (!st->ok)
		fprintf(stderr, "%s: creating tenant %s, blob %s at %s: %s\n", PROG, O.tenant, O.blob, O.url, r->error);
	st->done = true;
}

/* Creates the tenant and the blob both modes write to; false when the server will not. */
static bool ensure_blob(struct vdb *v)
{
	struct setup st;

	memset(&st, 0, sizeof(st));
	vdb_ensure_blob(v, O.blob, on_setup, &st);
	vdb_run_until(v, &st.done);
	return st.ok;
}

/* The vectors to push: ids 1..n, embeddings from a pool, attributes each their own. */
static void make_vectors(struct push *p, char **pool, const size_t *pool_len)
{
	size_t i;

	p->vecs = xcalloc(p->n, sizeof(*p->vecs));
	for (i = 0; i < p->n; i++) {
		struct vdb_vector *vec = &p->vecs[i];

		vec->id = (int64_t)i + 1;
		vec->embedding = pool[i % EMBEDDING_POOL];
		vec->embedding_len = pool_len[i % EMBEDDING_POOL];
		vec->attributes = make_attributes(i, &vec->attributes_len);
		vec->may_exist = strcmp(O.write_mode, "add") != 0; /* delete-then-add deletes only what may exist */
	}
}

static bool run_client(struct vdb *v, char **pool, const size_t *pool_len, struct result *res)
{
	struct push p;
	struct vdb_stats st, st0;
	struct cpu_mark t0;
	size_t i;

	memset(&p, 0, sizeof(p));
	res->mode = "client";
	p.v = v;
	p.res = res;
	p.n = (size_t)O.vectors;
	p.per_add = (size_t)(O.per_add ? O.per_add : O.batch);
	make_vectors(&p, pool, pool_len);
	vdb_get_stats(v, &st0);
	mark(&t0);
	/* Twice the connections' worth of calls: the client's queue never runs dry. */
	for (i = 0; i < (size_t)O.inflight * 2; i++)
		push_next(&p);
	vdb_run_until(v, &p.done);
	settle(res, &t0);
	vdb_get_stats(v, &st);
	res->requests = st.requests - st0.requests;
	res->retries = st.retries - st0.retries;
	for (i = 0; i < p.n; i++)
		free((char *)(uintptr_t)p.vecs[i].attributes);
	free(p.vecs);
	return res->failed == 0;
}

/* ---- ceiling mode ------------------------------------------------------------------- */

struct ceiling {
	CURLM *multi;
	CURL **easy;
	struct curl_slist *headers;
	struct buf url, body;
	int64_t deadline_us;
	int running;
	struct result *res;
};

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p, (void)arg;
	return size * n;
}

/* {"vectors":[...],"ids":[1..n],"attributes":[...]}: what the client posts, built once. */
static void ceiling_body(struct buf *b, char **pool, const size_t *pool_len)
{
	size_t i, n = (size_t)O.ceiling_batch, len;

	buf_puts(b, "{\"vectors\":[");
	for (i = 0; i < n; i++) {
		if (i)
			buf_putc(b, ',');
		buf_append(b, pool[i % EMBEDDING_POOL], pool_len[i % EMBEDDING_POOL]);
	}
	buf_puts(b, "],\"ids\":[");
	for (i = 0; i < n; i++)
		buf_printf(b, "%s%zu", i ? "," : "", i + 1);
	buf_puts(b, "],\"attributes\":[");
	for (i = 0; i < n; i++) {
		char *attrs = make_attributes(i, &len);

		if (i)
			buf_putc(b, ',');
		buf_append(b, attrs, len);
		free(attrs);
	}
	buf_puts(b, "]}");
}

static CURL *ceiling_easy(struct ceiling *c)
{
	CURL *e = curl_easy_init();

	if (!e)
		abort();
	curl_easy_setopt(e, CURLOPT_URL, c->url.data);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	/* Not copied: every post sends the same bytes. */
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body.data);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body.len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, O.timeout_ms);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	return e;
}

/* One post finished: count it, and post again on the same handle (its connection) until the deadline. */
static void ceiling_done(struct ceiling *c, CURLMsg *msg)
{
	long http = 0;

	curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &http);
	c->res->requests++;
	if (msg->data.result == CURLE_OK && http >= 200 && http < 300) {
		c->res->vectors += (uint64_t)O.ceiling_batch;
	} else {
		c->res->failed += (uint64_t)O.ceiling_batch;
		if (!c->res->error[0])
			snprintf(c->res->error, sizeof(c->res->error), "%s (HTTP %ld)",
				 msg->data.result != CURLE_OK ? curl_easy_strerror(msg->data.result) : "non-2xx answer",
				 http);
	}
	curl_multi_remove_handle(c->multi, msg->easy_handle);
	if (clock_mono_us() < c->deadline_us && msg->data.result == CURLE_OK)
		curl_multi_add_handle(c->multi, msg->easy_handle);
}

static void ceiling_loop(struct ceiling *c)
{
	CURLMsg *msg;
	int left;

	do {
		curl_multi_perform(c->multi, &c->running);
		while ((msg = curl_multi_info_read(c->multi, &left)) != NULL)
			if (msg->msg == CURLMSG_DONE)
				ceiling_done(c, msg);
		curl_multi_perform(c->multi, &c->running);
		if (c->running)
			curl_multi_poll(c->multi, NULL, 0, 100, NULL);
	} while (c->running);
}

static bool run_ceiling(char **pool, const size_t *pool_len, struct result *res)
{
	struct ceiling c;
	struct cpu_mark t0;
	struct buf line = BUF_INIT;
	long i;

	memset(&c, 0, sizeof(c));
	res->mode = "ceiling";
	c.res = res;
	ceiling_body(&c.body, pool, pool_len);
	buf_printf(&c.url, "%s/tenants/%s/blobs/%s/vectors", O.url, O.tenant, O.blob);
	c.headers = curl_slist_append(NULL, "Content-Type: application/json");
	c.headers = curl_slist_append(c.headers, "Expect:"); /* as the client: no 100-continue round trip */
	if (O.api_key) {
		buf_printf(&line, "Authorization: Bearer %s", O.api_key);
		c.headers = curl_slist_append(c.headers, line.data);
		buf_free(&line);
	}
	c.multi = curl_multi_init();
	c.easy = xcalloc((size_t)O.inflight, sizeof(*c.easy));
	mark(&t0);
	c.deadline_us = t0.us + O.seconds * 1000000;
	for (i = 0; i < O.inflight; i++) {
		c.easy[i] = ceiling_easy(&c);
		curl_multi_add_handle(c.multi, c.easy[i]);
	}
	ceiling_loop(&c);
	settle(res, &t0);
	for (i = 0; i < O.inflight; i++)
		curl_easy_cleanup(c.easy[i]);
	free(c.easy);
	curl_multi_cleanup(c.multi);
	curl_slist_free_all(c.headers);
	buf_free(&c.url);
	buf_free(&c.body);
	return !res->error[0];
}

/* ---- the report ------------------------------------------------------------------------ */

static double per_s(const struct result *r)
{
	return r->seconds > 0 ? (double)r->vectors / r->seconds : 0;
}

static double per_vec(double ms, const struct result *r)
{
	return r->vectors ? ms / (double)r->vectors : 0;
}

static json_t *result_json(const struct result *r)
{
	json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f}", "mode", r->mode, "vectors",
			      (json_int_t)r->vectors, "failed", (json_int_t)r->failed, "requests",
			      (json_int_t)r->requests, "retries", (json_int_t)r->retries, "seconds", r->seconds,
			      "vectors_per_s", per_s(r), "cpu_ms", r->self_cpu_ms, "cpu_ms_per_vector",
			      per_vec(r->self_cpu_ms, r));

	if (r->emu_cpu_ms >= 0) {
		json_object_set_new(j, "emulator_cpu_ms", json_real(r->emu_cpu_ms));
		json_object_set_new(j, "emulator_cpu_ms_per_vector", json_real(per_vec(r->emu_cpu_ms, r)));
	}
	if (r->error[0])
		json_object_set_new(j, "error", json_string(r->error));
	return j;
}

static void result_text(const struct result *r)
{
	printf("%s: %" PRIu64 " vectors in %.3f s = %.0f vectors/s (%" PRIu64 " requests, %" PRIu64
	       " retries, %" PRIu64 " failed)\n", r->mode, r->vectors, r->seconds, per_s(r), r->requests,
	       r->retries, r->failed);
	printf("  this process  %.3f CPU ms/vector (%.0f ms)\n", per_vec(r->self_cpu_ms, r), r->self_cpu_ms);
	if (r->emu_cpu_ms >= 0)
		printf("  emulator      %.3f CPU ms/vector (%.0f ms)\n", per_vec(r->emu_cpu_ms, r), r->emu_cpu_ms);
	if (r->error[0])
		printf("  first error   %s\n", r->error);
}

static void report(const struct result *client, const struct result *ceiling)
{
	double ratio = client && ceiling && per_s(ceiling) > 0 ? per_s(client) / per_s(ceiling) : -1;

	if (O.json) {
		json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:I}", "url", O.url, "dim", (json_int_t)O.dim,
				      "inflight", (json_int_t)O.inflight, "batch", (json_int_t)O.batch, "batch_bytes",
				      (json_int_t)O.batch_bytes, "write_mode", O.write_mode, "ceiling_batch",
				      (json_int_t)O.ceiling_batch);

		if (client)
			json_object_set_new(j, "client", result_json(client));
		if (ceiling)
			json_object_set_new(j, "ceiling", result_json(ceiling));
		if (ratio >= 0)
			json_object_set_new(j, "client_over_ceiling", json_real(ratio));
		json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(6));
		putchar('\n');
		json_decref(j);
		return;
	}
	printf("%s: %s, dim %ld, inflight %ld", PROG, O.url, O.dim, O.inflight);
	if (client)
		printf(", client: batch %ld, %ld bytes, write mode %s", O.batch, O.batch_bytes, O.write_mode);
	if (ceiling)
		printf(", ceiling: one %ld-vector body for %ld s", O.ceiling_batch, O.seconds);
	printf("\n");
	if (client)
		result_text(client);
	if (ceiling)
		result_text(ceiling);
	if (ratio >= 0)
		printf("client/ceiling  %.2f\n", ratio);
}

/* ---- main ------------------------------------------------------------------------------------ */

static int check_flags(void)
{
	if (strcmp(O.write_mode, "add") != 0 && strcmp(O.write_mode, "delete-then-add") != 0)
		return bench_bad_flag(PROG, "write-mode", "must be add or delete-then-add");
	if (strncmp(O.url, "http://", 7) != 0 && strncmp(O.url, "https://", 8) != 0)
		return bench_bad_flag(PROG, "url", "must be an http(s) URL");
	if (!*O.tenant || !*O.blob)
		return bench_bad_flag(PROG, *O.tenant ? "blob" : "tenant", "must not be empty");
	if (O.emulator_pid && proc_cpu_ms(O.emulator_pid) < 0)
		return bench_bad_flag(PROG, "emulator-pid", "no such process (cannot read /proc/PID/stat)");
	return EXIT_OK;
}

static int run(void)
{
	struct result client, ceiling;
	struct event_base *base = event_base_new();
	struct vdb *v = NULL;
	struct errbuf err;
	char *pool[EMBEDDING_POOL];
	size_t pool_len[EMBEDDING_POOL], i;
	bool ok = false, want_client = !O.ceiling || O.compare, want_ceiling = O.ceiling || O.compare;

	memset(&client, 0, sizeof(client));
	memset(&ceiling, 0, sizeof(ceiling));
	client.emu_cpu_ms = ceiling.emu_cpu_ms = -1;
	for (i = 0; i < EMBEDDING_POOL; i++)
		pool[i] = make_embedding(0x5eed, i, (size_t)O.dim, &pool_len[i]);
	if (!base || !(v = client_new(base, &err))) {
		fprintf(stderr, "%s: %s\n", PROG, base ? err.msg : "libevent failed to start");
		goto cleanup;
	}
	/* Both modes write to the blob the client creates (the ceiling has no setup of its own). */
	if (!ensure_blob(v))
		goto cleanup;
	ok = true;
	if (want_client)
		ok = run_client(v, pool, pool_len, &client);
	vdb_free(v);
	v = NULL;
	if (want_ceiling)
		ok = run_ceiling(pool, pool_len, &ceiling) && ok;
	report(want_client ? &client : NULL, want_ceiling ? &ceiling : NULL);
cleanup:
	vdb_free(v);
	for (i = 0; i < EMBEDDING_POOL; i++)
		free(pool[i]);
	if (base)
		event_base_free(base);
	return ok ? EXIT_OK : EXIT_FAIL;
}

int main(int argc, char **argv)
{
	int rc;

	if ((rc = bench_parse_flags(PROG, flags, argc, argv)) != EXIT_OK)
		return rc;
	if (O.help) {
		usage(stdout);
		return EXIT_OK;
	}
	if ((rc = check_flags()) != EXIT_OK)
		return rc;
	log_setup(LOG_TEXT, LL_ERROR); /* "already exists" on a re-run is a warning there, expected here */
	/* The ceiling's libcurl outlives the client, whose vdb_free() cleans up its own init. */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = run();
	curl_global_cleanup();
	return rc;
}
