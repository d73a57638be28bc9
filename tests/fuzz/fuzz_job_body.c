/*
 * fuzz_job_body - the bodies of the admin routes (restore, reconcile, sync
 * retry, sync pause: api_admin_bodies), each parsed by reqbody_parse.
 *
 * Invariants, checked against jansson's own reading of the same bytes:
 *   - accepted: the bytes are empty, or a JSON object without duplicate keys
 *     whose every member is a field of the table with a value of its kind
 *     and range; each field is set exactly when the object has it, with the
 *     object's value;
 *   - refused: the answer is 400 or 422 with a code, nothing is set, and
 *     every field the error names is a member of the object (or none, for a
 *     body that is not an object, or its member named ""); the message says what the field must be
 *     (reqbody_expects) or that it is unknown, naming the fields there are.
 */
#include "fuzz.h"

#include "api.h"
#include "reqbody.h"

#include <jansson.h>
#include <stdbool.h>

/* Does the object's value v pass as field f (the oracle: written apart from reqbody.c's take)? */
static bool value_fits(const struct field_spec *f, json_t *v)
{
	const char *const *c;
	long long n;

	switch (f->kind) {
	case FIELD_BOOL:
		return json_is_true(v) || json_is_false(v);
	case FIELD_NAME:
		return json_is_string(v) && json_string_length(v) >= 1 && json_string_length(v) <= ABILITY_TEXT_MAX;
	case FIELD_TEXT:
		return json_is_string(v) && (long long)json_string_length(v) >= f->min &&
		       (long long)json_string_length(v) <= f->max;
	case FIELD_INT:
		n = json_is_integer(v) ? json_integer_value(v) : f->min - 1;
		return json_is_integer(v) && n >= f->min && n <= f->max;
	case FIELD_CHOICE:
		for (c = f->choices; json_is_string(v) && *c; c++)
			if (strcmp(*c, json_string_value(v)) == 0)
				return true;
		return false;
	}
	return false;
}

static const struct field_spec *field_named(const struct body_spec *spec, const char *name)
{
	size_t i;

	for (i = 0; i < spec->n; i++)
		if (strcmp(spec->fields[i].name, name) == 0)
			return &spec->fields[i];
	return NULL;
}

/* Every member fits the table. */
static bool object_fits(const struct body_spec *spec, json_t *o)
{
	const char *key;
	json_t *v;

	json_object_foreach(o, key, v) {
		const struct field_spec *f = field_named(spec, key);

		if (!f || !value_fits(f, v))
			return false;
	}
	return true;
}

/* A member of o whose key begins with the n bytes of prefix. */
static bool member_starting(json_t *o, const char *prefix, size_t n)
{
	const char *key;
	json_t *v;

	json_object_foreach(o, key, v) {
		(void)v;
		if (strncmp(key, prefix, n) == 0)
			return true;
	}
	return false;
}

/* A field an error names (cut at cap bytes) and its message. */
static void check_named(const struct body_spec *spec, json_t *o, const char *field, size_t cap, const char *message)
{
	const struct field_spec *f;
	char expects[200];

	if (!*field) {
		CHECK(!json_is_object(o) || json_object_get(o, ""), "a refusal of an object names no field: %s", message);
		return;
	}
	if (strlen(field) >= cap - 1) { /* a long key, cut (and its last character scrubbed) */
		CHECK(member_starting(o, field, strlen(field) - 3), "the error names %s..., not a member", field);
		return;
	}
	CHECK(json_is_object(o) && json_object_get(o, field), "the error names %s, not a member of the body", field);
	f = field_named(spec, field);
	if (f) {
		reqbody_expects(f, expects, sizeof(expects));
		CHECK(strcmp(message, expects) == 0, "%s's message is \"%s\", not \"%s\"", field, message, expects);
		CHECK(!value_fits(f, json_object_get(o, field)), "%s is named but its value fits", field);
	} else {
		CHECK(strncmp(message, *field ? field : "\"\"", strlen(field)) == 0 &&
		      (strlen(message) > 150 || (strstr(message, " is not a field of ") && strstr(message, spec->what))),
		      "unknown %s: \"%s\"", field, message);
	}
}

static void check_one(const struct body_spec *spec, const char *body, size_t len)
{
	struct reqbody b;
	struct ability_error err;
	/* jansson reads some NUL bytes as the end of the text: never JSON, for the oracle too. */
	json_t *o = len && !memchr(body, '\0', len) ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
	bool ok = reqbody_parse(body, len, spec, &b, &err);
	size_t i;

	if (ok) {
		CHECK(len == 0 || (json_is_object(o) && object_fits(spec, o)), "%s: accepted a body jansson and the "
		      "table refuse", spec->what);
		for (i = 0; i < spec->n; i++) {
			json_t *v = o ? json_object_get(o, spec->fields[i].name) : NULL;
			const struct field_value *got = &b.v[i];

			CHECK(got->set == (v != NULL), "%s: %s set %d, in the body %d", spec->what, spec->fields[i].name,
			      got->set, v != NULL);
			if (!v)
				continue;
			if (spec->fields[i].kind == FIELD_BOOL)
				CHECK(got->b == json_is_true(v), "%s: %s", spec->what, spec->fields[i].name);
			else if (spec->fields[i].kind == FIELD_INT)
				CHECK(got->i == json_integer_value(v), "%s: %s", spec->what, spec->fields[i].name);
			else
				CHECK(got->s && strcmp(got->s, json_string_value(v)) == 0, "%s: %s", spec->what,
				      spec->fields[i].name);
		}
	} else {
		CHECK(len > 0 && !(json_is_object(o) && object_fits(spec, o)), "%s: refused a body that fits (%s: %s)",
		      spec->what, err.field, err.message);
		CHECK(err.code && (err.status == 400 || err.status == 422), "%s: status %d", spec->what, err.status);
		for (i = 0; i < spec->n; i++)
			CHECK(!b.v[i].set, "%s: a refused body left %s set", spec->what, spec->fields[i].name);
		check_named(spec, o, err.field, sizeof(err.field), err.message);
		for (i = 0; i < err.nothers; i++)
			check_named(spec, o, err.others[i].field, sizeof(err.others[i].field), err.others[i].message);
	}
	reqbody_free(&b);
	json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = fuzz_copy(data, size);
	size_t i;

	for (i = 0; api_admin_bodies[i]; i++)
		check_one(api_admin_bodies[i], body, size);
	free(body);
	return 0;
}
