/* The emulator's store (duplicate-id modes, atomic batches, the id map, cosine top-k) and fault rules. */
#include "emu_fault.h"
#include "emu_store.h"

#include "mem.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#define DIM 3

struct fixture {
	struct emu_store s;
	struct emu_tenant *t;
	struct emu_blob *b;
};

static void open_blob(struct fixture *f, long long max_vectors)
{
	emu_store_init(&f->s);
	f->t = emu_tenant_add(&f->s, "t", max_vectors);
	f->b = emu_blob_add(f->t, "b", "dense", DIM);
}

/* Adds n vectors (DIM floats each) with the given ids (NULL: assigned) and no attributes. */
static enum emu_add_result add(struct fixture *f, const float *vecs, size_t n, const int64_t *ids,
			       enum emu_dup_mode mode, int64_t *out)
{
	struct emu_batch batch = {n, ids, NULL};
	struct errbuf err;
	int64_t scratch[64];

	return emu_blob_add_vectors(f->t, f->b, vecs, &batch, mode, out ? out : scratch, &err);
}

static enum emu_add_result add_one(struct fixture *f, int64_t id, float x, float y, float z, enum emu_dup_mode mode)
{
	const float v[DIM] = {x, y, z};

	return add(f, v, 1, &id, mode, NULL);
}

/* Adds one vector with attributes (copied). */
static enum emu_add_result add_attrs(struct fixture *f, int64_t id, float x, const char *attrs,
				     enum emu_dup_mode mode, struct errbuf *err)
{
	const float v[DIM] = {x, 0, 0};
	char *a[1] = {attrs ? xstrdup(attrs) : NULL};
	struct emu_batch batch = {1, &id, a};
	int64_t out;

	return emu_blob_add_vectors(f->t, f->b, v, &batch, mode, &out, err);
}

static size_t chain_len(const struct emu_blob *b, int64_t id)
{
	size_t e, n = 0;

	for (e = emu_blob_lookup(b, id); e != EMU_NONE; e = b->next[e])
		n++;
	return n;
}

static float first_float(const struct emu_blob *b, int64_t id)
{
	size_t e = emu_blob_lookup(b, id);

	cr_assert(e != EMU_NONE, "id %lld missing", (long long)id);
	return emu_blob_vector(b, e)[0];
}

Test(emu_store, server_assigned_ids_start_above_the_largest_seen)
{
	struct fixture f;
	const float v[2 * DIM] = {1, 0, 0, 0, 1, 0};
	int64_t out[2], id = 100;

	open_blob(&f, 0);
	cr_assert(eq(int, add(&f, v, 2, NULL, EMU_DUP_OVERWRITE, out), EMU_ADD_OK));
	cr_assert(eq(i64, out[0], 0));
	cr_assert(eq(i64, out[1], 1));
	cr_assert(eq(int, add(&f, v, 1, &id, EMU_DUP_OVERWRITE, out), EMU_ADD_OK));
	cr_assert(eq(int, add(&f, v, 2, NULL, EMU_DUP_OVERWRITE, out), EMU_ADD_OK));
	cr_assert(eq(i64, out[0], 101));
	cr_assert(eq(i64, out[1], 102));
	cr_assert(eq(sz, f.b->count, 5));
	emu_store_free(&f.s);
}

Test(emu_store, no_ids_left_above_int64_max)
{
	struct fixture f;
	const float v[DIM] = {1, 0, 0};
	int64_t id = INT64_MAX;

	open_blob(&f, 0);
	cr_assert(eq(int, add(&f, v, 1, &id, EMU_DUP_OVERWRITE, NULL), EMU_ADD_OK));
	cr_assert(eq(int, add(&f, v, 1, NULL, EMU_DUP_OVERWRITE, NULL), EMU_ADD_INVALID));
	cr_assert(eq(sz, f.b->count, 1));
	emu_store_free(&f.s);
}

