#include "plainscan.h"

#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__SIZEOF_INT128__)
#define BLOCK 64
#define OVERREAD 32 /* a number is copied OVERREAD bytes at a time: a block is read this far past its end */

/* One block's bytes by class: bit i stands for byte i. */
struct classes {
	uint64_t digit, zero, point, minus, comma, space;
};

/*
 * What a block needs of the block before it: that block's masks (their top
 * bits are the bytes just before this one) and the carries of the two
 * additions that find where runs of digits end; and where the output is.
 */
struct plain_scan {
	struct classes prev;
	uint64_t lead0, nz, nz_next;
	unsigned carry_frac, carry_zeros;
	size_t numbers; /* commas in the blocks before */
	size_t at;      /* this block's offset in the text */
	char *out;      /* the output's first byte */
	char *w;        /* this block's first byte of output */
	char *prev_w;   /* the block before's (NULL: this is the first) */
};

#if defined(__SSE2__)
static uint64_t mask16(__m128i m)
{
	return (uint64_t)(uint16_t)_mm_movemask_epi8(m);
}
#endif

static void classify(const char *b, struct classes *k)
{
	int i;

	memset(k, 0, sizeof(*k));
#if defined(__SSE2__)
	for (i = 0; i < BLOCK; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + i));

		k->digit |= mask16(_mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
						 _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)))) << i;
		k->zero |= mask16(_mm_cmpeq_epi8(v, _mm_set1_epi8('0'))) << i;
		k->point |= mask16(_mm_cmpeq_epi8(v, _mm_set1_epi8('.'))) << i;
		k->minus |= mask16(_mm_cmpeq_epi8(v, _mm_set1_epi8('-'))) << i;
		k->comma |= mask16(_mm_cmpeq_epi8(v, _mm_set1_epi8(','))) << i;
		k->space |= mask16(_mm_cmpeq_epi8(v, _mm_set1_epi8(' '))) << i;
	}
#else
	for (i = 0; i < BLOCK; i++) {
		uint64_t bit = (uint64_t)1 << i;
		char c = b[i];

		k->digit |= c >= '0' && c <= '9' ? bit : 0;
		k->zero |= c == '0' ? bit : 0;
		k->point |= c == '.' ? bit : 0;
		k->minus |= c == '-' ? bit : 0;
		k->comma |= c == ',' ? bit : 0;
		k->space |= c == ' ' ? bit : 0;
	}
#endif
}

/* Without the popcnt instruction (not in baseline x86-64) the builtin is a call. */
static size_t count_bits(uint64_t x)
{
#if defined(__POPCNT__) || !defined(__x86_64__)
	return (size_t)__builtin_popcountll(x);
#else
	x -= (x >> 1) & 0x5555555555555555u;
	x = (x & 0x3333333333333333u) + ((x >> 2) & 0x3333333333333333u);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fu;
	return (size_t)((x * 0x0101010101010101u) >> 56);
#endif
}

/* Bit i set when byte i - 1 is in x (prev: the block before). */
static uint64_t after(uint64_t x, uint64_t prev)
{
	return x << 1 | prev >> 63;
}

/* The block's bytes but its spaces, OVERREAD bytes at a time (the output has PLAIN_SLACK to spare). */
static void copy_without_spaces(struct plain_scan *st, const char *b, uint64_t space, size_t n)
{
	size_t from = 0, to, len;

	if (!space) {
		memcpy(st->w, b, BLOCK);
		st->w += n;
		return;
	}
	for (;;) {
		to = space ? (size_t)__builtin_ctzll(space) : n;
		len = to - from;
		memcpy(st->w, b + from, OVERREAD);
		if (len > OVERREAD)
			memcpy(st->w + OVERREAD, b + from + OVERREAD, len - OVERREAD);
		st->w += len;
		if (!space)
			return;
		from = to + 1;
		space &= space - 1;
	}
}

static uint64_t below(unsigned bit)
{
	return ((uint64_t)1 << bit) - 1;
}

/*
 * The block breaks a rule at byte j: the numbers before the last comma ahead
 * of j are whole and plain (every rule is about a byte of the number it
 * breaks, or of the comma after it), and r says so.
 */
static void stop_before(struct plain_scan *st, const char *b, const struct classes *k, unsigned j,
			struct plain_run *r)
{
	uint64_t commas = k->comma & below(j);
	unsigned c;

	r->all = false;
	if (commas) { /* in this block: its bytes up to that comma go out */
		c = 63 - (unsigned)__builtin_clzll(commas);
		copy_without_spaces(st, b, k->space & below(c), c + 1);
		r->in = st->at + c + 1;
		r->out = (size_t)(st->w - st->out);
		r->numbers = st->numbers + count_bits(commas);
	} else if (st->prev_w && st->prev.comma) { /* in the block before: its output is cut back to that comma */
		c = 63 - (unsigned)__builtin_clzll(st->prev.comma);
		r->in = st->at - BLOCK + c + 1;
		r->out = (size_t)(st->prev_w - st->out) + c + 1 - count_bits(st->prev.space & below(c));
		r->numbers = st->numbers;
	} else { /* the first number, or one longer than a block: all of it is the careful scanner's */
		r->in = r->out = r->numbers = 0;
	}
}

