/*
 * gen_rows - abilities rows for bench/copy_baseline.sh, written to stdout.
 *
 *   gen_rows --rows N --format copy                 COPY text format, one row a line
 *   gen_rows --rows N --format insert --per 100     INSERT ... ON CONFLICT DO UPDATE, --per rows each
 *
 * The abilities are loadgen's (bench/loadgen.c), field for field: the same
 * embeddings (3072 numbers, 9 significant digits), description and metadata,
 * so the baseline stores what the service would. vector_id is the service's
 * (vdb_vector_id). The columns are those of drizzle/0000_abilities.sql minus
 * the two timestamps, which keep their defaults.
 */
#include "lib/benchkit.h"
#include "buf.h"
#include "common.h"
#include "mem.h"
#include "vdbid.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "gen_rows"

static const char columns[] = "ability_id, vector_id, ability_name, service_name, description, embedding, "
			      "dynamic_header_keys, dynamic_headers_required, metadata";

/* What the service's upsert sets (src/store.c), so the baseline does the same work per conflict. */
static const char on_conflict[] =
	" ON CONFLICT (ability_id) DO UPDATE SET vector_id = excluded.vector_id,"
	" ability_name = excluded.ability_name, service_name = excluded.service_name,"
	" description = excluded.description, embedding = excluded.embedding,"
	" dynamic_header_keys = excluded.dynamic_header_keys,"
	" dynamic_headers_required = excluded.dynamic_headers_required, metadata = excluded.metadata,"
	" updated_at = now();\n";

struct opts {
	long rows, dim, services, per;
	uint64_t seed;
	const char *prefix;
	bool insert;
};

static const char *const methods[] = {"GET", "POST", "GET", "PUT", "GET", "DELETE"};

/* ---- one row ---------------------------------------------------------------------- */

/* The row's fields as text, before any quoting. */
struct row {
	struct buf id, name, service, description, embedding, keys, metadata;
	int64_t vector_id;
	bool required;
};

static void row_reset(struct row *r)
{
	buf_reset(&r->id);
	buf_reset(&r->name);
	buf_reset(&r->service);
	buf_reset(&r->description);
	buf_reset(&r->embedding);
	buf_reset(&r->keys);
	buf_reset(&r->metadata);
}

static void row_free(struct row *r)
{
	buf_free(&r->id);
	buf_free(&r->name);
	buf_free(&r->service);
	buf_free(&r->description);
	buf_free(&r->embedding);
	buf_free(&r->keys);
	buf_free(&r->metadata);
}

static bool row_make(struct row *r, const struct opts *o, size_t index, double *scratch)
{
	size_t svc = index % (size_t)o->services;
	struct errbuf err;

	row_reset(r);
	buf_printf(&r->id, "%s-%" PRIu64 "-%zu", o->prefix, o->seed, index);
	buf_printf(&r->name, "bench_op_%zu", index);
	buf_printf(&r->service, "bench-svc-%zu.example.com", svc);
	buf_printf(&r->description, "Benchmark ability %zu: lists the items of bench service %zu, filtered by status "
		   "and owner, newest first, with cursor pagination and an optional projection of fields.", index, svc);
	bench_put_embedding(&r->embedding, o->seed, index, (size_t)o->dim, scratch);
	r->required = index % 3 == 0;
	buf_puts(&r->keys, r->required ? "[\"X-Tenant-Id\"]" : "[]");
	buf_printf(&r->metadata, "{\"dynamic_header_keys\":%s,\"request_method\":\"%s\","
		   "\"request_url\":\"https://bench-svc-%zu.example.com/v1/items?page=%zu\"}",
		   buf_cstr(&r->keys), methods[index % ARRAY_LEN(methods)], svc, index);
	if (!vdb_vector_id(r->id.data, r->id.len, &r->vector_id, &err)) {
		fprintf(stderr, "%s: %s\n", PROG, err.msg);
		return false;
	}
	return true;
}

/* COPY text format: backslash, tab, newline and carriage return are escaped. */
static void put_copy_field(struct buf *out, const struct buf *f, bool last)
{
	size_t i;

	for (i = 0; i < f->len; i++) {
		char c = f->data[i];

		if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
			buf_putc(out, '\\');
			c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : c;
		}
		buf_putc(out, c);
	}
	buf_putc(out, last ? '\n' : '\t');
}

static void put_copy_row(struct buf *out, const struct row *r)
{
	put_copy_field(out, &r->id, false);
	buf_printf(out, "%" PRId64 "\t", r->vector_id);
	put_copy_field(out, &r->name, false);
	put_copy_field(out, &r->service, false);
	put_copy_field(out, &r->description, false);
	put_copy_field(out, &r->embedding, false);
	put_copy_field(out, &r->keys, false);
	buf_puts(out, r->required ? "t\t" : "f\t");
	put_copy_field(out, &r->metadata, true);
}

