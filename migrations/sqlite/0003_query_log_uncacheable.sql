-- The class of the cacheability rule that refused a query ("" / NULL when none did).
-- One statement, transactional in SQLite.

ALTER TABLE {prefix}query_log ADD COLUMN uncacheable TEXT;
