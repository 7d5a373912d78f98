"""The per-entry hit decision learned from feedback (docs/hit-quality.md, "Learning from feedback").

Evidence about an entry is a list of observations (similarity s_i, wrong_i): the entry was served, or
offered for verification, at s_i and its answer was wrong there or not. Two assumptions:

- monotone: the less similar a chat is to the entry, the likelier the entry's answer is wrong for it.
  So a WRONG at s_w condemns every s <= s_w: the entry's *floor* is raised above s_w and it serves
  nothing at or below it (a closer paraphrase, above the floor, may still be served). And a CORRECT at
  s_i speaks for every s >= s_i: the evidence at s is the observations at or below s.
- entries of one tenant behave alike at one similarity: the tenant's pooled observations within a band
  around s give a prior, worth at most ``prior_weight`` observations, so an entry with no evidence of
  its own still learns from its neighbours' (empirical Bayes).

Error at s ~ Beta(0.5 + w_entry + k w_pool, 0.5 + c_entry + k c_pool) (Jeffreys prior; w/c the wrong
and correct counts, k = min(1, prior_weight / pool size)). With ``max_error_rate`` δ set, a candidate is
served whenever the upper ``confidence`` quantile of that posterior is below δ (even below the tenant's
threshold), refused whenever the lower quantile is above δ (even above it), and in between, where the
evidence cannot tell (no evidence at all included), the tenant threshold decides and the candidate is
*uncertain*: one worth verifying. Without δ the tenant threshold decides (and the floor), and the
posterior, against ``verify_error_rate``, only says which candidates are uncertain.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from scipy.special import betaincinv

from ..records import EntryLearning

PRIOR_A = 0.5  # Jeffreys
PRIOR_B = 0.5


@dataclass(frozen=True, slots=True)
class ModelSettings:
    confidence: float = 0.9  # one-sided: serve when P(error < delta) >= this
    prior_weight: float = 50.0  # the most the tenant's pooled evidence counts, in observations
    band: float = 0.03  # pooled observations within +-band of s speak for s
    verify_error_rate: float = 0.05  # without delta: a candidate is uncertain unless its error is surely below this


@dataclass(frozen=True, slots=True)
class Decision:
    serve: bool
    uncertain: bool  # more evidence could change the decision: worth verifying
    reason: str  # floor | confident | fallback | unsafe | threshold


class PooledEvidence:
    """A tenant's observations, sorted by similarity, for band counts in O(log n)."""

    def __init__(self, observations: Iterable[tuple[float, bool]]) -> None:
        obs = list(observations)
        self.wrong = sorted(s for s, w in obs if w)
        self.correct = sorted(s for s, w in obs if not w)

    def __len__(self) -> int:
        return len(self.wrong) + len(self.correct)

    @property
    def error_rate(self) -> float | None:
        n = len(self)
        return len(self.wrong) / n if n else None

    def band(self, s: float, width: float) -> tuple[int, int]:
        """(wrong, correct) observed within [s - width, s + width]."""

        def count(values: list[float]) -> int:
            return bisect.bisect_right(values, s + width) - bisect.bisect_left(values, s - width)

        return count(self.wrong), count(self.correct)


EMPTY_POOL = PooledEvidence(())


def posterior(
    learning: EntryLearning | None, s: float, pool: PooledEvidence, m: ModelSettings
) -> tuple[float, float, int]:
    """Beta parameters of the error at similarity s, and how many observations (entry's + pooled) back them."""
    wrong = correct = 0
    if learning is not None:
        for s_i, w in learning.observations:
            if s_i <= s + 1e-9:
                wrong += w
                correct += not w
    pw, pc = pool.band(s, m.band)
    scale = min(1.0, m.prior_weight / (pw + pc)) if pw + pc else 0.0
    return PRIOR_A + wrong + scale * pw, PRIOR_B + correct + scale * pc, wrong + correct + pw + pc


def error_bounds(a: float, b: float, confidence: float) -> tuple[float, float]:
    """(lower, upper) one-sided quantiles of Beta(a, b) at 1 - confidence and confidence."""
    return float(betaincinv(a, b, 1.0 - confidence)), float(betaincinv(a, b, confidence))


def decide(
    learning: EntryLearning | None,
    s: float,
    threshold: float,
    max_error_rate: float | None,
    pool: PooledEvidence,
    m: ModelSettings,
) -> Decision:
    """Serve the entry at similarity s? The candidate already cleared the guard (and, without
    max_error_rate, the threshold)."""
    if learning is not None and s <= learning.floor:
        return Decision(False, False, "floor")
    a, b, n = posterior(learning, s, pool, m)
    delta = max_error_rate if max_error_rate is not None else m.verify_error_rate
    low, high = error_bounds(a, b, m.confidence)
    if max_error_rate is None:
        return Decision(s >= threshold, high >= delta, "threshold")
    if high < delta:
        return Decision(True, False, "confident")
    if low >= delta:
        return Decision(False, False, "unsafe")
    # Too little evidence either way (none at all included): the tenant threshold decides.
    return Decision(s >= threshold, True, "fallback" if n == 0 else "uncertain")
