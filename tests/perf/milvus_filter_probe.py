"""What the service's filter costs a Milvus server search, apart from the graph (issue #32).

Every semantic search over a Milvus server carries ``scope == "<hex>" and ctx == "<hex>"`` (stores/milvus_store.py).
With one scope holding every row, the partition key prunes nothing and the server evaluates the expression row by
row before it searches. This probe loads N rows of the service's schema into a ``milvus-server`` of its own (random
unit vectors: the filter's cost does not depend on them), and times the same searches with no filter, the scope
alone, the scope and the context, and again after scalar indexes on scope and ctx. IVF_FLAT by default: the
bitset comes before the index is read, so the index type only sets the floor every variant shares.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/perf/milvus_filter_probe.py --sizes 10000,1000000 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 384
SCOPE = "0123456789abcdef0123456789abcdef"
CTX = "fedcba9876543210" * 4


def timed(client, name: str, queries: np.ndarray, filt: str, params: dict, limit: int = 5,
          fields: tuple[str, ...] = ("id",)) -> dict:
    laps = []
    for q in queries:
        started = time.perf_counter()
        client.search(name, data=[q.tolist()], limit=limit, filter=filt, output_fields=list(fields),
                      search_params={"metric_type": "COSINE", "params": params})
        laps.append((time.perf_counter() - started) * 1000)
    laps.sort()
    return {"p50_ms": round(statistics.median(laps), 2), "p90_ms": round(laps[int(len(laps) * 0.9)], 2)}


def probe(client, n: int, index: str, queries: np.ndarray, say) -> dict:
    from pymilvus import DataType

    name = f"probe_{n}"
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("scope", DataType.VARCHAR, max_length=32, is_partition_key=True)
    schema.add_field("tenant", DataType.VARCHAR, max_length=32)
    schema.add_field("ctx", DataType.VARCHAR, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    params = client.prepare_index_params()
    if index == "HNSW":
        params.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 80})
        search = {"ef": 64}
    else:
        params.add_index("vector", index_type="IVF_FLAT", metric_type="COSINE", params={"nlist": 1024})
        search = {"nprobe": 8}
    client.create_collection(name, schema=schema, index_params=params, consistency_level="Bounded")
    rng = np.random.default_rng(n)
    started = time.monotonic()
    for start in range(0, n, 5000):
        count = min(5000, n - start)
        v = rng.standard_normal((count, DIM), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        client.insert(name, [{"id": f"{start + i:016x}", "scope": SCOPE, "tenant": SCOPE, "ctx": CTX,
                              "vector": v[i].tolist()} for i in range(count)])
    client.flush(name)
    loaded = time.monotonic() - started
    say(f"{n}: inserted in {loaded:.0f} s")
    while True:
        info = client.describe_index(name, "vector")
        if int(info.get("indexed_rows", 0)) >= n and int(info.get("pending_index_rows", 0)) == 0:
            break
        time.sleep(2)
    indexed = time.monotonic() - started - loaded
    say(f"{n}: indexed in {indexed:.0f} s")
    variants = {"no filter": "", "scope": f'scope == "{SCOPE}"',
                "scope and ctx": f'scope == "{SCOPE}" and ctx == "{CTX}"'}
    out = {"rows": n, "index": index, "insert_s": round(loaded), "index_s": round(indexed)}
    for q in queries[:20]:  # warm
        client.search(name, data=[q.tolist()], limit=5, filter=variants["scope and ctx"],
                      search_params={"metric_type": "COSINE", "params": search})
    for rnd in range(2):  # two rounds, interleaved, for a noisy host
        for label, filt in variants.items():
            out.setdefault(label, []).append(timed(client, name, queries, filt, search))
    client.release_collection(name)
    scalar = client.prepare_index_params()
    scalar.add_index("scope", index_type="Trie")
    scalar.add_index("ctx", index_type="Trie")
    try:
        client.create_index(name, scalar)
        client.load_collection(name)
        for rnd in range(2):
            for label in ("scope", "scope and ctx"):
                out.setdefault(label + ", Trie indexes", []).append(timed(client, name, queries, variants[label], search))
            # The scope alone on the server, the context checked here on 20 rows with their ctx.
            out.setdefault("scope, Trie indexes, 20 rows with ctx", []).append(
                timed(client, name, queries, variants["scope"], search, 20, ("id", "ctx")))
    except Exception as exc:  # noqa: BLE001 - a probe reports what the server refused
        out["trie_error"] = str(exc)[:300]
        client.load_collection(name)
    client.drop_collection(name)
    return out


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pymilvus import MilvusClient

    from modelcache_svc.tools.bench_scale import MilvusServer

    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="10000,1000000")
    p.add_argument("--index", choices=["IVF_FLAT", "HNSW"], default="IVF_FLAT")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    say = (lambda _: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    rng = np.random.default_rng(7)
    queries = rng.standard_normal((args.queries, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = MilvusServer(Path(tmp) / "milvus")
        try:
            client = MilvusClient(uri=server.uri, timeout=120)
            report = [probe(client, int(n), args.index, queries, say) for n in args.sizes.split(",")]
        finally:
            server.stop()
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
