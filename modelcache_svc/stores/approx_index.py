"""An approximate index for one large block of ``memory_index``: faiss HNSW, re-scored exactly.

Below ``ApproxParams.min_entries`` rows a block is scanned exactly (``faiss.knn``); past it, a
search asks an HNSW graph for ``candidates x k`` rows and re-scores those against the block's own
float32 rows, so the similarities served are exact and only the choice of candidates is approximate
(recall@5 against the exact scan: docs/performance.md, "Scale").

The graph stores its vectors as fp16 (``IndexHNSWSQ``, half the memory of a float32 copy: the block
keeps the float32 rows) under the L2 metric, which ranks unit vectors as the inner product does.
HNSW cannot delete: a removed or replaced row is a tombstone (its label maps to None) and is skipped;
past ``rebuild_dead_share`` tombstones the owner rebuilds the graph in the background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np


@dataclass(frozen=True)
class ApproxParams:
    min_entries: int = 20_000  # rows of one (scope, context) past which the HNSW graph serves; 0 = never
    m: int = 32  # graph degree
    ef_construction: int = 80
    ef_search: int = 128  # search breadth of a graph of up to ef_rows rows
    # Past ef_rows a graph searches with ef_search x sqrt(rows / ef_rows): at a fixed breadth HNSW's recall
    # falls as the graph grows (bench-scale at a million rows: recall@5 0.974 at 128; docs/performance.md,
    # "A million entries"). 0 = ef_search at every size.
    ef_rows: int = 100_000
    candidates: int = 4  # graph candidates per result, re-scored exactly
    rebuild_dead_share: float = 0.2  # tombstones past this share of the graph: rebuild it

    @classmethod
    def of_settings(cls, settings: Any) -> ApproxParams:
        """The graph's parameters as the service's settings (config.Settings) name them."""
        return cls(min_entries=settings.approx_index_min_entries, m=settings.approx_index_m,
                   ef_construction=settings.approx_index_ef_construction,
                   ef_search=settings.approx_index_ef_search, ef_rows=settings.approx_index_ef_rows)

    @property
    def enabled(self) -> bool:
        return self.min_entries > 0

    def ef_for(self, rows: int) -> int:
        """The search breadth for a graph of ``rows`` rows."""
        if self.ef_rows <= 0 or rows <= self.ef_rows:
            return self.ef_search
        return min(4096, math.ceil(self.ef_search * math.sqrt(rows / self.ef_rows)))


class Ann:
    """An HNSW graph over rows of one block: label i is labels[i] (an entry id, or None once removed)."""

    def __init__(self, dim: int, params: ApproxParams, index: faiss.Index | None = None,
                 labels: list[str | None] | None = None) -> None:
        self.params = params
        if index is None:
            index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, params.m, faiss.METRIC_L2)
            index.hnsw.efConstruction = params.ef_construction
            index.train(np.zeros((1, dim), dtype=np.float32))  # fp16 needs no statistics
        self.index = index
        self.labels: list[str | None] = labels if labels is not None else []
        self.label_of: dict[str, int] = {i: n for n, i in enumerate(self.labels) if i is not None}
        self.dead = len(self.labels) - len(self.label_of)

    @classmethod
    def build(cls, dim: int, params: ApproxParams, ids: Sequence[str], vectors: np.ndarray,
              batch: int = 16_384) -> Ann:
        ann = cls(dim, params)
        for start in range(0, len(ids), batch):
            ann.add(ids[start:start + batch], vectors[start:start + batch])
        return ann

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Rows in graph order; an id already in the graph is tombstoned first (a replaced vector)."""
        for entry_id in ids:
            self.discard(entry_id)
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        for entry_id in ids:
            self.label_of[entry_id] = len(self.labels)
            self.labels.append(entry_id)

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` more rows in the graph's arrays, allocated now. A graph read from disk has none:
        its first add then reallocates every array, doubling them (measured at 200,000 rows: 456 ms for the
        first 16 rows, 8-13 ms after; at a million ~5x that, under the locks every search waits on, and
        ~1 GB more at the peak). Growing each array by ``rows`` and back keeps the room (a vector keeps its
        capacity when it shrinks)."""
        n = self.index.ntotal
        if n == 0 or rows <= 0:
            return
        hnsw = self.index.hnsw
        storage = faiss.downcast_index(self.index.storage)
        per_row = -(-hnsw.neighbors.size() // n) + 1
        for vector, each in ((storage.codes, storage.code_size), (hnsw.levels, 1), (hnsw.offsets, 1),
                             (hnsw.neighbors, per_row)):
            size = vector.size()
            vector.resize(size + rows * each)
            vector.resize(size)

    def discard(self, entry_id: str) -> None:
        label = self.label_of.pop(entry_id, None)
        if label is not None:
            self.labels[label] = None
            self.dead += 1

    def needs_rebuild(self) -> bool:
        return self.dead > self.params.rebuild_dead_share * max(1, len(self.labels))

    def candidates(self, query: np.ndarray, k: int, ef: int | None = None) -> list[str]:
        """Live entry ids of about ``candidates x k`` nearest graph rows (query: shape (1, dim), unit);
        ``ef`` overrides the search breadth (bench-scale's recall curve)."""
        total = len(self.labels)
        want = min(total, max(k * self.params.candidates, k + 8))
        # Tombstones take places among the nearest rows: ask for that many more.
        want = min(total, want + int(want * self.dead / max(1, total)) + (4 if self.dead else 0))
        if want <= 0:
            return []
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(ef or self.params.ef_for(total - self.dead), want)
        _, where = self.index.search(query, want, params=params)
        labels = self.labels
        return [i for i in (labels[int(n)] for n in where[0] if n >= 0) if i is not None]
