"""The embedding models a service uses: the default, and any a tenant names.

Models load lazily, once, off the event loop; each gets its own batcher.
A tenant's ``embedding_model`` names a model as the settings do
(``packaged:all-MiniLM-L6-v2``, a local folder, or a spec another backend
understands); empty means the server's default.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..errors import InvalidArgument
from .base import Embedder, has_cjk
from .batcher import EmbeddingBatcher

log = logging.getLogger("modelcache_svc.embedding")
Loader = Callable[[str], Embedder]


class EmbedderPool:
    """``cjk_model``: the model a question with CJK characters is embedded by when its tenant keeps the
    server's default model ("" = no routing). English models read those characters as [UNK], so
    without it Chinese questions that share a few characters look alike. Each question goes to one
    model and is compared only with entries that model embedded (one collection per model)."""

    def __init__(
        self,
        default: EmbeddingBatcher,
        loader: Loader,
        make_batcher: Callable[[Embedder], EmbeddingBatcher],
        cjk_model: str = "",
    ) -> None:
        self.default = default
        self.cjk_model = cjk_model
        self._loader = loader
        self._make_batcher = make_batcher
        self._by_name: dict[str, EmbeddingBatcher] = {}
        self._loading: dict[str, asyncio.Future[EmbeddingBatcher]] = {}

    def route(self, name: str, text: str) -> str:
        """The model a tenant configured with ``name`` embeds ``text`` by."""
        if not name and self.cjk_model and has_cjk(text):
            return self.cjk_model
        return name

    async def for_text(self, name: str, text: str) -> EmbeddingBatcher:
        return await self.get(self.route(name, text))

    async def get(self, name: str) -> EmbeddingBatcher:
        if not name:
            return self.default
        found = self._by_name.get(name)
        if found is not None:
            return found
        pending = self._loading.get(name)
        if pending is None:
            pending = asyncio.ensure_future(self._load(name))
            self._loading[name] = pending
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done():
                self._loading.pop(name, None)

    async def _load(self, name: str) -> EmbeddingBatcher:
        loop = asyncio.get_running_loop()
        try:
            embedder = await loop.run_in_executor(None, self._loader, name)
        except InvalidArgument:
            raise
        except Exception as exc:
            log.warning("cannot load embedding model %r: %s", name, exc)
            raise InvalidArgument(f"embedding model {name[:200]!r} cannot be loaded here: {exc}") from exc
        batcher = self._make_batcher(embedder)
        self._by_name[name] = batcher
        return batcher

    def add(self, name: str, embedder: Embedder) -> None:
        """A model loaded ahead of its first use."""
        self._by_name[name] = self._make_batcher(embedder)

    def loaded(self) -> list[EmbeddingBatcher]:
        return [self.default, *self._by_name.values()]

    def close(self) -> None:
        for batcher in self.loaded():
            batcher.close()
