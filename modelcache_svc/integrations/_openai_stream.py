"""Streams for CachedOpenAI: a cached answer replayed as chunks, and the model's chunks passed through.

A passed-through stream collects the text of choice 0 as it goes and hands
the whole answer to its ``on_end`` callback only when the model's stream ended
by itself with ``finish_reason == "stop"``: a stream that broke off (an error,
the connection dropped before the end), that the caller closed early, that was
cut at ``length`` or that carried tool calls or a refusal is never written back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Self

from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
from openai.types.completion_usage import CompletionUsage

from ._chat import ID_PREFIX, SYSTEM_FINGERPRINT


def zero_usage() -> CompletionUsage:
    return CompletionUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0)


def pieces(answer: str, size: int) -> list[str]:
    """The answer cut at spaces into pieces of about ``size`` characters; joined they give it back."""
    out: list[str] = []
    start = 0
    while start < len(answer):
        end = min(len(answer), start + size)
        if end < len(answer):
            space = answer.rfind(" ", start + 1, end)
            end = space if space > start else end
        out.append(answer[start:end])
        start = end
    return out


def replay_chunks(answer: str, info: Any, model: str, include_usage: bool, size: int) -> list[ChatCompletionChunk]:
    """A cached answer as the chunks the API would stream: role, text pieces, finish, usage if asked."""
    head: dict[str, Any] = {
        "id": ID_PREFIX + info.entry_id,
        "created": int(time.time()),
        "model": model,
        "object": "chat.completion.chunk",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    deltas = [ChoiceDelta(role="assistant", content="")] + [ChoiceDelta(content=p) for p in pieces(answer, size)]
    chunks = [ChatCompletionChunk(**head, choices=[Choice(index=0, delta=d)]) for d in deltas]
    chunks.append(ChatCompletionChunk(**head, choices=[Choice(index=0, delta=ChoiceDelta(), finish_reason="stop")]))
    if include_usage:
        chunks.append(ChatCompletionChunk(**head, choices=[], usage=zero_usage()))
    for chunk in chunks:
        chunk.modelcache = info  # type: ignore[attr-defined]
    return chunks


class Collector:
    """The text of choice 0 across chunks, and whether it is a whole answer worth writing back."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.clean = True  # no tool calls, function call, refusal or audio

    def feed(self, chunk: ChatCompletionChunk) -> None:
        for choice in chunk.choices:
            if choice.index != 0:
                self.clean = False
                continue
            delta = choice.delta
            if delta.tool_calls or delta.function_call or delta.refusal or delta.audio:
                self.clean = False
            if delta.content:
                self.parts.append(delta.content)
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason

    def answer(self) -> str:
        text = "".join(self.parts)
        return text if self.clean and self.finish_reason == "stop" and text.strip() else ""


class CachedStream:
    """Iterates like ``openai.Stream[ChatCompletionChunk]`` (a context manager with ``close()``).

    ``modelcache`` tells what the cache did; after a written-back stream its
    ``entry_id`` is the stored entry's. Attributes it lacks (``response``) are
    the model's stream's.
    """

    def __init__(
        self, chunks: Iterator[ChatCompletionChunk], info: Any, on_end: Callable[[str], Any] | None, inner: Any = None
    ) -> None:
        self.modelcache = info
        self._chunks = chunks
        self._on_end = on_end
        self._inner = inner
        self._collector = Collector()
        self._done = False

    def __iter__(self) -> CachedStream:
        return self

    def __next__(self) -> ChatCompletionChunk:
        if self._done:
            raise StopIteration
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._done = True
            answer = self._collector.answer()
            if self._on_end is not None and answer:
                self.modelcache = self._on_end(answer)
            raise
        except BaseException:
            self._done = True  # broke off: nothing is written back
            raise
        self._collector.feed(chunk)
        return chunk

    def close(self) -> None:
        self._done = True  # closed early: nothing is written back
        if self._inner is not None:
            self._inner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


class AsyncCachedStream:
    """The asyncio twin: iterates like ``openai.AsyncStream[ChatCompletionChunk]``."""

    def __init__(
        self,
        chunks: AsyncIterator[ChatCompletionChunk],
        info: Any,
        on_end: Callable[[str], Awaitable[Any]] | None,
        inner: Any = None,
    ) -> None:
        self.modelcache = info
        self._chunks = chunks
        self._on_end = on_end
        self._inner = inner
        self._collector = Collector()
        self._done = False

    def __aiter__(self) -> AsyncCachedStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        if self._done:
            raise StopAsyncIteration
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._done = True
            answer = self._collector.answer()
            if self._on_end is not None and answer:
                self.modelcache = await self._on_end(answer)
            raise
        except BaseException:
            self._done = True
            raise
        self._collector.feed(chunk)
        return chunk

    async def close(self) -> None:
        self._done = True
        if self._inner is not None:
            await self._inner.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


async def aiter_list(chunks: list[ChatCompletionChunk]) -> AsyncIterator[ChatCompletionChunk]:
    for chunk in chunks:
        yield chunk
