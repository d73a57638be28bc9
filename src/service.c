/*
 * service.c - what the HTTP handlers may ask of the running service: is it
 * ready, and start a restore job or a reconcile run in this replica. serve.c builds the service
 * and refreshes the readiness it reads; api.c borrows it. (Keeping these here
 * rather than in serve.c is what keeps api.c and serve.c from depending on
 * each other.)
 */
#include "service.h"

#include "clock.h"
#include "log.h"
#include "mem.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COMP "serve"
#define CHECK_STALL_MS 3000 /* a readiness check unanswered this long: the dependency hangs */

/* ---- readiness ----------------------------------------------------------------- */

bool service_pg_stalled(const struct service *svc)
{
	return svc->pg_asked_ms && clock_mono_ms() - svc->pg_asked_ms > CHECK_STALL_MS;
}

bool service_vdb_stalled(const struct service *svc)
{
	return svc->vdb_asked_ms && clock_mono_ms() - svc->vdb_asked_ms > CHECK_STALL_MS;
}

bool service_ready(const struct service *svc)
{
	return (!svc->pool || (pgpool_ready(svc->pool) && svc->pg_migrated && !service_pg_stalled(svc))) &&
	       svc->vdb_up && !service_vdb_stalled(svc) && !svc->stopping;
}

int service_jobs_running(const struct service *svc)
{
	return (svc->restore != NULL) + (svc->reconcile != NULL) + reconciler_busy(svc->reconciler);
}

/* ---- restore jobs started over HTTP ---------------------------------------------------- */

/* A job started over HTTP: the request waits for its row (its id) or its refusal. */
struct job_ctx {
	struct service *svc;
	service_restore_fn answer;
	void *arg;
	bool answered;
	int64_t *id;                   /* where the service keeps the running job's id */
};

static struct job_ctx *job_ctx_new(struct service *svc, int64_t *id, service_restore_fn answer, void *arg)
{
	struct job_ctx *x = xcalloc(1, sizeof(*x));

	x->svc = svc;
	x->id = id;
	x->answer = answer;
	x->arg = arg;
	return x;
}

static void on_job_started(int64_t job_id, void *arg)
{
	struct job_ctx *x = arg;

	*x->id = job_id;
	x->answered = true;
	x->answer(job_id, NULL, NULL, x->arg);
}

static void on_restore_done(enum restore_outcome outcome, json_t *summary, const char *why, void *arg)
{
	struct job_ctx *x = arg;
	const char *code = json_string_value(json_object_get(summary, "refused"));
	const char *status = json_string_value(json_object_get(summary, "status"));

	x->svc->restore = NULL;
	x->svc->restore_job = 0;
	x->svc->restore_arg = NULL;
	if (!x->answered)
		x->answer(0, code ? code : "postgres_error", why, x->arg);
	else if (outcome == RESTORE_DONE)
		log_info(COMP, "restore job %lld %s: %lld restored, %lld failed",
			 (long long)json_integer_value(json_object_get(summary, "job_id")),
			 status && strcmp(status, "running") == 0
				 ? "is through here (other processes restore its other parts)"
				 : "done",
			 (long long)json_integer_value(json_object_get(summary, "done")),
			 (long long)json_integer_value(json_object_get(summary, "failed")));
	else
		log_warn(COMP, "restore job %lld ended early: %s",
			 (long long)json_integer_value(json_object_get(summary, "job_id")), why);
	free(x);
}

/* ---- reconcile runs started over HTTP ------------------------------------------------- */

static void on_reconcile_done(enum reconcile_outcome outcome, json_t *report, const char *why, void *arg)
{
	struct job_ctx *x = arg;
	int64_t run = x->svc->reconcile_run;

	x->svc->reconcile = NULL;
	x->svc->reconcile_run = 0;
	x->svc->reconcile_arg = NULL;
	if (!x->answered)
		x->answer(0, outcome == RECONCILE_SKIPPED ? "reconcile_running" : "postgres_unavailable", why, x->arg);
	else if (outcome == RECONCILE_DONE)
		log_info(COMP, "reconcile run %lld done: exit verdict %d", (long long)run, reconcile_exit_code(report));
	else
		log_warn(COMP, "reconcile run %lld ended early: %s", (long long)run, why);
	free(x);
}

void service_start_reconcile(struct service *svc, const char *service_name, const char *embedding_model,
			     bool dry_run, bool deep, service_restore_fn answer, void *arg)
{
	struct job_ctx *x = job_ctx_new(svc, &svc->reconcile_run, answer, arg);
	struct reconcile_opts o = svc->reconcile_opts;
	char host[256] = "";

	gethostname(host, sizeof(host) - 1);
	o.service = service_name;
	o.embedding_model = embedding_model;
	o.dry_run = dry_run;
	o.deep = deep;
	o.host = host;
	o.recorded = on_job_started;
	svc->reconcile_arg = x;
	svc->reconcile = reconcile_start(svc->base, svc->vdb, &o, on_reconcile_done, x);
}

void service_start_restore(struct service *svc, const char *service_name, bool resume, service_restore_fn answer,
			   void *arg)
{
	struct job_ctx *x = job_ctx_new(svc, &svc->restore_job, answer, arg);
	struct restore_opts o = svc->restore_opts;
	char host[256] = "";

	gethostname(host, sizeof(host) - 1);
	o.service = service_name;
	o.resume = resume;
	o.host = host;
	svc->restore_arg = x;
	svc->restore = restore_start(svc->base, svc->vdb, svc->outbox, svc->store, &o, on_job_started, on_restore_done, x);
}

