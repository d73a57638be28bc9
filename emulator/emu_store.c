#include "emu_store.h"

#include "mem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const dup_mode_names[] = {"overwrite", "reject", "duplicate"};

bool emu_dup_mode_parse(const char *s, enum emu_dup_mode *out)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(dup_mode_names); i++) {
		if (strcmp(s, dup_mode_names[i]) == 0) {
			*out = (enum emu_dup_mode)i;
			return true;
		}
	}
	return false;
}

const char *emu_dup_mode_name(enum emu_dup_mode mode)
{
	return dup_mode_names[mode];
}

bool emu_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > EMU_NAME_MAX)
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

/* ---- id -> entry map ---------------------------------------------------- */

struct emu_idmap_slot {
	int64_t key;
	size_t val; /* EMU_NONE: the slot is empty */
};

/* splitmix64's finalizer: ids are often small and sequential. */
static size_t id_hash(int64_t id)
{
	uint64_t x = (uint64_t)id;

	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (size_t)x;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t idmap_slot(const struct emu_idmap *m, int64_t key)
{
	size_t mask = m->cap - 1, i = id_hash(key) & mask;

	while (m->slots[i].val != EMU_NONE && m->slots[i].key != key)
		i = (i + 1) & mask;
	return i;
}

static size_t idmap_get(const struct emu_idmap *m, int64_t key)
{
	if (m->n == 0)
		return EMU_NONE;
	return m->slots[idmap_slot(m, key)].val;
}

static void idmap_resize(struct emu_idmap *m, size_t cap)
{
	struct emu_idmap old = *m;
	size_t i;

	m->slots = xmalloc(cap * sizeof(*m->slots));
	m->cap = cap;
	for (i = 0; i < cap; i++)
		m->slots[i].val = EMU_NONE;
	for (i = 0; i < old.cap; i++)
		if (old.slots[i].val != EMU_NONE)
			m->slots[idmap_slot(m, old.slots[i].key)] = old.slots[i];
	free(old.slots);
}

static void idmap_put(struct emu_idmap *m, int64_t key, size_t val)
{
	size_t i;

	/* At most half full, so probe runs stay short. */
	if ((m->n + 1) * 2 > m->cap)
		idmap_resize(m, m->cap ? m->cap * 2 : 64);
	i = idmap_slot(m, key);
	if (m->slots[i].val == EMU_NONE)
		m->n++;
	m->slots[i].key = key;
	m->slots[i].val = val;
}

/* True when `home` lies cyclically in (hole, j]: the entry at j must stay put. */
static bool stays(size_t home, size_t hole, size_t j)
{
	return hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
}

/* Deletes by shifting the rest of the probe run back: no tombstones to age. */
static void idmap_del(struct emu_idmap *m, int64_t key)
{
	size_t mask = m->cap - 1, hole, j;

	if (m->n == 0)
		return;
	hole = idmap_slot(m, key);
	if (m->slots[hole].val == EMU_NONE)
		return;
	m->n--;
	for (j = hole;;) {
		m->slots[hole].val = EMU_NONE;
		do {
			j = (j + 1) & mask;
			if (m->slots[j].val == EMU_NONE)
				return;
		} while (stays(id_hash(m->slots[j].key) & mask, hole, j));
		m->slots[hole] = m->slots[j];
		hole = j;
	}
}

static void idmap_free(struct emu_idmap *m)
{
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

/* ---- tenants and blobs ------------------------------------------------- */

void emu_store_init(struct emu_store *s)
{
	memset(s, 0, sizeof(*s));
}

static void blob_free_vectors(struct emu_blob *b)
{
	size_t i;

	for (i = 0; i < b->count; i++)
		free(b->attrs[i]);
	free(b->vecs);
	free(b->norms);
	free(b->ids);
	free(b->attrs);
	free(b->next);
	idmap_free(&b->map);
	b->vecs = NULL;
	b->norms = NULL;
	b->ids = NULL;
	b->attrs = NULL;
	b->next = NULL;
	b->count = b->cap = 0;
}

static void blob_free(struct emu_blob *b)
{
	blob_free_vectors(b);
	free(b->id);
	free(b->type);
	free(b);
}

static void tenant_free(struct emu_tenant *t)
{
	size_t i;

	for (i = 0; i < t->nblobs; i++)
		blob_free(t->blobs[i]);
	free(t->blobs);
	free(t->id);
	free(t);
}

void emu_store_free(struct emu_store *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		tenant_free(s->tenants[i]);
	free(s->tenants);
	emu_store_init(s);
}

struct emu_tenant *emu_tenant_find(const struct emu_store *s, const char *id)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->tenants[i]->id, id) == 0)
			return s->tenants[i];
	return NULL;
}

