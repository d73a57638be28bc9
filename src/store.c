#include "store.h"
#include "store_locks.h"

#include "buf.h"
#include "log.h"
#include "mem.h"
#include "text.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define COMP "store"
#define ALONE_RETRIES 3 /* a request retried by itself after a race on the ledger, at most */

/*
 * A lease is held as "<owner>#<token>", and a push's outcome counts only under
 * the token it was pushed under. A replica that takes a row whose lease is
 * still its own (live, or run out with nobody taking it since) keeps the
 * token: no other push can have happened in between. Anything else gets a new
 * token (the taking transaction's id). The owner alone would not do: a
 * replica whose lease ran out while it could not record a push, and that
 * takes the row again after another replica pushed it, must not record its
 * old push under the new lease (it would call synced a vector the other push
 * replaced).
 *
 * Who may take an ability's lease: nobody holds it, it ran out, or it is ours.
 * A lease that ran out without being released may have left a request on the
 * wire: whoever takes it over puts the ability in doubt until that request
 * can no longer land (lease end + quarantine).
 */
#define LEASE_MINE(s, owner) "split_part(" s ".lease_owner, '#', 1) = " owner
#define LEASE_NEW(owner) "(" owner " || '#' || txid_current())"
#define LEASE_OVER(s) "(" s ".lease_until IS NULL OR " s ".lease_until < now())"
#define LEASE_FREE(s, owner) "(" LEASE_OVER(s) " OR " LEASE_MINE(s, owner) ")"
#define LEASE_TOKEN(s, owner) "CASE WHEN " LEASE_MINE(s, owner) " THEN " s ".lease_owner ELSE " LEASE_NEW(owner) " END"
/*
 * The end of a lease a statement takes (`until`: its now() plus the lease).
 * A lease this replica already holds keeps its token, and the pushes made
 * under it may send until its end; now() is when the statement began, so one
 * that waited for a lock moved that end earlier, and another replica took the
 * row over (its doubt window too short) while such a push could still land. A
 * lease kept only grows; one that ran out is below any new end.
 */
#define LEASE_UNTIL(s, until) "greatest(" s ".lease_until, " until ")"
#define DOUBT_ON_TAKEOVER(s, quarantine)                                                                      \
	"CASE WHEN " s ".lease_until < now() THEN greatest(" s ".doubt_until, " s ".lease_until + " quarantine \
	"::interval) ELSE " s ".doubt_until END"

/*
 * The write. `input` numbers the rows and says which request brought each;
 * `states` locks the sync states they have, in ability_id order, before any
 * ledger entry (the outcome and the claim statements lock a sync state, then
 * its ledger entry: the other order deadlocked with an outcome being recorded
 * for an ability written again); `held` locks the ledger entries of their
 * vectors, one index lookup per distinct vector, in key order (the latest
 * versions: two writes reclaiming one entry take turns; an entry two rows of
 * the input name is judged once for each, not twice; a join with the ledger,
 * planned for an empty table, would read all of it for every write);
 * `judged` decides per row (a vector another live ability holds, or, if none
 * does, an earlier row of the input takes: the statement sees neither its
 * own claims nor the ledger rows they reclaim, so two abilities of one vector
 * would both be written to it; content known unchanged; whether a vector may
 * already be where it goes) and `decided` per request (all or nothing).
 * Then, in ability_id order:
 *   up     upserts the mirror row where it differs from the row as it is now
 *          (ON CONFLICT's WHERE sees the latest committed version, so a
 *          replica writing the same content a moment after another writes
 *          nothing; a row edited behind our back is put back);
 *   ss     advances the sync state (pending, generation + 1) where the content
 *          hash changed, the ability was deleted, it never had one, or `up`
 *          put back a row edited or deleted behind our back (every change of
 *          a mirror row is a new generation: claims, pages, retries and
 *          requeues judge by it whether what they read is still current; a
 *          put-back row without one was pushed as gone by a claim whose
 *          snapshot missed it), and
 *          takes its lease for this replica unless another holds it; always
 *          after `up` (an InitPlan): a sync state inserted before the row is
 *          upserted deadlocked with a delete of a row that had none;
 *   claim  claims (blob, vector_id) in the ledger: a plain insert, so two
 *          abilities claiming one vector at once fail the statement (and are
 *          retried one request at a time, which then sees the holder);
 *   reclaim takes over an entry that is ours or whose vector was deleted;
 *   old    records where the mirror row kept its vector before (a row the
 *          original application wrote in another service's blob), so the
 *          move deletes it and the ledger knows.
 * The result says per row what happened, the generation to push, whether this
 * replica holds the lease, and which other vectors of the ability may exist.
 */
#define WRITE_INPUT_ARRAYS \
	" SELECT * FROM unnest($1::text[], $2::int[], $10::text[], $11::text[], $13::int[]) WITH ORDINALITY" \
	"  AS i(ability_id, vector_id, blob_id, content_hash, req, ord)"

/*
 * The rows to write, with the columns WRITE_INPUT_ARRAYS leaves out, for `up`
 * (a join by ord). The judging CTEs are materialized, sorted and hashed: each
 * would copy every ~43 KB embedding again (six copies a write; without them,
 * and with `held` below, Postgres spent 5-7 % less CPU per registration, A/B
 * of five rounds; bench/README.md).
 */
#define WRITE_TODO_ROWS \
	" todo JOIN unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bool[])" \
	"  WITH ORDINALITY AS b(ability_name, service_name, description, embedding, metadata, dynamic_header_keys," \
	"  dynamic_headers_required, ord) USING (ord)"

#define WRITE_KEYS "SELECT ability_id FROM input"

/*
 * The write's judgement of its input (states, held, judged, decided, todo):
 * what it would do, nothing written yet. `keys` selects the ability_ids whose
 * sync states are locked: the input's, and for a full set the service's
 * others too (it deletes them), all in one pass.
 */
#define WRITE_JUDGE(keys) \
	LOCK_STATES("states", keys) \
	" held AS (" \
	" SELECT l.blob_id, l.vector_id, l.ability_id, l.deleted_at" \
	"  FROM (SELECT DISTINCT blob_id, vector_id FROM input WHERE " STATES_LOCKED("states") \
	"  ORDER BY blob_id, vector_id) k CROSS JOIN LATERAL (" \
	"  SELECT * FROM abilitysync.vector_ledger l WHERE l.blob_id = k.blob_id AND l.vector_id = k.vector_id" \
	"  FOR UPDATE) l)," \
	" judged AS (" \
	" SELECT i.*, coalesce(s.state, '') AS old_state, s.ability_id IS NOT NULL AS has_state," \
	"  a.ability_id IS NOT NULL AS has_row, abilitysync.blob_name(a.service_name) AS row_blob, a.vector_id AS row_vid," \
	"  l.ability_id AS owner," \
	"  CASE WHEN l.ability_id IS NOT NULL AND l.deleted_at IS NULL THEN nullif(l.ability_id, i.ability_id)" \
	"   ELSE nullif(first_value(i.ability_id) OVER (PARTITION BY i.blob_id, i.vector_id ORDER BY i.ord), i.ability_id)" \
	"  END AS holder," \
	"  (s.content_hash IS NOT DISTINCT FROM i.content_hash AND s.state IN ('pending', 'synced', 'failed')) AS same," \
	"  (l.ability_id IS NOT NULL OR abilitysync.blob_name(a.service_name) = i.blob_id" \
	"   OR (s.state <> 'deleted' AND s.blob_id = i.blob_id)) IS TRUE AS may_exist" \
	" FROM input i" \
	" LEFT JOIN abilitysync.sync_state s ON s.ability_id = i.ability_id" \
	" LEFT JOIN public.abilities a ON a.ability_id = i.ability_id" \
	" LEFT JOIN held l ON l.blob_id = i.blob_id AND l.vector_id = i.vector_id)," \
	" decided AS (SELECT j.*, j.holder IS NOT NULL AS collides, bool_or(j.holder IS NOT NULL) OVER (PARTITION BY j.req)" \
	"  AS refused FROM judged j)," \
	" todo AS (SELECT * FROM decided WHERE NOT refused),"

/*
 * What a statement that changes sync states does with their leases: a write
 * or a delete pushes at once, so it takes each lease for `owner` unless
 * another replica holds it (a new sync state: LEASE_TAKE_NEW, an existing one:
 * LEASE_TAKE). A full set pushes nothing itself and leaves leases as they are
 * (a new sync state has none, LEASE_NONE); the retry worker pushes its rows.
 * It took them and gave them back by token once applied, and a write of the
 * same replica made in between keeps that token (LEASE_TOKEN): the set let go
 * of the lease that write's push was in flight under, another replica pushed
 * a newer version, and the older push landed last.
 */
#define LEASE_TAKE_NEW(owner, lease) "now() + " lease "::interval, " LEASE_NEW(owner)
#define LEASE_TAKE(owner, quarantine) \
	", lease_until = CASE WHEN " LEASE_FREE("s", owner) " THEN " LEASE_UNTIL("s", "excluded.lease_until") \
	"  ELSE s.lease_until END," \
	"  lease_owner = CASE WHEN " LEASE_FREE("s", owner) " THEN " LEASE_TOKEN("s", owner) " ELSE s.lease_owner END," \
	"  doubt_until = " DOUBT_ON_TAKEOVER("s", quarantine)
#define LEASE_NONE "NULL, NULL"

/* The write itself (up, ss, claim, reclaim, old); `owner` names this replica's leases. */
#define WRITE_CTES(rows, owner, new_lease, take_lease) \
	" up AS (" \
	" INSERT INTO public.abilities AS a (ability_id, vector_id, ability_name, service_name, description, embedding," \
	"  dynamic_header_keys, dynamic_headers_required, metadata, created_at, updated_at)" \
	" SELECT ability_id, vector_id, ability_name, service_name, description, embedding::jsonb," \
	"  dynamic_header_keys::jsonb, dynamic_headers_required, metadata::jsonb, now() AT TIME ZONE 'UTC'," \
	"  now() AT TIME ZONE 'UTC'" \
	" FROM " rows " ORDER BY ability_id" \
	" ON CONFLICT (ability_id) DO UPDATE SET vector_id = excluded.vector_id, ability_name = excluded.ability_name," \
	"  service_name = excluded.service_name, description = excluded.description, embedding = excluded.embedding," \
	"  dynamic_header_keys = excluded.dynamic_header_keys," \
	"  dynamic_headers_required = excluded.dynamic_headers_required, metadata = excluded.metadata," \
	"  updated_at = excluded.updated_at" \
	" WHERE (a.vector_id, a.ability_name, a.service_name, a.description, a.embedding, a.dynamic_header_keys," \
	"  a.dynamic_headers_required, a.metadata) IS DISTINCT FROM (excluded.vector_id, excluded.ability_name," \
	"  excluded.service_name, excluded.description, excluded.embedding, excluded.dynamic_header_keys," \
	"  excluded.dynamic_headers_required, excluded.metadata)" \
	" RETURNING ability_id)," \
	" ss AS (" \
	" INSERT INTO abilitysync.sync_state AS s (ability_id, blob_id, vector_id, content_hash, state, generation," \
	"  attempts, next_attempt_at, last_error, updated_at, lease_until, lease_owner)" \
	" SELECT ability_id, blob_id, vector_id, content_hash, 'pending', 1, 0, now(), NULL, now()," \
	"  " new_lease \
	" FROM todo WHERE (SELECT count(*) FROM up) >= 0 AND (NOT same OR ability_id IN (SELECT ability_id FROM up))" \
	" ORDER BY ability_id" \
	" ON CONFLICT (ability_id) DO UPDATE SET blob_id = excluded.blob_id, vector_id = excluded.vector_id," \
	"  content_hash = excluded.content_hash, state = 'pending', generation = s.generation + 1, attempts = 0," \
	"  next_attempt_at = now(), last_error = NULL, updated_at = now()" take_lease \
	" WHERE s.content_hash IS DISTINCT FROM excluded.content_hash OR s.state IN ('pending_delete', 'deleted')" \
	"  OR s.ability_id IN (SELECT ability_id FROM up)" \
	" RETURNING ability_id, generation, " LEASE_MINE("s", owner) " AS leased, coalesce(doubt_until > now(), false) AS doubt," \
	"  lease_owner AS lease)," \
	" claim AS (" \
	" INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id)" \
	" SELECT blob_id, vector_id, ability_id FROM todo" \
	" WHERE owner IS NULL AND ability_id IN (SELECT ability_id FROM ss) ORDER BY blob_id, vector_id)," \
	" reclaim AS (" \
	" UPDATE abilitysync.vector_ledger l SET ability_id = t.ability_id, deleted_at = NULL, last_written_at = now()" \
	" FROM todo t WHERE t.owner IS NOT NULL AND t.ability_id IN (SELECT ability_id FROM ss)" \
	"  AND l.blob_id = t.blob_id AND l.vector_id = t.vector_id)," \
	" old AS (" \
	" INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id)" \
	" SELECT row_blob, row_vid, ability_id FROM todo" \
	" WHERE has_row AND (row_blob, row_vid) IS DISTINCT FROM (blob_id, vector_id)" \
	"  AND ability_id IN (SELECT ability_id FROM ss) ORDER BY row_blob, row_vid" \
	" ON CONFLICT (blob_id, vector_id) DO NOTHING)"

