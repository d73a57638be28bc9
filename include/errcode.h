/*
 * errcode.h - every error code the HTTP API answers, with its status and what
 * it means: one table, so the answers, `abilitysync errors --markdown` and the
 * README's list cannot drift apart (the lint suite compares the README with
 * it, the service suite provokes every code and checks its status).
 */
#ifndef ABILITYSYNC_ERRCODE_H
#define ABILITYSYNC_ERRCODE_H

#include <stdio.h>

enum errcode {
	E_BAD_REQUEST,
	E_MALFORMED_JSON,
	E_INVALID_UTF8,
	E_BAD_QUERY,
	E_BAD_PATH,
	E_UNAUTHORIZED,
	E_FORBIDDEN,
	E_NOT_FOUND,
	E_METHOD_NOT_ALLOWED,
	E_VECTOR_ID_COLLISION,
	E_RESTORE_RUNNING,
	E_RECONCILE_RUNNING,
	E_NOTHING_TO_RESUME,
	E_JOB_NOT_RUNNING,
	E_PAYLOAD_TOO_LARGE,
	E_EXPECTATION_FAILED,
	E_UNSUPPORTED_MEDIA_TYPE,
	E_MISSING_FIELD,
	E_WRONG_TYPE,
	E_INVALID_FIELD,
	E_UNKNOWN_FIELD,
	E_DUPLICATE_FIELD,
	E_EMPTY_FIELD,
	E_TOO_LONG,
	E_INVALID_ABILITY_ID,
	E_VECTOR_ID_OUT_OF_RANGE,
	E_WRONG_DIMENSION,
	E_INVALID_EMBEDDING,
	E_EMPTY_BATCH,
	E_BATCH_TOO_LARGE,
	E_DUPLICATE_ABILITY,
	E_INVALID_BODY,
	E_INVALID_PARAMETER,
	E_POSTGRES_ERROR,
	E_NEEDS_POSTGRES,
	E_METHOD_NOT_IMPLEMENTED,
	E_VECTOR_DB_ERROR,
	E_POSTGRES_UNAVAILABLE,
	E_NOT_MIGRATED,
	E_VECTOR_DB_UNAVAILABLE,
	E_OVERLOADED,
	E_TOO_MANY_JOBS,
	E_RATE_LIMITED,
	E_COUNT
};

struct errcode_def {
	const char *code;
	int status;
	const char *meaning;
};

const struct errcode_def *errcode_def(enum errcode e);

/* The code by its name (restore jobs name theirs), or E_COUNT. */
enum errcode errcode_by_name(const char *code);

/* The README's table: code, status, meaning. */
void errcode_print_markdown(FILE *f);

#endif
