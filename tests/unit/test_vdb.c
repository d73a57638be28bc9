/*
 * The vector DB client against the emulator, over real sockets: every
 * operation, the "already exists" and write-mode rules, retries and their
 * limits, time-outs, resets, bad replies, batching, and a loop that keeps
 * running while the server is slow.
 */
#include "vdb.h"

#include "buf.h"
#include "clock.h"
#include "mem.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <criterion/new/assert.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t emu_pid;
static char emu_url[64];
static struct event_base *base;
static struct vdb *client;

/* ---- the emulator, a child process ------------------------------------- */

static void emu_start(const char *const *extra)
{
	char self[512], bin[600], portfile[64] = "/tmp/abilitysync-emu-XXXXXX";
	const char *argv[24];
	int n = 0, i, fd;
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	FILE *f;

	cr_assert(len > 0);
	self[len] = '\0';
	/* build/<variant>/tests/test_vdb -> build/<variant>/vdb-emulator */
	snprintf(bin, sizeof(bin), "%s/../vdb-emulator", dirname(self));
	fd = mkstemp(portfile);
	close(fd);
	unlink(portfile);
	argv[n++] = bin;
	argv[n++] = "--listen";
	argv[n++] = "127.0.0.1:0";
	argv[n++] = "--port-file";
	argv[n++] = portfile;
	for (i = 0; extra && extra[i]; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	emu_pid = fork();
	cr_assert(emu_pid >= 0);
	if (emu_pid == 0) {
		int null = open("/dev/null", 1);

		dup2(null, STDERR_FILENO);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	for (i = 0; i < 200; i++) {
		int port = 0;

		f = fopen(portfile, "r");
		if (f && fscanf(f, "%d", &port) == 1 && port > 0) {
			fclose(f);
			unlink(portfile);
			snprintf(emu_url, sizeof(emu_url), "http://127.0.0.1:%d", port);
			return;
		}
		if (f)
			fclose(f);
		usleep(20000);
	}
	cr_fatal("the emulator (%s) did not start", bin);
}

static void emu_stop(void)
{
	int status = 0;
	bool clean;

	if (emu_pid <= 0)
		return;
	kill(emu_pid, SIGTERM);
	waitpid(emu_pid, &status, 0);
	emu_pid = 0;
	clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	cr_expect(clean, "the emulator exited with status %d", status);
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	buf_append(arg, p, size * n);
	return size * n;
}

/* A blocking request to the emulator (admin endpoints, checks): returns the status. */
static long emu_call(const char *method, const char *path, const char *body, json_t **reply)
{
	CURL *e = curl_easy_init();
	struct buf url = BUF_INIT, out = BUF_INIT;
	long http = 0;

	buf_printf(&url, "%s%s", emu_url, path);
	curl_easy_setopt(e, CURLOPT_URL, url.data);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &out);
	if (body)
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
	cr_assert(eq(int, curl_easy_perform(e), CURLE_OK));
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &http);
	if (reply) {
		json_error_t jerr;

		*reply = json_loadb(buf_cstr(&out), out.len, 0, &jerr);
	}
	curl_easy_cleanup(e);
	buf_free(&url);
	buf_free(&out);
	return http;
}

static void fault(const char *rule)
{
	cr_assert(eq(long, emu_call("POST", "/_admin/faults", rule, NULL), 201), "fault %s", rule);
}

static size_t stored_count(const char *blob)
{
	char path[256];
	json_t *r = NULL;
	size_t n;

	snprintf(path, sizeof(path), "/_admin/tenants/t1/blobs/%s/ids", blob);
	cr_assert(eq(long, emu_call("GET", path, NULL, &r), 200));
	n = (size_t)json_integer_value(json_object_get(r, "count"));
	json_decref(r);
	return n;
}

static long route_count(const char *route)
{
	json_t *r = NULL;
	long n;

	cr_assert(eq(long, emu_call("GET", "/_admin/counters", NULL, &r), 200));
	n = (long)json_integer_value(json_object_get(json_object_get(r, "by_route"), route));
	json_decref(r);
	return n;
}

/* ---- the client, on a loop of its own ----------------------------------- */