static const char write_sql[] =
	"WITH input AS (" WRITE_INPUT_ARRAYS ")," WRITE_JUDGE(WRITE_KEYS)
	WRITE_CTES(WRITE_TODO_ROWS, "$12", LEASE_TAKE_NEW("$12", "$14"), LEASE_TAKE("$12", "$15"))
	" SELECT d.ord, d.collides, d.refused, ss.generation, d.ability_id IN (SELECT ability_id FROM up),"
	"  coalesce(d.holder, ''), d.old_state, coalesce(ss.leased, false), coalesce(ss.doubt, false), d.may_exist,"
	"  CASE WHEN ss.generation IS NOT NULL THEN (SELECT string_agg(p, ',') FROM ("
	"   SELECT l.blob_id || ' ' || l.vector_id AS p FROM abilitysync.vector_ledger l"
	"   WHERE l.ability_id = d.ability_id AND l.deleted_at IS NULL"
	"    AND (l.blob_id, l.vector_id) IS DISTINCT FROM (d.blob_id, d.vector_id)"
	"   UNION SELECT d.row_blob || ' ' || d.row_vid"
	"   WHERE d.has_row AND (d.row_blob, d.row_vid) IS DISTINCT FROM (d.blob_id, d.vector_id)"
	"    AND NOT EXISTS (SELECT 1 FROM abilitysync.vector_ledger o WHERE o.blob_id = d.row_blob"
	"     AND o.vector_id = d.row_vid AND o.ability_id <> d.ability_id)) v) END,"
	"  CASE WHEN ss.leased THEN ss.lease END, d.same"
	" FROM decided d LEFT JOIN ss USING (ability_id) ORDER BY d.ord";

/*
 * The sync state of deleted rows (`rows`: ability_id, blob_id, vector_id) as
 * a pending_delete tombstone, a new generation, its lease as the statement
 * says (LEASE_TAKE for a delete, none for a full set). Its content hash is
 * emptied: a tombstone that kept it made a later write of the same content
 * "unchanged", so an ability registered again after its delete failed stayed
 * `failed` and was never pushed.
 */
#define TOMBSTONE(rows, new_lease, take_lease)                                                              \
	" INSERT INTO abilitysync.sync_state AS s (ability_id, blob_id, vector_id, content_hash, state, generation," \
	"  attempts, next_attempt_at, updated_at, lease_until, lease_owner)"                                         \
	" SELECT ability_id, blob_id, vector_id, '', 'pending_delete', 1, 0, now(), now(), " new_lease              \
	" FROM " rows                                                                                                \
	" ON CONFLICT (ability_id) DO UPDATE SET state = 'pending_delete', generation = s.generation + 1, attempts = 0," \
	"  content_hash = '', next_attempt_at = now(), last_error = NULL, updated_at = now()" take_lease

/*
 * A service's full set. Its abilities are staged a group at a time
 * (stage_sql: sets left behind a day ago go on the way), then one statement
 * judges the staged set against the service's abilities now, exactly as a
 * write judges its input (WRITE_JUDGE): the plan (set_plan_sql) or the
 * change (set_apply_sql: the write's CTEs, plus every other live ability of
 * the service deleted into a pending_delete tombstone; no lease taken).
 * A collision refuses the whole set. Both remove the staged rows; each row of
 * the result is an ability and its action.
 */
static const char stage_sql[] =
	"WITH old AS (DELETE FROM abilitysync.fullset_stage WHERE staged_at < now() - interval '1 day')"
	" INSERT INTO abilitysync.fullset_stage (set_id, ord, ability_id, vector_id, ability_name, service_name,"
	"  description, embedding, metadata, dynamic_header_keys, dynamic_headers_required, blob_id, content_hash)"
	" SELECT $12, $13::bigint + i.ord, i.ability_id, i.vector_id, i.ability_name, i.service_name, i.description,"
	"  i.embedding, i.metadata, i.dynamic_header_keys, i.dynamic_headers_required, i.blob_id, i.content_hash"
	" FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],"
	"  $9::bool[], $10::text[], $11::text[]) WITH ORDINALITY AS i(ability_id, vector_id, ability_name, service_name,"
	"  description, embedding, metadata, dynamic_header_keys, dynamic_headers_required, blob_id, content_hash, ord)";

#define SET_INPUT                                                                                             \
	" SELECT ability_id, vector_id, ability_name, service_name, description, embedding, metadata,"           \
	"  dynamic_header_keys, dynamic_headers_required, blob_id, content_hash, 1 AS req, ord"                   \
	" FROM abilitysync.fullset_stage WHERE set_id = $1"

/* The service's live abilities that are not in the set ($2: the service). */
#define SET_OTHERS \
	" FROM public.abilities a WHERE a.service_name = $2 AND NOT EXISTS (SELECT 1 FROM input i WHERE i.ability_id = a.ability_id)"

/* Whose sync states applying the set locks first: its abilities and the service's (the others go). */
#define SET_KEYS "SELECT ability_id FROM input UNION SELECT ability_id FROM public.abilities WHERE service_name = $2"

#define SET_ACTION(written)                                                                              \
	" CASE WHEN d.collides THEN 'collision' WHEN d.refused THEN 'refused' WHEN NOT d.has_row THEN 'add'"    \
	"  WHEN " written " THEN 'update' ELSE 'unchanged' END"

static const char set_plan_sql[] =
	"WITH input AS (" SET_INPUT ")," WRITE_JUDGE(WRITE_KEYS)
	" gone AS (SELECT a.ability_id" SET_OTHERS "),"
	" dropped AS (DELETE FROM abilitysync.fullset_stage WHERE set_id = $1)"
	" SELECT d.ability_id," SET_ACTION("NOT d.same OR (a.vector_id, a.ability_name, a.service_name, a.description,"
	"  a.embedding, a.dynamic_header_keys, a.dynamic_headers_required, a.metadata) IS DISTINCT FROM (d.vector_id,"
	"  d.ability_name, d.service_name, d.description, d.embedding::jsonb, d.dynamic_header_keys::jsonb,"
	"  d.dynamic_headers_required, d.metadata::jsonb)") ", coalesce(d.owner, '')"
	" FROM decided d LEFT JOIN public.abilities a ON a.ability_id = d.ability_id"
	" UNION ALL SELECT ability_id, 'delete', '' FROM gone ORDER BY 1";

static const char set_apply_sql[] =
	"WITH input AS (" SET_INPUT ")," WRITE_JUDGE(SET_KEYS) WRITE_CTES("todo", "$3", LEASE_NONE, "") ","
	" refusal AS (SELECT coalesce(bool_or(refused), false) AS refused FROM decided),"
	" gone AS (DELETE" SET_OTHERS " AND NOT (SELECT refused FROM refusal)"
	"  RETURNING a.ability_id, a.vector_id, abilitysync.blob_name(a.service_name) AS blob_id),"
	" gone_led AS (INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id)"
	"  SELECT blob_id, vector_id, ability_id FROM gone ORDER BY blob_id, vector_id"
	"  ON CONFLICT (blob_id, vector_id) DO NOTHING),"
	" gone_ss AS ("
	TOMBSTONE("gone ORDER BY ability_id", LEASE_NONE, "") " RETURNING ability_id),"
	" dropped AS (DELETE FROM abilitysync.fullset_stage WHERE set_id = $1)"
	" SELECT d.ability_id," SET_ACTION("ss.generation IS NOT NULL OR d.ability_id IN (SELECT ability_id FROM up)")
	"  , coalesce(d.owner, '') FROM decided d LEFT JOIN ss USING (ability_id)"
	" UNION ALL SELECT ability_id, 'delete', '' FROM gone_ss ORDER BY 1";

/*
 * A delete: the row goes and a pending_delete tombstone (leased like a write)
 * stays. The row's vector is claimed in the ledger if no one holds it, so
 * reconcile can check the tombstone later; every vector of the ability that
 * may exist comes back, to be deleted. The sync state is locked before the
 * row (`st`, gating the delete by an InitPlan), the order of every other
 * statement: a write of the ability holds its sync state and then upserts
 * the row, and a delete that took the row first deadlocked with it.
 */
static const char delete_sql[] =
	"WITH" LOCK_STATES("st", "SELECT $1::text AS ability_id")
	" d AS (DELETE FROM public.abilities WHERE ability_id = $1 AND " STATES_LOCKED("st")
	"  RETURNING ability_id, vector_id, abilitysync.blob_name(service_name) AS blob_id),"
	" led AS (INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id)"
	"  SELECT blob_id, vector_id, ability_id FROM d ON CONFLICT (blob_id, vector_id) DO NOTHING),"
	" ss AS ("
	TOMBSTONE("d", LEASE_TAKE_NEW("$2", "$3"), LEASE_TAKE("$2", "$4"))
	" RETURNING ability_id, generation, blob_id, vector_id, " LEASE_MINE("s", "$2") " AS leased,"
	"  coalesce(doubt_until > now(), false) AS doubt, lease_owner AS lease)"
	" SELECT ss.generation, ss.blob_id, ss.vector_id, ss.leased, ss.doubt,"
	"  (SELECT string_agg(p, ',') FROM (SELECT l.blob_id || ' ' || l.vector_id AS p FROM abilitysync.vector_ledger l"
	"   WHERE l.ability_id = ss.ability_id AND l.deleted_at IS NULL"
	"   UNION SELECT ss.blob_id || ' ' || ss.vector_id UNION SELECT d.blob_id || ' ' || d.vector_id) v),"
	"  CASE WHEN ss.leased THEN ss.lease END"
	" FROM ss, d";

