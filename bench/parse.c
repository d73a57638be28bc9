/*
 * parse - what reading a registration costs the service, against what a DOM
 * parser alone costs for the same bytes.
 *
 * Generates --bodies single-ability bodies the way loadgen does (same seed,
 * same shapes: --dim numbers of 9 significant digits, a description, metadata),
 * then times, alternating in --rounds, ability_parse_body (src/ability.c: UTF-8,
 * the grammar, every number's float32 range, the content hash, the attributes)
 * and jansson's json_loadb of the same bodies (a DOM of every number, nothing
 * checked or hashed). Prints CPU microseconds per body of each and their ratio,
 * median and min-max of the rounds; and (single bodies) what ability_from_row
 * costs per row for the same abilities as Postgres prints them (what restore,
 * reconcile and the retry worker read: ", " between numbers, each as numeric
 * prints it). Never a test: the numbers are for reading.
 */
#include "lib/benchkit.h"
#include "ability.h"
#include "buf.h"
#include "jsonscan.h"
#include "common.h"
#include "mem.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROG "parse"

static long o_bodies = 200, o_dim = 3072, o_rounds = 5, o_passes = 10, o_batch = 0;
static bool o_help;

static const struct bench_flag flags[] = {
	{"bodies", "N", F_LONG, &o_bodies, 1, 100000, "distinct bodies (default 200)"},
	{"dim", "D", F_LONG, &o_dim, 1, 65536, "numbers per embedding (default 3072)"},
	{"rounds", "N", F_LONG, &o_rounds, 1, 1000, "alternating rounds of both parsers (default 5)"},
	{"passes", "N", F_LONG, &o_passes, 1, 100000, "passes over the bodies per round and parser (default 10)"},
	{"batch", "N", F_LONG, &o_batch, 0, 1000, "bodies are batches of N abilities ({\"abilities\": [...]}; default 0: single)"},
	{"help", NULL, F_BOOL, &o_help, 0, 0, "this text"},
	{NULL, NULL, F_BOOL, NULL, 0, 0, NULL},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: %s [flags]\n\n"
		"Times ability_parse_body against jansson's json_loadb over the same generated\n"
		"single-ability bodies (or batches: --batch), in alternating rounds; prints CPU us per body and\n"
		"the ratio; then ability_from_row of the same abilities as Postgres prints their rows.\n\n", PROG);
	bench_print_flags(out, flags);
}

static double cpu_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void put_ability(struct buf *b, size_t i, double *scratch)
{
	buf_printf(b, "{\"ability_id\":\"parse-%zu\",\"ability_name\":\"bench_op_%zu\","
		   "\"service_name\":\"bench-svc-%zu.example.com\",\"description\":\"Benchmark ability %zu: lists the "
		   "items of bench service %zu, filtered by status and owner, newest first, with cursor pagination "
		   "and an optional projection of fields.\",\"embedding\":", i, i, i % 3, i, i % 3);
	bench_put_embedding(b, 42, i, (size_t)o_dim, scratch);
	buf_printf(b, ",\"metadata\":{\"dynamic_header_keys\":%s,\"request_method\":\"GET\","
		   "\"request_url\":\"https://bench-svc-%zu.example.com/v1/items?page=%zu\"}}",
		   i % 3 == 0 ? "[\"X-Tenant-Id\"]" : "[]", i % 3, i);
}

static void put_body(struct buf *b, size_t i, double *scratch)
{
	long k;

	if (!o_batch) {
		put_ability(b, i, scratch);
		return;
	}
	buf_puts(b, "{\"abilities\":[");
	for (k = 0; k < o_batch; k++) {
		if (k)
			buf_putc(b, ',');
		put_ability(b, i * (size_t)o_batch + (size_t)k, scratch);
	}
	buf_puts(b, "]}");
}

static void parse_ours(const void *bodies, size_t i)
{
	const struct buf *body = (const struct buf *)bodies + i;
	struct ability_error err;
	struct ability *a;
	size_t n, k;
	bool batch;

	if (!ability_parse_body(body->data, body->len, (size_t)o_dim, o_batch ? (size_t)o_batch : 1, &a, &n, &batch,
				&err)) {
		fprintf(stderr, PROG ": body %zu refused: %s\n", i, err.message);
		exit(1);
	}
	for (k = 0; k < n; k++)
		ability_free(&a[k]);
	free(a);
}

static void parse_jansson(const void *bodies, size_t i)
{
	const struct buf *body = (const struct buf *)bodies + i;
	json_error_t jerr;
	json_t *j = json_loadb(body->data, body->len, 0, &jerr);

	if (!j) {
		fprintf(stderr, PROG ": jansson refused body %zu: %s\n", i, jerr.text);
		exit(1);
	}
	json_decref(j);
}

/* The ability's row as Postgres prints it: the embedding a jsonb of numerics, the metadata a jsonb. */
struct row {
	struct ability a;
	struct buf embedding;
};