/* A standard SQL string literal: quotes doubled (standard_conforming_strings is on since 9.1). */
static void put_literal(struct buf *out, const struct buf *f, const char *sep)
{
	size_t i;

	buf_putc(out, '\'');
	for (i = 0; i < f->len; i++) {
		if (f->data[i] == '\'')
			buf_putc(out, '\'');
		buf_putc(out, f->data[i]);
	}
	buf_putc(out, '\'');
	buf_puts(out, sep);
}

static void put_values(struct buf *out, const struct row *r, bool first)
{
	buf_puts(out, first ? "\n(" : ",\n(");
	put_literal(out, &r->id, ", ");
	buf_printf(out, "%" PRId64 ", ", r->vector_id);
	put_literal(out, &r->name, ", ");
	put_literal(out, &r->service, ", ");
	put_literal(out, &r->description, ", ");
	put_literal(out, &r->embedding, ", ");
	put_literal(out, &r->keys, r->required ? ", true, " : ", false, ");
	put_literal(out, &r->metadata, ")");
}

static int generate(const struct opts *o)
{
	struct row r;
	struct buf out = BUF_INIT;
	double *scratch = xmalloc((size_t)o->dim * sizeof(double));
	size_t i, n = (size_t)o->rows, per = (size_t)o->per;
	int rc = EXIT_OK;

	memset(&r, 0, sizeof(r));
	for (i = 0; i < n && rc == EXIT_OK; i++) {
		if (!row_make(&r, o, i, scratch)) {
			rc = EXIT_FAIL;
			break;
		}
		if (!o->insert) {
			put_copy_row(&out, &r);
		} else {
			if (i % per == 0)
				buf_printf(&out, "INSERT INTO abilities (%s) VALUES", columns);
			put_values(&out, &r, i % per == 0);
			if (i % per == per - 1 || i == n - 1)
				buf_puts(&out, on_conflict);
		}
		if (fwrite(out.data, 1, out.len, stdout) != out.len)
			rc = EXIT_FAIL;
		buf_reset(&out);
	}
	if (fflush(stdout) != 0 || rc != EXIT_OK)
		rc = EXIT_FAIL;
	buf_free(&out);
	row_free(&r);
	free(scratch);
	return rc;
}

/* ---- flags ---------------------------------------------------------------------------- */

static int usage(FILE *out, int rc)
{
	fprintf(out, "usage: %s [--rows N] [--format copy|insert] [--per N] [--dim D] [--services S]\n"
		"               [--prefix P] [--seed N]\n\n"
		"Writes N abilities rows (loadgen's abilities: ids P-<seed>-<i>) to stdout, as COPY\n"
		"text (default) or as INSERT ... ON CONFLICT (ability_id) DO UPDATE statements of\n"
		"--per rows (default 100). Defaults: 2000 rows, dim 3072, 4 services, prefix\n"
		"bench-copy, seed 1.\n", PROG);
	return rc;
}

static bool num(const char *s, long min, long max, long *out)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (!*s || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

static int parse(int argc, char **argv, struct opts *o)
{
	long seed = 1;
	int i;

	for (i = 1; i < argc; i += 2) { /* every flag takes a value */
		const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
		bool ok = true;

		if (strcmp(f, "--help") == 0)
			return usage(stdout, -1);
		if (strcmp(f, "--rows") == 0)
			ok = num(v, 1, 100000000, &o->rows);
		else if (strcmp(f, "--dim") == 0)
			ok = num(v, 1, 65536, &o->dim);
		else if (strcmp(f, "--services") == 0)
			ok = num(v, 1, 1000000, &o->services);
		else if (strcmp(f, "--per") == 0)
			ok = num(v, 1, 100000, &o->per);
		else if (strcmp(f, "--seed") == 0)
			ok = num(v, 0, 2147483647, &seed);
		else if (strcmp(f, "--prefix") == 0)
			o->prefix = v;
		else if (strcmp(f, "--format") == 0 && (strcmp(v, "copy") == 0 || strcmp(v, "insert") == 0))
			o->insert = strcmp(v, "insert") == 0;
		else
			ok = false;
		if (!ok || i + 1 >= argc) {
			fprintf(stderr, "%s: %s: unknown flag, or a missing or bad value (see --help)\n", PROG, f);
			return EXIT_USAGE;
		}
	}
	o->seed = (uint64_t)seed;
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	struct opts o = {2000, 3072, 4, 100, 1, "bench-copy", false};
	int rc = parse(argc, argv, &o);

	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	return generate(&o);
}
