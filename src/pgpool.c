#include "pgpool.h"

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "pgconn.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define COMP "postgres"
#define QUEUE_SWEEP_MS 250   /* how often statements waiting for a connection are checked against their deadline */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define PREPARED_MAX 16
#define ORPHANS_MAX 32
/*
 * A session's generic plans (pg_stmt.generic) are made again after its 16th
 * run of such statements, its 32nd, 64th, ... and then every 1024th: a plan
 * made while a table was nearly empty (sequential scans, hash joins) is not
 * kept while the statements counted grow the table more than about twice.
 * Postgres also plans again after each ANALYZE of a table the plan reads.
 */
#define REPLAN_FIRST 16
#define REPLAN_EVERY_MAX 1024

struct pg_job {
	TAILQ_ENTRY(pg_job) link;
	struct pgpool *pool;
	const struct pg_stmt *stmt; /* prepared once per connection, or NULL */
	char *sql;
	int nparams;
	char **params;
	int *lengths;
	int *formats;
	pg_done_fn done;
	void *arg;
	struct event *defer; /* a failure delivered on the next loop turn */
	char why[256];
	int64_t queued_ms;   /* when it began waiting for a connection */
	int64_t sent_ms;     /* when it was first sent (pg_outcome.sent_ms) */
};

enum conn_state { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY };

struct pg_conn {
	struct pgpool *pool;
	int index;
	PGconn *conn;
	enum conn_state state;
	struct event *io;       /* the socket, armed for what libpq waits for */
	struct event *timer;    /* connect or statement deadline, or the reconnect delay */
	long backoff_ms;
	struct pg_job *job;     /* while C_BUSY */
	PGresult *result;       /* the statement's error, or its last result */
	bool preparing;         /* the job's statement is prepared ahead of it, in its pipeline */
	const struct pg_stmt *prepared[PREPARED_MAX];
	int nprepared;
	bool generic_mode;      /* the session's plan_cache_mode is force_generic_plan */
	bool setting_mode;      /* the job's plan_cache_mode is set ahead of it, in its pipeline */
	int syncs;              /* pipeline syncs still to come back (0: not in pipeline mode) */
	bool step_ended;        /* the last thing read was the end of a pipeline query's results */
	uint64_t executed;      /* generic statements run on this session */
	uint64_t replan_at;     /* when `executed` reaches it, the session's plans are discarded */
};

TAILQ_HEAD(job_list, pg_job);

struct pgpool {
	struct event_base *base;
	struct pgpool_opts o;
	char *conninfo;
	char *options;          /* the conninfo's options plus our statement_timeout */
	struct pg_conn *conns;
	struct job_list queue;
	struct job_list deferred;
	struct pgpool_stats stats;
	bool freeing;
	bool session_over;        /* one_session: the session went; nothing runs again */
	bool outage_logged;
	char last_error[384];     /* why the last connection went away */
	struct ready_wait *ready_wait;
	struct event *sweep;      /* fails statements that waited for a connection past their deadline */
	char connect_timeout_s[24], tcp_user_timeout[24], keepalives_idle[24];
	int orphans[ORPHANS_MAX];  /* backends of connections dropped mid-statement, still to be ended */
	int norphans;
	int orphans_sent;         /* how many of them the statement in flight ends (0: none in flight) */
};

static void dispatch(struct pgpool *p);
static struct pg_job *job_new(struct pgpool *p, const struct pg_stmt *stmt, const char *sql, int nparams,
			      const struct pg_param *params, pg_done_fn done, void *arg, bool *too_big);
static void conn_start(struct pg_conn *c);
static void on_io(evutil_socket_t fd, short what, void *arg);
static void ready_wait_end(struct pgpool *p, bool ready, const char *why);

static void job_free(struct pg_job *j)
{
	int i;

	for (i = 0; i < j->nparams; i++)
		free(j->params[i]);
	free(j->params);
	free(j->lengths);
	free(j->formats);
	free(j->sql);
	if (j->defer)
		event_free(j->defer);
	free(j);
}

static void job_fail(struct pg_job *j, bool unavailable, const char *why)
{
	struct pg_outcome o;

	memset(&o, 0, sizeof(o));
	o.unavailable = unavailable;
	snprintf(o.error, sizeof(o.error), "%s", why);
	j->pool->stats.failures++;
	j->done(&o, j->arg);
	job_free(j);
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct pg_job *j = arg;

	(void)fd, (void)what;
	TAILQ_REMOVE(&j->pool->deferred, j, link);
	job_fail(j, true, j->why);
}

/* Fails a job on the next loop turn: callbacks never run inside pgpool_query. */
static void fail_later(struct pgpool *p, struct pg_job *j, const char *why)
{
	struct timeval now = {0, 0};

	snprintf(j->why, sizeof(j->why), "%s", why);
	j->defer = evtimer_new(p->base, on_deferred, j);
	TAILQ_INSERT_TAIL(&p->deferred, j, link);
	evtimer_add(j->defer, &now);
}

