"""Hits served, counted in memory and written to the scalar store in batches (LRU and LFU read them)."""

from __future__ import annotations

import asyncio
import logging

from ..errors import Unavailable
from .runtime import Runtime

log = logging.getLogger("modelcache_svc.cache")


class HitCounter:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.pending: list[tuple[str, float]] = []
        self.lock = asyncio.Lock()  # one flush at a time: eviction waits for one already writing

    def record(self, entry_id: str, now: float) -> None:
        self.pending.append((entry_id, now))

    async def flush(self) -> None:
        """Write the hits counted in memory. Returns once every hit counted before the call is written
        (or given up on), including those a flush already under way took."""
        async with self.lock:
            if not self.pending:
                return
            hits, self.pending = self.pending, []
            try:
                await self.runtime.run(self.runtime.scalar.record_hits, hits)
            except Unavailable:
                log.warning("could not record %d hits: scalar store unavailable", len(hits))