static void make_row(const struct buf *body, struct row *row)
{
	struct ability_error err;
	struct ability *a;
	const char *p, *end, *q;
	size_t n;
	bool batch;

	if (!ability_parse_body(body->data, body->len, (size_t)o_dim, 1, &a, &n, &batch, &err) || n != 1) {
		fprintf(stderr, PROG ": a body refused: %s\n", err.message);
		exit(1);
	}
	row->a = a[0];
	free(a);
	buf_putc(&row->embedding, '[');
	for (p = row->a.embedding + 1, end = row->a.embedding + row->a.embedding_len - 1; p < end; p = q + 1) {
		q = js_number_end(p, end);
		if (p != row->a.embedding + 1)
			buf_puts(&row->embedding, ", ");
		if (!q || !ability_canon_number(p, (size_t)(q - p), &row->embedding)) {
			fprintf(stderr, PROG ": a number numeric cannot print\n");
			exit(1);
		}
	}
	buf_putc(&row->embedding, ']');
}

static void read_row(const void *rows, size_t i)
{
	const struct row *row = (const struct row *)rows + i;
	struct ability_error err;
	struct ability a;

	if (!ability_from_row(row->a.ability_id, row->a.ability_name, row->a.service_name, row->a.description,
			      row->embedding.data, row->a.metadata_text, (size_t)o_dim, &a, &err)) {
		fprintf(stderr, PROG ": row %zu refused: %s\n", i, err.message);
		exit(1);
	}
	ability_free(&a);
}

/* CPU seconds per item of one reader over every item (a body, a row), o_passes times. */
static double time_per_item(const void *items, void (*one)(const void *items, size_t i))
{
	double t0 = cpu_s();
	long pass;
	size_t i;

	for (pass = 0; pass < o_passes; pass++)
		for (i = 0; i < (size_t)o_bodies; i++)
			one(items, i);
	return (cpu_s() - t0) / (double)(o_passes * o_bodies);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	struct buf *bodies;
	struct row *rows = NULL;
	double *scratch, *ours, *dom, *ratio, *from_row, bytes = 0, row_bytes = 0;
	long r;
	size_t i;
	int rc;

	if ((rc = bench_parse_flags(PROG, flags, argc, argv)) != EXIT_OK)
		return rc;
	if (o_help) {
		usage(stdout);
		return EXIT_OK;
	}
	bodies = xcalloc((size_t)o_bodies, sizeof(*bodies));
	scratch = xcalloc((size_t)o_dim, sizeof(*scratch));
	for (i = 0; i < (size_t)o_bodies; i++) {
		put_body(&bodies[i], i, scratch);
		bytes += (double)bodies[i].len;
	}
	if (!o_batch) {
		rows = xcalloc((size_t)o_bodies, sizeof(*rows));
		for (i = 0; i < (size_t)o_bodies; i++) {
			make_row(&bodies[i], &rows[i]);
			row_bytes += (double)rows[i].embedding.len;
		}
	}
	from_row = xcalloc((size_t)o_rounds, sizeof(*from_row));
	ours = xcalloc((size_t)o_rounds, sizeof(*ours));
	dom = xcalloc((size_t)o_rounds, sizeof(*dom));
	ratio = xcalloc((size_t)o_rounds, sizeof(*ratio));
	for (r = 0; r < o_rounds; r++) {
		ours[r] = time_per_item(bodies, parse_ours);
		dom[r] = time_per_item(bodies, parse_jansson);
		ratio[r] = ours[r] / dom[r];
		if (rows)
			from_row[r] = time_per_item(rows, read_row);
	}
	qsort(from_row, (size_t)o_rounds, sizeof(*from_row), cmp_double);
	qsort(ours, (size_t)o_rounds, sizeof(*ours), cmp_double);
	qsort(dom, (size_t)o_rounds, sizeof(*dom), cmp_double);
	qsort(ratio, (size_t)o_rounds, sizeof(*ratio), cmp_double);
	if (o_batch)
		printf("| %ld bodies, each a batch of %ld abilities of %ld numbers (%.0f bytes each), %ld rounds | median | "
		       "min–max |\n", o_bodies, o_batch, o_dim, bytes / (double)o_bodies, o_rounds);
	else
		printf("| %ld bodies of %ld numbers (%.0f bytes each), %ld rounds | median | min–max |\n", o_bodies, o_dim,
		       bytes / (double)o_bodies, o_rounds);
	printf("|---|---|---|\n");
	printf("| ability_parse_body, CPU us per body | %.1f | %.1f–%.1f |\n", ours[o_rounds / 2] * 1e6, ours[0] * 1e6,
	       ours[o_rounds - 1] * 1e6);
	printf("| jansson json_loadb (a DOM only), CPU us per body | %.1f | %.1f–%.1f |\n", dom[o_rounds / 2] * 1e6,
	       dom[0] * 1e6, dom[o_rounds - 1] * 1e6);
	printf("| ratio, ours / jansson's | **%.2f** | %.2f–%.2f |\n", ratio[o_rounds / 2], ratio[0],
	       ratio[o_rounds - 1]);
	if (rows)
		printf("| ability_from_row of the same, the embedding as Postgres prints it (%.0f bytes), CPU us per row "
		       "| %.1f | %.1f–%.1f |\n", row_bytes / (double)o_bodies, from_row[o_rounds / 2] * 1e6,
		       from_row[0] * 1e6, from_row[o_rounds - 1] * 1e6);
	for (i = 0; rows && i < (size_t)o_bodies; i++) {
		ability_free(&rows[i].a);
		buf_free(&rows[i].embedding);
	}
	free(rows);
	free(from_row);
	for (i = 0; i < (size_t)o_bodies; i++)
		buf_free(&bodies[i]);
	free(bodies);
	free(scratch);
	free(ours);
	free(dom);
	free(ratio);
	return 0;
}
