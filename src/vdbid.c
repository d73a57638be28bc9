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

/* The length of the UTF-8 sequence starting with c (1 for a stray or invalid byte). */
static size_t utf8_seq_len(unsigned char c)
{
	return c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 1;
}

size_t vdb_blob_name(const char *service, size_t len, char *out, size_t outsize)
{
	size_t n = 0, i = 0;
	const char *p;

#define PUT(ch) do { if (n + 1 < outsize) out[n] = (ch); n++; } while (0)
	for (p = VDB_BLOB_PREFIX; *p; p++)
		PUT(*p);
	while (i < len) {
		unsigned char c = (unsigned char)service[i];
		size_t seq = utf8_seq_len(c);

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_') {
			PUT((char)c);
			i++;
			continue;
		}
		/*
		 * JavaScript's replace(/[^a-zA-Z0-9_]/g, '_') works on UTF-16 code
		 * units: one '_' per character, two for a character outside the BMP
		 * (a 4-byte UTF-8 sequence, a surrogate pair in JavaScript).
		 */
		PUT('_');
		if (seq == 4)
			PUT('_');
		i += seq <= len - i ? seq : len - i;
	}
#undef PUT
	if (outsize)
		out[n < outsize ? n : outsize - 1] = '\0';
	return n;
}
