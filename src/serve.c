/*
 * serve.c - `abilitysync serve`: builds the parts, runs the loop, stops cleanly.
 *
 * SIGTERM/SIGINT: stop accepting, let requests and pushes in flight finish
 * (at most SHUTDOWN_TIMEOUT), exit 0. What was acknowledged but not yet pushed
 * is in the outbox and goes out at the next start, or from another replica.
 */
#include "service.h"

#include "api.h"
#include "buf.h"
#include "clock.h"
#include "journal.h"
#include "ledger.h"
#include "log.h"
#include "mem.h"
#include "options.h"
#include "pgconn.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COMP "serve"
#define CHECK_PERIOD_MS 5000
#define CHECK_PERIOD_UNREADY_MS 250 /* look again soon while not ready (start-up, outages) */

struct server {
	struct service svc;
	struct api *api;
	struct event *check;       /* readiness and outbox, every CHECK_PERIOD_MS */
	struct event *sigterm, *sigint, *sighup;
	struct event *drain;       /* while stopping: done yet? */
	int64_t stop_deadline;
	char *ledger;              /* the ledger table, schema-qualified */
	char *whens;               /* the journal's `when`s as an array literal; NULL: no journal */
	size_t nmigrations;
	bool checking_pg, checking_vdb, polling_outbox;
	uint64_t trimmed_at;       /* requests and outbox work counted at the last trim */
};

/* ---- readiness ----------------------------------------------------------------- */

static void on_migrations_counted(long have, const struct pg_outcome *o, void *arg)
{
	struct server *s = arg;
	struct service *svc = &s->svc;

	s->checking_pg = false;
	svc->pg_asked_ms = 0;
	if (!o->res) {
		svc->pg_migrated = false;
		snprintf(svc->pg_why, sizeof(svc->pg_why), "%s", o->error);
		return;
	}
	svc->pg_migrated = s->nmigrations ? (size_t)have == s->nmigrations : have > 0;
	if (!svc->pg_migrated)
		snprintf(svc->pg_why, sizeof(svc->pg_why), "%ld of %zu migrations applied: run abilitysync migrate up",
			 have, s->nmigrations);
}

static void on_vdb_health(const struct vdb_result *r, void *arg)
{
	struct server *s = arg;

	s->checking_vdb = false;
	s->svc.vdb_asked_ms = 0;
	if (r->status == VDB_CANCELLED)
		return;
	if (s->svc.vdb_up && r->status != VDB_OK)
		log_warn(COMP, "the vector DB looks down: %s", r->error);
	else if (!s->svc.vdb_up && r->status == VDB_OK)
		log_info(COMP, "the vector DB is reachable");
	s->svc.vdb_up = r->status == VDB_OK;
	snprintf(s->svc.vdb_why, sizeof(s->svc.vdb_why), "%s", r->error);
}

static void on_outbox(const char *text, const struct pg_outcome *o, void *arg)
{
	struct server *s = arg;
	json_error_t jerr;

	(void)o;
	s->polling_outbox = false;
	if (!text)
		return;
	json_decref(s->svc.outbox_counts);
	s->svc.outbox_counts = json_loads(text, 0, &jerr);
	/* A pause asked of any replica reaches this one here, within a check period. */
	if (s->svc.outbox_counts)
		outbox_set_paused(s->svc.outbox, json_is_object(json_object_get(s->svc.outbox_counts, "paused")));
}

/*
 * After a burst, freed memory goes back to the system: glibc keeps what is
 * freed below its heap's top (and raises its trim threshold after large
 * blocks), so the process would stay at the burst's peak. Only when nothing
 * is in flight, and only after work (requests, pushes) since the last time: a
 * trim walks the heap. The readiness check's own queries do not count.
 */
static void trim_if_quiet(struct server *s)
{
	struct outbox_stats st;
	uint64_t work;

	if (!s->svc.outbox || api_in_flight(s->api) > 0)
		return;
	outbox_get_stats(s->svc.outbox, &st);
	work = api_requests(s->api) + st.claimed + st.pushed + st.deleted + st.failed;
	if (st.in_flight > 0 || work == s->trimmed_at)
		return;
	s->trimmed_at = work;
	malloc_trim(0);
}

static void on_check(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	long ms = service_ready(&s->svc) ? CHECK_PERIOD_MS : CHECK_PERIOD_UNREADY_MS;
	struct timeval next = {ms / 1000, (ms % 1000) * 1000};

	(void)fd, (void)what;
	evtimer_add(s->check, &next);
	trim_if_quiet(s);
	if (s->svc.pool && !s->checking_pg) {
		s->checking_pg = true;
		s->svc.pg_asked_ms = clock_mono_ms();
		store_count_migrations(s->svc.pool, s->ledger, s->whens, on_migrations_counted, s);
	}
	if (s->svc.store && !s->polling_outbox) {
		s->polling_outbox = true;
		store_status(s->svc.store, on_outbox, s);
	}
	if (!s->checking_vdb) {
		s->checking_vdb = true;
		s->svc.vdb_asked_ms = clock_mono_ms();
		vdb_health(s->svc.vdb, on_vdb_health, s);
	}
}

