"""CacheClient and AsyncCacheClient against a real server.

Every scenario runs once per client: it is written as a coroutine and each
call goes through ``settle()``, which awaits what the async client returns and
passes the sync client's results through. So both clients are held to one
surface and one behaviour.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import pytest

from modelcache_svc import errors
from modelcache_svc.client import AsyncCacheClient, CacheClient, Entry, Hit, Retry, TenantInfo
from tests.servers import ThreadServer, free_port

T = TypeVar("T")
Client = CacheClient | AsyncCacheClient
KINDS = ["sync", "async"]

MODEL = "gpt-4o-2024.08"
Q = "How do I reverse a list in Python?"
PARAPHRASE = "How can I reverse a Python list?"
ANSWER = "Use my_list.reverse() or my_list[::-1]."
ADMIN = "admin-secret-key"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def settle(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


def make_client(kind: str, target: str, **kwargs: Any) -> Client:
    return CacheClient(target, **kwargs) if kind == "sync" else AsyncCacheClient(target, **kwargs)


def run(kind: str, target: str, scenario: Callable[[Client], Coroutine[Any, Any, T]], **kwargs: Any) -> T:
    """Run a scenario with a fresh client of the kind, closed afterwards."""

    async def main() -> T:
        client = make_client(kind, target, **kwargs)
        try:
            return await scenario(client)
        finally:
            await settle(client.close())

    return asyncio.run(main())


class Retries:
    """An on_retry hook that counts."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, float]] = []
        self._lock = threading.Lock()

    def __call__(self, n: int, error: errors.CacheError, delay: float) -> None:
        with self._lock:
            self.calls.append((n, type(error).__name__, delay))


