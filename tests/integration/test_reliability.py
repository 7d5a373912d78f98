"""Faults, limits and hostile input through a real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcache_svc import errors
from modelcache_svc.client import Entry
from modelcache_svc.transport.proto import pb, pb_grpc
from tests.faults import CuttableProxy
from tests.servers import ThreadServer

MODEL = "m1"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("scalar_store_uri", ["mariadb"], indirect=True)
def test_mariadb_outage_during_a_stream_of_queries_and_inserts(
    make_server: Callable[..., ThreadServer], mysql_uri: str
) -> None:
    parts = urlsplit(mysql_uri)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 3306)
    acknowledged: dict[str, str] = {}
    refused = 0
    slowest = 0.0
    try:
        uri = mysql_uri.replace(parts.netloc, f"{parts.username or 'root'}@127.0.0.1:{proxy.port}")
        server = make_server(scalar_uri=uri, store_timeout_s=2.0)
        with server.client(timeout=15, retries=0) as c:
            phases = [("up", 10), ("down", 10), ("up", 10)]
            n = 0
            for phase, count in phases:
                if phase == "down":
                    proxy.cut()
                else:
                    proxy.restore()
                for _ in range(count):
                    n += 1
                    question = f"What is the answer to question number {n}?"
                    started = time.monotonic()
                    try:
                        entry_id = c.insert("default", MODEL, user(question), f"answer {n}")
                        acknowledged[question] = entry_id
                    except errors.Unavailable:
                        assert phase == "down"  # never a false UNAVAILABLE, never a pretend success
                        refused += 1
                    # Queries keep answering within their deadline: a miss while down.
                    hit = c.query("default", MODEL, user(question))
                    slowest = max(slowest, time.monotonic() - started)
                    if phase == "up" and question in acknowledged:
                        assert hit.id == acknowledged[question]
        assert refused == 10
        assert slowest < 10.0
        # Back without a restart: every acknowledged write is there.
        deadline = time.monotonic() + 15
        with server.client(timeout=15) as c:
            for question, entry_id in acknowledged.items():
                while True:
                    hit = c.query("default", MODEL, user(question))
                    if hit.hit or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                assert hit.id == entry_id
        assert len(acknowledged) == 20
        metrics = server.core.metrics.render().decode()
        assert "modelcache_fail_open_total" in metrics
    finally:
        proxy.close()


def test_fail_closed_answers_unavailable(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server(fail_open=False)

    def broken(*args: object) -> None:
        raise errors.Unavailable("sqlite: disk on fire")

    server.core.scalar.get_by_exact_key = broken  # type: ignore[method-assign]
    with server.client(retries=0) as c:
        with pytest.raises(errors.Unavailable):
            c.query("default", MODEL, user("anything"))
    server.core.settings = server.core.settings.replace(fail_open=True)
    with server.client(retries=0) as c:
        assert not c.query("default", MODEL, user("anything")).hit


def test_a_hung_store_call_hits_the_deadline(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server(store_timeout_s=0.5)

    def hang(*args: object) -> None:
        time.sleep(5)

    server.core.scalar.get_by_exact_key = hang  # type: ignore[method-assign]
    with server.client(retries=0) as c:
        started = time.monotonic()
        assert not c.query("default", MODEL, user("anything")).hit
        assert time.monotonic() - started < 4


def test_vector_write_failure_is_unavailable_and_leaves_no_row(server: ThreadServer) -> None:
    real_insert = server.core.vector.insert

    def broken(*args: object, **kwargs: object) -> None:
        raise errors.Unavailable("milvus: gone")

    server.core.vector.insert = broken  # type: ignore[method-assign]
    with server.client(retries=0) as c:
        with pytest.raises(errors.Unavailable):
            c.insert("default", MODEL, user("lost?"), "no")
        assert not c.query("default", MODEL, user("lost?")).hit
        assert c.get_tenant("default").entries == 0
    server.core.vector.insert = real_insert  # type: ignore[method-assign]


def test_repair_restores_missing_vectors_and_drops_orphans(server: ThreadServer) -> None:
    with server.client() as c:
        ids = c.insert_many("default", MODEL, [Entry(user("How do I reverse a list in Python?"), "reversed()"),
                                               Entry(user("Who wrote Hamlet?"), "Shakespeare")])
        assert c.repair() == {"rows_checked": 2, "vectors_added": 0, "vectors_removed": 0}
        # A crash between the two writes: the row without its vector.
        server.call(server.core.runtime.run(server.core.vector.delete_ids, [ids[0]]))
        assert not c.query("default", MODEL, user("How can I reverse a Python list?")).hit
        # A failed delete: the vector without its row.
        server.call(server.core.runtime.run(server.core.scalar.delete_ids, [ids[1]]))
        assert not c.query("default", MODEL, user("Who was the author of Hamlet?")).hit
        assert c.repair() == {"rows_checked": 1, "vectors_added": 1, "vectors_removed": 1}
        assert c.query("default", MODEL, user("How can I reverse a Python list?")).id == ids[0]
        assert c.repair() == {"rows_checked": 1, "vectors_added": 0, "vectors_removed": 0}


def test_limits(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server(max_concurrent_per_tenant=2)
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.CacheServiceStub(channel)
        huge = pb.QueryRequest(scope=pb.Scope(tenant="default", model=MODEL),
                               messages=[pb.ChatMessage(role="user", content="x" * (17 * 1024 * 1024))])
        with pytest.raises(grpc.RpcError) as info:
            stub.Query(huge, timeout=60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with server.client() as c:
        with pytest.raises(errors.InvalidArgument):
            c.insert_many("default", MODEL, [Entry(user(f"q{i}"), "a") for i in range(257)])
        with pytest.raises(errors.InvalidArgument):
            c.query("default", MODEL, [{"role": "user", "content": "q"}] * 65)

    # More calls in flight for one tenant than allowed: RESOURCE_EXHAUSTED, the rest served.
    release = threading.Event()
    real = server.core.scalar.get_by_exact_key

    def slow(*args: object) -> object:
        release.wait(10)
        return real(*args)

    server.core.scalar.get_by_exact_key = slow  # type: ignore[method-assign]
    outcomes: list[str] = []

    def ask() -> None:
        with server.client(retries=0, timeout=20) as c:
            try:
                c.query("default", MODEL, user("slow"))
                outcomes.append("ok")
            except errors.ResourceExhausted:
                outcomes.append("exhausted")

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while outcomes.count("exhausted") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    for t in threads:
        t.join(20)
    assert sorted(outcomes) == ["exhausted"] * 3 + ["ok"] * 2


TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tenant=st.one_of(st.just("default"), TEXT),
    model=st.one_of(st.just(MODEL), TEXT),
    roles=st.lists(st.one_of(st.sampled_from(["system", "user", "assistant", "tool"]), TEXT), max_size=4),
    contents=st.lists(TEXT, min_size=4, max_size=4),
    answer=TEXT,
    meta=st.dictionaries(TEXT, TEXT, max_size=3),
    threshold=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32)),
)
def test_random_input_always_gets_a_clean_status(
    server: ThreadServer, tenant: str, model: str, roles: list[str], contents: list[str], answer: str,
    meta: dict[str, str], threshold: float | None,
) -> None:
    clean = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    messages = [pb.ChatMessage(role=r, content=c) for r, c in zip(roles, contents)]
    scope = pb.Scope(tenant=tenant, model=model)
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.CacheServiceStub(channel)
        query = pb.QueryRequest(scope=scope, messages=messages)
        if threshold is not None:
            query.similarity_threshold = threshold
        insert = pb.InsertRequest(scope=scope, entries=[pb.CacheEntry(messages=messages, answer=answer, metadata=meta)])
        for method, request in ((stub.Query, query), (stub.Insert, insert)):
            try:
                method(request, timeout=30)
            except grpc.RpcError as exc:
                assert exc.code() in clean, exc.details()


@pytest.mark.parametrize(
    "payload",
    [
        # Insert whose metadata value is invalid UTF-8.
        b"\x0a\x09\x0a\x07default\x12\x1a\x0a\x09\x0a\x04user\x12\x01q\x12\x01a\x22\x0a\x0a\x01k\x12\x05\xff\xfe\xfd\xfc\xfb",
        b"\xff\xff\xff\xff",  # not a protobuf at all
        b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end
    ],
)
def test_undecodable_inserts_are_invalid_argument(module_server: ThreadServer, payload: bytes) -> None:
    # One server for every payload (module_server): none may write, which the count checks.
    with grpc.insecure_channel(module_server.target) as channel:
        call = channel.unary_unary("/modelcache.v1.CacheService/Insert")
        with pytest.raises(grpc.RpcError) as info:
            call(payload, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with module_server.client() as c:
        assert c.get_tenant("default").entries == 0
