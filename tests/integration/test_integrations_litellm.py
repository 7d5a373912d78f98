"""ModelCacheLiteLLM: the real litellm package, a real cache server, the model played by tests/fake_openai.py
over HTTP (its answers say which call made them: "answer 3: ..."), reached through LiteLLM's openai/ provider
with api_base. LiteLLM runs with its bundled model cost map: no call leaves this host."""

# ruff: noqa: E402 - LiteLLM reads its environment when imported
from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported: no download

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest

from modelcache_svc.config import Settings
from modelcache_svc.embedding import Embedder
from modelcache_svc.integrations.litellm import ModelCacheLiteLLM
from tests.fake_openai import FakeOpenAI
from tests.servers import ThreadServer, free_port

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = {"role": "system", "content": "You are terse."}
Q = "What's the capital of Vietnam?"
PARAPHRASE = "capital city of Vietnam?"
CACHE_TIMEOUT = 10.0  # this host is shared and slow; the default 0.25 s is for products


@pytest.fixture
def model() -> str:
    """A model of the test's own (LiteLLM's openai/ provider): scopes never meet across tests."""
    return "openai/gpt-test-" + uuid.uuid4().hex[:8]


@pytest.fixture
def install() -> Iterator[Callable[..., ModelCacheLiteLLM]]:
    """``litellm.cache = ModelCacheLiteLLM(...)`` for one test; LiteLLM's globals restored afterwards."""
    callbacks = list(litellm.callbacks)

    def make(target: str, **kwargs: Any) -> ModelCacheLiteLLM:
        kwargs.setdefault("timeout", CACHE_TIMEOUT)
        litellm.cache = ModelCacheLiteLLM(target, **kwargs)
        return litellm.cache

    yield make
    if isinstance(litellm.cache, ModelCacheLiteLLM):
        litellm.cache.close()
    litellm.cache = None
    litellm.callbacks[:] = callbacks


def chat(text: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": text}]


def ask(model_server: FakeOpenAI, model: str, text: str, **kwargs: Any) -> Any:
    return litellm.completion(model=model, api_base=model_server.base_url, api_key="sk-test", messages=chat(text),
                              **kwargs)


async def aask(model_server: FakeOpenAI, model: str, text: str, **kwargs: Any) -> Any:
    return await litellm.acompletion(model=model, api_base=model_server.base_url, api_key="sk-test",
                                     messages=chat(text), **kwargs)


def streamed(stream: Any) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream)


def entries(cache_server: ThreadServer, model: str) -> int:
    with cache_server.client() as c:
        return sum(s["entries"] for s in c.stats("default") if s["model"].startswith(model))


def wait_for_writes(cache: ModelCacheLiteLLM, n: int, within: float = 10.0) -> None:
    """LiteLLM writes an answer back from a thread or a task (a stream's once it has ended): wait until the
    cache's n-th insert has returned (its row and its vector stored; a row alone is not yet searchable)."""
    deadline = time.monotonic() + within
    while cache.stats["writes"] < n:
        assert time.monotonic() < deadline, f"{cache.stats['writes']} of {n} answers written back"
        time.sleep(0.05)


def test_repeat_and_paraphrase_are_answered_from_the_cache(
    cache_server: ThreadServer, model_server: FakeOpenAI, model: str, install: Callable[..., ModelCacheLiteLLM]
) -> None:
    cache = install(cache_server.target)
    first = ask(model_server, model, Q)
    calls = model_server.calls
    assert first.choices[0].message.content.endswith(Q)
    wait_for_writes(cache, 1)

    again = ask(model_server, model, Q)
    para = ask(model_server, model, PARAPHRASE)
    assert model_server.calls == calls
    for response, match in ((again, "exact"), (para, "semantic")):
        assert isinstance(response, litellm.ModelResponse)
        assert response.choices[0].message.content == first.choices[0].message.content
        assert response.choices[0].finish_reason == "stop" and response._hidden_params["cache_hit"] is True
        assert response.id.startswith("modelcache-") and response.system_fingerprint == "modelcache"
        assert response.usage.total_tokens == 0
        assert response.modelcache["hit"] and response.modelcache["match"] == match
        assert response.modelcache["model"] == model  # the scope's model: the call's, no parameter set
    assert para.modelcache["messages"] == chat(PARAPHRASE)

    # stream=True on a cached chat: LiteLLM replays the cached answer as a stream.
    replay = ask(model_server, model, PARAPHRASE, stream=True)
    assert streamed(replay) == first.choices[0].message.content and model_server.calls == calls
    assert cache.stats["hits"] == 3 and cache.stats["writes"] == 1 and cache.stats["errors"] == 0


