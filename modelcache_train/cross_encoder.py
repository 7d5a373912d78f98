"""`modelcache-svc train --cross-encoder`: train the verifier, a cross-encoder that reads a question and a
cached question together and says how likely the cached answer serves the question.

A bi-encoder embeds each question alone, so two questions a word apart embed alike ("... in Brazil" /
"... in Peru"). A cross-encoder attends across both texts at once and tells them apart; it costs a model
call per candidate, so the service runs it only on candidates whose cosine is uncertain (verifier/).

The network is modelcache_svc/verifier/cross_encoder.py's (the runtime builds the same to export ONNX),
trained with binary cross-entropy on labelled pairs; the order of the two questions is drawn per pair, since
the service asks in both directions. Word embeddings stay frozen (CPU time, overlay size). The run survives a
stop (runs.py): checkpoints outside the repository, ``--resume``, the best milestone on held-out pairs kept
and packed; ``modelcache_train.json`` records data, steps, loss and command.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from modelcache_svc.embedding.overlay import is_overlay, materialise, pack
from modelcache_svc.verifier.cross_encoder import build_model, save_model

from .bi_encoder import best_threshold, optimiser_for
from .data import PROVENANCE, BatchOrder, Pair, read_pairs, sha256, split_pairs, write_pairs
from .mining import MINED_FILE, mine
from .runs import BEST, Milestone, Run, default_run_dir, freeze_word_embeddings, seed_everything, train_loop


def _feed(tokenizer: Any, torch: Any, first: list[str], second: list[str], max_seq_length: int) -> dict[str, Any]:
    feed = tokenizer(first, second, padding=True, truncation="longest_first", max_length=max_seq_length,
                     return_tensors="pt")
    if "token_type_ids" not in feed:  # XLM-R (e5) has one segment type
        feed["token_type_ids"] = torch.zeros_like(feed["input_ids"])
    return feed


def _init_record(init: Path) -> dict[str, Any]:
    """What a run starts from: a trained folder's provenance, or a packed milestone's record."""
    for name in (PROVENANCE, "milestone.json"):
        if (init / name).is_file():
            return {"folder": str(init), name.removesuffix(".json"): json.loads((init / name).read_text("utf-8"))}
    raise ValueError(f"{init}: neither {PROVENANCE} nor milestone.json; not a verifier this trainer made")


def _score_to_beat(init_record: dict[str, Any] | None, config: dict[str, Any]) -> float | None:
    reached = (init_record or {}).get("milestone")
    if not reached:
        return None
    was = reached.get("config", {})
    same = all(was.get(k) == config[k] for k in ("data", "seed", "holdout", "max_seq_length"))
    return float(reached["score"]) if same else None


def held_out_scores(torch: Any, model: Any, tokenizer: Any, pairs: list[Pair], max_seq_length: int) -> dict[str, float]:
    """Pairs mode on held-out training pairs: the logit's best F1 and its AUC."""
    import numpy as np

    model.eval()
    logits: list[float] = []
    with torch.no_grad():
        for start in range(0, len(pairs), 64):
            chunk = pairs[start:start + 64]
            feed = _feed(tokenizer, torch, [p.a for p in chunk], [p.b for p in chunk], max_seq_length)
            logits.extend(model(feed["input_ids"], feed["attention_mask"], feed["token_type_ids"]).tolist())
    labels = np.array([p.label for p in pairs])
    scores = np.array(logits)
    _, f1 = best_threshold(scores.tolist(), labels.tolist())
    ranks = scores.argsort().argsort() + 1.0
    positives = labels.sum()
    negatives = len(labels) - positives
    auc = (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / max(1.0, positives * negatives)
    return {"best_f1": round(float(f1), 4), "auc": round(float(auc), 4), "pairs": len(pairs)}


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
    checkpoint_every: int = 0,
    checkpoint_minutes: float = 5.0,
    resume: bool = False,
    run_dir: Path | None = None,
    init: Path | None = None,
    batch_seed: int | None = None,
    milestone_every: int = 0,
    milestone_pairs: int = 1000,
    pack_best: Path | None = None,
    mine_negatives: int = 0,
    mine_model: str = "packaged:minilm-cache-en",
    mine_floor: float = 0.78,
    mine_language: str = "",
    quiet: bool = False,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """``init``: a trained verifier folder to go on from (another epoch), the base staying ``base``;
    ``batch_seed``: the order of batches and sides (default ``seed``; the held-out split always follows
    ``seed``, so an epoch more keeps the same held-out pairs); ``mine_negatives``: per training question, that
    many of its nearest other cached questions as label-0 pairs (mining.py; ``mine_model`` the served
    embedding model, ``mine_floor`` the lowest similarity on its common scale, ``mine_language`` the guard's
    rules), added to the training pairs."""
    batch_seed = seed if batch_seed is None else batch_seed
    import torch
    from transformers import AutoTokenizer

    from modelcache_svc.embedding.models import resolve_model

    started = time.time()
    seed_everything(torch, seed, threads)
    _, resolved = resolve_model(base)
    source = Path(resolved)
    files, held, pairs = split_pairs(pairs_files, seed, holdout)
    folder = run_dir or default_run_dir(out)
    mined_record = None
    if mine_negatives:
        mined_path = folder / MINED_FILE
        if resume and mined_path.is_file():
            mined = read_pairs(mined_path)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            mined = mine(pairs, mine_model, per_question=mine_negatives, floor=mine_floor, language=mine_language,
                         quiet=quiet)
            write_pairs(mined_path, mined)
        mined_record = {"per_question": mine_negatives, "model": mine_model, "floor": mine_floor,
                        "language": mine_language or "en", "pairs": len(mined), "sha256": sha256(mined_path)}
        pairs = pairs + mined

    init_record = None if init is None else _init_record(init)
    init_named = None if init is None else str(init)
    if init is not None and is_overlay(init):
        # a committed milestone: made whole over the base (word embeddings are frozen, never in the overlay)
        init = materialise(init, source, default_run_dir(out).parent / "init")
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = build_model(torch, init or source)
    freeze_word_embeddings(model)
    order = BatchOrder(pairs, batch_size, batch_seed)
    total = max_steps or max(1, int(order.per_epoch * epochs))
    trainable, optimiser, schedule = optimiser_for(torch, model, lr, total)
    config = {
        "kind": "cross-encoder", "base": base, "init": init_named,
        "data": [f["sha256"] for f in files], "batch_size": batch_size, "lr": lr, "steps_planned": total,
        "seed": seed, "batch_seed": batch_seed, "max_seq_length": max_seq_length, "holdout": len(held),
        **({"mined_negatives": mined_record} if mined_record else {}),
    }
    run = Run(folder, config)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    probe = held[:milestone_pairs]

    def loss_of(batch: list[Pair], step: int) -> Any:
        rng = order.side_rng(step)
        first, second = [], []
        for p in batch:
            a, b = (p.a, p.b) if rng.random() < 0.5 else (p.b, p.a)
            first.append(a)
            second.append(b)
        feed = _feed(tokenizer, torch, first, second, max_seq_length)
        logits = model(feed["input_ids"], feed["attention_mask"], feed["token_type_ids"])
        return loss_fn(logits, torch.tensor([p.label for p in batch], dtype=logits.dtype))

    def milestone(step: int) -> tuple[float, dict[str, float]]:
        metrics = held_out_scores(torch, model, tokenizer, probe, max_seq_length)
        return metrics["best_f1"], metrics

    # A run that goes on from a packed milestone packs only milestones that beat it: same held-out pairs
    # (same seed, holdout and data), so the scores compare.
    to_beat = _score_to_beat(init_record, config)

    def on_best(reached: Milestone) -> None:
        if to_beat is not None and reached.score <= to_beat:
            return
        folder = run.folder / BEST
        save_model(model, source, folder)
        (folder / "milestone.json").write_text(json.dumps(reached.__dict__) + "\n", encoding="utf-8")
        if pack_best is not None:
            from modelcache_svc.embedding.overlay import pack

            pack(folder, base, source, pack_best)
            (pack_best / "milestone.json").write_text(
                json.dumps({**reached.__dict__, "config": config}, indent=2) + "\n", encoding="utf-8")

    result = train_loop(
        torch, model=model, trainable=trainable, optimiser=optimiser, schedule=schedule, order=order,
        total=total, loss_of=loss_of, run=run, resume=resume, batch_size=batch_size,
        checkpoint_every=checkpoint_every, checkpoint_minutes=checkpoint_minutes, time_budget_s=time_budget_s,
        milestone=milestone if milestone_every and probe else None, milestone_every=milestone_every,
        on_best=on_best, quiet=quiet, desc="train verifier",
    )
    losses = result.losses
    save_model(model, source, out)
    write_pairs(out / "held_out.jsonl", held)
    window = max(1, min(50, len(losses)))
    record = {
        "kind": "verifier (cross-encoder)",
        "base_model": base,
        "initialised_from": init_record,
        "data": files,
        "pairs": len(pairs),
        "mined_negatives": mined_record,
        "loss": "binary cross-entropy on one logit over mean-pooled [CLS] a [SEP] b [SEP]",
        "batch_size": batch_size,
        "learning_rate": lr,
        "max_seq_length": max_seq_length,
        "steps": result.step,
        "steps_planned": total,
        "pairs_seen": result.step * batch_size,
        "stopped_by": result.stopped_by,
        "resumed_from_step": result.resumed_from,
        "loss_first": sum(losses[:window]) / window if losses else None,
        "loss_last": sum(losses[-window:]) / window if losses else None,
        "freeze_embeddings": True,
        "held_out_pairs": len(held),
        "milestones": [m.__dict__ for m in result.milestones],
        "best_milestone": None if result.best is None else result.best.__dict__,
        "run_dir": str(run.folder),
        "seed": seed,
        "batch_seed": batch_seed,
        "seconds_this_session": round(time.time() - started, 1),
        "torch": torch.__version__,
        "command": command or [],
    }
    (out / PROVENANCE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if result.stopped_by == "steps":
        run.finished()
    return record
