"""Why recall@5 at 10,000 rows over a Milvus server is 0.987 (issue #32): bench-scale's own 10,000 entries (5,000
real questions and 5,000 synthetic mixes) and its first 300 paraphrases, the exact top 5 by faiss, ties and
duplicates counted, then the service's store over a ``milvus-server`` of its own searched at several ``ef``.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/perf/milvus_recall_probe.py '{"M": 16, "efConstruction": 200}'
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from modelcache_svc.cache.keys import chat_key
from modelcache_svc.config import Limits, Settings
from modelcache_svc.embedding import load_embedder
from modelcache_svc.records import Message
from modelcache_svc.stores.milvus_store import MilvusVectorStore
from modelcache_svc.tools import bulk_load
from modelcache_svc.tools.bench_scale import MilvusServer, _recall_server, _wait_indexed
from modelcache_svc.tools.workload import find_eval_dir

N, QUERIES = 10_000, 300


def main() -> None:
    index_params = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
    settings = Settings.load({}, {**os.environ, "HF_HUB_OFFLINE": "1"})
    embedder = load_embedder(settings.embedding_backend, settings.embedding_model)
    real = bulk_load.real_set(5000, find_eval_dir(None, os.environ), embedder, Path(tempfile.gettempdir()) / "mc-real")
    asked = [q for q, _ in real.semantic][:QUERIES]
    queries = bulk_load._unit(np.concatenate([np.asarray(embedder.encode(asked[i:i + 32]), dtype=np.float32)
                                              for i in range(0, len(asked), 32)]))
    every = np.concatenate([v for _, v in bulk_load.entry_batches(real, N)])
    top = np.sort(queries @ every.T, 1)[:, ::-1][:, :6]
    gap = top[:, 4] - top[:, 5]
    out: dict = {"index_params": index_params, "duplicate_texts": len(real.questions) - len(set(real.questions)),
                 "fifth_sixth_gap_below": {str(t): int((gap < t).sum()) for t in (1e-6, 1e-4, 1e-3)}}
    work = Path(tempfile.mkdtemp(prefix="mc-recall-"))
    server = MilvusServer(work / "milvus")
    try:
        ctx = chat_key([Message("user", "x")], Limits()).context_hash
        ids = [f"e{i:07d}" for i in range(N)]
        store = MilvusVectorStore(server.uri, timeout=60, index_params=index_params)
        for s in range(0, N, 1000):
            store.insert(real.model_id, "t", "mod", [(i, ctx) for i in ids[s:s + 1000]], every[s:s + 1000])
        _wait_indexed(store, store.collection_name(real.model_id, every.shape[1]), N, settle=120)
        for ef in (32, 64, 256, 1024):
            probe = MilvusVectorStore(server.uri, timeout=60, index_params=index_params, search_params={"ef": ef})
            # bench-scale's own measure: the store's search against faiss's exact top 5 (real, off-entry)
            out[f"ef {ef}"] = dict(zip(("recall_at_5", "recall_at_5_off_entry"),
                                       _recall_server(probe, "t", "mod", queries, real, ids)))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
