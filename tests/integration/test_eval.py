"""`modelcache-svc eval` through a real service: in this process, and against a running server."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcache_svc.tools import evaluation
from modelcache_svc.config import Settings
from modelcache_svc.embedding import Embedder
from tests.servers import ThreadServer

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
MOCK = ROOT.parent / "shared" / "eval" / "gptcache_mock_en.jsonl"


def _eval(
    capsys: pytest.CaptureFixture[str], embedder: Embedder | None, *argv: str, verifier: bool = False
) -> list[dict[str, Any]]:
    """The eval verb's reports. Without the verifier unless asked: these tests check eval's own mechanics
    (the sweep is exact for a cosine threshold; with the verifier the configured row is the real pass)."""
    parser = argparse.ArgumentParser()
    evaluation.add_parser(parser.add_subparsers(dest="command"))
    extra = [] if verifier or "--target" in argv else ["--no-verifier"]
    args = parser.parse_args(["eval", *argv, *extra, "--json"])
    assert evaluation.run(args, {}, embedder=embedder) == 0
    reports: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    for report in reports:
        # The sweep (one query per b) and the real queries at the configured threshold agree row by row
        # (where the threshold is known: a remote tenant without its own has the server's, unseen).
        if report["configured"]["threshold"] is not None and not verifier:
            assert report["configured"]["sweep_disagrees"] == 0
    return reports


def test_eval_reports_with_and_without_the_verifier(capsys: pytest.CaptureFixture[str], embedder: Embedder) -> None:
    on, = _eval(capsys, embedder, "--dataset", str(MOCK), "--limit", "120", verifier=True)
    off, = _eval(capsys, embedder, "--dataset", str(MOCK), "--limit", "120")
    assert on["verifier"].startswith("packaged:verifier-en") and off["verifier"] == "off"
    # English's band starts above the default threshold: the verifier only takes candidates away there.
    assert on["configured"]["wrong"] <= off["configured"]["wrong"]
    assert on["configured"]["right"] + on["configured"]["wrong"] < off["configured"]["right"] + off["configured"]["wrong"]


def test_multi_turn_follow_ups_hit_only_after_the_same_history(
    capsys: pytest.CaptureFixture[str], embedder: Embedder
) -> None:
    [guarded] = _eval(capsys, embedder, "--dataset", str(DATA / "multiturn_en.jsonl"))
    point = guarded["configured"]
    # Every paraphrased follow-up after its own history hits its own entry; the same words after
    # another history never do (the earlier turns are part of the key), nor do 10 vs 12 people,
    # French vs German, or an example "in Java" (the guard).
    assert (point["right"], point["wrong"], point["miss"]) == (8, 0, 8)
    assert guarded["entries"] == 8 and guarded["mode"] == "cache" and guarded["guard"] is True

    [plain] = _eval(capsys, embedder, "--dataset", str(DATA / "multiturn_en.jsonl"), "--no-guard")
    assert plain["configured"]["right"] == 8 and plain["configured"]["wrong"] == 2


@pytest.mark.skipif(not MOCK.exists(), reason="shared/eval is not beside this checkout")
def test_a_slice_of_the_gptcache_benchmark_in_both_modes(
    capsys: pytest.CaptureFixture[str], embedder: Embedder
) -> None:
    cache, = _eval(capsys, embedder, "--dataset", str(MOCK), "--limit", "80", "--target-precision", "0.95")
    assert cache["rows"] == 80 and cache["positives"] == 80
    point = cache["configured"]
    assert point["right"] + point["wrong"] + point["miss"] == 80
    assert point["right"] >= 65 and point["precision"] >= 0.95
    assert [p["threshold"] for p in cache["sweep"]][:2] == [0.5, 0.51]
    assert cache["calibrated"]["precision"] >= 0.95 and cache["calibrated"]["sweep_disagrees"] == 0

    pairs, = _eval(capsys, embedder, "--dataset", str(MOCK), "--limit", "80", "--mode", "pairs")
    assert pairs["configured"]["wrong"] == 0  # all label 1, and a b can only reach its own a


@pytest.fixture
def running(tmp_path: Path, embedder: Embedder) -> Iterator[ThreadServer]:
    settings = Settings(
        data_dir=tmp_path / "data", grpc_port=0, http_port=0, resp_port=0,
        scalar_uri=f"sqlite:///{tmp_path / 'scalar.db'}",
    )
    server = ThreadServer(settings, embedder)
    yield server
    server.stop()


def test_calibrate_against_a_running_server_and_write_the_tenant(
    capsys: pytest.CaptureFixture[str], running: ThreadServer
) -> None:
    with running.client() as c:
        c.create_tenant("acme")
        c.insert("acme", "prod-model", "What's the capital of Vietnam?", "Hanoi.")
    reports = _eval(
        capsys, None, "--dataset", str(DATA / "multiturn_en.jsonl"), "--target", running.target,
        "--tenant", "acme", "--target-precision", "0.99", "--write-tenant", "acme",
    )
    chosen = reports[0]["calibrated"]
    assert chosen["precision"] >= 0.99 and chosen["sweep_disagrees"] == 0
    assert reports[0]["written"] == {"tenant": "acme", "similarity_threshold": chosen["threshold"]}
    with running.client() as c:
        tenant = c.get_tenant("acme")
        assert tenant.similarity_threshold == pytest.approx(chosen["threshold"])
        assert tenant.entries == 1  # the eval's own scope was cleared; the tenant's entry is untouched
        assert c.query("acme", "prod-model", "What's the capital of Vietnam?").answer == "Hanoi."


def test_multilingual_model_in_a_tenant_of_its_own(capsys: pytest.CaptureFixture[str], embedder: Embedder) -> None:
    [report] = _eval(
        capsys, embedder, "--dataset", str(DATA / "mixed_zh.jsonl"), "--embedding-model", "use:multilingual-v3",
        "--mode", "pairs",
    )
    assert report["embedding_model"] == "use:multilingual-v3"
    best = report["best_f1"]
    assert best["right"] >= 4 and best["wrong"] <= 1
    # The guard vetoes 3 vs 5 people, "不喜欢", Python vs Java, whatever the threshold.
    assert report["sweep"][0]["wrong"] <= 1
