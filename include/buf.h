/*
 * buf.h - a growable byte buffer, always NUL-terminated.
 *
 * The owner of a struct buf frees it with buf_free(); buf_steal() hands the
 * bytes over to the caller instead.
 */
#ifndef ABILITYSYNC_BUF_H
#define ABILITYSYNC_BUF_H

#include "common.h"

#include <stdarg.h>

struct buf {
	char *data; /* NULL until the first append, then always NUL-terminated */
	size_t len;
	size_t cap;
};

#define BUF_INIT {NULL, 0, 0}

void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) PRINTF_LIKE(2, 3);
void buf_vprintf(struct buf *b, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);

/* Appends s[0..n) as a JSON string literal, quotes included. */
void buf_json_str(struct buf *b, const char *s, size_t n);

/* The contents as a C string ("" when empty); valid until the next append. */
const char *buf_cstr(const struct buf *b);

void buf_reset(struct buf *b);
void buf_free(struct buf *b);

/* Returns the contents (never NULL) and leaves the buffer empty. */
char *buf_steal(struct buf *b);

/*
 * Replaces the contents with the file at `path`. Fails, naming the file, when
 * it cannot be read or is larger than `max` bytes.
 */
bool buf_read_file(struct buf *b, const char *path, size_t max, struct errbuf *err) MUSTCHECK;

#endif
