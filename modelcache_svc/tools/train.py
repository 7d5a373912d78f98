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

import argparse
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..embedding.base import OPTIONS_FILE

PROVENANCE = "modelcache_train.json"


@dataclass(frozen=True, slots=True)
class Pair:
    a: str
    b: str
    label: float


def read_pairs(path: Path) -> list[Pair]:
    """Rows of the eval format ({"a", "b", "label"}); a bad row stops with its line number."""
    pairs = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                a, b, label = str(row["a"]).strip(), str(row["b"]).strip(), float(row["label"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SystemExit(f"{path}:{number}: not a pair row ({exc})") from exc
            if a and b and label in (0.0, 1.0):
                pairs.append(Pair(a, b, label))
    return pairs


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    quiet: bool = False,
    command: list[str] | None = None,
) -> dict[str, Any]:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from tqdm import tqdm

    from ..embedding.models import resolve_model

    started = time.time()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads > 0:
        torch.set_num_threads(threads)

    _, source = resolve_model(base)
    if prefix is None:
        prefix = default_prompt(Path(source)) if Path(str(source)).is_dir() else ""
    # A held-out slice of the training pairs (never the eval files) fits the similarity scale.
    files, held, pairs = split_pairs(pairs_files, seed, holdout)

    model = SentenceTransformer(str(source), device="cpu")
    model.max_seq_length = max_seq_length
    model.train()
    if freeze_embeddings:
        for name, parameter in model.named_parameters():
            if "embeddings." in name:
                parameter.requires_grad_(False)
    batches = length_batches(pairs, batch_size, seed)
    per_epoch = len(batches)
    total = max_steps or max(1, int(per_epoch * epochs))
    trainable, optimiser, schedule = optimiser_for(torch, model, lr, total)

    losses: list[float] = []
    step = 0
    stopped_by = "steps"
    bar = tqdm(total=total, desc="train", unit="step", disable=quiet or not sys.stderr.isatty())
    while step < total:
        if step and step % per_epoch == 0:
            batches = length_batches(pairs, batch_size, seed + step)
        batch = batches[step % per_epoch]
        labels = torch.tensor([p.label for p in batch])
        if labels.min() == labels.max():  # CoSENT needs both kinds in a batch
            step += 1
            bar.update(1)
            continue
        features_a = model.tokenize([prefix + p.a for p in batch])
        features_b = model.tokenize([prefix + p.b for p in batch])
        emb_a = model(features_a)["sentence_embedding"]
        emb_b = model(features_b)["sentence_embedding"]
        cosines = torch.nn.functional.cosine_similarity(emb_a, emb_b)
        loss = cosent_loss(torch, cosines, labels)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
        if time_budget_s and time.time() - started > time_budget_s:
            stopped_by = "time budget"
            break
        if stop_after and step >= stop_after:
            stopped_by = "--stop-after"
            break
    bar.close()

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
    return record


def split_pairs(
    pairs_files: list[Path], seed: int, holdout: int
) -> tuple[list[dict[str, Any]], list[Pair], list[Pair]]:
    """(the files' records, held-out pairs, training pairs): every file read, shuffled by seed, and at most a
    fifth held out."""
    pairs: list[Pair] = []
    files = []
    for path in pairs_files:
        rows = read_pairs(path)
        files.append({"path": str(path), "sha256": sha256(path), "rows": len(rows)})
        pairs.extend(rows)
    if not pairs:
        raise SystemExit("no labelled pairs in the files given")
    random.Random(seed).shuffle(pairs)
    holdout = min(holdout, len(pairs) // 5)
    return files, pairs[:holdout], pairs[holdout:]


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

    from ..embedding import load_embedder

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


def length_batches(pairs: list[Pair], batch_size: int, seed: int) -> list[list[Pair]]:
    """Batches of pairs of about the same length, in random order: padding to a batch's longest
    question is most of the work on a CPU, so like goes with like (a random jitter keeps the batches
    from being the same every epoch)."""
    rng = random.Random(seed)
    keyed = sorted(pairs, key=lambda p: max(len(p.a), len(p.b)) + rng.random() * 8)
    batches = [keyed[i:i + batch_size] for i in range(0, len(keyed), batch_size)]
    rng.shuffle(batches)
    return batches


def default_prompt(folder: Path) -> str:
    """The prefix a sentence-transformers folder asks for by default (e5's "query: "), else ""."""
    try:
        config = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))
        name = config.get("default_prompt_name")
        return str((config.get("prompts") or {}).get(name, "")) if name else ""
    except (OSError, ValueError, AttributeError):
        return ""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune an embedding model for caching on labelled question pairs",
        description="CoSENT fine-tuning on {\"a\", \"b\", \"label\"} rows (label 1: a's answer may be served "
        "for b). Writes a model folder that --embedding-model DIR and a tenant's embedding_model load.",
    )
    p.add_argument("--pairs", action="append", required=True, type=Path, nargs="+", help="pair files (.jsonl)")
    p.add_argument("--out", required=True, type=Path, help="the model folder to write")
    p.add_argument("--base", default="packaged:all-MiniLM-L6-v2", help="model to start from (a spec or a folder)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (--cross-encoder: 32)")
    p.add_argument("--lr", type=float, default=None, help="default 2e-5 (--cross-encoder: 4e-5)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: --epochs decides)")
    p.add_argument("--time-budget", type=float, default=0.0, help="stop after S seconds (0: none)")
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop after N steps, the learning-rate schedule still planned for --epochs (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seq-length", type=int, default=None, help="default 64 (--cross-encoder: 96, both texts)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--train-embeddings", action="store_true",
                   help="update the word embeddings too (default: frozen, a third less time per step)")
    p.add_argument("--prefix", default=None, help="text put before every question (default: the folder's prompt)")
    p.add_argument("--holdout", type=int, default=2000,
                   help="pairs kept out of training to fit the similarity scale (modelcache.json); 0 = none")
    p.add_argument("--half", action="store_true", help="store the weights in fp16")
    p.add_argument("--pack", type=Path, default=None, metavar="DIR",
                   help="also write the overlay of the trained weights over --base into DIR (what changed, fp16; "
                   "modelcache_svc/models/NAME makes it packaged:NAME)")
    p.add_argument("--fit-scale-only", action="store_true",
                   help="no training: fit --base's similarity scale on --holdout pairs into OUT/modelcache.json")
    p.add_argument("--cross-encoder", action="store_true",
                   help="train the verifier instead: a cross-encoder over (question, cached question) pairs "
                   "(tools/train_verifier.py)")
    p.add_argument("--verifier-embedding-model", default=None, metavar="MODEL",
                   help="--cross-encoder: the served embedding model the verifier's band is fitted against "
                   "(default packaged:minilm-cache-en)")
    p.add_argument("--verifier-beta", type=float, default=0.5,
                   help="--cross-encoder: the F-beta the band and cut-off are chosen for (default 0.5: precision "
                   "counts twice; 1 = F1)")
    p.add_argument("--checkpoint-every", type=int, default=200, help="--cross-encoder: steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="--cross-encoder: go on from OUT/checkpoint.pt")
    p.add_argument("--init", type=Path, default=None, metavar="DIR",
                   help="--cross-encoder: start from this trained verifier folder (another epoch); --base stays "
                   "the packaged model the overlay applies to")
    p.add_argument("--batch-seed", type=int, default=None,
                   help="--cross-encoder: order of batches (default --seed; the held-out split follows --seed)")
    p.add_argument("--json", action="store_true", help="print the provenance record as JSON, no progress bar")


def run(args: argparse.Namespace) -> int:
    files = [path for group in args.pairs for path in group]
    if args.cross_encoder:
        return _run_cross_encoder(args, files)
    if args.fit_scale_only:
        from ..embedding.models import resolve_model

        _, source = resolve_model(args.base)
        pairs = [p for path in files for p in read_pairs(path)]
        random.Random(args.seed).shuffle(pairs)
        args.out.mkdir(parents=True, exist_ok=True)
        record = fit_scale(Path(source), pairs[: args.holdout or len(pairs)], quiet=args.json,
                           target=args.out / OPTIONS_FILE)
        record["data"] = [{"path": str(p), "sha256": sha256(p)} for p in files]
        record["base_model"] = args.base
        (args.out / OPTIONS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(record, sort_keys=True) if args.json else f"wrote {args.out / OPTIONS_FILE}: {record}")
        return 0
    for path in files:
        if "shared/eval" in str(path.resolve()):
            raise SystemExit(f"{path}: refusing to train on an evaluation file")
        if not path.is_file():
            raise SystemExit(f"{path}: no such file")
    record = train(
        files,
        args.out,
        base=args.base,
        batch_size=args.batch_size or 64,
        lr=args.lr or 2e-5,
        epochs=args.epochs,
        max_steps=args.max_steps,
        time_budget_s=args.time_budget,
        stop_after=args.stop_after,
        seed=args.seed,
        max_seq_length=args.max_seq_length or 64,
        threads=args.threads,
        prefix=args.prefix,
        freeze_embeddings=not args.train_embeddings,
        holdout=args.holdout,
        half=args.half,
        quiet=args.json,
        command=sys.argv,
    )
    if args.pack:
        from ..embedding.models import resolve_model
        from ..embedding.overlay import pack

        _, base_folder = resolve_model(args.base)
        record["overlay"] = pack(args.out, args.base, Path(base_folder), args.pack)
    if args.json:
        print(json.dumps(record, ensure_ascii=False, sort_keys=True))
    else:
        print(f"wrote {args.out}: {record['steps']} steps, loss {record['loss_first']:.3f} -> "
              f"{record['loss_last']:.3f}, {record['seconds']} s ({record['stopped_by']})")
    return 0


def _run_cross_encoder(args: argparse.Namespace, files: list[Path]) -> int:
    """Train the verifier, fit its band and cut-off on the held-out pairs, and pack it (--pack)."""
    from .fit_verifier import fit
    from .train_verifier import train as train_verifier

    for path in files:
        if "shared/eval" in str(path.resolve()):
            raise SystemExit(f"{path}: refusing to train on an evaluation file")
        if not path.is_file():
            raise SystemExit(f"{path}: no such file")
    record = train_verifier(
        files, args.out, base=args.base,
        batch_size=args.batch_size or 32,
        lr=args.lr or 4e-5,
        epochs=args.epochs, max_steps=args.max_steps, time_budget_s=args.time_budget, seed=args.seed,
        max_seq_length=args.max_seq_length or 96, threads=args.threads,
        holdout=args.holdout, checkpoint_every=args.checkpoint_every, resume=args.resume, init=args.init,
        batch_seed=args.batch_seed, quiet=args.json, command=sys.argv,
    )
    held = read_pairs(args.out / "held_out.jsonl")
    if held:
        record["fit"] = fit(args.out, args.verifier_embedding_model or "packaged:minilm-cache-en", held,
                            beta=args.verifier_beta, quiet=args.json)
    if args.pack:
        from ..embedding.models import resolve_model
        from ..embedding.overlay import pack

        _, base_folder = resolve_model(args.base)
        record["overlay"] = pack(args.out, args.base, Path(base_folder), args.pack)
    print(json.dumps(record, ensure_ascii=False, sort_keys=True) if args.json else
          f"wrote {args.out}: {record['steps']} steps, loss {record['loss_first']:.3f} -> {record['loss_last']:.3f}, "
          f"{record['seconds']} s; band/cut-off {record.get('fit', {})}")
    return 0
