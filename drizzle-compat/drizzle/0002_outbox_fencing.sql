CREATE TABLE "abilitysync"."blobs" (
	"blob_id" text PRIMARY KEY NOT NULL,
	"creating_since" timestamp with time zone,
	"created_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "abilitysync"."sync_state" ADD COLUMN "lease_until" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "abilitysync"."sync_state" ADD COLUMN "lease_owner" text;--> statement-breakpoint
ALTER TABLE "abilitysync"."sync_state" ADD COLUMN "doubt_until" timestamp with time zone;