"""The same sentence model run by onnxruntime: about twice as fast as torch on
this CPU, with identical vectors (fp32). The model is exported from its
transformers folder once, on first use, into a cache folder; int8 dynamic
quantisation is optional and gets its own model id, since its vectors differ
slightly (cosine 0.98-0.99) and one collection never mixes two models.

The fp32 graph is then fused for onnxruntime (attention, layer norms, GELU
and the embedding layer become single kernels: about 10% less time per
query) and the fused graph is used only where it was checked to give the
unfused graph's vectors on a set of probes (within 1e-5); a model the fuser
does not know keeps the plain export. Same vectors, so the same model id.

At run time neither torch nor transformers is imported: the folder's
``tokenizer.json`` runs in the ``tokenizers`` library directly (transformers'
AutoTokenizer imports torch: about 230 MB of RSS and 4 s of start-up). That
path is used only once it was checked to give the very ids transformers gives
on a set of probes (checked once per model folder, the verdict kept beside the
exported model); otherwise transformers' tokenizer is used as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .base import FolderOptions, ModelInfo, normalise_rows

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXPORT_VERSION = 1
TOKENIZER_CHECK_VERSION = 1
FUSION_VERSION = 1
FUSION_TOLERANCE = 1e-5  # largest difference of any vector component, fused vs plain
# Probes for the tokenizer check: case, accents, CJK, emoji, code, whitespace, and a text past the length limit.
_PROBES = (
    "What's the capital of Vietnam?",
    "  Résumé: naïve café façade, ÅNGSTRÖM über straße  ",
    "如何在 Python 中反转列表？ 北京的天气怎么样",
    "Emoji 🙂👍🏽 and symbols ©®™ ½ ∑ → ≠",
    "def f(x):\n    return x ** 2  # squares\tTAB",
    "find numbers divisible by 13 in Java, C++ and C#; 3.14159, 1e-9, 0x1F",
    "word " * 400,
    "",
)
# torch's exporter keeps global state: one export at a time in a process.
_EXPORT_LOCK = threading.Lock()


@contextlib.contextmanager
def export_lock(folder: Path) -> Iterator[None]:
    """One export into ``folder`` at a time, across threads and processes: replicas started together on one
    model cache folder export the same model at once otherwise, and onnxruntime's quantiser writes and removes a
    fixed-name file beside its input (``<name>-inferred.onnx``), which the other's quantiser then cannot find."""
    folder.mkdir(parents=True, exist_ok=True)
    with _EXPORT_LOCK, open(folder / ".export.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
log = logging.getLogger("modelcache_svc.embedding")
# Loggers of the exporter and onnxruntime's fuser: each step logged at INFO ("Fused Gelu: 6").
_EXPORT_LOGGERS = ("transformers", "torch", "torch.onnx", "onnx_model", "onnx_model_bert", "fusion_base",
                   "fusion_utils", "onnxruntime")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The one-time export says nothing: no tracer or exporter warnings, no "Loading weights" progress, no
    fuser log lines, no stray prints (the service's log handler keeps its own stream and still writes).
    Warning filters and sys.stdout/stderr are process-wide: for the export's few seconds, other threads'
    warnings and bare prints are dropped too (logs are not)."""
    loggers = [logging.getLogger(name) for name in _EXPORT_LOGGERS]
    levels = [logger.level for logger in loggers]
    progress = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if progress is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = progress


def _fingerprint(source: Path) -> str:
    return folder_fingerprint(source, f"v{EXPORT_VERSION}")


def folder_fingerprint(source: Path, tag: str) -> str:
    """A short digest of a model folder's weights, config and tokenizer (sizes and times) under ``tag``: an
    export made from it is reused while this stays the same."""
    digest = hashlib.sha256(tag.encode())
    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json"):
        path = source / name
        if path.exists():
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def export_onnx(source: Path, target: Path) -> None:
    """Export mean-pooled, normalised sentence embeddings of a transformers folder."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Loading weights 0/103 ..."
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        model = AutoModel.from_pretrained(str(source), attn_implementation="eager", dtype=torch.float32).eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()

    class Pooled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    wrapper = Pooled(model).eval()
    sample = tokenizer(["a sample sentence", "another, longer sample sentence"], padding=True, return_tensors="pt")
    args = tuple(sample[name] if name in sample else torch.zeros_like(sample["input_ids"]) for name in _INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in _INPUTS}
    axes["embedding"] = {0: "batch"}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    torch.onnx.export(
        wrapper,
        args,
        str(partial),
        input_names=list(_INPUTS),
        output_names=["embedding"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    os.replace(partial, target)  # atomic: a concurrent starter never reads half a file


def quantise(fp32: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = target.with_suffix(f".{os.getpid()}.tmp")
    quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8, per_channel=True)
    os.replace(partial, target)


def fuse(fp32: Path, target: Path, source: Path) -> bool:
    """Write target: fp32 with onnxruntime's transformer fusions. False when the fuser fails."""
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        heads, hidden = int(config.get("num_attention_heads") or 0), int(config.get("hidden_size") or 0)
        model_type = "bert" if config.get("model_type") in ("bert", "roberta", "xlm-roberta", "distilbert") else ""
        if not model_type:
            return False
        optimized = optimize_model(str(fp32), model_type=model_type, num_heads=heads, hidden_size=hidden, opt_level=1)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        optimized.save_model_to_file(str(partial))
        os.replace(partial, target)
        return True
    except Exception:  # an unknown graph: the plain export serves
        return False


def _session(path: Path, threads: int, spin: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning intra-op threads answer the next operator at once instead of waiting to be woken.
    # force_spinning_stop parks them the moment a run returns, so between runs they never hold a core that
    # gRPC and the stores need. Through the server (Settings.embedding_spin, on by default) that made a
    # one-client semantic query ~10% faster and cost nothing elsewhere (docs/performance.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _fused_checked(fp32: Path, folder: Path, source: Path, feeds: list[dict[str, np.ndarray]]) -> Path | None:
    """The fused graph when it gives the plain graph's vectors on the probes; None otherwise. The verdict
    is kept beside the export, so fusing and checking happen once per model."""
    fused = folder / "model.fused.onnx"
    record = folder / "fusion_check.json"
    key = {"version": FUSION_VERSION, "fingerprint": _fingerprint(source)}
    try:
        kept = json.loads(record.read_text(encoding="utf-8"))
        if {k: kept.get(k) for k in key} == key:
            return fused if kept.get("same_vectors") and fused.exists() else None
    except (OSError, ValueError):
        pass
    same = False
    if fuse(fp32, fused, source):
        try:
            plain, fast = _session(fp32, 1, False), _session(fused, 1, False)
            same = all(
                float(np.max(np.abs(plain.run(["embedding"], f)[0] - fast.run(["embedding"], f)[0])))
                <= FUSION_TOLERANCE for f in feeds
            )
        except Exception:
            same = False
    partial = record.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({**key, "same_vectors": same}))
    os.replace(partial, record)
    return fused if same else None


class OnnxEmbedder(ModelInfo):
    def __init__(
        self,
        model_id: str,
        source: Path | str,
        cache_dir: Path,
        *,
        int8: bool = False,
        max_seq_length: int = 256,
        threads: int = 0,
        spin: bool = False,
        fused: bool = True,
    ) -> None:
        source = Path(source)
        if not source.is_dir():
            raise FileNotFoundError(f"the onnx backend needs a local model folder, not {source}")
        folder = cache_dir / f"{model_id}-{_fingerprint(source)}"
        fp32 = folder / "model.onnx"
        path = folder / "model.int8.onnx" if int8 else fp32
        with export_lock(folder):
            if not fp32.exists() or (int8 and not path.exists()):
                log.info("exporting the embedding model %s to ONNX once (about 10-40 s); later starts reuse %s",
                         model_id, folder)
            with _quiet():
                if not fp32.exists():
                    export_onnx(source, fp32)
                if int8 and not path.exists():
                    quantise(fp32, path)
        (folder / "source.json").write_text(json.dumps({"source": str(source), "model_id": model_id}))
        self._max_len = min(max_seq_length, _model_max_length(source, max_seq_length))
        self._fast = _checked_fast_tokenizer(source, folder, self._max_len)
        self._tokenizer = None if self._fast is not None else _auto_tokenizer(source)
        self._lock = threading.Lock()
        if fused and not int8:
            with export_lock(folder):
                probes = [self._feed(list(_PROBES[:6])), self._feed(list(_PROBES[6:]))]
                with _quiet():
                    path = _fused_checked(fp32, folder, source, probes) or fp32
        self.path = path
        options = FolderOptions(source)
        self._prefix, self._scale = options.prefix, options.similarity_scale
        self._session = _session(path, threads, spin)
        self._model_id = f"{model_id}#int8" if int8 else model_id
        self._dim = int(self._session.get_outputs()[0].shape[-1] or 0) or self._probe_dim()

    def _probe_dim(self) -> int:
        return int(self.encode(["probe"]).shape[1])

    def _feed(self, texts: list[str]) -> dict[str, np.ndarray]:
        if self._fast is not None:
            feed = _fast_feed(self._fast, texts)
        else:
            with self._lock:
                batch = self._tokenizer(
                    texts, padding=True, truncation=True, max_length=self._max_len, return_tensors="np"
                )
            feed = {name: np.asarray(batch[name], dtype=np.int64) for name in _INPUTS if name in batch}
        if "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        return feed

    def tail_past_window(self, text: str) -> str:
        """The part of ``text`` the model never reads: what follows the last token that fits its window
        ("" when all of it fits). The core keys long prompts on it (cache/window.py)."""
        if len(text) * 2 < self._max_len - 2:  # a token covers at least half a character: it fits
            return ""
        full = self._prefix + text
        if self._fast is not None:
            encoding = self._fast.encode(full)
            if not encoding.overflowing:
                return ""
            end = max((e for s, e in encoding.offsets if e > s), default=0)
        else:
            with self._lock:
                batch = self._tokenizer(full, truncation=True, max_length=self._max_len,
                                        return_overflowing_tokens=True, return_offsets_mapping=True)
            if len(batch["input_ids"]) < 2 and not batch.get("num_truncated_tokens"):
                return ""
            offsets = batch["offset_mapping"][0] if isinstance(batch["offset_mapping"][0], list) else \
                batch["offset_mapping"]
            end = max((e for s, e in offsets if e > s), default=0)
        return text[max(0, end - len(self._prefix)):].strip()

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._prefix:
            texts = [self._prefix + t for t in texts]
        (vectors,) = self._session.run(["embedding"], self._feed(texts))
        return normalise_rows(vectors)


# -- tokenizers ------------------------------------------------------------------------------
def _auto_tokenizer(source: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source))


def _model_max_length(source: Path, default: int) -> int:
    """The tokenizer's model_max_length, as transformers reads it from tokenizer_config.json."""
    try:
        config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
        return int(config.get("model_max_length") or default)
    except (OSError, ValueError, TypeError, OverflowError):
        return _auto_tokenizer_max_length(source, default)


def _auto_tokenizer_max_length(source: Path, default: int) -> int:
    return int(getattr(_auto_tokenizer(source), "model_max_length", default) or default)


def _fast_tokenizer(source: Path, max_len: int) -> Any:
    """The folder's tokenizer.json in the tokenizers library, set up as transformers calls it here:
    truncation at max_len (longest first), padding to the longest text of the batch."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.enable_truncation(max_length=max_len)
    pad_token = "[PAD]"
    try:
        config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
        pad = config.get("pad_token")
        pad_token = pad.get("content", pad_token) if isinstance(pad, dict) else (pad or pad_token)
    except (OSError, ValueError):
        pass
    pad_id = tokenizer.token_to_id(pad_token)
    if pad_id is None:
        raise ValueError(f"no pad token {pad_token!r} in tokenizer.json")
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def _fast_feed(tokenizer: Any, texts: list[str]) -> dict[str, np.ndarray]:
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def _checked_fast_tokenizer(source: Path, folder: Path, max_len: int) -> Any:
    """The fast path when it gives transformers' very ids on the probes; None otherwise.

    The verdict is kept in the export folder (keyed by the folder's fingerprint and max_len), so
    transformers is imported for the check once per model, not on every start."""
    if not (source / "tokenizer.json").is_file():
        return None
    record = folder / "tokenizer_check.json"
    key = {"version": TOKENIZER_CHECK_VERSION, "fingerprint": _fingerprint(source), "max_len": max_len}
    try:
        fast = _fast_tokenizer(source, max_len)
    except Exception:
        return None
    try:
        kept = json.loads(record.read_text(encoding="utf-8"))
        if {k: kept.get(k) for k in key} == key:
            return fast if kept.get("same_ids") else None
    except (OSError, ValueError):
        pass
    same = _same_ids(fast, _auto_tokenizer(source), max_len)
    partial = record.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({**key, "same_ids": same}))
    os.replace(partial, record)
    return fast if same else None


def _same_ids(fast: Any, slow: Any, max_len: int) -> bool:
    probes = list(_PROBES)
    batches = [probes, probes[:1], probes[1:3], probes[6:]]
    for batch in batches:
        want = slow(batch, padding=True, truncation=True, max_length=max_len, return_tensors="np")
        got = _fast_feed(fast, batch)
        for name in _INPUTS:
            if name not in want:
                continue
            if got[name].shape != want[name].shape or not np.array_equal(got[name], np.asarray(want[name])):
                return False
    return True
