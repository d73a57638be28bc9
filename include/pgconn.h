/*
 * pgconn.h - reaching Postgres from the command-line subcommands.
 *
 * Blocking libpq, for `migrate`, `reconcile`, `restore` and friends, which do
 * one thing and exit. The service's event loop never calls these, but for
 * pg_encoding_ok and the error formatting, which do not block.
 */
#ifndef ABILITYSYNC_PGCONN_H
#define ABILITYSYNC_PGCONN_H

#include "common.h"

#include <libpq-fe.h>

/* True when libpq can parse `conninfo` (a URL or key=value pairs). */
bool pg_conninfo_valid(const char *conninfo, struct errbuf *err) MUSTCHECK;

/*
 * A copy of `conninfo` with the password replaced by "***", wherever it sits:
 * user:password@ in a URL, ?password= in its query, password=... in key=value
 * form. Safe to log. The caller frees it.
 */
char *pg_redact_conninfo(const char *conninfo);

/* "host:port/dbname" for messages (never the user or password). The caller frees it. */
char *pg_target(const char *conninfo, const char *host_override);

struct pg_wait_opts {
	const char *conninfo;
	const char *host_override; /* DB_HOST: wait for this host instead; NULL = the URL's */
	int wait_s;                /* give up after this many seconds; 0 = one attempt */
	const char *component;     /* log prefix */
	const char *application_name;
};

/*
 * Connects, retrying with exponential backoff and jitter while the server is
 * not up (refused, unreachable, starting up), one log line per failed attempt.
 * A server that is up but refuses us (bad password, no such database) is not
 * retried. Returns NULL with err naming the target and the reason.
 */
PGconn *pg_connect_wait(const struct pg_wait_opts *o, struct errbuf *err) MUSTCHECK;

/*
 * The text abilitysync writes is UTF-8, and every connection says so
 * (client_encoding). A database in another encoding would store it converted
 * or, where that encoding lacks a character, refuse the whole statement (every
 * request in a write group); SQL_ASCII would store it unchecked. So only a
 * UTF8 database is used: false, with why naming the encoding, for any other.
 * Never blocks (the server reported its encoding when the connection opened).
 */
bool pg_encoding_ok(PGconn *conn, char *why, size_t len) MUSTCHECK;

/* The connection keyword and value that make every connection speak UTF-8. */
#define PG_CLIENT_ENCODING_KEY "client_encoding"
#define PG_CLIENT_ENCODING "UTF8"

/* One line of a libpq or server error: no trailing newline, whitespace runs collapsed. */
void pg_one_line(const char *msg, char *out, size_t outlen);

/* "ERROR: message (SQLSTATE 42601)" plus the detail and hint when present. */
void pg_result_error(const PGresult *res, char *out, size_t outlen);

/* Runs a command that returns no rows; on failure fills err with `what` and the server's error. */
bool pg_exec_ok(PGconn *conn, const char *sql, const char *what, struct errbuf *err) MUSTCHECK;

#endif
