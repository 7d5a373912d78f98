"""The learned hit decision (cache/learned_threshold.py): floor, posterior, fallback, pooled evidence."""

from __future__ import annotations

from modelcache_svc.cache.learned_threshold import (
    EMPTY_POOL,
    ModelSettings,
    PooledEvidence,
    decide,
    error_bounds,
    posterior,
)
from modelcache_svc.records import EntryLearning

M = ModelSettings()


def test_floor_refuses_at_and_below_it_and_is_certain() -> None:
    learning = EntryLearning(floor=0.875)
    for s in (0.80, 0.875):
        d = decide(learning, s, 0.8, None, EMPTY_POOL, M)
        assert not d.serve and not d.uncertain and d.reason == "floor"
    assert decide(learning, 0.876, 0.8, None, EMPTY_POOL, M).serve


def test_without_max_error_rate_the_threshold_decides_and_evidence_only_sets_uncertainty() -> None:
    assert decide(None, 0.85, 0.8, None, EMPTY_POOL, M).serve
    assert not decide(None, 0.79, 0.8, None, EMPTY_POOL, M).serve
    assert decide(None, 0.85, 0.8, None, EMPTY_POOL, M).uncertain  # no evidence: uncertain
    many_correct = EntryLearning(0.0, tuple((0.84, False) for _ in range(60)))
    d = decide(many_correct, 0.85, 0.8, None, EMPTY_POOL, M)
    assert d.serve and not d.uncertain


def test_no_evidence_falls_back_to_the_tenant_threshold() -> None:
    d = decide(None, 0.85, 0.8, 0.05, EMPTY_POOL, M)
    assert d.serve and d.uncertain and d.reason == "fallback"
    assert not decide(None, 0.75, 0.8, 0.05, EMPTY_POOL, M).serve


def test_confident_evidence_serves_below_the_threshold_and_refuses_above_it() -> None:
    good = EntryLearning(0.0, tuple((0.74, False) for _ in range(40)))
    d = decide(good, 0.75, 0.8, 0.05, EMPTY_POOL, M)
    assert d.serve and d.reason == "confident"
    bad_pool = PooledEvidence([(0.85, True)] * 20 + [(0.85, False)] * 20)
    d = decide(None, 0.85, 0.8, 0.05, bad_pool, M)
    assert not d.serve and not d.uncertain and d.reason == "unsafe"


def test_evidence_only_counts_at_or_below_the_similarity() -> None:
    # Correct observations at 0.95 say nothing about 0.85 (monotone: lower similarity, likelier wrong).
    high = EntryLearning(0.0, tuple((0.95, False) for _ in range(40)))
    a, b, n = posterior(high, 0.85, EMPTY_POOL, M)
    assert n == 0 and (a, b) == (0.5, 0.5)
    a, b, n = posterior(high, 0.96, EMPTY_POOL, M)
    assert n == 40 and b == 40.5


def test_pooled_evidence_is_banded_and_capped() -> None:
    pool = PooledEvidence([(0.90, False)] * 500 + [(0.70, True)] * 500)
    a, b, n = posterior(None, 0.90, pool, M)
    assert n == 500 and abs(b - (0.5 + M.prior_weight)) < 1e-9 and a == 0.5  # capped at prior_weight
    assert pool.error_rate == 0.5


def test_bounds_tighten_with_evidence() -> None:
    low1, high1 = error_bounds(0.5, 5.5, 0.9)
    low2, high2 = error_bounds(0.5, 50.5, 0.9)
    assert 0 <= low2 <= low1 < high1 and high2 < high1 and high2 < 0.05
