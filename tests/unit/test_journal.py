"""The vector copy's journal and its fold (stores/journal.py, index_snapshot.py): records read back whole, a
torn last record dropped and cut off, damage stops the read; a start's replay and a fold from disk give the
same copy as the writes themselves; a graph older than its copy serves the rows it lacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelcache_svc.stores import index_snapshot, journal
from modelcache_svc.stores.approx_index import ApproxParams
from modelcache_svc.stores.memory_index import MemoryIndex

DIM = 8
S1, S2 = "a" * 32, "b" * 32  # scope hashes
T1, T2 = "c" * 32, "d" * 32  # tenant hashes


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def state(index: MemoryIndex) -> dict[str, tuple[str, str, tuple[float, ...]]]:
    """id -> (scope, ctx, vector rounded) of every row of collection c."""
    c = index._collections["c"]
    out = {}
    for (scope, ctx), block in c.blocks.items():
        for entry_id in block.ids:
            out[entry_id] = (scope, ctx, tuple(np.round(block.row(block.pos[entry_id]), 5)))
    return out


def test_records_round_trip_and_a_torn_last_record_is_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "j"
    j = journal.Journal(folder)
    vectors = unit_rows(np.random.default_rng(1), 2)
    ops = [journal.encode_upsert(S1, T1, [("e1", "x" * 64), ("e2", "y")], vectors),
           journal.encode_delete(["e1"], S1), journal.encode_delete(["e2", "e3"], None),
           journal.encode_clear(scope=S2), journal.encode_clear(tenant=T1)]
    for payload in ops:
        j.commit(j.append(payload))
    j.close()
    got = [journal.decode(p) for p in journal.read(folder, 1)]
    assert isinstance(got[0], journal.Upsert) and got[0].items == [("e1", "x" * 64), ("e2", "y")]
    np.testing.assert_array_equal(got[0].vectors, vectors)
    assert got[1:] == [journal.Delete(["e1"], S1), journal.Delete(["e2", "e3"], None), journal.Clear(scope=S2),
                       journal.Clear(tenant=T1)]

    # The process died inside a write: half a record at the end. It is dropped, and cut off the file so
    # that the next record appended after it is read too.
    path = journal.path_of(folder, 1)
    whole = path.stat().st_size
    with path.open("ab") as f:
        f.write(journal.frame(journal.encode_delete(["e9"], None))[:7])
    assert len(list(journal.read(folder, 1))) == len(ops)
    assert path.stat().st_size == whole
    j = journal.Journal(folder)
    j.append(journal.encode_delete(["e4"], None))
    j.close()
    assert journal.decode(list(journal.read(folder, 1))[-1]) == journal.Delete(["e4"], None)

    # A record whose bytes changed (a checksum that fails) ends the read there, even before the end.
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    path.write_bytes(bytes(data))
    assert list(journal.read(folder, 1)) == []


def _random_ops(rng: np.random.Generator, index: MemoryIndex, j: journal.Journal, steps: int,
                known: list[str]) -> None:
    """Writes as the store makes them: each journalled, then applied to the index."""
    for step in range(steps):
        # Clears at fixed steps (each followed by writes to the scope it emptied), the rest at random.
        kind = {20: "clear_scope", 45: "clear_tenant"}.get(step) or str(rng.choice(
            ["upsert", "delete", "delete_any"], p=[0.75, 0.15, 0.1]))
        scope, tenant = (S1, T1) if rng.random() < 0.6 else (S2, T2)
        if kind == "upsert":
            n = int(rng.integers(1, 6))
            items = [(known[int(rng.integers(len(known)))] if known and rng.random() < 0.3 else f"n{step}_{k}",
                      str(rng.choice(["x", "y"]))) for k in range(n)]
            vectors = unit_rows(rng, n)
            j.append(journal.encode_upsert(scope, tenant, items, vectors))
            index.upsert("c", scope, tenant, items, vectors)
            known.extend(i for i, _ in items)
        elif kind in ("delete", "delete_any") and known:
            ids = [known[int(rng.integers(len(known)))] for _ in range(3)]
            named = scope if kind == "delete" else None
            j.append(journal.encode_delete(ids, named))
            index.delete(ids, scope=named, collections=["c"])
        elif kind == "clear_scope":
            j.append(journal.encode_clear(scope=scope))
            index.clear(scope=scope, collections=["c"])
        elif kind == "clear_tenant":
            j.append(journal.encode_clear(tenant=tenant))
            index.clear(tenant=tenant, collections=["c"])


def test_replay_and_fold_give_the_copy_the_writes_made(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    params = ApproxParams(min_entries=0)
    index = MemoryIndex(params)
    index.add_collection("c", DIM)
    base = [f"base{i}" for i in range(300)]
    index.upsert("c", S1, T1, [(i, "x") for i in base[:200]], unit_rows(rng, 200))
    index.upsert("c", S2, T2, [(i, "y") for i in base[200:]], unit_rows(rng, 100))
    index_snapshot.save(index, "c", tmp_path, 1)
    j = journal.Journal(index_snapshot.journal_dir(tmp_path, "c"))
    known = list(base)
    _random_ops(rng, index, j, 150, known)
    below = j.rotate()  # a fold takes the generations below this one; later writes land in it
    _random_ops(rng, index, j, 60, known)
    j.close()
    want = state(index)
    assert 100 < len(want)

    # A start: the saved copy, then every journal generation from the one its manifest names.
    loaded = index_snapshot.load("c", tmp_path, params)
    assert loaded is not None and loaded.journal == 1
    index_snapshot.replay(loaded.index, "c", tmp_path, loaded.journal)
    assert state(loaded.index) == want

    # A fold writes the copy of generations < below from disk; a start after it replays only the rest.
    rows, folded = index_snapshot.fold("c", tmp_path, below)
    assert folded > 0
    after = index_snapshot.load("c", tmp_path, params)
    assert after is not None and after.journal == below
    index_snapshot.replay(after.index, "c", tmp_path, after.journal)
    assert state(after.index) == want


def test_a_graph_older_than_its_copy_serves_the_rows_it_lacks(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    params = ApproxParams(min_entries=400)
    index = MemoryIndex(params)
    index.add_collection("c", DIM)
    index.upsert("c", S1, T1, [(f"r{i}", "x") for i in range(600)], unit_rows(rng, 600))
    assert index.wait_idle(60) and index.graphs("c")
    index_snapshot.save(index, "c", tmp_path, 1)
    j = journal.Journal(index_snapshot.journal_dir(tmp_path, "c"))
    added = unit_rows(rng, 50)
    j.append(journal.encode_upsert(S1, T1, [(f"new{i}", "x") for i in range(50)], added))
    j.append(journal.encode_delete([f"r{i}" for i in range(10)], S1))
    j.close()

    loaded = index_snapshot.load("c", tmp_path, params)
    assert loaded is not None
    index_snapshot.replay(loaded.index, "c", tmp_path, loaded.journal)
    assert index_snapshot.attach_graphs(loaded.index, "c", tmp_path) == 1
    block = next(iter(loaded.index._collections["c"].blocks.values()))
    assert block.fresh is not None and block.fresh.n == 50  # not in the saved graph: searched beside it
    assert block.ann is not None and block.ann.dead == 10  # deleted since: tombstones
    restored = MemoryIndex(params)
    restored.adopt("c", loaded.index)
    for i in range(0, 50, 7):
        assert restored.search("c", S1, "x", added[i], 1)[0][0] == f"new{i}"
    assert restored.wait_idle(30)  # the graph caught up in the background
    assert block.fresh is None and len(block.ann.label_of) == 640
    for i in range(0, 50, 7):
        assert restored.search("c", S1, "x", added[i], 1)[0][0] == f"new{i}"
