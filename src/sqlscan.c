#include "sqlscan.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

enum tok_kind { TOK_END, TOK_WORD, TOK_SEMI, TOK_OTHER };

struct token {
	enum tok_kind kind;
	size_t start, len;
};

struct lexer {
	const char *s;
	size_t len, pos;
};

static bool ident_start(unsigned char c)
{
	return isalpha(c) || c == '_' || c >= 0x80;
}

static bool ident_char(unsigned char c)
{
	return ident_start(c) || isdigit(c) || c == '$';
}

static unsigned char peek(const struct lexer *lx, size_t ahead)
{
	return lx->pos + ahead < lx->len ? (unsigned char)lx->s[lx->pos + ahead] : 0;
}

/* Skips whitespace, -- comments and (nested) block comments. */
static void skip_space(struct lexer *lx)
{
	while (lx->pos < lx->len) {
		unsigned char c = peek(lx, 0);

		if (isspace(c)) {
			lx->pos++;
		} else if (c == '-' && peek(lx, 1) == '-') {
			while (lx->pos < lx->len && lx->s[lx->pos] != '\n')
				lx->pos++;
		} else if (c == '/' && peek(lx, 1) == '*') {
			int depth = 0;

			do {
				if (peek(lx, 0) == '/' && peek(lx, 1) == '*') {
					depth++;
					lx->pos += 2;
				} else if (peek(lx, 0) == '*' && peek(lx, 1) == '/') {
					depth--;
					lx->pos += 2;
				} else {
					lx->pos++;
				}
			} while (depth > 0 && lx->pos < lx->len);
		} else {
			return;
		}
	}
}

/* Skips a quoted run starting at the opening quote; a doubled quote is literal. */
static void skip_quoted(struct lexer *lx, char quote, bool backslash_escapes)
{
	lx->pos++;
	while (lx->pos < lx->len) {
		char c = lx->s[lx->pos++];

		if (backslash_escapes && c == '\\') {
			lx->pos++;
		} else if (c == quote) {
			if (peek(lx, 0) != (unsigned char)quote)
				return;
			lx->pos++;
		}
	}
	if (lx->pos > lx->len)
		lx->pos = lx->len;
}

/* At '$': skips a dollar-quoted string if one starts here; false if it is not one. */
static bool skip_dollar_quote(struct lexer *lx)
{
	size_t tag_end = lx->pos + 1, taglen;
	const char *close;

	while (tag_end < lx->len && ident_char((unsigned char)lx->s[tag_end]) && lx->s[tag_end] != '$')
		tag_end++;
	if (tag_end >= lx->len || lx->s[tag_end] != '$')
		return false;
	if (tag_end > lx->pos + 1 && isdigit((unsigned char)lx->s[lx->pos + 1]))
		return false; /* $1 is a parameter, not a tag */
	taglen = tag_end - lx->pos + 1;
	close = memmem(lx->s + tag_end + 1, lx->len - tag_end - 1, lx->s + lx->pos, taglen);
	lx->pos = close ? (size_t)(close - lx->s) + taglen : lx->len;
	return true;
}

static struct token next_token(struct lexer *lx)
{
	struct token t = {TOK_END, 0, 0};
	unsigned char c, n;

	skip_space(lx);
	t.start = lx->pos;
	if (lx->pos >= lx->len)
		return t;
	c = peek(lx, 0);
	n = peek(lx, 1);
	if (c == ';') {
		t.kind = TOK_SEMI;
		lx->pos++;
	} else if ((c == 'e' || c == 'E') && n == '\'') {
		lx->pos++;
		skip_quoted(lx, '\'', true);
		t.kind = TOK_OTHER;
	} else if (strchr("bBxXnN", c) && n == '\'') {
		lx->pos++;
		skip_quoted(lx, '\'', false);
		t.kind = TOK_OTHER;
	} else if ((c == 'u' || c == 'U') && n == '&' && (peek(lx, 2) == '\'' || peek(lx, 2) == '"')) {
		lx->pos += 2;
		skip_quoted(lx, (char)peek(lx, 0), false);
		t.kind = TOK_OTHER;
	} else if (ident_start(c)) {
		while (lx->pos < lx->len && ident_char(peek(lx, 0)))
			lx->pos++;
		t.kind = TOK_WORD;
	} else if (c == '\'' || c == '"') {
		skip_quoted(lx, (char)c, false);
		t.kind = TOK_OTHER;
	} else if (c == '$' && skip_dollar_quote(lx)) {
		t.kind = TOK_OTHER;
	} else {
		lx->pos++;
		t.kind = TOK_OTHER;
	}
	t.len = lx->pos - t.start;
	return t;
}

static bool word_is(const struct lexer *lx, const struct token *t, const char *w)
{
	return t->kind == TOK_WORD && t->len == strlen(w) && strncasecmp(lx->s + t->start, w, t->len) == 0;
}