def test_streamed_misses_are_written_back_unless_the_stream_broke_off(
    cache_server: ThreadServer, model_server: FakeOpenAI, model: str, install: Callable[..., ModelCacheLiteLLM]
) -> None:
    cache = install(cache_server.target)
    text = streamed(ask(model_server, model, "How tall is Mount Everest?", stream=True))
    assert model_server.requests[-1]["stream"] is True and text.endswith("Everest?")
    wait_for_writes(cache, 1)
    calls = model_server.calls
    assert ask(model_server, model, "How tall is Mount Everest?").choices[0].message.content == text
    assert model_server.calls == calls

    # The model's stream ends without a finish reason (the connection closes halfway): LiteLLM still closes
    # it with "stop" of its own, but the answer is cut and must not be written back.
    broken = "Tell me a long story BREAK please, about a dragon and a knight"
    cut = streamed(ask(model_server, model, broken, stream=True))
    assert "knight" not in cut
    time.sleep(0.5)  # the time a write-back takes above
    ask(model_server, model, broken)
    assert model_server.calls == calls + 2
    assert cache.stats["writes"] == 2  # the stream, then the whole (non-streamed) answer to the broken one


def test_async_calls_and_streams(
    cache_server: ThreadServer, model_server: FakeOpenAI, model: str, install: Callable[..., ModelCacheLiteLLM]
) -> None:
    cache = install(cache_server.target)

    async def main() -> None:
        first = await aask(model_server, model, Q)
        await asyncio.to_thread(wait_for_writes, cache, 1)
        calls = model_server.calls
        again = await aask(model_server, model, Q)  # the exact path first: the vector may be a moment behind
        para = await aask(model_server, model, PARAPHRASE)
        assert again.choices[0].message.content == para.choices[0].message.content == first.choices[0].message.content
        assert para.modelcache["match"] == "semantic" and model_server.calls == calls

        stream = await aask(model_server, model, "What is the boiling point of water?", stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        await asyncio.to_thread(wait_for_writes, cache, 2)
        again = await aask(model_server, model, "What is the boiling point of water?", stream=True)
        assert "".join([chunk.choices[0].delta.content or "" async for chunk in again]) == text
        assert model_server.calls == calls + 1

        broken = "Tell me a long story BREAK please, about a dragon and a knight"
        stream = await aask(model_server, model, broken, stream=True)
        assert "knight" not in "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        await asyncio.sleep(0.5)
        await aask(model_server, model, broken)
        assert model_server.calls == calls + 3
        await cache.disconnect()

    asyncio.run(main())
    assert cache.stats["errors"] == 0


def test_scope_rules_follow_the_openai_wrapper(
    cache_server: ThreadServer, model_server: FakeOpenAI, model: str, install: Callable[..., ModelCacheLiteLLM]
) -> None:
    cache = install(cache_server.target)
    first = ask(model_server, model, Q, temperature=0)
    wait_for_writes(cache, 1)
    calls = model_server.calls
    # Arguments that never change the answer share the scope; LiteLLM's own (retries, metadata) too.
    same = ask(model_server, model, Q, temperature=0, user="u-1", metadata={"trace": "t"}, num_retries=2)
    assert same.choices[0].message.content == first.choices[0].message.content and model_server.calls == calls
    assert same.modelcache["model"].startswith(model + "::")  # temperature is part of the scope

    # Another temperature, another namespace: other scopes.
    assert ask(model_server, model, Q, temperature=0.7).id.startswith("chatcmpl-")
    assert ask(model_server, model, Q, temperature=0, cache={"namespace": "team-b"}).id.startswith("chatcmpl-")
    assert model_server.calls == calls + 2

    # What a cached text cannot stand in for goes straight to the model: never looked up, never stored.
    weather = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}
    straight = [
        {"tools": [weather]},
        {"n": 2},
        {"logprobs": True},
        {"messages": [*chat(Q), {"role": "assistant", "content": "Hanoi."}]},  # the last turn is not the user's
    ]
    before = (model_server.calls, cache.stats["lookups"], entries(cache_server, model))
    for kwargs in straight * 2:
        messages = kwargs.pop("messages", chat(Q))
        litellm.completion(model=model, api_base=model_server.base_url, api_key="sk-test", messages=messages,
                           temperature=0, **kwargs)
        kwargs["messages"] = messages
    assert model_server.calls == before[0] + 2 * len(straight)
    assert cache.stats["lookups"] == before[1] and cache.stats["passthrough"] == 2 * len(straight)
    assert entries(cache_server, model) == before[2]

    # LiteLLM's own cache controls: no-store writes nothing, no-cache skips the lookup.
    ask(model_server, model, "Who wrote Hamlet?", cache={"no-store": True})
    ask(model_server, model, Q, temperature=0, cache={"no-cache": True})
    assert model_server.calls == before[0] + 2 * len(straight) + 2
    time.sleep(0.5)  # the time a write-back takes above
    assert entries(cache_server, model) == before[2]
    assert cache.clear(model) == before[2] and entries(cache_server, model) == 0


