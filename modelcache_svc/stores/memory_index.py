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

Past ``ApproxParams.min_entries`` rows a block also gets an HNSW graph (``approx_index.Ann``), built
on a background thread while the exact scan keeps serving, then kept in step by every write; a search
takes the graph's candidates and re-scores them exactly. Below the size, and until a graph is ready,
the exact scan answers. ``index_snapshot`` saves and restores a collection with its graphs.

Rows written to a block with a graph, and rows a graph read back from disk lacks (``index_snapshot``: a
graph is a hint), are the block's ``fresh`` rows: a small exact block beside the graph, searched with it
(so a search never misses them), and moved into the graph by the background thread 16 rows per hold of
the lock, so neither an Insert nor a search waits for HNSW inserts. That thread also gives way to a stream
of writes: while rows were written in the last ``CATCH_UP_QUIET_S`` it waits, unless the fresh rows of
the block reach ``min_entries`` (the size an exact scan stops being cheap). An HNSW insert into a graph of
a million rows costs ~2 ms of a core, and an Insert stream is bound by the model on the same cores
(docs/performance.md, "Back after a crash").
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import BinaryIO

import faiss
import numpy as np

from . import journal
from .approx_index import Ann, ApproxParams

log = logging.getLogger("modelcache_svc.memory_index")


CATCH_UP_QUIET_S = 0.5  # a graph's catch-up waits for writes to pause this long (the module's note)
CHUNK = 8192  # rows per chunk of a block: a block grows a chunk at a time, never by copying itself


