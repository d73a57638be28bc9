CREATE TABLE "abilities" (
	"ability_id" text PRIMARY KEY NOT NULL,
	"vector_id" integer,
	"ability_name" text NOT NULL,
	"service_name" text NOT NULL,
	"description" text NOT NULL,
	"embedding" jsonb,
	"dynamic_header_keys" jsonb DEFAULT '[]'::jsonb,
	"dynamic_headers_required" boolean DEFAULT false,
	"metadata" jsonb DEFAULT '{}'::jsonb,
	"created_at" timestamp DEFAULT now(),
	"updated_at" timestamp DEFAULT now()
);
--> statement-breakpoint
CREATE INDEX "idx_abilities_service_name" ON "abilities" USING btree ("service_name");--> statement-breakpoint
CREATE INDEX "idx_abilities_dynamic_headers" ON "abilities" USING btree ("dynamic_headers_required");