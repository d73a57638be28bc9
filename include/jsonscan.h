/*
 * jsonscan.h - walking JSON text in place, without building a DOM.
 *
 * The embedding is the bulk of every request (3072 numbers, ~40 KB of text).
 * jansson would allocate a json_t per number; instead this scanner validates
 * the grammar where the text lies, finds member values by name, and checks an
 * array of numbers (count, grammar, float32 range) so that the exact tokens the
 * client sent can be passed on unchanged. Everything else goes to jansson.
 *
 * Spans point into the caller's buffer; nothing here allocates.
 */
#ifndef ABILITYSYNC_JSONSCAN_H
#define ABILITYSYNC_JSONSCAN_H

#include "common.h"

#define JS_MAX_DEPTH 64

struct jspan {
	const char *p;
	size_t len;
};

/* Where and why the text is not what was expected. */
struct js_error {
	size_t offset;     /* from the start of the text given */
	size_t index;      /* array element, for number arrays */
	const char *what;  /* e.g. "expected a number" */
	char path[96];     /* js_skip_value: where, e.g. "abilities[2].embedding[17]" */
};

const char *js_skip_ws(const char *p, const char *end);

/* The end of text[p, end) without the JSON whitespace it ends with. */
const char *js_trim_ws_end(const char *p, const char *end);

/*
 * Skips one complete JSON value at p (leading whitespace allowed) and returns
 * the byte after it, or NULL when the value is malformed or nested deeper than
 * JS_MAX_DEPTH. Strings are checked for escapes and control characters, not for
 * UTF-8 (the caller's parser does that).
 */
const char *js_skip_value(const char *p, const char *end, struct js_error *err);

/* Returns the end of the JSON number token at p, or NULL when there is none. */
const char *js_number_end(const char *p, const char *end);

/* What js_number_scan saw of the number. */
struct js_number {
	bool exp;          /* an exponent part */
	bool neg_zero;     /* negative, and every digit is 0 ("-0", "-0.00"; exponent or not) */
	size_t int_digits; /* digits before the point */
	size_t frac_digits; /* digits after it */
};

/* js_number_end, and what the token is made of. */
const char *js_number_scan(const char *p, const char *end, struct js_number *n);

/*
 * True when the number token tok[0..len) is finite as a float32 (what the
 * vector DB stores): 1e39 and 1e999 are not. Decided from the digits and the
 * exponent; strtof only settles the few tokens near 3.4e38.
 */
bool js_number_fits_float32(const char *tok, size_t len);

/*
 * Finds the member `key` of the object `obj` (a span holding exactly one
 * object) and sets *val to its value. A key that appears twice is an error
 * (*dup set), as JSON parsers disagree about which one wins. The values are
 * delimited by their structure, not checked (an array holding no string,
 * object or array, [1,,2] too, is taken up to its first ']'), so the caller
 * checks the value it reads (js_number_array, jansson).
 */
bool js_member(struct jspan obj, const char *key, struct jspan *val, bool *dup);

/*
 * Checks that `arr` is an array of JSON numbers, each finite as a float32, and
 * counts them. On failure err says which element and why.
 */
bool js_number_array(struct jspan arr, size_t *count, struct js_error *err) MUSTCHECK;

/*
 * Calls fn for each element of the array `arr`; stops early when fn returns
 * false. The commas and brackets between elements are checked; an element is
 * delimited by its structure alone (strings, brackets), so fn checks it.
 */
bool js_array_each(struct jspan arr, bool (*fn)(struct jspan elem, size_t i, void *ctx), void *ctx,
		   struct js_error *err) MUSTCHECK;

#endif