bool pg_state_is_transient(const char *sqlstate)
{
	/*
	 * The server is there but cannot do it now: a lock not granted in time
	 * (55P03), the statement timed out (57014), a read-only server or standby
	 * (25006), no disk or memory (53xxx), shutting down or restarting (57P0x),
	 * the connection (08xxx), a serialization failure or deadlock (40xxx).
	 * Trying again later may work; the client is told 503.
	 */
	static const char *const prefixes[] = {"55P03", "57014", "25006", "53", "57P0", "08", "40"};
	size_t i;

	for (i = 0; i < ARRAY_LEN(prefixes); i++)
		if (strncmp(sqlstate, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

/* Statements that waited for a connection past their deadline give up: unavailable. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct pgpool *p = arg;
	struct timeval tv = {0, QUEUE_SWEEP_MS * 1000};
	int64_t now = clock_mono_ms();
	struct pg_job *j, *next;
	char why[160];

	(void)fd, (void)what;
	for (j = TAILQ_FIRST(&p->queue); j; j = next) {
		next = TAILQ_NEXT(j, link);
		if (now - j->queued_ms < p->o.query_timeout_ms)
			continue;
		TAILQ_REMOVE(&p->queue, j, link);
		p->stats.queued--;
		snprintf(why, sizeof(why), "no connection to postgres came free in %ld ms (every one is busy or stuck)",
			 p->o.query_timeout_ms);
		job_fail(j, true, why);
	}
	if (!TAILQ_EMPTY(&p->queue))
		evtimer_add(p->sweep, &tv);
}

static int up_count(const struct pgpool *p)
{
	int i, n = 0;

	for (i = 0; i < p->o.size; i++)
		n += p->conns[i].state == C_IDLE || p->conns[i].state == C_BUSY;
	return n;
}

static void arm_io(struct pg_conn *c, short what)
{
	event_del(c->io);
	event_assign(c->io, c->pool->base, PQsocket(c->conn), what, on_io, c);
	event_add(c->io, NULL);
}

static void arm_timer(struct pg_conn *c, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(c->timer, &tv);
}

/* ---- connection life ---------------------------------------------------- */

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg);

/* Nobody is left to run what waits for a connection: it fails now, with `why`. */
static void fail_queued(struct pgpool *p, const char *why)
{
	struct pg_job *j;

	while ((j = TAILQ_FIRST(&p->queue)) != NULL) {
		TAILQ_REMOVE(&p->queue, j, link);
		p->stats.queued--;
		job_fail(j, true, why);
	}
}

/* The connection is gone (or never came): fail its statement, try again later. */
static void conn_lost(struct pg_conn *c, const char *why)
{
	struct pgpool *p = c->pool;
	char line[384];
	struct pg_job *j;
	bool was_up = c->state == C_IDLE || c->state == C_BUSY;

	if (p->o.one_session && was_up && !p->freeing) {
		char cause[300];

		pg_one_line(why, cause, sizeof(cause));
		snprintf(line, sizeof(line), "the Postgres session was lost (a new one would not hold its locks): %s",
			 cause);
		p->session_over = true;
	} else {
		pg_one_line(why, line, sizeof(line));
	}
	snprintf(p->last_error, sizeof(p->last_error), "%s", line);
	event_del(c->io);
	evtimer_del(c->timer);
	if (c->result) {
		PQclear(c->result);
		c->result = NULL;
	}
	if (c->conn) {
		PQfinish(c->conn);
		c->conn = NULL;
	}
	c->state = C_DOWN;
	c->nprepared = 0;
	c->preparing = false;
	c->setting_mode = false;
	c->syncs = 0;
	c->step_ended = false;
	if ((j = c->job) != NULL) {
		c->job = NULL;
		job_fail(j, true, line);
	}
	if (p->freeing)
		return;
	if (p->session_over) {
		fail_queued(p, line);
		if (p->norphans == 0) {
			log_error(COMP, "%s; not reconnecting", line);
			return;
		}
		/*
		 * Dropped at its deadline: its backend may still be there, holding the
		 * session's locks. A new connection is made only to end it (dispatch's
		 * chore); no statement runs on it (submit refuses them).
		 */
		log_error(COMP, "%s; reconnecting only to end its backend (pid %d), which may still hold them", line,
			  p->orphans[0]);
	} else if (up_count(p) == 0) {
		if (!p->outage_logged)
			log_error(COMP, "postgres is unavailable: %s; retrying in the background", line);
		p->outage_logged = true;
		fail_queued(p, line);
	} else {
		log_warn(COMP, "connection %d lost: %s; %d of %d still up", c->index, line, up_count(p), p->o.size);
	}
	evtimer_assign(c->timer, p->base, on_reconnect_timer, c);
	arm_timer(c, c->backoff_ms);
	c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	conn_start(arg);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct pg_conn *c = arg;

	(void)fd, (void)what;
	/*
	 * The connection is dropped, not cancelled: libpq 15's PQcancel would block
	 * the loop on a server that does not answer. Its backend may still be there,
	 * though (only this connection stalled, or the server is slow), running the
	 * statement or holding its locks: the next connection that works ends it
	 * (end_orphans).
	 */
	if (c->state == C_BUSY && c->pool->norphans < ORPHANS_MAX && PQbackendPID(c->conn) > 0)
		c->pool->orphans[c->pool->norphans++] = PQbackendPID(c->conn);
	conn_lost(c, c->state == C_CONNECTING ? "no answer while connecting" : "no answer to a statement in time");
}

static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	log_debug(COMP, "%s", message);
}

static void conn_ready(struct pg_conn *c)
{
	struct pgpool *p = c->pool;
	char why[256];

	evtimer_del(c->timer);
	if (!pg_encoding_ok(c->conn, why, sizeof(why))) {
		conn_lost(c, why); /* said in the log and /readyz; retried, as the database may be recreated */
		return;
	}
	if (PQsetnonblocking(c->conn, 1) != 0) {
		conn_lost(c, PQerrorMessage(c->conn));
		return;
	}
	PQsetNoticeProcessor(c->conn, ignore_notice, NULL);
	c->state = C_IDLE;
	c->backoff_ms = BACKOFF_MIN_MS;
	c->generic_mode = false;
	c->executed = 0;
	c->replan_at = REPLAN_FIRST;
	if (p->outage_logged) {
		log_info(COMP, "postgres is back (connection %d)", c->index);
		p->outage_logged = false;
	}
	/* Idle connections are watched too: a server that goes away is noticed at once. */
	arm_io(c, EV_READ);
	dispatch(p);
}

static void connect_step(struct pg_conn *c)
{
	switch (PQconnectPoll(c->conn)) {
	case PGRES_POLLING_READING:
		arm_io(c, EV_READ);
		break;
	case PGRES_POLLING_WRITING:
		arm_io(c, EV_WRITE);
		break;
	case PGRES_POLLING_OK:
		conn_ready(c);
		break;
	default:
		conn_lost(c, PQerrorMessage(c->conn));
		break;
	}
}

static void conn_start(struct pg_conn *c)
{
	struct pgpool *p = c->pool;
	/*
	 * A server that stops answering (a partition drops packets, no RST) is
	 * noticed: unacknowledged data after tcp_user_timeout, an idle connection by
	 * keepalives, a connect attempt by connect_timeout (and our own deadline).
	 */
	const char *keys[] = {"dbname", "fallback_application_name", "options", "keepalives", "keepalives_idle",
			      "keepalives_interval", "keepalives_count", "connect_timeout", "tcp_user_timeout",
			      PG_CLIENT_ENCODING_KEY, NULL};
	const char *vals[] = {p->conninfo, p->o.application_name, p->options, "1", p->keepalives_idle, "2", "3",
			      p->connect_timeout_s, p->tcp_user_timeout, PG_CLIENT_ENCODING, NULL};

	p->stats.reconnects += c->state == C_DOWN && c->conn == NULL;
	c->conn = PQconnectStartParams(keys, vals, 1);
	if (!c->conn)
		abort(); /* only on out of memory */
	c->state = C_CONNECTING;
	if (PQstatus(c->conn) == CONNECTION_BAD) {
		conn_lost(c, PQerrorMessage(c->conn));
		return;
	}
	evtimer_assign(c->timer, p->base, on_deadline, c);
	arm_timer(c, p->o.connect_timeout_ms);
	arm_io(c, EV_WRITE); /* PQconnectPoll starts as if it had asked for writing */
}

/* ---- statements ------------------------------------------------------------ */

static void statement_done(struct pg_conn *c)
{
	struct pg_job *j = c->job;
	struct pg_outcome o;
	PGresult *res;
	ExecStatusType st = c->result ? PQresultStatus(c->result) : PGRES_FATAL_ERROR;

	evtimer_del(c->timer);
	c->job = NULL;
	c->state = C_IDLE;
	/* Ours until the callback returns: what it submits may run on this connection, and lose it. */
	res = c->result;
	c->result = NULL;
	memset(&o, 0, sizeof(o));
	o.sent_ms = j->sent_ms;
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		o.res = res;
	} else if (res) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		pg_result_error(res, o.error, sizeof(o.error));
		snprintf(o.sqlstate, sizeof(o.sqlstate), "%s", state ? state : "");
		o.unavailable = pg_state_is_transient(o.sqlstate);
		c->pool->stats.failures++;
	} else {
		snprintf(o.error, sizeof(o.error), "the statement returned no result");
	}
	j->done(&o, j->arg);
	PQclear(res);
	job_free(j);
	if (c->state == C_IDLE && c->conn)
		arm_io(c, EV_READ);
	dispatch(c->pool);
}

