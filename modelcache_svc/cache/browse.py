"""What the console reads of a scope: entries found by text (exact, then semantic with the similarity) or by
id, one entry with what it learned, pages of a tenant's entries, and the recent traffic.

Read-only, and unlike Query it leaves no trace: no hit counted, no query logged, no question vector
remembered, no stage timed. The pieces are the query path's own (the chat key, routing, the exact lookup,
the threshold and the guard of matching.py); what the console then changes goes through CacheCore's Remove,
Insert and Feedback like any other call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidArgument, NotFound
from ..records import EntryLearning, EntryRow, Message, Scope
from .hits import HitCounter
from .keys import ENTRY_ID, ChatKeyMemo
from .lookup import Lookup
from .matching import guard_veto, resolve_threshold
from .querylog import QueryLog, Recent
from .routing import route_and_key
from .runtime import Runtime
from .tenants import Principal, TenantRegistry

MAX_FOUND = 50
MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class Found:
    row: EntryRow
    match: str  # "exact" | "semantic"
    similarity: float  # on the common threshold scale; 1.0 for the exact match
    veto: str = ""  # why the precision guard would not serve it for this text, "" = no objection
    floor: float = 0.0  # what feedback taught it: it serves nothing at or below this


@dataclass(frozen=True, slots=True)
class Search:
    found: list[Found]
    threshold: float  # the tenant's (else the server's) similarity threshold
    model_id: str  # the embedding model that searched


@dataclass(frozen=True, slots=True)
class EntryView:
    row: EntryRow
    messages: list[Message]  # the chat it was cached for: context, then the question
    metadata: dict[str, str]
    learning: EntryLearning | None


def messages_of(row: EntryRow) -> list[Message]:
    try:
        return [Message(str(role), str(content)) for role, content in json.loads(row.messages_json)]
    except (ValueError, TypeError):
        return [Message("user", row.question)]


class Browse:
    def __init__(self, runtime: Runtime, tenants: TenantRegistry, chat_keys: ChatKeyMemo, lookup: Lookup,
                 hits: HitCounter, query_log: QueryLog) -> None:
        self.runtime = runtime
        self.tenants = tenants
        self.chat_keys = chat_keys
        self.lookup = lookup
        self.hits = hits
        self.query_log = query_log

    async def search(self, principal: Principal, scope: Scope, text: str, system: str = "",
                     limit: int = 10) -> Search:
        """The entries a chat of this text (after this system prompt, if any) would be matched against: its
        exact entry first, then the nearest by similarity, each with the guard's objection, if any."""
        rt = self.runtime
        tenant = await self.tenants.for_scope(principal, scope)
        if not 1 <= limit <= MAX_FOUND:
            raise InvalidArgument(f"limit must be 1..{MAX_FOUND}")
        messages = ([Message("system", system)] if system.strip() else []) + [Message("user", text)]
        key = self.chat_keys.key(messages, rt.settings.limits)
        threshold = resolve_threshold(None, tenant.config.similarity_threshold, rt.settings.similarity_threshold)
        now = rt.clock()
        found: list[Found] = []
        exact = await self.lookup.exact(scope, key, now)
        if exact is not None:
            found.append(Found(exact, "exact", 1.0))
        embedder, routed = await route_and_key(rt, tenant, key)
        vector = await embedder.embed(routed.question)
        hits = await rt.run(rt.vector.search, embedder.model_id, scope.tenant, scope.model, routed.context_hash,
                            vector, limit)
        rows = await rt.run(rt.scalar.get_entries, [h.id for h in hits], now)
        learning = await rt.run(rt.scalar.learning_of, list(rows)) if rows else {}
        for hit in hits:
            row = rows.get(hit.id)
            if row is None or row.tenant != scope.tenant or row.model != scope.model or (exact and row.id == exact.id):
                continue
            learned = learning.get(row.id)
            found.append(Found(row, "semantic", embedder.reported(hit.similarity),
                               guard_veto(routed.question, row.question, routed.language) or "",
                               learned.floor if learned else 0.0))
        return Search(found, threshold, embedder.model_id)

    async def entry(self, principal: Principal, tenant: str, entry_id: str) -> EntryView:
        rt = self.runtime
        await self.tenants.for_caller(principal, tenant)
        if not isinstance(entry_id, str) or not ENTRY_ID.match(entry_id):
            raise InvalidArgument("entry ids are 32 lowercase hex characters")
        await self.hits.flush()  # the hits served so far count
        row = (await rt.run(rt.scalar.get_entries, [entry_id], rt.clock())).get(entry_id)
        if row is None or row.tenant != tenant:
            raise NotFound(f"no live entry {entry_id} in tenant {tenant!r} (removed, expired, or never there)")
        learning = (await rt.run(rt.scalar.learning_of, [entry_id])).get(entry_id)
        try:
            metadata = {str(k): str(v) for k, v in json.loads(row.metadata_json or "{}").items()}
        except (ValueError, AttributeError):
            metadata = {}
        return EntryView(row, messages_of(row), metadata, learning)

    async def entries(self, principal: Principal, tenant: str, model: str, after_id: str,
                      limit: int) -> list[EntryRow]:
        """A page of the tenant's live entries by id (of one model, if given)."""
        rt = self.runtime
        await self.tenants.for_caller(principal, tenant)
        if after_id and not ENTRY_ID.match(after_id):
            raise InvalidArgument("after: an entry id")
        limit = max(1, min(limit, MAX_PAGE))
        now = rt.clock()
        out: list[EntryRow] = []
        for _ in range(10):  # a model among many: a few pages read to fill one
            rows = await rt.run(rt.scalar.entries_of_tenant, tenant, after_id, limit * 4)
            out.extend(r for r in rows if (not model or r.model == model)
                       and (r.expires_at is None or r.expires_at > now))
            if len(out) >= limit or len(rows) < limit * 4:
                break
            after_id = rows[-1].id
        return out[:limit]

    async def models(self, principal: Principal, tenant: str) -> dict[str, int]:
        """Live entries per model of the tenant, the most first."""
        rt = self.runtime
        await self.tenants.for_caller(principal, tenant)
        counts = await rt.run(rt.scalar.models_of_tenant, tenant)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    async def traffic(self, principal: Principal, tenant: str) -> Sequence[Recent]:
        await self.tenants.for_caller(principal, tenant)
        return self.query_log.recent(tenant)
