#include "mem.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void die_oom(size_t n) __attribute__((noreturn));

static void die_oom(size_t n)
{
	char msg[96];
	int len = snprintf(msg, sizeof(msg), "abilitysync: out of memory allocating %zu bytes\n", n);

	/* No stdio buffers, no allocation: one write(2), then abort. */
	if (len > 0 && write(STDERR_FILENO, msg, (size_t)len) < 0)
		abort();
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		die_oom(n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		die_oom(n * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (!q)
		die_oom(n);
	return q;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

void *xgrow(void *arr, size_t *cap, size_t need, size_t size)
{
	size_t c = *cap ? *cap : 8;

	if (arr && need <= *cap)
		return arr;
	while (c < need) {
		if (c > SIZE_MAX / 2 / size)
			die_oom(SIZE_MAX);
		c *= 2;
	}
	*cap = c;
	return xrealloc(arr, c * size);
}
