"""Exact cosine search over vectors held in this process: the read side of Milvus Lite.

Milvus Lite 3.2.2 is pure Python: a search assembles every row of the searched
partitions in Python (rows not yet flushed cost a per-row conversion each), so
a search over 10,000 rows takes tens to hundreds of milliseconds. Milvus Lite
is also single-process (its data dir is locked), so in that mode this process
sees every write, and a copy of the vectors it keeps itself is exact: Milvus
Lite stays the store of record (written first, read back at start), this
index answers the reads.

Layout: per collection, one block per (scope, context hash) — a search reads
only the rows it may return, as dense float32 chunks, each scanned by faiss's
exact inner-product kernel (``faiss.knn``: SIMD over the rows, a heap of k;
0.6-0.7 ms for 10,000 x 384 right after a model call, against 1.0-1.4 ms for
numpy's matrix-vector product and partial sort: docs/performance.md). Deleting swaps
the last row into the hole, so blocks stay dense. Vectors are normalised, so
the dot product is the cosine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import faiss
import numpy as np


CHUNK = 8192  # rows per chunk of a block: a block grows a chunk at a time, never by copying itself


class _Block:
    """Rows of one (scope, context): ids and their vectors in chunks of CHUNK rows.

    The first chunk starts small and doubles up to CHUNK (many small scopes stay small); after it,
    whole chunks are added, so growing never holds two copies of a large block at once."""

    __slots__ = ("ids", "pos", "chunks", "n")

    def __init__(self, dim: int) -> None:
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        self.chunks: list[np.ndarray] = [np.empty((16, dim), dtype=np.float32)]
        self.n = 0

    def _capacity(self) -> int:
        return (len(self.chunks) - 1) * CHUNK + len(self.chunks[-1])

    def _set(self, i: int, vector: np.ndarray) -> None:
        self.chunks[i // CHUNK][i % CHUNK] = vector

    def put(self, entry_id: str, vector: np.ndarray) -> None:
        i = self.pos.get(entry_id)
        if i is None:
            if self.n == self._capacity():
                first = self.chunks[0]
                if len(self.chunks) == 1 and len(first) < CHUNK:
                    grown = np.empty((min(CHUNK, 2 * len(first)), first.shape[1]), dtype=np.float32)
                    grown[: self.n] = first[: self.n]
                    self.chunks[0] = grown
                else:
                    self.chunks.append(np.empty((CHUNK, first.shape[1]), dtype=np.float32))
            i = self.n
            self.n += 1
            self.ids.append(entry_id)
            self.pos[entry_id] = i
        self._set(i, vector)

    def remove(self, entry_id: str) -> None:
        i = self.pos.pop(entry_id, None)
        if i is None:
            return
        last = self.n - 1
        if i != last:
            moved = self.ids[last]
            self._set(i, self.chunks[last // CHUNK][last % CHUNK])
            self.ids[i] = moved
            self.pos[moved] = i
        self.ids.pop()
        self.n = last
        if len(self.chunks) > 1 and self.n <= (len(self.chunks) - 1) * CHUNK - CHUNK // 2:
            self.chunks.pop()  # half a chunk of slack kept: deleting and re-adding one row never flaps
        elif len(self.chunks) == 1 and len(self.chunks[0]) > 64 and self.n < len(self.chunks[0]) // 4:
            self.chunks[0] = self.chunks[0][: max(16, 2 * self.n)].copy()  # memory back after big deletes

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """query: one normalised row, shape (1, dim)."""
        found: list[tuple[float, int]] = []
        for j, chunk in enumerate(self.chunks):
            rows = min(CHUNK, self.n - j * CHUNK)
            if rows <= 0 or k <= 0:
                break
            sims, where = faiss.knn(query, chunk[:rows], min(k, rows), faiss.METRIC_INNER_PRODUCT)
            found.extend((float(s), j * CHUNK + int(i)) for s, i in zip(sims[0], where[0]) if i >= 0)
        found.sort(key=lambda hit: -hit[0])
        return [(self.ids[i], s) for s, i in found[:k]]


class _Collection:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.blocks: dict[tuple[str, str], _Block] = {}  # (scope, ctx) -> rows
        self.where: dict[str, tuple[str, str]] = {}  # id -> (scope, ctx)
        self.tenant_of: dict[str, str] = {}  # scope -> tenant hash

    def put(self, entry_id: str, scope: str, tenant: str, ctx: str, vector: np.ndarray) -> None:
        key = (scope, ctx)
        old = self.where.get(entry_id)
        if old is not None and old != key:
            self.remove(entry_id)
        block = self.blocks.get(key)
        if block is None:
            block = self.blocks[key] = _Block(self.dim)
        block.put(entry_id, vector)
        self.where[entry_id] = key
        self.tenant_of[scope] = tenant

    def remove(self, entry_id: str, scope: str | None = None) -> None:
        key = self.where.get(entry_id)
        if key is None or (scope is not None and key[0] != scope):
            return
        del self.where[entry_id]
        block = self.blocks[key]
        block.remove(entry_id)
        if block.n == 0:
            del self.blocks[key]


class MemoryIndex:
    """Vectors by (collection, scope, context); every method is thread-safe."""

    def __init__(self) -> None:
        _single_threaded_blas()
        self._lock = threading.Lock()
        self._collections: dict[str, _Collection] = {}

    def has(self, collection: str) -> bool:
        return collection in self._collections

    def add_collection(self, collection: str, dim: int) -> None:
        with self._lock:
            self._collections.setdefault(collection, _Collection(dim))

    def adopt(self, collection: str, staged: MemoryIndex) -> None:
        """Take a collection loaded into another (private) index."""
        with self._lock:
            self._collections[collection] = staged._collections[collection]

    def drop_collection(self, collection: str) -> None:
        with self._lock:
            self._collections.pop(collection, None)

    def upsert(self, collection: str, scope: str, tenant: str, items: Sequence[tuple[str, str]],
               vectors: np.ndarray) -> None:
        """items: (entry id, context hash) per row of vectors."""
        rows = _normalised(vectors)
        with self._lock:
            c = self._collections[collection]
            for (entry_id, ctx), row in zip(items, rows):
                c.put(entry_id, scope, tenant, ctx, row)

    def load(self, collection: str, ids: Sequence[str], scopes: Sequence[str], tenants: Sequence[str],
             ctxs: Sequence[str], vectors: np.ndarray) -> None:
        rows = _normalised(vectors)
        with self._lock:
            c = self._collections[collection]
            for i, entry_id in enumerate(ids):
                c.put(entry_id, scopes[i], tenants[i], ctxs[i], rows[i])

    def search(self, collection: str, scope: str, ctx: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        query = _normalised(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        with self._lock:
            c = self._collections.get(collection)
            block = c.blocks.get((scope, ctx)) if c is not None else None
            return block.search(query, k) if block is not None else []

    def delete(self, ids: Iterable[str], *, scope: str | None = None, collections: Iterable[str] | None = None) -> None:
        """Remove ids (only those of ``scope`` when given) from these collections (default: all)."""
        ids = list(ids)
        with self._lock:
            names = list(self._collections) if collections is None else list(collections)
            for name in names:
                c = self._collections.get(name)
                if c is not None:
                    for entry_id in ids:
                        c.remove(entry_id, scope)

    def clear(self, *, scope: str | None = None, tenant: str | None = None,
              collections: Iterable[str] | None = None) -> None:
        """Drop every row of a scope, or of every scope of a tenant (hash), in these collections (default: all)."""
        with self._lock:
            names = list(self._collections) if collections is None else list(collections)
            for c in (self._collections[n] for n in names if n in self._collections):
                for key in [k for k in c.blocks if (scope is not None and k[0] == scope)
                            or (tenant is not None and c.tenant_of.get(k[0]) == tenant)]:
                    for entry_id in c.blocks.pop(key).ids:
                        c.where.pop(entry_id, None)

    def existing(self, collection: str, ids: Iterable[str]) -> set[str]:
        with self._lock:
            c = self._collections.get(collection)
            return set() if c is None else {i for i in ids if i in c.where}

    def ids(self, collection: str, *, scope: str | None = None, tenant: str | None = None) -> list[str]:
        with self._lock:
            c = self._collections.get(collection)
            if c is None:
                return []
            return [entry_id for (s, _), block in c.blocks.items()
                    if (scope is None or s == scope) and (tenant is None or c.tenant_of.get(s) == tenant)
                    for entry_id in block.ids]

    def rows(self, collection: str) -> int:
        with self._lock:
            c = self._collections.get(collection)
            return 0 if c is None else len(c.where)


_BLAS_LIMITED = False


def _single_threaded_blas() -> None:
    """One BLAS and one OpenMP thread for the whole process. faiss brings a second OpenBLAS and an OpenMP
    runtime; beside them numpy's two BLAS threads made a 10k x 384 product 10-70x slower on a 2-core host
    (measured: 0.2 ms alone, 10-12 ms with faiss loaded, 1.5 ms with one thread). A search this size gains
    nothing from a second thread, and the cores belong to the model and the event loop."""
    global _BLAS_LIMITED
    if _BLAS_LIMITED:
        return
    _BLAS_LIMITED = True
    faiss.omp_set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
    except Exception:  # optional: slower, never wrong
        pass


def _normalised(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v.reshape(1, -1)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return v / norms
