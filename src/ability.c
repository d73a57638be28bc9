#include "ability.h"

#include "errcode.h"

#include "buf.h"
#include "hash.h"
#include "mem.h"
#include "plainscan.h"
#include "text.h"
#include "vdbid.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The most decimals Postgres numeric (and so jsonb) holds. */
#define NUMERIC_DSCALE_MAX 16383

/* Numbers read carefully after the fast scan stopped early, before it is tried again. */
#define PLAIN_RETRY 16

static const char *const known_fields[] = {
	"ability_id", "ability_name", "service_name", "description", "embedding", "metadata",
};

/* The four fields every vector carries, as the original writes them. */
static const char *const core_fields[] = {"ability_id", "ability_name", "service_name", "description"};

static bool vrefuse(struct ability_error *err, enum errcode code, const char *prefix, const char *field,
		    const char *fmt, va_list ap) PRINTF_LIKE(5, 0);

static bool vrefuse(struct ability_error *err, enum errcode code, const char *prefix, const char *field,
		    const char *fmt, va_list ap)
{
	if (err->code) { /* one more bad field: named too in a body (collect), else the first one stands */
		if (!err->collect)
			return false;
		if (err->nothers == ARRAY_LEN(err->others)) {
			err->more++;
			return false;
		}
		err->others[err->nothers].code = errcode_def(code)->code;
		snprintf(err->others[err->nothers].field, sizeof(err->others[0].field), "%s%s", prefix, field);
		vsnprintf(err->others[err->nothers].message, sizeof(err->others[0].message), fmt, ap);
		utf8_scrub(err->others[err->nothers].field);
		utf8_scrub(err->others[err->nothers].message);
		err->nothers++;
		return false;
	}
	err->status = errcode_def(code)->status;
	err->code = errcode_def(code)->code;
	snprintf(err->field, sizeof(err->field), "%s%s", prefix, field);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	utf8_scrub(err->field); /* a cut at the buffer's end may split a character */
	utf8_scrub(err->message);
	return false;
}

static bool refuse(struct ability_error *err, enum errcode code, const char *prefix, const char *field,
		   const char *fmt, ...) PRINTF_LIKE(5, 6);

static bool refuse(struct ability_error *err, enum errcode code, const char *prefix, const char *field,
		   const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vrefuse(err, code, prefix, field, fmt, ap);
	va_end(ap);
	return false;
}

bool ability_refuse(struct ability_error *err, enum errcode code, const char *field, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vrefuse(err, code, "", field ? field : "", fmt, ap);
	va_end(ap);
	return false;
}

void ability_free(struct ability *a)
{
	free(a->ability_id);
	free(a->ability_name);
	free(a->service_name);
	free(a->description);
	free(a->embedding);
	json_decref(a->metadata);
	free(a->metadata_text);
	free(a->dynamic_header_keys);
	free(a->attributes);
	memset(a, 0, sizeof(*a));
}

/*
 * One pass over the embedding: each number checked (JSON grammar, finite as a
 * float32, holdable by numeric), counted, and written as the client sent it,
 * whitespace removed (what both stores get). Runs of the usual numbers go
 * through plain_numbers 64 bytes at a time; the number it stops at (and a few
 * after it, when it stopped early) are read here one at a time. The content
 * hash covers the numbers as the mirror holds them: the same text while every
 * number is plain (canon stays empty), else canon gets them all, each as
 * numeric prints it. False on the first number that does not pass;
 * check_embedding then says precisely why, off the fast path.
 */