static struct vdb_opts opts(int dim)
{
	struct vdb_opts o = {
		.base_url = emu_url,
		.tenant = "t1",
		.tls_verify = true,
		.timeout_ms = 2000,
		.max_inflight = 4,
		.batch_bytes = 8u << 20,
		.batch_max = 256,
		.max_attempts = 3,
		.backoff_ms = 20,
		.backoff_max_ms = 100,
		.write_mode = VDB_DELETE_THEN_ADD,
		.dimension = dim,
		.max_reply = 64u << 20,
	};

	return o;
}

static void client_start(const struct vdb_opts *o)
{
	struct errbuf err;

	if (!base)
		base = event_base_new();
	vdb_free(client);
	client = vdb_new(base, o, &err);
	cr_assert(not(eq(ptr, client, NULL)), "%s", err.msg);
}

static void setup_default(void)
{
	struct vdb_opts o;

	emu_start(NULL);
	o = opts(8);
	client_start(&o);
}

static void teardown(void)
{
	vdb_free(client);
	client = NULL;
	if (base)
		event_base_free(base);
	base = NULL;
	emu_stop();
}

/* What a callback saw, kept after it returns. */
struct outcome {
	bool done;
	enum vdb_status status;
	long http;
	int attempts;
	char error[512];
	json_t *reply;
	bool ok[64];
	size_t n;
	int calls;
};

static void on_done(const struct vdb_result *r, void *arg)
{
	struct outcome *o = arg;
	size_t i;

	o->calls++;
	o->done = true;
	o->status = r->status;
	o->http = r->http;
	o->attempts = r->attempts;
	snprintf(o->error, sizeof(o->error), "%s", r->error);
	o->reply = json_incref(r->reply);
	o->n = r->n;
	for (i = 0; i < r->n && i < 64; i++)
		o->ok[i] = r->ok[i];
}

static void wait_for(struct outcome *o)
{
	vdb_run_until(client, &o->done);
}

/* A JSON vector of `dim` numbers with many digits, different per seed. */
static char *vector_text(int dim, unsigned seed)
{
	struct buf b = BUF_INIT;
	uint32_t x = seed * 2654435761u + 7;
	int i;

	buf_putc(&b, '[');
	for (i = 0; i < dim; i++) {
		x ^= x << 13, x ^= x >> 17, x ^= x << 5;
		buf_printf(&b, "%s%.17g", i ? "," : "", ((double)(x % 2000001) - 1000000.0) / 1048576.0);
	}
	buf_putc(&b, ']');
	return buf_steal(&b);
}

static struct outcome add_one(const char *blob, int64_t id, const char *vec, const char *attrs, bool may_exist)
{
	struct vdb_vector v = {id, vec, strlen(vec), attrs, attrs ? strlen(attrs) : 0, may_exist};
	struct outcome o = {0};

	vdb_add(client, blob, &v, 1, on_done, &o);
	wait_for(&o);
	return o;
}

/* ---- the tests ----------------------------------------------------------- */

TestSuite(vdb, .init = setup_default, .fini = teardown, .timeout = 60);

