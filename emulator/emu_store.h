/*
 * emu_store.h - the vector DB emulator's data: tenants -> blobs -> vectors.
 *
 * Everything lives in memory and nothing here does I/O. A blob keeps its
 * vectors as one row-major float32 array (12 KB per 3072-d vector) beside
 * parallel arrays of ids, norms and attributes, and an id -> entry hash map,
 * so that lookups and deletes by id are O(1) and a query is one pass over
 * contiguous memory.
 *
 * Writes are atomic: a batch is staged in the blob's spare room, checked as a
 * whole (duplicate ids, the tenant's quota, ids left to assign) and only then
 * made visible; a refused batch leaves the blob as it was.
 *
 * Names of tenants and blobs are 1-128 bytes of [A-Za-z0-9_.-] (emu_name_valid);
 * callers check them before adding.
 */
#ifndef ABILITYSYNC_EMU_STORE_H
#define ABILITYSYNC_EMU_STORE_H

#include "common.h"

#define EMU_NAME_MAX 128
#define EMU_DIM_MAX 65536
#define EMU_NONE SIZE_MAX /* "no entry" in chains and lookups */

/* What a write does with an id the blob already holds. */
enum emu_dup_mode {
	EMU_DUP_OVERWRITE, /* replace the vector and its attributes */
	EMU_DUP_REJECT,    /* refuse the whole batch */
	EMU_DUP_DUPLICATE, /* store another entry with the same id */
};

struct emu_idmap_slot;

/* id -> the first entry with that id (open addressing, linear probing). */
struct emu_idmap {
	struct emu_idmap_slot *slots;
	size_t cap; /* a power of two, or 0 */
	size_t n;
};

struct emu_blob {
	char *id;
	char *type; /* "dense" or "kge" */
	size_t dim;
	size_t count; /* entries stored */
	size_t cap;   /* entries the arrays have room for */
	float *vecs;  /* count x dim */
	double *norms;
	int64_t *ids;
	char **attrs; /* compact JSON object text, or NULL for none */
	size_t *next; /* the next entry with the same id, or EMU_NONE */
	struct emu_idmap map;
	int64_t max_id; /* largest id ever stored, -1 at first: server ids go above it */
};

struct emu_tenant {
	char *id;
	long long max_vectors; /* 0: no limit */
	struct emu_blob **blobs;
	size_t nblobs, cap;
};

struct emu_store {
	struct emu_tenant **tenants;
	size_t n, cap;
};

/* A staged write: vectors were written to emu_blob_stage()'s room. */
struct emu_batch {
	size_t n;
	const int64_t *ids; /* n ids, or NULL to have the blob assign them */
	char **attrs;       /* n entries (NULL = none), or NULL; always taken over */
};

enum emu_add_result {
	EMU_ADD_OK,
	EMU_ADD_EXISTS,  /* reject mode and an id is taken: 409 */
	EMU_ADD_INVALID, /* over the tenant's quota, or no ids left to assign: 400 */
};

/* A query hit. */
struct emu_hit {
	int64_t id;
	size_t entry;
	double distance;
};

bool emu_name_valid(const char *s);

bool emu_dup_mode_parse(const char *s, enum emu_dup_mode *out) MUSTCHECK;
const char *emu_dup_mode_name(enum emu_dup_mode mode);

void emu_store_init(struct emu_store *s);
void emu_store_free(struct emu_store *s);

struct emu_tenant *emu_tenant_find(const struct emu_store *s, const char *id);
struct emu_tenant *emu_tenant_add(struct emu_store *s, const char *id, long long max_vectors);
bool emu_tenant_delete(struct emu_store *s, const char *id);
size_t emu_tenant_vectors(const struct emu_tenant *t);

struct emu_blob *emu_blob_find(const struct emu_tenant *t, const char *id);
struct emu_blob *emu_blob_add(struct emu_tenant *t, const char *id, const char *type, size_t dim);
bool emu_blob_delete(struct emu_tenant *t, const char *id);

/*
 * Room for n vectors of b->dim floats after the stored ones, for a caller to
 * parse a batch straight into. Valid until the next call on the blob; calling
 * it again with a larger n keeps what was written (the pointer may move).
 */
float *emu_blob_stage(struct emu_blob *b, size_t n);

/*
 * Makes the first batch->n staged vectors visible, under `mode`, and writes the
 * ids they got to out_ids (n of them). Checks everything before storing
 * anything; on refusal err says why (EMU_ADD_EXISTS: "Vector id N already
 * exists").
 */
enum emu_add_result emu_blob_commit(struct emu_tenant *t, struct emu_blob *b, const struct emu_batch *batch,
				    enum emu_dup_mode mode, int64_t *out_ids, struct errbuf *err) MUSTCHECK;

/* Stage + commit in one call, for callers holding the floats already. */
enum emu_add_result emu_blob_add_vectors(struct emu_tenant *t, struct emu_blob *b, const float *vecs,
					 const struct emu_batch *batch, enum emu_dup_mode mode,
					 int64_t *out_ids, struct errbuf *err) MUSTCHECK;

/* The first entry with `id`, or EMU_NONE; the others follow b->next[]. */
size_t emu_blob_lookup(const struct emu_blob *b, int64_t id);

static inline const float *emu_blob_vector(const struct emu_blob *b, size_t entry)
{
	return b->vecs + entry * b->dim;
}

/* Replaces the attributes of every entry with `id` (json: taken over); returns how many. */
size_t emu_blob_set_attrs(struct emu_blob *b, int64_t id, char *json);

/* Removes every entry with `id`; returns how many. */
size_t emu_blob_delete_id(struct emu_blob *b, int64_t id);

/* Removes every vector; returns how many there were. */
size_t emu_blob_clear(struct emu_blob *b);

/* Every stored id, ascending, repeated for duplicates: b->count of them. */
void emu_blob_ids_sorted(const struct emu_blob *b, int64_t *out);

/*
 * The k nearest entries to q (b->dim floats) by cosine distance 1 - cos,
 * ascending, ties by ascending id; a zero vector on either side is at 1.
 * Writes at most k hits to out and returns how many.
 */
size_t emu_blob_query(const struct emu_blob *b, const float *q, size_t k, struct emu_hit *out);

#endif
