"""The OpenAI chat-completions format as the cache reads it: for the OpenAI SDK wrapper and for LiteLLM.

Both take ``create`` / ``completion`` arguments of one shape and return completions of one shape, so the
rules are written once here: which calls the cache may answer and under which scope (``plan_chat``),
which answers are worth writing back (``answer_of``), and the completion a hit is served as
(``hit_completion``). Nothing here imports either SDK; completions are read as objects or as dicts.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any

from ._common import Plan, not_cacheable, scope_model

SYSTEM_FINGERPRINT = "modelcache"  # on every completion and chunk served from the cache
ID_PREFIX = "modelcache-"

# Arguments that never change the answer: not part of the scope's hash.
NEUTRAL_ARGS = frozenset(
    {
        "messages",
        "model",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "parallel_tool_calls",
        "timeout",
        "extra_headers",
        "extra_query",
    }
)
# Arguments whose presence sends the call straight to the model: a cached text answer cannot honour them.
PASS_THROUGH = ("tools", "functions", "tool_choice", "function_call", "audio", "web_search_options", "moderation")
ROLE_OF = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
IGNORED_MESSAGE_KEYS = frozenset({"role", "content", "refusal", "annotations"})


def plan_chat(
    args: Mapping[str, Any],
    model: object,
    only_temperature_zero: bool = False,
    neutral: Collection[str] = NEUTRAL_ARGS,
) -> Plan:
    """The scope and chat of a chat-completions call, or why it goes straight to the model.

    ``args`` are the arguments actually set (no "not given" sentinels, no None); ``model`` the name the
    scope is called after; every argument outside ``neutral`` is hashed into the scope.
    """
    for name in PASS_THROUGH:
        if args.get(name):
            return not_cacheable(f"{name} set")
    if args.get("n", 1) != 1:
        return not_cacheable("n > 1")
    if args.get("logprobs") or args.get("top_logprobs"):
        return not_cacheable("logprobs asked")
    if "audio" in (args.get("modalities") or ()):
        return not_cacheable("audio output")
    if only_temperature_zero and args.get("temperature", 1) != 0:
        return not_cacheable("sampled (temperature not 0)")
    if not isinstance(model, str) or not model:
        return not_cacheable("no model")
    chat = []
    for m in args.get("messages") or ():
        message = chat_message(m)
        if message is None:
            return not_cacheable("a message the cache cannot key (tool, name, non-text content)")
        chat.append(message)
    if not chat or chat[-1]["role"] != "user" or not chat[-1]["content"].strip():
        return not_cacheable("the last message is not a user's question")
    settings = {k: v for k, v in args.items() if k not in neutral and k != "n"}
    return Plan(True, model=scope_model(model, settings), chat=chat)


def chat_message(m: Any) -> dict[str, str] | None:
    """A message as the cache keys it ({role, content}), or None when it carries more than text."""
    if not isinstance(m, Mapping):
        m = m.model_dump(exclude_none=True) if hasattr(m, "model_dump") else None
        if m is None:
            return None
    role = ROLE_OF.get(str(m.get("role", "")))
    extra = [k for k, v in m.items() if k not in IGNORED_MESSAGE_KEYS and v not in (None, [], "", {})]
    if role is None or extra:
        return None
    content = m.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        if len(texts) == len(content) and all(isinstance(t, str) for t in texts):
            return {"role": role, "content": "".join(texts)}  # type: ignore[arg-type]
    return None


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def answer_of(completion: Any) -> str:
    """The text worth writing back: one choice, stopped by itself, plain text (no tool call, refusal, audio)."""
    choices = _get(completion, "choices") or []
    if len(choices) != 1:
        return ""
    choice = choices[0]
    message = _get(choice, "message")
    if _get(choice, "finish_reason") != "stop" or message is None:
        return ""
    provider_fields = _get(message, "provider_specific_fields") or {}  # LiteLLM keeps refusal there
    if any(_get(message, k) for k in ("tool_calls", "function_call", "refusal", "audio")) or (
        isinstance(provider_fields, Mapping) and provider_fields.get("refusal")
    ):
        return ""
    content = _get(message, "content")
    return content if isinstance(content, str) and content.strip() else ""


def hit_completion(answer: str, entry_id: str, model: str) -> dict[str, Any]:
    """A cached answer as the ``chat.completion`` the API would return: marked, with zero usage."""
    return {
        "id": ID_PREFIX + entry_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