static bool is_error(const PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);

	return st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE;
}

/*
 * A query of the job's pipeline has all its results. The SET's are not the
 * job's: it ran in a transaction of its own, and the statement runs either
 * way (a failed SET leaves the mode as it was). A failed PREPARE's error is:
 * the statement after it was not run.
 */
static void step_done(struct pg_conn *c)
{
	bool ok = c->result && PQresultStatus(c->result) == PGRES_COMMAND_OK;

	if (c->setting_mode) {
		c->setting_mode = false;
		if (ok)
			c->generic_mode = !c->generic_mode;
		else
			log_warn(COMP, "connection %d: plan_cache_mode not set: %s", c->index,
				 c->result ? PQresultErrorMessage(c->result) : "no result");
		PQclear(c->result);
		c->result = NULL;
	} else if (c->preparing) {
		c->preparing = false;
		if (!ok)
			return;
		/* The program has fewer than PREPARED_MAX such statements. */
		if (c->nprepared == PREPARED_MAX)
			abort();
		c->prepared[c->nprepared++] = c->job->stmt;
		PQclear(c->result);
		c->result = NULL;
	}
	/* else the statement's own results are in; its sync comes next. */
}

/* Reads what has arrived; finishes the statement when libpq has all of it. */
static void read_results(struct pg_conn *c)
{
	if (!PQconsumeInput(c->conn)) {
		conn_lost(c, PQerrorMessage(c->conn));
		return;
	}
	while (!PQisBusy(c->conn)) {
		PGresult *r = PQgetResult(c->conn);

		if (!r) {
			if (c->syncs == 0) {
				statement_done(c);
				return;
			}
			/* Between a pipeline's queries; twice in a row, libpq has lost the stream. */
			if (c->step_ended || PQstatus(c->conn) == CONNECTION_BAD) {
				conn_lost(c, "the pipeline's results stopped before its sync");
				return;
			}
			c->step_ended = true;
			step_done(c);
			continue;
		}
		c->step_ended = false;
		if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			if (--c->syncs > 0)
				continue;
			if (!PQexitPipelineMode(c->conn)) {
				conn_lost(c, PQerrorMessage(c->conn));
				return;
			}
			statement_done(c);
			return;
		}
		/* Keep the first error (a pipeline's later steps are then PGRES_PIPELINE_ABORTED), else the last result. */
		if (c->result && is_error(c->result)) {
			PQclear(r);
		} else {
			PQclear(c->result);
			c->result = r;
		}
	}
	arm_io(c, EV_READ);
}

