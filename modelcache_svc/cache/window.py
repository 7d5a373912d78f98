"""Long prompts: what the embedding model never reads must still match.

An embedding model reads a window of tokens (256 for the packaged models) and drops the rest, so two
prompts that share their first window embed to the same vector whatever follows: a 300-word document
followed by "Summarize the text above" and the same document followed by "Translate the text above into
French" have a cosine of about 1.0. Such a pair must never share an answer.

So the part past the window (what the model would drop) becomes part of the key a semantic match is
confined to, as the system prompt is: the context hash of a long prompt is the chat's context hash
combined with a hash of that tail. The tail starts at the beginning of the sentence (or line) in which the
window ends, not at the cut itself: one word changed early in the document moves the cut by a token or
two, and the two prompts should still meet; text read by the model and also hashed costs nothing, while
text neither read nor hashed would be a hole. Two long prompts then match semantically only when their tails are
the same text (after the chat's normalisation) and their windows embed alike; a prompt asked again
verbatim still hits (exactly, and semantically); prompts that fit the window are keyed as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from .keys import ChatKey


# Where a sentence or a line ends; the tail begins after the last such end before the cut.
_SENTENCE_END = re.compile(r"[.!?。！？;；](?=\s)|\n")
# A cut with no sentence end this close before it is used as it is (a text without punctuation).
_MAX_BACKTRACK = 600


def aligned_tail(text: str, tail: str) -> str:
    """The tail, moved back to the start of the sentence the cut falls in."""
    cut = len(text) - len(tail)
    if not tail or cut <= 0 or not text.endswith(tail):
        return tail
    window = text[max(0, cut - _MAX_BACKTRACK):cut]
    ends = list(_SENTENCE_END.finditer(window))
    if not ends:
        return tail
    start = cut - len(window) + ends[-1].end()
    return text[start:].strip()


def keyed_past_window(key: ChatKey, tail: str) -> ChatKey:
    """``key`` with the text past the model's window folded into its context hash ("" tail: unchanged)."""
    if not tail:
        return key
    tail = aligned_tail(key.question, tail)
    digest = hashlib.sha256(f"{key.context_hash}\x00past-window\x00{tail}".encode("utf-8", "surrogatepass"))
    return dataclasses.replace(key, context_hash=digest.hexdigest())
