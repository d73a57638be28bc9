/*
 * store_locks.h - SQL fragments store.c and store_job.c share: the order in
 * which the store's statements lock rows, and what a change queued again
 * becomes (REQUEUED_STATE). Every statement locks an ability's
 * sync state before its ledger entries and its mirror row, and each table's
 * rows in key order; two statements that took them the other way round
 * deadlocked (Postgres broke it after deadlock_timeout by failing one).
 */
#ifndef ABILITYSYNC_STORE_LOCKS_H
#define ABILITYSYNC_STORE_LOCKS_H

/*
 * A CTE `name` locking the sync states of the ability_ids `keys` selects (a
 * SELECT with an ability_id column), in ability_id order, one index lookup
 * each (a LATERAL subquery: the planner cannot turn it into a scan of the
 * table). Abilities without a sync state lock nothing.
 */
#define LOCK_STATES(name, keys)                                                                                    \
	" " name " AS (SELECT s.ability_id FROM (SELECT DISTINCT ability_id FROM (" keys ") u ORDER BY ability_id) k" \
	"  CROSS JOIN LATERAL (SELECT ability_id FROM abilitysync.sync_state s WHERE s.ability_id = k.ability_id"   \
	"  FOR UPDATE) s),"

/*
 * What a change queued again (`s`, a sync state at the generation the
 * statement's snapshot saw) becomes: a failed one pending, or pending_delete
 * when its mirror row is gone; a pending one stays. The row's existence is
 * read from the snapshot, so the statement must take only rows still at that
 * generation: one registered again while it waited for their locks has a row
 * it cannot see, and was made pending_delete (its vector deleted, the live
 * ability recorded deleted).
 */
#define REQUEUED_STATE(s)                                                                                  \
	"CASE WHEN " s ".state <> 'failed' THEN " s ".state WHEN EXISTS (SELECT 1 FROM public.abilities a"  \
	" WHERE a.ability_id = " s ".ability_id) THEN 'pending' ELSE 'pending_delete' END"

/* A condition that holds once `name` has run: in a WHERE, an InitPlan run before the rest of the statement. */
#define STATES_LOCKED(name) "(SELECT count(*) FROM " name ") >= 0"

#endif