/*
 * Readiness wants every migration of the folder in the ledger. Without a
 * readable folder (an image without it), the sync schema's presence will do.
 */
static void prepare_migration_check(struct server *s)
{
	const struct config *c = s->svc.cfg;
	struct journal j;
	struct errbuf err;
	struct buf whens = BUF_INIT;
	size_t i;

	s->ledger = ledger_qualified_name(c->migrations_schema, c->migrations_table);
	if (!journal_load(c->migrations_dir, &j, &err)) {
		log_warn(COMP, "%s: readiness will only check that abilitysync's tables exist", err.msg);
		return;
	}
	buf_putc(&whens, '{');
	for (i = 0; i < j.n; i++)
		buf_printf(&whens, "%s%lld", i ? "," : "", (long long)j.m[i].when);
	buf_putc(&whens, '}');
	s->nmigrations = j.n;
	s->whens = buf_steal(&whens);
	journal_free(&j);
}

/* ---- stopping ----------------------------------------------------------------------- */

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	struct timeval tick = {0, 50000};
	int requests = api_in_flight(s->api);
	bool pushing = outbox_busy(s->svc.outbox);
	bool jobs = reconciler_busy(s->svc.reconciler) || s->svc.restore || s->svc.reconcile;

	(void)fd, (void)what;
	if (requests == 0 && !pushing && !jobs) {
		log_info(COMP, "stopped: every request answered, every push recorded");
		event_base_loopexit(s->svc.base, NULL);
		return;
	}
	if (clock_mono_ms() >= s->stop_deadline) {
		log_warn(COMP, "SHUTDOWN_TIMEOUT reached with %d request(s), %s and %s in flight; what was "
			 "acknowledged is in the outbox: its leases run out and any replica takes it over (in doubt, "
			 "verified)", requests, pushing ? "pushes" : "no push", jobs ? "a reconcile or restore job" : "no job");
		event_base_loopexit(s->svc.base, NULL);
		return;
	}
	evtimer_add(s->drain, &tick);
}

/* SIGHUP: the API keys' file is read again (keys rotate without a restart). */
static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg;

	(void)sig, (void)what;
	if (!api_reload_keys(s->api))
		log_warn(COMP, "SIGHUP: nothing changed");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg;

	(void)what;
	if (s->svc.stopping) {
		log_warn(COMP, "second signal: exiting now");
		event_base_loopbreak(s->svc.base);
		return;
	}
	log_info(COMP, "%s: no longer accepting; finishing %d request(s) in flight (at most %lld s)",
		 sig == SIGTERM ? "SIGTERM" : "SIGINT", api_in_flight(s->api), s->svc.cfg->shutdown_timeout);
	s->svc.stopping = true;
	api_stop_accepting(s->api);
	outbox_stop_worker(s->svc.outbox);
	reconciler_stop(s->svc.reconciler);
	if (s->svc.restore)
		restore_stop(s->svc.restore);
	if (s->svc.reconcile)
		reconcile_stop(s->svc.reconcile);
	s->stop_deadline = clock_mono_ms() + s->svc.cfg->shutdown_timeout * 1000;
	s->drain = evtimer_new(s->svc.base, on_drain, s);
	on_drain(-1, 0, s);
}

/* ---- the whole ----------------------------------------------------------------------------- */

/*
 * The loop with epoll's change list: the event changes of one turn (a
 * request's read and write interest, libcurl's and libpq's sockets) go to
 * the kernel as one epoll_ctl per descriptor instead of one per change, ~2
 * fewer syscalls per registration (strace -c under bench/registration.sh).
 * libevent warns that it is unsafe with descriptors cloned by dup(); this
 * process clones none.
 */
static struct event_base *new_loop(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *base;

	if (!cfg)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
}

