#include "migrate.h"

#include "buf.h"
#include "clock.h"
#include "hash.h"
#include "journal.h"
#include "ledger.h"
#include "store_ledger.h"
#include "log.h"
#include "mem.h"
#include "pgconn.h"
#include "sqlscan.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COMP "migrate"

/* Everything one run knows: the folder, the ledger, and how they compare. */
struct run {
	const struct migrate_opts *o;
	struct journal j;
	PGconn *conn;
	struct ledger l;
	struct plan p;
	char *target; /* host:port/db, for messages */
};

static bool will_apply(const struct run *r, size_t i)
{
	return r->p.state[i] == MIG_PENDING || (r->p.state[i] == MIG_OUT_OF_ORDER && r->o->allow_out_of_order);
}

static size_t count_to_apply(const struct run *r)
{
	size_t i, n = 0;

	for (i = 0; i < r->j.n; i++)
		n += will_apply(r, i);
	return n;
}

static void format_when(int64_t when, char *out, size_t outlen)
{
	time_t secs = (time_t)(when / 1000);
	struct tm tm;
	char base[32];

	gmtime_r(&secs, &tm);
	strftime(base, sizeof(base), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(out, outlen, "%s.%03d", base, (int)(when % 1000));
}

/* Reads the folder and connects. Returns an exit code; EXIT_OK to go on. */
static int run_open(struct run *r, const struct migrate_opts *o)
{
	struct pg_wait_opts w = {o->conninfo, o->db_host, o->wait_s, COMP, "abilitysync migrate"};
	struct errbuf err;

	memset(r, 0, sizeof(*r));
	r->o = o;
	if (!o->conninfo || !*o->conninfo) {
		log_error(COMP, "DATABASE_URL is not set: there is no database to migrate");
		return EXIT_USAGE;
	}
	/* Like drizzle: every file is read and hashed before the database is touched. */
	if (!journal_load(o->dir, &r->j, &err)) {
		log_error(COMP, "%s", err.msg);
		return err.usage ? EXIT_USAGE : EXIT_FAIL;
	}
	r->target = pg_target(o->conninfo, NULL);
	r->conn = pg_connect_wait(&w, &err);
	if (!r->conn) {
		log_error(COMP, "%s", err.msg);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

static void run_close(struct run *r)
{
	plan_free(&r->p);
	ledger_free(&r->l);
	if (r->conn)
		PQfinish(r->conn);
	journal_free(&r->j);
	free(r->target);
}

static bool run_read_ledger(struct run *r)
{
	struct errbuf err;

	plan_free(&r->p);
	ledger_free(&r->l);
	if (!ledger_read(r->conn, r->o->schema, r->o->table, &r->l, &err)) {
		log_error(COMP, "%s", err.msg);
		return false;
	}
	plan_compute(&r->j, &r->l, &r->p);
	return true;
}

/*
 * Counts the disagreements between the folder and the ledger that make `up`
 * refuse, and unless quiet logs them (at `refuse_level`) along with the ones it
 * only warns about.
 */
static size_t check_problems(const struct run *r, enum log_level refuse_level, bool quiet)
{
	const struct migrate_opts *o = r->o;
	size_t i, refusals = 0;

	if (r->p.null_created) {
		refusals++;
		if (!quiet)
			log_msg(refuse_level, COMP, "ledger %s has %zu row(s) with created_at NULL; drizzle-kit "
				"would re-run every migration. Set created_at to the journal entry's `when` first",
				r->l.qualified, r->p.null_created);
	}
	for (i = 0; i < r->j.n; i++) {
		const struct migration *m = &r->j.m[i];

		if (r->p.state[i] == MIG_CHANGED) {
			refusals += !o->allow_changed;
			if (!quiet)
				log_msg(o->allow_changed ? LL_WARN : refuse_level, COMP,
					"%s changed after it was applied: ledger row %lld has sha256 %.12s..., "
					"the file has %.12s...%s", m->path, (long long)r->p.row[i]->id,
					r->p.row[i]->hash, m->hash,
					o->allow_changed ? " (accepted: --allow-changed)"
							 : "; restore the file, or accept it with --allow-changed");
		} else if (r->p.state[i] == MIG_OUT_OF_ORDER) {
			refusals += !o->allow_out_of_order;
			if (!quiet)
				log_msg(o->allow_out_of_order ? LL_WARN : refuse_level, COMP,
					"%s (when %lld) is not applied, but a newer migration is; drizzle-kit "
					"would skip it forever%s", m->tag, (long long)m->when,
					o->allow_out_of_order ? "; applying it now (--allow-out-of-order)"
							      : ". Apply it with --allow-out-of-order, or "
								"regenerate it with a newer `when`");
		}
	}
	if (quiet)
		return refusals;
	for (i = 0; i < r->p.nunknown; i++) {
		const struct ledger_row *row = &r->l.rows[r->p.unknown[i]];

		log_warn(COMP, "ledger row %lld (created_at %lld, sha256 %.12s...) matches no migration in %s; "
			 "applied from another copy of the folder?", (long long)row->id,
			 (long long)row->created_at, row->hash, r->j.dir);
	}
	if (r->j.when_unordered)
		log_warn(COMP, "%s/meta/_journal.json: some `when` is not greater than the previous entry's "
			 "(drizzle-kit check warns about this too)", r->j.dir);
	return refusals;
}

/* Finds statements that cannot run inside the transaction, in what would be applied. */
static size_t report_nontransactional(const struct run *r)
{
	size_t i, c, found = 0;

	for (i = 0; i < r->j.n; i++) {
		const struct migration *m = &r->j.m[i];

		if (!will_apply(r, i))
			continue;
		for (c = 0; c < m->nchunks; c++) {
			struct sql_problem sp;

			if (!sql_find_nontransactional(m->chunks[c], strlen(m->chunks[c]), &sp))
				continue;
			log_error(COMP, "%s statement %zu of %zu: %s %s; drizzle-kit and abilitysync apply all "
				  "pending migrations in one transaction, so nothing was applied. Move it to a "
				  "migration run by hand, or drop CONCURRENTLY", m->path, c + 1, m->nchunks,
				  sp.what, sp.why);
			found++;
		}
	}
	return found;
}

int64_t migrate_lock_key(const char *dbname, const char *schema, const char *table)
{
	struct buf b = BUF_INIT;
	uint8_t d[SHA256_LEN];
	uint64_t k = 0;
	int i;

	buf_puts(&b, "abilitysync migrate lock");
	buf_append(&b, "", 1);
	buf_puts(&b, dbname);
	buf_append(&b, "", 1);
	buf_puts(&b, schema);
	buf_append(&b, "", 1);
	buf_puts(&b, table);
	sha256(b.data, b.len, d);
	buf_free(&b);
	for (i = 0; i < 8; i++)
		k = k << 8 | d[i];
	return (int64_t)k;
}

/* Takes the session advisory lock, waiting at most lock_timeout_s. */
static bool take_lock(struct run *r, int64_t key)
{
	char holder[256] = "";
	int64_t start = clock_mono_ms(), next_report = 0;
	int64_t deadline = start + (int64_t)r->o->lock_timeout_s * 1000;

	for (;;) {
		struct errbuf err;
		bool got = false;
		int64_t now;

		if (!ledger_try_lock(r->conn, key, &got, &err)) {
			log_error(COMP, "%s", err.msg);
			return false;
		}
		now = clock_mono_ms();
		if (got) {
			if (now - start > 100)
				log_info(COMP, "got the migration lock after %.1f s", (double)(now - start) / 1000.0);
			return true;
		}
		if (now >= deadline) {
			ledger_lock_holder(r->conn, key, holder, sizeof(holder));
			log_error(COMP, "timed out after %lld s waiting for the migration lock (advisory lock %lld on "
				  "%s), held by %s. Is another migrator stuck? Raise MIGRATE_LOCK_TIMEOUT or end "
				  "that session", (long long)r->o->lock_timeout_s, (long long)key, r->target, holder);
			return false;
		}
		if (now >= next_report) {
			ledger_lock_holder(r->conn, key, holder, sizeof(holder));
			log_info(COMP, "another migrator is at work: waiting for the migration lock, held by %s "
				 "(%.0f s of %lld s)", holder, (double)(now - start) / 1000.0,
				 (long long)r->o->lock_timeout_s);
			next_report = now + 10000;
		}
		clock_sleep_ms(100 + clock_jitter_ms(150));
	}
}

/* Applies everything pending in one transaction; all or nothing. */
static bool apply_all(struct run *r)
{
	int64_t start = clock_mono_ms();
	struct buf tags = BUF_INIT;
	struct errbuf err;
	size_t i, n = 0;

	if (!ledger_begin(r->conn, &err))
		goto fail;
	if (!r->l.exists && !ledger_create(r->conn, &r->l, &err))
		goto fail;
	for (i = 0; i < r->j.n; i++) {
		int64_t t0 = clock_mono_ms();

		if (!will_apply(r, i))
			continue;
		if (!ledger_apply(r->conn, &r->l, &r->j.m[i], &err))
			goto fail;
		log_info(COMP, "applied %s (%zu statements, %lld ms)", r->j.m[i].tag, r->j.m[i].nchunks,
			 (long long)(clock_mono_ms() - t0));
		buf_printf(&tags, "%s%s", n++ ? ", " : "", r->j.m[i].tag);
	}
	if (!ledger_commit(r->conn, &err))
		goto fail;
	log_info(COMP, "committed %zu migration(s) in %lld ms: %s", n, (long long)(clock_mono_ms() - start),
		 buf_cstr(&tags));
	buf_free(&tags);
	return true;
fail:
	ledger_rollback(r->conn);
	log_error(COMP, "%s", err.msg);
	log_error(COMP, "rolled back: nothing from this run was applied or recorded");
	buf_free(&tags);
	return false;
}

int migrate_up(const struct migrate_opts *o)
{
	struct run r;
	int64_t key = 0, start = clock_mono_ms();
	bool locked = false;
	int rc;

	rc = run_open(&r, o);
	if (rc != EXIT_OK)
		goto out;
	rc = EXIT_FAIL;
	if (!run_read_ledger(&r))
		goto out;
	/*
	 * Without the lock: what is wrong now stays wrong whoever holds the lock,
	 * and "nothing to do" lets every replica but the first start at once.
	 */
	if (check_problems(&r, LL_ERROR, false) > 0) {
		rc = EXIT_REFUSED;
		goto out;
	}
	if (count_to_apply(&r) == 0) {
		log_info(COMP, "up to date: %zu migration(s) applied, none pending (%s on %s, %lld ms)",
			 r.p.applied, r.l.qualified, r.target, (long long)(clock_mono_ms() - start));
		rc = EXIT_OK;
		goto out;
	}
	if (report_nontransactional(&r) > 0) {
		rc = EXIT_REFUSED;
		goto out;
	}
	key = migrate_lock_key(PQdb(r.conn), o->schema, o->table);
	if (!take_lock(&r, key))
		goto out;
	locked = true;
	/* Whoever held the lock may have applied everything meanwhile: look again. */
	if (!run_read_ledger(&r))
		goto out;
	if (check_problems(&r, LL_ERROR, true) > 0) {
		(void)check_problems(&r, LL_ERROR, false);
		rc = EXIT_REFUSED;
		goto out;
	}
	if (count_to_apply(&r) == 0) {
		log_info(COMP, "up to date: another migrator applied everything while we waited (%zu applied)",
			 r.p.applied);
		rc = EXIT_OK;
		goto out;
	}
	if (report_nontransactional(&r) > 0) {
		rc = EXIT_REFUSED;
		goto out;
	}
	log_info(COMP, "applying %zu migration(s) to %s in one transaction", count_to_apply(&r), r.target);
	if (apply_all(&r))
		rc = EXIT_OK;
out:
	if (locked)
		ledger_unlock(r.conn, key);
	run_close(&r);
	return rc;
}

static json_t *status_json(const struct run *r)
{
	json_t *root = json_object(), *migs = json_array(), *unknown = json_array();
	char key[24];
	size_t i;

	for (i = 0; i < r->j.n; i++) {
		const struct migration *m = &r->j.m[i];
		json_t *e = json_object();

		json_object_set_new(e, "tag", json_string(m->tag));
		json_object_set_new(e, "when", json_integer(m->when));
		json_object_set_new(e, "state", json_string(mig_state_name(r->p.state[i])));
		json_object_set_new(e, "hash", json_string(m->hash));
		if (r->p.row[i]) {
			json_object_set_new(e, "ledger_id", json_integer(r->p.row[i]->id));
			json_object_set_new(e, "ledger_hash", json_string(r->p.row[i]->hash));
		}
		json_array_append_new(migs, e);
	}
	for (i = 0; i < r->p.nunknown; i++) {
		const struct ledger_row *row = &r->l.rows[r->p.unknown[i]];
		json_t *e = json_object();

		json_object_set_new(e, "ledger_id", json_integer(row->id));
		json_object_set_new(e, "created_at", json_integer(row->created_at));
		json_object_set_new(e, "hash", json_string(row->hash));
		json_array_append_new(unknown, e);
	}
	json_object_set_new(root, "database", json_string(r->target));
	json_object_set_new(root, "ledger", json_string(r->l.qualified));
	json_object_set_new(root, "ledger_exists", json_boolean(r->l.exists));
	/* A string: a 64-bit key is not exact as a JSON number in jq or JavaScript. */
	snprintf(key, sizeof(key), "%lld", (long long)migrate_lock_key(PQdb(r->conn), r->o->schema, r->o->table));
	json_object_set_new(root, "lock_key", json_string(key));
	json_object_set_new(root, "dir", json_string(r->j.dir));
	json_object_set_new(root, "migrations", migs);
	json_object_set_new(root, "unknown_ledger_rows", unknown);
	json_object_set_new(root, "applied", json_integer((json_int_t)r->p.applied));
	json_object_set_new(root, "pending", json_integer((json_int_t)r->p.pending));
	json_object_set_new(root, "out_of_order", json_integer((json_int_t)r->p.out_of_order));
	json_object_set_new(root, "changed", json_integer((json_int_t)r->p.changed));
	json_object_set_new(root, "null_created_at", json_integer((json_int_t)r->p.null_created));
	return root;
}

static void status_table(const struct run *r)
{
	size_t i, width = 3;

	printf("ledger %s on %s%s\nfolder %s\n\n", r->l.qualified, r->target,
	       r->l.exists ? "" : " (not created yet)", r->j.dir);
	for (i = 0; i < r->j.n; i++)
		if (strlen(r->j.m[i].tag) > width)
			width = strlen(r->j.m[i].tag);
	printf("%-13s %-*s  %-23s  %s\n", "STATE", (int)width, "TAG", "WHEN (UTC)", "SHA-256");
	for (i = 0; i < r->j.n; i++) {
		const struct migration *m = &r->j.m[i];
		char when[40];

		format_when(m->when, when, sizeof(when));
		printf("%-13s %-*s  %-23s  %.16s", mig_state_name(r->p.state[i]), (int)width, m->tag, when, m->hash);
		if (r->p.state[i] == MIG_CHANGED)
			printf("  (ledger has %.16s)", r->p.row[i]->hash);
		putchar('\n');
	}
	for (i = 0; i < r->p.nunknown; i++) {
		const struct ledger_row *row = &r->l.rows[r->p.unknown[i]];
		char when[40];

		format_when(row->created_at, when, sizeof(when));
		printf("%-13s %-*s  %-23s  %.16s\n", "not-in-folder", (int)width, "(ledger row)", when, row->hash);
	}
	printf("\n%zu applied, %zu pending, %zu out of order, %zu changed, %zu in the ledger only\n",
	       r->p.applied, r->p.pending, r->p.out_of_order, r->p.changed, r->p.nunknown);
}

int migrate_status(const struct migrate_opts *o)
{
	struct run r;
	size_t refusals;
	int rc;

	rc = run_open(&r, o);
	if (rc != EXIT_OK)
		goto out;
	rc = EXIT_FAIL;
	if (!run_read_ledger(&r))
		goto out;
	refusals = check_problems(&r, LL_WARN, false);
	if (o->json) {
		json_t *j = status_json(&r);

		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
		json_decref(j);
	} else {
		status_table(&r);
	}
	rc = refusals ? EXIT_REFUSED : count_to_apply(&r) ? EXIT_PENDING : EXIT_OK;
out:
	run_close(&r);
	return rc;
}

int migrate_plan(const struct migrate_opts *o)
{
	struct run r;
	size_t i, c, n;
	int rc;

	rc = run_open(&r, o);
	if (rc != EXIT_OK)
		goto out;
	rc = EXIT_FAIL;
	if (!run_read_ledger(&r))
		goto out;
	if (check_problems(&r, LL_ERROR, false) > 0 || report_nontransactional(&r) > 0) {
		rc = EXIT_REFUSED;
		goto out;
	}
	n = count_to_apply(&r);
	printf("-- abilitysync migrate plan for %s (ledger %s)\n", r.target, r.l.qualified);
	if (n == 0) {
		printf("-- nothing to apply: %zu migration(s) already applied\n", r.p.applied);
		rc = EXIT_OK;
		goto out;
	}
	printf("-- %zu migration(s) would be applied in one transaction:\nbegin;\n", n);
	if (!r.l.exists)
		printf("-- the ledger %s would be created first\n", r.l.qualified);
	for (i = 0; i < r.j.n; i++) {
		const struct migration *m = &r.j.m[i];
		char when[40];

		if (!will_apply(&r, i))
			continue;
		format_when(m->when, when, sizeof(when));
		printf("\n-- %s (%s, when %lld = %s UTC, sha256 %s)\n", mig_state_name(r.p.state[i]), m->tag,
		       (long long)m->when, when, m->hash);
		for (c = 0; c < m->nchunks; c++) {
			const char *s = m->chunks[c];
			size_t len = strlen(s);

			printf("-- statement %zu of %zu\n%s%s", c + 1, m->nchunks, s,
			       len && s[len - 1] == '\n' ? "" : "\n");
		}
		printf("insert into %s (\"hash\", \"created_at\") values('%s', %lld);\n", r.l.qualified, m->hash,
		       (long long)m->when);
	}
	printf("commit;\n");
	rc = EXIT_PENDING;
out:
	run_close(&r);
	return rc;
}
