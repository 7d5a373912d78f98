"""The HNSW graph of a large block (stores/approx_index.py, memory_index.py) and its snapshot on disk
(stores/index_snapshot.py): it switches on past the configured size, agrees with the exact scan,
never serves a removed row, and a restart reads it back when, and only when, it is current."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from modelcache_svc.stores import index_snapshot
from modelcache_svc.stores.approx_index import ApproxParams
from modelcache_svc.stores.memory_index import MemoryIndex

DIM = 48
SIZE = 2_000
NOISE = 0.6
PARAMS = ApproxParams(min_entries=SIZE, m=32, ef_construction=80, ef_search=128)


def clustered(rng: np.random.Generator, n: int, centres: int = 60) -> np.ndarray:
    """Unit vectors around a few centres: neighbourhoods as crowded as questions' are."""
    c = rng.standard_normal((centres, DIM)).astype(np.float32)
    v = c[rng.integers(0, centres, n)] + NOISE * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(rng: np.random.Generator, vectors: np.ndarray, n: int) -> np.ndarray:
    """Queries as a cache gets them: each a paraphrase of a stored row (cosine about 0.85 to it)."""
    v = vectors[rng.integers(0, len(vectors), n)] + 0.6 / np.sqrt(DIM) * rng.standard_normal((n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def ids(start: int, n: int) -> list[tuple[str, str]]:
    return [(f"{i:032x}", "ctx") for i in range(start, start + n)]


def filled(n: int, seed: int = 5) -> tuple[MemoryIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    index = MemoryIndex(PARAMS)
    index.add_collection("c", DIM)
    vectors = clustered(rng, n)
    for start in range(0, n, 500):
        index.upsert("c", "s", "t", ids(start, min(500, n - start)), vectors[start:start + 500])
    assert index.wait_idle(60)
    return index, vectors


def recall_at_5(index: MemoryIndex, queries: np.ndarray) -> float:
    found = 0
    for q in queries:
        got = {i for i, _ in index.search("c", "s", "ctx", q, 5)}
        want = {i for i, _ in index.search_exact("c", "s", "ctx", q, 5)}
        found += len(got & want)
    return found / (5 * len(queries))


def test_graph_switches_on_past_the_size_and_agrees_with_the_exact_scan() -> None:
    index, vectors = filled(SIZE - 1)
    assert index.graphs("c") == {}  # below the size: the exact scan alone
    rng = np.random.default_rng(9)
    more = clustered(rng, 1500)
    index.upsert("c", "s", "t", ids(SIZE - 1, 1500), more)
    assert index.wait_idle(60)
    assert index.graphs("c") == {("s", "ctx"): SIZE - 1 + 1500}
    queries = near(np.random.default_rng(10), np.concatenate([vectors, more]), 300)
    assert recall_at_5(index, queries) >= 0.99
    # Similarities served are exact (re-scored), not the graph's fp16 distances.
    q = queries[0]
    got, want = index.search("c", "s", "ctx", q, 5), index.search_exact("c", "s", "ctx", q, 5)
    if [i for i, _ in got] == [i for i, _ in want]:
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)  # fp16: ~1e-3 off
    # Other contexts and scopes stay small, exact and apart.
    index.upsert("c", "s", "t", [("f" * 32, "other")], queries[:1])
    assert index.search("c", "s", "other", queries[0], 5)[0][0] == "f" * 32
    assert "f" * 32 not in {i for i, _ in index.search("c", "s", "ctx", queries[0], 50)}


def test_removed_and_replaced_rows_are_never_served_and_tombstones_rebuild_the_graph() -> None:
    index, vectors = filled(3_000)
    queries = near(np.random.default_rng(11), vectors, 100)
    removed: set[str] = set()
    for q in queries[:50]:  # remove every row a query would be served
        top = [i for i, _ in index.search("c", "s", "ctx", q, 5)]
        index.delete(top)
        removed.update(top)
        assert not removed & {i for i, _ in index.search("c", "s", "ctx", q, 5)}
    # A replaced vector: the id is served for its new vector, never found by the old one.
    moved = f"{7:032x}"
    index.upsert("c", "s", "t", [(moved, "ctx")], -vectors[7:8])
    assert index.search("c", "s", "ctx", -vectors[7], 1)[0][0] == moved
    assert index.search("c", "s", "ctx", vectors[7], 1)[0][0] != moved
    # Past the tombstone share the graph is rebuilt in the background, holding live rows only.
    index.delete([f"{i:032x}" for i in range(1000, 1700)])
    assert index.wait_idle(60)
    live = index.rows("c")
    assert index.graphs("c") == {("s", "ctx"): live}
    for q in queries:
        assert not removed & {i for i, _ in index.search("c", "s", "ctx", q, 10)}
    assert recall_at_5(index, queries) >= 0.99


def test_writes_during_a_build_are_replayed_into_the_graph() -> None:
    rng = np.random.default_rng(12)
    index = MemoryIndex(PARAMS)
    index.add_collection("c", DIM)
    vectors = clustered(rng, 6_000)
    index.upsert("c", "s", "t", ids(0, 4_000), vectors[:4_000])  # the build starts now
    stop = threading.Event()

    def writer() -> None:  # writes while the graph is being built
        for start in range(4_000, 6_000, 100):
            index.upsert("c", "s", "t", ids(start, 100), vectors[start:start + 100])
            index.delete([f"{i:032x}" for i in range(start - 4_000, start - 3_950)])
        stop.set()

    t = threading.Thread(target=writer)
    t.start()
    t.join(60)
    assert stop.is_set() and index.wait_idle(60)
    assert index.rows("c") == 6_000 - 1_000
    assert index.graphs("c")  # a graph serves
    deleted = {f"{i:032x}" for i in range(2_000) if i % 100 < 50}
    for q in vectors[4_000:6_000:40]:  # rows written during the build are found by the graph
        got = [i for i, _ in index.search("c", "s", "ctx", q, 5)]
        assert not deleted & set(got)
    assert recall_at_5(index, near(np.random.default_rng(13), vectors, 200)) >= 0.99


def _restored(root: Path, rows: int) -> MemoryIndex:
    loaded = index_snapshot.load("c", root, PARAMS)
    assert loaded is not None and loaded.rows == rows
    index_snapshot.replay(loaded.index, "c", root, loaded.journal)
    index_snapshot.attach_graphs(loaded.index, "c", root)
    restored = MemoryIndex(PARAMS)
    restored.adopt("c", loaded.index)
    return restored


def test_snapshot_round_trip(tmp_path: Path) -> None:
    index, index_vectors = filled(2_500)
    rng = np.random.default_rng(14)
    index.upsert("c", "s2", "t", ids(90_000, 10), clustered(rng, 10))  # a small block beside the big one
    assert index_snapshot.save(index, "c", tmp_path) == 2_510
    queries = near(np.random.default_rng(15), index_vectors, 50)

    restored = _restored(tmp_path, 2_510)
    assert restored.graphs("c") == index.graphs("c")  # the graph came from disk, no rebuild queued
    assert restored.wait_idle(0.1)
    for q in queries:
        assert restored.search("c", "s", "ctx", q, 5) == index.search("c", "s", "ctx", q, 5)
        assert restored.search("c", "s2", "ctx", q, 3) == index.search("c", "s2", "ctx", q, 3)
    assert sorted(restored.ids("c")) == sorted(index.ids("c"))


def test_snapshot_reads_small_blocks_and_refuses_a_short_vector_file(tmp_path: Path) -> None:
    index = MemoryIndex(PARAMS)
    index.add_collection("c", DIM)
    rng = np.random.default_rng(16)
    index.upsert("c", "a", "t", ids(0, 3), clustered(rng, 3))  # under the 16 rows a first chunk holds
    index.upsert("c", "b", "t", ids(10, 9_000), clustered(rng, 9_000))  # past one 8,192-row chunk
    assert index.wait_idle(60)
    assert index_snapshot.save(index, "c", tmp_path) == 9_003
    restored = _restored(tmp_path, 9_003)
    for q in clustered(np.random.default_rng(17), 20):
        assert restored.search("c", "a", "ctx", q, 5) == index.search("c", "a", "ctx", q, 5)
        assert restored.search("c", "b", "ctx", q, 5) == index.search("c", "b", "ctx", q, 5)
    restored.upsert("c", "a", "t", ids(20_000, 20), clustered(rng, 20))  # the small block grows past its chunk
    assert len(restored.search("c", "a", "ctx", clustered(rng, 1)[0], 30)) == 23

    # A vector file cut short (a full disk, a copy stopped half-way) with its manifest: read Milvus Lite.
    vectors = tmp_path / "c" / "vectors.f32"
    data = vectors.read_bytes()
    vectors.write_bytes(data[: len(data) - 4 * DIM])
    assert index_snapshot.load("c", tmp_path, PARAMS) is None


def test_search_breadth_grows_past_ef_rows() -> None:
    p = ApproxParams(ef_search=128, ef_rows=100_000)
    assert p.ef_for(5_000) == p.ef_for(100_000) == 128
    assert p.ef_for(400_000) == 256 and p.ef_for(1_000_000) == 405
    assert ApproxParams(ef_search=128, ef_rows=0).ef_for(10**7) == 128
    assert p.ef_for(10**12) == 4096


def test_settings_of_both_indexes() -> None:
    from modelcache_svc.config import Settings
    from modelcache_svc.errors import InvalidArgument

    s = Settings.load({}, {"MODELCACHE_APPROX_INDEX_MIN_ENTRIES": "5000", "MODELCACHE_MILVUS_INDEX_TYPE": "IVF_FLAT",
                           "MODELCACHE_MILVUS_INDEX_PARAMS": '{"nlist": 1024}',
                           "MODELCACHE_MILVUS_SEARCH_PARAMS": '{"nprobe": 32}'})
    assert s.approx_index_min_entries == 5000 and s.milvus_index_type == "IVF_FLAT"
    assert s.json_setting("milvus_index_params") == {"nlist": 1024}
    assert s.json_setting("milvus_search_params") == {"nprobe": 32}
    for bad in ({"milvus_index_params": "{nope"}, {"milvus_search_params": "[1]"}, {"milvus_index_type": "ANNOY"},
                {"approx_index_min_entries": -1}, {"approx_index_ef_rows": -1}):
        with pytest.raises(InvalidArgument):
            Settings.load(bad, {})
