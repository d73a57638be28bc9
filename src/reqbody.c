#include "reqbody.h"

#include "buf.h"

#include <stdio.h>
#include <string.h>

void reqbody_expects(const struct field_spec *f, char *out, size_t outlen)
{
	struct buf choices = BUF_INIT;
	const char *const *c;

	switch (f->kind) {
	case FIELD_BOOL:
		snprintf(out, outlen, "%s is a boolean", f->name);
		break;
	case FIELD_NAME:
		snprintf(out, outlen, "%s is a string of 1 to %d bytes", f->name, ABILITY_TEXT_MAX);
		break;
	case FIELD_TEXT:
		snprintf(out, outlen, "%s is a string of %lld to %lld bytes", f->name, f->min, f->max);
		break;
	case FIELD_INT:
		snprintf(out, outlen, "%s is an integer from %lld to %lld", f->name, f->min, f->max);
		break;
	case FIELD_CHOICE:
		for (c = f->choices; *c; c++)
			buf_printf(&choices, "%s%s", c == f->choices ? "" : c[1] ? ", " : " or ", *c);
		snprintf(out, outlen, "%s is %s", f->name, buf_cstr(&choices));
		buf_free(&choices);
		break;
	}
}

static bool text_within(json_t *v, long long min, long long max)
{
	return json_is_string(v) && (long long)json_string_length(v) >= min && (long long)json_string_length(v) <= max;
}

/* v as the field wants it, into *out; false when it is not. */
static bool take(const struct field_spec *f, json_t *v, struct field_value *out)
{
	const char *const *c;

	switch (f->kind) {
	case FIELD_BOOL:
		if (!json_is_boolean(v))
			return false;
		out->b = json_is_true(v);
		break;
	case FIELD_NAME:
		if (!text_within(v, 1, ABILITY_TEXT_MAX))
			return false;
		out->s = json_string_value(v);
		break;
	case FIELD_TEXT:
		if (!text_within(v, f->min, f->max))
			return false;
		out->s = json_string_value(v);
		break;
	case FIELD_INT:
		if (!json_is_integer(v) || json_integer_value(v) < f->min || json_integer_value(v) > f->max)
			return false;
		out->i = json_integer_value(v);
		break;
	case FIELD_CHOICE:
		if (!json_is_string(v))
			return false;
		for (c = f->choices; *c && strcmp(*c, json_string_value(v)) != 0; c++)
			;
		if (!*c)
			return false;
		out->s = json_string_value(v);
		break;
	}
	out->set = true;
	return true;
}

static const struct field_spec *spec_field(const struct body_spec *spec, const char *name, size_t *at)
{
	for (*at = 0; *at < spec->n; (*at)++)
		if (strcmp(spec->fields[*at].name, name) == 0)
			return &spec->fields[*at];
	return NULL;
}

bool reqbody_parse(const char *body, size_t len, const struct body_spec *spec, struct reqbody *out,
		   struct ability_error *err)
{
	json_error_t jerr;
	json_t *v;
	const char *key;
	size_t i;

	memset(out, 0, sizeof(*out));
	memset(err, 0, sizeof(*err));
	err->collect = true;
	if (len == 0)
		return true;
	if (memchr(body, '\0', len)) /* never JSON, and jansson reads some as the end of the text */
		return ability_refuse(err, E_MALFORMED_JSON, NULL, "the body is not valid JSON: a NUL byte at byte %zu",
				      (size_t)((const char *)memchr(body, '\0', len) - body));
	out->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!out->root)
		return ability_refuse(err, E_MALFORMED_JSON, NULL, "the body is not valid JSON: %s", jerr.text);
	if (!json_is_object(out->root))
		return ability_refuse(err, E_INVALID_BODY, NULL, "the body of %s must be an object", spec->what);
	json_object_foreach(out->root, key, v) {
		const struct field_spec *f = spec_field(spec, key, &i);
		struct buf names = BUF_INIT;
		char expects[200];
		size_t k;

		if (f) {
			if (!take(f, v, &out->v[i])) {
				reqbody_expects(f, expects, sizeof(expects));
				ability_refuse(err, E_INVALID_FIELD, key, "%s", expects);
			}
			continue;
		}
		for (k = 0; k < spec->n; k++)
			buf_printf(&names, "%s%s", k ? ", " : "", spec->fields[k].name);
		ability_refuse(err, E_UNKNOWN_FIELD, key, "%s is not a field of %s (%s)", *key ? key : "\"\"",
			       spec->what, spec->n ? buf_cstr(&names) : "it takes none");
		buf_free(&names);
	}
	if (!err->code)
		return true;
	memset(out->v, 0, sizeof(out->v));
	return false;
}

void reqbody_free(struct reqbody *b)
{
	json_decref(b->root);
	b->root = NULL;
}
