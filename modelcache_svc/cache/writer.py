"""What changes the cache's content: Insert (validation, the cacheability policy, TTLs, the writes), eviction
on capacity, and the one delete path every removal takes (Remove, Clear, eviction, expiry, a tenant's
deletion).

Writes go scalar row first, then vector; deletes go rows, then the exact-hit cache, then vectors: either
way a vector without a live row is never served, and the repair pass (maintenance.py) deletes one a
failure left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..embedding import EmbeddingBatcher
from ..errors import InvalidArgument, Unavailable
from ..limits import Limits, check_model_name
from ..records import CacheabilityAction, EntryRow, InsertResult, NewEntry, Scope, Tenant
from .cacheability import compiled, judge
from .feedback import Learner
from .hits import HitCounter
from .keys import ENTRY_ID, ChatKey, chat_key, check_answer, check_entry_ids, check_metadata
from .runtime import Runtime
from .tenants import Principal, TenantRegistry
from .routing import route_and_key

log = logging.getLogger("modelcache_svc.cache")
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
# Entries of one Insert get created_at (and last_hit_at) this far apart, and every stamp of this process is
# later than the one before: FIFO and LRU ties among entries never hit fall to insertion order, not to the
# random id. A microsecond stays distinct in a double at today's epoch (its step there is about 0.24 us).
STAMP_STEP_S = 1e-6


@dataclass(frozen=True, slots=True)
class Doomed:
    """What one deletion takes away, in one tenant: a whole scope (``ids`` None; ``model`` None: every model
    of the tenant), the listed ids of one scope (those there), or listed entries of several models
    (``models``, parallel to ``ids``: eviction and expiry know each victim's model)."""

    tenant: str
    model: str | None = None
    ids: Sequence[str] | None = None
    models: Sequence[str] | None = None

    @classmethod
    def entries(cls, tenant: str, victims: Sequence[tuple[str, str]]) -> Doomed:
        """(id, model) pairs of one tenant."""
        return cls(tenant, None, [v[0] for v in victims], [v[1] for v in victims])


@dataclass(frozen=True, slots=True)
class Staged:
    """An Insert's entry that passed validation and the policy: where it was in the call, its key (routed
    and keyed past the window as the query path keys it), the model that embeds it, and its row."""

    position: int
    key: ChatKey
    embedder: EmbeddingBatcher
    row: EntryRow


def by_embedder(embedders: Sequence[EmbeddingBatcher]) -> list[tuple[EmbeddingBatcher, list[int]]]:
    """Positions grouped by the model that embeds them, in first-seen order."""
    groups: dict[str, tuple[EmbeddingBatcher, list[int]]] = {}
    for i, embedder in enumerate(embedders):
        groups.setdefault(embedder.model_id, (embedder, []))[1].append(i)
    return list(groups.values())


class Writer:
    def __init__(self, runtime: Runtime, tenants: TenantRegistry, hits: HitCounter, learner: Learner) -> None:
        self.runtime = runtime
        self.tenants = tenants
        self.hits = hits
        self.learner = learner
        self.last_stamp = float("-inf")
        self.capacity_locks: dict[str, asyncio.Lock] = {}

    # -- insert ------------------------------------------------------------------------------------
    async def insert(self, principal: Principal, scope: Scope, entries: Sequence[NewEntry]) -> InsertResult:
        rt = self.runtime
        tenant = await self.tenants.for_scope(principal, scope)
        limits = rt.settings.limits
        if not entries:
            raise InvalidArgument("entries is empty: nothing to insert")
        if len(entries) > limits.max_entries_per_insert:
            raise InvalidArgument(f"too many entries: {len(entries)} > {limits.max_entries_per_insert} per call")
        now = rt.clock()
        stamps = self.stamps(now, len(entries))
        uncacheable: list[str] = []
        staged: list[Staged] = []
        for i, entry in enumerate(entries):
            key, answer, metadata, ttl = _checked(i, entry, tenant, limits)
            verdict = judge(tenant, key.question, "insert", rt.metrics)
            uncacheable.append(verdict.klass if verdict is not None and verdict.refused else "")
            if uncacheable[-1]:
                continue
            if verdict is not None and verdict.action is CacheabilityAction.SHORT_TTL:
                short = compiled(tenant.config.cacheability).short_ttl_seconds
                ttl = min(ttl, short) if ttl else short
            embedder, key = await route_and_key(rt, tenant, key)
            row = _row(scope, key, answer, metadata, embedder, stamps[i], now + ttl if ttl else None)
            staged.append(Staged(i, key, embedder, row))
        if not staged:
            return InsertResult([""] * len(entries), uncacheable)
        ids = await self.write(scope, staged)
        verifying = [(entries[s.position], s.key, s.embedder) for s in staged if entries[s.position].verifies]
        await self.learner.verify_written(scope, verifying)
        if tenant.config.max_entries:
            await self.enforce_capacity(tenant)
        out = [""] * len(entries)
        for s, entry_id in zip(staged, ids, strict=True):
            out[s.position] = entry_id
        return InsertResult(out, uncacheable)

    async def write(self, scope: Scope, staged: list[Staged]) -> list[str]:
        """Rows, then vectors, of the staged entries; the ids they are stored under (an existing chat's id
        when the exact key was cached already)."""
        rt = self.runtime
        groups = by_embedder([s.embedder for s in staged])
        vectors = {e.model_id: await self.embed_entries(e, [staged[i].key.question for i in idx]) for e, idx in groups}
        # Scalar row first, then the vector: a vector without a row is never served.
        results = await rt.run(rt.scalar.upsert_entries, [s.row for s in staged])
        ids = [entry_id for entry_id, _ in results]
        rt.exact_cache.forget_keys((scope.tenant, scope.model, s.key.exact_key) for s in staged)  # new answers
        try:
            for e, idx in groups:
                items = [(ids[i], staged[i].key.context_hash) for i in idx]
                await rt.run(rt.vector.insert, e.model_id, scope.tenant, scope.model, items, vectors[e.model_id])
        except Unavailable:
            # The rows just created go again; their vectors were never written (not the delete path).
            created = [entry_id for entry_id, was_created in results if was_created]
            try:
                await rt.run(rt.scalar.delete_ids, created)
                rt.exact_cache.forget_ids(created)
            except Exception:
                log.warning("insert: vector write failed and rows %s stay for the repair pass", created)
            raise
        rt.metrics.count(rt.metrics.inserted, rt.metrics.tenant_label(scope.tenant), amount=len(ids))
        return ids

    def stamps(self, now: float, n: int) -> list[float]:
        """n strictly increasing instants from now on, each later than any this process gave before."""
        first = max(now, self.last_stamp + STAMP_STEP_S)
        stamps = [first + i * STAMP_STEP_S for i in range(n)]
        self.last_stamp = stamps[-1]
        return stamps

    async def embed_entries(self, embedder: EmbeddingBatcher, questions: list[str]) -> Any:
        """Vectors of an Insert's questions; those just asked as queries (a write-back after a miss) are
        remembered, the rest go to the model in one batch."""
        memo = self.runtime.question_vectors
        known = [memo.get(embedder.model_id, q) for q in questions]
        todo = [i for i, v in enumerate(known) if v is None]
        if len(todo) == len(questions):
            return await embedder.embed_many(questions)
        vectors = np.empty((len(questions), embedder.dim), dtype=np.float32)
        for i, v in enumerate(known):
            if v is not None:
                vectors[i] = v
        if todo:
            vectors[todo] = await embedder.embed_many([questions[i] for i in todo])
        return vectors

    # -- eviction ----------------------------------------------------------------------------------
    async def enforce_capacity(self, tenant: Tenant) -> int:
        """Evict a tenant's entries past its max_entries, by its eviction policy; how many went."""
        rt = self.runtime
        lock = self.capacity_locks.setdefault(tenant.name, asyncio.Lock())
        async with lock:
            count = await rt.run(rt.scalar.count_entries, tenant.name, None)
            excess = count - tenant.config.max_entries
            if excess <= 0:
                return 0
            await self.hits.flush()  # LRU and LFU read hit counts: every hit served so far must be in them
            victims = await rt.run(rt.scalar.eviction_candidates, tenant.name, tenant.config.eviction_policy, excess)
            await self.delete(Doomed.entries(tenant.name, victims))
            rt.metrics.count(
                rt.metrics.evictions,
                rt.metrics.tenant_label(tenant.name),
                tenant.config.eviction_policy.value,
                amount=len(victims),
            )
            return len(victims)

    # -- remove / clear and the one delete path ----------------------------------------------------
    async def remove(self, principal: Principal, scope: Scope, ids: Sequence[str]) -> int:
        await self.tenants.for_scope(principal, scope)
        checked = check_entry_ids(ids, self.runtime.settings.limits)
        return await self.delete(Doomed(scope.tenant, scope.model, checked))

    async def clear(self, principal: Principal, tenant: str, model: str | None) -> int:
        await self.tenants.for_caller(principal, tenant)
        if model:
            check_model_name(model)
        return await self.delete(Doomed(tenant, model or None))

    async def delete(self, doomed: Doomed) -> int:
        """Delete the rows, forget them in the exact-hit cache, delete their vectors; how many rows went."""
        rt = self.runtime
        if doomed.ids is None:  # a whole scope
            removed = await rt.run(rt.scalar.clear, doomed.tenant, doomed.model)
            rt.exact_cache.forget_scope(doomed.tenant, doomed.model)
            await rt.run(rt.vector.clear, doomed.tenant, doomed.model)
            return int(removed)
        if not doomed.ids:
            return 0
        by_model: dict[str, list[str]] = {}
        if doomed.models is None:  # ids of one scope: those there go
            assert doomed.model is not None
            deleted = await rt.run(rt.scalar.delete_entries, doomed.tenant, doomed.model, doomed.ids)
            if deleted:
                by_model[doomed.model] = deleted
        else:
            deleted = list(doomed.ids)
            await rt.run(rt.scalar.delete_ids, deleted)
            for entry_id, model in zip(doomed.ids, doomed.models, strict=True):
                by_model.setdefault(model, []).append(entry_id)
        rt.exact_cache.forget_ids(deleted)
        for model, ids in by_model.items():
            await rt.run(rt.vector.delete, doomed.tenant, model, ids)
        return len(deleted)


def _checked(i: int, entry: NewEntry, tenant: Tenant, limits: Limits) -> tuple[ChatKey, str, dict[str, str], int]:
    """An entry's key, answer, metadata and TTL, validated; the error names the entry's position."""
    try:
        key = chat_key(entry.messages, limits)
        answer = check_answer(entry.answer, limits)
        metadata = check_metadata(entry.metadata, limits)
        if entry.verifies and not ENTRY_ID.match(entry.verifies):
            raise InvalidArgument("verifies must be the verify_entry_id of a query (32 lowercase hex)")
        ttl = entry.ttl_seconds or tenant.config.ttl_seconds
        if ttl < 0 or ttl > MAX_TTL_SECONDS:
            raise InvalidArgument(f"ttl_seconds must be 0..{MAX_TTL_SECONDS}")
    except InvalidArgument as exc:
        raise InvalidArgument(f"entries[{i}]: {exc.message}") from exc
    return key, answer, metadata, ttl


def _row(
    scope: Scope, key: ChatKey, answer: str, metadata: dict[str, str], embedder: EmbeddingBatcher, stamp: float,
    expires_at: float | None,
) -> EntryRow:
    return EntryRow(
        id=uuid.uuid4().hex,
        tenant=scope.tenant,
        model=scope.model,
        context_hash=key.context_hash,
        exact_key=key.exact_key,
        question=key.question,
        messages_json=json.dumps([[m.role, m.content] for m in key.messages], ensure_ascii=False),
        answer=answer,
        metadata_json=json.dumps(metadata, ensure_ascii=False, sort_keys=True),
        embed_model=embedder.model_id,
        created_at=stamp,
        expires_at=expires_at,
        last_hit_at=stamp,
    )
