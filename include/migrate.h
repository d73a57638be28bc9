/*
 * migrate.h - `abilitysync migrate`: drizzle's migrations, applied safely.
 *
 * Same folder, same ledger, same hashes and the same single transaction as
 * `drizzle-kit migrate`, so the two can take turns on one database. Beyond
 * drizzle:
 *   - a session advisory lock makes concurrent starts take turns (bounded wait,
 *     clear time-out); a lock-free read first lets N replicas that find nothing
 *     pending start at once;
 *   - pending is decided per migration (by its `when`), so a migration older than
 *     the newest applied one is reported, and refused unless allowed, instead of
 *     being skipped forever;
 *   - an applied file whose hash changed is refused, naming the file;
 *   - a statement that cannot run in a transaction is reported before anything
 *     is applied;
 *   - a failure rolls everything back, the ledger's own schema and table included.
 */
#ifndef ABILITYSYNC_MIGRATE_H
#define ABILITYSYNC_MIGRATE_H

#include "common.h"

struct migrate_opts {
	const char *conninfo;
	const char *db_host;  /* wait for this host instead of the URL's (DB_HOST) */
	const char *dir;
	const char *schema;
	const char *table;
	int wait_s;
	int lock_timeout_s;
	bool allow_out_of_order;
	bool allow_changed;
	bool json;            /* status: one JSON object on stdout */
};

/* Each returns an exit code: EXIT_OK, EXIT_PENDING (status, plan), EXIT_REFUSED or EXIT_FAIL. */
int migrate_up(const struct migrate_opts *o);
int migrate_status(const struct migrate_opts *o);
int migrate_plan(const struct migrate_opts *o);

/* The advisory-lock key for a database and ledger (shown by status, findable in pg_locks). */
int64_t migrate_lock_key(const char *dbname, const char *schema, const char *table);

#endif
