/*
 * fuzz_vdb_reply - a 2xx reply body from the vector DB, judged as every kind
 * of reply the client reads (vdb_check_reply): GET, GET_LIGHT, QUERY,
 * TENANTS and BLOBS, for ids and names taken from the body itself as well as
 * fixed ones (so that the fuzzer reaches the matching cases).
 *
 * Invariants:
 *   - statuses are the documented ones per kind; the same answer twice; a
 *     shorter `why` buffer changes nothing but the text; `why` is said for
 *     every failure, NUL-terminated and valid UTF-8 (it ends up in logs, JSON
 *     answers and Postgres text columns); *reply is set whenever the body is
 *     JSON, never on OK without it;
 *   - GET OK: an object, "id" absent or the id asked, "attributes" absent,
 *     null or an object, "vector" absent, null or an array of numbers;
 *   - GET_LIGHT agrees with GET on OK or not, and then on "id", on
 *     "attributes", and on the vector's length;
 *   - QUERY OK: "ids" non-negative integers, as many "distances" numbers, and
 *     "attributes" absent, null or one per id;
 *   - TENANTS/BLOBS: OK when the name is listed (with the dimension asked, or
 *     none, for blobs), REJECTED when listed with another dimension, NOT_FOUND
 *     otherwise.
 */
#include "fuzz.h"

#include "text.h"
#include "vdb.h"

#include <jansson.h>

struct verdict {
	enum vdb_status st;
	json_t *reply;
	char why[400];
};

static void judge(enum vdb_reply_kind kind, const char *body, size_t len, int64_t id, const char *name, int dim,
		  struct verdict *v)
{
	char small[12];
	json_t *again = NULL;
	enum vdb_status st2;
	size_t bad;

	memset(small, 'x', sizeof(small));
	v->st = vdb_check_reply(kind, body, len, id, name, dim, &v->reply, v->why, sizeof(v->why));
	CHECK(memchr(v->why, '\0', sizeof(v->why)), "why is not NUL-terminated");
	CHECK(utf8_valid(v->why, strlen(v->why), &bad), "kind %d: why is not UTF-8 at byte %zu: %s", (int)kind, bad,
	      v->why);
	if (v->st != VDB_OK)
		CHECK(v->why[0], "kind %d: status %s without a why", (int)kind, vdb_status_name(v->st));
	else
		CHECK(v->reply, "kind %d: OK without a reply", (int)kind);
	if (v->st != VDB_BAD_REPLY)
		CHECK(v->reply, "kind %d: %s without a reply", (int)kind, vdb_status_name(v->st));

	st2 = vdb_check_reply(kind, body, len, id, name, dim, NULL, small, sizeof(small) - 2);
	CHECK(st2 == v->st, "kind %d: %s, then %s with a small buffer", (int)kind, vdb_status_name(v->st),
	      vdb_status_name(st2));
	CHECK(memchr(small, '\0', sizeof(small) - 2) && small[sizeof(small) - 2] == 'x', "the small buffer overflowed");
	st2 = vdb_check_reply(kind, body, len, id, name, dim, &again, small, 0);
	CHECK(st2 == v->st, "kind %d: another answer with no why buffer", (int)kind);
	CHECK(!again == !v->reply && (!again || json_equal(again, v->reply)), "kind %d: two replies", (int)kind);
	json_decref(again);
}

static bool number_array(json_t *a)
{
	json_t *x;
	size_t i;

	if (!json_is_array(a))
		return false;
	json_array_foreach(a, i, x)
		if (!json_is_number(x))
			return false;
	return true;
}

static void check_get(const char *body, size_t len, int64_t id)
{
	struct verdict g, l;
	json_t *attrs, *vec, *rid;

	judge(VDB_REPLY_GET, body, len, id, NULL, 0, &g);
	judge(VDB_REPLY_GET_LIGHT, body, len, id, NULL, 0, &l);
	CHECK((g.st == VDB_OK) == (l.st == VDB_OK), "id %lld: GET says %s (%s), GET_LIGHT %s (%s)", (long long)id,
	      vdb_status_name(g.st), g.why, vdb_status_name(l.st), l.why);
	CHECK(g.st == VDB_OK || g.st == VDB_BAD_REPLY, "GET: %s", vdb_status_name(g.st));
	if (g.st == VDB_OK) {
		CHECK(json_is_object(g.reply), "GET OK: not an object");
		rid = json_object_get(g.reply, "id");
		CHECK(!rid || (json_is_integer(rid) && json_integer_value(rid) == id), "GET OK: another id");
		attrs = json_object_get(g.reply, "attributes");
		CHECK(!attrs || json_is_null(attrs) || json_is_object(attrs), "GET OK: attributes");
		vec = json_object_get(g.reply, "vector");
		CHECK(!vec || json_is_null(vec) || number_array(vec), "GET OK: vector");

		CHECK(json_is_object(l.reply), "GET_LIGHT OK: not an object");
		CHECK(json_equal(rid, json_object_get(l.reply, "id")) || (!rid && !json_object_get(l.reply, "id")),
		      "GET and GET_LIGHT see different ids");
		CHECK(json_equal(attrs, json_object_get(l.reply, "attributes")) ||
			      (!attrs && !json_object_get(l.reply, "attributes")),
		      "GET and GET_LIGHT see different attributes");
		if (json_is_array(vec))
			CHECK(json_integer_value(json_object_get(l.reply, "vector_length")) == (json_int_t)json_array_size(vec),
			      "vector_length %lld, GET sees %zu", (long long)json_integer_value(json_object_get(l.reply, "vector_length")),
			      json_array_size(vec));
		else
			CHECK(!json_object_get(l.reply, "vector_length"), "a vector_length without a vector");
	}
	json_decref(g.reply);
	json_decref(l.reply);
}

