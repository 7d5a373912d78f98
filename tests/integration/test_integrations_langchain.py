"""ModelCacheSemanticCache: real langchain-core and langchain-openai models, a real cache server, the
model played by tests/fake_openai.py over HTTP (its answers say which call made them: "answer 3: ...")."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_openai import ChatOpenAI, OpenAI

from modelcache_svc.integrations._langchain_entry import MARK
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
    assert model_server.calls == calls and cache.stats["hits"] == 3
    # The generation as the model gave it: LangChain's standard tests hold a cache to that (no mark added).
    assert result.generations[0][0].text == first
    assert result.generations[0][0].generation_info == {"finish_reason": "stop", "logprobs": None}


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


def unmarked(generations: Any) -> list[Any]:
    """Generations without the cache's own response_metadata["modelcache"] (what update was given)."""
    out = []
    for gen in generations:
        if isinstance(gen, ChatGeneration):
            metadata = {k: v for k, v in gen.message.response_metadata.items() if k != "modelcache"}
            gen = gen.model_copy(update={"message": gen.message.model_copy(update={"response_metadata": metadata})})
        out.append(gen)
    return out


def test_several_chat_generations_come_back_as_they_were_given(cache_server: ThreadServer, name: str) -> None:
    cache = semantic_cache(cache_server, model=name)
    prompt = "What's the capital of Vietnam?"
    first = AIMessage(
        content="Hanoi <b>is</b> the capital --> not Saigon.",
        response_metadata={"finish_reason": "stop", "model_name": "m-1", "token_usage": {"total_tokens": 15}},
        usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        additional_kwargs={"refusal": None},
    )
    second = AIMessage(content=[{"type": "text", "text": "Hà Nội."}], response_metadata={"finish_reason": "stop"})
    given = [
        ChatGeneration(message=first, generation_info={"finish_reason": "stop", "logprobs": None}),
        ChatGeneration(message=second),
    ]
    cache.update(prompt, "[('model', 'm-1')]", given)
    written = given[0].message.response_metadata["modelcache"]  # the entry the answer was stored as
    assert written["hit"] is False and written["entry_id"]
    back = cache.lookup(prompt, "[('model', 'm-1')]")
    assert back is not None and unmarked(back) == unmarked(given)
    assert [type(g) for g in back] == [ChatGeneration, ChatGeneration]
    served = back[0].message.response_metadata["modelcache"]
    assert served["hit"] and served["match"] == "exact" and served["entry_id"] == written["entry_id"]
    # The stored answer leads with the first generation's text: what `modelcache-svc query` shows.
    with cache_server.client() as c:
        scope = cache.plan(prompt, "[('model', 'm-1')]")[0].model
        hit = c.query("default", scope, [{"role": "user", "content": prompt}])
    assert hit.answer.startswith(first.content + MARK)


def test_an_entry_of_the_first_format_is_read_back(cache_server: ThreadServer, name: str) -> None:
    """Entries written before generations were kept hold the answer's text alone."""
    cache = semantic_cache(cache_server, model=name)
    llm_string = "[('model', 'm-1')]"
    text_plan, _ = cache.plan("Who wrote Hamlet?", llm_string)
    chat_prompt = dumps([SYSTEM, HumanMessage(Q)])
    chat_plan, is_chat = cache.plan(chat_prompt, llm_string)
    with cache_server.client() as c:
        c.insert("default", text_plan.model, text_plan.chat, "Shakespeare.")
        c.insert("default", chat_plan.model, chat_plan.chat, "Hanoi.")
    assert cache.lookup("Who wrote Hamlet?", llm_string) == [Generation(text="Shakespeare.")]
    (chat,) = cache.lookup(chat_prompt, llm_string) or []
    assert is_chat and isinstance(chat, ChatGeneration) and chat.message.content == "Hanoi."
    assert chat.message.response_metadata["finish_reason"] == "stop"


def test_what_is_written_back_and_what_is_not(cache_server: ThreadServer, name: str) -> None:
    cache = semantic_cache(cache_server, model=name)
    llm = "[('model', 'm-1')]"

    def written(prompt: str, *generations: Generation, strict: bool = False) -> bool:
        cache.require_finish_reason = strict
        cache.update(prompt, llm, list(generations))
        return cache.lookup(prompt, llm) is not None

    def chat(text: str, **metadata: Any) -> ChatGeneration:
        return ChatGeneration(message=AIMessage(content=text, response_metadata=metadata))

    # No finish reason at all (a model wrapper that reports none): cached, unless asked to require one.
    assert written("Who wrote Hamlet?", Generation(text="Shakespeare."))
    assert written("Who painted the Mona Lisa?", chat("Leonardo."))
    assert not written("What is the largest ocean?", chat("The Pacific."), strict=True)
    assert written("What is the smallest ocean?", chat("The Arctic.", stop_reason="end_turn"), strict=True)
    # Cut short, or a stream that broke off (a provider that reports finish reasons, none this time): never.
    assert not written("Tell me a long story.", chat("Once upon", finish_reason="length"))
    filtered = Generation(text="Once", generation_info={"finish_reason": "content_filter"})
    assert not written("Tell me a violent story.", filtered)
    assert not written("Tell me a sad story.", chat("Once upon a", model_provider="openai"))
    assert not written("Tell me a short story.", Generation(text="Once", generation_info={"finish_reason": None}))
    # Every generation must be whole: one cut among several refuses them all; so do tool calls and blanks.
    assert not written("Name two oceans.", chat("Pacific.", finish_reason="stop"), chat("Atl", finish_reason="length"))
    call = {"name": "weather", "args": {}, "id": "call_1"}
    assert not written("Look up the capital of Peru.", ChatGeneration(message=AIMessage("Lima.", tool_calls=[call])))
    assert not written("Say nothing.", Generation(text="  "))
    # A generation_info JSON cannot carry as it is (a tuple would come back a list): not cached.
    assert not written("Name three colours.", Generation(text="Red.", generation_info={"rgb": (255, 0, 0)}))
    assert cache.stats["errors"] == 0


def test_an_unreadable_entry_is_a_miss(cache_server: ThreadServer, name: str) -> None:
    cache = semantic_cache(cache_server, model=name)
    plan, _ = cache.plan("Who wrote Hamlet?", "[('model', 'm-1')]")
    with cache_server.client() as c:
        c.insert("default", plan.model, plan.chat, "Shakespeare." + MARK + '{"kind": "chat", "generations": [{}]}-->')
    assert cache.lookup("Who wrote Hamlet?", "[('model', 'm-1')]") is None
    assert cache.stats["hits"] == 1  # the service served it; the cache would not hand it on
