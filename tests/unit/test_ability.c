/* Parsing and checking abilities; attributes and the content hash. */
#include "ability.h"

#include "buf.h"
#include "hash.h"
#include "mem.h"
#include "text.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIM 4

static const char *const good =
	"{\"ability_id\": \"github-get-user\", \"ability_name\": \"get_user\", \"service_name\": \"api.github.com\","
	" \"description\": \"Fetch a user\", \"embedding\": [ 0.10, -1e-5 ,3, 1.50e1 ],"
	" \"metadata\": {\"dynamic_header_keys\": [\"api.github.com::cookie\"], \"request_method\": \"GET\", \"n\": 1e2}}";

static bool parse(const char *body, struct ability **a, size_t *n, bool *batch, struct ability_error *err)
{
	return ability_parse_body(body, strlen(body), DIM, 3, a, n, batch, err);
}

static void free_items(struct ability *a, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		ability_free(&a[i]);
	free(a);
}

Test(ability, a_valid_ability_and_what_is_derived_from_it)
{
	struct ability_error err;
	struct ability *a;
	size_t n;
	bool batch;
	json_error_t jerr;
	json_t *attrs;

	cr_assert(parse(good, &a, &n, &batch, &err), "%s: %s", err.field, err.message);
	cr_assert(eq(sz, n, 1));
	cr_assert(not(batch));
	cr_assert(eq(str, a->ability_id, "github-get-user"));
	cr_assert(eq(i64, a->vector_id, 1008771826), "the original's vector_id");
	cr_assert(eq(str, a->blob_id, "abilities_api_github_com"));
	/* The client's tokens, unchanged, only the whitespace gone. */
	cr_assert(eq(str, a->embedding, "[0.10,-1e-5,3,1.50e1]"));
	cr_assert(eq(str, a->dynamic_header_keys, "[\"api.github.com::cookie\"]"));
	cr_assert(a->dynamic_headers_required);
	attrs = json_loads(a->attributes, 0, &jerr);
	cr_assert(not(eq(ptr, attrs, NULL)));
	cr_assert(eq(str, (char *)json_string_value(json_object_get(attrs, "request_method")), "GET"), "metadata keys");
	cr_assert(eq(str, (char *)json_string_value(json_object_get(attrs, "description")), "Fetch a user"));
	cr_assert(eq(str, (char *)json_string_value(json_object_get(attrs, "content_hash")), a->content_hash));
	cr_assert(eq(sz, strlen(a->content_hash), 64));
	json_decref(attrs);
	free_items(a, n);
}

static void hash_of(const char *body, char out[65])
{
	struct ability_error err;
	struct ability *a;
	size_t n;
	bool batch;

	cr_assert(parse(body, &a, &n, &batch, &err), "%s", err.message);
	strcpy(out, a->content_hash);
	free_items(a, n);
}

Test(ability, the_hash_ignores_layout_and_sees_content)
{
	char h1[65], h2[65], h3[65], h4[65];

	hash_of(good, h1);
	/* Same content, other whitespace, key order and number spellings jsonb would normalise. */
	hash_of("{\"metadata\":{\"n\":100,\"request_method\":\"GET\",\"dynamic_header_keys\":[\"api.github.com::cookie\"]},"
		"\"embedding\":[0.10,-0.00001,3,15.0],\"description\":\"Fetch a user\",\"service_name\":\"api.github.com\","
		"\"ability_name\":\"get_user\",\"ability_id\":\"github-get-user\"}", h2);
	cr_assert(eq(str, h1, h2));
	/* A changed number or a changed field is a change. */
	hash_of("{\"ability_id\": \"github-get-user\", \"ability_name\": \"get_user\", \"service_name\": \"api.github.com\","
		" \"description\": \"Fetch a user\", \"embedding\": [0.1, -1e-5, 3, 1.50e1],"
		" \"metadata\": {\"dynamic_header_keys\": [\"api.github.com::cookie\"], \"request_method\": \"GET\", \"n\": 1e2}}", h3);
	cr_assert(not(eq(str, h1, h3)), "0.10 and 0.1 are different numerics in the mirror (scale)");
	hash_of("{\"ability_id\": \"github-get-user\", \"ability_name\": \"get_user\", \"service_name\": \"api.github.com\","
		" \"description\": \"Fetch a user!\", \"embedding\": [0.10, -1e-5, 3, 1.50e1],"
		" \"metadata\": {\"dynamic_header_keys\": [\"api.github.com::cookie\"], \"request_method\": \"GET\", \"n\": 1e2}}", h4);
	cr_assert(not(eq(str, h1, h4)));
}

