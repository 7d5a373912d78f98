"""The verifiers a service runs: one for English, one for Chinese, Japanese and Korean, one for every other
language (routed as the embedders are, embedding/pool.py). Each runs on its own thread, so a verifier call never waits behind an
embedding batch or a store call.

``SCORES``: where a caller that wants to know what the verifier said during one call (the query log's
verdict, cache/service.py) puts a list; each score of that task's calls is appended as (candidate, p)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar

from ..embedding.language import CJK_LANGUAGES, ENGLISH
from .model import Verifier

SCORES: ContextVar[list[tuple[str, float]] | None] = ContextVar("verifier_scores", default=None)


class VerifierPool:
    def __init__(self, default: Verifier | None, cjk: Verifier | None = None,
                 multilingual: Verifier | None = None) -> None:
        self.default = default
        self.cjk = cjk
        self.multilingual = multilingual
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify")

    @property
    def enabled(self) -> bool:
        return self.default is not None or self.cjk is not None or self.multilingual is not None

    def for_language(self, language: str) -> Verifier | None:
        """The verifier of the question's language, routed as its question was (a verifier's band is on the
        similarities of the model that language goes to); None where none is loaded (the English one reads
        CJK characters as [UNK] and was fitted on English only)."""
        if language == ENGLISH:
            return self.default
        return self.cjk if language in CJK_LANGUAGES else self.multilingual

    async def score(
        self, verifier: Verifier, question: str, candidates: list[str], similarities: list[float]
    ) -> list[float]:
        loop = asyncio.get_running_loop()
        scores: list[float] = await loop.run_in_executor(self._executor, verifier.score, question, candidates,
                                                         similarities)
        noted = SCORES.get()
        if noted is not None:
            noted.extend(zip(candidates, scores, strict=True))
        return scores

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
