/*
 * journal.h - a drizzle-kit migrations folder, read the way drizzle reads it.
 *
 *   <dir>/meta/_journal.json   entries in file order: tag, when (ms since epoch)
 *   <dir>/<tag>.sql            statements separated by "--> statement-breakpoint"
 *
 * Everything is read, checked and hashed before any database is touched, and
 * every problem names the file (and the journal entry) it was found in.
 */
#ifndef ABILITYSYNC_JOURNAL_H
#define ABILITYSYNC_JOURNAL_H

#include "common.h"
#include "hash.h"

#define JOURNAL_BREAKPOINT "--> statement-breakpoint"
#define JOURNAL_MAX_WHEN 9007199254740991LL /* 2^53 - 1: a JS number drizzle can hold exactly */
#define JOURNAL_MAX_FILE (64u << 20)

struct journal_entry {
	char *tag;
	int64_t when;
};

struct migration {
	char *tag;
	int64_t when;
	char *path;                      /* <dir>/<tag>.sql */
	char hash[SHA256_HEX_LEN + 1];   /* sha256 of the whole file, as drizzle stores it */
	char **chunks;                   /* the file split on the breakpoint, each NUL-terminated */
	size_t nchunks;
};

struct journal {
	char *dir;
	struct migration *m; /* in journal order, which is the order they apply in */
	size_t n;
	bool when_unordered; /* some entry's `when` is not above the previous one's */
};

/* Reads and checks the whole folder. On failure *j is empty and err says what and where. */
bool journal_load(const char *dir, struct journal *j, struct errbuf *err) MUSTCHECK;
void journal_free(struct journal *j);

/*
 * Parses the text of meta/_journal.json (`path` is only for messages). Entries
 * come back in file order; the caller frees them with journal_entries_free.
 */
bool journal_parse(const char *text, size_t len, const char *path, struct journal_entry **out,
		   size_t *n, struct errbuf *err) MUSTCHECK;
void journal_entries_free(struct journal_entry *e, size_t n);

/*
 * Splits sql[0..len) on the breakpoint exactly as JavaScript's
 * String.prototype.split does: N separators give N+1 chunks, empty ones kept,
 * nothing trimmed, quotes and comments not looked into.
 */
size_t journal_split(const char *sql, size_t len, char ***chunks);

#endif
