"""Models tuned here, committed as the weights that changed on top of a packaged base model.

A fine-tuned model folder is about 90 MB (MiniLM) or 250 MB (multilingual-e5-small) in fp32;
training leaves the word embeddings frozen (modelcache_train/bi_encoder.py), and they are most of either. So
``modelcache_svc/models/<name>/`` holds only what training changed, in fp16
(``overlay.safetensors``, 20-45 MB), and ``overlay.json`` names the base it applies to. On
first use the full folder is made in the model cache (the base's files, its weights with the
overlay put in, the overlay's ``modelcache.json`` and provenance) and then loads like any
other folder, through the ONNX path too. `make models` rebuilds the overlays
(`modelcache-svc train ... --pack NAME`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger("modelcache_svc.embedding")

MANIFEST = "overlay.json"
WEIGHTS = "overlay.safetensors"
CARRIED = ("modelcache.json", "modelcache_train.json", "verifier.json")  # copied from the overlay into the folder
OVERLAY_VERSION = 1


def is_overlay(folder: Path) -> bool:
    return (folder / MANIFEST).is_file() and (folder / WEIGHTS).is_file()


def base_of(overlay: Path) -> str:
    """The model spec the overlay applies to (``packaged:all-MiniLM-L6-v2``, ...)."""
    return str(json.loads((overlay / MANIFEST).read_text(encoding="utf-8"))["base"])


def materialise(overlay: Path, base: Path, cache_dir: Path) -> Path:
    """The full model folder for an overlay over the base folder, made in cache_dir on first use."""
    from safetensors.numpy import load_file, save_file

    # The base folder's name is part of the key: a converted base names its version (e5_convert.py), and an
    # overlay made whole over an older base must not be reused over a new one.
    digest = hashlib.sha256(f"v{OVERLAY_VERSION}\x00{base.resolve().name}".encode())
    for name in (MANIFEST, WEIGHTS, *CARRIED):
        path = overlay / name
        if path.is_file():
            digest.update(name.encode() + path.read_bytes())
    target = cache_dir / f"{overlay.name}-{digest.hexdigest()[:12]}"
    if (target / "model.safetensors").is_file():
        return target
    log.info("making the tuned model %s from its overlay once; later starts reuse %s", overlay.name, target)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(base, partial, ignore=shutil.ignore_patterns("model.safetensors", "pytorch_model.bin", "*.onnx"))
    weights = load_file(str(base / "model.safetensors"))
    changed = load_file(str(overlay / WEIGHTS))
    for key, value in changed.items():
        if key in weights and weights[key].shape != value.shape:
            raise ValueError(f"{overlay}: {key} has shape {value.shape}, the base's is {weights[key].shape}")
        weights[key] = value.astype(np.float32)
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(partial / "model.safetensors"),
              metadata={"format": "pt"})
    for name in CARRIED:
        if (overlay / name).is_file():
            shutil.copyfile(overlay / name, partial / name)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, target)
    return target


def pack(trained: Path, base: str, base_folder: Path, out: Path) -> dict[str, object]:
    """Write the overlay of a trained folder over its base (spec and folder) into ``out``: the tensors
    that differ, in fp16."""
    from safetensors.numpy import load_file, save_file

    before = load_file(str(base_folder / "model.safetensors"))
    after = load_file(str(trained / "model.safetensors"))
    changed = {
        key: value.astype(np.float16)
        for key, value in after.items()
        if key not in before or before[key].shape != value.shape
        or not np.array_equal(before[key], value.astype(before[key].dtype))
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(changed, str(out / WEIGHTS), metadata={"format": "pt"})
    manifest = {
        "base": base,
        "tensors": len(changed),
        "parameters": int(sum(v.size for v in changed.values())),
        "dtype": "float16",
        "version": OVERLAY_VERSION,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for name in CARRIED:
        if (trained / name).is_file():
            shutil.copyfile(trained / name, out / name)
    return manifest
