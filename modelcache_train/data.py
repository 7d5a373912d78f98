"""Labelled question pairs (the eval format), the held-out split and the order of batches.

The order is a function of (seed, step) alone, so a run resumed at step N sees the same batches as one that
ran through (runs.py).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def write_pairs(path: Path, pairs: list[Pair]) -> None:
    """Rows of the eval format, written whole or not at all (a temporary file renamed)."""
    partial = path.with_suffix(".tmp")
    partial.write_text("".join(json.dumps({"a": p.a, "b": p.b, "label": int(p.label)}, ensure_ascii=False) + "\n"
                               for p in pairs), encoding="utf-8")
    partial.replace(path)


def check_training_files(files: list[Path]) -> None:
    """Never train on an evaluation file (DESIGN §12); a missing file stops before any work."""
    for path in files:
        if "shared/eval" in str(path.resolve()):
            raise SystemExit(f"{path}: refusing to train on an evaluation file")
        if not path.is_file():
            raise SystemExit(f"{path}: no such file")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def length_batches(pairs: list[Pair], batch_size: int, seed: int) -> list[list[Pair]]:
    """Batches of pairs of about the same length, in random order: padding to a batch's longest
    question is most of the work on a CPU, so like goes with like (a random jitter keeps the batches
    from being the same every epoch)."""
    rng = random.Random(seed)
    keyed = sorted(pairs, key=lambda p: max(len(p.a), len(p.b)) + rng.random() * 8)
    batches = [keyed[i:i + batch_size] for i in range(0, len(keyed), batch_size)]
    rng.shuffle(batches)
    return batches


class BatchOrder:
    """The batch of any step: epoch e's batches are ``length_batches(pairs, size, seed + e * per_epoch)``
    (epoch 0 follows ``seed``), computed again after a resume rather than carried in the checkpoint."""

    def __init__(self, pairs: list[Pair], batch_size: int, seed: int) -> None:
        self.pairs, self.batch_size, self.seed = pairs, batch_size, seed
        self.per_epoch = max(1, -(-len(pairs) // batch_size))
        self._epoch = -1
        self._batches: list[list[Pair]] = []

    def batch(self, step: int) -> list[Pair]:
        epoch = step // self.per_epoch
        if epoch != self._epoch:
            self._batches = length_batches(self.pairs, self.batch_size, self.seed + epoch * self.per_epoch)
            self._epoch = epoch
        return self._batches[step % self.per_epoch]

    def side_rng(self, step: int) -> random.Random:
        """The draw of which question goes first, per step (a resumed run draws the same)."""
        return random.Random(self.seed * 1_000_003 + step)
