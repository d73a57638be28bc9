// The original app's `abilities` table, column for column: the same definition
// as drizzle-compat/schema.ts (infraxa-api.md §3.1-3.3), in plain JavaScript so
// the peer runs on Node without a TypeScript step. The peer never migrates:
// `abilitysync migrate up` creates this table for both systems.
import {
  boolean,
  index,
  integer,
  jsonb,
  pgTable,
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
    embedding: jsonb("embedding").notNull(),
    dynamic_header_keys: jsonb("dynamic_header_keys").default([]),
    dynamic_headers_required: boolean("dynamic_headers_required").default(false),
    metadata: jsonb("metadata").default({}),
    created_at: timestamp("created_at").defaultNow(),
    updated_at: timestamp("updated_at").defaultNow(),
  },
  (t) => [
    index("idx_abilities_service_name").on(t.service_name),
    index("idx_abilities_dynamic_headers").on(t.dynamic_headers_required),
  ],
);
