"""The in-process copy of one Milvus Lite file: its index, the journal of each collection, the folds.

Invariant, per collection: the copy in memory is the saved copy (``index_snapshot``) plus the journal
generations from the one its manifest names, in order. Every change is appended to the journal before it
reaches Milvus Lite or the copy, under the file's lock (one writer at a time: Milvus Lite's own rule);
``MilvusVectorStore`` then writes Milvus Lite and the copy in the same hold, and commits the journal (one
fdatasync for every record so far) before its caller is answered. So:

- anything a caller was told was written is in the journal, and a start rebuilds the copy from the saved
  copy and the journal: seconds, where reading Milvus Lite back cost 605 s at a million rows;
- Milvus Lite stays the store of record (a start with no saved copy reads it, as before) and holds what
  the copy holds, but for the last record when the process died between the two writes: a start writes
  that record to Milvus Lite again (every record is idempotent). Its row count is checked after that: if
  Milvus Lite holds more rows than the copy (the journal lost or damaged), Milvus Lite is read back
  instead; if fewer (a Milvus Lite write failed after its record, the caller was told UNAVAILABLE), the
  copy serves and the log says so; the repair pass deletes any vector without a live row.

The journal is folded into a new saved copy in the background once it holds ``fold_bytes`` or half the
saved copy's size, whichever is more (a fold rewrites the whole copy: tied to its size, folding N rows in
costs O(N) writes in all, not O(N^2 / fold_bytes) as a bulk load of a million rows would): the writer
rotates to a new generation (under the lock, a file open), the fold merges the old copy and the closed
generations from disk (no lock: queries and writes go on), swaps the new copy in and deletes the folded
generations. A clean stop saves the copy from memory and empties the journal.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import index_snapshot, journal
from .approx_index import Ann, ApproxParams
from .memory_index import MemoryIndex

log = logging.getLogger("modelcache_svc.milvus")
FOLD_BYTES = 64 * 2**20  # ~40,000 rows of 384-d: replayed at a start in about a second
Rows = Iterator[tuple[list[str], list[str], list[str], list[str], np.ndarray]]  # ids, scopes, tenants, ctxs


class LoadProgress:
    """Progress of one read-back: a log line every few seconds (a bar on a terminal), and what the
    service says while it waits (``describe``)."""

    def __init__(self, collection: str, total: int, every_s: float = 5.0) -> None:
        self.collection, self.total, self.done, self.phase = collection, max(total, 0), 0, "starting"
        self.started = self._last = time.monotonic()
        self.every_s = every_s
        self._bar: Any = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=self.total, desc=f"reading {collection}", unit="row", leave=False)
            except ImportError:
                pass

    def begin(self, phase: str, total: int | None = None) -> None:
        self.phase, self.done = phase, 0
        if total is not None:
            self.total = total
        if self._bar is not None:
            self._bar.reset(total=self.total)
            self._bar.set_description(phase)
        self._say()

    def add(self, rows: int) -> None:
        self.done += rows
        if self._bar is not None:
            self._bar.update(rows)
        elif time.monotonic() - self._last >= self.every_s:
            self._say()

    def _say(self) -> None:
        self._last = time.monotonic()
        if self._bar is None:
            log.info("vector copy of %s: %s", self.collection, self.describe())

    def describe(self) -> str:
        rows = f"{self.done} of {self.total} rows ({100 * self.done / self.total:.0f}%)" if self.total \
            else f"{self.done} rows"
        return f"{self.phase}, {rows}, {time.monotonic() - self.started:.1f} s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class LiteCopy:
    def __init__(self, path: str, approx: ApproxParams | None, *, sync: bool = True,
                 fold_bytes: int = FOLD_BYTES) -> None:
        self.root = Path(path + ".index")
        self.index = MemoryIndex(approx)
        self.index.on_graph = self._graph_built
        self.sync, self.fold_bytes = sync, fold_bytes
        self.lock = threading.RLock()  # one writer at a time on this file: Milvus Lite, journal, copy
        self.journals: dict[str, journal.Journal] = {}
        self.loading: LoadProgress | None = None
        self._folder: threading.Thread | None = None
        self.folds = 0
        self.users = 0
        self.copy_bytes: dict[str, int] = {}  # the saved copy's vector bytes, per collection

    # -- start ---------------------------------------------------------------------------------------------
    def load(self, name: str, dim: int, milvus_rows: Callable[[], int], read_milvus: Callable[[], Rows],
             rewrite: Callable[[journal.Op], None]) -> str:
        """Read a collection in (under ``lock``): the saved copy and its journal, else Milvus Lite. Where
        it came from, in words."""
        progress = self.loading = LoadProgress(name, index_snapshot.saved_rows(self.root, name) or 0)
        for left in self.root.glob(f"{name}.tmp-*"):  # a save or fold the process died in
            shutil.rmtree(left, ignore_errors=True)
        try:
            started = time.monotonic()
            how = self._from_copy(name, milvus_rows, rewrite, progress)
            if how is None:
                how = self._from_milvus(name, dim, milvus_rows, read_milvus, progress)
            log.info("vector copy of %s read from %s: %d rows in %.1f s", name, how, self.index.rows(name),
                     time.monotonic() - started)
            return how
        finally:
            progress.close()
            self.loading = None

    def _from_copy(self, name: str, milvus_rows: Callable[[], int], rewrite: Callable[[journal.Op], None],
                   progress: LoadProgress) -> str | None:
        progress.begin("reading the saved copy")
        loaded = index_snapshot.load(name, self.root, self.index.approx, progress.add)
        if loaded is None:
            return None
        progress.begin("replaying the journal", 0)
        records, last = index_snapshot.replay(loaded.index, name, self.root, loaded.journal, progress.add)
        rows = loaded.index.rows(name)
        # Milvus Lite's row count walks every row (~1.5 s at 200,000): skipped after a clean stop that
        # counted it, nothing written since.
        if records or loaded.milvus_rows != rows:
            if last is not None:
                rewrite(last)  # the process may have died between the record and Milvus Lite's write
            expect = milvus_rows()
            if rows < expect:
                log.warning("saved copy and journal of %s hold %d rows, Milvus Lite %d: reading Milvus Lite",
                            name, rows, expect)
                return None
            if rows > expect:
                log.warning("saved copy and journal of %s hold %d rows, Milvus Lite %d (a write to Milvus Lite "
                            "failed after its journal record): the copy serves", name, rows, expect)
        progress.begin("attaching the graphs", 0)
        graphs = index_snapshot.attach_graphs(loaded.index, name, self.root)
        self.index.adopt(name, loaded.index)
        self.copy_bytes[name] = loaded.rows * self.index.dim(name) * 4
        if name not in self.journals:  # else opened by a write before this read (``record``): its records replayed
            self.journals[name] = journal.Journal(index_snapshot.journal_dir(self.root, name), self.sync,
                                                  loaded.journal)
        return (f"its saved copy ({loaded.rows} rows) and journal ({records} records), "
                f"{graphs} graph(s) attached")

    def _from_milvus(self, name: str, dim: int, milvus_rows: Callable[[], int], read_milvus: Callable[[], Rows],
                     progress: LoadProgress) -> str:
        progress.begin("reading Milvus Lite back", milvus_rows())
        staged = MemoryIndex()
        staged.add_collection(name, dim)
        for ids, scopes, tenants, ctxs, vectors in read_milvus():
            staged.load(name, ids, scopes, tenants, ctxs, vectors)
            progress.add(len(ids))
        self.index.adopt(name, staged)
        # A base for the journal: a copy of what was read, and no journal file from before it.
        stale = self.journals.pop(name, None)
        if stale is not None:
            stale.close()
        shutil.rmtree(index_snapshot.journal_dir(self.root, name), ignore_errors=True)
        progress.begin("saving the copy read", self.index.rows(name))
        self.copy_bytes[name] = index_snapshot.save(self.index, name, self.root, 1, graphs=False) * dim * 4
        self.journals[name] = journal.Journal(index_snapshot.journal_dir(self.root, name), self.sync)
        return "Milvus Lite (no current saved copy)"

    # -- writes --------------------------------------------------------------------------------------------
    def record(self, name: str, payload: bytes) -> int:
        """Under ``lock``, before the write reaches Milvus Lite: the record appended; a token for ``commit``.
        A collection this process has not read in yet (a Remove or Clear walks every collection) gets its
        journal opened for it, so its saved copy stays what its journal says."""
        j = self.journals.get(name)
        if j is None:
            first = index_snapshot.saved_generation(self.root, name)
            j = self.journals[name] = journal.Journal(index_snapshot.journal_dir(self.root, name), self.sync, first)
        return j.append(payload)

    def commit(self, name: str, token: int) -> None:
        """Off the lock, before the caller is answered: durable (fdatasync, shared); a fold when due."""
        j = self.journals[name]
        j.commit(token)
        if j.bytes_pending >= max(self.fold_bytes, self.copy_bytes.get(name, 0) // 2):
            self.fold_soon(name)

    # -- folds ---------------------------------------------------------------------------------------------
    def fold_soon(self, name: str) -> None:
        with self.lock:
            if self._folder is not None and self._folder.is_alive():
                return
            self._folder = threading.Thread(target=self.fold, args=(name,), name="vector-copy-fold", daemon=True)
            self._folder.start()

    def fold(self, name: str) -> None:
        """Fold the journal's closed generations into a new saved copy (queries and writes go on)."""
        try:
            started = time.monotonic()
            with self.lock:
                below = self.journals[name].rotate()
            rows, folded = index_snapshot.fold(name, self.root, below)
            self.journals[name].folded(below, folded)
            self.copy_bytes[name] = rows * self.index.dim(name) * 4
            self.folds += 1
            log.info("journal of %s folded into its saved copy: %d rows, %.1f MB of journal, in %.1f s",
                     name, rows, folded / 2**20, time.monotonic() - started)
        except Exception:  # the journal stays whole: the next fold, a clean stop or a start reads it
            log.warning("folding the journal of %s failed", name, exc_info=True)

    def wait_fold(self) -> None:
        folder = self._folder
        if folder is not None:
            folder.join()

    # -- stop ----------------------------------------------------------------------------------------------
    def save(self, milvus_rows: Callable[[str], int | None]) -> None:
        """The last store of this process on the file: save every collection written since its copy was read
        (vectors and graphs, and Milvus Lite's row count, which the next start then need not count) and
        empty its journal."""
        self.wait_fold()
        for name in set(self.journals) - set(self.index.collections()):
            self.journals.pop(name).close()  # written, never read in: its next start replays the records
        for name in self.index.collections():
            j = self.journals.get(name)
            if j is None or not j.bytes_pending:
                j and j.close()
                continue  # read from a current copy and never written since: that copy still holds
            started = time.monotonic()
            try:
                below = j.rotate()
                rows = index_snapshot.save(self.index, name, self.root, below, milvus_rows=milvus_rows(name))
                j.folded(below, j.bytes_pending)
                log.info("vector copy of %s saved: %d rows in %.1f s", name, rows, time.monotonic() - started)
            except Exception:
                log.warning("saving the vector copy of %s failed; the next start reads its journal", name,
                            exc_info=True)
            finally:
                j.close()

    def _graph_built(self, name: str, key: tuple[str, str], ann: Ann) -> None:
        try:
            index_snapshot.save_graph(self.root, name, key[0], key[1], ann)
        except Exception:  # a start without it builds the graph again; nothing else is lost
            log.warning("saving a graph of %s failed", name, exc_info=True)
