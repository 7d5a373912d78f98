"""The embedded graph alone at N rows (no Milvus Lite, no server): build, search, recall, save, load, RSS.

``python -m modelcache_svc.tools.graph_alone ROWS SNAPSHOT_DIR`` (docs/performance.md, "A million
entries"): the bench-scale vectors (tools/bulk_load.py) loaded into one block of a MemoryIndex with the
default ApproxParams; prints one JSON line after saving and one after reading the copy back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .workload import find_eval_dir
from ..embedding import load_embedder
from ..stores import index_snapshot
from ..stores.approx_index import ApproxParams
from ..stores.memory_index import MemoryIndex
from . import bulk_load


def rss() -> dict[str, int]:
    text = Path(f"/proc/{os.getpid()}/status").read_text()
    return {k: int(m.group(1)) // 1024 for k in ("VmRSS", "VmHWM") if (m := re.search(rf"^{k}:\s+(\d+)", text, re.MULTILINE))}


def timed(fn: Callable[[np.ndarray], Any], queries: np.ndarray) -> tuple[float, float]:
    spent = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        spent.append(time.perf_counter() - start)
    return round(statistics.median(spent) * 1e3, 2), round(float(np.percentile(spent, 99)) * 1e3, 2)


def recall(index: MemoryIndex, queries: np.ndarray) -> float:
    found = 0
    for q in queries:
        got = {i for i, _ in index.search("c", "s", "x", q, 5)}
        found += len(got & {i for i, _ in index.search_exact("c", "s", "x", q, 5)})
    return round(found / (5 * len(queries)), 4)


def main(argv: list[str]) -> None:
    n, root = int(argv[0]), Path(argv[1])
    out: dict[str, Any] = {"entries": n}
    embedder = load_embedder("onnx", "packaged:all-MiniLM-L6-v2")
    real = bulk_load.real_set(5000, find_eval_dir(None, dict(os.environ)), embedder,
                              Path("/tmp/modelcache-bench-scale"))
    asked = [q for q, _ in real.semantic[:300]]
    queries = bulk_load._unit(np.concatenate([np.asarray(embedder.encode(asked[i:i + 32]), dtype=np.float32)
                                              for i in range(0, len(asked), 32)]))
    _, off = bulk_load.synthetic(real, 10**9 + 7, 300)
    index = MemoryIndex(ApproxParams())
    index.add_collection("c", 384)
    start, k = time.time(), 0
    for questions, vectors in bulk_load.entry_batches(real, n):
        index.upsert("c", "s", "t", [(f"{k + j:032x}", "x") for j in range(len(questions))], vectors)
        k += len(questions)
    out["load_s"], out["rss_loaded"] = round(time.time() - start, 1), rss()
    index.wait_idle()
    out["graph_ready_after_load_s"], out["rss_graph"] = round(time.time() - start, 1), rss()
    out["graph_search_p50_p99_ms"] = timed(lambda q: index.search("c", "s", "x", q, 5), queries)
    out["exact_search_p50_p99_ms"] = timed(lambda q: index.search_exact("c", "s", "x", q, 5), queries[:60])
    out["recall_at_5_real_queries"], out["recall_at_5_off_entry"] = recall(index, queries), recall(index, off)
    shutil.rmtree(root, ignore_errors=True)
    start = time.time()
    index_snapshot.save(index, "c", root)
    out["save_s"] = round(time.time() - start, 1)
    out["snapshot_mb"] = round(sum(f.stat().st_size for f in root.glob("c*/*")) / 2**20)
    print(json.dumps(out), flush=True)
    start = time.time()
    loaded = index_snapshot.load("c", root, ApproxParams())
    if loaded is not None:
        index_snapshot.attach_graphs(loaded.index, "c", root)
    out["snapshot_load_s"] = round(time.time() - start, 1)
    fresh = MemoryIndex(ApproxParams())
    if loaded is not None:
        fresh.adopt("c", loaded.index)
    out["graphs_after_load"], out["rss_end"] = len(fresh.graphs("c")), rss()
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
