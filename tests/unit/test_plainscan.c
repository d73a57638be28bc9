/* The fast scan of the usual embedding: what it takes, where it stops, and that it never vouches for more. */
#include "plainscan.h"

#include "buf.h"
#include "jsonscan.h"
#include "mem.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The inside of an array, as plain_numbers is given it: from the first number to the closing bracket. */
static void scan(const char *text, struct plain_run *r, char **out)
{
	size_t len = strlen(text);

	*out = xmalloc(len + PLAIN_SLACK);
	plain_numbers(text, len, *out, r);
}

static void without_spaces(const char *text, size_t len, struct buf *b)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (text[i] != ' ')
			buf_putc(b, text[i]);
}

/* n numbers of lengths 1 to 19 and both signs, every one plain, with sep between them. */
static void plain_array(struct buf *b, size_t n, const char *sep, uint64_t seed)
{
	size_t i;

	for (i = 0; i < n; i++) {
		seed = seed * 6364136223846793005u + 1442695040888963407u;
		if (i)
			buf_puts(b, sep);
		switch (seed >> 61) {
		case 0: buf_printf(b, "%u", (unsigned)(seed >> 40) % 1000); break;
		case 1: buf_printf(b, "-%u.%u", (unsigned)(seed >> 50) % 10 + 1, (unsigned)(seed >> 20) % 100000); break;
		case 2: buf_printf(b, "0.000%u", (unsigned)(seed >> 30) % 1000 + 1); break;
		case 3: buf_printf(b, "-0.0%09u", (unsigned)(seed >> 20) % 1000000000 + 1); break;
		default: buf_printf(b, "%s0.%u", seed & 1 ? "-" : "", (unsigned)(seed >> 24) % 100000000 + 1); break;
		}
	}
}

Test(plainscan, the_usual_embeddings_are_taken_whole)
{
	static const char *const seps[] = {",", ", "};
	static const size_t counts[] = {1, 2, 5, 6, 7, 30, 3072};
	/* The longest runs of digits it vouches for: 38 before the point, 38 after. */
	static const char longest[] = "12345678901234567890123456789012345678,0.12345678901234567890123456789012345678";
	size_t i, k;

	for (i = 0; i < ARRAY_LEN(seps); i++) {
		for (k = 0; k < ARRAY_LEN(counts); k++) {
			struct buf text = BUF_INIT, want = BUF_INIT;
			struct plain_run r;
			char *out;

			plain_array(&text, counts[k], seps[i], k);
			without_spaces(text.data, text.len, &want);
			scan(text.data, &r, &out);
			cr_assert(r.all, "%zu numbers with \"%s\": stopped after %zu", counts[k], seps[i], r.numbers);
			cr_assert(eq(sz, r.numbers, counts[k]));
			cr_assert(eq(sz, r.in, text.len));
			cr_assert(eq(sz, r.out, want.len));
			cr_assert(eq(int, memcmp(out, want.data, want.len), 0), "%s", text.data);
			free(out);
			buf_free(&text);
			buf_free(&want);
		}
	}
	for (i = 0; i < 64; i++) { /* wherever the runs fall in a block */
		struct buf text = BUF_INIT;
		struct plain_run r;
		char *out;

		plain_array(&text, i, ",", i);
		buf_puts(&text, i ? "," : "");
		buf_puts(&text, longest);
		scan(text.data, &r, &out);
		cr_assert(r.all, "%s: stopped after %zu", text.data, r.numbers);
		cr_assert(eq(sz, r.numbers, i + 2));
		free(out);
		buf_free(&text);
	}
}

/* What the careful scanner, a token at a time, reads from text[0, len) of numbers and commas. */
static bool plain_by_tokens(const char *text, size_t len, size_t *numbers)
{
	const char *p = text, *end = text + len;

	for (*numbers = 0; p < end; ++*numbers) {
		struct js_number n;
		const char *q = js_number_scan(p, end, &n);

		if (!q || n.exp || n.neg_zero || n.int_digits >= 39 || n.frac_digits > 16383)
			return false;
		if (q == end) {
			++*numbers;
			return true;
		}
		if (*q != ',')
			return false;
		p = q + 1;
		if (p < end && *p == ' ')
			p++;
		if (p == end)
			return false;
	}
	return false;
}

/*
 * Wherever it stands, a number plain_numbers cannot vouch for stops it right
 * there: the numbers before are taken, as written, and that one is not.
 */
