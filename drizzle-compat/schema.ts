// The database abilitysync shares with the original application.
//
// `abilities` is the original app's table, column for column (reference:
// infraxa-api.md §3.1-3.3). Never add columns to it: the original app regenerates
// its migrations from its own copy of this table and would drop them.
//
// Everything abilitysync needs for itself lives in its own Postgres schema,
// `abilitysync`, described in ../schema/README.md.
import { sql } from "drizzle-orm";
import {
  bigint,
  bigserial,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgSchema,
  pgTable,
  primaryKey,
  text,
  timestamp,
} from "drizzle-orm/pg-core";

export const abilities = pgTable(
  "abilities",
  {
    ability_id: text("ability_id").primaryKey(),
    vector_id: integer("vector_id").notNull(),
    ability_name: text("ability_name").notNull(),
    service_name: text("service_name").notNull(),
    description: text("description").notNull(),
    embedding: jsonb("embedding").$type<number[]>().notNull(),
    dynamic_header_keys: jsonb("dynamic_header_keys").$type<string[]>().default([]),
    dynamic_headers_required: boolean("dynamic_headers_required").default(false),
    metadata: jsonb("metadata").$type<Record<string, unknown>>().default({}),
    created_at: timestamp("created_at").defaultNow(),
    updated_at: timestamp("updated_at").defaultNow(),
  },
  (t) => [
    index("idx_abilities_service_name").on(t.service_name),
    index("idx_abilities_dynamic_headers").on(t.dynamic_headers_required),
  ],
);

export const abilitysync = pgSchema("abilitysync");

const tstz = (name: string) => timestamp(name, { withTimezone: true });

// One row per ability ever registered: where its vector lives, the content hash of
// what the vector DB should hold, and where the push stands. `generation` grows
// on every content change so a push that raced with a newer write cannot mark it
// synced. `lease_until`/`lease_owner`: the replica pushing it right now (one push
// per ability at a time, across replicas); a lease that ends without being
// released may still have a request on the wire. `doubt_until`: an ambiguous
// vector DB call (timed out after sending, reset, 5xx) may still be applied
// until then; after it the vector is verified before the row can be synced.
export const syncState = abilitysync.table(
  "sync_state",
  {
    ability_id: text("ability_id").primaryKey(),
    blob_id: text("blob_id").notNull(),
    vector_id: integer("vector_id").notNull(),
    content_hash: text("content_hash").notNull(),
    state: text("state").notNull().default("pending"),
    generation: bigint("generation", { mode: "number" }).notNull().default(1),
    attempts: integer("attempts").notNull().default(0),
    next_attempt_at: tstz("next_attempt_at").notNull().defaultNow(),
    last_error: text("last_error"),
    synced_at: tstz("synced_at"),
    updated_at: tstz("updated_at").notNull().defaultNow(),
    lease_until: tstz("lease_until"),
    lease_owner: text("lease_owner"),
    doubt_until: tstz("doubt_until"),
    // Since when the vector DB lags this ability: set by a trigger (0009) when it
    // leaves synced or deleted for pending or pending_delete, kept until it is
    // settled again; what the acknowledged-to-synced latency is measured from.
    pending_since: tstz("pending_since"),
  },
  (t) => [
    check(
      "sync_state_state_check",
      sql`${t.state} IN ('pending', 'synced', 'pending_delete', 'deleted', 'failed')`,
    ),
    index("sync_state_due_idx")
      .on(t.next_attempt_at)
      .where(sql`${t.state} IN ('pending', 'pending_delete')`),
    index("sync_state_state_idx").on(t.state),
  ],
);

// Every (blob, vector id) abilitysync ever wrote or was about to write. The vector
// DB cannot be listed, so this is the only inventory of what it may hold: reconcile
// finds orphans here. The primary key turns a vector_id collision between two
// abilities into an error instead of two abilities sharing one vector.
export const vectorLedger = abilitysync.table(
  "vector_ledger",
  {
    blob_id: text("blob_id").notNull(),
    vector_id: integer("vector_id").notNull(),
    ability_id: text("ability_id").notNull(),
    first_written_at: tstz("first_written_at").notNull().defaultNow(),
    last_written_at: tstz("last_written_at").notNull().defaultNow(),
    deleted_at: tstz("deleted_at"),
  },
  (t) => [
    primaryKey({ name: "vector_ledger_pkey", columns: [t.blob_id, t.vector_id] }),
    index("vector_ledger_ability_idx").on(t.ability_id),
  ],
);

// Blobs abilitysync created itself (a create answered 2xx), and since when: a
// vector whose ledger entry was last written before `created_at` cannot be in
// the blob, so a restore into a blob it just created adds without deleting first.
// `creating_since` is set before the create is sent and becomes `created_at`
// once it succeeded; a crash in between leaves no epoch (deletes stay on).
export const vectorBlobs = abilitysync.table("blobs", {
  blob_id: text("blob_id").primaryKey(),
  creating_since: tstz("creating_since"),
  created_at: tstz("created_at"),
});

