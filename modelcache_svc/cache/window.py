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

A reworded instruction on the same document ("<document> Summarize the text above in three bullet points" /
"<document> Give me a three-bullet summary of the text above") should still hit, so a long prompt is read
as a document and an instruction when it has one: a short paragraph at its end (or, failing that, at its
start) set off by a blank line. The instruction is then left out of the tail's hash and held to its own
test instead (cache/lookup.py ``same_task``): the candidate's instruction, embedded by the same model, must
be at least ``long_prompt_instruction_threshold`` alike and pass the precision guard. So the document past
the window must still be the same text, and the two instructions must ask the same thing: "Summarize" and
"Translate into French" on one document never share an answer, and "three bullet points" never answers
"five".
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
# An instruction is a paragraph this short at the end (or start) of a prompt at least twice its length.
MAX_INSTRUCTION_CHARS = 400
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n\s*")


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


def split_instruction(text: str) -> tuple[str, str]:
    """(instruction, where: "end", "start" or "" when the prompt has none) of a long prompt."""
    paragraphs = _PARAGRAPH.split(text.strip())
    if len(paragraphs) < 2:
        return "", ""
    last, first = paragraphs[-1].strip(), paragraphs[0].strip()
    if last and len(last) <= MAX_INSTRUCTION_CHARS and len(text) >= 3 * len(last):
        return last, "end"
    if first and len(first) <= MAX_INSTRUCTION_CHARS and len(text) >= 3 * len(first):
        return first, "start"
    return "", ""


def keyed_past_window(key: ChatKey, tail: str) -> ChatKey:
    """``key`` with the text past the model's window folded into its context hash ("" tail: unchanged),
    less the instruction where the prompt has one (which the key then carries, for its own test)."""
    if not tail:
        return key
    tail = aligned_tail(key.question, tail)
    instruction, where = split_instruction(key.question)
    if not instruction:
        digest = hashlib.sha256(f"{key.context_hash}\x00past-window\x00{tail}".encode("utf-8", "surrogatepass"))
        return dataclasses.replace(key, context_hash=digest.hexdigest())
    document = tail
    if where == "end":
        # The tail ends with the instruction, or lies inside it (the window reaches into the instruction).
        document = tail[: -len(instruction)].rstrip() if len(tail) > len(instruction) else ""
    marked = f"{key.context_hash}\x00past-window-document\x00{where}\x00{document}"
    digest = hashlib.sha256(marked.encode("utf-8", "surrogatepass"))
    return dataclasses.replace(key, context_hash=digest.hexdigest(), instruction=instruction)
