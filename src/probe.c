#include "probe.h"

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "mem.h"

#include <event2/event.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COMP "probe"

/* Findings, filled in as the probe goes. */
struct findings {
	bool reachable;
	long health_http;
	char unreachable_why[512];
	bool key_needed;            /* a request without a key was refused */
	bool key_set;
	bool bearer_works, x_api_key_works;
	long no_key_http;
	long tenant_exists_http, blob_exists_http;
	char tenant_exists_body[160], blob_exists_body[160];
	const char *duplicate_ids;  /* overwrite | reject | duplicate | ignore */
	long readd_http;
	bool get_returns_vector, get_vector_exact;
	bool get_returns_attributes;
	long delete_missing_http;
	size_t largest_batch, largest_batch_bytes;
	size_t refused_batch;       /* 0: none refused up to max_batch */
	long refused_batch_http;
	bool cleaned_up;
	char problem[512];          /* why the probe stopped early */
};

struct probe {
	const struct probe_opts *o;
	struct event_base *base;
	struct vdb *v;
	unsigned auth;              /* enum vdb_raw_auth that works */
	char tenant[64];
	bool tenant_created;
	struct findings f;
	/* the call in progress */
	bool done;
	long http;
	json_t *reply;
	char error[512];
};

static void on_call_done(const struct vdb_result *r, void *arg)
{
	struct probe *p = arg;

	p->http = r->http;
	p->reply = json_incref(r->reply);
	snprintf(p->error, sizeof(p->error), "%s", r->error);
	p->done = true;
}

/* One request, waited for; returns the HTTP status (0: no answer, see p->error). */
static long call(struct probe *p, const char *method, const char *path, const char *body, unsigned auth)
{
	json_decref(p->reply);
	p->reply = NULL;
	p->done = false;
	vdb_raw(p->v, method, path, body, body ? strlen(body) : 0, auth, on_call_done, p);
	vdb_run_until(p->v, &p->done);
	return p->http;
}

static bool is_2xx(long http)
{
	return http >= 200 && http < 300;
}

static void snip_reply(const struct probe *p, char *out, size_t outlen)
{
	char *text = p->reply ? json_dumps(p->reply, JSON_COMPACT) : NULL;

	snprintf(out, outlen, "%s", text ? text : "");
	free(text);
}

/* A deterministic vector, different per seed, printed the way clients send them. */
static void make_vector(struct buf *b, int dim, unsigned seed)
{
	uint32_t x = seed * 2654435761u + 1;
	int i;

	buf_putc(b, '[');
	for (i = 0; i < dim; i++) {
		x ^= x << 13, x ^= x >> 17, x ^= x << 5;
		buf_printf(b, "%s%.7f", i ? "," : "", ((double)(x % 20001) - 10000.0) / 10000.0);
	}
	buf_putc(b, ']');
}

static bool step_reach(struct probe *p)
{
	p->f.health_http = call(p, "GET", "/health", NULL, VDB_RAW_NO_AUTH);
	p->f.reachable = p->f.health_http > 0;
	if (!p->f.reachable)
		snprintf(p->f.unreachable_why, sizeof(p->f.unreachable_why), "%s", p->error);
	return p->f.reachable;
}

static bool step_auth(struct probe *p)
{
	struct findings *f = &p->f;

	f->no_key_http = call(p, "GET", "/tenants", NULL, VDB_RAW_NO_AUTH);
	f->key_needed = f->no_key_http == 401 || f->no_key_http == 403;
	f->key_set = p->o->vdb->api_key && *p->o->vdb->api_key;
	p->auth = VDB_RAW_NO_AUTH;
	if (f->key_set) {
		f->bearer_works = is_2xx(call(p, "GET", "/tenants", NULL, VDB_RAW_BEARER));
		f->x_api_key_works = is_2xx(call(p, "GET", "/tenants", NULL, VDB_RAW_X_API_KEY));
		if (f->key_needed)
			p->auth = f->bearer_works ? VDB_RAW_BEARER : VDB_RAW_X_API_KEY;
	}
	if (f->key_needed && !f->bearer_works && !f->x_api_key_works) {
		snprintf(f->problem, sizeof(f->problem), f->key_set
			 ? "the server wants a key and refuses VECTOR_DB_API_KEY in both Authorization and X-API-Key"
			 : "the server wants a key (HTTP %ld without one): set VECTOR_DB_API_KEY", f->no_key_http);
		return false;
	}
	if (!is_2xx(f->no_key_http) && !f->key_needed) {
		snprintf(f->problem, sizeof(f->problem), "GET /tenants answered HTTP %ld", f->no_key_http);
		return false;
	}
	return true;
}

