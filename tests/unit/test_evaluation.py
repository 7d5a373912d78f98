"""The eval verb's scoring and its one-pass sweep, without a server."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

from modelcache_svc import errors
from modelcache_svc.tools import evaluation
from modelcache_svc.tools.evaluation import (
    Outcome,
    Pair,
    Point,
    best_f1,
    calibrate,
    grid,
    isolate,
    load_pairs,
    score,
    served_at,
    sweep_all,
)

DATA = Path(__file__).resolve().parents[1] / "data"


def test_score_counts_right_wrong_and_miss() -> None:
    pairs = [Pair("a1", "b1", 1), Pair("a2", "b2", 1), Pair("a3", "b3", 0), Pair("a4", "b4", 1), Pair("a5", "b5", 0)]
    own = ["e1", "e2", "e3", "e4", "e5"]
    got = [
        (Outcome("e1", 0.9),),  # its own entry, label 1: right
        (Outcome("e3", 0.95),),  # another row's entry: wrong
        (Outcome("e3", 0.99),),  # its own entry, but label 0: wrong
        (Outcome("e4", 0.70),),  # below 0.8: a miss there
        (Outcome("", 0.0),),  # the service missed
    ]
    p = score(pairs, own, got, 0.8)
    assert (p.right, p.wrong, p.miss) == (1, 2, 2)
    assert p.precision == pytest.approx(1 / 3)
    assert p.recall == pytest.approx(1 / 3)
    assert p.f1 == pytest.approx(1 / 3)
    low = score(pairs, own, got, 0.5)
    assert (low.right, low.wrong, low.miss) == (2, 2, 1)


def test_rows_sharing_an_a_share_its_entry_and_both_can_be_right() -> None:
    pairs = [Pair("same question", "b1", 1), Pair("same question", "b2", 1)]
    p = score(pairs, ["e1", "e1"], [(Outcome("e1", 0.9),), (Outcome("e1", 0.85),)], 0.8)
    assert (p.right, p.wrong) == (2, 0)


def test_a_chain_serves_its_first_outcome_that_reaches_the_threshold() -> None:
    """Reranked, b got another entry at a low threshold and its own above that entry's cosine."""
    pairs = [Pair("a1", "b1", 1), Pair("a2", "b2", 1)]
    chain = (Outcome("e2", 0.82), Outcome("e1", 0.9), Outcome("", 0.0))
    assert served_at(chain, 0.8).entry_id == "e2"
    assert served_at(chain, 0.83).entry_id == "e1"
    assert served_at(chain, 0.95).entry_id == ""
    assert (score(pairs, ["e1", "e2"], [chain, (Outcome("", 0.0),)], 0.8).wrong,
            score(pairs, ["e1", "e2"], [chain, (Outcome("", 0.0),)], 0.85).right) == (1, 1)


def test_no_hits_has_precision_zero_so_calibration_never_picks_it() -> None:
    points = [
        Point(0.5, 5, 5, 0, 0.5, 1.0, 0.67),
        Point(0.9, 4, 0, 6, 1.0, 0.8, 0.89),
        Point(0.99, 0, 0, 10, 0.0, 0.0, 0.0),
    ]
    assert calibrate(points, 0.95) == points[1]
    assert calibrate(points, 0.4) == points[0]
    assert calibrate([points[2]], 0.1) is None
    assert best_f1(points) == points[1]


def test_grid() -> None:
    assert grid("0.5:0.6:0.05") == [0.5, 0.55, 0.6]
    assert grid("0.8:0.8:0.01") == [0.8]
    assert len(grid("0.50:0.99:0.01")) == 50
    for bad in ("0.5", "0:1:0.1", "0.9:0.5:0.1", "a:b:c", "0.5:0.9:0"):
        with pytest.raises(errors.InvalidArgument):
            grid(bad)


Candidate = tuple[str, float, bool, float]  # entry, cosine, passes the guard, word overlap with the question


def _serve(cands: list[Candidate], threshold: float, weight: float) -> Outcome:
    """The service's decision (CacheCore._semantic): of the candidates above the threshold that pass the guard,
    the best by cosine + weight x overlap (the first, in cosine order, when the weight is 0)."""
    best: tuple[float, Outcome] | None = None
    for entry, similarity, passes_guard, overlap in cands:
        if similarity < threshold:
            break
        if passes_guard:
            rank = similarity + weight * overlap
            if best is None or rank > best[0]:
                best = (rank, Outcome(entry, similarity))
            if not weight:
                break
    return best[1] if best else Outcome("", 0.0)


class _Decisions:
    """Stands in for the service: each b has its candidate list; counts the queries asked."""

    def __init__(self, cands: dict[str, list[Candidate]], weight: float) -> None:
        self.cands, self.weight, self.queries = cands, weight, 0

    def query(self, tenant: str, model: str, messages: list[tuple[str, str]], *, similarity_threshold: float,
              top_k: int, timeout: float) -> argparse.Namespace:
        self.queries += 1
        got = _serve(self.cands[messages[-1][1]], similarity_threshold, self.weight)
        return argparse.Namespace(hit=bool(got.entry_id), id=got.entry_id, similarity=got.similarity)