Test(ability, a_row_from_the_mirror_hashes_like_the_request_that_wrote_it)
{
	struct ability_error err;
	struct ability row;
	char h[65];

	hash_of(good, h);
	/* What Postgres returns for that row: jsonb's rendering of the embedding and metadata. */
	cr_assert(ability_from_row("github-get-user", "get_user", "api.github.com", "Fetch a user",
				   "[0.10, -0.00001, 3, 15.0]",
				   "{\"n\": 100, \"request_method\": \"GET\", \"dynamic_header_keys\": [\"api.github.com::cookie\"]}",
				   DIM, &row, &err), "%s", err.message);
	cr_assert(eq(str, row.content_hash, h));
	ability_free(&row);
}

/* ", " between numbers (Postgres' rendering, or a client's) gives the compact text and hash that "," gives. */
Test(ability, spaces_after_the_commas_change_neither_the_text_nor_the_hash)
{
	static const char *const spaced[] = {"[0.5, 1e-5, -2, 3]", "[0.5 , 1e-5,-2, 3]", "[ 0.5,  1e-5, -2 ,3 ]"};
	struct ability_error err;
	struct ability plain, row;
	size_t i;

	cr_assert(ability_from_row("a", "n", "s", "d", "[0.5,1e-5,-2,3]", "{}", DIM, &plain, &err), "%s", err.message);
	cr_assert(eq(str, plain.embedding, "[0.5,1e-5,-2,3]"));
	for (i = 0; i < sizeof(spaced) / sizeof(spaced[0]); i++) {
		cr_assert(ability_from_row("a", "n", "s", "d", spaced[i], "{}", DIM, &row, &err), "%s: %s", spaced[i],
			  err.message);
		cr_assert(eq(str, row.embedding, plain.embedding), "%s", spaced[i]);
		cr_assert(eq(str, row.content_hash, plain.content_hash), "%s", spaced[i]);
		ability_free(&row);
	}
	cr_assert(not(ability_from_row("a", "n", "s", "d", "[0.5, 1e-5, -2, ]", "{}", DIM, &row, &err)),
		  "a trailing comma is refused");
	ability_free(&plain);
}

static void canon(const char *tok, const char *want)
{
	struct buf b = BUF_INIT;

	cr_assert(ability_canon_number(tok, strlen(tok), &b), "refused %s", tok);
	cr_assert(eq(str, b.data, (char *)want), "for %s", tok);
	buf_free(&b);
}

Test(ability, numbers_as_postgres_numeric_prints_them)
{
	/* Each expectation is what PostgreSQL 15 printed for '<token>'::jsonb. */
	canon("1.50e1", "15.0");
	canon("1e-5", "0.00001");
	canon("0.10", "0.10");
	canon("-0.0", "0.0");
	canon("1.5E+3", "1500");
	canon("100", "100");
	canon("-12.345e-2", "-0.12345");
	canon("0", "0");
	canon("-0", "0");
	canon("123456789012345678901234567890.5", "123456789012345678901234567890.5");
	canon("7e2", "700");
	canon("2.5e-1", "0.25");
	canon("0.000e3", "0");
	canon("-1E-1", "-0.1");
	canon("0e200000", "0");
}

Test(ability, numbers_postgres_cannot_hold_are_refused)
{
	struct buf b = BUF_INIT;

	cr_assert(not(ability_canon_number("1e-16384", 8, &b)));
	cr_assert(not(ability_canon_number("0.0e-16383", 10, &b)));
	cr_assert(ability_canon_number("0.5e-16382", 10, &b));
	buf_free(&b);
}