static bool step_tenant_and_blob(struct probe *p)
{
	struct buf body = BUF_INIT, path = BUF_INIT;
	long http;
	bool ok = false;

	snprintf(p->tenant, sizeof(p->tenant), "abilitysync_probe_%d_%u", (int)getpid(), clock_jitter_ms(1u << 30));
	buf_printf(&body, "{\"tenant_id\":\"%s\"}", p->tenant);
	http = call(p, "POST", "/tenants", body.data, p->auth);
	if (!is_2xx(http)) {
		snprintf(p->f.problem, sizeof(p->f.problem), "creating a scratch tenant answered HTTP %ld: %.400s", http,
			 p->error);
		goto out;
	}
	p->tenant_created = true;
	p->f.tenant_exists_http = call(p, "POST", "/tenants", body.data, p->auth);
	snip_reply(p, p->f.tenant_exists_body, sizeof(p->f.tenant_exists_body));
	buf_reset(&body);
	buf_printf(&body, "{\"blob_id\":\"probe\",\"blob_type\":\"dense\",\"dimension\":%d}", p->o->vdb->dimension);
	buf_printf(&path, "/tenants/%s/blobs", p->tenant);
	http = call(p, "POST", path.data, body.data, p->auth);
	if (!is_2xx(http)) {
		snprintf(p->f.problem, sizeof(p->f.problem), "creating a blob answered HTTP %ld: %.400s", http, p->error);
		goto out;
	}
	p->f.blob_exists_http = call(p, "POST", path.data, body.data, p->auth);
	snip_reply(p, p->f.blob_exists_body, sizeof(p->f.blob_exists_body));
	ok = true;
out:
	buf_free(&body);
	buf_free(&path);
	return ok;
}

/* Adds vectors seed..seed+n-1 with ids id0.., attribute {"probe": seed}. Returns the HTTP status. */
static long add_vectors(struct probe *p, int64_t id0, size_t n, unsigned seed, size_t *bytes)
{
	struct buf body = BUF_INIT, path = BUF_INIT;
	size_t i;
	long http;

	buf_puts(&body, "{\"vectors\":[");
	for (i = 0; i < n; i++) {
		if (i)
			buf_putc(&body, ',');
		make_vector(&body, p->o->vdb->dimension, seed + (unsigned)i);
	}
	buf_puts(&body, "],\"ids\":[");
	for (i = 0; i < n; i++)
		buf_printf(&body, "%s%lld", i ? "," : "", (long long)(id0 + (int64_t)i));
	buf_puts(&body, "],\"attributes\":[");
	for (i = 0; i < n; i++)
		buf_printf(&body, "%s{\"probe\":%u}", i ? "," : "", seed);
	buf_puts(&body, "]}");
	buf_printf(&path, "/tenants/%s/blobs/probe/vectors", p->tenant);
	if (bytes)
		*bytes = body.len;
	http = call(p, "POST", path.data, body.data, p->auth);
	buf_free(&body);
	buf_free(&path);
	return http;
}

/* Is the GET reply's vector the one sent, at float32 precision? */
static bool vector_matches(json_t *got, int dim, unsigned seed)
{
	struct buf sent = BUF_INIT;
	json_error_t jerr;
	json_t *want;
	size_t i;
	bool same;

	make_vector(&sent, dim, seed);
	want = json_loadb(sent.data, sent.len, 0, &jerr);
	same = json_is_array(got) && json_array_size(got) == json_array_size(want);
	for (i = 0; same && i < json_array_size(want); i++)
		same = (float)json_number_value(json_array_get(got, i)) ==
		       (float)json_number_value(json_array_get(want, i));
	json_decref(want);
	buf_free(&sent);
	return same;
}

/* How many of the top hits for the vector of `seed` have id 1. */
static int hits_for_id1(struct probe *p, unsigned seed)
{
	struct buf body = BUF_INIT, path = BUF_INIT;
	json_t *x;
	size_t i;
	int hits = 0;

	buf_puts(&body, "{\"query\":");
	make_vector(&body, p->o->vdb->dimension, seed);
	buf_puts(&body, ",\"k\":10}");
	buf_printf(&path, "/tenants/%s/blobs/probe/query", p->tenant);
	if (is_2xx(call(p, "POST", path.data, body.data, p->auth)))
		json_array_foreach(json_object_get(p->reply, "ids"), i, x)
			hits += json_integer_value(x) == 1;
	buf_free(&body);
	buf_free(&path);
	return hits;
}

