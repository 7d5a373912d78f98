"""The client distribution as a product backend installs it: `pip install './clients/python[langchain,openai,litellm]'`
into a fresh virtual environment (no system site packages; grpcio, protobuf and each framework come from the
index), nothing of the server in it with every extra (so with none, or any one), each integration importable
there, and the README's Python example run with it against `modelcache-svc serve`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import tomllib

import pytest
from packaging.requirements import Requirement

from tests.servers import ProcessServer

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = {"torch", "onnxruntime", "pymilvus", "milvus-lite", "transformers", "sentence-transformers", "faiss-cpu"}
EXTRAS = {"langchain": "langchain-core", "openai": "openai", "litellm": "litellm"}
COMPROMISED_LITELLM = ("1.82.7", "1.82.8", "1.107.0")  # releases on PyPI that carried malicious code


def run(args: list[str], cwd: Path, timeout: float = 120) -> str:
    # Out of the repository (cwd) and without PYTHONPATH: the venv must find modelcache_svc in its own
    # site-packages, never in this checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv holding only the client distribution and its dependencies."""
    home = tmp_path_factory.mktemp("client-venv")
    run([sys.executable, "-m", "venv", str(home / "venv")], home)
    python = home / "venv" / "bin" / "python"
    # The first install downloads grpcio, protobuf, grpcio-tools (the build) and the frameworks; pip's cache
    # makes later ones take seconds. Every extra at once: if their union holds nothing of the server, no one
    # of them, and not the client alone, does.
    extras = ",".join(EXTRAS)
    run([str(python), "-m", "pip", "install", "--quiet", f"{ROOT / 'clients' / 'python'}[{extras}]"], home, 600)
    return python


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessServer]:
    data = tmp_path_factory.mktemp("client-dist-server") / "data"
    # English only and no verifier: the example asks English questions, and the server starts faster.
    args = ["--data-dir", str(data), "--http-port", "0", "--resp-port", "0", "--embedding-model-cjk", "off",
            "--verifier", "off", "--verifier-cjk", "off"]
    server = ProcessServer(args)
    yield server
    server.terminate()


def readme_example() -> str:
    match = re.search(r"## Use it from Python\n.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert match, "README.md has no Python example under 'Use it from Python'"
    return match.group(1)


def test_the_client_installs_alone(client_python: Path) -> None:
    listed = json.loads(run([str(client_python), "-m", "pip", "list", "--format", "json"], client_python.parent))
    installed = {p["name"].lower().replace("_", "-") for p in listed}
    assert {"modelcache-svc-client", "grpcio", "protobuf", *EXTRAS.values()} <= installed
    assert installed & SERVER_ONLY == set()
    assert "modelcache-svc" not in installed  # the server's distribution
    where = client_python.parent.parent
    probe = (
        "import os; os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'; "
        "import importlib.util as u, modelcache_svc.client, modelcache_svc.integrations.langchain, "
        "modelcache_svc.integrations.openai, modelcache_svc.integrations.litellm; "
        "print(modelcache_svc.client.__file__); print(u.find_spec('modelcache_svc.cache'))"
    )
    client_file, server_spec = run([str(client_python), "-c", probe], where).split()[-2:]
    assert client_file.startswith(str(where))  # the venv's copy, not this checkout's
    assert server_spec == "None"  # no server module shipped


def test_each_extra_asks_for_its_framework_alone(client_python: Path) -> None:
    """The installed client's own metadata: grpcio and protobuf without an extra, one framework per extra,
    and a litellm pin that admits none of its compromised releases (the same in the server's pyproject)."""
    code = "import importlib.metadata as m, json; print(json.dumps(m.requires('modelcache-svc-client')))"
    requires = [Requirement(r) for r in json.loads(run([str(client_python), "-c", code], client_python.parent))]
    base = {r.name for r in requires if r.marker is None}
    assert base == {"grpcio", "protobuf"}
    for extra, framework in EXTRAS.items():
        wanted = [r.name for r in requires if r.marker is not None and r.marker.evaluate({"extra": extra})]
        assert wanted == [framework], (extra, wanted)
    (litellm,) = [r for r in requires if r.name == "litellm"]
    assert not any(litellm.specifier.contains(v) for v in COMPROMISED_LITELLM), litellm
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert str(litellm).split(";")[0].strip() in server["litellm"] and server["litellm"][0] in server["test"]


def test_the_readme_example_runs_with_the_client_alone(client_python: Path, server: ProcessServer) -> None:
    example = readme_example()
    assert "127.0.0.1:50051" in example
    script = client_python.parent.parent / "readme_example.py"
    script.write_text(example.replace("127.0.0.1:50051", server.target))
    printed = run([str(client_python), str(script)], script.parent).split()
    # The paraphrase is served from the cache: "semantic 0.9xx Hanoi."
    assert printed[0] == "semantic" and printed[-1] == "Hanoi.", printed
    assert 0.8 < float(printed[1]) <= 1.0
