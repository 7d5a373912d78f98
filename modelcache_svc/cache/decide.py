"""Which candidate a semantic query serves: pure functions of the candidates, no I/O.

In the order the query path (lookup.py) applies them:
1. ``live``: the candidates with a live row of the query's very scope and context that the precision guard
   does not veto (matching.py), best similarity first;
2. the verifier gate (verifier_gate.py): ``to_verify`` names the uncertain ones the verifier reads,
   ``verified`` keeps the sure ones and those the verifier accepted;
3. then either the plain choice, ``best`` (the first, or with the lexical rerank on, the one also worded
   most like the question), or, for a tenant that learns from feedback, ``learned_choice`` over
   ``ranked`` (learned_threshold.py: serve one, verify one, or neither).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..records import EntryLearning, EntryRow, Scope, Tenant, TenantConfig
from ..stores.base import VectorHit
from .learned_threshold import Decision, ModelSettings, PooledEvidence
from .learned_threshold import decide as learned_decision
from .matching import guard_veto, lexical_overlap
from .verifier_gate import MAX_VERIFIED, Gate


@dataclass(frozen=True, slots=True)
class Candidate:
    """A vector hit with its live row; ``similarity`` on the common threshold scale (the hit's own is the
    model's cosine)."""

    similarity: float
    hit: VectorHit
    row: EntryRow


@dataclass(frozen=True, slots=True)
class Choice:
    """What a semantic query does with its candidates: serve one, verify one, or neither (a miss)."""

    serve: Candidate | None = None
    verify: Candidate | None = None


def learning_active(tenant: Tenant) -> bool:
    return tenant.config.max_error_rate is not None or tenant.config.verify_rate > 0


def live(
    question: str, context_hash: str, scope: Scope, hits: Sequence[VectorHit], rows: dict[str, EntryRow],
    similarities: Sequence[float], guard: bool, language: str = "",
) -> tuple[list[Candidate], list[str]]:
    """The servable candidates in the hits' order, and the guard's reason for each one it vetoed.
    ``similarities``: each hit's on the common scale."""
    out: list[Candidate] = []
    vetoes: list[str] = []
    for hit, similarity in zip(hits, similarities, strict=True):
        row = rows.get(hit.id)
        # A vector without a live row of this very scope and context is never served.
        if row is None or row.tenant != scope.tenant or row.model != scope.model:
            continue
        if row.context_hash != context_hash:
            continue
        if guard:
            reason = guard_veto(question, row.question, language)
            if reason is not None:
                vetoes.append(reason)
                continue
        out.append(Candidate(similarity, hit, row))
    return out, vetoes


def to_verify(candidates: Sequence[Candidate], gate: Gate, threshold: float) -> list[Candidate]:
    """The uncertain candidates the verifier reads (the best few, in one model call)."""
    return [c for c in candidates if gate.uncertain(c.similarity, threshold)][:MAX_VERIFIED]


def verified(
    candidates: Sequence[Candidate], gate: Gate, threshold: float, probabilities: dict[str, float]
) -> list[Candidate]:
    """The candidates the gate lets through: sure ones by their similarity, uncertain ones when the verifier
    gave them a probability of at least the cut-off; the rest dropped."""
    return [
        c for c in candidates
        if gate.sure(c.similarity, threshold) or probabilities.get(c.row.id, -1.0) >= gate.cutoff
    ]


def best(question: str, candidates: Sequence[Candidate], weight: float) -> Candidate | None:
    """The plain choice among candidates that cleared the threshold, the guard and the gate."""
    if not weight:
        return candidates[0] if candidates else None
    # The one also worded most like the question (adjacent word pairs in common): near-duplicate entries
    # embed alike, wording tells them apart. The threshold and the reported similarity stay the (scaled)
    # cosine.
    chosen: Candidate | None = None
    chosen_rank = 0.0
    for c in candidates:
        rank = c.similarity + weight * lexical_overlap(question, c.row.question)
        if chosen is None or rank > chosen_rank:
            chosen, chosen_rank = c, rank
    return chosen


def ranked(question: str, candidates: Sequence[Candidate], weight: float) -> list[Candidate]:
    """Every candidate, best first by similarity plus the lexical rerank: the order the learned choice walks."""
    scored = [(c.similarity + weight * lexical_overlap(question, c.row.question), c) for c in candidates]
    scored.sort(key=lambda s: -s[0])
    return [c for _, c in scored]


def learned_choice(
    config: TenantConfig,
    candidates: Sequence[Candidate],
    learning: dict[str, EntryLearning],
    threshold: float,
    pool: PooledEvidence,
    model: ModelSettings,
    rng: random.Random,
) -> Choice:
    """Walk the candidates best first: serve the first the model serves (or verify it, at the tenant's
    rate, when it is uncertain); a refused but uncertain one is offered for verification on the miss."""
    explore: Candidate | None = None
    for candidate in candidates:
        d: Decision = learned_decision(
            learning.get(candidate.row.id), candidate.similarity, threshold, config.max_error_rate, pool, model
        )
        if d.serve:
            if d.uncertain and config.verify_rate > 0 and rng.random() < config.verify_rate:
                return Choice(verify=candidate)
            return Choice(serve=candidate)
        if d.uncertain and explore is None and config.verify_rate > 0:
            explore = candidate  # a miss anyway: verifying it costs the product nothing more
    return Choice(verify=explore)
