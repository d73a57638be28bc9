#include "sync_rules.h"

#include <string.h>

long sync_call_window_ms(long lease_ms)
{
	long margin = lease_ms / 4 < SYNC_LEASE_MARGIN_MS ? lease_ms / 4 : SYNC_LEASE_MARGIN_MS;

	return lease_ms - margin;
}

struct call_failure sync_call_failure(enum vdb_status status, bool cut_short)
{
	struct call_failure f = {false, false};

	f.permanent = status == VDB_REJECTED || status == VDB_BAD_REPLY;
	/* A push cut short by its lease is slow, not a vector DB that is down: it is retried like any failure. */
	f.unavailable = (status == VDB_UNAVAILABLE || status == VDB_CANCELLED) && !cut_short;
	return f;
}

bool sync_confirmed(const struct push_facts *f)
{
	return !f->permanent && f->add_ok && f->deletes_ok;
}

bool sync_settled(const struct push_facts *f)
{
	return sync_confirmed(f) && !f->ambiguous && !f->doubt;
}

const char *sync_state_after(const struct push_facts *f)
{
	if (f->permanent)
		return "failed";
	if (sync_settled(f))
		return f->deleted ? "deleted" : "synced";
	return f->deleted ? "pending_delete" : "pending";
}

enum verify_how sync_verify_how(bool verify, bool permanent, bool has_content, bool server_overwrites)
{
	if (!verify || permanent)
		return VERIFY_NONE;
	/* Only content can be compared; where the server may keep duplicates, only a rewrite proves anything. */
	return has_content && server_overwrites ? VERIFY_READ_BACK : VERIFY_REWRITE;
}

enum readback sync_readback(enum vdb_status status, const char *got_hash, const char *want_hash)
{
	if (status == VDB_OK && got_hash && strcmp(got_hash, want_hash) == 0)
		return READBACK_PROVEN;
	if (status != VDB_OK && status != VDB_NOT_FOUND)
		return READBACK_UNKNOWN;
	return READBACK_REWRITE;
}