/*
 * A claimed row's mirror row `a` as it is now, not as the statement's snapshot
 * had it, for the retry worker's and the follow-ups' claims. A change with a
 * new generation made after the snapshot keeps the row out of the claim
 * (CLAIM_SAW); this reads the latest version of one made without (the
 * original application's edit, a write putting back a row edited behind our
 * back). Locked FOR SHARE; no writer changes it while the claim holds the
 * sync state.
 */
#define ROW_NOW(c) " LATERAL (SELECT * FROM public.abilities a WHERE a.ability_id = " c ".ability_id FOR SHARE) a"

/*
 * What every claim returns for a row `c` (its sync state, updated) joined with
 * its mirror row `a` (ROW_NOW): the columns of struct claimed_row, in order.
 * A live row is pushed where its service's blob is now; the vectors to delete
 * are every other one the ledger lists for the ability (for a delete, all of
 * them).
 */
#define CLAIMED_COLUMNS                                                                                         \
	" c.ability_id, c.generation, c.state, c.blob_id, c.vector_id, c.attempts, " LEASE_MINE("c", "$1") " AS leased," \
	" coalesce(c.doubt_until > now(), false), coalesce(c.doubt_until <= now(), false), c.may_exist,"           \
	" (SELECT string_agg(p, ',') FROM (SELECT l.blob_id || ' ' || l.vector_id AS p"                             \
	"   FROM abilitysync.vector_ledger l WHERE l.ability_id = c.ability_id AND l.deleted_at IS NULL"              \
	"   UNION SELECT c.blob_id || ' ' || c.vector_id) v"                                                         \
	"  WHERE a.ability_id IS NULL OR c.state = 'pending_delete'"                                                  \
	"   OR v.p <> abilitysync.blob_name(a.service_name) || ' ' || a.vector_id),"                                  \
	" (SELECT o.ability_id FROM abilitysync.vector_ledger o WHERE o.blob_id = abilitysync.blob_name(a.service_name)" \
	"   AND o.vector_id = a.vector_id AND o.ability_id <> c.ability_id AND o.deleted_at IS NULL),"                \
	" a.ability_id IS NULL, a.ability_name, a.service_name, a.description, a.embedding::text, a.metadata::text," \
	" CASE WHEN " LEASE_MINE("c", "$1") " THEN c.lease_owner END"

/* A live row about to be pushed claims its vector's ledger entry first (if no one holds it); `row`: its `a`. */
#define INTENT_CTE(row)                                                                                   \
	" intent AS (INSERT INTO abilitysync.vector_ledger (blob_id, vector_id, ability_id)"                 \
	"  SELECT DISTINCT ON (1, 2) abilitysync.blob_name(a.service_name), a.vector_id, c.ability_id FROM c"  \
	"  " row " WHERE c.state = 'pending' AND " LEASE_MINE("c", "$1")                                       \
	"  ORDER BY 1, 2, 3 ON CONFLICT (blob_id, vector_id) DO UPDATE SET last_written_at = now()"            \
	"  WHERE abilitysync.vector_ledger.ability_id = excluded.ability_id)"

/*
 * A claim takes a row only at the generation its snapshot saw (the
 * subquery reads the snapshot; `s`, locked, is the latest version). A write
 * that re-created a deleted ability and committed between the claim's
 * snapshot and its lock left a row the claim cannot see, FOR SHARE or not
 * (it follows updates, not inserts): the claim took the live ability as gone
 * and its vector was deleted under the write's generation. Such a row is left
 * to the write (its own push, or the next claim). The restore page's
 * PAGE_TAKES is the same rule.
 */
#define CLAIM_SAW(s) \
	" " s ".generation = (SELECT s0.generation FROM abilitysync.sync_state s0 WHERE s0.ability_id = " s ".ability_id)"

/*
 * Every claim statement takes $1 owner, $2 lease, $3 quarantine, then its own.
 * Due rows with SKIP LOCKED (replicas share the work), leased; $4 limit.
 */
static const char claim_due_sql[] =
	"WITH c AS ("
	" UPDATE abilitysync.sync_state s SET lease_until = " LEASE_UNTIL("s", "now() + $2::interval") ","
	"  lease_owner = " LEASE_TOKEN("s", "$1") ","
	"  attempts = s.attempts + 1, doubt_until = " DOUBT_ON_TAKEOVER("s", "$3")
	" WHERE s.ability_id IN (SELECT ability_id FROM abilitysync.sync_state"
	"  WHERE state IN ('pending', 'pending_delete') AND next_attempt_at <= now() AND " LEASE_OVER("sync_state")
	"  ORDER BY next_attempt_at LIMIT $4::int FOR UPDATE SKIP LOCKED) AND" CLAIM_SAW("s")
	" RETURNING s.*, true AS may_exist),"
	INTENT_CTE("CROSS JOIN" ROW_NOW("c"))
	" SELECT" CLAIMED_COLUMNS " FROM c LEFT JOIN" ROW_NOW("c") " ON true";

/* These rows ($4), if pending and theirs to take: the follow-up of a push a newer write overtook. */
static const char claim_ids_sql[] =
	"WITH c AS ("
	" UPDATE abilitysync.sync_state s SET lease_until = " LEASE_UNTIL("s", "now() + $2::interval") ","
	"  lease_owner = " LEASE_TOKEN("s", "$1") ","
	"  attempts = s.attempts + 1, doubt_until = " DOUBT_ON_TAKEOVER("s", "$3")
	" WHERE s.ability_id IN (SELECT ability_id FROM abilitysync.sync_state s2"
	"  WHERE s2.ability_id = ANY($4::text[]) AND s2.state IN ('pending', 'pending_delete')"
	"   AND " LEASE_FREE("s2", "$1") " ORDER BY ability_id FOR UPDATE SKIP LOCKED) AND" CLAIM_SAW("s")
	" RETURNING s.*, true AS may_exist),"
	INTENT_CTE("CROSS JOIN" ROW_NOW("c"))
	" SELECT" CLAIMED_COLUMNS " FROM c LEFT JOIN" ROW_NOW("c") " ON true";

/*
 * A restore page: every mirror row of the page gets a pending sync state
 * leased to us, unless a live lease holds it or it changed (PAGE_TAKES). The sync states that exist
 * are locked before any is inserted, as a write does (one pass that inserted
 * some and waited for others deadlocked with a write of the same rows). A
 * vector may be in its blob unless the blob was created (by us) after the
 * vector's ledger entry was last written: then the add needs no delete first.
 * $4 after, $5 service, $6 limit, $7 upto.
 *
 * The page pushes the mirror rows as its snapshot has them, so it takes only
 * rows whose sync state is still the generation that snapshot saw (PAGE_TAKES:
 * the insert carries it, plus one, as `excluded.generation`). A row written
 * or deleted while the page waited for its locks was taken at its latest
 * generation and pushed with its old content (recorded synced: the write
 * lost), or pushed back live; such a row is now left to whoever changed it.
 * (Reading them FOR SHARE instead, as ROW_NOW does, slowed the restore:
 * bench/README.md.)
 *
 * The rows are joined again at the end within the page's bounds too: while
 * the ledger has no statistics yet (it fills as the restore goes, and
 * autovacuum looks at it a minute later), the page's rows are overestimated
 * seventyfold, and an unbounded join sorted the whole mirror table for every
 * page: 2 s a page at 300,000 of 1,000,000 rows, a 45 s stall.
 */
#define PAGE_ROWS(a)                                                                                    \
	" ($4::text IS NULL OR " a ".ability_id > $4) AND ($7::text IS NULL OR " a ".ability_id <= $7)" \
	"  AND ($5::text IS NULL OR " a ".service_name = $5)"

/*
 * The page takes a row whose lease is over (LEASE_OVER) and whose sync
 * state is the one its snapshot saw: the same generation, and untouched
 * since (`updated_at`, carried as `excluded.updated_at`). A push by another
 * replica recorded while the page waited keeps the generation, but its
 * ledger entry says the vector may exist now where the snapshot said it
 * could not, and the page would add it again without the delete first: a
 * second copy. A live lease of this replica's own is left too (the push
 * holding it pushes what is current): the page kept its token, and its
 * answer could come after that push's recording let the lease go, when
 * nothing here said the ability was busy; it pushed its snapshot's content
 * under the lease let go of, over another replica's newer version.
 */
#define PAGE_TAKES \
	"(" LEASE_OVER("s") " AND s.generation + 1 = excluded.generation AND s.updated_at = excluded.updated_at)"

/*
 * A row of the page it did not take (PAGE_TAKES: the upsert's WHERE returns
 * only rows taken or inserted), in CLAIMED_COLUMNS' shape: never leased. It
 * was returned with its latest sync state, and one whose lease was already
 * this replica's (a write here made while the page waited) was said leased:
 * the snapshot's old content was pushed under the write's lease, landing
 * after the write's own push (stale while synced, or a second copy).
 */
#define PAGE_LEFT \
	" pm.ability_id, pm.seen, NULL, pm.blob_id, pm.vector_id, 0, false, false, false, pm.may_exist, NULL, NULL," \
	" false, NULL, NULL, NULL, NULL, NULL, NULL"

static const char claim_page_sql[] =
	"WITH p AS ("
	" SELECT a.ability_id, a.vector_id, abilitysync.blob_name(a.service_name) AS blob_id FROM public.abilities a"
	" WHERE" PAGE_ROWS("a")
	" ORDER BY a.ability_id LIMIT $6::int),"
	" pm AS ("
	" SELECT p.*, (b.created_at IS NULL OR coalesce(l.last_written_at >= b.created_at, false)) AS may_exist,"
	"  coalesce(s0.generation, 0) AS seen, s0.updated_at AS seen_at FROM p"
	" LEFT JOIN abilitysync.blobs b ON b.blob_id = p.blob_id"
	" LEFT JOIN abilitysync.vector_ledger l ON l.blob_id = p.blob_id AND l.vector_id = p.vector_id"
	" LEFT JOIN abilitysync.sync_state s0 ON s0.ability_id = p.ability_id),"
	LOCK_STATES("st", "SELECT ability_id FROM p")
	" c0 AS ("
	" INSERT INTO abilitysync.sync_state AS s (ability_id, blob_id, vector_id, content_hash, state, generation,"
	"  attempts, next_attempt_at, updated_at, lease_until, lease_owner)"
	" SELECT ability_id, blob_id, vector_id, '', 'pending', seen + 1, 0, now(), coalesce(seen_at, now()),"
	"  now() + $2::interval, $1"
	" FROM pm WHERE " STATES_LOCKED("st") " ORDER BY ability_id"
	" ON CONFLICT (ability_id) DO UPDATE SET state = 'pending',"
	"  generation = CASE WHEN s.state IN ('pending_delete', 'deleted') THEN s.generation + 1 ELSE s.generation END,"
	"  next_attempt_at = now(), lease_until = " LEASE_UNTIL("s", "excluded.lease_until") ","
	"  lease_owner = " LEASE_TOKEN("s", "$1") ","
	"  doubt_until = " DOUBT_ON_TAKEOVER("s", "$3") ", updated_at = now()"
	" WHERE " PAGE_TAKES
	" RETURNING s.*),"
	" c AS (SELECT c0.*, pm.may_exist FROM c0 JOIN pm USING (ability_id)),"
	INTENT_CTE("JOIN public.abilities a USING (ability_id)")
	" SELECT" CLAIMED_COLUMNS " FROM c LEFT JOIN public.abilities a ON a.ability_id = c.ability_id AND" PAGE_ROWS("a")
	" UNION ALL SELECT" PAGE_LEFT " FROM pm WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.ability_id = pm.ability_id)"
	" ORDER BY 1";

