/*
 * text.h - checks on text that comes from outside: files, requests, replies.
 */
#ifndef ABILITYSYNC_TEXT_H
#define ABILITYSYNC_TEXT_H

#include "common.h"

/*
 * True when s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, nothing
 * above U+10FFFF). Otherwise *bad is the offset of the first bad byte.
 */
bool utf8_valid(const char *s, size_t len, size_t *bad) MUSTCHECK;

#endif
