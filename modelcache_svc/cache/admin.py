"""The admin's calls: tenants (create, read, list, update, delete), API keys, and per-scope stats.

The tenant records and keys themselves live in tenants.py (TenantRegistry); this adds the checks and the
consequences: a model that cannot load is refused, an update drops the tenant's exact hits and evicts past a
lower max_entries, a deletion takes the tenant's entries with it (writer.py's delete path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidArgument
from ..limits import check_model_name
from ..records import Tenant, TenantConfig
from .hits import HitCounter
from .querylog import QueryLog
from .runtime import Runtime
from .tenants import Principal, TenantRegistry
from .writer import Doomed, Writer


@dataclass(frozen=True, slots=True)
class ScopeStats:
    tenant: str
    model: str
    entries: int
    queries: int
    exact_hits: int
    semantic_hits: int
    misses: int
    errors: int
    hit_ratio: float
    p50_latency_ms: float
    p99_latency_ms: float
    top_entries: list[tuple[str, str, int]]


class Admin:
    def __init__(
        self, runtime: Runtime, tenants: TenantRegistry, writer: Writer, hits: HitCounter, query_log: QueryLog
    ) -> None:
        self.runtime = runtime
        self.tenants = tenants
        self.writer = writer
        self.hits = hits
        self.query_log = query_log

    # -- tenants -----------------------------------------------------------------------------------
    async def create_tenant(self, principal: Principal, name: str, config: TenantConfig) -> Tenant:
        principal.check_admin()
        await self.runtime.embedders.get(config.embedding_model)  # refuse a model that cannot load
        return await self.tenants.create(name, config)

    async def get_tenant(self, principal: Principal, name: str) -> Tenant:
        principal.check_admin()
        tenant = await self.tenants.get(name)
        count = await self.runtime.run(self.runtime.scalar.count_entries, name, None)
        return with_entries(tenant, count)

    async def list_tenants(self, principal: Principal) -> list[Tenant]:
        principal.check_admin()
        tenants = await self.tenants.list()
        counts = await self.runtime.run(self.runtime.scalar.count_by_tenant)
        return [with_entries(t, counts.get(t.name, 0)) for t in tenants]

    async def update_tenant(self, principal: Principal, name: str, config: TenantConfig) -> Tenant:
        principal.check_admin()
        rt = self.runtime
        await rt.embedders.get(config.embedding_model)
        tenant = await self.tenants.update(name, config)
        rt.exact_cache.forget_scope(name)
        if tenant.config.max_entries:
            await self.writer.enforce_capacity(tenant)
        count = await rt.run(rt.scalar.count_entries, name, None)
        return with_entries(tenant, count)

    async def delete_tenant(self, principal: Principal, name: str) -> int:
        principal.check_admin()
        await self.tenants.get(name)
        removed = await self.writer.delete(Doomed(name))
        await self.tenants.delete(name)
        return removed

    # -- API keys ----------------------------------------------------------------------------------
    async def create_api_key(self, principal: Principal, tenant: str, read_only: bool = False) -> tuple[str, str]:
        principal.check_admin()
        record, key = await self.tenants.create_api_key(tenant, read_only)
        return record.id, key

    async def revoke_api_key(self, principal: Principal, key_id: str) -> None:
        principal.check_admin()
        if not isinstance(key_id, str) or not key_id or len(key_id) > 64:
            raise InvalidArgument("key id is invalid")
        await self.tenants.revoke_api_key(key_id)

    # -- stats -------------------------------------------------------------------------------------
    async def stats(
        self, principal: Principal, tenant: str, model: str | None, window_s: float, top: int
    ) -> list[ScopeStats]:
        """Per model of a tenant: entries, and from the query log over the window,
        hit ratio and latency percentiles; the most-hit entries."""
        rt = self.runtime
        await self.tenants.for_caller(principal, tenant)
        if model:
            check_model_name(model)
        if not 0 < window_s <= 90 * 24 * 3600 or not 0 < top <= 100:
            raise InvalidArgument("window_seconds must be 1..7776000 and top 1..100")
        await self.query_log.flush()  # what was just asked counts
        await self.hits.flush()
        counts = await rt.run(rt.scalar.models_of_tenant, tenant)
        logged = await rt.run(rt.scalar.query_log_since, tenant, model or None, rt.clock() - window_s)
        logged = [row for row in logged if ":" not in row[1]]  # feedback:* and verify:* rows are not queries
        tops = await rt.run(rt.scalar.top_entries, tenant, model or None, top * max(1, len(counts)))
        models = sorted({model} if model else set(counts) | {m for m, _, _ in logged})
        out = []
        for name in models:
            kinds = [k for m, k, _ in logged if m == name]
            latencies = sorted(lat for m, _, lat in logged if m == name)
            hits = kinds.count("exact") + kinds.count("semantic")
            answered = len(kinds) - kinds.count("error")
            out.append(
                ScopeStats(
                    tenant=tenant,
                    model=name,
                    entries=counts.get(name, 0),
                    queries=len(kinds),
                    exact_hits=kinds.count("exact"),
                    semantic_hits=kinds.count("semantic"),
                    misses=kinds.count("miss"),
                    errors=kinds.count("error"),
                    hit_ratio=hits / answered if answered else 0.0,
                    p50_latency_ms=percentile(latencies, 0.50),
                    p99_latency_ms=percentile(latencies, 0.99),
                    top_entries=[(i, q, h) for m, i, q, h in tops if m == name][:top],
                )
            )
        return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return float(sorted_values[index])


def with_entries(tenant: Tenant, count: int) -> Tenant:
    return Tenant(tenant.name, tenant.config, tenant.created_at, count)