static bool scan_numbers(struct jspan arr, size_t *count, struct buf *compact, struct buf *canon)
{
	const char *p = js_skip_ws(arr.p, arr.p + arr.len), *end = arr.p + arr.len;
	const char *close = js_trim_ws_end(p, end);
	const char *run; /* where the input not yet copied begins: it is copied as it is, in runs */
	size_t n = 0, len, careful = 0;
	char *w, *first;
	bool same = true;

	if (p >= end || *p != '[' || close - p < 2 || close[-1] != ']')
		return false;
	close--; /* the closing bracket */
	/* The compact text is never longer than the array: written in place, no bounds to check. */
	buf_reserve(compact, arr.len + 1 + PLAIN_SLACK);
	w = compact->data + compact->len;
	*w++ = '[';
	first = w;
	run = p = js_skip_ws(p + 1, end);
	while (p < end && *p != ']') {
		struct js_number tok;
		const char *q;
		bool plain;

		if (!careful) { /* the usual numbers, 64 bytes at a time, up to one that is not */
			struct plain_run r;

			len = (size_t)(p - run);
			memcpy(w, run, len);
			w += len;
			plain_numbers(p, (size_t)(close - p), w, &r);
			if (r.numbers && !same) {
				if (n)
					buf_putc(canon, ',');
				buf_append(canon, w, r.out - !r.all); /* not the comma after the last one */
			}
			w += r.out;
			n += r.numbers;
			if (r.all) {
				p = close;
				break;
			}
			run = p = js_skip_ws(p + r.in, end);
			/* Stopped early: more like that one may follow (every number an exponent). */
			careful = r.numbers < PLAIN_RETRY ? PLAIN_RETRY : 1;
		}
		careful--;
		q = js_number_scan(p, end, &tok);
		if (!q)
			return false;
		/*
		 * Plain: numeric prints it as sent (JSON allows no leading zeros), and with
		 * fewer than 39 integer digits it is finite as a float32 (with more than
		 * NUMERIC_DSCALE_MAX decimals numeric refuses it: the careful path says so).
		 * Nearly every embedding number is, and stays in the run.
		 */
		plain = !tok.exp && !tok.neg_zero && tok.int_digits < 39 && tok.frac_digits <= NUMERIC_DSCALE_MAX;
		if (!plain || !same) {
			char *num;

			len = (size_t)(p - run); /* the numbers before, and this one's comma */
			memcpy(w, run, len);
			w += len;
			num = w;
			len = (size_t)(q - p);
			memcpy(w, p, len);
			w += len;
			run = q;
			if (!plain && !js_number_fits_float32(p, len))
				return false;
			if (same) {
				same = false; /* canon begins with the numbers before this one, and its comma */
				buf_append(canon, first, (size_t)(num - first));
			} else if (n) {
				buf_putc(canon, ',');
			}
			if (!(plain ? (buf_append(canon, num, len), true) : ability_canon_number(p, len, canon)))
				return false;
		}
		n++;
		if (q < end && *q == ',' && q + 1 < end && ((q[1] >= '0' && q[1] <= '9') || q[1] == '-')) {
			p = q + 1; /* the usual case, no whitespace: the comma stays in the run */
			continue;
		}
		/* Whitespace around the comma: the run ends with this number. */
		len = (size_t)(q - run);
		memcpy(w, run, len);
		w += len;
		p = js_skip_ws(q, end);
		if (p < end && *p == ',') {
			p = js_skip_ws(p + 1, end);
			if (p < end && *p == ']')
				return false; /* a trailing comma: not JSON */
			*w++ = ',';
		} else if (p >= end || *p != ']') {
			return false;
		}
		run = p;
	}
	if (p >= end || js_skip_ws(p + 1, end) != end)
		return false;
	*w++ = ']';
	*w = '\0';
	compact->len = (size_t)(w - compact->data);
	*count = n;
	return true;
}

static bool check_embedding(struct jspan emb, size_t dim, const char *prefix, struct ability *a, struct buf *canon,
			    struct ability_error *err)
{
	struct js_error je = {.what = NULL};
	struct buf compact = BUF_INIT;
	size_t count;
	char field[48];

	if (!scan_numbers(emb, &count, &compact, canon)) {
		buf_free(&compact);
		if (!js_number_array(emb, &count, &je)) {
			snprintf(field, sizeof(field), "embedding[%zu]", je.index);
			return refuse(err, E_INVALID_EMBEDDING, prefix, field, "%s%s: %s", prefix, field, je.what);
		}
		/* Valid JSON and float32, so numeric could not hold one of them. */
		return refuse(err, E_INVALID_EMBEDDING, prefix, "embedding",
			      "%sembedding holds a number with more than 16383 decimals, which Postgres numeric "
			      "cannot store", prefix);
	}
	if (count != dim) {
		buf_free(&compact);
		return refuse(err, E_WRONG_DIMENSION, prefix, "embedding",
			      "%sembedding has %zu numbers; EMBEDDING_DIM is %zu", prefix, count, dim);
	}
	a->embedding_len = compact.len;
	a->embedding = buf_steal(&compact);
	return true;
}

static bool ability_id_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("._:@-", c);
}

/* A required, non-empty string of at most `max` bytes. */
static bool take_string(json_t *obj, const char *name, size_t max, const char *prefix, char **out,
			struct ability_error *err)
{
	json_t *v = json_object_get(obj, name);

	if (!v || json_is_null(v))
		return refuse(err, E_MISSING_FIELD, prefix, name, "%s%s is required", prefix, name);
	if (!json_is_string(v))
		return refuse(err, E_WRONG_TYPE, prefix, name, "%s%s must be a string", prefix, name);
	if (json_string_length(v) == 0)
		return refuse(err, E_EMPTY_FIELD, prefix, name, "%s%s must not be empty", prefix, name);
	if (json_string_length(v) > max)
		return refuse(err, E_TOO_LONG, prefix, name, "%s%s is %zu bytes; at most %zu", prefix, name,
			      json_string_length(v), max);
	/* A NUL (\u0000) never gets here: jansson refuses it (malformed_json), as jsonb would. */
	*out = xstrdup(json_string_value(v));
	return true;
}

