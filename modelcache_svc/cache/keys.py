"""Validating and normalising a chat into what the cache keys on.

A chat splits into three parts:
- the context: every message before the last user turn (system prompts and
  earlier turns), hashed exactly — a different system prompt or history never
  shares an answer;
- the question: the last user turn, the text matched semantically;
- the exact key: a hash of context and question, looked up without embedding.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import InvalidArgument
from ..limits import Limits
from ..limits import show as _show
from ..records import ROLES, Message

# ASCII only: unicode look-alikes of these characters are refused, not folded.
ENTRY_ID = re.compile(r"^[0-9a-f]{32}$", re.ASCII)
# chat_key (NFKC, whitespace, two SHA-256 over JSON) remembered for recent short chats: an exact hit is a
# repeated chat, and normalising it again was a third of the core's time on one.
CHAT_KEY_MEMO = 10_000
CHAT_KEY_MEMO_MAX_CHARS = 4_096

_HSPACE = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True, slots=True)
class ChatKey:
    context_hash: str
    question: str
    exact_key: str
    messages: tuple[Message, ...]
    # Set by cache/routing.py: the question's language, and a long prompt's instruction (window.py)
    language: str = ""
    instruction: str = ""


def check_entry_ids(ids: Sequence[object], limits: Limits) -> list[str]:
    if len(ids) > limits.max_ids_per_remove:
        raise InvalidArgument(f"too many ids: {len(ids)} > {limits.max_ids_per_remove}")
    out: list[str] = []
    for i in ids:
        if not isinstance(i, str) or not ENTRY_ID.match(i):
            raise InvalidArgument(f"entry id {_show(i)} is invalid: ids are 32 lowercase hex characters")
        out.append(i)
    return out


def normalise_text(text: str) -> str:
    """NFKC, unified line ends and horizontal whitespace, trimmed. Case is kept (code)."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = [_HSPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def chat_key(messages: Sequence[Message], limits: Limits) -> ChatKey:
    if not messages:
        raise InvalidArgument("messages is empty: a chat needs at least one user message")
    if len(messages) > limits.max_messages:
        raise InvalidArgument(f"too many messages: {len(messages)} > {limits.max_messages}")
    normalised: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m.role, str) or m.role not in ROLES:
            raise InvalidArgument(f"messages[{i}].role {_show(m.role)} is invalid: one of {', '.join(sorted(ROLES))}")
        if not isinstance(m.content, str):
            raise InvalidArgument(f"messages[{i}].content must be a string")
        if len(m.content) > limits.max_content_chars:
            raise InvalidArgument(
                f"messages[{i}].content is too long: {len(m.content)} > {limits.max_content_chars} characters"
            )
        _check_text(m.content, f"messages[{i}].content")
        normalised.append(Message(m.role, normalise_text(m.content)))
    last = normalised[-1]
    if last.role != "user":
        raise InvalidArgument("the last message must have role user (the question being asked)")
    if not last.content:
        raise InvalidArgument("the last user message is empty")
    context = [[m.role, m.content] for m in normalised[:-1]]
    context_hash = hashlib.sha256(json.dumps(context, ensure_ascii=False).encode()).hexdigest()
    exact_key = hashlib.sha256(json.dumps([context_hash, last.content], ensure_ascii=False).encode()).hexdigest()
    return ChatKey(context_hash, last.content, exact_key, tuple(normalised))


class ChatKeyMemo:
    """chat_key(messages), remembered for recent short chats (a pure function of them)."""

    def __init__(self, size: int = CHAT_KEY_MEMO, max_chars: int = CHAT_KEY_MEMO_MAX_CHARS) -> None:
        self.size = size
        self.max_chars = max_chars
        self.keys: dict[tuple[Message, ...], ChatKey] = {}

    def key(self, messages: Sequence[Message], limits: Limits) -> ChatKey:
        try:
            memo = tuple(messages)
            small = sum(len(m.content) for m in memo) <= self.max_chars
            found = self.keys.get(memo) if small else None
        except (TypeError, AttributeError):  # not hashable Messages: validation will say what is wrong
            return chat_key(messages, limits)
        if found is not None:
            return found
        key = chat_key(messages, limits)
        if small:
            if len(self.keys) >= self.size:
                del self.keys[next(iter(self.keys))]  # the oldest
            self.keys[memo] = key
        return key


def check_metadata(metadata: Mapping[object, object], limits: Limits) -> dict[str, str]:
    if len(metadata) > limits.max_metadata_items:
        raise InvalidArgument(f"too many metadata items: {len(metadata)} > {limits.max_metadata_items}")
    total = 0
    out: dict[str, str] = {}
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgument("metadata keys and values must be strings")
        if not k:
            raise InvalidArgument("metadata keys must not be empty")
        _check_text(k, "metadata key")
        _check_text(v, f"metadata[{k[:40]!r}]")
        total += len(k) + len(v)
        out[k] = v
    if total > limits.max_metadata_chars:
        raise InvalidArgument(f"metadata too large: {total} > {limits.max_metadata_chars} characters")
    return out


def check_answer(answer: object, limits: Limits) -> str:
    if not isinstance(answer, str):
        raise InvalidArgument("answer must be a string")
    if not answer.strip():
        raise InvalidArgument("answer is empty: there is nothing to cache")
    if len(answer) > limits.max_answer_chars:
        raise InvalidArgument(f"answer is too long: {len(answer)} > {limits.max_answer_chars} characters")
    _check_text(answer, "answer")
    return answer


def _check_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise InvalidArgument(f"{what} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{what} is not valid Unicode (lone surrogate at {exc.start})") from exc
