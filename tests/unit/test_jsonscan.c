/* Walking JSON in place: grammar, members, and arrays of numbers. */
#include "jsonscan.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct jspan S(const char *s)
{
	struct jspan j = {s, strlen(s)};

	return j;
}

static void valid(const char *s)
{
	struct js_error e;
	const char *end = js_skip_value(s, s + strlen(s), &e);

	cr_assert(not(eq(ptr, (void *)end, NULL)), "rejected (%s at %zu): %s", e.what, e.offset, s);
	cr_assert(eq(ptr, (void *)js_skip_ws(end, s + strlen(s)), (void *)(s + strlen(s))), "stopped early: %s", s);
}

/* Invalid as a whole text: the value is malformed, or something follows it. */
static void invalid(const char *s)
{
	struct js_error e;
	const char *end = js_skip_value(s, s + strlen(s), &e);

	cr_assert(end == NULL || js_skip_ws(end, s + strlen(s)) != s + strlen(s), "accepted: %s", s);
}

Test(jsonscan, skips_every_kind_of_value)
{
	valid("0");
	valid("-0.5e-3");
	valid("\"a\\\"b\\u00e9\\n\"");
	valid(" { \"a\" : [1, 2, {\"b\": null}], \"c\": true, \"d\": false } ");
	valid("[]");
	valid("{}");
}

Test(jsonscan, rejects_what_json_does_not_allow)
{
	invalid("01");
	invalid("1.");
	invalid(".5");
	invalid("+1");
	invalid("1e");
	invalid("NaN");
	invalid("Infinity");
	invalid("[1,]");
	invalid("{\"a\":1,}");
	invalid("{a:1}");
	invalid("\"tab\there\"");
	invalid("\"bad \\x escape\"");
	invalid("\"\\u12\"");
	invalid("[1 2]");
	invalid("tru");
	invalid("\"unterminated");
}

Test(jsonscan, depth_is_bounded)
{
	char deep[201] = {0};

	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	invalid(deep);
}

Test(jsonscan, finds_members_and_duplicates)
{
	struct jspan v;
	bool dup;

	cr_assert(js_member(S("{\"a\": 1, \"embedding\" : [1, 2] , \"z\": {\"embedding\": 3}}"), "embedding", &v, &dup));
	cr_assert(eq(int, strncmp(v.p, "[1, 2]", v.len), 0));
	cr_assert(eq(sz, v.len, 6));
	cr_assert(not(dup));
	cr_assert(not(js_member(S("{\"a\": 1}"), "embedding", &v, &dup)));
	cr_assert(js_member(S("{\"k\": 1, \"k\": 2}"), "k", &v, &dup));
	cr_assert(dup);
}

static size_t count_of(const char *s, struct js_error *e)
{
	size_t n = 999;

	cr_assert(js_number_array(S(s), &n, e), "rejected (%s at %zu): %s", e->what, e->offset, s);
	return n;
}

static void bad_array(const char *s, size_t index, const char *what)
{
	struct js_error e = {.what = NULL};
	size_t n;

	cr_assert(not(js_number_array(S(s), &n, &e)), "accepted: %s", s);
	cr_assert(eq(sz, e.index, index), "%s", s);
	cr_assert(not(eq(ptr, strstr(e.what, what), NULL)), "\"%s\" lacks \"%s\"", e.what, what);
}

Test(jsonscan, number_arrays_are_counted)
{
	struct js_error e;

	cr_assert(eq(sz, count_of("[]", &e), 0));
	cr_assert(eq(sz, count_of("[0.1, -2, 3e-5 ,4E+2,0]", &e), 5));
	cr_assert(eq(sz, count_of(" [ 1 ] ", &e), 1));
}

Test(jsonscan, number_arrays_say_which_element_is_wrong)
{
	bad_array("[1, \"2\", 3]", 1, "found a string");
	bad_array("[1, 2, [3]]", 2, "nested");
	bad_array("[NaN]", 0, "NaN and Infinity are not JSON");
	bad_array("[1, -Infinity]", 1, "expected a number");
	bad_array("[1, 1e999]", 1, "float32");
	bad_array("[3.5e38]", 0, "float32");
	bad_array("[1, true]", 1, "boolean");
	bad_array("[1, 2", 2, "unterminated");
	bad_array("{\"a\": 1}", 0, "expected an array");
	bad_array("[1, 2] x", 2, "after the array");
}

