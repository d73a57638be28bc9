CREATE TABLE "abilitysync"."audit_log" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"key_name" text,
	"action" text NOT NULL,
	"params" jsonb,
	"status" integer NOT NULL,
	"request_id" text NOT NULL,
	"host" text
);
--> statement-breakpoint
CREATE INDEX "audit_log_at_idx" ON "abilitysync"."audit_log" USING btree ("at");