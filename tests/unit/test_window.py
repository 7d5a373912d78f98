"""Long prompts: the tail a long prompt is keyed on (cache/window.py)."""

from __future__ import annotations

from modelcache_svc.cache.keys import ChatKey
from modelcache_svc.cache.window import aligned_tail, keyed_past_window, split_instruction

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
    blob = "One long run of text without any paragraph. " * 20
    long_a = keyed_past_window(key(blob), blob[-100:])
    long_b = keyed_past_window(key(blob.replace("run", "walk")), blob.replace("run", "walk")[-100:])
    assert long_a.context_hash != "ctx" and long_a.context_hash != long_b.context_hash and not long_a.instruction
    assert long_a.exact_key == "exact"  # the exact path is keyed on the whole chat already


def test_an_instruction_is_held_apart_from_the_document() -> None:
    tail = TEXT[TEXT.index("Second"):]
    summarize = keyed_past_window(key(), tail)
    other = TEXT.replace("Summarize", "Translate")
    translate = keyed_past_window(key(other), other[other.index("Second"):])
    # One document past the window, one key; the instructions are carried for their own test (lookup.py).
    assert summarize.context_hash == translate.context_hash != "ctx"
    assert (summarize.instruction, translate.instruction) == ("Summarize the text above.", "Translate the text above.")
    changed = TEXT.replace("Third one.", "A third, other one.")
    assert keyed_past_window(key(changed), changed[changed.index("Second"):]).context_hash != summarize.context_hash
    # A tail inside the instruction: the document fits the window, the instruction is still its own.
    inside = keyed_past_window(key(), "the text above.")
    assert inside.instruction == "Summarize the text above." and inside.context_hash != summarize.context_hash


def test_split_instruction() -> None:
    document = "A paragraph of the document, long enough. " * 10
    assert split_instruction(document + "\n\nSummarize it.") == ("Summarize it.", "end")
    assert split_instruction("Summarize the following.\n\n" + document) == ("Summarize the following.", "start")
    assert split_instruction(document) == ("", "")
    assert split_instruction(document + "\n\n" + document) == ("", "")
