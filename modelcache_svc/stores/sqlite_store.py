"""The scalar store in an SQLite file: the embedded default.

One connection per thread, in WAL mode, so reads run side by side and never
wait for a writer. Writes of this process queue on one lock before taking
SQLite's write lock, so threads never spin in SQLite's busy handler against
each other; busy_timeout still covers other processes on the same file.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from ..errors import InvalidArgument, Unavailable
from .migrations import load_migrations
from .sql_common import SQLITE, Cursor, SQLScalarStore

T = TypeVar("T")


class _Holder:
    """One thread's connection, closed when the thread (and so its holder) goes away."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._finalizer = weakref.finalize(self, _close_quietly, conn)

    def close(self) -> None:
        self._finalizer()


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        pass


def _unavailable(exc: sqlite3.Error) -> bool:
    """Errors of the file or the lock, as opposed to bugs (bad SQL, constraint)."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


class SQLiteStore(SQLScalarStore):
    dialect = SQLITE
    integrity_error = sqlite3.IntegrityError

    def __init__(self, path: str, namespace: str = "", *, timeout: float = 5.0) -> None:
        super().__init__(namespace)
        if not path or path == ":memory:" or path.startswith("file:"):
            # Each thread has its own connection, so an in-memory database would be one per thread.
            raise InvalidArgument(f"sqlite path {path!r} is not supported: give a file path")
        self._path = Path(path).expanduser()
        self._timeout = timeout
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._guard = threading.Lock()  # over _holders and _closed
        # Weak: a thread that ends drops its holder, and the finalizer closes its connection.
        self._holders: weakref.WeakSet[_Holder] = weakref.WeakSet()
        self._closed = False
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"sqlite: cannot create the folder of {self._path}: {exc}") from exc
        self._call(lambda conn: None)  # opens the file now: a bad path fails here, not on first use

    # -- connections -----------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise Unavailable("sqlite: the store is closed")
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is not None:
            return holder.conn
        # isolation_level=None: no implicit transactions; _write issues BEGIN IMMEDIATE itself.
        # timeout= is SQLite's busy_timeout. check_same_thread=False only so that close() and the
        # finalizer may close it; each connection is used by its own thread alone.
        conn = sqlite3.connect(str(self._path), timeout=self._timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL loses no committed transaction when the process dies (kill -9);
            # only an OS crash or power cut can lose the last ones. FULL would fsync every commit.
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        holder = _Holder(conn)
        with self._guard:
            if self._closed:
                conn.close()
                raise Unavailable("sqlite: the store is closed")
            self._holders.add(holder)
        self._local.holder = holder
        return conn

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._conn())
        except sqlite3.Error as exc:
            if _unavailable(exc):
                raise Unavailable(f"sqlite: {exc}") from exc
            raise

    def _read(self, fn: Callable[[Cursor], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            cur = conn.cursor()
            try:
                return fn(cur)
            finally:
                cur.close()

        return self._call(run)

    def _write(self, fn: Callable[[Cursor], T]) -> T:
        if not self._write_lock.acquire(timeout=self._timeout):
            raise Unavailable(f"sqlite: no write slot within {self._timeout}s")
        try:
            return self._call(lambda conn: self._transaction(conn, fn))
        finally:
            self._write_lock.release()

    @staticmethod
    def _transaction(conn: sqlite3.Connection, fn: Callable[[Cursor], T]) -> T:
        # IMMEDIATE takes the write lock up front, so a read-then-write never fails half-way
        # with SQLITE_BUSY, and two processes migrating at once run one after the other.
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.cursor()
        try:
            result = fn(cur)
            conn.execute("COMMIT")
            return result
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            cur.close()

    # -- lifecycle ------------------------------------------------------------------
    def migrate(self) -> list[int]:
        applied: list[int] = []
        for migration in load_migrations(self.dialect.name, self._prefix):
            # One transaction per version: DDL is transactional in SQLite.
            if self._write(partial(self._apply_if_pending, migration=migration)):
                applied.append(migration.version)
        return applied

    def ping(self) -> None:
        self._read(lambda cur: cur.execute("SELECT 1").fetchall())

    def close(self) -> None:
        with self._guard:
            self._closed = True
            holders = list(self._holders)
        for holder in holders:
            holder.close()
