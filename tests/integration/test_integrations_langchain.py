"""ModelCacheSemanticCache: real langchain-core and langchain-openai models, a real cache server, the
model played by tests/fake_openai.py over HTTP (its answers say which call made them: "answer 3: ...")."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI, OpenAI

from modelcache_svc.integrations.langchain import ModelCacheSemanticCache, read_llm_string
from tests.fake_openai import FakeOpenAI
from tests.servers import ThreadServer, free_port

SYSTEM = SystemMessage("You are terse.")
Q = "What's the capital of Vietnam?"
PARAPHRASE = "capital city of Vietnam?"
CACHE_TIMEOUT = 10.0  # this host is shared and slow; the default 0.25 s is for products


@pytest.fixture
def name() -> str:
    """A model name of the test's own: scopes never meet across tests."""
    return "gpt-test-" + uuid.uuid4().hex[:8]


def chat_model(model_server: FakeOpenAI, cache: ModelCacheSemanticCache, name: str, **kwargs: Any) -> ChatOpenAI:
    kwargs.setdefault("temperature", 0)
    return ChatOpenAI(model=name, base_url=model_server.base_url, api_key="sk-test", cache=cache, **kwargs)


def semantic_cache(cache_server: ThreadServer, **kwargs: Any) -> ModelCacheSemanticCache:
    kwargs.setdefault("timeout", CACHE_TIMEOUT)
    return ModelCacheSemanticCache(cache_server.target, **kwargs)


def entries(cache_server: ThreadServer, name: str) -> int:
    with cache_server.client() as c:
        return sum(s["entries"] for s in c.stats("default") if s["model"].startswith(name))


def test_chat_model_repeat_and_paraphrase_are_answered_from_the_cache(
    cache_server: ThreadServer, model_server: FakeOpenAI, name: str
) -> None:
    cache = semantic_cache(cache_server)
    llm = chat_model(model_server, cache, name)
    first = llm.invoke([SYSTEM, HumanMessage(Q)])
    calls = model_server.calls
    assert first.content.endswith(Q)
    written = first.response_metadata["modelcache"]
    assert written["hit"] is False and written["entry_id"]
    assert written["model"].startswith(name + "::")  # the model's name and a hash of its settings

    again = llm.invoke([SYSTEM, HumanMessage(Q)])
    para = llm.invoke([SYSTEM, HumanMessage(PARAPHRASE)])
    assert model_server.calls == calls
    for message, match in ((again, "exact"), (para, "semantic")):
        assert isinstance(message, AIMessage) and message.content == first.content
        served = message.response_metadata["modelcache"]
        assert served["hit"] and served["match"] == match and served["entry_id"] == written["entry_id"]
    # The system prompt is the chat's context, the last human turn the question.
    assert para.response_metadata["modelcache"]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": PARAPHRASE},
    ]

    # Another temperature or another system prompt never shares the answer.
    warm = chat_model(model_server, cache, name, temperature=0.7).invoke([SYSTEM, HumanMessage(Q)])
    other = llm.invoke([SystemMessage("Answer in French."), HumanMessage(Q)])
    assert model_server.calls == calls + 2
    assert warm.content != first.content and other.content != first.content
    assert cache.stats["hits"] == 2 and cache.stats["writes"] == 3 and cache.stats["errors"] == 0

    # clear(model=...) drops every settings variant of the model.
    assert entries(cache_server, name) == 3
    cache.clear(model=name)
    assert entries(cache_server, name) == 0


def test_async_chat_model(cache_server: ThreadServer, model_server: FakeOpenAI, name: str) -> None:
    async def main() -> None:
        cache = semantic_cache(cache_server)
        llm = chat_model(model_server, cache, name)
        first = await llm.ainvoke([SYSTEM, HumanMessage(Q)])
        calls = model_server.calls
        again = await llm.ainvoke([SYSTEM, HumanMessage(Q)])
        para = await llm.ainvoke([SYSTEM, HumanMessage(PARAPHRASE)])
        assert model_server.calls == calls
        assert again.content == para.content == first.content
        assert para.response_metadata["modelcache"]["match"] == "semantic"
        await cache.aclear(model=name)
        await llm.ainvoke([SYSTEM, HumanMessage(Q)])
        assert model_server.calls == calls + 1
        await cache.aclose()

    asyncio.run(main())


def test_text_llm_repeat_and_paraphrase(cache_server: ThreadServer, model_server: FakeOpenAI, name: str) -> None:
    cache = semantic_cache(cache_server)
    llm = OpenAI(model=name, base_url=model_server.base_url, api_key="sk-test", temperature=0, cache=cache)
    first = llm.invoke(Q)
    calls = model_server.calls
    assert llm.invoke(Q) == llm.invoke(PARAPHRASE) == first
    assert model_server.calls == calls
    result = llm.generate([PARAPHRASE])
    assert result.generations[0][0].generation_info["modelcache"]["match"] == "semantic"