static void refused(const char *body, int status, const char *code, const char *field, const char *msg)
{
	struct ability_error err;
	struct ability *a = (struct ability *)1;
	size_t n = 7;
	bool batch;

	memset(&err, 0, sizeof(err));
	cr_assert(not(parse(body, &a, &n, &batch, &err)), "accepted: %s", body);
	cr_assert(eq(ptr, a, NULL));
	cr_assert(eq(sz, n, 0));
	cr_assert(eq(int, err.status, status), "%s -> %s", body, err.message);
	cr_assert(eq(str, (char *)err.code, (char *)code), "%s -> %s", body, err.message);
	cr_assert(eq(str, err.field, (char *)field), "%s -> %s", body, err.message);
	cr_assert(not(eq(ptr, strstr(err.message, msg), NULL)), "\"%s\" lacks \"%s\"", err.message, msg);
}

#define BASE "\"ability_id\":\"a\",\"ability_name\":\"n\",\"service_name\":\"s\",\"description\":\"d\""

Test(ability, bad_abilities_are_refused_naming_the_field)
{
	refused("{" BASE ",\"embedding\":[1,2,3]}", 422, "wrong_dimension", "embedding", "has 3 numbers; EMBEDDING_DIM is 4");
	refused("{" BASE ",\"embedding\":[1,2,3,\"4\"]}", 422, "invalid_embedding", "embedding[3]", "found a string");
	refused("{" BASE ",\"embedding\":[1,2,[3],4]}", 422, "invalid_embedding", "embedding[2]", "nested");
	refused("{" BASE ",\"embedding\":[1,NaN,3,4]}", 400, "malformed_json", "embedding[1]", "NaN and Infinity");
	/* A trailing comma is not JSON: refused, not read as the four numbers before it. */
	refused("{" BASE ",\"embedding\":[1,2,3,4,]}", 400, "malformed_json", "embedding[4]", "not valid JSON");
	refused("{" BASE ",\"embedding\":[1,2,3,4 , ]}", 400, "malformed_json", "embedding[4]", "not valid JSON");
	refused("{\"abilities\":[{" BASE ",\"embedding\":[1,2,3,4]},{" BASE ",\"embedding\":[1,2,-Infinity,4]}]}", 400,
		"malformed_json", "abilities[1].embedding[2]", "at abilities[1].embedding[2], byte");
	refused("{" BASE ",\"embedding\":[1,1e999,3,4]}", 422, "invalid_embedding", "embedding[1]", "float32");
	refused("{" BASE ",\"embedding\":[1,2,3,1e-16384]}", 422, "invalid_embedding", "embedding", "16383 decimals");
	refused("{" BASE ",\"embedding\":{}}", 422, "invalid_embedding", "embedding[0]", "expected an array");
	refused("{" BASE "}", 422, "missing_field", "embedding", "embedding is required");
	refused("{\"ability_name\":\"n\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4]}",
		422, "missing_field", "ability_id", "ability_id is required");
	refused("{\"ability_id\":7,\"ability_name\":\"n\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4]}",
		422, "wrong_type", "ability_id", "must be a string");
	refused("{\"ability_id\":\"a b\",\"ability_name\":\"n\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4]}",
		422, "invalid_ability_id", "ability_id", "found ' ' at 1");
	refused("{\"ability_id\":\"a\",\"ability_name\":\"\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4]}",
		422, "empty_field", "ability_name", "must not be empty");
	refused("{" BASE ",\"embedding\":[1,2,3,4],\"metadata\":[]}", 422, "wrong_type", "metadata", "must be an object");
	refused("{" BASE ",\"embedding\":[1,2,3,4],\"metadata\":{\"dynamic_header_keys\":[1]}}", 422, "wrong_type",
		"metadata.dynamic_header_keys[0]", "must be a string");
	refused("{" BASE ",\"embedding\":[1,2,3,4],\"embeding\":[1]}", 422, "unknown_field", "embeding", "is not a field");
	refused("{" BASE ",\"embedding\":[1,2,3,4],\"embedding\":[1,2,3,4]}", 422, "duplicate_field", "embedding", "twice");
	refused("{" BASE ",\"ability_id\":\"b\",\"embedding\":[1,2,3,4]}", 400, "malformed_json", "", "duplicate");
	refused("{" BASE ",\"embedding\":[1,2,3,4]", 400, "malformed_json", "", "not valid JSON");
	refused("{" BASE ",\"embedding\":[1,2,3,4]} x", 400, "malformed_json", "", "after the value");
	refused("[1]", 422, "wrong_type", "", "must be an ability object");
	refused("{\"ability_id\":\"a\",\"ability_name\":\"n\xff\",\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4]}",
		400, "invalid_utf8", "", "not valid UTF-8 (byte 35)");
}

