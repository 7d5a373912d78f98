"""The integrations' pure parts: scope names, the pass-through rule, replay pieces, and what a query's
verification / cacheability fields do to the write-back.

The last needs a client whose Hit carries ``verify_entry_id`` / ``uncacheable`` and whose insert takes
``verifies=`` (the feedback and cacheability work adds them); until that client is merged a stand-in plays
it here. The end-to-end behaviour against a real server is in tests/integration/test_integrations_*.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import openai
import pytest

from modelcache_svc.cache.keys import check_model_name
from modelcache_svc.client import Hit
from modelcache_svc.integrations._common import Guard, Plan, safe_model_name, scope_model, scopes_of
from modelcache_svc.integrations._openai_stream import pieces
from modelcache_svc.integrations.openai import plan_request

CHAT = [{"role": "user", "content": "What's the capital of Vietnam?"}]


def test_scope_names_are_safe_and_separate_settings() -> None:
    for name in ("gpt-4o-mini", "ft:gpt-4o:acme:x1", "meta-llama/Llama-3 8B", "__weird__", "é" * 200, ""):
        assert check_model_name(scope_model(name, None)) and check_model_name(scope_model(name, {"t": 1}))
    assert scope_model("gpt-4o-mini", None) == "gpt-4o-mini"
    cold, warm = scope_model("gpt-4o-mini", {"temperature": 0}), scope_model("gpt-4o-mini", {"temperature": 0.7})
    assert cold != warm and cold.startswith("gpt-4o-mini::")
    assert scope_model("m", {"a": 1, "b": 2}) == scope_model("m", {"b": 2, "a": 1})
    assert safe_model_name("meta-llama/Llama-3 8B") == "meta-llama/Llama-3-8B"
    assert scopes_of("gpt-4o", ["gpt-4o", "gpt-4o::abc", "gpt-4o-mini", "gpt-4o-mini::abc"]) == [
        "gpt-4o",
        "gpt-4o::abc",
    ]


def test_openai_plan_ignores_sentinels_and_transport_arguments() -> None:
    plain = plan_request({"model": "gpt-4o-mini", "messages": CHAT})
    same = plan_request(
        {"model": "gpt-4o-mini", "messages": CHAT, "temperature": openai.omit, "user": "u1", "timeout": 3, "n": 1}
    )
    assert plain.cacheable and plain.model == same.model == "gpt-4o-mini"
    developer = plan_request({"model": "m", "messages": [{"role": "developer", "content": "Be terse."}, *CHAT]})
    assert developer.chat[0] == {"role": "system", "content": "Be terse."}
    assert plan_request({"model": "m", "messages": CHAT, "response_format": {"type": "json_object"}}).model != "m"
    assert not plan_request({"model": "m", "messages": CHAT, "tools": [{"type": "function"}]}).cacheable
    assert plan_request({"model": "m", "messages": CHAT, "tools": []}).cacheable  # an empty list offers nothing
    assert not plan_request({"model": "m", "messages": CHAT, "modalities": ["text", "audio"]}).cacheable
    assert not plan_request({"model": "m", "messages": [{"role": "user", "content": "x", "name": "bob"}]}).cacheable


def test_replay_pieces_give_the_answer_back() -> None:
    answer = "Hanoi is the capital of Vietnam, and Ho Chi Minh City its largest city." + " x" * 50
    for size in (1, 5, 8, 32, 1000):
        parts = pieces(answer, size)
        assert "".join(parts) == answer and all(parts)
    assert pieces("", 8) == []


@dataclass(frozen=True)
class NewHit(Hit):
    verify_entry_id: str = ""
    uncacheable: str = ""


class StandIn:
    """A client with the second round's fields: a query answers ``hit``, inserts are recorded."""

    def __init__(self, hit: Hit) -> None:
        self.hit = hit
        self.inserts: list[dict[str, Any]] = []

    def query(self, *args: Any, **kwargs: Any) -> Hit:
        return self.hit

    def insert(self, tenant: str, model: str, chat: Any, answer: str, *, verifies: str = "", **kwargs: Any) -> str:
        self.inserts.append({"answer": answer, "verifies": verifies, **kwargs})
        return "e" * 32

    def close(self) -> None:
        pass


def guard_over(client: Any) -> Guard:
    return Guard("unused:1", "default", None, 0.25, None, 0, "test", cache_client=client)


@pytest.mark.parametrize("verify", ["", "a" * 32])
def test_a_verifying_miss_is_written_back_with_verifies(verify: str) -> None:
    client = StandIn(NewHit(False, "miss", verify_entry_id=verify))
    guard = guard_over(client)
    plan = Plan(True, model="m", chat=CHAT)
    hit = guard.lookup(plan)
    assert guard.served(plan, hit).verify_entry_id == verify
    assert guard.write(plan, "Hanoi.") == "e" * 32
    assert client.inserts[0]["verifies"] == verify and client.inserts[0]["metadata"] == {"integration": "test"}


def test_an_uncacheable_question_is_not_written_back() -> None:
    client = StandIn(NewHit(False, "miss", uncacheable="time_sensitive"))
    guard = guard_over(client)
    plan = Plan(True, model="m", chat=[{"role": "user", "content": "What time is it?"}])
    assert guard.served(plan, guard.lookup(plan)).uncacheable == "time_sensitive"
    assert guard.write(plan, "Noon.") == ""
    assert client.inserts == [] and guard.counters.as_dict()["refused"] == 1


def test_a_chat_langchain_cannot_read_back_is_not_cached_as_text() -> None:
    from langchain_core.load import dumps
    from langchain_core.messages import HumanMessage, SystemMessage

    from modelcache_svc.integrations.langchain import ModelCacheSemanticCache

    class OwnMessage(HumanMessage):  # serialised under its own class path, outside LangChain's allow-list
        pass

    cache = ModelCacheSemanticCache()
    llm_string = "[('model', 'x')]"
    plan, is_chat = cache.plan(dumps([SystemMessage("s"), OwnMessage("hi")]), llm_string)
    assert is_chat and not plan.cacheable  # never embedded as one long JSON "question"
    plan, is_chat = cache.plan(dumps([SystemMessage("s"), HumanMessage("hi")]), llm_string)
    assert is_chat and plan.chat == [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    plan, is_chat = cache.plan("[{not json", llm_string)
    assert not is_chat and plan.chat == [{"role": "user", "content": "[{not json"}]
