CREATE TABLE t (a int);
--> statement-breakpoint
CREATE INDEX CONCURRENTLY i ON t (a);
--> statement-breakpoint
create unique index concurrently if not exists j on t(a)