static void check_query(const char *body, size_t len)
{
	struct verdict q;
	json_t *ids, *dist, *attrs, *x;
	size_t i;

	judge(VDB_REPLY_QUERY, body, len, 0, NULL, 0, &q);
	CHECK(q.st == VDB_OK || q.st == VDB_BAD_REPLY, "QUERY: %s", vdb_status_name(q.st));
	if (q.st == VDB_OK) {
		ids = json_object_get(q.reply, "ids");
		dist = json_object_get(q.reply, "distances");
		attrs = json_object_get(q.reply, "attributes");
		CHECK(json_is_array(ids) && number_array(dist) && json_array_size(ids) == json_array_size(dist),
		      "QUERY OK: ids and distances");
		json_array_foreach(ids, i, x)
			CHECK(json_is_integer(x) && json_integer_value(x) >= 0, "QUERY OK: ids[%zu]", i);
		CHECK(!attrs || json_is_null(attrs) || (json_is_array(attrs) && json_array_size(attrs) == json_array_size(ids)),
		      "QUERY OK: attributes");
	}
	json_decref(q.reply);
}

/* The item named `name` in the list, as the API lists tenants and blobs; NULL when none. */
static json_t *listed(json_t *reply, const char *list_key, const char *id_key, const char *name)
{
	json_t *list = json_is_array(reply) ? reply : json_object_get(reply, list_key), *item, *id;
	size_t i;

	json_array_foreach(list, i, item) {
		id = json_is_string(item) ? item : json_object_get(item, id_key);
		if (json_is_string(id) && strcmp(json_string_value(id), name) == 0)
			return item;
	}
	return NULL;
}

static void check_list(enum vdb_reply_kind kind, const char *body, size_t len, const char *name, int dim)
{
	const char *list_key = kind == VDB_REPLY_BLOBS ? "blobs" : "tenants";
	const char *id_key = kind == VDB_REPLY_BLOBS ? "blob_id" : "tenant_id";
	struct verdict v;
	json_t *item, *d;

	judge(kind, body, len, 0, name, dim, &v);
	if (v.st == VDB_BAD_REPLY) {
		CHECK(!v.reply, "a list refused as malformed, but parsed: %s", v.why);
		return;
	}
	item = listed(v.reply, list_key, id_key, name);
	d = json_object_get(item, "dimension");
	if (!item)
		CHECK(v.st == VDB_NOT_FOUND, "%s not listed: %s", name, vdb_status_name(v.st));
	else if (kind == VDB_REPLY_BLOBS && json_is_integer(d) && json_integer_value(d) != dim)
		CHECK(v.st == VDB_REJECTED, "%s listed with dimension %lld, asked %d: %s", name,
		      (long long)json_integer_value(d), dim, vdb_status_name(v.st));
	else
		CHECK(v.st == VDB_OK, "%s listed: %s", name, vdb_status_name(v.st));
	json_decref(v.reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = fuzz_copy(data, size);
	json_error_t jerr;
	json_t *j = json_loadb(body, size, JSON_DECODE_ANY, &jerr), *rid, *first;
	int64_t ids[3] = {0, 7, INT64_MAX};
	const char *names[2] = {"reverse_engineer", NULL};
	int dims[2] = {8, 3072};
	size_t i, k;

	/* The id the body holds, and one next to it: the matching and the mismatching case. */
	rid = json_object_get(j, "id");
	if (json_is_integer(rid)) {
		ids[0] = json_integer_value(rid);
		ids[1] = ids[0] == INT64_MAX ? ids[0] - 1 : ids[0] + 1;
	}
	for (i = 0; i < ARRAY_LEN(ids); i++)
		check_get(body, size, ids[i]);
	check_query(body, size);

	/* A name the body lists first, and the dimension it gives. */
	for (k = 0; k < 2; k++) {
		const char *list_key = k ? "blobs" : "tenants", *id_key = k ? "blob_id" : "tenant_id";
		json_t *list = json_is_array(j) ? j : json_object_get(j, list_key);

		first = json_array_get(list, 0);
		names[1] = json_is_string(first) ? json_string_value(first) : json_string_value(json_object_get(first, id_key));
		dims[1] = json_is_integer(json_object_get(first, "dimension"))
				  ? (int)json_integer_value(json_object_get(first, "dimension")) : 3072;
		for (i = 0; i < 2; i++) {
			if (!names[i])
				continue;
			check_list(k ? VDB_REPLY_BLOBS : VDB_REPLY_TENANTS, body, size, names[i], dims[0]);
			check_list(k ? VDB_REPLY_BLOBS : VDB_REPLY_TENANTS, body, size, names[i], dims[1]);
		}
	}
	json_decref(j);
	free(body);
	return 0;
}
