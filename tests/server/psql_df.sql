\echo == version/current_schema
SELECT version();
SELECT current_schema(), current_database(), current_user;
SHOW search_path;
SHOW server_version;
SHOW transaction_isolation;
\echo == catalog browsing
\dn
\dt pbmc.*
\d pbmc.obs
\l
\echo == information_schema
SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog','information_schema') ORDER BY 1,2;
\echo == session statements BI drivers send
SET extra_float_digits = 3;
SET DateStyle = 'ISO';
SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED;
DISCARD ALL;
DEALLOCATE ALL;
BEGIN; SELECT 1; COMMIT;
SET datafusion.execution.batch_size = 1024;
SHOW datafusion.execution.batch_size;
\echo == errors
SELECT * FROM nope;
SELEC 1;
SELECT 1/0;
SELECT 1;
\echo == data
SELECT bulk_labels, count(*), avg(n_counts) FROM pbmc.obs GROUP BY bulk_labels ORDER BY 1;
SELECT count(*) FROM pbmc.x;