def test_streamed_miss_is_written_back_and_served_next_time(
    cache_server: ThreadServer, model_server: FakeOpenAI, name: str
) -> None:
    cache = semantic_cache(cache_server)
    streaming = chat_model(model_server, cache, name, streaming=True)  # invoke() streams from the model
    first = streaming.invoke([SYSTEM, HumanMessage(Q)])
    assert model_server.requests[-1]["stream"] is True
    calls = model_server.calls
    again = chat_model(model_server, cache, name, streaming=True).invoke([SYSTEM, HumanMessage(PARAPHRASE)])
    assert again.content == first.content and model_server.calls == calls

    # A stream that broke off (no finish_reason) is not written back.
    broken = [SYSTEM, HumanMessage("Tell me a long story BREAK please, about a dragon and a knight")]
    streaming.invoke(broken)
    streaming.invoke(broken)
    assert model_server.calls == calls + 2


def test_a_cache_that_is_down_leaves_every_call_working(model_server: FakeOpenAI, name: str) -> None:
    cache = ModelCacheSemanticCache(f"127.0.0.1:{free_port()}")  # nothing listens there; default deadline
    llm = chat_model(model_server, cache, name)
    calls = model_server.calls
    started = time.monotonic()
    assert llm.invoke([SYSTEM, HumanMessage(Q)]).content.endswith(Q)
    assert chat_model(model_server, cache, name, streaming=True).invoke([HumanMessage(Q)]).content.endswith(Q)
    assert time.monotonic() - started < 2.0

    async def main() -> str:
        answer = (await llm.ainvoke([SYSTEM, HumanMessage(Q)])).content
        await cache.aclose()
        return str(answer)

    assert asyncio.run(main()).endswith(Q)
    assert model_server.calls == calls + 3 and cache.stats["errors"] >= 3 and cache.stats["hits"] == 0


def test_calls_the_cache_must_not_answer_go_straight_to_the_model(
    cache_server: ThreadServer, model_server: FakeOpenAI, name: str
) -> None:
    cache = semantic_cache(cache_server)
    llm = chat_model(model_server, cache, name)
    weather = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}
    call = {"name": "weather", "args": {}, "id": "call_1"}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    kinds: list[tuple[Any, list[Any]]] = [
        (llm.bind_tools([weather]), [SYSTEM, HumanMessage(Q)]),  # bound tools
        (llm, [HumanMessage(Q), AIMessage("", tool_calls=[call]), ToolMessage("sunny", tool_call_id="call_1")]),
        (llm, [SYSTEM, HumanMessage(content=[{"type": "text", "text": Q}, image])]),
        (llm, [SYSTEM, HumanMessage(Q), AIMessage("Hanoi.")]),  # the last turn is not the human's
    ]
    calls = model_server.calls
    for runnable, messages in kinds * 2:
        runnable.invoke(messages)
    assert model_server.calls == calls + 2 * len(kinds)
    assert cache.stats["passthrough"] == 2 * len(kinds) and cache.stats["lookups"] == 0
    assert entries(cache_server, name) == 0


def test_llm_strings_map_to_safe_scope_names() -> None:
    base, settings, refused = read_llm_string(
        '{"id": ["langchain", "chat_models", "openai", "ChatOpenAI"], "kwargs": {"model_name": "ft:gpt-4o@acme #1",'
        ' "openai_api_key": {"id": ["OPENAI_API_KEY"], "lc": 1, "type": "secret"}, "temperature": 0.2}, "lc": 1,'
        ' "name": "ChatOpenAI", "type": "constructor"}---[(\'stop\', [\'\\n\'])]'
    )
    assert (base, refused) == ("ft:gpt-4o@acme #1", "")
    assert settings == {"class": "ChatOpenAI", "model_name": "ft:gpt-4o@acme #1", "temperature": 0.2, "stop": ["\n"]}
    cache = ModelCacheSemanticCache()
    plan, is_chat = cache.plan("hello", "[('_type', 'openai'), ('model_name', 'gpt-3.5-turbo-instruct'), ('n', 1)]")
    assert plan.cacheable and not is_chat and plan.model.startswith("gpt-3.5-turbo-instruct::")
    assert read_llm_string("[('model', 'x'), ('n', 3)]")[2] == "n > 1"
    assert read_llm_string("not a literal")[:2] == ("llm", {"raw": "not a literal"})
    from modelcache_svc.limits import check_model_name

    assert check_model_name(cache.plan("q", '{"kwargs": {"model": "ft:gpt-4o@acme #1"}}')[0].model)
