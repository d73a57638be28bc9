/*
 * fuzz.h - shared by the libFuzzer targets (tests/fuzz/fuzz_*.c).
 *
 * A target checks invariants, not only survival: CHECK prints what broke and
 * aborts, which libFuzzer reports as a crash and saves as an artifact.
 */
#ifndef ABILITYSYNC_FUZZ_H
#define ABILITYSYNC_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, ...)                                                                              \
	do {                                                                                          \
		if (!(cond)) {                                                                        \
			fprintf(stderr, "\ninvariant broken at %s:%d: %s\n  ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                                 \
			fputc('\n', stderr);                                                          \
			abort();                                                                      \
		}                                                                                     \
	} while (0)

/* The input as a buffer of exactly `size` bytes (ASan sees any read past it). */
static inline char *fuzz_copy(const uint8_t *data, size_t size)
{
	char *p = malloc(size); /* ASan gives malloc(0) a pointer with no bytes behind it */

	if (!p && size)
		abort();
	if (size)
		memcpy(p, data, size);
	return p;
}

/* The input as a C string: up to its first NUL. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
	size_t n = strnlen((const char *)data, size);
	char *p = malloc(n + 1);

	if (!p)
		abort();
	memcpy(p, data, n);
	p[n] = '\0';
	return p;
}

#endif