Test(emu_store, overwrite_replaces_vector_and_attributes)
{
	struct fixture f;
	struct errbuf err;

	open_blob(&f, 0);
	cr_assert(eq(int, add_attrs(&f, 7, 1, "{\"v\":1}", EMU_DUP_OVERWRITE, &err), EMU_ADD_OK));
	cr_assert(eq(int, add_attrs(&f, 7, 2, NULL, EMU_DUP_OVERWRITE, &err), EMU_ADD_OK));
	cr_assert(eq(sz, f.b->count, 1));
	cr_assert(eq(flt, first_float(f.b, 7), 2));
	cr_assert(eq(ptr, f.b->attrs[emu_blob_lookup(f.b, 7)], NULL), "attributes not replaced");
	cr_assert(eq(int, add_attrs(&f, 7, 3, "{\"v\":3}", EMU_DUP_OVERWRITE, &err), EMU_ADD_OK));
	cr_assert(eq(str, f.b->attrs[emu_blob_lookup(f.b, 7)], "{\"v\":3}"));
	emu_store_free(&f.s);
}

Test(emu_store, overwrite_within_one_batch_keeps_the_last)
{
	struct fixture f;
	const float v[2 * DIM] = {1, 0, 0, 2, 0, 0};
	const int64_t ids[2] = {4, 4};

	open_blob(&f, 0);
	cr_assert(eq(int, add(&f, v, 2, ids, EMU_DUP_OVERWRITE, NULL), EMU_ADD_OK));
	cr_assert(eq(sz, f.b->count, 1));
	cr_assert(eq(flt, first_float(f.b, 4), 2));
	emu_store_free(&f.s);
}

Test(emu_store, reject_refuses_the_whole_batch)
{
	struct fixture f;
	const float v[3 * DIM] = {5, 0, 0, 6, 0, 0, 7, 0, 0};
	const int64_t ids[3] = {10, 1, 11};
	char *attrs[3] = {xstrdup("{}"), xstrdup("{\"a\":1}"), NULL};
	struct emu_batch batch = {3, ids, attrs};
	struct errbuf err;
	int64_t out[3];

	open_blob(&f, 0);
	cr_assert(eq(int, add_one(&f, 1, 1, 0, 0, EMU_DUP_REJECT), EMU_ADD_OK));
	/* The attributes are taken over even when refused: LSan would report them otherwise. */
	cr_assert(eq(int, emu_blob_add_vectors(f.t, f.b, v, &batch, EMU_DUP_REJECT, out, &err), EMU_ADD_EXISTS));
	cr_assert(eq(str, err.msg, "Vector id 1 already exists"));
	cr_assert(eq(sz, f.b->count, 1));
	cr_assert(eq(sz, emu_blob_lookup(f.b, 10), EMU_NONE), "part of a refused batch was stored");
	cr_assert(eq(flt, first_float(f.b, 1), 1));
	emu_store_free(&f.s);
}

Test(emu_store, reject_refuses_an_id_repeated_in_the_batch)
{
	struct fixture f;
	const float v[2 * DIM] = {1, 0, 0, 2, 0, 0};
	const int64_t ids[2] = {3, 3};

	open_blob(&f, 0);
	cr_assert(eq(int, add(&f, v, 2, ids, EMU_DUP_REJECT, NULL), EMU_ADD_EXISTS));
	cr_assert(eq(sz, f.b->count, 0));
	emu_store_free(&f.s);
}

Test(emu_store, duplicate_mode_keeps_every_entry)
{
	struct fixture f;
	int64_t ids[4];

	open_blob(&f, 0);
	cr_assert(eq(int, add_one(&f, 9, 1, 0, 0, EMU_DUP_DUPLICATE), EMU_ADD_OK));
	cr_assert(eq(int, add_one(&f, 9, 2, 0, 0, EMU_DUP_DUPLICATE), EMU_ADD_OK));
	cr_assert(eq(int, add_one(&f, 8, 3, 0, 0, EMU_DUP_DUPLICATE), EMU_ADD_OK));
	cr_assert(eq(sz, f.b->count, 3));
	cr_assert(eq(sz, chain_len(f.b, 9), 2));
	emu_blob_ids_sorted(f.b, ids);
	cr_assert(eq(i64, ids[0], 8));
	cr_assert(eq(i64, ids[1], 9));
	cr_assert(eq(i64, ids[2], 9));
	cr_assert(eq(sz, emu_blob_set_attrs(f.b, 9, xstrdup("{\"x\":1}")), 2));
	cr_assert(eq(sz, emu_blob_delete_id(f.b, 9), 2));
	cr_assert(eq(sz, f.b->count, 1));
	cr_assert(eq(flt, first_float(f.b, 8), 3));
	emu_store_free(&f.s);
}

