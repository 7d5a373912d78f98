"""`modelcache-svc train --cross-encoder`: train the verifier, a cross-encoder that reads a question and a
cached question together and says how likely the cached answer serves the question.

A bi-encoder embeds each question alone, so two questions a word apart embed alike ("... in Brazil" /
"... in Peru"). A cross-encoder attends across both texts at once and tells them apart; it costs a model
call per candidate, so the service runs it only on candidates whose cosine is uncertain (verifier/).

The model is the base's BertModel (same tensor names, so the overlay holds only what training changed)
plus one linear head over the mean-pooled tokens of ``[CLS] a [SEP] b [SEP]``, trained with
binary cross-entropy on labelled pairs; the order of the two questions is drawn at random per pair,
since the service asks in both directions. Word embeddings stay frozen (CPU time, overlay size).
Fixed seed; a checkpoint every ``--checkpoint-every`` steps (``--resume`` goes on from it), so a
stopped run loses at most that much; ``modelcache_train.json`` records data, steps, loss and command.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from .train import PROVENANCE, length_batches, optimiser_for, split_pairs

HEAD_WEIGHT = "verifier_head.weight"
HEAD_BIAS = "verifier_head.bias"
CHECKPOINT = "checkpoint.pt"
VERIFIER_FILE = "verifier.json"


def build_model(torch: Any, source: Path, *, eager: bool = False) -> Any:
    """The base's BertModel with the verifier head; the head is read from the folder when it has one."""
    from transformers import AutoModel

    class CrossEncoder(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert
            self.head = torch.nn.Linear(bert.config.hidden_size, 1)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(pooled).squeeze(-1)

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head's tensors are "unexpected" to BertModel: they are ours
    try:
        extra = {"attn_implementation": "eager"} if eager else {}
        bert = AutoModel.from_pretrained(str(source), add_pooling_layer=False, **extra)
    finally:
        hf_logging.set_verbosity(verbosity)
    model = CrossEncoder(bert)
    weights = source / "model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(weights))
        if HEAD_WEIGHT in tensors:
            with torch.no_grad():
                model.head.weight.copy_(tensors[HEAD_WEIGHT].float())
                model.head.bias.copy_(tensors[HEAD_BIAS].float())
    return model


def save_model(model: Any, source: Path, out: Path) -> None:
    """The base folder's files with the trained weights: BertModel's tensors under the base's own names
    and the head's, so overlay.pack keeps only what changed."""
    import shutil

    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.suffix not in (".onnx", ".bin") and item.name not in (
            "model.safetensors", PROVENANCE, "modelcache.json", VERIFIER_FILE, CHECKPOINT
        ):
            shutil.copyfile(item, out / item.name)
    tensors = {k: v.detach().contiguous() for k, v in model.bert.state_dict().items()}
    tensors[HEAD_WEIGHT] = model.head.weight.detach().contiguous()
    tensors[HEAD_BIAS] = model.head.bias.detach().contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def train(
    pairs_files: list[Path],
    out: Path,
    *,
    base: str,
    batch_size: int = 32,
    lr: float = 4e-5,
    epochs: float = 1.0,
    max_steps: int = 0,
    time_budget_s: float = 0.0,
    seed: int = 0,
    max_seq_length: int = 96,
    threads: int = 0,
    holdout: int = 2000,
    checkpoint_every: int = 200,
    resume: bool = False,
    init: Path | None = None,
    batch_seed: int | None = None,
    quiet: bool = False,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """``init``: a trained verifier folder to go on from (another epoch), the base staying ``base``;
    ``batch_seed``: the order of batches and sides (default ``seed``; the held-out split always follows
    ``seed``, so an epoch more keeps the same held-out pairs)."""
    batch_seed = seed if batch_seed is None else batch_seed
    import numpy as np
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from ..embedding.models import resolve_model

    started = time.time()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads > 0:
        torch.set_num_threads(threads)
    _, resolved = resolve_model(base)
    source = Path(resolved)
    files, held, pairs = split_pairs(pairs_files, seed, holdout)

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = build_model(torch, init or source)
    for name, parameter in model.named_parameters():
        if "embeddings." in name:
            parameter.requires_grad_(False)
    batches = length_batches(pairs, batch_size, batch_seed)
    per_epoch = len(batches)
    total = max_steps or max(1, int(per_epoch * epochs))
    trainable, optimiser, schedule = optimiser_for(torch, model, lr, total)
    losses: list[float] = []
    step = 0
    checkpoint = out / CHECKPOINT
    if resume and checkpoint.is_file():
        state = torch.load(str(checkpoint), weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        step, losses = int(state["step"]), list(state["losses"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = random.Random(batch_seed + step)
    model.train()
    stopped_by = "steps"
    interactive = not quiet and sys.stderr.isatty()
    bar = tqdm(total=total, initial=step, desc="train verifier", unit="step", disable=not interactive)
    while step < total:
        if step % per_epoch == 0 and step:
            batches = length_batches(pairs, batch_size, batch_seed + step)
        batch = batches[step % per_epoch]
        first, second = [], []
        for p in batch:
            a, b = (p.a, p.b) if rng.random() < 0.5 else (p.b, p.a)
            first.append(a)
            second.append(b)
        feed = tokenizer(first, second, padding=True, truncation="longest_first", max_length=max_seq_length,
                         return_tensors="pt")
        logits = model(feed["input_ids"], feed["attention_mask"], feed.get("token_type_ids",
                                                                           torch.zeros_like(feed["input_ids"])))
        loss = loss_fn(logits, torch.tensor([p.label for p in batch], dtype=logits.dtype))
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        step += 1
        bar.update(1)
        recent = sum(losses[-50:]) / len(losses[-50:])
        bar.set_postfix(loss=f"{recent:.3f}")
        if not interactive and not quiet and step % 50 == 0:
            print(f"step {step}/{total} loss {recent:.4f} {time.time() - started:.0f}s", file=sys.stderr, flush=True)
        if checkpoint_every and step % checkpoint_every == 0 and step < total:
            out.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                        "schedule": schedule.state_dict(), "step": step, "losses": losses},
                       str(checkpoint.with_suffix(".tmp")))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
        if time_budget_s and time.time() - started > time_budget_s:
            stopped_by = "time budget"
            break
    bar.close()
    model.eval()
    save_model(model, source, out)
    (out / "held_out.jsonl").write_text(
        "".join(json.dumps({"a": p.a, "b": p.b, "label": int(p.label)}, ensure_ascii=False) + "\n" for p in held),
        encoding="utf-8",
    )
    window = max(1, min(50, len(losses)))
    record = {
        "kind": "verifier (cross-encoder)",
        "base_model": base,
        "initialised_from": None if init is None else {
            "folder": str(init), "provenance": json.loads((init / PROVENANCE).read_text(encoding="utf-8"))},
        "data": files,
        "pairs": len(pairs),
        "loss": "binary cross-entropy on one logit over mean-pooled [CLS] a [SEP] b [SEP]",
        "batch_size": batch_size,
        "learning_rate": lr,
        "max_seq_length": max_seq_length,
        "steps": len(losses),
        "steps_planned": total,
        "pairs_seen": len(losses) * batch_size,
        "stopped_by": stopped_by,
        "loss_first": sum(losses[:window]) / window if losses else None,
        "loss_last": sum(losses[-window:]) / window if losses else None,
        "freeze_embeddings": True,
        "held_out_pairs": len(held),
        "seed": seed,
        "batch_seed": batch_seed,
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "command": command or [],
    }
    (out / PROVENANCE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if checkpoint.is_file() and stopped_by == "steps":
        checkpoint.unlink()
    return record


def main(argv: list[str] | None = None) -> int:
    """Entry for a background run: ``python -m modelcache_svc.tools.train_verifier --pairs ... --out ...``."""
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", nargs="+", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--base", default="packaged:all-MiniLM-L6-v2")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-5)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seq-length", type=int, default=96)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--holdout", type=int, default=2000)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", type=Path, default=None, help="a trained verifier folder to go on from")
    p.add_argument("--batch-seed", type=int, default=None, help="order of batches (default: --seed)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    for path in args.pairs:
        if "shared/eval" in str(path.resolve()):
            raise SystemExit(f"{path}: refusing to train on an evaluation file")
    record = train(args.pairs, args.out, base=args.base, batch_size=args.batch_size, lr=args.lr,
                   epochs=args.epochs, max_steps=args.max_steps, time_budget_s=args.time_budget, seed=args.seed,
                   max_seq_length=args.max_seq_length, threads=args.threads, holdout=args.holdout,
                   checkpoint_every=args.checkpoint_every, resume=args.resume, init=args.init,
                   batch_seed=args.batch_seed,
                   quiet=args.json, command=sys.argv)
    print(json.dumps(record, ensure_ascii=False, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
