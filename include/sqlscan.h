/*
 * sqlscan.h - just enough of PostgreSQL's lexical rules to find statements.
 *
 * drizzle applies every pending migration inside one transaction, and so does
 * abilitysync. A statement that cannot run in a transaction block (CREATE INDEX
 * CONCURRENTLY, VACUUM, CREATE DATABASE, ...) or that would end that
 * transaction early (COMMIT, ROLLBACK, ...) must be reported before anything is
 * applied, not discovered half-way. The scanner skips comments (nested block comments too),
 * quoted strings (E'', U&'', dollar quotes) and quoted identifiers, and splits
 * on top-level semicolons.
 */
#ifndef ABILITYSYNC_SQLSCAN_H
#define ABILITYSYNC_SQLSCAN_H

#include "common.h"

struct sql_problem {
	size_t statement; /* 1-based index of the statement within the text */
	size_t offset;    /* byte offset of that statement */
	const char *what; /* e.g. "CREATE INDEX CONCURRENTLY" */
	const char *why;  /* e.g. "cannot run inside a transaction block" */
};

/* Finds the first statement that cannot run inside the migration's transaction. */
bool sql_find_nontransactional(const char *sql, size_t len, struct sql_problem *out) MUSTCHECK;

/* Counts the non-empty statements (for messages: "statement 2 of 3"). */
size_t sql_count_statements(const char *sql, size_t len);

#endif
