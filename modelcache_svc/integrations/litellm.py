"""ModelCacheLiteLLM: the service as LiteLLM's cache, for ``completion`` / ``acompletion`` and the proxy.

    import litellm
    from modelcache_svc.integrations.litellm import ModelCacheLiteLLM

    litellm.cache = ModelCacheLiteLLM("cache.internal:50051", tenant="acme", api_key=KEY)

LiteLLM asks ``litellm.cache`` before a chat call (``get_cache`` / ``async_get_cache``, with the call's
arguments) and hands it the response after a miss (``add_cache`` / ``async_add_cache``; a stream's
whole response once it has ended). ModelCacheLiteLLM is a ``litellm.caching.caching.Cache`` whose four
methods apply the OpenAI SDK wrapper's rules (_chat.py): the scope's model is the call's model (the
Router's model group, or its caching group, where LiteLLM has one) and a hash of the arguments that
shape the answer; tools, n > 1, logprobs, audio and the like go straight to the model; only one whole
text answer that stopped by itself is written back. A hit is LiteLLM's own cached response (its
``_hidden_params["cache_hit"]`` is True, streamed too with ``stream=True``), with id ``modelcache-<entry
id>``, system_fingerprint ``modelcache``, zero usage, and ``.modelcache`` (what the cache did) when not
streamed. Any cache failure is a miss (the guard in _common.py): LiteLLM calls the model.

LiteLLM's per-request ``cache`` controls: ``no-cache`` / ``no-store`` as LiteLLM defines them, ``ttl``
the entry's lifetime, ``namespace`` part of the scope; ``s-maxage`` skips the lookup (an entry's age is
not known here). The proxy: ``ModelCacheProxyHook`` below, named in config.yaml (docs/integration.md).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import litellm
from litellm.caching.caching import Cache
from litellm.integrations.custom_logger import CustomLogger
from litellm.litellm_core_utils.core_helpers import map_finish_reason
from litellm.types.caching import LiteLLMCacheType
from litellm.types.utils import all_litellm_params

from ..client import CacheClient
from ._chat import NEUTRAL_ARGS, answer_of, hit_completion, plan_chat
from ._common import (
    DEFAULT_TIMEOUT_S,
    Breaker,
    Guard,
    Guarded,
    Plan,
    aclear_scopes,
    clear_scopes,
    log,
    not_cacheable,
)

CALL_TYPES = ["completion", "acompletion"]  # chat only: embeddings, transcriptions ... are not answers
# LiteLLM's own arguments (credentials, routing, retries, logging, pricing) never shape an answer; nor these.
NEUTRAL = NEUTRAL_ARGS | frozenset(all_litellm_params) | {
    "base_url",
    "organization",
    "deployment_id",
    "parent_otel_span",
    "litellm_parent_otel_span",
    "functions_unsupported_model",
}
MAX_AGE_CONTROLS = ("s-maxage", "s-max-age")
MAX_OPEN_STREAMS = 1024  # streamed misses whose write-back may still come


class ModelCacheLiteLLM(Guarded, Cache):
    """``litellm.cache = ModelCacheLiteLLM(target, tenant, api_key)``: LiteLLM's chat calls ask the service first.

    ``timeout``: the cache deadline in seconds, per lookup and per write-back; ``ttl_seconds``: the
    entries' lifetime (0: the tenant's); ``only_temperature_zero``: cache only calls with
    ``temperature=0``; ``mode``: LiteLLM's ``CacheMode`` (``default_off``: only calls that pass
    ``cache={"use-cache": True}``); ``cache_client``: a CacheClient to share; ``stream_ends``: the
    callback that tells streams the model ended (one is made and added to ``litellm.callbacks``).
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        tenant: str = "default",
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        similarity_threshold: float | None = None,
        ttl_seconds: int = 0,
        only_temperature_zero: bool = False,
        mode: Any = None,
        cache_client: CacheClient | None = None,
        breaker: Breaker | None = None,
        stream_ends: StreamEnds | None = None,
    ) -> None:
        # LiteLLM's Cache wires itself into LiteLLM's call path; its in-memory store is never used.
        super().__init__(type=LiteLLMCacheType.LOCAL, mode=mode, supported_call_types=list(CALL_TYPES))
        self.guard = Guard(
            target, tenant, api_key, timeout, similarity_threshold, ttl_seconds, "litellm", cache_client, breaker
        )
        self.only_temperature_zero = only_temperature_zero
        if stream_ends is None:
            stream_ends = StreamEnds()
            litellm.callbacks.append(stream_ends)
        self.stream_ends = stream_ends

    def clear(self, model: str | None = None) -> int:
        """Drop the cached answers of ``model`` (every parameter variant), or of the whole tenant."""
        return clear_scopes(self.guard.client, self.tenant, model)

    async def aclear(self, model: str | None = None) -> int:
        return await aclear_scopes(self.guard.aclient, self.tenant, model)

    def close(self) -> None:
        self.guard.close()

    async def disconnect(self) -> None:  # LiteLLM's name for closing a cache
        await self.guard.aclose()

    # -- what LiteLLM calls ---------------------------------------------------------------------------
    def get_cache(self, dynamic_cache_object: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        plan = self._lookup_plan(kwargs)
        return self._served(plan, self.guard.lookup(plan), kwargs) if plan is not None else None

    async def async_get_cache(self, dynamic_cache_object: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        plan = self._lookup_plan(kwargs)
        return self._served(plan, await self.guard.alookup(plan), kwargs) if plan is not None else None

    def add_cache(self, result: Any, **kwargs: Any) -> None:
        write = self._write_args(result, kwargs)
        if write is not None:
            self.guard.write(*write)

    async def async_add_cache(self, result: Any, dynamic_cache_object: Any = None, **kwargs: Any) -> None:
        write = self._write_args(result, kwargs)
        if write is not None:
            await self.guard.awrite(*write)

    async def async_add_cache_pipeline(self, result: Any, dynamic_cache_object: Any = None, **kwargs: Any) -> None:
        return None  # embeddings: not this cache's

    # -- mapping --------------------------------------------------------------------------------------
    def plan(self, kwargs: Mapping[str, Any]) -> Plan:
        """The scope and chat of a LiteLLM call, or why it goes straight to the model."""
        args = {k: v for k, v in kwargs.items() if v is not None}
        namespace = _controls(kwargs).get("namespace")
        if namespace:
            args["namespace"] = namespace
        try:
            model = self._get_model_param_value(dict(kwargs))  # LiteLLM's: caching group, model group, model
        except KeyError:
            model = None
        return plan_chat(args, model, self.only_temperature_zero, NEUTRAL)

    def _lookup_plan(self, kwargs: Mapping[str, Any]) -> Plan | None:
        try:
            if not self.should_use_cache(**kwargs):
                return None
            if any(k in _controls(kwargs) for k in MAX_AGE_CONTROLS):
                return not_cacheable("s-maxage asked: an entry's age is not known")
            return self.plan(kwargs)
        except Exception as exc:  # noqa: BLE001 - never fail a model call
            log.warning("cache lookup skipped, calling the model without it: %s", exc)
            return None

    def _served(self, plan: Plan, hit: Any, kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
        if hit is None or not hit.hit:
            return None
        completion = hit_completion(hit.answer, hit.id, str(kwargs.get("model") or plan.model))
        completion["modelcache"] = self.guard.served(plan, hit).as_dict()
        return completion

    def _write_args(self, result: Any, kwargs: Mapping[str, Any]) -> tuple[Plan, str, bool, int | None] | None:
        """(plan, answer, verifies, ttl) for a write-back, or None when nothing is written."""
        try:
            if not self.should_use_cache(**kwargs):
                return None
            plan = self.plan(kwargs)
            if not plan.cacheable:
                return None
            answer = answer_of(_as_dict(result))
            if kwargs.get("stream") and not self.stream_ends.stopped(kwargs):
                log.debug("not written back: the stream ended without the model's finish reason")
                answer = ""
            if not answer:
                return None
            ttl = _controls(kwargs).get("ttl")
            return plan, answer, True, int(ttl) if ttl is not None else None
        except Exception as exc:  # noqa: BLE001
            log.warning("answer not cached: %s", exc)
            return None


class StreamEnds(CustomLogger):
    """Whether the model itself ended a stream with "stop", for the stream's write-back.

    LiteLLM closes a stream that ended without a finish reason (the connection dropped at an event
    boundary) with a finish_reason "stop" of its own, and the response it then hands the cache says
    "stop" either way. What the model said is on LiteLLM's stream wrapper (``received_finish_reason``),
    which its logging keeps as a sync call's ``original_response``; an async call's write-back has no
    logging object, so the chunk that carries the model's own finish reason, which LiteLLM shows this
    callback, is noted by call id. A stream whose last piece of text came with its finish reason in the
    same chunk is not shown here: it is not written back (a miss next time, never a cut answer served).
    """

    def __init__(self) -> None:
        super().__init__()
        self._said: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    async def async_post_call_streaming_deployment_hook(
        self, request_data: dict[str, Any], response_chunk: Any, call_type: Any
    ) -> Any:
        choices = getattr(response_chunk, "choices", None) or []
        finish = getattr(choices[0], "finish_reason", None) if choices else None
        call_id = request_data.get("litellm_call_id")
        if finish is not None and isinstance(call_id, str):
            with self._lock:
                self._said[call_id] = str(finish)
                while len(self._said) > MAX_OPEN_STREAMS:
                    self._said.popitem(last=False)
        return None

    def stopped(self, kwargs: Mapping[str, Any]) -> bool:
        with self._lock:
            said = self._said.pop(str(kwargs.get("litellm_call_id")), None)
        details = getattr(kwargs.get("litellm_logging_obj"), "model_call_details", None) or {}
        stream = details.get("original_response")
        said = said or getattr(stream, "received_finish_reason", None) or getattr(
            stream, "intermittent_finish_reason", None
        )
        return said is not None and map_finish_reason(said) == "stop"


class ModelCacheProxyHook(StreamEnds):
    """The LiteLLM proxy's way in: a callback object that sets ``litellm.cache`` to a ModelCacheLiteLLM.

    LiteLLM's ``cache_params`` know only LiteLLM's own cache types; a proxy loads Python of its own
    from ``litellm_settings.callbacks`` (a module beside config.yaml). Build one there and name it:

        # modelcache_hook.py, beside config.yaml
        hook = ModelCacheProxyHook("cache.internal:50051", tenant="acme", api_key=os.environ["MC_KEY"])

        litellm_settings:
          callbacks: modelcache_hook.hook

    It takes ModelCacheLiteLLM's arguments; ``.cache`` is the cache, and the hook is its ``stream_ends``
    (the proxy may replace ``litellm.callbacks`` with the list it names). Leave ``cache: true`` out of
    ``litellm_settings``: it would put LiteLLM's own cache in its place.
    """

    def __init__(
        self, target: str = "127.0.0.1:50051", tenant: str = "default", api_key: str | None = None, **options: Any
    ) -> None:
        super().__init__()
        self.cache = ModelCacheLiteLLM(target, tenant, api_key, stream_ends=self, **options)
        litellm.cache = self.cache


def _controls(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """LiteLLM's per-request cache controls (``cache={"ttl": 60, ...}``)."""
    controls = kwargs.get("cache")
    return controls if isinstance(controls, Mapping) else {}


def _as_dict(result: Any) -> Any:
    """A response as LiteLLM hands it over: a ModelResponse (sync), its JSON (async), or a dict."""
    if isinstance(result, str | bytes):
        return json.loads(result)
    if hasattr(result, "model_dump"):
        return result.model_dump()
    return result
