"""Two `modelcache-svc serve` processes over one MariaDB database and one
shared vector store, as replicas behind a load balancer run.

Each test runs on two vector servers:
- ``lite-server``: Milvus Lite in server mode (``milvus-lite server``), the
  same package the embedded default uses;
- ``milvus-standalone``: a real Milvus standalone from the PyPI package
  ``milvus`` (``milvus-server --data DIR``; C++ server, embedded etcd). Skipped
  with the reason when the package is missing or the server cannot start here
  (its embedded etcd takes the fixed peer port 2380: one per host).

What they show: replicas share nothing but the two stores. An insert through A
is an exact hit through B at once (the scalar store decides) and a semantic
hit once the vector is searchable (Bounded consistency on a Milvus server:
polled for up to VECTOR_VISIBLE_S); Clear and Remove through one are seen by
the other on its next call; a tenant update and a revoked key reach the other
replica within the documented bound, ``CACHE_TTL_S``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import threading
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from modelcache_svc import errors
from modelcache_svc.cache.tenants import CACHE_TTL_S
from modelcache_svc.client import CacheClient
from tests.servers import ProcessServer, free_port

T = TypeVar("T")
MODEL = "gpt-4o-2024.08"
Q = "How do I reverse a list in Python?"
PARAPHRASE = "How can I reverse a Python list?"
ANSWER = "Use my_list.reverse() or my_list[::-1]."
# Milvus's Bounded consistency: a new vector is searchable within ~0.2-0.6 s
# (measured), at most `common.gracefulTime` (5 s by default).
VECTOR_VISIBLE_S = 6.0
# The documented staleness bound of tenant configs and keys, plus scheduling slack.
STALE_BOUND_S = CACHE_TTL_S + 1.0
BIN = Path(sys.executable).parent

# The test's own clients send no keepalive pings: Milvus Lite's server answers them with GOAWAY "too_many_pings"
# and then refused a new connection of this process ("Too many pings", seen once in CI on a slow host).
NO_PINGS = {"grpc.keepalive_time_ms": 2**31 - 1, "grpc.keepalive_permit_without_calls": 0}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def poll(fn: Callable[[], T], ok: Callable[[T], bool], timeout: float, interval: float = 0.05) -> tuple[T, float]:
    """Call fn until ok(result) or timeout; the last result and the seconds it took."""
    start = time.monotonic()
    while True:
        result = fn()
        elapsed = time.monotonic() - start
        if ok(result) or elapsed > timeout:
            return result, elapsed
        time.sleep(interval)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_for_milvus(uri: str, proc: subprocess.Popen[bytes], timeout: float) -> str | None:
    """None when the server answers list_collections; else why not."""
    from pymilvus import MilvusClient

    deadline = time.monotonic() + timeout
    last = "no answer"
    port = int(uri.rsplit(":", 1)[1])
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            client = MilvusClient(uri=uri, timeout=5, grpc_options=NO_PINGS)
            try:
                client.list_collections()
                return None
            finally:
                client.close()
        except Exception as exc:  # not up yet
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    return f"not ready after {timeout:.0f}s ({last})"


def _stop(proc: subprocess.Popen[bytes], group: bool = False, grace: float = 10.0) -> None:
    """Terminate; kill after `grace` seconds. group: the whole process group
    (milvus-server is a Python wrapper whose C++ child outlives it, and whose
    graceful stop can hang for a minute)."""
    if proc.poll() is not None and not group:
        return

    def send(sig: int) -> None:
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    if group or proc.poll() is None:
        send(signal.SIGKILL)
        proc.wait(10)


@contextlib.contextmanager
def lite_server(data_dir: Path) -> Iterator[str]:
    exe = BIN / "milvus-lite"
    if not exe.exists():
        pytest.skip(f"{exe} is missing: the milvus-lite package (a dependency) is not installed")
    port = free_port()
    log = (data_dir.parent / "milvus-lite.log").open("wb")
    proc = subprocess.Popen(
        [str(exe), "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        problem = _wait_for_milvus(uri, proc, 60)
        if problem:
            pytest.fail(f"milvus-lite server {problem}:\n{_tail(data_dir.parent / 'milvus-lite.log')}")
        yield uri
    finally:
        _stop(proc)
        log.close()


@contextlib.contextmanager
def milvus_standalone(data_dir: Path) -> Iterator[str]:
    """The C++ Milvus standalone bundled by the PyPI package `milvus` (2.3.x)."""
    exe = BIN / "milvus-server"
    if not exe.exists():
        pytest.skip(
            "the PyPI package `milvus` (a real Milvus standalone server) is not installed: "
            f"`{BIN / 'pip'} install milvus==2.3.5` (Linux x86_64 / macOS wheels)"
        )
    with one_per_host("milvus-standalone"):  # another test worker's standalone is waited for, not skipped
        deadline = time.monotonic() + 60  # the last holder's etcd lets its port go
        while not _port_free(2380) and time.monotonic() < deadline:
            time.sleep(1)
        if not _port_free(2380):
            pytest.skip("port 2380 is taken: another Milvus standalone runs on this host (its embedded etcd's "
                        "fixed peer port)")
        yield from _run_standalone(exe, data_dir)


@contextlib.contextmanager
def one_per_host(name: str) -> Iterator[None]:
    """Held while a server that takes a fixed port runs: a second holder (another pytest-xdist worker) waits."""
    with open(Path(tempfile.gettempdir()) / f"modelcache-tests-{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_standalone(exe: Path, data_dir: Path) -> Iterator[str]:
    port = free_port()
    log_path = data_dir.parent / "milvus-server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(exe), "--data", str(data_dir), "--proxy-port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        problem = _wait_for_milvus(uri, proc, 120)
        if problem:
            pytest.skip(f"the Milvus standalone server cannot run here: {problem}\n{_tail(log_path)}")
        yield uri
    finally:
        _stop(proc, group=True)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)  # 250 MB of unpacked server binaries each run


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@pytest.fixture(scope="module", params=["lite-server", "milvus-standalone"])
def vector_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp(request.param)
    start = lite_server if request.param == "lite-server" else milvus_standalone
    with start(root / "data") as uri:
        yield uri


class Replicas:
    def __init__(self, a: ProcessServer, b: ProcessServer, admin_key: str) -> None:
        self.a, self.b, self.admin_key = a, b, admin_key

    def admin(self, server: ProcessServer) -> CacheClient:
        return server.client(api_key=self.admin_key)


@pytest.fixture(scope="module")
def replicas(vector_server: str, mysql_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Replicas A and B: one database, one vector server, one namespace, auth on."""
    namespace = "r" + uuid.uuid4().hex[:10]
    admin_key = "adm_" + uuid.uuid4().hex
    root = tmp_path_factory.mktemp("replicas")
    servers: list[ProcessServer] = []

    def start(name: str) -> ProcessServer:
        args = [
            "--data-dir", str(root / name),
            "--http-port", "0",
            "--resp-port", "0",
            "--scalar-uri", mysql_uri,
            "--vector-uri", vector_server,
            "--namespace", namespace,
            "--admin-key", admin_key,
        ]  # fmt: skip
        server = ProcessServer(args)
        servers.append(server)
        return server

    try:
        a = start("a")
        b = start("b")
        yield Replicas(a, b, admin_key)
    finally:
        for server in servers:
            try:
                server.terminate()
            except Exception:
                server.kill()