static void flush_then_read(struct pg_conn *c)
{
	int r = PQflush(c->conn);

	if (r < 0)
		conn_lost(c, PQerrorMessage(c->conn));
	else
		arm_io(c, r == 1 ? EV_READ | EV_WRITE : EV_READ);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	struct pg_conn *c = arg;

	(void)fd;
	switch (c->state) {
	case C_CONNECTING:
		connect_step(c);
		break;
	case C_IDLE:
		/* Nothing was asked: this is the server going away (or a notice). */
		if (!PQconsumeInput(c->conn) || PQstatus(c->conn) == CONNECTION_BAD)
			conn_lost(c, PQerrorMessage(c->conn));
		else
			arm_io(c, EV_READ);
		break;
	case C_BUSY:
		if (what & EV_WRITE) {
			flush_then_read(c);
			if (c->state != C_BUSY || !(what & EV_READ))
				break;
		}
		read_results(c);
		break;
	case C_DOWN:
		break;
	}
}

static bool is_prepared(const struct pg_conn *c, const struct pg_stmt *stmt)
{
	int i;

	for (i = 0; i < c->nprepared; i++)
		if (c->prepared[i] == stmt)
			return true;
	return false;
}

static const char set_generic_sql[] = "SET plan_cache_mode = force_generic_plan";
static const char set_custom_sql[] = "SET plan_cache_mode = force_custom_plan";

/*
 * Sends the job's statement, in one round trip with what it needs first: the
 * session's plan mode (a statement with parameters runs in the mode it asks
 * for: plan_cache_mode is read at each run) and the statement prepared. Those
 * go ahead of it in a pipeline; the SET has a sync of its own, so that a
 * failing statement (its implicit transaction rolled back) does not undo it.
 */
