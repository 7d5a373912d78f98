"""Work on the stores outside any request: the background loop (hit counts written every half second,
expired entries swept every five), repair (the two stores made to agree) and reindex (entries moved to
their tenant's current model). Repair and reindex walk a tenant's rows with one loop, ``routed_pages``,
and write vectors with one function, ``embed_into``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..embedding import EmbeddingBatcher
from ..records import EntryRow, Tenant
from .hits import HitCounter
from .runtime import Runtime
from .tenants import ADMIN, Principal, TenantRegistry
from .writer import Doomed, Writer, by_embedder

log = logging.getLogger("modelcache_svc.cache")


@dataclass(slots=True)
class RepairReport:
    rows_checked: int = 0
    vectors_added: int = 0
    vectors_removed: int = 0


class Maintenance:
    def __init__(self, runtime: Runtime, tenants: TenantRegistry, hits: HitCounter, writer: Writer) -> None:
        self.runtime = runtime
        self.tenants = tenants
        self.hits = hits
        self.writer = writer

    # -- background: hit counters and expiry ---------------------------------------------------------
    async def background(self) -> None:
        rt = self.runtime
        ticks = 0
        while True:
            await asyncio.sleep(0.5)
            ticks += 1
            try:
                await self.hits.flush()
                if ticks % 10 == 0:
                    await self.expire()
                    rt.metrics.set_entries(await rt.run(rt.scalar.count_by_tenant))
            except Exception:
                log.exception("background maintenance failed; will retry")

    async def expire(self) -> int:
        """Delete expired entries from both stores (queries already skip them)."""
        rt = self.runtime
        total = 0
        while True:
            rows = await rt.run(rt.scalar.expired, rt.clock(), 1000)
            if not rows:
                await rt.run(rt.scalar.purge_pending_verifications, rt.clock() - rt.settings.verify_pending_ttl_s)
                return total
            by_tenant: dict[str, list[tuple[str, str]]] = {}
            for entry_id, tenant, model in rows:
                by_tenant.setdefault(tenant, []).append((entry_id, model))
            for tenant, victims in by_tenant.items():
                await self.writer.delete(Doomed.entries(tenant, victims))
            rt.metrics.count(rt.metrics.expirations, amount=len(rows))
            total += len(rows)

    # -- reindex and repair ----------------------------------------------------------------------------
    async def reindex(self, principal: Principal, name: str, page: int = 256) -> int:
        """Re-embed every entry of a tenant with its current model.

        Entries already embedded by that model are skipped; the vectors of the
        old model are deleted once the new ones are written.
        """
        principal.check_admin()
        rt = self.runtime
        tenant = await self.tenants.get(name)
        done = 0
        async for rows, wanted in self.routed_pages(tenant, page):
            stale_idx = [i for i, r in enumerate(rows) if r.embed_model != wanted[i].model_id]
            for embedder, idx in by_embedder([wanted[i] for i in stale_idx]):
                stale = [rows[stale_idx[i]] for i in idx]
                await rt.run(rt.vector.ensure_collection, embedder.model_id, embedder.dim)
                await self.embed_into(embedder, name, stale)
                ids = [r.id for r in stale]
                await rt.run(rt.scalar.set_embed_model, ids, embedder.model_id)
                await rt.run(rt.vector.delete_ids, ids, embedder.model_id)
                done += len(stale)
        return done

    async def repair(self, principal: Principal, name: str | None = None) -> RepairReport:
        """Make the two stores agree: re-embed rows whose vector is missing (a crash
        between the two writes), delete vectors whose row is gone (a failed delete).
        Rows embedded by another model than the tenant's are reindex's business."""
        principal.check_admin()
        tenants = [await self.tenants.get(name)] if name else await self.tenants.list()
        report = RepairReport()
        for tenant in tenants:
            await self.repair_tenant(tenant, report)
        if report.vectors_added or report.vectors_removed:
            log.warning("repair: %s", report)
        return report

    async def repair_quietly(self) -> None:
        """The start-up repair pass: a failure is logged, never raised."""
        try:
            await self.repair(ADMIN)
        except Exception:
            log.warning("start-up repair pass failed; run `modelcache-svc repair` later", exc_info=True)

    async def repair_tenant(self, tenant: Tenant, report: RepairReport) -> None:
        rt = self.runtime
        used: dict[str, EmbeddingBatcher] = {}
        async for rows, wanted in self.routed_pages(tenant, 500):
            report.rows_checked += len(rows)
            for embedder, idx in by_embedder(wanted):
                used[embedder.model_id] = embedder
                current = [rows[i] for i in idx if rows[i].embed_model == embedder.model_id]
                present = await rt.run(rt.vector.existing_ids, embedder.model_id, embedder.dim, [r.id for r in current])
                missing = [r for r in current if r.id not in present]
                if missing:
                    await self.embed_into(embedder, tenant.name, missing)
                    report.vectors_added += len(missing)
        if not used:
            default = await rt.embedders.get(tenant.config.embedding_model)
            used[default.model_id] = default
        for embedder in used.values():
            report.vectors_removed += await rt.run(self.remove_orphan_vectors, embedder.model_id, embedder.dim,
                                                   tenant.name)

    async def routed_pages(self, tenant: Tenant, size: int) -> AsyncIterator[tuple[list[EntryRow], list[EmbeddingBatcher]]]:
        """A tenant's rows a page at a time in id order, each with the model its question is routed to now
        (the CJK model or the tenant's)."""
        rt = self.runtime
        after = ""
        while True:
            rows = await rt.run(rt.scalar.entries_of_tenant, tenant.name, after, size)
            if not rows:
                return
            after = rows[-1].id
            yield rows, [await rt.embedders.for_text(tenant.config.embedding_model, r.question) for r in rows]

    async def embed_into(self, embedder: EmbeddingBatcher, tenant: str, rows: list[EntryRow]) -> None:
        """Embed the rows' questions in one batch and write their vectors, one call per model of the scope."""
        rt = self.runtime
        vectors = await embedder.embed_many([r.question for r in rows])
        for model in sorted({r.model for r in rows}):
            sub = [i for i, r in enumerate(rows) if r.model == model]
            items = [(rows[i].id, rows[i].context_hash) for i in sub]
            await rt.run(rt.vector.insert, embedder.model_id, tenant, model, items, vectors[sub])

    def remove_orphan_vectors(self, embed_model: str, dim: int, tenant: str) -> int:
        """On a pool thread: delete a tenant's vectors whose row is gone; how many."""
        rt = self.runtime
        orphans: list[str] = []
        for ids in rt.vector.iter_tenant_ids(embed_model, dim, tenant):
            rows = rt.scalar.get_entries(ids, 0.0)  # expired or not: only a missing row makes an orphan
            orphans.extend(i for i in ids if i not in rows)
        for start in range(0, len(orphans), 500):
            rt.vector.delete_ids(orphans[start:start + 500])
        return len(orphans)
