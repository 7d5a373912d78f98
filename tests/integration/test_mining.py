"""Hard negatives mined with the served bi-encoder (modelcache_train/mining.py): each asking question's nearest
other cached question, as eval's cache mode would serve it, unless the file pairs the two, they are one text
after normalising, or the precision guard refuses the pair."""

from __future__ import annotations

from modelcache_train.data import Pair
from modelcache_train.data import read_pairs, write_pairs
from modelcache_train.mining import mine

PAIRS = [
    Pair("What is the capital city of France?", "What's the capital of France?", 1.0),
    Pair("What's the capital of France?", "Which city is the capital of France?", 1.0),
    Pair("How do I reset my iPhone password?", "How can I reset the password of my iPhone?", 1.0),
    Pair("How do I change my iPhone password?", "How do I change my Gmail password?", 0.0),
    Pair("How many days were there in 2023?", "How many days did the year 2024 have?", 0.0),
    Pair("How many days did 2023 have?", "how many days were there in 2023", 0.0),
    Pair("What is the best way to learn to cook?", "What's a good way to learn cooking?", 1.0),
]


def test_the_nearest_other_entry_is_mined_unless_the_file_pairs_them_or_the_guard_refuses() -> None:
    mined = mine(PAIRS, "packaged:minilm-cache-en", per_question=1, floor=0.5, quiet=True)
    by_question = {p.b: p.a for p in mined}
    assert all(p.label == 0.0 for p in mined)
    # The iPhone question asks near the other iPhone entry, which no row pairs with it.
    assert by_question["How can I reset the password of my iPhone?"] == "How do I change my iPhone password?"
    # Labelled duplicates anywhere in the file are never mined as negatives, in either direction.
    assert by_question.get("Which city is the capital of France?") != "What is the capital city of France?"
    for p in mined:
        assert frozenset((p.a, p.b)) not in {frozenset((q.a, q.b)) for q in PAIRS if q.label == 1}
        assert p.a != p.b
    # One text after normalising (the exact cache answers it) is not a negative.
    assert by_question.get("how many days were there in 2023") != "How many days were there in 2023?"
    # The guard refuses 2023 for 2024: the service never asks the verifier about that pair.
    assert by_question.get("How many days did the year 2024 have?") not in {
        "How many days were there in 2023?", "How many days did 2023 have?"}


def test_the_floor_and_the_count_bound_what_is_mined(tmp_path) -> None:
    assert mine(PAIRS, "packaged:minilm-cache-en", per_question=1, floor=1.01, quiet=True) == []
    assert mine(PAIRS, "packaged:minilm-cache-en", per_question=0, quiet=True) == []
    two = mine(PAIRS, "packaged:minilm-cache-en", per_question=2, floor=-1.0, quiet=True)
    counts: dict[str, int] = {}
    for p in two:
        counts[p.b] = counts.get(p.b, 0) + 1
    assert max(counts.values()) == 2 and len(counts) == len({p.b for p in PAIRS})
    path = tmp_path / "mined.jsonl"
    write_pairs(path, two)
    assert read_pairs(path) == two
    # the same pairs and model mine the same negatives, in the same order
    assert mine(PAIRS, "packaged:minilm-cache-en", per_question=2, floor=-1.0, quiet=True) == two
