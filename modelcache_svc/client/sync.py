"""CacheClient: the blocking client (grpc sync channel)."""

from __future__ import annotations

import time
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


class CacheClient(BaseClient):
    """Every method takes ``timeout=`` (seconds, the whole call's deadline, retries
    included; default: the client's) and raises modelcache_svc.errors classes."""

    def _connect(self) -> None:
        self._channel = grpc.insecure_channel(self.target, options=self._channel_options())
        self._stubs = {
            "cache": pb_grpc.CacheServiceStub(self._channel),
            "tenants": pb_grpc.TenantServiceStub(self._channel),
        }

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _run(self, call: Call[T], timeout: float | None) -> T:
        attempts = self.retry.start(self._deadline(call, timeout))
        method = getattr(self._stubs[call.service], call.method)
        while True:
            try:
                response = method(call.request, timeout=attempts.remaining(), metadata=self._metadata)
            except grpc.RpcError as exc:
                delay = attempts.next_delay(exc)
                if delay is None:
                    raise translate(exc) from exc
                time.sleep(delay)
            else:
                return call.convert(response)

    # -- cache ------------------------------------------------------------------------------
    def query(
        self,
        tenant: str,
        model: str,
        chat: ChatLike,
        *,
        similarity_threshold: float | None = None,
        top_k: int = 0,
        timeout: float | None = None,
    ) -> Hit:
        return self._run(calls.query(tenant, model, chat, similarity_threshold, top_k), timeout)

    def insert(
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
        return self._run(calls.insert_many(tenant, model, [entry]), timeout)[0]

    def insert_many(
        self, tenant: str, model: str, entries: Iterable[Entry], *, timeout: float | None = None
    ) -> list[InsertedId]:
        return self._run(calls.insert_many(tenant, model, entries), timeout)

    def feedback(
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
        return self._run(calls.feedback(tenant, model, entry_id, chat, verdict, answer), timeout)

    def remove(self, tenant: str, model: str, ids: Sequence[str], *, timeout: float | None = None) -> int:
        return self._run(calls.remove(tenant, model, ids), timeout)

    def clear(self, tenant: str, model: str | None = None, *, timeout: float | None = None) -> int:
        return self._run(calls.clear(tenant, model), timeout)

    def stats(
        self,
        tenant: str,
        model: str | None = None,
        *,
        window_seconds: int = 3600,
        top: int = 5,
        timeout: float | None = None,
    ) -> list[ScopeStats]:
        return self._run(calls.stats(tenant, model, window_seconds, top), timeout)

    # -- tenants and keys (the admin key, when auth is on) --------------------------------------
    def reindex(self, tenant: str, *, timeout: float | None = None) -> int:
        return self._run(calls.reindex(tenant), timeout)

    def repair(self, tenant: str | None = None, *, timeout: float | None = None) -> dict[str, int]:
        """Make the vector store agree with the scalar store (one tenant, or all)."""
        return self._run(calls.repair(tenant), timeout)

    def create_tenant(self, name: str, *, timeout: float | None = None, **config: Any) -> TenantInfo:
        return self._run(calls.create_tenant(name, config), timeout)

    def get_tenant(self, name: str, *, timeout: float | None = None) -> TenantInfo:
        return self._run(calls.get_tenant(name), timeout)

    def list_tenants(self, *, timeout: float | None = None) -> list[TenantInfo]:
        return self._run(calls.list_tenants(), timeout)

    def update_tenant(self, name: str, *, timeout: float | None = None, **changes: Any) -> TenantInfo:
        return self._run(calls.update_tenant(name, changes), timeout)

    def delete_tenant(self, name: str, *, timeout: float | None = None) -> int:
        return self._run(calls.delete_tenant(name), timeout)

    def create_api_key(self, tenant: str, *, timeout: float | None = None) -> ApiKey:
        return self._run(calls.create_api_key(tenant), timeout)

    def revoke_api_key(self, key_id: str, *, timeout: float | None = None) -> None:
        self._run(calls.revoke_api_key(key_id), timeout)

    # -- moving entries between servers (the admin key, when auth is on; modelcache-svc export / import) ----
    def export_page(
        self, tenant: str, model: str | None = None, *, after_id: str = "", limit: int = 0, vectors: bool = True,
        timeout: float | None = None,
    ) -> ExportedPage:
        """A page of a tenant's entries (of one model, if given) in id order, in the JSON form of an export
        file; pass ``page.next_after_id`` as ``after_id`` for the next, until it is ""."""
        return self._run(transfer.export_page(tenant, model, after_id, limit, vectors), timeout)

    def import_entries(
        self, tenant: str, entries: Sequence[Mapping[str, Any]], *, settings: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ImportResult:
        """Write exported entries (the JSON form) under their ids; the tenant is created with ``settings``
        when it does not exist. Entries already there are left as they are."""
        return self._run(transfer.import_entries(tenant, entries, settings), timeout)
