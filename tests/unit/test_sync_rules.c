/*
 * The outbox's rules for one pushed ability: nothing ambiguous is ever
 * marked synced, a refusal is final, a slow push is not a dead vector DB,
 * and verification proves what it claims.
 */
#include "sync_rules.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

static const struct push_facts clean = {.add_ok = true, .deletes_ok = true};

Test(sync_rules, a_confirmed_push_with_no_doubt_settles)
{
	struct push_facts del = clean;

	cr_assert(sync_settled(&clean));
	cr_assert(eq(str, (char *)sync_state_after(&clean), "synced"));
	del.deleted = true;
	cr_assert(eq(str, (char *)sync_state_after(&del), "deleted"));
}

Test(sync_rules, an_ambiguous_call_never_marks_synced_though_it_was_confirmed)
{
	struct push_facts f = clean;

	f.ambiguous = true; /* an attempt timed out, the retry was answered 200 */
	cr_assert(sync_confirmed(&f), "the caller is told the push went through");
	cr_assert(not(sync_settled(&f)), "but the timed-out attempt may still land");
	cr_assert(eq(str, (char *)sync_state_after(&f), "pending"));
	f.deleted = true;
	cr_assert(eq(str, (char *)sync_state_after(&f), "pending_delete"), "a delete stays a tombstone");
}

Test(sync_rules, a_doubt_from_an_earlier_push_survives_a_clean_push)
{
	struct push_facts f = clean;

	f.doubt = true;
	cr_assert(not(sync_settled(&f)), "an earlier call may still land over this one");
	cr_assert(eq(str, (char *)sync_state_after(&f), "pending"));
}

Test(sync_rules, a_failed_add_or_delete_leaves_it_pending)
{
	struct push_facts a = clean, d = clean;

	a.add_ok = false;
	d.deletes_ok = false;
	cr_assert(eq(str, (char *)sync_state_after(&a), "pending"));
	cr_assert(eq(str, (char *)sync_state_after(&d), "pending"), "a stale vector still there is not synced");
	cr_assert(not(sync_confirmed(&d)));
}

Test(sync_rules, a_refused_request_is_final_and_a_slow_push_is_not_an_outage)
{
	struct call_failure f;

	f = sync_call_failure(VDB_REJECTED, false);
	cr_assert(eq(int, f.permanent, 1), "a 4xx: pushing it again changes nothing");
	cr_assert(eq(int, f.unavailable, 0), "and the vector DB is not down");
	f = sync_call_failure(VDB_BAD_REPLY, false);
	cr_assert(eq(int, f.permanent, 1), "a reply that is not the API's");
	f = sync_call_failure(VDB_UNAVAILABLE, false);
	cr_assert(eq(int, f.permanent, 0), "5xx or transport: retried");
	cr_assert(eq(int, f.unavailable, 1), "and the vector DB is down");
	f = sync_call_failure(VDB_UNAVAILABLE, true);
	cr_assert(eq(int, f.permanent, 0), "cut short by its lease: retried");
	cr_assert(eq(int, f.unavailable, 0), "slow, not an outage");
	cr_assert(eq(str, (char *)sync_state_after(&(struct push_facts){.permanent = true, .add_ok = true,
									 .deletes_ok = true}),
		     "failed"));
}

Test(sync_rules, a_push_ends_its_calls_before_its_lease)
{
	cr_assert(eq(long, sync_call_window_ms(60000), 58000), "2 s to record the outcome");
	cr_assert(eq(long, sync_call_window_ms(4000), 3000), "at most a quarter of a short lease");
	cr_assert(sync_call_window_ms(1) <= 1);
}

Test(sync_rules, verification_reads_back_only_where_the_server_overwrites)
{
	cr_assert(eq(int, sync_verify_how(false, false, true, true), VERIFY_NONE));
	cr_assert(eq(int, sync_verify_how(true, true, true, true), VERIFY_NONE), "refused: nothing to verify");
	cr_assert(eq(int, sync_verify_how(true, false, true, true), VERIFY_READ_BACK));
	cr_assert(eq(int, sync_verify_how(true, false, true, false), VERIFY_REWRITE),
		  "a server that may keep duplicates: only a delete and an add prove it");
	cr_assert(eq(int, sync_verify_how(true, false, false, true), VERIFY_REWRITE), "a delete is deleted again");
}

Test(sync_rules, a_read_back_proves_only_the_same_content)
{
	cr_assert(eq(int, sync_readback(VDB_OK, "abc", "abc"), READBACK_PROVEN));
	cr_assert(eq(int, sync_readback(VDB_OK, "old", "abc"), READBACK_REWRITE), "the late call wrote old content");
	cr_assert(eq(int, sync_readback(VDB_OK, NULL, "abc"), READBACK_REWRITE), "no content_hash attribute");
	cr_assert(eq(int, sync_readback(VDB_NOT_FOUND, NULL, "abc"), READBACK_REWRITE));
	cr_assert(eq(int, sync_readback(VDB_UNAVAILABLE, NULL, "abc"), READBACK_UNKNOWN),
		  "a failed read proves nothing: the doubt stays");
}
