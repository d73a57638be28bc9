/*
 * service.h - `abilitysync serve`: one event loop, the parts it runs, and what
 * the HTTP handlers may use of them.
 *
 * serve.c builds and owns everything here; api.c only borrows it.
 */
#ifndef ABILITYSYNC_SERVICE_H
#define ABILITYSYNC_SERVICE_H

#include "config.h"
#include "metrics.h"
#include "pgpool.h"
#include "push.h"
#include "store.h"
#include "vdb.h"

#include <event2/event.h>
#include <jansson.h>

struct service {
	struct event_base *base;
	const struct config *cfg;
	struct pgpool *pool;     /* NULL: vector-DB-only mode */
	struct store *store;     /* NULL: vector-DB-only mode */
	struct vdb *vdb;
	struct pusher *pusher;
	struct http_metrics http;

	/* Readiness, refreshed by timers in serve.c. */
	bool pg_migrated;
	char pg_why[512];
	bool vdb_up;
	char vdb_why[512];

	/* The outbox as last counted (for /metrics): per-state counts and the oldest pending age. */
	json_t *outbox;
	bool stopping;
};

/* Ready to take writes: Postgres up and migrated (or off), the vector DB up, not stopping. */
bool service_ready(const struct service *svc);

int serve_run(const struct config *cfg);

#endif
