"""Long prompts: what the embedding model never reads must still match.

An embedding model reads a window of tokens (256 for the packaged models) and drops the rest, so two
prompts that share their first window embed to the same vector whatever follows: a 300-word document
followed by "Summarize the text above" and the same document followed by "Translate the text above into
French" have a cosine of about 1.0. Such a pair must never share an answer.

So the part past the window (what the model would drop) becomes part of the key a semantic match is
confined to, as the system prompt is: the context hash of a long prompt is the chat's context hash
combined with a hash of that tail. Two long prompts then match semantically only when their tails are
the same text (after the chat's normalisation) and their windows embed alike; a prompt asked again
verbatim still hits (exactly, and semantically); prompts that fit the window are keyed as before.
"""

from __future__ import annotations

import dataclasses
import hashlib

from .keys import ChatKey


def keyed_past_window(key: ChatKey, tail: str) -> ChatKey:
    """``key`` with the text past the model's window folded into its context hash ("" tail: unchanged)."""
    if not tail:
        return key
    digest = hashlib.sha256(f"{key.context_hash}\x00past-window\x00{tail}".encode("utf-8", "surrogatepass"))
    return dataclasses.replace(key, context_hash=digest.hexdigest())
