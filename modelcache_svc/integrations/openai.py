"""CachedOpenAI and AsyncCachedOpenAI: an OpenAI SDK client whose chat completions ask the cache first.

    from openai import OpenAI
    from modelcache_svc.integrations.openai import CachedOpenAI

    client = CachedOpenAI(OpenAI(), target="cache.internal:50051", tenant="acme", api_key=KEY)
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=[...])

``chat.completions.create`` takes the SDK's own arguments and returns the
SDK's own types. A hit is a ``ChatCompletion`` (or, with ``stream=True``,
``ChatCompletionChunk``s replaying the answer) with ``id`` ``"modelcache-<entry
id>"``, ``system_fingerprint`` ``"modelcache"``, zero usage and a
``modelcache`` attribute (``CacheInfo``: hit, match, entry_id, similarity, the
scope's model, the chat as the cache saw it). A miss is the model's own
response, written back afterwards (a stream: when it ended by itself with
``finish_reason == "stop"``), with ``modelcache.hit == False`` and the
stored entry's id. Everything else on the client is the wrapped client's.

The scope's model is the request's ``model``; when the call sets parameters
that shape the answer (temperature, top_p, max_tokens, stop, seed,
response_format, penalties, reasoning_effort, extra_body, ...) a short hash of
them is added (``gpt-4o-mini::3f9a2c1d0e``) so two temperatures never share.
``PASS_THROUGH`` lists what sends a call straight to the model, uncached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from ..client import CacheClient
from ._chat import IGNORED_MESSAGE_KEYS, NEUTRAL_ARGS, PASS_THROUGH, ROLE_OF, answer_of, hit_completion, plan_chat
from ._common import DEFAULT_TIMEOUT_S, Breaker, Guard, Plan, Served, aclear_scopes, clear_scopes
from ._openai_stream import AsyncCachedStream, CachedStream, aiter_list, replay_chunks

IGNORED = NEUTRAL_ARGS  # the name this module gave them first
__all__ = [
    "IGNORED",
    "IGNORED_MESSAGE_KEYS",
    "PASS_THROUGH",
    "ROLE_OF",
    "AsyncCachedOpenAI",
    "CacheInfo",
    "CachedOpenAI",
    "answer_of",
    "completion_from_hit",
    "plan_request",
]

# "Not given" sentinels: NotGiven since openai 1.0, Omit in later releases.
_NOT_GIVEN = tuple(t for t in (getattr(openai, "Omit", None), getattr(openai, "NotGiven", None)) if t is not None)


class CacheInfo(openai.BaseModel):
    """What the cache did for one call: ``completion.modelcache`` (also on every replayed chunk)."""

    hit: bool
    tenant: str
    model: str  # the scope's model
    messages: list[dict[str, str]]  # the chat as the cache saw it: what feedback names
    match: str = "miss"  # miss | exact | semantic
    entry_id: str = ""  # the entry served, or the one the answer was written back as
    similarity: float = 0.0
    verify_entry_id: str = ""
    uncacheable: str = ""


def _info(served: Served) -> CacheInfo:
    return CacheInfo(**served.as_dict())


def _given(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments actually set: the SDK's omit/NOT_GIVEN sentinels and None mean "the default"."""
    return {k: v for k, v in kwargs.items() if v is not None and not isinstance(v, _NOT_GIVEN)}


def plan_request(kwargs: Mapping[str, Any], only_temperature_zero: bool = False) -> Plan:
    """The scope and chat of a ``create`` call, or why it goes straight to the model."""
    return plan_chat(_given(kwargs), kwargs.get("model"), only_temperature_zero)


def completion_from_hit(answer: str, info: CacheInfo, model: str) -> ChatCompletion:
    completion = ChatCompletion.model_validate(hit_completion(answer, info.entry_id, model))
    completion.modelcache = info  # type: ignore[attr-defined]
    return completion


def _include_usage(kwargs: Mapping[str, Any]) -> bool:
    options = kwargs.get("stream_options")
    return bool(isinstance(options, Mapping) and options.get("include_usage"))


class _Options:
    def __init__(
        self,
        tenant: str,
        target: str,
        api_key: str | None,
        timeout: float,
        similarity_threshold: float | None,
        ttl_seconds: int,
        only_temperature_zero: bool,
        replay_chunk_chars: int,
        cache_client: CacheClient | None,
        breaker: Breaker | None,
    ) -> None:
        self.guard = Guard(
            target, tenant, api_key, timeout, similarity_threshold, ttl_seconds, "openai", cache_client, breaker
        )
        self.only_temperature_zero = only_temperature_zero
        self.chunk_chars = replay_chunk_chars


class _Delegate:
    """Attributes this wrapper does not define are the wrapped object's."""

    _wrapped: Any

    def __getattr__(self, name: str) -> Any:
        wrapped = self.__dict__.get("_wrapped")
        if wrapped is None:
            raise AttributeError(name)
        return getattr(wrapped, name)


class Completions(_Delegate):
    def __init__(self, wrapped: Any, options: _Options) -> None:
        self._wrapped = wrapped
        self._o = options

    def create(self, **kwargs: Any) -> Any:
        """``client.chat.completions.create`` with the cache in front (module docstring)."""
        guard = self._o.guard
        plan = plan_request(kwargs, self._o.only_temperature_zero)
        hit = guard.lookup(plan)
        if hit is not None and hit.hit:
            info = _info(guard.served(plan, hit))
            if kwargs.get("stream"):
                chunks = replay_chunks(hit.answer, info, kwargs["model"], _include_usage(kwargs), self._o.chunk_chars)
                return CachedStream(iter(chunks), info, None)
            return completion_from_hit(hit.answer, info, kwargs["model"])
        response = self._wrapped.create(**kwargs)
        if not plan.cacheable:
            return response
        if kwargs.get("stream"):
            return CachedStream(
                iter(response),
                _info(guard.served(plan, hit)),
                lambda answer: _info(guard.served(plan, hit, guard.write(plan, answer))),
                response,
            )
        answer = answer_of(response)
        response.modelcache = _info(guard.served(plan, hit, guard.write(plan, answer) if answer else ""))
        return response


