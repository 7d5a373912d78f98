"""Learning from feedback: the Feedback call, verification sampling, and the learned hit decision.

The query path (lookup.py) calls in at three points: ``candidate_floor`` says how low to read, ``pool`` and
``choose`` pick what a semantic query serves among its candidates (or which one it verifies; the choice
itself is decide.py's ``learned_choice``), and ``offer`` remembers a verification offered. The write path
(writer.py) calls ``verify_written`` to score a write-back that carries ``verifies``, and the core's
Feedback goes to ``feedback``. The model itself is learned_threshold.py. What the Learner needs of the rest
of the core is handed to it: the tenant registry, the chat-key memo, the query log, and Insert and Remove
as callables.

State lives in the scalar store (migration 0002), so replicas share it and it survives restarts:
observations and floors per entry, and pending verifications (the similarity a verification miss was
answered at, keyed by (entry id, exact key of the chat), until the write-back, at most
``verify_pending_ttl_s``). The only state in this process is each tenant's pooled evidence, re-read
at most every ``feedback_pool_ttl_s`` seconds: a replica sees another's evidence within that bound.
An entry's floor and own observations are read with its row on every query, never cached.
"""

from __future__ import annotations

import json
import logging
import random
import time
import unicodedata
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from ..embedding import EmbeddingBatcher
from ..errors import InvalidArgument, NotFound
from ..records import EntryLearning, EntryRow, InsertResult, Message, NewEntry, Observation, Scope, Tenant
from .decide import Candidate, Choice, learned_choice, learning_active
from .keys import ENTRY_ID, ChatKey, ChatKeyMemo, check_answer
from .learned_threshold import EMPTY_POOL, ModelSettings, PooledEvidence
from .querylog import QueryLog, QueryLogRow
from .routing import route_and_key
from .runtime import Runtime
from .tenants import Principal, TenantRegistry

log = logging.getLogger("modelcache_svc.feedback")
VERDICTS = ("correct", "wrong")
POOL_SIZE = 5_000  # a tenant's newest observations that make its pooled evidence

Insert = Callable[[Principal, Scope, Sequence[NewEntry]], Awaitable[InsertResult]]
Remove = Callable[[Principal, Scope, Sequence[str]], Awaitable[int]]