def _tenant(r: Replicas, **config: Any) -> str:
    name = "t" + uuid.uuid4().hex[:10]
    with r.admin(r.a) as c:
        c.create_tenant(name, **config)
    return name


def test_insert_through_a_hits_through_b(replicas: Replicas) -> None:
    tenant = _tenant(replicas)
    with replicas.admin(replicas.a) as a, replicas.admin(replicas.b) as b:
        assert b.query(tenant, MODEL, user(Q)).match == "miss"
        entry_id = a.insert(tenant, MODEL, user(Q), ANSWER)

        # The scalar store decides an exact hit: no waiting.
        exact = b.query(tenant, MODEL, user(Q))
        assert (exact.match, exact.answer, exact.id) == ("exact", ANSWER, entry_id)

        # The vector becomes searchable on the shared vector store within the consistency bound.
        semantic, waited = poll(lambda: b.query(tenant, MODEL, user(PARAPHRASE)), lambda h: h.hit, VECTOR_VISIBLE_S)
        assert (semantic.match, semantic.answer, semantic.id) == ("semantic", ANSWER, entry_id), f"after {waited:.2f}s"
        print(f"semantic hit through B {waited:.3f}s after the insert through A")

        # Inserting the same chat again through B replaces the answer on both, and keeps the id.
        assert b.insert(tenant, MODEL, user(Q), "new answer") == entry_id
        assert a.query(tenant, MODEL, user(Q)).answer == "new answer"
        again, _ = poll(
            lambda: a.query(tenant, MODEL, user(PARAPHRASE)), lambda h: h.answer == "new answer", VECTOR_VISIBLE_S
        )
        assert (again.match, again.id) == ("semantic", entry_id)