def test_a_cache_outage_leaves_every_call_answered_by_the_model(
    tmp_path: Path, embedder: Embedder, model_server: FakeOpenAI, model: str,
    install: Callable[..., ModelCacheLiteLLM],
) -> None:
    # A cache that was up, then stopped: calls are still answered, by the model.
    settings = Settings(data_dir=tmp_path / "data", grpc_port=0, http_port=0, resp_port=0,
                        scalar_uri=f"sqlite:///{tmp_path}/s.db")
    server = ThreadServer(settings, embedder)
    cache = install(server.target, timeout=1.0)
    ask(model_server, model, Q)
    wait_for_writes(cache, 1)
    assert ask(model_server, model, Q).modelcache["hit"]
    server.stop()
    calls = model_server.calls
    assert ask(model_server, model, Q).choices[0].message.content.endswith(Q)
    assert streamed(ask(model_server, model, Q, stream=True)).endswith(Q)
    assert model_server.calls == calls + 2 and cache.stats["errors"] >= 2

    # Nothing listens at all: the default deadline, and nothing waits on it.
    cache = install(f"127.0.0.1:{free_port()}", timeout=0.25)
    started = time.monotonic()
    assert ask(model_server, model, Q).choices[0].message.content.endswith(Q)
    assert streamed(ask(model_server, model, Q, stream=True)).endswith(Q)

    async def main() -> str:
        answer = (await aask(model_server, model, Q)).choices[0].message.content
        await cache.disconnect()
        return str(answer)

    assert asyncio.run(main()).endswith(Q)
    assert time.monotonic() - started < 10.0
    assert model_server.calls == calls + 5 and cache.stats["hits"] == 0 and cache.stats["errors"] >= 3


