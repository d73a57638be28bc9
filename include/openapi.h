/*
 * openapi.h - the OpenAPI 3.1 document of the HTTP API (api/openapi.yaml, as
 * JSON), built into the binary and served at /v1/openapi.json. The tests
 * validate every answer they receive against it.
 */
#ifndef ABILITYSYNC_OPENAPI_H
#define ABILITYSYNC_OPENAPI_H

#include <stddef.h>

extern const char openapi_json[];
extern const size_t openapi_json_len;

#endif
