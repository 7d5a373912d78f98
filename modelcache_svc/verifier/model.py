"""One verifier model served by onnxruntime, and the options fitted for it.

The trained folder (modelcache_train/cross_encoder.py) is exported once to ONNX (the head's logit) in the model cache
and quantised to int8 (per-channel dynamic): one pair costs about 1.1 ms instead of 4.0 ms in fp32 on one
core here, with logits within 0.14 on average (correlation 0.998) — and the band and cut-off are fitted on
the int8 model's own logits, since modelcache_train/fit_verifier.py scores through this class. It runs with the
folder's ``tokenizer.json`` in the tokenizers library: no torch at run time.

``verifier.json`` in the folder holds what was fitted on held-out training pairs (modelcache_train/fit_verifier.py):
the band of similarities (on the common threshold scale) in which the verifier decides, and its cut-off.
"""

from __future__ import annotations

import json
import math
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("modelcache_svc.verifier")

OPTIONS_FILE = "verifier.json"
EXPORT_VERSION = 3
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True, slots=True)
class VerifierOptions:
    """Where the verifier decides: similarities in [band_low, band_high) go to it, and it accepts a candidate
    whose probability is at least ``cutoff``. The probability reads the cross-encoder's logit together with
    the similarity, ``sigmoid(w_logit * logit + w_similarity * similarity + bias)`` (a logistic fit on held-out
    pairs: the two disagree on different pairs, so together they rank better than either). Defaults for a
    folder without a fit: the cross-encoder's own probability, in a band around the default threshold."""

    band_low: float = 0.70
    band_high: float = 0.95
    cutoff: float = 0.5
    w_logit: float = 1.0
    w_similarity: float = 0.0
    bias: float = 0.0

    @classmethod
    def of_folder(cls, folder: Path) -> VerifierOptions:
        try:
            data = json.loads((folder / OPTIONS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        combine = data.get("combine") or {}
        return cls(float(data["band_low"]), float(data["band_high"]), float(data["cutoff"]),
                   float(combine.get("w_logit", 1.0)), float(combine.get("w_similarity", 0.0)),
                   float(combine.get("bias", 0.0)))

    def probability(self, logit: float, similarity: float) -> float:
        z = self.w_logit * logit + self.w_similarity * similarity + self.bias
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def _fingerprint(source: Path) -> str:
    from ..embedding.onnx_backend import folder_fingerprint

    return folder_fingerprint(source, f"verifier-v{EXPORT_VERSION}")


def export_onnx(source: Path, target: Path) -> None:
    import torch

    from .cross_encoder import build_model

    model = build_model(torch, source, eager=True).eval()

    class Probability(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(input_ids, attention_mask, token_type_ids)

    sample = {
        "input_ids": torch.tensor([[101, 2054, 102, 2129, 102], [101, 2054, 2003, 102, 102]]),
        "attention_mask": torch.ones(2, 5, dtype=torch.int64),
        "token_type_ids": torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]]),
    }
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in _INPUTS}
    axes["logit"] = {0: "batch"}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    from ..embedding.onnx_backend import _quiet

    with _quiet():
        torch.onnx.export(Probability(model).eval(), tuple(sample[n] for n in _INPUTS), str(partial),
                          input_names=list(_INPUTS), output_names=["logit"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    os.replace(partial, target)


def pair_tokenizer(source: Path, max_len: int) -> Any:
    """The folder's tokenizer.json for pairs: both texts cut longest-first to max_len, padded per batch."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    # The pad token the folder's tokenizer names (MPNet's vocabulary holds a "[PAD]" that is not its pad).
    named = (tokenizer.padding or {}).get("pad_token")
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_len, strategy="longest_first")
    pad = named or ("[PAD]" if tokenizer.token_to_id("[PAD]") is not None else "<pad>")
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad), pad_token=pad)
    return tokenizer


class Verifier:
    """``score(question, candidates, similarities)``: one probability per candidate, in one model call."""

    def __init__(self, model_id: str, source: Path, cache_dir: Path, *, max_seq_length: int = 128,
                 threads: int = 1) -> None:
        from ..embedding.onnx_backend import _session, export_lock, quantise

        if not (source / "model.safetensors").is_file() or not (source / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{source} is not a verifier folder (model.safetensors, tokenizer.json)")
        folder = cache_dir / f"{model_id}-{_fingerprint(source)}"
        plain = folder / "verifier.onnx"
        path = folder / "verifier.int8.onnx"
        with export_lock(folder):
            if not path.exists():
                log.info("exporting the verifier %s to ONNX (int8) once; later starts reuse %s", model_id, folder)
                from ..embedding.onnx_backend import _quiet

                if not plain.exists():
                    export_onnx(source, plain)
                # onnxruntime's quantiser logs its advice on the root logger, a line per node: not ours to pass on.
                root = logging.getLogger()
                level = root.level
                root.setLevel(logging.ERROR)
                try:
                    with _quiet():
                        quantise(plain, path)
                finally:
                    root.setLevel(level)
        self.model_id = model_id
        self.options = VerifierOptions.of_folder(source)
        self._tokenizer = pair_tokenizer(source, max_seq_length)
        self.path = path
        self._session = _session(path, threads, False)
        # An MPNet graph has no token_type_ids input (the exporter drops what the network never reads).
        self._inputs = {i.name for i in self._session.get_inputs()}

    def _feed(self, firsts: list[str], seconds: list[str]) -> dict[str, np.ndarray]:
        encodings = self._tokenizer.encode_batch(list(zip(firsts, seconds)))
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return {name: value for name, value in feed.items() if name in self._inputs}

    def logits(self, firsts: list[str], seconds: list[str]) -> list[float]:
        """The cross-encoder's logit of each (question, cached question) pair, in one model call."""
        if not firsts:
            return []
        (logits,) = self._session.run(["logit"], self._feed(firsts, seconds))
        return [float(x) for x in np.asarray(logits).reshape(-1)]

    def score(self, question: str, candidates: list[str], similarities: list[float]) -> list[float]:
        """The probability that each candidate's answer serves the question, given its similarity too."""
        logits = self.logits([question] * len(candidates), candidates)
        return [self.options.probability(x, s) for x, s in zip(logits, similarities, strict=True)]


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