static bool send_statement(struct pg_conn *c, struct pg_job *j)
{
	bool generic = j->stmt && j->stmt->generic;
	bool set = j->nparams > 0 && generic != c->generic_mode;
	bool prepare = j->stmt && !is_prepared(c, j->stmt);
	int ok = 1;

	if (set || prepare)
		ok = PQenterPipelineMode(c->conn);
	if (ok && set) {
		c->setting_mode = true;
		ok = PQsendQueryParams(c->conn, generic ? set_generic_sql : set_custom_sql, 0, NULL, NULL, NULL, NULL,
				       0) &&
		     PQpipelineSync(c->conn);
		c->syncs += ok;
	}
	if (ok && prepare) {
		/* The server infers parameter types from the casts in the text. */
		c->preparing = true;
		ok = PQsendPrepare(c->conn, j->stmt->name, j->stmt->sql, j->nparams, NULL);
	}
	if (ok && j->stmt) {
		c->executed += generic;
		ok = PQsendQueryPrepared(c->conn, j->stmt->name, j->nparams, (const char *const *)j->params,
					 j->lengths, j->formats, 0);
	} else if (ok) {
		ok = PQsendQueryParams(c->conn, j->sql, j->nparams, NULL, (const char *const *)j->params, j->lengths,
				       j->formats, 0);
	}
	if (ok && (set || prepare)) {
		ok = PQpipelineSync(c->conn);
		c->syncs += ok;
	}
	if (!ok)
		conn_lost(c, PQerrorMessage(c->conn));
	return ok;
}

static void send_job(struct pg_conn *c, struct pg_job *j)
{
	struct pgpool *p = c->pool;

	c->job = j;
	c->state = C_BUSY;
	p->stats.statements++;
	if (!j->sent_ms)
		j->sent_ms = clock_mono_ms();
	if (!send_statement(c, j))
		return;
	evtimer_assign(c->timer, p->base, on_deadline, c);
	arm_timer(c, p->o.query_timeout_ms);
	flush_then_read(c);
}

/* ---- backends left behind ------------------------------------------------------------ */

/*
 * Ends the backends of connections dropped at their deadline (on_deadline) with
 * pg_terminate_backend: a cancel would not reach a backend blocked writing to a
 * stalled client, nor release what an open transaction holds. Only backends of
 * our user that started before the deadline's statement was sent: a pid the
 * server gave out again since is left alone.
 */
static const char end_orphans_sql[] =
	"WITH left_behind AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[]) "
	"AND usename = current_user AND backend_start < now() - $2::int * interval '1 millisecond') "
	"SELECT pid FROM left_behind WHERE pg_terminate_backend(pid)";

static void on_orphans_ended(const struct pg_outcome *o, void *arg)
{
	struct pgpool *p = arg;
	int n = p->orphans_sent;

	p->orphans_sent = 0;
	if (!o->res) {
		log_warn(COMP, "could not end the %d backend%s of stuck connections (tried again on the next "
			 "connection free): %s", n, n == 1 ? "" : "s", o->error);
		return;
	}
	memmove(p->orphans, p->orphans + n, (size_t)(p->norphans - n) * sizeof(p->orphans[0]));
	p->norphans -= n;
	p->stats.backends_ended += (uint64_t)PQntuples(o->res);
	log_info(COMP, "ended %d backend%s of stuck connections (of %d; the others had gone)", PQntuples(o->res),
		 PQntuples(o->res) == 1 ? "" : "s", n);
}

static void end_orphans(struct pg_conn *c)
{
	struct pgpool *p = c->pool;
	char pids[ORPHANS_MAX * 12 + 3], ms[24];
	struct pg_param params[2];
	size_t len = 0;
	bool too_big = false;
	int i;

	for (i = 0; i < p->norphans; i++)
		len += (size_t)snprintf(pids + len, sizeof(pids) - len, "%c%d", i ? ',' : '{', p->orphans[i]);
	snprintf(pids + len, sizeof(pids) - len, "}");
	snprintf(ms, sizeof(ms), "%ld", p->o.query_timeout_ms);
	params[0] = (struct pg_param){.data = pids, .len = strlen(pids)};
	params[1] = (struct pg_param){.data = ms, .len = strlen(ms)};
	p->orphans_sent = p->norphans;
	send_job(c, job_new(p, NULL, end_orphans_sql, 2, params, on_orphans_ended, p, &too_big));
}

/* ---- plans made again ------------------------------------------------------------------ */

static const char discard_plans_sql[] = "DISCARD PLANS";

static void on_plans_discarded(const struct pg_outcome *o, void *arg)
{
	(void)arg;
	if (!o->res)
		log_debug(COMP, "could not discard the session's plans (they are kept): %s", o->error);
}

static bool replan_due(const struct pg_conn *c)
{
	return c->executed >= c->replan_at;
}

/* Cached plans go; each statement keeps its text and parse, and is planned at its next run. */
static void discard_plans(struct pg_conn *c)
{
	bool too_big = false;

	c->replan_at = c->executed + (c->executed < REPLAN_EVERY_MAX ? c->executed : REPLAN_EVERY_MAX);
	send_job(c, job_new(c->pool, NULL, discard_plans_sql, 0, NULL, on_plans_discarded, NULL, &too_big));
}

/*
 * The idle connection that runs the job with the least ahead of it: one
 * already in the plan mode it needs (else a SET goes first, and the next
 * statement may need it back) and with its statement prepared (else a PREPARE
 * goes first); the first of the best.
 */
