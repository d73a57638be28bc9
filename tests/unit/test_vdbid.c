/* The original application's vector ids and blob names, byte for byte. */
#include "vdbid.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

static int64_t vid(const char *ability_id)
{
	struct errbuf err;
	int64_t id = -1;

	cr_assert(vdb_vector_id(ability_id, strlen(ability_id), &id, &err), "%s", err.msg);
	return id;
}

Test(vector_id, the_five_reference_vectors)
{
	/* reference/infraxa-api.md §2.3, checked there against Node's crypto. */
	cr_assert(eq(i64, vid("github-create-repo-v1"), 1774816622));
	cr_assert(eq(i64, vid("github-get-user"), 1008771826));
	cr_assert(eq(i64, vid("get-users-octocat"), 2095992906));
	cr_assert(eq(i64, vid("test-dual-storage-1234567890"), 15003310));
	cr_assert(eq(i64, vid(""), 474954686));
}

Test(vector_id, two_ids_can_share_a_vector_id)
{
	/* Found with Node's crypto and the original's formula: the collision the service must refuse. */
	cr_assert(eq(i64, vid("collide-8533"), 91458538));
	cr_assert(eq(i64, vid("collide-12320"), 91458538));
}

Test(vector_id, the_2147483648_edge_is_refused)
{
	static const uint8_t edge[4] = {0x80, 0, 0, 0};
	static const uint8_t below[4] = {0x80, 0, 0, 1};
	static const uint8_t top[4] = {0x7f, 0xff, 0xff, 0xff};

	/* Math.abs(-2147483648) = 2147483648: computed in 64 bits, never wrapped. */
	cr_assert(eq(i64, vdb_vector_id_from_digest(edge), 2147483648LL));
	cr_assert(eq(i64, vdb_vector_id_from_digest(below), 2147483647LL));
	cr_assert(eq(i64, vdb_vector_id_from_digest(top), 2147483647LL));
}

static void blob(const char *service, const char *want)
{
	char out[256];

	cr_assert(eq(sz, vdb_blob_name(service, strlen(service), out, sizeof(out)), strlen(want)));
	cr_assert(eq(str, out, (char *)want));
}

/* A service_name written to Postgres by someone else can be of any length: cut, never overrun. */
Test(vdbid, a_blob_name_too_long_for_its_buffer_is_cut_and_says_so)
{
	char out[16];

	memset(out, 'x', sizeof(out));
	cr_assert(eq(sz, vdb_blob_name("api.github.com", 14, out, sizeof(out)), 24));
	cr_assert(eq(str, out, "abilities_api_g"));
	cr_assert(eq(sz, vdb_blob_name("\xf0\x9f\x98\x80", 4, out, 12), 12), "an emoji is two '_'");
	cr_assert(eq(str, out, "abilities__"));
}

Test(blob_name, sanitised_like_the_original)
{
	blob("api.github.com", "abilities_api_github_com");
	blob("API-v2.Example", "abilities_API_v2_Example");
	blob("already_ok_123", "abilities_already_ok_123");
	/* One '_' per UTF-16 code unit, as JavaScript's replace() counts them. */
	blob("caf\xc3\xa9", "abilities_caf_");                /* U+00E9: one unit */
	blob("\xe2\x82\xac-x", "abilities___x");             /* U+20AC: one unit, then '-' */
	blob("a\xf0\x9f\x98\x80" "b", "abilities_a__b");        /* U+1F600: a surrogate pair */
	blob("", "abilities_");
}
