/* Operating the sync: its status, retry and pause, restore and reconcile jobs, the audit trail. */
#include "api_call.h"

#include "reqbody.h"

/* ---- GET /v1/sync/status ------------------------------------------------------------------------ */

static void on_status(const char *text, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct outbox_stats st;
	json_t *j;

	if (!text) {
		reply_pg_failure(c, o);
		return;
	}
	j = json_or_null(text);
	outbox_get_stats(c->api->svc->outbox, &st);
	json_object_set_new(j, "mode", json_string("postgres"));
	json_object_set_new(j, "pushes",
			    json_pack("{s:I, s:I, s:I, s:i, s:I, s:I, s:I, s:I}", "pushed", (json_int_t)st.pushed, "failed",
				      (json_int_t)st.failed, "deleted", (json_int_t)st.deleted, "in_flight", st.in_flight,
				      "coalesced", (json_int_t)st.coalesced, "superseded", (json_int_t)st.superseded,
				      "ambiguous", (json_int_t)st.ambiguous, "verifications", (json_int_t)st.verifications));
	reply_json(c, 200, j);
}

void h_sync_status(struct call *c)
{
	if (!needs_postgres(c, "the sync status"))
		return;
	store_status(c->api->svc->store, on_status, c);
}

/* ---- reconcile runs and restore jobs ------------------------------------------------------ */

static void on_last_reconcile(const char *text, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	if (!text) {
		reply_error(c, E_NOT_FOUND, NULL, "no reconcile run is recorded yet (RECONCILE_INTERVAL, or "
			    "`abilitysync reconcile`)");
		return;
	}
	/* The report exactly as the run stored it: the same object `reconcile --json` printed. */
	reply(c, 200, text, strlen(text));
}

void h_reconcile_last(struct call *c)
{
	if (!needs_postgres(c, "reconcile"))
		return;
	store_last_reconcile(c->api->svc->store, on_last_reconcile, c);
}

/* 202: the job's row exists; Location and href name it. */
static void reply_job_started(struct call *c, const char *kind, int64_t id)
{
	char href[48];

	snprintf(href, sizeof(href), "/v1/jobs/%s-%lld", kind, (long long)id);
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Location", href);
	reply_json(c, 202, json_pack("{s:s, s:I, s:s, s:s, s:s, s:s}", "id", href + 9, "job_id", (json_int_t)id, "kind",
				     kind, "state", "running", "status", "running", "href", href));
}

static void on_restore_answer(int64_t job_id, const char *code, const char *why, void *arg)
{
	struct call *c = arg;

	if (job_id > 0) {
		reply_job_started(c, "restore", job_id);
	} else if (strcmp(code, "restore_running") == 0 || strcmp(code, "nothing_to_resume") == 0) {
		reply_error(c, errcode_by_name(code), NULL, "%s", why);
	} else if (strcmp(code, "not_migrated") == 0) {
		reply_error(c, E_NOT_MIGRATED, NULL, "%s", why);
	} else {
		reply_error(c, E_POSTGRES_UNAVAILABLE, NULL, "%s", why);
	}
}

/*
 * An admin route's body, checked against its table (reqbody.h). False and
 * answered when it is not one: a JSON body wants Content-Type application/json.
 */
static bool admin_body(struct call *c, const struct body_spec *spec, struct reqbody *b)
{
	struct jspan body = body_of(c);
	struct ability_error err;

	if (body.len && !json_content(c)) {
		memset(b, 0, sizeof(*b));
		return false;
	}
	if (reqbody_parse(body.p, body.len, spec, b, &err))
		return true;
	reply_refusal(c, &err);
	reqbody_free(b);
	return false;
}

/* Is there room for one more long job in this replica (JOBS_MAX)? Answered when not. */
static bool job_room(struct call *c)
{
	int running = service_jobs_running(c->api->svc);

	if (running < c->api->o.jobs_max)
		return true;
	reply_error(c, E_TOO_MANY_JOBS, NULL, "%d long jobs run in this replica (JOBS_MAX=%d): GET /v1/jobs?state=running",
		    running, c->api->o.jobs_max);
	return false;
}

enum { RESTORE_SERVICE, RESTORE_RESUME }; /* the places of restore_fields */
static const struct field_spec restore_fields[] = {
	[RESTORE_SERVICE] = {"service_name", FIELD_NAME, 0, 0, NULL},
	[RESTORE_RESUME] = {"resume", FIELD_BOOL, 0, 0, NULL},
};
static const struct body_spec restore_body = {"a restore", restore_fields, ARRAY_LEN(restore_fields)};

