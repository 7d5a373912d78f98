"""The ``train`` command of ``modelcache-svc`` (the service's CLI hands it here; the service never imports it)."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from .data import check_training_files, read_pairs, sha256
from .runs import default_run_dir, start_in_background


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
                   "(modelcache_train/cross_encoder.py)")
    p.add_argument("--verifier-embedding-model", default=None, metavar="MODEL",
                   help="--cross-encoder: the served embedding model the verifier's band is fitted against "
                   "(default packaged:minilm-cache-en)")
    p.add_argument("--verifier-beta", type=float, default=0.5,
                   help="--cross-encoder: the F-beta the band and cut-off are chosen for (default 0.5: precision "
                   "counts twice; 1 = F1)")
    p.add_argument("--resume", action="store_true",
                   help="go on from the run's last checkpoint (same arguments; it gives the weights a run that was "
                   "never stopped gives)")
    p.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                   help="the run's folder: checkpoint, progress.json, train.log, best/ (default "
                   "~/.cache/modelcache_svc/train-runs/<OUT name>-<digest>, outside the repository)")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between checkpoints (0: none)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also a checkpoint every N steps (0: none)")
    p.add_argument("--background", action="store_true",
                   help="start the run detached from the terminal, its output in the run folder's train.log; "
                   "prints the pid and the folder")
    p.add_argument("--milestone-every", type=int, default=0,
                   help="--cross-encoder: score the held-out pairs every N steps and keep the best so far in the "
                   "run folder's best/ (0: none)")
    p.add_argument("--milestone-pairs", type=int, default=1000, help="--cross-encoder: held-out pairs a milestone reads")
    p.add_argument("--pack-best", type=Path, default=None, metavar="DIR",
                   help="--cross-encoder: pack each new best milestone as an overlay (fp16) into DIR, to commit")
    p.add_argument("--init", type=Path, default=None, metavar="DIR",
                   help="--cross-encoder: start from this trained verifier folder (another epoch); --base stays "
                   "the packaged model the overlay applies to")
    p.add_argument("--batch-seed", type=int, default=None,
                   help="--cross-encoder: order of batches (default --seed; the held-out split follows --seed)")
    p.add_argument("--mine-negatives", type=int, default=0, metavar="N",
                   help="--cross-encoder: add, per training question, its N nearest other cached questions as "
                   "label-0 pairs, as a cache would serve them (the served model, the guard; mining.py)")
    p.add_argument("--mine-floor", type=float, default=0.78,
                   help="--mine-negatives: the lowest similarity (common scale) a mined pair has (default 0.78)")
    p.add_argument("--mine-language", default="",
                   help="--mine-negatives: the guard's rules for this language (zh, ...; default English)")
    p.add_argument("--json", action="store_true", help="print the provenance record as JSON, no progress bar")


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    files = [path for group in args.pairs for path in group]
    if args.background:
        check_training_files(files)
        started = start_in_background(argv if argv is not None else sys.argv[1:],
                                      args.run_dir or default_run_dir(args.out))
        print(json.dumps(started) if args.json else
              f"training in the background, pid {started['pid']}; log {started['log']}, progress {started['progress']}")
        return 0
    if args.cross_encoder:
        return _run_cross_encoder(args, files)
    from modelcache_svc.embedding.base import OPTIONS_FILE

    from .bi_encoder import fit_scale, train

    if args.fit_scale_only:
        from modelcache_svc.embedding.models import resolve_model

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
    check_training_files(files)
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
        checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes,
        resume=args.resume,
        run_dir=args.run_dir,
        quiet=args.json,
        command=sys.argv,
    )
    if args.pack:
        from modelcache_svc.embedding.models import resolve_model
        from modelcache_svc.embedding.overlay import pack

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
    from .cross_encoder import train as train_verifier
    from .fit_verifier import fit

    check_training_files(files)
    record = train_verifier(
        files, args.out, base=args.base,
        batch_size=args.batch_size or 32,
        lr=args.lr or 4e-5,
        epochs=args.epochs, max_steps=args.max_steps, time_budget_s=args.time_budget, seed=args.seed,
        max_seq_length=args.max_seq_length or 96, threads=args.threads,
        holdout=args.holdout, checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes,
        resume=args.resume, run_dir=args.run_dir, init=args.init, batch_seed=args.batch_seed,
        milestone_every=args.milestone_every, milestone_pairs=args.milestone_pairs, pack_best=args.pack_best,
        mine_negatives=args.mine_negatives,
        mine_model=args.verifier_embedding_model or "packaged:minilm-cache-en",
        mine_floor=args.mine_floor, mine_language=args.mine_language,
        quiet=args.json, command=sys.argv,
    )
    held = read_pairs(args.out / "held_out.jsonl")
    if held:
        record["fit"] = fit(args.out, args.verifier_embedding_model or "packaged:minilm-cache-en", held,
                            beta=args.verifier_beta, quiet=args.json)
    if args.pack:
        from modelcache_svc.embedding.models import resolve_model
        from modelcache_svc.embedding.overlay import pack

        _, base_folder = resolve_model(args.base)
        record["overlay"] = pack(args.out, args.base, Path(base_folder), args.pack)
    print(json.dumps(record, ensure_ascii=False, sort_keys=True) if args.json else
          f"wrote {args.out}: {record['steps']} steps, loss {record['loss_first']:.3f} -> {record['loss_last']:.3f}, "
          f"{record['seconds_this_session']} s; band/cut-off {record.get('fit', {})}")
    return 0
