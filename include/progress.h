/*
 * progress.h - telling a person how far a long job got.
 *
 * On a terminal, one line redrawn in place (a bar, done/total, rate, ETA) a
 * few times a second; otherwise (logs, pipes, containers) one log line every
 * `interval_s`, which survives in a log file. Both from a timer on the loop:
 * the job only reports numbers.
 */
#ifndef ABILITYSYNC_PROGRESS_H
#define ABILITYSYNC_PROGRESS_H

#include "common.h"

#include <event2/event.h>

struct progress;

/* label prefixes every line ("job 3"); bar: draw on stderr (a terminal) instead of logging. */
struct progress *progress_new(struct event_base *base, const char *comp, const char *label, int64_t total,
			      int64_t done, long interval_s, bool bar);
void progress_set(struct progress *p, int64_t done, int64_t failed);
void progress_set_total(struct progress *p, int64_t total);
/* Vectors per second since the start. */
double progress_rate(const struct progress *p);
/* Stops the timer (a bar ends its line); NULL is fine. */
void progress_free(struct progress *p);

#endif
