"""The Redis-protocol front end (RESP2 and RESP3) over the same CacheCore as gRPC.

Each connection runs one task: read a chunk, take every complete command out
of the parser, answer each in order, read again. Commands of one connection
never overlap, so pipelined replies keep their order, and a client that stops
reading stops being read (drain after every reply).

Keys work as on gRPC. With auth on, a connection has no key until AUTH or
HELLO ... AUTH; the key is authenticated again on every MC.* call (the core
caches the look-up), so a revoked key stops working on open connections too.
Connection-level commands (PING, ECHO, HELLO, AUTH, CLIENT, SELECT, COMMAND,
QUIT) need no key: they reveal nothing and clients send some of them before
authenticating. INFO and MC.* do.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import __version__, errors
from ..cache.service import CacheCore
from ..cache.tenants import Principal
from .resp_commands import MC_COMMANDS, McHandler, integer_arg, text
from .resp_protocol import (
    DEFAULT_MAX_ARRAY,
    DEFAULT_MAX_BULK,
    DEFAULT_MAX_REQUEST,
    ErrorReply,
    ProtocolError,
    Reply,
    RespParser,
    Simple,
    encode,
    error,
)

log = logging.getLogger("modelcache_svc.resp")

# Clients read the version in HELLO and INFO to decide what they may send (HELLO itself needs 6+).
REDIS_COMPAT_VERSION = "7.2.0"
READ_CHUNK = 64 * 1024
DEFAULT_MAX_CLIENTS = 10_000
DEFAULT_CLOSE_GRACE_S = 5.0

Handler = Callable[["Connection", Sequence[bytes]], Awaitable[Reply]]


@dataclass(eq=False)
class Connection:
    id: int
    writer: asyncio.StreamWriter
    proto: int = 2
    key: str | None = None
    name: str | None = None
    busy: bool = False  # running a command: close() lets it finish
    closing: bool = False
    task: asyncio.Task[Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Spec:
    handler: Handler
    arity: int  # as Redis counts it, the name included: n exactly, -n at least n
    max_args: int = 0  # 0 = no bound
    auth: bool = False  # needs an authenticated connection
    flags: tuple[str, ...] = ()


class RespServer:
    def __init__(
        self,
        core: CacheCore,
        *,
        max_bulk: int = DEFAULT_MAX_BULK,
        max_array: int = DEFAULT_MAX_ARRAY,
        max_request: int = DEFAULT_MAX_REQUEST,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        close_grace_s: float = DEFAULT_CLOSE_GRACE_S,
    ) -> None:
        self.core = core
        self.max_bulk = max_bulk
        self.max_array = max_array
        self.max_request = max_request
        self.max_clients = max_clients
        self.close_grace_s = close_grace_s
        self._server: asyncio.Server | None = None
        self._conns: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._started = time.monotonic()
        self.commands: dict[str, Spec] = {
            "PING": Spec(self._ping, -1, 2),
            "ECHO": Spec(self._echo, 2),
            "HELLO": Spec(self._hello, -1),
            "AUTH": Spec(self._auth, -2, 3),
            "CLIENT": Spec(self._client, -2),
            "SELECT": Spec(self._select, 2),
            "INFO": Spec(self._info, -1, auth=True),
            "COMMAND": Spec(self._command, -1),
            "QUIT": Spec(self._quit, -1),
        }
        for name, (mc, arity, max_args) in MC_COMMANDS.items():
            self.commands[name] = Spec(self._mc(mc), arity, max_args, auth=True, flags=("write",))

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    def close(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their current command."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            conn.closing = True
            if not conn.busy:
                conn.writer.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        tasks = [c.task for c in self._conns.values() if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.close_grace_s)
            for conn in list(self._conns.values()):
                conn.writer.transport.abort()  # a client that does not read would hold close() forever
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- one connection ------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.max_clients:
            writer.write(error("ERR max number of clients reached"))
            writer.close()
            return
        conn = Connection(next(self._ids), writer, task=asyncio.current_task())
        self._conns[conn.id] = conn
        parser = RespParser(max_bulk=self.max_bulk, max_array=self.max_array, max_request=self.max_request)
        try:
            while not conn.closing:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                parser.feed(data)
                while not conn.closing:
                    try:
                        command = parser.get()
                    except ProtocolError as exc:
                        # The framing is lost: nothing after this point can be trusted to be a command.
                        writer.write(error(f"ERR Protocol error: {exc}"))
                        conn.closing = True
                        break
                    if command is None:
                        break
                    conn.busy = True
                    try:
                        reply = await self.execute(conn, command)
                    finally:
                        conn.busy = False
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("connection %d: I/O error %s; closing it", conn.id, exc)
        finally:
            self._conns.pop(conn.id, None)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def execute(self, conn: Connection, command: Sequence[bytes]) -> bytes:
        """One command's encoded reply; errors become error replies and the connection goes on."""
        name = command[0].upper().decode("latin-1")
        spec = self.commands.get(name)
        if spec is None:
            shown = command[0][:128].decode("utf-8", "backslashreplace")
            return error(f"ERR unknown command '{shown}'")
        n = len(command)
        if (spec.arity >= 0 and n != spec.arity) or n < -spec.arity or (spec.max_args and n > spec.max_args):
            return error(f"ERR wrong number of arguments for '{name.lower()}' command")
        try:
            if spec.auth and self.core.tenants.auth_enabled and conn.key is None:
                raise errors.Unauthenticated("Authentication required: send AUTH <key> or HELLO 3 AUTH default <key>")
            return encode(await spec.handler(conn, command), conn.proto)
        except errors.CacheError as exc:
            # The error's first word, the prefix Redis clients key on, comes from errors.TABLE.
            return error(f"{errors.codes_of(exc).resp} {exc.message}")
        except Exception:
            log.exception("RESP command %s failed with an unexpected error", name[:64])
            return error(f"{errors.INTERNAL.resp} internal error")

    def _mc(self, handler: McHandler) -> Handler:
        async def run(conn: Connection, args: Sequence[bytes]) -> Reply:
            # Authenticated on every call, as gRPC does, so a revoked key stops working here too.
            principal: Principal = await self.core.tenants.authenticate(conn.key)
            return await handler(self.core, principal, args)

        return run

    # -- connection commands ---------------------------------------------------------------
    async def _ping(self, conn: Connection, args: Sequence[bytes]) -> Reply:
        return args[1] if len(args) > 1 else Simple("PONG")

    async def _echo(self, conn: Connection, args: Sequence[bytes]) -> Reply:
        return args[1]

    async def _login(self, conn: Connection, key: bytes) -> ErrorReply | None:
        """Authenticate a key for this connection; a refused key leaves the connection as it was."""
        try:
            await self.core.tenants.authenticate(text(key, "key"))
        except (errors.Unauthenticated, errors.InvalidArgument) as exc:
            # Redis answers a refused password with WRONGPASS, and clients key on that code.
            return ErrorReply(f"WRONGPASS {exc.message}")
        conn.key = key.decode("utf-8")
        return None

    async def _auth(self, conn: Connection, args: Sequence[bytes]) -> Reply:
        # AUTH key | AUTH user key: the key alone decides who the caller is; the user name is not checked.
        refused = await self._login(conn, args[-1])
        return refused if refused is not None else Simple("OK")

    async def _hello(self, conn: Connection, args: Sequence[bytes]) -> Reply:
        proto = conn.proto
        key: bytes | None = None
        name: str | None = None
        if len(args) > 1:
            try:
                proto = integer_arg(args[1], "protocol version")
            except errors.InvalidArgument:
                return ErrorReply("ERR Protocol version is not an integer or out of range")
            if proto not in (2, 3):
                return ErrorReply("NOPROTO unsupported protocol version")
            i = 2
            while i < len(args):
                option = args[i].upper()
                if option == b"AUTH" and i + 2 < len(args):
                    key, i = args[i + 2], i + 3
                elif option == b"SETNAME" and i + 1 < len(args):
                    name, i = self._client_name(args[i + 1]), i + 2
                else:
                    shown = args[i][:64].decode("utf-8", "backslashreplace")
                    return ErrorReply(f"ERR Syntax error in HELLO option '{shown}'")
        if key is not None:
            refused = await self._login(conn, key)
            if refused is not None:
                return refused
        conn.proto = proto
        if name is not None:
            conn.name = name or None
        return {
            "server": "modelcache",
            "version": REDIS_COMPAT_VERSION,
            "modelcache_version": __version__,
            "proto": proto,
            "id": conn.id,
            "mode": "standalone",
            "role": "master",
            "modules": [],
        }

    @staticmethod
    def _client_name(raw: bytes) -> str:
        # As Redis: printable ASCII without spaces, so CLIENT LIST style output stays parseable.
        if any(b < 0x21 or b > 0x7E for b in raw):
            raise errors.InvalidArgument("Client names cannot contain spaces, newlines or special characters.")
        return raw.decode("ascii")

    async def _client(self, conn: Connection, args: Sequence[bytes]) -> Reply:
        sub = args[1].upper().decode("latin-1")
        arity = {"SETNAME": 3, "GETNAME": 2, "ID": 2, "SETINFO": 4}.get(sub)
        if arity is None:
            shown = args[1][:64].decode("utf-8", "backslashreplace")
            return ErrorReply(f"ERR unknown subcommand '{shown}'. Try CLIENT SETNAME, GETNAME, ID or SETINFO.")
        if len(args) != arity:
            return ErrorReply(f"ERR wrong number of arguments for 'client|{sub.lower()}' command")
        if sub == "SETNAME":
            conn.name = self._client_name(args[2]) or None
            return Simple("OK")
        if sub == "GETNAME":
            return conn.name
        if sub == "ID":
            return conn.id
        if args[2].upper() not in (b"LIB-NAME", b"LIB-VER"):
            return ErrorReply(f"ERR Unrecognized option '{args[2][:64].decode('utf-8', 'backslashreplace')}'")
        return Simple("OK")  # accepted and not kept: nothing here reads it

    async def _select(self, conn: Connection, args: Sequence[bytes]) -> Reply:
        try:
            db = integer_arg(args[1], "db")
        except errors.InvalidArgument:
            return ErrorReply("ERR value is not an integer or out of range")
        # There is one keyspace; clients that always SELECT 0 keep working.
        return Simple("OK") if db == 0 else ErrorReply("ERR DB index is out of range")

    async def _info(self, conn: Connection, args: Sequence[bytes]) -> Reply:
        port = self._server.sockets[0].getsockname()[1] if self._server and self._server.sockets else 0
        lines = [
            "# Server",
            f"redis_version:{REDIS_COMPAT_VERSION}",
            f"modelcache_version:{__version__}",
            "redis_mode:standalone",
            f"process_id:{os.getpid()}",
            f"tcp_port:{port}",
            f"uptime_in_seconds:{int(time.monotonic() - self._started)}",
            "",
            "# Clients",
            f"connected_clients:{len(self._conns)}",
            f"maxclients:{self.max_clients}",
            "",
        ]
        return "\r\n".join(lines)

    def _command_info(self, name: str) -> Reply:
        spec = self.commands[name]
        flags = [Simple(f) for f in spec.flags]
        # Redis 7 shape: name, arity, flags, first key, last key, step, ACL categories, tips, key specs, subcommands.
        return [name.lower(), spec.arity, flags, 0, 0, 0, [], [], [], []]

    async def _command(self, conn: Connection, args: Sequence[bytes]) -> Reply:
        if len(args) == 1:
            return [self._command_info(name) for name in self.commands]
        sub = args[1].upper().decode("latin-1")
        if sub == "COUNT":
            return len(self.commands)
        if sub == "DOCS":
            return {}  # no docs: redis-cli falls back to plain input
        if sub == "LIST":
            return [name.lower() for name in self.commands]
        if sub == "INFO":
            names = [a.upper().decode("latin-1") for a in args[2:]] or list(self.commands)
            return [self._command_info(n) if n in self.commands else None for n in names]
        shown = args[1][:64].decode("utf-8", "backslashreplace")
        return ErrorReply(f"ERR unknown subcommand '{shown}'. Try COMMAND COUNT, DOCS, INFO or LIST.")

    async def _quit(self, conn: Connection, args: Sequence[bytes]) -> Reply:
        conn.closing = True  # the reply is written first, then the connection closes
        return Simple("OK")


async def start_resp_server(
    core: CacheCore,
    host: str,
    port: int,
    *,
    max_bulk: int = DEFAULT_MAX_BULK,
    max_array: int = DEFAULT_MAX_ARRAY,
    max_request: int = DEFAULT_MAX_REQUEST,
    max_clients: int = DEFAULT_MAX_CLIENTS,
) -> RespServer:
    """Listen for Redis clients on host:port (0 = any free port); see RespServer for the limits."""
    if port == 6379:
        raise errors.InvalidArgument("port 6379 belongs to Redis; choose another (default 6390)")
    server = RespServer(core, max_bulk=max_bulk, max_array=max_array, max_request=max_request, max_clients=max_clients)
    try:
        await server.start(host, port)
    except OSError as exc:
        raise errors.Unavailable(f"cannot listen for the Redis protocol on {host}:{port}: {exc}") from exc
    return server
