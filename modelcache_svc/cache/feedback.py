"""Learning from feedback: the Feedback call, verification sampling, and the learned hit decision.

The core (service.py) calls in at three points: ``choose`` picks what a semantic query serves among
its candidates (or which one it verifies), ``verify_written`` scores a write-back that carries
``verifies``, and ``feedback`` handles the Feedback call. The model itself is learned_threshold.py.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidArgument, NotFound
from .keys import ENTRY_ID, ChatKey, check_answer
from .learned_threshold import EMPTY_POOL, Decision, ModelSettings, PooledEvidence, decide
from .querylog import QueryLogRow
from ..records import EntryLearning, EntryRow, Message, NewEntry, Observation, Scope, Tenant

if TYPE_CHECKING:
    from ..embedding import EmbeddingBatcher
    from ..stores.base import VectorHit
    from .service import CacheCore
    from .tenants import Principal

log = logging.getLogger("modelcache_svc.feedback")
VERDICTS = ("correct", "wrong")
POOL_SIZE = 5_000  # a tenant's newest observations that make its pooled evidence


Candidate = tuple[float, "VectorHit", EntryRow]  # (similarity on the common threshold scale, hit, row)


@dataclass(frozen=True, slots=True)
class Choice:
    """What a semantic query does with its candidates: serve one, verify one, or neither (a miss)."""

    serve: Candidate | None = None
    verify: Candidate | None = None


def learning_active(tenant: Tenant) -> bool:
    return tenant.config.max_error_rate is not None or tenant.config.verify_rate > 0


def normalise_answer(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


class Learner:
    def __init__(self, core: CacheCore, rng: random.Random | None = None) -> None:
        self.core = core
        s = core.settings
        self.model = ModelSettings()
        self._rng = rng or random.Random()
        self._pools: dict[str, tuple[float, PooledEvidence]] = {}
        self._keep = s.feedback_keep_per_entry
        self._margin = s.feedback_floor_margin

    @property
    def _run(self) -> Callable[..., Awaitable[Any]]:
        return self.core._run

    # -- the hit decision --------------------------------------------------------------------
    def candidate_floor(self, tenant: Tenant, threshold: float, explicit: bool) -> float:
        """The lowest similarity worth reading: with max_error_rate set (and no threshold in the request),
        learned evidence may serve below the tenant threshold."""
        if tenant.config.max_error_rate is None or explicit:
            return threshold
        return min(threshold, self.core.settings.learned_min_similarity)

    async def pool(self, tenant: Tenant) -> PooledEvidence:
        if not learning_active(tenant):
            return EMPTY_POOL
        now = time.monotonic()
        cached = self._pools.get(tenant.name)
        if cached is not None and cached[0] > now:
            return cached[1]
        pool = PooledEvidence(await self._run(self.core.scalar.tenant_observations, tenant.name, POOL_SIZE))
        self._pools[tenant.name] = (now + self.core.settings.feedback_pool_ttl_s, pool)
        if len(self._pools) > 10_000:
            self._pools.clear()
        self.core.metrics.observed_error(tenant.name, pool.error_rate)
        return pool

    def choose(
        self,
        tenant: Tenant,
        ranked: Sequence[Candidate],
        learning: dict[str, EntryLearning],
        threshold: float,
        pool: PooledEvidence,
    ) -> Choice:
        """Walk the candidates best first: serve the first the model serves (or verify it, at the tenant's
        rate, when it is uncertain); a refused but uncertain one is offered for verification on the miss."""
        config = tenant.config
        explore: Candidate | None = None
        for candidate in ranked:
            similarity, _, row = candidate
            d: Decision = decide(learning.get(row.id), similarity, threshold, config.max_error_rate, pool, self.model)
            if d.serve:
                if d.uncertain and config.verify_rate > 0 and self._rng.random() < config.verify_rate:
                    return Choice(verify=candidate)
                return Choice(serve=candidate)
            if d.uncertain and explore is None and config.verify_rate > 0:
                explore = candidate  # a miss anyway: verifying it costs the product nothing more
        return Choice(verify=explore)

    async def offer(self, scope: Scope, key: ChatKey, entry_id: str, similarity: float) -> None:
        """Remember the similarity a verification was offered at until the product writes back."""
        await self._run(self.core.scalar.add_pending_verification, entry_id, key.exact_key, scope.tenant,
                        float(similarity), self.core._clock())

    # -- verification write-backs ----------------------------------------------------------
    async def verify_written(self, scope: Scope, written: Sequence[tuple[NewEntry, ChatKey, EmbeddingBatcher]]) -> None:
        """Score each stored write-back that names the entry it verifies: the same answer (normalised), or one
        whose embedding's cosine reaches verify_answer_similarity, is a CORRECT for that entry."""
        if not written:
            return
        now = self.core._clock()
        rows = await self._run(self.core.scalar.get_entries, [e.verifies for e, _, _ in written], now)
        observations: list[Observation] = []
        for entry, key, embedder in written:
            entry_id = entry.verifies
            row = rows.get(entry_id)
            if row is None or row.tenant != scope.tenant or row.model != scope.model:
                self.core.metrics.verification(scope.tenant, "unknown_entry")
                continue
            if row.exact_key == key.exact_key:
                continue  # the entry's own chat, re-written: nothing to compare
            similarity = await self._run(
                self.core.scalar.take_pending_verification, entry_id, key.exact_key,
                now - self.core.settings.verify_pending_ttl_s,
            )
            if similarity is None:  # no pending record (expired, or never offered): measure it again
                va, vb = await embedder.embed_many([key.question, row.question])
                similarity = embedder.reported(float(np.dot(va, vb)))
            agree = await self._answers_agree(embedder, entry.answer, row.answer)
            observations.append(Observation(entry_id, scope.tenant, similarity, not agree, "verify",
                                            key.exact_key, now))
            self.core.metrics.verification(scope.tenant, "agree" if agree else "disagree")
            self._log(scope, "verify:" + ("correct" if agree else "wrong"), entry_id, similarity)
        if observations:
            await self._run(self.core.scalar.record_observations, observations, self._keep, self._margin)
            self._pools.pop(scope.tenant, None)

    async def _answers_agree(self, embedder: EmbeddingBatcher, a: str, b: str) -> bool:
        if normalise_answer(a) == normalise_answer(b):
            return True
        va, vb = await embedder.embed_many([a, b])
        return float(np.dot(va, vb)) >= self.core.settings.verify_answer_similarity

    # -- the Feedback call -----------------------------------------------------------------
    async def feedback(
        self, principal: Principal, scope: Scope, entry_id: str, messages: Sequence[Message], verdict: str,
        answer: str = "",
    ) -> str:
        core = self.core
        tenant = await core._scope(principal, scope)
        verdict = verdict.lower() if isinstance(verdict, str) else ""
        if verdict not in VERDICTS:
            raise InvalidArgument("verdict must be CORRECT or WRONG")
        if not isinstance(entry_id, str) or not ENTRY_ID.match(entry_id):
            raise InvalidArgument("entry_id is invalid: ids are 32 lowercase hex characters")
        key = core._chat_key(messages)
        if answer:
            if verdict != "wrong":
                raise InvalidArgument("answer goes with a WRONG verdict only (the right answer for that chat)")
            answer = check_answer(answer, core.settings.limits)
        now = core._clock()
        row = (await self._run(core.scalar.get_entries, [entry_id], now)).get(entry_id)
        if row is None or row.tenant != scope.tenant or row.model != scope.model:
            raise NotFound(f"no entry {entry_id} in tenant {scope.tenant!r}, model {scope.model!r}")
        if row.context_hash != key.context_hash:
            raise InvalidArgument("the chat's context (system prompt, earlier turns) is not the entry's: "
                                  "this entry was never served for it")
        wrong = verdict == "wrong"
        core.metrics.feedback(scope.tenant, verdict)
        if row.exact_key == key.exact_key:  # the entry's own question
            action = await self._own_chat(principal, scope, row, key, wrong, answer, now)
            self._log(scope, "feedback:" + verdict, entry_id, 1.0)
            return action
        embedder = await core.embedders.for_text(tenant.config.embedding_model, key.question)
        vectors = await embedder.embed_many([key.question, row.question])
        similarity = embedder.reported(float(np.dot(vectors[0], vectors[1])))
        observation = Observation(entry_id, scope.tenant, similarity, wrong, "user", key.exact_key, now)
        recorded = await self._run(core.scalar.record_observations, [observation], self._keep, self._margin)
        self._pools.pop(scope.tenant, None)
        self._log(scope, "feedback:" + verdict, entry_id, similarity)
        if not recorded:
            raise NotFound(f"entry {entry_id} was deleted meanwhile")
        if not wrong:
            return f"recorded CORRECT for entry {entry_id} at similarity {similarity:.4f}"
        action = (f"entry {entry_id} no longer serves this chat, nor any less similar than {similarity:.4f} "
                  "(its floor)")
        if answer:
            new_id = (await core.insert(principal, scope, [NewEntry(tuple(key.messages), answer)])).ids[0]
            action += f"; the right answer is cached for this chat as entry {new_id}"
        return action

    async def _own_chat(
        self, principal: Principal, scope: Scope, row: EntryRow, key: ChatKey, wrong: bool, answer: str, now: float
    ) -> str:
        core = self.core
        if not wrong:
            observation = Observation(row.id, scope.tenant, 1.0, False, "user", key.exact_key, now)
            await self._run(core.scalar.record_observations, [observation], self._keep, self._margin)
            return f"recorded CORRECT for entry {row.id} on its own question"
        if answer:
            metadata = json.loads(row.metadata_json) if row.metadata_json else {}
            await core.insert(principal, scope, [NewEntry(tuple(key.messages), answer, 0, metadata)])
            return f"replaced the answer of entry {row.id} (the chat is its own question); what it had learned is reset"
        await core.remove(principal, scope, [row.id])
        return f"removed entry {row.id}: its answer is wrong for its own question"

    def _log(self, scope: Scope, kind: str, entry_id: str, similarity: float) -> None:
        try:
            self.core.query_log.record(
                QueryLogRow(ts=self.core._clock(), tenant=scope.tenant, model=scope.model, match_kind=kind,
                            similarity=similarity, entry_id=entry_id, latency_ms=0.0, error="", request_id="")
            )
        except Exception:  # the log never fails a call
            log.debug("query log: feedback row not recorded", exc_info=True)
