"""The Redis-protocol front end through real clients: redis-py (sync and asyncio,
RESP2 and RESP3), raw sockets and redis-cli, against the whole service in a thread.

The RESP layer does not touch the stores, so these run on SQLite only.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from modelcache_svc import errors
from modelcache_svc.records import QueryResult
from modelcache_svc.transport.resp_server import RespServer, start_resp_server
from tests.servers import ThreadServer, free_port

pytestmark = pytest.mark.parametrize("scalar_store_uri", ["sqlite"], indirect=True)

MODEL = "gpt-4o-2024.08"
Q = "How do I reverse a list in Python?"
PARAPHRASE = "How can I reverse a Python list?"
ANSWER = "Use my_list.reverse() or my_list[::-1]."
ADMIN = "admin-secret"
Start = Callable[..., ThreadServer]


def chat(text: str) -> str:
    return json.dumps([{"role": "user", "content": text}])


def resp_server(make_server: Start, **overrides: Any) -> tuple[ThreadServer, int]:
    server = make_server(resp_port=free_port(), **overrides)
    return server, server.service.resp_port


def client(port: int, protocol: int, **kwargs: Any) -> redis.Redis:
    # No retries: redis-py retries AuthenticationError (a ConnectionError) with backoff, seconds per refusal.
    return redis.Redis(
        port=port, protocol=protocol, decode_responses=True, socket_timeout=30, retry=Retry(NoBackoff(), 0), **kwargs
    )


def as_map(reply: Any) -> dict[str, Any]:
    """A RESP3 map arrives as a dict, the same reply in RESP2 as a flat list."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2]))


