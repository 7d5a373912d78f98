"""Metrics, health, query log and stats through a real server."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit

import grpc
import pytest

from modelcache_svc import errors
from modelcache_svc.transport.proto import pb, pb_grpc
from tests.faults import CuttableProxy
from tests.servers import ThreadServer, free_port

MODEL = "m1"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def scripted_sequence(server: ThreadServer) -> None:
    with server.client() as c:
        c.insert("default", MODEL, user("How do I reverse a list in Python?"), "reversed()")
        for _ in range(3):
            assert c.query("default", MODEL, user("How do I reverse a list in Python?")).match == "exact"
        for _ in range(2):
            assert c.query("default", MODEL, user("How can I reverse a Python list?")).match == "semantic"
        for q in ("What is the boiling point of water?", "Who painted the Mona Lisa?"):
            assert c.query("default", MODEL, user(q)).match == "miss"
        with pytest.raises(errors.NotFound):
            c.query("nobody", MODEL, user("x"))
        with pytest.raises(errors.InvalidArgument):
            c.query("default", MODEL, [])


def test_metrics_count_exactly_what_a_scripted_sequence_caused(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server(http_port=free_port())
    scripted_sequence(server)
    status, text = http_get(server.service.http_port, "/metrics")
    assert status == 200
    assert sample(text, "modelcache_queries_total", tenant="default", result="exact") == 3
    assert sample(text, "modelcache_queries_total", tenant="default", result="semantic") == 2
    assert sample(text, "modelcache_queries_total", tenant="default", result="miss") == 2
    assert sample(text, "modelcache_queries_total", tenant="default", result="error") == 1
    assert sample(text, "modelcache_queries_total", tenant="nobody", result="error") == 1
    assert sample(text, "modelcache_requests_total", transport="grpc", rpc="Query", code="OK") == 7
    assert sample(text, "modelcache_requests_total", transport="grpc", rpc="Query", code="NOT_FOUND") == 1
    assert sample(text, "modelcache_requests_total", transport="grpc", rpc="Query", code="INVALID_ARGUMENT") == 1
    assert sample(text, "modelcache_requests_total", transport="grpc", rpc="Insert", code="OK") == 1
    assert sample(text, "modelcache_inserted_entries_total", tenant="default") == 1
    # Exact hits skip embedding: 2 semantic + 2 miss queries embedded one text each, plus the insert.
    assert sample(text, "modelcache_stage_duration_seconds_count", stage="embed") == 4
    assert sample(text, "modelcache_stage_duration_seconds_count", stage="exact_lookup") == 7
    assert sample(text, "modelcache_stage_duration_seconds_count", stage="total") == 7
    # The model: the insert, the paraphrase once (asked again, its vector is remembered), the 2 misses.
    assert sample(text, "modelcache_embedding_batch_size_count") == 4
    assert sample(text, "modelcache_question_vector_memo_total", result="hit") == 1
    assert sample(text, "modelcache_question_vector_memo_total", result="miss") == 3
    assert "modelcache_query_log_queue_depth" in text


def test_a_failure_inside_metrics_never_fails_a_request(server: ThreadServer) -> None:
    class Broken:
        def labels(self, *a: object) -> None:
            raise RuntimeError("metrics backend exploded")

    server.core.metrics.queries = Broken()  # type: ignore[assignment]
    server.core.metrics.stage_seconds = Broken()  # type: ignore[assignment]
    with server.client() as c:
        c.insert("default", MODEL, user("still works?"), "yes")
        assert c.query("default", MODEL, user("still works?")).answer == "yes"


def test_query_log_rows_carry_the_sequence_with_latency(server: ThreadServer) -> None:
    scripted_sequence(server)
    server.call(server.core.query_log.flush())
    rows = server.call(server.core.runtime.run(server.core.scalar.query_log_since, "default", None, 0.0))
    kinds = sorted(k for _, k, _ in rows)
    assert kinds == ["error", "exact", "exact", "exact", "miss", "miss", "semantic", "semantic"]
    assert all(latency > 0 for _, _, latency in rows)
    with server.client() as c:
        (stats,) = c.stats("default", MODEL)
    assert (stats["entries"], stats["exact_hits"], stats["semantic_hits"], stats["misses"]) == (1, 3, 2, 2)
    assert stats["hit_ratio"] == pytest.approx(5 / 7)
    assert stats["p99_latency_ms"] >= stats["p50_latency_ms"] > 0
    assert stats["top_entries"][0]["question"] == "How do I reverse a list in Python?"
    assert stats["top_entries"][0]["hit_count"] == 5


def test_request_id_is_echoed_and_logged(server: ThreadServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.CacheServiceStub(channel)
        request = pb.QueryRequest(scope=pb.Scope(tenant="default", model=MODEL), messages=[pb.ChatMessage(role="user", content="hi")])
        _, call = stub.Query.with_call(request, metadata=(("x-request-id", "req-42"),), timeout=30)
        assert dict(call.trailing_metadata())["x-request-id"] == "req-42"
    server.call(server.core.query_log.flush())
    rows = server.call(server.core.runtime.run(server.core.scalar.query_log_since, "default", MODEL, 0.0))
    assert rows


def test_a_dead_query_log_consumer_never_blocks_queries(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server(http_port=free_port(), query_log_max_queue=5)
    task = server.core.query_log.task
    assert task is not None
    server.loop.call_soon_threadsafe(task.cancel)
    time.sleep(0.2)
    assert task.done()
    with server.client() as c:
        c.insert("default", MODEL, user("q"), "a")
        for _ in range(20):
            assert c.query("default", MODEL, user("q")).hit
    assert server.core.query_log.depth == 5
    _, text = http_get(server.service.http_port, "/metrics")
    assert sample(text, "modelcache_query_log_dropped_total") == 15
    assert sample(text, "modelcache_query_log_queue_depth") == 5


def test_health_endpoints(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server(http_port=free_port())
    port = server.service.http_port
    assert http_get(port, "/healthz")[0] == 200
    status, body = http_get(port, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert http_get(port, "/nope")[0] == 404


@pytest.mark.parametrize("scalar_store_uri", ["mariadb"], indirect=True)
def test_readyz_follows_mariadb_down_and_back(make_server: Callable[..., ThreadServer], mysql_uri: str) -> None:
    parts = urlsplit(mysql_uri)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 3306)
    try:
        via_proxy = mysql_uri.replace(parts.netloc, f"{parts.username or 'root'}@127.0.0.1:{proxy.port}")
        server = make_server(http_port=free_port(), scalar_uri=via_proxy, store_timeout_s=2.0)
        port = server.service.http_port
        assert http_get(port, "/readyz")[0] == 200
        with server.client() as c:
            c.insert("default", MODEL, user("survives the outage?"), "yes")
        proxy.cut()
        status, body = http_get(port, "/readyz")
        assert status == 503 and json.loads(body)["checks"]["scalar_store"] is False
        assert http_get(port, "/healthz")[0] == 200  # alive, just not ready
        with server.client(timeout=10) as c:
            started = time.monotonic()
            assert not c.query("default", MODEL, user("survives the outage?")).hit  # fail-open miss
            assert time.monotonic() - started < 8
        proxy.restore()
        deadline = time.monotonic() + 15
        while http_get(port, "/readyz")[0] != 200:
            assert time.monotonic() < deadline, "not ready again after MariaDB came back"
            time.sleep(0.2)
        with server.client() as c:
            assert c.query("default", MODEL, user("survives the outage?")).answer == "yes"
    finally:
        proxy.close()
