#include "emu_fault.h"

#include "mem.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void emu_faults_init(struct emu_faults *f)
{
	memset(f, 0, sizeof(*f));
	f->next_id = 1;
}

static void rule_free(struct emu_fault_rule *r)
{
	free(r->path);
	free(r->method);
	free(r->body);
}

void emu_faults_clear(struct emu_faults *f)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		rule_free(&f->rules[i]);
	f->n = 0;
}

static bool member_string(json_t *root, const char *key, char **out, struct errbuf *err)
{
	json_t *v = json_object_get(root, key);

	if (!v)
		return true;
	if (!json_is_string(v)) {
		err_set(err, "%s must be a string", key);
		return false;
	}
	*out = xstrdup(json_string_value(v));
	return true;
}

static bool member_int(json_t *root, const char *key, long long min, long long max, long long *out,
		       struct errbuf *err)
{
	json_t *v = json_object_get(root, key);

	if (!v)
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
		err_set(err, "%s must be an integer from %lld to %lld", key, min, max);
		return false;
	}
	*out = json_integer_value(v);
	return true;
}

static bool check_members(json_t *root, struct errbuf *err)
{
	static const char *const known[] = {"path",	  "method", "status", "body",	"count",
					    "fraction", "latency_ms", "reset",  "hold", "applied"};
	const char *key;
	json_t *v;
	size_t i;

	json_object_foreach(root, key, v) {
		for (i = 0; i < ARRAY_LEN(known); i++)
			if (strcmp(key, known[i]) == 0)
				break;
		if (i == ARRAY_LEN(known)) {
			err_set(err, "unknown member '%s' (known: path, method, status, body, count, fraction, "
				"latency_ms, reset, hold, applied)", key);
			return false;
		}
	}
	return true;
}

static bool parse_fraction(json_t *root, double *out, struct errbuf *err)
{
	json_t *v = json_object_get(root, "fraction");

	if (!v)
		return true;
	if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1) {
		err_set(err, "fraction must be a number from 0 to 1");
		return false;
	}
	*out = json_number_value(v);
	return true;
}

static bool member_bool(json_t *root, const char *key, bool *out, struct errbuf *err)
{
	json_t *v = json_object_get(root, key);

	if (!v)
		return true;
	if (!json_is_boolean(v)) {
		err_set(err, "%s must be true or false", key);
		return false;
	}
	*out = json_is_true(v);
	return true;
}

/*
 * A rule that says what to answer answers; one that only delays (or holds)
 * passes on; neither: a 500.
 */
static enum emu_fault_kind decide_kind(json_t *root, bool reset, unsigned latency_ms, bool hold)
{
	if (reset)
		return EMU_FAULT_RESET;
	if (json_object_get(root, "status") || json_object_get(root, "body"))
		return EMU_FAULT_REPLY;
	return latency_ms > 0 || hold ? EMU_FAULT_PASS : EMU_FAULT_REPLY;
}

static bool parse_rule(json_t *root, struct emu_fault_rule *r, struct errbuf *err)
{
	long long status = 500, count = -1, latency = 0;
	bool reset = false;

	memset(r, 0, sizeof(*r));
	r->fraction = 1;
	if (!json_is_object(root)) {
		err_set(err, "a fault rule must be a JSON object");
		return false;
	}
	if (!check_members(root, err) || !member_string(root, "path", &r->path, err) ||
	    !member_string(root, "method", &r->method, err) || !member_string(root, "body", &r->body, err) ||
	    !member_int(root, "status", 100, 599, &status, err) ||
	    !member_int(root, "count", 1, INT64_MAX, &count, err) ||
	    !member_int(root, "latency_ms", 0, EMU_FAULT_LATENCY_MAX, &latency, err) ||
	    !parse_fraction(root, &r->fraction, err) || !member_bool(root, "reset", &reset, err) ||
	    !member_bool(root, "hold", &r->hold, err) || !member_bool(root, "applied", &r->applied, err))
		return false;
	if (reset && (json_object_get(root, "status") || json_object_get(root, "body"))) {
		err_set(err, "reset closes the connection without a reply: it takes no status or body");
		return false;
	}
	if (!r->path)
		r->path = xstrdup("");
	if (!r->method)
		r->method = xstrdup("");
	r->status = (int)status;
	r->remaining = count;
	r->latency_ms = (unsigned)latency;
	r->kind = decide_kind(root, reset, r->latency_ms, r->hold);
	if (r->applied && !reset && !latency && !json_object_get(root, "status") && !json_object_get(root, "body")) {
		err_set(err, "applied serves the request and then needs something to do instead of its answer: "
			"reset, latency_ms, or a status");
		return false;
	}
	return true;
}

bool emu_fault_add_json(struct emu_faults *f, const char *json, size_t len, unsigned *id, struct errbuf *err)
{
	json_error_t jerr;
	json_t *root;
	struct emu_fault_rule r;
	bool ok = false;

	if (f->n == EMU_FAULT_MAX) {
		err_set(err, "at most %d fault rules; DELETE /_admin/faults first", EMU_FAULT_MAX);
		return false;
	}
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		err_set(err, "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
		return false;
	}
	if (!parse_rule(root, &r, err)) {
		rule_free(&r);
		goto out;
	}
	r.id = f->next_id++;
	f->rules[f->n++] = r;
	*id = r.id;
	ok = true;
out:
	json_decref(root);
	return ok;
}

static bool draw_wins(double fraction)
{
	if (fraction >= 1)
		return true;
	if (fraction <= 0)
		return false;
	return arc4random() / 4294967296.0 < fraction;
}

static bool rule_matches(const struct emu_fault_rule *r, const char *method, const char *path)
{
	if (*r->method && strcasecmp(r->method, method) != 0)
		return false;
	return strstr(path, r->path) != NULL;
}

static void drop_rule(struct emu_faults *f, size_t i)
{
	rule_free(&f->rules[i]);
	memmove(&f->rules[i], &f->rules[i + 1], (f->n - i - 1) * sizeof(f->rules[0]));
	f->n--;
}

bool emu_fault_match(struct emu_faults *f, const char *method, const char *path, struct emu_fault_action *act)
{
	size_t i;

	for (i = 0; i < f->n; i++) {
		struct emu_fault_rule *r = &f->rules[i];

		if (!rule_matches(r, method, path) || !draw_wins(r->fraction))
			continue;
		act->kind = r->kind;
		act->latency_ms = r->latency_ms;
		act->status = r->status;
		act->body = xstrdup(r->body ? r->body : EMU_FAULT_DEFAULT_BODY);
		act->hold = r->hold;
		act->applied = r->applied;
		act->rule = r->id;
		if (r->remaining > 0 && --r->remaining == 0)
			drop_rule(f, i);
		return true;
	}
	return false;
}

void emu_fault_action_free(struct emu_fault_action *act)
{
	free(act->body);
	act->body = NULL;
}
