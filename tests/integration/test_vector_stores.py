"""The VectorStore contract, run against Milvus Lite and the in-memory store alike: a search sees only
its scope and context, deletes keep to their scope (or spare a model), and what repair and export read.

One Milvus Lite file serves the module (starting one costs seconds); each test writes under an embedding
model of its own, and so into collections of its own."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelcache_svc.stores.base import VectorStore
from modelcache_svc.stores.memory import MemoryVectorStore
from modelcache_svc.stores.milvus_store import MilvusVectorStore

DIM = 8
CTX_A = hashlib.sha256(b"context a").hexdigest()
CTX_B = hashlib.sha256(b"context b").hexdigest()


@pytest.fixture(scope="module")
def milvus_lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusVectorStore]:
    store = MilvusVectorStore(str(tmp_path_factory.mktemp("milvus") / "vectors.db"), "contract")
    yield store
    store.close()


@pytest.fixture(params=["memory", "milvus_lite"])
def store(request: pytest.FixtureRequest) -> VectorStore:
    if request.param == "memory":
        return MemoryVectorStore()
    lite: VectorStore = request.getfixturevalue("milvus_lite")
    return lite


@pytest.fixture
def model() -> str:
    """An embedding model of this test's own: its collections hold nothing another test wrote."""
    return "org/model-" + uuid.uuid4().hex[:8]


def new_id() -> str:
    return uuid.uuid4().hex