def test_clear_through_b_is_seen_by_a_at_once(replicas: Replicas) -> None:
    tenant = _tenant(replicas)
    other = "other-model.v2"
    with replicas.admin(replicas.a) as a, replicas.admin(replicas.b) as b:
        a.insert(tenant, MODEL, user(Q), ANSWER)
        a.insert(tenant, other, user(Q), ANSWER)
        poll(lambda: a.query(tenant, MODEL, user(PARAPHRASE)), lambda h: h.hit, VECTOR_VISIBLE_S)
        assert a.query(tenant, MODEL, user(PARAPHRASE)).match == "semantic"

        assert b.clear(tenant, MODEL) == 1
        # No waiting: the rows are gone from the shared scalar store, and a vector
        # without a live row is never served, whatever the vector store still shows.
        assert a.query(tenant, MODEL, user(Q)).match == "miss"
        assert a.query(tenant, MODEL, user(PARAPHRASE)).match == "miss"
        assert a.query(tenant, other, user(Q)).match == "exact"

        assert b.clear(tenant) == 1  # every model of the tenant
        assert a.query(tenant, other, user(Q)).match == "miss"

        # The cleared scope takes new entries again, through either replica.
        entry_id = a.insert(tenant, MODEL, user(Q), "after clear")
        hit, _ = poll(lambda: b.query(tenant, MODEL, user(PARAPHRASE)), lambda h: h.hit, VECTOR_VISIBLE_S)
        assert (hit.match, hit.id, hit.answer) == ("semantic", entry_id, "after clear")


def test_clear_removes_the_vectors_from_the_shared_store(replicas: Replicas, vector_server: str) -> None:
    """Clear through one replica leaves no vector of the scope behind in the vector store."""
    from pymilvus import MilvusClient

    from modelcache_svc.stores.milvus_store import scope_hash

    tenant = _tenant(replicas)
    with replicas.admin(replicas.a) as a, replicas.admin(replicas.b) as b:
        a.insert(tenant, MODEL, user(Q), ANSWER)
        a.insert(tenant, MODEL, user("What is the boiling point of water?"), "100 C at sea level.")
        b.clear(tenant, MODEL)
    client = MilvusClient(uri=vector_server, timeout=10, grpc_options=NO_PINGS)
    try:
        scope = scope_hash(tenant, MODEL)
        names = [n for n in client.list_collections() if "_mc_" in n]
        assert names

        def left() -> int:
            return sum(
                len(client.query(n, filter=f'scope == "{scope}"', output_fields=["id"], consistency_level="Strong"))
                for n in names
            )

        count, _ = poll(left, lambda n: n == 0, 5.0, interval=0.25)
        assert count == 0
    finally:
        client.close()


def test_remove_through_a_is_seen_by_b_at_once(replicas: Replicas) -> None:
    tenant = _tenant(replicas)
    with replicas.admin(replicas.a) as a, replicas.admin(replicas.b) as b:
        keep = a.insert(tenant, MODEL, user("What is the capital of Vietnam?"), "Hanoi.")
        gone = a.insert(tenant, MODEL, user(Q), ANSWER)
        poll(lambda: b.query(tenant, MODEL, user(PARAPHRASE)), lambda h: h.hit, VECTOR_VISIBLE_S)
        assert a.remove(tenant, MODEL, [gone]) == 1
        assert b.query(tenant, MODEL, user(Q)).match == "miss"
        assert b.query(tenant, MODEL, user(PARAPHRASE)).match == "miss"
        assert b.query(tenant, MODEL, user("What is the capital of Vietnam?")).id == keep


