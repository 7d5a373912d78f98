"""errors.TABLE: a row for every error class, and every front end (gRPC, RESP, the ModelCache endpoint, the
Python client) answers what the table says, so a row changed in the table changes all of them."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from modelcache_svc import errors
from modelcache_svc.client import translate
from modelcache_svc.transport.grpc_server import status_of
from modelcache_svc.transport.modelcache_compat import TYPES, ModelCacheEndpoint
from modelcache_svc.transport.resp_server import RespServer, Spec

CLASSES = [c for c in vars(errors).values() if inspect.isclass(c) and issubclass(c, errors.CacheError)]


def test_every_error_class_has_a_row() -> None:
    assert len(CLASSES) == 8
    assert set(errors.TABLE) == set(CLASSES)
    for codes in [*errors.TABLE.values(), errors.INTERNAL]:
        assert codes.grpc in grpc.StatusCode.__members__
        assert codes.resp.isalpha() and codes.resp.isupper()
        assert set(codes.compat) == set(TYPES)


def test_the_codes_callers_rely_on() -> None:
    rows = {cls.__name__: (c.grpc, c.resp, c.compat["query"], c.compat["insert"]) for cls, c in errors.TABLE.items()}
    assert rows == {
        "CacheError": ("UNKNOWN", "ERR", 201, 301),
        "InvalidArgument": ("INVALID_ARGUMENT", "ERR", 201, 301),
        "NotFound": ("NOT_FOUND", "ERR", 201, 301),
        "AlreadyExists": ("ALREADY_EXISTS", "ERR", 201, 301),
        "Unauthenticated": ("UNAUTHENTICATED", "NOAUTH", 201, 301),
        "PermissionDenied": ("PERMISSION_DENIED", "NOPERM", 201, 301),
        "ResourceExhausted": ("RESOURCE_EXHAUSTED", "ERR", 202, 302),
        "Unavailable": ("UNAVAILABLE", "TRYAGAIN", 202, 302),
    }
    assert errors.codes_of(RuntimeError("a bug")) == errors.INTERNAL
    assert errors.INTERNAL.compat == {"query": 202, "insert": 303, "remove": 402, "register": 502}


def test_a_subclass_answers_as_its_parent() -> None:
    class StoreTimeout(errors.Unavailable):
        pass

    assert errors.codes_of(StoreTimeout("slow")) == errors.TABLE[errors.Unavailable]


def test_the_client_raises_the_class_of_each_status() -> None:
    for cls, codes in errors.TABLE.items():
        assert errors.error_for_status(codes.grpc) is cls
    assert errors.error_for_status("DEADLINE_EXCEEDED") is errors.CacheError


# -- every front end reads the table: a row changed there changes each answer --------------------
ODD = errors.Codes("ABORTED", "ODDPREFIX", {"query": 901, "insert": 902, "remove": 903, "register": 904})


@pytest.fixture
def odd_not_found(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(errors.TABLE, errors.NotFound, ODD)  # type: ignore[arg-type]
    yield


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "no such tenant"


def _resp_reply(exc: Exception) -> bytes:
    async def fail(conn: Any, args: Any) -> Any:
        raise exc

    server = RespServer(core=None)  # type: ignore[arg-type]  # a command without auth never reads the core
    server.commands["FAIL"] = Spec(fail, 1)
    return asyncio.run(server.execute(None, [b"FAIL"]))  # type: ignore[arg-type]


def _compat_codes(exc: Exception) -> list[int]:
    endpoint = ModelCacheEndpoint(SimpleNamespace(settings=SimpleNamespace(modelcache_compat_tenant="default")))  # type: ignore[arg-type]
    return [endpoint._failure(kind, exc, time.perf_counter())["errorCode"] for kind in TYPES]


@pytest.mark.usefixtures("odd_not_found")
def test_the_transports_and_the_client_answer_what_the_table_says() -> None:
    exc = errors.NotFound("no such tenant")
    assert status_of(exc) == grpc.StatusCode.ABORTED
    assert _resp_reply(exc) == b"-ODDPREFIX no such tenant\r\n"
    assert _compat_codes(exc) == [901, 902, 903, 904]
    assert type(translate(_RpcError(grpc.StatusCode.ABORTED))) is errors.NotFound


def test_a_bug_is_internal_everywhere() -> None:
    bug = RuntimeError("secret details")
    assert status_of(bug) == grpc.StatusCode.INTERNAL
    assert _resp_reply(bug) == b"-ERR internal error\r\n"
    assert _compat_codes(bug) == [202, 303, 402, 502]
