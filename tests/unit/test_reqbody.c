/*
 * The admin routes' bodies (reqbody.c): fields by table, every bad field
 * named with what it must be, nothing set by a refused body.
 */
#include "reqbody.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

static const char *const states[] = {"failed", "pending", NULL};
static const struct field_spec fields[] = {
	{"state", FIELD_CHOICE, 0, 0, states},
	{"service_name", FIELD_NAME, 0, 0, NULL},
	{"note", FIELD_TEXT, 1, 10, NULL},
	{"older_than_s", FIELD_INT, 0, 3600, NULL},
	{"dry_run", FIELD_BOOL, 0, 0, NULL},
};
static const struct body_spec spec = {"a test", fields, 5};

static bool parse(const char *text, struct reqbody *b, struct ability_error *err)
{
	return reqbody_parse(text, strlen(text), &spec, b, err);
}

Test(reqbody, no_body_is_an_object_of_no_fields)
{
	struct reqbody b;
	struct ability_error err;
	size_t i;

	cr_assert(parse("", &b, &err));
	for (i = 0; i < spec.n; i++)
		cr_assert(b.v[i].set == false);
	reqbody_free(&b);
}

Test(reqbody, every_field_of_the_table_is_read)
{
	struct reqbody b;
	struct ability_error err;

	cr_assert(parse("{\"state\":\"pending\",\"service_name\":\"s\",\"note\":\"why\",\"older_than_s\":60,"
			"\"dry_run\":true}", &b, &err), "%s: %s", err.field, err.message);
	cr_assert(eq(str, (char *)b.v[0].s, "pending"));
	cr_assert(eq(str, (char *)b.v[1].s, "s"));
	cr_assert(eq(str, (char *)b.v[2].s, "why"));
	cr_assert(eq(i64, b.v[3].i, 60));
	cr_assert(b.v[4].set && b.v[4].b);
	reqbody_free(&b);
}

Test(reqbody, every_bad_field_is_named_and_nothing_is_set)
{
	struct reqbody b;
	struct ability_error err;

	cr_assert(parse("{\"dry_run\":true,\"state\":\"stuck\",\"older_than_s\":3601,\"colour\":1,\"note\":\"\"}", &b,
			&err) == false);
	cr_assert(eq(int, err.status, 422));
	cr_assert(eq(str, err.field, "state"));
	cr_assert(eq(str, err.message, "state is failed or pending"));
	cr_assert(eq(sz, err.nothers, 3));
	cr_assert(eq(str, err.others[0].message, "older_than_s is an integer from 0 to 3600"));
	cr_assert(eq(str, (char *)err.others[1].code, "unknown_field"));
	cr_assert(eq(str, err.others[1].message,
		     "colour is not a field of a test (state, service_name, note, older_than_s, dry_run)"));
	cr_assert(eq(str, err.others[2].message, "note is a string of 1 to 10 bytes"));
	cr_assert(b.v[4].set == false, "a refused body sets nothing, not even its good fields");
	reqbody_free(&b);
}

/* Found by fuzz_job_body: a member named "" was refused with a message that began with a blank. */
Test(reqbody, a_member_named_empty_is_quoted)
{
	struct reqbody b;
	struct ability_error err;

	cr_assert(parse("{\"dry_run\":false,\"\":\"svc\"}", &b, &err) == false);
	cr_assert(eq(str, err.field, ""));
	cr_assert(eq(int, strncmp(err.message, "\"\" is not a field of a test", 27), 0), "%s", err.message);
	reqbody_free(&b);
}

Test(reqbody, not_json_not_an_object_and_duplicates_are_refused)
{
	struct reqbody b;
	struct ability_error err;

	cr_assert(parse("{\"dry_run\":", &b, &err) == false);
	cr_assert(eq(str, (char *)err.code, "malformed_json"));
	reqbody_free(&b);
	cr_assert(parse("[]", &b, &err) == false);
	cr_assert(eq(str, (char *)err.code, "invalid_body"));
	reqbody_free(&b);
	cr_assert(parse("{\"dry_run\":true,\"dry_run\":false}", &b, &err) == false);
	cr_assert(eq(int, err.status, 400));
	reqbody_free(&b);
}
