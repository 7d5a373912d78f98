"""The Embedder interface and how a configured model name becomes a folder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Protocol

import numpy as np

PACKAGED_PREFIX = "packaged:"
USE_PREFIX = "use:"
OPTIONS_FILE = "modelcache.json"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    @property
    def model_id(self) -> str:
        """A stable name for the model; recorded beside every vector it makes."""
        ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str]) -> np.ndarray: ...


class ModelInfo:
    """The properties every embedder exposes, kept in ``_model_id``, ``_dim`` and ``_scale``."""

    _model_id: str
    _dim: int
    _scale: float = 1.0

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def similarity_scale(self) -> float:
        """How much wider this model's cosines are than the scale thresholds are given in (see
        ``FolderOptions``): a threshold t means cosine >= 1 - (1 - t) / scale."""
        return self._scale


class FolderOptions:
    """What a model folder says about how it is used, beyond its weights.

    - ``prefix``: the text put before every question, from sentence-transformers'
      ``config_sentence_transformers.json`` (its default prompt: e5's ``query: ``).
    - ``similarity_scale``: from ``modelcache.json``. Thresholds and reported similarities are on
      one scale for every model (that of all-MiniLM-L6-v2, where 0.80 is the server's default);
      a model whose cosines sit closer together (e5's: 0.92-0.99) says by how much, fitted on
      training pairs (never the eval files): cosine c is reported as 1 - (1 - c) * scale.
    """

    def __init__(self, folder: Path | str) -> None:
        self.prefix = ""
        self.similarity_scale = 1.0
        path = Path(folder)
        if not path.is_dir():
            return
        try:
            config = json.loads((path / "config_sentence_transformers.json").read_text(encoding="utf-8"))
            name = config.get("default_prompt_name")
            self.prefix = str((config.get("prompts") or {}).get(name, "")) if name else ""
        except (OSError, ValueError, AttributeError):
            pass
        try:
            options = json.loads((path / OPTIONS_FILE).read_text(encoding="utf-8"))
            scale = float(options.get("similarity_scale", 1.0))
            if scale > 0:
                self.similarity_scale = scale
        except (OSError, ValueError, AttributeError, TypeError):
            pass


def has_cjk(text: str) -> bool:
    """True when the text holds a CJK ideograph, kana or hangul syllable: the English models read
    those as [UNK], so such questions go to the multilingual model (routing in pool.py)."""
    return _CJK.search(text) is not None


_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def is_use_spec(name: str) -> bool:
    """A model spec the numpy USE backend serves (no folder, no hub)."""
    return name.startswith(USE_PREFIX)


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms
