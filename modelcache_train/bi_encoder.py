"""`modelcache-svc train`: fine-tune a sentence model for caching on labelled question pairs.

Semantic similarity is not "the same answer" (ModelCache's article, §4.2): a cache wants
"what is the capital of France" and "... of Germany" far apart although they read alike.
The pairs say which is which (label 1: the answer to ``a`` may be served for ``b``), and
CoSENT learns from both kinds: it asks every positive pair of a batch to score above every
negative one (Su 2022; the hard negatives carry the signal, DESIGN §12). The model is the
usual mean-pooled, normalised sentence model, so the folder it writes loads everywhere a
model folder does (`--embedding-model DIR`, a tenant's ``embedding_model``, the ONNX path).

Runs on the CPU under a step or time budget, with a fixed seed; the folder gets
``modelcache_train.json``: base model, data files and their sha256, steps, loss, seed, command.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from modelcache_svc.embedding.base import OPTIONS_FILE

from .data import PROVENANCE, BatchOrder, Pair, split_pairs
from .runs import Run, default_run_dir, freeze_word_embeddings, seed_everything, train_loop


def cosent_loss(torch: Any, cosines: Any, labels: Any, scale: float = 20.0) -> Any:
    """log(1 + sum over (negative i, positive j) of exp(scale * (cos_i - cos_j)))."""
    diff = scale * (cosines[:, None] - cosines[None, :])
    keep = (labels[:, None] < labels[None, :]).to(diff.dtype)
    diff = diff - (1 - keep) * 1e12
    zero = torch.zeros(1, dtype=diff.dtype, device=diff.device)
    return torch.logsumexp(torch.cat([zero, diff.flatten()]), dim=0)


def train(
    pairs_files: list[Path],
    out: Path,
    *,
    base: str = "packaged:all-MiniLM-L6-v2",
    batch_size: int = 64,
    lr: float = 2e-5,
    epochs: float = 1.0,
    max_steps: int = 0,
    time_budget_s: float = 0.0,
    stop_after: int = 0,
    seed: int = 0,
    max_seq_length: int = 64,
    threads: int = 0,
    prefix: str | None = None,
    freeze_embeddings: bool = True,
    holdout: int = 2000,
    half: bool = False,
    checkpoint_every: int = 0,
    checkpoint_minutes: float = 5.0,
    resume: bool = False,
    run_dir: Path | None = None,
    quiet: bool = False,
    command: list[str] | None = None,
) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    from modelcache_svc.embedding.models import resolve_model

    started = time.time()
    seed_everything(torch, seed, threads)

    _, source = resolve_model(base)
    if prefix is None:
        prefix = default_prompt(Path(source)) if Path(str(source)).is_dir() else ""
    # A held-out slice of the training pairs (never the eval files) fits the similarity scale.
    files, held, pairs = split_pairs(pairs_files, seed, holdout)

    model = SentenceTransformer(str(source), device="cpu")
    model.max_seq_length = max_seq_length
    model.train()
    if freeze_embeddings:
        freeze_word_embeddings(model)
    order = BatchOrder(pairs, batch_size, seed)
    total = max_steps or max(1, int(order.per_epoch * epochs))
    trainable, optimiser, schedule = optimiser_for(torch, model, lr, total)
    config = {
        "kind": "bi-encoder", "base": base, "data": [f["sha256"] for f in files], "batch_size": batch_size,
        "lr": lr, "steps_planned": total, "seed": seed, "max_seq_length": max_seq_length, "prefix": prefix,
        "freeze_embeddings": freeze_embeddings, "holdout": len(held),
    }
    run = Run(run_dir or default_run_dir(out), config)

    def loss_of(batch: list[Pair], step: int) -> Any:
        labels = torch.tensor([p.label for p in batch])
        if labels.min() == labels.max():  # CoSENT needs both kinds in a batch
            return None
        emb_a = model(model.tokenize([prefix + p.a for p in batch]))["sentence_embedding"]
        emb_b = model(model.tokenize([prefix + p.b for p in batch]))["sentence_embedding"]
        return cosent_loss(torch, torch.nn.functional.cosine_similarity(emb_a, emb_b), labels)

    result = train_loop(
        torch, model=model, trainable=trainable, optimiser=optimiser, schedule=schedule, order=order,
        total=total, loss_of=loss_of, run=run, resume=resume, batch_size=batch_size,
        checkpoint_every=checkpoint_every, checkpoint_minutes=checkpoint_minutes, time_budget_s=time_budget_s,
        stop_after=stop_after, quiet=quiet, desc="train",
    )
    losses, stopped_by = result.losses, result.stopped_by

    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    if half:
        halve_weights(out)
    scale = fit_scale(out, held, quiet=quiet) if held else None
    window = max(1, min(50, len(losses)))
    record = {
        "base_model": base,
        "base_source": str(source),
        "data": files,
        "pairs": len(pairs),
        "loss": "CoSENT (scale 20) over every labelled pair of a batch",
        "batch_size": batch_size,
        "learning_rate": lr,
        "max_seq_length": max_seq_length,
        "prefix": prefix,
        "steps": len(losses),
        "steps_planned": total,
        "pairs_seen": len(losses) * batch_size,
        "stopped_by": stopped_by,
        "resumed_from_step": result.resumed_from,
        "run_dir": str(run.folder),
        "loss_first": sum(losses[:window]) / window if losses else None,
        "loss_last": sum(losses[-window:]) / window if losses else None,
        "freeze_embeddings": freeze_embeddings,
        "held_out_pairs": len(held),
        "weights": "fp16" if half else "fp32",
        "similarity_scale": scale,
        "seed": seed,
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "command": command or [],
    }
    (out / PROVENANCE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if stopped_by == "steps":
        run.finished()
    return record


def optimiser_for(torch: Any, model: Any, lr: float, total: int) -> tuple[list[Any], Any, Any]:
    """AdamW over the parameters that train, with a linear warm-up over 10 % of the steps and a linear decay."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    warmup = max(1, int(0.1 * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    return trainable, optimiser, schedule


