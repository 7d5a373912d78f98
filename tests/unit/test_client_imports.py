"""The client and the integrations load nothing of the server (DESIGN §13): a product backend that imports
them needs neither the core nor its models, and the client distribution (clients/python) ships only the
modules allowed here."""

from __future__ import annotations

import json
import subprocess
import sys

IMPORTS = "modelcache_svc.client, modelcache_svc.integrations.langchain, modelcache_svc.integrations.openai"
# What clients/python/setup.py ships: a module of modelcache_svc outside this list would be missing there.
CLIENT_MODULES = ("modelcache_svc", "modelcache_svc.errors", "modelcache_svc.records", "modelcache_svc._wire")
CLIENT_PACKAGES = ("modelcache_svc._gen", "modelcache_svc.client", "modelcache_svc.integrations")
SERVER_PACKAGES = ("modelcache_svc.cache", "modelcache_svc.stores", "modelcache_svc.embedding")
HEAVY = ("torch", "onnxruntime", "pymilvus", "milvus_lite", "transformers", "sentence_transformers", "faiss")


def loaded_after(imports: str) -> list[str]:
    """sys.modules after the import, in a fresh interpreter (this one has loaded the server already)."""
    code = f"import sys, {imports}; import json; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    names: list[str] = json.loads(done.stdout.splitlines()[-1])
    return names


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_client_and_the_integrations_load_no_server_module() -> None:
    loaded = loaded_after(IMPORTS)
    assert [m for m in loaded if within(m, SERVER_PACKAGES)] == []
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    ours = [m for m in loaded if within(m, ("modelcache_svc",))]
    assert [m for m in ours if m not in CLIENT_MODULES and not within(m, CLIENT_PACKAGES)] == []


def test_importtime_names_no_server_module() -> None:
    # The check DESIGN §13 names, as written: python -X importtime.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {IMPORTS}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "modelcache_svc.client" in imported
    assert [m for m in imported if within(m, SERVER_PACKAGES) or m.split(".")[0] in HEAVY] == []
