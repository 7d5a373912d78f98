"""A training run that survives a stop.

A run's folder lies outside the repository, in the model cache folder
(``~/.cache/modelcache_svc/train-runs/<out name>-<digest of the out path>``, or ``--run-dir``):

- ``checkpoint.pt``: everything the next step depends on: the weights that train, the optimiser's and the
  scheduler's state, the step, the losses so far, the random generators (torch, Python, numpy) and the best
  milestone. Written every few minutes (and on SIGTERM / SIGINT) to a temporary file that then replaces the
  old one, so a kill at any moment leaves the last whole checkpoint. The batch order is not stored: it is a
  function of the seed and the step (data.BatchOrder). So a run stopped by SIGKILL and resumed takes exactly
  the steps one that ran through takes, and ends with the same weights.
- ``progress.json``: step, steps planned, recent loss, pairs/s, the time left, the milestones; rewritten at
  each log line.
- ``train.log``: the log of a run started with ``--background``.
- ``best/``: the model folder of the best milestone so far (held-out pairs' score), which ``--pack-best``
  also packs as an overlay (fp16, small) where it can be committed.

A checkpoint also holds the run's configuration (data digests, base, batch size, learning rate, steps planned,
seeds); a resume with another configuration is refused, since it could not give the same weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import BatchOrder, Pair

CHECKPOINT = "checkpoint.pt"
PROGRESS = "progress.json"
LOG = "train.log"
BEST = "best"


def seed_everything(torch: Any, seed: int, threads: int) -> None:
    """Python's, numpy's and torch's generators from ``seed``; torch's thread count when given (> 0)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads > 0:
        torch.set_num_threads(threads)


def freeze_word_embeddings(model: Any) -> None:
    """The embedding tables stay as the base has them (a third less time a step; the overlay stays small)."""
    for name, parameter in model.named_parameters():
        if "embeddings." in name:
            parameter.requires_grad_(False)


def default_run_dir(out: Path, cache_root: Path | None = None) -> Path:
    from modelcache_svc.embedding.models import model_cache_root

    digest = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]
    return model_cache_root(cache_root) / "train-runs" / f"{out.resolve().name}-{digest}"


@dataclass
class Milestone:
    step: int
    score: float
    metrics: dict[str, float]


@dataclass
class LoopResult:
    losses: list[float]
    stopped_by: str
    step: int
    best: Milestone | None
    milestones: list[Milestone] = field(default_factory=list)
    resumed_from: int = 0


