"""Embedders (the model) and the batcher that shares it across requests."""

from __future__ import annotations

from pathlib import Path

from .base import Embedder, is_use_spec, model_cache_root, resolve_model
from .batcher import EmbeddingBatcher


def load_embedder(
    backend: str, model: str, *, threads: int = 0, cache_dir: Path | None = None, spin: bool = False
) -> Embedder:
    """backend: onnx (fp32, identical vectors to torch), onnx-int8, torch or text2vec.

    A ``use:`` spec (USE multilingual, pure numpy) brings its own runtime and ignores backend.
    """
    model_id, source = resolve_model(model, cache_dir)
    if is_use_spec(model):
        from .use_backend import UseEmbedder

        return UseEmbedder(model, threads=threads)
    if backend in ("onnx", "onnx-int8"):
        from .onnx_backend import OnnxEmbedder

        cache = cache_dir or model_cache_root() / "onnx"
        return OnnxEmbedder(model_id, source, cache, int8=backend == "onnx-int8", threads=threads, spin=spin)
    if backend == "text2vec":
        from .torch_backend import Text2VecEmbedder

        return Text2VecEmbedder(model_id, source)
    from .torch_backend import TorchEmbedder

    return TorchEmbedder(model_id, source, threads=threads)


__all__ = ["Embedder", "EmbeddingBatcher", "load_embedder", "resolve_model"]