def unit(*values: float, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[: len(values)] = values
    normalised: np.ndarray = v / np.linalg.norm(v)
    return normalised


def put(store: VectorStore, model: str, tenant: str, scope_model: str, rows: list[tuple[str, str, np.ndarray]]) -> None:
    store.ensure_collection(model, rows[0][2].shape[0])
    store.insert(model, tenant, scope_model, [(i, ctx) for i, ctx, _ in rows], np.stack([v for _, _, v in rows]))


def test_search_sees_only_its_scope_and_context_best_first(store: VectorStore, model: str) -> None:
    near, far, other_ctx, other_model, other_tenant = (new_id() for _ in range(5))
    put(store, model, "acme", "gpt", [(near, CTX_A, unit(1, 0.1)), (far, CTX_A, unit(1, 1)),
                                      (other_ctx, CTX_B, unit(1, 0))])
    put(store, model, "acme", "gpt-2", [(other_model, CTX_A, unit(1, 0))])
    put(store, model, "beta", "gpt", [(other_tenant, CTX_A, unit(1, 0))])
    put(store, "another-" + model, "acme", "gpt", [(new_id(), CTX_A, unit(1, 0))])

    hits = store.search(model, "acme", "gpt", CTX_A, unit(1, 0), 5)
    assert [h.id for h in hits] == [near, far]
    assert hits[0].similarity == pytest.approx(float(unit(1, 0.1) @ unit(1, 0)), abs=1e-4)
    assert hits[1].similarity == pytest.approx(float(np.sqrt(0.5)), abs=1e-4)
    assert [h.id for h in store.search(model, "acme", "gpt", CTX_A, unit(1, 0), 1)] == [near]
    exact = store.search(model, "acme", "gpt", CTX_B, unit(1, 0), 5)
    assert [h.id for h in exact] == [other_ctx] and exact[0].similarity <= 1.0
    assert store.search(model, "nobody", "gpt", CTX_A, unit(1, 0), 5) == []


def test_a_second_write_of_an_id_replaces_its_vector_and_context(store: VectorStore, model: str) -> None:
    entry = new_id()
    put(store, model, "acme", "gpt", [(entry, CTX_A, unit(1, 0))])
    put(store, model, "acme", "gpt", [(entry, CTX_B, unit(0, 1))])
    assert store.search(model, "acme", "gpt", CTX_A, unit(1, 0), 5) == []
    [hit] = store.search(model, "acme", "gpt", CTX_B, unit(0, 1), 5)
    assert hit.id == entry and hit.similarity == pytest.approx(1.0, abs=1e-4)
    assert store.ids_of_scope(model, "acme", "gpt") == [entry]


def test_delete_keeps_to_its_scope(store: VectorStore, model: str) -> None:
    mine, theirs = new_id(), new_id()
    put(store, model, "acme", "gpt", [(mine, CTX_A, unit(1, 0))])
    put(store, model, "beta", "gpt", [(theirs, CTX_A, unit(1, 0))])
    store.delete("acme", "gpt", [theirs, mine])
    assert store.search(model, "acme", "gpt", CTX_A, unit(1, 0), 5) == []
    assert [h.id for h in store.search(model, "beta", "gpt", CTX_A, unit(1, 0), 5)] == [theirs]
    store.delete("acme", "gpt", [])
    assert store.existing_ids(model, DIM, [mine, theirs]) == {theirs}


def test_delete_ids_spares_the_named_model_and_clear_by_scope_or_tenant(store: VectorStore, model: str) -> None:
    old_model = "old-" + model
    a, b, c, d = (new_id() for _ in range(4))
    put(store, model, "acme", "gpt", [(a, CTX_A, unit(1, 0)), (b, CTX_A, unit(0, 1))])
    put(store, model, "acme", "gpt-2", [(c, CTX_A, unit(1, 0))])
    put(store, old_model, "acme", "gpt", [(a, CTX_A, unit(1, 0)), (d, CTX_A, unit(1, 1))])
    store.delete_ids([a, d], except_model=model)  # reindex: the old model's vectors go, the new stay
    assert store.existing_ids(old_model, DIM, [a, d]) == set()
    assert store.existing_ids(model, DIM, [a, b, c]) == {a, b, c}
    store.clear("acme", "gpt")
    assert store.existing_ids(model, DIM, [a, b, c]) == {c}
    put(store, model, "beta", "gpt", [(d, CTX_A, unit(1, 0))])
    store.clear("acme", None)
    assert store.existing_ids(model, DIM, [a, b, c, d]) == {d}
    store.delete_ids([d])
    assert store.existing_ids(model, DIM, [d]) == set()


def test_what_repair_and_export_read(store: VectorStore, model: str) -> None:
    ids = sorted(new_id() for _ in range(5))
    put(store, model, "acme", "gpt", [(i, CTX_A, unit(1, k)) for k, i in enumerate(ids[:3])])
    put(store, model, "acme", "gpt-2", [(ids[3], CTX_B, unit(0, 1))])
    put(store, model, "beta", "gpt", [(ids[4], CTX_A, unit(1, 0))])
    wide = new_id()
    put(store, model, "acme", "gpt", [(wide, CTX_A, unit(1, 0, 0, 1, dim=2 * DIM))])  # the same model, wider

    assert sorted(store.ids_of_scope(model, "acme", "gpt")) == sorted([*ids[:3], wide])
    batches = list(store.iter_tenant_ids(model, DIM, "acme", batch=2))
    assert all(len(b) <= 2 for b in batches)
    assert sorted(i for b in batches for i in b) == sorted(ids[:4])
    assert store.existing_ids(model, DIM, [*ids, new_id()]) == set(ids)

    vectors = store.vectors_of(model, [ids[1], ids[4], wide, new_id()])
    assert set(vectors) == {ids[1], ids[4], wide}
    np.testing.assert_allclose(vectors[ids[1]], unit(1, 1), atol=1e-6)
    assert vectors[wide].shape == (2 * DIM,) and vectors[wide].dtype == np.float32
    assert store.vectors_of("nobody-" + model, ids) == {}
    assert store.vectors_of(model, []) == {}


def test_a_memory_store_is_its_own() -> None:
    first, second = MemoryVectorStore(), MemoryVectorStore()
    put(first, "m", "acme", "gpt", [(new_id(), CTX_A, unit(1, 0))])
    assert second.search("m", "acme", "gpt", CTX_A, unit(1, 0), 5) == []


def _load_state(store: MilvusVectorStore, name: str) -> str:
    return str(store._client.get_load_state(name)["state"])


def test_milvus_lite_keeps_its_collections_released_and_loads_one_only_to_read_it_back(tmp_path: Path) -> None:
    # Milvus Lite loads a collection by reading its whole FLAT index into memory (1.5 GB at a million rows);
    # the copy serves every read, so a collection is loaded only while it is read back.
    path, model = str(tmp_path / "vectors.db"), "org/released"
    store = MilvusVectorStore(path, "rel")
    a, b, c = new_id(), new_id(), new_id()
    put(store, model, "t1", "m", [(a, CTX_A, unit(1, 0)), (b, CTX_A, unit(0, 1))])
    name = store.collection_name(model, DIM)
    assert "NotLoad" in _load_state(store, name)  # written to, never loaded
    store.close()

    again = MilvusVectorStore(path, "rel")  # the saved copy: Milvus Lite opened beside it, not loaded
    try:
        put(again, model, "t1", "m", [(c, CTX_A, unit(1, 1))])
        again.delete("t1", "m", [b])
        assert "NotLoad" in _load_state(again, name)
        assert [h.id for h in again.search(model, "t1", "m", CTX_A, unit(1, 0), 5)] == [a, c]
    finally:
        again.close()

    shutil.rmtree(path + ".index")  # no saved copy: Milvus Lite is read back, and released after
    third = MilvusVectorStore(path, "rel")
    try:
        assert sorted(h.id for h in third.search(model, "t1", "m", CTX_A, unit(1, 0), 5)) == sorted([a, c])
        assert "NotLoad" in _load_state(third, name)
    finally:
        third.close()
