"""`modelcache-svc train --cross-encoder` end to end on a small file: train, checkpoint and resume, fit the
band and cut-off, pack the overlay, and serve the folder."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from modelcache_svc.cli import main
from modelcache_train.fit_verifier import choose, logistic
from modelcache_svc.verifier import load_verifier
from modelcache_svc.verifier.model import VerifierOptions

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT.parent / "shared" / "train" / "qqp_train_en.jsonl"


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not TRAIN.is_file():
        pytest.skip("../shared/train is not beside this checkout")
    rows = TRAIN.read_text(encoding="utf-8").splitlines()[:240]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_train_fit_pack_and_serve(pairs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, pack = tmp_path / "verifier", tmp_path / "overlay"
    args = ["train", "--cross-encoder", "--base", "packaged:all-MiniLM-L6-v2", "--pairs", str(pairs_file),
            "--out", str(out), "--max-steps", "4", "--holdout", "40", "--threads", "2",
            "--checkpoint-every", "2", "--run-dir", str(tmp_path / "run"), "--pack", str(pack), "--json"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["steps"] == 4 and record["pairs_seen"] == 128 and record["held_out_pairs"] == 40
    assert record["data"][0]["sha256"] and record["command"]
    options = VerifierOptions.of_folder(out)
    assert 0.0 <= options.band_low < options.band_high and 0.0 <= options.cutoff <= 1.0
    assert record["fit"]["fitted_on_pairs"] == 40 and "combine" in record["fit"]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # a finished run leaves no checkpoint
    assert json.loads((tmp_path / "run" / "progress.json").read_text())["step"] == 4
    manifest = json.loads((pack / "overlay.json").read_text())
    assert manifest["base"] == "packaged:all-MiniLM-L6-v2" and (pack / "verifier.json").is_file()
    # Only what training changed: the encoder layers and the head, not the frozen word embeddings.
    assert manifest["parameters"] < 12_000_000
    verifier = load_verifier(str(out))
    scores = verifier.score("How can I lose weight fast?", ["What is the fastest way to lose weight?", "hi"],
                            [0.87, 0.1])
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)


def test_refuses_the_eval_files(tmp_path: Path) -> None:
    eval_file = ROOT.parent / "shared" / "eval" / "qqp_en.jsonl"
    if not eval_file.is_file():
        pytest.skip("../shared/eval is not beside this checkout")
    with pytest.raises(SystemExit, match="evaluation file"):
        main(["train", "--cross-encoder", "--pairs", str(eval_file), "--out", str(tmp_path / "x")])


def test_the_fit_separates_what_the_scores_separate() -> None:
    rng = random.Random(0)
    labels = np.array([rng.random() < 0.4 for _ in range(600)], dtype=float)
    sims = np.clip(0.75 + 0.1 * labels + np.array([rng.gauss(0, 0.06) for _ in labels]), 0, 1)
    logits = 3 * (labels - 0.5) + np.array([rng.gauss(0, 1.0) for _ in labels])
    w = logistic(np.c_[logits, sims], labels)
    assert w[0] > 0 and w[1] > 0  # both carry signal
    probs = 1 / (1 + np.exp(-(w[0] * logits + w[1] * sims + w[2])))
    chosen = choose(sims, probs, labels, 0.5)
    accept = (sims >= chosen["band_high"]) | ((sims >= chosen["band_low"]) & (probs >= chosen["cutoff"]))
    precision = (accept & (labels == 1)).sum() / max(1, accept.sum())
    assert precision > 0.85 and chosen["f_beta"] > 0.8


def test_cache_samples_skip_what_the_guard_refuses() -> None:
    """The band is fitted on what the service would pass to its verifier: a nearest entry the precision guard
    refuses (the years differ) gives way to the next one, and a question with none left is never served."""
    from modelcache_svc.verifier.model import resolve_verifier
    from modelcache_train.data import Pair
    from modelcache_train.fit_verifier import cache_samples

    pairs = [
        Pair("How many days were there in 2023?", "How many days were there in 2024?", 0.0),
        Pair("What is the capital city of France?", "What's the capital of France?", 1.0),
    ]
    _, folder = resolve_verifier("packaged:verifier-en")
    sims, logits, labels, positives = cache_samples(folder, "packaged:minilm-cache-en", pairs, True)
    assert positives == 1.0 and len(logits) == 2
    # The 2023 entry is refused for 2024; the France entry is the nearest one left, far off and not its own.
    assert -1.0 < sims[0] < 0.6 and labels[0] == 0.0
    assert sims[1] > 0.9 and labels[1] == 1.0
    only_refused = cache_samples(folder, "packaged:minilm-cache-en", pairs[:1], True)
    assert only_refused[0][0] == -1.0 and only_refused[2][0] == 0.0
