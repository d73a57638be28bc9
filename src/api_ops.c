/* What probes and scrapers read: /healthz, /readyz, /metrics, and the API's own description. */
#include "api_call.h"

#include "openapi.h"

void h_openapi(struct call *c)
{
	reply_typed(c, 200, "application/json", openapi_json, openapi_json_len);
}

void h_healthz(struct call *c)
{
	reply_json(c, 200, json_pack("{s:s}", "status", "ok"));
}

/* A check's state: the detailed text, or only its first words (before ':') for a caller without a key. */
static json_t *check_state(bool detail, json_t *text)
{
	const char *s = json_string_value(text);
	json_t *short_form;

	if (detail || !strchr(s, ':'))
		return text;
	short_form = json_stringn(s, (size_t)(strchr(s, ':') - s));
	json_decref(text);
	return short_form;
}

/*
 * Readiness: what is up. Error texts (libpq's and libcurl's name hosts, users
 * and databases) only for a caller with a valid key, or when no key is needed.
 */
void h_readyz(struct call *c)
{
	struct service *svc = c->api->svc;
	json_t *j = json_object();
	bool detail = c->api->ring.n == 0 || (c->scopes & KEY_READ);

	json_object_set_new(j, "ready", json_boolean(service_ready(svc)));
	if (!svc->pool)
		json_object_set_new(j, "postgres", json_string("off (vector-DB-only mode)"));
	else if (!pgpool_ready(svc->pool))
		json_object_set_new(j, "postgres", check_state(detail, *pgpool_last_error(svc->pool)
				    ? json_sprintf("unreachable: %s", pgpool_last_error(svc->pool))
				    : json_string("unreachable")));
	else if (service_pg_stalled(svc))
		json_object_set_new(j, "postgres", json_sprintf("no answer for %lld ms",
							       (long long)(clock_mono_ms() - svc->pg_asked_ms)));
	else if (!svc->pg_migrated)
		json_object_set_new(j, "postgres", check_state(detail, json_sprintf("not migrated: %s", svc->pg_why)));
	else
		json_object_set_new(j, "postgres", json_string("up"));
	if (service_vdb_stalled(svc))
		json_object_set_new(j, "vector_db", json_sprintf("no answer for %lld ms",
								 (long long)(clock_mono_ms() - svc->vdb_asked_ms)));
	else if (svc->vdb_up)
		json_object_set_new(j, "vector_db", json_string("up"));
	else
		json_object_set_new(j, "vector_db", check_state(detail, json_sprintf("down: %s", svc->vdb_why)));
	if (svc->stopping)
		json_object_set_new(j, "stopping", json_true());
	reply_json(c, json_is_true(json_object_get(j, "ready")) ? 200 : 503, j);
}

/* Freshness per blob (one per service): what waits for the vector DB, and for how long. */
static void render_backlog(const struct service *svc, struct buf *out)
{
	json_t *by_blob = json_object_get(svc->outbox_counts, "by_blob"), *b;
	json_t *last = json_object_get(svc->outbox_counts, "last_success");
	json_t *restore = json_object_get(svc->outbox_counts, "restore");
	const char *blob;
	char label[300];

	metrics_header(out, "abilitysync_backlog_pending", "gauge",
		       "Changes waiting for the vector DB (pending, pending_delete), by blob (one per service).");
	json_object_foreach(by_blob, blob, b) {
		snprintf(label, sizeof(label), "blob=\"%s\"", blob);
		metrics_value(out, "abilitysync_backlog_pending", label, json_number_value(json_object_get(b, "pending")));
	}
	metrics_header(out, "abilitysync_backlog_oldest_pending_seconds", "gauge",
		       "Age of the oldest change waiting for the vector DB, by blob.");
	json_object_foreach(by_blob, blob, b) {
		snprintf(label, sizeof(label), "blob=\"%s\"", blob);
		metrics_value(out, "abilitysync_backlog_oldest_pending_seconds", label,
			      json_number_value(json_object_get(b, "oldest_pending_seconds")));
	}
	metrics_header(out, "abilitysync_last_success_timestamp_seconds", "gauge",
		       "When the last real reconcile run finished ok, and the last restore job done (any replica); "
		       "absent: never.");
	if (json_is_number(json_object_get(last, "reconcile")))
		metrics_value(out, "abilitysync_last_success_timestamp_seconds", "job=\"reconcile\"",
			      json_number_value(json_object_get(last, "reconcile")));
	if (json_is_number(json_object_get(last, "restore")))
		metrics_value(out, "abilitysync_last_success_timestamp_seconds", "job=\"restore\"",
			      json_number_value(json_object_get(last, "restore")));
	metrics_header(out, "abilitysync_restore_rows", "gauge",
		       "The running restore job (any replica): its rows in total, done and failed; absent: none runs.");
	if (json_is_object(restore)) {
		metrics_value(out, "abilitysync_restore_rows", "count=\"total\"",
			      json_number_value(json_object_get(restore, "total")));
		metrics_value(out, "abilitysync_restore_rows", "count=\"done\"",
			      json_number_value(json_object_get(restore, "done")));
		metrics_value(out, "abilitysync_restore_rows", "count=\"failed\"",
			      json_number_value(json_object_get(restore, "failed")));
	}
}

