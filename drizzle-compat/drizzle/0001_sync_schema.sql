CREATE SCHEMA "abilitysync";
--> statement-breakpoint
CREATE TABLE "abilitysync"."reconcile_runs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone,
	"status" text DEFAULT 'running' NOT NULL,
	"dry_run" boolean NOT NULL,
	"deep" boolean DEFAULT false NOT NULL,
	"service_name" text,
	"report" jsonb,
	"repairs" integer DEFAULT 0 NOT NULL,
	"error" text,
	"host" text,
	CONSTRAINT "reconcile_runs_status_check" CHECK ("abilitysync"."reconcile_runs"."status" IN ('running', 'ok', 'failed'))
);
--> statement-breakpoint
CREATE TABLE "abilitysync"."restore_jobs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"status" text DEFAULT 'running' NOT NULL,
	"service_name" text,
	"dry_run" boolean DEFAULT false NOT NULL,
	"total" bigint DEFAULT 0 NOT NULL,
	"done" bigint DEFAULT 0 NOT NULL,
	"failed" bigint DEFAULT 0 NOT NULL,
	"cursor" text,
	"error" text,
	"host" text,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone,
	CONSTRAINT "restore_jobs_status_check" CHECK ("abilitysync"."restore_jobs"."status" IN ('running', 'done', 'failed', 'interrupted'))
);
--> statement-breakpoint
CREATE TABLE "abilitysync"."sync_state" (
	"ability_id" text PRIMARY KEY NOT NULL,
	"blob_id" text NOT NULL,
	"vector_id" integer NOT NULL,
	"content_hash" text NOT NULL,
	"state" text DEFAULT 'pending' NOT NULL,
	"generation" bigint DEFAULT 1 NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_error" text,
	"synced_at" timestamp with time zone,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "sync_state_state_check" CHECK ("abilitysync"."sync_state"."state" IN ('pending', 'synced', 'pending_delete', 'deleted', 'failed'))
);
--> statement-breakpoint
CREATE TABLE "abilitysync"."vector_ledger" (
	"blob_id" text NOT NULL,
	"vector_id" integer NOT NULL,
	"ability_id" text NOT NULL,
	"first_written_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_written_at" timestamp with time zone DEFAULT now() NOT NULL,
	"deleted_at" timestamp with time zone,
	CONSTRAINT "vector_ledger_pkey" PRIMARY KEY("blob_id","vector_id")
);
--> statement-breakpoint
CREATE INDEX "sync_state_due_idx" ON "abilitysync"."sync_state" USING btree ("next_attempt_at") WHERE "abilitysync"."sync_state"."state" IN ('pending', 'pending_delete');--> statement-breakpoint
CREATE INDEX "sync_state_state_idx" ON "abilitysync"."sync_state" USING btree ("state");--> statement-breakpoint
CREATE INDEX "vector_ledger_ability_idx" ON "abilitysync"."vector_ledger" USING btree ("ability_id");