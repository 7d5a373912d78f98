"""What a LangChain cache entry's answer holds: the generations as LangChain gave them, and read back.

The service stores one answer text per entry. ``encode`` writes the generations of one call into it so
that ``decode`` returns them as they were given: their order, class (``Generation`` / ``ChatGeneration``),
text, ``generation_info``, and a chat generation's whole ``AIMessage`` (content, response_metadata,
additional_kwargs, usage_metadata, name). The message's ``id`` is not kept: a served answer is a new
message (LangGraph merges messages by id), and LangChain gives a fresh id to every call's message anyway.

    <text of the first generation>
    <!--modelcache:langchain/1 {"kind": "chat", "generations": [{...}, ...]}-->

The first generation's text leads, as it is, so that a person (``modelcache-svc query``, an export) and
the service (comparing a verification write-back with the entry) read the answer itself; the rest is one
JSON object in an HTML comment that a Markdown renderer hides. An answer without that trailer is an
entry of the first format, one plain text (written before generations were kept, or by another client):
it reads back as one generation of that text.

``encode`` refuses (returns "") what it cannot give back exactly: a generation_info or message field that
JSON does not carry as it is, a message class other than an AI message. It checks by decoding what it wrote.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

MARK = "\n<!--modelcache:langchain/1 "
END = "-->"
KINDS = ("text", "chat")


class UnreadableEntry(ValueError):
    """An answer that carries the trailer but not generations this version can read back."""


def encode(generations: Sequence[Generation]) -> str:
    """The answer text that ``decode`` turns back into ``generations`` (ids dropped), or "" when none can."""
    given = [_plain(g) for g in generations]
    if not given or any(g is None for g in given):
        return ""
    kind = "chat" if isinstance(given[0], ChatGeneration) else "text"
    if any(isinstance(g, ChatGeneration) != (kind == "chat") for g in given):
        return ""  # a mix of text and chat generations: no model returns that
    head = given[0].text  # type: ignore[union-attr]
    fields = [_fields(g, first=(i == 0)) for i, g in enumerate(given)]  # type: ignore[arg-type]
    payload = {"kind": kind, "generations": fields}
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return ""  # generation_info or metadata that JSON cannot carry
    # Only a JSON string can hold "<" or ">": escaped, the comment cannot end early or nest.
    answer = head + MARK + text.replace("<", "\\u003c").replace(">", "\\u003e") + END
    try:
        back = decode(answer)
    except UnreadableEntry:
        return ""
    return answer if back == given else ""


def decode(answer: str) -> list[Generation]:
    """The generations an answer holds; a plain-text answer (the first format) is one generation.

    The chat/text kind of a plain answer is not known here: it comes back as a ``Generation``, which
    LangChain turns into a chat message for a chat model (``langchain.py`` does that itself, to mark it).
    """
    head, mark, rest = answer.rpartition(MARK)
    if not mark or not rest.endswith(END):
        return [Generation(text=answer)]
    try:
        payload = json.loads(rest[: -len(END)])
        kind = payload["kind"]
        items = payload["generations"]
        if kind not in KINDS or not isinstance(items, list) or not items:
            raise UnreadableEntry(f"an entry of kind {kind!r} with {type(items).__name__} generations")
        return [_generation(kind, item, head if i == 0 else None) for i, item in enumerate(items)]
    except UnreadableEntry:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever is malformed in a stored answer
        raise UnreadableEntry(f"a cached LangChain answer that cannot be read back: {exc}") from exc


def without_mark(message: BaseMessage) -> dict[str, Any]:
    """A message's response_metadata without the cache's own ``modelcache`` key (never stored)."""
    return {k: v for k, v in message.response_metadata.items() if k != "modelcache"}


def _plain(gen: Generation) -> Generation | None:
    """The generation as it will be read back: chunk classes as their whole classes, no message id, no mark."""
    if isinstance(gen, ChatGeneration):
        message = gen.message
        if isinstance(message, AIMessageChunk):
            message = message_chunk_to_message(message)
        if type(message) is not AIMessage:
            return None
        message = message.model_copy(update={"id": None, "response_metadata": without_mark(message)})
        return ChatGeneration(message=message, generation_info=gen.generation_info)
    if isinstance(gen, GenerationChunk) or type(gen) is Generation:
        return Generation(text=gen.text, generation_info=gen.generation_info)
    return None


def _fields(gen: Generation, first: bool) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if gen.generation_info is not None:
        item["info"] = gen.generation_info
    if isinstance(gen, ChatGeneration):
        data = gen.message.model_dump(exclude={"id", "type"}, exclude_defaults=True)
        if first and isinstance(data.get("content"), str) and data["content"] == gen.text:
            del data["content"]  # it is the answer's head
        item["message"] = data
    elif not first:
        item["text"] = gen.text
    return item


def _generation(kind: str, item: dict[str, Any], head: str | None) -> Generation:
    info = item.get("info")
    if info is not None and not isinstance(info, dict):
        raise UnreadableEntry("generation_info is not an object")
    if kind == "text":
        text = head if head is not None else item["text"]
        if not isinstance(text, str):
            raise UnreadableEntry("a text generation without text")
        return Generation(text=text, generation_info=info)
    data = dict(item["message"])
    if head is not None and "content" not in data:
        data["content"] = head
    message = AIMessage(**data)
    # Never written (tool calls are not cached): an entry that has them was not written by this module.
    if message.tool_calls or message.invalid_tool_calls or message.additional_kwargs.get("function_call"):
        raise UnreadableEntry("a cached message with tool calls")
    return ChatGeneration(message=message, generation_info=info)