static bool check_ability_id(const char *id, const char *prefix, struct ability_error *err)
{
	const char *p;

	for (p = id; *p; p++)
		if (!ability_id_char((unsigned char)*p))
			return refuse(err, E_INVALID_ABILITY_ID, prefix, "ability_id",
				      "%sability_id may hold only A-Z a-z 0-9 . _ : @ - (found '%c' at %zu)", prefix,
				      *p >= 0x20 && *p < 0x7f ? *p : '?', (size_t)(p - id));
	return true;
}

static bool take_metadata(json_t *obj, const char *prefix, struct ability *a, struct ability_error *err)
{
	json_t *m = json_object_get(obj, "metadata");
	json_t *keys, *k, *model;
	size_t i;

	if (!m || json_is_null(m))
		m = json_object();
	else if (!json_is_object(m))
		return refuse(err, E_WRONG_TYPE, prefix, "metadata", "%smetadata must be an object", prefix);
	else
		json_incref(m);
	a->metadata = m;
	keys = json_object_get(m, "dynamic_header_keys");
	if (keys && !json_is_null(keys)) {
		if (!json_is_array(keys))
			return refuse(err, E_WRONG_TYPE, prefix, "metadata.dynamic_header_keys",
				      "%smetadata.dynamic_header_keys must be an array of strings", prefix);
		json_array_foreach(keys, i, k) {
			char field[64];

			snprintf(field, sizeof(field), "metadata.dynamic_header_keys[%zu]", i);
			if (!json_is_string(k))
				return refuse(err, E_WRONG_TYPE, prefix, field, "%s%s must be a string", prefix, field);
		}
		a->dynamic_header_keys = json_dumps(keys, JSON_COMPACT);
		a->dynamic_headers_required = json_array_size(keys) > 0;
	} else {
		a->dynamic_header_keys = xstrdup("[]");
	}
	model = json_object_get(m, "embedding_model");
	if (model && !json_is_null(model) &&
	    (!json_is_string(model) || json_string_length(model) == 0 || json_string_length(model) > ABILITY_TEXT_MAX))
		return refuse(err, E_INVALID_FIELD, prefix, "metadata.embedding_model",
			      "%smetadata.embedding_model names the model (and version) that made the embedding: a string "
			      "of 1 to %d bytes", prefix, ABILITY_TEXT_MAX);
	a->metadata_text = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!a->metadata_text || !a->dynamic_header_keys)
		abort();
	if (strlen(a->metadata_text) > ABILITY_METADATA_MAX)
		return refuse(err, E_TOO_LONG, prefix, "metadata", "%smetadata is %zu bytes of JSON; at most %d",
			      prefix, strlen(a->metadata_text), ABILITY_METADATA_MAX);
	return true;
}

/*
 * A number as PostgreSQL's numeric prints it: jsonb stores embedding numbers as
 * numeric, so this is what the mirror holds for the token. No exponent, the
 * scale max(0, fraction digits - exponent), no leading zeros, no negative zero
 * ("1.50e1" -> "15.0", "1e-5" -> "0.00001", "-0.0" -> "0.0"). Fails when
 * numeric cannot hold it: more than 16383 digits after the point (1e-16384).
 */
