"""The scalar store in MySQL, MariaDB or OceanBase (MySQL mode), through pymysql.

Connections come from a small pool, autocommit on; a write is one explicit
transaction. A connection that saw any error is closed, never pooled again;
a connection-level error also drops every idle one, and a connection idle for
a while is pinged before use, so the first call after the server comes back
runs on a fresh connection instead of failing on a dead one.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import pymysql

from ..errors import InvalidArgument, Unavailable
from .migrations import load_migrations
from .sql_common import MYSQL, Cursor, SQLScalarStore

T = TypeVar("T")

# Errors of the server or the network, not of our SQL: the call answers Unavailable.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    pymysql.err.OperationalError,
    pymysql.err.InterfaceError,
    pymysql.err.InternalError,
    OSError,  # includes socket timeouts
)
ER_BAD_DB_ERROR = 1049
ER_LOCK_DEADLOCK = 1213
PING_AFTER_IDLE_S = 1.0
MIGRATION_LOCK_WAIT_S = 120.0
MIGRATION_READ_TIMEOUT_S = 600.0
_DATABASE = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")


@dataclass(frozen=True, slots=True)
class MySQLTarget:
    host: str
    port: int
    user: str
    password: str
    database: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"


def parse_mysql_uri(uri: str) -> MySQLTarget:
    """mysql://user:pass@host:port/dbname, user and password percent-encoded."""
    try:
        parts = urlsplit(uri)
        port = parts.port or 3306
    except ValueError as exc:
        raise InvalidArgument(f"mysql uri is invalid: {exc}") from exc
    if parts.scheme not in ("mysql", "mysql+pymysql"):
        raise InvalidArgument("mysql uri must start with mysql://")
    database = parts.path.lstrip("/")
    if not _DATABASE.match(database):
        raise InvalidArgument(
            "mysql uri needs a database name of 1-64 characters of A-Z a-z 0-9 _ $ - (mysql://user:pass@host:port/db)"
        )
    if parts.query or parts.fragment:
        raise InvalidArgument("mysql uri takes no ?query or #fragment (percent-encode such characters in a password)")
    return MySQLTarget(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=database,
    )


