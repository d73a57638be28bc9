/*
 * fuzz_ability_body - request bodies of POST /v1/abilities through
 * ability_parse_body, for embeddings of 4 and of 8 numbers, batches of at most 3.
 *
 * Invariants:
 *   - a refusal is a complete answer: status 400/409/422, a code, a message,
 *     and so is every other bad field it names;
 *     the field named (but for whole-body errors), all of it valid UTF-8 so
 *     that api.c can send it as JSON, and the message names the field;
 *   - an accepted body gives 1..max abilities, ids unique; each embedding is
 *     a compact JSON array of exactly dim numbers; attributes, vector id, blob
 *     and hash agree with the fields; the same input parses the same twice;
 *   - the ability written back as a body parses to the same ability and hash;
 *     the mirror's row of it (ability_from_row, the numbers as Postgres prints
 *     them) hashes the same;
 *   - a batch of n refused with max n-1 says batch_too_large.
 */
#include "fuzz.h"

#include "ability.h"
#include "buf.h"
#include "jsonscan.h"
#include "text.h"
#include "vdbid.h"

#include <jansson.h>

#define MAX_BATCH 3

static const size_t dims[] = {4, 8};
static const char *const core[] = {"ability_id", "ability_name", "service_name", "description"};

static bool valid_utf8(const char *s)
{
	size_t bad;

	return utf8_valid(s, strlen(s), &bad);
}

static bool is_core(const char *key)
{
	size_t i;

	for (i = 0; i < 4; i++)
		if (strcmp(key, core[i]) == 0)
			return true;
	return strcmp(key, "content_hash") == 0;
}

static void check_refusal(const struct ability_error *err)
{
	json_t *answer;

	CHECK(err->code && *err->code, "no code (message [%s])", err->message);
	CHECK(err->status == 400 || err->status == 409 || err->status == 422, "%s: status %d", err->code, err->status);
	CHECK(err->message[0], "%s: empty message", err->code);
	CHECK(valid_utf8(err->field), "%s: the field is not UTF-8: [%s]", err->code, err->field);
	CHECK(valid_utf8(err->message), "%s: the message is not UTF-8: [%s]", err->code, err->message);
	/* What api.c's reply_error builds from it; NULL would abort the service. */
	answer = json_pack("{s:{s:s, s:s, s:s?}}", "error", "code", err->code, "message", err->message, "field",
			   err->field[0] ? err->field : NULL);
	CHECK(answer, "%s: the answer cannot be built as JSON", err->code);
	json_decref(answer);
	/* Every other bad field named (a body names them all, up to ABILITY_ERRORS_MAX): complete too. */
	CHECK(err->nothers <= ABILITY_ERRORS_MAX - 1, "%zu others", err->nothers);
	for (size_t i = 0; i < err->nothers; i++) {
		CHECK(err->others[i].code && *err->others[i].code, "other %zu: no code", i);
		CHECK(err->others[i].message[0] && valid_utf8(err->others[i].message), "other %zu: message [%s]", i,
		      err->others[i].message);
		CHECK(valid_utf8(err->others[i].field), "other %zu: field [%s]", i, err->others[i].field);
	}
	/* Whole-body errors name no field; nor does an unknown member whose name is "". */
	if (strcmp(err->code, "invalid_utf8") != 0 && strcmp(err->code, "malformed_json") != 0 &&
	    strcmp(err->code, "wrong_type") != 0 && !strstr(err->message, "\"\" is not "))
		CHECK(err->field[0], "%s names no field: %s", err->code, err->message);
	if (err->field[0] && strlen(err->field) < sizeof(err->field) - 1 && strlen(err->message) < sizeof(err->message) - 1)
		CHECK(strstr(err->message, err->field), "%s: the message [%s] does not name the field [%s]", err->code,
		      err->message, err->field);
}

static void check_embedding(const struct ability *a, size_t dim)
{
	struct jspan e = {a->embedding, a->embedding_len};
	struct js_error je;
	json_error_t jerr;
	json_t *arr, *x;
	size_t count = 0, i;

	CHECK(a->embedding && strlen(a->embedding) == a->embedding_len, "embedding length");
	CHECK(a->embedding_len >= 2 && a->embedding[0] == '[' && a->embedding[a->embedding_len - 1] == ']',
	      "not an array: %s", a->embedding);
	CHECK(!strpbrk(a->embedding, " \t\r\n"), "whitespace left in %s", a->embedding);
	CHECK(js_number_array(e, &count, &je) && count == dim, "%zu numbers in %s, dim %zu", count, a->embedding, dim);
	arr = json_loadb(a->embedding, a->embedding_len, JSON_DECODE_INT_AS_REAL, &jerr);
	CHECK(json_is_array(arr) && json_array_size(arr) == dim, "jansson reads %s as %s", a->embedding,
	      arr ? "something else" : jerr.text);
	json_array_foreach(arr, i, x)
		CHECK(json_is_number(x), "element %zu", i);
	json_decref(arr);
}