class Run:
    """A run's folder: checkpoint, progress, best milestone."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.folder = folder
        self.config = config
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT

    def save(self, torch: Any, model: Any, optimiser: Any, schedule: Any, step: int, losses: list[float],
             milestones: list[Milestone], best: Milestone | None) -> None:
        import numpy as np

        state = {
            "config": self.config,
            "trainable": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
            "optimiser": optimiser.state_dict(),
            "schedule": schedule.state_dict(),
            "step": step,
            "losses": losses,
            "milestones": [m.__dict__ for m in milestones],
            "best": None if best is None else best.__dict__,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
            "saved_at": time.time(),
        }
        partial = self.checkpoint.with_suffix(f".{os.getpid()}.tmp")
        torch.save(state, str(partial))
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        partial.replace(self.checkpoint)

    def load(self, torch: Any, model: Any, optimiser: Any, schedule: Any
             ) -> tuple[int, list[float], list[Milestone], Milestone | None]:
        import numpy as np

        state = torch.load(str(self.checkpoint), weights_only=False)
        if state["config"] != self.config:
            changed = sorted(k for k in {*state["config"], *self.config}
                             if state["config"].get(k) != self.config.get(k))
            raise SystemExit(f"{self.checkpoint}: the checkpoint is of another run configuration ({', '.join(changed)} "
                             "differ); start it with the same arguments, or without --resume in another --run-dir")
        trainable = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in state["trainable"].items():
                trainable[name].copy_(tensor)
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        milestones = [Milestone(**m) for m in state.get("milestones", [])]
        best = Milestone(**state["best"]) if state.get("best") else None
        return int(state["step"]), list(state["losses"]), milestones, best

    def progress(self, record: dict[str, Any]) -> None:
        partial = self.folder / f"{PROGRESS}.tmp"
        partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        partial.replace(self.folder / PROGRESS)

    def finished(self) -> None:
        """A run that ran to its end keeps its progress and best milestone, not its checkpoint."""
        self.checkpoint.unlink(missing_ok=True)


class _Stop:
    """SIGTERM / SIGINT ask the loop to write a checkpoint and stop after the step in progress."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handler, a kill still leaves the last checkpoint
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def train_loop(
    torch: Any,
    *,
    model: Any,
    trainable: list[Any],
    optimiser: Any,
    schedule: Any,
    order: BatchOrder,
    total: int,
    loss_of: Callable[[list[Pair], int], Any],
    run: Run,
    resume: bool,
    batch_size: int,
    checkpoint_every: int = 0,
    checkpoint_minutes: float = 5.0,
    time_budget_s: float = 0.0,
    stop_after: int = 0,
    milestone: Callable[[int], tuple[float, dict[str, float]]] | None = None,
    milestone_every: int = 0,
    on_best: Callable[[Milestone], None] | None = None,
    quiet: bool = False,
    desc: str = "train",
) -> LoopResult:
    """Steps ``total`` batches of ``order``; ``loss_of(batch, step)`` gives the loss, or None to skip a batch.
    Checkpoints every ``checkpoint_every`` steps and every ``checkpoint_minutes``; a milestone (the held-out
    score) every ``milestone_every`` steps and at the end."""
    from tqdm import tqdm

    started = time.time()
    losses: list[float] = []
    milestones: list[Milestone] = []
    best: Milestone | None = None
    step = 0
    if resume and run.checkpoint.is_file():
        step, losses, milestones, best = run.load(torch, model, optimiser, schedule)
        print(f"resumed {run.checkpoint} at step {step}/{total}", file=sys.stderr, flush=True)
    elif resume:
        print(f"no checkpoint in {run.folder}: starting at step 0", file=sys.stderr, flush=True)
    resumed_from = step
    interactive = not quiet and sys.stderr.isatty()
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", disable=not interactive)
    last_save = time.monotonic()
    stopped_by = "steps"

    def mark(at: int) -> None:
        nonlocal best
        if milestone is None:
            return
        score, metrics = milestone(at)
        model.train()
        reached = Milestone(at, score, metrics)
        milestones.append(reached)
        if best is None or score > best.score:
            best = reached
            if on_best is not None:
                on_best(reached)

    def report() -> None:
        elapsed = time.time() - started
        rate = (step - resumed_from) / elapsed if elapsed > 0 else 0.0
        recent = sum(losses[-50:]) / len(losses[-50:]) if losses else None
        run.progress({
            "step": step, "steps_planned": total, "loss_recent": recent,
            "pairs_per_s": round(rate * batch_size, 2),
            "seconds_left": round((total - step) / rate) if rate > 0 else None,
            "resumed_from": resumed_from, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pid": os.getpid(), "milestones": [m.__dict__ for m in milestones],
            "best": None if best is None else best.__dict__, "config": run.config,
        })
        if not interactive and not quiet:
            print(f"step {step}/{total} loss {recent if recent is None else round(recent, 4)} "
                  f"{rate * batch_size:.1f} pairs/s", file=sys.stderr, flush=True)

    model.train()
    with _Stop() as stop:
        while step < total:
            loss = loss_of(order.batch(step), step)
            if loss is not None:
                optimiser.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimiser.step()
                schedule.step()
                losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            if losses:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
            if step % 50 == 0:
                report()
            if milestone_every and step % milestone_every == 0 and step < total:
                mark(step)
            due = (checkpoint_every and step % checkpoint_every == 0) or (
                checkpoint_minutes and time.monotonic() - last_save > checkpoint_minutes * 60)
            if stop.signal is not None:
                stopped_by = f"signal {signal.Signals(stop.signal).name}"
            elif time_budget_s and time.time() - started > time_budget_s:
                stopped_by = "time budget"
            elif stop_after and step >= stop_after:
                stopped_by = "--stop-after"
            if step < total and (due or stopped_by != "steps"):
                run.save(torch, model, optimiser, schedule, step, losses, milestones, best)
                last_save = time.monotonic()
            if stopped_by != "steps":
                break
    bar.close()
    if stopped_by == "steps" and milestone is not None and (not milestones or milestones[-1].step != step):
        mark(step)
    report()
    model.eval()
    return LoopResult(losses, stopped_by, step, best, milestones, resumed_from)


def start_in_background(argv: Sequence[str], run_folder: Path) -> dict[str, Any]:
    """The same command without ``--background``, detached from this terminal (its own session, so closing
    the shell does not stop it), its output in the run's train.log."""
    run_folder.mkdir(parents=True, exist_ok=True)
    log = run_folder / LOG
    args = [a for a in argv if a != "--background"]
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from modelcache_svc.cli import main; sys.exit(main(sys.argv[1:]))",
             *args],
            stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=os.getcwd(),
        )
    (run_folder / "pid").write_text(f"{process.pid}\n", encoding="utf-8")
    return {"pid": process.pid, "run": str(run_folder), "log": str(log), "progress": str(run_folder / PROGRESS)}
