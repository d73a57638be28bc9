/*
 * config.h - every setting abilitysync reads, in one table.
 *
 * The table (config.c) gives each setting its environment variable, type,
 * default, accepted range, whether it is secret, which subcommands read it and a
 * line of help. The same rows drive parsing, validation (errors name the
 * variable and what it accepts), --help, the README's configuration section
 * (`abilitysync config --markdown`) and the effective-config line logged at
 * start-up, where secrets are redacted, passwords inside DATABASE_URL included.
 *
 * Command-line flags are another way to set the same rows (config_set), so a
 * flag and its variable are validated by the same code.
 */
#ifndef ABILITYSYNC_CONFIG_H
#define ABILITYSYNC_CONFIG_H

#include "common.h"

#include <stdio.h>

/* Subcommands, as a bit set: which ones read a setting. */
enum {
	SCOPE_SERVE = 1 << 0,
	SCOPE_MIGRATE = 1 << 1,
	SCOPE_RECONCILE = 1 << 2,
	SCOPE_RESTORE = 1 << 3,
	SCOPE_PROBE = 1 << 4,
	SCOPE_ALL = 0xff,
};

struct config {
	char *database_url;
	char *db_host;
	long long db_wait;
	char *migrations_dir;
	char *migrations_schema;
	char *migrations_table;
	long long migrate_lock_timeout;
	bool migrate_allow_out_of_order;
	bool migrate_allow_changed;
	char *vector_db_api;
	char *vector_db_tenant;
	char *vector_db_api_key;
	int vector_db_auth_header; /* enum vdb_auth */
	char *vector_db_ca_file;
	bool vector_db_tls_verify;
	long long embedding_dim;
	long long vdb_timeout_ms;
	long long vdb_max_inflight;
	long long vdb_batch_bytes;
	long long vdb_batch_max;
	long long vdb_max_attempts;
	long long vdb_backoff_ms;
	long long vdb_backoff_max_ms;
	int vdb_write_mode;        /* enum vdb_write_mode */
	long long vdb_quarantine_ms;
	char *listen;
	char *api_keys;
	char *api_keys_file;
	bool metrics_auth;
	long long rate_limit_rps;
	long long rate_limit_burst;
	long long audit_retention_days;
	bool allow_unauthenticated;
	char *tls_cert_file;
	char *tls_key_file;
	long long max_body_bytes;
	long long http_headers_max;
	long long http_read_timeout_ms;
	long long http_max_connections;
	long long http_max_in_flight;
	long long batch_max;
	long long sync_wait_ms;
	long long sync_wait_max_ms;
	long long shutdown_timeout;
	long long pg_pool_size;
	long long pg_statement_timeout_ms;
	int pg_toast_compression;  /* 0 lz4, 1 pglz, 2 the server's */
	long long pg_job_statement_timeout_ms;
	long long pg_lock_timeout_ms;
	long long pg_connect_timeout_ms;
	long long pg_tcp_user_timeout_ms;
	long long write_group_max;
	long long write_group_max_bytes;
	long long write_concurrency;
	long long sync_interval_ms;
	long long sync_claim_max;
	long long sync_max_attempts;
	long long sync_backoff_ms;
	long long sync_backoff_max_ms;
	long long sync_lease;
	long long reconcile_interval;
	long long jobs_max;
	long long reconcile_max_repairs;
	long long reconcile_page;
	long long reconcile_overdue;
	long long reconcile_push_timeout;
	long long restore_page;
	long long progress_interval;
	int log_format; /* enum log_format */
	int log_level;  /* enum log_level */
};

/* Looks a variable up (getenv in production, a table in tests); NULL when unset. */
typedef const char *(*config_lookup_fn)(const char *name, void *ctx);

/*
 * Fills *c from the defaults and the variables `lookup` finds. On failure,
 * err lists every bad variable with what it accepts; *c is still complete
 * (defaults where a value was bad) and must be freed.
 */
bool config_load(struct config *c, config_lookup_fn lookup, void *ctx, struct errbuf *err) MUSTCHECK;

/* Sets one variable by name, validated exactly like the environment. */
bool config_set(struct config *c, const char *name, const char *value, struct errbuf *err) MUSTCHECK;

void config_free(struct config *c);

/* The effective configuration as one line of NAME=value pairs, secrets redacted. */
char *config_describe(const struct config *c);

/* The same, only the values that differ from the defaults; *elided counts the others. */
char *config_describe_changes(const struct config *c, size_t *elided);

/* The help text for the variables in `scope`, and the README table. */
void config_print_help(FILE *f, unsigned scope);
void config_print_markdown(FILE *f);

/* Parses "true/false/1/0/yes/no/on/off". */
bool config_parse_bool(const char *s, bool *out) MUSTCHECK;

#endif
