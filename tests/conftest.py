"""Fixtures shared by every test folder.

MariaDB/MySQL: MODELCACHE_TEST_MYSQL names the server (default
mysql://root@127.0.0.1:3306); each test module gets its own database
``mc_test_<hex>``, dropped afterwards. Tests needing it are skipped when no
server answers and MODELCACHE_TEST_ALLOW_NO_MYSQL=1 is set; otherwise they
fail, since CI always has MariaDB and a silent skip would hide a broken store.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from modelcache_svc.stores import open_scalar_store
from modelcache_svc.stores.base import ScalarStore

MYSQL_SERVER = os.environ.get("MODELCACHE_TEST_MYSQL", "mysql://root@127.0.0.1:3306").rstrip("/")


def _mysql_admin() -> Any:
    import pymysql

    parts = urlsplit(MYSQL_SERVER)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        connect_timeout=2,
        autocommit=True,
    )


@pytest.fixture(scope="module")
def mysql_uri() -> Iterator[str]:
    """A database name on the test server, not created: the store creates it."""
    import pymysql

    try:
        _mysql_admin().close()
    except pymysql.err.MySQLError as exc:
        message = f"no MariaDB/MySQL at {urlsplit(MYSQL_SERVER).netloc}: {exc}"
        if os.environ.get("MODELCACHE_TEST_ALLOW_NO_MYSQL") == "1":
            pytest.skip(message)
        pytest.fail(message)
    name = "mc_test_" + secrets.token_hex(6)
    yield f"{MYSQL_SERVER}/{name}"
    conn = _mysql_admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def store_uri(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URI of a scalar store of this kind: a file under tmp_path, this module's MariaDB database, memory."""
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'scalar.db'}"
    uri: str = request.getfixturevalue("mysql_uri")
    return uri


@pytest.fixture(params=["sqlite", "mariadb"])
def scalar_store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_uri(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "mariadb", "memory"])
def scalar_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ScalarStore]:
    """A migrated store with a namespace of its own (databases are shared within a module); the store
    contract (test_scalar_stores.py, test_feedback_store.py) holds the in-memory store to it too."""
    store = open_scalar_store(store_uri(request.param, request, tmp_path), "t" + uuid.uuid4().hex[:12])
    store.migrate()
    yield store
    store.close()