static bool step_vectors(struct probe *p)
{
	struct findings *f = &p->f;
	struct buf path = BUF_INIT;
	long http;
	bool ok = false;

	if (!is_2xx(http = add_vectors(p, 1, 1, 1, NULL))) {
		snprintf(f->problem, sizeof(f->problem), "adding a vector answered HTTP %ld: %.400s", http, p->error);
		goto out;
	}
	buf_printf(&path, "/tenants/%s/blobs/probe/vectors/1", p->tenant);
	if (is_2xx(call(p, "GET", path.data, NULL, p->auth))) {
		json_t *vec = json_object_get(p->reply, "vector");

		f->get_returns_vector = json_is_array(vec);
		f->get_vector_exact = f->get_returns_vector && vector_matches(vec, p->o->vdb->dimension, 1);
		f->get_returns_attributes = json_is_object(json_object_get(p->reply, "attributes"));
	}
	/* Re-add id 1 with another vector and attributes, then look. */
	f->readd_http = add_vectors(p, 1, 1, 2, NULL);
	if (!is_2xx(f->readd_http)) {
		f->duplicate_ids = "reject";
	} else {
		int old_hits, new_hits;
		json_int_t seen;

		/* Which attributes GET shows; read now, the next call replaces the reply. */
		call(p, "GET", path.data, NULL, p->auth);
		seen = json_integer_value(json_object_get(json_object_get(p->reply, "attributes"), "probe"));
		old_hits = hits_for_id1(p, 1);
		new_hits = hits_for_id1(p, 2);
		if (old_hits + new_hits >= 3)
			f->duplicate_ids = "duplicate";
		else if (seen == 2)
			f->duplicate_ids = "overwrite";
		else
			f->duplicate_ids = "ignore";
	}
	call(p, "DELETE", path.data, NULL, p->auth);
	f->delete_missing_http = call(p, "DELETE", path.data, NULL, p->auth);
	ok = true;
out:
	buf_free(&path);
	return ok;
}

static void step_batches(struct probe *p)
{
	struct findings *f = &p->f;
	size_t n, bytes;
	int64_t next_id = 1000;

	for (n = 1; n <= p->o->max_batch; n *= 2) {
		long http = add_vectors(p, next_id, n, 100, &bytes);

		if (!is_2xx(http)) {
			f->refused_batch = n;
			f->refused_batch_http = http;
			break;
		}
		f->largest_batch = n;
		f->largest_batch_bytes = bytes;
		next_id += (int64_t)n;
	}
}

static void step_cleanup(struct probe *p)
{
	struct buf path = BUF_INIT;
	json_t *t;
	size_t i;
	bool listed = false;

	buf_printf(&path, "/tenants/%s?confirm=true", p->tenant);
	call(p, "DELETE", path.data, NULL, p->auth);
	if (is_2xx(call(p, "GET", "/tenants", NULL, p->auth))) {
		json_array_foreach(json_object_get(p->reply, "tenants"), i, t) {
			json_t *id = json_is_string(t) ? t : json_object_get(t, "tenant_id");

			listed = listed || (json_is_string(id) && strcmp(json_string_value(id), p->tenant) == 0);
		}
		p->f.cleaned_up = !listed;
	}
	buf_free(&path);
}

static const char *auth_name(unsigned auth)
{
	return auth == VDB_RAW_X_API_KEY ? "x-api-key" : "authorization";
}

static json_t *findings_json(const struct probe *p)
{
	const struct findings *f = &p->f;
	json_t *j = json_object(), *rec = json_object();

	json_object_set_new(j, "url", json_string(p->o->vdb->base_url));
	json_object_set_new(j, "reachable", json_boolean(f->reachable));
	json_object_set_new(j, "key_needed", json_boolean(f->key_needed));
	json_object_set_new(j, "bearer_works", json_boolean(f->bearer_works));
	json_object_set_new(j, "x_api_key_works", json_boolean(f->x_api_key_works));
	json_object_set_new(j, "tenant_exists_status", json_integer(f->tenant_exists_http));
	json_object_set_new(j, "blob_exists_status", json_integer(f->blob_exists_http));
	json_object_set_new(j, "duplicate_ids", f->duplicate_ids ? json_string(f->duplicate_ids) : json_null());
	json_object_set_new(j, "get_returns_vector", json_boolean(f->get_returns_vector));
	json_object_set_new(j, "get_vector_exact", json_boolean(f->get_vector_exact));
	json_object_set_new(j, "delete_missing_status", json_integer(f->delete_missing_http));
	json_object_set_new(j, "largest_batch", json_integer((json_int_t)f->largest_batch));
	json_object_set_new(j, "largest_batch_bytes", json_integer((json_int_t)f->largest_batch_bytes));
	json_object_set_new(j, "refused_batch", f->refused_batch ? json_integer((json_int_t)f->refused_batch) : json_null());
	json_object_set_new(j, "cleaned_up", json_boolean(f->cleaned_up));
	json_object_set_new(j, "problem", f->problem[0] ? json_string(f->problem) : json_null());
	if (f->duplicate_ids)
		json_object_set_new(rec, "VDB_WRITE_MODE",
				    json_string(strcmp(f->duplicate_ids, "overwrite") == 0 ? "add" : "delete-then-add"));
	if (f->key_needed)
		json_object_set_new(rec, "VECTOR_DB_AUTH_HEADER", json_string(auth_name(p->auth)));
	if (f->largest_batch) {
		/* Half the largest accepted: the real limit lies somewhere above it. */
		size_t batch = f->refused_batch ? (f->largest_batch + 1) / 2 : f->largest_batch;

		json_object_set_new(rec, "VDB_BATCH_MAX", json_integer((json_int_t)(batch ? batch : 1)));
		json_object_set_new(rec, "VDB_BATCH_BYTES",
				    json_integer((json_int_t)(f->largest_batch_bytes / (f->refused_batch ? 2 : 1))));
	}
	json_object_set_new(j, "recommended", rec);
	return j;
}