/* numeric holds at most 16383 decimals: a plain number with more passed the scan and failed the write. */
static char *with_decimals(size_t decimals)
{
	struct buf b = BUF_INIT;
	size_t i;

	buf_append(&b, "{" BASE ",\"embedding\":[1,2,3,0.", strlen("{" BASE ",\"embedding\":[1,2,3,0."));
	for (i = 1; i < decimals; i++)
		buf_putc(&b, '0');
	buf_append(&b, "1]}", 3);
	return buf_steal(&b);
}

Test(ability, a_number_with_more_decimals_than_numeric_holds_is_refused)
{
	char *most = with_decimals(16383), *over = with_decimals(16384);
	struct ability_error err;
	struct ability *a;
	size_t n;
	bool batch;

	memset(&err, 0, sizeof(err));
	cr_assert(parse(most, &a, &n, &batch, &err), "16383 decimals refused: %s", err.message);
	free_items(a, n);
	refused(over, 422, "invalid_embedding", "embedding", "16383 decimals");
	free(most);
	free(over);
}

Test(ability, batches)
{
	struct ability_error err;
	struct ability *a;
	size_t n;
	bool batch;

	cr_assert(parse("{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4]}, {\"ability_id\":\"b\",\"ability_name\":\"n\","
			"\"service_name\":\"s\",\"description\":\"d\",\"embedding\":[1,2,3,4]}]}", &a, &n, &batch, &err),
		  "%s", err.message);
	cr_assert(eq(sz, n, 2));
	cr_assert(batch);
	cr_assert(eq(str, a[1].ability_id, "b"));
	free_items(a, n);

	refused("{\"abilities\": []}", 422, "empty_batch", "abilities", "empty");
	refused("{\"abilities\": {}}", 422, "wrong_type", "abilities", "must be an array");
	refused("{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4]}, {" BASE ",\"embedding\":[1,2,3]}]}", 422,
		"wrong_dimension", "abilities[1].embedding", "abilities[1].embedding has 3 numbers");
	refused("{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4]}, {" BASE ",\"embedding\":[1,2,3,4]}]}", 422,
		"duplicate_ability", "abilities[1].ability_id", "repeats abilities[0]");
	refused("{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4]},{" BASE ",\"embedding\":[1,2,3,4]},{" BASE
		",\"embedding\":[1,2,3,4]},{" BASE ",\"embedding\":[1,2,3,4]}]}", 422, "batch_too_large", "abilities",
		"more than 3");
	refused("{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4]}], \"extra\": 1}", 422, "unknown_field", "extra",
		"not expected next to abilities");
	/* A member named "" is named so, not left out of the sentence (found by fuzz_ability_body). */
	refused("{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4]}], \"\": 1}", 422, "unknown_field", "",
		"\"\" is not expected next to abilities");
	refused("{" BASE ",\"embedding\":[1,2,3,4],\"\":1}", 422, "unknown_field", "", "\"\" is not a field of an ability");
}

/*
 * A batch's elements are found by their brackets alone, then each is read
 * strictly: broken JSON anywhere in an element is still refused, and named.
 */
