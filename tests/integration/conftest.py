from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcache_svc.config import Settings
from modelcache_svc.embedding import Embedder, load_embedder
from tests.conftest import store_uri
from tests.fake_openai import FakeOpenAI
from tests.servers import ThreadServer


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder("onnx", "packaged:all-MiniLM-L6-v2")


@pytest.fixture
def scalar_uri(scalar_store_uri: str) -> str:
    """The scalar store a server test runs on: SQLite, then MariaDB (tests/conftest.py)."""
    return scalar_store_uri


@pytest.fixture
def make_server(tmp_path: Path, scalar_uri: str, embedder: Embedder) -> Iterator[Callable[..., ThreadServer]]:
    """Start servers over this test's stores; each gets its own namespace on a shared MariaDB."""
    servers: list[ThreadServer] = []
    namespace = "t" + uuid.uuid4().hex[:10]

    def start(**overrides: Any) -> ThreadServer:
        values: dict[str, Any] = dict(
            data_dir=tmp_path / "data",
            grpc_port=0,
            http_port=0,
            resp_port=0,
            scalar_uri=scalar_uri,
            namespace=namespace,
        )
        values.update(overrides)
        server = ThreadServer(Settings(**values), embedder)
        servers.append(server)
        return server

    yield start
    for server in servers:
        try:
            server.stop()
        except Exception:
            pass


@pytest.fixture
def server(make_server: Callable[..., ThreadServer]) -> ThreadServer:
    return make_server()


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[ThreadServer]:
    """One server per module and store, for tests that change nothing another test reads: invalid calls,
    reads, writes that any order repeats to the same state. Anything else takes ``server``."""
    data = tmp_path_factory.mktemp("module-server")
    settings = Settings(data_dir=data / "data", grpc_port=0, http_port=0, resp_port=0,
                        scalar_uri=store_uri(request.param, request, data), namespace="m" + uuid.uuid4().hex[:10])
    server = ThreadServer(settings, embedder)
    yield server
    server.stop()


# The integrations' tests (LangChain, the OpenAI SDK): one cache server and one fake model per module.
@pytest.fixture(scope="module")
def cache_server(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[ThreadServer]:
    data = tmp_path_factory.mktemp("cache")
    settings = Settings(data_dir=data, grpc_port=0, http_port=0, resp_port=0, scalar_uri=f"sqlite:///{data}/s.db")
    server = ThreadServer(settings, embedder)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    yield fake
    fake.stop()