static void print_report(const struct probe *p, json_t *j)
{
	const struct findings *f = &p->f;
	json_t *rec = json_object_get(j, "recommended"), *v;
	const char *k;

	printf("probe of %s\n", p->o->vdb->base_url);
	if (!f->reachable) {
		printf("  reachable          no: %s\n", f->unreachable_why);
		return;
	}
	printf("  reachable          yes (GET /health answered %ld)\n", f->health_http);
	if (!f->key_needed)
		printf("  API key            not needed (GET /tenants without one answered %ld)\n", f->no_key_http);
	else
		printf("  API key            needed (%ld without one); Authorization: Bearer %s, X-API-Key %s\n",
		       f->no_key_http, f->bearer_works ? "works" : "refused", f->x_api_key_works ? "works" : "refused");
	if (f->tenant_exists_http)
		printf("  tenant exists      answers %ld %s\n", f->tenant_exists_http, f->tenant_exists_body);
	if (f->blob_exists_http)
		printf("  blob exists        answers %ld %s\n", f->blob_exists_http, f->blob_exists_body);
	if (f->duplicate_ids)
		printf("  re-adding an id    %s%s\n", f->duplicate_ids,
		       strcmp(f->duplicate_ids, "overwrite") == 0 ? " (the new vector and attributes replace the old)"
		       : strcmp(f->duplicate_ids, "reject") == 0 ? " (refused; delete first)"
		       : strcmp(f->duplicate_ids, "duplicate") == 0 ? " (both kept: searches return the id twice)"
		       : " (the first is kept, the second ignored)");
	if (f->duplicate_ids)
		printf("  GET by id          %s\n", !f->get_returns_vector ? "id and attributes only, no vector"
		       : f->get_vector_exact ? "returns the vector, exact at float32" : "returns a different vector");
	if (f->delete_missing_http)
		printf("  delete missing id  answers %ld\n", f->delete_missing_http);
	if (f->largest_batch)
		printf("  largest batch      %zu vectors (%zu bytes) accepted%s\n", f->largest_batch, f->largest_batch_bytes,
		       f->refused_batch ? "" : "; no larger batch tried");
	if (f->refused_batch)
		printf("                     %zu vectors refused with HTTP %ld\n", f->refused_batch, f->refused_batch_http);
	if (f->problem[0])
		printf("  stopped            %s\n", f->problem);
	if (p->tenant_created)
		printf("  scratch tenant     %s %s\n", p->tenant, f->cleaned_up ? "deleted" : "NOT deleted: delete it by hand");
	if (json_object_size(rec)) {
		printf("\nrecommended configuration:\n");
		json_object_foreach(rec, k, v) {
			if (json_is_string(v))
				printf("  %s=%s\n", k, json_string_value(v));
			else
				printf("  %s=%lld\n", k, (long long)json_integer_value(v));
		}
	}
}

int probe_run(const struct probe_opts *o)
{
	struct probe p;
	struct vdb_opts vo = *o->vdb;
	struct errbuf err;
	json_t *j;
	int rc;

	memset(&p, 0, sizeof(p));
	p.o = o;
	p.base = event_base_new();
	vo.max_attempts = 1;
	p.v = p.base ? vdb_new(p.base, &vo, &err) : NULL;
	if (!p.v) {
		log_error(COMP, "%s", p.base ? err.msg : "cannot create an event loop");
		if (p.base)
			event_base_free(p.base);
		return EXIT_FAIL;
	}
	if (step_reach(&p) && step_auth(&p) && step_tenant_and_blob(&p) && step_vectors(&p))
		step_batches(&p);
	if (p.tenant_created)
		step_cleanup(&p);
	j = findings_json(&p);
	if (o->json) {
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
	} else {
		print_report(&p, j);
	}
	rc = p.f.reachable && !p.f.problem[0] && (!p.tenant_created || p.f.cleaned_up) ? EXIT_OK : EXIT_FAIL;
	json_decref(j);
	json_decref(p.reply);
	vdb_free(p.v);
	event_base_free(p.base);
	return rc;
}