Test(ability, broken_json_inside_a_batch_element_is_refused)
{
	static const char brackets_in_a_string[] =
		"{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4],\"metadata\":{\"a\":\"]}[{\"}}]}";
	struct ability_error err;
	struct ability *a;
	size_t n;
	bool batch;

	refused("{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4,]}]}", 400, "malformed_json", "abilities[0].embedding[4]",
		"not valid JSON");
	refused("{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4],\"metadata\":{\"a\":[1,]}}]}", 400, "malformed_json",
		"abilities[0].metadata.a[1]", "unexpected character");
	refused("{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4],\"metadata\":{\"a\":tru}}]}", 400, "malformed_json",
		"abilities[0].metadata.a", "unexpected character");
	refused("{\"abilities\": [{" BASE " \"embedding\":[1,2,3,4]}]}", 400, "malformed_json", "abilities[0]",
		"expected , or }");
	refused("{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4]} {" BASE ",\"embedding\":[1,2,3,4]}]}", 400,
		"malformed_json", "abilities", "expected , or ]");
	refused("{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4]]}]}", 400, "malformed_json", "abilities[0]",
		"expected , or }");
	/* Brackets inside a string are text, not structure. */
	cr_assert(parse(brackets_in_a_string, &a, &n, &batch, &err), "%s", err.message);
	cr_assert(not(eq(ptr, strstr(a[0].attributes, "]}[{"), NULL)), "%s", a[0].attributes);
	free_items(a, n);
}

/*
 * Found by fuzz_ability_body. Each once crashed or misread: a body of only
 * whitespace read past its end; a metadata number beyond long long was cast
 * before its range check (UBSan); a long key cut mid-character into err.field
 * made the service's error answer unbuildable, and the service aborted.
 */
Test(ability, fuzz_regressions)
{
	static const char cut_key[] = "{\"abiLity: [0.10, eers.5\xda\x9a\xce\xa2Ues%t_met.5\xda\x8a\xce\xa2, \"d%er_keys\"2e2}}";
	struct ability_error err;
	struct ability *a = NULL;
	size_t n, bad;
	bool batch;

	refused(" ", 400, "malformed_json", "", "not valid JSON");
	refused("", 400, "malformed_json", "", "not valid JSON");
	cr_assert(parse("{" BASE ",\"embedding\":[1,2,3,4],\"metadata\":{\"big\":1e20,\"neg\":-1e300}}", &a, &n, &batch,
			&err), "%s", err.message);
	cr_assert(not(eq(ptr, strstr(a->attributes, "\"big\":1e20"), NULL)), "%s", a->attributes);
	free_items(a, n);
	cr_assert(not(ability_parse_body(cut_key, sizeof(cut_key) - 1, DIM, 3, &a, &n, &batch, &err)));
	cr_assert(eq(str, (char *)err.code, "malformed_json"));
	cr_assert(utf8_valid(err.field, strlen(err.field), &bad), "field [%s] at %zu", err.field, bad);
	cr_assert(utf8_valid(err.message, strlen(err.message), &bad), "message [%s] at %zu", err.message, bad);
}

/*
 * Found by fuzz_set_body: a NUL byte between tokens ({"abilities": [...]<NUL>})
 * was accepted by the batch parser, because jansson reads some NULs as the end
 * of the text; fuzz_http found the same in a search body. No JSON holds one.
 */
Test(ability, a_nul_byte_between_tokens_is_refused)
{
	static const char body[] = "{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4]}]\0}";
	struct ability_error err;
	struct ability *a = NULL;
	struct ability_set set;
	size_t n;
	bool batch;

	cr_assert(not(ability_parse_body(body, sizeof(body) - 1, DIM, 3, &a, &n, &batch, &err)));
	cr_assert(eq(str, (char *)err.code, "malformed_json"));
	cr_assert(not(eq(ptr, strstr(err.message, "NUL byte"), NULL)), "%s", err.message);
	cr_assert(not(ability_set_open(body, sizeof(body) - 1, "s", DIM, &set, &err)));
	cr_assert(eq(str, (char *)err.code, "malformed_json"));
}

