/*
 * fuzz_plainscan - the fast scan of an embedding's numbers (src/plainscan.c)
 * against the careful scanner, a token at a time (js_number_scan).
 *
 * Invariants, for any bytes:
 *   - what plain_numbers takes (r.in bytes) is whole numbers, each followed
 *     by a comma unless it took all: numbers the careful scanner reads as
 *     plain (no exponent, not a negative zero, fewer than 39 integer digits,
 *     no more decimals than numeric holds), r.numbers of them, separated by
 *     "," or ", ";
 *   - what it wrote (r.out bytes) is those bytes without their spaces, and it
 *     wrote nothing past its PLAIN_SLACK;
 *   - the same input scans the same at any alignment.
 */
#include "fuzz.h"

#include "jsonscan.h"
#include "plainscan.h"

#include <stdbool.h>

/* The careful reading of text[0, len) as plain numbers separated by "," or ", ": how many, or -1. */
static long plain_by_tokens(const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	long n = 0;

	while (p < end) {
		struct js_number num;
		const char *q = js_number_scan(p, end, &num);

		if (!q || num.exp || num.neg_zero || num.int_digits >= 39 || num.frac_digits > 16383)
			return -1;
		n++;
		if (q == end)
			return n;
		if (*q != ',')
			return -1;
		p = q + 1;
		if (p < end && *p == ' ')
			p++;
		if (p == end)
			return -1;
	}
	return len ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_copy(data, size), *shifted = malloc(size + 3);
	char *out = malloc(size + PLAIN_SLACK + 1), *again = malloc(size + PLAIN_SLACK);
	struct plain_run r, r2;
	size_t i, k;

	if (!shifted || !out || !again)
		abort();
	out[size + PLAIN_SLACK] = '\x7f'; /* a byte past the slack: stays */
	plain_numbers(text, size, out, &r);
	CHECK(out[size + PLAIN_SLACK] == '\x7f', "wrote past the slack");
	CHECK(r.in <= size && r.out <= r.in, "in %zu out %zu of %zu", r.in, r.out, size);
	if (r.all) {
		CHECK(plain_by_tokens(text, size) == (long)r.numbers, "took all %zu numbers", r.numbers);
	} else if (r.in) {
		CHECK(text[r.in - 1] == ',', "stopped after byte %zu, not a comma", r.in);
		CHECK(plain_by_tokens(text, r.in - 1) == (long)r.numbers, "took %zu numbers", r.numbers);
	} else {
		CHECK(r.numbers == 0 && r.out == 0, "took nothing but %zu numbers", r.numbers);
	}
	for (i = k = 0; i < r.in; i++)
		if (text[i] != ' ')
			CHECK(out[k++] == text[i], "output byte %zu", k - 1);
	CHECK(k == r.out, "wrote %zu bytes, not %zu", r.out, k);
	/* Alignment changes nothing (the blocks are read unaligned). */
	memcpy(shifted + 3, text, size);
	plain_numbers(shifted + 3, size, again, &r2);
	CHECK(r2.in == r.in && r2.out == r.out && r2.numbers == r.numbers && r2.all == r.all, "unaligned differs");
	free(text);
	free(shifted);
	free(out);
	free(again);
	return 0;
}
