"""The embedding backends on the packaged model: same vectors across runtimes, the fused ONNX graph checked
before use, int8 kept apart by its model id, and micro-batching that changes nothing but the speed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from modelcache_svc.embedding import EmbeddingBatcher, load_embedder
from modelcache_svc.embedding.onnx_backend import OnnxEmbedder
from modelcache_svc.embedding.models import resolve_model

MODEL = "packaged:all-MiniLM-L6-v2"
TEXTS = [
    "What's the capital of Vietnam?",
    "capital city of Vietnam?",
    "How do I reverse a list in Python?",
    "如何在 Python 中反转列表？",
    "For PyTorch, use the set_format() function to set the dataset format to torch and specify the columns "
    "to format. For TensorFlow, use to_tf_dataset() to convert the dataset to a tf.data.Dataset.",
    "Emoji 🙂👍🏽 and symbols ©®™ ½",
    "word " * 400,  # past the model's length limit: truncated, never an error
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def fused(onnx_cache: Path) -> OnnxEmbedder:
    embedder = load_embedder("onnx", MODEL, cache_dir=onnx_cache)
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


def test_fused_graph_is_checked_and_used(fused: OnnxEmbedder, onnx_cache: Path) -> None:
    assert fused.path.name == "model.fused.onnx"
    (record,) = onnx_cache.glob("*/fusion_check.json")
    assert json.loads(record.read_text())["same_vectors"] is True
    assert fused.model_id == "all-MiniLM-L6-v2"  # same vectors, same id: no reindex


def test_fused_plain_and_torch_give_the_same_vectors(fused: OnnxEmbedder, onnx_cache: Path) -> None:
    model_id, source = resolve_model(MODEL)
    plain = OnnxEmbedder(model_id, source, onnx_cache, fused=False)
    assert plain.path.name == "model.onnx"
    torch_embedder = load_embedder("torch", MODEL)
    a, b, c = fused.encode(TEXTS), plain.encode(TEXTS), torch_embedder.encode(TEXTS)
    assert a.shape == (len(TEXTS), 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.max(np.abs(a - b)) < 1e-5
    assert np.max(np.abs(a - c)) < 1e-4
    assert torch_embedder.model_id == fused.model_id


def test_a_failed_fusion_check_falls_back_to_the_plain_graph(onnx_cache: Path, tmp_path: Path) -> None:
    model_id, source = resolve_model(MODEL)
    cache = tmp_path / "cache"
    first = OnnxEmbedder(model_id, source, cache)
    (record,) = cache.glob("*/fusion_check.json")
    verdict = json.loads(record.read_text())
    record.write_text(json.dumps({**verdict, "same_vectors": False}))  # as if the fused graph had drifted
    second = OnnxEmbedder(model_id, source, cache)
    assert first.path.name == "model.fused.onnx" and second.path.name == "model.onnx"
    assert np.max(np.abs(first.encode(TEXTS[:3]) - second.encode(TEXTS[:3]))) < 1e-5


def test_int8_is_another_model(fused: OnnxEmbedder, onnx_cache: Path) -> None:
    int8 = load_embedder("onnx-int8", MODEL, cache_dir=onnx_cache)
    assert int8.model_id == "all-MiniLM-L6-v2#int8" != fused.model_id
    cos = np.sum(int8.encode(TEXTS) * fused.encode(TEXTS), axis=1)
    assert np.all(cos > 0.95) and np.all(cos < 1.0 - 1e-6)


def test_spinning_threads_change_nothing_but_speed(fused: OnnxEmbedder, onnx_cache: Path) -> None:
    spinning = load_embedder("onnx", MODEL, cache_dir=onnx_cache, spin=True)
    assert np.max(np.abs(spinning.encode(TEXTS) - fused.encode(TEXTS))) < 1e-5


def test_concurrent_requests_share_batches_and_get_their_own_vectors(fused: OnnxEmbedder) -> None:
    sizes: list[int] = []
    batcher = EmbeddingBatcher(fused, max_batch=32, max_wait_ms=2.0, on_batch=lambda n, _s: sizes.append(n))
    texts = [f"question number {i}: how far is city {i} from the sea?" for i in range(48)]

    async def run() -> list[np.ndarray]:
        return list(await asyncio.gather(*(batcher.embed(t) for t in texts)))

    try:
        got = np.stack(asyncio.run(run()))
        alone = np.stack([fused.encode([t])[0] for t in texts])
        assert np.max(np.abs(got - alone)) < 1e-5  # padding within a batch changes no vector
        assert max(sizes) > 1 and sum(sizes) == len(texts) and max(sizes) <= 32
        many = asyncio.run(batcher.embed_many(texts))
        assert np.max(np.abs(many - alone)) < 1e-5
    finally:
        batcher.close()