/* POST /v1/restore {"service_name"?: S, "resume"?: bool}: starts a job, answers once its row exists. */
void h_restore_post(struct call *c)
{
	struct service *svc = c->api->svc;
	struct reqbody b;

	if (!needs_postgres(c, "restore") || !admin_body(c, &restore_body, &b))
		return;
	if (svc->restore)
		reply_error(c, E_RESTORE_RUNNING, NULL, "this replica is running restore job %lld: GET /v1/jobs/%lld",
			    (long long)svc->restore_job, (long long)svc->restore_job);
	else if (job_room(c))
		service_start_restore(svc, b.v[RESTORE_SERVICE].s, b.v[RESTORE_RESUME].b, on_restore_answer, c);
	reqbody_free(&b);
}

static void on_reconcile_answer(int64_t run_id, const char *code, const char *why, void *arg)
{
	struct call *c = arg;

	if (run_id > 0) {
		reply_job_started(c, "reconcile", run_id);
	} else if (strcmp(code, "reconcile_running") == 0) {
		reply_error(c, E_RECONCILE_RUNNING, NULL, "%s", why);
	} else {
		reply_error(c, E_POSTGRES_UNAVAILABLE, NULL, "%s", why ? why : "the run did not start");
	}
}

enum { RECONCILE_DRY_RUN, RECONCILE_SERVICE, RECONCILE_DEEP, RECONCILE_MODEL };
static const struct field_spec reconcile_fields[] = {
	[RECONCILE_DRY_RUN] = {"dry_run", FIELD_BOOL, 0, 0, NULL},
	[RECONCILE_SERVICE] = {"service_name", FIELD_NAME, 0, 0, NULL},
	[RECONCILE_DEEP] = {"deep", FIELD_BOOL, 0, 0, NULL},
	[RECONCILE_MODEL] = {"embedding_model", FIELD_NAME, 0, 0, NULL},
};
static const struct body_spec reconcile_body = {"a reconcile", reconcile_fields, ARRAY_LEN(reconcile_fields)};

/* POST /v1/reconcile {"dry_run"?: bool (true), "service_name"?: S, "deep"?: bool, "embedding_model"?: M}: a job. */
void h_reconcile_post(struct call *c)
{
	struct service *svc = c->api->svc;
	struct reqbody b;

	if (!needs_postgres(c, "reconcile") || !admin_body(c, &reconcile_body, &b))
		return;
	if (svc->reconcile)
		reply_error(c, E_RECONCILE_RUNNING, NULL, "this replica is running reconcile-%lld: GET /v1/jobs/reconcile-%lld",
			    (long long)svc->reconcile_run, (long long)svc->reconcile_run);
	else if (job_room(c))
		service_start_reconcile(svc, b.v[RECONCILE_SERVICE].s, b.v[RECONCILE_MODEL].s,
					!b.v[RECONCILE_DRY_RUN].set || b.v[RECONCILE_DRY_RUN].b, b.v[RECONCILE_DEEP].b,
					on_reconcile_answer, c);
	reqbody_free(&b);
}

static void on_pause_changed(const char *text, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	bool pause = c->route == ROUTE_SYNC_PAUSE;
	json_error_t jerr;
	json_t *p;

	if (!o->res || !text) {
		reply_pg_failure(c, o);
		return;
	}
	/* This replica at once; the others at their next look at Postgres (a few seconds). */
	outbox_set_paused(c->api->svc->outbox, pause);
	p = json_loads(text, JSON_DECODE_ANY, &jerr);
	reply_json(c, 200, json_pack("{s:b, s:o}", "paused", pause, pause ? "pause" : "ended", p ? p : json_null()));
}

static const struct field_spec pause_fields[] = {
	{"reason", FIELD_TEXT, 0, 1000, NULL},
};
static const struct body_spec pause_body = {"a pause", pause_fields, ARRAY_LEN(pause_fields)};

/* POST /v1/sync/pause {"reason"?}: every replica stops pushing; writes are still acknowledged (202, pending). */
void h_sync_pause(struct call *c)
{
	struct reqbody b;

	if (!needs_postgres(c, "pausing the outbox") || !admin_body(c, &pause_body, &b))
		return;
	store_sync_pause(c->api->svc->store, c->key[0] ? c->key : NULL, b.v[0].s, c->id, on_pause_changed, c);
	reqbody_free(&b);
}

/* POST /v1/sync/resume: pushing goes on, on every replica. */
void h_sync_resume(struct call *c)
{
	if (!needs_postgres(c, "resuming the outbox"))
		return;
	store_sync_resume(c->api->svc->store, on_pause_changed, c);
}

