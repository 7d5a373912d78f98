"""Dynamic micro-batching: concurrent requests are embedded together.

While the model is busy, new texts queue up; when it is free, everything
queued (up to max_batch) goes in one call. A lone request waits at most
max_wait_ms for company (0 = it only yields to the event loop once), so one
client pays nothing and many clients share the model's fixed cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .base import Embedder


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

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def dim(self) -> int:
        return self.embedder.dim

    async def embed(self, text: str) -> np.ndarray:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((text, fut))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await fut

    async def embed_many(self, texts: list[str]) -> np.ndarray:
        """A caller's own batch (Insert): one model call, no queueing behind others' waits."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._encode, texts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        start = time.perf_counter()
        vectors = self.embedder.encode(texts)
        if self._on_batch is not None:
            try:
                self._on_batch(len(texts), time.perf_counter() - start)
            except Exception:  # metrics never fail a request
                pass
        return vectors

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if len(self._pending) < self._max_batch:
                await asyncio.sleep(self._max_wait)
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            live = [(t, f) for t, f in batch if not f.cancelled()]
            if not live:
                continue
            try:
                vectors = await loop.run_in_executor(self._executor, self._encode, [t for t, _ in live])
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
