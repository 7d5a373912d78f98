"""CachedOpenAI / AsyncCachedOpenAI: the real openai SDK, a real cache server, the model played by
tests/fake_openai.py over HTTP (its answers say which call made them: "answer 3: ...")."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from modelcache_svc.integrations.openai import AsyncCachedOpenAI, CachedOpenAI
from tests.fake_openai import FakeOpenAI
from tests.servers import ThreadServer, free_port

SYSTEM = {"role": "system", "content": "You are terse."}
Q = "What's the capital of Vietnam?"
PARAPHRASE = "capital city of Vietnam?"
CACHE_TIMEOUT = 10.0  # this host is shared and slow; the default 0.25 s is for products


@pytest.fixture
def model() -> str:
    """A model name of the test's own: scopes never meet across tests."""
    return "gpt-test-" + uuid.uuid4().hex[:8]


def user(text: str) -> list[dict[str, Any]]:
    return [SYSTEM, {"role": "user", "content": text}]


def cached(cache_server: ThreadServer, model_server: FakeOpenAI, **kwargs: Any) -> CachedOpenAI:
    kwargs.setdefault("timeout", CACHE_TIMEOUT)
    return CachedOpenAI(openai.OpenAI(base_url=model_server.base_url, api_key="sk-test"), cache_server.target, **kwargs)


def acached(cache_server: ThreadServer, model_server: FakeOpenAI, **kwargs: Any) -> AsyncCachedOpenAI:
    kwargs.setdefault("timeout", CACHE_TIMEOUT)
    client = openai.AsyncOpenAI(base_url=model_server.base_url, api_key="sk-test")
    return AsyncCachedOpenAI(client, cache_server.target, **kwargs)


def text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def entries(cache_server: ThreadServer, model: str) -> int:
    with cache_server.client() as c:
        return sum(s["entries"] for s in c.stats("default") if s["model"].startswith(model))


def test_repeat_and_paraphrase_are_answered_from_the_cache(
    cache_server: ThreadServer, model_server: FakeOpenAI, model: str
) -> None:
    client = cached(cache_server, model_server)
    first = client.chat.completions.create(model=model, messages=user(Q))
    calls = model_server.calls
    assert first.choices[0].message.content.endswith(Q)
    assert first.modelcache.hit is False and first.modelcache.entry_id  # written back
    assert not first.id.startswith("modelcache-")

    again = client.chat.completions.create(model=model, messages=user(Q))
    para = client.chat.completions.create(model=model, messages=user(PARAPHRASE))
    assert model_server.calls == calls  # the model was not called
    for hit, match in ((again, "exact"), (para, "semantic")):
        assert isinstance(hit, ChatCompletion)
        assert hit.choices[0].message.content == first.choices[0].message.content
        assert hit.choices[0].finish_reason == "stop"
        assert hit.id == "modelcache-" + first.modelcache.entry_id
        assert hit.system_fingerprint == "modelcache" and hit.usage.total_tokens == 0
        assert hit.modelcache.hit and hit.modelcache.match == match
        assert hit.modelcache.entry_id == first.modelcache.entry_id and hit.model == model
    assert para.modelcache.messages[-1] == {"role": "user", "content": PARAPHRASE}

    # Another system prompt, another temperature: other keys, the model is called.
    verbose = [{"role": "system", "content": "Be verbose."}, user(Q)[1]]
    other = client.chat.completions.create(model=model, messages=verbose)
    warm = client.chat.completions.create(model=model, messages=user(Q), temperature=0.7)
    assert model_server.calls == calls + 2
    assert not other.modelcache.hit and not warm.modelcache.hit
    assert warm.modelcache.model.startswith(model + "::")
    assert client.stats["hits"] == 2 and client.stats["writes"] == 3 and client.stats["errors"] == 0

    # clear_cache(model) drops the model's answers under every parameter variant.
    assert entries(cache_server, model) == 3
    assert client.clear_cache(model) == 3
    assert entries(cache_server, model) == 0


def test_async_repeat_and_paraphrase(cache_server: ThreadServer, model_server: FakeOpenAI, model: str) -> None:
    async def main() -> None:
        client = acached(cache_server, model_server)
        first = await client.chat.completions.create(model=model, messages=user(Q))
        calls = model_server.calls
        again = await client.chat.completions.create(model=model, messages=user(Q))
        para = await client.chat.completions.create(model=model, messages=user(PARAPHRASE))
        assert model_server.calls == calls
        assert again.choices[0].message.content == para.choices[0].message.content == first.choices[0].message.content
        assert (again.modelcache.match, para.modelcache.match) == ("exact", "semantic")
        assert para.id.startswith("modelcache-")
        await client.close()

    asyncio.run(main())


