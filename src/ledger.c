#include "ledger.h"

#include "buf.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *mig_state_name(enum mig_state s)
{
	switch (s) {
	case MIG_APPLIED: return "applied";
	case MIG_PENDING: return "pending";
	case MIG_OUT_OF_ORDER: return "out-of-order";
	case MIG_CHANGED: return "changed";
	}
	return "?";
}

static void quote_ident(struct buf *b, const char *ident)
{
	buf_putc(b, '"');
	for (; *ident; ident++) {
		if (*ident == '"')
			buf_putc(b, '"');
		buf_putc(b, *ident);
	}
	buf_putc(b, '"');
}

char *ledger_qualified_name(const char *schema, const char *table)
{
	struct buf q = BUF_INIT;

	quote_ident(&q, schema);
	buf_putc(&q, '.');
	quote_ident(&q, table);
	return buf_steal(&q);
}

void ledger_init(struct ledger *l, const char *schema, const char *table)
{
	struct buf q = BUF_INIT;

	memset(l, 0, sizeof(*l));
	quote_ident(&q, schema);
	l->qschema = xstrdup(q.data);
	buf_putc(&q, '.');
	quote_ident(&q, table);
	l->qualified = buf_steal(&q);
}

void ledger_free(struct ledger *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->rows[i].hash);
	free(l->rows);
	free(l->qschema);
	free(l->qualified);
	memset(l, 0, sizeof(*l));
}

void plan_compute(const struct journal *j, const struct ledger *l, struct plan *p)
{
	bool *matched = xcalloc(l->n, sizeof(bool));
	bool have_high = false;
	int64_t high = 0;
	size_t i, r;

	memset(p, 0, sizeof(*p));
	p->state = xcalloc(j->n, sizeof(*p->state));
	p->row = xcalloc(j->n, sizeof(*p->row));
	for (r = 0; r < l->n; r++) {
		if (l->rows[r].created_at_null) {
			p->null_created++;
			continue;
		}
		if (!have_high || l->rows[r].created_at > high)
			high = l->rows[r].created_at;
		have_high = true;
	}
	for (i = 0; i < j->n; i++) {
		const struct migration *m = &j->m[i];

		for (r = 0; r < l->n; r++) {
			if (!l->rows[r].created_at_null && l->rows[r].created_at == m->when && !matched[r]) {
				matched[r] = true;
				p->row[i] = &l->rows[r];
				break;
			}
		}
		if (p->row[i])
			p->state[i] = strcmp(p->row[i]->hash, m->hash) == 0 ? MIG_APPLIED : MIG_CHANGED;
		else
			p->state[i] = have_high && m->when <= high ? MIG_OUT_OF_ORDER : MIG_PENDING;
		switch (p->state[i]) {
		case MIG_APPLIED: p->applied++; break;
		case MIG_PENDING: p->pending++; break;
		case MIG_OUT_OF_ORDER: p->out_of_order++; break;
		case MIG_CHANGED: p->changed++; break;
		}
	}
	p->unknown = xcalloc(l->n, sizeof(*p->unknown));
	for (r = 0; r < l->n; r++)
		if (!matched[r] && !l->rows[r].created_at_null)
			p->unknown[p->nunknown++] = r;
	free(matched);
}

void plan_free(struct plan *p)
{
	free(p->state);
	free(p->row);
	free(p->unknown);
	memset(p, 0, sizeof(*p));
}

void ledger_v1_name(const char *tag, int64_t when, char *out, size_t outlen)
{
	time_t secs = (time_t)(when / 1000);
	const char *us = strchr(tag, '_');
	struct tm tm;
	char stamp[16];

	gmtime_r(&secs, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
	snprintf(out, outlen, "%s_%s", stamp, us ? us + 1 : tag);
}
