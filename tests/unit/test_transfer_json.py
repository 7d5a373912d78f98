"""The JSON form of an exported entry (client/_transfer.py): what an export file line holds and what a
bad line is told."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from modelcache_svc import errors
from modelcache_svc.client._transfer import entry_from_json, entry_to_json

LINE: dict[str, Any] = {
    "id": "0f" * 16,
    "model": "gpt-4o",
    "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Capital of France?"}],
    "answer": "Paris.",
    "metadata": {"source": "logs"},
    "created_at": 1796400000.5,
    "expires_at": 1796403600.5,
    "last_hit_at": 1796401000.25,
    "hit_count": 7,
    "embed_model": "minilm-cache-en",
    "vector": base64.b64encode(struct.pack("<3f", 0.5, -0.25, 1.0)).decode(),
    "feedback": {"floor": 0.875, "observations": [[0.75, True], [0.5, False]]},
}


def test_a_line_survives_the_message_and_back() -> None:
    assert entry_to_json(entry_from_json(LINE)) == LINE


def test_optional_fields_take_their_defaults() -> None:
    line = {k: LINE[k] for k in ("id", "model", "messages", "answer", "created_at")}
    back = entry_to_json(entry_from_json(line))
    assert (back["expires_at"], back["last_hit_at"], back["hit_count"], back["vector"]) == (None, 1796400000.5, 0, "")
    assert "feedback" not in back and back["metadata"] == {}


def test_a_vector_may_be_a_list_of_numbers() -> None:
    message = entry_from_json({**LINE, "vector": [0.5, -0.25, 1.0]})
    assert message.vector == base64.b64decode(LINE["vector"])


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"id": 5}, '"id" must be a string'),
        ({"answer": None}, '"answer" must be a string'),
        ({"messages": "hi"}, '"messages" must be a list'),
        ({"metadata": {"n": 1}}, '"metadata" must be an object of strings'),
        ({"created_at": "yesterday"}, '"created_at" must be a time'),
        ({"hit_count": True}, '"hit_count" must be a whole number'),
        ({"hit_count": -1}, '"hit_count" must be a whole number from 0'),
        ({"answer": "\ud800"}, "cannot be sent"),
        ({"vector": "not base64!"}, "not valid base64"),
        ({"vector": base64.b64encode(b"abc").decode()}, "whole number of float32"),
        ({"feedback": {"floor": 0.5, "observations": [[0.5]]}}, '"feedback" must be'),
    ],
)
def test_a_bad_field_is_named(change: dict[str, Any], says: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=says.replace("[", r"\[")):
        entry_from_json({**LINE, **change})


def test_a_line_must_be_an_object() -> None:
    with pytest.raises(errors.InvalidArgument, match="JSON object"):
        entry_from_json([LINE])