Test(emu_store, tenant_quota_counts_only_new_entries)
{
	struct fixture f;
	const float v[2 * DIM] = {1, 0, 0, 2, 0, 0};
	const int64_t ids[2] = {1, 2}, more[2] = {2, 3};

	open_blob(&f, 2);
	cr_assert(eq(int, add(&f, v, 2, ids, EMU_DUP_OVERWRITE, NULL), EMU_ADD_OK));
	cr_assert(eq(int, add(&f, v, 2, ids, EMU_DUP_OVERWRITE, NULL), EMU_ADD_OK), "overwrites add nothing");
	cr_assert(eq(int, add(&f, v, 2, more, EMU_DUP_OVERWRITE, NULL), EMU_ADD_INVALID));
	cr_assert(eq(sz, emu_blob_lookup(f.b, 3), EMU_NONE));
	cr_assert(eq(sz, emu_tenant_vectors(f.t), 2));
	emu_store_free(&f.s);
}

Test(emu_store, delete_moves_the_last_entry_and_keeps_the_map_right)
{
	struct fixture f;
	int64_t id;

	open_blob(&f, 0);
	for (id = 0; id < 10; id++)
		cr_assert(eq(int, add_one(&f, id, (float)id, 1, 0, EMU_DUP_OVERWRITE), EMU_ADD_OK));
	cr_assert(eq(sz, emu_blob_delete_id(f.b, 0), 1)); /* the last (9) moves into entry 0 */
	cr_assert(eq(sz, emu_blob_delete_id(f.b, 9), 1)); /* ... and is then removed from there */
	cr_assert(eq(sz, emu_blob_delete_id(f.b, 4), 1));
	cr_assert(eq(sz, emu_blob_delete_id(f.b, 4), 0));
	cr_assert(eq(sz, f.b->count, 7));
	for (id = 1; id < 9; id++) {
		if (id == 4)
			continue;
		cr_assert(eq(i64, f.b->ids[emu_blob_lookup(f.b, id)], id));
		cr_assert(eq(flt, first_float(f.b, id), (float)id));
	}
	emu_store_free(&f.s);
}

/* Random adds and deletes in duplicate mode against a plain count per id. */
Test(emu_store, map_and_chains_match_a_reference_model)
{
	enum { IDS = 50, STEPS = 5000 };
	struct fixture f;
	size_t want[IDS] = {0}, total = 0, i, e;
	unsigned seed = 12345;

	open_blob(&f, 0);
	for (i = 0; i < STEPS; i++) {
		int64_t id = rand_r(&seed) % IDS;

		if (rand_r(&seed) % 3) {
			cr_assert(eq(int, add_one(&f, id, (float)id, 0, 0, EMU_DUP_DUPLICATE), EMU_ADD_OK));
			want[id]++;
			total++;
		} else {
			cr_assert(eq(sz, emu_blob_delete_id(f.b, id), want[id]));
			total -= want[id];
			want[id] = 0;
		}
	}
	cr_assert(eq(sz, f.b->count, total));
	for (i = 0; i < IDS; i++) {
		cr_assert(eq(sz, chain_len(f.b, (int64_t)i), want[i]), "id %zu", i);
		for (e = emu_blob_lookup(f.b, (int64_t)i); e != EMU_NONE; e = f.b->next[e]) {
			cr_assert(eq(i64, f.b->ids[e], (int64_t)i));
			cr_assert(eq(flt, emu_blob_vector(f.b, e)[0], (float)i));
		}
	}
	emu_store_free(&f.s);
}

