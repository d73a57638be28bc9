#include "text.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

bool utf8_valid(const char *str, size_t len, size_t *bad)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n, k;
		uint32_t cp;

		if (c < 0x80) {
			uint64_t w;

			/* ASCII runs, the bulk of a body of numbers, eight bytes at a time. */
			for (i++; len - i >= 8; i += 8) {
				memcpy(&w, s + i, 8);
				if (w & 0x8080808080808080ull)
					break;
			}
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			goto bad;
		}
		if (len - i <= n)
			goto bad;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				goto bad;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			goto bad;
		i += n + 1;
	}
	return true;
bad:
	if (bad)
		*bad = i;
	return false;
}

void utf8_scrub(char *s)
{
	size_t len = strlen(s), i = 0, bad;

	while (i < len && !utf8_valid(s + i, len - i, &bad)) {
		s[i + bad] = '?';
		i += bad + 1;
	}
}

struct num num(int64_t v)
{
	struct num n;

	snprintf(n.s, sizeof(n.s), "%lld", (long long)v);
	return n;
}
