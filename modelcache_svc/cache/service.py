"""The cache core: the one object transports call, a facade over rooms of one idea each. No transport in here.

A transport calls these methods with plain types and a Principal. Each goes to the room that does it:

- lookup.py: the Query path (validate, exact lookup, semantic search and read), deciding with decide.py;
- writer.py: Insert, Remove, Clear, eviction on capacity, and the one delete path;
- admin.py: tenants, API keys, stats;
- maintenance.py: the background loop (hit counts, expiry), repair, reindex;
- feedback.py: the Feedback call and what it teaches the hit decision;
- transfer.py: Export and Import;
- browse.py: what the console reads (entries by text or id, recent traffic), leaving no trace.

All of them work with one Runtime (runtime.py: the settings, the stores behind a thread pool, the
embedders, the metrics, the clock). What stays here: the lifecycle, the per-tenant bound on calls in
flight, and Query's fail-open, metrics and query log.

Lifecycle: ``open`` (the scalar store's schema, the default tenant: quick), then ``load`` (the vector store
reads its copy back: minutes at a million rows without a saved copy). The transports listen between the
two, so health can say NOT_SERVING meanwhile; until ``load`` returns, every call that reads or writes
vectors is refused UNAVAILABLE with the read-back's progress (``refuse_while_loading``), never answered from
a half-read copy. Query too, fail-open or not: a loading server is not a sick store, and health tells a
balancer to send the call elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from ..config import Settings
from ..embedding.pool import EmbedderPool
from ..errors import CacheError, ResourceExhausted, Unavailable
from ..metrics import Metrics
from ..records import (
    CarriedEntry, ExportPage, ImportReport, InsertResult, Message, NewEntry, QueryResult, Scope, Tenant, TenantConfig,
)
from ..stores.base import ScalarStore, VectorStore
from ..verifier.pool import SCORES, VerifierPool
from . import transfer
from .admin import Admin, ScopeStats
from .browse import Browse
from .feedback import Learner
from .hits import HitCounter
from .keys import ChatKeyMemo
from .lookup import Lookup
from .maintenance import Maintenance, RepairReport
from .querylog import QueryLog, QueryLogRow, Texts
from .runtime import Runtime
from .tenants import Principal, TenantRegistry
from .vector_memo import VectorMemo
from .writer import Writer

log = logging.getLogger("modelcache_svc.cache")


class CacheCore:
    def __init__(
        self,
        settings: Settings,
        scalar: ScalarStore,
        vector: VectorStore,
        embedders: EmbedderPool,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        verifiers: VerifierPool | None = None,
    ) -> None:
        rt = self.runtime = Runtime(settings, scalar, vector, embedders, metrics or Metrics(), clock)
        self.verifiers = verifiers or VerifierPool(None)
        self.tenants = TenantRegistry(scalar, rt.run, settings.admin_key, clock)
        self.hits = HitCounter(rt)
        self.query_log = QueryLog(
            lambda rows: rt.run(rt.scalar.write_query_log, rows),
            lambda before: rt.run(rt.scalar.purge_query_log, before),
            rt.metrics,
            sample_rate=settings.query_log_sample_rate,
            max_queue=settings.query_log_max_queue,
            retention_s=settings.query_log_retention_s,
            clock=clock,
            recent_rows=settings.console_traffic_rows,
        )
        chat_keys = ChatKeyMemo()
        self.learner = Learner(rt, self.tenants, chat_keys, self.query_log, insert=self.insert, remove=self.remove)
        self.lookup = Lookup(rt, self.tenants, chat_keys, self.hits, self.learner, self.verifiers)
        self.writer = Writer(rt, self.tenants, self.hits, self.learner)
        self.admin = Admin(rt, self.tenants, self.writer, self.hits, self.query_log)
        self.maintenance = Maintenance(rt, self.tenants, self.hits, self.writer)
        self.browse = Browse(rt, self.tenants, chat_keys, self.lookup, self.hits, self.query_log)
        self.inflight: dict[str, int] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False
        self.loaded = False  # the vector store's copy read back (``load``)

    # What transports, the app and tests read of the core (and tests may swap settings for one run).
    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self.runtime.settings = settings

    @property
    def scalar(self) -> ScalarStore:
        return self.runtime.scalar

    @property
    def vector(self) -> VectorStore:
        return self.runtime.vector

    @property
    def embedders(self) -> EmbedderPool:
        return self.runtime.embedders

    @property
    def metrics(self) -> Metrics:
        return self.runtime.metrics

    @property
    def question_vectors(self) -> VectorMemo:
        return self.runtime.question_vectors

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.open()
        await self.load()

    async def open(self) -> None:
        """What must be there before the transports listen: the scalar store's schema, the default tenant."""
        rt = self.runtime
        await rt.run(rt.scalar.migrate)
        if rt.settings.default_tenant:
            await self.tenants.ensure(rt.settings.default_tenant, TenantConfig())

    async def load(self) -> None:
        """The vector store's copy read back, then the background work; every call is served after it."""
        rt = self.runtime
        default = rt.embedders.default
        # Not under the request deadline: reading a large collection's vectors back takes its time
        # (docs/performance.md, "Scale").
        await rt.run_unbounded(rt.vector.ensure_collection, default.model_id, default.dim)
        self.loaded = True
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(self.maintenance.background()))
        if rt.settings.repair_on_start:
            self.tasks.append(loop.create_task(self.maintenance.repair_quietly()))
        self.query_log.start()

    async def stop(self) -> None:
        if self.closed:
            return
        self.closed = True
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self.hits.flush()
        await self.query_log.stop()
        self.runtime.close()

    @property
    def loading(self) -> str | None:
        """While the vector copy is read back at start: how far, in words; None once it is whole."""
        if self.loaded:
            return None
        return getattr(self.runtime.vector, "loading", None) or "starting"

    def refuse_while_loading(self) -> None:
        loading = self.loading
        if loading is not None:
            raise Unavailable(f"loading: the vector copy is being read back after a start ({loading}); this "
                              "server answers once it is whole (health says NOT_SERVING until then)")

    async def ready(self) -> dict[str, bool]:
        """Which dependencies answer now: the scalar store, the vector store, the model, and whether the
        vector copy is read back (``loaded``: /readyz says not ready while it is not)."""
        rt = self.runtime
        status = {"scalar_store": False, "vector_store": False, "model": rt.embedders.default.dim > 0,
                  "loaded": self.loaded}
        # While loading, the vector store's lock is the loader's: a ping would wait out its deadline.
        for name, store in (("scalar_store", rt.scalar), ("vector_store", rt.vector))[:2 if self.loaded else 1]:
            try:
                await asyncio.wait_for(rt.run(store.ping), rt.settings.store_timeout_s)
                status[name] = True
            except Exception:
                rt.metrics.count(rt.metrics.store_errors, name.removesuffix("_store"))
        rt.metrics.set_gauge(rt.metrics.ready, 1.0 if all(status.values()) else 0.0)
        return status

    @contextmanager
    def admit(self, tenant: str) -> Iterator[None]:
        """Bound the calls one tenant has in flight: one noisy product cannot starve the rest."""
        self.refuse_while_loading()
        key = tenant if isinstance(tenant, str) else ""
        limit = self.settings.max_concurrent_per_tenant
        n = self.inflight.get(key, 0)
        if n >= limit:
            raise ResourceExhausted(f"tenant {key[:64]!r} has {n} calls in flight (limit {limit}); retry later")
        self.inflight[key] = n + 1
        try:
            yield
        finally:
            left = self.inflight[key] - 1
            if left:
                self.inflight[key] = left
            else:
                del self.inflight[key]

    # -- the cache -------------------------------------------------------------------------------------
    async def query(
        self,
        principal: Principal,
        scope: Scope,
        messages: Sequence[Message],
        *,
        similarity_threshold: float | None = None,
        top_k: int = 0,
        request_id: str = "",
    ) -> QueryResult:
        self.refuse_while_loading()  # before fail-open: a loading server is not a sick store
        start = time.perf_counter()
        error = ""
        scores: list[tuple[str, float]] = []
        noting = SCORES.set(scores)  # what the verifier says on this query, for the console's traffic
        try:
            with self.admit(scope.tenant):
                result = await self.lookup.query(principal, scope, messages, similarity_threshold, top_k, start)
        except Unavailable as exc:
            error = type(exc).__name__
            self.metrics.query(scope.tenant, "error")
            if not self.settings.fail_open:
                raise
            # Fail open: a sick store makes the product call its model, never hang or fail.
            self.metrics.count(self.metrics.fail_open)
            log.warning("query answered as a miss: %s", exc.message, extra={"request_id": request_id})
            result = QueryResult.miss()
        except CacheError as exc:
            self.metrics.query(scope.tenant, "error")
            self.log_query(scope, None, start, type(exc).__name__, request_id, messages, scores)
            raise
        else:
            self.metrics.stage("total", time.perf_counter() - start)
            self.metrics.query(scope.tenant, result.match.value)
        finally:
            SCORES.reset(noting)
        self.log_query(scope, result, start, error, request_id, messages, scores)
        return result

    def log_query(
        self, scope: Scope, result: QueryResult | None, start: float, error: str, request_id: str,
        messages: Sequence[Message] = (), scores: Sequence[tuple[str, float]] = (),
    ) -> None:
        try:
            self.query_log.record(
                QueryLogRow(
                    ts=self.runtime.clock(),
                    tenant=scope.tenant if isinstance(scope.tenant, str) else "",
                    model=scope.model if isinstance(scope.model, str) else "",
                    match_kind="error" if result is None or error else result.match.value,
                    similarity=result.similarity if result else 0.0,
                    entry_id=result.id if result else "",
                    latency_ms=(time.perf_counter() - start) * 1000.0,
                    error=error,
                    request_id=request_id,
                    uncacheable=result.uncacheable if result else "",
                ),
                query_texts(messages, result, scores) if self.query_log.keeps_recent else None,
            )
        except Exception:  # the log never fails a query
            log.debug("query log: row not recorded", exc_info=True)

    async def insert(self, principal: Principal, scope: Scope, entries: Sequence[NewEntry]) -> InsertResult:
        """One id per entry, "" for an entry the cacheability policy refused, and the class that refused it."""
        principal.check_write()
        with self.admit(scope.tenant):
            return await self.writer.insert(principal, scope, entries)

    async def remove(self, principal: Principal, scope: Scope, ids: Sequence[str]) -> int:
        principal.check_write()
        self.refuse_while_loading()
        return await self.writer.remove(principal, scope, ids)

    async def clear(self, principal: Principal, tenant: str, model: str | None) -> int:
        principal.check_write()
        self.refuse_while_loading()
        return await self.writer.clear(principal, tenant, model)

    async def feedback(
        self, principal: Principal, scope: Scope, entry_id: str, messages: Sequence[Message], verdict: str,
        answer: str = "",
    ) -> str:
        """A product's verdict on a served hit; what was done, in words (cache/feedback.py)."""
        principal.check_write()
        with self.admit(scope.tenant):
            return await self.learner.feedback(principal, scope, entry_id, messages, verdict, answer)

    async def stats(
        self, principal: Principal, tenant: str, model: str | None, window_s: float, top: int
    ) -> list[ScopeStats]:
        return await self.admin.stats(principal, tenant, model, window_s, top)

    # -- tenants and keys ------------------------------------------------------------------------------
    async def create_tenant(self, principal: Principal, name: str, config: TenantConfig) -> Tenant:
        return await self.admin.create_tenant(principal, name, config)

    async def get_tenant(self, principal: Principal, name: str) -> Tenant:
        return await self.admin.get_tenant(principal, name)

    async def list_tenants(self, principal: Principal) -> list[Tenant]:
        return await self.admin.list_tenants(principal)

    async def update_tenant(self, principal: Principal, name: str, config: TenantConfig) -> Tenant:
        return await self.admin.update_tenant(principal, name, config)

    async def delete_tenant(self, principal: Principal, name: str) -> int:
        self.refuse_while_loading()
        return await self.admin.delete_tenant(principal, name)

    async def create_api_key(self, principal: Principal, tenant: str, read_only: bool = False) -> tuple[str, str]:
        return await self.admin.create_api_key(principal, tenant, read_only)

    async def revoke_api_key(self, principal: Principal, key_id: str) -> None:
        await self.admin.revoke_api_key(principal, key_id)

    # -- maintenance -----------------------------------------------------------------------------------
    async def reindex(self, principal: Principal, name: str, page: int = 256) -> int:
        self.refuse_while_loading()
        return await self.maintenance.reindex(principal, name, page)

    async def repair(self, principal: Principal, name: str | None = None) -> RepairReport:
        self.refuse_while_loading()
        return await self.maintenance.repair(principal, name)

    async def expire(self) -> int:
        return await self.maintenance.expire()

    # -- moving entries between servers (transfer.py) --------------------------------------------------
    async def export_entries(
        self, principal: Principal, tenant: str, model: str, after_id: str, limit: int, with_vectors: bool = True
    ) -> ExportPage:
        self.refuse_while_loading()
        return await transfer.export_page(
            self.runtime, self.tenants, self.hits, principal, tenant, model, after_id, limit, with_vectors)

    async def import_entries(
        self, principal: Principal, tenant: str, config: TenantConfig | None, entries: Sequence[CarriedEntry]
    ) -> ImportReport:
        principal.check_write()
        with self.admit(tenant):
            return await transfer.import_entries(self.runtime, self.admin, self.writer, principal, tenant, config,
                                                 entries)


def query_texts(messages: Sequence[Message], result: QueryResult | None, scores: Sequence[tuple[str, float]]) -> Texts:
    """The texts of a query for the console's traffic: its last turn, what it matched, and the verifier's verdict
    (on the served candidate when the verifier read it, else on the best candidate it read)."""
    try:
        question = messages[-1].content if messages and isinstance(messages[-1].content, str) else ""
        chat = tuple(m for m in messages if isinstance(m, Message))
    except (TypeError, AttributeError):
        question, chat = "", ()
    verdict = ""
    matched = result.matched_question if result is not None and result.hit else ""
    if result is not None and result.hit:
        served = [p for text, p in scores if text == matched]
        verdict = f"accepted p={served[0]:.2f}" if served else ""  # "": served above the band, not read
    elif scores:
        verdict = f"refused p={max(p for _, p in scores):.2f}"
    return Texts(question, matched, verdict, chat)
