#include "benchkit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* ---- flags ----------------------------------------------------------------- */

static bool parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (!*s)
		return false;
	v = strtol(s, &end, 10);
	if (*end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

int bench_bad_flag(const char *prog, const char *name, const char *why)
{
	fprintf(stderr, "%s: --%s: %s (see --help)\n", prog, name, why);
	return EXIT_USAGE;
}

static int set_flag(const char *prog, const struct bench_flag *f, const char *value)
{
	char why[96];

	if (f->kind == F_STR) {
		*(const char **)f->dst = value;
	} else if (f->kind == F_LONG && !parse_long(value, f->min, f->max, f->dst)) {
		snprintf(why, sizeof(why), "\"%s\" is not a number from %ld to %ld", value, f->min, f->max);
		return bench_bad_flag(prog, f->name, why);
	}
	return EXIT_OK;
}

int bench_parse_flags(const char *prog, const struct bench_flag *flags, int argc, char **argv)
{
	int i, rc;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *eq, *value = NULL;
		const struct bench_flag *f;
		size_t len;

		if (strncmp(a, "--", 2) != 0)
			return bench_bad_flag(prog, a, "not a flag; every option is --name VALUE");
		a += 2;
		eq = strchr(a, '=');
		len = eq ? (size_t)(eq - a) : strlen(a);
		for (f = flags; f->name && (strlen(f->name) != len || strncmp(f->name, a, len) != 0); f++)
			;
		if (!f->name) {
			fprintf(stderr, "%s: unknown flag --%.*s (see --help)\n", prog, (int)len, a);
			return EXIT_USAGE;
		}
		if (!f->arg) {
			if (eq)
				return bench_bad_flag(prog, f->name, "takes no value");
			*(bool *)f->dst = true;
			continue;
		}
		if (eq)
			value = eq + 1;
		else if (i + 1 < argc)
			value = argv[++i];
		else
			return bench_bad_flag(prog, f->name, "needs a value");
		if ((rc = set_flag(prog, f, value)) != EXIT_OK)
			return rc;
	}
	return EXIT_OK;
}

void bench_print_flags(FILE *out, const struct bench_flag *flags)
{
	const struct bench_flag *f;
	char left[40];

	for (f = flags; f->name; f++) {
		snprintf(left, sizeof(left), "--%s%s%s", f->name, f->arg ? " " : "", f->arg ? f->arg : "");
		fprintf(out, "  %-22s %s\n", left, f->help);
	}
}

/* ---- embeddings ------------------------------------------------------------ */

uint64_t bench_splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double uniform01(uint64_t *s)
{
	return (double)(bench_splitmix64(s) >> 11) * 0x1.0p-53;
}

/*
 * Writes x as printf's %.9g would. Unit-length 3072-d vectors have nearly all
 * components in [1e-4, 1): that range is formatted by hand (printf dominated
 * generation), the rest by printf.
 */
static size_t put_sig9(char *out, double x)
{
	char *p = out, d[9];
	double a = fabs(x);
	uint64_t m;
	int e, nd, k;

	if (!(a >= 1e-4 && a < 0.99999999))
		return (size_t)snprintf(out, 24, "%.9g", x);
	e = a >= 0.1 ? -1 : a >= 0.01 ? -2 : a >= 0.001 ? -3 : -4;
	m = (uint64_t)(a * (e == -1 ? 1e9 : e == -2 ? 1e10 : e == -3 ? 1e11 : 1e12) + 0.5);
	if (m >= 1000000000u) { /* rounding carried into a new digit: 0.0999999999 -> 0.1 */
		m /= 10;
		e++;
	}
	for (k = 8; k >= 0; k--, m /= 10)
		d[k] = (char)('0' + m % 10);
	for (nd = 9; nd > 1 && d[nd - 1] == '0'; nd--)
		;
	if (x < 0)
		*p++ = '-';
	*p++ = '0';
	*p++ = '.';
	for (k = -1; k > e; k--)
		*p++ = '0';
	memcpy(p, d, (size_t)nd);
	return (size_t)(p + nd - out);
}

void bench_put_embedding(struct buf *b, uint64_t seed, size_t index, size_t dim, double *scratch)
{
	uint64_t s = seed ^ (0xd1b54a32d192ed03ull * (index + 1));
	double norm = 0;
	size_t i;
	char num[32];

	for (i = 0; i < dim; i++) {
		/* Irwin-Hall: close enough to a normal, and no libm, so every machine agrees. */
		double g = (uniform01(&s) + uniform01(&s) + uniform01(&s) + uniform01(&s) - 2.0) * 1.7320508075688772;

		scratch[i] = g;
		norm += g * g;
	}
	norm = norm > 0 ? sqrt(norm) : 1;
	buf_reserve(b, dim * 14 + 2);
	buf_putc(b, '[');
	for (i = 0; i < dim; i++) {
		if (i)
			buf_putc(b, ',');
		buf_append(b, num, put_sig9(num, scratch[i] / norm));
	}
	buf_putc(b, ']');
}

double bench_self_cpu_ms(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000.0 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000.0;
}
