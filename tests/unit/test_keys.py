from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcache_svc.cache.keys import chat_key, check_metadata, normalise_text
from modelcache_svc.records import Message
from modelcache_svc.limits import Limits, check_model_name, check_tenant_name
from modelcache_svc.errors import InvalidArgument

LIMITS = Limits()


def m(role: str, content: str) -> Message:
    return Message(role, content)


def test_normalise_unifies_whitespace_and_unicode_form_but_keeps_case() -> None:
    assert normalise_text("  Hello\t\u00a0World \r\n\r\n\r\n\nNext  ") == "Hello World\n\nNext"
    assert normalise_text("ｆｕｌｌ width") == "full width"
    assert normalise_text("MyClass") != normalise_text("myclass")


def test_context_is_system_prompt_and_earlier_turns() -> None:
    base = chat_key([m("user", "q")], LIMITS)
    with_system = chat_key([m("system", "be brief"), m("user", "q")], LIMITS)
    other_system = chat_key([m("system", "be long"), m("user", "q")], LIMITS)
    assert base.question == with_system.question == "q"
    assert len({base.context_hash, with_system.context_hash, other_system.context_hash}) == 3
    assert len({base.exact_key, with_system.exact_key, other_system.exact_key}) == 3
    history = chat_key([m("user", "a"), m("assistant", "b"), m("user", "q")], LIMITS)
    assert history.context_hash != base.context_hash
    assert chat_key([m("user", " q ")], LIMITS).exact_key == base.exact_key


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [m("robot", "q")],
        [m("user", "   ")],
        [m("user", "q"), m("assistant", "a")],
        [m("user", "x" * (LIMITS.max_content_chars + 1))],
        [m("user", "nul\x00byte")],
        [m("user", "q")] * (LIMITS.max_messages + 1),
    ],
)
def test_bad_chats_are_invalid_argument(messages: list[Message]) -> None:
    with pytest.raises(InvalidArgument):
        chat_key(messages, LIMITS)


@pytest.mark.parametrize("name", ["default", "acme-prod", "a.b_c", "A1"])
def test_good_tenant_names(name: str) -> None:
    assert check_tenant_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-x", "a' OR 1=1 --", 'x" || id > 0', "a b", "ｄefault", "defаult", "a" * 65, "a\\b", None, 3]
)
def test_bad_tenant_names(name: object) -> None:
    with pytest.raises(InvalidArgument):
        check_tenant_name(name)


@pytest.mark.parametrize("name", ["CODEGPT-1008", "gpt-4o-2024.08", "org/model:v1"])
def test_good_model_names(name: str) -> None:
    assert check_model_name(name) == name


def test_metadata_limits() -> None:
    assert check_metadata({"k": "v"}, LIMITS) == {"k": "v"}
    with pytest.raises(InvalidArgument):
        check_metadata({"k": "v" * (LIMITS.max_metadata_chars + 1)}, LIMITS)
    with pytest.raises(InvalidArgument):
        check_metadata({str(i): "v" for i in range(LIMITS.max_metadata_items + 1)}, LIMITS)
    with pytest.raises(InvalidArgument):
        check_metadata({"k": "\ud800"}, LIMITS)


@given(st.lists(st.tuples(st.sampled_from(["system", "user", "assistant", "tool", "x"]), st.text(max_size=200)), max_size=5))
def test_chat_key_never_fails_except_invalid_argument(pairs: list[tuple[str, str]]) -> None:
    try:
        key = chat_key([m(r, c) for r, c in pairs], LIMITS)
    except InvalidArgument:
        return
    assert key.question and len(key.exact_key) == 64 and len(key.context_hash) == 64
