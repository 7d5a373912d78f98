"""A memory index's collection on disk, beside Milvus Lite: the saved copy a start reads with its journal.

Under ``<milvus file>.index/``, per collection:

- ``<collection>/``: the saved copy (vectors.f32, ids.txt, blocks.json, manifest.json written last).
  The manifest names ``journal``: the first journal generation the copy does not hold.
- ``<collection>.journal/``: the journal (``journal.py``), every change since the copy, in order.
- ``<collection>.graphs/``: one HNSW graph per large block (``<key>.faiss`` + ``<key>.labels``), saved
  at a clean stop and after each background build. A graph is a hint, not state: at load its labels are
  matched against the block's rows (a label no longer there is a tombstone; a row it lacks is searched
  exactly beside it until the graph takes it, ``memory_index``), so a graph older than the copy is
  still right, only slower until caught up.

A start reads the copy, replays the journal from the manifest's generation, attaches the graphs
(``load``, ``replay``, ``attach_graphs``). ``fold`` makes a new copy from the old one and the journal's
closed generations, from disk: it reads the old vectors in chunks and writes the new ones beside them,
so it never takes the index's lock and holds only the journal's net changes in memory. A copy is
replaced by two renames (old away, new in, then the old deleted); a start that finds only the old one
(a crash between the renames) takes it, its journal generations being deleted only after the swap.

Format 1 (a copy without a journal, graphs inside it; saved by earlier versions at a clean stop, whose
first write deleted the manifest) is read as a copy at generation 1.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from . import journal
from .approx_index import Ann, ApproxParams
from .memory_index import CHUNK, MemoryIndex, _Block, _Collection, _normalised

log = logging.getLogger("modelcache_svc.index_snapshot")
FORMAT = 2
MANIFEST = "manifest.json"
Progress = Callable[[int], None]


@dataclass
class Loaded:
    index: MemoryIndex  # a private index holding the collection
    journal: int  # the first journal generation the copy does not hold
    rows: int
    milvus_rows: int | None  # Milvus Lite's row count when a clean stop saved the copy


def copy_dir(root: Path, collection: str) -> Path:
    return root / collection


def journal_dir(root: Path, collection: str) -> Path:
    return root / f"{collection}.journal"


def graphs_dir(root: Path, collection: str) -> Path:
    return root / f"{collection}.graphs"


def graph_key(scope: str, ctx: str) -> str:
    return hashlib.sha256(f"{scope}\x00{ctx}".encode()).hexdigest()[:24]


# -- saving from memory (a clean stop; a new collection) --------------------------------------------------
def save(index: MemoryIndex, collection: str, root: Path, journal_generation: int = 1,
         graphs: bool = True, milvus_rows: int | None = None) -> int:
    """Write the collection's copy (under the index's lock: writes wait) as holding every journal generation
    below ``journal_generation``, and (``graphs``) its graphs; the rows written. ``milvus_rows``: Milvus
    Lite's row count at a clean stop, where nothing writes any more."""
    tmp = root / f"{collection}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        with index._lock:
            c = index._collections.get(collection)
            if c is None:
                shutil.rmtree(tmp)
                return 0
            blocks = []
            rows = 0
            with (tmp / "vectors.f32").open("wb") as vf, (tmp / "ids.txt").open("w", encoding="ascii") as idf:
                for (scope, ctx), block in c.blocks.items():
                    for j, chunk in enumerate(block.chunks):  # chunks fill in order; only the last is part-used
                        take = min(len(chunk), block.n - j * CHUNK)
                        if take <= 0:
                            break
                        vf.write(np.ascontiguousarray(chunk[:take]).tobytes())
                    idf.write("".join(f"{i}\n" for i in block.ids))
                    blocks.append({"scope": scope, "ctx": ctx, "tenant": c.tenant_of.get(scope, ""), "rows": block.n})
                    rows += block.n
                    if graphs and block.ann is not None:
                        save_graph(root, collection, scope, ctx, block.ann)
            dim = c.dim
        _finish(tmp, blocks, dim, rows, journal_generation, collection, milvus_rows)
        _swap_in(root, collection, tmp)
        return rows
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_graph(root: Path, collection: str, scope: str, ctx: str, ann: Ann) -> None:
    """One block's graph and its labels, replaced whole (a reader sees the old pair or the new one)."""
    folder = graphs_dir(root, collection)
    folder.mkdir(parents=True, exist_ok=True)
    key, tag = graph_key(scope, ctx), uuid.uuid4().hex[:8]
    index_tmp, labels_tmp = folder / f"{key}.faiss.{tag}", folder / f"{key}.labels.{tag}"
    try:
        faiss.write_index(ann.index, str(index_tmp))
        labels_tmp.write_text("".join(f"{i or ''}\n" for i in ann.labels[:ann.index.ntotal]), encoding="ascii")
        for f in (index_tmp, labels_tmp):
            _fsync(f)
        # Labels first: a graph file newer than its labels would be cut to the labels' length at load.
        os.replace(labels_tmp, folder / f"{key}.labels")
        os.replace(index_tmp, folder / f"{key}.faiss")
        _fsync_dir(folder)
    finally:
        index_tmp.unlink(missing_ok=True)
        labels_tmp.unlink(missing_ok=True)


