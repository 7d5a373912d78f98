"""Sentence embeddings with transformers + torch on the CPU (mean pooling,
the pooling all-MiniLM-L6-v2 and text2vec's default use), and a text2vec
backend over the same folder for models packaged the text2vec way."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .base import FolderOptions, ModelInfo, normalise_rows


class TorchEmbedder(ModelInfo):
    def __init__(self, model_id: str, source: Path | str, *, max_seq_length: int = 256, threads: int = 0) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads > 0:
            torch.set_num_threads(threads)
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(source))
        self._model = AutoModel.from_pretrained(str(source), dtype=torch.float32).eval()
        self._model_id = model_id
        options = FolderOptions(source)
        self._prefix, self._scale = options.prefix, options.similarity_scale
        self._dim = int(self._model.config.hidden_size)
        model_max = int(getattr(self._tokenizer, "model_max_length", max_seq_length) or max_seq_length)
        self._max_len = min(max_seq_length, model_max)
        # Tokenizers are not safe to share across threads mid-call.
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        if self._prefix:
            texts = [self._prefix + t for t in texts]
        with self._lock, torch.inference_mode():
            batch = self._tokenizer(
                texts, padding=True, truncation=True, max_length=self._max_len, return_tensors="pt"
            )
            out = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return normalise_rows(pooled.numpy())


class Text2VecEmbedder(ModelInfo):
    def __init__(self, model_id: str, source: Path | str, *, max_seq_length: int = 256) -> None:
        from text2vec import EncoderType, SentenceModel

        self._model = SentenceModel(
            str(source), encoder_type=EncoderType.MEAN, max_seq_length=max_seq_length, device="cpu"
        )
        self._model_id = model_id
        self._dim = int(self._model.bert.config.hidden_size)
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            vectors = self._model.encode(texts, batch_size=64, normalize_embeddings=True)
        return normalise_rows(np.asarray(vectors))
