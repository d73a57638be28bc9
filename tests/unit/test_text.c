/* Small building blocks: UTF-8 checks, JSON string escaping, SHA-256. */
#include "buf.h"
#include "hash.h"
#include "text.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

static void valid(const char *s, size_t len)
{
	size_t bad = 99;

	cr_assert(utf8_valid(s, len, &bad), "rejected at %zu", bad);
}

static void invalid(const char *s, size_t len, size_t at)
{
	size_t bad = 99;

	cr_assert(not(utf8_valid(s, len, &bad)));
	cr_assert(eq(sz, bad, at));
}

Test(utf8, accepts_well_formed_text)
{
	valid("", 0);
	valid("plain ascii", 11);
	valid("caf\xc3\xa9", 5);
	valid("\xe2\x82\xac", 3);         /* U+20AC */
	valid("\xf0\x9f\x98\x80", 4);     /* U+1F600 */
	valid("\xf4\x8f\xbf\xbf", 4);     /* U+10FFFF */
	valid("\xef\xbb\xbf", 3);         /* BOM */
}

Test(utf8, rejects_malformed_text_at_the_right_byte)
{
	invalid("caf\xe9", 4, 3);             /* Latin-1 */
	invalid("ab\xc0\xaf", 4, 2);          /* overlong '/' */
	invalid("\xe0\x80\xaf", 3, 0);        /* overlong */
	invalid("\xed\xa0\x80", 3, 0);        /* surrogate */
	invalid("\xf4\x90\x80\x80", 4, 0);    /* above U+10FFFF */
	invalid("x\xe2\x82", 3, 1);           /* truncated */
	invalid("\x80", 1, 0);                /* stray continuation */
	invalid("\xff", 1, 0);
}


/* What error answers go through before they become JSON: jansson refuses non-UTF-8. */
Test(utf8, scrub_makes_any_text_well_formed_and_keeps_what_was)
{
	char cut[] = "key \xc3\xa9\xe2\x82";      /* a three-byte character cut after two */
	char raw[] = "id \xff\xfe and caf\xc3\xa9";
	char ok[] = "\xf0\x9f\x98\x80 fine";
	size_t bad;

	utf8_scrub(cut);
	utf8_scrub(raw);
	utf8_scrub(ok);
	cr_assert(eq(str, cut, "key \xc3\xa9??"));
	cr_assert(eq(str, raw, "id ?? and caf\xc3\xa9"));
	cr_assert(eq(str, ok, "\xf0\x9f\x98\x80 fine"));
	cr_assert(utf8_valid(cut, strlen(cut), &bad));
}
Test(buf, json_strings_escape_controls_quotes_and_backslashes)
{
	struct buf b = BUF_INIT;

	buf_json_str(&b, "a\"b\\c\nd\x01\x7f\xc3\xa9", 11);
	cr_assert(eq(str, b.data, "\"a\\\"b\\\\c\\nd\\u0001\x7f\xc3\xa9\""));
	buf_free(&b);
}

Test(buf, printf_grows)
{
	struct buf b = BUF_INIT;
	int i;

	for (i = 0; i < 1000; i++)
		buf_printf(&b, "%04d,", i);
	cr_assert(eq(sz, b.len, 5000));
	cr_assert(eq(int, strncmp(b.data + 4995, "0999,", 5), 0));
	cr_assert(eq(sz, strlen(b.data), 5000));
	buf_free(&b);
}

/* What `abilitysync probe` logged when every value was a default: an empty line, stolen. */
Test(buf, steal_of_a_buffer_never_written_is_an_empty_string)
{
	struct buf b = BUF_INIT;
	char *s;

	s = buf_steal(&b);
	cr_assert(eq(str, s, ""));
	free(s);
	buf_reserve(&b, 16); /* room, but nothing written */
	s = buf_steal(&b);
	cr_assert(eq(str, s, ""));
	free(s);
}

Test(hash, sha256_known_vectors)
{
	char hex[65];

	sha256_hex("", 0, hex);
	cr_assert(eq(str, hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
	sha256_hex("abc", 3, hex);
	cr_assert(eq(str, hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
}
