"""The eval verb's scoring and its one-pass sweep, without a server."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

from modelcache_svc import errors, evaluation
from modelcache_svc.evaluation import Outcome, Pair, Point, best_f1, calibrate, grid, isolate, load_pairs, score

DATA = Path(__file__).resolve().parents[1] / "data"


def test_score_counts_right_wrong_and_miss() -> None:
    pairs = [Pair("a1", "b1", 1), Pair("a2", "b2", 1), Pair("a3", "b3", 0), Pair("a4", "b4", 1), Pair("a5", "b5", 0)]
    own = ["e1", "e2", "e3", "e4", "e5"]
    got = [
        Outcome("e1", 0.9),  # its own entry, label 1: right
        Outcome("e3", 0.95),  # another row's entry: wrong
        Outcome("e3", 0.99),  # its own entry, but label 0: wrong
        Outcome("e4", 0.70),  # below 0.8: a miss there
        Outcome("", 0.0),  # the service missed
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
    p = score(pairs, ["e1", "e1"], [Outcome("e1", 0.9), Outcome("e1", 0.85)], 0.8)
    assert (p.right, p.wrong) == (2, 0)


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


def _serve(cands: list[tuple[str, float, bool]], threshold: float) -> Outcome:
    """The service's decision (CacheCore._semantic): ranked candidates above the threshold, first the guard passes."""
    for entry, similarity, passes_guard in cands:
        if similarity < threshold:
            break
        if passes_guard:
            return Outcome(entry, similarity)
    return Outcome("", 0.0)


def test_one_pass_at_the_lowest_threshold_predicts_every_higher_threshold() -> None:
    """Why the sweep needs one query per b: the candidates above t are a prefix of those above a lower t."""
    rng = random.Random(7)
    thresholds = grid("0.50:0.99:0.01")
    for _ in range(2000):
        sims = sorted((rng.uniform(0.3, 1.0) for _ in range(rng.randint(0, 5))), reverse=True)
        cands = [(f"e{i}", s, rng.random() < 0.6) for i, s in enumerate(sims)]
        swept = _serve(cands, thresholds[0])
        for t in thresholds:
            predicted = swept.entry_id if swept.entry_id and swept.similarity >= t else ""
            assert predicted == _serve(cands, t).entry_id


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