Test(vdb, ensure_creates_the_tenant_and_blob_then_accepts_them_existing)
{
	struct outcome o = {0};
	json_t *r = NULL;
	struct vdb_opts vo = opts(8);

	vdb_ensure_blob(client, "abilities_x", on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
	cr_assert(eq(long, emu_call("GET", "/tenants/t1/blobs", NULL, &r), 200));
	cr_assert(eq(int, (int)json_integer_value(json_object_get(json_array_get(json_object_get(r, "blobs"), 0),
								  "dimension")), 8));
	json_decref(r);

	/* A new client knows nothing: the server answers 409 twice, and that is success. */
	client_start(&vo);
	memset(&o, 0, sizeof(o));
	vdb_ensure_blob(client, "abilities_x", on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
	cr_assert(eq(long, route_count("POST /tenants"), 2));
	cr_assert(eq(long, route_count("POST /tenants/{t}/blobs"), 2));
}

Test(vdb, already_exists_is_success_whatever_status_the_server_uses)
{
	struct vdb_opts vo = opts(8);
	struct outcome o = {0};

	cr_assert(eq(long, emu_call("POST", "/_admin/config", "{\"exists_status\": 400}", NULL), 200));
	vdb_ensure_blob(client, "abilities_x", on_done, &o);
	wait_for(&o);
	client_start(&vo);
	memset(&o, 0, sizeof(o));
	vdb_ensure_blob(client, "abilities_x", on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
}

Test(vdb, concurrent_ensures_share_one_request_and_are_cached)
{
	struct outcome a = {0}, b = {0}, c = {0};

	vdb_ensure_blob(client, "abilities_x", on_done, &a);
	vdb_ensure_blob(client, "abilities_x", on_done, &b);
	wait_for(&a);
	wait_for(&b);
	vdb_ensure_blob(client, "abilities_x", on_done, &c);
	wait_for(&c);
	cr_assert(eq(int, a.status + b.status + c.status, VDB_OK));
	cr_assert(eq(long, route_count("POST /tenants/{t}/blobs"), 1));
	cr_assert(eq(long, route_count("POST /tenants"), 1));
}

Test(vdb, an_existing_blob_of_another_dimension_is_refused)
{
	struct vdb_opts vo = opts(16);
	struct outcome o = {0};

	vdb_ensure_blob(client, "abilities_x", on_done, &o);
	wait_for(&o);
	client_start(&vo);
	memset(&o, 0, sizeof(o));
	vdb_ensure_blob(client, "abilities_x", on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_REJECTED));
	cr_assert(not(eq(ptr, strstr(o.error, "exists with dimension 8, but EMBEDDING_DIM is 16"), NULL)), "%s", o.error);
}

Test(vdb, a_3072_dimension_round_trip_is_exact_at_float32)
{
	struct vdb_opts vo = opts(3072);
	char *vec = vector_text(3072, 42);
	struct outcome o;
	json_t *want, *got;
	json_error_t jerr;
	size_t i;

	client_start(&vo);
	o = add_one("abilities_big", 7, vec, "{\"ability_id\":\"a-7\",\"n\":1}", false);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
	memset(&o, 0, sizeof(o));
	vdb_get(client, "abilities_big", 7, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
	got = json_object_get(o.reply, "vector");
	want = json_loads(vec, JSON_DECODE_ANY, &jerr);
	cr_assert(eq(sz, json_array_size(got), 3072));
	for (i = 0; i < 3072; i++)
		cr_assert(eq(flt, (float)json_number_value(json_array_get(got, i)),
			     (float)json_number_value(json_array_get(want, i))), "element %zu", i);
	cr_assert(eq(str, (char *)json_string_value(json_object_get(json_object_get(o.reply, "attributes"), "ability_id")),
		     "a-7"));
	json_decref(want);
	json_decref(o.reply);
	free(vec);
}

Test(vdb, get_delete_put_and_query)
{
	char *v1 = vector_text(8, 1), *v2 = vector_text(8, 2);
	struct outcome o;

	cr_assert(eq(int, add_one("abilities_x", 1, v1, "{\"k\":1}", false).status, VDB_OK));
	cr_assert(eq(int, add_one("abilities_x", 2, v2, "{\"k\":2}", false).status, VDB_OK));

	memset(&o, 0, sizeof(o));
	vdb_query(client, "abilities_x", v2, strlen(v2), 5, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
	cr_assert(eq(i64, json_integer_value(json_array_get(json_object_get(o.reply, "ids"), 0)), 2), "itself first");
	cr_assert(json_number_value(json_array_get(json_object_get(o.reply, "distances"), 0)) < 1e-6);
	json_decref(o.reply);

	memset(&o, 0, sizeof(o));
	vdb_put_attributes(client, "abilities_x", 1, "{\"k\":10}", 8, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
	memset(&o, 0, sizeof(o));
	vdb_get(client, "abilities_x", 1, on_done, &o);
	wait_for(&o);
	cr_assert(eq(i64, json_integer_value(json_object_get(json_object_get(o.reply, "attributes"), "k")), 10));
	json_decref(o.reply);

	memset(&o, 0, sizeof(o));
	vdb_delete(client, "abilities_x", 1, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
	memset(&o, 0, sizeof(o));
	vdb_delete(client, "abilities_x", 1, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "deleting a missing vector is success");
	cr_assert(eq(long, o.http, 404));
	memset(&o, 0, sizeof(o));
	vdb_get(client, "abilities_x", 1, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_NOT_FOUND));
	memset(&o, 0, sizeof(o));
	vdb_put_attributes(client, "abilities_x", 1, "{}", 2, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_NOT_FOUND));
	free(v1);
	free(v2);
}

Test(vdb, delete_then_add_keeps_one_copy_on_a_duplicating_server)
{
	struct vdb_opts vo = opts(8);
	char *v1 = vector_text(8, 1), *v2 = vector_text(8, 2);

	cr_assert(eq(long, emu_call("POST", "/_admin/config", "{\"duplicate_ids\": \"duplicate\"}", NULL), 200));
	cr_assert(eq(int, add_one("abilities_x", 5, v1, NULL, false).status, VDB_OK));
	cr_assert(eq(int, add_one("abilities_x", 5, v2, NULL, true).status, VDB_OK));
	cr_assert(eq(sz, stored_count("abilities_x"), 1), "delete-then-add must not duplicate");

	/* The same with `add`: the server keeps both, which is why the mode exists. */
	vo.write_mode = VDB_ADD;
	client_start(&vo);
	cr_assert(eq(int, add_one("abilities_x", 5, v1, NULL, true).status, VDB_OK));
	cr_assert(eq(sz, stored_count("abilities_x"), 2));
	free(v1);
	free(v2);
}

Test(vdb, a_failed_delete_leaves_only_that_vector_out)
{
	char *t[3] = {vector_text(8, 1), vector_text(8, 2), vector_text(8, 3)};
	struct vdb_vector vecs[3];
	struct outcome o = {0};
	json_t *r = NULL;
	int i;

	for (i = 0; i < 3; i++)
		vecs[i] = (struct vdb_vector){i + 4, t[i], strlen(t[i]), "{\"k\":1}", 7, true};
	fault("{\"path\": \"/vectors/5\", \"method\": \"DELETE\", \"status\": 400}");
	vdb_add(client, "abilities_x", vecs, 3, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_REJECTED), "%s", o.error);
	cr_assert(o.ok[0] && !o.ok[1] && o.ok[2], "per vector: %d %d %d", o.ok[0], o.ok[1], o.ok[2]);
	cr_assert(eq(long, emu_call("GET", "/_admin/tenants/t1/blobs/abilities_x/ids", NULL, &r), 200));
	cr_assert(eq(int, (int)json_integer_value(json_array_get(json_object_get(r, "ids"), 0)), 4));
	cr_assert(eq(int, (int)json_integer_value(json_array_get(json_object_get(r, "ids"), 1)), 6));
	cr_assert(eq(sz, json_array_size(json_object_get(r, "ids")), 2));
	json_decref(r);
	for (i = 0; i < 3; i++)
		free(t[i]);
}

Test(vdb, batches_are_bounded_by_bytes_and_by_count)
{
	struct vdb_opts vo = opts(256);
	struct vdb_vector vecs[10];
	char *texts[10];
	struct outcome o = {0};
	int i;

	vo.batch_bytes = 12000; /* about 2 vectors of 256 numbers per request */
	client_start(&vo);
	for (i = 0; i < 10; i++) {
		texts[i] = vector_text(256, (unsigned)i);
		vecs[i] = (struct vdb_vector){i + 1, texts[i], strlen(texts[i]), "{}", 2, false};
	}
	vdb_add(client, "abilities_x", vecs, 10, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
	cr_assert(eq(sz, stored_count("abilities_x"), 10));
	cr_assert(route_count("POST /tenants/{t}/blobs/{b}/vectors") >= 4, "not split by bytes: %ld requests",
		  route_count("POST /tenants/{t}/blobs/{b}/vectors"));

	vo.batch_bytes = 8u << 20;
	vo.batch_max = 3;
	client_start(&vo);
	memset(&o, 0, sizeof(o));
	for (i = 0; i < 10; i++)
		vecs[i].id += 100;
	vdb_add(client, "abilities_x", vecs, 10, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
	cr_assert(eq(sz, stored_count("abilities_x"), 20));
	for (i = 0; i < 10; i++)
		free(texts[i]);
}

Test(vdb, a_500_then_success_is_retried_and_written_once)
{
	char *v = vector_text(8, 3);
	struct outcome o;

	fault("{\"path\": \"/vectors\", \"method\": \"POST\", \"status\": 500, \"count\": 2}");
	o = add_one("abilities_x", 9, v, NULL, false);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
	cr_assert(eq(int, o.attempts, 3));
	cr_assert(eq(sz, stored_count("abilities_x"), 1));
	free(v);
}

Test(vdb, a_400_is_not_retried_and_says_why)
{
	char *v = vector_text(8, 3);
	struct outcome o;

	fault("{\"path\": \"/vectors\", \"method\": \"POST\", \"status\": 400, \"body\": \"{\\\"detail\\\": \\\"bad thing\\\"}\"}");
	o = add_one("abilities_x", 9, v, NULL, false);
	cr_assert(eq(int, o.status, VDB_REJECTED));
	cr_assert(eq(int, o.attempts, 1));
	cr_assert(eq(long, o.http, 400));
	cr_assert(not(eq(ptr, strstr(o.error, "bad thing"), NULL)), "the body is in the error: %s", o.error);
	cr_assert(not(o.ok[0]));
	free(v);
}

Test(vdb, retries_stop_after_max_attempts)
{
	char *v = vector_text(8, 3);
	struct outcome o;

	fault("{\"path\": \"/vectors\", \"method\": \"POST\", \"status\": 503}");
	o = add_one("abilities_x", 9, v, NULL, false);
	cr_assert(eq(int, o.status, VDB_UNAVAILABLE));
	cr_assert(eq(int, o.attempts, 3));
	cr_assert(not(eq(ptr, strstr(o.error, "after retries"), NULL)), "%s", o.error);
	free(v);
}

Test(vdb, a_time_out_is_retried_then_reported)
{
	struct vdb_opts vo = opts(8);
	struct outcome o = {0};
	int64_t t0;

	vo.timeout_ms = 300;
	vo.max_attempts = 2;
	client_start(&vo);
	fault("{\"path\": \"/vectors/1\", \"latency_ms\": 2000}");
	t0 = clock_mono_ms();
	vdb_get(client, "abilities_x", 1, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_UNAVAILABLE));
	cr_assert(eq(int, o.attempts, 2));
	cr_assert(not(eq(ptr, strstr(o.error, "imed out"), NULL)), "%s", o.error);
	cr_assert(clock_mono_ms() - t0 < 1900, "did not time out");
}

static long resets(void)
{
	json_t *r = NULL;
	long n;

	cr_assert(eq(long, emu_call("GET", "/_admin/counters", NULL, &r), 200));
	n = (long)json_integer_value(json_object_get(json_object_get(r, "faults"), "resets"));
	json_decref(r);
	return n;
}

Test(vdb, a_connection_reset_is_survived_and_writes_once)
{
	char *v = vector_text(8, 3);
	struct outcome o;

	/* libcurl retries a reused connection that died before answering; we retry the rest. */
	fault("{\"path\": \"/vectors\", \"method\": \"POST\", \"reset\": true, \"count\": 1}");
	o = add_one("abilities_x", 9, v, NULL, false);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
	cr_assert(eq(long, resets(), 1));
	cr_assert(eq(sz, stored_count("abilities_x"), 1));
	free(v);
}

Test(vdb, resets_that_go_on_end_as_unavailable)
{
	char *v = vector_text(8, 3);
	struct outcome o;

	fault("{\"path\": \"/vectors\", \"method\": \"POST\", \"reset\": true}");
	o = add_one("abilities_x", 9, v, NULL, false);
	cr_assert(eq(int, o.status, VDB_UNAVAILABLE), "%s", o.error);
	cr_assert(eq(int, o.attempts, 3));
	cr_assert(resets() >= 3);
	cr_assert(eq(sz, stored_count("abilities_x"), 0));
	free(v);
}

struct ticker {
	struct event *ev;
	int ticks;
	int64_t last_us, worst_gap_us;
};

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct ticker *t = arg;
	int64_t now = clock_mono_us();

	(void)fd, (void)what;
	if (t->last_us && now - t->last_us > t->worst_gap_us)
		t->worst_gap_us = now - t->last_us;
	t->last_us = now;
	t->ticks++;
}

Test(vdb, a_slow_server_does_not_stall_the_loop)
{
	struct timeval every = {0, 50000};
	struct ticker t = {0};
	struct outcome o = {0};

	fault("{\"path\": \"/vectors/3\", \"latency_ms\": 1500}");
	t.ev = event_new(base, -1, EV_PERSIST, on_tick, &t);
	event_add(t.ev, &every);
	vdb_get(client, "abilities_x", 3, on_done, &o);
	wait_for(&o);
	event_free(t.ev);
	cr_assert(eq(int, o.status, VDB_NOT_FOUND), "%s", o.error);
	/* 1.5 s at 50 ms: about 30 ticks, none of them held up by the request. */
	cr_assert(t.ticks >= 20, "only %d ticks while the server was slow", t.ticks);
	cr_assert(t.worst_gap_us < 400000, "the loop stalled for %lld ms", (long long)(t.worst_gap_us / 1000));
}

Test(vdb, bad_replies_are_reported_not_trusted)
{
	struct vdb_opts vo = opts(3072);
	struct outcome o = {0};
	char *v = vector_text(8, 1);

	fault("{\"path\": \"/query\", \"status\": 200, \"body\": \"{\\\"ids\\\": [1, 2], \\\"distances\\\": [0.5]}\", \"count\": 1}");
	vdb_query(client, "abilities_x", v, strlen(v), 3, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_BAD_REPLY));
	cr_assert(not(eq(ptr, strstr(o.error, "\"ids\" has 2 entries, \"distances\" 1"), NULL)), "%s", o.error);

	fault("{\"path\": \"/query\", \"status\": 200, \"body\": \"{\\\"ids\\\": [1, \", \"count\": 1}");
	memset(&o, 0, sizeof(o));
	vdb_query(client, "abilities_x", v, strlen(v), 3, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_BAD_REPLY));
	cr_assert(not(eq(ptr, strstr(o.error, "not JSON"), NULL)), "%s", o.error);

	fault("{\"path\": \"/query\", \"status\": 200, \"body\": \"{\\\"ids\\\": [\\\"x\\\"], \\\"distances\\\": [0.1]}\", \"count\": 1}");
	memset(&o, 0, sizeof(o));
	vdb_query(client, "abilities_x", v, strlen(v), 3, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_BAD_REPLY));
	cr_assert(not(eq(ptr, strstr(o.error, "ids[0] is not a non-negative integer"), NULL)), "%s", o.error);

	/* A reply over the size limit. */
	vo.max_reply = 1024;
	client_start(&vo);
	free(v);
	v = vector_text(3072, 5);
	cr_assert(eq(int, add_one("abilities_big", 1, v, NULL, false).status, VDB_OK));
	memset(&o, 0, sizeof(o));
	vdb_get(client, "abilities_big", 1, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_BAD_REPLY));
	cr_assert(not(eq(ptr, strstr(o.error, "reply larger than 1024 bytes"), NULL)), "%s", o.error);
	free(v);
}

