"""Where a chat's question goes and what its semantic match is confined to, the same for every path that
embeds a question (Query, Insert, Import, Feedback): the question's language (embedding/language.py)
chooses the model (embedding/pool.py), and the key's context hash is narrowed twice —

- by the language, unless it is the home language of the model that embeds it (English for the English
  model and a tenant's own model, Chinese for the CJK model: the entries written before languages were
  keyed keep their keys) or the tenant allows answers across languages (``cross_language``): an answer
  cached for a Spanish question is never served to a French one, even on one multilingual model;
- by the text past the model's window (window.py).
"""

from __future__ import annotations

import dataclasses
import hashlib

from ..embedding import EmbeddingBatcher
from ..embedding.language import detect
from ..records import Tenant
from .keys import ChatKey
from .runtime import Runtime
from .window import keyed_past_window


def keyed_for_language(key: ChatKey, language: str, home: str, cross_language: bool) -> ChatKey:
    if cross_language or language == home:
        return dataclasses.replace(key, language=language)
    digest = hashlib.sha256(f"{key.context_hash}\x00language\x00{language}".encode())
    return dataclasses.replace(key, context_hash=digest.hexdigest(), language=language)


async def route_and_key(rt: Runtime, tenant: Tenant, key: ChatKey) -> tuple[EmbeddingBatcher, ChatKey]:
    """(the model that embeds the question, the key its match is confined to)."""
    language = detect(key.question)
    embedder, home = await rt.embedders.for_language(tenant.config.embedding_model, language)
    key = keyed_for_language(key, language, home, bool(tenant.config.cross_language))
    return embedder, keyed_past_window(key, embedder.tail_past_window(key.question))