struct emu_tenant *emu_tenant_add(struct emu_store *s, const char *id, long long max_vectors)
{
	struct emu_tenant *t = xcalloc(1, sizeof(*t));

	t->id = xstrdup(id);
	t->max_vectors = max_vectors;
	s->tenants = xgrow(s->tenants, &s->cap, s->n + 1, sizeof(*s->tenants));
	s->tenants[s->n++] = t;
	return t;
}

bool emu_tenant_delete(struct emu_store *s, const char *id)
{
	size_t i;

	for (i = 0; i < s->n; i++) {
		if (strcmp(s->tenants[i]->id, id) != 0)
			continue;
		tenant_free(s->tenants[i]);
		memmove(&s->tenants[i], &s->tenants[i + 1], (s->n - i - 1) * sizeof(*s->tenants));
		s->n--;
		return true;
	}
	return false;
}

size_t emu_tenant_vectors(const struct emu_tenant *t)
{
	size_t i, n = 0;

	for (i = 0; i < t->nblobs; i++)
		n += t->blobs[i]->count;
	return n;
}

struct emu_blob *emu_blob_find(const struct emu_tenant *t, const char *id)
{
	size_t i;

	for (i = 0; i < t->nblobs; i++)
		if (strcmp(t->blobs[i]->id, id) == 0)
			return t->blobs[i];
	return NULL;
}

struct emu_blob *emu_blob_add(struct emu_tenant *t, const char *id, const char *type, size_t dim)
{
	struct emu_blob *b = xcalloc(1, sizeof(*b));

	b->id = xstrdup(id);
	b->type = xstrdup(type);
	b->dim = dim;
	b->max_id = -1;
	t->blobs = xgrow(t->blobs, &t->cap, t->nblobs + 1, sizeof(*t->blobs));
	t->blobs[t->nblobs++] = b;
	return b;
}

bool emu_blob_delete(struct emu_tenant *t, const char *id)
{
	size_t i;

	for (i = 0; i < t->nblobs; i++) {
		if (strcmp(t->blobs[i]->id, id) != 0)
			continue;
		blob_free(t->blobs[i]);
		memmove(&t->blobs[i], &t->blobs[i + 1], (t->nblobs - i - 1) * sizeof(*t->blobs));
		t->nblobs--;
		return true;
	}
	return false;
}

/* ---- vectors ------------------------------------------------------------ */

static void blob_reserve(struct emu_blob *b, size_t need)
{
	size_t cap = b->cap ? b->cap : 16;

	if (need <= b->cap)
		return;
	while (cap < need)
		cap *= 2;
	if (cap > SIZE_MAX / sizeof(float) / b->dim)
		abort(); /* larger than any address space */
	b->vecs = xrealloc(b->vecs, cap * b->dim * sizeof(float));
	b->norms = xrealloc(b->norms, cap * sizeof(*b->norms));
	b->ids = xrealloc(b->ids, cap * sizeof(*b->ids));
	b->attrs = xrealloc(b->attrs, cap * sizeof(*b->attrs));
	b->next = xrealloc(b->next, cap * sizeof(*b->next));
	b->cap = cap;
}

float *emu_blob_stage(struct emu_blob *b, size_t n)
{
	blob_reserve(b, b->count + n);
	return b->vecs + b->count * b->dim;
}

