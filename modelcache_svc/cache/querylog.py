"""The query log (ModelCache's "data flow-back"): one row per query — scope,
hit kind, similarity, matched entry, latency, error — written to the scalar
store in batches by a background consumer.

Never on the request's critical path: ``record`` is a bounded, non-blocking
append. When the queue is full (the store is slow or down, or the consumer
died) rows are dropped and counted, never buffered without end.

The stored row holds no text. The console's recent traffic (``recent``) is the
last ``recent_rows`` rows recorded by this process, kept in its memory with
their texts: the question, the matched question, the verifier's verdict and
the chat (so a served hit can be marked WRONG through Feedback). Texts are cut
at ``MAX_SHOWN_CHARS``, a chat over ``MAX_KEPT_CHAT_CHARS`` is not kept.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..metrics import Metrics
from ..records import Message

log = logging.getLogger("modelcache_svc.querylog")
MAX_SHOWN_CHARS = 2_000
MAX_KEPT_CHAT_CHARS = 8_000


@dataclass(frozen=True, slots=True)
class QueryLogRow:
    ts: float
    tenant: str
    model: str
    match_kind: str  # exact | semantic | miss | error
    similarity: float
    entry_id: str
    latency_ms: float
    error: str
    request_id: str
    uncacheable: str = ""  # the class that refused the query (cacheability policy), else ""


@dataclass(frozen=True, slots=True)
class Texts:
    """What the console shows of a query beside its stored row (never written to the store)."""

    question: str = ""
    matched_question: str = ""
    verifier: str = ""  # the verifier's verdict on the served candidate, or on the best one it refused
    messages: tuple[Message, ...] = ()


@dataclass(frozen=True, slots=True)
class Recent:
    seq: int  # increasing per process: what the console names a row by
    row: QueryLogRow
    texts: Texts


def kept_texts(texts: Texts) -> Texts:
    chat = sum(len(m.content) for m in texts.messages)
    return Texts(texts.question[:MAX_SHOWN_CHARS], texts.matched_question[:MAX_SHOWN_CHARS], texts.verifier[:80],
                 texts.messages if chat <= MAX_KEPT_CHAT_CHARS else ())


class QueryLog:
    def __init__(
        self,
        write: Callable[[list[QueryLogRow]], Awaitable[Any]],
        purge: Callable[[float], Awaitable[Any]],
        metrics: Metrics,
        *,
        sample_rate: float = 1.0,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
        retention_s: float = 7 * 24 * 3600,
        clock: Callable[[], float] = time.time,
        recent_rows: int = 0,
    ) -> None:
        self._write = write
        self._purge = purge
        self._metrics = metrics
        self.sample_rate = sample_rate
        self._queue: deque[QueryLogRow] = deque()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval_s
        self._retention = retention_s
        self._clock = clock
        self._wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._recent: deque[Recent] = deque(maxlen=recent_rows or 1)
        self._keep_recent = recent_rows > 0
        self._seq = 0

    def record(self, row: QueryLogRow, texts: Texts | None = None) -> None:
        if self.sample_rate <= 0 or (self.sample_rate < 1 and random.random() >= self.sample_rate):
            return
        if self._keep_recent:
            self._seq += 1
            self._recent.append(Recent(self._seq, row, kept_texts(texts) if texts else Texts()))
        if len(self._queue) >= self._max_queue:
            self._metrics.count(self._metrics.querylog_dropped)
            return
        self._queue.append(row)
        self._metrics.set_gauge(self._metrics.querylog_depth, len(self._queue))
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def keeps_recent(self) -> bool:
        return self._keep_recent

    def recent(self, tenant: str) -> list[Recent]:
        """The tenant's rows among the last ones this process recorded, newest first."""
        return [r for r in reversed(self._recent) if r.row.tenant == tenant] if self._keep_recent else []

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> None:
        last_purge = 0.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.flush()
            now = self._clock()
            if self._retention > 0 and now - last_purge > 600:
                last_purge = now
                try:
                    await self._purge(now - self._retention)
                except Exception:
                    log.warning("query log: purge failed; will retry", exc_info=True)

    async def flush(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            self._metrics.set_gauge(self._metrics.querylog_depth, len(self._queue))
            try:
                await self._write(batch)
            except Exception:
                # The store is sick: these rows are lost (counted), queries go on.
                self._metrics.count(self._metrics.querylog_dropped, amount=len(batch))
                log.warning("query log: dropped %d rows, store write failed", len(batch), exc_info=True)
                return
            self._metrics.count(self._metrics.querylog_written, amount=len(batch))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        await self.flush()
