"""A large scope through a real server (embedded: Milvus Lite + SQLite, the real model): past the
configured size an HNSW graph serves the scope, removals are never served, a restart reads the saved
copy and its graph back, and a start without a saved copy serves exactly while the graph is built.

The scope is bulk-loaded as ``bench-scale`` loads it (tools/bulk_load.py: real questions with their
real vectors, then synthetic ones), with the graph's size set to 2,000 rows."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelcache_svc.config import Settings
from modelcache_svc.embedding import Embedder
from modelcache_svc.stores import open_scalar_store
from modelcache_svc.stores.approx_index import ApproxParams
from modelcache_svc.stores.milvus_store import MilvusVectorStore
from modelcache_svc.tools import bulk_load
from tests.servers import ThreadServer

SIZE = 2_000
ENTRIES = 2_600
MODEL = "big-model"


@pytest.fixture
def loaded(tmp_path: Path, embedder: Embedder) -> Iterator[tuple[Settings, bulk_load.RealSet, list[str]]]:
    settings = Settings(data_dir=tmp_path / "data", grpc_port=0, http_port=0, resp_port=0, namespace="scale",
                        approx_index_min_entries=SIZE, repair_on_start=False)
    settings.data_dir.mkdir(parents=True)
    real = bulk_load.real_set(400, None, embedder, tmp_path / "cache")  # generated questions: no shared/eval needed
    scalar = open_scalar_store(settings.resolved_scalar_uri, settings.namespace)
    scalar.migrate()
    vector = MilvusVectorStore(settings.resolved_vector_uri, settings.namespace, approx=ApproxParams(min_entries=SIZE))
    try:
        ids = bulk_load.load(scalar, vector, real, ENTRIES, "default", MODEL)["ids"]
        assert vector._index is not None and vector._index.wait_idle(120)
    finally:
        vector.close()  # a clean stop: the copy and its graph are saved
        scalar.close()
    yield settings, real, ids


def _graphs(server: ThreadServer) -> dict[tuple[str, str], int]:
    vector = server.core.vector
    return vector._index.graphs(vector.collection_name(server.core.embedders.default.model_id, 384))


def test_graph_serves_past_the_size_removals_never_served_and_restart_reads_it_back(
        loaded: tuple[Settings, bulk_load.RealSet, list[str]], embedder: Embedder) -> None:
    settings, real, ids = loaded
    asked = [(q, i) for q, i in real.semantic if i < len(real.questions)][:40]
    server = ThreadServer(settings, embedder)
    try:
        assert list(_graphs(server).values()) == [ENTRIES]  # read back with the copy: no rebuild at start
        with server.client() as c:
            served = {q: c.query("default", MODEL, q) for q, _ in asked}
            right = sum(1 for q, i in asked if served[q].hit and served[q].id == ids[i])
            assert right >= 0.8 * len(asked)
            gone = [served[q].id for q, _ in asked if served[q].hit][:10]
            assert c.remove("default", MODEL, gone) == len(gone)
            for q, _ in asked:
                assert c.query("default", MODEL, q).id not in gone
            new_id = c.insert("default", MODEL, "Which graph serves a scope of more than two thousand rows?", "HNSW")
        snapshot = Path(str(settings.resolved_vector_uri) + ".index")
        assert sum(f.stat().st_size for f in snapshot.glob("*.journal/*.log")) > 0  # the writes are journalled
    finally:
        server.stop()
    # The clean stop saved the copy with them and emptied the journal.
    assert list(snapshot.glob("*/manifest.json"))
    assert sum(f.stat().st_size for f in snapshot.glob("*.journal/*.log")) == 0

    server = ThreadServer(settings, embedder)
    try:
        assert list(_graphs(server).values())  # the graph again, read back
        with server.client() as c:
            for q, _ in asked:
                assert c.query("default", MODEL, q).id not in gone
            hit = c.query("default", MODEL, "Which graph serves scopes of over two thousand rows?")
            assert hit.hit and hit.id == new_id
    finally:
        server.stop()


def test_a_start_without_a_current_copy_serves_exactly_while_the_graph_builds(
        loaded: tuple[Settings, bulk_load.RealSet, list[str]], embedder: Embedder) -> None:
    settings, real, ids = loaded
    # No saved copy (a data dir of an older version, or one whose copy was lost): Milvus Lite is read, the
    # graph built in the background.
    shutil.rmtree(str(settings.resolved_vector_uri) + ".index")
    server = ThreadServer(settings, embedder)
    try:
        vector = server.core.vector
        collection = vector.collection_name(server.core.embedders.default.model_id, 384)
        asked = [(q, i) for q, i in real.semantic if i < len(real.questions)][:20]
        with server.client() as c:
            before = [c.query("default", MODEL, q).id for q, _ in asked]  # exact scan or graph: same answers
            assert vector._index.wait_idle(120)
            assert list(vector._index.graphs(collection).values()) == [ENTRIES]
            after = [c.query("default", MODEL, q).id for q, _ in asked]
        assert np.mean([a == b for a, b in zip(before, after)]) >= 0.95
        assert sum(1 for (q, i), got in zip(asked, after) if got == ids[i]) >= 0.8 * len(asked)
    finally:
        server.stop()
