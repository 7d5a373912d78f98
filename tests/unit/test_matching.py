from __future__ import annotations

import pytest

from modelcache_svc.cache.matching import guard_veto, resolve_threshold
from modelcache_svc.errors import InvalidArgument


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("find numbers divisible by 13 in Python", "find numbers divisible by 13 in Java"),
        ("find numbers divisible by 13 in Python", "find numbers divisible by 17 in Python"),
        ("How do I write a loop in C?", "How do I write a loop in Go?"),
        ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
        ("What happened in 1998?", "What happened in 1999?"),
        ("Give me three examples", "Give me five examples"),
        ("为什么天空是蓝色的", "为什么天空不是蓝色的"),
    ],
)
def test_guard_vetoes_questions_that_differ_in_what_changes_the_answer(a: str, b: str) -> None:
    assert guard_veto(a, b) is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reverse a list in Python?", "How can I reverse a python list?"),
        ("What's the capital of Vietnam", "capital city of Vietnam?"),
        ("find numbers divisible by 13 in Python", "In Python, find the numbers divisible by 13"),
        ("Can't connect to MySQL", "I cannot connect to mysql"),
    ],
)
def test_guard_lets_paraphrases_through(a: str, b: str) -> None:
    assert guard_veto(a, b) is None


def test_threshold_precedence() -> None:
    assert resolve_threshold(0.9, 0.7, 0.8) == 0.9
    assert resolve_threshold(None, 0.7, 0.8) == 0.7
    assert resolve_threshold(None, None, 0.8) == 0.8
    for bad in (0.0, -1.0, 1.01, float("nan")):
        with pytest.raises(InvalidArgument):
            resolve_threshold(bad, None, 0.8)
