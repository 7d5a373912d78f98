-- Learning from feedback (MySQL, MariaDB, OceanBase MySQL mode). {prefix} is "" or "<namespace>_".
-- feedback: observations of an entry (the similarity it was served or verified at, and whether its answer
-- was wrong there), the newest 64 per entry kept. entry_learning: an entry's similarity floor (it serves
-- nothing at or below it). pending_verify: the similarity a verification miss was answered at, until the
-- product writes back. All three are deleted with their entry. Idempotent statements (DDL commits here).

CREATE TABLE IF NOT EXISTS {prefix}feedback (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    entry_id   CHAR(32) NOT NULL,
    tenant     VARCHAR(64) NOT NULL,
    similarity DOUBLE NOT NULL,
    wrong      TINYINT NOT NULL,
    source     VARCHAR(16) NOT NULL,
    exact_key  CHAR(64) NOT NULL,
    ts         DOUBLE NOT NULL,
    KEY ix_entry (entry_id, id),
    KEY ix_tenant (tenant, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {prefix}entry_learning (
    entry_id   CHAR(32) NOT NULL PRIMARY KEY,
    tenant     VARCHAR(64) NOT NULL,
    floor      DOUBLE NOT NULL,
    updated_at DOUBLE NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {prefix}pending_verify (
    entry_id   CHAR(32) NOT NULL,
    exact_key  CHAR(64) NOT NULL,
    tenant     VARCHAR(64) NOT NULL,
    similarity DOUBLE NOT NULL,
    created_at DOUBLE NOT NULL,
    PRIMARY KEY (entry_id, exact_key),
    KEY ix_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