Test(emu_store, query_orders_by_cosine_distance_then_id)
{
	struct fixture f;
	struct emu_hit hits[10];
	const float q[DIM] = {1, 0, 0};
	size_t n;

	open_blob(&f, 0);
	cr_assert(eq(int, add_one(&f, 5, 0, 1, 0, EMU_DUP_OVERWRITE), EMU_ADD_OK));   /* 1 */
	cr_assert(eq(int, add_one(&f, 4, 2, 0, 0, EMU_DUP_OVERWRITE), EMU_ADD_OK));   /* 0: length does not matter */
	cr_assert(eq(int, add_one(&f, 3, 1, 1, 0, EMU_DUP_OVERWRITE), EMU_ADD_OK));   /* 1 - 1/sqrt(2) */
	cr_assert(eq(int, add_one(&f, 2, -1, 0, 0, EMU_DUP_OVERWRITE), EMU_ADD_OK));  /* 2 */
	cr_assert(eq(int, add_one(&f, 1, 0, 0, 1, EMU_DUP_OVERWRITE), EMU_ADD_OK));   /* 1, ties with 5 */
	cr_assert(eq(int, add_one(&f, 6, 0, 0, 0, EMU_DUP_OVERWRITE), EMU_ADD_OK));   /* zero vector: 1 */
	n = emu_blob_query(f.b, q, 10, hits);
	cr_assert(eq(sz, n, 6));
	cr_assert(eq(i64, hits[0].id, 4));
	cr_assert(hits[0].distance < 1e-12);
	cr_assert(eq(i64, hits[1].id, 3));
	cr_assert(hits[1].distance > 0.2928 && hits[1].distance < 0.2930);
	cr_assert(eq(i64, hits[2].id, 1));
	cr_assert(eq(i64, hits[3].id, 5));
	cr_assert(eq(i64, hits[4].id, 6));
	cr_assert(eq(dbl, hits[4].distance, 1));
	cr_assert(eq(i64, hits[5].id, 2));
	cr_assert(eq(dbl, hits[5].distance, 2));
	/* Top 3 out of 6. */
	cr_assert(eq(sz, emu_blob_query(f.b, q, 3, hits), 3));
	cr_assert(eq(i64, hits[2].id, 1));
	emu_store_free(&f.s);
}

Test(emu_store, a_zero_query_is_at_distance_one_from_everything)
{
	struct fixture f;
	struct emu_hit hits[4];
	const float zero[DIM] = {0, 0, 0};

	open_blob(&f, 0);
	cr_assert(eq(int, add_one(&f, 2, 1, 0, 0, EMU_DUP_OVERWRITE), EMU_ADD_OK));
	cr_assert(eq(int, add_one(&f, 1, 0, 1, 0, EMU_DUP_OVERWRITE), EMU_ADD_OK));
	cr_assert(eq(sz, emu_blob_query(f.b, zero, 4, hits), 2));
	cr_assert(eq(dbl, hits[0].distance, 1));
	cr_assert(eq(i64, hits[0].id, 1));
	cr_assert(eq(i64, hits[1].id, 2));
	emu_store_free(&f.s);
}

Test(emu_store, top_k_over_many_vectors_matches_a_full_sort)
{
	enum { N = 2000, K = 25 };
	struct fixture f;
	struct emu_hit top[K], all[N];
	float q[DIM] = {0.3f, -0.2f, 0.9f};
	unsigned seed = 7;
	int64_t id;
	size_t i;

	open_blob(&f, 0);
	for (id = 0; id < N; id++)
		cr_assert(eq(int, add_one(&f, id, (float)(rand_r(&seed) % 7) - 3, (float)(rand_r(&seed) % 7) - 3,
					   (float)(rand_r(&seed) % 7) - 3, EMU_DUP_OVERWRITE), EMU_ADD_OK));
	cr_assert(eq(sz, emu_blob_query(f.b, q, K, top), K));
	cr_assert(eq(sz, emu_blob_query(f.b, q, N, all), N));
	for (i = 0; i < K; i++)
		cr_assert(eq(i64, top[i].id, all[i].id), "rank %zu", i);
	for (i = 1; i < N; i++)
		cr_assert(all[i - 1].distance < all[i].distance ||
			  (all[i - 1].distance == all[i].distance && all[i - 1].id < all[i].id));
	emu_store_free(&f.s);
}

