/*
 * plainscan.h - the usual embedding, checked 64 bytes at a time.
 *
 * Nearly every embedding there is has one shape: an array of plain decimals
 * ("-0.0123", "0.5", "3") separated by "," (how clients send them) or ", "
 * (how Postgres prints a jsonb array, which restores and reconciles read by
 * the million). plain_numbers recognises exactly that shape with bit masks:
 * about a hundred instructions per 64 bytes and no branch per number, where
 * the careful scanner (js_number_scan, a token at a time) branches on every
 * number's sign, digits and length.
 *
 * It only ever says "these numbers are the usual shape" and where it stopped;
 * a stop never means invalid. The caller's careful scanner takes the number
 * there, which may be valid (an exponent, more whitespace, a negative zero: a
 * number to canonicalise) or not (then it names what is wrong), and hands
 * the rest back.
 */
#ifndef ABILITYSYNC_PLAINSCAN_H
#define ABILITYSYNC_PLAINSCAN_H

#include "common.h"

/* Bytes past the output's end that plain_numbers may write (then overwrite or leave). */
#define PLAIN_SLACK 64

/* How far plain_numbers got. */
struct plain_run {
	size_t in;      /* bytes of the text taken: whole numbers, each with its comma */
	size_t out;     /* bytes written for them: the same without spaces */
	size_t numbers; /* how many */
	bool all;       /* the whole text (its last number has no comma) */
};

/*
 * Reads text[0, len), the inside of an array from a number's first byte to
 * the closing bracket, as far as it is numbers separated by "," or ", " where
 * every number is -?(0|[1-9][0-9]*)(.[0-9]+)? with no run of 39 or more digits
 * (so finite as a float32 and holdable by numeric) and is not a negative zero:
 * the numbers numeric prints exactly as written. Writes them to out without
 * the spaces. Stops before the first number that is not such a number, or not
 * followed by such a separator (r->all false): the caller reads that one
 * carefully. out must have room for len + PLAIN_SLACK bytes.
 */
void plain_numbers(const char *text, size_t len, char *out, struct plain_run *r);

#endif
