CREATE TABLE "abilitysync"."reconcile_parts" (
	"run_id" bigint NOT NULL,
	"part" integer NOT NULL,
	"after_id" text,
	"upto_id" text,
	"finished_at" timestamp with time zone,
	"report" jsonb,
	CONSTRAINT "reconcile_parts_run_id_part_pk" PRIMARY KEY("run_id","part")
);
--> statement-breakpoint
ALTER TABLE "abilitysync"."reconcile_runs" ADD COLUMN "embedding_model" text;--> statement-breakpoint
ALTER TABLE "abilitysync"."reconcile_parts" ADD CONSTRAINT "reconcile_parts_run_id_reconcile_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "abilitysync"."reconcile_runs"("id") ON DELETE cascade ON UPDATE no action;