Test(emu_store, clear_and_delete_tenants_and_blobs)
{
	struct fixture f;

	open_blob(&f, 0);
	cr_assert(eq(int, add_one(&f, 1, 1, 0, 0, EMU_DUP_OVERWRITE), EMU_ADD_OK));
	cr_assert(eq(int, add_one(&f, 2, 1, 0, 0, EMU_DUP_OVERWRITE), EMU_ADD_OK));
	cr_assert(eq(sz, emu_blob_clear(f.b), 2));
	cr_assert(eq(sz, emu_blob_lookup(f.b, 1), EMU_NONE));
	cr_assert(eq(int, add_one(&f, 1, 1, 0, 0, EMU_DUP_OVERWRITE), EMU_ADD_OK));
	cr_assert(emu_blob_add(f.t, "c", "kge", 128) != NULL);
	cr_assert(emu_blob_delete(f.t, "b"));
	cr_assert(not(emu_blob_delete(f.t, "b")));
	cr_assert(eq(str, f.t->blobs[0]->id, "c"));
	cr_assert(emu_tenant_add(&f.s, "u", 0) != NULL);
	cr_assert(emu_tenant_delete(&f.s, "t"));
	cr_assert(eq(ptr, emu_tenant_find(&f.s, "t"), NULL));
	cr_assert(emu_tenant_find(&f.s, "u") != NULL);
	emu_store_free(&f.s);
}

Test(emu_store, names_and_modes)
{
	enum emu_dup_mode m;
	char longest[EMU_NAME_MAX + 2];

	cr_assert(emu_name_valid("abilities_api.github-com_2"));
	cr_assert(not(emu_name_valid("")));
	cr_assert(not(emu_name_valid("a/b")));
	cr_assert(not(emu_name_valid("a b")));
	memset(longest, 'a', sizeof(longest));
	longest[EMU_NAME_MAX] = '\0';
	cr_assert(emu_name_valid(longest));
	longest[EMU_NAME_MAX] = 'a';
	longest[EMU_NAME_MAX + 1] = '\0';
	cr_assert(not(emu_name_valid(longest)));
	cr_assert(emu_dup_mode_parse("duplicate", &m) && m == EMU_DUP_DUPLICATE);
	cr_assert(not(emu_dup_mode_parse("Overwrite", &m)));
	cr_assert(eq(str, (char *)emu_dup_mode_name(EMU_DUP_REJECT), "reject"));
}

/* ---- fault rules ---------------------------------------------------------- */

static unsigned add_rule(struct emu_faults *f, const char *json)
{
	struct errbuf err;
	unsigned id = 0;

	cr_assert(emu_fault_add_json(f, json, strlen(json), &id, &err), "%s: %s", json, err.msg);
	return id;
}

static bool hit(struct emu_faults *f, const char *method, const char *path, struct emu_fault_action *act)
{
	struct emu_fault_action scratch;
	bool matched = emu_fault_match(f, method, path, act ? act : &scratch);

	if (matched && !act)
		emu_fault_action_free(&scratch);
	return matched;
}

