"""Dynamic micro-batching: concurrent requests are embedded together.

While the model is busy, new texts queue up; when it is free, everything
queued (up to max_batch) goes in one call, at once: under load the batches
form by themselves. When the model was idle, a request waits for company
(at most max_wait_ms) only while the recent batches show concurrent callers;
a lone client never waits (it only yields to the event loop once), so one
client pays nothing and many clients share the model's fixed cost.

Texts of one model call are padded to the longest, so a batch of more than
RUN texts is sorted by length and cut into runs of RUN: each run pads only to
its own longest (a batch of 32 random questions otherwise spends about half
its time on padding). The vectors are the same; a run still amortises the
per-call cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .base import Embedder

# Texts per model call within a larger batch, sorted by length. Small runs likely keep a call's activations
# in the cores' L2: on this host's 2 cores, 2,048 stored questions embedded in batches of 32 ran at 108 texts/s
# in runs of 32, 167 in runs of 16, 215 in runs of 8, 239 in runs of 4 and 193 one by one (2026-11-25; the
# snippet and a second day's numbers under "Batch runs" in docs/performance.md).
RUN = 4


class EmbeddingBatcher:
    def __init__(
        self,
        embedder: Embedder,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.embedder = embedder
        self._max_batch = max(1, max_batch)
        self._max_wait = max(0.0, max_wait_ms) / 1000.0
        self._pending: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._worker: asyncio.Task[None] | None = None
        # One thread: the model is one CPU-bound resource, batches are its unit of work.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._on_batch = on_batch
        self._recent = 1.0  # moving average of batch sizes: are there concurrent callers?

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def dim(self) -> int:
        return self.embedder.dim

    @property
    def similarity_scale(self) -> float:
        return float(getattr(self.embedder, "similarity_scale", 1.0))

    def threshold_cosine(self, threshold: float) -> float:
        """The cosine a threshold (given on the common scale, FolderOptions) means for this model."""
        return 1.0 - (1.0 - threshold) / self.similarity_scale

    def tail_past_window(self, text: str) -> str:
        """What the model never reads of ``text`` ("" when it reads it all, or cannot say)."""
        cut = getattr(self.embedder, "tail_past_window", None)
        return str(cut(text)) if cut is not None else ""

    def reported(self, cosine: float) -> float:
        """A cosine of this model on the common scale thresholds are given in."""
        return max(-1.0, min(1.0, 1.0 - (1.0 - cosine) * self.similarity_scale))

    async def embed(self, text: str) -> np.ndarray:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((text, fut))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await fut

    async def embed_many(self, texts: list[str]) -> np.ndarray:
        """A caller's own batch (Insert): no queueing behind others' waits; runs of similar length."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._encode_sorted, texts)

    def _encode_sorted(self, texts: list[str]) -> np.ndarray:
        """One batch, in runs of RUN texts of similar length (characters stand in for tokens)."""
        start = time.perf_counter()
        if len(texts) <= RUN:
            vectors = self.embedder.encode(texts)
        else:
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            vectors = np.empty((len(texts), self.dim), dtype=np.float32)
            for first in range(0, len(order), RUN):
                run = order[first:first + RUN]
                vectors[run] = self.embedder.encode([texts[i] for i in run])
        if self._on_batch is not None:
            try:
                self._on_batch(len(texts), time.perf_counter() - start)
            except Exception:  # metrics never fail a request
                pass
        return vectors

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        idle = True  # the model was idle when this drain began; after a batch, whatever queued goes at once
        while self._pending:
            if idle and len(self._pending) < self._max_batch:
                await asyncio.sleep(self._max_wait if self._recent >= 1.5 else 0)
            idle = False
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            live = [(t, f) for t, f in batch if not f.cancelled()]
            if not live:
                continue
            self._recent = 0.8 * self._recent + 0.2 * len(live)
            try:
                vectors = await loop.run_in_executor(self._executor, self._encode_sorted, [t for t, _ in live])
            except BaseException as exc:  # hand the failure to every waiter, keep draining
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            for i, (_, fut) in enumerate(live):
                if not fut.done():
                    fut.set_result(vectors[i])

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