/*
 * Outcomes, recorded only for rows whose lease is still ours (`x` locks them,
 * in ability_id order as a write does, and reads their latest version). The
 * outcome counts for the generation that was pushed, and a written vector
 * only while its mirror row exists: a newer generation (or a row deleted
 * behind our back) makes the row due now. An ambiguous call moves the doubt
 * window out; a confirmed push begun after the window clears it. Only a
 * confirmed push with no doubt left settles a row: synced, or deleted when
 * its vector went; then the ledger follows, never for a stale generation.
 */
static const char finish_sql[] =
	"WITH d AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bool[], $5::bool[], $6::bool[],"
	"  $7::text[], $8::text[], $9::text[], $10::text[], $12::text[]) WITH ORDINALITY AS d(ability_id, generation,"
	"  result, ambiguous, clears, deleted, content_hash, deletes, error, retry_in, lease, ord)),"
	" x AS ("
	" SELECT d.*, s.generation = d.generation"
	"  AND (d.deleted OR EXISTS (SELECT 1 FROM public.abilities a WHERE a.ability_id = d.ability_id)) AS current,"
	"  s.attempts,"
	"  CASE WHEN d.ambiguous THEN greatest(s.doubt_until, now() + $11::interval)"
	"   WHEN d.clears THEN NULL ELSE s.doubt_until END AS doubt"
	" FROM d JOIN abilitysync.sync_state s USING (ability_id) WHERE s.lease_owner = d.lease"
	"  ORDER BY ability_id FOR UPDATE OF s),"
	" y AS (SELECT x.*, CASE WHEN NOT current THEN 'superseded'"
	"   WHEN result = 'ok' AND doubt IS NULL THEN CASE WHEN deleted THEN 'deleted' ELSE 'synced' END"
	"   WHEN result = 'permanent' OR (result = 'failed' AND attempts >= $13::int) THEN 'failed'"
	"   ELSE 'pending' END AS outcome FROM x),"
	" up AS ("
	" UPDATE abilitysync.sync_state s SET doubt_until = y.doubt, lease_until = NULL, lease_owner = NULL,"
	"  state = CASE y.outcome WHEN 'synced' THEN 'synced' WHEN 'deleted' THEN 'deleted' WHEN 'failed' THEN 'failed'"
	"   ELSE s.state END,"
	"  content_hash = CASE WHEN y.current AND y.result = 'ok' AND NOT y.deleted"
	"   THEN coalesce(y.content_hash, s.content_hash) ELSE s.content_hash END,"
	"  attempts = CASE WHEN y.outcome IN ('synced', 'deleted') THEN 0 ELSE s.attempts END,"
	"  last_error = CASE WHEN NOT y.current THEN s.last_error WHEN y.outcome IN ('synced', 'deleted') THEN NULL"
	"   WHEN y.result = 'ok' THEN 'in doubt until ' || to_char(y.doubt AT TIME ZONE 'UTC',"
	"    'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') || ': an earlier vector DB call may still land; verified then'"
	"   ELSE y.error END,"
	"  synced_at = CASE WHEN y.outcome IN ('synced', 'deleted') THEN now() ELSE s.synced_at END,"
	"  next_attempt_at = CASE WHEN NOT y.current OR y.result = 'ok' THEN greatest(now(), y.doubt)"
	"   ELSE greatest(now() + y.retry_in::interval, y.doubt) END,"
	"  updated_at = now()"
	" FROM y WHERE s.ability_id = y.ability_id"
	" RETURNING s.ability_id, s.blob_id, s.vector_id, y.outcome, y.deletes, s.pending_since),"
	" led AS ("
	" UPDATE abilitysync.vector_ledger l"
	"  SET deleted_at = CASE WHEN up.outcome = 'deleted' THEN now() END, last_written_at = now()"
	" FROM up WHERE up.outcome IN ('synced', 'deleted') AND l.ability_id = up.ability_id"
	"  AND l.blob_id = up.blob_id AND l.vector_id = up.vector_id),"
	" gone AS ("
	" UPDATE abilitysync.vector_ledger l SET deleted_at = now()"
	" FROM up, unnest(string_to_array(up.deletes, ',')) AS v(pair)"
	" WHERE up.outcome IN ('synced', 'deleted') AND l.ability_id = up.ability_id"
	"  AND l.blob_id = split_part(v.pair, ' ', 1) AND l.vector_id = split_part(v.pair, ' ', 2)::int"
	"  AND NOT (up.outcome = 'synced' AND l.blob_id = up.blob_id AND l.vector_id = up.vector_id))"
	" SELECT coalesce(up.outcome, 'lost'),"
	"  CASE WHEN up.outcome IN ('synced', 'deleted') THEN extract(epoch FROM now() - up.pending_since) END"
	" FROM d LEFT JOIN up USING (ability_id) ORDER BY d.ord";

static const char row_columns[] =
	"a.ability_id, a.vector_id, a.ability_name, a.service_name, a.description, a.metadata::text,"
	" a.dynamic_header_keys::text, a.dynamic_headers_required,"
	" to_char(a.created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
	" to_char(a.updated_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),";

static const char row_sync_columns[] =
	" s.state, s.content_hash, s.blob_id, s.attempts, s.last_error,"
	" to_char(s.synced_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
	" FROM public.abilities a LEFT JOIN abilitysync.sync_state s USING (ability_id)";

#define PAUSE_JSON                                                                                   \
	"json_build_object('paused_at', to_char(paused_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), " \
	"'key', key_name, 'reason', reason, 'request_id', request_id, 'host', host)"

static const char status_sql[] =
	"SELECT json_build_object("
	" 'counts', (SELECT coalesce(json_object_agg(state, n), '{}') FROM"
	"  (SELECT state, count(*) AS n FROM abilitysync.sync_state GROUP BY state) c),"
	" 'oldest_pending_seconds', (SELECT round(extract(epoch FROM now() - min(updated_at))::numeric, 3)"
	"  FROM abilitysync.sync_state WHERE state IN ('pending', 'pending_delete')),"
	" 'in_doubt', (SELECT count(*) FROM abilitysync.sync_state WHERE doubt_until IS NOT NULL),"
	" 'last_errors', (SELECT coalesce(json_agg(e), '[]') FROM"
	"  (SELECT ability_id, state, attempts, last_error, updated_at FROM abilitysync.sync_state"
	"   WHERE last_error IS NOT NULL ORDER BY updated_at DESC LIMIT 10) e),"
	" 'reconcile', (SELECT json_build_object('run_id', id, 'status', status, 'finished_at', finished_at,"
	"   'total', report->'total', 'drift', (SELECT json_object_agg(k, v->'count') FROM jsonb_each(report->'drift') d(k, v)))"
	"  FROM abilitysync.reconcile_runs WHERE report IS NOT NULL ORDER BY id DESC LIMIT 1),"
	" 'by_blob', (SELECT coalesce(json_object_agg(blob_id, json_build_object('pending', n,"
	"   'oldest_pending_seconds', age)), '{}') FROM (SELECT blob_id, count(*) AS n,"
	"   round(extract(epoch FROM now() - min(updated_at))::numeric, 3) AS age FROM abilitysync.sync_state"
	"   WHERE state IN ('pending', 'pending_delete') GROUP BY blob_id) b),"
	" 'last_success', json_build_object("
	"  'reconcile', (SELECT extract(epoch FROM max(finished_at)) FROM abilitysync.reconcile_runs"
	"   WHERE status = 'ok' AND NOT dry_run),"
	"  'restore', (SELECT extract(epoch FROM max(finished_at)) FROM abilitysync.restore_jobs WHERE status = 'done')),"
	" 'restore', (SELECT json_build_object('job_id', id, 'total', total, 'done', done, 'failed', failed)"
	"  FROM abilitysync.restore_jobs WHERE status = 'running' ORDER BY id DESC LIMIT 1),"
	" 'paused', (SELECT " PAUSE_JSON " FROM abilitysync.sync_pause))::text";

/*
 * Changes picked by selectors ($1 state: failed, or pending for both kinds of
 * pending; $2 service; $3 a text in last_error; $4 seconds since the last
 * change), made due now with their attempts reset; a failed one becomes
 * pending again (pending_delete when its row is gone). $5: count only. A
 * change written again while the retry waited for its sync state (a newer
 * generation) is left as it is: the statement's snapshot, which says whether
 * the row exists, is older than that write.
 */
static const char retry_sql[] =
	"WITH m AS (SELECT s.ability_id, s.generation FROM abilitysync.sync_state s"
	" WHERE s.state = ANY (CASE $1 WHEN 'pending' THEN ARRAY['pending', 'pending_delete'] ELSE ARRAY['failed'] END)"
	"  AND ($2::text IS NULL OR s.blob_id = abilitysync.blob_name($2))"
	"  AND ($3::text IS NULL OR strpos(coalesce(s.last_error, ''), $3) > 0)"
	"  AND ($4::bigint IS NULL OR s.updated_at < now() - make_interval(secs => $4::bigint))),"
	LOCK_STATES("st", "SELECT ability_id FROM m")
	" r AS (UPDATE abilitysync.sync_state s SET state = " REQUEUED_STATE("s") ","
	" attempts = 0, next_attempt_at = now(), updated_at = now() FROM m"
	" WHERE s.ability_id = m.ability_id AND s.generation = m.generation AND NOT $5::bool AND " STATES_LOCKED("st")
	" RETURNING 1)"
	" SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM r)";

/* The statements run for every ability: prepared once per connection. */
static const struct pg_stmt write_stmt = {"abilitysync_write", write_sql, true};
static const struct pg_stmt finish_stmt = {"abilitysync_finish", finish_sql, true};
static const struct pg_stmt claim_due_stmt = {"abilitysync_claim_due", claim_due_sql, false};
static const struct pg_stmt claim_ids_stmt = {"abilitysync_claim_ids", claim_ids_sql, false};
static const struct pg_stmt claim_page_stmt = {"abilitysync_claim_page", claim_page_sql, false};
static const struct pg_stmt delete_stmt = {"abilitysync_delete", delete_sql, true};

/* ---- grouped writes ------------------------------------------------------------- */

/*
 * A write, or a delete (delete_id; a statement of its own). Both go out
 * through one queue, WRITE_CONCURRENCY statements at a time, and no two
 * statements in flight touch one ability: their answers come in the order
 * they were sent. A write or delete that takes a lease this replica already
 * holds keeps its token (LEASE_TOKEN); a delete sent after a write, answered
 * before it on another connection, pushed and recorded the delete (the lease
 * let go), and the write's answer then pushed its add: the deleted ability's
 * vector came back.
 */
struct write_req {
	TAILQ_ENTRY(write_req) link;
	const struct ability *items;
	size_t n;
	size_t bytes;           /* what its rows weigh in the statement's parameters */
	store_write_fn done;
	char *delete_id;        /* a delete: this ability's (owned) */
	store_delete_fn ddone;
	void *arg;
	int alone;              /* > 0: run by itself (after its group lost a race on the ledger), that many times */
};

TAILQ_HEAD(write_list, write_req);

/* One write (or delete) statement in flight and the requests it carries. */
struct write_group {
	TAILQ_ENTRY(write_group) link;
	struct store *s;
	struct write_list reqs;
	size_t rows, bytes;
};

TAILQ_HEAD(group_list, write_group);

