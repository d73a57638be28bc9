#include "jsonscan.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static void set_err(struct js_error *err, const char *base, const char *at, const char *what)
{
	if (err) {
		err->offset = (size_t)(at - base);
		err->what = what;
		err->path[0] = '\0';
	}
}

/* While unwinding from a failure, puts the segment of this level in front of the path. */
static void path_prepend(struct js_error *err, const char *seg, size_t seglen)
{
	size_t have;

	if (!err)
		return;
	have = strlen(err->path);
	if (seglen + have + 1 > sizeof(err->path))
		return; /* too deep to name: keep the inner part */
	memmove(err->path + seglen, err->path, have + 1);
	memcpy(err->path, seg, seglen);
}

static void path_member(struct js_error *err, const char *quoted, size_t qlen)
{
	char seg[64];
	int n;

	if (!err)
		return;
	n = snprintf(seg, sizeof(seg), "%.*s%s", (int)(qlen > 2 ? (qlen - 2 < 40 ? qlen - 2 : 40) : 0),
		     quoted + 1, err->path[0] && err->path[0] != '[' ? "." : "");
	path_prepend(err, seg, (size_t)n);
}

static void path_index(struct js_error *err, size_t i)
{
	char seg[32];
	int n;

	if (!err)
		return;
	n = snprintf(seg, sizeof(seg), "[%zu]%s", i, err->path[0] && err->path[0] != '[' ? "." : "");
	path_prepend(err, seg, (size_t)n);
}

const char *js_skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return p;
}

const char *js_trim_ws_end(const char *p, const char *end)
{
	while (end > p && (end[-1] == ' ' || end[-1] == '\n' || end[-1] == '\r' || end[-1] == '\t'))
		end--;
	return end;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * The end of a run of digits, eight bytes at a time (an embedding's numbers
 * are mostly runs of 8 to 17 digits). In each byte b ^ '0' a digit is 0..9:
 * high nibble clear, and the low nibble plus 6 below 16; any other byte sets
 * a bit of `stop`, the lowest of which is the first byte past the run.
 */
static const char *skip_digits(const char *p, const char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const uint64_t ones = 0x0101010101010101u;

	while (end - p >= 8) {
		uint64_t x, stop;

		memcpy(&x, p, 8);
		x ^= ones * '0';
		stop = (x & ones * 0xF0) | (((x & ones * 0x0F) + ones * 6) & ones * 0x10);
		if (stop)
			return p + __builtin_ctzll(stop) / 8;
		p += 8;
	}
#endif
	while (p < end && is_digit(*p))
		p++;
	return p;
}

const char *js_number_scan(const char *p, const char *end, struct js_number *n)
{
	const char *digits;
	bool neg = p < end && *p == '-';

	n->exp = false;
	n->neg_zero = neg;
	if (neg)
		p++;
	if (p >= end || !is_digit(*p))
		return NULL;
	digits = p;
	if (*p == '0') {
		p++;
	} else {
		n->neg_zero = false;
		p = skip_digits(p, end);
	}
	n->int_digits = (size_t)(p - digits);
	n->frac_digits = 0;
	if (p < end && *p == '.') {
		const char *frac = ++p;

		if (p >= end || !is_digit(*p))
			return NULL;
		p = skip_digits(p, end);
		n->frac_digits = (size_t)(p - frac);
		/* Only a negative number can be a negative zero: look for a nonzero digit only then. */
		while (n->neg_zero && frac < p)
			n->neg_zero = *frac++ == '0';
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		n->exp = true;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || !is_digit(*p))
			return NULL;
		while (p < end && is_digit(*p))
			p++;
	}
	return p;
}

const char *js_number_end(const char *p, const char *end)
{
	struct js_number n;

	return js_number_scan(p, end, &n);
}

#define SIG_KEPT 45

