"""The scalar store in this process's memory: a throwaway cache (``memory://``) and the core's unit tests.

It answers every ScalarStore call as ``sql_common.SQLScalarStore`` does (the contract tests in
tests/integration/test_scalar_stores.py and test_feedback_store.py run against both), without SQL:
dicts under one lock, since the core calls stores from a thread pool. Nothing survives ``close``
or the process; there are no migrations to apply.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from ..errors import AlreadyExists, Unavailable
from ..records import ApiKeyRecord, EntryLearning, EntryRow, EvictionPolicy, Observation, Tenant, TenantConfig
from .migrations import table_prefix

Key = tuple[str, str, str]  # (tenant, model, exact_key): unique among entries
# The SQL stores' ORDER BY of each policy (sql_common.EVICTION_ORDER), as sort keys.
EVICTION_ORDER = {
    EvictionPolicy.LRU: lambda r: (r.last_hit_at, r.id),
    EvictionPolicy.LFU: lambda r: (r.hit_count, r.last_hit_at, r.id),
    EvictionPolicy.FIFO: lambda r: (r.created_at, r.id),
}


@dataclass(frozen=True, slots=True)
class _Logged:
    """A query log row: what query_log_since reads back of it."""

    ts: float
    tenant: str
    model: str
    match_kind: str
    latency_ms: float


@dataclass(frozen=True, slots=True)
class _Seen:
    """A feedback row; seq plays the SQL tables' auto-increment id (newest = highest)."""

    seq: int
    tenant: str
    similarity: float
    wrong: bool


def _live(row: EntryRow, now: float) -> bool:
    return row.expires_at is None or row.expires_at > now


def _in_scope(row: EntryRow, tenant: str, model: str | None) -> bool:
    return row.tenant == tenant and (model is None or row.model == model)


