/*
 * mem.h - allocation that never returns NULL.
 *
 * Like Redis, abilitysync aborts on allocation failure instead of threading
 * "out of memory" through every caller: a half-handled OOM is worse than a
 * restart, and a restart loses nothing because every acknowledged write is
 * already committed in Postgres (the outbox).
 */
#ifndef ABILITYSYNC_MEM_H
#define ABILITYSYNC_MEM_H

#include <stddef.h>

void *xmalloc(size_t n) __attribute__((malloc, returns_nonnull));
void *xcalloc(size_t n, size_t size) __attribute__((malloc, returns_nonnull));
void *xrealloc(void *p, size_t n) __attribute__((returns_nonnull));
char *xstrdup(const char *s) __attribute__((malloc, returns_nonnull));
char *xstrndup(const char *s, size_t n) __attribute__((malloc, returns_nonnull));

/* Grows *arr so that it can hold at least `need` elements of `size` bytes. */
void *xgrow(void *arr, size_t *cap, size_t need, size_t size) __attribute__((returns_nonnull));

#endif