def _errno(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _is_connection_error(exc: BaseException) -> bool:
    """The connection itself is gone (client-side errors are 2000-2999)."""
    if isinstance(exc, pymysql.err.InterfaceError | OSError):
        return True
    code = _errno(exc)
    return code is not None and 2000 <= code < 3000


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except (pymysql.err.Error, OSError):
        pass  # already closed, or the socket is dead: either way it is gone


class _Pool:
    """Idle connections, newest first; at most `size` are kept."""

    def __init__(self, connect: Callable[[], Any], size: int) -> None:
        self._connect = connect
        self._size = max(1, size)
        self._lock = threading.Lock()
        self._idle: list[tuple[Any, float]] = []
        self._closed = False

    def acquire(self) -> Any:
        while True:
            with self._lock:
                if self._closed:
                    raise Unavailable("mysql: the store is closed")
                if not self._idle:
                    break
                conn, since = self._idle.pop()
            if time.monotonic() - since < PING_AFTER_IDLE_S:
                return conn
            try:
                conn.ping(reconnect=False)
                return conn
            except (pymysql.err.Error, OSError):
                _close_quietly(conn)
        return self._connect()

    def release(self, conn: Any, healthy: bool) -> None:
        if healthy and conn.open:
            with self._lock:
                if not self._closed and len(self._idle) < self._size:
                    self._idle.append((conn, time.monotonic()))
                    return
        _close_quietly(conn)

    def drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            _close_quietly(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.drop_idle()


class MySQLStore(SQLScalarStore):
    dialect = MYSQL
    integrity_error = pymysql.err.IntegrityError

    def __init__(
        self,
        uri: str,
        namespace: str = "",
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        write_timeout: float = 5.0,
        pool_size: int = 8,
    ) -> None:
        super().__init__(namespace)
        self._target = parse_mysql_uri(uri)
        self._timeouts = (connect_timeout, read_timeout, write_timeout)
        # No connection yet: the service may start while the database is down.
        self._pool = _Pool(self._connect, pool_size)

    # -- connections ----------------------------------------------------------------
    def _connect(self, read_timeout: float | None = None) -> Any:
        t = self._target
        connect_timeout, default_read, write_timeout = self._timeouts
        options: dict[str, Any] = {
            "host": t.host,
            "port": t.port,
            "user": t.user,
            "password": t.password,
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout or default_read,
            "write_timeout": write_timeout,
        }
        try:
            try:
                return pymysql.connect(database=t.database, **options)
            except pymysql.err.OperationalError as exc:
                if _errno(exc) != ER_BAD_DB_ERROR:
                    raise
            conn = pymysql.connect(**options)
            try:
                with conn.cursor() as cur:
                    # The name matched _DATABASE, and backticks cannot occur in it.
                    cur.execute(f"CREATE DATABASE IF NOT EXISTS `{t.database}` CHARACTER SET utf8mb4")
                conn.select_db(t.database)
            except BaseException:
                _close_quietly(conn)
                raise
            return conn
        except DRIVER_ERRORS as exc:
            raise Unavailable(f"mysql: cannot connect to {t}: {exc}") from exc

    def _call(self, fn: Callable[[Cursor], T], *, write: bool) -> T:
        for attempt in (1, 2):
            conn = self._pool.acquire()
            healthy = False
            try:
                if write:
                    conn.begin()
                with conn.cursor() as cur:
                    result = fn(cur)
                if write:
                    conn.commit()
                healthy = True
                return result
            except DRIVER_ERRORS as exc:
                if _is_connection_error(exc):
                    self._pool.drop_idle()
                # InnoDB rolled the whole transaction back, so running it again is safe.
                if write and attempt == 1 and _errno(exc) == ER_LOCK_DEADLOCK:
                    continue
                raise Unavailable(f"mysql: {exc}") from exc
            finally:
                self._pool.release(conn, healthy)
        raise AssertionError("unreachable")

    def _read(self, fn: Callable[[Cursor], T]) -> T:
        return self._call(fn, write=False)

    def _write(self, fn: Callable[[Cursor], T]) -> T:
        return self._call(fn, write=True)

    # -- lifecycle ------------------------------------------------------------------
    def migrate(self) -> list[int]:
        migrations = load_migrations(self.dialect.name, self._prefix)
        # Its own connection: a long ALTER may outlast the usual read timeout, and the
        # advisory lock belongs to the session, so closing it releases the lock even on error.
        conn = self._connect(read_timeout=MIGRATION_READ_TIMEOUT_S)
        try:
            with conn.cursor() as cur:
                self._take_migration_lock(cur)
                applied: list[int] = []
                for migration in migrations:
                    # MySQL commits DDL implicitly; the files are idempotent so a cut-off version reruns.
                    conn.begin()
                    if self._apply_if_pending(cur, migration):
                        applied.append(migration.version)
                    conn.commit()
                return applied
        except DRIVER_ERRORS as exc:
            raise Unavailable(f"mysql: migrating {self._target}: {exc}") from exc
        finally:
            _close_quietly(conn)

    def _migration_statement(self, cur: Cursor, statement: str) -> None:
        try:
            cur.execute(statement)
        except pymysql.err.OperationalError as exc:
            # DDL commits at once here: a version cut off after its ALTER ... ADD COLUMN meets its own
            # column on the rerun (1060 duplicate column name), which means that statement is done.
            if not (exc.args and exc.args[0] == 1060 and "ADD COLUMN" in statement.upper()):
                raise

    def _take_migration_lock(self, cur: Cursor) -> None:
        key = f"{self._target.database}\x00{self._prefix}".encode()
        name = "modelcache_migrate_" + hashlib.sha256(key).hexdigest()[:32]  # names are capped at 64
        deadline = time.monotonic() + MIGRATION_LOCK_WAIT_S
        while True:
            # Short waits in a loop, each well inside the connection's read timeout.
            cur.execute("SELECT GET_LOCK(%s, 1)", (name,))
            row = cur.fetchone()
            if row is not None and row[0] == 1:
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"mysql: another process held the migration lock for {MIGRATION_LOCK_WAIT_S:.0f}s")

    def ping(self) -> None:
        self._read(lambda cur: cur.execute("SELECT 1"))

    def close(self) -> None:
        self._pool.close()