bool ability_canon_number(const char *tok, size_t len, struct buf *out)
{
	const char *p = tok, *end = tok + len, *int_start, *frac_start = NULL;
	size_t int_len, frac_len = 0, ndigits, i, start;
	long exp = 0, k;
	bool neg = false, exp_neg = false, zero = true;
	char small[64], *digits; /* the digits without the point; a float's fit on the stack */

	if (p < end && *p == '-')
		neg = true, p++;
	for (int_start = p; p < end && *p >= '0' && *p <= '9'; p++)
		;
	int_len = (size_t)(p - int_start);
	if (p < end && *p == '.') {
		for (frac_start = ++p; p < end && *p >= '0' && *p <= '9'; p++)
			;
		frac_len = (size_t)(p - frac_start);
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			exp_neg = *p++ == '-';
		for (; p < end && *p >= '0' && *p <= '9'; p++)
			if (exp < 1000000)
				exp = exp * 10 + (*p - '0');
		if (exp_neg)
			exp = -exp;
	}
	if ((long)frac_len - exp > NUMERIC_DSCALE_MAX)
		return false; /* PostgreSQL: "value overflows numeric format" */
	ndigits = int_len + frac_len;
	digits = ndigits <= sizeof(small) ? small : xmalloc(ndigits);
	memcpy(digits, int_start, int_len);
	if (frac_len)
		memcpy(digits + int_len, frac_start, frac_len);
	for (i = 0; i < ndigits; i++)
		zero = zero && digits[i] == '0';
	if (neg && !zero)
		buf_putc(out, '-');
	/* value = digits * 10^-k, printed with max(0, k) decimals */
	k = (long)frac_len - exp;
	if (k <= 0) {
		for (start = 0; start + 1 < ndigits && digits[start] == '0'; start++)
			;
		if (zero)
			buf_putc(out, '0');
		else
			buf_append(out, digits + start, ndigits - start);
		for (i = 0; !zero && i < (size_t)-k; i++)
			buf_putc(out, '0');
	} else if (ndigits > (size_t)k) {
		for (start = 0; start + 1 < ndigits - (size_t)k && digits[start] == '0'; start++)
			;
		buf_append(out, digits + start, ndigits - (size_t)k - start);
		buf_putc(out, '.');
		buf_append(out, digits + ndigits - (size_t)k, (size_t)k);
	} else {
		buf_puts(out, "0.");
		for (i = 0; i < (size_t)k - ndigits; i++)
			buf_putc(out, '0');
		buf_append(out, digits, ndigits);
	}
	if (digits != small)
		free(digits);
	return true;
}

static int cmp_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * JSON for hashing: sorted keys, no spaces, and a number that is integral
 * written as an integer, so that what jsonb gives back (1e2 -> 100, 2.0 ->
 * 2.0) hashes like what the client sent.
 */
static void canon_json(json_t *j, struct buf *out)
{
	const char **keys;
	const char *key;
	json_t *v;
	size_t i, n;
	double d;

	switch (json_typeof(j)) {
	case JSON_OBJECT:
		n = json_object_size(j);
		keys = xcalloc(n, sizeof(*keys));
		i = 0;
		json_object_foreach(j, key, v)
			keys[i++] = key;
		qsort(keys, n, sizeof(*keys), cmp_keys);
		buf_putc(out, '{');
		for (i = 0; i < n; i++) {
			if (i)
				buf_putc(out, ',');
			buf_json_str(out, keys[i], strlen(keys[i]));
			buf_putc(out, ':');
			canon_json(json_object_get(j, keys[i]), out);
		}
		buf_putc(out, '}');
		free(keys);
		break;
	case JSON_ARRAY:
		buf_putc(out, '[');
		json_array_foreach(j, i, v) {
			if (i)
				buf_putc(out, ',');
			canon_json(v, out);
		}
		buf_putc(out, ']');
		break;
	case JSON_STRING:
		buf_json_str(out, json_string_value(j), json_string_length(j));
		break;
	case JSON_INTEGER:
		buf_printf(out, "%lld", (long long)json_integer_value(j));
		break;
	case JSON_REAL:
		d = json_real_value(j);
		if (d > -9.2e18 && d < 9.2e18 && d == (double)(long long)d) /* the cast only in range */
			buf_printf(out, "%lld", (long long)d);
		else
			buf_printf(out, "%.17g", d);
		break;
	case JSON_TRUE:
		buf_puts(out, "true");
		break;
	case JSON_FALSE:
		buf_puts(out, "false");
		break;
	case JSON_NULL:
		buf_puts(out, "null");
		break;
	}
}

/*
 * The attributes: every metadata key, then the four core fields over them,
 * then content_hash: sha256 of their canonical JSON (without content_hash),
 * "\n", and the embedding's numbers as the mirror holds them.
 */
static void build_attributes(struct ability *a, const struct buf *canon_embedding)
{
	json_t *attrs = json_deep_copy(a->metadata);
	const char *values[4] = {a->ability_id, a->ability_name, a->service_name, a->description};
	struct buf canon = BUF_INIT;
	size_t i;

	for (i = 0; i < ARRAY_LEN(core_fields); i++)
		json_object_set_new(attrs, core_fields[i], json_string(values[i]));
	json_object_del(attrs, "content_hash");
	canon_json(attrs, &canon);
	buf_putc(&canon, '\n');
	if (canon_embedding->len) /* some numbers print otherwise in numeric; else they are as sent */
		sha256_hex2(canon.data, canon.len, canon_embedding->data, canon_embedding->len, a->content_hash);
	else
		sha256_hex2(canon.data, canon.len, a->embedding + 1, a->embedding_len - 2, a->content_hash);
	buf_free(&canon);
	json_object_set_new(attrs, "content_hash", json_string(a->content_hash));
	a->attributes = json_dumps(attrs, JSON_COMPACT | JSON_SORT_KEYS);
	if (!a->attributes)
		abort();
	a->attributes_len = strlen(a->attributes);
	json_decref(attrs);
}

