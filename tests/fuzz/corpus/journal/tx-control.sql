insert into t values (1); COMMIT;
--> statement-breakpoint
SAVEPOINT a; ROLLBACK TO SAVEPOINT a; RELEASE a; ROLLBACK;