struct store {
	struct pgpool *pool;
	struct store_opts o;
	struct write_list waiting;
	struct group_list flying; /* the statements in flight */
	int in_flight;
	char *owner;
	char lease[32], quarantine[32], attempts[16];
};

static void pump(struct store *s);

static struct pg_param text_param(const char *s)
{
	return (struct pg_param){.data = s, .len = s ? strlen(s) : 0};
}

static bool is_true(PGresult *res, int row, int col)
{
	return PQgetvalue(res, row, col)[0] == 't';
}

static const char *text_or_null(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

static bool group_has(const struct write_group *g, const char *ability_id)
{
	const struct write_req *r;
	size_t i;

	TAILQ_FOREACH(r, &g->reqs, link) {
		if (r->delete_id && strcmp(r->delete_id, ability_id) == 0)
			return true;
		for (i = 0; i < r->n; i++)
			if (strcmp(r->items[i].ability_id, ability_id) == 0)
				return true;
	}
	return false;
}

/* Does the request touch an ability of `g`, or of a statement in flight? */
static bool req_clashes(const struct store *s, const struct write_group *g, const struct write_req *r)
{
	const struct write_group *f;
	size_t i;

	for (i = 0; i < r->n || (r->delete_id && i == 0); i++) {
		const char *id = r->delete_id ? r->delete_id : r->items[i].ability_id;

		if (group_has(g, id))
			return true;
		TAILQ_FOREACH(f, &s->flying, link)
			if (group_has(f, id))
				return true;
	}
	return false;
}

/* The binary array types of an ability's columns, as put_ability appends them, and of its request number. */
static const uint32_t ability_oids[12] = {PG_OID_TEXT, PG_OID_INT4, PG_OID_TEXT, PG_OID_TEXT, PG_OID_TEXT,
					  PG_OID_TEXT, PG_OID_TEXT, PG_OID_TEXT, PG_OID_BOOL, PG_OID_TEXT,
					  PG_OID_TEXT, PG_OID_INT4};

/* Appends an ability to the 11 column arrays of a write's (or a stage's) input. */
static void put_ability(struct pg_array arr[11], const struct ability *a)
{
	pg_array_text(&arr[0], a->ability_id, strlen(a->ability_id));
	pg_array_int4(&arr[1], (int32_t)a->vector_id);
	pg_array_text(&arr[2], a->ability_name, strlen(a->ability_name));
	pg_array_text(&arr[3], a->service_name, strlen(a->service_name));
	pg_array_text(&arr[4], a->description, strlen(a->description));
	pg_array_text(&arr[5], a->embedding, a->embedding_len);
	pg_array_text(&arr[6], a->metadata_text, strlen(a->metadata_text));
	pg_array_text(&arr[7], a->dynamic_header_keys, strlen(a->dynamic_header_keys));
	pg_array_bool(&arr[8], a->dynamic_headers_required);
	pg_array_text(&arr[9], a->blob_id, strlen(a->blob_id));
	pg_array_text(&arr[10], a->content_hash, strlen(a->content_hash));
}

/* The 12 row arrays of a group ($1..$11, $13), binary, in request order. */
static void build_params(const struct write_group *g, struct buf p[12])
{
	struct pg_array arr[12];
	const struct write_req *r;
	size_t i, k;
	int req = 0;

	for (k = 0; k < 12; k++)
		pg_array_begin(&arr[k], &p[k], ability_oids[k]);
	TAILQ_FOREACH(r, &g->reqs, link) {
		req++;
		for (i = 0; i < r->n; i++) {
			put_ability(arr, &r->items[i]);
			pg_array_int4(&arr[11], req);
		}
	}
	for (k = 0; k < 12; k++)
		pg_array_end(&arr[k]);
}

/* Columns of write_sql's result, in order. */
enum { W_ORD, W_COLLIDES, W_REFUSED, W_GENERATION, W_REWROTE, W_OWNER, W_STATE, W_LEASED, W_DOUBT, W_MAY_EXIST,
       W_STALE, W_LEASE, W_SAME };

static void parse_row(PGresult *res, int row, struct write_result *w)
{
	memset(w, 0, sizeof(*w));
	w->state = PQgetvalue(res, row, W_STATE);
	w->other = PQgetvalue(res, row, W_OWNER);
	if (is_true(res, row, W_COLLIDES)) {
		w->outcome = WRITE_COLLISION;
	} else if (is_true(res, row, W_REFUSED)) {
		w->outcome = WRITE_REFUSED;
	} else if (!PQgetisnull(res, row, W_GENERATION)) {
		w->outcome = WRITE_WRITTEN;
		w->generation = strtoll(PQgetvalue(res, row, W_GENERATION), NULL, 10);
		w->leased = is_true(res, row, W_LEASED);
		w->doubt = is_true(res, row, W_DOUBT);
		w->may_exist = is_true(res, row, W_MAY_EXIST);
		w->stale = text_or_null(res, row, W_STALE);
		w->lease = text_or_null(res, row, W_LEASE);
		w->repaired = is_true(res, row, W_SAME) && is_true(res, row, W_REWROTE);
	} else {
		w->outcome = WRITE_UNCHANGED;
	}
}

static void requeue_alone(struct store *s, struct write_group *g)
{
	struct write_req *r;

	while ((r = TAILQ_LAST(&g->reqs, write_list)) != NULL) {
		TAILQ_REMOVE(&g->reqs, r, link);
		r->alone++;
		TAILQ_INSERT_HEAD(&s->waiting, r, link);
	}
}

static void on_group_done(const struct pg_outcome *o, void *arg)
{
	struct write_group *g = arg;
	struct store *s = g->s;
	struct write_req *r;
	int row = 0;
	/* Two statements claimed one vector (23505) or locked ledger entries crosswise (40P01). */
	bool race = !o->res && (strcmp(o->sqlstate, "23505") == 0 || strcmp(o->sqlstate, "40P01") == 0);

	s->in_flight--;
	TAILQ_REMOVE(&s->flying, g, link);
	if (race && TAILQ_FIRST(&g->reqs)->alone < ALONE_RETRIES) {
		/* Run each request by itself, in order: the statement then sees who holds the vector. */
		log_info(COMP, "a concurrent write claimed the same vector (%s); retrying %zu rows one request at a time",
			 o->sqlstate, g->rows);
		requeue_alone(s, g);
		free(g);
		pump(s);
		return;
	}
	while ((r = TAILQ_FIRST(&g->reqs)) != NULL) {
		TAILQ_REMOVE(&g->reqs, r, link);
		if (o->res && PQntuples(o->res) == (int)g->rows) {
			struct write_result *res = xcalloc(r->n, sizeof(*res));
			size_t i;

			for (i = 0; i < r->n; i++)
				parse_row(o->res, row++, &res[i]);
			r->done(res, r->n, o, r->arg);
			free(res);
		} else {
			struct pg_outcome failed = *o;

			failed.res = NULL;
			if (o->res)
				snprintf(failed.error, sizeof(failed.error), "the write returned %d rows for %zu abilities",
					 PQntuples(o->res), g->rows);
			r->done(NULL, r->n, &failed, r->arg);
		}
		free(r);
	}
	free(g);
	pump(s);
}

static void on_group_deleted(const struct pg_outcome *o, void *arg);

static void send_group(struct store *s, struct write_group *g)
{
	struct buf p[12];
	struct pg_param params[15];
	const struct write_req *d = TAILQ_FIRST(&g->reqs);
	int k;

	s->in_flight++;
	TAILQ_INSERT_TAIL(&s->flying, g, link);
	if (d->delete_id) {
		params[0] = text_param(d->delete_id);
		params[1] = text_param(s->owner);
		params[2] = text_param(s->lease);
		params[3] = text_param(s->quarantine);
		pgpool_execute(s->pool, &delete_stmt, 4, params, on_group_deleted, g);
		return;
	}
	memset(p, 0, sizeof(p));
	build_params(g, p);
	for (k = 0; k < 12; k++) { /* handed to the pool: the embeddings are not copied once more */
		size_t len = p[k].len;

		params[k < 11 ? k : 12] = (struct pg_param){.len = len, .binary = true, .handed = buf_steal(&p[k])};
	}
	params[11] = text_param(s->owner);
	params[13] = text_param(s->lease);
	params[14] = text_param(s->quarantine);
	pgpool_execute(s->pool, &write_stmt, 15, params, on_group_done, g);
}

/*
 * Takes waiting requests into a group: in arrival order, no ability twice nor
 * one a statement in flight has (the first request that would stops it: the
 * order holds), up to group_max rows and bytes; a delete goes alone.
 */
static struct write_group *take_group(struct store *s)
{
	struct write_group *g = xcalloc(1, sizeof(*g));
	struct write_req *r;

	g->s = s;
	TAILQ_INIT(&g->reqs);
	while ((r = TAILQ_FIRST(&s->waiting)) != NULL) {
		if (g->rows && (r->alone || r->delete_id || g->rows + r->n > (size_t)s->o.group_max ||
				g->bytes + r->bytes > s->o.group_max_bytes))
			break;
		if (req_clashes(s, g, r))
			break;
		TAILQ_REMOVE(&s->waiting, r, link);
		TAILQ_INSERT_TAIL(&g->reqs, r, link);
		g->rows += r->n;
		g->bytes += r->bytes;
		if (r->alone || r->delete_id)
			break;
	}
	return g;
}

static void pump(struct store *s)
{
	while (s->in_flight < s->o.write_concurrency && !TAILQ_EMPTY(&s->waiting)) {
		struct write_group *g = take_group(s);

		if (TAILQ_EMPTY(&g->reqs)) { /* the next request waits for a statement in flight */
			free(g);
			return;
		}
		send_group(s, g);
	}
}

/* The bytes an ability adds to a write statement's parameters (its texts, mostly the embedding). */
static size_t ability_weight(const struct ability *a)
{
	return a->embedding_len + strlen(a->description) + strlen(a->metadata_text) + strlen(a->ability_id) +
	       strlen(a->ability_name) + strlen(a->service_name) + 2 * strlen(a->blob_id) + 256;
}

void store_write(struct store *s, const struct ability *items, size_t n, store_write_fn done, void *arg)
{
	struct write_req *r = xcalloc(1, sizeof(*r));
	size_t i;

	r->items = items;
	r->n = n;
	for (i = 0; i < n; i++)
		r->bytes += ability_weight(&items[i]);
	r->done = done;
	r->arg = arg;
	TAILQ_INSERT_TAIL(&s->waiting, r, link);
	pump(s);
}

/* ---- deletes and claims ---------------------------------------------------------------- */

static void on_group_deleted(const struct pg_outcome *o, void *arg)
{
	struct write_group *g = arg;
	struct store *s = g->s;
	struct write_req *x = TAILQ_FIRST(&g->reqs);
	struct delete_result r;

	memset(&r, 0, sizeof(r));
	if (o->res && PQntuples(o->res) == 1) {
		r.found = true;
		r.generation = strtoll(PQgetvalue(o->res, 0, 0), NULL, 10);
		r.blob_id = PQgetvalue(o->res, 0, 1);
		r.vector_id = strtoll(PQgetvalue(o->res, 0, 2), NULL, 10);
		r.leased = is_true(o->res, 0, 3);
		r.doubt = is_true(o->res, 0, 4);
		r.deletes = text_or_null(o->res, 0, 5);
		r.lease = text_or_null(o->res, 0, 6);
	}
	s->in_flight--;
	TAILQ_REMOVE(&s->flying, g, link);
	x->ddone(o->res ? &r : NULL, o, x->arg);
	free(x->delete_id);
	free(x);
	free(g);
	pump(s);
}

void store_delete(struct store *s, const char *ability_id, store_delete_fn done, void *arg)
{
	struct write_req *r = xcalloc(1, sizeof(*r));

	r->delete_id = xstrdup(ability_id);
	r->ddone = done;
	r->arg = arg;
	TAILQ_INSERT_TAIL(&s->waiting, r, link);
	pump(s);
}

struct claim_ctx {
	store_claim_fn done;
	void *arg;
};

/* Columns of CLAIMED_COLUMNS, in order. */
enum { C_ID, C_GENERATION, C_STATE, C_BLOB, C_VID, C_ATTEMPTS, C_LEASED, C_DOUBT, C_VERIFY, C_MAY_EXIST, C_DELETES,
       C_COLLISION, C_GONE, C_NAME, C_SERVICE, C_DESCRIPTION, C_EMBEDDING, C_METADATA, C_LEASE };

static void on_claimed(const struct pg_outcome *o, void *arg)
{
	struct claim_ctx *x = arg;
	struct claimed_row *rows = NULL;
	int n = o->res ? PQntuples(o->res) : 0, r;

	if (n)
		rows = xcalloc((size_t)n, sizeof(*rows));
	for (r = 0; r < n; r++) {
		struct claimed_row *c = &rows[r];
		PGresult *res = o->res;

		c->ability_id = PQgetvalue(res, r, C_ID);
		c->generation = strtoll(PQgetvalue(res, r, C_GENERATION), NULL, 10);
		c->state = PQgetvalue(res, r, C_STATE);
		c->blob_id = PQgetvalue(res, r, C_BLOB);
		c->vector_id = strtoll(PQgetvalue(res, r, C_VID), NULL, 10);
		c->attempts = atoi(PQgetvalue(res, r, C_ATTEMPTS));
		c->leased = is_true(res, r, C_LEASED);
		c->doubt = is_true(res, r, C_DOUBT);
		c->verify = is_true(res, r, C_VERIFY);
		c->may_exist = is_true(res, r, C_MAY_EXIST);
		c->deletes = text_or_null(res, r, C_DELETES);
		c->collision = text_or_null(res, r, C_COLLISION);
		c->gone = is_true(res, r, C_GONE);
		c->ability_name = text_or_null(res, r, C_NAME);
		c->service_name = text_or_null(res, r, C_SERVICE);
		c->description = text_or_null(res, r, C_DESCRIPTION);
		c->embedding = text_or_null(res, r, C_EMBEDDING);
		c->metadata = text_or_null(res, r, C_METADATA);
		c->lease = text_or_null(res, r, C_LEASE);
	}
	x->done(rows, (size_t)n, o, x->arg);
	free(rows);
	free(x);
}

/* $1 owner, $2 lease, $3 quarantine: what every claim statement starts with. */
static void claim_params(const struct store *s, struct pg_param *params)
{
	params[0] = text_param(s->owner);
	params[1] = text_param(s->lease);
	params[2] = text_param(s->quarantine);
}

static void claim(struct store *s, const struct pg_stmt *stmt, int nparams, const struct pg_param *params,
		  store_claim_fn done, void *arg)
{
	struct claim_ctx *x = xcalloc(1, sizeof(*x));

	x->done = done;
	x->arg = arg;
	pgpool_execute(s->pool, stmt, nparams, params, on_claimed, x);
}

void store_claim_due(struct store *s, int limit, store_claim_fn done, void *arg)
{
	char lim[16];
	struct pg_param params[4];

	snprintf(lim, sizeof(lim), "%d", limit);
	claim_params(s, params);
	params[3] = text_param(lim);
	claim(s, &claim_due_stmt, 4, params, done, arg);
}

void store_claim_ids(struct store *s, const char *const *ids, size_t n, store_claim_fn done, void *arg)
{
	struct buf b = BUF_INIT;
	struct pg_array arr;
	struct pg_param params[4];
	size_t i;

	pg_array_begin(&arr, &b, PG_OID_TEXT);
	for (i = 0; i < n; i++)
		pg_array_text(&arr, ids[i], strlen(ids[i]));
	pg_array_end(&arr);
	claim_params(s, params);
	params[3] = pg_array_param(&b);
	claim(s, &claim_ids_stmt, 4, params, done, arg);
	buf_free(&b);
}

void store_claim_page(struct store *s, const char *after, const char *upto, const char *service, int limit,
		      store_claim_fn done, void *arg)
{
	char lim[16];
	struct pg_param params[7];

	snprintf(lim, sizeof(lim), "%d", limit);
	claim_params(s, params);
	params[3] = text_param(after);
	params[4] = text_param(service);
	params[5] = text_param(lim);
	params[6] = text_param(upto);
	claim(s, &claim_page_stmt, 7, params, done, arg);
}

/* ---- recording outcomes ------------------------------------------------------------------- */

struct finish_ctx {
	store_finish_fn done;
	void *arg;
	size_t n;
};

static enum finish_state finish_state_of(const char *s)
{
	if (strcmp(s, "synced") == 0 || strcmp(s, "deleted") == 0)
		return FINISH_SYNCED;
	if (strcmp(s, "failed") == 0)
		return FINISH_FAILED;
	if (strcmp(s, "superseded") == 0)
		return FINISH_SUPERSEDED;
	if (strcmp(s, "lost") == 0)
		return FINISH_LOST;
	return FINISH_PENDING;
}

static void on_finished(const struct pg_outcome *o, void *arg)
{
	struct finish_ctx *x = arg;
	enum finish_state *res = NULL;
	double *lag = NULL;
	size_t i;

	if (o->res && (size_t)PQntuples(o->res) == x->n) {
		res = xcalloc(x->n ? x->n : 1, sizeof(*res));
		lag = xcalloc(x->n ? x->n : 1, sizeof(*lag));
		for (i = 0; i < x->n; i++) {
			res[i] = finish_state_of(PQgetvalue(o->res, (int)i, 0));
			lag[i] = PQgetisnull(o->res, (int)i, 1) ? -1 : strtod(PQgetvalue(o->res, (int)i, 1), NULL);
		}
	}
	x->done(res, lag, x->n, o, x->arg);
	free(res);
	free(lag);
	free(x);
}

static const char *push_result_text(enum push_result r)
{
	return r == PUSH_OK ? "ok" : r == PUSH_PERMANENT ? "permanent" : "failed";
}

void store_finish_pushes(struct store *s, const struct push_done *items, size_t n, store_finish_fn done, void *arg)
{
	static const uint32_t oids[11] = {PG_OID_TEXT, PG_OID_INT8, PG_OID_TEXT, PG_OID_BOOL, PG_OID_BOOL,
					  PG_OID_BOOL, PG_OID_TEXT, PG_OID_TEXT, PG_OID_TEXT, PG_OID_TEXT, PG_OID_TEXT};
	struct finish_ctx *x = xcalloc(1, sizeof(*x));
	struct buf b[11];
	struct pg_array arr[11];
	struct pg_param params[13];
	size_t i;
	int k;

	memset(b, 0, sizeof(b));
	for (k = 0; k < 11; k++)
		pg_array_begin(&arr[k], &b[k], oids[k]);
	x->done = done;
	x->arg = arg;
	x->n = n;
	for (i = 0; i < n; i++) {
		const struct push_done *d = &items[i];
		const char *result = push_result_text(d->result);
		char retry[32];

		snprintf(retry, sizeof(retry), "%ld milliseconds", d->retry_in_ms);
		pg_array_text(&arr[0], d->ability_id, strlen(d->ability_id));
		pg_array_int8(&arr[1], d->generation);
		pg_array_text(&arr[2], result, strlen(result));
		pg_array_bool(&arr[3], d->ambiguous);
		pg_array_bool(&arr[4], d->clears_doubt);
		pg_array_bool(&arr[5], d->deleted);
		pg_array_text(&arr[6], d->content_hash, d->content_hash ? strlen(d->content_hash) : 0);
		pg_array_text(&arr[7], d->deletes, d->deletes ? strlen(d->deletes) : 0);
		pg_array_text(&arr[8], d->error, d->error ? strlen(d->error) : 0);
		pg_array_text(&arr[9], retry, strlen(retry));
		pg_array_text(&arr[10], d->lease, d->lease ? strlen(d->lease) : 0);
	}
	for (k = 0; k < 11; k++)
		pg_array_end(&arr[k]);
	for (k = 0; k < 10; k++)
		params[k] = pg_array_param(&b[k]);
	params[10] = text_param(s->quarantine);
	params[11] = pg_array_param(&b[10]); /* the lease each was pushed under */
	params[12] = text_param(s->attempts);
	pgpool_execute(s->pool, &finish_stmt, 13, params, on_finished, x);
	for (k = 0; k < 11; k++)
		buf_free(&b[k]);
}

void store_blob_creating(struct store *s, const char *blob, pg_done_fn done, void *arg)
{
	const char *params[1] = {blob};

	pgpool_query(s->pool,
		     "INSERT INTO abilitysync.blobs (blob_id, creating_since) VALUES ($1, now())"
		     " ON CONFLICT (blob_id) DO UPDATE SET creating_since = now()",
		     1, params, done, arg);
}

void store_blob_created(struct store *s, const char *blob, pg_done_fn done, void *arg)
{
	const char *params[1] = {blob};

	pgpool_query(s->pool,
		     "UPDATE abilitysync.blobs SET created_at = creating_since, creating_since = NULL"
		     " WHERE blob_id = $1 AND creating_since IS NOT NULL",
		     1, params, done, arg);
}

/* ---- reads ------------------------------------------------------------------------------- */

struct rows_ctx {
	store_rows_fn done;
	void *arg;
};

static void on_rows(const struct pg_outcome *o, void *arg)
{
	struct rows_ctx *x = arg;
	struct ability_row *rows = NULL;
	int n = o->res ? PQntuples(o->res) : 0, r;

	if (n)
		rows = xcalloc((size_t)n, sizeof(*rows));
	for (r = 0; r < n; r++) {
		struct ability_row *w = &rows[r];
		PGresult *res = o->res;

		*w = (struct ability_row){PQgetvalue(res, r, 0), PQgetvalue(res, r, 2), PQgetvalue(res, r, 3),
					  PQgetvalue(res, r, 4), strtoll(PQgetvalue(res, r, 1), NULL, 10),
					  text_or_null(res, r, 5), text_or_null(res, r, 6), is_true(res, r, 7),
					  text_or_null(res, r, 8), text_or_null(res, r, 9), text_or_null(res, r, 10),
					  !PQgetisnull(res, r, 11), text_or_null(res, r, 11), text_or_null(res, r, 12),
					  text_or_null(res, r, 13), text_or_null(res, r, 15), text_or_null(res, r, 16),
					  PQgetisnull(res, r, 14) ? 0 : atoi(PQgetvalue(res, r, 14))};
	}
	x->done(rows, (size_t)n, o, x->arg);
	free(rows);
	free(x);
}

static void rows_query(struct store *s, const char *sql, int nparams, const char *const *params, store_rows_fn done,
		       void *arg)
{
	struct rows_ctx *x = xcalloc(1, sizeof(*x));

	x->done = done;
	x->arg = arg;
	pgpool_query(s->pool, sql, nparams, params, on_rows, x);
}

void store_get(struct store *s, const char *ability_id, bool with_embedding, store_rows_fn done, void *arg)
{
	struct buf sql = BUF_INIT;
	const char *params[1] = {ability_id};

	buf_printf(&sql, "SELECT %s %s %s WHERE a.ability_id = $1", row_columns,
		   with_embedding ? "a.embedding::text," : "NULL::text,", row_sync_columns);
	rows_query(s, sql.data, 1, params, done, arg);
	buf_free(&sql);
}

void store_list(struct store *s, const char *service, const char *cursor, int limit, store_rows_fn done, void *arg)
{
	struct buf sql = BUF_INIT;
	char lim[16];
	const char *params[3] = {service, cursor, lim};

	snprintf(lim, sizeof(lim), "%d", limit);
	buf_printf(&sql, "SELECT %s NULL::text, %s WHERE ($1::text IS NULL OR a.service_name = $1)"
		   " AND ($2::text IS NULL OR a.ability_id > $2) ORDER BY a.ability_id LIMIT $3::int", row_columns,
		   row_sync_columns);
	rows_query(s, sql.data, 3, params, done, arg);
	buf_free(&sql);
}

struct vectors_ctx {
	store_vectors_fn done;
	void *arg;
};

static void on_vectors(const struct pg_outcome *o, void *arg)
{
	struct vectors_ctx *x = arg;
	struct vector_row *rows = NULL;
	int n = o->res ? PQntuples(o->res) : 0, r;

	if (n)
		rows = xcalloc((size_t)n, sizeof(*rows));
	for (r = 0; r < n; r++)
		rows[r] = (struct vector_row){PQgetvalue(o->res, r, 0), PQgetvalue(o->res, r, 2), PQgetvalue(o->res, r, 3),
					      text_or_null(o->res, r, 4), strtoll(PQgetvalue(o->res, r, 1), NULL, 10)};
	x->done(rows, (size_t)n, o, x->arg);
	free(rows);
	free(x);
}

void store_by_vectors(struct store *s, const char *service, const char *ids, store_vectors_fn done, void *arg)
{
	struct vectors_ctx *x = xcalloc(1, sizeof(*x));
	const char *params[2] = {service, ids};

	x->done = done;
	x->arg = arg;
	pgpool_query(s->pool,
		     "SELECT ability_id, vector_id, ability_name, description, metadata::text FROM public.abilities"
		     " WHERE service_name = $1 AND vector_id = ANY($2::int[])",
		     2, params, on_vectors, x);
}

struct text_ctx {
	store_text_fn done;
	void *arg;
};

static void on_text(const struct pg_outcome *o, void *arg)
{
	struct text_ctx *x = arg;

	x->done(o->res && PQntuples(o->res) > 0 ? text_or_null(o->res, 0, 0) : NULL, o, x->arg);
	free(x);
}

static void text_query_params(struct store *s, const char *sql, int nparams, const char *const *params,
			      store_text_fn done, void *arg)
{
	struct text_ctx *x = xcalloc(1, sizeof(*x));

	x->done = done;
	x->arg = arg;
	pgpool_query(s->pool, sql, nparams, params, on_text, x);
}

static void text_query(struct store *s, const char *sql, store_text_fn done, void *arg)
{
	text_query_params(s, sql, 0, NULL, done, arg);
}

void store_status(struct store *s, store_text_fn done, void *arg)
{
	text_query(s, status_sql, done, arg);
}

void store_last_reconcile(struct store *s, store_text_fn done, void *arg)
{
	text_query(s,
		   "SELECT coalesce(report::text, json_build_object('run_id', id, 'status', status, 'started_at',"
		   " to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))::text)"
		   " FROM abilitysync.reconcile_runs ORDER BY id DESC LIMIT 1",
		   done, arg);
}

/*
 * Every long job as one list: restore jobs and reconcile runs, with one state
 * vocabulary (queued, running, succeeded, failed, cancelled) beside each
 * kind's own status word, and a paging key (started_at in microseconds, kind,
 * id) that is also the list's order, newest first.
 */
#define JOBS_CTE                                                                                              \
	"WITH jobs AS (SELECT 'restore' AS kind, id, status,"                                                  \
	"  CASE status WHEN 'done' THEN 'succeeded' WHEN 'interrupted' THEN 'failed' ELSE status END AS state," \
	"  service_name, total, done, failed, dry_run, started_at, updated_at, finished_at, error"           \
	"  FROM abilitysync.restore_jobs"                                                                      \
	" UNION ALL SELECT 'reconcile', id, status, CASE status WHEN 'ok' THEN 'succeeded' ELSE status END,"  \
	"  service_name, NULL, NULL, NULL, dry_run, started_at, coalesce(finished_at, started_at), finished_at," \
	"  error FROM abilitysync.reconcile_runs),"                                                           \
	" keyed AS (SELECT *, (extract(epoch FROM started_at) * 1000000)::bigint AS us FROM jobs)"
#define JOBS_COLUMNS                                                                                   \
	" SELECT kind, id, state, status, service_name, total, done, failed, dry_run,"                  \
	" to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"                  \
	" to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"                  \
	" to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), error,"          \
	" us || '.' || kind || '.' || id FROM keyed"

struct job_ctx {
	store_jobs_fn done;
	void *arg;
};

static void on_jobs(const struct pg_outcome *o, void *arg)
{
	struct job_ctx *x = arg;
	int n = pg_rows(o), i;
	struct job_row *rows = xcalloc((size_t)n + 1, sizeof(*rows));

	for (i = 0; i < n; i++)
		rows[i] = (struct job_row){pg_text(o, i, 0), pg_int8(o, i, 1), pg_text(o, i, 2), pg_text(o, i, 3),
					   pg_text(o, i, 4), pg_text(o, i, 5) ? pg_int8(o, i, 5) : -1,
					   pg_text(o, i, 6) ? pg_int8(o, i, 6) : -1, pg_text(o, i, 7) ? pg_int8(o, i, 7) : -1, pg_bool(o, i, 8), pg_text(o, i, 9), pg_text(o, i, 10),
					   pg_text(o, i, 11), pg_text(o, i, 12), pg_text(o, i, 13)};
	x->done(rows, (size_t)n, o, x->arg);
	free(rows);
	free(x);
}

static struct job_ctx *job_ctx_new(store_jobs_fn done, void *arg)
{
	struct job_ctx *x = xcalloc(1, sizeof(*x));

	x->done = done;
	x->arg = arg;
	return x;
}

void store_job(struct store *s, const char *kind, int64_t id, store_jobs_fn done, void *arg)
{
	struct num n = num(id);
	const char *params[2] = {kind, n.s};

	pgpool_query(s->pool, JOBS_CTE JOBS_COLUMNS " WHERE kind = $1 AND id = $2::bigint", 2, params, on_jobs,
		     job_ctx_new(done, arg));
}

void store_jobs_list(struct store *s, const char *kind, const char *state, const char *cursor, int limit,
		     store_jobs_fn done, void *arg)
{
	struct num n = num(limit);
	const char *params[4] = {kind, state, cursor, n.s};

	pgpool_query(s->pool,
		     JOBS_CTE JOBS_COLUMNS " WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR state = $2)"
		     " AND ($3::text IS NULL OR (us, kind, id) < (split_part($3, '.', 1)::bigint, split_part($3, '.', 2),"
		     "  split_part($3, '.', 3)::bigint))"
		     " ORDER BY us DESC, kind DESC, id DESC LIMIT $4::int",
		     4, params, on_jobs, job_ctx_new(done, arg));
}

struct cancel_ctx {
	store_cancel_fn done;
	void *arg;
};

static void on_cancelled(const struct pg_outcome *o, void *arg)
{
	struct cancel_ctx *x = arg;
	bool one = pg_rows(o) == 1;

	x->done(one && pg_bool(o, 0, 0), one ? pg_text(o, 0, 1) : NULL, o, x->arg);
	free(x);
}

void store_job_cancel(struct store *s, const char *kind, int64_t id, const char *why, store_cancel_fn done,
		      void *arg)
{
	struct cancel_ctx *x = xcalloc(1, sizeof(*x));
	struct num n = num(id);
	const char *params[2] = {n.s, why};
	bool restore = strcmp(kind, "restore") == 0;

	x->done = done;
	x->arg = arg;
	/* The status before: the outer SELECT sees the table as the statement began. */
	pgpool_query(s->pool,
		     restore ? "WITH u AS (UPDATE abilitysync.restore_jobs SET status = 'cancelled', error = $2,"
			       " updated_at = now() WHERE id = $1::bigint AND status = 'running' RETURNING id)"
			       " SELECT EXISTS (SELECT 1 FROM u),"
			       " (SELECT status FROM abilitysync.restore_jobs WHERE id = $1::bigint)"
			     : "WITH u AS (UPDATE abilitysync.reconcile_runs SET status = 'cancelled', error = $2,"
			       " finished_at = now() WHERE id = $1::bigint AND status = 'running' RETURNING id)"
			       " SELECT EXISTS (SELECT 1 FROM u),"
			       " (SELECT status FROM abilitysync.reconcile_runs WHERE id = $1::bigint)",
		     2, params, on_cancelled, x);
}

struct give_back_ctx {
	store_give_back_fn done;
	void *arg;
};

static void on_given_back(const struct pg_outcome *o, void *arg)
{
	struct give_back_ctx *x = arg;
	bool released = o->res && PQntuples(o->res) == 1;

	x->done(released, released ? strtoll(PQgetvalue(o->res, 0, 0), NULL, 10) : -1, o, x->arg);
	free(x);
}

void store_give_back(struct store *s, const char *ability_id, const char *lease, store_give_back_fn done, void *arg)
{
	struct give_back_ctx *x = xcalloc(1, sizeof(*x));
	const char *params[2] = {ability_id, lease};

	x->done = done;
	x->arg = arg;
	pgpool_query(s->pool,
		     "UPDATE abilitysync.sync_state SET lease_until = NULL, lease_owner = NULL"
		     " WHERE ability_id = $1 AND lease_owner = $2 RETURNING generation",
		     2, params, on_given_back, x);
}

void store_sync_pause(struct store *s, const char *key, const char *reason, const char *request_id,
		      store_text_fn done, void *arg)
{
	const char *params[4] = {key, reason, request_id, s->owner};

	text_query_params(s,
			  "WITH p AS (INSERT INTO abilitysync.sync_pause (key_name, reason, request_id, host)"
			  " VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING)"
			  " SELECT coalesce((SELECT " PAUSE_JSON " FROM abilitysync.sync_pause),"
			  " json_build_object('paused_at', to_char(now() AT TIME ZONE 'UTC',"
			  " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), 'key', $1::text, 'reason', $2::text, 'request_id', $3::text,"
			  " 'host', $4::text))::text",
			  4, params, done, arg);
}

void store_sync_resume(struct store *s, store_text_fn done, void *arg)
{
	text_query_params(s,
			  "WITH r AS (DELETE FROM abilitysync.sync_pause RETURNING *)"
			  " SELECT coalesce((SELECT " PAUSE_JSON " FROM r), 'null'::json)::text",
			  0, NULL, done, arg);
}

void store_audit_record(struct store *s, const struct audit_entry *e, int retention_days, pg_done_fn done,
			void *arg)
{
	struct num status = num(e->status), days = num(retention_days);
	const char *params[7] = {e->key_name, e->action, e->params, status.s, e->request_id, s->owner, days.s};

	pgpool_query(s->pool,
		     "WITH gone AS (DELETE FROM abilitysync.audit_log WHERE at < now() - make_interval(days => $7::int))"
		     " INSERT INTO abilitysync.audit_log (key_name, action, params, status, request_id, host)"
		     " VALUES ($1, $2, $3::jsonb, $4::int, $5, $6)",
		     7, params, done, arg);
}

struct audit_ctx {
	store_audit_fn done;
	void *arg;
};

static void on_audit_rows(const struct pg_outcome *o, void *arg)
{
	struct audit_ctx *x = arg;
	int n = pg_rows(o), i;
	struct audit_row *rows = xcalloc((size_t)n + 1, sizeof(*rows));

	for (i = 0; i < n; i++)
		rows[i] = (struct audit_row){pg_int8(o, i, 0), pg_text(o, i, 1), pg_text(o, i, 2), pg_text(o, i, 3),
					     pg_text(o, i, 4), pg_text(o, i, 5), pg_text(o, i, 6), (int)pg_int8(o, i, 7)};
	x->done(rows, (size_t)n, o, x->arg);
	free(rows);
	free(x);
}

void store_audit_list(struct store *s, int64_t before, int limit, store_audit_fn done, void *arg)
{
	struct audit_ctx *x = xcalloc(1, sizeof(*x));
	struct num b = num(before), l = num(limit);
	const char *params[2] = {b.s, l.s};

	x->done = done;
	x->arg = arg;
	pgpool_query(s->pool,
		     "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), key_name, action,"
		     " params::text, request_id, host, status FROM abilitysync.audit_log"
		     " WHERE $1::bigint = 0 OR id < $1::bigint ORDER BY id DESC LIMIT $2::int",
		     2, params, on_audit_rows, x);
}

struct count_ctx {
	store_count_fn done;
	void *arg;
};

static void on_count(const struct pg_outcome *o, void *arg)
{
	struct count_ctx *x = arg;

	x->done(o->res && PQntuples(o->res) == 1 ? atol(PQgetvalue(o->res, 0, 0)) : -1, o, x->arg);
	free(x);
}

/* Pending for at least $n ms (older_ms): changes that began later are someone else's. */
#define PENDING_FOR(n) " AND (pending_since IS NULL OR pending_since <= now() - " n "::bigint * interval '1 ms')"

/*
 * Changes about to be pushed, of one blob or all: pending and due within
 * `horizon_ms`, or leased (a push of them runs, or ran in a process that
 * died: the lease runs out, then the row is due). Rows waiting out a backoff
 * or a doubt window that ends later are not counted.
 */
void store_count_waiting(struct store *s, const char *blob, long horizon_ms, long older_ms, store_count_fn done,
			 void *arg)
{
	struct count_ctx *x = xcalloc(1, sizeof(*x));
	struct num horizon = num(horizon_ms), older = num(older_ms);
	const char *params[3] = {blob, horizon.s, older.s};

	x->done = done;
	x->arg = arg;
	pgpool_query(s->pool,
		     "SELECT count(*) FROM abilitysync.sync_state WHERE state IN ('pending', 'pending_delete')"
		     " AND (next_attempt_at <= now() + $2::bigint * interval '1 ms' OR lease_until IS NOT NULL)"
		     " AND ($1::text IS NULL OR blob_id = $1)" PENDING_FOR("$3"),
		     3, params, on_count, x);
}

struct lag_ctx {
	store_lag_fn done;
	void *arg;
};

static void on_lagging(const struct pg_outcome *o, void *arg)
{
	struct lag_ctx *x = arg;

	if (o->res && PQntuples(o->res) == 1)
		x->done(strtol(PQgetvalue(o->res, 0, 0), NULL, 10), PQgetvalue(o->res, 0, 1), o, x->arg);
	else
		x->done(-1, NULL, o, x->arg);
	free(x);
}

void store_count_lagging(struct store *s, const char *blob, const char *as_of, store_lag_fn done, void *arg)
{
	struct lag_ctx *x = xcalloc(1, sizeof(*x));
	const char *params[2] = {blob, as_of};

	x->done = done;
	x->arg = arg;
	pgpool_query(s->pool,
		     "SELECT count(*) FILTER (WHERE pending_since <= coalesce($2::timestamptz, now())),"
		     " coalesce($2::timestamptz, now())::text FROM abilitysync.sync_state"
		     " WHERE state IN ('pending', 'pending_delete') AND blob_id = $1",
		     2, params, on_lagging, x);
}

/* Changes not settled, of one blob or all: pending ones pending for older_ms at least, failed ones. */
void store_count_unsettled(struct store *s, const char *blob, bool every_failed, long older_ms,
			   store_count_fn done, void *arg)
{
	struct count_ctx *x = xcalloc(1, sizeof(*x));
	struct num older = num(older_ms);
	const char *params[3] = {blob, every_failed ? "t" : "f", older.s};

	x->done = done;
	x->arg = arg;
	pgpool_query(s->pool,
		     "SELECT count(*) FROM abilitysync.sync_state"
		     " WHERE ((state IN ('pending', 'pending_delete')" PENDING_FOR("$3") ")"
		     "  OR (state = 'failed' AND ($2::bool OR updated_at > now() - $3::bigint * interval '1 ms')))"
		     " AND ($1::text IS NULL OR blob_id = $1)",
		     3, params, on_count, x);
}

struct retry_ctx {
	store_retry_fn done;
	void *arg;
};

static void on_retried(const struct pg_outcome *o, void *arg)
{
	struct retry_ctx *x = arg;
	bool one = pg_rows(o) == 1;

	x->done(one ? pg_int8(o, 0, 0) : -1, one ? pg_int8(o, 0, 1) : -1, o, x->arg);
	free(x);
}

void store_sync_retry(struct store *s, const struct retry_selector *sel, store_retry_fn done, void *arg)
{
	struct retry_ctx *x = xcalloc(1, sizeof(*x));
	struct num older = num(sel->older_than_s);
	const char *params[5] = {sel->pending ? "pending" : "failed", sel->service, sel->error_contains,
				 sel->older_than_s >= 0 ? older.s : NULL, sel->dry_run ? "true" : "false"};

	x->done = done;
	x->arg = arg;
	pgpool_query(s->pool, retry_sql, 5, params, on_retried, x);
}

/* ---- a service's full set ------------------------------------------------------------ */

void store_stage(struct store *s, const char *set_id, int64_t ord, const struct ability *items, size_t n,
		 pg_done_fn done, void *arg)
{
	struct buf b[11];
	struct pg_array arr[11];
	struct pg_param params[13];
	struct num first = num(ord);
	size_t i, k;

	memset(b, 0, sizeof(b));
	for (k = 0; k < 11; k++) {
		pg_array_begin(&arr[k], &b[k], ability_oids[k]);
	}
	for (i = 0; i < n; i++)
		put_ability(arr, &items[i]);
	for (k = 0; k < 11; k++) {
		pg_array_end(&arr[k]);
		params[k] = pg_array_param(&b[k]);
	}
	params[11] = text_param(set_id);
	params[12] = text_param(first.s);
	pgpool_query_params(s->pool, stage_sql, 13, params, done, arg);
	for (k = 0; k < 11; k++)
		buf_free(&b[k]);
}

void store_stage_drop(struct store *s, const char *set_id, pg_done_fn done, void *arg)
{
	const char *params[1] = {set_id};

	pgpool_query(s->pool, "DELETE FROM abilitysync.fullset_stage WHERE set_id = $1", 1, params, done, arg);
}

struct set_ctx {
	struct store *s;
	char *set_id, *service;
	bool dry_run;
	int tries;
	store_set_fn done;
	void *arg;
};

static void send_set(struct set_ctx *x);

static enum set_action set_action_of(const char *text)
{
	static const char *const names[] = {"add", "update", "unchanged", "delete", "collision", "refused"};
	size_t i;

	for (i = 0; i < ARRAY_LEN(names); i++)
		if (strcmp(text, names[i]) == 0)
			return (enum set_action)i;
	return SET_REFUSED;
}

static void on_set(const struct pg_outcome *o, void *arg)
{
	struct set_ctx *x = arg;
	struct set_row *rows = NULL;
	int n = o->res ? PQntuples(o->res) : 0, i;
	bool race = !o->res && (strcmp(o->sqlstate, "23505") == 0 || strcmp(o->sqlstate, "40P01") == 0);

	if (race && ++x->tries < ALONE_RETRIES) {
		/* A write claimed one of its vectors meanwhile, or locked ledger entries crosswise: judge again. */
		log_info(COMP, "full set of %s: a concurrent write raced it (%s); judging it again", x->service,
			 o->sqlstate);
		send_set(x);
		return;
	}
	if (o->res) {
		rows = xcalloc(n ? (size_t)n : 1, sizeof(*rows));
		for (i = 0; i < n; i++)
			rows[i] = (struct set_row){PQgetvalue(o->res, i, 0), set_action_of(PQgetvalue(o->res, i, 1)),
						   PQgetvalue(o->res, i, 2)};
	}
	x->done(rows, (size_t)n, o, x->arg);
	free(rows);
	free(x->set_id);
	free(x->service);
	free(x);
}

static void send_set(struct set_ctx *x)
{
	const char *params[3] = {x->set_id, x->service, x->s->owner};

	pgpool_query(x->s->pool, x->dry_run ? set_plan_sql : set_apply_sql, x->dry_run ? 2 : 3, params, on_set, x);
}

void store_apply_set(struct store *s, const char *set_id, const char *service, bool dry_run, store_set_fn done,
		     void *arg)
{
	struct set_ctx *x = xcalloc(1, sizeof(*x));

	*x = (struct set_ctx){s, xstrdup(set_id), xstrdup(service), dry_run, 0, done, arg};
	send_set(x);
}

void store_count_migrations(struct pgpool *p, const char *ledger, const char *whens, store_count_fn done, void *arg)
{
	struct count_ctx *x = xcalloc(1, sizeof(*x));
	struct buf sql = BUF_INIT;
	const char *params[1] = {whens};

	x->done = done;
	x->arg = arg;
	if (whens)
		buf_printf(&sql, "SELECT count(DISTINCT created_at) FROM %s WHERE created_at = ANY($1::bigint[])", ledger);
	else
		buf_puts(&sql, "SELECT (to_regclass('abilitysync.sync_state') IS NOT NULL)::int");
	pgpool_query(p, sql.data, whens ? 1 : 0, params, on_count, x);
	buf_free(&sql);
}

struct store *store_new(struct pgpool *pool, const struct store_opts *o)
{
	struct store *s = xcalloc(1, sizeof(*s));

	s->pool = pool;
	s->o = *o;
	s->owner = xstrdup(o->owner ? o->owner : "abilitysync");
	s->o.owner = s->owner;
	TAILQ_INIT(&s->waiting);
	TAILQ_INIT(&s->flying);
	snprintf(s->lease, sizeof(s->lease), "%ld milliseconds", o->lease_ms);
	snprintf(s->quarantine, sizeof(s->quarantine), "%ld milliseconds", o->quarantine_ms);
	snprintf(s->attempts, sizeof(s->attempts), "%d", o->max_attempts);
	return s;
}

void store_free(struct store *s)
{
	struct write_req *r;
	struct pg_outcome o;

	if (!s)
		return;
	memset(&o, 0, sizeof(o));
	o.unavailable = true;
	snprintf(o.error, sizeof(o.error), "shutting down");
	while ((r = TAILQ_FIRST(&s->waiting)) != NULL) {
		TAILQ_REMOVE(&s->waiting, r, link);
		if (r->delete_id)
			r->ddone(NULL, &o, r->arg);
		else
			r->done(NULL, r->n, &o, r->arg);
		free(r->delete_id);
		free(r);
	}
	free(s->owner);
	free(s);
}
