/* What the vector DB client makes of a 2xx reply body (vdb_check_reply): no server needed. */
#include "vdb.h"

#include "text.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

struct judged {
	enum vdb_status st;
	json_t *reply;
	char why[400];
};

static struct judged judge(enum vdb_reply_kind kind, const char *body, int64_t id)
{
	struct judged j;

	j.st = vdb_check_reply(kind, body, strlen(body), id, NULL, 0, &j.reply, j.why, sizeof(j.why));
	return j;
}

/* GET and GET_LIGHT on one body: the same verdict, the same attributes; returns GET's. */
static struct judged both(const char *body, int64_t id, enum vdb_status want)
{
	struct judged g = judge(VDB_REPLY_GET, body, id), l = judge(VDB_REPLY_GET_LIGHT, body, id);
	size_t bad;

	cr_assert(eq(int, g.st, want), "GET of %s: %s (%s)", body, vdb_status_name(g.st), g.why);
	cr_assert(eq(int, l.st, want), "GET_LIGHT of %s: %s (%s)", body, vdb_status_name(l.st), l.why);
	cr_assert(utf8_valid(g.why, strlen(g.why), &bad) && utf8_valid(l.why, strlen(l.why), &bad), "%s / %s", g.why, l.why);
	if (want == VDB_OK) {
		json_t *ga = json_object_get(g.reply, "attributes"), *la = json_object_get(l.reply, "attributes");

		cr_assert(json_equal(ga, la) || (!ga && !la), "attributes differ for %s", body);
	}
	json_decref(l.reply);
	return g;
}

Test(vdb_reply, get_and_get_light_judge_a_body_alike)
{
	struct judged g;

	g = both("{\"id\": 7, \"attributes\": {\"ability_id\": \"a\"}, \"vector\": [0.5, -1, 2e-3]}", 7, VDB_OK);
	cr_assert(eq(sz, json_array_size(json_object_get(g.reply, "vector")), 3));
	json_decref(g.reply);
	json_decref(both("{\"id\": 7, \"attributes\": {}, \"vector\": [1]}", 8, VDB_BAD_REPLY).reply);
	json_decref(both("{\"id\": 7}", 7, VDB_OK).reply);
	json_decref(both("[7]", 7, VDB_BAD_REPLY).reply);
	json_decref(both("", 7, VDB_BAD_REPLY).reply);
	json_decref(both("{\"id\": 7, \"attributes\": 3}", 7, VDB_BAD_REPLY).reply);
	json_decref(both("{\"id\": 7, \"vector\": [1e39]}", 7, VDB_BAD_REPLY).reply);
	json_decref(both("{\"id\": 7, \"vector\": [1], \"vector\": [2]}", 7, VDB_BAD_REPLY).reply);
}

/*
 * Found by fuzz_vdb_reply. GET and GET_LIGHT disagreed: on "vector": null (GET
 * refused it), on a vector of strings or of numbers beyond float32 (GET took
 * them), on members jansson refuses elsewhere in the body (not UTF-8, \u0000:
 * GET_LIGHT took them), on "vector" written with escapes; a 30-digit integer
 * in the vector made GET's jansson fail where the vector is fine. And `why`
 * quoted jansson's error text cut mid-character: not UTF-8, as it goes into
 * logs, JSON answers and Postgres.
 */
Test(vdb_reply, fuzz_regressions)
{
	static const char cut[] = "{\"id\": 7, \"attributes\": {\"k\": \"caf\xc3\xa9 \\ud8\xc7\x9b\\ude00\"}, \"x\": \"\xff\"}";
	struct judged g;

	g = both("{\"id\": 0, \"attributes\": null, \"vector\": null}", 0, VDB_OK);
	json_decref(g.reply);
	json_decref(both("{\"id\": 7, \"vector\": [\"a\"]}", 7, VDB_BAD_REPLY).reply);
	json_decref(both("{\"id\": 7, \"x\": \"\xff\"}", 7, VDB_BAD_REPLY).reply);
	json_decref(both("{\"id\": 7, \"x\": \"\\u0000\"}", 7, VDB_BAD_REPLY).reply);
	json_decref(both("{\"id\": 7, \"ve\\u0063tor\": \"x\"}", 7, VDB_BAD_REPLY).reply);
	json_decref(both("{\"id\": 7, \"vector\": null, \"ve\\u0063tor\": [1]}", 7, VDB_BAD_REPLY).reply);
	g = both("{\"id\": 7, \"vector\": [123456789012345678901234567890, 1]}", 7, VDB_OK);
	cr_assert(eq(dbl, json_number_value(json_array_get(json_object_get(g.reply, "vector"), 0)), 1.2345678901234568e29));
	json_decref(g.reply);
	json_decref(both(cut, 7, VDB_BAD_REPLY).reply); /* both() checks that why is UTF-8 */
}

Test(vdb_reply, lists_find_the_name_and_its_dimension)
{
	const char *blobs = "{\"blobs\": [{\"blob_id\": \"a\", \"dimension\": 8}, {\"blob_id\": \"b\"}]}";
	const char *tenants = "[\"t\xc3\xa9\"]", *cut = "{\"x\": \"\xe2\x82";
	char why[200];
	size_t bad;

	cr_assert(eq(int, vdb_check_reply(VDB_REPLY_BLOBS, blobs, strlen(blobs), 0, "a", 8, NULL, why, sizeof(why)), VDB_OK));
	cr_assert(eq(int, vdb_check_reply(VDB_REPLY_BLOBS, blobs, strlen(blobs), 0, "a", 16, NULL, why, sizeof(why)),
		     VDB_REJECTED));
	cr_assert(eq(int, vdb_check_reply(VDB_REPLY_BLOBS, blobs, strlen(blobs), 0, "b", 16, NULL, why, sizeof(why)), VDB_OK));
	cr_assert(eq(int, vdb_check_reply(VDB_REPLY_BLOBS, blobs, strlen(blobs), 0, "c", 8, NULL, why, sizeof(why)),
		     VDB_NOT_FOUND));
	cr_assert(eq(int, vdb_check_reply(VDB_REPLY_TENANTS, tenants, strlen(tenants), 0, "t\xc3\xa9", 8, NULL, why,
					  sizeof(why)), VDB_OK));
	cr_assert(eq(int, vdb_check_reply(VDB_REPLY_TENANTS, cut, strlen(cut), 0, "t", 8, NULL, why, sizeof(why)),
		     VDB_BAD_REPLY));
	cr_assert(utf8_valid(why, strlen(why), &bad), "%s", why);
}
