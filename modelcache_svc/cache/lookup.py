"""The read path of a Query: validate, the cacheability verdict, the exact lookup, then the semantic one
(embed, search and read, then decide.py's choice, with the verifier asked about the uncertain candidates).

Each stage is timed (metrics stage ``validate``, ``exact_lookup``, ``embed``, ``vector_search``,
``scalar_read``, ``verify``); CacheCore.query (service.py) adds ``total``, the per-tenant limit, fail-open
and the query log around it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..embedding import EmbeddingBatcher
from ..errors import InvalidArgument
from ..records import EntryLearning, EntryRow, MatchKind, Message, QueryResult, Scope, Tenant
from ..stores.base import VectorHit
from ..verifier.pool import VerifierPool
from . import decide
from .cacheability import judge
from .decide import Candidate
from .feedback import Learner
from .hits import HitCounter
from .keys import ChatKey, ChatKeyMemo
from .matching import guard_veto, resolve_threshold
from .runtime import Runtime
from .tenants import Principal, TenantRegistry
from .verifier_gate import Gate, gate_for, verifier_applies
from .tasks import QUESTION, TaskReader
from .window import split_instruction
from .routing import route_and_key


class Lookup:
    def __init__(
        self,
        runtime: Runtime,
        tenants: TenantRegistry,
        chat_keys: ChatKeyMemo,
        hits: HitCounter,
        learner: Learner,
        verifiers: VerifierPool,
    ) -> None:
        self.runtime = runtime
        self.tenants = tenants
        self.chat_keys = chat_keys
        self.hits = hits
        self.learner = learner
        self.verifiers = verifiers
        self.tasks = TaskReader()

    async def query(
        self,
        principal: Principal,
        scope: Scope,
        messages: Sequence[Message],
        similarity_threshold: float | None,
        top_k: int,
        start: float,
    ) -> QueryResult:
        rt = self.runtime
        settings = rt.settings
        tenant = await self.tenants.for_scope(principal, scope)
        key = self.chat_keys.key(messages, settings.limits)
        threshold = resolve_threshold(similarity_threshold, tenant.config.similarity_threshold, settings.similarity_threshold)
        if top_k < 0 or top_k > settings.limits.max_top_k:
            raise InvalidArgument(f"top_k must be 0..{settings.limits.max_top_k}")
        rt.metrics.stage("validate", time.perf_counter() - start)
        # Before the exact lookup: an entry stored under an older, laxer policy is not served either.
        verdict = judge(tenant, key.question, "query", rt.metrics)
        if verdict is not None and verdict.refused:
            return QueryResult(False, MatchKind.MISS, uncacheable=verdict.klass)
        now = rt.clock()
        row = await self.exact(scope, key, now)
        if row is not None:
            self.hits.record(row.id, now)
            return QueryResult(True, MatchKind.EXACT, row.answer, row.id, 1.0, row.question)
        embedder, key = await route_and_key(rt, tenant, key)
        return await self.semantic(
            embedder, scope, tenant, key, threshold, similarity_threshold is not None, top_k or settings.top_k, now
        )

    async def exact(self, scope: Scope, key: ChatKey, now: float) -> EntryRow | None:
        """The live row of this very chat: from the exact-hit cache, else the scalar store."""
        rt = self.runtime
        cache = rt.exact_cache
        with rt.metrics.timed("exact_lookup"):
            cache_key = (scope.tenant, scope.model, key.exact_key)
            row = cache.get(cache_key, now) if cache.enabled else None
            if row is None:
                generation = cache.generation
                row = await rt.run(rt.scalar.get_by_exact_key, scope.tenant, scope.model, key.exact_key, now)
                if row is not None:
                    cache.put(cache_key, row, generation)
        return row

    async def semantic(
        self, embedder: EmbeddingBatcher, scope: Scope, tenant: Tenant, key: ChatKey, threshold: float,
        explicit: bool, top_k: int, now: float,
    ) -> QueryResult:
        rt = self.runtime
        with rt.metrics.timed("embed"):
            vector = await self.embed_question(embedder, key.question)
        verifier = self.verifiers.for_language(key.language) if verifier_applies(tenant.config) else None
        gate = None if verifier is None else gate_for(
            verifier.options.band_low, verifier.options.band_high, verifier.options.cutoff,
            tenant.config.verifier, tenant.config.verifier_cutoff,
            threshold if explicit or tenant.config.similarity_threshold is not None else None)
        floor = self.learner.candidate_floor(tenant, threshold, explicit)
        if gate is not None:
            floor = min(floor, gate.floor(threshold))
        # Search and read in one trip to the pool (each stage still timed on its own).
        # Thresholds, reported similarities and what feedback learns are on one scale for every model
        # (FolderOptions); only the vector search speaks the model's own cosine.
        hits, rows, learning = await rt.run(
            self.search_and_read, embedder.model_id, scope, key.context_hash, vector, top_k,
            embedder.threshold_cosine(floor), now,
        )
        if not learning and not decide.learning_active(tenant):
            learning = None  # nothing learned here: the plain decision
        similarities = [embedder.reported(h.similarity) for h in hits]
        live, vetoes = decide.live(key.question, key.context_hash, scope, hits, rows, similarities,
                                   rt.settings.precision_guard, key.language)
        for reason in vetoes:
            rt.metrics.count(rt.metrics.guard_vetoes, reason)
        if key.instruction and live:
            live = await self.same_task(embedder, key.instruction, live, key.language)
        if gate is not None and verifier is not None:
            live = await self.verified(verifier, gate, key.question, live, threshold)
        weight = rt.settings.rerank_lexical_weight
        if learning is None:
            served = decide.best(key.question, live, weight)
        else:  # the learned decision walks every candidate, best first
            pool = await self.learner.pool(tenant)
            choice = self.learner.choose(tenant, decide.ranked(key.question, live, weight), learning, threshold, pool)
            if choice.verify is not None:
                await self.learner.offer(scope, key, choice.verify.row.id, choice.verify.similarity)
                return QueryResult.miss(verify_entry_id=choice.verify.row.id)
            served = choice.serve
        if served is None:
            return QueryResult.miss()
        row = served.row
        self.hits.record(row.id, now)
        return QueryResult(True, MatchKind.SEMANTIC, row.answer, row.id, embedder.reported(served.hit.similarity),
                           row.question)

    async def verified(
        self, verifier: Any, gate: Gate, question: str, live: list[Candidate], threshold: float
    ) -> list[Candidate]:
        """The candidates the gate lets through, the uncertain ones read by the verifier in one model call."""
        rt = self.runtime
        uncertain = decide.to_verify(live, gate, threshold)
        probabilities: dict[str, float] = {}
        if uncertain:
            with rt.metrics.timed("verify"):
                scores = await self.verifiers.score(
                    verifier, question, [c.row.question for c in uncertain], [c.similarity for c in uncertain])
            for c, p in zip(uncertain, scores):
                probabilities[c.row.id] = p
                outcome = "accepted" if p >= gate.cutoff else "rejected"
                rt.metrics.count(rt.metrics.verifier_decisions, outcome)
        return decide.verified(live, gate, threshold, probabilities)

    async def same_task(self, embedder: EmbeddingBatcher, instruction: str, live: list[Candidate],
                        language: str = "") -> list[Candidate]:
        """The candidates whose own instruction asks what this long prompt's does (cache/tasks.py): one task
        (two questions: also as alike as ``long_prompt_instruction_threshold`` on the common scale), and no
        guard veto between the two (a count, a target language, a name). Similar wording alone is not one
        task: the CJK model reads "想个标题" and "简要概括" as alike."""
        rt = self.runtime
        theirs = [split_instruction(c.row.question)[0] for c in live]
        texts = [instruction, *{t for t in theirs if t}]
        vectors = dict(zip(texts, await embedder.embed_many(texts)))
        tasks = await self.tasks.tasks(embedder, texts, vectors)
        threshold = rt.settings.long_prompt_instruction_threshold
        kept = []
        for c, other in zip(live, theirs):
            if not other:
                rt.metrics.count(rt.metrics.guard_vetoes, "instruction")
                continue
            alike = embedder.reported(float(vectors[instruction] @ vectors[other])) >= threshold
            mine, yours = tasks[instruction], tasks[other]
            one_task = mine == yours and (mine != QUESTION or alike)
            if not one_task or (
                    rt.settings.precision_guard and guard_veto(instruction, other, language) is not None):
                rt.metrics.count(rt.metrics.guard_vetoes, "instruction")
                continue
            kept.append(c)
        return kept

    async def embed_question(self, embedder: EmbeddingBatcher, question: str) -> Any:
        """The question's vector: remembered for a question asked recently, else the model's."""
        rt = self.runtime
        memo = rt.question_vectors
        if not memo.enabled:
            return await embedder.embed(question)
        vector = memo.get(embedder.model_id, question)
        rt.metrics.count(rt.metrics.question_vectors, "hit" if vector is not None else "miss")
        if vector is None:
            vector = await embedder.embed(question)
            memo.put(embedder.model_id, question, vector)
        return vector

    def search_and_read(
        self, embed_model: str, scope: Scope, context_hash: str, vector: Any, top_k: int, threshold: float,
        now: float,
    ) -> tuple[list[VectorHit], dict[str, EntryRow], dict[str, EntryLearning] | None]:
        """On a pool thread: the candidates above the threshold, their live rows, and what was learned
        about them (feedback: floors, observations)."""
        rt = self.runtime
        with rt.metrics.timed("vector_search"):
            # The collection of the tenant's model: vectors of two models are never compared.
            hits = rt.vector.search(embed_model, scope.tenant, scope.model, context_hash, vector, top_k)
        candidates = [h for h in hits if h.similarity >= threshold]
        if not candidates:
            return [], {}, None
        with rt.metrics.timed("scalar_read"):
            rows = rt.scalar.get_entries([h.id for h in candidates], now)
            return candidates, rows, rt.scalar.learning_of(list(rows))