class AsyncCompletions(_Delegate):
    def __init__(self, wrapped: Any, options: _Options) -> None:
        self._wrapped = wrapped
        self._o = options

    async def create(self, **kwargs: Any) -> Any:
        guard = self._o.guard
        plan = plan_request(kwargs, self._o.only_temperature_zero)
        hit = await guard.alookup(plan)
        if hit is not None and hit.hit:
            info = _info(guard.served(plan, hit))
            if kwargs.get("stream"):
                chunks = replay_chunks(hit.answer, info, kwargs["model"], _include_usage(kwargs), self._o.chunk_chars)
                return AsyncCachedStream(aiter_list(chunks), info, None)
            return completion_from_hit(hit.answer, info, kwargs["model"])
        response = await self._wrapped.create(**kwargs)
        if not plan.cacheable:
            return response
        if kwargs.get("stream"):

            async def on_end(answer: str) -> CacheInfo:
                return _info(guard.served(plan, hit, await guard.awrite(plan, answer)))

            return AsyncCachedStream(response.__aiter__(), _info(guard.served(plan, hit)), on_end, response)
        answer = answer_of(response)
        response.modelcache = _info(guard.served(plan, hit, await guard.awrite(plan, answer) if answer else ""))
        return response


class _Chat(_Delegate):
    def __init__(self, wrapped: Any, completions: Completions | AsyncCompletions) -> None:
        self._wrapped = wrapped
        self.completions = completions


class _Wrapper(_Delegate):
    def __init__(
        self,
        client: Any,
        target: str,
        tenant: str,
        api_key: str | None,
        timeout: float,
        similarity_threshold: float | None,
        ttl_seconds: int,
        only_temperature_zero: bool,
        replay_chunk_chars: int,
        cache_client: CacheClient | None,
        breaker: Breaker | None,
    ) -> None:
        self._wrapped = client
        self._o = _Options(
            tenant,
            target,
            api_key,
            timeout,
            similarity_threshold,
            ttl_seconds,
            only_temperature_zero,
            replay_chunk_chars,
            cache_client,
            breaker,
        )

    @property
    def client(self) -> Any:
        """The wrapped SDK client: calls through it bypass the cache."""
        return self._wrapped

    @property
    def guard(self) -> Guard:
        return self._o.guard

    @property
    def tenant(self) -> str:
        return self._o.guard.tenant

    @property
    def cache_client(self) -> Any:
        """The cache's client (CacheClient; AsyncCacheClient of the running loop for the async twin)."""
        return self._o.guard.aclient if isinstance(self, AsyncCachedOpenAI) else self._o.guard.client

    @property
    def stats(self) -> dict[str, int]:
        """Client-side counts: lookups, hits, misses, passthrough, writes, refused, errors, skipped."""
        return self._o.guard.counters.as_dict()


class CachedOpenAI(_Wrapper):
    """An ``openai.OpenAI`` whose ``chat.completions.create`` asks the cache first (module docstring).

    ``timeout``: the cache deadline in seconds, per lookup and per write-back;
    ``only_temperature_zero``: cache only calls with ``temperature=0`` (the API's
    default is 1); ``replay_chunk_chars``: the size of replayed stream pieces;
    ``cache_client``: a CacheClient to share.
    """

    def __init__(
        self,
        client: openai.OpenAI,
        target: str = "127.0.0.1:50051",
        tenant: str = "default",
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        similarity_threshold: float | None = None,
        ttl_seconds: int = 0,
        only_temperature_zero: bool = False,
        replay_chunk_chars: int = 32,
        cache_client: CacheClient | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        super().__init__(
            client,
            target,
            tenant,
            api_key,
            timeout,
            similarity_threshold,
            ttl_seconds,
            only_temperature_zero,
            replay_chunk_chars,
            cache_client,
            breaker,
        )
        self.chat = _Chat(client.chat, Completions(client.chat.completions, self._o))

    def clear_cache(self, model: str | None = None) -> int:
        """Drop the cached answers of ``model`` (every parameter variant), or of the whole tenant."""
        return clear_scopes(self.guard.client, self.tenant, model)

    def close(self) -> None:
        self.guard.close()
        self._wrapped.close()


class AsyncCachedOpenAI(_Wrapper):
    """An ``openai.AsyncOpenAI`` whose ``chat.completions.create`` asks the cache first (over AsyncCacheClient)."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        target: str = "127.0.0.1:50051",
        tenant: str = "default",
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        similarity_threshold: float | None = None,
        ttl_seconds: int = 0,
        only_temperature_zero: bool = False,
        replay_chunk_chars: int = 32,
        breaker: Breaker | None = None,
    ) -> None:
        super().__init__(
            client,
            target,
            tenant,
            api_key,
            timeout,
            similarity_threshold,
            ttl_seconds,
            only_temperature_zero,
            replay_chunk_chars,
            None,
            breaker,
        )
        self.chat = _Chat(client.chat, AsyncCompletions(client.chat.completions, self._o))

    async def clear_cache(self, model: str | None = None) -> int:
        return await aclear_scopes(self.guard.aclient, self.tenant, model)

    async def close(self) -> None:
        await self.guard.aclose()
        await self._wrapped.close()