Test(vdb, a_blob_lost_by_the_server_is_created_again)
{
	char *v = vector_text(8, 1);

	cr_assert(eq(int, add_one("abilities_x", 1, v, NULL, false).status, VDB_OK));
	cr_assert(eq(long, emu_call("POST", "/_admin/reset", "{}", NULL), 200));
	cr_assert(eq(int, add_one("abilities_x", 2, v, NULL, false).status, VDB_OK));
	cr_assert(eq(sz, stored_count("abilities_x"), 1));
	free(v);
}

Test(vdb, one_id_twice_in_an_add_is_refused_before_sending)
{
	char *v = vector_text(8, 1);
	struct vdb_vector vecs[2] = {{4, v, strlen(v), NULL, 0, false}, {4, v, strlen(v), NULL, 0, false}};
	struct outcome o = {0};

	vdb_add(client, "abilities_x", vecs, 2, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_REJECTED));
	cr_assert(not(eq(ptr, strstr(o.error, "id 4 appears twice"), NULL)), "%s", o.error);
	cr_assert(eq(long, route_count("POST /tenants/{t}/blobs/{b}/vectors"), 0));
	free(v);
}

Test(vdb, inflight_requests_are_bounded)
{
	struct vdb_opts vo = opts(8);
	struct outcome o[6];
	int64_t t0;
	int i;

	vo.max_inflight = 2;
	client_start(&vo);
	fault("{\"path\": \"/vectors/\", \"method\": \"GET\", \"latency_ms\": 300}");
	memset(o, 0, sizeof(o));
	t0 = clock_mono_ms();
	for (i = 0; i < 6; i++)
		vdb_get(client, "abilities_x", i + 1, on_done, &o[i]);
	for (i = 0; i < 6; i++)
		wait_for(&o[i]);
	/* Six 300 ms requests two at a time: three rounds. */
	cr_assert(clock_mono_ms() - t0 >= 850, "more than 2 in flight: %lld ms", (long long)(clock_mono_ms() - t0));
}

