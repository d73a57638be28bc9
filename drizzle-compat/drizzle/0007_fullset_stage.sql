CREATE TABLE "abilitysync"."fullset_stage" (
	"set_id" text NOT NULL,
	"ord" bigint NOT NULL,
	"ability_id" text NOT NULL,
	"vector_id" integer NOT NULL,
	"ability_name" text NOT NULL,
	"service_name" text NOT NULL,
	"description" text NOT NULL,
	"embedding" text NOT NULL,
	"metadata" text NOT NULL,
	"dynamic_header_keys" text NOT NULL,
	"dynamic_headers_required" boolean NOT NULL,
	"blob_id" text NOT NULL,
	"content_hash" text NOT NULL,
	"staged_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "fullset_stage_set_id_ord_pk" PRIMARY KEY("set_id","ord")
);
--> statement-breakpoint
CREATE INDEX "fullset_stage_staged_at_idx" ON "abilitysync"."fullset_stage" USING btree ("staged_at");