static void on_retried(int64_t matched, int64_t retried, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;

	if (!o->res)
		reply_pg_failure(c, o);
	else
		reply_json(c, 200, json_pack("{s:I, s:I}", "matched", (json_int_t)matched, "retried", (json_int_t)retried));
}

static const char *const retry_states[] = {"failed", "pending", NULL};
enum { RETRY_STATE, RETRY_SERVICE, RETRY_ERROR, RETRY_OLDER, RETRY_DRY_RUN };
static const struct field_spec retry_fields[] = {
	[RETRY_STATE] = {"state", FIELD_CHOICE, 0, 0, retry_states},
	[RETRY_SERVICE] = {"service_name", FIELD_NAME, 0, 0, NULL},
	[RETRY_ERROR] = {"error_contains", FIELD_TEXT, 1, 255, NULL},
	[RETRY_OLDER] = {"older_than_s", FIELD_INT, 0, 100LL * 365 * 86400, NULL},
	[RETRY_DRY_RUN] = {"dry_run", FIELD_BOOL, 0, 0, NULL},
};
static const struct body_spec retry_body = {"a retry", retry_fields, ARRAY_LEN(retry_fields)};

/*
 * POST /v1/sync/retry {"state"?: "failed" | "pending", "service_name"?, "error_contains"?,
 * "older_than_s"?, "dry_run"?}: the changes picked are due now (after fixing what failed them).
 */
void h_sync_retry(struct call *c)
{
	struct retry_selector sel;
	struct reqbody b;

	if (!needs_postgres(c, "retrying changes") || !admin_body(c, &retry_body, &b))
		return;
	sel = (struct retry_selector){b.v[RETRY_STATE].set && strcmp(b.v[RETRY_STATE].s, "pending") == 0,
				      b.v[RETRY_SERVICE].s, b.v[RETRY_ERROR].s,
				      b.v[RETRY_OLDER].set ? (int64_t)b.v[RETRY_OLDER].i : -1, b.v[RETRY_DRY_RUN].b};
	store_sync_retry(c->api->svc->store, &sel, on_retried, c);
	reqbody_free(&b);
}

const struct body_spec *const api_admin_bodies[] = {&restore_body, &reconcile_body, &pause_body, &retry_body, NULL};

/* ---- jobs: restore jobs and reconcile runs ------------------------------------------ */

static json_t *count_or_null(int64_t n)
{
	return n >= 0 ? json_integer((json_int_t)n) : json_null();
}

static json_t *job_json(const struct job_row *j)
{
	char id[48], href[64];
	json_t *percent = json_null();

	snprintf(id, sizeof(id), "%s-%lld", j->kind, (long long)j->id);
	snprintf(href, sizeof(href), "/v1/jobs/%s", id);
	if (strcmp(j->state, "succeeded") == 0) {
		percent = json_real(100.0);
	} else if (j->total > 0) {
		double p = (double)(j->done + j->failed) * 100.0 / (double)j->total;

		percent = json_real((double)(long)((p > 100.0 ? 100.0 : p) * 10.0) / 10.0);
	} else if (j->total == 0) {
		percent = json_real(0.0);
	}
	return json_pack("{s:s, s:s, s:I, s:s, s:s, s:o, s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:s}", "id", id,
			 "kind", j->kind, "job_id", (json_int_t)j->id, "state", j->state, "status", j->status,
			 "service_name", string_or_null(j->service_name), "dry_run", j->dry_run, "total",
			 count_or_null(j->total), "done", count_or_null(j->done), "failed", count_or_null(j->failed),
			 "percent_complete", percent, "started_at", string_or_null(j->started_at), "updated_at",
			 string_or_null(j->updated_at), "finished_at", string_or_null(j->finished_at), "error",
			 string_or_null(j->error), "href", href);
}

/*
 * A job's id in the API: <kind>-<n> (restore-12, reconcile-5); a bare number
 * is a restore job's (the ids of the first releases).
 */
static bool job_ref(const char *s, const char **kind, int64_t *id)
{
	static const char *const kinds[] = {"restore", "reconcile"};
	const char *digits = s;
	size_t i, n;

	*kind = "restore";
	for (i = 0; i < ARRAY_LEN(kinds); i++) {
		size_t k = strlen(kinds[i]);

		if (strncmp(s, kinds[i], k) == 0 && s[k] == '-') {
			*kind = kinds[i];
			digits = s + k + 1;
		}
	}
	n = strspn(digits, "0123456789");
	if (n == 0 || digits[n] || n > 18)
		return false;
	*id = strtoll(digits, NULL, 10);
	return true;
}

