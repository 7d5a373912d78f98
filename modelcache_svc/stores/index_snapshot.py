"""A memory index's collection on disk, beside Milvus Lite: a restart reads it instead of Milvus Lite.

Reading a collection back through Milvus Lite's query costs about 25 s per 100,000 rows here (a Python
list of floats per vector), and the HNSW graphs would be rebuilt on top. So a clean stop writes the
in-process copy (vectors, ids, blocks, graphs) to ``<milvus file>.index/<collection>/``, and a start
takes it when it is provably current:

- ``manifest.json`` is written last, after every other file; a start without it reads Milvus Lite.
- The first write to a collection after a start deletes its manifest *before* it reaches Milvus Lite
  (``invalidate``), so a snapshot with a manifest has seen every write Milvus Lite has. A kill -9
  leaves no manifest: the next start reads Milvus Lite and builds the graphs in the background.
- The manifest's row count must equal Milvus Lite's, and every file its stated size.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import faiss
import numpy as np

from .approx_index import Ann, ApproxParams
from .memory_index import MemoryIndex, _Block, _Collection

log = logging.getLogger("modelcache_svc.index_snapshot")
FORMAT = 1
MANIFEST = "manifest.json"


def invalidate(root: Path, collection: str) -> None:
    """Before the first write to a collection: its snapshot no longer describes Milvus Lite."""
    manifest = root / collection / MANIFEST
    try:
        manifest.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(manifest.parent)


def save(index: MemoryIndex, collection: str, root: Path) -> int:
    """Write the collection (under the index's lock: writes wait); the rows written."""
    target = root / collection
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
                for n, ((scope, ctx), block) in enumerate(c.blocks.items()):
                    offset = 0
                    for chunk in block.chunks:  # chunks fill in order; only the last is part-used
                        take = min(len(chunk), block.n - offset)
                        if take <= 0:
                            break
                        vf.write(np.ascontiguousarray(chunk[:take]).tobytes())
                        offset += take
                    idf.write("".join(f"{i}\n" for i in block.ids))
                    graph = None
                    if block.ann is not None:
                        graph = f"g{n}"
                        faiss.write_index(block.ann.index, str(tmp / f"{graph}.faiss"))
                        (tmp / f"{graph}.labels").write_text(
                            "".join(f"{i or ''}\n" for i in block.ann.labels), encoding="ascii")
                    blocks.append({"scope": scope, "ctx": ctx, "tenant": c.tenant_of.get(scope, ""),
                                   "rows": block.n, "graph": graph})
                    rows += block.n
            (tmp / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
            manifest = {"format": FORMAT, "collection": collection, "dim": c.dim, "rows": rows,
                        "blocks": len(blocks), "vector_bytes": rows * c.dim * 4}
        for f in tmp.iterdir():
            _fsync(f)
        (tmp / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        _fsync(tmp / MANIFEST)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        _fsync_dir(root)
        return rows
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(collection: str, root: Path, approx: ApproxParams, expect_rows: int) -> MemoryIndex | None:
    """A private index holding the snapshot of this collection, or None when there is none current."""
    target = root / collection
    try:
        manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dim, rows = int(manifest.get("dim", 0)), int(manifest.get("rows", -1))
    if manifest.get("format") != FORMAT or manifest.get("collection") != collection or rows != expect_rows:
        log.info("index snapshot of %s is stale (%s rows, Milvus Lite has %d): reading Milvus Lite",
                 collection, rows, expect_rows)
        return None
    try:
        if (target / "vectors.f32").stat().st_size != rows * dim * 4:
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
                block = _Block.from_file(ids[start:start + n], vf, dim)
                if b.get("graph") and approx.enabled and n >= approx.min_entries // 2:
                    index = faiss.read_index(str(target / f"{b['graph']}.faiss"))
                    labels = [i or None for i in
                              (target / f"{b['graph']}.labels").read_text(encoding="ascii").split("\n")[:index.ntotal]]
                    if len(labels) == index.ntotal:
                        block.ann = Ann(dim, approx, index=index, labels=labels)
                c.blocks[key] = block
                c.tenant_of[key[0]] = str(b["tenant"])
                for entry_id in block.ids:
                    c.where[entry_id] = key
                start += n
        return staged
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("index snapshot of %s unreadable (%s): reading Milvus Lite", collection, exc)
        return None


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