/* A full set read one ability at a time: every bad one named, then the ids checked once all are read. */
Test(ability, a_full_set_is_read_one_ability_at_a_time)
{
	static const char ok_set[] = "{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4]},"
				   " {\"ability_id\":\"b\",\"ability_name\":\"n\",\"service_name\":\"s\","
				   "\"description\":\"d\",\"embedding\":[1,2,3,4]}]}";
	static const char bad_set[] = "{\"abilities\": [{" BASE ",\"embedding\":[1,2,3]}, {\"ability_id\":\"b\","
				  "\"ability_name\":\"n\",\"service_name\":\"t\",\"description\":\"d\",\"embedding\":[1,2,3,4]},"
				  " {" BASE ",\"embedding\":[1,2,3,4]}, {" BASE ",\"embedding\":[1,2,3,4]}]}";
	struct ability_error err;
	struct ability_set set;
	struct ability a;

	cr_assert(ability_set_open(ok_set, sizeof(ok_set) - 1, "s", DIM, &set, &err), "%s", err.message);
	cr_assert(eq(int, ability_set_next(&set, &a, &err), 1));
	cr_assert(eq(str, a.ability_id, "a"));
	ability_free(&a);
	cr_assert(eq(int, ability_set_next(&set, &a, &err), 1));
	cr_assert(eq(str, a.ability_id, "b"));
	ability_free(&a);
	cr_assert(eq(int, ability_set_next(&set, &a, &err), 0));
	cr_assert(ability_set_check_ids(&set, &err));
	cr_assert(eq(sz, ability_set_count(&set), 2));
	ability_set_free(&set);

	cr_assert(ability_set_open(bad_set, sizeof(bad_set) - 1, "s", DIM, &set, &err));
	cr_assert(eq(int, ability_set_next(&set, &a, &err), -1));
	cr_assert(eq(int, ability_set_next(&set, &a, &err), -1));
	cr_assert(eq(int, ability_set_next(&set, &a, &err), 1));
	ability_free(&a);
	cr_assert(eq(int, ability_set_next(&set, &a, &err), 1));
	ability_free(&a);
	cr_assert(eq(int, ability_set_next(&set, &a, &err), 0));
	cr_assert(eq(str, err.field, "abilities[0].embedding"));
	cr_assert(eq(str, err.others[0].field, "abilities[1].service_name"));
	cr_assert(not(ability_set_check_ids(&set, &err)));
	cr_assert(eq(str, err.others[1].field, "abilities[3].ability_id"), "the id given twice: %s", err.others[1].message);
	ability_set_free(&set);
}

/*
 * Found by fuzz_set_body: the batch parser checked the text around a value it
 * had scanned by handing jansson the body with the value replaced by 0, which
 * text after it could extend into another number ({"abilities": [...].0}): an
 * invalid body was taken. The stand-in is null now.
 */
Test(ability, text_that_extends_a_scanned_value_is_refused)
{
	static const char batch_body[] = "{\"abilities\": [{" BASE ",\"embedding\":[1,2,3,4]}].0}";
	static const char one_body[] = "{" BASE ",\"embedding\":[1,2,3,4].5}";
	struct ability_error err;
	struct ability *a = NULL;
	size_t n;
	bool batch;

	cr_assert(not(ability_parse_body(batch_body, sizeof(batch_body) - 1, DIM, 3, &a, &n, &batch, &err)));
	cr_assert(eq(str, (char *)err.code, "malformed_json"), "%s", err.message);
	cr_assert(not(ability_parse_body(one_body, sizeof(one_body) - 1, DIM, 3, &a, &n, &batch, &err)));
	cr_assert(eq(str, (char *)err.code, "malformed_json"), "%s", err.message);
}

/* The embedding as stored (compact, as sent) and its content hash. */
static void embedding_of(const char *emb, char text[128], char hash[65])
{
	char body[512];
	struct ability_error err;
	struct ability *a;
	size_t n;
	bool batch;

	snprintf(body, sizeof(body), "{" BASE ",\"embedding\":%s}", emb);
	cr_assert(parse(body, &a, &n, &batch, &err), "%s: %s", emb, err.message);
	snprintf(text, 128, "%s", a->embedding);
	strcpy(hash, a->content_hash);
	free_items(a, n);
}

