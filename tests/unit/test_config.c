/* The config table: defaults, validation messages, flags, redaction, help. */
#include "config.h"

#include "pgconn.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A fake environment: NULL-terminated name/value pairs. */
static const char *lookup(const char *name, void *ctx)
{
	const char *const *kv = ctx;

	for (; kv[0]; kv += 2)
		if (strcmp(kv[0], name) == 0)
			return kv[1];
	return NULL;
}

static bool has(const char *hay, const char *needle)
{
	return strstr(hay, needle) != NULL;
}

Test(config, defaults_without_environment)
{
	const char *env[] = {NULL};
	struct config c;
	struct errbuf err;

	cr_assert(config_load(&c, lookup, (void *)env, &err), "%s", err.msg);
	cr_assert(eq(ptr, c.database_url, NULL), "unset DATABASE_URL means vector-DB-only mode");
	cr_assert(eq(str, c.migrations_dir, "drizzle-compat/drizzle"));
	cr_assert(eq(str, c.migrations_schema, "drizzle"));
	cr_assert(eq(str, c.migrations_table, "__drizzle_migrations"));
	cr_assert(eq(i64, c.migrate_lock_timeout, 120));
	cr_assert(eq(i64, c.db_wait, 0));
	cr_assert(not(c.migrate_allow_changed));
	config_free(&c);
}

Test(config, environment_overrides_defaults)
{
	const char *env[] = {"DATABASE_URL", "postgres://u:pw@h:5/db", "DB_WAIT", "30",
			     "MIGRATE_ALLOW_OUT_OF_ORDER", "yes", "LOG_FORMAT", "JSON", "LOG_LEVEL", "warn", NULL};
	struct config c;
	struct errbuf err;

	cr_assert(config_load(&c, lookup, (void *)env, &err), "%s", err.msg);
	cr_assert(eq(str, c.database_url, "postgres://u:pw@h:5/db"));
	cr_assert(eq(i64, c.db_wait, 30));
	cr_assert(c.migrate_allow_out_of_order);
	cr_assert(eq(int, c.log_format, 1));
	cr_assert(eq(int, c.log_level, 2));
	config_free(&c);
}

Test(config, every_bad_variable_is_named_with_what_it_accepts)
{
	const char *env[] = {"DB_WAIT", "soon", "MIGRATE_LOCK_TIMEOUT", "0", "LOG_FORMAT", "xml",
			     "MIGRATE_ALLOW_CHANGED", "maybe", "MIGRATIONS_SCHEMA", "", NULL};
	struct config c;
	struct errbuf err = {{0}, false};

	cr_assert(not(config_load(&c, lookup, (void *)env, &err)));
	cr_assert(has(err.msg, "DB_WAIT=\"soon\": not an integer (accepted: an integer from 0 to 86400)"), "%s", err.msg);
	cr_assert(has(err.msg, "MIGRATE_LOCK_TIMEOUT=\"0\": out of range (accepted: an integer from 1 to 86400)"),
		  "%s", err.msg);
	cr_assert(has(err.msg, "LOG_FORMAT=\"xml\": unknown value (accepted: text | json)"), "%s", err.msg);
	cr_assert(has(err.msg, "MIGRATE_ALLOW_CHANGED=\"maybe\": not a boolean"), "%s", err.msg);
	cr_assert(has(err.msg, "MIGRATIONS_SCHEMA=\"\""), "%s", err.msg);
	/* The config stays usable (defaults where a value was bad), so logging can start. */
	cr_assert(eq(i64, c.db_wait, 0));
	cr_assert(eq(int, c.log_format, 0));
	config_free(&c);
}

Test(config, bad_database_url_is_refused_without_echoing_it)
{
	const char *env[] = {"DATABASE_URL", "postgres://u:s3cret@h:notaport/db?bogus=1", NULL};
	struct config c;
	struct errbuf err = {{0}, false};

	cr_assert(not(config_load(&c, lookup, (void *)env, &err)));
	cr_assert(has(err.msg, "DATABASE_URL: "), "%s", err.msg);
	cr_assert(not(has(err.msg, "s3cret")), "the password leaked: %s", err.msg);
	config_free(&c);
}

Test(config, flags_go_through_the_same_validation)
{
	const char *env[] = {NULL};
	struct config c;
	struct errbuf err = {{0}, false};

	cr_assert(config_load(&c, lookup, (void *)env, &err));
	cr_assert(config_set(&c, "MIGRATIONS_DIR", "/x/drizzle", &err));
	cr_assert(eq(str, c.migrations_dir, "/x/drizzle"));
	cr_assert(not(config_set(&c, "DB_WAIT", "-1", &err)));
	cr_assert(has(err.msg, "DB_WAIT=\"-1\": out of range"), "%s", err.msg);
	cr_assert(not(config_set(&c, "NO_SUCH", "1", &err)));
	config_free(&c);
}

