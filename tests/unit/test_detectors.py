"""The cacheability detectors and policy (cache/detectors.py, cache/cacheability.py), and the labelled set."""

from __future__ import annotations

import time

import pytest

from modelcache_svc.cache.cacheability import (
    check_policy,
    compiled,
    policy_from_dict,
    policy_to_dict,
)
from modelcache_svc.cache.detectors import cn_id_valid, detect, has_pii, iban_valid, luhn_valid
from modelcache_svc.records import CacheabilityAction as A
from modelcache_svc.records import CacheabilityPolicy, CacheabilityRule
from modelcache_svc.errors import InvalidArgument
from modelcache_svc.tools.policy import DEFAULT_LABELLED, load_labelled, score


def test_checksums() -> None:
    assert luhn_valid("4398259791907482") and not luhn_valid("4398259791907483")
    assert cn_id_valid("11010519880312420X") and cn_id_valid("440304199507215559")
    assert not cn_id_valid("440304199507215558")  # check digit off by one
    assert not cn_id_valid("440304199513215553")  # month 13
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE89 3704 0044 0532 0130 01")


@pytest.mark.parametrize(
    "text",
    [
        "mail me at a.b+c@example.co.uk",
        "card 4398 2597 9190 7482 please",
        "Amex 375102734646863",
        "身份证11010519880312420X",
        "手机13812345678",
        "call +44 7911 123456",
        "call (415) 555-0132",
        "SSN 123-45-6789",
        "IBAN DE89370400440532013000",
    ],
)
def test_pii_found(text: str) -> None:
    assert has_pii(text)


@pytest.mark.parametrize(
    "text",
    [
        "What is 12345 times 6789?",
        "Is 1000000007 a prime number?",
        "card 4398 2597 9190 7483",  # fails Luhn
        "The smallest such number is 2056364173794800 .",  # passes Luhn, no issuer has that prefix
        "Who's calling when 0000000000 calls your cell phone?",
        "SSN 000-12-3456 is never issued",
        "身份证440304199507215558",  # wrong check digit
        "What is the format of a US social security number?",
    ],
)
def test_no_pii(text: str) -> None:
    assert not has_pii(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What's the status of my order 12345?", ("user_specific",)),
        ("How do I reset my password?", ()),
        ("What is my name in Japanese?", ()),
        ("What's my name?", ("user_specific",)),
        ("Why is my dog eating grass?", ()),
        ("我的退款什么时候到账", ("user_specific",)),
        ("怎么查询我的订单", ()),
        ("我的世界怎么做工作台", ()),
        ("How's the weather today?", ("time_sensitive",)),
        ("What is the weather like in Paris in April?", ()),
        ("Who won the 2018 FIFA World Cup?", ()),
        ("What are the biggest problems India faces today?", ()),
        ("Who wrote 'Tomorrow Never Dies'?", ()),
        ("明天北京会下雨吗", ("time_sensitive",)),
        ("昨天的英文怎么说", ()),
        ("Email me at x@example.com about my order status", ("pii", "user_specific")),
    ],
)
def test_detect(text: str, expected: tuple[str, ...]) -> None:
    assert detect(text) == expected


@pytest.mark.parametrize("name", [DEFAULT_LABELLED.name, "cacheability_heldout_en_zh.jsonl"])
def test_labelled_sets_meet_the_targets(name: str) -> None:
    """The issue's bar: flagging precision >= 0.95 and recall >= 0.90 per class (tests/data/cacheability_SOURCES.md;
    both files are in-sample now, the held-out one's first measurement is in docs/cacheability.md)."""
    rows = load_labelled(DEFAULT_LABELLED.parent / name)
    report = score(rows)
    assert report["by_label"]["none"] >= 0.4 * len(rows)
    for klass, c in report["classes"].items():
        assert c["precision"] >= 0.95 and c["recall"] >= 0.90, (klass, c)
    if name == DEFAULT_LABELLED.name:
        assert len(rows) >= 300


def test_strictest_action_wins_and_rules_follow_builtins() -> None:
    policy = CacheabilityPolicy(
        pii=A.ALLOW, time_sensitive=A.SHORT_TTL,
        rules=(CacheabilityRule("vip", keywords=("gold price",), action=A.REFUSE),),
    )
    judge = compiled(check_policy(policy)).judge
    verdict = judge("What's the gold price today?")
    assert verdict is not None and (verdict.klass, verdict.action) == ("rule:vip", A.REFUSE)
    verdict = judge("What's the oil price today?")
    assert verdict is not None and (verdict.klass, verdict.action) == ("time_sensitive", A.SHORT_TTL)
    verdict = judge("mail a@example.com")
    assert verdict is not None and (verdict.klass, verdict.action) == ("pii", A.ALLOW)
    assert judge("What is the capital of Peru?") is None
    assert compiled(policy).short_ttl_seconds == 300


def test_keywords_match_whole_words_and_chinese_anywhere() -> None:
    judge = compiled(check_policy(CacheabilityPolicy(rules=(CacheabilityRule("p", keywords=("ace", "机密")),)))).judge
    assert judge("Is ACE ready?") is not None and judge("这份机密文件") is not None
    assert judge("Where is the place?") is None


def test_policy_round_trips_through_its_json_form() -> None:
    policy = CacheabilityPolicy(
        user_specific=A.ALLOW, short_ttl_seconds=60,
        rules=(CacheabilityRule("t", pattern=r"TCK-\d+", keywords=("a b",), action=A.SHORT_TTL),),
    )
    assert policy_from_dict(policy_to_dict(policy)) == policy
    assert policy_from_dict(None) == CacheabilityPolicy() == policy_from_dict({})
    with pytest.raises(InvalidArgument, match="one of refuse, allow, short_ttl"):
        policy_from_dict({"pii": "sometimes"})


def test_policy_limits() -> None:
    with pytest.raises(InvalidArgument, match="short_ttl_seconds"):
        check_policy(CacheabilityPolicy(short_ttl_seconds=-1))
    with pytest.raises(InvalidArgument, match="same name"):
        check_policy(CacheabilityPolicy(rules=(CacheabilityRule("a", "x"), CacheabilityRule("a", "y"))))
    with pytest.raises(InvalidArgument, match="keywords"):
        check_policy(CacheabilityPolicy(rules=(CacheabilityRule("a", keywords=("x" * 65,)),)))
    with pytest.raises(InvalidArgument, match="exponential"):
        check_policy(CacheabilityPolicy(rules=(CacheabilityRule("a", r"(\w+\s?)+$"),)))


def test_a_check_is_cheap_and_a_repeated_one_is_a_lookup() -> None:
    questions = [q for q, _ in load_labelled(DEFAULT_LABELLED)]
    start = time.perf_counter()
    for q in questions:
        detect(q)
    per_question = (time.perf_counter() - start) / len(questions)
    assert per_question < 1e-3  # measured ~15-50 us here; a loose bound for a busy host
    judge = compiled(CacheabilityPolicy()).judge
    for q in questions:
        judge(q)
    start = time.perf_counter()
    for q in questions:
        judge(q)
    assert (time.perf_counter() - start) / len(questions) < 1e-4
