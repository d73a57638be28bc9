#include "errcode.h"

#include "common.h"

#include <string.h>

static const struct errcode_def defs[E_COUNT] = {
	[E_BAD_REQUEST] = {"bad_request", 400,
			   "the request line or headers cannot be parsed, or are over HTTP_HEADERS_MAX (answered before any handler)"},
	[E_MALFORMED_JSON] = {"malformed_json", 400,
			      "the body is not JSON, a member appears twice in an object, or a string holds \\u0000"},
	[E_INVALID_UTF8] = {"invalid_utf8", 400, "the body is not UTF-8 (the message gives the byte)"},
	[E_BAD_QUERY] = {"bad_query", 400, "the query string cannot be parsed, or a parameter is not UTF-8"},
	[E_BAD_PATH] = {"bad_path", 400, "the id in the path cannot be decoded, or is not UTF-8"},
	[E_UNAUTHORIZED] = {"unauthorized", 401, "no API key, or not a valid one (API_KEYS)"},
	[E_FORBIDDEN] = {"forbidden", 403, "the key lacks the scope the route needs (read, write, admin; the message names it)"},
	[E_NOT_FOUND] = {"not_found", 404, "no such route, ability, job or reconcile run"},
	[E_METHOD_NOT_ALLOWED] = {"method_not_allowed", 405, "the route exists with other methods (the Allow header lists them)"},
	[E_VECTOR_ID_COLLISION] = {"vector_id_collision", 409,
				   "the ability's vector_id is another ability's in the same blob; nothing was written"},
	[E_RESTORE_RUNNING] = {"restore_running", 409, "a restore job runs already (this replica or another; `resume` joins one another replica runs)"},
	[E_RECONCILE_RUNNING] = {"reconcile_running", 409,
				 "a reconcile run started over HTTP runs in this replica, or another process runs one with other options"},
	[E_NOTHING_TO_RESUME] = {"nothing_to_resume", 409, "`resume` asked, and no unfinished restore job exists"},
	[E_JOB_NOT_RUNNING] = {"job_not_running", 409, "a cancel asked of a job that is no longer running"},
	[E_PAYLOAD_TOO_LARGE] = {"payload_too_large", 413,
				 "the body is over MAX_BODY_BYTES (refused before it is read)"},
	[E_EXPECTATION_FAILED] = {"expectation_failed", 417, "an Expect header other than 100-continue"},
	[E_UNSUPPORTED_MEDIA_TYPE] = {"unsupported_media_type", 415, "the body is not sent as application/json"},
	[E_MISSING_FIELD] = {"missing_field", 422, "a required field is absent"},
	[E_WRONG_TYPE] = {"wrong_type", 422, "a field has the wrong JSON type"},
	[E_INVALID_FIELD] = {"invalid_field", 422, "a field's value is out of range or not allowed"},
	[E_UNKNOWN_FIELD] = {"unknown_field", 422, "a field the API does not know (nothing unknown is stored)"},
	[E_DUPLICATE_FIELD] = {"duplicate_field", 422, "a field appears twice"},
	[E_EMPTY_FIELD] = {"empty_field", 422, "a string field that must not be empty is"},
	[E_TOO_LONG] = {"too_long", 422, "a string field is over its length (255 bytes; description 16 KiB)"},
	[E_INVALID_ABILITY_ID] = {"invalid_ability_id", 422,
				  "ability_id is not 1-255 bytes of A-Z a-z 0-9 . _ : @ -"},
	[E_VECTOR_ID_OUT_OF_RANGE] = {"vector_id_out_of_range", 422,
				      "the ability_id maps to vector_id 2147483648, which the mirror's integer column cannot hold"},
	[E_WRONG_DIMENSION] = {"wrong_dimension", 422, "the embedding does not have EMBEDDING_DIM numbers"},
	[E_INVALID_EMBEDDING] = {"invalid_embedding", 422,
				 "an element of the embedding is not a finite float32 number (the field names which)"},
	[E_EMPTY_BATCH] = {"empty_batch", 422, "{\"abilities\": []}"},
	[E_BATCH_TOO_LARGE] = {"batch_too_large", 422, "more than BATCH_MAX abilities in one request"},
	[E_DUPLICATE_ABILITY] = {"duplicate_ability", 422, "one ability_id twice in a batch"},
	[E_INVALID_BODY] = {"invalid_body", 422, "the body is JSON but not the object the route takes"},
	[E_INVALID_PARAMETER] = {"invalid_parameter", 422, "a query parameter's value is not allowed (limit, include)"},
	[E_POSTGRES_ERROR] = {"postgres_error", 500, "Postgres refused a statement (the message quotes it)"},
	[E_NEEDS_POSTGRES] = {"needs_postgres", 501, "the route needs DATABASE_URL (vector-DB-only mode)"},
	[E_METHOD_NOT_IMPLEMENTED] = {"method_not_implemented", 501, "a method the API has no route for anywhere (TRACE, CONNECT)"},
	[E_VECTOR_DB_ERROR] = {"vector_db_error", 502, "vector-DB-only mode: the vector DB refused the write"},
	[E_POSTGRES_UNAVAILABLE] = {"postgres_unavailable", 503,
				    "Postgres cannot be reached or did not answer in time; Retry-After says when to try again"},
	[E_NOT_MIGRATED] = {"not_migrated", 503, "the database lacks abilitysync's migrations: run `abilitysync migrate up`"},
	[E_VECTOR_DB_UNAVAILABLE] = {"vector_db_unavailable", 503,
				     "the vector DB cannot be reached (search; vector-DB-only writes)"},
	[E_RATE_LIMITED] = {"rate_limited", 429,
			     "the key sent more than RATE_LIMIT_RPS requests a second (burst RATE_LIMIT_BURST); Retry-After says when"},
	[E_TOO_MANY_JOBS] = {"too_many_jobs", 503,
			     "JOBS_MAX long jobs run in this replica; Retry-After says when to try again"},
	[E_OVERLOADED] = {"overloaded", 503, "HTTP_MAX_IN_FLIGHT requests are being handled; Retry-After says when to try again"},
};

const struct errcode_def *errcode_def(enum errcode e)
{
	return &defs[e < E_COUNT ? e : E_POSTGRES_ERROR];
}

enum errcode errcode_by_name(const char *code)
{
	size_t i;

	for (i = 0; i < E_COUNT; i++)
		if (strcmp(defs[i].code, code) == 0)
			return (enum errcode)i;
	return E_COUNT;
}

void errcode_print_markdown(FILE *f)
{
	size_t i;

	fprintf(f, "| status | code | meaning |\n|---|---|---|\n");
	for (i = 0; i < E_COUNT; i++)
		fprintf(f, "| %d | `%s` | %s |\n", defs[i].status, defs[i].code, defs[i].meaning);
}
