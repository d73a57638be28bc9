/*
 * metrics.h - counters and latency histograms in Prometheus' text format.
 *
 * The modules that do the work keep their own counters (the pool, the pusher,
 * the vector DB client); this module owns what the HTTP layer counts, the
 * histogram type they share, and the renderer that writes /metrics.
 */
#ifndef ABILITYSYNC_METRICS_H
#define ABILITYSYNC_METRICS_H

#include "common.h"

struct buf;

#define HISTOGRAM_BUCKETS 12

/* Seconds; le bounds in metrics.c: 1 ms .. 10 s, and +Inf. */
struct histogram {
	uint64_t buckets[HISTOGRAM_BUCKETS]; /* cumulative counts are made when rendering */
	uint64_t count;
	double sum;
};

void histogram_observe(struct histogram *h, double seconds);

/* The routes of the API, for per-route counts (ROUTE_OTHER: 404s and the like). */
enum route {
	ROUTE_ABILITIES_POST, ROUTE_ABILITIES_LIST, ROUTE_ABILITY_GET, ROUTE_ABILITY_DELETE, ROUTE_SERVICE_SET, ROUTE_SEARCH,
	ROUTE_SYNC_STATUS, ROUTE_SYNC_RETRY, ROUTE_SYNC_PAUSE, ROUTE_SYNC_RESUME, ROUTE_RECONCILE_LAST, ROUTE_RECONCILE_POST, ROUTE_RESTORE_POST,
	ROUTE_JOBS_LIST, ROUTE_JOB_GET, ROUTE_JOB_CANCEL, ROUTE_AUDIT, ROUTE_OPENAPI, ROUTE_HEALTHZ, ROUTE_READYZ, ROUTE_METRICS,
	ROUTE_OTHER, ROUTE_COUNT
};

const char *route_name(enum route r);

struct status_count {
	int status;
	uint64_t n;
};

#define STATUSES_PER_ROUTE 16

/* What the HTTP layer counts: answers by API key, route and status; latency by route. */
struct http_metrics {
	struct status_count (*by_status)[ROUTE_COUNT][STATUSES_PER_ROUTE]; /* [key slot][route][...] */
	size_t keys;                   /* slots: one per API key, the last for callers without one */
	struct histogram latency[ROUTE_COUNT];
};

/* Makes `keys` key slots, every answer count zero (keys rotated: their counts start again). */
void http_metrics_keys(struct http_metrics *m, size_t keys);

/* `key`: the caller's key slot (keys - 1: none). */
void http_metrics_observe(struct http_metrics *m, size_t key, enum route r, int status, double seconds);

/* key_names[i] names slot i ("" for the last). */
void http_metrics_render(const struct http_metrics *m, const char *const *key_names, struct buf *out);

void http_metrics_free(struct http_metrics *m);

/* Writers for the renderer. */
void metrics_header(struct buf *out, const char *name, const char *type, const char *help);
void metrics_value(struct buf *out, const char *name, const char *labels, double v);
void metrics_histogram(struct buf *out, const char *name, const char *labels, const struct histogram *h);

#endif
