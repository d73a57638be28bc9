CREATE TABLE "abilitysync"."restore_parts" (
	"job_id" bigint NOT NULL,
	"part" integer NOT NULL,
	"after_id" text,
	"upto_id" text,
	"cursor" text,
	"done" bigint DEFAULT 0 NOT NULL,
	"failed" bigint DEFAULT 0 NOT NULL,
	"finished_at" timestamp with time zone,
	CONSTRAINT "restore_parts_job_id_part_pk" PRIMARY KEY("job_id","part")
);
--> statement-breakpoint
ALTER TABLE "abilitysync"."restore_parts" ADD CONSTRAINT "restore_parts_job_id_restore_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "abilitysync"."restore_jobs"("id") ON DELETE cascade ON UPDATE no action;