/* tok[0, len) is a number's sign and digits, without its exponent; its first significant digit stands for 1e38. */
static bool float32_finite_e38(const char *tok, size_t len)
{
	const char *p = tok, *end = tok + len;
	char copy[1 + SIG_KEPT + 2 + sizeof("e38")]; /* sign, digits, the point, the last 1 */
	size_t n = 0, sig = 0;
	bool dropped = false;
	float f;

	if (p < end && *p == '-')
		copy[n++] = *p++;
	for (; p < end; p++) {
		if (!is_digit(*p) || (sig == 0 && *p == '0'))
			continue; /* the point, leading zeros */
		if (sig == SIG_KEPT) {
			dropped |= *p != '0';
			continue;
		}
		copy[n++] = *p;
		if (sig++ == 0)
			copy[n++] = '.';
	}
	if (dropped)
		copy[n++] = '1';
	memcpy(copy + n, "e38", sizeof("e38"));
	errno = 0;
	f = strtof(copy, NULL);
	return errno != ERANGE && isfinite(f);
}

bool js_number_fits_float32(const char *tok, size_t len)
{
	const char *p = tok, *end = tok + len;
	long e10 = 0, exp = 0;
	const char *digits_end;
	bool seen_nonzero = false, exp_neg = false;

	if (p < end && *p == '-')
		p++;
	/* The decimal exponent of the first significant digit. */
	for (; p < end && is_digit(*p); p++) {
		if (seen_nonzero)
			e10++;
		else if (*p != '0')
			seen_nonzero = true;
	}
	if (p < end && *p == '.') {
		for (p++; p < end && is_digit(*p); p++) {
			if (seen_nonzero)
				continue;
			e10--;
			if (*p != '0')
				seen_nonzero = true;
		}
	}
	if (!seen_nonzero)
		return true; /* zero, however written */
	digits_end = p;
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			exp_neg = *p++ == '-';
		for (; p < end && is_digit(*p); p++)
			if (exp < 100000)
				exp = exp * 10 + (*p - '0');
	}
	e10 += exp_neg ? -exp : exp;
	if (e10 < 38)
		return true;
	if (e10 > 38)
		return false;
	/*
	 * 1e38 .. 9.99e38: FLT_MAX is 3.4028235e38, so ask strtof, of the number
	 * rewritten as d.ddd...e38 with at most SIG_KEPT significant digits: the
	 * boundary between rounding to FLT_MAX and to infinity has 39, so a last
	 * digit 1 standing for any nonzero ones dropped decides it the same way.
	 */
	return float32_finite_e38(tok, (size_t)(digits_end - tok));
}
static const char *skip_string(const char *base, const char *p, const char *end, struct js_error *err)
{
	for (p++; p < end; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '"')
			return p + 1;
		if (c < 0x20) {
			set_err(err, base, p, "control character in a string");
			return NULL;
		}
		if (c != '\\')
			continue;
		if (++p >= end)
			break;
		if (*p == 'u') {
			int i;

			for (i = 1; i <= 4; i++) {
				if (p + i >= end || !strchr("0123456789abcdefABCDEF", p[i]) || !p[i]) {
					set_err(err, base, p, "bad \\u escape in a string");
					return NULL;
				}
			}
			p += 4;
		} else if (!strchr("\"\\/bfnrt", *p) || !*p) {
			set_err(err, base, p, "bad escape in a string");
			return NULL;
		}
	}
	set_err(err, base, end, "unterminated string");
	return NULL;
}

static const char *skip_literal(const char *base, const char *p, const char *end, const char *lit,
				struct js_error *err)
{
	size_t n = strlen(lit);

	if ((size_t)(end - p) < n || memcmp(p, lit, n) != 0) {
		set_err(err, base, p, "unexpected character");
		return NULL;
	}
	return p + n;
}

static const char *skip_value_at(const char *base, const char *p, const char *end, int depth,
				 struct js_error *err);

/* Objects and arrays: `close` is '}' or ']'; objects want "key": before each value. */
static const char *skip_container(const char *base, const char *p, const char *end, int depth,
				  struct js_error *err)
{
	char close = *p == '{' ? '}' : ']';
	bool first = true;
	const char *key = NULL;
	size_t keylen = 0, index = 0;

