"""Long prompts: the tail a long prompt is keyed on (cache/window.py)."""

from __future__ import annotations

from modelcache_svc.cache.keys import ChatKey
from modelcache_svc.cache.window import aligned_tail, keyed_past_window

TEXT = "First sentence here. Second sentence runs past the cut and on. Third one.\n\nSummarize the text above."


def key(question: str = TEXT) -> ChatKey:
    return ChatKey("ctx", question, "exact", ())


def test_the_tail_starts_at_the_sentence_the_cut_falls_in() -> None:
    cut = TEXT.index("past the cut")
    assert aligned_tail(TEXT, TEXT[cut:]) == TEXT[TEXT.index("Second"):]
    # A cut a word earlier or later in the same sentence gives the same tail.
    assert aligned_tail(TEXT, TEXT[cut - 5:]) == aligned_tail(TEXT, TEXT[cut + 4:])


def test_no_sentence_end_keeps_the_cut() -> None:
    text = "word " * 50
    assert aligned_tail(text, text[100:]) == text[100:]


def test_only_long_prompts_change_their_key() -> None:
    assert keyed_past_window(key(), "") == key()
    long_a = keyed_past_window(key(), "Summarize the text above.")
    other = TEXT.replace("Summarize", "Translate")
    long_b = keyed_past_window(key(other), "Translate the text above.")
    assert long_a.context_hash != "ctx" and long_a.context_hash != long_b.context_hash
    assert long_a.exact_key == "exact"  # the exact path is keyed on the whole chat already