def halve_weights(folder: Path) -> None:
    """Store the folder's weights in fp16 (half the bytes; the backends load them as fp32 and the
    vectors move by about 1e-4 in cosine)."""
    from safetensors.numpy import load_file, save_file

    path = folder / "model.safetensors"
    weights = load_file(str(path))
    save_file({k: v.astype("float16") if v.dtype.kind == "f" else v for k, v in weights.items()}, str(path),
              metadata={"format": "pt"})


def best_threshold(cosines: list[float], labels: list[float]) -> tuple[float, float]:
    """(threshold, F1) of the cosine threshold with the best F1 in pairs mode."""
    ranked = sorted(zip(cosines, labels), reverse=True)
    positives = sum(labels)
    best = (1.0, 0.0)
    right = 0.0
    for n, (cosine, label) in enumerate(ranked, 1):
        right += label
        if n < len(ranked) and ranked[n][0] == cosine:
            continue
        f1 = 2 * right / (n + positives) if positives else 0.0
        if f1 > best[1]:
            best = (cosine, f1)
    return best


def fit_scale(
    folder: Path, pairs: list[Pair], *, common_threshold: float = 0.80, quiet: bool = True, target: Path | None = None
) -> dict[str, Any]:
    """Fit the folder's similarity scale (embedding/base.py, FolderOptions) on labelled pairs: the
    cosine with the best pairs-mode F1 is made to read as ``common_threshold``, the server's default,
    so one threshold means about the same for every model. Writes modelcache.json; returns it."""
    import numpy as np
    from tqdm import tqdm

    from modelcache_svc.embedding import load_embedder

    embedder = load_embedder("onnx", str(folder))
    cosines = []
    step = 32
    for start in tqdm(range(0, len(pairs), step), desc="fit scale", disable=quiet or not sys.stderr.isatty()):
        chunk = pairs[start:start + step]
        a = embedder.encode([p.a for p in chunk])
        b = embedder.encode([p.b for p in chunk])
        cosines.extend(np.sum(a * b, axis=1).tolist())
    threshold, f1 = best_threshold(cosines, [p.label for p in pairs])
    scale = (1.0 - common_threshold) / max(1e-6, 1.0 - threshold)
    record = {
        "similarity_scale": round(scale, 4),
        "fitted_on_pairs": len(pairs),
        "best_f1_cosine": round(threshold, 4),
        "best_f1": round(f1, 4),
        "reads_as": common_threshold,
    }
    (target or folder / OPTIONS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def default_prompt(folder: Path) -> str:
    """The prefix a sentence-transformers folder asks for by default (e5's "query: "), else ""."""
    try:
        config = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))
        name = config.get("default_prompt_name")
        return str((config.get("prompts") or {}).get(name, "")) if name else ""
    except (OSError, ValueError, AttributeError):
        return ""