def test_tenant_update_reaches_the_other_replica_within_the_bound(replicas: Replicas) -> None:
    tenant = _tenant(replicas)
    with replicas.admin(replicas.a) as a, replicas.admin(replicas.b) as b:
        a.insert(tenant, MODEL, user(Q), ANSWER)
        poll(lambda: a.query(tenant, MODEL, user(PARAPHRASE)), lambda h: h.hit, VECTOR_VISIBLE_S)
        assert a.query(tenant, MODEL, user(PARAPHRASE)).match == "semantic"  # A now holds the config in its cache

        b.update_tenant(tenant, similarity_threshold=0.999)
        assert b.query(tenant, MODEL, user(PARAPHRASE)).match == "miss"  # the replica that changed it: at once
        hit, waited = poll(lambda: a.query(tenant, MODEL, user(PARAPHRASE)), lambda h: not h.hit, STALE_BOUND_S + 2)
        assert not hit.hit
        assert waited <= STALE_BOUND_S, f"A kept the old threshold for {waited:.2f}s (bound {CACHE_TTL_S}s)"

        # A tenant deleted through B is unknown to A within the bound.
        b.delete_tenant(tenant)

        def lookup() -> str:
            try:
                return a.query(tenant, MODEL, user(Q)).match
            except errors.NotFound:
                return "not found"

        seen, waited = poll(lookup, lambda m: m == "not found", STALE_BOUND_S + 2)
        assert seen == "not found"
        assert waited <= STALE_BOUND_S, f"A served a deleted tenant for {waited:.2f}s (bound {CACHE_TTL_S}s)"


def test_revoked_key_stops_on_both_replicas_within_the_bound(replicas: Replicas) -> None:
    tenant = _tenant(replicas)
    with replicas.admin(replicas.a) as admin_a:
        key_id, key = admin_a.create_api_key(tenant)
    with replicas.a.client(api_key=key) as a, replicas.b.client(api_key=key) as b:
        # Both replicas accept the key, and so hold it in their caches.
        a.insert(tenant, MODEL, user(Q), ANSWER)
        assert a.query(tenant, MODEL, user(Q)).match == "exact"
        assert b.query(tenant, MODEL, user(Q)).match == "exact"
        with pytest.raises(errors.PermissionDenied):
            b.query("default", MODEL, user(Q))  # a tenant key reaches only its own tenant

        with replicas.admin(replicas.b) as admin_b:
            admin_b.revoke_api_key(key_id)
        with pytest.raises(errors.Unauthenticated):
            b.query(tenant, MODEL, user(Q))  # the replica that revoked it: at once

        def outcome() -> str:
            try:
                return a.query(tenant, MODEL, user(Q)).match
            except errors.Unauthenticated:
                return "unauthenticated"

        seen, waited = poll(outcome, lambda m: m == "unauthenticated", STALE_BOUND_S + 2)
        assert seen == "unauthenticated"
        assert waited <= STALE_BOUND_S, f"A accepted a revoked key for {waited:.2f}s (bound {CACHE_TTL_S}s)"
        print(f"revoked key refused by the other replica after {waited:.3f}s")
        for c in (a, b):
            with pytest.raises(errors.Unauthenticated):
                c.insert(tenant, MODEL, user("another question"), "x")
    # The admin key still works everywhere.
    with replicas.admin(replicas.a) as admin_a:
        assert admin_a.query(tenant, MODEL, user(Q)).match == "exact"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # tests/servers.py readiness probe
def test_replicas_started_together_share_one_collection(
    vector_server: str, mysql_uri: str, tmp_path: Path
) -> None:
    """Two replicas starting at the same moment on a fresh namespace: both come up (no create race)."""
    namespace = "s" + uuid.uuid4().hex[:10]
    key = "adm_" + uuid.uuid4().hex
    procs: list[ProcessServer] = []
    errors_seen: list[BaseException] = []

    def start(name: str) -> None:
        try:
            procs.append(
                ProcessServer(
                    [
                        "--data-dir", str(tmp_path / name),
                        "--http-port", "0",
                        "--resp-port", "0",
                        "--scalar-uri", mysql_uri,
                        "--vector-uri", vector_server,
                        "--namespace", namespace,
                        "--admin-key", key,
                    ]  # fmt: skip
                )
            )
        except BaseException as exc:  # reported below
            errors_seen.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    try:
        assert not errors_seen, errors_seen
        assert len(procs) == 2
        with procs[0].client(api_key=key) as x, procs[1].client(api_key=key) as y:
            entry_id = x.insert("default", MODEL, user(Q), ANSWER)
            hit, _ = poll(lambda: y.query("default", MODEL, user(PARAPHRASE)), lambda h: h.hit, VECTOR_VISIBLE_S)
            assert hit.id == entry_id
    finally:
        for p in procs:
            try:
                p.terminate()
            except Exception:
                p.kill()



