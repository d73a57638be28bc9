/*
 * fuzz_set_body - bodies of PUT /v1/services/{service}/abilities through the
 * set reader (ability_set_open, ability_set_next, ability_set_check_ids), for
 * embeddings of 4 numbers, checked against the batch parser of POST
 * /v1/abilities (ability_parse_body) on the same bytes.
 *
 * Invariants:
 *   - every refusal (of the envelope, of an ability, of the ids) is a
 *     complete answer: status 400/409/422, a code, UTF-8 field and message;
 *   - the reader ends: next() gives 0 after at most one call per element,
 *     and never an ability of another service than the set's;
 *   - where the batch parser accepts {"abilities": [...]} of one service and
 *     the reader is asked for that service, the reader accepts every ability
 *     and the ids, in order, with the same content hashes;
 *   - ability_set_check_ids refuses exactly when two abilities read share an
 *     ability_id or a vector_id.
 */
#include "fuzz.h"

#include "ability.h"
#include "text.h"

#define DIM 4
#define MAX_BATCH 1000

static bool valid_utf8(const char *s)
{
	size_t bad;

	return utf8_valid(s, strlen(s), &bad);
}

static void check_refusal(const struct ability_error *err)
{
	size_t i;

	CHECK(err->code && (err->status == 400 || err->status == 409 || err->status == 422), "status %d code %s",
	      err->status, err->code ? err->code : "(none)");
	CHECK(valid_utf8(err->field) && valid_utf8(err->message) && err->message[0], "field [%s] message [%s]",
	      err->field, err->message);
	for (i = 0; i < err->nothers; i++)
		CHECK(err->others[i].code && valid_utf8(err->others[i].field) && valid_utf8(err->others[i].message),
		      "other error %zu", i);
}

struct read_one {
	char *id;
	int64_t vector_id;
	char hash[SHA256_HEX_LEN + 1];
};

/* Reads the whole set; *refused when any ability was refused. Returns how many were read (accepted). */
static size_t read_set(struct ability_set *set, const char *service, struct read_one *out, size_t max,
		       bool *refused, struct ability_error *err)
{
	struct ability a;
	size_t n = 0, calls = 0;
	int r;

	*refused = false;
	while ((r = ability_set_next(set, &a, err)) != 0) {
		CHECK(++calls <= MAX_BATCH * 2 + 8, "the reader does not end");
		if (r < 0) {
			*refused = true;
			check_refusal(err);
			continue;
		}
		CHECK(strcmp(a.service_name, service) == 0, "an ability of %s in a set of %s", a.service_name, service);
		if (n < max) {
			out[n].id = strdup(a.ability_id);
			out[n].vector_id = a.vector_id;
			memcpy(out[n].hash, a.content_hash, sizeof(out[n].hash));
		}
		n++;
		ability_free(&a);
	}
	CHECK(ability_set_count(set) == calls, "count %zu after %zu abilities", ability_set_count(set), calls);
	return n;
}

static bool ids_clash(const struct read_one *r, size_t n)
{
	size_t i, k;

	for (i = 0; i < n; i++)
		for (k = 0; k < i; k++)
			if (strcmp(r[i].id, r[k].id) == 0 || r[i].vector_id == r[k].vector_id)
				return true;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = fuzz_copy(data, size);
	struct ability *batch = NULL;
	struct ability_error err, berr;
	struct ability_set set;
	struct read_one got[64];
	const char *service = "s";
	size_t nbatch = 0, n, i;
	bool is_batch = false, refused, same_service;

	if (ability_parse_body(body, size, DIM, MAX_BATCH, &batch, &nbatch, &is_batch, &berr) && is_batch) {
		service = batch[0].service_name;
	}
	same_service = is_batch && nbatch > 0;
	for (i = 0; same_service && i < nbatch; i++)
		same_service = strcmp(batch[i].service_name, service) == 0;
	if (!ability_set_open(body, size, service, DIM, &set, &err)) {
		check_refusal(&err);
		CHECK(!same_service, "the batch parser took the body, the set reader refused it: %s", err.message);
		goto out;
	}
	n = read_set(&set, service, got, sizeof(got) / sizeof(got[0]), &refused, &err);
	if (same_service) {
		CHECK(!refused && n == nbatch, "a batch of %zu of one service read as %zu (refused %d: %s)", nbatch, n,
		      refused, err.message);
		for (i = 0; i < n && i < sizeof(got) / sizeof(got[0]); i++)
			CHECK(strcmp(got[i].id, batch[i].ability_id) == 0 && strcmp(got[i].hash, batch[i].content_hash) == 0,
			      "ability %zu: %s/%s, the batch parser %s/%s", i, got[i].id, got[i].hash, batch[i].ability_id,
			      batch[i].content_hash);
	}
	if (!refused && n <= sizeof(got) / sizeof(got[0])) {
		bool ok = ability_set_check_ids(&set, &err);

		CHECK(ok == !ids_clash(got, n), "check_ids says %d for %zu abilities", ok, n);
		if (!ok)
			check_refusal(&err);
	}
	for (i = 0; i < n && i < sizeof(got) / sizeof(got[0]); i++)
		free(got[i].id);
	ability_set_free(&set);
out:
	for (i = 0; i < nbatch; i++)
		ability_free(&batch[i]);
	free(batch);
	free(body);
	return 0;
}
