/*
 * store_ledger.h - the migrator's statements: drizzle's ledger table, the
 * migration lock, and a migration's own statements with the ledger row that
 * records them.
 *
 * Part of the store (the service's statements are in store.h, the jobs' in
 * store_job.h), with one difference: the migrator runs before any event loop,
 * on one blocking connection of its own (pgconn.h), so these calls block and
 * answer at once. Errors name the table or the migration file.
 */
#ifndef ABILITYSYNC_STORE_LEDGER_H
#define ABILITYSYNC_STORE_LEDGER_H

#include "common.h"
#include "journal.h"
#include "ledger.h"

#include <libpq-fe.h>

/* Reads the whole ledger (one row per migration: tens of rows); l->exists false when there is no table. */
bool ledger_read(PGconn *conn, const char *schema, const char *table, struct ledger *l,
		 struct errbuf *err) MUSTCHECK;

/* Transactions: everything a run applies and records commits at once, or nothing does. */
bool ledger_begin(PGconn *conn, struct errbuf *err) MUSTCHECK;
bool ledger_commit(PGconn *conn, struct errbuf *err) MUSTCHECK;
void ledger_rollback(PGconn *conn);

/* The ledger's schema and table, as drizzle defines them (so drizzle recognises the table). */
bool ledger_create(PGconn *conn, const struct ledger *l, struct errbuf *err) MUSTCHECK;

/* Runs m's statements in order and records m in the ledger; err names the file and the statement. */
bool ledger_apply(PGconn *conn, const struct ledger *l, const struct migration *m, struct errbuf *err) MUSTCHECK;

/*
 * The migration lock: a session advisory lock on `key` (migrate_lock_key),
 * so it goes with the connection. Tried, never waited for: *got says.
 */
bool ledger_try_lock(PGconn *conn, int64_t key, bool *got, struct errbuf *err) MUSTCHECK;
void ledger_unlock(PGconn *conn, int64_t key);

/* Who holds `key`: "pid N ("application", client)", or "another session". */
void ledger_lock_holder(PGconn *conn, int64_t key, char *out, size_t outlen);

#endif