def test_a_server_collection_is_made_with_indexes_on_the_fields_every_search_filters_on(
    vector_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every search filters on scope and ctx: a new collection on a Milvus server is made with a scalar index on
    both, before the vector index that lets it load. One made without them (an older collection) is opened,
    searched and written as before, never released to add them, and the open says so."""
    import logging

    import numpy as np
    from pymilvus import DataType, MilvusClient

    from modelcache_svc.stores.milvus_store import SCALAR_INDEXED, MilvusVectorStore

    def indexed(client: MilvusClient, name: str) -> set[str]:
        return {client.describe_index(name, i).get("field_name", i) for i in client.list_indexes(name)}

    client = MilvusClient(uri=vector_server, timeout=30, grpc_options=NO_PINGS)
    vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
    store = MilvusVectorStore(vector_server, "sx" + uuid.uuid4().hex[:8], timeout=30)
    name = store.ensure_collection("probe-model", 8)
    assert {"vector", *SCALAR_INDEXED} <= indexed(client, name)
    store.insert("probe-model", "t", "m", [("e1", "0" * 16)], vector[None, :])
    hits, _ = poll(lambda: store.search("probe-model", "t", "m", "0" * 16, vector, 5), lambda h: bool(h), 30)
    assert [h.id for h in hits] == ["e1"]
    assert store.search("probe-model", "t", "m", "1" * 16, vector, 5) == []
    assert store.search("probe-model", "t", "other", "0" * 16, vector, 5) == []
    # The server filters on the scope and the store on the context: the nearest 30 rows of the scope are of
    # one context, and a search in another still finds its own row behind them (the second, filtered search).
    rng = np.random.default_rng(0)
    near = vector[None, :] + 0.01 * rng.standard_normal((30, 8)).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    store.insert("probe-model", "t", "m", [(f"a{i:02x}", "0" * 16) for i in range(30)], near)
    far = np.eye(8, dtype=np.float32)[:1]
    store.insert("probe-model", "t", "m", [("e2", "2" * 16)], far)
    hits, _ = poll(lambda: store.search("probe-model", "t", "m", "2" * 16, vector, 5), lambda h: bool(h), 30)
    assert [h.id for h in hits] == ["e2"]
    assert abs(hits[0].similarity - float(vector @ far[0])) < 1e-4
    hits, _ = poll(lambda: store.search("probe-model", "t", "m", "0" * 16, vector, 5), lambda h: len(h) == 5, 30)
    assert len(hits) == 5 and all(h.id.startswith(("a", "e1")) for h in hits)
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)

    old = MilvusVectorStore(vector_server, "so" + uuid.uuid4().hex[:8], timeout=30)
    old_name = old.collection_name("probe-model", 8)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("scope", DataType.VARCHAR, max_length=32, is_partition_key=True)
    schema.add_field("tenant", DataType.VARCHAR, max_length=32)
    schema.add_field("ctx", DataType.VARCHAR, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
    params = client.prepare_index_params()
    params.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 80})
    client.create_collection(old_name, schema=schema, index_params=params, consistency_level="Strong")
    with caplog.at_level(logging.INFO, logger="modelcache_svc.milvus"):
        assert old.ensure_collection("probe-model", 8) == old_name
    assert indexed(client, old_name) == {"vector"}
    assert any("no scalar index on scope, ctx" in r.getMessage() for r in caplog.records)
    old.insert("probe-model", "t", "m", [("e1", "0" * 16)], vector[None, :])
    hits, _ = poll(lambda: old.search("probe-model", "t", "m", "0" * 16, vector, 5), lambda h: bool(h), 30)
    assert [h.id for h in hits] == ["e1"]
    for n in (name, old_name):
        client.drop_collection(n)
