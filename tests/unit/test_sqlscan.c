/* Finding the statements that cannot run inside the migration transaction. */
#include "sqlscan.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

static bool find(const char *sql, struct sql_problem *p)
{
	return sql_find_nontransactional(sql, strlen(sql), p);
}

static void expect_problem(const char *sql, const char *what, size_t statement)
{
	struct sql_problem p;

	cr_assert(find(sql, &p), "not flagged: %s", sql);
	cr_assert(eq(str, (char *)p.what, (char *)what), "for: %s", sql);
	cr_assert(eq(sz, p.statement, statement), "for: %s", sql);
}

static void expect_fine(const char *sql)
{
	struct sql_problem p;

	cr_assert(not(find(sql, &p)), "wrongly flagged (%s): %s", find(sql, &p) ? p.what : "", sql);
}

Test(sqlscan, flags_what_postgres_refuses_in_a_transaction)
{
	expect_problem("CREATE INDEX CONCURRENTLY i ON t (a);", "CREATE INDEX CONCURRENTLY", 1);
	expect_problem("create unique index concurrently if not exists i on t(a)", "CREATE INDEX CONCURRENTLY", 1);
	expect_problem("DROP INDEX CONCURRENTLY i;", "DROP INDEX CONCURRENTLY", 1);
	expect_problem("REINDEX (VERBOSE) TABLE CONCURRENTLY t;", "REINDEX CONCURRENTLY", 1);
	expect_problem("ALTER TABLE p DETACH PARTITION c CONCURRENTLY;",
		       "ALTER TABLE ... DETACH PARTITION CONCURRENTLY", 1);
	expect_problem("vacuum analyze t;", "VACUUM", 1);
	expect_problem("CREATE DATABASE x;", "CREATE DATABASE", 1);
	expect_problem("ALTER SYSTEM SET work_mem = '1MB';", "ALTER SYSTEM", 1);
}

Test(sqlscan, flags_transaction_control)
{
	expect_problem("insert into t values (1); COMMIT;", "COMMIT", 2);
	expect_problem("BEGIN; select 1;", "BEGIN", 1);
	expect_problem("select 1; end;", "END", 2);
	expect_problem("ROLLBACK;", "ROLLBACK", 1);
	expect_problem("START TRANSACTION;", "START TRANSACTION", 1);
	expect_fine("SAVEPOINT a; ROLLBACK TO SAVEPOINT a; RELEASE a;");
}

Test(sqlscan, counts_statements_after_comments)
{
	expect_problem("-- a comment; with a semicolon\n/* another; one */ select 1;\nselect 2;\nVACUUM;", "VACUUM", 3);
}

Test(sqlscan, ignores_keywords_inside_strings_comments_and_identifiers)
{
	expect_fine("-- CREATE INDEX CONCURRENTLY i ON t(a);\nselect 1;");
	expect_fine("/* outer /* nested VACUUM */ still a comment; COMMIT */ select 1;");
	expect_fine("select 'COMMIT; VACUUM';");
	expect_fine("select E'it\\'s; COMMIT';");
	expect_fine("select \"commit\" from \"vacuum\";");
	expect_fine("comment on table t is 'run VACUUM nightly';");
	expect_fine("CREATE FUNCTION f() RETURNS void AS $$ BEGIN COMMIT; END $$ LANGUAGE plpgsql;");
	expect_fine("CREATE FUNCTION f() RETURNS void AS $body$ VACUUM; $x$ $body$ LANGUAGE sql;");
	expect_fine("DO $$BEGIN PERFORM 1; END$$;");
	expect_fine("select $1::int; select a$b from t;");
	expect_fine("REFRESH MATERIALIZED VIEW CONCURRENTLY mv;");
	expect_fine("CREATE INDEX IF NOT EXISTS \"idx\" ON \"abilities\" USING btree (\"service_name\");");
}

Test(sqlscan, sql_standard_function_bodies_hold_semicolons)
{
	/* BEGIN ATOMIC ... END: the inner END; is the body's, not a COMMIT. */
	expect_fine("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true "
		    "THEN 2 END; END; select 3;");
	expect_problem("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; VACUUM;", "VACUUM", 2);
}

Test(sqlscan, unterminated_quotes_do_not_overrun)
{
	expect_fine("select 'never closed");
	expect_fine("select $tag$ never closed");
	expect_fine("/* never closed");
	expect_fine("select \"x");
	expect_fine("select E'\\");
}

Test(sqlscan, counts_statements)
{
	cr_assert(eq(sz, sql_count_statements("", 0), 0));
	cr_assert(eq(sz, sql_count_statements(" ;; -- x\n", 9), 0));
	cr_assert(eq(sz, sql_count_statements("a; b; c", 7), 3));
}