@pytest.mark.parametrize("kind", KINDS)
def test_query_insert_hits_remove_clear_and_stats(make_server: Callable[..., ThreadServer], kind: str) -> None:
    server = make_server()

    async def scenario(c: Client) -> None:
        miss = await settle(c.query("default", MODEL, user(Q)))
        assert miss == Hit(False, "miss")

        entry_id = await settle(c.insert("default", MODEL, user(Q), ANSWER, metadata={"source": "test"}))
        exact = await settle(c.query("default", MODEL, user(Q)))
        assert (exact.hit, exact.match, exact.answer, exact.id) == (True, "exact", ANSWER, entry_id)
        semantic = await settle(c.query("default", MODEL, user(PARAPHRASE)))
        assert (semantic.match, semantic.answer, semantic.id, semantic.matched_question) == (
            "semantic",
            ANSWER,
            entry_id,
            Q,
        )
        assert 0.8 <= semantic.similarity < 1.0

        many = [
            Entry(user("What is the capital of France?"), "Paris."),
            Entry([("system", "Answer in French."), ("user", "What is the capital of France?")], "Paris, bien sûr."),
            Entry("What is the boiling point of water at sea level?", "100 °C.", ttl_seconds=3600),
        ]
        ids = await settle(c.insert_many("default", MODEL, many))
        assert len(ids) == 3 and len(set(ids)) == 3
        assert (await settle(c.query("default", MODEL, "What is the capital of France?"))).answer == "Paris."
        french = [{"role": "system", "content": "Answer in French."}, *user("What is the capital of France?")]
        assert (await settle(c.query("default", MODEL, french))).answer == "Paris, bien sûr."

        assert await settle(c.remove("default", MODEL, [ids[0], "0" * 32])) == 1
        assert not (await settle(c.query("default", MODEL, "What is the capital of France?"))).hit
        assert await settle(c.remove("default", MODEL, [ids[0]])) == 0  # already gone

        (scope,) = await settle(c.stats("default", MODEL, window_seconds=600, top=2))
        assert (scope["tenant"], scope["model"], scope["entries"]) == ("default", MODEL, 3)
        assert (scope["exact_hits"], scope["semantic_hits"], scope["misses"]) == (3, 1, 2)
        assert scope["queries"] == 6 and scope["hit_ratio"] == pytest.approx(4 / 6)
        assert [t["id"] for t in scope["top_entries"]][:1] == [entry_id]  # hit twice, the most

        await settle(c.insert("default", "other-model", user(Q), "other"))
        assert await settle(c.clear("default", MODEL)) == 3
        assert not (await settle(c.query("default", MODEL, user(Q)))).hit
        assert (await settle(c.query("default", "other-model", user(Q)))).answer == "other"
        assert await settle(c.clear("default")) == 1  # no model: every model of the tenant

    run(kind, server.target, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_tenants_and_keys_with_auth_on(make_server: Callable[..., ThreadServer], kind: str) -> None:
    server = make_server(admin_key=ADMIN)

    async def as_admin(c: Client) -> tuple[str, str]:
        acme = await settle(c.create_tenant("acme", similarity_threshold=0.9, ttl_seconds=60, max_entries=100))
        assert isinstance(acme, TenantInfo)
        assert (acme.name, acme.similarity_threshold, acme.ttl_seconds, acme.max_entries) == (
            "acme",
            pytest.approx(0.9),
            60,
            100,
        )
        assert acme.eviction_policy == "lru"
        with pytest.raises(errors.AlreadyExists):
            await settle(c.create_tenant("acme"))
        updated = await settle(c.update_tenant("acme", eviction_policy="lfu", ttl_seconds=0))
        assert (updated.eviction_policy, updated.ttl_seconds, updated.max_entries) == ("lfu", 0, 100)
        await settle(c.insert("acme", MODEL, user(Q), ANSWER))
        assert (await settle(c.get_tenant("acme"))).entries == 1
        assert {t.name for t in await settle(c.list_tenants())} == {"default", "acme"}
        assert await settle(c.reindex("acme")) == 0  # already embedded by the tenant's model
        key = (await settle(c.create_api_key("acme"))).key
        doomed = await settle(c.create_api_key("acme"))
        await settle(c.revoke_api_key(doomed.id))
        with pytest.raises(errors.NotFound):
            await settle(c.revoke_api_key("f" * 32))
        return key, doomed.key

    key, revoked_key = run(kind, server.target, as_admin, api_key=ADMIN)

    async def as_tenant(c: Client) -> None:
        assert (await settle(c.query("acme", MODEL, user(Q)))).answer == ANSWER
        with pytest.raises(errors.PermissionDenied):
            await settle(c.query("default", MODEL, user(Q)))
        with pytest.raises(errors.PermissionDenied):
            await settle(c.list_tenants())
        with pytest.raises(errors.PermissionDenied):
            await settle(c.create_api_key("acme"))

    run(kind, server.target, as_tenant, api_key=key)

    async def refused(c: Client) -> None:
        with pytest.raises(errors.Unauthenticated):
            await settle(c.query("acme", MODEL, user(Q)))

    run(kind, server.target, refused)
    run(kind, server.target, refused, api_key=revoked_key)

    async def delete(c: Client) -> None:
        assert await settle(c.delete_tenant("acme")) == 1
        with pytest.raises(errors.NotFound):
            await settle(c.get_tenant("acme"))

    run(kind, server.target, delete, api_key=ADMIN)


@pytest.mark.parametrize("kind", KINDS)
def test_a_per_call_timeout_is_the_calls_deadline(make_server: Callable[..., ThreadServer], kind: str) -> None:
    server = make_server()
    retries = Retries()
    # 64 new questions to embed: a few hundred milliseconds of work, far above 20 ms.
    batch = [Entry(user(f"Question number {i} about topic {i * 7}?"), f"answer {i}") for i in range(64)]

    async def scenario(c: Client) -> None:
        start = time.monotonic()
        with pytest.raises(errors.CacheError) as caught:
            await settle(c.insert_many("default", MODEL, batch, timeout=0.02))
        assert time.monotonic() - start < 2.0  # not the client's 30 s default
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
        assert type(caught.value) is errors.CacheError  # no class of its own: the base, with its code
        assert retries.calls == []  # only UNAVAILABLE is retried

    run(kind, server.target, scenario, timeout=30.0, retry=Retry(3, on_retry=retries))

    async def per_call_beats_default(c: Client) -> None:
        # The client's default (20 ms) would cut it; the call's own timeout lets it finish.
        ids = await settle(c.insert_many("default", MODEL, batch, timeout=60.0))
        assert len(ids) == 64

    run(kind, server.target, per_call_beats_default, timeout=0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_unavailable_is_retried_until_the_server_is_up(make_server: Callable[..., ThreadServer], kind: str) -> None:
    port = free_port()  # nothing listens there yet
    target = f"127.0.0.1:{port}"

    async def query(c: Client) -> Hit:
        return await settle(c.query("default", MODEL, user(Q), timeout=60.0))

    for retries in (0, 3):
        counted = Retries()
        with pytest.raises(errors.Unavailable) as caught:
            run(kind, target, query, retry=Retry(retries, backoff=0.01, max_backoff=0.05, on_retry=counted))
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert [n for n, _name, _delay in counted.calls] == list(range(1, retries + 1))
        assert all(name == "Unavailable" and 0 < delay <= 0.05 for _n, name, delay in counted.calls)

    # A deadline shorter than the backoff ends the retries early: the caller's deadline wins.
    counted = Retries()
    start = time.monotonic()
    with pytest.raises(errors.Unavailable):
        run(
            kind,
            target,
            lambda c: settle(c.query("default", MODEL, user(Q), timeout=0.3)),
            retry=Retry(100, backoff=0.2, max_backoff=0.2, on_retry=counted),
        )
    assert time.monotonic() - start < 1.0 and len(counted.calls) <= 2

    # The server comes up while the client is backing off; the call then succeeds.
    counted = Retries()
    policy = Retry(200, backoff=0.05, max_backoff=0.25, on_retry=counted)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(run, kind, target, query, retry=policy)
        time.sleep(0.5)
        assert not pending.done()
        make_server(grpc_port=port)
        assert pending.result(timeout=90) == Hit(False, "miss")
    assert len(counted.calls) >= 2


@pytest.mark.parametrize("kind", KINDS)
def test_errors_map_to_the_service_classes(make_server: Callable[..., ThreadServer], kind: str) -> None:
    server = make_server()
    counted = Retries()

    async def scenario(c: Client) -> None:
        cases: list[tuple[type[errors.CacheError], grpc.StatusCode, Callable[[], Any]]] = [
            (errors.NotFound, grpc.StatusCode.NOT_FOUND, lambda: c.query("nobody", MODEL, user(Q))),
            (errors.NotFound, grpc.StatusCode.NOT_FOUND, lambda: c.get_tenant("nobody")),
            (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, lambda: c.query("default", MODEL, [])),
            (
                errors.InvalidArgument,
                grpc.StatusCode.INVALID_ARGUMENT,
                lambda: c.query("default", MODEL, [{"role": "wizard", "content": "hi"}]),
            ),
            (
                errors.InvalidArgument,
                grpc.StatusCode.INVALID_ARGUMENT,
                lambda: c.query("default", "bad model!", user(Q)),
            ),
            (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, lambda: c.insert("default", MODEL, user(Q), "")),
            (
                errors.InvalidArgument,
                grpc.StatusCode.INVALID_ARGUMENT,
                lambda: c.remove("default", MODEL, ["not-an-id"]),
            ),
            (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, lambda: c.create_tenant("default")),
        ]
        for cls, code, call in cases:
            with pytest.raises(cls) as caught:
                await settle(call())
            assert caught.value.code == code  # type: ignore[attr-defined]
            assert isinstance(caught.value, errors.CacheError) and caught.value.message
        # Refused on this side, before any RPC: not a setting a tenant has.
        with pytest.raises(errors.InvalidArgument):
            await settle(c.create_tenant("x", colour="blue"))
        with pytest.raises(errors.InvalidArgument):
            await settle(c.update_tenant("default"))

    run(kind, server.target, scenario, retry=Retry(3, on_retry=counted))
    assert counted.calls == []  # answers, not outages: never retried
