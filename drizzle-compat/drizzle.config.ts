// drizzle-kit configuration for the abilitysync migrations.
//
// `npx drizzle-kit generate` diffs schema.ts against the newest snapshot in
// drizzle/meta and writes the next migration; abilitysync applies the same folder
// (`abilitysync migrate`) and records it in drizzle's own ledger, so
// `npx drizzle-kit migrate` and `abilitysync migrate` can take turns on one database.
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./schema.ts",
  out: "./drizzle",
  dbCredentials: {
    url: process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/reverse_engineer",
  },
  // The ledger abilitysync reads and writes; these are drizzle's defaults and
  // abilitysync's (MIGRATIONS_SCHEMA / MIGRATIONS_TABLE).
  migrations: {
    schema: "drizzle",
    table: "__drizzle_migrations",
  },
});
