#include "fullset.h"

#include "log.h"
#include "mem.h"

#include <event2/event.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMP "fullset"

struct fullset {
	struct store *st;
	struct outbox *ob;
	struct fullset_opts o;
	char service[ABILITY_TEXT_MAX + 1], trace[80];
	char set_id[40];             /* random: unique across replicas and requests */
	struct ability_set set;
	struct ability_error err;
	struct ability *group;
	size_t ngroup, staged;
	bool refused;
	struct pg_outcome failed;    /* the statement that failed it, kept for the answer */
	fullset_fn done;
	void *arg;
};

static void next_group(struct fullset *f);

static void finish(struct fullset *f, const struct set_row *rows, size_t n, const struct pg_outcome *pg)
{
	struct fullset_answer a = {f->refused ? &f->err : NULL, pg, rows, n, ability_set_count(&f->set)};

	f->done(&a, f->arg);
	ability_set_free(&f->set);
	free(f->group);
	free(f);
}

static void free_group(struct fullset *f)
{
	size_t i;

	for (i = 0; i < f->ngroup; i++)
		ability_free(&f->group[i]);
	f->ngroup = 0;
}

static void on_dropped(const struct pg_outcome *o, void *arg)
{
	struct fullset *f = arg;

	if (!o->res)
		log_warn(COMP, "req=%s: the staged rows of a refused set stay until the next set a day later: %s",
			 f->trace, o->error);
	finish(f, NULL, 0, f->failed.error[0] ? &f->failed : NULL);
}

/* Nothing of the set will be applied: its staged rows go, then the answer. */
static void give_up(struct fullset *f, const struct pg_outcome *pg)
{
	if (pg)
		f->failed = *pg;
	f->failed.res = NULL;
	if (f->staged == 0) {
		finish(f, NULL, 0, pg ? &f->failed : NULL);
		return;
	}
	store_stage_drop(f->st, f->set_id, on_dropped, f);
}

static void on_applied(const struct set_row *rows, size_t n, const struct pg_outcome *o, void *arg)
{
	struct fullset *f = arg;

	if (!o->res) {
		give_up(f, o);
		return;
	}
	log_info(COMP, "req=%s: the set of %s (%zu abilities) %s", f->trace, f->service, ability_set_count(&f->set),
		 f->o.dry_run ? "planned" : "applied");
	finish(f, rows, n, NULL);
}

static void on_staged(const struct pg_outcome *o, void *arg)
{
	struct fullset *f = arg;

	f->staged += f->ngroup;
	free_group(f);
	if (!o->res) {
		give_up(f, o);
		return;
	}
	next_group(f);
}

static void on_later(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	next_group(arg);
}

/*
 * Parses the next group and stages it; after a bad ability, only checks the
 * rest (a group per turn of the loop) to name every bad one. All read: the
 * set is planned or applied.
 */
static void next_group(struct fullset *f)
{
	static const struct timeval now = {0, 0};
	size_t bytes = 0, parsed = 0;
	int r = 1;

	while (parsed < f->o.group_max && bytes < FULLSET_GROUP_BYTES && f->err.more == 0) {
		struct ability *a = &f->group[f->ngroup];

		if ((r = ability_set_next(&f->set, a, &f->err)) == 0)
			break;
		parsed++;
		if (r > 0)
			bytes += a->embedding_len * 3; /* as sent, its canonical form, its attributes */
		if (r < 0 || f->err.code) {
			f->refused = true;
			if (r > 0)
				ability_free(a);
			free_group(f);
			continue;
		}
		f->ngroup++;
	}
	if (f->ngroup) {
		store_stage(f->st, f->set_id, (int64_t)f->staged, f->group, f->ngroup, on_staged, f);
		return;
	}
	if (r != 0 && f->err.more == 0) {
		if (event_base_once(f->o.base, -1, EV_TIMEOUT, on_later, f, &now) != 0)
			abort();
		return;
	}
	if (!f->refused && !ability_set_check_ids(&f->set, &f->err))
		f->refused = true;
	if (f->refused) {
		give_up(f, NULL);
		return;
	}
	outbox_apply_set(f->ob, f->set_id, f->service, f->o.dry_run, on_applied, f);
}

static void random_id(char *out, size_t len)
{
	unsigned char r[16];
	size_t i;

	if (RAND_bytes(r, sizeof(r)) != 1)
		abort();
	for (i = 0; i < sizeof(r) && 2 * i + 2 < len; i++)
		snprintf(out + 2 * i, 3, "%02x", r[i]);
}

void fullset_run(struct store *st, struct outbox *ob, const char *body, size_t len, const struct fullset_opts *o,
		 fullset_fn done, void *arg)
{
	struct fullset *f = xcalloc(1, sizeof(*f));

	*f = (struct fullset){.st = st, .ob = ob, .o = *o, .done = done, .arg = arg};
	snprintf(f->service, sizeof(f->service), "%s", o->service);
	snprintf(f->trace, sizeof(f->trace), "%s", o->trace ? o->trace : "-");
	f->o.service = f->service;
	f->o.trace = f->trace;
	random_id(f->set_id, sizeof(f->set_id));
	if (!ability_set_open(body, len, f->service, o->dim, &f->set, &f->err)) {
		f->refused = true;
		finish(f, NULL, 0, NULL);
		return;
	}
	f->group = xcalloc(o->group_max ? o->group_max : 1, sizeof(*f->group));
	if (f->o.group_max == 0)
		f->o.group_max = 1;
	next_group(f);
}