static void render_outbox(const struct service *svc, struct buf *out)
{
	static const char *const states[] = {"pending", "synced", "pending_delete", "deleted", "failed"};
	json_t *counts = json_object_get(svc->outbox_counts, "counts");
	size_t i;

	if (!svc->outbox_counts)
		return;
	metrics_header(out, "abilitysync_outbox_rows", "gauge", "Sync-state rows by state (counted periodically).");
	for (i = 0; i < ARRAY_LEN(states); i++) {
		char labels[48];

		snprintf(labels, sizeof(labels), "state=\"%s\"", states[i]);
		metrics_value(out, "abilitysync_outbox_rows", labels,
			      (double)json_integer_value(json_object_get(counts, states[i])));
	}
	metrics_header(out, "abilitysync_outbox_oldest_pending_seconds", "gauge", "Age of the oldest pending change.");
	metrics_value(out, "abilitysync_outbox_oldest_pending_seconds", NULL,
		      json_number_value(json_object_get(svc->outbox_counts, "oldest_pending_seconds")));
	metrics_header(out, "abilitysync_outbox_paused", "gauge",
		       "1 while the outbox is paused (POST /v1/sync/pause): nothing is pushed.");
	metrics_value(out, "abilitysync_outbox_paused", NULL, outbox_paused(svc->outbox));
	metrics_header(out, "abilitysync_outbox_in_doubt", "gauge",
		       "Abilities whose vector is in doubt (an ambiguous call may still land), awaiting verification.");
	metrics_value(out, "abilitysync_outbox_in_doubt", NULL,
		      json_number_value(json_object_get(svc->outbox_counts, "in_doubt")));
	render_backlog(svc, out);
}

static void render_vdb(const struct service *svc, struct buf *out)
{
	static const char *const classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
	struct vdb_stats vs;
	size_t i;

	vdb_get_stats(svc->vdb, &vs);
	metrics_header(out, "abilitysync_vdb_replies_total", "counter", "Vector DB replies by class (none: no reply).");
	for (i = 0; i < ARRAY_LEN(classes); i++) {
		char labels[32];

		snprintf(labels, sizeof(labels), "class=\"%s\"", classes[i]);
		metrics_value(out, "abilitysync_vdb_replies_total", labels, (double)vs.by_class[i]);
	}
	metrics_header(out, "abilitysync_vdb_ambiguous_total", "counter",
		       "Vector DB write attempts that may have been applied unbeknown, by call and reason.");
	for (i = 0; i < VDB_AMB_CALLS; i++) {
		size_t k;

		for (k = 0; k < VDB_AMB_REASONS; k++) {
			char labels[64];

			snprintf(labels, sizeof(labels), "call=\"%s\",reason=\"%s\"", vdb_ambiguous_call_names[i],
				 vdb_ambiguous_reason_names[k]);
			metrics_value(out, "abilitysync_vdb_ambiguous_total", labels, (double)vs.ambiguous[i][k]);
		}
	}
	metrics_header(out, "abilitysync_vdb_retries_total", "counter", "Vector DB requests retried.");
	metrics_value(out, "abilitysync_vdb_retries_total", NULL, (double)vs.retries);
	metrics_header(out, "abilitysync_vdb_failures_total", "counter", "Vector DB attempts that failed.");
	metrics_value(out, "abilitysync_vdb_failures_total", NULL, (double)vs.failures);
	metrics_header(out, "abilitysync_vdb_in_flight", "gauge", "Vector DB requests on the wire.");
	metrics_value(out, "abilitysync_vdb_in_flight", NULL, vs.inflight);
	metrics_header(out, "abilitysync_vdb_request_duration_seconds", "histogram", "Vector DB attempts.");
	metrics_histogram(out, "abilitysync_vdb_request_duration_seconds", NULL, &vs.latency);
}

