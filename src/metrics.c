#include "metrics.h"

#include "buf.h"
#include "mem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double bounds[HISTOGRAM_BUCKETS - 1] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 10,
};

static const char *const routes[ROUTE_COUNT] = {
	"POST /v1/abilities", "GET /v1/abilities", "GET /v1/abilities/{id}", "DELETE /v1/abilities/{id}",
	"PUT /v1/services/{service}/abilities", 	"POST /v1/search", "GET /v1/sync/status", "POST /v1/sync/retry", "POST /v1/sync/pause", "POST /v1/sync/resume",
	"GET /v1/reconcile/last", "POST /v1/reconcile", "POST /v1/restore", "GET /v1/jobs", "GET /v1/jobs/{id}", "POST /v1/jobs/{id}/cancel",
	"GET /v1/audit", "GET /v1/openapi.json", "GET /healthz", "GET /readyz", "GET /metrics", "other",
};

const char *route_name(enum route r)
{
	return r < ROUTE_COUNT ? routes[r] : "other";
}

void histogram_observe(struct histogram *h, double seconds)
{
	size_t i = 0;

	while (i < HISTOGRAM_BUCKETS - 1 && seconds > bounds[i])
		i++;
	h->buckets[i]++;
	h->count++;
	h->sum += seconds;
}

void http_metrics_keys(struct http_metrics *m, size_t keys)
{
	free(m->by_status);
	m->by_status = xcalloc(keys, sizeof(*m->by_status));
	m->keys = keys;
}

void http_metrics_observe(struct http_metrics *m, size_t key, enum route r, int status, double seconds)
{
	struct status_count *sc = m->by_status[key < m->keys ? key : m->keys - 1][r];
	size_t i;

	histogram_observe(&m->latency[r], seconds);
	for (i = 0; i < STATUSES_PER_ROUTE; i++) {
		if (sc[i].status == status || sc[i].status == 0) {
			sc[i].status = status;
			sc[i].n++;
			return;
		}
	}
	/* More than 16 distinct statuses on one route: the last slot takes the rest. */
	sc[STATUSES_PER_ROUTE - 1].n++;
}

void http_metrics_free(struct http_metrics *m)
{
	free(m->by_status);
	memset(m, 0, sizeof(*m));
}

void metrics_header(struct buf *out, const char *name, const char *type, const char *help)
{
	buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_value(struct buf *out, const char *name, const char *labels, double v)
{
	if (v == floor(v) && fabs(v) < 1e15)
		buf_printf(out, "%s%s%s%s %.0f\n", name, labels ? "{" : "", labels ? labels : "", labels ? "}" : "", v);
	else
		buf_printf(out, "%s%s%s%s %.6g\n", name, labels ? "{" : "", labels ? labels : "", labels ? "}" : "", v);
}

void metrics_histogram(struct buf *out, const char *name, const char *labels, const struct histogram *h)
{
	uint64_t cum = 0;
	size_t i;

	for (i = 0; i < HISTOGRAM_BUCKETS; i++) {
		cum += h->buckets[i];
		if (i < HISTOGRAM_BUCKETS - 1)
			buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels ? labels : "", labels ? "," : "",
				   bounds[i], (unsigned long long)cum);
		else
			buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels ? labels : "",
				   labels ? "," : "", (unsigned long long)cum);
	}
	buf_printf(out, "%s_sum%s%s%s %.6f\n", name, labels ? "{" : "", labels ? labels : "", labels ? "}" : "", h->sum);
	buf_printf(out, "%s_count%s%s%s %llu\n", name, labels ? "{" : "", labels ? labels : "", labels ? "}" : "",
		   (unsigned long long)h->count);
}

void http_metrics_render(const struct http_metrics *m, const char *const *key_names, struct buf *out)
{
	struct buf labels = BUF_INIT;
	size_t k, r, i;

	metrics_header(out, "abilitysync_http_requests_total", "counter",
		       "HTTP requests answered, by route, status and the name of the API key sent (\"\": none or not "
		       "valid); a key rotation (SIGHUP) starts the counts again.");
	for (k = 0; k < m->keys; k++) {
		for (r = 0; r < ROUTE_COUNT; r++) {
			const struct status_count *sc = m->by_status[k][r];

			for (i = 0; i < STATUSES_PER_ROUTE && sc[i].status; i++) {
				buf_reset(&labels);
				buf_printf(&labels, "route=\"%s\",status=\"%d\",key=\"%s\"", routes[r], sc[i].status,
					   key_names[k]);
				metrics_value(out, "abilitysync_http_requests_total", labels.data, (double)sc[i].n);
			}
		}
	}
	metrics_header(out, "abilitysync_http_request_duration_seconds", "histogram",
		       "Time from a request's arrival to its answer, by route.");
	for (r = 0; r < ROUTE_COUNT; r++) {
		if (!m->latency[r].count)
			continue;
		buf_reset(&labels);
		buf_printf(&labels, "route=\"%s\"", routes[r]);
		metrics_histogram(out, "abilitysync_http_request_duration_seconds", labels.data, &m->latency[r]);
	}
	buf_free(&labels);
}
