"""What both clients share: typed results, request building, response conversion.

Each public method of CacheClient and AsyncCacheClient is one line: it asks a
builder here for a ``Call`` (which stub method, which request message, how to
turn the response into a typed result) and hands it to its own transport loop.
So a request or a result is shaped in exactly one place, whichever client
sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, NamedTuple, TypedDict, TypeVar

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from itertools import zip_longest

# Only what the client distribution ships (clients/python): no module of the server's.
from .. import errors
from .._wire import pb, policy_from_pb, policy_to_pb
from ..records import policy_from_dict, policy_to_dict

T = TypeVar("T")
ChatLike = str | Sequence[Mapping[str, str]] | Sequence[tuple[str, str]]
Service = Literal["cache", "tenants"]

_MATCH_NAMES = {pb.MISS: "miss", pb.EXACT: "exact", pb.SEMANTIC: "semantic", pb.MATCH_KIND_UNSPECIFIED: "miss"}
_POLICIES = {"lru": pb.LRU, "lfu": pb.LFU, "fifo": pb.FIFO}
_POLICY_NAMES = {v: k for k, v in _POLICIES.items()}


# -- typed results ----------------------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    hit: bool
    match: str  # "miss" | "exact" | "semantic"
    answer: str = ""
    id: str = ""
    similarity: float = 0.0
    matched_question: str = ""
    # Non-empty on a miss the cacheability policy decided: user_specific, time_sensitive, pii, rule:<name>.
    uncacheable: str = ""
    # Set on a miss the service answers in order to learn: call the model as on any miss and write the answer
    # back with ``insert(..., verifies=hit.verify_entry_id)``.
    verify_entry_id: str = ""


class InsertedId(str):
    """An entry id as Insert returned it: "" when the cacheability policy refused the entry, and then
    ``.uncacheable`` names the class that did ("" for a stored entry). Compares and prints as the id."""

    uncacheable: str

    def __new__(cls, value: str, uncacheable: str = "") -> InsertedId:
        obj = super().__new__(cls, value)
        obj.uncacheable = uncacheable
        return obj


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
    # {"user_specific": "refuse", "time_sensitive": ..., "pii": ..., "short_ttl_seconds": 0, "rules": [...]}
    cacheability: dict[str, Any] = field(default_factory=dict)
    max_error_rate: float | None = None
    verify_rate: float = 0.0
    verifier: bool | None = None  # None: the server's setting
    verifier_cutoff: float | None = None  # None: the model's fitted cut-off
    cross_language: bool = False  # True: an entry may answer questions of other languages


@dataclass(frozen=True)
class Entry:
    messages: ChatLike
    answer: str
    ttl_seconds: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)
    verifies: str = ""  # the verify_entry_id of the miss this answer was fetched for


class ApiKey(NamedTuple):
    """A new key; a tuple so ``key_id, key = client.create_api_key(...)`` keeps working."""

    id: str
    key: str


class TopEntry(TypedDict):
    id: str
    question: str
    hit_count: int


class ScopeStats(TypedDict):
    """A dict (printable as JSON as it is) with typed keys."""

    tenant: str
    model: str
    entries: int
    queries: int
    exact_hits: int
    semantic_hits: int
    misses: int
    errors: int
    hit_ratio: float
    p50_latency_ms: float
    p99_latency_ms: float
    top_entries: list[TopEntry]


# -- one call, described ------------------------------------------------------------------
@dataclass(frozen=True)
class Call(Generic[T]):
    service: Service
    method: str  # the stub attribute: "Query", "CreateTenant", ...
    request: Message
    convert: Callable[[Any], T]
    default_timeout: float | None = None  # overrides the client's default (a reindex is long)


def translate(exc: grpc.RpcError) -> errors.CacheError:
    """The service's own exception class for a gRPC error; ``.code`` keeps the status.

    Codes without a class of their own (DEADLINE_EXCEEDED, CANCELLED, INTERNAL)
    come back as the base CacheError, so one ``except CacheError`` catches all.
    """
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    cls = errors.error_for_status(getattr(code, "name", "UNKNOWN"))
    error = cls(details or getattr(code, "name", "UNKNOWN"))
    error.code = code  # type: ignore[attr-defined]
    return error


def to_messages(chat: ChatLike) -> list[pb.ChatMessage]:
    """A question string, a list of {role, content} or a list of (role, content)."""
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
        elif name in ("similarity_threshold", "max_error_rate", "verify_rate"):
            setattr(message, name, float(value))
        elif name in ("verifier", "cross_language"):
            if not isinstance(value, bool):
                raise errors.InvalidArgument(f"{name} must be true or false")
            setattr(message, name, value)
        elif name == "verifier_cutoff":
            message.verifier_cutoff = float(value)
        elif name in ("ttl_seconds", "max_entries"):
            setattr(message, name, int(value))
        elif name == "embedding_model":
            message.embedding_model = str(value)
        elif name == "cacheability":
            # The JSON form (cache/cacheability.py: policy_to_dict); the server validates the rules.
            message.cacheability.CopyFrom(policy_to_pb(policy_from_dict(value)))
        else:
            raise errors.InvalidArgument(f"unknown tenant setting {name!r}")
    return message, paths


# -- response conversion --------------------------------------------------------------------
def _hit(r: pb.QueryResponse) -> Hit:
    return Hit(
        r.hit, _MATCH_NAMES.get(r.match, "miss"), r.answer, r.id, r.similarity, r.matched_question,
        uncacheable=r.uncacheable, verify_entry_id=r.verify_entry_id,
    )


def _inserted(r: pb.InsertResponse) -> list[InsertedId]:
    # A server before the cacheability policy sends no classes: every entry was stored.
    return [InsertedId(i, u) for i, u in zip_longest(r.ids, r.uncacheable[: len(r.ids)], fillvalue="")]


def _tenant(t: pb.Tenant) -> TenantInfo:
    c = t.config
    return TenantInfo(
        name=t.name,
        entries=t.entries,
        created_at=t.created_at_unix,
        similarity_threshold=c.similarity_threshold if c.HasField("similarity_threshold") else None,
        ttl_seconds=c.ttl_seconds,
        max_entries=c.max_entries,
        eviction_policy=_POLICY_NAMES.get(c.eviction_policy, "lru"),
        embedding_model=c.embedding_model,
        cacheability=policy_to_dict(policy_from_pb(c.cacheability)),
        max_error_rate=c.max_error_rate if c.HasField("max_error_rate") else None,
        verify_rate=c.verify_rate,
        verifier=c.verifier if c.HasField("verifier") else None,
        verifier_cutoff=c.verifier_cutoff if c.HasField("verifier_cutoff") else None,
        cross_language=c.cross_language,
    )


def _stats(response: pb.StatsResponse) -> list[ScopeStats]:
    return [
        ScopeStats(
            tenant=s.tenant,
            model=s.model,
            entries=s.entries,
            queries=s.queries,
            exact_hits=s.exact_hits,
            semantic_hits=s.semantic_hits,
            misses=s.misses,
            errors=s.errors,
            hit_ratio=s.hit_ratio,
            p50_latency_ms=s.p50_latency_ms,
            p99_latency_ms=s.p99_latency_ms,
            top_entries=[TopEntry(id=t.id, question=t.question, hit_count=t.hit_count) for t in s.top_entries],
        )
        for s in response.scopes
    ]


def _scope(tenant: str, model: str | None) -> pb.Scope:
    return pb.Scope(tenant=tenant, model=model or "")


# -- request building: one builder per RPC -------------------------------------------------------
def query(tenant: str, model: str, chat: ChatLike, similarity_threshold: float | None, top_k: int) -> Call[Hit]:
    request = pb.QueryRequest(scope=_scope(tenant, model), messages=to_messages(chat), top_k=top_k)
    if similarity_threshold is not None:
        request.similarity_threshold = similarity_threshold
    return Call("cache", "Query", request, _hit)


def insert_many(tenant: str, model: str, entries: Iterable[Entry]) -> Call[list[InsertedId]]:
    request = pb.InsertRequest(
        scope=_scope(tenant, model),
        entries=[
            pb.CacheEntry(
                messages=to_messages(e.messages), answer=e.answer, ttl_seconds=e.ttl_seconds, metadata=dict(e.metadata),
                verifies=e.verifies,
            )
            for e in entries
        ],
    )
    return Call("cache", "Insert", request, _inserted)


_VERDICTS = {"correct": pb.CORRECT, "wrong": pb.WRONG}


def feedback(tenant: str, model: str, entry_id: str, chat: ChatLike, verdict: str, answer: str | None) -> Call[str]:
    """verdict: "correct" or "wrong" (any case); anything else is sent as unspecified and refused by the service."""
    request = pb.FeedbackRequest(
        scope=_scope(tenant, model), entry_id=entry_id, messages=to_messages(chat),
        verdict=_VERDICTS.get(str(verdict).lower(), pb.VERDICT_UNSPECIFIED), answer=answer or "",
    )
    return Call("cache", "Feedback", request, lambda r: str(r.action))


def remove(tenant: str, model: str, ids: Sequence[str]) -> Call[int]:
    return Call(
        "cache", "Remove", pb.RemoveRequest(scope=_scope(tenant, model), ids=list(ids)), lambda r: int(r.removed)
    )


def clear(tenant: str, model: str | None) -> Call[int]:
    return Call("cache", "Clear", pb.ClearRequest(scope=_scope(tenant, model)), lambda r: int(r.removed))


def stats(tenant: str, model: str | None, window_seconds: int, top: int) -> Call[list[ScopeStats]]:
    request = pb.StatsRequest(scope=_scope(tenant, model), window_seconds=window_seconds, top=top)
    return Call("cache", "Stats", request, _stats)


REINDEX_TIMEOUT_S = 600.0  # re-embedding a whole tenant takes minutes, not the default seconds


def reindex(tenant: str) -> Call[int]:
    return Call("tenants", "Reindex", pb.ReindexRequest(tenant=tenant), lambda r: int(r.reindexed), REINDEX_TIMEOUT_S)


def _repair(r: pb.RepairResponse) -> dict[str, int]:
    return {"rows_checked": r.rows_checked, "vectors_added": r.vectors_added, "vectors_removed": r.vectors_removed}


def repair(tenant: str | None) -> Call[dict[str, int]]:
    return Call("tenants", "Repair", pb.RepairRequest(tenant=tenant or ""), _repair, REINDEX_TIMEOUT_S)


def create_tenant(name: str, config: Mapping[str, Any]) -> Call[TenantInfo]:
    message, _ = tenant_config(**config)
    return Call("tenants", "CreateTenant", pb.CreateTenantRequest(name=name, config=message), _tenant)


def get_tenant(name: str) -> Call[TenantInfo]:
    return Call("tenants", "GetTenant", pb.GetTenantRequest(name=name), _tenant)


def list_tenants() -> Call[list[TenantInfo]]:
    return Call("tenants", "ListTenants", pb.ListTenantsRequest(), lambda r: [_tenant(t) for t in r.tenants])


def update_tenant(name: str, changes: Mapping[str, Any]) -> Call[TenantInfo]:
    message, paths = tenant_config(**changes)
    if not paths:
        raise errors.InvalidArgument("update_tenant needs at least one setting to change")
    request = pb.UpdateTenantRequest(name=name, config=message, update_mask=FieldMask(paths=paths))
    return Call("tenants", "UpdateTenant", request, _tenant)


def delete_tenant(name: str) -> Call[int]:
    return Call("tenants", "DeleteTenant", pb.DeleteTenantRequest(name=name), lambda r: int(r.removed))


def create_api_key(tenant: str) -> Call[ApiKey]:
    return Call("tenants", "CreateApiKey", pb.CreateApiKeyRequest(tenant=tenant), lambda r: ApiKey(r.id, r.key))


def revoke_api_key(key_id: str) -> Call[None]:
    return Call("tenants", "RevokeApiKey", pb.RevokeApiKeyRequest(id=key_id), lambda r: None)