class _Block:
    """Rows of one (scope, context): ids and their vectors in chunks of CHUNK rows.

    The first chunk starts small and doubles up to CHUNK (many small scopes stay small); after it,
    whole chunks are added, so growing never holds two copies of a large block at once."""

    __slots__ = ("ann", "building", "chunks", "fresh", "ids", "n", "pos", "touched")

    def __init__(self, dim: int) -> None:
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        self.chunks: list[np.ndarray] = [np.empty((16, dim), dtype=np.float32)]
        self.n = 0
        self.ann: Ann | None = None  # the HNSW graph, once built (large blocks only)
        self.touched: set[str] | None = None  # ids written while a graph is built off the lock
        self.building = False
        self.fresh: _Block | None = None  # rows the graph does not hold yet, searched exactly beside it

    @classmethod
    def from_rows(cls, ids: list[str], vectors: np.ndarray) -> _Block:
        """A block of these rows (distinct ids, unit vectors), filled a chunk at a time."""
        block = cls(vectors.shape[1])
        n = len(ids)
        block.ids = list(ids)
        block.pos = {entry_id: i for i, entry_id in enumerate(block.ids)}
        block.n = n
        if n <= CHUNK:
            block.chunks = [np.array(vectors[: max(16, n)], dtype=np.float32)]
            if len(block.chunks[0]) < 16:
                block.chunks[0] = np.resize(block.chunks[0], (16, vectors.shape[1]))
        else:
            block.chunks = []
            for start in range(0, n, CHUNK):
                chunk = np.empty((CHUNK, vectors.shape[1]), dtype=np.float32)
                part = vectors[start:start + CHUNK]
                chunk[: len(part)] = part
                block.chunks.append(chunk)
        return block

    @classmethod
    def from_file(cls, ids: list[str], f: BinaryIO, dim: int,
                  progress: Callable[[int], None] | None = None) -> _Block:
        """A block of these rows read from ``f`` (float32 rows from its current position) straight into
        its chunks: no second copy of the rows is ever resident (a memory map's pages would be, while read).
        ValueError when the file ends early. ``progress(rows)`` after each chunk."""
        block = cls(dim)
        n = len(ids)
        block.ids = list(ids)
        block.pos = {entry_id: i for i, entry_id in enumerate(block.ids)}
        block.n = n
        block.chunks = []
        for start in range(0, max(n, 1), CHUNK):
            chunk = np.zeros((max(16, n) if n <= CHUNK else CHUNK, dim), dtype=np.float32)
            take = min(CHUNK, n - start)
            view = memoryview(chunk[:take]).cast("B")
            done = 0
            while done < len(view):
                got = f.readinto(view[done:])
                if not got:
                    raise ValueError(f"vector file ends {len(view) - done} bytes early")
                done += got
            block.chunks.append(chunk)
            if progress is not None:
                progress(max(take, 0))
        return block

    def rows(self) -> np.ndarray:
        """A copy of the live rows, in ``ids`` order."""
        if self.n == 0:
            return np.empty((0, self.chunks[0].shape[1]), dtype=np.float32)
        parts = [chunk[: min(CHUNK, self.n - j * CHUNK)] for j, chunk in enumerate(self.chunks) if j * CHUNK < self.n]
        return np.concatenate(parts, axis=0)

    def row(self, i: int) -> np.ndarray:
        return self.chunks[i // CHUNK][i % CHUNK]

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
        if self.ann is not None:
            # Not into the graph here: an HNSW insert costs ~1 ms a row at 200,000 rows (more at a million),
            # under the locks every search and write waits on. The row waits beside the graph, searched
            # exactly, until the background thread moves it in (``catch_up``).
            self.ann.discard(entry_id)
            if self.fresh is None:
                self.fresh = _Block(len(vector))
            self.fresh.put(entry_id, vector)
        if self.touched is not None:
            self.touched.add(entry_id)

    def remove(self, entry_id: str) -> None:
        i = self.pos.pop(entry_id, None)
        if i is None:
            return
        if self.ann is not None:
            self.ann.discard(entry_id)
        if self.fresh is not None:
            self.fresh.remove(entry_id)
        if self.touched is not None:
            self.touched.add(entry_id)
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
        if self.ann is not None and k > 0:
            hits = self._search_graph(query, k)
            if hits is not None:
                return hits
        found: list[tuple[float, int]] = []
        for j, chunk in enumerate(self.chunks):
            rows = min(CHUNK, self.n - j * CHUNK)
            if rows <= 0 or k <= 0:
                break
            sims, where = faiss.knn(query, chunk[:rows], min(k, rows), faiss.METRIC_INNER_PRODUCT)
            found.extend((float(s), j * CHUNK + int(i)) for s, i in zip(sims[0], where[0]) if i >= 0)
        found.sort(key=lambda hit: -hit[0])
        return [(self.ids[i], s) for s, i in found[:k]]

    def _search_graph(self, query: np.ndarray, k: int) -> list[tuple[str, float]] | None:
        """The graph's candidates, re-scored against the float32 rows, with the fresh rows' exact best;
        None: too few, scan instead."""
        assert self.ann is not None
        rows = [self.pos[i] for i in self.ann.candidates(query, k) if i in self.pos]
        extra = self.fresh.search(query, k) if self.fresh is not None and self.fresh.n else []
        if len(rows) + len(extra) < min(k, self.n):
            return None
        hits = dict(extra)
        if rows:
            vectors = np.stack([self.row(i) for i in rows])
            sims = vectors @ query[0]
            for j, i in enumerate(rows):
                hits[self.ids[i]] = float(sims[j])
        return sorted(hits.items(), key=lambda hit: -hit[1])[:k]

    def match_graph(self) -> None:
        """After a graph read from disk: labels of rows no longer here become tombstones, rows it lacks
        become fresh (searched exactly until the graph takes them)."""
        ann = self.ann
        assert ann is not None
        for entry_id in [i for i in ann.label_of if i not in self.pos]:
            ann.discard(entry_id)
        missing = [i for i in self.ids if i not in ann.label_of]
        self.fresh = None
        if missing:
            self.fresh = _Block.from_rows(missing, np.stack([self.row(self.pos[i]) for i in missing]))

    def catch_up(self, rows: int) -> bool:
        """Move up to ``rows`` fresh rows into the graph; True when none is left."""
        fresh = self.fresh
        if fresh is None or self.ann is None:
            self.fresh = None
            return True
        take = fresh.ids[-rows:]
        if take:
            self.ann.add(take, np.stack([self.row(self.pos[i]) for i in take]))
            for entry_id in take:
                fresh.remove(entry_id)
        if fresh.n == 0:
            self.fresh = None
            return True
        return False


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

    def __init__(self, approx: ApproxParams | None = None) -> None:
        _single_threaded_blas()
        self._lock = threading.Lock()
        self._collections: dict[str, _Collection] = {}
        self.approx = approx or ApproxParams(min_entries=0)
        self._builds: queue.Queue[tuple[str, tuple[str, str]]] = queue.Queue()
        self._builder: threading.Thread | None = None
        self._pending = 0  # builds queued or running
        self._idle = threading.Condition(self._lock)
        self._last_write = 0.0  # time.monotonic() of the last upsert: a catch-up gives way to writes
        # Called off the lock with a graph just built, before it serves (the store saves it: index_snapshot).
        self.on_graph: Callable[[str, tuple[str, str], Ann], None] | None = None

    def has(self, collection: str) -> bool:
        return collection in self._collections

    def collections(self) -> list[str]:
        with self._lock:
            return list(self._collections)

    def add_collection(self, collection: str, dim: int) -> None:
        with self._lock:
            self._collections.setdefault(collection, _Collection(dim))

    def adopt(self, collection: str, staged: MemoryIndex) -> None:
        """Take a collection loaded into another (private) index; large blocks without a graph get one
        built in the background (the exact scan serves them meanwhile)."""
        with self._lock:
            c = self._collections[collection] = staged._collections[collection]
            for key in list(c.blocks):
                self._check(collection, c, key)

    def drop_collection(self, collection: str) -> None:
        with self._lock:
            self._collections.pop(collection, None)

    def upsert(self, collection: str, scope: str, tenant: str, items: Sequence[tuple[str, str]],
               vectors: np.ndarray) -> None:
        """items: (entry id, context hash) per row of vectors."""
        rows = _normalised(vectors)
        with self._lock:
            self._last_write = time.monotonic()
            c = self._collections[collection]
            for (entry_id, ctx), row in zip(items, rows):
                c.put(entry_id, scope, tenant, ctx, row)
            for ctx in {ctx for _, ctx in items}:
                self._check(collection, c, (scope, ctx))

    def apply(self, collection: str, op: journal.Op) -> None:
        """A journal record, as the write that made it did (replay at start: no graph is scheduled)."""
        with self._lock:
            c = self._collections[collection]
            if isinstance(op, journal.Upsert):
                for (entry_id, ctx), row in zip(op.items, _normalised(op.vectors)):
                    c.put(entry_id, op.scope, op.tenant, ctx, row)
            elif isinstance(op, journal.Delete):
                for entry_id in op.ids:
                    c.remove(entry_id, op.scope)
            else:
                self._clear(c, op.scope, op.tenant)

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
                    keys = {c.where[i] for i in ids if i in c.where}
                    for entry_id in ids:
                        c.remove(entry_id, scope)
                    for key in keys:
                        self._check(name, c, key)

    def clear(self, *, scope: str | None = None, tenant: str | None = None,
              collections: Iterable[str] | None = None) -> None:
        """Drop every row of a scope, or of every scope of a tenant (hash), in these collections (default: all)."""
        with self._lock:
            names = list(self._collections) if collections is None else list(collections)
            for c in (self._collections[n] for n in names if n in self._collections):
                self._clear(c, scope, tenant)

    @staticmethod
    def _clear(c: _Collection, scope: str | None, tenant: str | None) -> None:
        for key in [k for k in c.blocks if (scope is not None and k[0] == scope)
                    or (tenant is not None and c.tenant_of.get(k[0]) == tenant)]:
            for entry_id in c.blocks.pop(key).ids:
                c.where.pop(entry_id, None)

    def existing(self, collection: str, ids: Iterable[str]) -> set[str]:
        with self._lock:
            c = self._collections.get(collection)
            return set() if c is None else {i for i in ids if i in c.where}

    def vectors(self, collection: str, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Copies of the (normalised) vectors of those of these ids the collection holds."""
        with self._lock:
            c = self._collections.get(collection)
            if c is None:
                return {}
            out = {}
            for entry_id in ids:
                key = c.where.get(entry_id)
                if key is not None:
                    block = c.blocks[key]
                    out[entry_id] = block.row(block.pos[entry_id]).copy()
            return out

    def ids(self, collection: str, *, scope: str | None = None, tenant: str | None = None) -> list[str]:
        with self._lock:
            c = self._collections.get(collection)
            if c is None:
                return []
            return [entry_id for (s, _), block in c.blocks.items()
                    if (scope is None or s == scope) and (tenant is None or c.tenant_of.get(s) == tenant)
                    for entry_id in block.ids]

    def dim(self, collection: str) -> int:
        with self._lock:
            c = self._collections.get(collection)
            return 0 if c is None else c.dim

    def rows(self, collection: str) -> int:
        with self._lock:
            c = self._collections.get(collection)
            return 0 if c is None else len(c.where)

    # -- the approximate index (past approx.min_entries rows of a block) ----------------------------
    def graphs(self, collection: str) -> dict[tuple[str, str], int]:
        """(scope, ctx) -> rows in its graph, for the blocks a graph serves."""
        with self._lock:
            c = self._collections.get(collection)
            return {} if c is None else {k: len(b.ann.labels) for k, b in c.blocks.items() if b.ann is not None}

    def search_exact(self, collection: str, scope: str, ctx: str, vector: np.ndarray,
                     k: int) -> list[tuple[str, float]]:
        """The exact scan, even where a graph serves (recall measurements)."""
        query = _normalised(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        with self._lock:
            c = self._collections.get(collection)
            block = c.blocks.get((scope, ctx)) if c is not None else None
            if block is None:
                return []
            ann, block.ann = block.ann, None
            try:
                return block.search(query, k)
            finally:
                block.ann = ann

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no graph is queued or being built; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _check(self, name: str, c: _Collection, key: tuple[str, str]) -> None:
        """Under the lock, after writes to a block: build, rebuild or drop its graph as its size says."""
        block = c.blocks.get(key)
        if block is None or not self.approx.enabled or block.building:
            return
        if block.ann is None:
            if block.n >= self.approx.min_entries:
                self._schedule(name, key, block)
        elif block.n < self.approx.min_entries // 2:  # hysteresis: a block near the size never flaps
            block.ann = block.fresh = None
        elif block.ann.needs_rebuild() or block.fresh is not None:
            self._schedule(name, key, block)  # a rebuild, or a catch-up (``_build`` tells them apart)

    def _schedule(self, name: str, key: tuple[str, str], block: _Block) -> None:
        block.building = True
        self._pending += 1
        self._builds.put((name, key))
        if self._builder is None or not self._builder.is_alive():
            self._builder = threading.Thread(target=self._build_loop, name="memory-index-graphs", daemon=True)
            self._builder.start()

    def _build_loop(self) -> None:
        while True:
            try:
                name, key = self._builds.get(timeout=5.0)
            except queue.Empty:
                with self._lock:
                    if self._builds.empty():
                        self._builder = None
                        return
                continue
            try:
                self._build(name, key)
            except Exception:
                log.warning("building the graph of a block of %s failed; the exact scan serves it", name, exc_info=True)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _build(self, name: str, key: tuple[str, str]) -> None:
        """Copy the rows under the lock, build off it (searches and writes go on), then replay the writes
        made meanwhile and swap the graph in. A block with fresh rows beside its graph catches up instead."""
        with self._lock:
            c = self._collections.get(name)
            block = c.blocks.get(key) if c is not None else None
            if block is None:
                return
            if block.fresh is not None and block.ann is not None and not block.ann.needs_rebuild():
                self._catch_up(block)
                block.building = False
                self._check(name, c, key)  # past the tombstone share meanwhile: a rebuild now
                return
            ids, vectors = list(block.ids), block.rows()
            block.touched = set()
        try:
            ann = Ann.build(vectors.shape[1], self.approx, ids, vectors)
            if self.on_graph is not None:
                self.on_graph(name, key, ann)
        except BaseException:
            with self._lock:
                block.touched, block.building = None, False
            raise
        del vectors
        with self._lock:
            block.building = False
            touched, block.touched = block.touched or set(), None
            if self._collections.get(name) is not c or c.blocks.get(key) is not block:
                return  # cleared or replaced meanwhile
            for entry_id in touched:
                ann.discard(entry_id)
                i = block.pos.get(entry_id)
                if i is not None:
                    ann.add([entry_id], block.row(i).reshape(1, -1))
            block.ann, block.fresh = ann, None  # the new graph holds every row, the fresh ones too
            log.info("approximate index ready: %d rows of a scope of %s", block.n, name)

    def _catch_up(self, block: _Block, slice_rows: int = 16) -> None:
        """Called and returning under the lock; releases it between slices (searches go on meanwhile)."""
        left = block.fresh.n if block.fresh is not None else 0
        cap = max(self.approx.min_entries, slice_rows)
        while True:
            fresh = block.fresh
            writing = time.monotonic() - self._last_write < CATCH_UP_QUIET_S
            if writing and fresh is not None and fresh.n < cap:
                pause = 0.05  # writes are coming: they have the cores, the fresh rows are searched exactly
            elif block.catch_up(slice_rows):
                break
            else:
                pause = 0.001  # let searches and writes waiting on the lock in (a lock is not fair)
            self._lock.release()
            try:
                time.sleep(pause)
            finally:
                self._lock.acquire()
        if left >= 1000:
            log.info("graph caught up with %d rows written beside it", left)


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
