"""An in-process LRU of exact hits: (tenant, model, exact key) -> the live row.

An exact hit served from here costs no thread hop and no store read. What a
cached row may miss:
- changes made through this process: Insert (a new answer for the key),
  Remove, Clear, a tenant's deletion or update, evictions and expiry all
  invalidate at once (the core calls ``forget_*``);
- expiry: checked on every hit against the row's own ``expires_at``;
- changes made through another process on the same scalar store: seen within
  ``ttl_s``. The core turns the cache on only where no other process can serve
  the same data, or where the operator accepts that bound.

A read that raced an invalidation is not cached: ``put`` takes the generation
seen before the store read and drops the row if anything was invalidated since.
All calls run on the event loop thread (no lock).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from ..records import EntryRow

Key = tuple[str, str, str]  # tenant, model, exact key


class ExactCache:
    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = max(0, size)
        self.ttl_s = ttl_s
        self._clock = clock
        self._rows: OrderedDict[Key, tuple[float, EntryRow]] = OrderedDict()
        self._keys_of_id: dict[str, Key] = {}
        self.generation = 0

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self.ttl_s > 0

    def get(self, key: Key, now: float) -> EntryRow | None:
        """The cached live row; ``now`` is the service clock (the one rows' expiry is in)."""
        found = self._rows.get(key)
        if found is None:
            return None
        fetched, row = found
        if self._clock() - fetched > self.ttl_s or (row.expires_at is not None and row.expires_at <= now):
            self._drop(key)
            return None
        self._rows.move_to_end(key)
        return row

    def put(self, key: Key, row: EntryRow, generation: int) -> None:
        if not self.enabled or generation != self.generation:
            return
        self._drop(key)
        self._rows[key] = (self._clock(), row)
        self._keys_of_id[row.id] = key
        while len(self._rows) > self.size:
            old_key, (_, old) = self._rows.popitem(last=False)
            self._keys_of_id.pop(old.id, None)

    def forget_keys(self, keys: Iterable[Key]) -> None:
        self.generation += 1
        for key in keys:
            self._drop(key)

    def forget_ids(self, ids: Iterable[str]) -> None:
        self.generation += 1
        for entry_id in ids:
            key = self._keys_of_id.get(entry_id)
            if key is not None:
                self._drop(key)

    def forget_scope(self, tenant: str, model: str | None = None) -> None:
        """Every row of a tenant's model, or of the whole tenant."""
        self.generation += 1
        for key in [k for k in self._rows if k[0] == tenant and (model is None or k[1] == model)]:
            self._drop(key)

    def clear(self) -> None:
        self.generation += 1
        self._rows.clear()
        self._keys_of_id.clear()

    def _drop(self, key: Key) -> None:
        found = self._rows.pop(key, None)
        if found is not None:
            self._keys_of_id.pop(found[1].id, None)

    def __len__(self) -> int:
        return len(self._rows)