Test(vdb, freeing_the_client_cancels_what_is_pending)
{
	struct outcome a = {0}, b = {0};
	char *v = vector_text(8, 1);
	struct vdb_vector vec = {1, v, strlen(v), NULL, 0, false};

	fault("{\"latency_ms\": 1000}");
	vdb_get(client, "abilities_x", 1, on_done, &a);
	vdb_add(client, "abilities_x", &vec, 1, on_done, &b);
	event_base_loop(base, EVLOOP_NONBLOCK);
	vdb_free(client);
	client = NULL;
	cr_assert(eq(int, a.calls, 1));
	cr_assert(eq(int, b.calls, 1));
	cr_assert(eq(int, a.status, VDB_CANCELLED));
	cr_assert(eq(int, b.status, VDB_CANCELLED));
	free(v);
}

Test(vdb, api_key_in_either_header)
{
	const char *const bearer[] = {"--api-key", "s3cret", NULL};
	const char *const xkey[] = {"--api-key", "s3cret", "--auth-header", "x-api-key", NULL};
	struct vdb_opts vo;
	struct outcome o = {0};

	emu_stop();
	emu_start(bearer);
	vo = opts(8);
	client_start(&vo);
	vdb_ensure_tenant(client, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_REJECTED), "no key: refused, not retried");
	cr_assert(eq(long, o.http, 401));

	vo.api_key = "s3cret";
	client_start(&vo);
	memset(&o, 0, sizeof(o));
	vdb_ensure_tenant(client, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);

	emu_stop();
	emu_start(xkey);
	vo = opts(8);
	vo.api_key = "s3cret";
	vo.auth = VDB_AUTH_X_API_KEY;
	client_start(&vo);
	memset(&o, 0, sizeof(o));
	vdb_ensure_tenant(client, on_done, &o);
	wait_for(&o);
	cr_assert(eq(int, o.status, VDB_OK), "%s", o.error);
}

