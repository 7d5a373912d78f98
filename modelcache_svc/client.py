"""A Python client for modelcache_svc over gRPC.

    from modelcache_svc.client import CacheClient

    with CacheClient("127.0.0.1:50051") as cache:
        chat = [{"role": "user", "content": "What's the capital of Vietnam?"}]
        hit = cache.query("default", "my-model", chat)
        if not hit.hit:
            answer = call_the_model(chat)
            cache.insert("default", "my-model", chat, answer)

Errors come back as the service's own exception classes (errors.NotFound,
errors.InvalidArgument, ...). Only UNAVAILABLE is retried, with capped,
jittered backoff.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from . import errors
from .transport.grpc_server import STATUS
from .transport.proto import pb, pb_grpc

T = TypeVar("T")
ChatLike = Union[str, Sequence[Mapping[str, str]], Sequence[tuple[str, str]]]
_FROM_STATUS = {code: cls for cls, code in STATUS.items()}
_MATCH_NAMES = {pb.MISS: "miss", pb.EXACT: "exact", pb.SEMANTIC: "semantic", pb.MATCH_KIND_UNSPECIFIED: "miss"}
_POLICIES = {"lru": pb.LRU, "lfu": pb.LFU, "fifo": pb.FIFO}


@dataclass(frozen=True)
class Hit:
    hit: bool
    match: str
    answer: str = ""
    id: str = ""
    similarity: float = 0.0
    matched_question: str = ""


@dataclass(frozen=True)
class TenantInfo:
    name: str
    entries: int
    created_at: int
    similarity_threshold: float | None
    ttl_seconds: int
    max_entries: int
    eviction_policy: str
    embedding_model: str


@dataclass(frozen=True)
class Entry:
    messages: ChatLike
    answer: str
    ttl_seconds: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)


def to_messages(chat: ChatLike) -> list[pb.ChatMessage]:
    if isinstance(chat, str):
        return [pb.ChatMessage(role="user", content=chat)]
    out = []
    for m in chat:
        if isinstance(m, Mapping):
            out.append(pb.ChatMessage(role=str(m.get("role", "")), content=str(m.get("content", ""))))
        else:
            role, content = m
            out.append(pb.ChatMessage(role=role, content=content))
    return out


def _hit(r: pb.QueryResponse) -> Hit:
    return Hit(r.hit, _MATCH_NAMES.get(r.match, "miss"), r.answer, r.id, r.similarity, r.matched_question)


def _tenant(t: pb.Tenant) -> TenantInfo:
    c = t.config
    policy = {v: k for k, v in _POLICIES.items()}.get(c.eviction_policy, "lru")
    return TenantInfo(
        name=t.name,
        entries=t.entries,
        created_at=t.created_at_unix,
        similarity_threshold=c.similarity_threshold if c.HasField("similarity_threshold") else None,
        ttl_seconds=c.ttl_seconds,
        max_entries=c.max_entries,
        eviction_policy=policy,
        embedding_model=c.embedding_model,
    )


def tenant_config(**config: Any) -> tuple[pb.TenantConfig, list[str]]:
    """A TenantConfig message and the field names given (for update masks)."""
    message = pb.TenantConfig()
    paths = []
    for name, value in config.items():
        if value is None:
            continue
        paths.append(name)
        if name == "eviction_policy":
            try:
                message.eviction_policy = _POLICIES[str(value).lower()]
            except KeyError as exc:
                raise errors.InvalidArgument(f"eviction_policy must be one of {', '.join(_POLICIES)}") from exc
        elif name == "similarity_threshold":
            message.similarity_threshold = float(value)
        elif name in ("ttl_seconds", "max_entries"):
            setattr(message, name, int(value))
        elif name == "embedding_model":
            message.embedding_model = str(value)
        else:
            raise errors.InvalidArgument(f"unknown tenant setting {name!r}")
    return message, paths


def translate(exc: grpc.RpcError) -> errors.CacheError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    cls = _FROM_STATUS.get(code, errors.CacheError)
    error = cls(details or code.name)
    error.code = code  # type: ignore[attr-defined]
    return error


class CacheClient:
    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        api_key: str | None = None,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
    ) -> None:
        self._channel = grpc.insecure_channel(target)
        self._cache = pb_grpc.CacheServiceStub(self._channel)
        self._tenants = pb_grpc.TenantServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff

    def __enter__(self) -> CacheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt >= self._retries:
                    raise translate(exc) from exc
            delay = min(self._max_backoff, self._backoff * (2**attempt))
            time.sleep(delay * (0.5 + random.random() / 2))
            attempt += 1

    # -- cache ------------------------------------------------------------------
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
        request = pb.QueryRequest(scope=pb.Scope(tenant=tenant, model=model), messages=to_messages(chat), top_k=top_k)
        if similarity_threshold is not None:
            request.similarity_threshold = similarity_threshold
        return _hit(self._call(self._cache.Query, request, timeout))

    def insert(
        self,
        tenant: str,
        model: str,
        chat: ChatLike,
        answer: str,
        *,
        ttl_seconds: int = 0,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        return self.insert_many(tenant, model, [Entry(chat, answer, ttl_seconds, metadata or {})], timeout=timeout)[0]

    def insert_many(self, tenant: str, model: str, entries: Iterable[Entry], *, timeout: float | None = None) -> list[str]:
        request = pb.InsertRequest(
            scope=pb.Scope(tenant=tenant, model=model),
            entries=[
                pb.CacheEntry(
                    messages=to_messages(e.messages), answer=e.answer, ttl_seconds=e.ttl_seconds, metadata=dict(e.metadata)
                )
                for e in entries
            ],
        )
        return list(self._call(self._cache.Insert, request, timeout).ids)

    def remove(self, tenant: str, model: str, ids: Sequence[str], *, timeout: float | None = None) -> int:
        request = pb.RemoveRequest(scope=pb.Scope(tenant=tenant, model=model), ids=list(ids))
        return int(self._call(self._cache.Remove, request, timeout).removed)

    def clear(self, tenant: str, model: str | None = None, *, timeout: float | None = None) -> int:
        request = pb.ClearRequest(scope=pb.Scope(tenant=tenant, model=model or ""))
        return int(self._call(self._cache.Clear, request, timeout).removed)

    def stats(self, tenant: str, model: str | None = None, *, window_seconds: int = 3600, top: int = 5) -> list[dict[str, Any]]:
        request = pb.StatsRequest(scope=pb.Scope(tenant=tenant, model=model or ""), window_seconds=window_seconds, top=top)
        response = self._call(self._cache.Stats, request, None)
        return [
            {
                "tenant": s.tenant,
                "model": s.model,
                "entries": s.entries,
                "queries": s.queries,
                "exact_hits": s.exact_hits,
                "semantic_hits": s.semantic_hits,
                "misses": s.misses,
                "errors": s.errors,
                "hit_ratio": s.hit_ratio,
                "p50_latency_ms": s.p50_latency_ms,
                "p99_latency_ms": s.p99_latency_ms,
                "top_entries": [{"id": t.id, "question": t.question, "hit_count": t.hit_count} for t in s.top_entries],
            }
            for s in response.scopes
        ]

    # -- tenants and keys -----------------------------------------------------------
    def reindex(self, tenant: str, *, timeout: float = 600.0) -> int:
        return int(self._call(self._tenants.Reindex, pb.ReindexRequest(tenant=tenant), timeout).reindexed)

    def repair(self, tenant: str | None = None, *, timeout: float = 600.0) -> dict[str, int]:
        r = self._call(self._tenants.Repair, pb.RepairRequest(tenant=tenant or ""), timeout)
        return {"rows_checked": r.rows_checked, "vectors_added": r.vectors_added, "vectors_removed": r.vectors_removed}

    def create_tenant(self, name: str, **config: Any) -> TenantInfo:
        message, _ = tenant_config(**config)
        return _tenant(self._call(self._tenants.CreateTenant, pb.CreateTenantRequest(name=name, config=message), None))

    def get_tenant(self, name: str) -> TenantInfo:
        return _tenant(self._call(self._tenants.GetTenant, pb.GetTenantRequest(name=name), None))

    def list_tenants(self) -> list[TenantInfo]:
        return [_tenant(t) for t in self._call(self._tenants.ListTenants, pb.ListTenantsRequest(), None).tenants]

    def update_tenant(self, name: str, **changes: Any) -> TenantInfo:
        message, paths = tenant_config(**changes)
        if not paths:
            raise errors.InvalidArgument("update_tenant needs at least one setting to change")
        request = pb.UpdateTenantRequest(name=name, config=message, update_mask=FieldMask(paths=paths))
        return _tenant(self._call(self._tenants.UpdateTenant, request, None))

    def delete_tenant(self, name: str) -> int:
        return int(self._call(self._tenants.DeleteTenant, pb.DeleteTenantRequest(name=name), None).removed)

    def create_api_key(self, tenant: str) -> tuple[str, str]:
        key = self._call(self._tenants.CreateApiKey, pb.CreateApiKeyRequest(tenant=tenant), None)
        return key.id, key.key

    def revoke_api_key(self, key_id: str) -> None:
        self._call(self._tenants.RevokeApiKey, pb.RevokeApiKeyRequest(id=key_id), None)
