-- Custom migration (drizzle-kit generate --custom): what drizzle's schema
-- language cannot say.
--
-- abilitysync.blob_name(service_name): the blob holding a service's vectors,
-- exactly as the original application names it (and as vdb_blob_name() in
-- src/vdbid.c does): 'abilities_' + the service name with every character
-- outside [A-Za-z0-9_] replaced by '_', two for a character outside the Basic
-- Multilingual Plane (JavaScript replaces UTF-16 code units). SQL needs it to
-- know where a row written by someone else keeps its vector.
CREATE FUNCTION "abilitysync"."blob_name"(service_name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT 'abilities_' || regexp_replace(regexp_replace(service_name, '[^\x01-\uffff]', '__', 'g'), '[^a-zA-Z0-9_]', '_', 'g') $$;
--> statement-breakpoint
-- Rows the original application wrote have vectors no ledger entry tells of:
-- claim them now (in ability_id order, so of two ids with one vector_id in one
-- blob the smaller keeps it, as restore decides), so that a later write of
-- another ability with the same vector_id is refused, and a rewrite of the row
-- deletes the vector first.
INSERT INTO "abilitysync"."vector_ledger" ("blob_id", "vector_id", "ability_id")
SELECT "abilitysync"."blob_name"(a."service_name"), a."vector_id", a."ability_id"
FROM "public"."abilities" a
WHERE NOT EXISTS (SELECT 1 FROM "abilitysync"."vector_ledger" l WHERE l."ability_id" = a."ability_id")
ORDER BY a."ability_id"
ON CONFLICT ("blob_id", "vector_id") DO NOTHING;