static struct pg_conn *idle_conn_for(struct pgpool *p, const struct pg_job *j)
{
	struct pg_conn *best = NULL;
	int i, score, best_score = -1;

	for (i = 0; i < p->o.size; i++) {
		struct pg_conn *c = &p->conns[i];

		if (c->state != C_IDLE)
			continue;
		score = 2 * (j->nparams == 0 || (j->stmt && j->stmt->generic) == c->generic_mode) +
			(j->stmt && is_prepared(c, j->stmt));
		if (score > best_score) {
			best = c;
			best_score = score;
		}
	}
	return best;
}

static void dispatch(struct pgpool *p)
{
	struct pg_conn *c;
	struct pg_job *j;
	int i;

	/* Chores first, on idle connections that owe them. */
	for (i = 0; i < p->o.size; i++) {
		c = &p->conns[i];
		if (c->state != C_IDLE)
			continue;
		if (p->norphans > 0 && p->orphans_sent == 0)
			end_orphans(c);
		else if (replan_due(c))
			discard_plans(c);
	}
	while ((j = TAILQ_FIRST(&p->queue)) != NULL && (c = idle_conn_for(p, j)) != NULL) {
		TAILQ_REMOVE(&p->queue, j, link);
		p->stats.queued--;
		send_job(c, j);
	}
}

static struct pg_job *job_new(struct pgpool *p, const struct pg_stmt *stmt, const char *sql, int nparams,
			      const struct pg_param *params, pg_done_fn done, void *arg, bool *too_big)
{
	struct pg_job *j = xcalloc(1, sizeof(*j));
	size_t n = (size_t)(nparams ? nparams : 1);
	int i;

	j->pool = p;
	j->stmt = stmt;
	j->sql = xstrdup(sql);
	j->nparams = nparams;
	j->params = xcalloc(n, sizeof(char *));
	j->lengths = xcalloc(n, sizeof(int));
	j->formats = xcalloc(n, sizeof(int));
	for (i = 0; i < nparams; i++) {
		if (params[i].len > INT_MAX) /* libpq counts a parameter's length in an int */
			*too_big = true;
		if (params[i].handed)
			j->params[i] = params[i].handed;
		else if (params[i].data)
			j->params[i] = params[i].binary ? memcpy(xmalloc(params[i].len ? params[i].len : 1), params[i].data,
								  params[i].len)
							 : xstrndup(params[i].data, params[i].len);
		j->lengths[i] = params[i].len > INT_MAX ? 0 : (int)params[i].len;
		j->formats[i] = params[i].binary;
	}
	j->done = done;
	j->arg = arg;
	return j;
}

static void submit(struct pgpool *p, const struct pg_stmt *stmt, const char *sql, int nparams,
		   const struct pg_param *params, pg_done_fn done, void *arg)
{
	bool too_big = false;
	struct pg_job *j = job_new(p, stmt, sql, nparams, params, done, arg, &too_big);

	if (p->freeing) {
		job_fail(j, true, "shutting down");
		return;
	}
	if (too_big) {
		fail_later(p, j, "a parameter is over 2 GiB, more than libpq can send");
		return;
	}
	if (p->session_over) {
		fail_later(p, j, p->last_error);
		return;
	}
	if (up_count(p) == 0) {
		fail_later(p, j, "postgres is unavailable (no connection up)");
		return;
	}
	if (p->stats.queued >= p->o.queue_max) {
		fail_later(p, j, "too many statements waiting for postgres");
		return;
	}
	j->queued_ms = clock_mono_ms();
	TAILQ_INSERT_TAIL(&p->queue, j, link);
	p->stats.queued++;
	dispatch(p);
	if (!TAILQ_EMPTY(&p->queue) && !evtimer_pending(p->sweep, NULL)) {
		struct timeval tv = {0, QUEUE_SWEEP_MS * 1000};

		evtimer_add(p->sweep, &tv);
	}
}

void pgpool_query_params(struct pgpool *p, const char *sql, int nparams, const struct pg_param *params,
			 pg_done_fn done, void *arg)
{
	submit(p, NULL, sql, nparams, params, done, arg);
}

void pgpool_execute(struct pgpool *p, const struct pg_stmt *stmt, int nparams, const struct pg_param *params,
		    pg_done_fn done, void *arg)
{
	submit(p, stmt, stmt->sql, nparams, params, done, arg);
}

void pgpool_query(struct pgpool *p, const char *sql, int nparams, const char *const *params, pg_done_fn done,
		  void *arg)
{
	struct pg_param *pp = xcalloc((size_t)(nparams ? nparams : 1), sizeof(*pp));
	int i;

	for (i = 0; i < nparams; i++) {
		pp[i].data = params[i];
		pp[i].len = params[i] ? strlen(params[i]) : 0;
	}
	pgpool_query_params(p, sql, nparams, pp, done, arg);
	free(pp);
}

