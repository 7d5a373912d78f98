"""Embedders (the model) and the batcher that shares it across requests."""

from __future__ import annotations

from .base import Embedder, resolve_model
from .batcher import EmbeddingBatcher


def load_embedder(backend: str, model: str, *, threads: int = 0) -> Embedder:
    model_id, source = resolve_model(model)
    if backend == "text2vec":
        from .torch_backend import Text2VecEmbedder

        return Text2VecEmbedder(model_id, source)
    from .torch_backend import TorchEmbedder

    return TorchEmbedder(model_id, source, threads=threads)


__all__ = ["Embedder", "EmbeddingBatcher", "load_embedder", "resolve_model"]
