/* What the ledger says about a folder: applied, pending, out of order, changed. */
#include "ledger.h"

#include "mem.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

static struct migration M[4];
static struct journal J = {NULL, M, 4, false};

static void setup(void)
{
	static const char *const tags[] = {"0000_a", "0001_b", "0002_c", "0003_d"};
	static const int64_t whens[] = {100, 200, 300, 400};
	size_t i;

	for (i = 0; i < 4; i++) {
		memset(&M[i], 0, sizeof(M[i]));
		M[i].tag = (char *)tags[i];
		M[i].when = whens[i];
		memset(M[i].hash, 'a' + (int)i, 64);
		M[i].hash[64] = '\0';
	}
}

static struct ledger_row row(int64_t id, int64_t created_at, const struct migration *m)
{
	struct ledger_row r = {id, (char *)m->hash, created_at, false};

	return r;
}

static struct plan compute(struct ledger_row *rows, size_t n)
{
	struct ledger l = {NULL, NULL, n > 0, false, rows, n};
	struct plan p;

	plan_compute(&J, &l, &p);
	return p;
}

TestSuite(plan, .init = setup);

Test(plan, empty_ledger_means_everything_pending)
{
	struct plan p = compute(NULL, 0);

	cr_assert(eq(sz, p.pending, 4));
	cr_assert(eq(sz, p.applied, 0));
	cr_assert(eq(int, p.state[0], MIG_PENDING));
	plan_free(&p);
}

Test(plan, applied_prefix_leaves_the_rest_pending)
{
	struct ledger_row rows[] = {row(1, 100, &M[0]), row(2, 200, &M[1])};
	struct plan p = compute(rows, 2);

	cr_assert(eq(int, p.state[0], MIG_APPLIED));
	cr_assert(eq(int, p.state[1], MIG_APPLIED));
	cr_assert(eq(int, p.state[2], MIG_PENDING));
	cr_assert(eq(int, p.state[3], MIG_PENDING));
	cr_assert(eq(ptr, (void *)p.row[1], &rows[1]));
	cr_assert(eq(sz, p.nunknown, 0));
	plan_free(&p);
}

Test(plan, a_gap_below_the_high_water_mark_is_out_of_order)
{
	/* drizzle-kit reads only max(created_at) = 300 and would skip 0001 forever. */
	struct ledger_row rows[] = {row(1, 100, &M[0]), row(2, 300, &M[2])};
	struct plan p = compute(rows, 2);

	cr_assert(eq(int, p.state[1], MIG_OUT_OF_ORDER));
	cr_assert(eq(int, p.state[3], MIG_PENDING));
	cr_assert(eq(sz, p.out_of_order, 1));
	cr_assert(eq(sz, p.pending, 1));
	plan_free(&p);
}

Test(plan, a_different_hash_means_the_file_changed)
{
	struct ledger_row rows[] = {row(1, 100, &M[1])}; /* M[1]'s hash recorded under M[0]'s when */
	struct plan p = compute(rows, 1);

	cr_assert(eq(int, p.state[0], MIG_CHANGED));
	cr_assert(eq(sz, p.changed, 1));
	plan_free(&p);
}

Test(plan, rows_the_folder_does_not_know_are_listed)
{
	struct ledger_row rows[] = {row(1, 100, &M[0]), row(2, 150, &M[1]), row(3, 999, &M[3])};
	struct plan p = compute(rows, 3);

	cr_assert(eq(sz, p.nunknown, 2));
	cr_assert(eq(sz, p.unknown[0], 1));
	cr_assert(eq(sz, p.unknown[1], 2));
	/* A newer unknown row (999) makes every unapplied entry older than the mark. */
	cr_assert(eq(int, p.state[3], MIG_OUT_OF_ORDER));
	plan_free(&p);
}

Test(plan, null_created_at_is_counted)
{
	struct ledger_row rows[] = {row(1, 100, &M[0]), {2, M[1].hash, 0, true}};
	struct plan p = compute(rows, 2);

	cr_assert(eq(sz, p.null_created, 1));
	cr_assert(eq(int, p.state[1], MIG_PENDING), "a NULL row matches nothing");
	plan_free(&p);
}

Test(plan, drizzle_v1_name)
{
	char name[64];

	/* reference §9: 0001_add_version, when 1795392952291, became 20261123001552_add_version */
	ledger_v1_name("0001_add_version", 1795392952291LL, name, sizeof(name));
	cr_assert(eq(str, name, "20261123001552_add_version"));
	ledger_v1_name("0000_solid_living_mummy", 1795392939498LL, name, sizeof(name));
	cr_assert(eq(str, name, "20261123001539_solid_living_mummy"));
}
