"""The HTTP port's server: uvicorn serving an ASGI application inside the service's own event loop.

The service binds the socket itself (port 0 picks a free one, and ``start`` says which), hands it to
``uvicorn.Server`` and drives the server's start, tick loop and shutdown from its own lifecycle; uvicorn's
``serve`` is not used, since it takes the process's SIGINT and SIGTERM from the service.

The limits are the port's, whatever the application:
- a request head of at most ``MAX_HEADER_BYTES``: 431 (h11 refuses a head that arrives in pieces past that
  bound with a 400 before we see it);
- a body of at most ``MAX_BODY_BYTES`` (413), read within the idle timeout (408): ``BodyLimit``;
- a connection that holds no whole request head for ``idle_timeout`` seconds, the first one included, is
  closed (uvicorn's own keep-alive timer runs only between requests): ``_Protocol``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("modelcache_svc.http")
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT_S = 30.0
SHUTDOWN_GRACE_S = 5  # requests still running at stop get this long

ASGIApp = Any  # (scope, receive, send) -> awaitable: Starlette's type, not imported here


class BodyLimit:
    """ASGI middleware: the request body whole, within ``max_bytes`` and ``timeout`` seconds, before the app
    sees it (every route of the port reads its body whole anyway)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, timeout: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path") or b"") + sum(len(n) + len(v) + 4 for n, v in scope["headers"])
        if head > MAX_HEADER_BYTES:
            await _plain(send, 431, "request header too large")
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            status = 400 if not length.isdigit() else 413
            await _plain(send, status, "bad Content-Length" if status == 400 else f"body over {self.max_bytes} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:  # a chunked body has no Content-Length to refuse up front
                        await _plain(send, 413, f"body over {self.max_bytes} bytes")
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _plain(send, 408, "the request body did not arrive in time")
            return
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())  # after the body: only the disconnect

        await self.app(scope, replay, send)


async def _plain(send: Any, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline on every request head: from the connection on, and again
    after each response (where uvicorn's keep-alive timer, set to the same bound, also runs)."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_late)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle and self._head_timer is not None:  # a whole head arrived: a request runs
            self._head_timer.cancel()
            self._head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_late(self) -> None:
        self._head_timer = None
        if self.cycle is None or self.cycle.response_complete:  # no request in flight: nobody is waiting
            self.timeout_keep_alive_handler()


class HttpServer:
    """One listener: ``start`` binds it and serves, ``close`` stops taking connections, ``wait_closed`` lets
    running requests finish (at most ``SHUTDOWN_GRACE_S``)."""

    def __init__(self, app: ASGIApp, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S, tls_cert: str = "",
                 tls_key: str = "", max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.config = uvicorn.Config(
            BodyLimit(app, max_body_bytes, idle_timeout), http=_Protocol, lifespan="off", log_config=None,
            access_log=False, server_header=False, timeout_keep_alive=max(1, round(idle_timeout)),
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            ssl_certfile=tls_cert or None, ssl_keyfile=tls_key or None,
        )
        self._server = uvicorn.Server(self.config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def tls(self) -> bool:
        return self.config.ssl_certfile is not None

    async def start(self, host: str, port: int) -> int:
        """Serve on host:port (0: a free port); the port bound."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on connections of such a socket, and without
        # it a response written in two pieces (head, body) waits ~40 ms for the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(self.config.backlog)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        self._socket = sock
        self.config.load()
        server = self._server
        server.lifespan = self.config.lifespan_class(self.config)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._task = asyncio.get_running_loop().create_task(self._run())
        return int(sock.getsockname()[1])

    async def _run(self) -> None:
        try:
            await self._server.main_loop()
        finally:
            await self._server.shutdown(sockets=[self._socket] if self._socket else None)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._socket,) if self._socket is not None else ()

    def close(self) -> None:
        self._server.should_exit = True

    async def wait_closed(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
