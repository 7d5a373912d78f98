-- Initial schema (SQLite). {prefix} is "" or "<namespace>_".
-- Index names are global in SQLite, so they carry the prefix too.

CREATE TABLE IF NOT EXISTS {prefix}schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS {prefix}tenants (
    name       TEXT PRIMARY KEY,
    config     TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS {prefix}api_keys (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
);

CREATE INDEX IF NOT EXISTS {prefix}api_keys_tenant ON {prefix}api_keys (tenant);

CREATE TABLE IF NOT EXISTS {prefix}entries (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    model        TEXT NOT NULL,
    context_hash TEXT NOT NULL,
    exact_key    TEXT NOT NULL,
    question     TEXT NOT NULL,
    messages     TEXT NOT NULL,
    answer       TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    embed_model  TEXT NOT NULL,
    created_at   REAL NOT NULL,
    expires_at   REAL,
    last_hit_at  REAL NOT NULL,
    hit_count    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant, model, exact_key)
);

CREATE INDEX IF NOT EXISTS {prefix}entries_scope ON {prefix}entries (tenant, model);

CREATE INDEX IF NOT EXISTS {prefix}entries_expires ON {prefix}entries (expires_at);

CREATE TABLE IF NOT EXISTS {prefix}query_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts         REAL NOT NULL,
    tenant     TEXT NOT NULL,
    model      TEXT NOT NULL,
    match_kind TEXT NOT NULL,
    similarity REAL,
    entry_id   TEXT,
    latency_ms REAL,
    error      TEXT,
    request_id TEXT
);

CREATE INDEX IF NOT EXISTS {prefix}query_log_ts ON {prefix}query_log (ts);

CREATE INDEX IF NOT EXISTS {prefix}query_log_scope_ts ON {prefix}query_log (tenant, model, ts);
