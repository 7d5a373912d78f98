"""One verifier model served by onnxruntime, and the options fitted for it.

The trained folder (tools/train_verifier.py) is exported once to ONNX (probability = sigmoid of the head's
logit) in the model cache, fused for onnxruntime where the fused graph gives the plain graph's scores, and
run with the folder's ``tokenizer.json`` in the tokenizers library: no torch at run time.

``verifier.json`` in the folder holds what was fitted on held-out training pairs (tools/fit_verifier.py):
the band of similarities (on the common threshold scale) in which the verifier decides, and its cut-off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("modelcache_svc.verifier")

OPTIONS_FILE = "verifier.json"
EXPORT_VERSION = 1
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_FUSION_TOLERANCE = 1e-4
_PROBES = (
    ("What's the capital of Vietnam?", "capital city of Vietnam?"),
    ("How do I reverse a list in Python?", "How do I reverse a list in Java?"),
    ("如何在 Python 中反转列表？", "北京的天气怎么样"),
    ("Summarize the text above", "Translate the text above into French, keeping names as they are"),
)
_EXPORT_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class VerifierOptions:
    """Where the verifier decides: similarities in [band_low, band_high) go to it, and it accepts a candidate
    with probability >= cutoff. Defaults for a folder without a fit: a narrow band around the default."""

    band_low: float = 0.70
    band_high: float = 0.95
    cutoff: float = 0.5

    @classmethod
    def of_folder(cls, folder: Path) -> VerifierOptions:
        try:
            data = json.loads((folder / OPTIONS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        return cls(float(data["band_low"]), float(data["band_high"]), float(data["cutoff"]))


def _fingerprint(source: Path) -> str:
    digest = hashlib.sha256(f"verifier-v{EXPORT_VERSION}".encode())
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        path = source / name
        if path.exists():
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def export_onnx(source: Path, target: Path) -> None:
    import torch

    from ..tools.train_verifier import build_model

    model = build_model(torch, source, eager=True).eval()

    class Probability(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return torch.sigmoid(self.inner(input_ids, attention_mask, token_type_ids))

    sample = {
        "input_ids": torch.tensor([[101, 2054, 102, 2129, 102], [101, 2054, 2003, 102, 102]]),
        "attention_mask": torch.ones(2, 5, dtype=torch.int64),
        "token_type_ids": torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]]),
    }
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in _INPUTS}
    axes["probability"] = {0: "batch"}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    from ..embedding.onnx_backend import _quiet

    with _quiet():
        torch.onnx.export(Probability(model).eval(), tuple(sample[n] for n in _INPUTS), str(partial),
                          input_names=list(_INPUTS), output_names=["probability"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    os.replace(partial, target)


def pair_tokenizer(source: Path, max_len: int) -> Any:
    """The folder's tokenizer.json for pairs: both texts cut longest-first to max_len, padded per batch."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_len, strategy="longest_first")
    pad = "[PAD]" if tokenizer.token_to_id("[PAD]") is not None else "<pad>"
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad), pad_token=pad)
    return tokenizer


class Verifier:
    """``score(question, candidates)``: one probability per candidate question, in one model call."""

    def __init__(self, model_id: str, source: Path, cache_dir: Path, *, max_seq_length: int = 128,
                 threads: int = 1) -> None:
        from ..embedding.onnx_backend import _session, fuse

        if not (source / "model.safetensors").is_file() or not (source / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{source} is not a verifier folder (model.safetensors, tokenizer.json)")
        folder = cache_dir / f"{model_id}-{_fingerprint(source)}"
        plain = folder / "verifier.onnx"
        fused = folder / "verifier.fused.onnx"
        with _EXPORT_LOCK:
            if not plain.exists():
                log.info("exporting the verifier %s to ONNX once; later starts reuse %s", model_id, folder)
                export_onnx(source, plain)
        self.model_id = model_id
        self.options = VerifierOptions.of_folder(source)
        self._tokenizer = pair_tokenizer(source, max_seq_length)
        path = plain
        if fused.exists() or fuse(plain, fused, source):
            probes = self._feed(list(_PROBES[0]), [_PROBES[1][1]] * 2)
            a, b = _session(plain, 1, False), _session(fused, 1, False)
            if np.max(np.abs(a.run(None, probes)[0] - b.run(None, probes)[0])) <= _FUSION_TOLERANCE:
                path = fused
        self.path = path
        self._session = _session(path, threads, False)

    def _feed(self, firsts: list[str], seconds: list[str]) -> dict[str, np.ndarray]:
        encodings = self._tokenizer.encode_batch(list(zip(firsts, seconds)))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    def score(self, question: str, candidates: list[str]) -> list[float]:
        if not candidates:
            return []
        (probabilities,) = self._session.run(["probability"], self._feed([question] * len(candidates), candidates))
        return [float(p) for p in np.asarray(probabilities).reshape(-1)]

    def score_pairs(self, firsts: list[str], seconds: list[str]) -> list[float]:
        (probabilities,) = self._session.run(["probability"], self._feed(firsts, seconds))
        return [float(p) for p in np.asarray(probabilities).reshape(-1)]


VERIFIERS_DIR = Path(__file__).resolve().parent.parent / "verifiers"


def packaged_verifiers() -> list[str]:
    from ..embedding.overlay import is_overlay

    return sorted(p.name for p in VERIFIERS_DIR.iterdir() if is_overlay(p)) if VERIFIERS_DIR.is_dir() else []


def resolve_verifier(spec: str, cache_dir: Path | None = None) -> tuple[str, Path]:
    """(model_id, folder) of a verifier spec: ``packaged:NAME`` (an overlay of modelcache_svc/verifiers/ on a
    packaged base, made whole in the model cache on first use) or a trained folder."""
    from ..embedding.base import PACKAGED_PREFIX
    from ..embedding.models import model_cache_root, resolve_model
    from ..embedding.overlay import base_of, materialise
    from ..errors import InvalidArgument

    if spec.startswith(PACKAGED_PREFIX):
        name = spec[len(PACKAGED_PREFIX):]
        if name not in packaged_verifiers():
            raise InvalidArgument(f"unknown packaged verifier {name!r} (known: {', '.join(packaged_verifiers())})")
        overlay = VERIFIERS_DIR / name
        _, base = resolve_model(base_of(overlay), cache_dir)
        return name, materialise(overlay, Path(base), model_cache_root(cache_dir) / "models")
    path = Path(spec).expanduser()
    if (path / "model.safetensors").is_file():
        return path.absolute().name, path.resolve()
    raise InvalidArgument(f"verifier {spec!r} is neither packaged:NAME nor a trained verifier folder")


def load_verifier(spec: str, cache_dir: Path | None = None, *, threads: int = 1) -> Verifier:
    from ..embedding.models import model_cache_root

    model_id, folder = resolve_verifier(spec, cache_dir)
    return Verifier(model_id, folder, model_cache_root(cache_dir) / "verifiers", threads=threads)