Test(plainscan, it_stops_at_the_first_number_it_cannot_vouch_for_wherever_that_is)
{
	static const char *const odd[] = {
		"1e5",   "-2E-3",  "-0",     "-0.000", "01",      "-00.5",   "1.",     ".5",   "1.2.3",
		"--1",   "+1",     "1 ",     "",       "  1",     "1-2",     "\"1\"",  "[1]",  "null",
		"0x10",  "1\n",    "1\t",    "\xc3\xa9",
		"123456789012345678901234567890123456789",      /* 39 integer digits */
		"0.123456789012345678901234567890123456789",    /* 39 decimals: the careful scanner's */
	};
	size_t i, k;

	for (i = 0; i < ARRAY_LEN(odd); i++) {
		for (k = 0; k < 150; k += 1 + k / 20) {
			struct buf text = BUF_INIT, want = BUF_INIT;
			const char *sep = k % 2 ? ", " : ",";
			size_t at;
			struct plain_run r;
			char *out;

			plain_array(&text, k, sep, i * 1000 + k);
			if (k)
				buf_puts(&text, sep);
			at = text.len;
			buf_puts(&text, odd[i]);
			buf_puts(&text, sep);
			plain_array(&text, 40, sep, k);
			without_spaces(text.data, at, &want);
			scan(text.data, &r, &out);
			cr_assert(not(r.all), "vouched for \"%s\" after %zu numbers", odd[i], k);
			cr_assert(eq(sz, r.numbers, k), "\"%s\" after %zu numbers: took %zu", odd[i], k, r.numbers);
			/* Taken: the numbers and each one's comma; the separator's space is the caller's to skip. */
			cr_assert(r.in == at || (at && r.in == at - 1 && text.data[at - 1] == ' '), "\"%s\" after %zu: in %zu of %zu",
				  odd[i], k, r.in, at);
			cr_assert(eq(sz, r.out, want.len));
			cr_assert(r.out == 0 || memcmp(out, want.data, r.out) == 0, "\"%s\" after %zu numbers", odd[i], k);
			free(out);
			buf_free(&text);
			buf_free(&want);
		}
	}
}

/*
 * Random texts of numbers, commas and spaces, mostly well formed: whatever
 * plain_numbers takes, the careful scanner reads as the same plain numbers.
 */
Test(plainscan, it_never_takes_more_than_the_careful_scanner_would)
{
	static const char alphabet[] = "0123456789.-, e+9";
	uint64_t seed = 20261207;
	size_t round, taken_all = 0, stopped = 0;

	for (round = 0; round < 20000; round++) {
		struct buf text = BUF_INIT, want = BUF_INIT;
		size_t numbers, edits, e;
		struct plain_run r;
		char *out;

		seed = seed * 6364136223846793005u + 1442695040888963407u;
		plain_array(&text, 1 + (seed >> 40) % 40, seed & 1 ? "," : ", ", seed);
		for (edits = (seed >> 20) % 4, e = 0; e < edits; e++) {
			seed = seed * 6364136223846793005u + 1442695040888963407u;
			text.data[(seed >> 33) % text.len] = alphabet[(seed >> 13) % (sizeof(alphabet) - 1)];
		}
		scan(text.data, &r, &out);
		without_spaces(text.data, r.in, &want);
		cr_assert(r.in <= text.len);
		cr_assert(eq(sz, r.out, want.len));
		cr_assert(r.out == 0 || memcmp(out, want.data, r.out) == 0, "%s", text.data);
		if (r.all) {
			taken_all++;
			cr_assert(plain_by_tokens(text.data, text.len, &numbers), "took all of %s", text.data);
			cr_assert(eq(sz, numbers, r.numbers), "%s", text.data);
		} else if (r.numbers) {
			stopped++;
			cr_assert(eq(chr, text.data[r.in - 1], ','), "%s", text.data);
			cr_assert(plain_by_tokens(text.data, r.in - 1, &numbers), "took %zu bytes of %s", r.in, text.data);
			cr_assert(eq(sz, numbers, r.numbers), "%s", text.data);
		} else {
			cr_assert(eq(sz, r.in, 0));
		}
		free(out);
		buf_free(&text);
		buf_free(&want);
	}
	/* Both outcomes happened often enough for the checks above to mean something. */
	cr_assert(gt(sz, taken_all, 2000), "%zu", taken_all);
	cr_assert(gt(sz, stopped, 2000), "%zu", stopped);
}
