"""Plain records the core, the stores and the transports pass between them (below all three):
scopes, messages, tenants and their configuration, entries, and the JSON form of a cacheability policy."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidArgument


class MatchKind(enum.Enum):
    MISS = "miss"
    EXACT = "exact"
    SEMANTIC = "semantic"


class EvictionPolicy(enum.Enum):
    LRU = "lru"
    LFU = "lfu"
    FIFO = "fifo"


ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True)
class Scope:
    tenant: str
    model: str


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


class CacheabilityAction(enum.Enum):
    """What the cacheability policy does with a question of a class (cache/cacheability.py)."""

    REFUSE = "refuse"  # neither stored nor served: the default
    ALLOW = "allow"
    SHORT_TTL = "short_ttl"  # stored with the policy's short TTL, served while it lives


@dataclass(frozen=True, slots=True)
class CacheabilityRule:
    """A tenant's own rule: a regular expression, a list of keywords, or both."""

    name: str
    pattern: str = ""
    keywords: tuple[str, ...] = ()
    action: CacheabilityAction = CacheabilityAction.REFUSE


@dataclass(frozen=True, slots=True)
class CacheabilityPolicy:
    user_specific: CacheabilityAction = CacheabilityAction.REFUSE
    time_sensitive: CacheabilityAction = CacheabilityAction.REFUSE
    pii: CacheabilityAction = CacheabilityAction.REFUSE
    short_ttl_seconds: int = 0  # 0 = DEFAULT_SHORT_TTL_S
    rules: tuple[CacheabilityRule, ...] = ()


@dataclass(frozen=True, slots=True)
class TenantConfig:
    similarity_threshold: float | None = None
    ttl_seconds: int = 0
    max_entries: int = 0
    eviction_policy: EvictionPolicy = EvictionPolicy.LRU
    embedding_model: str = ""
    cacheability: CacheabilityPolicy = CacheabilityPolicy()
    # Learning from feedback (cache/feedback.py): the wrong-hit rate the tenant accepts (None = the static
    # threshold only) and the share of uncertain semantic candidates answered as a miss to verify them.
    max_error_rate: float | None = None
    verify_rate: float = 0.0
    # The verifier (verifier/, cache/verifier_gate.py): None = the server's setting, False = off; and the
    # probability a candidate needs (None = the model's fitted cut-off).
    verifier: bool | None = None
    verifier_cutoff: float | None = None
    # An entry answers questions of its own language only (cache/routing.py); True lets it answer any
    # language its model embeds alike (the tenant's answers are language-neutral, or it translates them).
    cross_language: bool = False


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    config: TenantConfig
    created_at: float
    entries: int = 0


@dataclass(frozen=True, slots=True)
class NewEntry:
    """What a caller asks to write."""

    messages: tuple[Message, ...]
    answer: str
    ttl_seconds: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    verifies: str = ""  # the verify_entry_id of the query this answer was fetched for


@dataclass(frozen=True, slots=True)
class EntryRow:
    """One cached answer as the scalar store holds it."""

    id: str
    tenant: str
    model: str
    context_hash: str
    exact_key: str
    question: str
    messages_json: str
    answer: str
    metadata_json: str
    embed_model: str
    created_at: float
    expires_at: float | None
    last_hit_at: float
    hit_count: int = 0


@dataclass(frozen=True, slots=True)
class QueryResult:
    hit: bool
    match: MatchKind
    answer: str = ""
    id: str = ""
    similarity: float = 0.0
    matched_question: str = ""
    uncacheable: str = ""  # the class that made this a miss without a lookup (cacheability policy)
    verify_entry_id: str = ""  # a miss answered in order to learn: write back with verifies = this id

    @classmethod
    def miss(cls, verify_entry_id: str = "") -> QueryResult:
        return cls(hit=False, match=MatchKind.MISS, verify_entry_id=verify_entry_id)