@pytest.mark.parametrize("weight", [0.0, 0.15, 0.5])
def test_the_chains_of_servings_predict_every_swept_threshold(weight: float) -> None:
    """The sweep asks each b once at the lowest threshold and again above each cosine it was served at; that
    predicts the service's answer at every swept threshold, reranked or not."""
    rng = random.Random(7)
    thresholds = grid("0.50:0.99:0.01")
    cands = {}
    for n in range(500):
        sims = sorted((rng.uniform(0.3, 1.0) for _ in range(rng.randint(0, 5))), reverse=True)
        cands[f"b{n}"] = [(f"e{i}", s, rng.random() < 0.6, rng.random()) for i, s in enumerate(sims)]
    service = _Decisions(cands, weight)
    pairs = [Pair("a", b, 1) for b in cands]
    chains = sweep_all(service, "t", "m", pairs, thresholds, 0)
    assert service.queries == sum(map(len, chains)) <= 3 * len(pairs)
    for pair, chain in zip(pairs, chains, strict=True):
        for t in thresholds:
            assert served_at(chain, t).entry_id == _serve(cands[pair.b], t, weight).entry_id


def test_load_pairs_with_contexts_and_limit(tmp_path: Path) -> None:
    pairs = load_pairs(DATA / "multiturn_en.jsonl")
    assert len(pairs) == 16 and sum(p.label for p in pairs) == 8
    shared = pairs[0]
    assert shared.a_context == shared.b_context and shared.a_context[0][0] == "user"
    apart = next(p for p in pairs if p.a_context != p.b_context)
    assert apart.a == apart.b and apart.label == 0
    assert len(load_pairs(DATA / "multiturn_en.jsonl", limit=3)) == 3

    bad = tmp_path / "bad.jsonl"
    for line, message in (
        ('{"a": "x", "b": "y"}', "label"),
        ('{"a": "x", "label": 1}', '"a" and "b"'),
        ("not json", "not JSON"),
        ('{"a": "x", "b": "y", "label": 1, "context": [{"role": "user"}]}', "role and content"),
    ):
        bad.write_text(line + "\n")
        with pytest.raises(errors.InvalidArgument, match=message):
            load_pairs(bad)
    with pytest.raises(errors.InvalidArgument, match="cannot read"):
        load_pairs(tmp_path / "missing.jsonl")


def test_isolate_gives_every_row_a_context_of_its_own() -> None:
    pairs = isolate([Pair("q", "q?", 1), Pair("q", "other", 0, a_context=(("user", "hi"),))])
    assert pairs[0].a_context == pairs[0].b_context != pairs[1].a_context
    assert pairs[1].a_context[1:] == (("user", "hi"),)
    assert {p.a_context[0][0] for p in pairs} == {"system"}


def _args(**overrides: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    evaluation.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--dataset", str(DATA / "multiturn_en.jsonl")])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"write_tenant": "acme", "target_precision": 0.9}, "--target"),
        ({"write_tenant": "acme", "target": "127.0.0.1:1"}, "--target-precision"),
        ({"target_precision": 1.5}, "target-precision"),
        ({"no_guard": True, "target": "127.0.0.1:1"}, "no-guard"),
    ],
)
def test_run_refuses_contradictory_flags(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        evaluation.run(_args(**overrides), {})


def test_write_needs_a_calibrated_threshold_on_every_file() -> None:
    class Client:
        written: dict[str, float] = {}

        def update_tenant(self, name: str, similarity_threshold: float) -> None:
            self.written[name] = similarity_threshold

    client = Client()
    reports = [{"calibrated": {"threshold": 0.82}}, {"calibrated": {"threshold": 0.86}}]
    evaluation._write(client, "acme", reports)
    assert client.written == {"acme": 0.86} and reports[0]["written"]["similarity_threshold"] == 0.86
    with pytest.raises(errors.InvalidArgument):
        evaluation._write(client, "acme", [{"calibrated": None}])
    json.dumps(reports)  # what --json prints stays serialisable


def test_the_sweep_ends_even_when_a_server_answers_below_the_threshold_it_was_asked() -> None:
    class Sloppy:
        queries = 0

        def query(self, *args: object, similarity_threshold: float, **kwargs: object) -> argparse.Namespace:
            self.queries += 1
            return argparse.Namespace(hit=True, id="e1", similarity=similarity_threshold - 0.001)

    service = Sloppy()
    [chain] = sweep_all(service, "t", "m", [Pair("a", "b", 1)], grid("0.50:0.99:0.01"), 0)
    assert service.queries == len(chain) == 50