// One row per reconcile run (dry or real), with the report it produced.
export const reconcileRuns = abilitysync.table(
  "reconcile_runs",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    started_at: tstz("started_at").notNull().defaultNow(),
    finished_at: tstz("finished_at"),
    status: text("status").notNull().default("running"),
    dry_run: boolean("dry_run").notNull(),
    deep: boolean("deep").notNull().default(false),
    service_name: text("service_name"),
    report: jsonb("report"),
    repairs: integer("repairs").notNull().default(0),
    error: text("error"),
    host: text("host"),
    embedding_model: text("embedding_model"),
  },
  (t) => [
    check(
      "reconcile_runs_status_check",
      sql`${t.status} IN ('running', 'ok', 'failed', 'cancelled')`,
    ),
  ],
);

// A real reconcile run's share of the work, so that several processes (the
// replicas' periodic runs, `abilitysync reconcile`) check one run at once:
// part 0 is the ledger and the outbox, the others key ranges of the live rows
// (ability_id in (after_id, upto_id]). Each is taken under its advisory lock
// and, once checked, keeps its counts and samples in `report`; the process
// finishing the last part merges them into the run's report.
export const reconcileParts = abilitysync.table(
  "reconcile_parts",
  {
    run_id: bigint("run_id", { mode: "number" })
      .notNull()
      .references(() => reconcileRuns.id, { onDelete: "cascade" }),
    part: integer("part").notNull(),
    after_id: text("after_id"),
    upto_id: text("upto_id"),
    finished_at: tstz("finished_at"),
    report: jsonb("report"),
  },
  (t) => [primaryKey({ columns: [t.run_id, t.part] })],
);

// One row per restore of the vector DB from Postgres. `cursor` is the last
// ability_id (in key order) whose vector the vector DB confirmed; --resume starts
// after it.
export const restoreJobs = abilitysync.table(
  "restore_jobs",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    status: text("status").notNull().default("running"),
    service_name: text("service_name"),
    dry_run: boolean("dry_run").notNull().default(false),
    total: bigint("total", { mode: "number" }).notNull().default(0),
    done: bigint("done", { mode: "number" }).notNull().default(0),
    failed: bigint("failed", { mode: "number" }).notNull().default(0),
    cursor: text("cursor"),
    error: text("error"),
    host: text("host"),
    started_at: tstz("started_at").notNull().defaultNow(),
    updated_at: tstz("updated_at").notNull().defaultNow(),
    finished_at: tstz("finished_at"),
  },
  (t) => [
    check(
      "restore_jobs_status_check",
      sql`${t.status} IN ('running', 'done', 'failed', 'interrupted', 'cancelled')`,
    ),
  ],
);

// A restore job's key ranges (ability_id in (after_id, upto_id]), so that
// several processes restore one job at once: each works on the parts whose
// advisory lock it holds, resumes a part after its cursor, and the job is done
// when every part has finished_at.
export const restoreParts = abilitysync.table(
  "restore_parts",
  {
    job_id: bigint("job_id", { mode: "number" })
      .notNull()
      .references(() => restoreJobs.id, { onDelete: "cascade" }),
    part: integer("part").notNull(),
    after_id: text("after_id"),
    upto_id: text("upto_id"),
    cursor: text("cursor"),
    done: bigint("done", { mode: "number" }).notNull().default(0),
    failed: bigint("failed", { mode: "number" }).notNull().default(0),
    finished_at: tstz("finished_at"),
  },
  (t) => [primaryKey({ columns: [t.job_id, t.part] })],
);

// Who did what to many abilities at once: every admin action (a restore
// started, ...) with the key's name (never the key), kept AUDIT_RETENTION_DAYS.
export const auditLog = abilitysync.table(
  "audit_log",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    at: tstz("at").notNull().defaultNow(),
    key_name: text("key_name"),
    action: text("action").notNull(),
    params: jsonb("params"),
    status: integer("status").notNull(),
    request_id: text("request_id").notNull(),
    host: text("host"),
  },
  (t) => [index("audit_log_at_idx").on(t.at)],
);


// The outbox paused for every replica (POST /v1/sync/pause, e.g. during a
// vector DB maintenance window): at most one row; none while the outbox runs.
export const syncPause = abilitysync.table(
  "sync_pause",
  {
    id: integer("id").primaryKey().default(1),
    paused_at: tstz("paused_at").notNull().defaultNow(),
    key_name: text("key_name"),
    reason: text("reason"),
    request_id: text("request_id"),
    host: text("host"),
  },
  (t) => [check("sync_pause_one_row", sql`${t.id} = 1`)],
);

// A service's full set (PUT /v1/services/{service}/abilities) on its way in:
// staged in groups while the request body is read, then planned or applied by
// one statement (which removes the set's rows). A set left behind by a replica
// that died mid-way goes with the next set staged a day later.
export const fullsetStage = abilitysync.table(
  "fullset_stage",
  {
    set_id: text("set_id").notNull(),
    ord: bigint("ord", { mode: "number" }).notNull(),
    ability_id: text("ability_id").notNull(),
    vector_id: integer("vector_id").notNull(),
    ability_name: text("ability_name").notNull(),
    service_name: text("service_name").notNull(),
    description: text("description").notNull(),
    embedding: text("embedding").notNull(),
    metadata: text("metadata").notNull(),
    dynamic_header_keys: text("dynamic_header_keys").notNull(),
    dynamic_headers_required: boolean("dynamic_headers_required").notNull(),
    blob_id: text("blob_id").notNull(),
    content_hash: text("content_hash").notNull(),
    staged_at: tstz("staged_at").notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.set_id, t.ord] }), index("fullset_stage_staged_at_idx").on(t.staged_at)],
);
