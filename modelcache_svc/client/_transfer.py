"""Export and Import as the clients send them, and the JSON form of an exported entry.

The JSON form is one line of an export file (docs/operations.md, "The export file"):

    {"id": "<32 hex>", "model": "...", "messages": [{"role": "user", "content": "..."}], "answer": "...",
     "metadata": {}, "created_at": 1767225600.0, "expires_at": null, "last_hit_at": ..., "hit_count": 3,
     "embed_model": "...", "vector": "<base64 of little-endian float32>",
     "feedback": {"floor": 0.91, "observations": [[0.87, true]]}}

``vector`` may also be a JSON list of numbers (what other tools write most easily); ``feedback`` is
present only for entries feedback taught something about. Nothing here needs numpy.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import errors
from .._wire import pb
from ._calls import Call, TenantInfo, _tenant, tenant_config

EXPORT_TIMEOUT_S = 60.0  # one page: a few hundred rows and their vectors
IMPORT_TIMEOUT_S = 120.0  # one batch, re-embedded when the models differ
# The tenant settings an export file carries (TenantInfo's fields but its name, size and age).
SETTINGS = tuple(f.name for f in dataclasses.fields(TenantInfo) if f.name not in ("name", "entries", "created_at"))


@dataclass(frozen=True)
class ExportedPage:
    tenant: TenantInfo
    entries: list[dict[str, Any]]  # the JSON form, one per entry
    next_after_id: str  # "" when this page was the last
    total: int  # entries of the scope now, for a progress bar


@dataclass(frozen=True)
class ImportResult:
    tenant_created: bool = False
    created: int = 0
    present: int = 0  # already there under that id, as the file has them: left as they are
    merged: int = 0  # the chat was cached there under another id, which kept it and took the answer
    expired: int = 0
    embedded: int = 0  # written with a vector of the server's model (the carried one was of another)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (position in the call, why)
    updated: int = 0  # already there with another answer, metadata or expiry: now the file's (ids, counts stay)


def settings_of(tenant: TenantInfo) -> dict[str, Any]:
    """A tenant's settings in the JSON form an export file's header carries."""
    return {name: getattr(tenant, name) for name in SETTINGS}


# -- the JSON form ------------------------------------------------------------------------------------
def entry_to_json(e: pb.ExportedEntry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id,
        "model": e.model,
        "messages": [{"role": m.role, "content": m.content} for m in e.messages],
        "answer": e.answer,
        "metadata": dict(e.metadata),
        "created_at": e.created_at,
        "expires_at": e.expires_at if e.HasField("expires_at") else None,
        "last_hit_at": e.last_hit_at,
        "hit_count": e.hit_count,
        "embed_model": e.embed_model,
        "vector": base64.b64encode(e.vector).decode("ascii"),
    }
    if e.learned_floor or e.observations:
        out["feedback"] = {
            "floor": round(float(e.learned_floor), 6),
            "observations": [[round(float(o.similarity), 6), o.wrong] for o in e.observations],
        }
    return out


def entry_from_json(data: Any) -> pb.ExportedEntry:
    """The message of one line; InvalidArgument says what is wrong with it."""
    if not isinstance(data, dict):
        raise errors.InvalidArgument("an entry must be a JSON object")
    try:
        return _entry(data)
    except (ValueError, TypeError) as exc:  # what protobuf refuses: a lone surrogate, a number out of range
        raise errors.InvalidArgument(f"a field cannot be sent: {exc}") from None


def _entry(data: dict[str, Any]) -> pb.ExportedEntry:
    hit_count = _typed(data, "hit_count", int, 0)
    if not 0 <= hit_count < 2**63:
        raise errors.InvalidArgument('"hit_count" must be a whole number from 0')
    message = pb.ExportedEntry(
        id=_typed(data, "id", str),
        model=_typed(data, "model", str),
        answer=_typed(data, "answer", str),
        embed_model=_typed(data, "embed_model", str, ""),
        created_at=_time(data, "created_at"),
        last_hit_at=_time(data, "last_hit_at", _time(data, "created_at")),
        hit_count=hit_count,
        vector=_vector(data.get("vector")),
    )
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise errors.InvalidArgument('"messages" must be a list of {"role": ..., "content": ...}')
    message.messages.extend(pb.ChatMessage(role=m["role"], content=m["content"]) for m in messages)
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise errors.InvalidArgument('"metadata" must be an object of strings')
    message.metadata.update(metadata)
    if data.get("expires_at") is not None:
        message.expires_at = _time(data, "expires_at")
    _feedback(message, data.get("feedback"))
    return message


def _typed(data: Mapping[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    value = data.get(key, default)
    if value is ... or not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise errors.InvalidArgument(f'"{key}" must be {"a string" if kind is str else "a whole number"}')
    return value


def _time(data: Mapping[str, Any], key: str, default: Any = ...) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise errors.InvalidArgument(f'"{key}" must be a time in seconds')
    return float(value)


def _vector(value: Any) -> bytes:
    if value is None or value == "":
        return b""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise errors.InvalidArgument('"vector" is not valid base64') from None
        if len(raw) % 4:
            raise errors.InvalidArgument('"vector" is not a whole number of float32 values')
        return raw
    if isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return struct.pack(f"<{len(value)}f", *value)
    raise errors.InvalidArgument('"vector" must be base64 of little-endian float32 or a list of numbers')


def _feedback(message: pb.ExportedEntry, value: Any) -> None:
    if value is None:
        return
    observations = value.get("observations", []) if isinstance(value, dict) else None
    floor = value.get("floor", 0.0) if isinstance(value, dict) else None
    if not isinstance(floor, int | float) or not isinstance(observations, list) or not all(
        isinstance(o, list) and len(o) == 2 and isinstance(o[0], int | float) and isinstance(o[1], bool)
        for o in observations
    ):
        raise errors.InvalidArgument('"feedback" must be {"floor": number, "observations": [[similarity, wrong], ...]}')
    message.learned_floor = float(floor)
    message.observations.extend(pb.LearnedObservation(similarity=float(s), wrong=w) for s, w in observations)


# -- the calls ----------------------------------------------------------------------------------------
def _page(r: pb.ExportResponse) -> ExportedPage:
    return ExportedPage(_tenant(r.tenant), [entry_to_json(e) for e in r.entries], r.next_after_id, int(r.total))


def export_page(tenant: str, model: str | None, after_id: str, limit: int, vectors: bool) -> Call[ExportedPage]:
    request = pb.ExportRequest(
        scope=pb.Scope(tenant=tenant, model=model or ""), after_id=after_id, limit=limit, without_vectors=not vectors
    )
    return Call("tenants", "Export", request, _page, EXPORT_TIMEOUT_S)


def _report(r: pb.ImportResponse) -> ImportResult:
    return ImportResult(
        r.tenant_created, r.created, r.present, r.merged, r.expired, r.embedded,
        [(int(x.index), x.reason) for x in r.rejected], r.updated,
    )


def import_entries(
    tenant: str, entries: Sequence[Mapping[str, Any] | pb.ExportedEntry], settings: Mapping[str, Any] | None
) -> Call[ImportResult]:
    """entries: the JSON form (or messages already built); settings: the tenant's, used if it is created."""
    request = pb.ImportRequest(
        tenant=tenant,
        entries=[e if isinstance(e, pb.ExportedEntry) else entry_from_json(e) for e in entries],
    )
    if settings is not None:
        config, _ = tenant_config(**{k: v for k, v in settings.items() if k in SETTINGS})
        request.config.SetInParent()  # present even when every setting is a default
        request.config.CopyFrom(config)
    return Call("tenants", "Import", request, _report, IMPORT_TIMEOUT_S)