Test(ability, numbers_numeric_prints_otherwise_hash_as_numeric_prints_them_wherever_they_are)
{
	static const char *const pairs[][2] = {
		{"[-0.0, 0.5, 1, 2]", "[0.0,0.5,1,2]"},       /* first */
		{"[0.5, 1, 2, 2E1]", "[0.5,1,2,20]"},         /* last */
		{"[0.5, -0, 1e-2, 3]", "[0.5,0,0.01,3]"},     /* two in the middle */
		{"[ 0.5 ,\n1 ,\t2,3 ]", "[0.5,1,2,3]"},       /* whitespace only */
	};
	char text[128], hash[65], want_text[128], want_hash[65];
	size_t i;

	for (i = 0; i < ARRAY_LEN(pairs); i++) {
		embedding_of(pairs[i][0], text, hash);
		embedding_of(pairs[i][1], want_text, want_hash);
		cr_assert(eq(str, hash, want_hash), "%s hashes as %s", pairs[i][0], pairs[i][1]);
		/* Both stores get the numbers as sent, whitespace removed. */
		cr_assert(not(strchr(text, ' ') || strchr(text, '\n') || strchr(text, '\t')), "%s", text);
	}
	embedding_of("[0.5, 1e-2, 1, 2]", text, hash);
	cr_assert(eq(str, text, "[0.5,1e-2,1,2]"));
	embedding_of("[0.5, 0.01, 1, 2]", want_text, want_hash);
	cr_assert(eq(str, hash, want_hash));
	embedding_of("[0.5, 0.010, 1, 2]", want_text, want_hash);
	cr_assert(not(eq(str, hash, want_hash)), "0.010 has another scale");
}

Test(ability, the_hash_of_two_parts_is_the_hash_of_their_concatenation)
{
	char joined[65], parts[65];

	/* The content hash hashes the attributes and the numbers without joining them: same digest. */
	sha256_hex("{\"a\":1}\n0.5,1,2", 15, joined);
	sha256_hex2("{\"a\":1}\n", 8, "0.5,1,2", 7, parts);
	cr_assert(eq(str, parts, joined));
	cr_assert(eq(str, joined, "6edec2b9a8275625cfa67e3dd3caea7219e2f11d137bdf0549babe4783251422"), "sha256sum of the same bytes");
}

/*
 * The fast scan takes the plain numbers 64 bytes at a time and hands an
 * unusual one to the careful scan: wherever that one stands in a long
 * embedding, the text and the hash are those of a careful read throughout.
 */
Test(ability, a_long_embedding_reads_the_same_wherever_its_unusual_numbers_are)
{
	enum { N = 150 };
	size_t i, k;

	for (i = 0; i < N; i++) {
		struct buf fast = BUF_INIT, careful = BUF_INIT;
		struct ability a, b;
		struct ability_error err;

		for (k = 0; k < N; k++) {
			const char *num = k == i ? "1.5e-5" : k == N - 1 - i ? "-0.00" : NULL;
			char own[32];

			if (!num) {
				snprintf(own, sizeof(own), "%s0.%zu", k % 3 ? "-" : "", k * 7919 % 100000 + 1);
				num = own;
			}
			buf_printf(&fast, "%s%s", k ? ", " : "[", num);
			buf_printf(&careful, "%s%s", k ? " ,\n" : "[ ", num); /* whitespace the fast scan leaves alone */
		}
		buf_puts(&fast, "]");
		buf_puts(&careful, " ]");
		cr_assert(ability_from_row("a", "n", "s", "d", fast.data, "{}", N, &a, &err), "%zu: %s", i, err.message);
		cr_assert(ability_from_row("a", "n", "s", "d", careful.data, "{}", N, &b, &err), "%zu: %s", i, err.message);
		cr_assert(eq(str, a.embedding, b.embedding), "unusual numbers at %zu and %zu", i, N - 1 - i);
		cr_assert(eq(str, a.content_hash, b.content_hash), "unusual numbers at %zu and %zu", i, N - 1 - i);
		ability_free(&a);
		ability_free(&b);
		buf_free(&fast);
		buf_free(&careful);
	}
}
