"""The scalar store written once for both SQL dialects.

``SQLScalarStore`` holds every query of the ``ScalarStore`` protocol. A
dialect store (SQLite, MySQL) supplies only connections, transactions, error
translation and the migration lock, through ``_read`` and ``_write``.

Every value travels as a driver parameter. The only text formatted into SQL
is the table prefix (validated in ``migrations.table_prefix``), the number of
placeholders of an IN list, and fixed fragments chosen from this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..records import ApiKeyRecord, EntryRow, EvictionPolicy, Tenant, TenantConfig
from ..errors import AlreadyExists
from ..records import policy_from_dict, policy_to_dict
from .learning_sql import LEARNING_TABLES, LearningQueries
from .migrations import Migration, table_prefix

T = TypeVar("T")

# Below SQLite's oldest variable limit (999), and keeps MySQL statements small.
IN_CHUNK = 500

ENTRY_COLUMNS = (
    "id, tenant, model, context_hash, exact_key, question, messages, answer, metadata, "
    "embed_model, created_at, expires_at, last_hit_at, hit_count"
)
# What an upsert replaces on an existing (tenant, model, exact_key); the id stays.
UPSERT_REPLACES = ("answer", "metadata", "messages", "expires_at")
LIVE = "(expires_at IS NULL OR expires_at > ?)"
EVICTION_ORDER = {
    EvictionPolicy.LRU: "last_hit_at, id",
    EvictionPolicy.LFU: "hit_count, last_hit_at, id",
    EvictionPolicy.FIFO: "created_at, id",
}


class Cursor(Protocol):
    """What both sqlite3 and pymysql cursors offer."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str  # also the migrations folder
    param: str  # the driver's placeholder
    greatest: str  # two-argument maximum
    upsert_tail: str  # what follows INSERT ... VALUES (...) to update on the unique key
    for_update: str  # row lock for read-then-write inside a transaction
    table_exists: str  # one row when table `?` exists


SQLITE = Dialect(
    name="sqlite",
    param="?",
    greatest="MAX",
    upsert_tail="ON CONFLICT (tenant, model, exact_key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in UPSERT_REPLACES),
    for_update="",
    table_exists="SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
)
MYSQL = Dialect(
    name="mysql",
    param="%s",
    # VALUES(col), not the 8.0 row alias: MariaDB and OceanBase know only this form.
    greatest="GREATEST",
    upsert_tail="ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in UPSERT_REPLACES),
    for_update=" FOR UPDATE",
    table_exists="SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
)


# -- conversions ---------------------------------------------------------------------
# sqlite3 and pymysql disagree on types (float vs Decimal, str vs bytes): normalise here.