/* What is accepted is JSON, whole: a second parser reads it too ([1,2,] once got through). */
static void check_json(const char *body, size_t size)
{
	json_error_t jerr;
	json_t *j = json_loadb(body, size, JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES, &jerr);

	CHECK(json_is_object(j), "accepted a body jansson does not read: %s", j ? "not an object" : jerr.text);
	json_decref(j);
}

static void check_fields(const struct ability *a)
{
	char blob[ABILITY_TEXT_MAX * 2 + 16];
	struct errbuf verr;
	json_error_t jerr;
	json_t *attrs, *meta, *keys, *want, *v;
	const char *values[4] = {a->ability_id, a->ability_name, a->service_name, a->description};
	const char *key;
	int64_t vid;
	size_t i;

	CHECK(strlen(a->ability_id) >= 1 && strlen(a->ability_id) <= ABILITY_ID_MAX, "ability_id length");
	CHECK(strspn(a->ability_id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@-") ==
		      strlen(a->ability_id), "ability_id [%s]", a->ability_id);
	CHECK(*a->ability_name && strlen(a->ability_name) <= ABILITY_TEXT_MAX, "ability_name");
	CHECK(*a->service_name && strlen(a->service_name) <= ABILITY_TEXT_MAX, "service_name");
	CHECK(*a->description && strlen(a->description) <= ABILITY_DESCRIPTION_MAX, "description");
	CHECK(strlen(a->content_hash) == 64 && strspn(a->content_hash, "0123456789abcdef") == 64, "hash %s",
	      a->content_hash);
	CHECK(vdb_vector_id(a->ability_id, strlen(a->ability_id), &vid, &verr) && vid == a->vector_id, "vector_id");
	vdb_blob_name(a->service_name, strlen(a->service_name), blob, sizeof(blob));
	CHECK(strcmp(blob, a->blob_id) == 0, "blob %s, expected %s", a->blob_id, blob);

	CHECK(json_is_object(a->metadata), "metadata");
	meta = json_loads(a->metadata_text, 0, &jerr);
	CHECK(meta && json_equal(meta, a->metadata), "metadata_text %s", a->metadata_text);
	json_decref(meta);
	keys = json_loads(a->dynamic_header_keys, 0, &jerr);
	want = json_object_get(a->metadata, "dynamic_header_keys");
	CHECK(json_is_array(keys), "dynamic_header_keys %s", a->dynamic_header_keys);
	CHECK(want && !json_is_null(want) ? json_equal(keys, want) : json_array_size(keys) == 0, "dynamic_header_keys");
	CHECK(a->dynamic_headers_required == (json_array_size(keys) > 0), "dynamic_headers_required");
	json_decref(keys);

	CHECK(strlen(a->attributes) == a->attributes_len, "attributes_len");
	attrs = json_loadb(a->attributes, a->attributes_len, 0, &jerr);
	CHECK(json_is_object(attrs), "attributes %s", a->attributes);
	CHECK(json_is_string(json_object_get(attrs, "content_hash")) &&
		      strcmp(json_string_value(json_object_get(attrs, "content_hash")), a->content_hash) == 0,
	      "content_hash attribute");
	for (i = 0; i < 4; i++) {
		v = json_object_get(attrs, core[i]);
		CHECK(json_is_string(v) && strcmp(json_string_value(v), values[i]) == 0, "attribute %s", core[i]);
	}
	json_object_foreach(a->metadata, key, v)
		if (!is_core(key))
			CHECK(json_equal(json_object_get(attrs, key), v), "metadata key %s missing from the attributes", key);
	json_object_foreach(attrs, key, v)
		CHECK(is_core(key) || json_object_get(a->metadata, key), "attribute %s comes from nowhere", key);
	json_decref(attrs);
}

/* The ability as a body again: the fields, its metadata, its embedding text. */
static char *as_body(const struct ability *a)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:O}", "ability_id", a->ability_id, "ability_name", a->ability_name,
			      "service_name", a->service_name, "description", a->description, "metadata", a->metadata);
	struct buf b = BUF_INIT;
	char *text;

	CHECK(o, "the fields cannot be packed again");
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	buf_append(&b, text, strlen(text) - 1);
	buf_puts(&b, ",\"embedding\":");
	buf_append(&b, a->embedding, a->embedding_len);
	buf_putc(&b, '}');
	free(text);
	return buf_steal(&b);
}

