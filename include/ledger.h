/*
 * ledger.h - drizzle's migration ledger, and what it says about a folder.
 *
 * The ledger is drizzle's own table ("drizzle"."__drizzle_migrations" unless
 * configured): id serial, hash text (sha256 of the file), created_at bigint
 * (the journal entry's `when`). abilitysync writes it exactly as drizzle does,
 * so either tool can take over a database the other one migrated.
 *
 * Where drizzle decides "pending" by a high-water mark (newest created_at),
 * abilitysync matches every journal entry to its row by `when`. That sees what
 * drizzle silently skips (an entry older than the newest applied one) and what
 * it silently ignores (a file edited after it was applied).
 */
#ifndef ABILITYSYNC_LEDGER_H
#define ABILITYSYNC_LEDGER_H

#include "common.h"
#include "journal.h"

struct ledger_row {
	int64_t id;
	char *hash;
	int64_t created_at;
	bool created_at_null;
};

struct ledger {
	char *qschema;    /* "schema", quoted for SQL */
	char *qualified;  /* "schema"."table", quoted for SQL */
	bool exists;
	bool has_name;    /* drizzle v1 upgraded the table: rows also need `name` */
	struct ledger_row *rows;
	size_t n;
};

/* "schema"."table", quoted for SQL. The caller frees it. */
char *ledger_qualified_name(const char *schema, const char *table);

/* An empty ledger of that table (names quoted for SQL); store_ledger.h reads it. */
void ledger_init(struct ledger *l, const char *schema, const char *table);
void ledger_free(struct ledger *l);

enum mig_state {
	MIG_APPLIED,      /* a row with this `when` and this hash */
	MIG_PENDING,      /* no row, newer than every applied migration */
	MIG_OUT_OF_ORDER, /* no row, but something newer is applied: drizzle-kit skips it forever */
	MIG_CHANGED,      /* a row with this `when`, but the file's hash differs: edited after apply */
};

struct plan {
	enum mig_state *state;         /* per journal entry, in journal order */
	const struct ledger_row **row; /* the row that records the entry, or NULL */
	size_t applied, pending, out_of_order, changed;
	size_t *unknown;               /* rows no journal entry matches (indexes into ledger rows) */
	size_t nunknown;
	size_t null_created;           /* rows with created_at NULL: drizzle would re-run everything */
};

void plan_compute(const struct journal *j, const struct ledger *l, struct plan *p);
void plan_free(struct plan *p);

const char *mig_state_name(enum mig_state s);

/*
 * The name drizzle v1 gives a migration in an upgraded ledger: the UTC
 * YYYYMMDDHHMMSS of `when`, "_", and the tag without its first component.
 */
void ledger_v1_name(const char *tag, int64_t when, char *out, size_t outlen);

#endif
