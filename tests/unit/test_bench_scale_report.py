"""bench-scale's judgement of a restart: the same answers as the server before the kill, question by question."""

from __future__ import annotations

from modelcache_svc.tools.bench_scale import targets
from modelcache_svc.tools.load import same_answers


def test_same_answers_counts_a_miss_for_a_miss_and_names_what_differs() -> None:
    before = [("e1", "Hanoi"), ("", ""), ("e3", "Paris"), ("e4", "Rome")]
    after = [("e1", "Hanoi"), ("", ""), ("", ""), ("e5", "Rome")]
    assert same_answers(before, after) == {"queries": 4, "same": 2, "hits_before": 3, "differ_at": [2, 3]}


def _report(same: int) -> dict:
    run = {"mode": "embedded", "entries": 1_000_000, "ready_s": 13.7, "ready_after_kill_s": 19.5,
           "semantic": {"p50_ms": 12.0}, "recall_at_5": 0.999, "graphs": 1,
           "answered_as_before_kill": {"paraphrases": same_answers([("e1", "a")] * 100, [("e1", "a")] * same
                                                                  + [("", "")] * (100 - same)),
                                       "last_inserts_word_for_word": same_answers([("n", "x")] * 100,
                                                                                  [("n", "x")] * 100)}}
    return {"config": {"modes": ["embedded"]}, "runs": [run]}


def test_a_restart_that_answers_one_question_otherwise_fails_its_target() -> None:
    judged = {t["name"]: t for t in targets(_report(99))}
    assert not judged["embedded: paraphrases answered as before kill -9 at 1000000"]["ok"]
    assert judged["embedded: paraphrases answered as before kill -9 at 1000000"]["value"] == "99 / 100"
    assert judged["embedded: last_inserts_word_for_word answered as before kill -9 at 1000000"]["ok"]
    assert all(t["ok"] for t in targets(_report(100)) if "before kill" in t["name"])