Test(vdb, a_call_whose_deadline_has_passed_fails_later_and_sends_nothing)
{
	struct vdb_call late = {clock_mono_ms() - 1, "late"};
	struct outcome o = {0};
	long deletes = route_count("DELETE /tenants/{t}/blobs/{b}/vectors/{id}");

	vdb_delete_call(client, &late, "abilities_x", 5, on_done, &o);
	/* Never inside the call: its caller may still be using what the callback frees. */
	cr_assert(eq(int, o.calls, 0));
	wait_for(&o);
	cr_assert(eq(int, o.calls, 1));
	cr_assert(not(eq(int, o.status, VDB_OK)), "%s", o.error);
	cr_assert(eq(long, route_count("DELETE /tenants/{t}/blobs/{b}/vectors/{id}"), deletes), "nothing was sent");
	json_decref(o.reply);
	/* The same call in time is sent (and counted where the late one would have been). */
	memset(&o, 0, sizeof(o));
	late.deadline_ms = clock_mono_ms() + 5000;
	vdb_delete_call(client, &late, "abilities_x", 5, on_done, &o);
	wait_for(&o);
	cr_assert(eq(long, route_count("DELETE /tenants/{t}/blobs/{b}/vectors/{id}"), deletes + 1));
	json_decref(o.reply);
}
