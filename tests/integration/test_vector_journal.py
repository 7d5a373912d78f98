"""The vector journal and the read-back at start, through real servers (Milvus Lite, SQLite, the real model):
kill -9 during a stream of Inserts loses no acknowledged entry and the restart reads the saved copy and
the journal (a torn last record dropped), never Milvus Lite; while the read-back runs, health says
NOT_SERVING and no call is answered from a half-read copy, on gRPC, RESP and the HTTP port alike."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelcache_svc import errors
from modelcache_svc.config import Settings
from modelcache_svc.embedding import Embedder
from modelcache_svc.stores import journal
from modelcache_svc.stores.lite_copy import LiteCopy
from tests.servers import ProcessServer, ThreadServer, free_port, kill_during_inserts

MODEL = "m1"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_kill_9_during_inserts_then_the_restart_reads_the_journal_and_has_every_acknowledged_entry(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--data-dir", str(data), "--http-port", "0", "--resp-port", "0"]
    # The repair pass would mend what the journal must hold itself; English questions only: no CJK or
    # multilingual model to load.
    env = {"MODELCACHE_REPAIR_ON_START": "0", "MODELCACHE_EMBEDDING_MODEL_CJK": "off",
           "MODELCACHE_EMBEDDING_MODEL_MULTILINGUAL": "off", "MODELCACHE_VERIFIER_CJK": "off",
           "MODELCACHE_VERIFIER_MULTILINGUAL": "off"}
    server = ProcessServer(args, env)
    acknowledged = kill_during_inserts(server, MODEL, batch_size=8, at_least=48)
    assert len(acknowledged) >= 48

    # The process might have died inside a journal write: half a record at the end, dropped at the start.
    [log_file] = sorted((data / "milvus.db.index").glob("*.journal/*.log"))[-1:]
    assert log_file.stat().st_size > 0
    with log_file.open("ab") as f:
        f.write(journal.frame(journal.encode_delete(["0" * 32], None))[:11])

    restarted = ProcessServer(args, env)
    try:
        assert "its saved copy (0 rows) and journal" in restarted.output  # not a walk over Milvus Lite
        assert "a torn last record" in restarted.output
        assert "vector copy of" in restarted.output and "replaying the journal" in restarted.output  # progress
        with restarted.client() as c:
            for asked, entry_id in acknowledged.items():
                hit = c.query("default", MODEL, user(asked))
                assert (hit.match, hit.id) == ("exact", entry_id)
                # Not the same chat (the exact key differs): only the vector copy can find it.
                near = c.query("default", MODEL, user(asked.replace("what is", "what's")))
                assert (near.match, near.id) == ("semantic", entry_id), asked
    finally:
        restarted.terminate()


@pytest.fixture
def slow_read_back(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """A fault: the read-back of the vector copy at start waits until the test lets it go."""
    release = threading.Event()
    original = LiteCopy.load

    def held(self: LiteCopy, *args: Any, **kwargs: Any) -> str:
        assert release.wait(60), "the test never let the read-back go"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LiteCopy, "load", held)
    yield release
    release.set()


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(reply.status)


def _http(port: int, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _resp(port: int, *words: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"*{len(words)}\r\n".encode() + b"".join(f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words))
        return s.recv(4096)


def test_while_the_copy_is_read_back_health_says_not_serving_and_no_call_is_answered(
        tmp_path: Path, embedder: Embedder, slow_read_back: threading.Event) -> None:
    settings = Settings(data_dir=tmp_path / "data", grpc_port=0, http_port=free_port(), resp_port=free_port(),
                        namespace="loading", repair_on_start=False)
    first = ThreadServer(settings, embedder, wait=False)  # a first start: the read-back of an empty copy waits too
    slow_read_back.set()
    first.starting.result(60)
    with first.client() as c:
        entry_id = c.insert("default", MODEL, user("How long does the read-back of the copy take?"), "seconds")
    first.stop()

    slow_read_back.clear()
    server = ThreadServer(settings, embedder, wait=False)
    try:
        deadline = time.monotonic() + 30
        while not server.service.resp_port and time.monotonic() < deadline:  # every listener is up
            time.sleep(0.02)
        assert _health(server.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        with server.client(retries=0) as c:
            with pytest.raises(errors.Unavailable, match="loading: the vector copy is being read back"):
                c.query("default", MODEL, user("How long does the read-back of the copy take?"))
            with pytest.raises(errors.Unavailable, match="loading"):
                c.insert("default", MODEL, user("Written while it loads?"), "no")
        assert _resp(settings.resp_port, "MC.GET", "default", MODEL,
                     "How long does the read-back of the copy take?").startswith(b"-TRYAGAIN loading")
        status, ready = _http(settings.http_port, "/readyz")
        assert status == 503 and ready["checks"]["loaded"] is False
        status, reply = _http(settings.http_port, "/modelcache", {
            "type": "query", "scope": {"model": MODEL},
            "query": [{"role": "user", "content": "How long does the read-back of the copy take?"}]})
        assert reply["errorCode"] == 202 and not reply.get("cacheHit") and "loading" in reply["errorDesc"]

        slow_read_back.set()
        server.starting.result(60)
        assert _health(server.target) == health_pb2.HealthCheckResponse.SERVING
        assert _http(settings.http_port, "/readyz")[0] == 200
        with server.client() as c:
            hit = c.query("default", MODEL, user("How long does the read-back of the copy take?"))
            assert hit.hit and hit.id == entry_id
            near = c.query("default", MODEL, user("How long does the read-back of the copy take"))
            assert near.hit and near.id == entry_id
    finally:
        slow_read_back.set()
        server.stop()


def test_folds_keep_the_journal_bounded_and_a_start_after_them_reads_every_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Milvus Lite through the store, as the service writes it: folds run while writes go on; then a crash
    (the clean stop's save skipped: a fault) and a start that reads the folded copy plus the journal's rest."""
    import numpy as np
    from milvus_lite.server_manager import server_manager_instance

    from modelcache_svc.stores.milvus_store import MilvusVectorStore

    path = str(tmp_path / "vectors.db")
    ctx = "c" * 64
    rng = np.random.default_rng(5)
    store = MilvusVectorStore(path, "fold", journal_fold_bytes=16_384)
    store.ensure_collection("m", 16)
    written: dict[str, np.ndarray] = {}
    for batch in range(40):
        ids = [f"{batch:04x}{i:028x}" for i in range(8)]
        vectors = rng.standard_normal((8, 16)).astype(np.float32)
        store.insert("m", "acme", "gpt", [(i, ctx) for i in ids], vectors)
        written.update(zip(ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)))
        if batch % 10 == 9:
            gone = ids[:2]
            store.delete("acme", "gpt", gone)
            for i in gone:
                written.pop(i)
    copy = store._copy
    assert copy is not None
    copy.wait_fold()
    assert copy.folds >= 2
    name = store.collection_name("m", 16)
    pending = sum(f.stat().st_size for f in (Path(path + ".index") / f"{name}.journal").glob("*.log"))
    assert 0 < pending <= 2 * 16_384  # bounded: most of the writes are in the folded copy now

    monkeypatch.setattr(LiteCopy, "save", lambda self, milvus_rows: None)  # the crash: nothing saved at stop
    store.close()
    server_manager_instance.release_server(path)
    monkeypatch.undo()

    again = MilvusVectorStore(path, "fold")
    try:
        again.ensure_collection("m", 16)
        assert again.existing_ids("m", 16, list(written)) == set(written)
        got = again.vectors_of("m", list(written))
        for entry_id, vector in written.items():
            np.testing.assert_allclose(got[entry_id], vector, atol=1e-6)
        hits = again.search("m", "acme", "gpt", ctx, next(iter(written.values())), 1)
        assert hits[0].id == next(iter(written))
    finally:
        again.close()
