"""Moving a tenant's entries out of one server and into another (``modelcache-svc export`` / ``import``).

Export reads a tenant's live entries in id order, a page at a time, with everything needed to recreate
them: the chat, answer, metadata, stamps, hit count, what feedback taught about them and their vector
with the model that made it. Import writes them back under the same ids:

- an id already here, in the same scope, keeps its stamps, hit count and vector (a second import of a
  file changes nothing, and an interrupted one is finished by running it again); only its content
  (answer, metadata, expiry) is replaced when the file's differs, so importing a newer export catches
  up with answers changed meanwhile, and a vector missing beside it (a crash between the two writes)
  is added;
- a chat already cached here under another id keeps that id and takes the imported answer (the
  scalar store's upsert on the exact key), reported as merged;
- keys (exact key, context hash) are computed here, as Insert computes them, so the query path finds the
  entries whatever this server's embedding window is; the carried vector is reused when this server
  embeds the question with the model that made it, else the question is embedded here in one batch;
- the cacheability policy is not applied: these entries were admitted where they come from, and a
  stricter policy here still refuses to serve them at query time;
- a bad entry is rejected with its position and reason, and the rest of the call is written.

CacheCore (service.py) delegates Export and Import here, handing over what they need: the runtime (stores,
embedders, clock), the hit counter (export flushes it: the hits served so far are in the counts exported),
and for import the admin room (a tenant created with the carried settings) and the writer (eviction past
the tenant's max_entries).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..embedding import EmbeddingBatcher
from ..errors import AlreadyExists, InvalidArgument, NotFound
from ..limits import check_model_name, check_tenant_name
from ..records import CarriedEntry, EntryLearning, EntryRow, ExportPage, ImportReport, Message, Tenant, TenantConfig
from .admin import Admin
from .hits import HitCounter
from .keys import ENTRY_ID, ChatKey, chat_key, check_answer, check_metadata
from .runtime import Runtime
from .tenants import Principal, TenantRegistry
from .routing import route_and_key
from .writer import Writer

PAGE = 256
MAX_PAGE = 1_000
# A page stops once its text and vectors pass this, whatever its count: under the 16 MiB message limit
# even when every answer is near its 256k-character maximum.
PAGE_MAX_BYTES = 4 * 1024 * 1024
# Hit counts travel as uint64 and are stored as signed 64-bit integers.
MAX_HIT_COUNT = 2**62


# -- export ----------------------------------------------------------------------------------------
async def export_page(
    rt: Runtime, tenants: TenantRegistry, hits: HitCounter,
    principal: Principal, name: str, model: str, after_id: str, limit: int, with_vectors: bool,
) -> ExportPage:
    principal.check_admin()
    check_tenant_name(name)
    if model:
        check_model_name(model)
    if after_id and not (isinstance(after_id, str) and ENTRY_ID.match(after_id)):
        raise InvalidArgument("after_id must be an entry id (32 lowercase hex) or empty")
    limit = limit or PAGE
    if not 0 < limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be 1..{MAX_PAGE}")
    tenant = await tenants.get(name)
    await hits.flush()  # the hits served so far are in the counts exported
    total = await rt.run(rt.scalar.count_entries, name, model or None)
    rows = await rt.run(rt.scalar.entries_of_tenant, name, after_id, limit)
    next_after = rows[-1].id if len(rows) == limit else ""
    now = rt.clock()
    taken: list[EntryRow] = []
    size = 0
    for row in rows:
        if (model and row.model != model) or (row.expires_at is not None and row.expires_at <= now):
            continue
        taken.append(row)
        size += len(row.answer) + len(row.messages_json) + len(row.metadata_json) + 4 * 1024
        if size > PAGE_MAX_BYTES and row is not rows[-1]:
            next_after = row.id
            break
    vectors: dict[str, np.ndarray] = {}
    if with_vectors:
        for embed_model in sorted({r.embed_model for r in taken}):
            ids = [r.id for r in taken if r.embed_model == embed_model]
            vectors.update(await rt.run(rt.vector.vectors_of, embed_model, ids))
    learning = await rt.run(rt.scalar.learning_of, [r.id for r in taken]) if taken else {}
    entries = [_carried(r, vectors.get(r.id), learning.get(r.id)) for r in taken]
    return ExportPage(Tenant(tenant.name, tenant.config, tenant.created_at, total), entries, next_after, total)


def _carried(row: EntryRow, vector: np.ndarray | None, learning: EntryLearning | None) -> CarriedEntry:
    return CarriedEntry(
        id=row.id,
        model=row.model,
        messages=tuple(Message(role, content) for role, content in json.loads(row.messages_json)),
        answer=row.answer,
        metadata=json.loads(row.metadata_json) if row.metadata_json else {},
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_hit_at=row.last_hit_at,
        hit_count=row.hit_count,
        embed_model=row.embed_model,
        vector=b"" if vector is None else np.asarray(vector, dtype="<f4").tobytes(),
        learning=learning,
    )


# -- import ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Staged:
    """An entry that passed validation, keyed and routed as Insert would key and route it here."""

    index: int
    entry: CarriedEntry
    key: ChatKey
    embedder: EmbeddingBatcher
    row_id: str = ""  # the id it is stored under here (its own, or that of the chat already cached)


async def import_entries(
    rt: Runtime, admin: Admin, writer: Writer,
    principal: Principal, name: str, config: TenantConfig | None, entries: Sequence[CarriedEntry],
) -> ImportReport:
    principal.check_admin()
    check_tenant_name(name)
    limit = rt.settings.limits.max_entries_per_insert
    if len(entries) > limit:
        raise InvalidArgument(f"too many entries: {len(entries)} > {limit} per call")
    report = ImportReport()
    tenant, report.tenant_created = await _tenant(admin, principal, name, config)
    staged = await _stage(rt, tenant, entries, report)
    found = await rt.run(rt.scalar.get_entries, [s.entry.id for s in staged], 0.0) if staged else {}
    new: list[_Staged] = []
    present: list[_Staged] = []
    for s in staged:
        row = found.get(s.entry.id)
        if row is None:
            new.append(s)
        elif (row.tenant, row.model) == (name, s.entry.model):
            s.row_id = row.id
            present.append(s)
        else:
            report.rejected.append((s.index, f"id {s.entry.id} belongs to another tenant or model here"))
    if new:
        await _write_new(rt, name, new, report)
    if present:
        await _update_changed(rt, name, present, found, report)
        report.present = len(present) - report.updated
        await _complete_vectors(rt, name, present, found)
    if report.created and tenant.config.max_entries:
        await writer.enforce_capacity(tenant)
    report.rejected.sort()
    return report


async def _tenant(
    admin: Admin, principal: Principal, name: str, config: TenantConfig | None
) -> tuple[Tenant, bool]:
    """The tenant, created with the carried settings when it does not exist; and whether it was."""
    try:
        return await admin.tenants.get(name), False
    except NotFound:
        if config is None:
            raise NotFound(f"tenant {name!r} does not exist here, and the import carries no settings for it") from None
    try:
        return await admin.create_tenant(principal, name, config), True
    except AlreadyExists:  # another import created it meanwhile
        return await admin.tenants.get(name), False


async def _stage(
    rt: Runtime, tenant: Tenant, entries: Sequence[CarriedEntry], report: ImportReport
) -> list[_Staged]:
    """Validate and key each entry; the bad ones go to report.rejected, the expired to report.expired."""
    limits = rt.settings.limits
    now = rt.clock()
    seen: set[str] = set()
    staged: list[_Staged] = []
    for i, e in enumerate(entries):
        try:
            if not isinstance(e.id, str) or not ENTRY_ID.match(e.id):
                raise InvalidArgument("id must be 32 lowercase hex characters")
            if e.id in seen:
                raise InvalidArgument(f"id {e.id} appears twice in this call")
            check_model_name(e.model)
            key = chat_key(e.messages, limits)
            check_answer(e.answer, limits)
            check_metadata(e.metadata, limits)  # type: ignore[arg-type]  # (keys.py types it loosely)
            stamps = (e.created_at, e.last_hit_at, 0.0 if e.expires_at is None else e.expires_at)
            if not all(math.isfinite(t) and t >= 0.0 for t in stamps):
                raise InvalidArgument("created_at, last_hit_at and expires_at must be finite times (seconds)")
            if not 0 <= e.hit_count <= MAX_HIT_COUNT:
                raise InvalidArgument("hit_count is out of range")
        except InvalidArgument as exc:
            report.rejected.append((i, exc.message))
            continue
        seen.add(e.id)
        if e.expires_at is not None and e.expires_at <= now:
            report.expired += 1
            continue
        embedder, key = await route_and_key(rt, tenant, key)
        staged.append(_Staged(i, e, key, embedder))
    return staged


async def _write_new(rt: Runtime, name: str, new: list[_Staged], report: ImportReport) -> None:
    """Rows first, then vectors, as Insert writes; then what feedback taught about the created ones."""
    vectors = await _vectors(new, report)
    rows = [_row(name, s) for s in new]
    results = await rt.run(rt.scalar.upsert_entries, rows)
    rt.exact_cache.forget_keys((name, s.entry.model, s.key.exact_key) for s in new)  # merged: new answers
    learning: dict[str, EntryLearning] = {}
    for s, (stored_id, created) in zip(new, results, strict=True):
        s.row_id = stored_id
        if created:
            report.created += 1
            if s.entry.learning is not None:
                learning[stored_id] = s.entry.learning
        else:
            report.merged += 1
    await _insert_vectors(rt, name, new, vectors)
    if learning:
        await rt.run(rt.scalar.restore_learning, name, learning, rt.clock())
    if report.created:
        rt.metrics.count(rt.metrics.inserted, rt.metrics.tenant_label(name), amount=report.created)


async def _update_changed(
    rt: Runtime, name: str, present: list[_Staged], found: dict[str, EntryRow], report: ImportReport
) -> None:
    """Entries already here whose answer, metadata, expiry or chat the file changes (a catch-up import of a
    newer export): the content is the file's, the id, stamps and hit count stay this server's."""
    changed = []
    for s in present:
        row, new = found[s.row_id], _row(name, s)
        if row.exact_key == new.exact_key and (row.answer, row.metadata_json, row.expires_at, row.messages_json) != (
                new.answer, new.metadata_json, new.expires_at, new.messages_json):
            changed.append((s, row.answer != new.answer))
    if not changed:
        return
    await rt.run(rt.scalar.upsert_entries, [_row(name, s) for s, _ in changed])  # replaces the content only
    rt.exact_cache.forget_keys((name, s.entry.model, s.key.exact_key) for s, _ in changed)
    # A new answer dropped what was learned about the old one; what the file carries is about the new one.
    learning = {s.row_id: s.entry.learning for s, new_answer in changed if new_answer and s.entry.learning}
    if learning:
        await rt.run(rt.scalar.restore_learning, name, learning, rt.clock())
    report.updated = len(changed)


def _row(name: str, s: _Staged) -> EntryRow:
    e = s.entry
    return EntryRow(
        id=e.id,
        tenant=name,
        model=e.model,
        context_hash=s.key.context_hash,
        exact_key=s.key.exact_key,
        question=s.key.question,
        messages_json=json.dumps([[m.role, m.content] for m in s.key.messages], ensure_ascii=False),
        answer=e.answer,
        metadata_json=json.dumps(e.metadata, ensure_ascii=False, sort_keys=True),
        embed_model=s.embedder.model_id,
        created_at=e.created_at,
        expires_at=e.expires_at,
        last_hit_at=e.last_hit_at,
        hit_count=e.hit_count,
    )


async def _vectors(staged: list[_Staged], report: ImportReport | None) -> list[np.ndarray]:
    """One vector per entry: the carried one when this server embeds the question with the model that made
    it, else this server's, embedded in one batch per model."""
    out: list[np.ndarray | None] = []
    todo: dict[str, list[int]] = {}
    for i, s in enumerate(staged):
        carried = s.entry.vector
        if s.entry.embed_model == s.embedder.model_id and len(carried) == 4 * s.embedder.dim:
            out.append(np.frombuffer(carried, dtype="<f4").astype(np.float32))
        else:
            out.append(None)
            todo.setdefault(s.embedder.model_id, []).append(i)
    for idx in todo.values():
        embedder = staged[idx[0]].embedder
        vectors = await embedder.embed_many([staged[i].key.question for i in idx])
        for j, i in enumerate(idx):
            out[i] = vectors[j]
        if report is not None:
            report.embedded += len(idx)
    return [v for v in out if v is not None]


