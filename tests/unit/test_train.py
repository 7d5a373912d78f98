"""The pure parts of `modelcache-svc train` and of model routing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modelcache_svc.embedding.base import FolderOptions, has_cjk
from modelcache_train.bi_encoder import best_threshold, cosent_loss
from modelcache_train.data import Pair, length_batches, read_pairs


def test_cosent_loss_falls_when_positives_score_above_negatives() -> None:
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    good = cosent_loss(torch, torch.tensor([0.9, 0.2, 0.8, 0.1]), labels)
    bad = cosent_loss(torch, torch.tensor([0.2, 0.9, 0.1, 0.8]), labels)
    assert float(good) < 0.01 < float(bad)
    # Only (negative, positive) pairs count: all-positive batches give log(1) = 0.
    assert float(cosent_loss(torch, torch.tensor([0.1, 0.9]), torch.tensor([1.0, 1.0]))) == pytest.approx(0.0)


def test_best_threshold_is_the_f1_optimum() -> None:
    cosines = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6]
    labels = [1, 1, 0, 1, 0, 0]
    threshold, f1 = best_threshold(cosines, [float(x) for x in labels])
    assert threshold == 0.8 and f1 == pytest.approx(2 * 3 / (4 + 3))


def test_length_batches_cover_every_pair_once_and_group_lengths() -> None:
    pairs = [Pair("q" * n, "r" * n, float(n % 2)) for n in range(1, 201)]
    batches = length_batches(pairs, 16, seed=3)
    assert sorted(p.a for b in batches for p in b) == sorted(p.a for p in pairs)
    spreads = [max(len(p.a) for p in b) - min(len(p.a) for p in b) for b in batches]
    assert max(spreads) < 40  # like with like, not a random mix of 1..200
    assert batches != length_batches(pairs, 16, seed=4)


def test_read_pairs_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"a": "x", "b": "y", "label": 1}\n{"a": "x"}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match="p.jsonl:2"):
        read_pairs(path)
    path.write_text('{"a": "x", "b": "y", "label": 1}\n\n{"a": " ", "b": "y", "label": 0}\n', encoding="utf-8")
    assert read_pairs(path) == [Pair("x", "y", 1.0)]


def test_has_cjk() -> None:
    assert has_cjk("孕妇可以吃螃蟹吗？")
    assert has_cjk("如何在 Python 中反转列表")
    assert has_cjk("こんにちは") and has_cjk("한국어")
    assert not has_cjk("What's the capital of Vietnam?")
    assert not has_cjk("Résumé — naïve café ½ → ≠ 🙂")


def test_folder_options(tmp_path: Path) -> None:
    assert FolderOptions(tmp_path).prefix == "" and FolderOptions(tmp_path).similarity_scale == 1.0
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: "}, "default_prompt_name": "query"}))
    (tmp_path / "modelcache.json").write_text(json.dumps({"similarity_scale": 2.5}))
    options = FolderOptions(tmp_path)
    assert options.prefix == "query: " and options.similarity_scale == 2.5
    (tmp_path / "modelcache.json").write_text("{not json")
    assert FolderOptions(tmp_path).similarity_scale == 1.0


def test_cjk_routing_can_be_turned_off() -> None:
    from modelcache_svc.config import DEFAULT_CJK_MODEL, Settings

    assert Settings().cjk_model == DEFAULT_CJK_MODEL
    assert Settings.load({}, {"MODELCACHE_EMBEDDING_MODEL_CJK": "off"}).cjk_model == ""
    assert Settings.load({"embedding_model_cjk": ""}, {}).cjk_model == ""