static void render_pg(const struct service *svc, struct buf *out)
{
	struct pgpool_stats st;

	if (!svc->pool)
		return;
	pgpool_get_stats(svc->pool, &st);
	metrics_header(out, "abilitysync_pg_connections", "gauge", "Postgres pool connections by state.");
	metrics_value(out, "abilitysync_pg_connections", "state=\"up\"", st.up);
	metrics_value(out, "abilitysync_pg_connections", "state=\"busy\"", st.busy);
	metrics_value(out, "abilitysync_pg_connections", "state=\"configured\"", st.size);
	metrics_header(out, "abilitysync_pg_queued_statements", "gauge", "Statements waiting for a connection.");
	metrics_value(out, "abilitysync_pg_queued_statements", NULL, st.queued);
	metrics_header(out, "abilitysync_pg_statements_total", "counter", "Statements sent to Postgres.");
	metrics_value(out, "abilitysync_pg_statements_total", NULL, (double)st.statements);
	metrics_header(out, "abilitysync_pg_failures_total", "counter", "Statements that failed.");
	metrics_value(out, "abilitysync_pg_failures_total", NULL, (double)st.failures);
	metrics_header(out, "abilitysync_pg_backends_ended_total", "counter",
		       "Backends of connections dropped at their deadline that a later connection ended.");
	metrics_value(out, "abilitysync_pg_backends_ended_total", NULL, (double)st.backends_ended);
}

/* Drift as the last finished reconcile run (of any replica) found it, and this replica's runs. */
static void render_reconcile(const struct service *svc, struct buf *out)
{
	json_t *last = json_object_get(svc->outbox_counts, "reconcile");
	json_t *drift = json_object_get(last, "drift"), *n;
	struct reconciler_stats rs;
	const char *cat;

	if (json_is_object(drift)) {
		metrics_header(out, "abilitysync_drift", "gauge", "Drift the last reconcile run found, by category.");
		json_object_foreach(drift, cat, n) {
			char label[64];

			snprintf(label, sizeof(label), "category=\"%s\"", cat);
			metrics_value(out, "abilitysync_drift", label, json_number_value(n));
		}
		metrics_header(out, "abilitysync_reconcile_last_run_id", "gauge", "Id of the last finished reconcile run.");
		metrics_value(out, "abilitysync_reconcile_last_run_id", NULL,
			      json_number_value(json_object_get(last, "run_id")));
	}
	reconciler_get_stats(svc->reconciler, &rs);
	metrics_header(out, "abilitysync_reconcile_runs_total", "counter",
		       "Periodic reconcile runs of this replica, by result (skipped: another replica ran it).");
	metrics_value(out, "abilitysync_reconcile_runs_total", "result=\"ok\"", (double)rs.ok);
	metrics_value(out, "abilitysync_reconcile_runs_total", "result=\"failed\"", (double)rs.failed);
	metrics_value(out, "abilitysync_reconcile_runs_total", "result=\"skipped\"", (double)rs.skipped);
}

/* The names of the key slots of the answer counts: the ring's, then "" for callers without a key. */
static const char **key_names(const struct api *a)
{
	const char **names = xcalloc(a->ring.n + 1, sizeof(*names));
	size_t i;

	for (i = 0; i < a->ring.n; i++)
		names[i] = a->ring.keys[i].name;
	names[a->ring.n] = "";
	return names;
}