static bool build(struct server *s, const struct config *c, struct errbuf *err)
{
	struct service *svc = &s->svc;
	struct vdb_opts vo;
	struct pgpool_opts po;
	struct store_opts so;
	struct outbox_opts ob;
	struct api_opts ao;

	svc->cfg = c;
	options_owner(svc->owner, sizeof(svc->owner));
	svc->base = new_loop();
	if (!svc->base) {
		err_set(err, "cannot create the event loop");
		return false;
	}
	options_vdb(c, &vo);
	if (!(svc->vdb = vdb_new(svc->base, &vo, err)))
		return false;
	if (c->database_url) {
		options_pgpool(c, "abilitysync serve", &po);
		if (!(svc->pool = pgpool_new(svc->base, &po, err)))
			return false;
		options_store(c, svc->owner, &so);
		if (so.write_concurrency < c->write_concurrency)
			log_warn(COMP, "WRITE_CONCURRENCY=%lld is more than PG_POOL_SIZE - 1 (one connection stays for "
				 "reads): %d write statements run at once", c->write_concurrency, so.write_concurrency);
		svc->store = store_new(svc->pool, &so);
		options_restore(c, "abilitysync serve restore", &svc->restore_opts);
		options_reconcile(c, "abilitysync serve reconcile", &svc->reconcile_opts);
		svc->reconcile_opts.progress_s = 0;
		prepare_migration_check(s);
		if (c->reconcile_interval > 0) {
			struct reconcile_opts ro;
			char host[256] = "";

			options_reconcile(c, "abilitysync serve reconcile", &ro);
			gethostname(host, sizeof(host) - 1);
			ro.host = host;
			ro.progress_s = 0;
			svc->reconciler = reconciler_new(svc->base, svc->vdb, &ro, (long)c->reconcile_interval);
		}
	}
	options_outbox(c, &ob);
	svc->outbox = outbox_new(svc->base, svc->vdb, svc->store, &ob);
	options_api(c, &ao);
	return (s->api = api_new(svc, &ao, err)) != NULL;
}

/*
 * Teardown, in an order where no callback reaches something already freed:
 * the outbox starts nothing new; the jobs let go; cancelling the vector DB's
 * requests and then Postgres' statements runs every callback still owed (the
 * HTTP server is still there to answer); only then the rest is freed.
 */
static void teardown(struct server *s)
{
	struct service *svc = &s->svc;

	if (svc->outbox)
		outbox_close(svc->outbox);
	reconciler_free(svc->reconciler);
	if (svc->restore) {
		restore_abort(svc->restore);
		free(svc->restore_arg);
	}
	if (svc->reconcile) {
		reconcile_abort(svc->reconcile);
		free(svc->reconcile_arg);
	}
	if (svc->vdb)
		vdb_cancel_all(svc->vdb);
	pgpool_free(svc->pool);
	svc->pool = NULL;
	store_free(svc->store);
	api_free(s->api);
	outbox_free(svc->outbox);
	vdb_free(svc->vdb);
	json_decref(svc->outbox_counts);
	if (s->check)
		event_free(s->check);
	if (s->drain)
		event_free(s->drain);
	if (s->sigterm)
		event_free(s->sigterm);
	if (s->sigint)
		event_free(s->sigint);
	if (s->sighup)
		event_free(s->sighup);
	free(s->ledger);
	free(s->whens);
	if (svc->base)
		event_base_free(svc->base);
}

static void announce(const struct server *s)
{
	const struct config *c = s->svc.cfg;
	char *pg = c->database_url ? pg_target(c->database_url, NULL) : NULL;

	log_info(COMP, "serving on %s; Postgres: %s; vector DB: %s (tenant %s, %lld dimensions, %s)%s",
		 api_address(s->api), pg ? pg : "off (vector-DB-only mode)", c->vector_db_api, c->vector_db_tenant,
		 c->embedding_dim, c->vdb_write_mode == 1 ? "add" : "delete-then-add",
		 c->api_keys ? "; API keys required" : "");
	free(pg);
}

/* Every client connection is a descriptor: take what the hard limit allows (HTTP_MAX_CONNECTIONS caps use). */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_warn(COMP, "cannot raise the descriptor limit: %s", strerror(errno));
	}
}

int serve_run(const struct config *c)
{
	struct server s;
	struct errbuf err;
	int rc = EXIT_FAIL;

	memset(&s, 0, sizeof(s));
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	memset(&err, 0, sizeof(err));
	if (!build(&s, c, &err)) {
		log_error(COMP, "%s", err.msg);
		rc = err.usage ? EXIT_USAGE : EXIT_FAIL;
		goto out;
	}
	s.check = evtimer_new(s.svc.base, on_check, &s);
	s.sigterm = evsignal_new(s.svc.base, SIGTERM, on_signal, &s);
	s.sigint = evsignal_new(s.svc.base, SIGINT, on_signal, &s);
	evsignal_add(s.sigterm, NULL);
	evsignal_add(s.sigint, NULL);
	s.sighup = evsignal_new(s.svc.base, SIGHUP, on_sighup, &s);
	evsignal_add(s.sighup, NULL);
	outbox_start_worker(s.svc.outbox);
	announce(&s);
	on_check(-1, 0, &s);
	event_base_dispatch(s.svc.base);
	rc = EXIT_OK;
out:
	teardown(&s);
	return rc;
}