static void on_job(const struct job_row *jobs, size_t n, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;

	if (!o->res)
		reply_pg_failure(c, o);
	else if (n == 0)
		reply_error(c, E_NOT_FOUND, NULL, "no job %s", c->path_id);
	else
		reply_json(c, 200, job_json(&jobs[0]));
}

void h_job_get(struct call *c)
{
	const char *kind;
	int64_t id;

	if (!needs_postgres(c, "jobs"))
		return;
	if (!job_ref(c->path_id, &kind, &id)) {
		reply_error(c, E_NOT_FOUND, NULL, "no job %s (job ids are restore-N or reconcile-N)", c->path_id);
		return;
	}
	store_job(c->api->svc->store, kind, id, on_job, c);
}

static void on_jobs_listed(const struct job_row *jobs, size_t n, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	json_t *items;
	size_t i, shown;

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	shown = n > (size_t)c->limit ? (size_t)c->limit : n;
	items = json_array();
	for (i = 0; i < shown; i++)
		json_array_append_new(items, job_json(&jobs[i]));
	reply_json(c, 200, json_pack("{s:o, s:o}", "jobs", items, "next_cursor",
				     n > shown ? json_string(jobs[shown - 1].cursor) : json_null()));
}

/* A next_cursor of GET /v1/jobs: <microseconds>.<kind>.<id>. */
static bool jobs_cursor_valid(const char *s)
{
	size_t us = strspn(s, "0123456789"), id;
	const char *kind = s + us + 1;

	if (us == 0 || us > 18 || s[us] != '.')
		return false;
	if (strncmp(kind, "restore.", 8) == 0)
		kind += 8;
	else if (strncmp(kind, "reconcile.", 10) == 0)
		kind += 10;
	else
		return false;
	id = strspn(kind, "0123456789");
	return id > 0 && id <= 18 && kind[id] == '\0';
}

/* GET /v1/jobs?kind=K&state=S&limit=N&cursor=C: newest first. */
void h_jobs_list(struct call *c)
{
	static const char *const kinds[] = {"restore", "reconcile", NULL};
	static const char *const states[] = {"queued", "running", "succeeded", "failed", "cancelled", NULL};
	const char *kind = query_value(c, "kind"), *state = query_value(c, "state"), *cursor = query_value(c, "cursor");
	int limit;

	if (!needs_postgres(c, "jobs"))
		return;
	if (kind && !one_of(kind, kinds)) {
		reply_error(c, E_INVALID_PARAMETER, "kind", "kind is restore or reconcile, not %s", kind);
		return;
	}
	if (state && !one_of(state, states)) {
		reply_error(c, E_INVALID_PARAMETER, "state",
			    "state is queued, running, succeeded, failed or cancelled, not %s", state);
		return;
	}
	if (cursor && !jobs_cursor_valid(cursor)) {
		reply_error(c, E_INVALID_PARAMETER, "cursor", "cursor must be a next_cursor of a page");
		return;
	}
	if (!page_limit(c, &limit))
		return;
	c->limit = limit;
	store_jobs_list(c->api->svc->store, kind, state, cursor, limit + 1, on_jobs_listed, c);
}

static void on_job_cancelled(bool cancelled, const char *before, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	struct service *svc = c->api->svc;
	const char *kind;
	int64_t id;
	char href[64];

	if (!o->res) {
		reply_pg_failure(c, o);
		return;
	}
	if (!before) {
		reply_error(c, E_NOT_FOUND, NULL, "no job %s", c->path_id);
		return;
	}
	if (!cancelled) {
		reply_error(c, E_JOB_NOT_RUNNING, NULL, "job %s is %s: only a running job can be cancelled", c->path_id,
			    before);
		return;
	}
	(void)job_ref(c->path_id, &kind, &id);
	/* This replica runs it: stop now. Another does: it sees the row at its next page. */
	if (strcmp(kind, "restore") == 0 && svc->restore && svc->restore_job == id)
		restore_stop(svc->restore);
	else if (strcmp(kind, "reconcile") == 0 && svc->reconcile && svc->reconcile_run == id)
		reconcile_stop(svc->reconcile);
	else if (strcmp(kind, "reconcile") == 0)
		(void)reconciler_cancel(svc->reconciler, id);
	snprintf(href, sizeof(href), "/v1/jobs/%s-%lld", kind, (long long)id);
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Location", href);
	reply_json(c, 202, json_pack("{s:s, s:s, s:s}", "id", href + 9, "state", "cancelled", "href", href));
}

