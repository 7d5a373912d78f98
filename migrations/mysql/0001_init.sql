-- Initial schema (MySQL, MariaDB, OceanBase MySQL mode). {prefix} is "" or "<namespace>_".
-- DDL commits implicitly here, so every statement is idempotent (IF NOT EXISTS,
-- indexes inline): a version cut off half-way is simply applied again.
-- utf8mb4_bin throughout: names and keys compare byte for byte, never case-folded.
-- Widest index: UNIQUE(tenant, model, exact_key) = (64 + 128 + 64) * 4 = 1024 bytes < 3072.

CREATE TABLE IF NOT EXISTS {prefix}schema_migrations (
    version    INT NOT NULL PRIMARY KEY,
    applied_at DOUBLE NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {prefix}tenants (
    name       VARCHAR(64) NOT NULL PRIMARY KEY,
    config     TEXT NOT NULL,
    created_at DOUBLE NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {prefix}api_keys (
    id         CHAR(32) NOT NULL PRIMARY KEY,
    tenant     VARCHAR(64) NOT NULL,
    key_hash   CHAR(64) NOT NULL,
    created_at DOUBLE NOT NULL,
    revoked_at DOUBLE NULL,
    UNIQUE KEY uq_key_hash (key_hash),
    KEY ix_tenant (tenant)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {prefix}entries (
    id           CHAR(32) NOT NULL PRIMARY KEY,
    tenant       VARCHAR(64) NOT NULL,
    model        VARCHAR(128) NOT NULL,
    context_hash CHAR(64) NOT NULL,
    exact_key    CHAR(64) NOT NULL,
    question     MEDIUMTEXT NOT NULL,
    messages     MEDIUMTEXT NOT NULL,
    answer       LONGTEXT NOT NULL,
    metadata     TEXT NOT NULL,
    embed_model  VARCHAR(191) NOT NULL,
    created_at   DOUBLE NOT NULL,
    expires_at   DOUBLE NULL,
    last_hit_at  DOUBLE NOT NULL,
    hit_count    BIGINT NOT NULL DEFAULT 0,
    UNIQUE KEY uq_exact (tenant, model, exact_key),
    KEY ix_scope (tenant, model),
    KEY ix_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {prefix}query_log (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    ts         DOUBLE NOT NULL,
    tenant     VARCHAR(64) NOT NULL,
    model      VARCHAR(128) NOT NULL,
    match_kind VARCHAR(16) NOT NULL,
    similarity DOUBLE NULL,
    entry_id   CHAR(32) NULL,
    latency_ms DOUBLE NULL,
    error      VARCHAR(64) NULL,
    request_id VARCHAR(64) NULL,
    KEY ix_ts (ts),
    KEY ix_scope_ts (tenant, model, ts)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
