"""The generated protobuf modules, and conversions between them and core types (what the client shares
with the server, the messages and the cacheability policy, lives in _wire.py)."""

from __future__ import annotations

from collections.abc import Iterable

from .._wire import pb, pb_grpc, policy_from_pb, policy_to_pb
from ..cache.admin import ScopeStats
from ..records import (
    CarriedEntry,
    EntryLearning,
    EvictionPolicy,
    ImportReport,
    MatchKind,
    Message,
    NewEntry,
    QueryResult,
    Scope,
    Tenant,
    TenantConfig,
)

__all__ = ["pb", "pb_grpc", "policy_from_pb", "policy_to_pb"]

_MATCH_TO_PB = {MatchKind.MISS: pb.MISS, MatchKind.EXACT: pb.EXACT, MatchKind.SEMANTIC: pb.SEMANTIC}
_POLICY_TO_PB = {EvictionPolicy.LRU: pb.LRU, EvictionPolicy.LFU: pb.LFU, EvictionPolicy.FIFO: pb.FIFO}
_POLICY_FROM_PB = {v: k for k, v in _POLICY_TO_PB.items()}
CONFIG_FIELDS = (
    "similarity_threshold", "ttl_seconds", "max_entries", "eviction_policy", "embedding_model", "cacheability",
    "max_error_rate", "verify_rate", "verifier", "verifier_cutoff", "cross_language",
)
VERDICTS = {pb.CORRECT: "correct", pb.WRONG: "wrong"}


def scope_from_pb(scope: pb.Scope) -> Scope:
    return Scope(tenant=scope.tenant, model=scope.model)


def messages_from_pb(messages: Iterable[pb.ChatMessage]) -> list[Message]:
    return [Message(role=m.role, content=m.content) for m in messages]


def entry_from_pb(entry: pb.CacheEntry) -> NewEntry:
    return NewEntry(
        messages=tuple(messages_from_pb(entry.messages)),
        answer=entry.answer,
        ttl_seconds=int(entry.ttl_seconds),
        metadata=dict(entry.metadata),
        verifies=entry.verifies,
    )


def result_to_pb(result: QueryResult) -> pb.QueryResponse:
    return pb.QueryResponse(
        hit=result.hit,
        answer=result.answer,
        id=result.id,
        similarity=result.similarity,
        matched_question=result.matched_question,
        match=_MATCH_TO_PB[result.match],
        verify_entry_id=result.verify_entry_id,
        uncacheable=result.uncacheable,
    )


def config_from_pb(config: pb.TenantConfig, base: TenantConfig | None = None, mask: Iterable[str] = ()) -> TenantConfig:
    """A TenantConfig from the message; with a mask, only the named fields change base."""
    given = TenantConfig(
        similarity_threshold=config.similarity_threshold if config.HasField("similarity_threshold") else None,
        ttl_seconds=int(config.ttl_seconds),
        max_entries=int(config.max_entries),
        eviction_policy=_POLICY_FROM_PB.get(config.eviction_policy, EvictionPolicy.LRU),
        embedding_model=config.embedding_model,
        max_error_rate=config.max_error_rate if config.HasField("max_error_rate") else None,
        verify_rate=config.verify_rate if config.HasField("verify_rate") else 0.0,
        cacheability=policy_from_pb(config.cacheability),
        verifier=config.verifier if config.HasField("verifier") else None,
        verifier_cutoff=config.verifier_cutoff if config.HasField("verifier_cutoff") else None,
        cross_language=config.cross_language,
    )
    paths = list(mask)
    if base is None or not paths:
        return given
    from ..errors import InvalidArgument

    values = {name: getattr(base, name) for name in CONFIG_FIELDS}
    for path in paths:
        name = path.removeprefix("config.")
        if name not in CONFIG_FIELDS:
            fields = ", ".join(CONFIG_FIELDS)
            raise InvalidArgument(f"update_mask path {path[:80]!r} is not a TenantConfig field ({fields})")
        values[name] = getattr(given, name)
    return TenantConfig(**values)


def config_to_pb(config: TenantConfig) -> pb.TenantConfig:
    message = pb.TenantConfig(
        ttl_seconds=config.ttl_seconds,
        max_entries=config.max_entries,
        eviction_policy=_POLICY_TO_PB[config.eviction_policy],
        embedding_model=config.embedding_model,
        cacheability=policy_to_pb(config.cacheability),
        cross_language=config.cross_language,
    )
    if config.similarity_threshold is not None:
        message.similarity_threshold = config.similarity_threshold
    if config.max_error_rate is not None:
        message.max_error_rate = config.max_error_rate
    if config.verify_rate:
        message.verify_rate = config.verify_rate
    if config.verifier is not None:
        message.verifier = config.verifier
    if config.verifier_cutoff is not None:
        message.verifier_cutoff = config.verifier_cutoff
    return message


def tenant_to_pb(tenant: Tenant) -> pb.Tenant:
    return pb.Tenant(
        name=tenant.name,
        config=config_to_pb(tenant.config),
        entries=tenant.entries,
        created_at_unix=int(tenant.created_at),
    )


def stats_to_pb(s: ScopeStats) -> pb.ScopeStats:
    return pb.ScopeStats(
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
        top_entries=[pb.TopEntry(id=i, question=q, hit_count=h) for i, q, h in s.top_entries],
    )


# -- export / import (cache/transfer.py) ------------------------------------------------------------
def carried_to_pb(e: CarriedEntry) -> pb.ExportedEntry:
    message = pb.ExportedEntry(
        id=e.id,
        model=e.model,
        messages=[pb.ChatMessage(role=m.role, content=m.content) for m in e.messages],
        answer=e.answer,
        metadata=e.metadata,
        created_at=e.created_at,
        last_hit_at=e.last_hit_at,
        hit_count=e.hit_count,
        embed_model=e.embed_model,
        vector=e.vector,
    )
    if e.expires_at is not None:
        message.expires_at = e.expires_at
    if e.learning is not None:
        message.learned_floor = e.learning.floor
        message.observations.extend(pb.LearnedObservation(similarity=s, wrong=w) for s, w in e.learning.observations)
    return message


def carried_from_pb(e: pb.ExportedEntry) -> CarriedEntry:
    learning = None
    if e.learned_floor or e.observations:
        observations = tuple((float(o.similarity), bool(o.wrong)) for o in e.observations)
        learning = EntryLearning(float(e.learned_floor), observations)
    return CarriedEntry(
        id=e.id,
        model=e.model,
        messages=tuple(messages_from_pb(e.messages)),
        answer=e.answer,
        metadata=dict(e.metadata),
        created_at=float(e.created_at),
        expires_at=float(e.expires_at) if e.HasField("expires_at") else None,
        last_hit_at=float(e.last_hit_at),
        hit_count=int(e.hit_count),
        embed_model=e.embed_model,
        vector=bytes(e.vector),
        learning=learning,
    )


def import_report_to_pb(r: ImportReport) -> pb.ImportResponse:
    return pb.ImportResponse(
        tenant_created=r.tenant_created,
        created=r.created,
        present=r.present,
        merged=r.merged,
        expired=r.expired,
        embedded=r.embedded,
        rejected=[pb.ImportRejected(index=i, reason=reason) for i, reason in r.rejected],
        updated=r.updated,
    )
