/*
 * sync_rules.h - the outbox's decisions about one pushed ability, as pure
 * functions: how long a push's calls may run, what a failed call means, what
 * a read-back proves, and what state a push leaves the ability in. outbox.c
 * applies them (see the rules in outbox.h); nothing here does any I/O, so each
 * rule is unit-tested on its own.
 */
#ifndef ABILITYSYNC_SYNC_RULES_H
#define ABILITYSYNC_SYNC_RULES_H

#include "common.h"
#include "vdb.h"

/* A push's calls end this long before its lease does (to record the outcome), at most a quarter of it. */
#define SYNC_LEASE_MARGIN_MS 2000

/* Rule 2: how long after its start a push under a lease of lease_ms may have calls running. */
long sync_call_window_ms(long lease_ms);

/* What one failed vector DB call means for its push. */
struct call_failure {
	bool permanent;    /* the request itself was refused: pushing it again changes nothing */
	bool unavailable;  /* the vector DB is down (not merely slow: a call cut short by the lease is not) */
};
struct call_failure sync_call_failure(enum vdb_status status, bool cut_short);

/* What one push did for one ability. */
struct push_facts {
	bool deleted;      /* it was a delete (a tombstone) */
	bool permanent;    /* a call was refused for good */
	bool add_ok;       /* the add was confirmed, or there was nothing to add */
	bool deletes_ok;   /* every delete was confirmed (or there were none) */
	bool ambiguous;    /* a call of this push may still be applied later */
	bool doubt;        /* a call of an earlier push may still be applied (rule 4) */
};

/* Every call of this push was confirmed (what the caller of a registration is told). */
bool sync_confirmed(const struct push_facts *f);

/* The push settles the ability: confirmed, and no call of it or before it may still land. */
bool sync_settled(const struct push_facts *f);

/* The sync state the push leaves: synced/deleted when settled, failed when refused, else pending(_delete). */
const char *sync_state_after(const struct push_facts *f);

/* Rule 4, after the doubt window: how a row in doubt is verified. */
enum verify_how {
	VERIFY_NONE,       /* not in doubt, or refused for good */
	VERIFY_READ_BACK,  /* the server overwrites: read the vector, compare its content hash */
	VERIFY_REWRITE,    /* write it again with its delete first (a delete: delete it again) */
};
enum verify_how sync_verify_how(bool verify, bool permanent, bool has_content, bool server_overwrites);

/* What a read-back proves. got_hash: the vector's content_hash attribute, NULL when it has none. */
enum readback {
	READBACK_PROVEN,   /* it holds this content: nothing to push */
	READBACK_REWRITE,  /* missing or other content: write it again */
	READBACK_UNKNOWN,  /* the read failed: the doubt stays, try later */
};
enum readback sync_readback(enum vdb_status status, const char *got_hash, const char *want_hash);

#endif