/* Everything but the embedding: fields, types, lengths, ids. */
static bool take_fields(json_t *obj, const char *prefix, struct ability *a, struct ability_error *err)
{
	struct errbuf verr;
	const char *key;
	json_t *v;
	size_t i;

	bool ok = true, id_ok;

	/* Every bad field is named, not only the first (err->collect keeps them all). */
	json_object_foreach(obj, key, v) {
		bool known = false;

		for (i = 0; i < ARRAY_LEN(known_fields); i++)
			known = known || strcmp(key, known_fields[i]) == 0;
		if (!known)
			ok = refuse(err, E_UNKNOWN_FIELD, prefix, key,
				    "%s%s is not a field of an ability (ability_id, ability_name, service_name, "
				    "description, embedding, metadata)", prefix, *key ? key : "\"\"");
	}
	id_ok = take_string(obj, "ability_id", ABILITY_ID_MAX, prefix, &a->ability_id, err) &&
		check_ability_id(a->ability_id, prefix, err);
	ok = id_ok && ok;
	ok = take_string(obj, "ability_name", ABILITY_TEXT_MAX, prefix, &a->ability_name, err) && ok;
	ok = take_string(obj, "service_name", ABILITY_TEXT_MAX, prefix, &a->service_name, err) && ok;
	ok = take_string(obj, "description", ABILITY_DESCRIPTION_MAX, prefix, &a->description, err) && ok;
	ok = take_metadata(obj, prefix, a, err) && ok;
	if (id_ok && !vdb_vector_id(a->ability_id, strlen(a->ability_id), &a->vector_id, &verr))
		ok = refuse(err, E_VECTOR_ID_OUT_OF_RANGE, prefix, "ability_id", "%s%s", prefix, verr.msg);
	if (!ok)
		return false;
	vdb_blob_name(a->service_name, strlen(a->service_name), a->blob_id, sizeof(a->blob_id));
	return true;
}

bool ability_parse(struct jspan obj, size_t dim, const char *prefix, struct ability *a, struct ability_error *err)
{
	const char *start = js_skip_ws(obj.p, obj.p + obj.len);
	struct jspan emb;
	struct buf rest = BUF_INIT, canon = BUF_INIT;
	json_error_t jerr;
	json_t *o = NULL;
	bool dup, ok = false;

	bool has_emb, emb_ok = false;

	memset(a, 0, sizeof(*a));
	if (start == obj.p + obj.len || *start != '{')
		return refuse(err, E_WRONG_TYPE, prefix, "", "%s must be an object", *prefix ? prefix : "the body");
	has_emb = js_member(obj, "embedding", &emb, &dup);
	if (!has_emb)
		refuse(err, E_MISSING_FIELD, prefix, "embedding", "%sembedding is required", prefix);
	else if (dup)
		refuse(err, E_DUPLICATE_FIELD, prefix, "embedding", "%sembedding appears twice", prefix);
	else
		emb_ok = check_embedding(emb, dim, prefix, a, &canon, err);
	if ((!emb_ok && !err->collect) || dup)
		goto out; /* outside a body one problem is enough */
	/* The rest goes to jansson with the embedding's thousands of numbers replaced by one. */
	if (has_emb) {
		buf_append(&rest, obj.p, (size_t)(emb.p - obj.p));
		buf_append(&rest, "null", 4); /* nothing can extend it into another value (a 0 could: [...].5) */
		buf_append(&rest, emb.p + emb.len, (size_t)(obj.p + obj.len - (emb.p + emb.len)));
		o = json_loadb(rest.data, rest.len, JSON_REJECT_DUPLICATES, &jerr);
	} else {
		o = json_loadb(obj.p, obj.len, JSON_REJECT_DUPLICATES, &jerr); /* no embedding: the other fields */
	}
	if (!o) {
		refuse(err, E_MALFORMED_JSON, prefix, "", "%s%s", prefix, jerr.text);
		goto out;
	}
	if (!take_fields(o, prefix, a, err) || !emb_ok)
		goto out;
	build_attributes(a, &canon);
	ok = true;
out:
	json_decref(o);
	buf_free(&rest);
	buf_free(&canon);
	if (!ok)
		ability_free(a);
	return ok;
}

