"""POST /modelcache: ModelCache's request bodies (DESIGN §10) replayed with a
plain HTTP client against a real server; its response shapes and codes back."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from modelcache_svc import errors
from tests.servers import ThreadServer, free_port

MODEL = "CODEGPT-1008"  # ModelCache's names carry '-' and '.'
SYSTEM = {"role": "system", "content": "You are a Python assistant."}
Q = "How do I reverse a list in Python?"
PARAPHRASE = "How can I reverse a Python list?"
ANSWER = "Use my_list.reverse() or my_list[::-1]."
ADMIN = "admin-secret-key"
DELTA_TIME = re.compile(r"^\d+\.\d{3}s$")
QUERY_KEYS = {"errorCode", "errorDesc", "cacheHit", "delta_time", "hit_query", "answer"}


def post(
    port: int, body: Any, headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, dict[str, Any]]:
    """A dict is sent as JSON; bytes as they are."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, "/modelcache", body=raw, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if response.getheader("Content-Type", "").startswith(
            "application/json"
        ) else {}
    finally:
        conn.close()


def call(port: int, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """ModelCache answers HTTP 200 whatever happened; the outcome is errorCode."""
    status, result = post(port, body, headers)
    assert status == 200
    return result


def query(model: str, *messages: dict[str, str]) -> dict[str, Any]:
    return {"type": "query", "scope": {"model": model}, "query": list(messages)}


def insert(model: str, *chats: tuple[list[dict[str, str]], str]) -> dict[str, Any]:
    return {"type": "insert", "scope": {"model": model}, "chat_info": [{"query": q, "answer": a} for q, a in chats]}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def metrics(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


@pytest.fixture
def port_of(make_server: Callable[..., ThreadServer]) -> Callable[..., tuple[ThreadServer, int]]:
    def start(**overrides: Any) -> tuple[ThreadServer, int]:
        server = make_server(http_port=free_port(), **overrides)
        return server, server.service.http_port

    return start


def test_query_is_a_clean_miss_then_insert_then_exact_and_semantic_hits(port_of: Callable[..., Any]) -> None:
    server, port = port_of()

    # A model nothing was ever written to: a miss, not an error (ModelCache fails here).
    miss = call(port, query("never-used-model", SYSTEM, user(Q)))
    assert set(miss) == QUERY_KEYS
    assert (miss["errorCode"], miss["errorDesc"], miss["cacheHit"], miss["hit_query"], miss["answer"]) == (
        0,
        "",
        False,
        "",
        "",
    )
    assert DELTA_TIME.match(miss["delta_time"])

    written = call(port, insert(MODEL, ([SYSTEM, user(Q)], ANSWER)))
    assert (written["errorCode"], written["errorDesc"], written["writeStatus"]) == (0, "", "success")
    (entry_id,) = written["ids"]

    exact = call(port, query(MODEL, SYSTEM, user(Q)))
    assert (exact["errorCode"], exact["cacheHit"], exact["answer"], exact["hit_query"]) == (0, True, ANSWER, Q)
    assert (exact["id"], exact["match"], exact["similarity"]) == (entry_id, "exact", 1.0)
    assert DELTA_TIME.match(exact["delta_time"])

    semantic = call(port, query(MODEL, SYSTEM, user(PARAPHRASE)))
    assert (semantic["cacheHit"], semantic["answer"], semantic["hit_query"], semantic["match"]) == (
        True,
        ANSWER,
        Q,
        "semantic",
    )

    # The system prompt counts: without it, or with another, the answer is not served.
    assert call(port, query(MODEL, user(Q)))["cacheHit"] is False
    assert call(port, query(MODEL, {"role": "system", "content": "You are a pirate."}, user(Q)))["cacheHit"] is False
    # So does the history.
    history = [user("How do I sort a list in Java?"), {"role": "assistant", "content": "Collections.sort()."}]
    assert call(port, query(MODEL, SYSTEM, *history, user(Q)))["cacheHit"] is False

    # ModelCache's own examples post json.dumps(data) as the JSON body: a string holding the object.
    doubled = call(port, json.dumps(json.dumps(query(MODEL, SYSTEM, user(Q)))).encode())
    assert doubled["cacheHit"] is True and doubled["answer"] == ANSWER

    # Several entries in one insert; the scope is the compat tenant ("default") and the model as given.
    batch = call(port, insert("gpt-4o-2024.08", ([user("What is 2 + 2?")], "4"), ([user("What is 3 + 3?")], "6")))
    assert batch["writeStatus"] == "success" and len(batch["ids"]) == 2
    with server.client() as c:
        assert c.query("default", "gpt-4o-2024.08", "What is 3 + 3?").answer == "6"
        assert c.query("default", MODEL, [SYSTEM, user(Q)]).id == entry_id

    text = metrics(port)
    assert sample(text, "modelcache_requests_total", transport="http", rpc="modelcache.query", code="0") == 7
    assert sample(text, "modelcache_requests_total", transport="http", rpc="modelcache.insert", code="0") == 2


def test_remove_by_id_list_and_truncate_by_model(port_of: Callable[..., Any]) -> None:
    _, port = port_of()
    questions = ["What is the capital of France?", "What is the capital of Spain?", "What is the capital of Italy?"]
    ids = call(port, insert(MODEL, *(([user(q)], f"answer {i}") for i, q in enumerate(questions))))["ids"]
    call(port, insert("CODEGPT-1117", ([user(questions[0])], "other model")))

    removed = call(
        port, {"type": "remove", "scope": {"model": MODEL}, "remove_type": "delete_by_id", "id_list": ids[:2]}
    )
    assert (removed["errorCode"], removed["errorDesc"], removed["writeStatus"]) == (0, "", "success")
    assert removed["response"] == {
        "status": "success",
        "milvus": "delete_count: 2",
        "mysql": "delete_count: 2",
        "removed": 2,
    }
    assert [call(port, query(MODEL, user(q)))["cacheHit"] for q in questions] == [False, False, True]

    # Ids of nothing (or already removed): a success that removed nothing.
    again = call(port, {"type": "remove", "scope": {"model": MODEL}, "remove_type": "delete_by_id", "id_list": ids[:1]})
    assert again["errorCode"] == 0 and again["response"]["removed"] == 0

    truncated = call(port, {"type": "remove", "scope": {"model": MODEL}, "remove_type": "truncate_by_model"})
    assert (truncated["errorCode"], truncated["writeStatus"]) == (0, "success")
    assert truncated["response"]["status"] == "success" and truncated["response"]["removed"] == 1
    assert call(port, query(MODEL, user(questions[2])))["cacheHit"] is False
    # Only that model: the other keeps its entries.
    assert call(port, query("CODEGPT-1117", user(questions[0])))["answer"] == "other model"

    for body, code in (
        ({"type": "remove", "scope": {"model": MODEL}, "remove_type": "drop_everything"}, 401),
        ({"type": "remove", "scope": {"model": MODEL}}, 401),
        ({"type": "remove", "scope": {"model": MODEL}, "remove_type": "delete_by_id", "id_list": [1, 2]}, 401),
        ({"type": "remove", "scope": {"model": MODEL}, "remove_type": "delete_by_id", "id_list": "abc"}, 401),
        ({"type": "remove", "scope": {"model": ""}, "remove_type": "truncate_by_model"}, 401),
    ):
        failed = call(port, body)
        assert (failed["errorCode"], failed["writeStatus"], failed["removeStatus"]) == (code, "exception", "exception")
        assert failed["errorDesc"] and failed["response"] == {"status": "failed"}
    # The refused truncate with an empty model emptied nothing.
    assert call(port, query("CODEGPT-1117", user(questions[0])))["cacheHit"] is True


def test_register_twice_and_a_model_that_has_entries(port_of: Callable[..., Any]) -> None:
    server, port = port_of()
    register = {"type": "register", "scope": {"model": "CODEGPT-1117"}}
    first = call(port, register)
    assert first == {"errorCode": 0, "errorDesc": "", "response": "create_success", "writeStatus": "success"}
    assert call(port, register)["response"] == "already_exists"

    # A model written through gRPC already exists for this endpoint: it has entries.
    with server.client() as c:
        c.insert("default", "grpc-model-v1", Q, ANSWER)
    assert call(port, {"type": "register", "scope": {"model": "grpc-model-v1"}})["response"] == "already_exists"

    # Registering creates nothing: the model is still a clean miss.
    assert call(port, query("CODEGPT-1117", user(Q)))["cacheHit"] is False

    failed = call(port, {"type": "register", "scope": {"model": "bad model!"}})
    assert (failed["errorCode"], failed["response"], failed["writeStatus"]) == (502, "", "exception")
    assert "model name" in failed["errorDesc"]


def test_bodies_and_types_it_cannot_serve(port_of: Callable[..., Any]) -> None:
    _, port = port_of()
    for raw in (b"{not json", b"", b"[1, 2]", b'"just a string"', b"\xff\xfe\xfa", b"[" * 100_000):
        result = call(port, raw)
        assert result["errorCode"] == 103 and result["errorDesc"], raw[:20]
        assert QUERY_KEYS <= set(result) and result["cacheHit"] is False

    for unknown in ({"type": "delete", "scope": {"model": MODEL}}, {"scope": {"model": MODEL}}, {"type": 7}):
        result = call(port, unknown)
        assert (result["errorCode"], result["cacheHit"], result["errorType"]) == (102, False, "InvalidArgument")
        assert "query" in result["errorDesc"] and DELTA_TIME.match(result["delta_time"])

    for body in (
        {"type": "query", "scope": {"model": MODEL}},  # no query
        {"type": "query", "query": [user(Q)]},  # no scope
        query(MODEL, {"role": "wizard", "content": Q}),
        query(MODEL, user(Q), {"role": "assistant", "content": "the last turn must be the user's"}),
        query("bad model!", user(Q)),
        {"type": "query", "scope": {"model": MODEL}, "query": [{"role": "user"}]},
    ):
        result = call(port, body)
        assert set(result) == QUERY_KEYS | {"errorType"}
        assert (result["errorCode"], result["cacheHit"], result["answer"], result["errorType"]) == (
            201,
            False,
            "",
            "InvalidArgument",
        )

    for body in (
        {"type": "insert", "scope": {"model": MODEL}},
        {"type": "insert", "scope": {"model": MODEL}, "chat_info": [{"query": [user(Q)]}]},
        {"type": "insert", "scope": {"model": MODEL}, "chat_info": "Q"},
        insert(MODEL, ([user(Q)], "")),
        insert(MODEL, ([user(Q)], "fine"), ([], "no question")),
    ):
        result = call(port, body)
        assert (result["errorCode"], result["writeStatus"], result["errorType"]) == (
            301,
            "exception",
            "InvalidArgument",
        )
    # Nothing of the refused batch was written.
    assert call(port, query(MODEL, user(Q)))["cacheHit"] is False

    status, _ = post(port, b"", method="GET")
    assert status == 405

    text = metrics(port)
    assert sample(text, "modelcache_requests_total", transport="http", rpc="modelcache.unknown", code="103") == 6
    assert sample(text, "modelcache_requests_total", transport="http", rpc="modelcache.unknown", code="102") == 3
    assert sample(text, "modelcache_requests_total", transport="http", rpc="modelcache.query", code="201") == 6
    assert sample(text, "modelcache_requests_total", transport="http", rpc="modelcache.insert", code="301") == 5


def test_keys_and_the_configured_tenant(port_of: Callable[..., Any]) -> None:
    server, port = port_of(admin_key=ADMIN, modelcache_compat_tenant="acme")

    # The tenant it serves does not exist yet: every call says so, in its own code.
    unknown = call(port, query(MODEL, user(Q)), {"Authorization": f"Bearer {ADMIN}"})
    assert (unknown["errorCode"], unknown["errorType"]) == (201, "NotFound")

    with server.client(ADMIN) as admin:
        admin.create_tenant("acme")
        admin.create_tenant("globex")
        _, acme_key = admin.create_api_key("acme")
        _, globex_key = admin.create_api_key("globex")

    bodies = {
        "query": (query(MODEL, user(Q)), 201),
        "insert": (insert(MODEL, ([user(Q)], ANSWER)), 301),
        "remove": ({"type": "remove", "scope": {"model": MODEL}, "remove_type": "truncate_by_model"}, 401),
        "register": ({"type": "register", "scope": {"model": MODEL}}, 502),
    }
    for headers, error_type in (
        ({}, "Unauthenticated"),
        ({"Authorization": "Bearer mck_forged"}, "Unauthenticated"),
        ({"Authorization": f"Bearer {globex_key}"}, "PermissionDenied"),  # a key of another tenant
    ):
        for body, code in bodies.values():
            result = call(port, body, headers)
            assert (result["errorCode"], result["errorType"]) == (code, error_type)

    as_acme = {"Authorization": f"Bearer {acme_key}"}
    assert call(port, insert(MODEL, ([user(Q)], ANSWER)), as_acme)["writeStatus"] == "success"
    assert call(port, query(MODEL, user(Q)), as_acme)["answer"] == ANSWER
    assert call(port, query(MODEL, user(Q)), {"Authorization": f"Bearer {ADMIN}"})["answer"] == ANSWER
    assert call(port, {"type": "register", "scope": {"model": MODEL}}, as_acme)["response"] == "already_exists"

    # Written to acme, the configured tenant, not to default.
    with server.client(ADMIN) as admin:
        assert admin.query("acme", MODEL, Q).answer == ANSWER
        assert not admin.query("default", MODEL, Q).hit


def test_failures_while_serving_get_the_second_codes(
    port_of: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store down or a bug, as opposed to a refused request: 202, 302/303, 402, 502."""
    server, port = port_of()
    core = server.core

    def failing(exc: Exception) -> Callable[..., Any]:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise exc

        return fail

    down = errors.Unavailable("scalar store unavailable")
    cases: list[tuple[str, Exception, dict[str, Any], int, str]] = [
        ("query", down, query(MODEL, user(Q)), 202, "Unavailable"),
        ("query", RuntimeError("boom"), query(MODEL, user(Q)), 202, "Internal"),
        ("insert", down, insert(MODEL, ([user(Q)], ANSWER)), 302, "Unavailable"),
        (
            "insert",
            errors.ResourceExhausted("over a limit"),
            insert(MODEL, ([user(Q)], ANSWER)),
            302,
            "ResourceExhausted",
        ),
        ("insert", RuntimeError("boom"), insert(MODEL, ([user(Q)], ANSWER)), 303, "Internal"),
        (
            "remove",
            down,
            {"type": "remove", "scope": {"model": MODEL}, "remove_type": "delete_by_id", "id_list": []},
            402,
            "Unavailable",
        ),
        (
            "clear",
            RuntimeError("boom"),
            {"type": "remove", "scope": {"model": MODEL}, "remove_type": "truncate_by_model"},
            402,
            "Internal",
        ),
        ("stats", down, {"type": "register", "scope": {"model": MODEL}}, 502, "Unavailable"),
    ]
    for method, exc, body, code, error_type in cases:
        with monkeypatch.context() as m:
            m.setattr(core, method, failing(exc))
            result = call(port, body)
        assert (result["errorCode"], result["errorType"]) == (code, error_type), method
        # A bug's details stay in the server's log.
        assert result["errorDesc"] == ("internal error" if error_type == "Internal" else exc.args[0])
    assert call(port, query(MODEL, user(Q)))["errorCode"] == 0  # served again once the fault is gone