def _str(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return str(value)


def _float(value: Any) -> float:
    return float(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int:
    return int(value)  # also takes pymysql's Decimal (SUM, some COUNT paths)


def config_to_json(config: TenantConfig) -> str:
    return json.dumps(
        {
            "similarity_threshold": config.similarity_threshold,
            "ttl_seconds": config.ttl_seconds,
            "max_entries": config.max_entries,
            "eviction_policy": config.eviction_policy.value,
            "embedding_model": config.embedding_model,
            "max_error_rate": config.max_error_rate,
            "verify_rate": config.verify_rate,
            "verifier": config.verifier,
            "verifier_cutoff": config.verifier_cutoff,
            "cross_language": config.cross_language,
            "cacheability": policy_to_dict(config.cacheability),
        },
        sort_keys=True,
        ensure_ascii=False,
    )


def config_from_json(text: Any) -> TenantConfig:
    """Missing keys take defaults and unknown keys are ignored, so a config
    written by a newer or older release still reads."""
    data = json.loads(_str(text)) if text else {}
    default = TenantConfig()
    threshold = data.get("similarity_threshold")
    max_error_rate = data.get("max_error_rate")
    return TenantConfig(
        similarity_threshold=None if threshold is None else float(threshold),
        ttl_seconds=int(data.get("ttl_seconds", default.ttl_seconds)),
        max_entries=int(data.get("max_entries", default.max_entries)),
        eviction_policy=EvictionPolicy(data.get("eviction_policy", default.eviction_policy.value)),
        embedding_model=str(data.get("embedding_model", default.embedding_model)),
        max_error_rate=None if max_error_rate is None else float(max_error_rate),
        verify_rate=float(data.get("verify_rate", default.verify_rate)),
        cacheability=policy_from_dict(data.get("cacheability")),
        verifier=None if data.get("verifier") is None else bool(data["verifier"]),
        verifier_cutoff=None if data.get("verifier_cutoff") is None else float(data["verifier_cutoff"]),
        cross_language=bool(data.get("cross_language", default.cross_language)),
    )


def entry_params(row: EntryRow) -> tuple[Any, ...]:
    """Parameters in ENTRY_COLUMNS order."""
    return (
        row.id,
        row.tenant,
        row.model,
        row.context_hash,
        row.exact_key,
        row.question,
        row.messages_json,
        row.answer,
        row.metadata_json,
        row.embed_model,
        float(row.created_at),
        None if row.expires_at is None else float(row.expires_at),
        float(row.last_hit_at),
        int(row.hit_count),
    )


def entry_from_row(r: Sequence[Any]) -> EntryRow:
    """A row selected as ENTRY_COLUMNS."""
    return EntryRow(
        id=_str(r[0]),
        tenant=_str(r[1]),
        model=_str(r[2]),
        context_hash=_str(r[3]),
        exact_key=_str(r[4]),
        question=_str(r[5]),
        messages_json=_str(r[6]),
        answer=_str(r[7]),
        metadata_json=_str(r[8]),
        embed_model=_str(r[9]),
        created_at=_float(r[10]),
        expires_at=_opt_float(r[11]),
        last_hit_at=_float(r[12]),
        hit_count=_int(r[13]),
    )


def tenant_from_row(r: Sequence[Any]) -> Tenant:
    """A row selected as name, config, created_at."""
    return Tenant(name=_str(r[0]), config=config_from_json(r[1]), created_at=_float(r[2]))


def api_key_from_row(r: Sequence[Any]) -> ApiKeyRecord:
    """A row selected as id, tenant, key_hash, created_at, revoked_at."""
    return ApiKeyRecord(
        id=_str(r[0]), tenant=_str(r[1]), key_hash=_str(r[2]), created_at=_float(r[3]), revoked_at=_opt_float(r[4])
    )


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def unique(items: Iterable[T]) -> list[T]:
    """Order kept, duplicates dropped."""
    return list(dict.fromkeys(items))


# -- the store -------------------------------------------------------------------------


class SQLScalarStore(LearningQueries):
    """Every ScalarStore query; subclasses provide _read, _write, migrate, ping, close."""

    dialect: Dialect
    # The driver's IntegrityError: it passes _read/_write untranslated.
    integrity_error: type[Exception]

    def __init__(self, namespace: str) -> None:
        self._prefix = table_prefix(namespace)
        names = ("schema_migrations", "tenants", "api_keys", "entries", "query_log", *LEARNING_TABLES)
        self._tables = {name: self._prefix + name for name in names}

    # -- hooks --------------------------------------------------------------------------
    def _read(self, fn: Callable[[Cursor], T]) -> T:
        """Run fn on a cursor outside any explicit transaction."""
        raise NotImplementedError

    def _write(self, fn: Callable[[Cursor], T]) -> T:
        """Run fn in one transaction: committed if it returns, rolled back if it raises."""
        raise NotImplementedError

    # -- SQL text ---------------------------------------------------------------------
    def _q(self, template: str, n: int = 0) -> str:
        """Template with {entries}-style table names, `?` parameters and {ids}: an IN list of n."""
        ids = "(" + ", ".join("?" * n) + ")" if n else ""
        return template.format(ids=ids, **self._tables).replace("?", self.dialect.param)

    # -- migrations ---------------------------------------------------------------------
    def _applied_versions(self, cur: Cursor) -> set[int]:
        cur.execute(self._q(self.dialect.table_exists), (self._tables["schema_migrations"],))
        if cur.fetchone() is None:
            return set()
        cur.execute(self._q("SELECT version FROM {schema_migrations}"))
        return {_int(r[0]) for r in cur.fetchall()}

    def _apply_if_pending(self, cur: Cursor, migration: Migration) -> bool:
        """Inside the caller's transaction and lock: apply one version unless recorded."""
        if migration.version in self._applied_versions(cur):
            return False
        for statement in migration.statements:
            self._migration_statement(cur, statement)
        cur.execute(
            self._q("INSERT INTO {schema_migrations} (version, applied_at) VALUES (?, ?)"),
            (migration.version, time.time()),
        )
        return True

    def _migration_statement(self, cur: Cursor, statement: str) -> None:
        cur.execute(statement)

    # -- tenants ------------------------------------------------------------------------
    def create_tenant(self, name: str, config: TenantConfig, created_at: float) -> Tenant:
        sql = self._q("INSERT INTO {tenants} (name, config, created_at) VALUES (?, ?, ?)")
        try:
            self._write(lambda cur: cur.execute(sql, (name, config_to_json(config), float(created_at))))
        except self.integrity_error as exc:
            raise AlreadyExists(f"tenant {name!r} already exists") from exc
        return Tenant(name=name, config=config, created_at=float(created_at))

    def _select_tenant(self, cur: Cursor, name: str) -> Tenant | None:
        cur.execute(self._q("SELECT name, config, created_at FROM {tenants} WHERE name = ?"), (name,))
        row = cur.fetchone()
        return None if row is None else tenant_from_row(row)

    def get_tenant(self, name: str) -> Tenant | None:
        return self._read(lambda cur: self._select_tenant(cur, name))

    def list_tenants(self) -> list[Tenant]:
        def op(cur: Cursor) -> list[Tenant]:
            cur.execute(self._q("SELECT name, config, created_at FROM {tenants} ORDER BY name"))
            return [tenant_from_row(r) for r in cur.fetchall()]

        return self._read(op)

    def update_tenant(self, name: str, config: TenantConfig) -> Tenant | None:
        def op(cur: Cursor) -> Tenant | None:
            # Read back rather than trust rowcount: MySQL counts an unchanged row as 0.
            cur.execute(self._q("UPDATE {tenants} SET config = ? WHERE name = ?"), (config_to_json(config), name))
            return self._select_tenant(cur, name)

        return self._write(op)

    def delete_tenant(self, name: str) -> bool:
        def op(cur: Cursor) -> bool:
            cur.execute(self._q("DELETE FROM {api_keys} WHERE tenant = ?"), (name,))
            cur.execute(self._q("DELETE FROM {tenants} WHERE name = ?"), (name,))
            return cur.rowcount > 0

        return self._write(op)

    # -- entries ------------------------------------------------------------------------
    def upsert_entries(self, rows: Sequence[EntryRow]) -> list[tuple[str, bool]]:
        if not rows:
            return []
        upsert = self._q(
            f"INSERT INTO {{entries}} ({ENTRY_COLUMNS}) VALUES ({', '.join('?' * 14)}) {self.dialect.upsert_tail}"
        )

        def op(cur: Cursor) -> list[tuple[str, bool]]:
            self._forget_changed_answers(cur, rows)
            cur.executemany(upsert, [entry_params(r) for r in rows])
            # The stored id of each key, whichever row won; a row is created when its own id won.
            stored: dict[tuple[str, str, str], str] = {}
            scopes: dict[tuple[str, str], list[str]] = {}
            for r in rows:
                scopes.setdefault((r.tenant, r.model), []).append(r.exact_key)
            for (tenant, model), keys in scopes.items():
                for part in chunks(unique(keys)):
                    cur.execute(
                        self._q(
                            "SELECT exact_key, id FROM {entries} WHERE tenant = ? AND model = ? AND exact_key IN {ids}",
                            len(part),
                        ),
                        (tenant, model, *part),
                    )
                    for key, entry_id in cur.fetchall():
                        stored[(tenant, model, _str(key))] = _str(entry_id)
            out: list[tuple[str, bool]] = []
            for r in rows:
                entry_id = stored[(r.tenant, r.model, r.exact_key)]
                out.append((entry_id, entry_id == r.id))
            return out

        return self._write(op)

    def _forget_changed_answers(self, cur: Cursor, rows: Sequence[EntryRow]) -> None:
        """What was learned about an entry's answer does not carry over to a new answer of it."""
        answers = {(r.tenant, r.model, r.exact_key): r.answer for r in rows}
        scopes: dict[tuple[str, str], list[str]] = {}
        for tenant, model, key in answers:
            scopes.setdefault((tenant, model), []).append(key)
        changed: list[str] = []
        for (tenant, model), keys in scopes.items():
            for part in chunks(keys):
                cur.execute(
                    self._q("SELECT id, exact_key, answer FROM {entries} WHERE tenant = ? AND model = ? "
                            "AND exact_key IN {ids}", len(part)),
                    (tenant, model, *part),
                )
                changed.extend(_str(i) for i, k, a in cur.fetchall() if _str(a) != answers[(tenant, model, _str(k))])
        if changed:
            self.forget_learning(cur, changed)

    def get_by_exact_key(self, tenant: str, model: str, exact_key: str, now: float) -> EntryRow | None:
        sql = self._q(
            f"SELECT {ENTRY_COLUMNS} FROM {{entries}} WHERE tenant = ? AND model = ? AND exact_key = ? AND {LIVE}"
        )

        def op(cur: Cursor) -> EntryRow | None:
            cur.execute(sql, (tenant, model, exact_key, float(now)))
            row = cur.fetchone()
            return None if row is None else entry_from_row(row)

        return self._read(op)

    def get_entries(self, ids: Sequence[str], now: float) -> dict[str, EntryRow]:
        wanted = unique(ids)
        if not wanted:
            return {}

        def op(cur: Cursor) -> dict[str, EntryRow]:
            out: dict[str, EntryRow] = {}
            for part in chunks(wanted):
                cur.execute(
                    self._q(f"SELECT {ENTRY_COLUMNS} FROM {{entries}} WHERE id IN {{ids}} AND {LIVE}", len(part)),
                    (*part, float(now)),
                )
                for r in cur.fetchall():
                    entry = entry_from_row(r)
                    out[entry.id] = entry
            return out

        return self._read(op)

    def delete_entries(self, tenant: str, model: str, ids: Sequence[str]) -> list[str]:
        wanted = unique(ids)
        if not wanted:
            return []

        def op(cur: Cursor) -> list[str]:
            found: set[str] = set()
            for part in chunks(wanted):
                where = self._q("WHERE tenant = ? AND model = ? AND id IN {ids}", len(part))
                params = (tenant, model, *part)
                cur.execute(self._q("SELECT id FROM {entries} ") + where + self.dialect.for_update, params)
                found.update(_str(r[0]) for r in cur.fetchall())
                cur.execute(self._q("DELETE FROM {entries} ") + where, params)
            deleted = [i for i in wanted if i in found]
            self.forget_learning(cur, deleted)
            return deleted

        return self._write(op)

    @staticmethod
    def _scope(tenant: str, model: str | None) -> tuple[str, tuple[str, ...]]:
        """WHERE condition and parameters of a tenant, or of one model of it."""
        if model is None:
            return "tenant = ?", (tenant,)
        return "tenant = ? AND model = ?", (tenant, model)

    CLEAR_CHUNK = 5000

    def clear(self, tenant: str, model: str | None) -> int:
        """Delete a scope in chunks, each its own transaction: one huge DELETE would
        outlive the store timeout and roll back whole (measured on MariaDB: ~15k rows/s)."""
        where, params = self._scope(tenant, model)
        select = self._q("SELECT id FROM {entries} WHERE " + where + " LIMIT ?")
        total = 0
        while True:
            ids = self._read(lambda cur: (cur.execute(select, (*params, self.CLEAR_CHUNK)), cur.fetchall())[1])
            if not ids:
                return total
            total += self.delete_ids([_str(r[0]) for r in ids])

    def count_entries(self, tenant: str, model: str | None = None) -> int:
        where, params = self._scope(tenant, model)
        sql = self._q("SELECT COUNT(*) FROM {entries} WHERE " + where)

        def op(cur: Cursor) -> int:
            cur.execute(sql, params)
            return _int(cur.fetchone()[0])

        return self._read(op)

    def count_by_tenant(self) -> dict[str, int]:
        def op(cur: Cursor) -> dict[str, int]:
            cur.execute(self._q("SELECT tenant, COUNT(*) FROM {entries} GROUP BY tenant"))
            return {_str(t): _int(n) for t, n in cur.fetchall()}

        return self._read(op)

    def record_hits(self, hits: Sequence[tuple[str, float]]) -> None:
        if not hits:
            return
        merged: dict[str, tuple[int, float]] = {}
        for entry_id, ts in hits:
            count, latest = merged.get(entry_id, (0, float("-inf")))
            merged[entry_id] = (count + 1, max(latest, float(ts)))
        # Sorted by id so concurrent flushes lock rows in the same order (no deadlock).
        params = [(count, latest, entry_id) for entry_id, (count, latest) in sorted(merged.items())]
        sql = self._q(
            "UPDATE {entries} SET hit_count = hit_count + ?, "
            f"last_hit_at = {self.dialect.greatest}(last_hit_at, ?) WHERE id = ?"
        )
        self._write(lambda cur: cur.executemany(sql, params))

    def expired(self, now: float, limit: int) -> list[tuple[str, str, str]]:
        if limit <= 0:
            return []

        def op(cur: Cursor) -> list[tuple[str, str, str]]:
            cur.execute(
                self._q(
                    "SELECT id, tenant, model FROM {entries} WHERE expires_at <= ? ORDER BY expires_at, id LIMIT ?"
                ),
                (float(now), int(limit)),
            )
            return [(_str(i), _str(t), _str(m)) for i, t, m in cur.fetchall()]

        return self._read(op)

    def eviction_candidates(self, tenant: str, policy: EvictionPolicy, n: int) -> list[tuple[str, str]]:
        if n <= 0:
            return []
        order = EVICTION_ORDER[EvictionPolicy(policy)]

        def op(cur: Cursor) -> list[tuple[str, str]]:
            cur.execute(
                self._q(f"SELECT id, model FROM {{entries}} WHERE tenant = ? ORDER BY {order} LIMIT ?"),
                (tenant, int(n)),
            )
            return [(_str(i), _str(m)) for i, m in cur.fetchall()]

        return self._read(op)

    def delete_ids(self, ids: Sequence[str]) -> int:
        wanted = unique(ids)
        if not wanted:
            return 0

        def op(cur: Cursor) -> int:
            total = 0
            for part in chunks(wanted):
                cur.execute(self._q("DELETE FROM {entries} WHERE id IN {ids}", len(part)), tuple(part))
                total += max(cur.rowcount, 0)
            self.forget_learning(cur, wanted)
            return total

        return self._write(op)

    def entries_of_tenant(self, tenant: str, after_id: str, limit: int) -> list[EntryRow]:
        if limit <= 0:
            return []

        def op(cur: Cursor) -> list[EntryRow]:
            cur.execute(
                self._q(f"SELECT {ENTRY_COLUMNS} FROM {{entries}} WHERE tenant = ? AND id > ? ORDER BY id LIMIT ?"),
                (tenant, after_id, int(limit)),
            )
            return [entry_from_row(r) for r in cur.fetchall()]

        return self._read(op)

    def set_embed_model(self, ids: Sequence[str], embed_model: str) -> None:
        wanted = unique(ids)
        if not wanted:
            return

        def op(cur: Cursor) -> None:
            for part in chunks(wanted):
                cur.execute(
                    self._q("UPDATE {entries} SET embed_model = ? WHERE id IN {ids}", len(part)),
                    (embed_model, *part),
                )

        self._write(op)

    def top_entries(self, tenant: str, model: str | None, n: int) -> list[tuple[str, str, str, int]]:
        """(model, id, question, hit_count) of the most-hit entries of a scope."""
        if n <= 0:
            return []
        where, params = self._scope(tenant, model)

        def op(cur: Cursor) -> list[tuple[str, str, str, int]]:
            cur.execute(
                self._q(
                    "SELECT model, id, question, hit_count FROM {entries} WHERE "
                    + where
                    + " AND hit_count > 0 ORDER BY hit_count DESC, id LIMIT ?"
                ),
                (*params, int(n)),
            )
            return [(_str(m), _str(i), _str(q), _int(h)) for m, i, q, h in cur.fetchall()]

        return self._read(op)

    def models_of_tenant(self, tenant: str) -> dict[str, int]:
        """Entry counts per model of a tenant."""

        def op(cur: Cursor) -> dict[str, int]:
            cur.execute(self._q("SELECT model, COUNT(*) FROM {entries} WHERE tenant = ? GROUP BY model"), (tenant,))
            return {_str(m): _int(n) for m, n in cur.fetchall()}

        return self._read(op)

    # -- query log --------------------------------------------------------------------------
    def write_query_log(self, rows: Sequence[Any]) -> None:
        """rows: objects with ts, tenant, model, match_kind, similarity, entry_id, latency_ms, error, request_id,
        uncacheable."""
        if not rows:
            return
        sql = self._q(
            "INSERT INTO {query_log} (ts, tenant, model, match_kind, similarity, entry_id, latency_ms, error,"
            " request_id, uncacheable) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        params = [
            (
                float(r.ts), r.tenant[:64], r.model[:128], r.match_kind[:16], float(r.similarity),
                r.entry_id[:32] or None, float(r.latency_ms), r.error[:64] or None, r.request_id[:64] or None,
                getattr(r, "uncacheable", "")[:40] or None,
            )
            for r in rows
        ]
        self._write(lambda cur: cur.executemany(sql, params))

    def purge_query_log(self, before: float) -> int:
        def op(cur: Cursor) -> int:
            cur.execute(self._q("DELETE FROM {query_log} WHERE ts < ?"), (float(before),))
            return max(cur.rowcount, 0)

        return self._write(op)

    def query_log_since(
        self, tenant: str, model: str | None, since: float, limit: int = 100_000
    ) -> list[tuple[str, str, float]]:
        """(model, match_kind, latency_ms) of a scope's logged queries since a time, newest first."""
        where, params = self._scope(tenant, model)

        def op(cur: Cursor) -> list[tuple[str, str, float]]:
            cur.execute(
                self._q(
                    "SELECT model, match_kind, latency_ms FROM {query_log} WHERE "
                    + where
                    + " AND ts >= ? ORDER BY ts DESC LIMIT ?"
                ),
                (*params, float(since), int(limit)),
            )
            return [(_str(m), _str(k), _float(lat)) for m, k, lat in cur.fetchall()]

        return self._read(op)

    # -- API keys ---------------------------------------------------------------------------
    def create_api_key(self, record: ApiKeyRecord) -> None:
        sql = self._q("INSERT INTO {api_keys} (id, tenant, key_hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?)")
        params = (
            record.id,
            record.tenant,
            record.key_hash,
            float(record.created_at),
            None if record.revoked_at is None else float(record.revoked_at),
        )
        try:
            self._write(lambda cur: cur.execute(sql, params))
        except self.integrity_error as exc:
            raise AlreadyExists("an API key with this id or hash already exists") from exc

    def _select_api_key(self, cur: Cursor, column: str, value: str) -> ApiKeyRecord | None:
        cur.execute(
            self._q(f"SELECT id, tenant, key_hash, created_at, revoked_at FROM {{api_keys}} WHERE {column} = ?"),
            (value,),
        )
        row = cur.fetchone()
        return None if row is None else api_key_from_row(row)

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        return self._read(lambda cur: self._select_api_key(cur, "key_hash", key_hash))

    def revoke_api_key(self, key_id: str, revoked_at: float) -> ApiKeyRecord | None:
        def op(cur: Cursor) -> ApiKeyRecord | None:
            # A second revoke keeps the first time: that is when the key stopped working.
            cur.execute(
                self._q("UPDATE {api_keys} SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?"),
                (float(revoked_at), key_id),
            )
            return self._select_api_key(cur, "id", key_id)

        return self._write(op)