/* What we know of one statement once its end is reached. */
struct stmt {
	size_t start;
	size_t ntok;
	struct token w[3]; /* the first three tokens */
	bool concurrently;
};

struct rule {
	const char *w1, *w2; /* w2 NULL: any */
	const char *what;
	bool ends_tx;
};

static const struct rule rules[] = {
	{"VACUUM", NULL, "VACUUM", false},
	{"CREATE", "DATABASE", "CREATE DATABASE", false},
	{"DROP", "DATABASE", "DROP DATABASE", false},
	{"CREATE", "TABLESPACE", "CREATE TABLESPACE", false},
	{"DROP", "TABLESPACE", "DROP TABLESPACE", false},
	{"ALTER", "SYSTEM", "ALTER SYSTEM", false},
	{"CREATE", "SUBSCRIPTION", "CREATE SUBSCRIPTION", false},
	{"DROP", "SUBSCRIPTION", "DROP SUBSCRIPTION", false},
	{"REINDEX", "SYSTEM", "REINDEX SYSTEM", false},
	{"REINDEX", "DATABASE", "REINDEX DATABASE", false},
	{"BEGIN", NULL, "BEGIN", true},
	{"START", "TRANSACTION", "START TRANSACTION", true},
	{"COMMIT", NULL, "COMMIT", true},
	{"END", NULL, "END", true},
	{"ROLLBACK", NULL, "ROLLBACK", true},
	{"ABORT", NULL, "ABORT", true},
	{"PREPARE", "TRANSACTION", "PREPARE TRANSACTION", true},
};

static const char *const concurrently_what[][2] = {
	{"CREATE", "CREATE INDEX CONCURRENTLY"},
	{"DROP", "DROP INDEX CONCURRENTLY"},
	{"REINDEX", "REINDEX CONCURRENTLY"},
	{"ALTER", "ALTER TABLE ... DETACH PARTITION CONCURRENTLY"},
};

static bool judge(const struct lexer *lx, const struct stmt *st, struct sql_problem *out)
{
	size_t i;

	if (st->concurrently && !word_is(lx, &st->w[0], "REFRESH")) {
		out->what = "... CONCURRENTLY";
		for (i = 0; i < ARRAY_LEN(concurrently_what); i++)
			if (word_is(lx, &st->w[0], concurrently_what[i][0]))
				out->what = concurrently_what[i][1];
		out->why = "cannot run inside a transaction block";
		return true;
	}
	for (i = 0; i < ARRAY_LEN(rules); i++) {
		const struct rule *r = &rules[i];

		if (!word_is(lx, &st->w[0], r->w1))
			continue;
		if (r->w2 && !word_is(lx, &st->w[1], r->w2))
			continue;
		/* ROLLBACK TO [SAVEPOINT] stays inside the transaction. */
		if (strcmp(r->w1, "ROLLBACK") == 0 && word_is(lx, &st->w[1], "TO"))
			continue;
		out->what = r->what;
		out->why = r->ends_tx ? "would end the migration's transaction early"
				      : "cannot run inside a transaction block";
		return true;
	}
	return false;
}

/*
 * Walks the statements; calls judge on each when `out` is given. Returns the
 * number of non-empty statements seen (up to and including a problem).
 */
static size_t walk(const char *sql, size_t len, struct sql_problem *out, bool *found)
{
	struct lexer lx = {sql, len, 0};
	struct stmt st;
	size_t count = 0;
	int atomic_depth = 0; /* BEGIN ATOMIC ... END bodies hold semicolons */

	memset(&st, 0, sizeof(st));
	*found = false;
	for (;;) {
		struct token t = next_token(&lx);

		if (t.kind == TOK_END || (t.kind == TOK_SEMI && atomic_depth == 0)) {
			if (st.ntok > 0) {
				count++;
				if (out && judge(&lx, &st, out)) {
					out->statement = count;
					out->offset = st.start;
					*found = true;
					return count;
				}
			}
			if (t.kind == TOK_END)
				return count;
			memset(&st, 0, sizeof(st));
			continue;
		}
		if (st.ntok == 0)
			st.start = t.start;
		if (st.ntok < ARRAY_LEN(st.w))
			st.w[st.ntok] = t;
		st.ntok++;
		if (word_is(&lx, &t, "CONCURRENTLY"))
			st.concurrently = true;
		if (word_is(&lx, &st.w[0], "CREATE") && st.ntok > 1) {
			if (word_is(&lx, &t, "BEGIN") || (atomic_depth > 0 && word_is(&lx, &t, "CASE")))
				atomic_depth++;
			else if (atomic_depth > 0 && word_is(&lx, &t, "END"))
				atomic_depth--;
		}
	}
}

bool sql_find_nontransactional(const char *sql, size_t len, struct sql_problem *out)
{
	bool found;

	walk(sql, len, out, &found);
	return found;
}

size_t sql_count_statements(const char *sql, size_t len)
{
	bool found;

	return walk(sql, len, NULL, &found);
}
