"""The verifiers a service runs: one for English, one for questions with CJK characters (routed as the
embedders are, embedding/pool.py). Each runs on its own thread, so a verifier call never waits behind an
embedding batch or a store call."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from ..embedding.base import has_cjk
from .model import Verifier


class VerifierPool:
    def __init__(self, default: Verifier | None, cjk: Verifier | None = None) -> None:
        self.default = default
        self.cjk = cjk
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify")

    @property
    def enabled(self) -> bool:
        return self.default is not None or self.cjk is not None

    def for_text(self, question: str) -> Verifier | None:
        """The verifier of the question's language; None for CJK without a CJK verifier (the English one reads
        those characters as [UNK])."""
        return self.cjk if has_cjk(question) else self.default

    async def score(
        self, verifier: Verifier, question: str, candidates: list[str], similarities: list[float]
    ) -> list[float]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, verifier.score, question, candidates, similarities)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
