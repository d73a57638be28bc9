-- a comment; with a semicolon
/* outer /* nested VACUUM */ still; COMMIT */ select 1;
select 2;
ALTER SYSTEM SET work_mem = '1MB'; START TRANSACTION; REFRESH MATERIALIZED VIEW CONCURRENTLY mv;