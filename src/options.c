#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void options_vdb(const struct config *c, struct vdb_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->base_url = c->vector_db_api;
	o->tenant = c->vector_db_tenant;
	o->api_key = c->vector_db_api_key;
	o->auth = c->vector_db_auth_header == 1 ? VDB_AUTH_X_API_KEY : VDB_AUTH_BEARER;
	o->ca_file = c->vector_db_ca_file;
	o->tls_verify = c->vector_db_tls_verify;
	o->timeout_ms = (long)c->vdb_timeout_ms;
	o->max_inflight = (int)c->vdb_max_inflight;
	o->batch_bytes = (size_t)c->vdb_batch_bytes;
	o->batch_max = (size_t)c->vdb_batch_max;
	o->max_attempts = (int)c->vdb_max_attempts;
	o->backoff_ms = (long)c->vdb_backoff_ms;
	o->backoff_max_ms = (long)c->vdb_backoff_max_ms;
	o->write_mode = c->vdb_write_mode == 1 ? VDB_ADD : VDB_DELETE_THEN_ADD;
	o->dimension = (int)c->embedding_dim;
	o->max_reply = 256u << 20;
}

void options_pgpool(const struct config *c, const char *application_name, struct pgpool_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->conninfo = c->database_url;
	o->size = (int)c->pg_pool_size;
	o->queue_max = 10000;
	o->statement_timeout_ms = (long)c->pg_statement_timeout_ms;
	o->lock_timeout_ms = (long)c->pg_lock_timeout_ms;
	o->connect_timeout_ms = (long)c->pg_connect_timeout_ms;
	o->tcp_user_timeout_ms = (long)c->pg_tcp_user_timeout_ms;
	o->application_name = application_name;
	o->toast_compression = c->pg_toast_compression == 0 ? "lz4" : c->pg_toast_compression == 1 ? "pglz" : NULL;
}

/* A job's session: its statements read whole pages and answer no client. */
static void options_job_pgpool(const struct config *c, const char *application_name, struct pgpool_opts *o)
{
	options_pgpool(c, application_name, o);
	o->statement_timeout_ms = (long)c->pg_job_statement_timeout_ms;
}

static long quarantine_ms(const struct config *c)
{
	return c->vdb_quarantine_ms > 0 ? (long)c->vdb_quarantine_ms : outbox_default_quarantine_ms((long)c->vdb_timeout_ms);
}

void options_store(const struct config *c, const char *owner, struct store_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->group_max = (int)c->write_group_max;
	o->group_max_bytes = (size_t)c->write_group_max_bytes;
	/* Leave one connection for reads when there are several. */
	o->write_concurrency = (int)c->write_concurrency;
	if (c->pg_pool_size > 1 && o->write_concurrency > c->pg_pool_size - 1)
		o->write_concurrency = (int)c->pg_pool_size - 1;
	o->max_attempts = (int)c->sync_max_attempts;
	o->lease_ms = (long)c->sync_lease * 1000;
	o->quarantine_ms = quarantine_ms(c);
	o->owner = owner;
}

void options_outbox(const struct config *c, struct outbox_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->interval_ms = (long)c->sync_interval_ms;
	o->claim_max = (int)c->sync_claim_max;
	o->lease_ms = (long)c->sync_lease * 1000;
	o->quarantine_ms = quarantine_ms(c);
	o->backoff_ms = (long)c->sync_backoff_ms;
	o->backoff_max_ms = (long)c->sync_backoff_max_ms;
	o->dim = (size_t)c->embedding_dim;
	o->verify_by_reading = c->vdb_write_mode == 1;
}

void options_owner(char *out, size_t len)
{
	char host[128] = "";

	gethostname(host, sizeof(host) - 1);
	snprintf(out, len, "%s:%ld:%08x", host, (long)getpid(), arc4random());
}

void options_api(const struct config *c, struct api_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->listen = c->listen;
	o->api_keys = c->api_keys;
	o->api_keys_file = c->api_keys_file;
	o->metrics_auth = c->metrics_auth;
	o->audit_days = (int)c->audit_retention_days;
	o->rate_rps = (double)c->rate_limit_rps;
	o->rate_burst = c->rate_limit_burst ? (int)c->rate_limit_burst : (int)c->rate_limit_rps;
	o->allow_open = c->allow_unauthenticated;
	o->max_body = (size_t)c->max_body_bytes;
	o->batch_max = (size_t)c->batch_max;
	o->dim = (size_t)c->embedding_dim;
	o->sync_wait_ms = (long)c->sync_wait_ms;
	o->sync_wait_max_ms = (long)c->sync_wait_max_ms;
	o->jobs_max = (int)c->jobs_max;
	o->headers_max = (size_t)c->http_headers_max;
	o->read_timeout_ms = (long)c->http_read_timeout_ms;
	o->max_connections = (int)c->http_max_connections;
	o->max_in_flight = (int)c->http_max_in_flight;
	o->tls_cert = c->tls_cert_file;
	o->tls_key = c->tls_key_file;
}

void options_reconcile(const struct config *c, const char *application_name, struct reconcile_opts *o)
{
	memset(o, 0, sizeof(*o));
	options_job_pgpool(c, application_name, &o->pg);
	o->page = (int)c->reconcile_page;
	o->max_repairs = (long)c->reconcile_max_repairs;
	o->overdue_s = (long)c->reconcile_overdue;
	o->dim = (size_t)c->embedding_dim;
	o->progress_s = (long)c->progress_interval;
}

void options_restore(const struct config *c, const char *application_name, struct restore_opts *o)
{
	memset(o, 0, sizeof(*o));
	options_job_pgpool(c, application_name, &o->pg);
	o->page = (int)c->restore_page;
	o->dim = (size_t)c->embedding_dim;
	o->progress_s = (long)c->progress_interval;
}
