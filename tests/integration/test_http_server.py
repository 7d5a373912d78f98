"""transport/http_server.py: uvicorn in our event loop, with the HTTP port's limits. A small real app on a
real socket, driven by raw sockets and http.client (what a slow or hostile client sends)."""

from __future__ import annotations

import asyncio
import http.client
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from modelcache_svc.transport.http_server import MAX_HEADER_BYTES, HttpServer


async def echo(request: Request) -> Response:
    return PlainTextResponse(f"{len(await request.body())} bytes")


async def hello(_: Request) -> Response:
    return PlainTextResponse("hello")


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


def start(loop: Loop, **kwargs: Any) -> tuple[HttpServer, int]:
    app = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/hello", hello)])
    server = HttpServer(app, **kwargs)
    port = loop.call(server.start("127.0.0.1", 0))
    return server, port


def stop(loop: Loop, server: HttpServer) -> None:
    server.close()
    loop.call(server.wait_closed())


def raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """What the server answers to these bytes, until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_port_zero_binds_a_free_port_and_says_which(loop: Loop) -> None:
    server, port = start(loop)
    try:
        assert port > 0 and server.sockets[0].getsockname()[1] == port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/hello")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello")
        assert response.getheader("server") is None  # no banner
        conn.request("GET", "/hello")  # the same connection: keep-alive
        assert conn.getresponse().read() == b"hello"

        async def nodelay() -> list[int]:  # else head and body, written apart, wait for the client's delayed ACK
            return [c.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                    for c in server._server.server_state.connections]

        assert loop.call(nodelay()) == [1]
        conn.close()
    finally:
        stop(loop, server)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_bodies_over_the_limit_are_refused_with_413(loop: Loop) -> None:
    server, port = start(loop, max_body_bytes=1000)
    try:
        assert raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"
                   + b"a" * 1000).endswith(b"1000 bytes")
        over = raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
        assert over.startswith(b"HTTP/1.1 413") and b"body over 1000 bytes" in over
        chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"  # chunked: no length to refuse up front, counted as it comes
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunked = raw(port, head + chunk + b"0\r\n\r\n")
        assert chunked.startswith(b"HTTP/1.1 413")
        bad = raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400")
    finally:
        stop(loop, server)


def test_a_head_over_16_kib_is_refused(loop: Loop) -> None:
    server, port = start(loop)
    try:
        head = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 100) + b"\r\n\r\n"
        assert raw(port, head).startswith(b"HTTP/1.1 431")  # whole in one packet
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # in pieces, never ending
            for _ in range(4):
                s.sendall(b"X-More: " + b"a" * (MAX_HEADER_BYTES // 3) + b"\r\n" if _ else b"GET /hello HTTP/1.1\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 400")
        assert raw(port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"hello")
    finally:
        stop(loop, server)


def test_idle_and_slow_connections_are_closed_after_the_idle_timeout(loop: Loop) -> None:
    server, port = start(loop, idle_timeout=1.0)
    try:
        for sent in (b"", b"GET /hello HTTP/1.1\r\nHost: x\r\n"):  # nothing at all; half a head, then silence
            started = time.monotonic()
            assert raw(port, sent, timeout=10) == b""
            assert 0.8 < time.monotonic() - started < 5
        started = time.monotonic()  # a body that never comes: 408
        late = raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", timeout=10)
        assert late.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5
        # After a response the connection waits for the next request as long, then closes.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"hello"):
                answer += s.recv(65536)
            started = time.monotonic()
            assert s.recv(65536) == b""
            assert 0.8 < time.monotonic() - started < 5
    finally:
        stop(loop, server)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_tls(loop: Loop, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    server, port = start(loop, tls_cert=str(cert), tls_key=str(key))
    try:
        assert server.tls
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"hello"
        conn.close()
    finally:
        stop(loop, server)
