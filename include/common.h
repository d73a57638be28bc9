/*
 * common.h - what every module shares: attributes, exit codes, error messages.
 */
#ifndef ABILITYSYNC_COMMON_H
#define ABILITYSYNC_COMMON_H

#include "attrs.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef ABILITYSYNC_VERSION
#define ABILITYSYNC_VERSION "0.1.0"
#endif

/*
 * Session advisory locks of the long jobs: (class, 1) reconcile, (class, 2)
 * restore; (part class, job and part) a restore part, (reconcile part class, run
 * and part) a reconcile part. The two-integer form never meets migrate's 64-bit
 * key.
 */
#define ABILITYSYNC_LOCK_CLASS_TEXT "1633842041"
#define ABILITYSYNC_PART_LOCK_CLASS_TEXT "1633842042"
#define ABILITYSYNC_RECONCILE_PART_LOCK_CLASS_TEXT "1633842043"

/* Exit codes of every subcommand; the README and --help list them. */
enum exit_code {
	EXIT_OK = 0,      /* done, or nothing to do */
	EXIT_FAIL = 1,    /* the operation failed; the log says why */
	EXIT_USAGE = 2,   /* a bad flag, argument or configuration value */
	EXIT_PENDING = 3, /* migrate status/plan: there is work to apply */
	EXIT_REFUSED = 4, /* migrate: the ledger and the folder disagree */
};

/*
 * An error for the caller to report. Modules that judge user input (files,
 * flags, environment, request bodies) fill one in, naming the field or file,
 * and leave the decision to log, print or answer to the caller.
 */
struct errbuf {
	char msg[1024];
	bool usage;     /* the configuration or the command line is wrong (exit 2), not the run */
};

/* Sets the message (e may be NULL), made well-formed UTF-8 (utf8_scrub): it may quote anything. */
void err_set(struct errbuf *e, const char *fmt, ...) PRINTF_LIKE(2, 3);

/* The same, for a setting that cannot work (exit status 2). */
void err_usage(struct errbuf *e, const char *fmt, ...) PRINTF_LIKE(2, 3);

#endif