size_t emu_blob_lookup(const struct emu_blob *b, int64_t id)
{
	return idmap_get(&b->map, id);
}

static double vec_dot(const float *a, const float *b, size_t dim)
{
	double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	size_t i = 0;

	/* Four sums so that the additions do not wait on each other. */
	for (; i + 4 <= dim; i += 4) {
		s0 += (double)a[i] * b[i];
		s1 += (double)a[i + 1] * b[i + 1];
		s2 += (double)a[i + 2] * b[i + 2];
		s3 += (double)a[i + 3] * b[i + 3];
	}
	for (; i < dim; i++)
		s0 += (double)a[i] * b[i];
	return (s0 + s1) + (s2 + s3);
}

static double vec_norm(const float *v, size_t dim)
{
	return sqrt(vec_dot(v, v, dim));
}

static void free_batch_attrs(const struct emu_batch *batch)
{
	size_t i;

	if (!batch->attrs)
		return;
	for (i = 0; i < batch->n; i++)
		free(batch->attrs[i]);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static int64_t *sorted_copy(const int64_t *ids, size_t n)
{
	int64_t *s = xmalloc(n * sizeof(*s));

	memcpy(s, ids, n * sizeof(*s));
	qsort(s, n, sizeof(*s), cmp_i64);
	return s;
}

/* Reject mode: an id the blob holds, or one the batch repeats. */
static bool find_taken(const struct emu_blob *b, const int64_t *ids, size_t n, int64_t *taken)
{
	int64_t *s;
	size_t i;
	bool found = false;

	for (i = 0; i < n; i++) {
		if (emu_blob_lookup(b, ids[i]) != EMU_NONE) {
			*taken = ids[i];
			return true;
		}
	}
	s = sorted_copy(ids, n);
	for (i = 1; i < n && !found; i++) {
		if (s[i] == s[i - 1]) {
			*taken = s[i];
			found = true;
		}
	}
	free(s);
	return found;
}

/* Overwrite mode: how many entries the batch adds (distinct ids not yet held). */
static size_t count_fresh(const struct emu_blob *b, const int64_t *ids, size_t n)
{
	int64_t *s = sorted_copy(ids, n);
	size_t i, fresh = 0;

	for (i = 0; i < n; i++)
		if ((i == 0 || s[i] != s[i - 1]) && emu_blob_lookup(b, s[i]) == EMU_NONE)
			fresh++;
	free(s);
	return fresh;
}

static uint64_t ids_left(const struct emu_blob *b)
{
	return b->max_id < 0 ? (uint64_t)INT64_MAX + 1 : (uint64_t)(INT64_MAX - b->max_id);
}

static enum emu_add_result check_batch(const struct emu_tenant *t, const struct emu_blob *b,
				       const struct emu_batch *batch, enum emu_dup_mode mode, struct errbuf *err)
{
	size_t fresh = batch->n, have;
	int64_t taken;

	if (!batch->ids && batch->n > ids_left(b)) {
		err_set(err, "blob '%s' has no ids left to assign above %lld", b->id, (long long)b->max_id);
		return EMU_ADD_INVALID;
	}
	if (batch->ids && mode == EMU_DUP_REJECT && find_taken(b, batch->ids, batch->n, &taken)) {
		err_set(err, "Vector id %lld already exists", (long long)taken);
		return EMU_ADD_EXISTS;
	}
	if (batch->ids && mode == EMU_DUP_OVERWRITE)
		fresh = count_fresh(b, batch->ids, batch->n);
	have = emu_tenant_vectors(t);
	if (t->max_vectors > 0 && have + fresh > (unsigned long long)t->max_vectors) {
		err_set(err, "tenant '%s' allows at most %lld vectors: it has %zu and this request adds %zu",
			t->id, t->max_vectors, have, fresh);
		return EMU_ADD_INVALID;
	}
	return EMU_ADD_OK;
}

/* Gives every entry of e's chain the staged vector and the attributes. */
static void overwrite_chain(struct emu_blob *b, size_t e, size_t staged, double norm, char *attrs)
{
	bool first = true;

	for (; e != EMU_NONE; e = b->next[e]) {
		memcpy(b->vecs + e * b->dim, b->vecs + staged * b->dim, b->dim * sizeof(float));
		b->norms[e] = norm;
		free(b->attrs[e]);
		b->attrs[e] = first || !attrs ? attrs : xstrdup(attrs);
		first = false;
	}
}

/* Moves the staged vector to the end of the stored ones; head: the id's chain so far. */
static void append_entry(struct emu_blob *b, size_t staged, int64_t id, double norm, char *attrs, size_t head)
{
	size_t pos = b->count;

	if (pos != staged)
		memcpy(b->vecs + pos * b->dim, b->vecs + staged * b->dim, b->dim * sizeof(float));
	b->ids[pos] = id;
	b->norms[pos] = norm;
	b->attrs[pos] = attrs;
	b->next[pos] = head;
	idmap_put(&b->map, id, pos);
	if (id > b->max_id)
		b->max_id = id;
	b->count++;
}

static void store_one(struct emu_blob *b, size_t staged, int64_t id, char *attrs, enum emu_dup_mode mode)
{
	size_t head = emu_blob_lookup(b, id);
	double norm = vec_norm(b->vecs + staged * b->dim, b->dim);

	if (mode == EMU_DUP_OVERWRITE && head != EMU_NONE)
		overwrite_chain(b, head, staged, norm, attrs);
	else
		append_entry(b, staged, id, norm, attrs, head);
}

enum emu_add_result emu_blob_commit(struct emu_tenant *t, struct emu_blob *b, const struct emu_batch *batch,
				    enum emu_dup_mode mode, int64_t *out_ids, struct errbuf *err)
{
	/* Staged vector i is at base + i; entries are appended at count <= base + i. */
	size_t i, base = b->count;
	int64_t first_free = 0;
	enum emu_add_result r;

	r = check_batch(t, b, batch, mode, err);
	if (r != EMU_ADD_OK) {
		free_batch_attrs(batch);
		return r;
	}
	if (!batch->ids && batch->n > 0)
		first_free = b->max_id + 1; /* check_batch saw that n ids are left */
	for (i = 0; i < batch->n; i++) {
		int64_t id = batch->ids ? batch->ids[i] : first_free + (int64_t)i;

		store_one(b, base + i, id, batch->attrs ? batch->attrs[i] : NULL, mode);
		out_ids[i] = id;
	}
	return EMU_ADD_OK;
}

enum emu_add_result emu_blob_add_vectors(struct emu_tenant *t, struct emu_blob *b, const float *vecs,
					 const struct emu_batch *batch, enum emu_dup_mode mode,
					 int64_t *out_ids, struct errbuf *err)
{
	float *room = emu_blob_stage(b, batch->n);

	if (batch->n > 0)
		memcpy(room, vecs, batch->n * b->dim * sizeof(float));
	return emu_blob_commit(t, b, batch, mode, out_ids, err);
}

size_t emu_blob_set_attrs(struct emu_blob *b, int64_t id, char *json)
{
	size_t e, n = 0;

	for (e = emu_blob_lookup(b, id); e != EMU_NONE; e = b->next[e]) {
		free(b->attrs[e]);
		b->attrs[e] = n == 0 ? json : xstrdup(json);
		n++;
	}
	if (n == 0)
		free(json);
	return n;
}

/* Makes whatever pointed at entry `from` (the map or a chain) point at `to`. */
static void repoint(struct emu_blob *b, size_t from, size_t to)
{
	size_t x = emu_blob_lookup(b, b->ids[from]);

	if (x == from) {
		idmap_put(&b->map, b->ids[from], to);
		return;
	}
	while (b->next[x] != from)
		x = b->next[x];
	b->next[x] = to;
}

/* Takes entry e out of its id's chain (and the map when it was the last). */
static void unlink_entry(struct emu_blob *b, size_t e)
{
	if (emu_blob_lookup(b, b->ids[e]) == e && b->next[e] == EMU_NONE)
		idmap_del(&b->map, b->ids[e]);
	else
		repoint(b, e, b->next[e]);
}

/* Removes entry e by moving the last entry into its place. */
static void remove_entry(struct emu_blob *b, size_t e)
{
	size_t last = b->count - 1;

	unlink_entry(b, e);
	free(b->attrs[e]);
	if (e != last) {
		repoint(b, last, e);
		memcpy(b->vecs + e * b->dim, b->vecs + last * b->dim, b->dim * sizeof(float));
		b->ids[e] = b->ids[last];
		b->norms[e] = b->norms[last];
		b->attrs[e] = b->attrs[last];
		b->next[e] = b->next[last];
	}
	b->count--;
}

size_t emu_blob_delete_id(struct emu_blob *b, int64_t id)
{
	size_t e, n = 0;

	while ((e = emu_blob_lookup(b, id)) != EMU_NONE) {
		remove_entry(b, e);
		n++;
	}
	return n;
}

size_t emu_blob_clear(struct emu_blob *b)
{
	size_t n = b->count;

	blob_free_vectors(b);
	return n;
}

void emu_blob_ids_sorted(const struct emu_blob *b, int64_t *out)
{
	if (b->count == 0)
		return;
	memcpy(out, b->ids, b->count * sizeof(*out));
	qsort(out, b->count, sizeof(*out), cmp_i64);
}

/* ---- query -------------------------------------------------------------- */

/* <0 when a ranks before b: nearer, or as near with a smaller id. */
static int hit_cmp(const struct emu_hit *a, const struct emu_hit *b)
{
	if (a->distance != b->distance)
		return a->distance < b->distance ? -1 : 1;
	return (a->id > b->id) - (a->id < b->id);
}

static int hit_qsort_cmp(const void *a, const void *b)
{
	return hit_cmp(a, b);
}

static void hit_swap(struct emu_hit *h, size_t i, size_t j)
{
	struct emu_hit t = h[i];

	h[i] = h[j];
	h[j] = t;
}

/* A max-heap on hit_cmp: the worst of the best k so far is at h[0]. */
static void heap_up(struct emu_hit *h, size_t i)
{
	while (i > 0 && hit_cmp(&h[(i - 1) / 2], &h[i]) < 0) {
		hit_swap(h, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(struct emu_hit *h, size_t n)
{
	size_t i = 0;

	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, worst = i;

		if (l < n && hit_cmp(&h[l], &h[worst]) > 0)
			worst = l;
		if (r < n && hit_cmp(&h[r], &h[worst]) > 0)
			worst = r;
		if (worst == i)
			return;
		hit_swap(h, i, worst);
		i = worst;
	}
}

static void heap_offer(struct emu_hit *h, size_t *n, size_t k, const struct emu_hit *hit)
{
	if (*n < k) {
		h[*n] = *hit;
		heap_up(h, (*n)++);
	} else if (hit_cmp(hit, &h[0]) < 0) {
		h[0] = *hit;
		heap_down(h, *n);
	}
}

static double cosine_distance(const struct emu_blob *b, size_t e, const float *q, double qnorm)
{
	double d;

	if (qnorm == 0 || b->norms[e] == 0)
		return 1;
	d = 1 - vec_dot(q, emu_blob_vector(b, e), b->dim) / (qnorm * b->norms[e]);
	/* Rounding can step just outside [0, 2]; a self-match should read 0, not -1e-16. */
	return d < 0 ? 0 : d > 2 ? 2 : d;
}

size_t emu_blob_query(const struct emu_blob *b, const float *q, size_t k, struct emu_hit *out)
{
	double qnorm = vec_norm(q, b->dim);
	size_t e, n = 0;

	if (k == 0)
		return 0;
	for (e = 0; e < b->count; e++) {
		struct emu_hit hit = {b->ids[e], e, cosine_distance(b, e, q, qnorm)};

		heap_offer(out, &n, k, &hit);
	}
	qsort(out, n, sizeof(*out), hit_qsort_cmp);
	return n;
}