class MemoryScalarStore:
    def __init__(self, namespace: str = "") -> None:
        table_prefix(namespace)  # refuse what the SQL stores refuse; each store is its own namespace anyway
        self._lock = threading.RLock()
        self._closed = False
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, ApiKeyRecord] = {}  # by id
        self._entries: dict[str, EntryRow] = {}  # by id
        self._by_key: dict[Key, str] = {}
        self._log: list[_Logged] = []
        self._seen: dict[str, list[_Seen]] = {}  # by entry id, oldest first
        self._floors: dict[str, float] = {}
        self._pending: dict[tuple[str, str], tuple[float, float]] = {}  # (entry, exact key) -> (similarity, ts)
        self._seq = 0

    @contextmanager
    def _held(self) -> Iterator[None]:
        """The lock, for one whole call: a call is one transaction. A closed store fails as SQLite's does."""
        with self._lock:
            if self._closed:
                raise Unavailable("memory: the store is closed")
            yield

    # -- lifecycle ----------------------------------------------------------------------
    def migrate(self) -> list[int]:
        with self._held():
            return []

    def ping(self) -> None:
        with self._held():
            return

    def close(self) -> None:
        with self._lock:
            self._closed = True

    # -- tenants -----------------------------------------------------------------------
    def create_tenant(self, name: str, config: TenantConfig, created_at: float) -> Tenant:
        with self._held():
            if name in self._tenants:
                raise AlreadyExists(f"tenant {name!r} already exists")
            tenant = self._tenants[name] = Tenant(name=name, config=config, created_at=float(created_at))
            return tenant

    def get_tenant(self, name: str) -> Tenant | None:
        with self._held():
            return self._tenants.get(name)

    def list_tenants(self) -> list[Tenant]:
        with self._held():
            return [self._tenants[name] for name in sorted(self._tenants)]

    def update_tenant(self, name: str, config: TenantConfig) -> Tenant | None:
        with self._held():
            old = self._tenants.get(name)
            if old is None:
                return None
            tenant = self._tenants[name] = replace(old, config=config)
            return tenant

    def delete_tenant(self, name: str) -> bool:
        with self._held():
            for key_id in [k.id for k in self._keys.values() if k.tenant == name]:
                del self._keys[key_id]
            return self._tenants.pop(name, None) is not None

    # -- entries -----------------------------------------------------------------------
    def upsert_entries(self, rows: Sequence[EntryRow]) -> list[tuple[str, bool]]:
        with self._held():
            for r in rows:  # checked before any write: a call is all or nothing, as a transaction
                owner = self._entries.get(r.id)
                if owner is not None and self._by_key.get((r.tenant, r.model, r.exact_key)) != r.id:
                    # SQLite's primary key refuses this too (an IntegrityError): ids are never reused.
                    raise ValueError(f"entry id {r.id[:40]!r} is taken by another chat")
            # What was learned about an answer does not carry over to a new answer (sql_common does the same).
            last_answer = {(r.tenant, r.model, r.exact_key): r.answer for r in rows}
            self._forget([i for k, i in self._by_key.items()
                          if k in last_answer and self._entries[i].answer != last_answer[k]])
            for r in rows:
                key = (r.tenant, r.model, r.exact_key)
                old_id = self._by_key.get(key)
                if old_id is None:
                    self._entries[r.id] = r
                    self._by_key[key] = r.id
                else:
                    old = self._entries[old_id]
                    self._entries[old_id] = replace(old, answer=r.answer, metadata_json=r.metadata_json,
                                                    messages_json=r.messages_json, expires_at=r.expires_at)
            # As in SQL: a row counts as created when its own id is the one stored under its key.
            stored = [self._by_key[(r.tenant, r.model, r.exact_key)] for r in rows]
            return [(entry_id, entry_id == r.id) for entry_id, r in zip(stored, rows)]

    def get_by_exact_key(self, tenant: str, model: str, exact_key: str, now: float) -> EntryRow | None:
        with self._held():
            entry_id = self._by_key.get((tenant, model, exact_key))
            row = None if entry_id is None else self._entries[entry_id]
            return row if row is not None and _live(row, now) else None

    def get_entries(self, ids: Sequence[str], now: float) -> dict[str, EntryRow]:
        with self._held():
            rows = (self._entries.get(i) for i in dict.fromkeys(ids))
            return {r.id: r for r in rows if r is not None and _live(r, now)}

    def delete_entries(self, tenant: str, model: str, ids: Sequence[str]) -> list[str]:
        with self._held():
            found = [i for i in dict.fromkeys(ids) if i in self._entries and _in_scope(self._entries[i], tenant, model)]
            self._delete(found)
            return found

    def clear(self, tenant: str, model: str | None) -> int:
        with self._held():
            return self._delete([r.id for r in self._entries.values() if _in_scope(r, tenant, model)])

    def count_entries(self, tenant: str, model: str | None = None) -> int:
        with self._held():
            return sum(1 for r in self._entries.values() if _in_scope(r, tenant, model))

    def count_by_tenant(self) -> dict[str, int]:
        with self._held():
            counts: dict[str, int] = {}
            for r in self._entries.values():
                counts[r.tenant] = counts.get(r.tenant, 0) + 1
            return counts

    def record_hits(self, hits: Sequence[tuple[str, float]]) -> None:
        with self._held():
            for entry_id, ts in hits:
                row = self._entries.get(entry_id)
                if row is not None:
                    self._entries[entry_id] = replace(row, hit_count=row.hit_count + 1,
                                                      last_hit_at=max(row.last_hit_at, float(ts)))

    def expired(self, now: float, limit: int) -> list[tuple[str, str, str]]:
        with self._held():
            dead = [r for r in self._entries.values() if r.expires_at is not None and r.expires_at <= now]
            dead.sort(key=lambda r: (r.expires_at or 0.0, r.id))
            return [(r.id, r.tenant, r.model) for r in dead[:max(limit, 0)]]

    def eviction_candidates(self, tenant: str, policy: EvictionPolicy, n: int) -> list[tuple[str, str]]:
        with self._held():
            rows = sorted((r for r in self._entries.values() if r.tenant == tenant),
                          key=EVICTION_ORDER[EvictionPolicy(policy)])
            return [(r.id, r.model) for r in rows[:max(n, 0)]]

    def delete_ids(self, ids: Sequence[str]) -> int:
        with self._held():
            return self._delete(list(dict.fromkeys(ids)))

    def entries_of_tenant(self, tenant: str, after_id: str, limit: int) -> list[EntryRow]:
        with self._held():
            rows = sorted((r for r in self._entries.values() if r.tenant == tenant and r.id > after_id),
                          key=lambda r: r.id)
            return rows[:max(limit, 0)]

    def set_embed_model(self, ids: Sequence[str], embed_model: str) -> None:
        with self._held():
            for entry_id in ids:
                row = self._entries.get(entry_id)
                if row is not None:
                    self._entries[entry_id] = replace(row, embed_model=embed_model)

    def top_entries(self, tenant: str, model: str | None, n: int) -> list[tuple[str, str, str, int]]:
        with self._held():
            rows = [r for r in self._entries.values() if _in_scope(r, tenant, model) and r.hit_count > 0]
            rows.sort(key=lambda r: (-r.hit_count, r.id))
            return [(r.model, r.id, r.question, r.hit_count) for r in rows[:max(n, 0)]]

    def models_of_tenant(self, tenant: str) -> dict[str, int]:
        with self._held():
            counts: dict[str, int] = {}
            for r in self._entries.values():
                if r.tenant == tenant:
                    counts[r.model] = counts.get(r.model, 0) + 1
            return counts

    def _delete(self, ids: Sequence[str]) -> int:
        """Under the lock: delete these rows (absent ones skipped) and what was learned about them."""
        deleted = 0
        for entry_id in ids:
            row = self._entries.pop(entry_id, None)
            if row is not None:
                del self._by_key[(row.tenant, row.model, row.exact_key)]
                deleted += 1
        self._forget(ids)
        return deleted

    # -- query log ----------------------------------------------------------------------------
    def write_query_log(self, rows: Sequence[Any]) -> None:
        """rows: objects with ts, tenant, model, match_kind and latency_ms (querylog.QueryLogRow)."""
        with self._held():
            # Cut as the SQL columns cut them, so a scope reads back the same rows.
            self._log.extend(_Logged(float(r.ts), r.tenant[:64], r.model[:128], r.match_kind[:16],
                                     float(r.latency_ms)) for r in rows)

    def purge_query_log(self, before: float) -> int:
        with self._held():
            kept = [r for r in self._log if r.ts >= before]
            purged, self._log = len(self._log) - len(kept), kept
            return purged

    def query_log_since(
        self, tenant: str, model: str | None, since: float, limit: int = 100_000
    ) -> list[tuple[str, str, float]]:
        with self._held():
            rows = [r for r in self._log
                    if r.tenant == tenant and model in (None, r.model) and r.ts >= since]
        rows.sort(key=lambda r: -r.ts)
        return [(r.model, r.match_kind, r.latency_ms) for r in rows[:max(limit, 0)]]

    # -- learning from feedback (stores/learning_sql.py's semantics) ------------------------------
    def record_observations(self, observations: Sequence[Observation], keep: int, floor_margin: float) -> int:
        with self._held():
            recorded = 0
            for entry_id in sorted({o.entry_id for o in observations}):
                if entry_id not in self._entries:
                    continue  # deleted meanwhile: nothing is left behind without its entry
                mine = [o for o in observations if o.entry_id == entry_id]
                self._observe(entry_id, [(o.tenant, o.similarity, o.wrong) for o in mine])
                recorded += len(mine)
                wrong = [o.similarity for o in mine if o.wrong]
                if wrong:
                    self._raise_floor(entry_id, min(1.0, max(wrong) + floor_margin))
                seen = self._seen[entry_id]
                del seen[:max(0, len(seen) - max(keep, 1))]  # the newest `keep` stay
            return recorded

    def restore_learning(self, tenant: str, learning: Mapping[str, EntryLearning], ts: float) -> None:
        with self._held():
            for entry_id in sorted(learning):
                if entry_id not in self._entries:
                    continue
                carried = learning[entry_id]
                # Oldest first, so the newest gets the highest seq, as where they were recorded.
                self._observe(entry_id, [(tenant, s, w) for s, w in reversed(carried.observations)])
                if carried.floor > 0.0:
                    self._raise_floor(entry_id, float(carried.floor))

    def learning_of(self, ids: Sequence[str]) -> dict[str, EntryLearning]:
        with self._held():
            out: dict[str, EntryLearning] = {}
            for entry_id in dict.fromkeys(ids):
                seen = self._seen.get(entry_id, [])
                if entry_id in self._floors or seen:
                    newest_first = tuple((s.similarity, s.wrong) for s in reversed(seen))
                    out[entry_id] = EntryLearning(self._floors.get(entry_id, 0.0), newest_first)
            return out

    def tenant_observations(self, tenant: str, limit: int) -> list[tuple[float, bool]]:
        with self._held():
            mine = [s for seen in self._seen.values() for s in seen if s.tenant == tenant]
        mine.sort(key=lambda s: -s.seq)
        return [(s.similarity, s.wrong) for s in mine[:max(limit, 0)]]

    def add_pending_verification(self, entry_id: str, exact_key: str, tenant: str, similarity: float,
                                 ts: float) -> None:
        with self._held():
            self._pending[(entry_id, exact_key)] = (float(similarity), float(ts))

    def take_pending_verification(self, entry_id: str, exact_key: str, since: float) -> float | None:
        with self._held():
            found = self._pending.pop((entry_id, exact_key), None)
            return found[0] if found is not None and found[1] >= since else None

    def purge_pending_verifications(self, before: float) -> int:
        with self._held():
            old = [k for k, (_, ts) in self._pending.items() if ts < before]
            for k in old:
                del self._pending[k]
            return len(old)

    def _observe(self, entry_id: str, rows: Sequence[tuple[str, float, bool]]) -> None:
        seen = self._seen.setdefault(entry_id, [])
        for tenant, similarity, wrong in rows:
            self._seq += 1
            seen.append(_Seen(self._seq, tenant, float(similarity), bool(wrong)))

    def _raise_floor(self, entry_id: str, floor: float) -> None:
        if self._floors.get(entry_id, float("-inf")) < floor:
            self._floors[entry_id] = floor

    def _forget(self, ids: Sequence[str]) -> None:
        """Under the lock: drop what was learned about these entries (every delete path calls this)."""
        gone = set(ids)
        for entry_id in gone:
            self._seen.pop(entry_id, None)
            self._floors.pop(entry_id, None)
        for key in [k for k in self._pending if k[0] in gone]:
            del self._pending[key]

    # -- API keys -----------------------------------------------------------------------------
    def create_api_key(self, record: ApiKeyRecord) -> None:
        with self._held():
            if record.id in self._keys or any(k.key_hash == record.key_hash for k in self._keys.values()):
                raise AlreadyExists("an API key with this id or hash already exists")
            self._keys[record.id] = record

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        with self._held():
            return next((k for k in self._keys.values() if k.key_hash == key_hash), None)

    def revoke_api_key(self, key_id: str, revoked_at: float) -> ApiKeyRecord | None:
        with self._held():
            record = self._keys.get(key_id)
            if record is None:
                return None
            if record.revoked_at is None:  # a second revoke keeps the first time: the key stopped then
                record = self._keys[key_id] = replace(record, revoked_at=float(revoked_at))
            return record
