#include "progress.h"

#include "clock.h"
#include "log.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BAR_PERIOD_MS 200
#define BAR_WIDTH 30

struct progress {
	struct event *tick;
	const char *comp;
	char *label;
	int64_t total, done, failed, done_at_start;
	int64_t started_ms;
	long interval_s;
	bool bar, drawn;
};

double progress_rate(const struct progress *p)
{
	double secs = (double)(clock_mono_ms() - p->started_ms) / 1000.0;

	return secs > 0 ? (double)(p->done - p->done_at_start) / secs : 0;
}

static void describe_eta(const struct progress *p, char *out, size_t len)
{
	double rate = progress_rate(p);
	int64_t left = p->total - p->done - p->failed;
	long secs;

	if (left <= 0) {
		snprintf(out, len, "0 s");
		return;
	}
	if (rate <= 0) {
		snprintf(out, len, "unknown");
		return;
	}
	secs = (long)((double)left / rate + 0.5);
	if (secs >= 3600)
		snprintf(out, len, "%ld h %02ld min", secs / 3600, secs / 60 % 60);
	else if (secs >= 60)
		snprintf(out, len, "%ld min %02ld s", secs / 60, secs % 60);
	else
		snprintf(out, len, "%ld s", secs);
}

static double percent(const struct progress *p)
{
	return p->total > 0 ? 100.0 * (double)(p->done + p->failed) / (double)p->total : 100.0;
}

static void draw(struct progress *p)
{
	char line[256], eta[32];
	int filled = (int)(percent(p) / 100.0 * BAR_WIDTH + 0.5), i, n;

	describe_eta(p, eta, sizeof(eta));
	n = snprintf(line, sizeof(line), "\r%s [", p->label);
	for (i = 0; i < BAR_WIDTH && n < (int)sizeof(line) - 1; i++)
		line[n++] = i < filled ? '#' : '.';
	n += snprintf(line + n, sizeof(line) - (size_t)n, "] %lld/%lld %5.1f%%  %.0f/s  ETA %s%s   ",
		      (long long)(p->done + p->failed), (long long)p->total, percent(p), progress_rate(p), eta,
		      p->failed ? " (some failed)" : "");
	if (n > (int)sizeof(line))
		n = (int)sizeof(line) - 1;
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		p->bar = false; /* stderr went away: nothing more to draw */
	p->drawn = true;
}

static void say(const struct progress *p)
{
	char eta[32];

	describe_eta(p, eta, sizeof(eta));
	log_info(p->comp, "%s: %lld/%lld (%.1f%%), %lld failed, %.0f vectors/s, ETA %s", p->label,
		 (long long)(p->done + p->failed), (long long)p->total, percent(p), (long long)p->failed,
		 progress_rate(p), eta);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct progress *p = arg;
	long ms = p->bar ? BAR_PERIOD_MS : p->interval_s * 1000;
	struct timeval next = {ms / 1000, (ms % 1000) * 1000};

	(void)fd, (void)what;
	if (p->bar)
		draw(p);
	else
		say(p);
	evtimer_add(p->tick, &next);
}

struct progress *progress_new(struct event_base *base, const char *comp, const char *label, int64_t total,
			      int64_t done, long interval_s, bool bar)
{
	struct progress *p = xcalloc(1, sizeof(*p));
	long ms;
	struct timeval first;

	p->comp = comp;
	p->label = xstrdup(label);
	p->total = total;
	p->done = p->done_at_start = done;
	p->interval_s = interval_s > 0 ? interval_s : 5;
	p->bar = bar;
	p->started_ms = clock_mono_ms();
	p->tick = evtimer_new(base, on_tick, p);
	ms = bar ? BAR_PERIOD_MS : p->interval_s * 1000;
	first = (struct timeval){ms / 1000, (ms % 1000) * 1000};
	evtimer_add(p->tick, &first);
	return p;
}

void progress_set(struct progress *p, int64_t done, int64_t failed)
{
	p->done = done;
	p->failed = failed;
}

void progress_set_total(struct progress *p, int64_t total)
{
	p->total = total;
}

void progress_free(struct progress *p)
{
	if (!p)
		return;
	event_free(p->tick);
	if (p->bar && p->drawn) {
		draw(p);
		if (write(STDERR_FILENO, "\n", 1) < 0) {
			/* nothing to do: the bar was only for a person */
		}
	}
	free(p->label);
	free(p);
}
