"""The scalar store's part of learning from feedback (cache/feedback.py), for both SQL dialects.

Three tables (migration 0002): ``feedback`` (observations: similarity, wrong?, source, newest
``keep`` per entry), ``entry_learning`` (an entry's similarity floor) and ``pending_verify`` (the
similarity a verification miss was answered at, until the product writes back). Each is deleted
with its entry: ``forget_learning`` runs inside every transaction that deletes entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..records import EntryLearning, Observation

T = TypeVar("T")
LEARNING_TABLES = ("feedback", "entry_learning", "pending_verify")
IN_CHUNK = 500


class LearningQueries:
    """Mixed into SQLScalarStore, which supplies _q, _read, _write and the dialect."""

    _q: Callable[..., str]
    _read: Callable[[Callable[[Any], Any]], Any]
    _write: Callable[[Callable[[Any], Any]], Any]

    def forget_learning(self, cur: Any, ids: Sequence[str]) -> None:
        """Inside the caller's transaction: drop what was learned about these entries."""
        for start in range(0, len(ids), IN_CHUNK):
            part = tuple(ids[start:start + IN_CHUNK])
            for table in LEARNING_TABLES:
                cur.execute(self._q(f"DELETE FROM {{{table}}} WHERE entry_id IN {{ids}}", len(part)), part)

    def record_observations(self, observations: Sequence[Observation], keep: int, floor_margin: float) -> int:
        """Write observations of live entries, raise the floor of each wrong one above its similarity,
        and keep only the newest ``keep`` per entry. Returns how many were recorded (an entry deleted
        meanwhile records nothing: nothing is ever left behind without its entry)."""
        if not observations:
            return 0

        def op(cur: Any) -> int:
            recorded = 0
            for entry_id in sorted({o.entry_id for o in observations}):  # one lock order: no deadlock
                cur.execute(self._q("SELECT id FROM {entries} WHERE id = ?") + self._for_update(), (entry_id,))
                if cur.fetchone() is None:
                    continue
                mine = [o for o in observations if o.entry_id == entry_id]
                cur.executemany(
                    self._q("INSERT INTO {feedback} (entry_id, tenant, similarity, wrong, source, exact_key, ts)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?)"),
                    [(o.entry_id, o.tenant, float(o.similarity), int(o.wrong), o.source, o.exact_key, float(o.ts))
                     for o in mine],
                )
                recorded += len(mine)
                wrong = [o.similarity for o in mine if o.wrong]
                if wrong:
                    self._raise_floor(cur, entry_id, mine[0].tenant, min(1.0, max(wrong) + floor_margin), mine[0].ts)
                # The id of the keep-th newest row: everything older goes.
                cur.execute(
                    self._q("SELECT id FROM {feedback} WHERE entry_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?"),
                    (entry_id, int(keep) - 1),
                )
                row = cur.fetchone()
                if row is not None:
                    cur.execute(self._q("DELETE FROM {feedback} WHERE entry_id = ? AND id < ?"), (entry_id, row[0]))
            return recorded

        return int(self._write(op))

    def restore_learning(self, tenant: str, learning: Mapping[str, EntryLearning], ts: float) -> None:
        """Floors and observations carried from another store (import), for those entries that exist:
        written as they were, not re-derived (the margin that raised a floor there may differ here)."""
        if not learning:
            return
        insert = self._q("INSERT INTO {feedback} (entry_id, tenant, similarity, wrong, source, exact_key, ts)"
                         " VALUES (?, ?, ?, ?, 'import', '', ?)")

        def op(cur: Any) -> None:
            for entry_id in sorted(learning):  # one lock order: no deadlock
                cur.execute(self._q("SELECT id FROM {entries} WHERE id = ?") + self._for_update(), (entry_id,))
                if cur.fetchone() is None:
                    continue
                carried = learning[entry_id]
                # Oldest first: the newest gets the highest id, as where they were recorded.
                cur.executemany(insert, [(entry_id, tenant, float(s), int(w), float(ts))
                                         for s, w in reversed(carried.observations)])
                if carried.floor > 0.0:
                    self._raise_floor(cur, entry_id, tenant, float(carried.floor), ts)

        self._write(op)

    def _for_update(self) -> str:
        return str(getattr(self, "dialect").for_update)

    def _raise_floor(self, cur: Any, entry_id: str, tenant: str, floor: float, ts: float) -> None:
        cur.execute(self._q("SELECT floor FROM {entry_learning} WHERE entry_id = ?"), (entry_id,))
        row = cur.fetchone()
        if row is None:
            cur.execute(
                self._q("INSERT INTO {entry_learning} (entry_id, tenant, floor, updated_at) VALUES (?, ?, ?, ?)"),
                (entry_id, tenant, floor, ts),
            )
        elif float(row[0]) < floor:
            cur.execute(
                self._q("UPDATE {entry_learning} SET floor = ?, updated_at = ? WHERE entry_id = ?"),
                (floor, ts, entry_id),
            )

    def learning_of(self, ids: Sequence[str]) -> dict[str, EntryLearning]:
        """Floor and observations (newest first) of each of these entries that has any."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}

        def op(cur: Any) -> dict[str, EntryLearning]:
            floors: dict[str, float] = {}
            seen: dict[str, list[tuple[float, bool]]] = {}
            for start in range(0, len(wanted), IN_CHUNK):
                part = tuple(wanted[start:start + IN_CHUNK])
                cur.execute(self._q("SELECT entry_id, floor FROM {entry_learning} WHERE entry_id IN {ids}",
                                    len(part)), part)
                floors.update((_s(e), float(f)) for e, f in cur.fetchall())
                cur.execute(
                    self._q("SELECT entry_id, similarity, wrong FROM {feedback} WHERE entry_id IN {ids}"
                            " ORDER BY id DESC", len(part)),
                    part,
                )
                for e, s, w in cur.fetchall():
                    seen.setdefault(_s(e), []).append((float(s), bool(int(w))))
            return {
                i: EntryLearning(floors.get(i, 0.0), tuple(seen.get(i, ())))
                for i in wanted if i in floors or i in seen
            }

        result: dict[str, EntryLearning] = self._read(op)
        return result

    def tenant_observations(self, tenant: str, limit: int) -> list[tuple[float, bool]]:
        """(similarity, wrong) of a tenant's newest observations: the pooled evidence."""

        def op(cur: Any) -> list[tuple[float, bool]]:
            cur.execute(
                self._q("SELECT similarity, wrong FROM {feedback} WHERE tenant = ? ORDER BY id DESC LIMIT ?"),
                (tenant, int(limit)),
            )
            return [(float(s), bool(int(w))) for s, w in cur.fetchall()]

        result: list[tuple[float, bool]] = self._read(op)
        return result

    def add_pending_verification(self, entry_id: str, exact_key: str, tenant: str, similarity: float,
                                 ts: float) -> None:
        def op(cur: Any) -> None:
            cur.execute(self._q("DELETE FROM {pending_verify} WHERE entry_id = ? AND exact_key = ?"),
                        (entry_id, exact_key))
            cur.execute(
                self._q("INSERT INTO {pending_verify} (entry_id, exact_key, tenant, similarity, created_at)"
                        " VALUES (?, ?, ?, ?, ?)"),
                (entry_id, exact_key, tenant, float(similarity), float(ts)),
            )

        self._write(op)

    def take_pending_verification(self, entry_id: str, exact_key: str, since: float) -> float | None:
        """The similarity a verification of entry_id on this chat was asked at (no older than since), removed."""

        def op(cur: Any) -> float | None:
            where = " WHERE entry_id = ? AND exact_key = ?"
            cur.execute(self._q("SELECT similarity, created_at FROM {pending_verify}" + where) + self._for_update(),
                        (entry_id, exact_key))
            row = cur.fetchone()
            if row is None:
                return None
            cur.execute(self._q("DELETE FROM {pending_verify}" + where), (entry_id, exact_key))
            return float(row[0]) if float(row[1]) >= since else None

        result: float | None = self._write(op)
        return result

    def purge_pending_verifications(self, before: float) -> int:
        def op(cur: Any) -> int:
            cur.execute(self._q("DELETE FROM {pending_verify} WHERE created_at < ?"), (float(before),))
            return max(int(cur.rowcount), 0)

        return int(self._write(op))


def _s(value: Any) -> str:
    return bytes(value).decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)
