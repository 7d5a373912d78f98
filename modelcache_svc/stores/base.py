"""The two small interfaces the core talks to.

Both are synchronous: the core calls them from a thread pool, never from the
event loop. Implementations translate their driver's errors into
``errors.Unavailable`` (store down, timeout) at this boundary; anything else
that escapes is a bug.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..records import ApiKeyRecord, EntryLearning, EntryRow, EvictionPolicy, Observation, Tenant, TenantConfig


class ScalarStore(Protocol):
    """Entries, tenants and API keys (SQLite or MySQL/OceanBase)."""

    def migrate(self) -> list[int]:
        """Apply pending versioned migrations; return the versions applied."""
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...

    # -- tenants -------------------------------------------------------------
    def create_tenant(self, name: str, config: TenantConfig, created_at: float) -> Tenant:
        """Raise AlreadyExists when the name is taken."""
        ...

    def get_tenant(self, name: str) -> Tenant | None: ...

    def list_tenants(self) -> list[Tenant]: ...

    def update_tenant(self, name: str, config: TenantConfig) -> Tenant | None:
        """None when no such tenant."""
        ...

    def delete_tenant(self, name: str) -> bool:
        """Delete the tenant row and its API keys (not its entries)."""
        ...

    # -- entries -------------------------------------------------------------
    def upsert_entries(self, rows: Sequence[EntryRow]) -> list[tuple[str, bool]]:
        """Write rows in one transaction.

        A row whose (tenant, model, exact_key) exists replaces answer,
        metadata, messages and expires_at of that row and keeps its id.
        Returns (id, created) per row, in order.
        """
        ...

    def get_by_exact_key(self, tenant: str, model: str, exact_key: str, now: float) -> EntryRow | None:
        """The live (unexpired) row with this key, or None."""
        ...

    def get_entries(self, ids: Sequence[str], now: float) -> dict[str, EntryRow]:
        """Live rows among ids."""
        ...

    def delete_entries(self, tenant: str, model: str, ids: Sequence[str]) -> list[str]:
        """Delete rows of this scope among ids; return the ids deleted."""
        ...

    def clear(self, tenant: str, model: str | None) -> int:
        """Delete every row of a scope (model None: of every model); return the count."""
        ...

    def count_entries(self, tenant: str, model: str | None = None) -> int: ...

    def count_by_tenant(self) -> dict[str, int]: ...

    def record_hits(self, hits: Sequence[tuple[str, float]]) -> None:
        """For each (id, ts): hit_count += 1, last_hit_at = max(last_hit_at, ts)."""
        ...

    def expired(self, now: float, limit: int) -> list[tuple[str, str, str]]:
        """(id, tenant, model) of rows with expires_at <= now."""
        ...

    def eviction_candidates(self, tenant: str, policy: EvictionPolicy, n: int) -> list[tuple[str, str]]:
        """(id, model) of the n rows of the tenant to evict first under policy.

        LRU: oldest last_hit_at first; LFU: lowest hit_count first, then
        oldest last_hit_at; FIFO: oldest created_at first. Ties by id (the core
        stamps the entries of one Insert strictly increasing, so ties are rare).
        """
        ...

    def delete_ids(self, ids: Sequence[str]) -> int:
        """Delete rows by id regardless of scope (expiry, eviction, repair)."""
        ...

    def entries_of_tenant(self, tenant: str, after_id: str, limit: int) -> list[EntryRow]:
        """Rows of a tenant ordered by id, starting after after_id (paging)."""
        ...

    def set_embed_model(self, ids: Sequence[str], embed_model: str) -> None: ...

    def top_entries(self, tenant: str, model: str | None, n: int) -> list[tuple[str, str, str, int]]:
        """(model, id, question, hit_count) of the most-hit entries of a scope."""
        ...

    def models_of_tenant(self, tenant: str) -> dict[str, int]:
        """Entry counts per model of a tenant."""
        ...

    # -- query log -----------------------------------------------------------
    def write_query_log(self, rows: Sequence[Any]) -> None: ...

    def purge_query_log(self, before: float) -> int: ...

    def query_log_since(
        self, tenant: str, model: str | None, since: float, limit: int = 100_000
    ) -> list[tuple[str, str, float]]:
        """(model, match_kind, latency_ms) of logged queries since a time, newest first."""
        ...

    # -- learning from feedback (deleted with their entry by every delete above) ----
    def record_observations(self, observations: Sequence[Observation], keep: int, floor_margin: float) -> int:
        """Write observations of live entries; a wrong one raises its entry's floor to its similarity +
        floor_margin; keep the newest ``keep`` per entry. Returns how many were recorded."""
        ...

    def learning_of(self, ids: Sequence[str]) -> dict[str, EntryLearning]:
        """Floor and observations (newest first) of those of these entries that have any."""
        ...

    def tenant_observations(self, tenant: str, limit: int) -> list[tuple[float, bool]]:
        """(similarity, wrong) of a tenant's newest observations."""
        ...

    def add_pending_verification(self, entry_id: str, exact_key: str, tenant: str, similarity: float,
                                 ts: float) -> None: ...

    def take_pending_verification(self, entry_id: str, exact_key: str, since: float) -> float | None:
        """The similarity of a pending verification (created at or after since), removed; None if none."""
        ...

    def purge_pending_verifications(self, before: float) -> int: ...

    def restore_learning(self, tenant: str, learning: Mapping[str, EntryLearning], ts: float) -> None:
        """Write floors and observations carried from another store (import), for entries that exist."""
        ...

    # -- API keys ------------------------------------------------------------
    def create_api_key(self, record: ApiKeyRecord) -> None: ...

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...

    def revoke_api_key(self, key_id: str, revoked_at: float) -> ApiKeyRecord | None:
        """None when no such key."""
        ...


@dataclass(frozen=True, slots=True)
class VectorHit:
    id: str
    similarity: float


class VectorStore(Protocol):
    """Vectors beside entry ids, searched within one scope and context."""

    def ensure_collection(self, embed_model: str, dim: int) -> None: ...

    def insert(
        self,
        embed_model: str,
        tenant: str,
        model: str,
        items: Sequence[tuple[str, str]],
        vectors: np.ndarray,
    ) -> None:
        """items: (entry id, context hash) per row of vectors (normalised float32)."""
        ...

    def search(
        self,
        embed_model: str,
        tenant: str,
        model: str,
        context_hash: str,
        vector: np.ndarray,
        top_k: int,
    ) -> list[VectorHit]: ...

    def delete(self, tenant: str, model: str, ids: Sequence[str]) -> None: ...

    def delete_ids(self, ids: Sequence[str], except_model: str | None = None) -> None:
        """Delete ids from every collection, except the one of except_model."""
        ...

    def clear(self, tenant: str, model: str | None) -> None: ...

    def ids_of_scope(self, embed_model: str, tenant: str, model: str) -> list[str]: ...

    def existing_ids(self, embed_model: str, dim: int, ids: Sequence[str]) -> set[str]:
        """Which of these ids have a vector in the collection of embed_model."""
        ...

    def iter_tenant_ids(self, embed_model: str, dim: int, tenant: str, batch: int = 1000) -> Iterator[list[str]]:
        """Every id with a vector of a tenant in the collection of embed_model, in batches."""
        ...

    def vectors_of(self, embed_model: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The vectors of embed_model of those of these ids that have one (export)."""
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...
