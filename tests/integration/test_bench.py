"""`modelcache-svc bench`, in seconds: a tiny run against a server it starts itself, checking the
shape of its JSON report (never timings: this machine is shared)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelcache_svc import cli
from modelcache_svc.tools import workload


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = cli.main(["bench", *args, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    report: dict[str, Any] = json.loads(out)
    return report


def test_bench_reports_every_kind_insert_rss_and_batches(capsys: pytest.CaptureFixture[str]) -> None:
    r = _run(capsys, "--entries", "48", "--clients", "1,3", "--duration", "0.6", "--warmup", "0.2",
             "--rates", "exact:200,semantic:20")

    assert r["config"]["entries"] == 48 and r["config"]["clients"] == [1, 3]
    assert r["insert"]["entries"] == 48 and r["insert"]["batch"] == 32 and r["insert"]["entries_per_s"] > 0
    for kind in ("exact", "semantic", "miss"):
        for clients in ("1", "3"):
            phase = r["query"][kind][clients]
            assert phase["clients"] == int(clients)
            assert phase["calls"] > 0 and phase["qps"] > 0 and not phase["errors"]
            assert 0 < phase["p50_ms"] <= phase["p90_ms"] <= phase["p99_ms"] <= phase["max_ms"]
            assert set(phase["server"]) >= {"embedding_batch_mean", "embedding_batch_histogram", "stages"}
    # Exact traffic never embeds; semantic traffic does, and finds its paraphrases.
    assert set(r["query"]["exact"]["1"]["outcomes"]) == {"exact"}
    assert r["query"]["exact"]["3"]["server"]["embedding_batches"] == 0
    assert "exact_lookup" in r["query"]["exact"]["1"]["server"]["stages"]
    assert r["query"]["semantic"]["1"]["outcomes"].get("semantic", 0) > 0
    assert r["query"]["semantic"]["3"]["server"]["embedding_batches"] > 0
    assert {"embed", "vector_search"} <= set(r["query"]["semantic"]["1"]["server"]["stages"])
    assert r["server"]["rss_end"]["rss_mb"] > 0 and r["server"]["rss_end"]["peak_rss_mb"] > 0
    q = r["quality"]
    assert q["right"] + q["wrong"] + q["miss"] == q["queries"] > 0
    names = {t["name"] for t in r["targets"]}
    assert any(n.startswith("semantic p50 ms") for n in names) and any(n.startswith("insert") for n in names)
    assert "ratios" not in r  # no --gptcache
    # Open loop at a given rate, beside the closed-loop maximum.
    for kind, rate in (("exact", "200"), ("semantic", "20")):
        paced = r["query"][kind][f"3@{rate}/s"]
        assert paced["mode"] == f"open loop at {rate}/s" and paced["calls"] > 0
        assert set(paced["from_schedule"]) == {"p50_ms", "p90_ms", "p99_ms"}
    assert r["query"]["exact"]["3"]["mode"] == "closed loop"
    exact_p50 = next(t for t in r["targets"] if t["name"].startswith("exact p50"))
    assert exact_p50["name"] == "exact p50 ms, 1 client" and exact_p50["value"] == r["query"]["exact"]["1"]["p50_ms"]


def test_bench_text_report_and_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--entries", "24", "--clients", "2", "--duration", "0.3", "--warmup", "0",
                     "--kinds", "exact", "--skip-quality"]) == 0
    out = capsys.readouterr().out
    assert "exact" in out and "p50 ms" in out and "server RSS" in out and "targets (issue #6)" in out
    assert cli.main(["bench", "--kinds", "fuzzy"]) == cli.EXIT_USAGE
    assert cli.main(["bench", "--clients", "0"]) == cli.EXIT_USAGE
    assert cli.main(["bench", "--rates", "exact=5"]) == cli.EXIT_USAGE


def test_workload_is_disjoint_and_sized() -> None:
    w = workload.build_workload(300, None)  # generated: no shared/eval needed
    assert len(w.questions) == len(set(w.questions)) == 300 == len(w.answers)
    loaded = set(w.questions)
    assert all(q in loaded for q in w.exact)
    assert all(q not in loaded and 0 <= i < 300 for q, i in w.semantic)
    assert not loaded & set(w.miss)
    assert workload.entry_of_answer(w.answers[17]) == 17 and workload.entry_of_answer(None) == -1
    assert len(set(workload.synthetic_questions(120_500))) == 120_500


def test_gptcache_threshold_mapping() -> None:
    from modelcache_svc.tools.bench_gptcache import gptcache_threshold

    # SearchDistanceEvaluation over L2 of unit vectors: t means cosine >= 2t - 1.
    assert gptcache_threshold(0.80) == pytest.approx(0.90)
    assert gptcache_threshold(0.60) == pytest.approx(0.80)


def test_bench_repeat_compares_a_fresh_and_a_repeated_paraphrase(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["bench-repeat", "--entries", "40", "--queries", "8", "--clients", "2", "--duration", "0.5",
                     "--json"])
    out = capsys.readouterr().out
    assert code == 0
    r = json.loads(out)
    one = r["one_client"]
    assert one["queries"] == 8 and one["same_outcome"] == 8  # the remembered vector gives the same answer
    assert one["fresh"]["p50_ms"] > 0 and one["repeated"]["p50_ms"] > 0
    # Each paraphrase went to the model once (its first ask), never on the second.
    assert one["server"]["embedding_texts"] == 8 + 1  # and the channel's warm-up question
    assert r["repeated_clients"]["calls"] > 0 and r["repeated_clients"]["server"]["embedding_batches"] == 0


def test_bench_console_measures_every_page_at_a_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    """The command that measures the console at 100,000 entries (docs/operations.md, "The console"), at 60."""
    code = cli.main(["bench-console", "--entries", "60", "--real", "60", "--requests", "2", "--queries", "6",
                     "--serve-arg=--verifier=off", "--serve-arg=--embedding-model-cjk=off",
                     "--serve-arg=--embedding-model-multilingual=off", "--json"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert r["config"]["entries"] == 60 and r["bulk_load"]["entries"] == 60 and r["traffic"]["queries"] == 6
    assert set(r["pages"]) == {"overview", "tenant", "entries", "search", "entry", "traffic", "traffic_filtered"}
    for page in r["pages"].values():
        assert page["p50_ms"] > 0 and page["bytes"] > 0 and isinstance(page["within_target"], bool)
    assert isinstance(r["all_within_target"], bool)
