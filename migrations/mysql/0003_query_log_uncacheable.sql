-- The class of the cacheability rule that refused a query (NULL when none did).
-- Plain ADD COLUMN (MySQL 8 has no ADD COLUMN IF NOT EXISTS): if the version was cut off after
-- the ALTER, the rerun's "duplicate column" error is taken as done (MySQLScalarStore.migrate).

ALTER TABLE {prefix}query_log ADD COLUMN uncacheable VARCHAR(40) NULL;