def test_the_proxy_loads_the_cache_from_its_callbacks_setting(
    cache_server: ThreadServer, model_server: FakeOpenAI, tmp_path: Path, install: Callable[..., ModelCacheLiteLLM]
) -> None:
    """The proxy's config.yaml names a module beside it in litellm_settings.callbacks; LiteLLM's own loader
    imports it (the proxy's server itself needs litellm[proxy]); the proxy's calls go through its Router."""
    from litellm.proxy.types_utils.utils import get_instance_fn

    (tmp_path / "modelcache_hook.py").write_text(
        "from modelcache_svc.integrations.litellm import ModelCacheProxyHook\n"
        f"hook = ModelCacheProxyHook({cache_server.target!r}, tenant='default', timeout={CACHE_TIMEOUT})\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text("litellm_settings:\n  callbacks: modelcache_hook.hook\n")
    hook = get_instance_fn("modelcache_hook.hook", config_file_path=str(config))
    assert litellm.cache is hook.cache and isinstance(hook.cache, ModelCacheLiteLLM)
    litellm.callbacks[:] = [hook]  # as the proxy sets it for one named callback

    group = "support-bot-" + uuid.uuid4().hex[:6]
    deployment = {"model": "openai/gpt-test", "api_base": model_server.base_url, "api_key": "sk-test"}
    # As the proxy builds its Router once litellm_settings are read: caching on when litellm.cache is set.
    router = litellm.Router(model_list=[{"model_name": group, "litellm_params": deployment}],
                            cache_responses=litellm.cache is not None)

    async def main() -> None:
        first = await router.acompletion(model=group, messages=chat(Q))
        await asyncio.to_thread(wait_for_writes, hook.cache, 1)
        calls = model_server.calls
        again = await router.acompletion(model=group, messages=chat(Q))
        para = await router.acompletion(model=group, messages=chat(PARAPHRASE))
        assert again.choices[0].message.content == para.choices[0].message.content == first.choices[0].message.content
        assert model_server.calls == calls and para.modelcache["model"] == group
        stream = await router.acompletion(model=group, messages=chat("What is the boiling point of water?"),
                                          stream=True)
        assert [chunk async for chunk in stream]
        await asyncio.to_thread(wait_for_writes, hook.cache, 2)
        assert entries(cache_server, group) == 2  # scoped by the model group
        await hook.cache.disconnect()

    asyncio.run(main())


def test_litellm_reaches_no_other_host(cache_server: ThreadServer) -> None:
    """Import, then a miss, a write-back and a hit, in a fresh interpreter whose sockets refuse any address but
    this host's (LiteLLM downloads its cost map at import unless told not to; the test sets it as products
    should)."""
    script = f"""
import os, socket, sys
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
LOCAL = ("127.0.0.1", "::1", "localhost")
real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
def getaddrinfo(host, *args, **kwargs):
    if host not in LOCAL:
        raise OSError(f"network lookup of {{host}}")
    return real_getaddrinfo(host, *args, **kwargs)
def connect(self, address):
    if isinstance(address, tuple) and address[0] not in LOCAL:
        raise OSError(f"network connection to {{address}}")
    return real_connect(self, address)
socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
import time, uuid, litellm
from modelcache_svc.integrations.litellm import ModelCacheLiteLLM
from tests.fake_openai import FakeOpenAI
fake = FakeOpenAI()
litellm.cache = ModelCacheLiteLLM({cache_server.target!r}, timeout={CACHE_TIMEOUT})
model = "openai/offline-" + uuid.uuid4().hex[:6]
ask = lambda: litellm.completion(model=model, api_base=fake.base_url, api_key="x",
                                 messages=[{{"role": "user", "content": "Who wrote Hamlet?"}}])
ask(); time.sleep(0.5)
print(ask().id, fake.calls, litellm.cache.stats["errors"])
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "network" not in done.stderr, done.stderr[-3000:]
    answer_id, calls, errors = done.stdout.split()[-3:]
    assert answer_id.startswith("modelcache-") and (calls, errors) == ("1", "0")


def test_the_integration_loads_no_server_module() -> None:
    code = (
        "import os, sys, json; os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'; "
        "import modelcache_svc.integrations.litellm; print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True)
    loaded = json.loads(done.stdout.splitlines()[-1])
    server = ("modelcache_svc.cache", "modelcache_svc.stores", "modelcache_svc.embedding", "torch", "onnxruntime")
    assert [m for m in loaded if m.startswith(server)] == []
