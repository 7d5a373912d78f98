"""ModelCacheSemanticCache: the service as LangChain's LLM cache (langchain-core 1.x).

    from langchain_core.globals import set_llm_cache
    from modelcache_svc.integrations.langchain import ModelCacheSemanticCache

    set_llm_cache(ModelCacheSemanticCache("cache.internal:50051", tenant="acme", api_key=KEY))

LangChain calls ``lookup(prompt, llm_string)`` before a model call and
``update(...)`` after a miss (``alookup``/``aupdate`` from async code, here over
AsyncCacheClient). For a chat model ``prompt`` is the message list serialised
with ``langchain_core.load.dumps``: it is read back (messages only), its
system prompt and earlier turns become the chat's context and the last human
turn the question, as in Query. An LLM's prompt is the question as it is.

``llm_string`` (the model's class and settings, and the call's own
parameters) becomes the scope's model: the model's name and a hash of the
settings that shape the answer (``gpt-4o-mini::3f9a2c1d0e``), so two models,
temperatures or stop lists never share an answer; credentials, endpoints,
timeouts and the like are left out of the hash (``IGNORED_SETTINGS``).

A hit returns the generations as ``update`` was given them, several of them
included: order, class, text, ``generation_info``, a chat generation's whole
message (_langchain_entry.py says how an entry holds them). The one addition is
``response_metadata["modelcache"]`` on a chat message: what the cache did.

Not cached (lookup answers None, update writes nothing): tool calls and tool
results, bound tools, structured output (``response_format``), ``n > 1``,
non-text content (images, audio), a last message that is not the human's.
Never written back (``not_written``): an answer cut at ``length`` or by a
filter, a stream that broke off (no finish reason from a provider that reports
one), a blank one. An answer without any finish reason is written back
(``require_finish_reason=True`` refuses it). Any cache error or a deadline
passed is a miss, logged and counted in ``.stats``.
"""

from __future__ import annotations

import ast
import json
import warnings
from collections.abc import Sequence
from typing import Any

from langchain_core._api import LangChainBetaWarning
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import loads
from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, Generation

from ..client import AsyncCacheClient, CacheClient, Hit
from ._common import (
    DEFAULT_TIMEOUT_S,
    ROLES,
    Breaker,
    Guard,
    Guarded,
    Plan,
    Served,
    aclear_scopes,
    clear_scopes,
    log,
    not_cacheable,
    scope_model,
)
from ._langchain_entry import UnreadableEntry, decode, encode

# loads() is marked beta; reading back messages LangChain itself serialised is what it is for.
warnings.filterwarnings("ignore", category=LangChainBetaWarning, module=r"modelcache_svc\.integrations\.langchain")

# Settings that never change an answer: left out of the scope's hash.
IGNORED_SETTINGS = frozenset(
    {
        "openai_api_key",
        "api_key",
        "openai_api_base",
        "base_url",
        "openai_organization",
        "organization",
        "openai_proxy",
        "request_timeout",
        "timeout",
        "max_retries",
        "default_headers",
        "default_query",
        "http_client",
        "http_async_client",
        "streaming",
        "stream",
        "stream_usage",
        "verbose",
        "callbacks",
        "tags",
        "metadata",
        "cache",
        "rate_limiter",
        "user",
    }
)
MODEL_KEYS = ("model_name", "model", "model_id", "deployment_name", "azure_deployment", "repo_id")
NOT_CACHED_SETTINGS = ("tools", "functions", "tool_choice", "function_call", "response_format", "logprobs")
# How providers say an answer ended by itself (OpenAI, Anthropic, Google, Bedrock, Ollama, Cohere, TGI); where.
STOPPED = frozenset({"stop", "end_turn", "STOP", "stop_sequence", "STOP_SEQUENCE", "COMPLETE", "eos_token"})
FINISH_KEYS = ("finish_reason", "stop_reason", "done_reason", "stopReason")