	if (depth >= JS_MAX_DEPTH) {
		set_err(err, base, p, "nested too deeply");
		return NULL;
	}
	p = js_skip_ws(p + 1, end);
	if (p < end && *p == close)
		return p + 1;
	for (;;) {
		if (!first) {
			p = js_skip_ws(p, end);
			if (p < end && *p == close)
				return p + 1;
			if (p >= end || *p != ',') {
				set_err(err, base, p, close == '}' ? "expected , or }" : "expected , or ]");
				return NULL;
			}
			p++;
		}
		if (!first)
			index++;
		first = false;
		p = js_skip_ws(p, end);
		if (close == '}') {
			if (p >= end || *p != '"') {
				set_err(err, base, p, "expected a member name");
				return NULL;
			}
			key = p;
			if (!(p = skip_string(base, p, end, err)))
				return NULL;
			keylen = (size_t)(p - key);
			p = js_skip_ws(p, end);
			if (p >= end || *p != ':') {
				set_err(err, base, p, "expected :");
				path_member(err, key, keylen);
				return NULL;
			}
			p++;
		}
		if (!(p = skip_value_at(base, p, end, depth + 1, err))) {
			if (close == '}')
				path_member(err, key, keylen);
			else
				path_index(err, index);
			return NULL;
		}
	}
}

static const char *skip_value_at(const char *base, const char *p, const char *end, int depth,
				 struct js_error *err)
{
	const char *q;

	p = js_skip_ws(p, end);
	if (p >= end) {
		set_err(err, base, p, "unexpected end of text");
		return NULL;
	}
	switch (*p) {
	case '{':
	case '[':
		return skip_container(base, p, end, depth, err);
	case '"':
		return skip_string(base, p, end, err);
	case 't':
		return skip_literal(base, p, end, "true", err);
	case 'f':
		return skip_literal(base, p, end, "false", err);
	case 'n':
		return skip_literal(base, p, end, "null", err);
	default:
		q = js_number_end(p, end);
		if (!q)
			set_err(err, base, p, *p == 'N' || *p == 'I' || *p == '+' || (*p == '-' && p + 1 < end && p[1] == 'I')
				? "NaN and Infinity are not JSON numbers" : "unexpected character");
		return q;
	}
}

const char *js_skip_value(const char *p, const char *end, struct js_error *err)
{
	return skip_value_at(p, p, end, 0, err);
}

static bool key_equals(const char *quoted_start, const char *quoted_end, const char *key)
{
	size_t klen = strlen(key);

	/* Member names with escapes never match our ASCII keys; compare the raw bytes. */
	return (size_t)(quoted_end - quoted_start) == klen + 2 && memcmp(quoted_start + 1, key, klen) == 0;
}

/* An array holding no string, object or array (an embedding): its first ']', found with memchr. */
static const char *flat_array_end(const char *p, const char *end)
{
	const char *close;
	size_t n;

	if (p >= end || *p != '[' || !(close = memchr(p + 1, ']', (size_t)(end - p - 1))))
		return NULL;
	n = (size_t)(close - p - 1);
	if (memchr(p + 1, '"', n) || memchr(p + 1, '[', n) || memchr(p + 1, '{', n))
		return NULL;
	return close + 1;
}

static const char *skip_structure(const char *p, const char *end, int depth);

static const char *skip_container_structure(const char *p, const char *end, int depth)
{
	char close = *p == '{' ? '}' : ']';
	const char *q;

	if (depth >= JS_MAX_DEPTH)
		return NULL;
	if ((q = flat_array_end(p, end)))
		return q;
	for (p++;;) {
		p = js_skip_ws(p, end);
		if (p >= end)
			return NULL;
		if (*p == close)
			return p + 1;
		if (*p == ',' || *p == ':')
			p++;
		else if (!(p = skip_structure(p, end, depth + 1)))
			return NULL;
	}
}

/*
 * Where the value at p ends, by its structure alone: a string by its quotes
 * and escapes, a container by its brackets (an array of numbers by memchr),
 * anything else at the next delimiter. Nothing else is checked: its reader
 * does that (js_number_array, jansson). NULL when the brackets do not match
 * or nest deeper than JS_MAX_DEPTH; the strict walk then names the problem.
 */
static const char *skip_structure(const char *p, const char *end, int depth)
{
	p = js_skip_ws(p, end);
	if (p >= end)
		return NULL;
	switch (*p) {
	case '"':
		return skip_string(p, p, end, NULL);
	case '{':
	case '[':
		return skip_container_structure(p, end, depth);
	case '}':
	case ']':
	case ',':
	case ':':
		return NULL;
	default:
		for (p++; p < end && !strchr(" \t\r\n,:[]{}\"", *p); p++)
			;
		return p;
	}
}