/* ---- binary arrays ---------------------------------------------------------------- */

#define PG_ARRAY_HEADER 20 /* ndim, flags, element oid, then one dimension: size, lower bound */

static void put_u32(struct buf *b, uint32_t v)
{
	char be[4] = {(char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};

	buf_append(b, be, 4);
}

static void set_u32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24), p[1] = (char)(v >> 16), p[2] = (char)(v >> 8), p[3] = (char)v;
}

void pg_array_begin(struct pg_array *a, struct buf *b, uint32_t elem_oid)
{
	a->b = b;
	a->n = 0;
	a->has_null = false;
	buf_reset(b);
	put_u32(b, 1);
	put_u32(b, 0);
	put_u32(b, elem_oid);
	put_u32(b, 0);
	put_u32(b, 1);
}

void pg_array_text(struct pg_array *a, const char *s, size_t len)
{
	a->n++;
	if (!s) {
		a->has_null = true;
		put_u32(a->b, UINT32_MAX); /* -1: NULL */
		return;
	}
	put_u32(a->b, (uint32_t)len);
	buf_append(a->b, s, len);
}

void pg_array_int4(struct pg_array *a, int32_t v)
{
	a->n++;
	put_u32(a->b, 4);
	put_u32(a->b, (uint32_t)v);
}

void pg_array_int8(struct pg_array *a, int64_t v)
{
	a->n++;
	put_u32(a->b, 8);
	put_u32(a->b, (uint32_t)((uint64_t)v >> 32));
	put_u32(a->b, (uint32_t)v);
}

void pg_array_bool(struct pg_array *a, bool v)
{
	char c = v ? 1 : 0;

	a->n++;
	put_u32(a->b, 1);
	buf_append(a->b, &c, 1);
}

void pg_array_end(struct pg_array *a)
{
	set_u32(a->b->data + 4, a->has_null);
	set_u32(a->b->data + 12, a->n);
}

struct pg_param pg_array_param(const struct buf *b)
{
	return (struct pg_param){.data = b->data, .len = b->len, .binary = true};
}

/* ---- results ------------------------------------------------------------------- */

int pg_rows(const struct pg_outcome *o)
{
	return o->res ? PQntuples(o->res) : 0;
}

const char *pg_text(const struct pg_outcome *o, int row, int col)
{
	return PQgetisnull(o->res, row, col) ? NULL : PQgetvalue(o->res, row, col);
}

int64_t pg_int8(const struct pg_outcome *o, int row, int col)
{
	return strtoll(PQgetvalue(o->res, row, col), NULL, 10);
}

bool pg_bool(const struct pg_outcome *o, int row, int col)
{
	return PQgetvalue(o->res, row, col)[0] == 't';
}

/* ---- the pool ----------------------------------------------------------------- */

/*
 * No JIT: our statements are key lookups of a few hundred rows, but their
 * estimated cost crosses jit_above_cost as the tables grow, and compiling
 * them took 1.3-1.5 s of a restore page's statement (auto_explain, 100,000
 * rows); the conninfo's own `options` may turn it back on. Then ours:
 * statement_timeout, custom plans (a plan per run) unless a statement asks
 * for a generic one (send_step), and how the embeddings written are
 * compressed.
 */
static char *merge_options(const char *conninfo, long timeout_ms, long lock_timeout_ms, const char *toast)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL), *o;
	struct buf b = BUF_INIT;

	buf_printf(&b, "-c jit=off ");
	for (o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, "options") == 0 && o->val && *o->val)
			buf_printf(&b, "%s ", o->val);
	/* Read committed whatever the database's default: the statements' rules are written for it. */
	buf_printf(&b, "-c statement_timeout=%ld -c lock_timeout=%ld -c plan_cache_mode=force_custom_plan"
		   " -c default_transaction_isolation=read\\ committed", timeout_ms, lock_timeout_ms);
	if (toast)
		buf_printf(&b, " -c default_toast_compression=%s", toast);
	PQconninfoFree(opts);
	return buf_steal(&b);
}

struct pgpool *pgpool_new(struct event_base *base, const struct pgpool_opts *o, struct errbuf *err)
{
	struct pgpool *p;
	int i;