bool ability_from_row(const char *ability_id, const char *ability_name, const char *service_name,
		      const char *description, const char *embedding, const char *metadata, size_t dim,
		      struct ability *a, struct ability_error *err)
{
	struct jspan emb = {embedding, strlen(embedding)};
	struct buf canon = BUF_INIT;
	json_error_t jerr;
	json_t *o;
	bool ok;

	memset(err, 0, sizeof(*err));
	memset(a, 0, sizeof(*a));
	if (!check_embedding(emb, dim, "", a, &canon, err)) {
		buf_free(&canon);
		return false;
	}
	o = json_pack("{s:s, s:s, s:s, s:s}", "ability_id", ability_id, "ability_name", ability_name, "service_name",
		      service_name, "description", description);
	if (metadata && *metadata) {
		json_t *m = json_loads(metadata, JSON_DECODE_ANY, &jerr);

		json_object_set_new(o, "metadata", m ? m : json_string("(not JSON)"));
	}
	ok = o && take_fields(o, "", a, err);
	if (ok)
		build_attributes(a, &canon);
	json_decref(o);
	buf_free(&canon);
	if (!ok)
		ability_free(a);
	return ok;
}

/* ---- a request body: one ability or a batch ---------------------------------- */

struct batch_walk {
	size_t dim, max, n;
	struct ability *items;
	struct ability_error *err;
	bool failed;
};

static bool parse_item(struct jspan elem, size_t i, void *arg)
{
	struct batch_walk *w = arg;
	char prefix[40];

	if (i >= w->max) {
		w->failed = !refuse(w->err, E_BATCH_TOO_LARGE, "", "abilities",
				    "abilities holds more than %zu abilities (BATCH_MAX)", w->max);
		return false;
	}
	snprintf(prefix, sizeof(prefix), "abilities[%zu].", i);
	w->n++;
	if (!ability_parse(elem, w->dim, prefix, &w->items[i], w->err)) {
		/* Go on to name the other bad abilities, unless there is no room left to name them. */
		w->failed = true;
		return w->err->more == 0;
	}
	return true;
}

static void free_all(struct ability *items, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		ability_free(&items[i]);
	free(items);
}

static bool check_unique_ids(struct ability *items, size_t n, struct ability_error *err)
{
	size_t i, k;
	char field[48];

	/* Batches are bounded by BATCH_MAX (hundreds): quadratic is fine. */
	for (i = 1; i < n; i++) {
		for (k = 0; k < i; k++) {
			snprintf(field, sizeof(field), "abilities[%zu].ability_id", i);
			if (strcmp(items[i].ability_id, items[k].ability_id) == 0)
				return refuse(err, E_DUPLICATE_ABILITY, "", field,
					      "%s repeats abilities[%zu] (%s)", field, k, items[k].ability_id);
			if (items[i].vector_id == items[k].vector_id && strcmp(items[i].blob_id, items[k].blob_id) == 0)
				return refuse(err, E_VECTOR_ID_COLLISION, "", field,
					      "%s (%s) and abilities[%zu] (%s) map to the same vector_id %lld in %s",
					      field, items[i].ability_id, k, items[k].ability_id,
					      (long long)items[i].vector_id, items[i].blob_id);
		}
	}
	return true;
}

/* Anything beside "abilities" at the top of a batch is a mistake worth naming. */
static bool check_envelope(const char *body, size_t len, struct jspan list, struct ability_error *err)
{
	struct buf rest = BUF_INIT;
	json_error_t jerr;
	const char *key;
	json_t *o, *v;
	bool ok = true;

	buf_append(&rest, body, (size_t)(list.p - body));
	buf_append(&rest, "null", 4); /* nothing can extend it into another value (a 0 could: [...].5) */
	buf_append(&rest, list.p + list.len, (size_t)(body + len - (list.p + list.len)));
	o = json_loadb(rest.data, rest.len, JSON_REJECT_DUPLICATES, &jerr);
	buf_free(&rest);
	if (!o)
		return refuse(err, E_MALFORMED_JSON, "", "", "%s", jerr.text);
	json_object_foreach(o, key, v) {
		if (strcmp(key, "abilities") != 0) {
			ok = refuse(err, E_UNKNOWN_FIELD, "", key, "%s is not expected next to abilities",
				    *key ? key : "\"\"");
			break;
		}
	}
	json_decref(o);
	return ok;
}