def normalise_answer(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


class Learner:
    def __init__(
        self,
        runtime: Runtime,
        tenants: TenantRegistry,
        chat_keys: ChatKeyMemo,
        query_log: QueryLog,
        *,
        insert: Insert,
        remove: Remove,
        rng: random.Random | None = None,
    ) -> None:
        self.runtime = runtime
        self.tenants = tenants
        self.chat_keys = chat_keys
        self.query_log = query_log
        self.insert = insert
        self.remove = remove
        self.model = ModelSettings()
        self._rng = rng or random.Random()
        self._pools: dict[str, tuple[float, PooledEvidence]] = {}
        self._keep = runtime.settings.feedback_keep_per_entry
        self._margin = runtime.settings.feedback_floor_margin
        self._run = runtime.run

    # -- the hit decision --------------------------------------------------------------------
    def candidate_floor(self, tenant: Tenant, threshold: float, explicit: bool) -> float:
        """The lowest similarity worth reading: with max_error_rate set (and no threshold in the request),
        learned evidence may serve below the tenant threshold."""
        if tenant.config.max_error_rate is None or explicit:
            return threshold
        return min(threshold, self.runtime.settings.learned_min_similarity)

    async def pool(self, tenant: Tenant) -> PooledEvidence:
        if not learning_active(tenant):
            return EMPTY_POOL
        now = time.monotonic()
        cached = self._pools.get(tenant.name)
        if cached is not None and cached[0] > now:
            return cached[1]
        pool = PooledEvidence(await self._run(self.runtime.scalar.tenant_observations, tenant.name, POOL_SIZE))
        self._pools[tenant.name] = (now + self.runtime.settings.feedback_pool_ttl_s, pool)
        if len(self._pools) > 10_000:
            self._pools.clear()
        self.runtime.metrics.observed_error(tenant.name, pool.error_rate)
        return pool

    def choose(
        self,
        tenant: Tenant,
        ranked: Sequence[Candidate],
        learning: dict[str, EntryLearning],
        threshold: float,
        pool: PooledEvidence,
    ) -> Choice:
        """decide.py's learned choice with this learner's model settings and random draws."""
        return learned_choice(tenant.config, ranked, learning, threshold, pool, self.model, self._rng)

    async def offer(self, scope: Scope, key: ChatKey, entry_id: str, similarity: float) -> None:
        """Remember the similarity a verification was offered at until the product writes back."""
        await self._run(self.runtime.scalar.add_pending_verification, entry_id, key.exact_key, scope.tenant,
                        float(similarity), self.runtime.clock())

    # -- verification write-backs ----------------------------------------------------------
    async def verify_written(self, scope: Scope, written: Sequence[tuple[NewEntry, ChatKey, EmbeddingBatcher]]) -> None:
        """Score each stored write-back that names the entry it verifies: the same answer (normalised), or one
        whose embedding's cosine reaches verify_answer_similarity, is a CORRECT for that entry."""
        if not written:
            return
        now = self.runtime.clock()
        rows = await self._run(self.runtime.scalar.get_entries, [e.verifies for e, _, _ in written], now)
        observations: list[Observation] = []
        for entry, key, embedder in written:
            entry_id = entry.verifies
            row = rows.get(entry_id)
            if row is None or row.tenant != scope.tenant or row.model != scope.model:
                self.runtime.metrics.verification(scope.tenant, "unknown_entry")
                continue
            if row.exact_key == key.exact_key:
                continue  # the entry's own chat, re-written: nothing to compare
            similarity = await self._run(
                self.runtime.scalar.take_pending_verification, entry_id, key.exact_key,
                now - self.runtime.settings.verify_pending_ttl_s,
            )
            if similarity is None:  # no pending record (expired, or never offered): measure it again
                va, vb = await embedder.embed_many([key.question, row.question])
                similarity = embedder.reported(float(np.dot(va, vb)))
            agree = await self._answers_agree(embedder, entry.answer, row.answer)
            observations.append(Observation(entry_id, scope.tenant, similarity, not agree, "verify",
                                            key.exact_key, now))
            self.runtime.metrics.verification(scope.tenant, "agree" if agree else "disagree")
            self._log(scope, "verify:" + ("correct" if agree else "wrong"), entry_id, similarity)
        if observations:
            await self._run(self.runtime.scalar.record_observations, observations, self._keep, self._margin)
            self._pools.pop(scope.tenant, None)

    async def _answers_agree(self, embedder: EmbeddingBatcher, a: str, b: str) -> bool:
        if normalise_answer(a) == normalise_answer(b):
            return True
        va, vb = await embedder.embed_many([a, b])
        return float(np.dot(va, vb)) >= self.runtime.settings.verify_answer_similarity

    # -- the Feedback call -----------------------------------------------------------------
    async def feedback(
        self, principal: Principal, scope: Scope, entry_id: str, messages: Sequence[Message], verdict: str,
        answer: str = "",
    ) -> str:
        rt = self.runtime
        tenant = await self.tenants.for_scope(principal, scope)
        verdict = verdict.lower() if isinstance(verdict, str) else ""
        if verdict not in VERDICTS:
            raise InvalidArgument("verdict must be CORRECT or WRONG")
        if not isinstance(entry_id, str) or not ENTRY_ID.match(entry_id):
            raise InvalidArgument("entry_id is invalid: ids are 32 lowercase hex characters")
        embedder, key = await route_and_key(rt, tenant, self.chat_keys.key(messages, rt.settings.limits))
        if answer:
            if verdict != "wrong":
                raise InvalidArgument("answer goes with a WRONG verdict only (the right answer for that chat)")
            answer = check_answer(answer, rt.settings.limits)
        now = rt.clock()
        row = (await self._run(rt.scalar.get_entries, [entry_id], now)).get(entry_id)
        if row is None or row.tenant != scope.tenant or row.model != scope.model:
            raise NotFound(f"no entry {entry_id} in tenant {scope.tenant!r}, model {scope.model!r}")
        if row.context_hash != key.context_hash:
            raise InvalidArgument("the chat's context (system prompt, earlier turns) is not the entry's: "
                                  "this entry was never served for it")
        wrong = verdict == "wrong"
        rt.metrics.feedback(scope.tenant, verdict)
        if row.exact_key == key.exact_key:  # the entry's own question
            action = await self._own_chat(principal, scope, row, key, wrong, answer, now)
            self._log(scope, "feedback:" + verdict, entry_id, 1.0)
            return action
        vectors = await embedder.embed_many([key.question, row.question])
        similarity = embedder.reported(float(np.dot(vectors[0], vectors[1])))
        observation = Observation(entry_id, scope.tenant, similarity, wrong, "user", key.exact_key, now)
        recorded = await self._run(rt.scalar.record_observations, [observation], self._keep, self._margin)
        self._pools.pop(scope.tenant, None)
        self._log(scope, "feedback:" + verdict, entry_id, similarity)
        if not recorded:
            raise NotFound(f"entry {entry_id} was deleted meanwhile")
        if not wrong:
            return f"recorded CORRECT for entry {entry_id} at similarity {similarity:.4f}"
        action = (f"entry {entry_id} no longer serves this chat, nor any less similar than {similarity:.4f} "
                  "(its floor)")
        if answer:
            new_id = (await self.insert(principal, scope, [NewEntry(tuple(key.messages), answer)])).ids[0]
            action += f"; the right answer is cached for this chat as entry {new_id}"
        return action

    async def _own_chat(
        self, principal: Principal, scope: Scope, row: EntryRow, key: ChatKey, wrong: bool, answer: str, now: float
    ) -> str:
        if not wrong:
            observation = Observation(row.id, scope.tenant, 1.0, False, "user", key.exact_key, now)
            await self._run(self.runtime.scalar.record_observations, [observation], self._keep, self._margin)
            return f"recorded CORRECT for entry {row.id} on its own question"
        if answer:
            metadata = json.loads(row.metadata_json) if row.metadata_json else {}
            await self.insert(principal, scope, [NewEntry(tuple(key.messages), answer, 0, metadata)])
            return f"replaced the answer of entry {row.id} (the chat is its own question); what it had learned is reset"
        await self.remove(principal, scope, [row.id])
        return f"removed entry {row.id}: its answer is wrong for its own question"

    def _log(self, scope: Scope, kind: str, entry_id: str, similarity: float) -> None:
        try:
            self.query_log.record(
                QueryLogRow(ts=self.runtime.clock(), tenant=scope.tenant, model=scope.model, match_kind=kind,
                            similarity=similarity, entry_id=entry_id, latency_ms=0.0, error="", request_id="")
            )
        except Exception:  # the log never fails a call
            log.debug("query log: feedback row not recorded", exc_info=True)