	if (!pg_conninfo_valid(o->conninfo, err))
		return NULL;
	p = xcalloc(1, sizeof(*p));
	p->base = base;
	p->o = *o;
	p->conninfo = xstrdup(o->conninfo);
	p->o.conninfo = p->conninfo;
	p->o.application_name = o->application_name ? o->application_name : "abilitysync";
	if (p->o.query_timeout_ms <= 0)
		p->o.query_timeout_ms = o->statement_timeout_ms + 2000;
	if (p->o.connect_timeout_ms <= 0)
		p->o.connect_timeout_ms = 5000;
	if (p->o.lock_timeout_ms <= 0)
		p->o.lock_timeout_ms = o->statement_timeout_ms;
	if (p->o.tcp_user_timeout_ms <= 0)
		p->o.tcp_user_timeout_ms = 10000;
	p->options = merge_options(o->conninfo, o->statement_timeout_ms, p->o.lock_timeout_ms, o->toast_compression);
	/* libpq's connect_timeout is whole seconds, at least 2; our own deadline is exact. */
	snprintf(p->connect_timeout_s, sizeof(p->connect_timeout_s), "%ld",
		 (p->o.connect_timeout_ms + 999) / 1000 < 2 ? 2 : (p->o.connect_timeout_ms + 999) / 1000);
	snprintf(p->tcp_user_timeout, sizeof(p->tcp_user_timeout), "%ld", p->o.tcp_user_timeout_ms);
	snprintf(p->keepalives_idle, sizeof(p->keepalives_idle), "%ld",
		 p->o.tcp_user_timeout_ms / 1000 < 1 ? 1 : p->o.tcp_user_timeout_ms / 1000);
	p->sweep = evtimer_new(base, on_sweep, p);
	TAILQ_INIT(&p->queue);
	TAILQ_INIT(&p->deferred);
	p->conns = xcalloc((size_t)o->size, sizeof(*p->conns));
	p->stats.size = o->size;
	for (i = 0; i < o->size; i++) {
		struct pg_conn *c = &p->conns[i];

		c->pool = p;
		c->index = i;
		c->backoff_ms = BACKOFF_MIN_MS;
		c->io = event_new(base, -1, 0, on_io, c);
		c->timer = evtimer_new(base, on_deadline, c);
		conn_start(c);
	}
	return p;
}

void pgpool_free(struct pgpool *p)
{
	struct pg_job *j;
	int i;

	if (!p)
		return;
	p->freeing = true;
	if (p->ready_wait)
		ready_wait_end(p, false, "shutting down");
	while ((j = TAILQ_FIRST(&p->deferred)) != NULL) {
		TAILQ_REMOVE(&p->deferred, j, link);
		job_fail(j, true, j->why);
	}
	while ((j = TAILQ_FIRST(&p->queue)) != NULL) {
		TAILQ_REMOVE(&p->queue, j, link);
		job_fail(j, true, "shutting down");
	}
	for (i = 0; i < p->o.size; i++) {
		struct pg_conn *c = &p->conns[i];

		if (c->conn)
			conn_lost(c, "shutting down");
		event_free(c->io);
		event_free(c->timer);
	}
	event_free(p->sweep);
	free(p->conns);
	free(p->options);
	free(p->conninfo);
	free(p);
}

/* ---- waiting for the first connection ------------------------------------------ */

struct ready_wait {
	struct pgpool *p;
	struct event *tick;
	int64_t deadline;
	pg_ready_fn done;
	void *arg;
};

static void ready_wait_end(struct pgpool *p, bool ready, const char *why)
{
	struct ready_wait *w = p->ready_wait;

	p->ready_wait = NULL;
	event_free(w->tick);
	w->done(ready, why, w->arg);
	free(w);
}

static void on_ready_tick(evutil_socket_t fd, short what, void *arg)
{
	struct ready_wait *w = arg;
	struct timeval again = {0, 10000};

	(void)fd, (void)what;
	if (up_count(w->p) > 0)
		ready_wait_end(w->p, true, NULL);
	else if (clock_mono_ms() >= w->deadline)
		ready_wait_end(w->p, false, w->p->last_error[0] ? w->p->last_error : "no connection in time");
	else
		evtimer_add(w->tick, &again);
}

void pgpool_wait_ready(struct pgpool *p, long timeout_ms, pg_ready_fn done, void *arg)
{
	struct ready_wait *w = xcalloc(1, sizeof(*w));
	struct timeval now = {0, 0};

	if (p->ready_wait)
		abort(); /* one waiter at a time: a programming error */
	w->p = p;
	w->deadline = clock_mono_ms() + timeout_ms;
	w->done = done;
	w->arg = arg;
	w->tick = evtimer_new(p->base, on_ready_tick, w);
	p->ready_wait = w;
	evtimer_add(w->tick, &now);
}

bool pgpool_ready(const struct pgpool *p)
{
	return !p->session_over && up_count(p) > 0;
}

const char *pgpool_last_error(const struct pgpool *p)
{
	return p->last_error;
}

bool pgpool_ending_backends(const struct pgpool *p)
{
	return p->norphans > 0;
}

void pgpool_get_stats(const struct pgpool *p, struct pgpool_stats *out)
{
	int i;

	*out = p->stats;
	out->up = up_count(p);
	out->busy = 0;
	for (i = 0; i < p->o.size; i++)
		out->busy += p->conns[i].state == C_BUSY;
}

void pgpool_run_until(struct pgpool *p, const bool *flag)
{
	while (!*flag)
		event_base_loop(p->base, EVLOOP_ONCE);
}
