-- Learning from feedback (SQLite). {prefix} is "" or "<namespace>_".
-- feedback: observations of an entry (the similarity it was served or verified at, and whether its answer
-- was wrong there), the newest 64 per entry kept. entry_learning: an entry's similarity floor (it serves
-- nothing at or below it). pending_verify: the similarity a verification miss was answered at, until the
-- product writes back. All three are deleted with their entry.

CREATE TABLE IF NOT EXISTS {prefix}feedback (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id   TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    similarity REAL NOT NULL,
    wrong      INTEGER NOT NULL,
    source     TEXT NOT NULL,
    exact_key  TEXT NOT NULL,
    ts         REAL NOT NULL
);

CREATE INDEX IF NOT EXISTS {prefix}feedback_entry ON {prefix}feedback (entry_id, id);

CREATE INDEX IF NOT EXISTS {prefix}feedback_tenant ON {prefix}feedback (tenant, id);

CREATE TABLE IF NOT EXISTS {prefix}entry_learning (
    entry_id   TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    floor      REAL NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS {prefix}pending_verify (
    entry_id   TEXT NOT NULL,
    exact_key  TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    similarity REAL NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (entry_id, exact_key)
);

CREATE INDEX IF NOT EXISTS {prefix}pending_verify_created ON {prefix}pending_verify (created_at);
