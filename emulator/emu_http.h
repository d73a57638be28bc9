/*
 * emu_http.h - the vector DB emulator's HTTP server (libevent evhttp).
 *
 * Serves the Infraxa API as reference/infraxa-api.md §1 describes it, strict
 * where the real server is: FastAPI-style errors {"detail": "..."} that name
 * the field, index or value at fault, 404 for unknown tenants, blobs and
 * vectors, 405 for a known path with the wrong method, 413 past the body
 * limit (before the body is read), and writes that store all of a request or
 * none of it.
 *
 * Beside the API, /_admin/ (loopback peers only, unless admin_open) lets tests
 * inject faults, read counters, change the configuration below at run time,
 * list and clear a blob's ids (?attribute=NAME lists every entry's id with
 * that attribute's value, for checkers), and reset everything. Admin requests
 * are never faulted, authenticated or counted.
 *
 * Counters are cumulative since start or the last reset: requests, by route
 * pattern and by status; faults injected (canned replies), resets and delays;
 * vectors received (in well-formed add requests) and stored (accepted); bytes
 * of request bodies received.
 *
 * The server runs on the caller's event_base and never blocks it: latency
 * faults are timers.
 */
#ifndef ABILITYSYNC_EMU_HTTP_H
#define ABILITYSYNC_EMU_HTTP_H

#include "common.h"
#include "emu_store.h"

struct event_base;
struct emu_server;

#define EMU_DEFAULT_MAX_BODY (64u * 1024 * 1024)
#define EMU_K_MAX 1000

/* Where the API key goes: "Authorization: Bearer KEY" or "X-API-Key: KEY". */
enum emu_auth_header { EMU_AUTH_AUTHORIZATION, EMU_AUTH_X_API_KEY };

struct emu_config {
	enum emu_dup_mode duplicate_ids;
	bool get_vector;       /* GET .../vectors/{id} includes the floats */
	bool query_attributes; /* query replies include attributes */
	int exists_status;     /* the status for "tenant/blob already exists" */
	char *api_key;         /* NULL: no key needed */
	enum emu_auth_header auth_header;
	bool admin_open;       /* serve /_admin/ to any peer, not only loopback */
	size_t max_body;       /* bytes */
};

/* The defaults: overwrite, get-vector and query-attributes on, 409, no key, 64 MiB. */
void emu_config_init(struct emu_config *c);
void emu_config_free(struct emu_config *c);

bool emu_auth_header_parse(const char *s, enum emu_auth_header *out) MUSTCHECK;
const char *emu_auth_header_name(enum emu_auth_header h);

/*
 * Listens on host:port (port 0: any free port) with a copy of cfg. Fails,
 * naming the address, when it cannot bind.
 */
struct emu_server *emu_server_new(struct event_base *base, const struct emu_config *cfg, const char *host,
				  int port, struct errbuf *err);

/* The port actually bound. */
int emu_server_port(const struct emu_server *s);

/* Closes every connection (delayed requests get a 503) and frees everything. */
void emu_server_free(struct emu_server *s);

#endif
