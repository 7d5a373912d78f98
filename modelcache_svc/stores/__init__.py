"""Stores behind small interfaces (base.py); ``open_scalar_store`` picks one by URI."""

from __future__ import annotations

from ..errors import InvalidArgument
from .base import ScalarStore

SQLITE_SCHEME = "sqlite:///"
MYSQL_SCHEMES = ("mysql://", "mysql+pymysql://")
MEMORY_URI = "memory://"  # this process's memory: gone with it (memory.py)


def open_scalar_store(uri: str, namespace: str = "", *, timeout: float = 5.0) -> ScalarStore:
    """``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``, ``mysql://user:pass@host:port/db`` or
    ``memory://`` (a new empty store each call).

    timeout bounds each store call: SQLite's busy wait, MySQL's read and write
    timeouts (connecting gets at most 2 s of it).
    """
    if not isinstance(uri, str) or not uri:
        raise InvalidArgument(
            "scalar store uri is empty: use sqlite:///path/to/file.db or mysql://user:pass@host:port/db"
        )
    if uri == MEMORY_URI:
        from .memory_scalar import MemoryScalarStore

        return MemoryScalarStore(namespace)
    if uri.startswith(SQLITE_SCHEME):
        from .sqlite_store import SQLiteStore

        return SQLiteStore(uri[len(SQLITE_SCHEME) :], namespace, timeout=timeout)
    if uri.startswith(MYSQL_SCHEMES):
        # Imported here so an SQLite deployment never needs pymysql.
        from .mysql_store import MySQLStore

        return MySQLStore(
            uri,
            namespace,
            connect_timeout=min(2.0, timeout),
            read_timeout=timeout,
            write_timeout=timeout,
        )
    scheme = uri.split(":", 1)[0] if ":" in uri else uri
    raise InvalidArgument(
        f"scalar store uri scheme {scheme[:20]!r} is not supported: "
        "use sqlite:///path/to/file.db (sqlite:////abs/path.db), mysql://user:pass@host:port/db or memory://"
    )
