"""What every room of the core works with: the settings, the two stores, the embedders, the metrics, the
clock, and the two in-process caches the read and write paths share.

Store calls are blocking: ``run`` puts one on the store thread pool under a deadline, never on the event
loop. CacheCore (service.py) builds one Runtime and hands it to each room; a room reads ``settings`` and
``clock`` from it at the time of use, so a test that swaps either sees every room follow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..config import Settings
from ..embedding.pool import EmbedderPool
from ..errors import Unavailable
from ..metrics import Metrics
from ..stores.base import ScalarStore, VectorStore
from .exact_cache import ExactCache
from .vector_memo import VectorMemo

T = TypeVar("T")
# The exact-hit LRU's bound on changes made behind this process's back. Used only over Milvus Lite: its
# file is locked to one process, so every Remove/Clear/Insert of the data it serves goes through this
# one and invalidates at once; replicas over a Milvus server promise "seen at once" and go without it.
EXACT_CACHE_TTL_S = 10.0


class Runtime:
    def __init__(
        self,
        settings: Settings,
        scalar: ScalarStore,
        vector: VectorStore,
        embedders: EmbedderPool,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.scalar = scalar
        self.vector = vector
        self.embedders = embedders
        self.metrics = metrics
        self.clock = clock
        self.pool = ThreadPoolExecutor(max_workers=settings.store_threads, thread_name_prefix="store")
        # Drivers time out on their own (store_timeout_s); this catches what they miss.
        self.deadline = settings.store_timeout_s + 2.0
        # Only when both stores are this process's own: a shared scalar store means other
        # replicas may change what the cache holds.
        local = getattr(vector, "is_lite", False) and settings.resolved_scalar_uri.startswith("sqlite:")
        self.exact_cache = ExactCache(settings.exact_cache_size, EXACT_CACHE_TTL_S if local else 0.0)
        self.question_vectors = VectorMemo(settings.question_vector_cache_size)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking store call on the pool, under a deadline: a hung store never hangs a caller."""
        future = asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        try:
            async with asyncio.timeout(self.deadline):
                return await future
        except TimeoutError as exc:
            self.metrics.count(self.metrics.store_errors, "deadline")
            raise Unavailable(f"a store call took longer than {self.deadline:.1f}s") from exc

    async def run_unbounded(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking store call on the pool with no deadline (start-up work that takes its time)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
