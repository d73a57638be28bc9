/*
 * vdbid.h - the ids and names the original application gives its vectors.
 *
 * Both must stay byte-compatible with the original (reference/infraxa-api.md
 * §2.2-2.3): the same ability must land on the same vector in the same blob,
 * whichever program wrote it.
 */
#ifndef ABILITYSYNC_VDBID_H
#define ABILITYSYNC_VDBID_H

#include "common.h"

#define VDB_BLOB_PREFIX "abilities_"

/*
 * vector_id = |int32_be(sha256(ability_id)[0..4])|, computed in 64 bits as
 * JavaScript's Math.abs does. Fails for the one id that gives 2147483648,
 * which the mirror's integer column cannot hold (the original fails there too,
 * after it wrote the vector).
 */
bool vdb_vector_id(const char *ability_id, size_t len, int64_t *out, struct errbuf *err) MUSTCHECK;

/* The id from the first four bytes of the digest, before the range check. */
int64_t vdb_vector_id_from_digest(const uint8_t first4[4]);

/*
 * The blob of a service: "abilities_" + service_name with every character
 * outside [A-Za-z0-9_] replaced by '_' exactly as the original's JavaScript
 * does it (per UTF-16 code unit: api.github.com -> abilities_api_github_com,
 * café -> abilities_caf_). Like snprintf: writes at most outsize bytes
 * (NUL included) and returns the name's whole length, so a result >= outsize
 * means it was cut (a service_name written to Postgres by someone else can be
 * of any length; strlen(service) + 11 bytes always suffice).
 */
size_t vdb_blob_name(const char *service, size_t len, char *out, size_t outsize);

#endif
