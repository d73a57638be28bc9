/*
 * pgpool.h - Postgres on the event loop: a few non-blocking libpq connections.
 *
 * Each connection runs one statement at a time (the store packs many rows into
 * one statement instead of pipelining); statements wait in one queue for a free
 * connection. Connecting, sending, flushing and reading are all driven by the
 * caller's libevent loop (PQconnectStart/PQconnectPoll, PQsendQueryParams,
 * PQflush, PQconsumeInput/PQisBusy/PQgetResult): nothing blocks.
 *
 * A connection that breaks fails its statement as "unavailable" and comes back
 * by itself with backoff. While no connection is up, new statements fail at
 * once, so the API answers 503 quickly instead of queueing into a void; so
 * does a full queue.
 */
#ifndef ABILITYSYNC_PGPOOL_H
#define ABILITYSYNC_PGPOOL_H

#include "common.h"

#include <event2/event.h>
#include <libpq-fe.h>

struct pgpool_opts {
	const char *conninfo;
	int size;                 /* connections */
	int queue_max;            /* statements waiting for a connection, at most */
	long statement_timeout_ms;
	const char *application_name;
};

/* How a statement ended. `res` (tuples or command OK) is cleared after the callback. */
struct pg_outcome {
	PGresult *res;            /* NULL on failure */
	bool unavailable;         /* no connection, broken connection, full queue: retry later */
	char sqlstate[6];         /* the server's error code, "" when none */
	char error[512];
};

typedef void (*pg_done_fn)(const struct pg_outcome *o, void *arg);

struct pgpool_stats {
	int size, up, busy, queued;
	uint64_t statements, failures, reconnects;
};

struct pgpool;

struct pgpool *pgpool_new(struct event_base *base, const struct pgpool_opts *o, struct errbuf *err) MUSTCHECK;

/* Cancels what waits (callbacks run with unavailable) and closes every connection. */
void pgpool_free(struct pgpool *p);

/*
 * Runs one statement with text parameters (NULL for SQL NULL). The strings are
 * copied. `done` runs exactly once, never inside this call.
 */
void pgpool_query(struct pgpool *p, const char *sql, int nparams, const char *const *params, pg_done_fn done,
		  void *arg);

/* True when at least one connection is up. */
bool pgpool_ready(const struct pgpool *p);

void pgpool_get_stats(const struct pgpool *p, struct pgpool_stats *out);

/* Runs the loop until *flag is true: for the command-line tools. */
void pgpool_run_until(struct pgpool *p, const bool *flag);

#endif