@dataclass(frozen=True, slots=True)
class InsertResult:
    """One id per entry of an Insert, "" for an entry the cacheability policy refused; ``uncacheable``,
    parallel to the ids, the class that refused each one ("" for a stored one)."""

    ids: list[str]
    uncacheable: list[str]


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    tenant: str
    key_hash: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One piece of evidence about an entry: it was served (or a verification candidate) at this similarity,
    and its answer was wrong there or not. Written by Feedback and by verification write-backs."""

    entry_id: str
    tenant: str
    similarity: float
    wrong: bool
    source: str  # "user" (Feedback) or "verify" (a verification write-back)
    exact_key: str  # of the chat it was observed on
    ts: float


@dataclass(frozen=True, slots=True)
class EntryLearning:
    """What the scalar store holds about one entry's hit quality."""

    floor: float = 0.0  # the entry serves nothing at or below this similarity (raised by WRONG verdicts)
    observations: tuple[tuple[float, bool], ...] = ()  # (similarity, wrong), newest first


@dataclass(frozen=True, slots=True)
class CarriedEntry:
    """One entry as export reads it and import writes it back (cache/transfer.py): enough to recreate it
    on another server under the same id."""

    id: str
    model: str
    messages: tuple[Message, ...]
    answer: str
    metadata: dict[str, str]
    created_at: float
    expires_at: float | None
    last_hit_at: float
    hit_count: int
    embed_model: str
    vector: bytes = b""  # float32 little-endian; b"" = none (import embeds the question)
    learning: EntryLearning | None = None


@dataclass(frozen=True, slots=True)
class ExportPage:
    tenant: Tenant
    entries: list[CarriedEntry]
    next_after: str  # "" when this page was the last
    total: int  # entries of the scope now, for a progress bar


@dataclass(slots=True)
class ImportReport:
    """What an import call did with its entries (the counts add up to the entries sent)."""

    tenant_created: bool = False
    created: int = 0
    present: int = 0  # already there under that id, as the file has it: left as they are
    updated: int = 0  # already there under that id with other content: the file's answer, metadata and expiry
    merged: int = 0  # the chat was cached under another id: that entry took the answer and kept its id
    expired: int = 0
    embedded: int = 0  # of those written, how many got a vector of this server's model instead of the carried one
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (position in the call, why)


# -- the JSON form (tenant config in the scalar store, the Python client, the CLI) ----------------
def policy_to_dict(policy: CacheabilityPolicy) -> dict[str, Any]:
    return {
        "user_specific": policy.user_specific.value,
        "time_sensitive": policy.time_sensitive.value,
        "pii": policy.pii.value,
        "short_ttl_seconds": policy.short_ttl_seconds,
        "rules": [
            {"name": r.name, "pattern": r.pattern, "keywords": list(r.keywords), "action": r.action.value}
            for r in policy.rules
        ],
    }


def action_named(value: Any, where: str) -> CacheabilityAction:
    try:
        return CacheabilityAction(str(value).lower())
    except ValueError:
        raise InvalidArgument(f"{where} must be one of refuse, allow, short_ttl, not {str(value)[:40]!r}") from None


def policy_from_dict(data: Any) -> CacheabilityPolicy:
    """Missing keys take defaults; a wrong shape is InvalidArgument."""
    if data is None:
        return CacheabilityPolicy()
    if not isinstance(data, dict):
        raise InvalidArgument("cacheability must be an object")
    rules = data.get("rules") or []
    if not isinstance(rules, list):
        raise InvalidArgument("cacheability.rules must be a list")
    parsed = []
    for i, r in enumerate(rules):
        if not isinstance(r, dict) or not all(isinstance(r.get(k, ""), str) for k in ("name", "pattern")):
            raise InvalidArgument(f"cacheability.rules[{i}] must be an object with a string name and pattern")
        keywords = r.get("keywords") or []
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            raise InvalidArgument(f"cacheability.rules[{i}].keywords must be a list of strings")
        parsed.append(CacheabilityRule(
            name=r.get("name", ""), pattern=r.get("pattern", ""), keywords=tuple(keywords),
            action=action_named(r.get("action", "refuse"), f"cacheability.rules[{i}].action"),
        ))
    try:
        short_ttl = int(data.get("short_ttl_seconds", 0) or 0)
    except (TypeError, ValueError):
        raise InvalidArgument("cacheability.short_ttl_seconds must be an integer") from None
    return CacheabilityPolicy(
        user_specific=action_named(data.get("user_specific", "refuse"), "cacheability.user_specific"),
        time_sensitive=action_named(data.get("time_sensitive", "refuse"), "cacheability.time_sensitive"),
        pii=action_named(data.get("pii", "refuse"), "cacheability.pii"),
        short_ttl_seconds=short_ttl,
        rules=tuple(parsed),
    )