Test(jsonscan, float32_range_is_decided_from_the_digits)
{
	cr_assert(js_number_fits_float32("3.4028234e38", 12));
	cr_assert(not(js_number_fits_float32("3.4028236e38", 12)));
	cr_assert(js_number_fits_float32("340282346638528859811704183484516925440", 39));
	cr_assert(not(js_number_fits_float32("1e39", 4)));
	cr_assert(not(js_number_fits_float32("-1e99999999999999", 17)));
	cr_assert(js_number_fits_float32("1e-999", 6), "underflow to zero is finite");
	cr_assert(js_number_fits_float32("0.000000000000000000000000000000000000000000000000001e50", 56));
	cr_assert(js_number_fits_float32("0e999", 5));
	cr_assert(not(js_number_fits_float32("0.0001e43", 9)));
}

static bool fits(const char *number)
{
	return js_number_fits_float32(number, strlen(number));
}

/* Long spellings near FLT_MAX: decided as strtof decides the whole text (ties go to infinity). */
Test(jsonscan, float32_range_of_long_numbers_is_decided_by_every_digit)
{
	char s[512];

	snprintf(s, sizeof(s), "1.%0100de38", 0);
	cr_assert(fits(s), "%s", s);
	snprintf(s, sizeof(s), "-340282346638528859811704183484516925440.%080d", 0);
	cr_assert(fits(s), "%s", s);
	cr_assert(not(fits("340282356779733661637539395458142568448")), "the midpoint rounds to infinity");
	snprintf(s, sizeof(s), "340282356779733661637539395458142568448.%079d1", 0);
	cr_assert(not(fits(s)), "%s", s);
	snprintf(s, sizeof(s), "340282356779733661637539395458142568447.%0100d", 0);
	memset(strchr(s, '.') + 1, '9', 100);
	cr_assert(fits(s), "%s", s);
	snprintf(s, sizeof(s), "0.00000340282356779733661637539395458142568448%050de44", 0);
	cr_assert(not(fits(s)), "the midpoint again, as a fraction: %s", s);
	snprintf(s, sizeof(s), "0.00000340282356779733661637539395458142568448%049d1e44", 0);
	cr_assert(not(fits(s)), "%s", s);
	snprintf(s, sizeof(s), "0.00000340282356779733661637539395458142568447%050de44", 0);
	memset(strstr(s, "e44") - 50, '9', 50);
	cr_assert(fits(s), "%s", s);
}

/*
 * Digits are skipped eight at a time: a run of any length ends at the first
 * byte that is not a digit (those next to '0' and '9' included), or at the
 * end of the text, and nothing past the end is read (an exact-size copy:
 * the sanitizer build would see it).
 */
Test(jsonscan, a_number_ends_where_its_digits_end)
{
	static const char *const after[] = {"", ",", "]", "/", ":", " ", "x", "\x80"};
	char text[64];
	size_t run, a, frac;

	for (run = 1; run <= 24; run++)
		for (frac = 0; frac <= 1; frac++)
			for (a = 0; a < sizeof(after) / sizeof(after[0]); a++) {
				struct js_number n;
				size_t len = 0, numlen, i;
				char *copy;
				const char *end;

				text[len++] = '-';
				for (i = 0; i < run; i++)
					text[len++] = (char)('1' + (i + run) % 9);
				if (frac) {
					text[len++] = '.';
					for (i = 0; i < run; i++)
						text[len++] = (char)('0' + (i * 7) % 10);
				}
				numlen = len;
				len += (size_t)snprintf(text + len, sizeof(text) - len, "%s", after[a]);
				copy = malloc(len);
				memcpy(copy, text, len);
				end = js_number_scan(copy, copy + len, &n);
				cr_assert(eq(ptr, (void *)end, (void *)(copy + numlen)), "%.*s: ended at %td, not %zu", (int)len,
					  text, end ? end - copy : -1, numlen);
				cr_assert(eq(sz, n.int_digits, run), "%.*s", (int)len, text);
				free(copy);
			}
}