/* Parses what the grammar walk would accept; failures may come from broken JSON. */
static bool parse_body(const char *body, size_t len, size_t dim, size_t max_batch, struct ability **out, size_t *n,
		       bool *batch, struct ability_error *err)
{
	struct jspan whole = {body, len}, list;
	struct js_error je = {.what = NULL};
	struct batch_walk w;
	const char *start = js_skip_ws(body, body + len);
	bool dup;

	if (start == body + len || *start != '{')
		return refuse(err, E_WRONG_TYPE, "", "", "the body must be an ability object or {\"abilities\": [...]}");
	if (!js_member(whole, "abilities", &list, &dup)) {
		*out = xcalloc(1, sizeof(**out));
		if (!ability_parse(whole, dim, "", *out, err)) {
			free(*out);
			*out = NULL;
			return false;
		}
		*n = 1;
		return true;
	}
	*batch = true;
	if (*js_skip_ws(list.p, list.p + list.len) != '[')
		return refuse(err, E_WRONG_TYPE, "", "abilities", "abilities must be an array of ability objects");
	memset(&w, 0, sizeof(w));
	w.dim = dim;
	w.max = max_batch;
	w.err = err;
	w.items = xcalloc(max_batch, sizeof(*w.items));
	if (!js_array_each(list, parse_item, &w, &je) || w.failed || !check_unique_ids(w.items, w.n, err)) {
		if (!w.failed && je.what)
			refuse(err, E_MALFORMED_JSON, "", "abilities", "abilities: %s", je.what);
		free_all(w.items, w.n);
		return false;
	}
	if (w.n == 0) {
		free_all(w.items, 0);
		return refuse(err, E_EMPTY_BATCH, "", "abilities", "abilities is empty");
	}
	if (!check_envelope(body, len, list, err)) {
		free_all(w.items, w.n);
		return false;
	}
	*out = w.items;
	*n = w.n;
	return true;
}

bool ability_parse_body(const char *body, size_t len, size_t dim, size_t max_batch, struct ability **out,
			size_t *n, bool *batch, struct ability_error *err)
{
	struct js_error je = {.what = NULL};
	const char *end;
	size_t bad;

	*out = NULL;
	*n = 0;
	*batch = false;
	memset(err, 0, sizeof(*err));
	if (!utf8_valid(body, len, &bad))
		return refuse(err, E_INVALID_UTF8, "", "", "the body is not valid UTF-8 (byte %zu)", bad);
	if (memchr(body, '\0', len)) /* never JSON, and jansson reads some as the end of the text */
		return refuse(err, E_MALFORMED_JSON, "", "", "the body is not valid JSON: a NUL byte at byte %zu",
			      (size_t)((const char *)memchr(body, '\0', len) - body));
	err->collect = true;
	if (parse_body(body, len, dim, max_batch, out, n, batch, err))
		return true;
	/*
	 * Broken JSON trumps every other complaint, and deserves a place: walk the
	 * grammar only now, off the happy path (which has checked it along the way).
	 */
	end = js_skip_value(body, body + len, &je);
	if (!end || js_skip_ws(end, body + len) != body + len)
		memset(err, 0, sizeof(*err)); /* the only problem worth naming */
	if (!end)
		return refuse(err, E_MALFORMED_JSON, "", je.path, "the body is not valid JSON: %s at %s%sbyte %zu",
			      je.what, je.path, je.path[0] ? ", " : "", je.offset);
	if (js_skip_ws(end, body + len) != body + len)
		return refuse(err, E_MALFORMED_JSON, "", "", "the body is not valid JSON: unexpected text after "
			      "the value at byte %zu", (size_t)(end - body));
	return false;
}

/* ---- a service's full set, read one ability at a time ----------------------------- */

struct set_id {
	char *ability_id;
	int64_t vector_id;
	size_t index;
};

bool ability_set_open(const char *body, size_t len, const char *service, size_t dim, struct ability_set *set,
		      struct ability_error *err)
{
	struct jspan whole = {body, len}, list;
	struct js_error je = {.what = NULL};
	const char *start = js_skip_ws(body, body + len), *end;
	size_t bad;
	bool dup;

	memset(set, 0, sizeof(*set));
	memset(err, 0, sizeof(*err));
	err->collect = true;
	if (!utf8_valid(body, len, &bad))
		return refuse(err, E_INVALID_UTF8, "", "", "the body is not valid UTF-8 (byte %zu)", bad);
	if (memchr(body, '\0', len))
		return refuse(err, E_MALFORMED_JSON, "", "", "the body is not valid JSON: a NUL byte at byte %zu",
			      (size_t)((const char *)memchr(body, '\0', len) - body));
	end = js_skip_value(body, body + len, &je);
	if (!end)
		return refuse(err, E_MALFORMED_JSON, "", je.path, "the body is not valid JSON: %s at %s%sbyte %zu",
			      je.what, je.path, je.path[0] ? ", " : "", je.offset);
	if (js_skip_ws(end, body + len) != body + len)
		return refuse(err, E_MALFORMED_JSON, "", "", "the body is not valid JSON: unexpected text after the "
			      "value at byte %zu", (size_t)(end - body));
	if (*start != '{')
		return refuse(err, E_WRONG_TYPE, "", "", "the body must be {\"abilities\": [...]}: the service's "
			      "complete set");
	if (!js_member(whole, "abilities", &list, &dup))
		return refuse(err, E_MISSING_FIELD, "", "abilities", "abilities is required: the service's complete set "
			      "(an empty array deletes all of them)");
	if (dup)
		return refuse(err, E_DUPLICATE_FIELD, "", "abilities", "abilities appears twice");
	start = js_skip_ws(list.p, list.p + list.len);
	if (*start != '[')
		return refuse(err, E_WRONG_TYPE, "", "abilities", "abilities must be an array of ability objects");
	if (!check_envelope(body, len, list, err))
		return false;
	set->p = start + 1;
	set->end = list.p + list.len;
	set->service = service;
	set->dim = dim;
	return true;
}

