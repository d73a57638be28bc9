/*
 * text.h - checks on text that comes from outside (files, requests, replies),
 * and integers as text.
 */
#ifndef ABILITYSYNC_TEXT_H
#define ABILITYSYNC_TEXT_H

#include "attrs.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * True when s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, nothing
 * above U+10FFFF). Otherwise *bad is the offset of the first bad byte.
 */
bool utf8_valid(const char *s, size_t len, size_t *bad) MUSTCHECK;

/*
 * Makes s (NUL-terminated) well-formed UTF-8 in place: every byte that does not
 * belong to a well-formed sequence becomes '?'. For text that may echo what a
 * client sent, or was cut mid-character by a fixed-size buffer, on its way into
 * JSON (jansson refuses to build a string that is not UTF-8).
 */
void utf8_scrub(char *s);

/* An integer as text (a SQL parameter, a header value), held by value: num(42).s is "42". */
struct num {
	char s[24];
};
struct num num(int64_t v);

#endif
