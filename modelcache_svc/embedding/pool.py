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
from .base import Embedder
from .batcher import EmbeddingBatcher
from .language import CJK_LANGUAGES, ENGLISH, detect

log = logging.getLogger("modelcache_svc.embedding")
Loader = Callable[[str], Embedder]


class Rescaled:
    """One loaded model under another name and similarity scale: the CJK model also serves the other
    languages, whose cosines sit elsewhere than Chinese ones (its scale was fitted on LCQMC). Its vectors go to
    a collection of their own (the name is part of the model id)."""

    def __init__(self, inner: Embedder, model_id: str, similarity_scale: float) -> None:
        self._inner = inner
        self.model_id = model_id
        self.similarity_scale = similarity_scale

    @property
    def dim(self) -> int:
        return self._inner.dim

    def encode(self, texts: list[str]) -> object:
        return self._inner.encode(texts)

    def __getattr__(self, name: str) -> object:  # tail_past_window, prefix, ...
        return getattr(self._inner, name)


class EmbedderPool:
    """Routing by language (language.py) for tenants that keep the server's default model: English to the
    default model; Chinese, Japanese and Korean to ``cjk_model`` (English models read those characters as
    [UNK], so without it Chinese questions that share a few characters look alike); every other language to
    ``multilingual_model`` ("" for either = the default model). Each question goes to one model and is
    compared only with entries that model embedded (one collection per model); within a model, languages
    other than its home language are kept apart by the key (cache/routing.py)."""

    def __init__(
        self,
        default: EmbeddingBatcher,
        loader: Loader,
        make_batcher: Callable[[Embedder], EmbeddingBatcher],
        cjk_model: str = "",
        multilingual_model: str = "",
    ) -> None:
        self.default = default
        self.cjk_model = cjk_model
        self.multilingual_model = multilingual_model
        self._loader = loader
        self._make_batcher = make_batcher
        self._by_name: dict[str, EmbeddingBatcher] = {}
        self._loading: dict[str, asyncio.Future[EmbeddingBatcher]] = {}

    def route(self, name: str, language: str) -> str:
        """The model a tenant configured with ``name`` embeds a question in ``language`` by."""
        if name or language == ENGLISH:
            return name
        if language in CJK_LANGUAGES:
            return self.cjk_model
        return self.multilingual_model

    def home_language(self, routed: str) -> str:
        """The language whose entries a model keys without a language mark: Chinese for the CJK model,
        English for every other (the entries each held before languages were keyed)."""
        return "zh" if routed and routed == self.cjk_model else ENGLISH

    async def for_language(self, name: str, language: str) -> tuple[EmbeddingBatcher, str]:
        """(the model's batcher, its home language) for a question in ``language``."""
        routed = self.route(name, language)
        return await self.get(routed), self.home_language(routed)

    async def for_text(self, name: str, text: str) -> EmbeddingBatcher:
        return (await self.for_language(name, detect(text)))[0]

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
