#include "pgconn.h"

#include "buf.h"
#include "clock.h"
#include "hash.h"
#include "log.h"
#include "mem.h"

#include <stdlib.h>
#include <string.h>

bool pg_conninfo_valid(const char *conninfo, struct errbuf *err)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);

	if (!opts) {
		/* libpq's message can quote the string, password included: not echoed. */
		err_set(err, "libpq cannot parse it as postgres://user:pass@host:port/db or key=value pairs");
		PQfreemem(perr);
		return false;
	}
	PQconninfoFree(opts);
	return true;
}

static bool is_url(const char *s)
{
	return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

/* A parameter libpq hides in forms (dispchar '*'): password, sslpassword, and any it adds. */
static bool is_secret_key(const char *key, size_t len)
{
	PQconninfoOption *opts = PQconndefaults(), *o;
	bool secret = len == 8 && strncmp(key, "password", 8) == 0; /* even without the defaults */

	for (o = opts; o && o->keyword && !secret; o++)
		secret = o->dispchar && o->dispchar[0] == '*' && strlen(o->keyword) == len &&
			 strncmp(o->keyword, key, len) == 0;
	PQconninfoFree(opts);
	return secret;
}

/* A URL parameter's name as libpq reads it: percent-decoded. */
static bool is_secret_url_key(const char *key, size_t len)
{
	struct buf k = BUF_INIT;
	size_t i;
	bool secret;

	for (i = 0; i < len; i++) {
		int hi, lo;

		if (key[i] == '%' && i + 2 < len &&
		    (hi = hex_value(key[i + 1])) >= 0 && (lo = hex_value(key[i + 2])) >= 0) {
			buf_putc(&k, (char)(hi << 4 | lo));
			i += 2;
		} else {
			buf_putc(&k, key[i]);
		}
	}
	secret = is_secret_key(buf_cstr(&k), k.len);
	buf_free(&k);
	return secret;
}

/*
 * Copies a URL, replacing user:PASSWORD@ and the value of every secret
 * parameter with ***. libpq ends the userinfo at the first '@' before any '/',
 * a '?' included (postgres://u:a?b@h is user u, password a?b); a password with
 * an '@' of its own not percent-encoded ends at the last one, for the reader.
 * Where a '?' makes the end ambiguous, everything after the user is hidden.
 */
static void redact_url(const char *s, struct buf *out)
{
	const char *auth = strstr(s, "://") + 3;
	const char *slash = strchr(auth, '/');
	const char *limit = slash ? slash : auth + strlen(auth);
	const char *p, *at = NULL, *colon, *end;

	for (p = auth; p < limit; p++)
		if (*p == '@')
			at = p;
	buf_append(out, s, (size_t)(auth - s));
	p = auth;
	if (at && (colon = memchr(auth, ':', (size_t)(at - auth))) != NULL) {
		buf_append(out, auth, (size_t)(colon - auth) + 1);
		buf_puts(out, "***");
		if (memchr(colon, '?', (size_t)(at - colon)))
			return;
		p = at;
	}
	end = strchr(p, '?');
	if (!end)
		end = p + strlen(p);
	buf_append(out, p, (size_t)(end - p));
	for (p = end; *p;) {
		const char *key = p + 1, *amp = strchr(key, '&'), *stop = amp ? amp : key + strlen(key);
		const char *eq = memchr(key, '=', (size_t)(stop - key));

		buf_putc(out, *p); /* '?' or '&' */
		if (eq && is_secret_url_key(key, (size_t)(eq - key))) {
			buf_append(out, key, (size_t)(eq - key) + 1);
			buf_puts(out, "***");
		} else {
			buf_append(out, key, (size_t)(stop - key));
		}
		p = stop;
	}
}

/* Copies key=value pairs, replacing the value of every secret parameter with ***. */
static void redact_kv(const char *s, struct buf *out)
{
	const char *p = s;

	while (*p) {
		const char *key, *val;
		size_t klen;

		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			buf_putc(out, *p++);
		key = p;
		while (*p && *p != '=' && *p != ' ' && *p != '\t')
			p++;
		klen = (size_t)(p - key);
		buf_append(out, key, klen);
		while (*p == ' ' || *p == '\t')
			buf_putc(out, *p++);
		if (*p != '=')
			continue;
		buf_putc(out, *p++);
		while (*p == ' ' || *p == '\t')
			buf_putc(out, *p++);
		val = p;
		if (*p == '\'') {
			for (p++; *p && *p != '\''; p++)
				if (*p == '\\' && p[1])
					p++;
			if (*p)
				p++;
		} else {
			while (*p && *p != ' ' && *p != '\t' && *p != '\n')
				p++;
		}
		if (is_secret_key(key, klen))
			buf_puts(out, "***");
		else
			buf_append(out, val, (size_t)(p - val));
	}
}

char *pg_redact_conninfo(const char *conninfo)
{
	struct buf out = BUF_INIT;

	if (is_url(conninfo))
		redact_url(conninfo, &out);
	else
		redact_kv(conninfo, &out);
	return buf_steal(&out);
}

static const char *opt_value(const PQconninfoOption *opts, const char *key)
{
	for (; opts && opts->keyword; opts++)
		if (strcmp(opts->keyword, key) == 0)
			return opts->val;
	return NULL;
}

char *pg_target(const char *conninfo, const char *host_override)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	struct buf b = BUF_INIT;
	const char *host, *port, *db, *user;

	if (!opts)
		return xstrdup("(unparsable DATABASE_URL)");
	host = host_override && *host_override ? host_override : opt_value(opts, "host");
	port = opt_value(opts, "port");
	db = opt_value(opts, "dbname");
	user = opt_value(opts, "user");
	buf_printf(&b, "%s:%s/%s", host && *host ? host : "localhost", port && *port ? port : "5432",
		   db && *db ? db : (user && *user ? user : "(default)"));
	PQconninfoFree(opts);
	return buf_steal(&b);
}

