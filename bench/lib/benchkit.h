/*
 * benchkit.h - what the benchmark programs (bench/, one .c each) share: their --flag
 * tables, and the generated embeddings, which must be the same in every tool
 * for a run's figures to compare (loadgen posts what gen_rows COPYs).
 */
#ifndef ABILITYSYNC_BENCHKIT_H
#define ABILITYSYNC_BENCHKIT_H

#include "buf.h"
#include "common.h"

#include <stdint.h>
#include <stdio.h>

enum bench_flag_kind { F_STR, F_LONG, F_BOOL };

/* One row of a tool's flag table, which ends with a row whose name is NULL. */
struct bench_flag {
	const char *name;
	const char *arg;  /* NULL: a switch (F_BOOL) */
	enum bench_flag_kind kind;
	void *dst;        /* const char *, long or bool */
	long min, max;    /* F_LONG */
	const char *help;
};

/*
 * --name VALUE and --name=VALUE into the table's destinations. EXIT_OK, or
 * EXIT_USAGE once it has said on stderr which flag is wrong and why.
 */
int bench_parse_flags(const char *prog, const struct bench_flag *flags, int argc, char **argv) MUSTCHECK;

/* Says on stderr that --name is wrong and why; returns EXIT_USAGE. */
int bench_bad_flag(const char *prog, const char *name, const char *why);

/* The table as --help lists it, one flag a line. */
void bench_print_flags(FILE *out, const struct bench_flag *flags);

/* The next number of a splitmix64 sequence whose state is *s. */
uint64_t bench_splitmix64(uint64_t *s);

/*
 * Ability `index` of run `seed`'s embedding: a deterministic unit vector of
 * `dim` numbers printed as %.9g (as embedding APIs print float32s), as a JSON
 * array appended to b. scratch holds dim doubles.
 */
void bench_put_embedding(struct buf *b, uint64_t seed, size_t index, size_t dim, double *scratch);

/* User and system CPU of this process so far, in ms. */
double bench_self_cpu_ms(void);

#endif