class ModelCacheSemanticCache(Guarded, BaseCache):
    """A LangChain ``BaseCache`` over the modelcache service, sync and async.

    ``timeout``: the cache deadline in seconds (each lookup and each write-back);
    ``model``: a fixed model name for the scope instead of the one read from
    ``llm_string`` (the settings' hash is still added); ``similarity_threshold``
    and ``ttl_seconds``: per-call overrides of the tenant's; ``cache_client``: a
    CacheClient to share. ``stats`` counts lookups, hits, misses, pass-throughs,
    writes and errors on this side. ``require_finish_reason``: write back only
    answers whose generations say they ended by themselves (see above).
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        tenant: str = "default",
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        model: str | None = None,
        similarity_threshold: float | None = None,
        ttl_seconds: int = 0,
        cache_client: CacheClient | None = None,
        breaker: Breaker | None = None,
        require_finish_reason: bool = False,
    ) -> None:
        self.require_finish_reason = require_finish_reason
        self.guard = Guard(
            target, tenant, api_key, timeout, similarity_threshold, ttl_seconds, "langchain", cache_client, breaker
        )
        self.model = model

    @property
    def async_cache_client(self) -> AsyncCacheClient:
        """The AsyncCacheClient of the running event loop."""
        return self.guard.aclient

    def close(self) -> None:
        self.guard.close()

    async def aclose(self) -> None:
        await self.guard.aclose()

    # -- BaseCache ----------------------------------------------------------------------------------
    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        plan, is_chat = self.plan(prompt, llm_string)
        return self._served(plan, self.guard.lookup(plan), is_chat)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        plan, is_chat = self.plan(prompt, llm_string)
        return self._served(plan, await self.guard.alookup(plan), is_chat)

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        plan, _ = self.plan(prompt, llm_string)
        answer = self._answer(plan, return_val)
        if answer:
            _mark(return_val, self.guard.served(plan, None, self.guard.write(plan, answer, verifies=False)))

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        plan, _ = self.plan(prompt, llm_string)
        answer = self._answer(plan, return_val)
        if answer:
            _mark(return_val, self.guard.served(plan, None, await self.guard.awrite(plan, answer, verifies=False)))

    def clear(self, **kwargs: Any) -> None:
        """Drop cached answers: ``model="gpt-4o-mini"`` that model's (every settings variant); without it the
        cache's own ``model`` when it was given one, else the whole tenant's."""
        clear_scopes(self.guard.client, self.tenant, kwargs.get("model", self.model))

    async def aclear(self, **kwargs: Any) -> None:
        await aclear_scopes(self.guard.aclient, self.tenant, kwargs.get("model", self.model))

    # -- mapping ------------------------------------------------------------------------------------
    def plan(self, prompt: str, llm_string: str) -> tuple[Plan, bool]:
        """The scope and chat for a LangChain call, or why it is not cached; and whether it is a chat's."""
        base, settings, refused = read_llm_string(llm_string)
        messages = _messages(prompt)
        is_chat = messages is not None
        if refused:
            return not_cacheable(refused), is_chat
        plan = chat_plan(messages) if messages is not None else Plan(True, chat=[{"role": "user", "content": prompt}])
        if plan.cacheable:
            if not plan.chat[-1]["content"].strip():
                return not_cacheable("empty question"), is_chat
            plan.model = scope_model(self.model or base, settings)
        return plan, is_chat

    def _answer(self, plan: Plan, return_val: RETURN_VAL_TYPE) -> str:
        """The answer text to write back for these generations, or "" (and why, at debug level)."""
        if not plan.cacheable:
            return ""
        refused = not_written(return_val, self.require_finish_reason)
        answer = "" if refused else encode(return_val)
        if not answer:
            log.debug("not written back: %s", refused or "generations JSON cannot carry as they are")
        return answer

    def _served(self, plan: Plan, hit: Hit | None, is_chat: bool) -> RETURN_VAL_TYPE | None:
        """A hit's generations as they were written, chat messages marked; None on a miss or an unreadable entry."""
        if hit is None or not hit.hit:
            return None
        served = self.guard.served(plan, hit)
        try:
            generations = decode(hit.answer)
        except UnreadableEntry as exc:
            log.warning("entry %s of %s served as a miss: %s", hit.id, plan.model, exc)
            return None
        if is_chat and len(generations) == 1 and type(generations[0]) is Generation:
            # An entry of the first format (one plain text): a chat model's answer says it stopped.
            message = AIMessage(content=generations[0].text, response_metadata={"finish_reason": "stop"})
            generations = [ChatGeneration(message=message)]
        _mark(generations, served)
        return generations


def _mark(generations: Sequence[Generation], served: Served) -> None:
    """Show the caller on each chat message what the cache did (a hit, or the entry an answer was stored as).

    Only a chat message's ``response_metadata`` carries it: generation_info and text generations are
    returned exactly as they were given (LangChain's standard cache tests hold every cache to that).
    """
    info = served.as_dict()
    for gen in generations:
        if isinstance(gen, ChatGeneration):
            gen.message.response_metadata = {**gen.message.response_metadata, "modelcache": info}