void pg_one_line(const char *msg, char *out, size_t outlen)
{
	size_t n = 0;
	bool space = false;

	if (!outlen)
		return;
	for (; msg && *msg && n + 1 < outlen; msg++) {
		if (*msg == '\n' || *msg == '\r' || *msg == '\t' || *msg == ' ') {
			space = n > 0;
			continue;
		}
		if (space && n + 2 < outlen)
			out[n++] = ' ';
		space = false;
		out[n++] = *msg;
	}
	out[n] = '\0';
}

void pg_result_error(const PGresult *res, char *out, size_t outlen)
{
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
	struct buf b = BUF_INIT;

	if (!primary) {
		pg_one_line(PQresultErrorMessage(res), out, outlen);
		return;
	}
	buf_printf(&b, "%s: %s (SQLSTATE %s", sev ? sev : "ERROR", primary, state ? state : "?????");
	if (pos)
		buf_printf(&b, ", at character %s", pos);
	buf_putc(&b, ')');
	if (detail)
		buf_printf(&b, "; detail: %s", detail);
	if (hint)
		buf_printf(&b, "; hint: %s", hint);
	pg_one_line(b.data, out, outlen);
	buf_free(&b);
}

bool pg_exec_ok(PGconn *conn, const char *sql, const char *what, struct errbuf *err)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);
	char msg[768];

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
		PQclear(res);
		return true;
	}
	pg_result_error(res, msg, sizeof(msg));
	err_set(err, "%s: %s", what, msg);
	PQclear(res);
	return false;
}

static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	log_debug("postgres", "%s", message);
}

bool pg_encoding_ok(PGconn *conn, char *why, size_t len)
{
	const char *enc = PQparameterStatus(conn, "server_encoding");

	if (enc && strcmp(enc, PG_CLIENT_ENCODING) == 0)
		return true;
	if (enc && strcmp(enc, "SQL_ASCII") == 0)
		snprintf(why, len, "the database's encoding is SQL_ASCII, not UTF8: it would keep abilitysync's UTF-8 "
			 "text unchecked (create the database with ENCODING 'UTF8')");
	else
		snprintf(why, len, "the database's encoding is %s, not UTF8: it would store abilitysync's UTF-8 text "
			 "converted and refuse whole writes for characters it lacks (create the database with ENCODING "
			 "'UTF8')", enc ? enc : "not reported");
	return false;
}

/* One attempt: the conninfo expanded first, our settings after it. */
static PGconn *connect_once(const struct pg_wait_opts *o, int timeout_s)
{
	const char *keys[5], *vals[5];
	char timeout[16];

	snprintf(timeout, sizeof(timeout), "%d", timeout_s);
	keys[0] = "dbname", vals[0] = o->conninfo;
	keys[1] = "connect_timeout", vals[1] = timeout;
	keys[2] = "fallback_application_name", vals[2] = o->application_name ? o->application_name : "abilitysync";
	keys[3] = PG_CLIENT_ENCODING_KEY, vals[3] = PG_CLIENT_ENCODING;
	keys[4] = NULL, vals[4] = NULL;
	return PQconnectdbParams(keys, vals, 1);
}

static PGPing ping_once(const struct pg_wait_opts *o, const char *host, int timeout_s)
{
	const char *keys[4], *vals[4];
	char timeout[16];
	int n = 0;

	snprintf(timeout, sizeof(timeout), "%d", timeout_s);
	keys[n] = "dbname", vals[n++] = o->conninfo;
	if (host)
		keys[n] = "host", vals[n++] = host;
	keys[n] = "connect_timeout", vals[n++] = timeout;
	keys[n] = NULL, vals[n] = NULL;
	return PQpingParams(keys, vals, 1);
}

