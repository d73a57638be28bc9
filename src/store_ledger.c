#include "store_ledger.h"

#include "buf.h"
#include "mem.h"
#include "pgconn.h"
#include "text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool read_rows(PGconn *conn, struct ledger *l, struct errbuf *err)
{
	struct buf sql = BUF_INIT;
	PGresult *res;
	char msg[768];
	int i;
	bool ok = false;

	buf_printf(&sql, "SELECT id, hash, created_at FROM %s ORDER BY id", l->qualified);
	res = PQexec(conn, sql.data);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pg_result_error(res, msg, sizeof(msg));
		err_set(err, "reading the ledger %s: %s", l->qualified, msg);
		goto out;
	}
	l->n = (size_t)PQntuples(res);
	l->rows = xcalloc(l->n, sizeof(*l->rows));
	for (i = 0; i < PQntuples(res); i++) {
		struct ledger_row *r = &l->rows[i];

		r->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		r->hash = xstrdup(PQgetvalue(res, i, 1));
		r->created_at_null = PQgetisnull(res, i, 2);
		r->created_at = r->created_at_null ? 0 : strtoll(PQgetvalue(res, i, 2), NULL, 10);
	}
	ok = true;
out:
	PQclear(res);
	buf_free(&sql);
	return ok;
}

bool ledger_read(PGconn *conn, const char *schema, const char *table, struct ledger *l, struct errbuf *err)
{
	const char *params[1];
	PGresult *res;
	char msg[768];
	bool ok = false;

	ledger_init(l, schema, table);
	params[0] = l->qualified;
	res = PQexecParams(conn,
			   "SELECT to_regclass($1) IS NOT NULL, "
			   "EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) "
			   "AND attname = 'name' AND NOT attisdropped)",
			   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pg_result_error(res, msg, sizeof(msg));
		err_set(err, "looking for the ledger %s: %s", l->qualified, msg);
		goto out;
	}
	l->exists = PQgetvalue(res, 0, 0)[0] == 't';
	l->has_name = PQgetvalue(res, 0, 1)[0] == 't';
	ok = !l->exists || read_rows(conn, l, err);
out:
	PQclear(res);
	return ok;
}

bool ledger_begin(PGconn *conn, struct errbuf *err)
{
	return pg_exec_ok(conn, "begin", "starting the transaction", err);
}

bool ledger_commit(PGconn *conn, struct errbuf *err)
{
	return pg_exec_ok(conn, "commit", "committing", err);
}

void ledger_rollback(PGconn *conn)
{
	PQclear(PQexec(conn, "rollback"));
}

bool ledger_create(PGconn *conn, const struct ledger *l, struct errbuf *err)
{
	struct buf sql = BUF_INIT;
	bool ok;

	buf_printf(&sql, "CREATE SCHEMA IF NOT EXISTS %s", l->qschema);
	ok = pg_exec_ok(conn, sql.data, "creating the ledger's schema", err);
	buf_reset(&sql);
	/* drizzle's own definition, so drizzle (0.x and v1's upgrade) recognises the table. */
	buf_printf(&sql, "CREATE TABLE IF NOT EXISTS %s (\n\tid SERIAL PRIMARY KEY,\n\thash text NOT NULL,\n"
		   "\tcreated_at bigint\n)", l->qualified);
	ok = ok && pg_exec_ok(conn, sql.data, "creating the ledger", err);
	buf_free(&sql);
	return ok;
}

static bool record_applied(PGconn *conn, const struct ledger *l, const struct migration *m, struct errbuf *err)
{
	struct buf sql = BUF_INIT;
	char when[24], name[256];
	const char *params[3] = {m->hash, when, name};
	PGresult *res;
	char msg[512];
	bool ok;

	snprintf(when, sizeof(when), "%lld", (long long)m->when);
	ledger_v1_name(m->tag, m->when, name, sizeof(name));
	if (l->has_name)
		buf_printf(&sql, "insert into %s (\"hash\", \"created_at\", \"name\") values($1, $2, $3)",
			   l->qualified);
	else
		buf_printf(&sql, "insert into %s (\"hash\", \"created_at\") values($1, $2)", l->qualified);
	res = PQexecParams(conn, sql.data, l->has_name ? 3 : 2, NULL, params, NULL, NULL, 0);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok) {
		pg_result_error(res, msg, sizeof(msg));
		err_set(err, "recording %s in the ledger: %s", m->tag, msg);
	}
	PQclear(res);
	buf_free(&sql);
	return ok;
}

bool ledger_apply(PGconn *conn, const struct ledger *l, const struct migration *m, struct errbuf *err)
{
	size_t c;

	for (c = 0; c < m->nchunks; c++) {
		PGresult *res = PQexec(conn, m->chunks[c]);
		ExecStatusType st = PQresultStatus(res);
		char msg[768], near[80];

		if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
			PQclear(res);
			continue;
		}
		pg_result_error(res, msg, sizeof(msg));
		pg_one_line(m->chunks[c], near, sizeof(near));
		err_set(err, "%s statement %zu of %zu failed: %s [statement: %s%s]", m->path, c + 1, m->nchunks,
			msg, near, strlen(near) >= sizeof(near) - 1 ? "..." : "");
		PQclear(res);
		return false;
	}
	return record_applied(conn, l, m, err);
}

bool ledger_try_lock(PGconn *conn, int64_t key, bool *got, struct errbuf *err)
{
	struct num k = num(key);
	const char *params[1] = {k.s};
	PGresult *res = PQexecParams(conn, "SELECT pg_try_advisory_lock($1::bigint)", 1, NULL, params, NULL, NULL, 0);
	char msg[512];
	bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;

	if (ok) {
		*got = PQgetvalue(res, 0, 0)[0] == 't';
	} else {
		pg_result_error(res, msg, sizeof(msg));
		err_set(err, "taking the migration lock: %s", msg);
	}
	PQclear(res);
	return ok;
}

void ledger_unlock(PGconn *conn, int64_t key)
{
	struct num k = num(key);
	const char *params[1] = {k.s};

	/* Closing the session releases it too; this is for tidiness, errors ignored. */
	PQclear(PQexecParams(conn, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, params, NULL, NULL, 0));
}

void ledger_lock_holder(PGconn *conn, int64_t key, char *out, size_t outlen)
{
	char classid[16], objid[16];
	const char *params[2] = {classid, objid};
	PGresult *res;

	snprintf(classid, sizeof(classid), "%u", (unsigned)((uint64_t)key >> 32));
	snprintf(objid, sizeof(objid), "%u", (unsigned)((uint64_t)key & 0xffffffffu));
	res = PQexecParams(conn,
			   "SELECT l.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local') "
			   "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
			   "WHERE l.locktype = 'advisory' AND l.classid = $1::oid AND l.objid = $2::oid "
			   "AND l.objsubid = 1 AND l.granted LIMIT 1",
			   2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		snprintf(out, outlen, "pid %s (\"%s\", %s)", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
			 PQgetvalue(res, 0, 2));
	else
		snprintf(out, outlen, "another session");
	PQclear(res);
}