Test(config, effective_config_line_redacts_the_password)
{
	const char *env[] = {"DATABASE_URL", "postgresql://app:hunter2@db.internal:5432/reverse_engineer", NULL};
	struct config c;
	struct errbuf err;
	char *line;

	cr_assert(config_load(&c, lookup, (void *)env, &err), "%s", err.msg);
	line = config_describe(&c);
	cr_assert(has(line, "DATABASE_URL=postgresql://app:***@db.internal:5432/reverse_engineer"), "%s", line);
	cr_assert(not(has(line, "hunter2")));
	cr_assert(has(line, "MIGRATE_LOCK_TIMEOUT=120"));
	cr_assert(has(line, "DB_HOST=(unset)"));
	free(line);
	config_free(&c);
}

Test(config, start_up_line_names_only_what_differs_from_the_defaults)
{
	const char *none[] = {NULL};
	const char *env[] = {"DATABASE_URL", "postgresql://app:hunter2@db:5432/x", "DB_WAIT", "5", NULL};
	struct config c;
	struct errbuf err;
	size_t elided, all;
	char *line;

	cr_assert(config_load(&c, lookup, (void *)none, &err), "%s", err.msg);
	line = config_describe_changes(&c, &all);
	cr_assert(eq(str, line, ""), "every value a default: nothing to name (was: %s)", line);
	cr_assert(gt(sz, all, 40));
	free(line);
	config_free(&c);

	cr_assert(config_load(&c, lookup, (void *)env, &err), "%s", err.msg);
	line = config_describe_changes(&c, &elided);
	cr_assert(eq(str, line, "DATABASE_URL=postgresql://app:***@db:5432/x DB_WAIT=5"), "%s", line);
	cr_assert(eq(sz, elided, all - 2));
	free(line);
	config_free(&c);
}

Test(config, help_and_markdown_come_from_the_table)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	config_print_help(f, SCOPE_MIGRATE);
	config_print_markdown(f);
	fclose(f);
	cr_assert(has(out, "MIGRATE_LOCK_TIMEOUT"));
	cr_assert(has(out, "[default: 120; accepts: an integer from 1 to 86400]"), "%s", out);
	cr_assert(has(out, "| `MIGRATIONS_TABLE` | `__drizzle_migrations` |"), "%s", out);
	cr_assert(has(out, "| `DATABASE_URL` | unset |"), "%s", out);
	free(out);
}

Test(config, booleans)
{
	bool b;

	cr_assert(config_parse_bool("TRUE", &b) && b);
	cr_assert(config_parse_bool("off", &b) && !b);
	cr_assert(config_parse_bool("1", &b) && b);
	cr_assert(not(config_parse_bool("", &b)));
	cr_assert(not(config_parse_bool("2", &b)));
}

static void expect_redacted(const char *in, const char *out)
{
	char *r = pg_redact_conninfo(in);

	cr_assert(eq(str, r, (char *)out));
	free(r);
}

Test(redact, passwords_everywhere_they_can_hide)
{
	expect_redacted("postgres://u:pw@h/db", "postgres://u:***@h/db");
	expect_redacted("postgresql://u@h:5432/db", "postgresql://u@h:5432/db");
	expect_redacted("postgres://h/db", "postgres://h/db");
	expect_redacted("postgres://u:p@ss:w0rd@h/db", "postgres://u:***@h/db");
	/* fuzz_config found this one: libpq reads the password a?b (a '?' does not end the userinfo) */
	expect_redacted("postgres://u:a?bcdefgh@h/db", "postgres://u:***");
	expect_redacted("postgres://u:pw@h?sslpassword=x@y", "postgres://u:***");
	expect_redacted("postgres://u@h/db?sslmode=require&password=pw&x=1",
			"postgres://u@h/db?sslmode=require&password=***&x=1");
	expect_redacted("postgres://u@h/db?password=pw", "postgres://u@h/db?password=***");
	expect_redacted("host=h password=pw dbname=d", "host=h password=*** dbname=d");
	expect_redacted("host=h password = 'p w\\'x' user=u", "host=h password = *** user=u");
	expect_redacted("password=pw", "password=***");
	expect_redacted("host=h user=u", "host=h user=u");
}

Test(redact, the_key_password_and_every_other_secret_parameter)
{
	expect_redacted("postgres://u@h/db?sslmode=verify-full&sslpassword=kp&x=1",
			"postgres://u@h/db?sslmode=verify-full&sslpassword=***&x=1");
	expect_redacted("host=h sslpassword=kp sslkey=/k", "host=h sslpassword=*** sslkey=/k");
	/* libpq decodes a parameter's name too: pass%77ord is password */
	expect_redacted("postgres://u@h/db?pass%77ord=pw", "postgres://u@h/db?pass%77ord=***");
	expect_redacted("postgres://u:p%40w@h/db?application_name=x", "postgres://u:***@h/db?application_name=x");
}

Test(redact, target_never_shows_user_or_password)
{
	char *t = pg_target("postgres://u:pw@db.example:6543/app", NULL);

	cr_assert(eq(str, t, "db.example:6543/app"));
	free(t);
	t = pg_target("postgres://u:pw@db.example:6543/app", "postgres");
	cr_assert(eq(str, t, "postgres:6543/app"), "DB_HOST replaces the host waited for");
	free(t);
}