def raw(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send bytes, half-close, and read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# -- the cache through redis-py -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_set_get_round_trip(make_server: Start, protocol: int) -> None:
    _, port = resp_server(make_server)
    with client(port, protocol) as r:
        assert r.ping() is True
        assert r.execute_command("MC.GET", "default", MODEL, Q) is None
        assert r.execute_command("mc.set", "default", MODEL, Q, ANSWER) == "OK"
        assert r.execute_command("MC.GET", "default", MODEL, Q) == ANSWER
        assert r.execute_command("MC.GET", "default", MODEL, "  How do I reverse a list in Python? ") == ANSWER
        assert r.execute_command("MC.SET", "default", MODEL, "What is 2+2?", "4", "EX", "60") == "OK"
        assert r.execute_command("MC.GET", "default", MODEL, "What is 2+2?") == "4"
        assert r.execute_command("MC.GET", "default", "other-model", Q) is None


@pytest.mark.parametrize("protocol", [2, 3])
def test_paraphrase_hit_through_mc_query(make_server: Start, protocol: int) -> None:
    _, port = resp_server(make_server)
    with client(port, protocol) as r:
        entry_id = r.execute_command("MC.INSERT", "default", MODEL, chat(Q), ANSWER, "META", '{"source": "test"}')
        assert isinstance(entry_id, str) and len(entry_id) == 32

        exact = as_map(r.execute_command("MC.QUERY", "default", MODEL, chat(Q)))
        assert (exact["match"], exact["answer"], exact["id"]) == ("exact", ANSWER, entry_id)

        reply = r.execute_command("MC.QUERY", "default", MODEL, chat(PARAPHRASE))
        assert isinstance(reply, dict if protocol == 3 else list)
        hit = as_map(reply)
        assert hit["hit"] in (True, 1)
        assert (hit["match"], hit["answer"], hit["id"], hit["matched_question"]) == ("semantic", ANSWER, entry_id, Q)
        assert 0.8 <= float(hit["similarity"]) < 1.0

        strict = as_map(
            r.execute_command("MC.QUERY", "default", MODEL, chat(PARAPHRASE), "threshold", "0.999", "TOPK", "3")
        )
        assert strict["hit"] in (False, 0) and strict["match"] == "miss" and strict["answer"] == ""


@pytest.mark.parametrize("protocol", [2, 3])
def test_insert_remove_clear_counts(make_server: Start, protocol: int) -> None:
    _, port = resp_server(make_server)
    with client(port, protocol) as r:
        ids = [r.execute_command("MC.INSERT", "default", "m1", chat(f"question number {i}"), f"a{i}") for i in range(3)]
        r.execute_command("MC.INSERT", "default", "m2", chat("another question"), "b", "TTL", "3600")
        assert r.execute_command("MC.REMOVE", "default", "m1", ids[0], "f" * 32) == 1
        assert r.execute_command("MC.REMOVE", "default", "m1", ids[0]) == 0
        assert r.execute_command("MC.CLEAR", "default", "m1") == 2
        assert r.execute_command("MC.CLEAR", "default") == 1
        assert r.execute_command("MC.GET", "default", "m2", "another question") is None


@pytest.mark.parametrize("protocol", [2, 3])
def test_pipelined_commands_answer_in_order(make_server: Start, protocol: int) -> None:
    _, port = resp_server(make_server)
    with client(port, protocol) as r:
        pipe = r.pipeline(transaction=False)
        for i in range(20):
            pipe.execute_command("MC.SET", "default", MODEL, f"pipelined question {i}", f"answer {i}")
        for i in range(20):
            pipe.execute_command("MC.GET", "default", MODEL, f"pipelined question {i}")
        pipe.execute_command("NOSUCH")
        pipe.execute_command("ECHO", "last")
        results = pipe.execute(raise_on_error=False)
    assert results[:20] == ["OK"] * 20
    assert results[20:40] == [f"answer {i}" for i in range(20)]
    assert isinstance(results[40], redis.ResponseError)
    assert results[41] == "last"


def test_raw_pipeline_and_inline_commands(make_server: Start) -> None:
    _, port = resp_server(make_server)
    frames = b"".join(b"*2\r\n$4\r\nECHO\r\n$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(100))
    inline = b'PING\r\nMC.SET default m "what is an inline command" \'a plain text line\'\nMC.GET default m "what is an inline command"\r\nQUIT\r\nPING\r\n'
    reply = raw(port, frames + inline)
    expected = b"".join(b"$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(100))
    assert reply == expected + b"+PONG\r\n+OK\r\n$17\r\na plain text line\r\n+OK\r\n"  # nothing after QUIT


@pytest.mark.parametrize("protocol", [2, 3])
def test_asyncio_client(make_server: Start, protocol: int) -> None:
    _, port = resp_server(make_server)

    async def main() -> None:
        r = aredis.Redis(port=port, protocol=protocol, decode_responses=True)
        try:
            assert await r.ping()
            await asyncio.gather(
                *(
                    r.execute_command("MC.SET", "default", MODEL, f"async question {i}", f"answer {i}")
                    for i in range(10)
                )
            )
            got = await asyncio.gather(
                *(r.execute_command("MC.GET", "default", MODEL, f"async question {i}") for i in range(10))
            )
            assert got == [f"answer {i}" for i in range(10)]
            await r.execute_command("MC.INSERT", "default", MODEL, chat(Q), ANSWER)
            hit = as_map(await r.execute_command("MC.QUERY", "default", MODEL, chat(PARAPHRASE)))
            assert hit["match"] == "semantic" and hit["answer"] == ANSWER
            async with r.pipeline(transaction=False) as pipe:
                pipe.execute_command("MC.GET", "default", MODEL, "async question 3")
                pipe.execute_command("MC.CLEAR", "default", MODEL)
                assert await pipe.execute() == ["answer 3", 11]
        finally:
            await r.aclose()

    asyncio.run(main())


# -- keys --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_auth_with_tenant_keys(make_server: Start, protocol: int) -> None:
    server, port = resp_server(make_server, admin_key=ADMIN)
    with server.client(api_key=ADMIN) as admin:
        admin.create_tenant("acme")
        admin.create_tenant("globex")
        acme_key_id, acme_key = admin.create_api_key("acme")

    with client(port, protocol) as anonymous:
        assert anonymous.ping() is True  # connection commands need no key
        with pytest.raises(redis.AuthenticationError, match="Authentication required"):
            anonymous.execute_command("MC.GET", "acme", MODEL, Q)
        with pytest.raises(redis.AuthenticationError):
            anonymous.info()
        with pytest.raises(redis.AuthenticationError):
            anonymous.execute_command("AUTH", "not-a-key")
        assert anonymous.execute_command("AUTH", acme_key) in (True, "OK")
        assert anonymous.execute_command("MC.SET", "acme", MODEL, Q, ANSWER) == "OK"

    with pytest.raises(redis.AuthenticationError):
        client(port, protocol, password="wrong").ping()

    with client(port, protocol, password=acme_key) as acme:
        assert acme.execute_command("MC.GET", "acme", MODEL, Q) == ANSWER
        with pytest.raises(redis.exceptions.NoPermissionError, match="another tenant"):
            acme.execute_command("MC.GET", "globex", MODEL, Q)
        with pytest.raises(redis.exceptions.NoPermissionError):
            acme.execute_command("MC.CLEAR", "globex")
        assert acme.ping() is True  # the refusal left the connection usable

        with client(port, protocol, username="default", password=ADMIN) as admin_conn:
            assert admin_conn.execute_command("MC.SET", "globex", MODEL, Q, "globex answer") == "OK"
            assert admin_conn.execute_command("MC.GET", "acme", MODEL, Q) == ANSWER

        # A revoked key stops working on a connection that is already open.
        with server.client(api_key=ADMIN) as admin:
            admin.revoke_api_key(acme_key_id)
        with pytest.raises(redis.AuthenticationError, match="revoked"):
            acme.execute_command("MC.GET", "acme", MODEL, Q)


# -- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_errors_leave_the_connection_usable(make_server: Start, protocol: int) -> None:
    _, port = resp_server(make_server)
    with client(port, protocol, single_connection_client=True) as r:
        conn_id = r.execute_command("CLIENT", "ID")
        cases: list[tuple[tuple[str, ...], str]] = [
            (("NOPE", "x"), "unknown command 'NOPE'"),
            (("MC.GET", "default", MODEL), "wrong number of arguments for 'mc.get' command"),
            (("MC.SET", "default", MODEL, Q), "wrong number of arguments for 'mc.set' command"),
            (("MC.QUERY", "default", MODEL, "not json"), "messages-json is not valid JSON"),
            (("MC.QUERY", "default", MODEL, '{"role": "user"}'), "messages-json must be a JSON array"),
            (("MC.QUERY", "default", MODEL, '[{"role": "user"}]'), r"messages-json\[0\].content must be a string"),
            (("MC.QUERY", "default", MODEL, '[{"role": "user", "content": "x", "name": "n"}]'), "unknown field 'name'"),
            (("MC.QUERY", "default", MODEL, '[{"role": "user", "role": "system", "content": "x"}]'), "duplicate key"),
            (("MC.QUERY", "default", MODEL, "[" * 100_000), "nested too deeply"),
            (("MC.QUERY", "default", MODEL, "[]"), "messages is empty"),
            (("MC.QUERY", "default", MODEL, '[{"role": "robot", "content": "x"}]'), "role 'robot' is invalid"),
            (("MC.QUERY", "default", MODEL, chat(Q), "THRESHOLD", "1.5"), "out of range"),
            (("MC.QUERY", "default", MODEL, chat(Q), "THRESHOLD", "nan"), "finite"),
            (("MC.QUERY", "default", MODEL, chat(Q), "TOPK"), "TOPK needs a value"),
            (("MC.QUERY", "default", MODEL, chat(Q), "COLOUR", "red"), "syntax error"),
            (("MC.INSERT", "default", MODEL, chat(Q), ANSWER, "TTL", "soon"), "TTL must be an integer"),
            (("MC.INSERT", "default", MODEL, chat(Q), ANSWER, "META", "[1]"), "META must be a JSON object"),
            (("MC.GET", "nosuch", MODEL, Q), "tenant 'nosuch' does not exist"),
            (("MC.GET", "bad tenant!", MODEL, Q), "tenant name"),
            (("MC.REMOVE", "default", MODEL, "not-an-id"), "entry id"),
            (("MC.CLEAR", "default", MODEL, "extra"), "wrong number of arguments for 'mc.clear' command"),
            (("MC.SET", "default", MODEL, Q, "   "), "answer is empty"),
            (("MC.CLEAR", "default", ""), "leave it out to clear every model"),
            (("SELECT", "1"), "DB index is out of range"),
            (("HELLO", "4"), "unsupported protocol version"),
            (("CLIENT", "KILL"), "unknown subcommand"),
        ]
        for args, message in cases:
            with pytest.raises(redis.ResponseError, match=message):
                r.execute_command(*args)
            assert r.ping() is True
        # Bytes that are not UTF-8 are refused, not guessed at.
        with pytest.raises(redis.ResponseError, match="not valid UTF-8"):
            r.execute_command("MC.GET", "default", MODEL, b"\xff\xfe")
        assert r.execute_command("CLIENT", "ID") == conn_id


@pytest.mark.parametrize("protocol", [2, 3])
def test_connection_commands(make_server: Start, protocol: int) -> None:
    _, port = resp_server(make_server)
    with client(port, protocol, single_connection_client=True, client_name="tests") as r:
        assert r.echo("héllo") == "héllo"
        assert r.client_getname() == "tests"
        assert r.client_setname("renamed") is True
        assert r.client_getname() == "renamed"
        assert r.execute_command("SELECT", "0") in (True, "OK")
        assert r.execute_command("CLIENT", "SETINFO", "LIB-NAME", "x") in (True, "OK")
        assert "redis_version" in r.execute_command("INFO")
        assert r.command_count() >= 15
        hello = as_map(r.execute_command("HELLO"))
        assert hello["proto"] == protocol and hello["server"] == "modelcache"
    assert raw(port, b"PING msg\r\nCOMMAND DOCS\r\nHELLO 3\r\nCOMMAND DOCS\r\nQUIT\r\n").startswith(
        b"$3\r\nmsg\r\n*0\r\n%"
    )
    assert raw(port, b"HELLO 3\r\nCOMMAND DOCS\r\n").endswith(b"%0\r\n")
    reply = raw(port, b'HELLO 3\r\nMC.QUERY default m \'[{"role":"user","content":"nothing here"}]\'\r\n')
    assert reply.startswith(b"%")
    assert reply.endswith(
        b"%6\r\n$3\r\nhit\r\n#f\r\n$5\r\nmatch\r\n$4\r\nmiss\r\n$6\r\nanswer\r\n$0\r\n\r\n$2\r\nid\r\n$0\r\n\r\n$10\r\nsimilarity\r\n,0.0\r\n$16\r\nmatched_question\r\n$0\r\n\r\n"
    )


def test_core_failures_map_to_error_codes(make_server: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    server, port = resp_server(make_server)

    async def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise errors.Unavailable("the scalar store is down")

    async def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    with client(port, 3, single_connection_client=True) as r:
        monkeypatch.setattr(server.core, "query", unavailable)
        with pytest.raises(redis.exceptions.TryAgainError, match="scalar store is down"):
            r.execute_command("MC.GET", "default", MODEL, Q)
        monkeypatch.setattr(server.core, "query", bug)
        with pytest.raises(redis.ResponseError, match="^internal error$"):
            r.execute_command("MC.QUERY", "default", MODEL, chat(Q))
        assert r.ping() is True


def test_framing_errors_close_the_connection(make_server: Start) -> None:
    _, port = resp_server(make_server)
    assert raw(port, b"PING\r\n*1\r\n:5\r\nPING\r\n") == b"+PONG\r\n-ERR Protocol error: expected '$', got ':'\r\n"
    assert raw(port, b'ECHO "unbalanced\r\n') == b"-ERR Protocol error: unbalanced quotes in request\r\n"
    # An oversized bulk is refused from its header: the 1 GB never has to arrive.
    assert raw(port, b"*2\r\n$4\r\nECHO\r\n$1000000000\r\n") == b"-ERR Protocol error: invalid bulk length\r\n"
    assert raw(port, b"*100000\r\n") == b"-ERR Protocol error: invalid multibulk length\r\n"


def test_limits_are_constructor_arguments_and_close_closes_clients(make_server: Start) -> None:
    server = make_server()
    resp: RespServer = server.call(start_resp_server(server.core, "127.0.0.1", 0, max_bulk=1024, max_array=4))
    port = resp.sockets[0].getsockname()[1]
    try:
        assert raw(port, b"*2\r\n$4\r\nECHO\r\n$1024\r\n" + b"x" * 1024 + b"\r\n").startswith(b"$1024\r\n")
        assert raw(port, b"*2\r\n$4\r\nECHO\r\n$1025\r\n") == b"-ERR Protocol error: invalid bulk length\r\n"
        assert raw(port, b"*5\r\n") == b"-ERR Protocol error: invalid multibulk length\r\n"
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        idle.sendall(b"PING\r\n")
        assert idle.recv(100) == b"+PONG\r\n"
    finally:

        async def close() -> None:
            resp.close()
            await resp.wait_closed()

        server.call(close())
    assert idle.recv(100) == b""  # the open connection was closed by the server
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_close_lets_a_running_command_finish(make_server: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server()
    resp: RespServer = server.call(start_resp_server(server.core, "127.0.0.1", 0))
    port = resp.sockets[0].getsockname()[1]
    started = threading.Event()

    async def slow_query(*args: Any, **kwargs: Any) -> Any:
        started.set()
        await asyncio.sleep(0.5)
        return QueryResult.miss()

    monkeypatch.setattr(server.core, "query", slow_query)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as busy:
        busy.sendall(b"MC.GET default m question\r\nPING\r\n")
        assert started.wait(10)

        async def close() -> None:
            resp.close()
            await resp.wait_closed()

        server.call(close())
        # The command in flight was answered; the pipelined PING behind it was not run.
        received = b""
        while chunk := busy.recv(100):
            received += chunk
        assert received == b"$-1\r\n"


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli(make_server: Start) -> None:
    _, port = resp_server(make_server)

    def cli(*args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout.strip()

    assert cli("PING") == "PONG"
    assert cli("MC.SET", "default", MODEL, Q, ANSWER) == "OK"
    assert cli("MC.GET", "default", MODEL, Q) == ANSWER
    assert cli("MC.GET", "default", MODEL, PARAPHRASE) == ANSWER
    assert cli("MC.QUERY", "default", MODEL, chat(PARAPHRASE)).splitlines()[:4] == ["hit", "1", "match", "semantic"]
    resp3 = cli("-3", "--no-raw", "MC.QUERY", "default", MODEL, chat(PARAPHRASE)).splitlines()
    assert resp3[:2] == ['1# "hit" => (true)', '2# "match" => "semantic"']
    assert resp3[4].startswith('5# "similarity" => (double) 0.9')
    assert "unknown command" in cli("NOPE")


# -- fuzz ---------------------------------------------------------------------------------------------


def _noise(rng: random.Random) -> bytes:
    valid = [
        b"*1\r\n$4\r\nPING\r\n",
        b"*4\r\n$6\r\nMC.GET\r\n$7\r\ndefault\r\n$1\r\nm\r\n$1\r\nq\r\n",
        b"*4\r\n$8\r\nMC.QUERY\r\n$7\r\ndefault\r\n$1\r\nm\r\n$2\r\n[{\r\n",
        b'MC.SET default m "q" "a"\r\n',
        b"HELLO 3\r\n",
    ]
    parts: list[bytes] = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        frame = rng.choice(valid)
        if kind < 0.3:
            parts.append(frame)
        elif kind < 0.6:
            parts.append(frame[: rng.randint(0, len(frame))])
        elif kind < 0.8:
            parts.append(rng.randbytes(rng.randint(1, 200)))
        else:
            mutated = bytearray(frame)
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            parts.append(bytes(mutated))
    return b"".join(parts)


def test_fuzzed_frames_never_take_the_server_down(make_server: Start) -> None:
    _, port = resp_server(make_server)
    rng = random.Random(20240611)
    deadline = time.monotonic() + 120
    for _ in range(300):
        data = _noise(rng)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            try:
                s.sendall(data)
                if rng.random() < 0.5:
                    s.shutdown(socket.SHUT_WR)  # half the time the server sees EOF, half an abrupt close
                    while s.recv(65536):
                        pass
            except (ConnectionResetError, BrokenPipeError):
                pass  # the server closed after a protocol error; what matters is the next connection
        assert time.monotonic() < deadline
    with client(port, 2) as r:
        assert r.ping() is True
        assert r.execute_command("ECHO", "still here") == "still here"
        # Every fuzzed connection is gone: none is left hanging in the server.
        for _ in range(100):
            if r.info()["connected_clients"] == 1:
                break
            time.sleep(0.05)
        assert r.info()["connected_clients"] == 1
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(100) == b"+PONG\r\n"
