"""The cache core: query, insert, remove, clear. No transport in here.

One way in for data: a transport calls these methods with plain types and a
Principal; this module validates, then talks to the embedder and the two
stores. Store calls are blocking and run on a thread pool, never on the event
loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from ..config import Settings
from ..embedding.pool import EmbedderPool
from ..errors import CacheError, InvalidArgument, ResourceExhausted, Unavailable
from ..metrics import Metrics
from ..stores.base import ScalarStore, VectorHit, VectorStore
from .cacheability import Verdict, compiled, metric_class
from .exact_cache import ExactCache
from ..limits import check_model_name, check_tenant_name
from .feedback import Learner, learning_active
from .keys import ENTRY_ID, ChatKey, chat_key, check_answer, check_entry_ids, check_metadata
from .matching import guard_veto, lexical_overlap, resolve_threshold
from .querylog import QueryLog, QueryLogRow
from .tenants import ADMIN, Principal, TenantRegistry
from ..embedding import EmbeddingBatcher
from ..records import (
    CacheabilityAction, EntryLearning, EntryRow, InsertResult, MatchKind, Message, NewEntry, QueryResult, Scope, Tenant,
    TenantConfig,
)
from .vector_memo import VectorMemo
from .verifier_gate import MAX_VERIFIED, Gate, gate_for
from .window import keyed_past_window
from ..verifier.pool import VerifierPool

log = logging.getLogger("modelcache_svc.cache")
T = TypeVar("T")
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
# The exact-hit LRU's bound on changes made behind this process's back. Used only over Milvus Lite: its
# file is locked to one process, so every Remove/Clear/Insert of the data it serves goes through this
# one and invalidates at once; replicas over a Milvus server promise "seen at once" and go without it.
EXACT_CACHE_TTL_S = 10.0
# chat_key (NFKC, whitespace, two SHA-256 over JSON) remembered for recent short chats: an exact hit is a
# repeated chat, and normalising it again was a third of the core's time on one.
CHAT_KEY_MEMO = 10_000
CHAT_KEY_MEMO_MAX_CHARS = 4_096
# Entries of one Insert get created_at (and last_hit_at) this far apart, and every stamp of this process is
# later than the one before: FIFO and LRU ties among entries never hit fall to insertion order, not to the
# random id. A microsecond stays distinct in a double at today's epoch (its step there is about 0.24 us).
STAMP_STEP_S = 1e-6


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
        self.settings = settings
        self.verifiers = verifiers or VerifierPool(None)
        self.metrics = metrics or Metrics()
        self.scalar = scalar
        self.vector = vector
        self.embedders = embedders
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=settings.store_threads, thread_name_prefix="store")
        self.tenants = TenantRegistry(scalar, self._run, settings.admin_key, clock)
        self._hits: list[tuple[str, float]] = []
        self._hits_lock = asyncio.Lock()  # one flush at a time: eviction waits for one already writing
        self._last_stamp = float("-inf")
        self._key_memo: dict[tuple[Message, ...], ChatKey] = {}
        # Only when both stores are this process's own: a shared scalar store means other
        # replicas may change what the cache holds.
        local = getattr(vector, "is_lite", False) and settings.resolved_scalar_uri.startswith("sqlite:")
        self.exact_cache = ExactCache(settings.exact_cache_size, EXACT_CACHE_TTL_S if local else 0.0)
        self.question_vectors = VectorMemo(settings.question_vector_cache_size)
        self._capacity_locks: dict[str, asyncio.Lock] = {}
        self._inflight: dict[str, int] = {}
        # Drivers time out on their own (store_timeout_s); this catches what they miss.
        self._deadline = settings.store_timeout_s + 2.0
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.query_log = QueryLog(
            lambda rows: self._run(self.scalar.write_query_log, rows),
            lambda before: self._run(self.scalar.purge_query_log, before),
            self.metrics,
            sample_rate=settings.query_log_sample_rate,
            max_queue=settings.query_log_max_queue,
            retention_s=settings.query_log_retention_s,
            clock=clock,
        )
        self.learner = Learner(self)  # learning from feedback: cache/feedback.py

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        await self._run(self.scalar.migrate)
        default = self.embedders.default
        # Not under the request deadline: reading a large collection's vectors back takes its time
        # (docs/performance.md, "Scale").
        await asyncio.get_running_loop().run_in_executor(
            self._pool, self.vector.ensure_collection, default.model_id, default.dim)
        if self.settings.default_tenant:
            await self.tenants.ensure(self.settings.default_tenant, TenantConfig())
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._background()))
        if self.settings.repair_on_start:
            self._tasks.append(loop.create_task(self._repair_quietly()))
        self.query_log.start()

    async def _repair_quietly(self) -> None:
        try:
            await self.repair(ADMIN)
        except Exception:
            log.warning("start-up repair pass failed; run `modelcache-svc repair` later", exc_info=True)

    async def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self._flush_hits()
        await self.query_log.stop()
        self._pool.shutdown(wait=True)

    async def ready(self) -> dict[str, bool]:
        """Which dependencies answer now: the scalar store, the vector store, the model."""
        status = {"scalar_store": False, "vector_store": False, "model": self.embedders.default.dim > 0}
        for name, store in (("scalar_store", self.scalar), ("vector_store", self.vector)):
            try:
                await asyncio.wait_for(self._run(store.ping), self.settings.store_timeout_s)
                status[name] = True
            except Exception:
                self.metrics.count(self.metrics.store_errors, name.removesuffix("_store"))
        self.metrics.set_gauge(self.metrics.ready, 1.0 if all(status.values()) else 0.0)
        return status

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking store call on the pool, under a deadline: a hung store never hangs a caller."""
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        try:
            async with asyncio.timeout(self._deadline):
                return await future
        except TimeoutError as exc:
            self.metrics.count(self.metrics.store_errors, "deadline")
            raise Unavailable(f"a store call took longer than {self._deadline:.1f}s") from exc

    # -- scope ---------------------------------------------------------------------
    async def _tenant_for(self, principal: Principal, tenant: str) -> Tenant:
        check_tenant_name(tenant)
        principal.check_tenant(tenant)
        return await self.tenants.get(tenant)

    async def _scope(self, principal: Principal, scope: Scope) -> Tenant:
        tenant = await self._tenant_for(principal, scope.tenant)
        check_model_name(scope.model)
        return tenant

    # -- query -----------------------------------------------------------------------
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
        start = time.perf_counter()
        error = ""
        try:
            with self._admit(scope.tenant):
                result = await self._query(principal, scope, messages, similarity_threshold, top_k, start)
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
            self._log_query(scope, None, start, type(exc).__name__, request_id)
            raise
        else:
            self.metrics.stage("total", time.perf_counter() - start)
            self.metrics.query(scope.tenant, result.match.value)
        self._log_query(scope, result, start, error, request_id)
        return result

    def _log_query(
        self, scope: Scope, result: QueryResult | None, start: float, error: str, request_id: str
    ) -> None:
        try:
            self.query_log.record(
                QueryLogRow(
                    ts=self._clock(),
                    tenant=scope.tenant if isinstance(scope.tenant, str) else "",
                    model=scope.model if isinstance(scope.model, str) else "",
                    match_kind="error" if result is None or error else result.match.value,
                    similarity=result.similarity if result else 0.0,
                    entry_id=result.id if result else "",
                    latency_ms=(time.perf_counter() - start) * 1000.0,
                    error=error,
                    request_id=request_id,
                    uncacheable=result.uncacheable if result else "",
                )
            )
        except Exception:  # the log never fails a query
            log.debug("query log: row not recorded", exc_info=True)

    async def _query(
        self,
        principal: Principal,
        scope: Scope,
        messages: Sequence[Message],
        similarity_threshold: float | None,
        top_k: int,
        start: float,
    ) -> QueryResult:
        tenant = await self._scope(principal, scope)
        key = self._chat_key(messages)
        threshold = resolve_threshold(
            similarity_threshold, tenant.config.similarity_threshold, self.settings.similarity_threshold
        )
        if top_k < 0 or top_k > self.settings.limits.max_top_k:
            raise InvalidArgument(f"top_k must be 0..{self.settings.limits.max_top_k}")
        self.metrics.stage("validate", time.perf_counter() - start)
        # Before the exact lookup: an entry stored under an older, laxer policy is not served either.
        verdict = self._judge(tenant, key.question, "query")
        if verdict is not None and verdict.refused:
            return QueryResult(False, MatchKind.MISS, uncacheable=verdict.klass)
        now = self._clock()
        with self.metrics.timed("exact_lookup"):
            cache_key = (scope.tenant, scope.model, key.exact_key)
            row = self.exact_cache.get(cache_key, now) if self.exact_cache.enabled else None
            if row is None:
                generation = self.exact_cache.generation
                row = await self._run(self.scalar.get_by_exact_key, scope.tenant, scope.model, key.exact_key, now)
                if row is not None:
                    self.exact_cache.put(cache_key, row, generation)
        if row is not None:
            self._hits.append((row.id, now))
            return QueryResult(True, MatchKind.EXACT, row.answer, row.id, 1.0, row.question)
        embedder = await self.embedders.for_text(tenant.config.embedding_model, key.question)
        key = keyed_past_window(key, embedder.tail_past_window(key.question))
        return await self._semantic(
            embedder, scope, tenant, key, threshold, similarity_threshold is not None, top_k or self.settings.top_k, now
        )

    def _judge(self, tenant: Tenant, question: str, call: str) -> Verdict | None:
        """The tenant's cacheability verdict on a question (cache/cacheability.py), counted when flagged."""
        # Not timed per call (a histogram observation costs more than a repeated question's check);
        # `modelcache-svc policy-eval` measures it.
        verdict = compiled(tenant.config.cacheability).judge(question)
        if verdict is not None:
            self.metrics.flagged(tenant.name, call, metric_class(verdict.klass), verdict.action.value)
        return verdict

    def _chat_key(self, messages: Sequence[Message]) -> ChatKey:
        """chat_key(messages), remembered for recent short chats (a pure function of them)."""
        try:
            memo = tuple(messages)
            small = sum(len(m.content) for m in memo) <= CHAT_KEY_MEMO_MAX_CHARS
            found = self._key_memo.get(memo) if small else None
        except (TypeError, AttributeError):  # not hashable Messages: validation will say what is wrong
            return chat_key(messages, self.settings.limits)
        if found is not None:
            return found
        key = chat_key(messages, self.settings.limits)
        if small:
            if len(self._key_memo) >= CHAT_KEY_MEMO:
                del self._key_memo[next(iter(self._key_memo))]  # the oldest
            self._key_memo[memo] = key
        return key

    async def _semantic(
        self, embedder: EmbeddingBatcher, scope: Scope, tenant: Tenant, key: ChatKey, threshold: float,
        explicit: bool, top_k: int, now: float,
    ) -> QueryResult:
        with self.metrics.timed("embed"):
            vector = await self._embed_question(embedder, key.question)
        verifier = self.verifiers.for_text(key.question) if tenant.config.verifier is not False else None
        gate = None if verifier is None else gate_for(
            verifier.options.band_low, verifier.options.band_high, verifier.options.cutoff,
            tenant.config.verifier, tenant.config.verifier_cutoff)
        floor = self.learner.candidate_floor(tenant, threshold, explicit)
        if gate is not None:
            floor = min(floor, gate.floor(threshold))
        # Search and read in one trip to the pool (each stage still timed on its own).
        # Thresholds, reported similarities and what feedback learns are on one scale for every model
        # (FolderOptions); only the vector search speaks the model's own cosine.
        candidates, rows, learning = await self._run(
            self._search_and_read, embedder.model_id, scope, key.context_hash, vector, top_k,
            embedder.threshold_cosine(floor), now,
        )
        if not learning and not learning_active(tenant):
            learning = None  # nothing learned here: the plain decision
        weight = self.settings.rerank_lexical_weight
        best: tuple[float, VectorHit, EntryRow] | None = None
        ranked: list[tuple[float, float, VectorHit, EntryRow]] = []
        live = self._live(scope, key, candidates, rows, embedder)
        if gate is not None and verifier is not None:
            live = await self._verified(verifier, gate, key.question, live, threshold)
        for similarity, hit, row in live:
            if learning is not None:  # the learned decision walks every candidate, best first
                ranked.append((similarity + weight * lexical_overlap(key.question, row.question), similarity, hit, row))
                continue
            if not weight:
                best = (similarity, hit, row)
                break
            # Among the candidates that clear the threshold and the guard, the one also worded most like the
            # question (adjacent word pairs in common): near-duplicate entries embed alike, wording tells them
            # apart. The threshold and the reported similarity stay the (scaled) cosine.
            rank = similarity + weight * lexical_overlap(key.question, row.question)
            if best is None or rank > best[0]:
                best = (rank, hit, row)
        if learning is not None:
            ranked.sort(key=lambda c: -c[0])
            pool = await self.learner.pool(tenant)
            choice = self.learner.choose(tenant, [(s, h, r) for _, s, h, r in ranked], learning, threshold, pool)
            if choice.verify is not None:
                similarity, _, row = choice.verify
                await self.learner.offer(scope, key, row.id, similarity)
                return QueryResult.miss(verify_entry_id=row.id)
            best = None if choice.serve is None else (0.0, *choice.serve[1:])
        if best is None:
            return QueryResult.miss()
        _, hit, row = best
        self._hits.append((row.id, now))
        return QueryResult(True, MatchKind.SEMANTIC, row.answer, row.id, embedder.reported(hit.similarity), row.question)

    def _live(
        self, scope: Scope, key: ChatKey, candidates: list[VectorHit], rows: dict[str, EntryRow],
        embedder: EmbeddingBatcher,
    ) -> list[tuple[float, VectorHit, EntryRow]]:
        """Candidates with a live row of this very scope and context that the guard does not veto, best first,
        with their similarity on the common scale."""
        live = []
        for hit in candidates:
            row = rows.get(hit.id)
            # A vector without a live row of this very scope and context is never served.
            if row is None or row.tenant != scope.tenant or row.model != scope.model:
                continue
            if row.context_hash != key.context_hash:
                continue
            if self.settings.precision_guard:
                reason = guard_veto(key.question, row.question)
                if reason is not None:
                    self.metrics.count(self.metrics.guard_vetoes, reason)
                    continue
            live.append((embedder.reported(hit.similarity), hit, row))
        return live

    async def _verified(
        self, verifier: Any, gate: Gate, question: str, live: list[tuple[float, VectorHit, EntryRow]],
        threshold: float,
    ) -> list[tuple[float, VectorHit, EntryRow]]:
        """The candidates the gate lets through: sure ones by their similarity, uncertain ones by the verifier
        (all of them in one model call), the rest dropped."""
        uncertain = [c for c in live if gate.uncertain(c[0], threshold)][:MAX_VERIFIED]
        probabilities: dict[str, float] = {}
        if uncertain:
            with self.metrics.timed("verify"):
                scores = await self.verifiers.score(
                    verifier, question, [row.question for _, _, row in uncertain], [s for s, _, _ in uncertain])
            for (_, _, row), p in zip(uncertain, scores):
                probabilities[row.id] = p
                outcome = "accepted" if p >= gate.cutoff else "rejected"
                self.metrics.count(self.metrics.verifier_decisions, outcome)
        return [
            c for c in live
            if gate.sure(c[0], threshold) or probabilities.get(c[2].id, -1.0) >= gate.cutoff
        ]

    async def _embed_question(self, embedder: EmbeddingBatcher, question: str) -> Any:
        """The question's vector: remembered for a question asked recently, else the model's."""
        memo = self.question_vectors
        if not memo.enabled:
            return await embedder.embed(question)
        vector = memo.get(embedder.model_id, question)
        self.metrics.count(self.metrics.question_vectors, "hit" if vector is not None else "miss")
        if vector is None:
            vector = await embedder.embed(question)
            memo.put(embedder.model_id, question, vector)
        return vector

    async def _embed_entries(self, embedder: EmbeddingBatcher, questions: list[str]) -> Any:
        """Vectors of an Insert's questions; those just asked as queries (a write-back after a miss) are
        remembered, the rest go to the model in one batch."""
        known = [self.question_vectors.get(embedder.model_id, q) for q in questions]
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

    def _search_and_read(
        self, embed_model: str, scope: Scope, context_hash: str, vector: Any, top_k: int, threshold: float,
        now: float,
    ) -> tuple[list[VectorHit], dict[str, EntryRow], dict[str, EntryLearning] | None]:
        """On a pool thread: the candidates above the threshold, their live rows, and what was learned
        about them (feedback: floors, observations)."""
        with self.metrics.timed("vector_search"):
            # The collection of the tenant's model: vectors of two models are never compared.
            hits = self.vector.search(embed_model, scope.tenant, scope.model, context_hash, vector, top_k)
        candidates = [h for h in hits if h.similarity >= threshold]
        if not candidates:
            return [], {}, None
        with self.metrics.timed("scalar_read"):
            rows = self.scalar.get_entries([h.id for h in candidates], now)
            return candidates, rows, self.scalar.learning_of(list(rows))

    # -- insert ------------------------------------------------------------------------
    @contextmanager
    def _admit(self, tenant: str) -> Iterator[None]:
        """Bound the calls one tenant has in flight: one noisy product cannot starve the rest."""
        key = tenant if isinstance(tenant, str) else ""
        n = self._inflight.get(key, 0)
        if n >= self.settings.max_concurrent_per_tenant:
            raise ResourceExhausted(
                f"tenant {key[:64]!r} has {n} calls in flight (limit {self.settings.max_concurrent_per_tenant}); retry later"
            )
        self._inflight[key] = n + 1
        try:
            yield
        finally:
            left = self._inflight[key] - 1
            if left:
                self._inflight[key] = left
            else:
                del self._inflight[key]

    async def insert(self, principal: Principal, scope: Scope, entries: Sequence[NewEntry]) -> InsertResult:
        """One id per entry, "" for an entry the cacheability policy refused, and the class that refused it."""
        with self._admit(scope.tenant):
            return await self._insert(principal, scope, entries)

    async def _insert(self, principal: Principal, scope: Scope, entries: Sequence[NewEntry]) -> InsertResult:
        refused: list[str] = []
        tenant = await self._scope(principal, scope)
        limits = self.settings.limits
        if not entries:
            raise InvalidArgument("entries is empty: nothing to insert")
        if len(entries) > limits.max_entries_per_insert:
            raise InvalidArgument(f"too many entries: {len(entries)} > {limits.max_entries_per_insert} per call")
        now = self._clock()
        stamps = self._stamps(now, len(entries))
        rows: list[EntryRow] = []
        keys: list[ChatKey] = []
        embedders: list[EmbeddingBatcher] = []
        stored: list[int] = []  # positions of the entries written
        for i, entry in enumerate(entries):
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
            verdict = self._judge(tenant, key.question, "insert")
            refused.append(verdict.klass if verdict is not None and verdict.refused else "")
            if refused[-1]:
                continue
            if verdict is not None and verdict.action is CacheabilityAction.SHORT_TTL:
                short = compiled(tenant.config.cacheability).short_ttl_seconds
                ttl = min(ttl, short) if ttl else short
            embedder = await self.embedders.for_text(tenant.config.embedding_model, key.question)
            key = keyed_past_window(key, embedder.tail_past_window(key.question))
            embedders.append(embedder)
            stored.append(i)
            keys.append(key)
            rows.append(
                EntryRow(
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
                    created_at=stamps[i],
                    expires_at=now + ttl if ttl else None,
                    last_hit_at=stamps[i],
                )
            )
        if not rows:
            return InsertResult([""] * len(entries), refused)
        groups = _by_embedder(embedders)
        vectors = {e.model_id: await self._embed_entries(e, [keys[i].question for i in idx]) for e, idx in groups}
        # Scalar row first, then the vector: a vector without a row is never served.
        results = await self._run(self.scalar.upsert_entries, rows)
        ids = [entry_id for entry_id, _ in results]
        self.exact_cache.forget_keys((scope.tenant, scope.model, k.exact_key) for k in keys)  # new answers
        try:
            for e, idx in groups:
                await self._run(
                    self.vector.insert,
                    e.model_id,
                    scope.tenant,
                    scope.model,
                    [(ids[i], keys[i].context_hash) for i in idx],
                    vectors[e.model_id],
                )
        except Unavailable:
            created = [entry_id for entry_id, was_created in results if was_created]
            try:
                await self._run(self.scalar.delete_ids, created)
                self.exact_cache.forget_ids(created)
            except Exception:
                log.warning("insert: vector write failed and rows %s stay for the repair pass", created)
            raise
        self.metrics.count(self.metrics.inserted, self.metrics.tenant_label(scope.tenant), amount=len(ids))
        verifying = [(entries[p], keys[j], embedders[j]) for j, p in enumerate(stored) if entries[p].verifies]
        await self.learner.verify_written(scope, verifying)
        if tenant.config.max_entries:
            await self._enforce_capacity(tenant)
        if len(ids) == len(entries):
            return InsertResult(ids, refused)
        out = [""] * len(entries)
        for position, entry_id in zip(stored, ids, strict=True):
            out[position] = entry_id
        return InsertResult(out, refused)

    def _stamps(self, now: float, n: int) -> list[float]:
        """n strictly increasing instants from now on, each later than any this process gave before."""
        first = max(now, self._last_stamp + STAMP_STEP_S)
        stamps = [first + i * STAMP_STEP_S for i in range(n)]
        self._last_stamp = stamps[-1]
        return stamps

    async def _enforce_capacity(self, tenant: Tenant) -> int:
        lock = self._capacity_locks.setdefault(tenant.name, asyncio.Lock())
        async with lock:
            count = await self._run(self.scalar.count_entries, tenant.name, None)
            excess = count - tenant.config.max_entries
            if excess <= 0:
                return 0
            await self._flush_hits()  # LRU and LFU read hit counts: every hit served so far must be in them
            victims = await self._run(
                self.scalar.eviction_candidates, tenant.name, tenant.config.eviction_policy, excess
            )
            await self._delete_rows(tenant.name, victims)
            self.metrics.count(
                self.metrics.evictions,
                self.metrics.tenant_label(tenant.name),
                tenant.config.eviction_policy.value,
                amount=len(victims),
            )
            return len(victims)

    async def _delete_rows(self, tenant: str, victims: Sequence[tuple[str, str]]) -> None:
        if not victims:
            return
        await self._run(self.scalar.delete_ids, [v[0] for v in victims])
        self.exact_cache.forget_ids(v[0] for v in victims)
        by_model: dict[str, list[str]] = {}
        for entry_id, model in victims:
            by_model.setdefault(model, []).append(entry_id)
        for model, ids in by_model.items():
            await self._run(self.vector.delete, tenant, model, ids)

    async def feedback(
        self, principal: Principal, scope: Scope, entry_id: str, messages: Sequence[Message], verdict: str,
        answer: str = "",
    ) -> str:
        """A product's verdict on a served hit; what was done, in words (cache/feedback.py)."""
        with self._admit(scope.tenant):
            return await self.learner.feedback(principal, scope, entry_id, messages, verdict, answer)

    # -- remove / clear ------------------------------------------------------------------
    async def remove(self, principal: Principal, scope: Scope, ids: Sequence[str]) -> int:
        await self._scope(principal, scope)
        checked = check_entry_ids(ids, self.settings.limits)
        if not checked:
            return 0
        deleted = await self._run(self.scalar.delete_entries, scope.tenant, scope.model, checked)
        self.exact_cache.forget_ids(deleted)
        if deleted:
            await self._run(self.vector.delete, scope.tenant, scope.model, deleted)
        return len(deleted)

    async def clear(self, principal: Principal, tenant: str, model: str | None) -> int:
        await self._tenant_for(principal, tenant)
        if model:
            check_model_name(model)
        removed = await self._run(self.scalar.clear, tenant, model or None)
        self.exact_cache.forget_scope(tenant, model or None)
        await self._run(self.vector.clear, tenant, model or None)
        return int(removed)

    # -- stats -----------------------------------------------------------------------------
    async def stats(
        self, principal: Principal, tenant: str, model: str | None, window_s: float, top: int
    ) -> list[ScopeStats]:
        """Per model of a tenant: entries, and from the query log over the window,
        hit ratio and latency percentiles; the most-hit entries."""
        await self._tenant_for(principal, tenant)
        if model:
            check_model_name(model)
        if not 0 < window_s <= 90 * 24 * 3600 or not 0 < top <= 100:
            raise InvalidArgument("window_seconds must be 1..7776000 and top 1..100")
        await self.query_log.flush()  # what was just asked counts
        await self._flush_hits()
        counts = await self._run(self.scalar.models_of_tenant, tenant)
        logged = await self._run(self.scalar.query_log_since, tenant, model or None, self._clock() - window_s)
        logged = [row for row in logged if ":" not in row[1]]  # feedback:* and verify:* rows are not queries
        tops = await self._run(self.scalar.top_entries, tenant, model or None, top * max(1, len(counts)))
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
                    p50_latency_ms=_percentile(latencies, 0.50),
                    p99_latency_ms=_percentile(latencies, 0.99),
                    top_entries=[(i, q, h) for m, i, q, h in tops if m == name][:top],
                )
            )
        return out

    # -- tenants ---------------------------------------------------------------------------
    async def create_tenant(self, principal: Principal, name: str, config: TenantConfig) -> Tenant:
        principal.check_admin()
        await self.embedders.get(config.embedding_model)  # refuse a model that cannot load
        return await self.tenants.create(name, config)

    async def get_tenant(self, principal: Principal, name: str) -> Tenant:
        principal.check_admin()
        tenant = await self.tenants.get(name)
        count = await self._run(self.scalar.count_entries, name, None)
        return _with_entries(tenant, count)

    async def list_tenants(self, principal: Principal) -> list[Tenant]:
        principal.check_admin()
        tenants = await self.tenants.list()
        counts = await self._run(self.scalar.count_by_tenant)
        return [_with_entries(t, counts.get(t.name, 0)) for t in tenants]

    async def update_tenant(self, principal: Principal, name: str, config: TenantConfig) -> Tenant:
        principal.check_admin()
        await self.embedders.get(config.embedding_model)
        tenant = await self.tenants.update(name, config)
        self.exact_cache.forget_scope(name)
        if tenant.config.max_entries:
            await self._enforce_capacity(tenant)
        count = await self._run(self.scalar.count_entries, name, None)
        return _with_entries(tenant, count)

    async def delete_tenant(self, principal: Principal, name: str) -> int:
        principal.check_admin()
        await self.tenants.get(name)
        removed = await self._run(self.scalar.clear, name, None)
        self.exact_cache.forget_scope(name)
        await self._run(self.vector.clear, name, None)
        await self.tenants.delete(name)
        return int(removed)

    async def reindex(self, principal: Principal, name: str, page: int = 256) -> int:
        """Re-embed every entry of a tenant with its current model.

        Entries already embedded by that model are skipped; the vectors of the
        old model are deleted once the new ones are written.
        """
        principal.check_admin()
        tenant = await self.tenants.get(name)
        done = 0
        after = ""
        while True:
            rows = await self._run(self.scalar.entries_of_tenant, name, after, page)
            if not rows:
                return done
            after = rows[-1].id
            # Each row belongs to the model its question is routed to (the CJK model or the tenant's).
            wanted = [await self.embedders.for_text(tenant.config.embedding_model, r.question) for r in rows]
            stale_idx = [i for i, r in enumerate(rows) if r.embed_model != wanted[i].model_id]
            for embedder, idx in _by_embedder([wanted[i] for i in stale_idx]):
                stale = [rows[stale_idx[i]] for i in idx]
                await self._run(self.vector.ensure_collection, embedder.model_id, embedder.dim)
                vectors = await embedder.embed_many([r.question for r in stale])
                by_model: dict[str, list[int]] = {}
                for i, r in enumerate(stale):
                    by_model.setdefault(r.model, []).append(i)
                for model, sub in by_model.items():
                    await self._run(
                        self.vector.insert,
                        embedder.model_id,
                        name,
                        model,
                        [(stale[i].id, stale[i].context_hash) for i in sub],
                        vectors[sub],
                    )
                ids = [r.id for r in stale]
                await self._run(self.scalar.set_embed_model, ids, embedder.model_id)
                await self._run(self.vector.delete_ids, ids, embedder.model_id)
                done += len(stale)

    async def repair(self, principal: Principal, name: str | None = None) -> RepairReport:
        """Make the two stores agree: re-embed rows whose vector is missing (a crash
        between the two writes), delete vectors whose row is gone (a failed delete).
        Rows embedded by another model than the tenant's are reindex's business."""
        principal.check_admin()
        tenants = [await self.tenants.get(name)] if name else await self.tenants.list()
        report = RepairReport()
        for tenant in tenants:
            used: dict[str, EmbeddingBatcher] = {}
            after = ""
            while True:
                rows = await self._run(self.scalar.entries_of_tenant, tenant.name, after, 500)
                if not rows:
                    break
                after = rows[-1].id
                report.rows_checked += len(rows)
                wanted = [await self.embedders.for_text(tenant.config.embedding_model, r.question) for r in rows]
                for embedder, idx in _by_embedder(wanted):
                    used[embedder.model_id] = embedder
                    current = [rows[i] for i in idx if rows[i].embed_model == embedder.model_id]
                    present = await self._run(
                        self.vector.existing_ids, embedder.model_id, embedder.dim, [r.id for r in current]
                    )
                    missing = [r for r in current if r.id not in present]
                    if missing:
                        vectors = await embedder.embed_many([r.question for r in missing])
                        for model in sorted({r.model for r in missing}):
                            sub = [i for i, r in enumerate(missing) if r.model == model]
                            items = [(missing[i].id, missing[i].context_hash) for i in sub]
                            await self._run(
                                self.vector.insert, embedder.model_id, tenant.name, model, items, vectors[sub]
                            )
                        report.vectors_added += len(missing)
            if not used:
                default = await self.embedders.get(tenant.config.embedding_model)
                used[default.model_id] = default
            for embedder in used.values():
                report.vectors_removed += await self._run(
                    self._remove_orphan_vectors, embedder.model_id, embedder.dim, tenant.name
                )
        if report.vectors_added or report.vectors_removed:
            log.warning("repair: %s", report)
        return report

    def _remove_orphan_vectors(self, embed_model: str, dim: int, tenant: str) -> int:
        orphans: list[str] = []
        for ids in self.vector.iter_tenant_ids(embed_model, dim, tenant):
            rows = self.scalar.get_entries(ids, 0.0)  # expired or not: only a missing row makes an orphan
            orphans.extend(i for i in ids if i not in rows)
        for start in range(0, len(orphans), 500):
            self.vector.delete_ids(orphans[start:start + 500])
        return len(orphans)

    async def create_api_key(self, principal: Principal, tenant: str) -> tuple[str, str]:
        principal.check_admin()
        record, key = await self.tenants.create_api_key(tenant)
        return record.id, key

    async def revoke_api_key(self, principal: Principal, key_id: str) -> None:
        principal.check_admin()
        if not isinstance(key_id, str) or not key_id or len(key_id) > 64:
            raise InvalidArgument("key id is invalid")
        await self.tenants.revoke_api_key(key_id)

    # -- background: hit counters and expiry --------------------------------------------------
    async def _background(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(0.5)
            ticks += 1
            try:
                await self._flush_hits()
                if ticks % 10 == 0:
                    await self.expire()
                    self.metrics.set_entries(await self._run(self.scalar.count_by_tenant))
            except Exception:
                log.exception("background maintenance failed; will retry")

    async def _flush_hits(self) -> None:
        """Write the hits counted in memory. Returns once every hit counted before the call is written
        (or given up on), including those a flush already under way took."""
        async with self._hits_lock:
            if not self._hits:
                return
            hits, self._hits = self._hits, []
            try:
                await self._run(self.scalar.record_hits, hits)
            except Unavailable:
                log.warning("could not record %d hits: scalar store unavailable", len(hits))

    async def expire(self) -> int:
        """Delete expired entries from both stores (queries already skip them)."""
        total = 0
        while True:
            rows = await self._run(self.scalar.expired, self._clock(), 1000)
            if not rows:
                await self._run(self.scalar.purge_pending_verifications,
                                self._clock() - self.settings.verify_pending_ttl_s)
                return total
            by_tenant: dict[str, list[tuple[str, str]]] = {}
            for entry_id, tenant, model in rows:
                by_tenant.setdefault(tenant, []).append((entry_id, model))
            for tenant, victims in by_tenant.items():
                await self._delete_rows(tenant, victims)
            self.metrics.count(self.metrics.expirations, amount=len(rows))
            total += len(rows)

    # -- moving entries between servers (cache/transfer.py; its records: ExportPage, CarriedEntry, ImportReport)
    async def export_entries(
        self, principal: Principal, tenant: str, model: str, after_id: str, limit: int, with_vectors: bool = True
    ) -> Any:
        from . import transfer

        return await transfer.export_page(self, principal, tenant, model, after_id, limit, with_vectors)

    async def import_entries(
        self, principal: Principal, tenant: str, config: TenantConfig | None, entries: Sequence[Any]
    ) -> Any:
        from . import transfer

        with self._admit(tenant):
            return await transfer.import_entries(self, principal, tenant, config, entries)


@dataclass(slots=True)
class RepairReport:
    rows_checked: int = 0
    vectors_added: int = 0
    vectors_removed: int = 0


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


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return float(sorted_values[index])


def _with_entries(tenant: Tenant, count: int) -> Tenant:
    return Tenant(tenant.name, tenant.config, tenant.created_at, count)


def _by_embedder(embedders: Sequence[EmbeddingBatcher]) -> list[tuple[EmbeddingBatcher, list[int]]]:
    """Positions grouped by the model that embeds them, in first-seen order."""
    groups: dict[str, tuple[EmbeddingBatcher, list[int]]] = {}
    for i, embedder in enumerate(embedders):
        groups.setdefault(embedder.model_id, (embedder, []))[1].append(i)
    return list(groups.values())
