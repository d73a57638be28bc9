#include "vdbid.h"

#include "hash.h"

#include <string.h>

int64_t vdb_vector_id_from_digest(const uint8_t d[4])
{
	int32_t be = (int32_t)((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3]);

	return be < 0 ? -(int64_t)be : be;
}

bool vdb_vector_id(const char *ability_id, size_t len, int64_t *out, struct errbuf *err)
{
	uint8_t d[SHA256_LEN];
	int64_t id;

	sha256(ability_id, len, d);
	id = vdb_vector_id_from_digest(d);
	if (id > INT32_MAX) {
		err_set(err, "ability_id \"%.*s\" maps to vector_id %lld, which does not fit the mirror's "
			"integer column (the original application fails on it too); choose another ability_id",
			(int)(len > 200 ? 200 : len), ability_id, (long long)id);
		return false;
	}
	*out = id;
	return true;
}

size_t vdb_blob_name(const char *service, size_t len, char *out)
{
	size_t n = sizeof(VDB_BLOB_PREFIX) - 1, i;

	memcpy(out, VDB_BLOB_PREFIX, n);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)service[i];
		bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';

		out[n++] = keep ? (char)c : '_';
	}
	out[n] = '\0';
	return n;
}
