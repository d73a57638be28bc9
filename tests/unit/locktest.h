/*
 * locktest.h - lock-order tests: another session holds a row in a
 * transaction (as one of the service's statements would, half done), one of
 * the store's statements is sent and waits for it, and a statement of that
 * session shows whether the store's statement already holds what it wants
 * (a wait there is a deadlock, made visible by a 5 s deadlock_timeout).
 */
#ifndef ABILITYSYNC_LOCKTEST_H
#define ABILITYSYNC_LOCKTEST_H

#include "clock.h"
#include "pgtest.h"

#define LOCKTEST_WAITING \
	"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"

/* A fresh database whose sessions wait 5 s before looking for a deadlock (a deadlock shows as a wait). */
static inline void locktest_open(struct pgtest *t, const char *name)
{
	struct pgpool_opts po = {.size = 2, .queue_max = 64, .statement_timeout_ms = 20000};
	char sql[256];

	pgtest_open(t, name, true, 2);
	snprintf(sql, sizeof(sql), "ALTER DATABASE %s SET deadlock_timeout = '5s'", t->dbname);
	pgtest_exec(t->url, sql);
	pgtest_repool(t, &po);
}

/* Another session, in a transaction that ran `sql` (a SELECT ... FOR UPDATE of one row or more). */
static inline PGconn *locktest_hold(const struct pgtest *t, const char *sql)
{
	PGconn *c = PQconnectdb(t->url);
	PGresult *r;

	cr_assert(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
	r = PQexec(c, "BEGIN");
	PQclear(r);
	r = PQexec(c, sql);
	cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0, "%s: %s", sql, PQerrorMessage(c));
	PQclear(r);
	return c;
}

/* Commits the session's transaction and closes it. */
static inline void locktest_commit(PGconn *c)
{
	PGresult *r = PQexec(c, "COMMIT");

	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

/* Once one of the store's statements waits for a lock: runs `sql` on `c`, asserts it did not wait, commits. */
static inline void locktest_runs_without_waiting(struct pgtest *t, PGconn *c, const char *sql)
{
	PGresult *r;
	int64_t t0, took = -1;

	pgtest_wait_value(t, LOCKTEST_WAITING, "1");
	t0 = clock_mono_ms();
	cr_assert(PQsendQuery(c, sql));
	while (clock_mono_ms() - t0 < 4000) {
		cr_assert(PQconsumeInput(c), "%s", PQerrorMessage(c));
		if (!PQisBusy(c)) {
			took = clock_mono_ms() - t0;
			break;
		}
		usleep(10000);
	}
	cr_assert(took >= 0 && took < 2500, "%s waited for the store's statement (%lld ms): they deadlocked", sql,
		  (long long)took);
	while ((r = PQgetResult(c)) != NULL) {
		cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
		PQclear(r);
	}
	locktest_commit(c);
}

#endif
