"""Which language a question is in: part of its match and of its route (pool.py, cache/routing.py).

An answer is written in the language of its question, so an entry serves only questions of its own
language (unless the tenant allows more), and each language goes to a model that reads it: English to the
English model, Chinese, Japanese and Korean to the CJK model, every other language to the multilingual one.

Script first, then statistics. A kana or hangul character makes a question Japanese or Korean, a Han
character without them Chinese; Arabic, Devanagari, Thai, Greek, Hebrew and the like name their language
by their script (the detector then chooses only among the languages written in it). Latin and Cyrillic
text goes to py3langid (langid.py's model, shipped inside its wheel; no download), restricted to the
languages below. English is the answer for text with no letters, and whenever the detector is not sure
of another language: an English question sent elsewhere would miss every entry it has, while a short
foreign question taken for English still meets the English model's guard and verifier. docs/hit-quality.md
("Fourth round") has the detector's accuracy on short questions and its cost (tens of microseconds; a
repeated question is a dictionary lookup).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache
from typing import Any

ENGLISH = "en"
# The CJK model's languages; Chinese is its home (entries written before languages were keyed are Chinese).
CJK_LANGUAGES = frozenset({"zh", "ja", "ko"})
# Languages told apart among text in the Latin or Cyrillic script.
# Fewer, well-separated languages give the detector surer answers on short questions (with 33 of them its
# accuracy on tests/data/multilingual.jsonl fell from 0.98 to 0.93: id/ms, pt/gl, sv/da/no split their
# votes); a language outside the list is taken for its nearest neighbour in it, consistently, so its
# questions still meet each other.
LATIN = ("en", "es", "fr", "de", "pt", "it", "nl", "pl", "tr", "vi", "id", "sv", "cs", "ro", "hu", "fi", "da")
CYRILLIC = ("ru", "uk", "bg", "sr", "mk", "be", "kk", "mn", "ky")
# Probability below which a Latin-script text is taken for English (measured: docs/hit-quality.md).
MIN_CONFIDENCE = 0.50
# Only this much of a question is read: the cost stays bounded whatever is sent.
MAX_READ_CHARS = 1000

_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Scripts that name one language (or one we serve alike): the first character found decides.
_SCRIPTS = (
    (re.compile("[\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff]"), ("ar", "fa", "ur")),
    (re.compile("[\u0900-\u097f]"), ("hi", "mr", "ne")),
    (re.compile("[\u0980-\u09ff]"), ("bn",)),
    (re.compile("[\u0e00-\u0e7f]"), ("th",)),
    (re.compile("[\u0370-\u03ff]"), ("el",)),
    (re.compile("[\u0590-\u05ff]"), ("he",)),
    (re.compile("[\u10a0-\u10ff]"), ("ka",)),
    (re.compile("[\u0530-\u058f]"), ("hy",)),
    (re.compile("[\u0b80-\u0bff]"), ("ta",)),
    (re.compile("[\u0c00-\u0c7f]"), ("te",)),
)
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_LETTER = re.compile(r"[^\W\d_]")
# Words that carry no language: URLs, e-mail addresses, code-like tokens.
_NOISE = re.compile(r"https?://\S+|\S+@\S+|`[^`]*`|\b\w*[_/\\]\w*\b")


class _Identifiers:
    """py3langid's model, loaded once (about 0.2 s), one identifier per script's languages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_set: dict[tuple[str, ...], Any] = {}

    def classify(self, text: str, languages: tuple[str, ...]) -> tuple[str, float]:
        identifier = self._by_set.get(languages)
        if identifier is None:
            with self._lock:
                identifier = self._by_set.get(languages)
                if identifier is None:
                    from py3langid.langid import _load_identifier

                    identifier = _load_identifier(norm_probs=True, langs=list(languages))
                    self._by_set[languages] = identifier
        language, probability = identifier.classify(text)
        return str(language), float(probability)


_IDENTIFIERS = _Identifiers()


@lru_cache(maxsize=20_000)
def detect(text: str) -> str:
    """The ISO 639-1 code of the question's language (module docstring)."""
    text = unicodedata.normalize("NFKC", text[:MAX_READ_CHARS])
    if _HAN.search(text) or _KANA.search(text) or _HANGUL.search(text):
        if _KANA.search(text):
            return "ja"
        return "ko" if _HANGUL.search(text) else "zh"
    for pattern, languages in _SCRIPTS:
        if pattern.search(text):
            if len(languages) == 1:
                return languages[0]
            return _IDENTIFIERS.classify(text, languages)[0]
    words = _NOISE.sub(" ", text)
    if not _LETTER.search(words):
        return ENGLISH
    if _CYRILLIC.search(words):
        return _IDENTIFIERS.classify(words, CYRILLIC)[0]
    language, probability = _IDENTIFIERS.classify(words, LATIN)
    return language if language == ENGLISH or probability >= MIN_CONFIDENCE else ENGLISH


def warm() -> None:
    """Load the detector's model ahead of the first question (the server's start)."""
    detect("warm up the language detector")
    detect("привет")
