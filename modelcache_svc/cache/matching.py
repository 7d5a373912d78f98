"""From similarity to a hit decision.

Embeddings of two questions one word apart ("... in Python" / "... in Java")
are nearly equal, yet their answers differ. After the threshold test, the
precision guard compares what usually changes an answer — numbers,
programming languages, negation — and vetoes a hit when they differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidArgument

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CJK_NUMERAL = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")
_WORD = re.compile(r"[A-Za-z][A-Za-z+#']*")
_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
    "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40",
    "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000",
}
_LANGUAGES = {
    "python", "java", "javascript", "js", "typescript", "ts", "c++", "cpp", "c#", "csharp", "golang",
    "rust", "ruby", "php", "kotlin", "swift", "scala", "perl", "haskell", "lua", "matlab", "dart",
    "elixir", "erlang", "clojure", "fortran", "cobol", "julia", "bash", "shell", "powershell", "sql",
    "mysql", "postgresql", "postgres", "sqlite", "html", "css", "objective-c", "vb", "vba", "groovy",
    "solidity", "zig", "nim", "ocaml", "fsharp", "f#", "assembly", "react", "vue", "angular", "django",
    "flask", "node", "nodejs", "pandas", "numpy", "pytorch", "tensorflow", "excel",
}
# Single letters and common words that are languages only when written as such.
_CASED_LANGUAGES = {"C": "c", "R": "r", "Go": "golang", "D": "d"}
_NEGATIONS = {"not", "no", "never", "without", "cannot", "none", "nor", "neither"}
_CJK_NEGATIONS = ("不", "没", "別", "别", "无", "非", "未")


@dataclass(frozen=True, slots=True)
class Features:
    numbers: frozenset[str]
    languages: frozenset[str]
    negated: bool


def features(text: str) -> Features:
    numbers = {n.replace(",", "") for n in _NUMBER.findall(text)}
    numbers.update(_CJK_NUMERAL.findall(text))
    languages: set[str] = set()
    negations = 0
    for word in _WORD.findall(text):
        lower = word.lower()
        if lower.endswith("n't"):
            negations += 1
            continue
        if lower in _NUMBER_WORDS:
            numbers.add(_NUMBER_WORDS[lower])
        if lower in _NEGATIONS:
            negations += 1
        if lower in _LANGUAGES:
            languages.add({"js": "javascript", "ts": "typescript", "cpp": "c++", "csharp": "c#",
                           "golang": "golang", "postgres": "postgresql", "nodejs": "node"}.get(lower, lower))
        elif word in _CASED_LANGUAGES:
            languages.add(_CASED_LANGUAGES[word])
    negations += sum(text.count(ch) for ch in _CJK_NEGATIONS)
    return Features(frozenset(numbers), frozenset(languages), negations % 2 == 1)


def guard_veto(query: str, candidate: str) -> str | None:
    """Why a candidate must not answer query (None: no objection)."""
    a, b = features(query), features(candidate)
    if a.numbers != b.numbers:
        return "numbers differ"
    if a.languages != b.languages:
        return "languages differ"
    if a.negated != b.negated:
        return "negation differs"
    return None


def resolve_threshold(request: float | None, tenant: float | None, default: float) -> float:
    for value in (request, tenant):
        if value is not None:
            if not (0.0 < value <= 1.0) or value != value:
                raise InvalidArgument(f"similarity_threshold {value} is out of range: it must be in (0, 1]")
            return float(value)
    return default