def read_llm_string(llm_string: str) -> tuple[str, dict[str, Any], str]:
    """(model name, settings that shape the answer, why not cached or "") from an llm_string.

    Two forms: a serialisable chat model's ``<json of its constructor>---<sorted call params>``,
    and otherwise ``str(sorted(params.items()))``. What cannot be read is hashed as it is.
    """
    head, _, tail = llm_string.partition("---")
    settings: dict[str, Any] = {}
    base = ""
    try:
        spec = json.loads(head)
    except ValueError:
        spec = None
    if isinstance(spec, dict) and isinstance(spec.get("kwargs"), dict):
        ids = spec.get("id") or []
        settings["class"] = ids[-1] if ids else spec.get("name", "")
        settings.update(spec["kwargs"])
        base = next((str(settings[k]) for k in MODEL_KEYS if isinstance(settings.get(k), str)), settings["class"])
        call = _literal_items(tail) if tail else {}
    else:
        call = _literal_items(llm_string)
        if call is None:
            return "llm", {"raw": llm_string}, ""
        base = next((str(call[k]) for k in MODEL_KEYS if isinstance(call.get(k), str)), str(call.get("_type", "llm")))
    if call is None:
        settings["call"] = tail
        call = {}
    settings.update(call)
    for key in NOT_CACHED_SETTINGS:
        if settings.get(key) not in (None, False, [], {}):
            return base, {}, f"{key} set"
    n = settings.get("n")
    if isinstance(n, int) and n > 1:
        return base, {}, "n > 1"
    return base, {k: v for k, v in settings.items() if k not in IGNORED_SETTINGS}, ""


def _literal_items(text: str) -> dict[str, Any] | None:
    try:
        items = ast.literal_eval(text.strip())
        return {str(k): v for k, v in items}
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


class _Unreadable(list[BaseMessage]):
    """A serialised message list that could not be read back (a message class outside LangChain's own)."""


def _messages(prompt: str) -> list[BaseMessage] | None:
    """A chat model's messages from its serialised prompt; None for an LLM's plain-text prompt."""
    if not prompt.startswith("[{"):
        return None
    try:
        value = loads(prompt, allowed_objects="messages")
    except Exception:  # noqa: BLE001 - a serialised chat we cannot read, or a plain prompt that looks like one
        return _Unreadable() if '"lc": 1' in prompt else None
    if isinstance(value, list) and value and all(isinstance(m, BaseMessage) for m in value):
        return value
    return None


def chat_plan(messages: Sequence[BaseMessage]) -> Plan:
    if isinstance(messages, _Unreadable):
        return not_cacheable("a message class the cache cannot read back")
    chat: list[dict[str, str]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            role = "system"
        elif isinstance(m, HumanMessage):
            role = "user"
        elif isinstance(m, AIMessage):
            if m.tool_calls or m.invalid_tool_calls or m.additional_kwargs.get("function_call"):
                return not_cacheable("tool calls in the chat")
            role = "assistant"
        elif isinstance(m, ChatMessage) and m.role in ROLES:
            role = m.role
        else:
            return not_cacheable(f"a {m.type} message in the chat")
        text = _text(m.content)
        if text is None:
            return not_cacheable("non-text content")
        chat.append({"role": role, "content": text})
    if not chat or chat[-1]["role"] != "user":
        return not_cacheable("the last message is not the human's")
    return Plan(True, chat=chat)


def _text(content: Any) -> str | None:
    """The text of a message's content; None when it holds anything but text."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        else:
            return None
    return "".join(parts)


def not_written(return_val: RETURN_VAL_TYPE, require_finish_reason: bool = False) -> str:
    """Why these generations must not be written back, or "" when they may.

    Every generation must be a whole text answer: no tool calls, text content only, not blank, and not
    cut short. A finish reason that says it was cut (``length``, a content filter) refuses; so does none
    at all from a provider that reports one (a ``model_provider`` in the message's metadata, or a
    finish key present and empty): that is a stream that broke off. No finish reason from a model that
    never reports one is no reason to refuse, unless ``require_finish_reason``.
    """
    if not return_val:
        return "no generation"
    for gen in return_val:
        said = dict(gen.generation_info or {})
        provider = None
        if isinstance(gen, ChatGeneration):
            message = gen.message
            if not isinstance(message, AIMessage):
                return f"a {message.type} message"
            if message.tool_calls or message.invalid_tool_calls or message.additional_kwargs.get("function_call"):
                return "tool calls"
            said.update(message.response_metadata)
            provider = message.response_metadata.get("model_provider")
            text = _text(message.content)
            if text is None:
                return "non-text content"
        else:
            text = gen.text
        if not text or not text.strip():
            return "a blank answer"
        finish = next((said[k] for k in FINISH_KEYS if said.get(k) is not None), None)
        if finish is not None and finish not in STOPPED:
            return f"cut short ({finish})"
        if finish is None:
            if require_finish_reason:
                return "no finish reason"
            if provider or any(k in said for k in FINISH_KEYS):
                return "no finish reason from a provider that reports one: a stream that broke off"
    return ""
