"""Builds modelcache-svc-client from the repository's own sources, so the client is written once.

From a checkout, each build copies the client's modules into staged/ and generates the gRPC stubs there
from proto/ (grpcio-tools is a build requirement); an sdist carries staged/ as it was. The
dependency floors are read from the stubs: generated code needs a grpcio and a protobuf at least as new as
the generator's, and a protobuf of the same major version.
"""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STAGE = HERE / "staged"  # not build/: sdist leaves build/ out
# What the client and the integrations import (tests/unit/test_client_imports.py keeps this list honest).
MODULES = ("__init__.py", "errors.py", "records.py", "_wire.py")
PACKAGES = ("client", "integrations")
PROTO = "modelcache/v1/modelcache.proto"
GEN = STAGE / "modelcache_svc" / "_gen" / "modelcache" / "v1"


def generate_stubs() -> None:
    from grpc_tools import protoc

    # The virtual include path makes the stubs' imports absolute inside modelcache_svc, as `make proto` does.
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc", f"-Imodelcache_svc/_gen={REPO / 'proto'}", f"-I{well_known}",
        f"--python_out={STAGE}", f"--pyi_out={STAGE}", f"--grpc_python_out={STAGE}", f"modelcache_svc/_gen/{PROTO}",
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on proto/{PROTO}")


def stage() -> None:
    source = REPO / "modelcache_svc"
    if not (source / "client").is_dir() or not (REPO / "proto" / PROTO).is_file():
        if not GEN.is_dir():
            raise SystemExit(f"neither the repository's sources beside {HERE} nor a staged/ folder")
        return  # an sdist: staged when it was made
    shutil.rmtree(STAGE, ignore_errors=True)
    target = STAGE / "modelcache_svc"
    target.mkdir(parents=True)
    for name in MODULES:
        shutil.copy2(source / name, target / name)
    for package in PACKAGES:
        shutil.copytree(source / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    generate_stubs()


def found(pattern: str, path: Path) -> str:
    match = re.search(pattern, path.read_text())
    if match is None:
        raise SystemExit(f"{path}: no {pattern!r}")
    return match.group(1)


def dependencies() -> list[str]:
    grpc_version = found(r"GRPC_GENERATED_VERSION = '([\d.]+)'", GEN / "modelcache_pb2_grpc.py")
    protobuf_version = found(r"Protobuf Python Version: ([\d.]+)", GEN / "modelcache_pb2.py")
    major = int(protobuf_version.split(".")[0])
    return [f"grpcio>={grpc_version}", f"protobuf>={protobuf_version},<{major + 1}"]


stage()
setup(
    version=found(r'__version__ = "([^"]+)"', STAGE / "modelcache_svc" / "__init__.py"),
    install_requires=dependencies(),
)