static const char *ping_text(PGPing p)
{
	switch (p) {
	case PQPING_OK: return "accepting connections";
	case PQPING_REJECT: return "refusing connections (starting up or shutting down)";
	case PQPING_NO_RESPONSE: return "no response (nothing accepting connections there yet)";
	case PQPING_NO_ATTEMPT: return "bad connection parameters";
	}
	return "?";
}

/* The pacing of waits: backoff doubling from 100 ms to 2 s, with jitter. */
struct waiter {
	const struct pg_wait_opts *o;
	const char *comp;
	int64_t start, deadline, backoff;
	int attempt;
};

static int attempt_timeout_s(const struct waiter *w)
{
	int64_t left_ms = w->deadline - clock_mono_ms();

	return left_ms > 10000 ? 10 : left_ms > 2000 ? (int)(left_ms / 1000) : 2;
}

/* Sleeps before the next attempt; false when the deadline has passed. */
static bool wait_more(struct waiter *w, const char *target, const char *why)
{
	int64_t now = clock_mono_ms();
	int64_t sleep_ms;

	if (now >= w->deadline)
		return false;
	sleep_ms = w->backoff / 2 + (int64_t)clock_jitter_ms((uint32_t)(w->backoff / 2));
	if (sleep_ms > w->deadline - now)
		sleep_ms = w->deadline - now;
	log_info(w->comp, "waiting for postgres at %s (attempt %d, %.1f s of %d s): %s; next try in %.1f s",
		 target, w->attempt, (double)(now - w->start) / 1000.0, w->o->wait_s, why, (double)sleep_ms / 1000.0);
	clock_sleep_ms(sleep_ms);
	w->backoff = w->backoff * 2 > 2000 ? 2000 : w->backoff * 2;
	return true;
}

static void gave_up(const struct waiter *w, const char *target, const char *why, struct errbuf *err)
{
	double secs = (double)(clock_mono_ms() - w->start) / 1000.0;

	if (w->o->wait_s > 0)
		err_set(err, "gave up waiting for postgres at %s after %.1f s (%d attempts): %s", target, secs,
			w->attempt, why);
	else
		err_set(err, "cannot connect to postgres at %s: %s (use --wait SECONDS to wait for it)", target, why);
}

/* DB_HOST: wait until that host accepts connections, as the original entrypoint did. */
static bool wait_for_host(struct waiter *w, struct errbuf *err)
{
	char *host = pg_target(w->o->conninfo, w->o->host_override);
	char *target = xmalloc(strlen(host) + 16);
	bool ok = false;

	sprintf(target, "%s (DB_HOST)", host);
	free(host);

	for (w->attempt = 1;; w->attempt++) {
		PGPing p = ping_once(w->o, w->o->host_override, attempt_timeout_s(w));

		if (p == PQPING_OK) {
			ok = true;
			break;
		}
		if (p == PQPING_NO_ATTEMPT) {
			err_set(err, "cannot reach postgres at %s: %s", target, ping_text(p));
			break;
		}
		if (!wait_more(w, target, ping_text(p))) {
			gave_up(w, target, ping_text(p), err);
			break;
		}
	}
	free(target);
	return ok;
}

PGconn *pg_connect_wait(const struct pg_wait_opts *o, struct errbuf *err)
{
	struct waiter w = {o, o->component ? o->component : "postgres", 0, 0, 100, 0};
	char *target = pg_target(o->conninfo, NULL);
	PGconn *conn = NULL;
	char why[512];
	PGPing ping;

	w.start = clock_mono_ms();
	w.deadline = w.start + (int64_t)o->wait_s * 1000;
	if (o->host_override && *o->host_override && !wait_for_host(&w, err))
		goto out;
	for (w.attempt++;; w.attempt++) {
		conn = connect_once(o, attempt_timeout_s(&w));
		if (PQstatus(conn) == CONNECTION_OK) {
			if (!pg_encoding_ok(conn, why, sizeof(why))) {
				err_set(err, "cannot use postgres at %s: %s", target, why);
				PQfinish(conn);
				conn = NULL;
				goto out;
			}
			PQsetNoticeProcessor(conn, ignore_notice, NULL);
			if (w.attempt > 1)
				log_info(w.comp, "postgres at %s is up after %.1f s (%d attempts)", target,
					 (double)(clock_mono_ms() - w.start) / 1000.0, w.attempt);
			goto out;
		}
		pg_one_line(PQerrorMessage(conn), why, sizeof(why));
		PQfinish(conn);
		conn = NULL;
		/* Up but refusing us (password, database, permissions): waiting will not help. */
		ping = ping_once(o, NULL, attempt_timeout_s(&w));
		if (ping == PQPING_OK || ping == PQPING_NO_ATTEMPT) {
			err_set(err, "cannot connect to postgres at %s: %s", target, why);
			goto out;
		}
		if (!wait_more(&w, target, why)) {
			gave_up(&w, target, why, err);
			goto out;
		}
	}
out:
	free(target);
	return conn;
}
