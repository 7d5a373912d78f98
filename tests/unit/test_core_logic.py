"""The cache core's logic on in-memory stores, a hashing embedder and a clock the test moves: hits and
misses, expiry, eviction order, remove/clear, tenant validation, cacheability and feedback, each in
milliseconds. The integration tests drive the same paths through real servers and stores.

The embedder hashes words into 64 dimensions, so two questions are as close as the words they share:
the tests compute the similarity they expect with it, rather than trusting a model's judgement.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest

from modelcache_svc import errors
from modelcache_svc.cache.service import CacheCore
from modelcache_svc.cache.tenants import ADMIN
from modelcache_svc.config import Settings
from modelcache_svc.embedding import Embedder, EmbeddingBatcher
from modelcache_svc.embedding.pool import EmbedderPool
from modelcache_svc.records import (
    CacheabilityAction,
    CacheabilityPolicy,
    EvictionPolicy,
    MatchKind,
    Message,
    NewEntry,
    QueryResult,
    Scope,
    TenantConfig,
)
from modelcache_svc.stores.memory import MemoryScalarStore, MemoryVectorStore

DIM = 64
T0 = 1_700_000_000.0
SCOPE = Scope("default", "gpt")


class HashEmbedder:
    """Bag of words hashed into DIM signed buckets: deterministic, instant, and paraphrases that share
    words come out close."""

    def __init__(self, model_id: str = "hash-64") -> None:
        self._model_id = model_id

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
                out[row, h % DIM] += 1.0 if (h >> 32) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        normalised: np.ndarray = out / norms
        return normalised


def cosine(a: str, b: str) -> float:
    va, vb = HashEmbedder().encode([a, b])
    return float(va @ vb)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    core: CacheCore
    scalar: MemoryScalarStore
    vector: MemoryVectorStore
    clock: FakeClock

    async def insert(self, question: str, answer: str, scope: Scope = SCOPE, ttl: int = 0) -> str:
        [entry_id] = (await self.core.insert(ADMIN, scope, [NewEntry((user(question),), answer, ttl)])).ids
        return entry_id

    async def query(self, question: str, scope: Scope = SCOPE, threshold: float | None = None) -> QueryResult:
        return await self.core.query(ADMIN, scope, [user(question)], similarity_threshold=threshold)


def user(text: str) -> Message:
    return Message("user", text)


def load(name: str) -> HashEmbedder:
    """Tenants may name hash:<anything>; any other model cannot load here."""
    if not name.startswith("hash:"):
        raise errors.InvalidArgument(f"no model {name!r} in this test")
    return HashEmbedder(name)


def batcher(embedder: Embedder) -> EmbeddingBatcher:
    return EmbeddingBatcher(embedder, max_wait_ms=0.0)  # a lone caller: no wait for company


def run(scenario: Callable[[Harness], Awaitable[None]], **settings: Any) -> None:
    """The scenario against a started core on fresh in-memory stores; the core stopped afterwards."""

    async def main() -> None:
        values: dict[str, Any] = {"scalar_uri": "memory://", "vector_uri": "memory://", "repair_on_start": False,
                                  "query_log_sample_rate": 0.0, **settings}
        embedders = EmbedderPool(batcher(HashEmbedder()), load, batcher)
        clock = FakeClock()
        scalar, vector = MemoryScalarStore(), MemoryVectorStore()
        core = CacheCore(Settings(**values), scalar, vector, embedders, clock=clock, verifiers=None)
        await core.start()
        try:
            await scenario(Harness(core, scalar, vector, clock))
        finally:
            await core.stop()
            embedders.close()

    asyncio.run(main())


# -- hits and misses ---------------------------------------------------------------------------
ASKED = "how do i reset my account password"
PARAPHRASE = "how can i reset the password of my account"
UNRELATED = "which river flows through the old town"


def test_the_test_embedder_puts_paraphrases_close_and_strangers_far() -> None:
    assert cosine(ASKED, PARAPHRASE) > 0.6
    assert cosine(ASKED, UNRELATED) < 0.3


def test_exact_hit_then_semantic_hit_and_miss_by_threshold() -> None:
    similarity = cosine(ASKED, PARAPHRASE)

    async def scenario(h: Harness) -> None:
        entry_id = await h.insert(ASKED, "Use the reset link.")
        exact = await h.query(ASKED)
        assert (exact.hit, exact.match, exact.id, exact.answer, exact.similarity) == (
            True, MatchKind.EXACT, entry_id, "Use the reset link.", 1.0)
        below = await h.query(PARAPHRASE, threshold=similarity - 0.01)
        assert (below.hit, below.match, below.id, below.matched_question) == (True, MatchKind.SEMANTIC, entry_id, ASKED)
        assert below.similarity == pytest.approx(similarity, abs=1e-5)
        assert not (await h.query(PARAPHRASE, threshold=similarity + 0.01)).hit
        assert not (await h.query(UNRELATED)).hit
        # The tenant's threshold applies when the request names none.
        await h.core.update_tenant(ADMIN, "default", TenantConfig(similarity_threshold=min(1.0, similarity + 0.01)))
        assert not (await h.query(PARAPHRASE)).hit
        await h.core.update_tenant(ADMIN, "default", TenantConfig(similarity_threshold=similarity - 0.01))
        assert (await h.query(PARAPHRASE)).hit

    run(scenario)


def test_a_hit_stays_within_its_model_and_context() -> None:
    async def scenario(h: Harness) -> None:
        await h.insert(ASKED, "Use the reset link.")
        assert not (await h.query(ASKED, Scope("default", "gpt-2"))).hit
        other_context = [Message("system", "You answer about billing."), user(ASKED)]
        assert not (await h.core.query(ADMIN, SCOPE, other_context)).hit

    run(scenario)


# -- expiry: the fake clock moves, nothing sleeps ------------------------------------------------
def test_ttl_serves_until_expiry_entry_ttl_over_tenant_ttl_and_the_sweeper_clears_both_stores() -> None:
    async def scenario(h: Harness) -> None:
        short = await h.insert(ASKED, "one minute", ttl=60)
        forever = await h.insert(UNRELATED, "forever")
        h.clock.advance(59)
        assert (await h.query(ASKED)).hit
        assert (await h.query(PARAPHRASE, threshold=0.5)).hit
        h.clock.advance(1)  # expires_at <= now: expired
        assert not (await h.query(ASKED)).hit
        assert not (await h.query(PARAPHRASE, threshold=0.5)).hit  # its vector is there, its row is not live
        assert (await h.query(UNRELATED)).id == forever

        # The tenant's TTL applies when the entry gives none; the entry's wins otherwise.
        await h.core.create_tenant(ADMIN, "short", TenantConfig(ttl_seconds=10))
        tenant_ttl = await h.insert("tenant ttl", "gone soon", Scope("short", "gpt"))
        entry_ttl = await h.insert("entry ttl", "stays", Scope("short", "gpt"), ttl=3600)
        h.clock.advance(10)
        assert not (await h.query("tenant ttl", Scope("short", "gpt"))).hit
        assert (await h.query("entry ttl", Scope("short", "gpt"))).id == entry_ttl

        assert await h.core.expire() == 2
        gone = [short, tenant_ttl]
        assert h.scalar.get_entries(gone, 0.0) == {}
        assert h.vector.existing_ids("hash-64", DIM, [*gone, forever, entry_ttl]) == {forever, entry_ttl}
        assert (await h.core.get_tenant(ADMIN, "short")).entries == 1
        assert await h.core.expire() == 0

    run(scenario)


def test_short_ttl_class_stores_with_the_short_lifetime() -> None:
    policy = CacheabilityPolicy(time_sensitive=CacheabilityAction.SHORT_TTL, short_ttl_seconds=2)

    async def scenario(h: Harness) -> None:
        await h.core.create_tenant(ADMIN, "news", TenantConfig(ttl_seconds=86400, cacheability=policy))
        news = Scope("news", "gpt")
        await h.insert("What's the gold price today?", "2,400 USD.", news)
        await h.insert("What is the chemical symbol of gold?", "Au.", news)
        hit = await h.query("What's the gold price today?", news)
        assert hit.hit and hit.uncacheable == ""
        h.clock.advance(2)
        assert not (await h.query("What's the gold price today?", news)).hit
        h.clock.advance(86400 - 2 - 1)
        assert (await h.query("What is the chemical symbol of gold?", news)).hit
        h.clock.advance(1)
        assert not (await h.query("What is the chemical symbol of gold?", news)).hit

    run(scenario)


# -- capacity ---------------------------------------------------------------------------------
@pytest.mark.parametrize("policy, evicted", [("lru", 1), ("lfu", 2), ("fifo", 0)])
def test_capacity_evicts_by_policy(policy: str, evicted: int) -> None:
    # At +1 the first entry is written, at +2 the second, hit at +3; at +4 the third; the first is hit at +5.
    # A fourth comes at +30, over max_entries 3: FIFO evicts the oldest (the first), LRU the least recently
    # hit (the second, at +3), LFU the least hit (the third: no hit, and older than the fourth, also at 0).
    questions = ["first cached question about alpha", "second cached question about beta",
                 "third cached question about gamma", "fourth cached question about delta"]

    async def scenario(h: Harness) -> None:
        config = TenantConfig(max_entries=3, eviction_policy=EvictionPolicy(policy))
        await h.core.create_tenant(ADMIN, "capped", config)
        capped = Scope("capped", "gpt")
        ids = []
        for at, step in [(1, "write 0"), (2, "write 1"), (3, "hit 1"), (4, "write 2"), (5, "hit 0"), (30, "write 3")]:
            h.clock.now = T0 + at
            verb, i = step.split()
            if verb == "write":
                ids.append(await h.insert(questions[int(i)], "answer", capped))
            else:
                assert (await h.query(questions[int(i)], capped)).match is MatchKind.EXACT
        kept = set(h.scalar.get_entries(ids, h.clock()))
        assert kept == set(ids) - {ids[evicted]}
        assert h.vector.existing_ids("hash-64", DIM, ids) == kept
        assert not (await h.query(questions[evicted], capped)).hit

    run(scenario)


def test_lowering_max_entries_evicts_at_once() -> None:
    async def scenario(h: Harness) -> None:
        for i in range(4):
            h.clock.advance(1)
            await h.insert(f"question number {i} of many", "a")
        tenant = await h.core.update_tenant(ADMIN, "default", TenantConfig(max_entries=2,
                                                                           eviction_policy=EvictionPolicy.FIFO))
        assert tenant.entries == 2
        assert (await h.query("question number 3 of many")).hit
        assert not (await h.query("question number 0 of many")).hit

    run(scenario)


# -- remove, clear ----------------------------------------------------------------------------
def test_remove_and_clear_take_rows_and_vectors() -> None:
    async def scenario(h: Harness) -> None:
        a = await h.insert(ASKED, "a")
        b = await h.insert(UNRELATED, "b")
        c = await h.insert(ASKED, "c", Scope("default", "gpt-2"))
        assert await h.core.remove(ADMIN, Scope("default", "gpt-2"), [a]) == 0  # another scope's id
        assert await h.core.remove(ADMIN, SCOPE, [a]) == 1
        assert await h.core.remove(ADMIN, SCOPE, [a]) == 0
        assert not (await h.query(ASKED)).hit
        assert not (await h.query(PARAPHRASE, threshold=0.3)).hit
        assert (await h.query(ASKED, Scope("default", "gpt-2"))).id == c
        assert h.vector.existing_ids("hash-64", DIM, [a, b, c]) == {b, c}

        assert await h.core.clear(ADMIN, "default", "gpt") == 1
        assert h.vector.existing_ids("hash-64", DIM, [b, c]) == {c}
        assert (await h.query(ASKED, Scope("default", "gpt-2"))).hit
        assert await h.core.clear(ADMIN, "default", None) == 1
        assert h.vector.existing_ids("hash-64", DIM, [c]) == set()
        assert (await h.core.get_tenant(ADMIN, "default")).entries == 0
        with pytest.raises(errors.InvalidArgument):
            await h.core.remove(ADMIN, SCOPE, ["not-an-id"])

    run(scenario)


# -- tenants --------------------------------------------------------------------------------
BAD_CONFIGS = [
    TenantConfig(similarity_threshold=0.0),
    TenantConfig(similarity_threshold=1.5),
    TenantConfig(similarity_threshold=float("nan")),
    TenantConfig(ttl_seconds=-1),
    TenantConfig(max_entries=-1),
    TenantConfig(max_error_rate=1.0),
    TenantConfig(verify_rate=1.5),
    TenantConfig(embedding_model="no-such-model"),
    TenantConfig(embedding_model="hash:" + "x" * 200),
]


def test_tenant_config_is_validated_on_create_and_update() -> None:
    async def scenario(h: Harness) -> None:
        for config in BAD_CONFIGS:
            with pytest.raises(errors.InvalidArgument):
                await h.core.create_tenant(ADMIN, "acme", config)
            with pytest.raises(errors.InvalidArgument):
                await h.core.update_tenant(ADMIN, "default", config)
        assert [t.name for t in await h.core.list_tenants(ADMIN)] == ["default"]
        good = TenantConfig(similarity_threshold=0.9, ttl_seconds=60, embedding_model="hash:other")
        created = await h.core.create_tenant(ADMIN, "acme", good)
        assert (created.config, created.created_at) == (good, h.clock())
        with pytest.raises(errors.AlreadyExists):
            await h.core.create_tenant(ADMIN, "acme", TenantConfig())
        updated = await h.core.update_tenant(ADMIN, "acme", replace(good, ttl_seconds=120))
        assert updated.config.ttl_seconds == 120 and updated.created_at == created.created_at
        with pytest.raises(errors.InvalidArgument):
            await h.core.create_tenant(ADMIN, "Bad Name!", TenantConfig())

    run(scenario)


def test_unknown_tenant_is_not_found() -> None:
    nobody = Scope("nobody", "gpt")

    async def scenario(h: Harness) -> None:
        with pytest.raises(errors.NotFound):
            await h.query(ASKED, nobody)
        with pytest.raises(errors.NotFound):
            await h.insert(ASKED, "a", nobody)
        with pytest.raises(errors.NotFound):
            await h.core.get_tenant(ADMIN, "nobody")
        with pytest.raises(errors.NotFound):
            await h.core.update_tenant(ADMIN, "nobody", TenantConfig())
        with pytest.raises(errors.NotFound):
            await h.core.remove(ADMIN, nobody, ["0" * 32])

    run(scenario)


def test_a_tenant_on_another_model_searches_only_its_vectors() -> None:
    async def scenario(h: Harness) -> None:
        await h.core.create_tenant(ADMIN, "other", TenantConfig(embedding_model="hash:other"))
        entry_id = await h.insert(ASKED, "a", Scope("other", "gpt"))
        assert h.vector.existing_ids("hash:other", DIM, [entry_id]) == {entry_id}
        assert h.vector.existing_ids("hash-64", DIM, [entry_id]) == set()
        assert (await h.query(PARAPHRASE, Scope("other", "gpt"), threshold=0.3)).id == entry_id

    run(scenario)


# -- cacheability ----------------------------------------------------------------------------
def test_the_default_policy_refuses_user_specific_questions_both_ways() -> None:
    async def scenario(h: Harness) -> None:
        assert await h.insert("Where is my package?", "In Lyon.") == ""
        assert h.scalar.count_entries("default") == 0
        refused = await h.query("Where is my package?")
        assert (refused.hit, refused.uncacheable) == (False, "user_specific")
        # Stored while the tenant allowed it, then not served once it refuses.
        allow = CacheabilityPolicy(user_specific=CacheabilityAction.ALLOW)
        await h.core.update_tenant(ADMIN, "default", TenantConfig(cacheability=allow))
        assert await h.insert("Where is my package?", "In Lyon.")
        assert (await h.query("Where is my package?")).hit
        await h.core.update_tenant(ADMIN, "default", TenantConfig())
        assert (await h.query("Where is my package?")).uncacheable == "user_specific"

    run(scenario)


# -- feedback ---------------------------------------------------------------------------------
def test_wrong_feedback_on_a_paraphrase_stops_it_serving_there() -> None:
    async def scenario(h: Harness) -> None:
        entry_id = await h.insert(ASKED, "Use the reset link.")
        served = await h.query(PARAPHRASE, threshold=0.5)
        assert served.id == entry_id
        await h.core.feedback(ADMIN, SCOPE, entry_id, [user(PARAPHRASE)], "wrong")
        learned = h.scalar.learning_of([entry_id])[entry_id]
        assert learned.floor == pytest.approx(served.similarity + h.core.settings.feedback_floor_margin, abs=1e-5)
        assert not (await h.query(PARAPHRASE, threshold=0.5)).hit
        assert (await h.query(ASKED)).id == entry_id  # its own question still hits exactly
        with pytest.raises(errors.InvalidArgument):
            await h.core.feedback(ADMIN, SCOPE, entry_id, [user(PARAPHRASE)], "maybe")
        with pytest.raises(errors.NotFound):
            await h.core.feedback(ADMIN, SCOPE, "0" * 32, [user(PARAPHRASE)], "wrong")

    run(scenario)


def test_wrong_feedback_on_its_own_question_removes_the_entry() -> None:
    async def scenario(h: Harness) -> None:
        entry_id = await h.insert(ASKED, "Wrong answer.")
        await h.core.feedback(ADMIN, SCOPE, entry_id, [user(ASKED)], "wrong")
        assert not (await h.query(ASKED)).hit
        assert h.vector.existing_ids("hash-64", DIM, [entry_id]) == set()
        # With the right answer, the entry keeps its id and takes the answer.
        entry_id = await h.insert(ASKED, "Wrong answer.")
        await h.core.feedback(ADMIN, SCOPE, entry_id, [user(ASKED)], "wrong", answer="Use the reset link.")
        fixed = await h.query(ASKED)
        assert (fixed.id, fixed.answer) == (entry_id, "Use the reset link.")

    run(scenario)