/* The embedding as the mirror gives it back: numeric's spelling, jsonb's ", ". */
static char *as_postgres(const struct ability *a)
{
	struct buf b = BUF_INIT;
	const char *p = a->embedding + 1, *end = a->embedding + a->embedding_len - 1;

	buf_putc(&b, '[');
	while (p < end) {
		const char *q = js_number_end(p, end);

		CHECK(q, "no number at %s", p);
		if (b.len > 1)
			buf_puts(&b, ", ");
		CHECK(ability_canon_number(p, (size_t)(q - p), &b), "canon refused %.*s", (int)(q - p), p);
		p = q < end && *q == ',' ? q + 1 : q;
	}
	buf_putc(&b, ']');
	return buf_steal(&b);
}

static void check_round_trips(const struct ability *a, size_t dim)
{
	struct ability_error err;
	struct ability *again, row;
	size_t n;
	bool batch;
	char *body = as_body(a), *pg;

	CHECK(ability_parse_body(body, strlen(body), dim, 1, &again, &n, &batch, &err), "written back, refused: %s: %s\n  %s",
	      err.field, err.message, body);
	CHECK(n == 1 && !batch, "one ability");
	CHECK(strcmp(again->content_hash, a->content_hash) == 0, "hash changed written back:\n  %s", body);
	CHECK(strcmp(again->attributes, a->attributes) == 0, "attributes changed written back");
	CHECK(strcmp(again->embedding, a->embedding) == 0, "embedding changed written back");
	CHECK(strcmp(again->metadata_text, a->metadata_text) == 0, "metadata changed written back");
	ability_free(again);
	free(again);
	free(body);

	pg = as_postgres(a);
	memset(&err, 0, sizeof(err));
	CHECK(ability_from_row(a->ability_id, a->ability_name, a->service_name, a->description, pg, a->metadata_text,
			       dim, &row, &err),
	      "the row is refused: %s: %s\n  %s", err.field, err.message, pg);
	CHECK(strcmp(row.content_hash, a->content_hash) == 0, "the row hashes differently:\n  %s\n  %s", a->embedding, pg);
	CHECK(strcmp(row.attributes, a->attributes) == 0, "the row's attributes differ");
	ability_free(&row);
	free(pg);
}

/* Two parses of one input: the same outcome. */
static void check_same(bool ok1, const struct ability *a1, size_t n1, const struct ability_error *e1, bool ok2,
		       const struct ability *a2, size_t n2, const struct ability_error *e2)
{
	size_t i;

	CHECK(ok1 == ok2, "accepted once, refused once");
	if (!ok1) {
		CHECK(strcmp(e1->code, e2->code) == 0 && strcmp(e1->field, e2->field) == 0 &&
			      strcmp(e1->message, e2->message) == 0, "two different refusals");
		return;
	}
	CHECK(n1 == n2, "counts");
	for (i = 0; i < n1; i++)
		CHECK(strcmp(a1[i].content_hash, a2[i].content_hash) == 0, "the hash is not stable");
}

static void free_all(struct ability *a, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		ability_free(&a[i]);
	free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = fuzz_copy(data, size);
	size_t d;

	for (d = 0; d < ARRAY_LEN(dims); d++) {
		struct ability_error e1, e2;
		struct ability *a1, *a2;
		size_t n1, n2, i, k;
		bool b1, b2, ok1, ok2;

		memset(&e1, 0, sizeof(e1));
		memset(&e2, 0, sizeof(e2));
		ok1 = ability_parse_body(body, size, dims[d], MAX_BATCH, &a1, &n1, &b1, &e1);
		ok2 = ability_parse_body(body, size, dims[d], MAX_BATCH, &a2, &n2, &b2, &e2);
		check_same(ok1, a1, n1, &e1, ok2, a2, n2, &e2);
		if (ok2)
			free_all(a2, n2);
		if (!ok1) {
			CHECK(!a1 && n1 == 0, "a refusal left abilities behind");
			check_refusal(&e1);
			continue;
		}
		CHECK(n1 >= 1 && n1 <= MAX_BATCH && (b1 || n1 == 1), "%zu abilities", n1);
		check_json(body, size);
		for (i = 0; i < n1; i++) {
			check_embedding(&a1[i], dims[d]);
			check_fields(&a1[i]);
			check_round_trips(&a1[i], dims[d]);
			for (k = 0; k < i; k++)
				CHECK(strcmp(a1[i].ability_id, a1[k].ability_id) != 0, "ability_id twice in a batch");
		}
		if (b1 && n1 >= 2) {
			CHECK(!ability_parse_body(body, size, dims[d], n1 - 1, &a2, &n2, &b2, &e2) &&
				      strcmp(e2.code, "batch_too_large") == 0,
			      "a batch of %zu with BATCH_MAX %zu", n1, n1 - 1);
		}
		free_all(a1, n1);
	}
	free(body);
	return 0;
}