def test_streamed_miss_is_written_back_and_replayed(
    cache_server: ThreadServer, model_server: FakeOpenAI, model: str
) -> None:
    client = cached(cache_server, model_server, replay_chunk_chars=8)
    stream = client.chat.completions.create(
        model=model, messages=user(Q), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    answer = text(chunks)
    assert answer.endswith(Q) and len(chunks) > 3  # the model's own chunks, as they came
    assert stream.modelcache.entry_id and not stream.modelcache.hit
    calls = model_server.calls

    with client.chat.completions.create(
        model=model, messages=user(PARAPHRASE), stream=True, stream_options={"include_usage": True}
    ) as replay:
        again = list(replay)
    assert model_server.calls == calls
    assert text(again) == answer and len(again) > 3  # pieces of about 8 characters
    assert all(isinstance(c, ChatCompletionChunk) and c.id == "modelcache-" + stream.modelcache.entry_id for c in again)
    assert again[0].choices[0].delta.role == "assistant"
    assert again[-2].choices[0].finish_reason == "stop"
    assert again[-1].choices == [] and again[-1].usage.total_tokens == 0
    assert replay.modelcache.match == "semantic" and again[1].modelcache.hit

    # And the same answer without streaming.
    plain = client.chat.completions.create(model=model, messages=user(Q))
    assert plain.choices[0].message.content == answer and model_server.calls == calls


def test_a_stream_that_breaks_off_or_is_closed_early_is_not_written_back(
    cache_server: ThreadServer, model_server: FakeOpenAI, model: str
) -> None:
    client = cached(cache_server, model_server)
    broken = user("Tell me a long story BREAK please, about a dragon and a knight")
    partial = text(list(client.chat.completions.create(model=model, messages=broken, stream=True)))
    assert partial and "knight" not in partial  # the connection dropped halfway: no finish_reason

    stream = client.chat.completions.create(model=model, messages=user(Q), stream=True)
    next(stream), next(stream)
    stream.close()  # the caller stopped reading

    calls = model_server.calls
    client.chat.completions.create(model=model, messages=broken, stream=True).close()
    client.chat.completions.create(model=model, messages=user(Q))
    assert model_server.calls == calls + 2  # both missed: nothing was written back
    assert client.stats["hits"] == 0


def test_async_stream_written_back_and_closed_early(
    cache_server: ThreadServer, model_server: FakeOpenAI, model: str
) -> None:
    async def main() -> None:
        client = acached(cache_server, model_server)
        stream = await client.chat.completions.create(model=model, messages=user(Q), stream=True)
        answer = text([c async for c in stream])
        early = await client.chat.completions.create(model=model, messages=user("Name a colour."), stream=True)
        async with early:
            await early.__anext__()
        calls = model_server.calls
        replay = await client.chat.completions.create(model=model, messages=user(PARAPHRASE), stream=True)
        assert text([c async for c in replay]) == answer and model_server.calls == calls
        again = await client.chat.completions.create(model=model, messages=user("Name a colour."))
        assert model_server.calls == calls + 1 and not again.modelcache.hit
        await client.close()

    asyncio.run(main())


def test_a_cache_that_is_down_leaves_every_call_working(model_server: FakeOpenAI, model: str) -> None:
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    client = CachedOpenAI(openai.OpenAI(base_url=model_server.base_url, api_key="sk-test"), down)
    calls = model_server.calls
    started = time.monotonic()
    plain = client.chat.completions.create(model=model, messages=user(Q))
    streamed = text(list(client.chat.completions.create(model=model, messages=user(Q), stream=True)))
    assert plain.choices[0].message.content.endswith(Q) and streamed.endswith(Q)
    assert time.monotonic() - started < 2.0  # the cache deadline is 0.25 s a call
    assert model_server.calls == calls + 2 and client.stats["errors"] >= 2

    async def main() -> None:
        aclient = AsyncCachedOpenAI(openai.AsyncOpenAI(base_url=model_server.base_url, api_key="sk-test"), down)
        completion = await aclient.chat.completions.create(model=model, messages=user(Q))
        stream = await aclient.chat.completions.create(model=model, messages=user(Q), stream=True)
        assert completion.choices[0].message.content.endswith(Q)
        assert text([c async for c in stream]).endswith(Q)
        assert aclient.stats["errors"] >= 2
        await aclient.close()

    asyncio.run(main())
    assert model_server.calls == calls + 4


def test_a_cache_that_hangs_costs_at_most_its_deadline(model_server: FakeOpenAI, model: str) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        client = CachedOpenAI(
            openai.OpenAI(base_url=model_server.base_url, api_key="sk-test"),
            f"127.0.0.1:{silent.getsockname()[1]}",
            timeout=0.2,
        )
        took = []
        for _ in range(5):
            started = time.monotonic()
            assert client.chat.completions.create(model=model, messages=user(Q)).choices[0].message.content
            took.append(time.monotonic() - started)
    # A lookup and a write-back, each cut at 0.2 s; after 3 failures the breaker skips the cache.
    assert max(took) < 0.4 + 0.5, took
    assert client.stats["errors"] == 3 and client.stats["skipped"] >= 2, client.stats
    assert min(took[-2:]) < 0.2, took


def test_calls_the_cache_must_not_answer_go_straight_to_the_model(
    cache_server: ThreadServer, model_server: FakeOpenAI, model: str
) -> None:
    client = cached(cache_server, model_server, only_temperature_zero=True)
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    kinds: list[dict[str, Any]] = [
        {"messages": user(Q), "n": 2, "temperature": 0},
        {"messages": user(Q), "tools": [tool], "temperature": 0},
        {"messages": user(Q), "logprobs": True, "temperature": 0},
        {"messages": user(Q)},  # sampled at the API's default temperature, and only temperature 0 is cached
        {"messages": user(Q), "temperature": 0.5},
        {"messages": [*user(Q), {"role": "assistant", "content": "Hanoi."}], "temperature": 0},
        {"messages": [SYSTEM, {"role": "user", "content": [{"type": "text", "text": Q}, image]}], "temperature": 0},
    ]
    calls = model_server.calls
    for kind in kinds * 2:
        response = client.chat.completions.create(model=model, **kind)
        assert not hasattr(response, "modelcache") or not response.modelcache.hit
    assert model_server.calls == calls + 2 * len(kinds)
    assert client.stats["passthrough"] == 2 * len(kinds) and client.stats["lookups"] == 0
    assert entries(cache_server, model) == 0

    # Text parts in a list are text: cached, at temperature 0.
    parts = [SYSTEM, {"role": "user", "content": [{"type": "text", "text": Q}]}]
    client.chat.completions.create(model=model, messages=parts, temperature=0)
    hit = client.chat.completions.create(model=model, messages=user(Q), temperature=0)
    assert hit.modelcache.match == "exact"
