"""The exact-hit LRU: bounded size and age, expiry, invalidation, and no caching of a read that raced one."""

from __future__ import annotations

from modelcache_svc.cache.exact_cache import ExactCache
from modelcache_svc.records import EntryRow


def row(entry_id: str, expires_at: float | None = None, model: str = "m") -> EntryRow:
    return EntryRow(id=entry_id, tenant="t", model=model, context_hash="c", exact_key="k" + entry_id,
                    question="q", messages_json="[]", answer="a", metadata_json="{}", embed_model="e",
                    created_at=0.0, expires_at=expires_at, last_hit_at=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_hit_age_bound_expiry_and_lru_size() -> None:
    clock = Clock()
    cache = ExactCache(2, ttl_s=5.0, clock=clock)
    cache.put(("t", "m", "k1"), row("1"), cache.generation)
    assert cache.get(("t", "m", "k1"), now=100.0).id == "1"
    clock.now = 5.1
    assert cache.get(("t", "m", "k1"), now=100.0) is None  # older than ttl_s: read again
    cache.put(("t", "m", "k2"), row("2", expires_at=150.0), cache.generation)
    assert cache.get(("t", "m", "k2"), now=149.0) is not None
    assert cache.get(("t", "m", "k2"), now=150.0) is None  # expired rows are never served
    for k in ("a", "b", "c"):
        cache.put(("t", "m", k), row(k), cache.generation)
    assert len(cache) == 2 and cache.get(("t", "m", "a"), now=0.0) is None


def test_invalidation_by_key_id_scope_and_stale_reads() -> None:
    cache = ExactCache(100, ttl_s=60.0, clock=Clock())
    for i, model in enumerate(["m", "m", "n"]):
        cache.put(("t", model, f"k{i}"), row(str(i), model=model), cache.generation)
    cache.put(("u", "m", "k9"), row("9"), cache.generation)
    cache.forget_ids(["0"])
    assert cache.get(("t", "m", "k0"), 0.0) is None and cache.get(("t", "m", "k1"), 0.0) is not None
    cache.forget_keys([("t", "m", "k1")])
    assert cache.get(("t", "m", "k1"), 0.0) is None
    cache.forget_scope("t", "n")
    assert cache.get(("t", "n", "k2"), 0.0) is None and cache.get(("u", "m", "k9"), 0.0) is not None
    cache.forget_scope("u")
    assert len(cache) == 0

    seen = cache.generation  # a store read starts ...
    cache.forget_ids(["5"])  # ... a Remove lands meanwhile ...
    cache.put(("t", "m", "k5"), row("5"), seen)  # ... so what the read saw is not kept
    assert cache.get(("t", "m", "k5"), 0.0) is None


def test_off_when_size_or_ttl_is_zero() -> None:
    for cache in (ExactCache(0, 10.0), ExactCache(10, 0.0)):
        assert not cache.enabled
        cache.put(("t", "m", "k"), row("1"), cache.generation)
        assert cache.get(("t", "m", "k"), 0.0) is None
