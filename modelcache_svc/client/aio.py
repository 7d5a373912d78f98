"""AsyncCacheClient: the same surface as CacheClient over grpc.aio, for asyncio products.

It may be built anywhere (at import time, say): its grpc.aio channel is opened
on the first call, because such a channel belongs to the event loop that was
running when it was made. Use one client per event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self, TypeVar

import grpc

from .._wire import pb_grpc
from . import _calls as calls
from . import _transfer as transfer
from ._base import BaseClient
from ._calls import ApiKey, Call, ChatLike, Entry, Hit, InsertedId, ScopeStats, TenantInfo, translate
from ._transfer import ExportedPage, ImportResult

T = TypeVar("T")


class AsyncCacheClient(BaseClient):
    """Every method is a coroutine, takes ``timeout=`` (seconds, the whole call's
    deadline, retries included) and raises modelcache_svc.errors classes."""

    def _connect(self) -> None:
        self._channel: grpc.aio.Channel | None = None  # opened by the first call, in its event loop
        self._stubs: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel, self._stubs = self._channel, None, {}
            await channel.close()

    def _stub(self, service: str) -> Any:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._channel_options())
            self._stubs = {
                "cache": pb_grpc.CacheServiceStub(self._channel),
                "tenants": pb_grpc.TenantServiceStub(self._channel),
            }
        return self._stubs[service]

    async def _run(self, call: Call[T], timeout: float | None) -> T:
        attempts = self.retry.start(self._deadline(call, timeout))
        method = getattr(self._stub(call.service), call.method)
        while True:
            try:
                response = await method(call.request, timeout=attempts.remaining(), metadata=self._metadata)
            except grpc.RpcError as exc:  # grpc.aio.AioRpcError is one
                delay = attempts.next_delay(exc)
                if delay is None:
                    raise translate(exc) from exc
                await asyncio.sleep(delay)
            else:
                return call.convert(response)

    # -- cache ------------------------------------------------------------------------------
    async def query(
        self,
        tenant: str,
        model: str,
        chat: ChatLike,
        *,
        similarity_threshold: float | None = None,
        top_k: int = 0,
        timeout: float | None = None,
    ) -> Hit:
        return await self._run(calls.query(tenant, model, chat, similarity_threshold, top_k), timeout)

    async def insert(
        self,
        tenant: str,
        model: str,
        chat: ChatLike,
        answer: str,
        *,
        ttl_seconds: int = 0,
        metadata: Mapping[str, str] | None = None,
        verifies: str = "",
        timeout: float | None = None,
    ) -> InsertedId:
        """``verifies``: the ``verify_entry_id`` of the miss this answer was fetched for (the service then
        compares it with that entry's answer and learns from it)."""
        entry = Entry(chat, answer, ttl_seconds, metadata or {}, verifies=verifies)
        return (await self._run(calls.insert_many(tenant, model, [entry]), timeout))[0]

    async def insert_many(
        self, tenant: str, model: str, entries: Iterable[Entry], *, timeout: float | None = None
    ) -> list[InsertedId]:
        return await self._run(calls.insert_many(tenant, model, entries), timeout)

    async def feedback(
        self,
        tenant: str,
        model: str,
        entry_id: str,
        chat: ChatLike,
        verdict: str,
        *,
        answer: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Report that the hit ``entry_id`` served for ``chat`` was "wrong" or "correct"; with "wrong",
        ``answer`` (optional) is the right one, cached for that chat. Returns what the service did."""
        return await self._run(calls.feedback(tenant, model, entry_id, chat, verdict, answer), timeout)

    async def remove(self, tenant: str, model: str, ids: Sequence[str], *, timeout: float | None = None) -> int:
        return await self._run(calls.remove(tenant, model, ids), timeout)

    async def clear(self, tenant: str, model: str | None = None, *, timeout: float | None = None) -> int:
        return await self._run(calls.clear(tenant, model), timeout)

    async def stats(
        self,
        tenant: str,
        model: str | None = None,
        *,
        window_seconds: int = 3600,
        top: int = 5,
        timeout: float | None = None,
    ) -> list[ScopeStats]:
        return await self._run(calls.stats(tenant, model, window_seconds, top), timeout)

    # -- tenants and keys (the admin key, when auth is on) --------------------------------------
    async def reindex(self, tenant: str, *, timeout: float | None = None) -> int:
        return await self._run(calls.reindex(tenant), timeout)

    async def repair(self, tenant: str | None = None, *, timeout: float | None = None) -> dict[str, int]:
        """Make the vector store agree with the scalar store (one tenant, or all)."""
        return await self._run(calls.repair(tenant), timeout)

    async def create_tenant(self, name: str, *, timeout: float | None = None, **config: Any) -> TenantInfo:
        return await self._run(calls.create_tenant(name, config), timeout)

    async def get_tenant(self, name: str, *, timeout: float | None = None) -> TenantInfo:
        return await self._run(calls.get_tenant(name), timeout)

    async def list_tenants(self, *, timeout: float | None = None) -> list[TenantInfo]:
        return await self._run(calls.list_tenants(), timeout)

    async def update_tenant(self, name: str, *, timeout: float | None = None, **changes: Any) -> TenantInfo:
        return await self._run(calls.update_tenant(name, changes), timeout)

    async def delete_tenant(self, name: str, *, timeout: float | None = None) -> int:
        return await self._run(calls.delete_tenant(name), timeout)

    async def create_api_key(self, tenant: str, *, timeout: float | None = None) -> ApiKey:
        return await self._run(calls.create_api_key(tenant), timeout)

    async def revoke_api_key(self, key_id: str, *, timeout: float | None = None) -> None:
        await self._run(calls.revoke_api_key(key_id), timeout)

    # -- moving entries between servers (the admin key, when auth is on; modelcache-svc export / import) ----
    async def export_page(
        self, tenant: str, model: str | None = None, *, after_id: str = "", limit: int = 0, vectors: bool = True,
        timeout: float | None = None,
    ) -> ExportedPage:
        """A page of a tenant's entries (of one model, if given) in id order, in the JSON form of an export
        file; pass ``page.next_after_id`` as ``after_id`` for the next, until it is ""."""
        return await self._run(transfer.export_page(tenant, model, after_id, limit, vectors), timeout)

    async def import_entries(
        self, tenant: str, entries: Sequence[Mapping[str, Any]], *, settings: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ImportResult:
        """Write exported entries (the JSON form) under their ids; the tenant is created with ``settings``
        when it does not exist. Entries already there are left as they are."""
        return await self._run(transfer.import_entries(tenant, entries, settings), timeout)