async def _insert_vectors(rt: Runtime, name: str, staged: list[_Staged], vectors: list[np.ndarray]) -> None:
    last = {s.row_id: i for i, s in enumerate(staged)}  # two chats merged into one row: one vector for it
    groups: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(staged):
        if last[s.row_id] == i:
            groups.setdefault((s.embedder.model_id, s.entry.model), []).append(i)
    for (embed_model, model), idx in groups.items():
        items = [(staged[i].row_id, staged[i].key.context_hash) for i in idx]
        await rt.run(rt.vector.insert, embed_model, name, model, items, np.stack([vectors[i] for i in idx]))


async def _complete_vectors(rt: Runtime, name: str, present: list[_Staged], found: dict[str, EntryRow]) -> None:
    """Entries already here: add the vector an interrupted import left out (rows embedded by another
    model than this server's are reindex's business)."""
    current = [s for s in present if found[s.row_id].embed_model == s.embedder.model_id]
    missing: list[_Staged] = []
    for model_id in sorted({s.embedder.model_id for s in current}):
        group = [s for s in current if s.embedder.model_id == model_id]
        have = await rt.run(rt.vector.existing_ids, model_id, group[0].embedder.dim, [s.row_id for s in group])
        missing.extend(s for s in group if s.row_id not in have)
    if missing:
        await _insert_vectors(rt, name, missing, await _vectors(missing, None))