Test(emu_fault, count_limits_a_rule_then_it_is_gone)
{
	struct emu_faults f;
	struct emu_fault_action act;

	emu_faults_init(&f);
	cr_assert(eq(u32, add_rule(&f, "{\"status\": 503, \"count\": 2}"), 1));
	cr_assert(hit(&f, "GET", "/health", &act));
	cr_assert(eq(int, act.kind, EMU_FAULT_REPLY));
	cr_assert(eq(int, act.status, 503));
	cr_assert(eq(str, act.body, EMU_FAULT_DEFAULT_BODY));
	emu_fault_action_free(&act);
	cr_assert(hit(&f, "POST", "/tenants", NULL));
	cr_assert(not(hit(&f, "POST", "/tenants", NULL)));
	cr_assert(eq(sz, f.n, 0));
	emu_faults_clear(&f);
}

Test(emu_fault, path_and_method_must_match)
{
	struct emu_faults f;
	struct emu_fault_action act;

	emu_faults_init(&f);
	add_rule(&f, "{\"path\": \"/vectors\", \"method\": \"post\", \"status\": 500, \"body\": \"boom\"}");
	add_rule(&f, "{\"path\": \"/query\", \"reset\": true}");
	cr_assert(not(hit(&f, "GET", "/tenants/t/blobs/b/vectors/1", NULL)));
	cr_assert(not(hit(&f, "POST", "/tenants", NULL)));
	cr_assert(hit(&f, "POST", "/tenants/t/blobs/b/vectors", &act));
	cr_assert(eq(str, act.body, "boom"));
	emu_fault_action_free(&act);
	cr_assert(hit(&f, "POST", "/tenants/t/blobs/b/query", &act));
	cr_assert(eq(int, act.kind, EMU_FAULT_RESET));
	emu_fault_action_free(&act);
	emu_faults_clear(&f);
}

Test(emu_fault, first_rule_that_fires_wins_and_fraction_zero_never_fires)
{
	struct emu_faults f;
	struct emu_fault_action act;
	int i;

	emu_faults_init(&f);
	add_rule(&f, "{\"status\": 500, \"fraction\": 0}");
	add_rule(&f, "{\"latency_ms\": 250}");
	add_rule(&f, "{\"status\": 502}");
	for (i = 0; i < 100; i++) {
		cr_assert(hit(&f, "GET", "/x", &act));
		cr_assert(eq(int, act.kind, EMU_FAULT_PASS), "only a delay: the request is then served");
		cr_assert(eq(u32, act.latency_ms, 250));
		emu_fault_action_free(&act);
	}
	emu_faults_clear(&f);
	cr_assert(not(hit(&f, "GET", "/x", NULL)));
	cr_assert(eq(u32, add_rule(&f, "{}"), 4), "ids keep counting after a clear");
	cr_assert(hit(&f, "GET", "/x", &act));
	cr_assert(eq(int, act.status, 500));
	emu_fault_action_free(&act);
	emu_faults_clear(&f);
}

Test(emu_fault, bad_rules_are_refused_naming_the_member)
{
	struct emu_faults f;
	struct errbuf err;
	unsigned id;
	int i;

	emu_faults_init(&f);
	cr_assert(not(emu_fault_add_json(&f, "{\"staus\": 500}", 14, &id, &err)));
	cr_assert(strstr(err.msg, "staus") != NULL, "%s", err.msg);
	cr_assert(not(emu_fault_add_json(&f, "{\"status\": 700}", 15, &id, &err)));
	cr_assert(strstr(err.msg, "status") != NULL, "%s", err.msg);
	cr_assert(not(emu_fault_add_json(&f, "{\"fraction\": 2}", 15, &id, &err)));
	cr_assert(not(emu_fault_add_json(&f, "{\"count\": 0}", 12, &id, &err)));
	cr_assert(not(emu_fault_add_json(&f, "{\"reset\": true, \"status\": 500}", 30, &id, &err)));
	cr_assert(not(emu_fault_add_json(&f, "[", 1, &id, &err)));
	for (i = 0; i < EMU_FAULT_MAX; i++)
		add_rule(&f, "{\"path\": \"/nothing\"}");
	cr_assert(not(emu_fault_add_json(&f, "{}", 2, &id, &err)));
	cr_assert(strstr(err.msg, "64") != NULL, "%s", err.msg);
	emu_faults_clear(&f);
}
