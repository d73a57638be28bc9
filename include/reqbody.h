/*
 * reqbody.h - the small request bodies of the admin routes (restore,
 * reconcile, sync retry and pause, a full-set sync's options): a JSON object
 * of optional fields, checked against a table.
 *
 * One parser for all of them, so each refuses the same way: not JSON ->
 * malformed_json (400), not an object -> invalid_body, a field the table does
 * not have -> unknown_field, a value of the wrong type or range ->
 * invalid_field; every bad field is named (errors[] of the answer), with what
 * the table expects of it. No body at all (len 0) is an object of no fields.
 * Pure: no I/O, no evhttp (tests/fuzz/fuzz_job_body.c drives it).
 */
#ifndef ABILITYSYNC_REQBODY_H
#define ABILITYSYNC_REQBODY_H

#include "ability.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define REQBODY_FIELDS_MAX 8

enum field_kind {
	FIELD_BOOL,
	FIELD_NAME,   /* a service name: a string of 1 to ABILITY_TEXT_MAX bytes */
	FIELD_TEXT,   /* a string of min to max bytes */
	FIELD_INT,    /* an integer from min to max */
	FIELD_CHOICE, /* one of choices */
};

struct field_spec {
	const char *name;
	enum field_kind kind;
	long long min, max;
	const char *const *choices; /* FIELD_CHOICE: NULL-terminated */
};

struct body_spec {
	const char *what;           /* "a restore": for the messages */
	const struct field_spec *fields;
	size_t n;                   /* at most REQBODY_FIELDS_MAX */
};

struct field_value {
	bool set;
	bool b;
	long long i;
	const char *s;              /* in the parsed body: alive until reqbody_free */
};

struct reqbody {
	json_t *root;
	struct field_value v[REQBODY_FIELDS_MAX]; /* v[i] is spec->fields[i] */
};

/*
 * Parses body[0..len) against spec. True: out->v holds each field sent. False:
 * *err names every bad field (err->status and code the first one's), and out
 * holds nothing. reqbody_free either way.
 */
bool reqbody_parse(const char *body, size_t len, const struct body_spec *spec, struct reqbody *out,
		   struct ability_error *err) MUSTCHECK;

void reqbody_free(struct reqbody *b);

/* What the table expects of a field, in words ("resume is a boolean"). */
void reqbody_expects(const struct field_spec *f, char *out, size_t outlen);

#endif
