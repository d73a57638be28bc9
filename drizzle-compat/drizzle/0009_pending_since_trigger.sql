-- Custom SQL (drizzle-kit generate --custom): drizzle's schema has no triggers.
-- pending_since is when the vector DB began to lag an ability: set whenever its
-- sync state leaves synced or deleted (or is first written), kept through
-- retries and rewrites until it is settled again. Every statement that makes a
-- row pending gets it, including ones written later.
CREATE FUNCTION "abilitysync"."note_pending_since"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.state IN ('pending', 'pending_delete', 'failed')
     AND (TG_OP = 'INSERT' OR OLD.state IN ('synced', 'deleted') OR NEW.pending_since IS NULL) THEN
    NEW.pending_since := now();
  END IF;
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "sync_state_pending_since" BEFORE INSERT OR UPDATE OF "state" ON "abilitysync"."sync_state"
  FOR EACH ROW EXECUTE FUNCTION "abilitysync"."note_pending_since"();
--> statement-breakpoint
UPDATE "abilitysync"."sync_state" SET "pending_since" = "updated_at"
  WHERE "state" IN ('pending', 'pending_delete', 'failed');
