CREATE TABLE "abilitysync"."sync_pause" (
	"id" integer PRIMARY KEY DEFAULT 1 NOT NULL,
	"paused_at" timestamp with time zone DEFAULT now() NOT NULL,
	"key_name" text,
	"reason" text,
	"request_id" text,
	"host" text,
	CONSTRAINT "sync_pause_one_row" CHECK ("abilitysync"."sync_pause"."id" = 1)
);