def _finish(tmp: Path, blocks: list[dict[str, object]], dim: int, rows: int, generation: int,
            collection: str, milvus_rows: int | None = None) -> None:
    (tmp / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    for f in tmp.iterdir():
        _fsync(f)
    manifest = {"format": FORMAT, "collection": collection, "dim": dim, "rows": rows, "blocks": len(blocks),
                "vector_bytes": rows * dim * 4, "journal": generation}
    if milvus_rows is not None:
        manifest["milvus_rows"] = milvus_rows
    (tmp / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    _fsync(tmp / MANIFEST)


def _swap_in(root: Path, collection: str, tmp: Path) -> None:
    target = copy_dir(root, collection)
    old = root / f"{collection}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    _fsync_dir(root)
    shutil.rmtree(old, ignore_errors=True)


# -- reading ---------------------------------------------------------------------------------------------
def _manifest(root: Path, collection: str) -> tuple[Path, dict[str, object]] | None:
    for folder in (copy_dir(root, collection), root / f"{collection}.old"):
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if manifest.get("format") in (1, FORMAT) and manifest.get("collection") == collection:
            return folder, manifest
    return None


def saved_generation(root: Path, collection: str) -> int:
    """The first journal generation the saved copy does not hold (1 without a copy)."""
    found = _manifest(root, collection)
    return 1 if found is None else int(found[1].get("journal", 1))  # type: ignore[call-overload]


def saved_rows(root: Path, collection: str) -> int | None:
    found = _manifest(root, collection)
    return None if found is None else int(found[1].get("rows", 0))  # type: ignore[call-overload]


def load(collection: str, root: Path, approx: ApproxParams, progress: Progress | None = None) -> Loaded | None:
    """The saved copy (vectors only; ``attach_graphs`` after the journal), or None when there is none whole."""
    found = _manifest(root, collection)
    if found is None:
        return None
    target, manifest = found
    dim, rows = int(manifest.get("dim", 0)), int(manifest.get("rows", -1))  # type: ignore[call-overload]
    generation = int(manifest.get("journal", 1))  # type: ignore[call-overload]
    try:
        if (target / "vectors.f32").stat().st_size != rows * dim * 4:
            log.warning("saved copy of %s: its vector file is not %d rows long", collection, rows)
            return None
        blocks = json.loads((target / "blocks.json").read_text(encoding="utf-8"))
        ids = (target / "ids.txt").read_text(encoding="ascii").split("\n")[:rows]
        if len(ids) != rows or sum(b["rows"] for b in blocks) != rows:
            return None
        staged = MemoryIndex(approx)
        staged.add_collection(collection, dim)
        c: _Collection = staged._collections[collection]
        start = 0
        # Read, not memory-mapped: a map's pages count in RSS until unmapped, which at a million rows put
        # 1.5 GB on top of the copy being built (bench-scale: 9.0 GB peak against 7.5 GB after).
        with (target / "vectors.f32").open("rb") as vf:
            for b in blocks:
                n = int(b["rows"])
                key = (str(b["scope"]), str(b["ctx"]))
                block = _Block.from_file(ids[start:start + n], vf, dim, progress)
                if manifest.get("format") == 1 and b.get("graph"):
                    block.ann = _read_graph(target / f"{b['graph']}.faiss", target / f"{b['graph']}.labels")
                c.blocks[key] = block
                c.tenant_of[key[0]] = str(b["tenant"])
                for entry_id in block.ids:
                    c.where[entry_id] = key
                start += n
        counted = manifest.get("milvus_rows")  # format 1 has none: counted again, once
        return Loaded(staged, generation, rows, None if counted is None else int(counted))  # type: ignore[call-overload]
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("saved copy of %s unreadable (%s)", collection, exc)
        return None


def replay(staged: MemoryIndex, collection: str, root: Path, first: int,
           progress: Progress | None = None) -> tuple[int, journal.Op | None]:
    """Apply the journal from generation ``first`` onto a loaded copy; (records applied, the last one)."""
    applied, last = 0, None
    for payload in journal.read(journal_dir(root, collection), first):
        last = journal.decode(payload)
        staged.apply(collection, last)
        applied += 1
        if progress and isinstance(last, journal.Upsert):
            progress(len(last.items))
    return applied, last


def attach_graphs(staged: MemoryIndex, collection: str, root: Path) -> int:
    """Give each large block its saved graph, matched to the block's rows; the graphs attached."""
    c = staged._collections[collection]
    folder = graphs_dir(root, collection)
    attached = 0
    for (scope, ctx), block in c.blocks.items():
        if block.ann is None and staged.approx.enabled and block.n >= staged.approx.min_entries // 2:
            key = graph_key(scope, ctx)
            block.ann = _read_graph(folder / f"{key}.faiss", folder / f"{key}.labels", staged.approx)
        if block.ann is not None:
            if block.ann.index.d != c.dim:
                block.ann = None
                continue
            block.ann.params = staged.approx
            block.match_graph()
            # Room for the rows it lacks and what comes next, before it serves (approx_index.Ann.reserve).
            block.ann.reserve((block.fresh.n if block.fresh is not None else 0) + max(20_000, block.n // 20))
            attached += 1
    return attached


def _read_graph(index_path: Path, labels_path: Path, approx: ApproxParams | None = None) -> Ann | None:
    try:
        index = faiss.read_index(str(index_path))
        labels = [i or None for i in labels_path.read_text(encoding="ascii").split("\n")[:index.ntotal]]
    except (OSError, RuntimeError, ValueError):
        return None
    if len(labels) != index.ntotal:
        return None
    return Ann(index.d, approx or ApproxParams(), index=index, labels=labels)


# -- the fold: a new copy from the old one and the journal, on disk -------------------------------------
class _Net:
    """The journal's net effect on a copy: rows written since (by id, the last write winning), the copy's
    rows written over or deleted, deletes of the copy's rows that depend on its scope, cleared scopes and
    tenants (of the copy's rows: a row written after a clear is among the written ones)."""

    def __init__(self) -> None:
        self.written: dict[str, tuple[str, str, str, np.ndarray]] = {}  # id -> scope, tenant, ctx, row
        self.shadowed: set[str] = set()
        self.deleted_if: dict[str, set[str | None]] = {}
        self.cleared_scopes: set[str] = set()
        self.cleared_tenants: set[str] = set()

    def apply(self, op: journal.Op) -> None:
        if isinstance(op, journal.Upsert):
            rows = _normalised(op.vectors)
            for (entry_id, ctx), row in zip(op.items, rows):
                self.written[entry_id] = (op.scope, op.tenant, ctx, row)
                self.shadowed.add(entry_id)
        elif isinstance(op, journal.Delete):
            for entry_id in op.ids:
                mine = self.written.get(entry_id)
                if mine is not None:
                    if op.scope is None or mine[0] == op.scope:
                        del self.written[entry_id]
                elif entry_id not in self.shadowed:
                    self.deleted_if.setdefault(entry_id, set()).add(op.scope)
        else:
            gone = [i for i, w in self.written.items()
                    if (op.scope is not None and w[0] == op.scope) or (op.tenant is not None and w[1] == op.tenant)]
            for entry_id in gone:
                del self.written[entry_id]
            if op.scope is not None:
                self.cleared_scopes.add(op.scope)
            if op.tenant is not None:
                self.cleared_tenants.add(op.tenant)

    def keeps(self, entry_id: str, scope: str, tenant: str) -> bool:
        """Whether a row of the old copy stays."""
        if entry_id in self.shadowed or scope in self.cleared_scopes or tenant in self.cleared_tenants:
            return False
        scopes = self.deleted_if.get(entry_id)
        return scopes is None or (None not in scopes and scope not in scopes)


def fold(collection: str, root: Path, below: int) -> tuple[int, int]:
    """A new copy holding the old one and journal generations below ``below`` (closed: the writer has
    rotated past them); (rows, journal bytes folded). Their files are the caller's to delete after."""
    found = _manifest(root, collection)
    if found is None:
        raise FileNotFoundError(f"no saved copy of {collection} to fold into")
    source, manifest = found
    dim, rows = int(manifest["dim"]), int(manifest["rows"])  # type: ignore[call-overload]
    first = int(manifest.get("journal", 1))  # type: ignore[call-overload]
    net = _Net()
    folder = journal_dir(root, collection)
    gens = [g for g in journal.generations(folder) if first <= g < below]
    folded_bytes = 0
    for gen in gens:
        path = journal.path_of(folder, gen)
        records, _, _ = journal.read_records(path)
        folded_bytes += path.stat().st_size
        for payload in records:
            net.apply(journal.decode(payload))
    blocks = json.loads((source / "blocks.json").read_text(encoding="utf-8"))
    ids = (source / "ids.txt").read_text(encoding="ascii").split("\n")[:rows]
    fresh: dict[tuple[str, str], list[str]] = {}
    tenants: dict[str, str] = {}
    for entry_id, (scope, tenant, ctx, _) in net.written.items():
        fresh.setdefault((scope, ctx), []).append(entry_id)
        tenants[scope] = tenant
    tmp = root / f"{collection}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        out_blocks: list[dict[str, object]] = []
        total = 0
        with (source / "vectors.f32").open("rb") as vin, (tmp / "vectors.f32").open("wb") as vout, \
                (tmp / "ids.txt").open("w", encoding="ascii") as idf:

            def emit(key: tuple[str, str], tenant: str, kept: Iterable[tuple[list[str], np.ndarray]]) -> None:
                nonlocal total
                n = 0
                for part_ids, part in kept:
                    if part_ids:
                        vout.write(np.ascontiguousarray(part, dtype=np.float32).tobytes())
                        idf.write("".join(f"{i}\n" for i in part_ids))
                        n += len(part_ids)
                if n:
                    out_blocks.append({"scope": key[0], "ctx": key[1], "tenant": tenant, "rows": n})
                    total += n

            start = 0
            for b in blocks:
                n, key, tenant = int(b["rows"]), (str(b["scope"]), str(b["ctx"])), str(b["tenant"])
                block_ids = ids[start:start + n]
                start += n
                parts = _old_rows(vin, block_ids, dim, key[0], tenant, net)
                if key in fresh:  # rows written to this block since: after its old ones, in the same block
                    emit_ids = fresh.pop(key)
                    parts = itertools.chain(parts, [(emit_ids, np.stack([net.written[i][3] for i in emit_ids]))])
                emit(key, tenant, parts)
            for key, emit_ids in fresh.items():
                emit(key, tenants[key[0]], [(emit_ids, np.stack([net.written[i][3] for i in emit_ids]))])
        if manifest.get("format") == 1:
            _carry_format1_graphs(source, blocks, root, collection)
        _finish(tmp, out_blocks, dim, total, below, collection)
        _swap_in(root, collection, tmp)
        return total, folded_bytes
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _old_rows(vin: object, block_ids: list[str], dim: int, scope: str, tenant: str,
              net: _Net) -> Iterable[tuple[list[str], np.ndarray]]:
    for at in range(0, len(block_ids), CHUNK):
        part_ids = block_ids[at:at + CHUNK]
        part = np.fromfile(vin, dtype=np.float32, count=len(part_ids) * dim)  # type: ignore[arg-type]
        if part.size != len(part_ids) * dim:
            raise ValueError("the saved copy's vector file ends early")
        part = part.reshape(len(part_ids), dim)
        keep = [j for j, i in enumerate(part_ids) if net.keeps(i, scope, tenant)]
        if len(keep) == len(part_ids):
            yield part_ids, part
        elif keep:
            yield [part_ids[j] for j in keep], part[keep]


def _carry_format1_graphs(source: Path, blocks: list[dict[str, object]], root: Path, collection: str) -> None:
    folder = graphs_dir(root, collection)
    for b in blocks:
        if b.get("graph"):
            folder.mkdir(parents=True, exist_ok=True)
            key = graph_key(str(b["scope"]), str(b["ctx"]))
            for suffix in ("labels", "faiss"):
                src = source / f"{b['graph']}.{suffix}"
                if src.exists():
                    shutil.copyfile(src, folder / f"{key}.{suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:
        pass