static void render_metrics(struct call *c)
{
	struct service *svc = c->api->svc;
	struct outbox_stats ps;
	struct buf out = BUF_INIT;
	const char **names = key_names(c->api);

	http_metrics_render(&c->api->http_counts, names, &out);
	free(names);
	render_vdb(svc, &out);
	render_pg(svc, &out);
	render_outbox(svc, &out);
	outbox_get_stats(svc->outbox, &ps);
	metrics_header(&out, "abilitysync_pushes_total", "counter", "Abilities pushed to the vector DB, by result.");
	metrics_value(&out, "abilitysync_pushes_total", "result=\"pushed\"", (double)ps.pushed);
	metrics_value(&out, "abilitysync_pushes_total", "result=\"deleted\"", (double)ps.deleted);
	metrics_value(&out, "abilitysync_pushes_total", "result=\"failed\"", (double)ps.failed);
	metrics_header(&out, "abilitysync_sync_latency_seconds", "histogram",
		       "From a change's acknowledgement (the oldest one of the ability the vector DB did not have yet) "
		       "to the push that settled it, synced or deleted, as this replica recorded it.");
	metrics_histogram(&out, "abilitysync_sync_latency_seconds", NULL, &ps.sync_lag);
	metrics_header(&out, "abilitysync_retry_claimed_total", "counter", "Outbox rows the retry worker claimed.");
	metrics_value(&out, "abilitysync_retry_claimed_total", NULL, (double)ps.claimed);
	metrics_header(&out, "abilitysync_push_fencing_total", "counter",
		       "Pushes that waited behind another of the same ability (coalesced) or whose outcome a newer "
		       "write overtook (superseded).");
	metrics_value(&out, "abilitysync_push_fencing_total", "event=\"coalesced\"", (double)ps.coalesced);
	metrics_value(&out, "abilitysync_push_fencing_total", "event=\"superseded\"", (double)ps.superseded);
	metrics_header(&out, "abilitysync_ambiguous_pushes_total", "counter",
		       "Pushes with a vector DB call that may have been applied unbeknown (time-out or reset after "
		       "sending, 500/502/504).");
	metrics_value(&out, "abilitysync_ambiguous_pushes_total", NULL, (double)ps.ambiguous);
	metrics_header(&out, "abilitysync_verifications_total", "counter",
		       "Abilities verified after their doubt window, by result (read_back: the vector matched, nothing "
		       "written; rewritten: written again).");
	metrics_value(&out, "abilitysync_verifications_total", "result=\"read_back\"", (double)ps.verified_by_read);
	metrics_value(&out, "abilitysync_verifications_total", "result=\"rewritten\"", (double)ps.repaired);
	render_reconcile(svc, &out);
	metrics_header(&out, "abilitysync_http_connections", "gauge", "Open client connections.");
	metrics_value(&out, "abilitysync_http_connections", NULL, c->api->connections);
	metrics_header(&out, "abilitysync_http_rejected_total", "counter",
		       "Requests and connections turned away by a limit, by reason (in_flight: 503 at "
		       "HTTP_MAX_IN_FLIGHT; connections: times accepting paused at HTTP_MAX_CONNECTIONS; "
		       "body: 413 over MAX_BODY_BYTES; headers: 400 for a request line or headers over "
		       "HTTP_HEADERS_MAX or unparsable).");
	metrics_value(&out, "abilitysync_http_rejected_total", "reason=\"in_flight\"",
		      (double)c->api->rejected_in_flight);
	metrics_value(&out, "abilitysync_http_rejected_total", "reason=\"connections\"",
		      (double)c->api->paused_accepts);
	metrics_value(&out, "abilitysync_http_rejected_total", "reason=\"body\"", (double)c->api->rejected_body);
	metrics_value(&out, "abilitysync_http_rejected_total", "reason=\"headers\"", (double)c->api->rejected_header);
	metrics_header(&out, "abilitysync_ready", "gauge", "1 when /readyz says ready.");
	metrics_value(&out, "abilitysync_ready", NULL, service_ready(svc));
	reply_typed(c, 200, "text/plain; version=0.0.4", out.data, out.len);
	buf_free(&out);
}

static void on_metrics_outbox(const char *text, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	json_error_t jerr;
	json_t *fresh = text ? json_loads(text, 0, &jerr) : NULL;

	(void)o;
	/* Without Postgres right now, the last count is shown (its age is in the log). */
	if (fresh) {
		json_decref(c->api->svc->outbox_counts);
		c->api->svc->outbox_counts = fresh;
	}
	render_metrics(c);
}

/* A scrape counts the outbox now: stale depth is how alerts go wrong. */
void h_metrics(struct call *c)
{
	if (c->api->svc->store)
		store_status(c->api->svc->store, on_metrics_outbox, c);
	else
		render_metrics(c);
}
