/*
 * pgpool.h - Postgres on the event loop: a few non-blocking libpq connections.
 *
 * Each connection runs one statement at a time (the store packs many rows into
 * one statement instead of pipelining); statements wait in one queue for a free
 * connection, the idle one already in the plan mode a statement needs, with it
 * prepared, first. What a statement needs first (the mode set, the statement
 * prepared) goes ahead of it in a libpq pipeline: one round trip either way. Connecting, sending, flushing and reading are all driven by the
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

#include "buf.h"
#include "common.h"

#include <event2/event.h>
struct pg_result; /* libpq's PGresult: read only by pgpool.c and the store */

struct pgpool_opts {
	const char *conninfo;
	int size;                 /* connections */
	int queue_max;            /* statements waiting for a connection, at most */
	long statement_timeout_ms;/* the server's statement_timeout */
	long query_timeout_ms;    /* ours: a statement unanswered this long (waiting included) fails, its
				     connection dropped; 0: statement_timeout + 2 s */
	long connect_timeout_ms;  /* 0: 5 s */
	long lock_timeout_ms;     /* the server's lock_timeout; 0: statement_timeout */
	long tcp_user_timeout_ms; /* unacknowledged data this long drops the connection; 0: 10 s */
	const char *application_name;
	const char *toast_compression; /* default_toast_compression of the sessions; NULL: the server's */
	bool one_session;         /* a session once up is never replaced: when it goes, its statements and
				     every later one fail (what it held, such as a lock, goes with it; a
				     backend left behind at a deadline is ended through a new connection,
				     on which nothing else runs) */
};

/* How a statement ended. `res` (tuples or command OK) is cleared after the callback. */
struct pg_outcome {
	struct pg_result *res;    /* NULL on failure */
	bool unavailable;         /* no connection, broken connection, full queue: retry later */
	char sqlstate[6];         /* the server's error code, "" when none */
	char error[512];
	int64_t sent_ms;          /* when the statement first went to the server (clock_mono_ms), 0 if
				   * never: its now() is no earlier, so a lease it took ends no sooner
				   * than this plus the lease */
};

typedef void (*pg_done_fn)(const struct pg_outcome *o, void *arg);

struct pgpool_stats {
	int size, up, busy, queued;
	uint64_t statements, failures, reconnects;
	uint64_t backends_ended;  /* backends of connections dropped at their deadline, ended since */
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

/* A parameter of pgpool_query_params: text, or binary (format 1) of a given length. */
struct pg_param {
	const char *data;     /* NULL: SQL NULL */
	size_t len;
	bool binary;
	char *handed;         /* instead of data: len malloc'd bytes (NUL-terminated if text), the pool's now,
				 not copied */
};

/* The same with binary parameters allowed (copied, unless handed over). */
void pgpool_query_params(struct pgpool *p, const char *sql, int nparams, const struct pg_param *params,
			 pg_done_fn done, void *arg);

/*
 * A statement run often: each connection prepares it once (on first use) and
 * then only executes it, so the server parses it once per connection instead
 * of once per run. It is planned at each run for the values it gets, unless
 * `generic`: then one plan serves every run, made again as the session's runs
 * of such statements double (16, 32, ... then every 1024th) and after an
 * ANALYZE, so a plan made while a table was small does not stay as it grows.
 * Generic suits a statement whose plan is the same whatever its parameters
 * (keys joined by their indexes), run often enough that planning would cost
 * more than running it. Define these as static constants.
 */
struct pg_stmt {
	const char *name;
	const char *sql;
	bool generic;
};

void pgpool_execute(struct pgpool *p, const struct pg_stmt *stmt, int nparams, const struct pg_param *params,
		    pg_done_fn done, void *arg);

/*
 * A one-dimensional array in Postgres' binary format (what array_send writes),
 * built element by element, for a binary parameter: the server copies the
 * elements instead of scanning a text literal for quotes and escapes, which
 * for 40 KB embeddings costs more than parsing them as jsonb.
 */
#define PG_OID_BOOL 16
#define PG_OID_INT8 20
#define PG_OID_INT4 23
#define PG_OID_TEXT 25

struct pg_array {
	struct buf *b;
	uint32_t n;
	bool has_null;
};

void pg_array_begin(struct pg_array *a, struct buf *b, uint32_t elem_oid);
void pg_array_text(struct pg_array *a, const char *s, size_t len); /* s NULL: a NULL element */
void pg_array_int4(struct pg_array *a, int32_t v);
void pg_array_int8(struct pg_array *a, int64_t v);
void pg_array_bool(struct pg_array *a, bool v);
void pg_array_end(struct pg_array *a);

/* The finished array as a binary parameter (it points into the buffer). */
struct pg_param pg_array_param(const struct buf *b);

/*
 * Reading a result (row, col): for the store's modules, which turn results
 * into typed rows; no other module reads a result.
 */
int pg_rows(const struct pg_outcome *o);                       /* 0 on failure */
const char *pg_text(const struct pg_outcome *o, int row, int col); /* NULL when SQL NULL */
int64_t pg_int8(const struct pg_outcome *o, int row, int col);  /* 0 when SQL NULL */
bool pg_bool(const struct pg_outcome *o, int row, int col);     /* false when SQL NULL */

/*
 * Calls `done` once a connection is up (ready true), or after timeout_ms with
 * why the connections failed: for jobs that start with a statement rather than
 * answer a client. One waiter at a time; never called inside this call.
 */
typedef void (*pg_ready_fn)(bool ready, const char *why, void *arg);
void pgpool_wait_ready(struct pgpool *p, long timeout_ms, pg_ready_fn done, void *arg);

/* A server error that says "not now" rather than "not this" (lock, timeout, read-only, disk, shutdown). */
bool pg_state_is_transient(const char *sqlstate);

/* True when at least one connection is up (a one_session pool's lost session: never again). */
bool pgpool_ready(const struct pgpool *p);

/* Why the last connection went away or could not open ("" if none has). */
const char *pgpool_last_error(const struct pgpool *p);

/* True while backends of connections dropped at their deadline are still to be ended. */
bool pgpool_ending_backends(const struct pgpool *p);

void pgpool_get_stats(const struct pgpool *p, struct pgpool_stats *out);

/* Runs the loop until *flag is true: for the command-line tools. */
void pgpool_run_until(struct pgpool *p, const bool *flag);

#endif
