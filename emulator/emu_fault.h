/*
 * emu_fault.h - faults the emulator injects on demand, for tests of retries,
 * time-outs and partial failures.
 *
 * A rule names which requests it applies to (a substring of the path, a
 * method) and what happens to them: a delay, then either a canned reply, a
 * reset connection, or the normal answer. Rules are tried in the order they
 * were added; the first one that matches, still has requests left (`count`)
 * and wins its draw (`fraction`, with arc4random) applies, and uses up one of
 * its requests. A rule is dropped once it has none left.
 *
 * This module only decides; the HTTP layer carries the action out.
 */
#ifndef ABILITYSYNC_EMU_FAULT_H
#define ABILITYSYNC_EMU_FAULT_H

#include "common.h"

#define EMU_FAULT_MAX 64
#define EMU_FAULT_LATENCY_MAX 600000 /* ms */
#define EMU_FAULT_DEFAULT_BODY "{\"detail\":\"injected fault\"}"

enum emu_fault_kind {
	EMU_FAULT_PASS,  /* only the delay: then the request is served normally */
	EMU_FAULT_REPLY, /* answer with status and body instead of the real handler */
	EMU_FAULT_RESET, /* close the connection without answering */
};

struct emu_fault_rule {
	unsigned id;
	char *path;          /* substring of the request path; "" matches any */
	char *method;        /* "" matches any; compared ignoring case */
	enum emu_fault_kind kind;
	int status;
	char *body;
	long long remaining; /* requests left; -1: unlimited */
	double fraction;     /* chance that a matching request is hit, 0..1 */
	unsigned latency_ms;
	bool hold;           /* wait for POST /_admin/release before anything else */
	bool applied;        /* serve the request first; the fault replaces its answer */
};

struct emu_faults {
	struct emu_fault_rule rules[EMU_FAULT_MAX];
	size_t n;
	unsigned next_id;
};

/* What to do with one request; body is the caller's to free (emu_fault_action_free). */
struct emu_fault_action {
	enum emu_fault_kind kind;
	unsigned latency_ms;
	int status;
	char *body;
	bool hold;
	bool applied;
	unsigned rule;       /* the id of the rule that matched */
};

void emu_faults_init(struct emu_faults *f);

/* Removes every rule; ids keep counting up. */
void emu_faults_clear(struct emu_faults *f);

/*
 * Adds the rule described by the JSON object json[0..len) (the admin
 * endpoint's body: path, method, status, body, count, fraction, latency_ms,
 * reset, hold, applied). Fails, naming the member, on anything else, and when EMU_FAULT_MAX
 * rules are in place.
 */
bool emu_fault_add_json(struct emu_faults *f, const char *json, size_t len, unsigned *id, struct errbuf *err)
	MUSTCHECK;

/* Finds the rule for a request and fills *act; false when no rule applies. */
bool emu_fault_match(struct emu_faults *f, const char *method, const char *path, struct emu_fault_action *act);

void emu_fault_action_free(struct emu_fault_action *act);

#endif