static void set_remember(struct ability_set *set, const struct ability *a, size_t index)
{
	if (set->nids == set->capids) {
		set->capids = set->capids ? set->capids * 2 : 64;
		set->ids = xrealloc(set->ids, set->capids * sizeof(*set->ids));
	}
	set->ids[set->nids++] = (struct set_id){xstrdup(a->ability_id), a->vector_id, index};
}

int ability_set_next(struct ability_set *set, struct ability *a, struct ability_error *err)
{
	struct js_error je = {.what = NULL};
	const char *p = js_skip_ws(set->p, set->end), *next;
	char prefix[48];
	size_t i = set->index;

	memset(a, 0, sizeof(*a));
	if (p >= set->end || *p == ']')
		return 0;
	next = js_skip_value(p, set->end, &je); /* checked by ability_set_open: it cannot fail here */
	if (!next)
		abort();
	set->p = js_skip_ws(next, set->end);
	if (set->p < set->end && *set->p == ',')
		set->p++;
	set->index++;
	snprintf(prefix, sizeof(prefix), "abilities[%zu].", i);
	if (!ability_parse((struct jspan){p, (size_t)(next - p)}, set->dim, prefix, a, err))
		return -1;
	if (strcmp(a->service_name, set->service) != 0) {
		refuse(err, E_INVALID_FIELD, prefix, "service_name", "%sservice_name is %s: this set is %s's (the "
		       "path's service)", prefix, a->service_name, set->service);
		ability_free(a);
		return -1;
	}
	set_remember(set, a, i);
	return 1;
}

static int by_id(const void *x, const void *y)
{
	const struct set_id *a = x, *b = y;
	int c = strcmp(a->ability_id, b->ability_id);

	return c ? c : (a->index > b->index) - (a->index < b->index);
}

static int by_vector(const void *x, const void *y)
{
	const struct set_id *a = x, *b = y;

	if (a->vector_id != b->vector_id)
		return a->vector_id < b->vector_id ? -1 : 1;
	return (a->index > b->index) - (a->index < b->index);
}

bool ability_set_check_ids(struct ability_set *set, struct ability_error *err)
{
	size_t i;
	char field[64];

	if (set->nids < 2)
		return true;
	qsort(set->ids, set->nids, sizeof(*set->ids), by_id);
	for (i = 1; i < set->nids; i++) {
		if (strcmp(set->ids[i].ability_id, set->ids[i - 1].ability_id) != 0)
			continue;
		snprintf(field, sizeof(field), "abilities[%zu].ability_id", set->ids[i].index);
		return refuse(err, E_DUPLICATE_ABILITY, "", field, "%s repeats abilities[%zu] (%s)", field,
			      set->ids[i - 1].index, set->ids[i].ability_id);
	}
	qsort(set->ids, set->nids, sizeof(*set->ids), by_vector);
	for (i = 1; i < set->nids; i++) {
		if (set->ids[i].vector_id != set->ids[i - 1].vector_id)
			continue;
		snprintf(field, sizeof(field), "abilities[%zu].ability_id", set->ids[i].index);
		return refuse(err, E_VECTOR_ID_COLLISION, "", field, "%s (%s) and abilities[%zu] (%s) map to the same "
			      "vector_id %lld", field, set->ids[i].ability_id, set->ids[i - 1].index,
			      set->ids[i - 1].ability_id, (long long)set->ids[i].vector_id);
	}
	return true;
}

size_t ability_set_count(const struct ability_set *set)
{
	return set->index;
}

void ability_set_free(struct ability_set *set)
{
	size_t i;

	for (i = 0; i < set->nids; i++)
		free(set->ids[i].ability_id);
	free(set->ids);
	memset(set, 0, sizeof(*set));
}