/* POST /v1/jobs/{id}/cancel: the job stops after the page it is on; a cancelled restore resumes later. */
void h_job_cancel(struct call *c)
{
	const char *kind;
	int64_t id;
	char why[256];

	if (!needs_postgres(c, "jobs"))
		return;
	if (!job_ref(c->path_id, &kind, &id)) {
		reply_error(c, E_NOT_FOUND, NULL, "no job %s (job ids are restore-N or reconcile-N)", c->path_id);
		return;
	}
	snprintf(why, sizeof(why), "cancelled by %s%s (request %s)", c->key[0] ? "key " : "a caller without a key",
		 c->key, c->id);
	store_job_cancel(c->api->svc->store, kind, id, why, on_job_cancelled, c);
}

/* ---- the audit trail ------------------------------------------------------------------------ */

#define AUDIT_PARAMS_MAX 4096

/*
 * What an audited request asked: its body, when a small JSON object, the id
 * in its path ("id") and its query parameters (a full set's body is the set:
 * only its service and dry_run are kept).
 */
void audit_keep_params(struct call *c)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
	size_t len = evbuffer_get_length(in);
	const struct evkeyval *kv;
	json_t *j = NULL;

	if (len > 0 && len <= AUDIT_PARAMS_MAX)
		j = json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		j = c->path_id || !TAILQ_EMPTY(&c->query) ? json_object() : NULL;
	}
	if (j && c->path_id)
		json_object_set_new(j, "id", json_string(c->path_id));
	TAILQ_FOREACH(kv, &c->query, next) /* UTF-8: query_not_text refused the others */
		if (strcmp(kv->key, "id") != 0)
			json_object_set_new(j, kv->key, json_string(kv->value));
	if (j)
		c->audit_params = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
}

static void on_audit_recorded(const struct pg_outcome *o, void *arg)
{
	char *what = arg;

	if (!o->res)
		log_error(COMP, "audit: %s was answered but could not be recorded: %s", what, o->error);
	free(what);
}

/* An audited route was answered: who (the key's name), what, when, how it went. */
void audit_record(struct call *c, int status)
{
	struct store *st = c->api->svc->store;
	const char *action = route_name(c->route);
	struct audit_entry e = {c->key[0] ? c->key : NULL, action, c->audit_params, status, c->id};
	char what[160];

	if (!st)
		return;
	snprintf(what, sizeof(what), "req=%s%s%s %s -> %d", c->id, c->key[0] ? " key=" : "", c->key, action, status);
	log_info(COMP, "audit: %s", what);
	store_audit_record(st, &e, c->api->o.audit_days, on_audit_recorded, xstrdup(what));
}

static void on_audit_listed(const struct audit_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct call *c = arg;
	json_t *entries = json_array(), *params;
	size_t i, shown = n > (size_t)c->limit ? (size_t)c->limit : n;

	if (!o->res) {
		json_decref(entries);
		reply_pg_failure(c, o);
		return;
	}
	for (i = 0; i < shown; i++) {
		params = rows[i].params ? json_loads(rows[i].params, 0, NULL) : NULL;
		json_array_append_new(entries,
				      json_pack("{s:I, s:o, s:o, s:s, s:o, s:i, s:o, s:o}", "id", (json_int_t)rows[i].id,
						"at", string_or_null(rows[i].at), "key", string_or_null(rows[i].key_name),
						"action", rows[i].action, "params", params ? params : json_null(),
						"status", rows[i].status, "request_id", string_or_null(rows[i].request_id),
						"host", string_or_null(rows[i].host)));
	}
	reply_json(c, 200, json_pack("{s:o, s:o}", "entries", entries, "next_before",
				     n > shown ? json_integer((json_int_t)rows[shown - 1].id) : json_null()));
}

void h_audit(struct call *c)
{
	const char *before = query_value(c, "before");
	size_t n = before ? strspn(before, "0123456789") : 0;
	int limit;

	if (!needs_postgres(c, "the audit trail"))
		return;
	if (!page_limit(c, &limit))
		return;
	if (before && (n == 0 || before[n] || n > 18)) {
		reply_error(c, E_INVALID_PARAMETER, "before", "before must be an entry id (next_before of a page)");
		return;
	}
	c->limit = limit;
	store_audit_list(c->api->svc->store, before ? strtoll(before, NULL, 10) : 0, limit + 1, on_audit_listed, c);
}