bool js_member(struct jspan obj, const char *key, struct jspan *val, bool *dup)
{
	const char *p = js_skip_ws(obj.p, obj.p + obj.len), *end = obj.p + obj.len;
	bool found = false;

	*dup = false;
	if (p >= end || *p != '{')
		return false;
	p = js_skip_ws(p + 1, end);
	while (p < end && *p == '"') {
		const char *kstart = p, *kend = skip_string(obj.p, p, end, NULL), *vstart, *vend;

		if (!kend)
			return false;
		p = js_skip_ws(kend, end);
		if (p >= end || *p != ':')
			return false;
		vstart = js_skip_ws(p + 1, end);
		vend = skip_structure(vstart, end, 0); /* an embedding is not walked twice: its reader checks it */
		if (!vend)
			return false;
		if (key_equals(kstart, kend, key)) {
			if (found)
				*dup = true;
			found = true;
			val->p = vstart;
			val->len = (size_t)(vend - vstart);
		}
		p = js_skip_ws(vend, end);
		if (p < end && *p == ',')
			p = js_skip_ws(p + 1, end);
	}
	return found;
}

bool js_array_each(struct jspan arr, bool (*fn)(struct jspan elem, size_t i, void *ctx), void *ctx,
		   struct js_error *err)
{
	const char *base = arr.p, *end = arr.p + arr.len;
	const char *p = js_skip_ws(base, end);
	size_t i = 0;

	if (p >= end || *p != '[') {
		set_err(err, base, p, "expected an array");
		return false;
	}
	p = js_skip_ws(p + 1, end);
	if (p < end && *p == ']')
		return true;
	for (;; i++) {
		const char *vend = skip_structure(p, end, 1);
		struct jspan elem;

		if (!vend) {
			set_err(err, base, p, "the element's brackets do not match");
			if (err)
				err->index = i;
			return false;
		}
		elem.p = js_skip_ws(p, end);
		elem.len = (size_t)(vend - elem.p);
		if (!fn(elem, i, ctx))
			return true;
		p = js_skip_ws(vend, end);
		if (p < end && *p == ']')
			return true;
		if (p >= end || *p != ',') {
			set_err(err, base, p, "expected , or ]");
			if (err)
				err->index = i;
			return false;
		}
		p = js_skip_ws(p + 1, end);
	}
}

bool js_number_array(struct jspan arr, size_t *count, struct js_error *err)
{
	const char *base = arr.p, *end = arr.p + arr.len;
	const char *p = js_skip_ws(base, end);
	size_t n = 0;

	*count = 0;
	if (p >= end || *p != '[') {
		set_err(err, base, p, "expected an array of numbers");
		return false;
	}
	p = js_skip_ws(p + 1, end);
	if (p < end && *p == ']') {
		p++;
		goto done;
	}
	for (;;) {
		const char *q = js_number_end(p, end);

		if (!q) {
			set_err(err, base, p,
				p < end && (*p == '[' || *p == '{') ? "expected a number, found a nested value"
				: p < end && *p == '"' ? "expected a number, found a string"
				: p < end && (*p == 'N' || *p == 'I' || *p == 'n' || *p == 'i' || *p == '+')
					? "expected a number (NaN and Infinity are not JSON)"
				: p < end && (*p == 't' || *p == 'f') ? "expected a number, found a boolean"
				: "expected a number");
			goto fail;
		}
		if (!js_number_fits_float32(p, (size_t)(q - p))) {
			set_err(err, base, p, "number out of float32 range (not finite as stored)");
			goto fail;
		}
		n++;
		p = js_skip_ws(q, end);
		if (p < end && *p == ']') {
			p++;
			break;
		}
		if (p >= end || *p != ',') {
			set_err(err, base, p, p >= end ? "unterminated array" : "expected , or ]");
			goto fail;
		}
		p = js_skip_ws(p + 1, end);
	}
done:
	if (js_skip_ws(p, end) != end) {
		set_err(err, base, p, "unexpected text after the array");
		goto fail;
	}
	*count = n;
	return true;
fail:
	if (err)
		err->index = n;
	return false;
}
