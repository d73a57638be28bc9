/*
 * ability.h - an ability as clients send it, checked before anything is written.
 *
 *   {"ability_id": "github-get-user", "ability_name": "get_user",
 *    "service_name": "api.github.com", "description": "...",
 *    "embedding": [0.0123, ...], "metadata": {...}}
 *
 * The embedding is validated in place (count, JSON number grammar, finite as a
 * float32) and kept as the exact text the client sent: both stores get those
 * tokens unchanged. jansson parses the rest of the object, with the embedding's
 * text replaced by a placeholder, so no DOM of 3072 numbers is ever built.
 *
 * From a valid ability come the vector DB attributes (what the original app
 * stores: the four fields and every metadata key) and the content hash: sha256
 * of a canonical form of the attributes and the embedding that a request and
 * the row Postgres stores for it both reach (jsonb re-renders numbers: 1e-5
 * comes back as 0.00001). Same content, same hash: a re-sent ability writes
 * nothing, and reconcile can tell a row changed behind our back.
 */
#ifndef ABILITYSYNC_ABILITY_H
#define ABILITYSYNC_ABILITY_H

#include "common.h"
#include "errcode.h"
#include "hash.h"
#include "jsonscan.h"

#include <jansson.h>

#define ABILITY_ID_MAX 255
#define ABILITY_TEXT_MAX 255
#define ABILITY_DESCRIPTION_MAX 16384
#define ABILITY_METADATA_MAX (256 * 1024)

/* Why an ability was refused: an HTTP status, a stable code, the field. */
#define ABILITY_ERRORS_MAX 16

/*
 * Why a body was refused: the first problem found (status, code, field,
 * message) and, for a body (ability_parse_body), every other bad field found
 * after it, up to ABILITY_ERRORS_MAX in all (`more` counts those left out).
 */
struct ability_error {
	int status;         /* 400 malformed, 422 invalid */
	const char *code;   /* e.g. "invalid_embedding" */
	char field[96];     /* e.g. "abilities[3].embedding[17]" */
	char message[400];
	bool collect;       /* a later problem never replaces the first; with collect it is named in `others` */
	size_t nothers, more;
	struct {
		const char *code;
		char field[96];
		char message[200];
	} others[ABILITY_ERRORS_MAX - 1];
};

/* Fills *err (status and code from the table of error codes) and returns false: a body refused. */
bool ability_refuse(struct ability_error *err, enum errcode code, const char *field, const char *fmt, ...)
	PRINTF_LIKE(4, 5);

struct ability {
	char *ability_id;
	char *ability_name;
	char *service_name;
	char *description;
	char *embedding;        /* the client's array text, whitespace removed between tokens */
	size_t embedding_len;
	json_t *metadata;       /* an object ({} when absent) */
	char *metadata_text;    /* compact, as stored in the mirror */
	char *dynamic_header_keys; /* metadata.dynamic_header_keys or [] */
	bool dynamic_headers_required;
	int64_t vector_id;
	char blob_id[ABILITY_TEXT_MAX * 2 + 16];
	char *attributes;       /* the vector DB attributes, content_hash included */
	size_t attributes_len;
	char content_hash[SHA256_HEX_LEN + 1];
};

/*
 * Parses one ability from the object `obj` (a span of the request body) for an
 * embedding of `dim` numbers. `prefix` names its place in the body for errors
 * ("" for a single ability, "abilities[3]." in a batch).
 */
bool ability_parse(struct jspan obj, size_t dim, const char *prefix, struct ability *a,
		   struct ability_error *err) MUSTCHECK;

/*
 * Builds an ability from a mirror row (adopted rows, retries, restore): the
 * embedding text is what Postgres returns for the jsonb. Same checks, same hash.
 */
bool ability_from_row(const char *ability_id, const char *ability_name, const char *service_name,
		      const char *description, const char *embedding, const char *metadata, size_t dim,
		      struct ability *a, struct ability_error *err) MUSTCHECK;

void ability_free(struct ability *a);

struct buf;

/* Appends a JSON number token as PostgreSQL's numeric prints it; false when numeric cannot hold it. */
bool ability_canon_number(const char *tok, size_t len, struct buf *out) MUSTCHECK;

/*
 * Parses a request body: one ability object, or {"abilities": [...]} with 1 to
 * max_batch of them. On success *out holds *n abilities (free each, then the
 * array); on failure nothing is allocated and err names the field.
 */
bool ability_parse_body(const char *body, size_t len, size_t dim, size_t max_batch, struct ability **out,
			size_t *n, bool *batch, struct ability_error *err) MUSTCHECK;

/*
 * A service's full set (PUT /v1/services/{service}/abilities), {"abilities":
 * [...]}, read one ability at a time so that a set of thousands is never in
 * memory parsed at once: ability_set_open checks the whole body (UTF-8, JSON,
 * nothing beside "abilities", an array; it may be empty) and
 * ability_set_next parses the next ability, which must be of `service`. Every
 * bad ability is named in the same err (collected, up to ABILITY_ERRORS_MAX);
 * ability_set_check_ids, once all are read, refuses an ability_id given twice
 * and two abilities on one vector_id. The body must outlive the set.
 */
struct ability_set {
	const char *p, *end;     /* the next element, the array's end */
	const char *service;
	size_t dim, index;
	struct set_id *ids;      /* every ability read: its id, vector_id and place */
	size_t nids, capids;
};

bool ability_set_open(const char *body, size_t len, const char *service, size_t dim, struct ability_set *set,
		      struct ability_error *err) MUSTCHECK;

/* 1: *a holds the next ability (free it); 0: none left; -1: refused (err), the next one may be asked for. */
int ability_set_next(struct ability_set *set, struct ability *a, struct ability_error *err) MUSTCHECK;

bool ability_set_check_ids(struct ability_set *set, struct ability_error *err) MUSTCHECK;

/* How many were read so far. */
size_t ability_set_count(const struct ability_set *set);

void ability_set_free(struct ability_set *set);

#endif