/*
 * Checks the block's n bytes (b holds n + OVERREAD readable ones) against the
 * shape in plainscan.h, every rule a mask of the bytes that break it, and
 * copies them out. False, with r filled in, when a byte breaks a rule.
 */
static bool plain_block(struct plain_scan *st, const char *b, size_t n, struct plain_run *r)
{
	const uint64_t live = n == BLOCK ? ~(uint64_t)0 : below((unsigned)n);
	struct classes k;
	uint64_t bad, start, after_comma, after_digit, after_minus, lead0, nz, nz_next;
	unsigned __int128 frac_end, zeros_end, run;

	classify(b, &k);
	k.digit &= live, k.zero &= live, k.point &= live, k.minus &= live, k.comma &= live, k.space &= live;
	after_comma = after(k.comma, st->prev.comma);
	after_digit = after(k.digit, st->prev.digit);
	after_minus = after(k.minus, st->prev.minus);

	/*
	 * Each rule is a mask of the bytes that break it. Together they leave
	 * -?[0-9]+(.[0-9]+)? between separators: a number cannot begin with a
	 * comma, a point or a space, nor end with a sign or a point, as the
	 * byte after would break the comma's, the point's or the space's rule.
	 */
	start = (after_comma & ~k.space) | after(k.space, st->prev.space); /* each number's first byte */
	bad = ~(k.digit | k.point | k.minus | k.comma | k.space); /* no other byte */
	bad |= k.space & ~after_comma;                            /* one space, after a comma */
	bad |= k.minus & ~start;                                  /* a sign only in front */
	bad |= k.comma & ~after_digit;                            /* a digit before each comma */
	bad |= k.point & ~after_digit;                            /* and before the point */

	/* No leading zero: an integer part's first digit, when 0, is all of it. */
	lead0 = ((start & k.digit) | after_minus) & k.zero;
	bad |= after(lead0, st->lead0) & k.digit;

	/*
	 * One point, and digits after it: a fraction's digits end at a comma.
	 * Adding 1 at the byte after each point carries through the digits there
	 * and sets the byte after them (or that byte itself, if not a digit).
	 */
	frac_end = (unsigned __int128)k.digit + after(k.point, st->prev.point) + st->carry_frac;
	bad |= (uint64_t)frac_end & ~k.digit & ~k.comma;

	/* No negative zero ("-0", "-0.00"): past "-0." the zeros end at a digit, not at a comma. */
	nz = after_minus & k.zero;
	nz_next = after(nz, st->nz);
	bad |= nz_next & ~k.point;
	zeros_end = (unsigned __int128)k.zero + after(nz_next, st->nz_next) + st->carry_zeros;
	bad |= (uint64_t)zeros_end & ~k.zero & ~k.digit;

	/*
	 * No run of 39 digits: an integer part that may not fit a float32, or more
	 * decimals than numeric holds, is for the careful scanner. Bit j (of this
	 * block, the high half) survives where bytes j-38..j are all digits.
	 */
	run = (unsigned __int128)k.digit << 64 | st->prev.digit;
	run &= run << 1;
	run &= run << 2;
	run &= run << 4;
	run &= run << 8;
	run &= run << 16;
	run &= run << 7;
	bad = (bad | (uint64_t)(run >> 64)) & live;
	if (bad) {
		stop_before(st, b, &k, (unsigned)__builtin_ctzll(bad), r);
		return false;
	}

	st->carry_frac = (unsigned)(frac_end >> 64);
	st->carry_zeros = (unsigned)(zeros_end >> 64);
	st->numbers += count_bits(k.comma);
	st->prev_w = st->w;
	copy_without_spaces(st, b, k.space, n);
	st->prev = k;
	st->lead0 = lead0;
	st->nz = nz;
	st->nz_next = nz_next;
	return true;
}

#endif

void plain_numbers(const char *text, size_t len, char *out, struct plain_run *r)
{
#if defined(__SIZEOF_INT128__)
	struct plain_scan st = {.prev.space = (uint64_t)1 << 63, .out = out, .w = out}; /* as after ", " */
	char tail[2 * BLOCK + OVERREAD];
	size_t t, off;

	for (st.at = 0; len - st.at >= BLOCK + OVERREAD; st.at += BLOCK)
		if (!plain_block(&st, text + st.at, BLOCK, r))
			return;
	/* The rest (under BLOCK + OVERREAD bytes) from a copy that ends like every number, with a comma. */
	t = len - st.at;
	memcpy(tail, text + st.at, t);
	tail[t++] = ',';
	memset(tail + t, 0, sizeof(tail) - t);
	for (off = 0; off < t; off += BLOCK, st.at += BLOCK)
		if (!plain_block(&st, tail + off, t - off < BLOCK ? t - off : BLOCK, r))
			return;
	r->in = len;
	r->out = (size_t)(st.w - out) - 1; /* not that comma */
	r->numbers = st.numbers;
	r->all = true;
#else
	(void)text, (void)len, (void)out;
	r->in = r->out = r->numbers = 0; /* no 128-bit arithmetic: the careful scanner does it all */
	r->all = false;
#endif
}
