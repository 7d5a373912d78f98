"""The in-process vector index behind Milvus Lite: exact top-k against a brute-force model of it,
through random upserts, moves between contexts, deletes and clears, across chunk boundaries."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from modelcache_svc.stores import memory_index
from modelcache_svc.stores.memory_index import MemoryIndex


def unit(rng: np.random.Generator, dim: int = 8) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_search_matches_brute_force_through_random_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_index, "CHUNK", 32)  # many chunk boundaries with few rows
    rng, pick = np.random.default_rng(3), random.Random(3)
    index = MemoryIndex()
    index.add_collection("c", 8)
    truth: dict[str, tuple[str, str, np.ndarray]] = {}  # id -> (scope, ctx, vector)
    for _ in range(6000):
        op = pick.random()
        entry = f"{pick.randrange(400):032x}"
        if op < 0.55:
            scope, ctx, v = pick.choice(["s1", "s2"]), pick.choice(["a", "b"]), unit(rng)
            index.upsert("c", scope, "t" + scope, [(entry, ctx)], v[None])
            truth[entry] = (scope, ctx, v)
        elif op < 0.9:
            index.delete([entry])
            truth.pop(entry, None)
        else:
            q = unit(rng)
            for scope in ("s1", "s2"):
                for ctx in ("a", "b"):
                    got = index.search("c", scope, ctx, q, 5)
                    want = sorted(((float(v @ q), i) for i, (s, c, v) in truth.items() if (s, c) == (scope, ctx)),
                                  reverse=True)[:5]
                    assert [i for i, _ in got] == [i for _, i in want]
                    assert [s for _, s in got] == pytest.approx([s for s, _ in want], abs=1e-5)
    assert sorted(index.ids("c")) == sorted(truth)
    assert index.existing("c", [*truth, "f" * 32]) == set(truth)
    assert index.rows("c") == len(truth)


def test_scope_delete_clear_and_collections_are_separate() -> None:
    rng = np.random.default_rng(1)
    index = MemoryIndex()
    index.add_collection("c1", 8)
    index.add_collection("c2", 8)
    v = np.stack([unit(rng) for _ in range(4)])
    index.upsert("c1", "s1", "t1", [("a" * 32, "x"), ("b" * 32, "x")], v[:2])
    index.upsert("c1", "s2", "t1", [("c" * 32, "x")], v[2:3])
    index.upsert("c2", "s1", "t1", [("a" * 32, "x")], v[3:4])

    index.delete(["a" * 32], scope="s2")  # not of that scope: stays
    assert index.existing("c1", ["a" * 32]) == {"a" * 32}
    index.delete(["a" * 32], collections=["c1"])
    assert index.existing("c1", ["a" * 32]) == set() and index.existing("c2", ["a" * 32]) == {"a" * 32}

    index.clear(scope="s1", collections=["c1"])
    assert index.ids("c1") == ["c" * 32] and index.ids("c2") == ["a" * 32]
    index.clear(tenant="t1")
    assert index.ids("c1") == [] and index.ids("c2") == []
    assert index.search("c1", "s1", "x", v[0], 3) == [] and index.search("nope", "s1", "x", v[0], 3) == []


def test_upsert_moves_an_id_to_its_new_context_and_normalises() -> None:
    index = MemoryIndex()
    index.add_collection("c", 2)
    index.upsert("c", "s", "t", [("a" * 32, "x")], np.array([[3.0, 4.0]], dtype=np.float32))
    index.upsert("c", "s", "t", [("a" * 32, "y")], np.array([[0.0, 2.0]], dtype=np.float32))
    assert index.search("c", "s", "x", np.array([0.0, 1.0], dtype=np.float32), 5) == []
    [(entry, similarity)] = index.search("c", "s", "y", np.array([0.0, 1.0], dtype=np.float32), 5)
    assert entry == "a" * 32 and similarity == pytest.approx(1.0)


def test_a_graph_catches_up_only_once_writes_pause_unless_its_fresh_rows_reach_the_block_size() -> None:
    from modelcache_svc.stores.approx_index import ApproxParams

    rng = np.random.default_rng(5)
    index = MemoryIndex(ApproxParams(min_entries=200))
    index.add_collection("c", 8)
    index.upsert("c", "s", "t", [(f"{i:032x}", "x") for i in range(300)], np.stack([unit(rng) for _ in range(300)]))
    assert index.wait_idle(60) and index.graphs("c")
    block = next(iter(index._collections["c"].blocks.values()))
    assert block.ann is not None and block.fresh is None

    written: list[tuple[str, np.ndarray]] = []
    for i in range(40):  # a stream of writes, one every 20 ms: the catch-up waits, the rows are served
        entry, v = f"{1000 + i:032x}", unit(rng)
        index.upsert("c", "s", "t", [(entry, "x")], v[None])
        written.append((entry, v))
        assert index.search("c", "s", "x", v, 1)[0][0] == entry
        time.sleep(0.02)
    assert block.fresh is not None and block.fresh.n == 40  # none moved into the graph while writes came
    assert index.wait_idle(30)  # writes paused: caught up
    assert block.fresh is None and len(block.ann.label_of) == 340
    assert all(index.search("c", "s", "x", v, 1)[0][0] == entry for entry, v in written)

    # Past the block size, a stream of writes no longer holds the catch-up back.
    index.upsert("c", "s", "t", [(f"{5000 + i:032x}", "x") for i in range(250)], np.stack([unit(rng) for _ in range(250)]))
    deadline = time.monotonic() + 30
    while block.fresh is not None and block.fresh.n >= 200 and time.monotonic() < deadline:
        index.upsert("c", "s", "t", [(f"{9000:032x}", "x")], unit(rng)[None])  # still writing
        time.sleep(0.01)
    assert block.fresh is None or block.fresh.n < 200
    assert index.wait_idle(30) and block.fresh is None
