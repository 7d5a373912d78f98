"""From similarity to a hit decision.

Embeddings of two questions one word apart ("... in Python" / "... in Java")
are nearly equal, yet their answers differ. After the threshold test, the
precision guard compares what usually changes an answer and vetoes a hit when
it differs. Each rule below was kept only where it measured a gain on the
labelled pairs of shared/eval (docs/hit-quality.md): a rule that fires on
paraphrases costs recall, so every rule fires on a *conflict*, not on mere
absence —

- numbers (digits, number words, CJK numerals): both questions name numbers
  and they differ ("divisible by 13" / "by 17"); a question without numbers is
  a more general one, not a different one, and enumerators ("1)", "2.") are
  layout, not numbers;
- units and currencies beside numbers, where both questions have some
  (10 km / 10 miles, $500 / ₹500);
- programming languages and frameworks (C, R and Go only where they read as
  languages: "in Go", "C programming");
- dates (months, weekdays, today/tomorrow): both name one and they differ;
- negation: odd/even count of negators, but only between short, otherwise
  alike questions — in long or rephrased texts negators are a paraphrasing
  device ("not mandatory" / "optional"), and "or not" asks rather than negates;
- named entities (capitalised words not opening a sentence, acronyms,
  CamelCase): a *substitution* — each side names one the other lacks
  ("in Brazil" / "in Peru") — between questions that otherwise share words;
  an entity only one side adds ("Osho Pune" / "Osho Ashram Pune") passes;
- opposites (opposites.py): open / close, highest / lowest, ascending /
  descending, create / delete, buy / sell and the like, in every routed
  language, again as a substitution.

Negators are read in the routed languages too (no, non, pas, nicht, kein,
não, не, nie, niet, inte, tidak, değil, لا, नहीं ...), with the same
conditions: short, otherwise alike texts.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from ..errors import InvalidArgument
from .opposites import opposite

# Latin-script words; CJK is handled by its own rules, so it is blanked out first.
_TOKEN = re.compile(r"[^\W_](?:[\w+#']|[.\-/](?=\w))*[+#]*")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# Words and CJK characters in reading order, for the word pairs the rerank compares.
_SEQUENCE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_\u3400-\u9fff\uf900-\ufaff]+")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_NUMBER_UNIT = re.compile(r"^\d+(?:[.,]\d+)*([a-z°]+)$")
_LINE_ENUMERATOR = re.compile(r"(?m)^\s*\(?\d{1,2}[.)](?=\s)")
_INLINE_ENUMERATOR = re.compile(r"(?<![\w(])\(?\d{1,2}\)(?=\s)")
_SIGNS = re.compile(r"[$€£₹¥%]")
_NUMBER_WORDS = {
    "zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
    "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "third": "3rd", "fourth": "4th", "fifth": "5th",
}  # not "one" (a pronoun: "one can"), "first"/"second" (adverb, unit): they fired on paraphrases
_UNITS = {
    **dict.fromkeys(("km", "kilometer", "kilometers", "kilometre", "kilometres"), "km"),
    **dict.fromkeys(("mile", "miles"), "mile"), **dict.fromkeys(("meter", "meters", "metre", "metres"), "m"),
    "cm": "cm", "mm": "mm", **dict.fromkeys(("ft", "foot", "feet"), "ft"), **dict.fromkeys(("inch", "inches"), "in"),
    **dict.fromkeys(("kg", "kgs", "kilogram", "kilograms"), "kg"), **dict.fromkeys(("gram", "grams"), "g"),
    **dict.fromkeys(("lb", "lbs", "pound", "pounds"), "lb"), **dict.fromkeys(("oz", "ounce", "ounces"), "oz"),
    **dict.fromkeys(("liter", "liters", "litre", "litres"), "l"), "ml": "ml", "gallon": "gal", "gallons": "gal",
    **dict.fromkeys(("celsius", "°c"), "°c"), **dict.fromkeys(("fahrenheit", "°f"), "°f"),
    "kb": "kb", "mb": "mb", "gb": "gb", "tb": "tb", "ghz": "ghz", "mhz": "mhz", "mbps": "mbps", "mph": "mph",
    "kmph": "kmph", "kph": "kmph", "kw": "kw", "kwh": "kwh", "mah": "mah",
    **dict.fromkeys(("seconds", "sec", "secs"), "s"), **dict.fromkeys(("minute", "minutes", "mins"), "min"),
    **dict.fromkeys(("hour", "hours", "hr", "hrs"), "h"), "day": "day", "days": "day", "week": "week",
    "weeks": "week", "month": "month", "months": "month", **dict.fromkeys(("year", "years", "yrs"), "year"),
    **dict.fromkeys(("usd", "dollar", "dollars", "$"), "$"), **dict.fromkeys(("eur", "euro", "euros", "€"), "€"),
    **dict.fromkeys(("gbp", "£"), "£"), **dict.fromkeys(("inr", "rs", "rupee", "rupees", "₹"), "₹"),
    **dict.fromkeys(("lakh", "lakhs"), "lakh"), **dict.fromkeys(("crore", "crores"), "crore"),
    **dict.fromkeys(("yen", "¥"), "¥"), **dict.fromkeys(("yuan", "rmb"), "元"), **dict.fromkeys(("percent", "%"), "%"),
    "k": "k", "hundred": "hundred", "thousand": "thousand", "million": "million", "billion": "billion",
    "trillion": "trillion", "dozen": "dozen",
}
_LANGUAGES = {
    "python": "python", "java": "java", "javascript": "javascript", "js": "javascript", "typescript": "typescript",
    "ts": "typescript", "c++": "c++", "cpp": "c++", "c/c++": "c++", "c#": "c#", "csharp": "c#", "golang": "go",
    "php": "php", "kotlin": "kotlin", "scala": "scala", "perl": "perl", "haskell": "haskell", "lua": "lua",
    "matlab": "matlab", "erlang": "erlang", "clojure": "clojure", "fortran": "fortran", "cobol": "cobol",
    "powershell": "powershell", "sql": "sql", "mysql": "mysql", "postgresql": "postgresql", "postgres": "postgresql",
    "sqlite": "sqlite", "mongodb": "mongodb", "html": "html", "css": "css", "objective-c": "objective-c",
    "vb": "vb", "vb.net": "vb", "vba": "vba", "ocaml": "ocaml", "fsharp": "f#", "f#": "f#", "django": "django",
    "numpy": "numpy", "pytorch": "pytorch", "tensorflow": "tensorflow", "nodejs": "node", "node.js": "node",
    "vue": "vue", "vue.js": "vue", "jquery": "jquery", "reactjs": "react", "react.js": "react",
    "angularjs": "angular",
}
# Letters and ordinary words that name a language only when written as a name, in a code context.
_CASED_LANGUAGES = {
    "C": "c", "R": "r", "D": "d", "Go": "go", "Rust": "rust", "Ruby": "ruby", "Swift": "swift", "Julia": "julia",
    "Dart": "dart", "Elixir": "elixir", "Excel": "excel", "Bash": "bash", "Shell": "shell", "React": "react",
    "Angular": "angular", "Node": "node", "Flask": "flask", "Pandas": "pandas", "Assembly": "assembly",
    "Groovy": "groovy", "Solidity": "solidity", "Spring": "spring",
}
_CODE_AFTER = {"programming", "language", "lang", "code", "program", "programs", "compiler", "developer",
               "developers", "script", "scripts", "library", "framework", "function", "functions"}
_CODE_BEFORE = {"in", "using", "with", "learn", "learning", "vs", "or", "and", "to", "use", "into", "from", "write"}
_NEGATIONS = {
    "not", "no", "never", "cannot", "nobody", "nothing", "nowhere", "neither", "nor",
    # es/it/pt/fr, de, nl, sv, pl, ru/uk, tr, id (French "ne" is not counted: "ne ... pas" would cancel out;
    # Vietnamese "không" also closes every yes/no question, so it is not read)
    "nunca", "jamás", "jamas", "non", "mai", "não", "nao", "pas", "jamais", "nicht", "kein", "keine", "keinen",
    "niemals", "niet", "geen", "nooit", "inte", "ej", "aldrig", "nie", "не", "нет", "ні", "değil", "degil",
    "tidak", "bukan", "tak",
}
# Negators of scripts the word pattern splits (Arabic, Devanagari): counted as substrings between spaces.
_SPACED_NEGATIONS = (" لا ", " ليس ", " لم ", " لن ", " नहीं ", " मत ")
_NO_IS_NOT_NEGATION_BEFORE = {"longer", "matter", "doubt", "one"}
_MONTHS = {
    **{m: m[:3] for m in ("january", "february", "april", "june", "july", "august", "september", "october",
                          "november", "december")},
    "jan": "jan", "feb": "feb", "apr": "apr", "jun": "jun", "jul": "jul", "aug": "aug", "sep": "sep", "sept": "sep",
    "oct": "oct", "nov": "nov", "dec": "dec",
}
_CASED_MONTHS = {"May": "may", "March": "mar"}  # ordinary words in lower case
_DATES = {
    **{d: d[:3] for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")},
    "today": "today", "tomorrow": "tomorrow", "yesterday": "yesterday", "tonight": "tonight",
}
# Capitalised for grammar, not because they name something.
_NOT_ENTITIES = {
    "i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "hi", "hello", "mr", "mrs", "ms", "dr", "vs", "etc", "a", "an",
    "the", "what", "why", "how", "when", "where", "who", "which", "is", "are", "can", "do", "does", "should",
    "will", "would", "could", "did", "and", "or", "all", "true", "false", "null", "none", *_NEGATIONS,
}
# Overlap below which two texts are rephrasings, and a negator or a name is a paraphrasing device.
_NEGATION_MIN_OVERLAP = 0.7
_NEGATION_MAX_WORDS = 30
_ENTITY_MIN_OVERLAP = 0.4

# Chinese: numerals count when they are numbers, not the "一" of 一下 / 一些 ("a bit", "some").
_CJK_NUMERAL = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")
_CJK_NUMERAL_WORDS = ("一下", "一些", "一样", "一起", "一直", "一定", "一般", "一点", "一切", "统一", "万一", "千万",
                      "一边", "一种", "一次", "一个", "一首", "一部", "一本", "一句", "一张", "一位", "一段", "十分",
                      "百度", "一一", "不一", "唯一", "一旦", "一致", "一向", "一生", "一路", "一代", "一天")
_CJK_A_NOT_A = re.compile(r"(.)[不没]\1")  # 是不是, 有没有: a question, not a negation
_CJK_NEGATORS = ("不", "没", "别", "无法", "未", "非", "勿")
_CJK_NOT_NEGATIONS = ("不错", "不过", "不同", "不少", "不仅", "不断", "不如", "不管", "不然", "不得不", "别人", "别的",
                      "分别", "区别", "特别", "级别", "类别", "性别", "告别", "差别", "识别", "未来", "非常", "并非",
                      "是非", "除非", "不知道", "不了")


@dataclass(frozen=True, slots=True)
class Features:
    numbers: frozenset[str]
    units: frozenset[str]
    languages: frozenset[str]
    dates: frozenset[str]
    negated: bool
    entities: frozenset[str]
    # Folded stems, initials of capitalised runs ("Random Access Memory" -> "ram"), CJK characters.
    words: frozenset[str]
    compact: str  # folded text without separators: "Java script" still contains "javascript"
    joined: frozenset[str]  # one to three adjacent words run together, separators out: whole names only
    length: int  # words and CJK characters


def _fold(word: str) -> str:
    """Lower case without accents: "Süper" and "Super" are one name."""
    if word.isascii():  # nothing to take off (most words; the decomposition costs ~1 us a letter)
        return word.lower()
    return "".join(ch for ch in unicodedata.normalize("NFKD", word.lower()) if not unicodedata.combining(ch))


def _stem(word: str) -> str:
    w = word.lower().replace("'s", "").rstrip("'")
    for suffix in ("ies", "es", "s"):
        if len(w) > 4 and w.endswith(suffix) and not w.endswith("ss"):
            return w[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return w


def _sentence_starts(text: str, tokens: list[re.Match[str]]) -> set[int]:
    """Indexes of tokens that open a sentence (capitalised for grammar): the first, and those after . ? ! : ;
    or a line break. Only the gap since the previous token is read, so long texts stay linear."""
    starts = {0} if tokens else set()
    for i in range(1, len(tokens)):
        gap = text[tokens[i - 1].end():tokens[i].start()].rstrip(" \t\"'“‘([{*-")
        if gap and gap[-1] in ".?!:;\n":
            starts.add(i)
    return starts


@lru_cache(maxsize=4096)
def features(text: str) -> Features:
    text = unicodedata.normalize("NFKC", text)
    latin = _CJK.sub(" ", _INLINE_ENUMERATOR.sub(" ", _LINE_ENUMERATOR.sub(" ", text)))
    tokens = list(_TOKEN.finditer(latin))
    words = [m.group(0) for m in tokens]
    lower = [w.lower() for w in words]
    starts = _sentence_starts(latin, tokens)
    numbers = {n.replace(",", "") for n in _NUMBER.findall(latin)} | _cjk_numbers(text)
    units = {_UNITS[s] for s in _SIGNS.findall(latin)}
    languages: set[str] = set()
    dates: set[str] = set()
    negations = _cjk_negations(text)
    spaced = f" {text} "
    negations += sum(spaced.count(n) for n in _SPACED_NEGATIONS)
    alpha = [w for w in words if w[0].isalpha()]
    # In Title Case Text capitals carry no signal; acronyms and CamelCase still do.
    title_case = len(alpha) >= 4 and sum(w[0].isupper() for w in alpha) / len(alpha) > 0.6
    entities: set[str] = set()
    for i, (word, low) in enumerate(zip(words, lower)):
        prev = lower[i - 1] if i else ""
        nxt = lower[i + 1] if i + 1 < len(lower) else ""
        if low.endswith("n't") or (low in _NEGATIONS and not _negator_in_name_only(low, prev, nxt, latin, tokens[i])):
            negations += 1
        elif low in ("không", "chẳng", "chưa") and i + 1 < len(lower):  # Vietnamese; a last "không" asks
            negations += 1
        if low in _NUMBER_WORDS:
            numbers.add(_NUMBER_WORDS[low])
        attached = _NUMBER_UNIT.match(low)
        if attached and attached.group(1) in _UNITS:
            units.add(_UNITS[attached.group(1)])
        if low in _UNITS and len(low) > 1 and (prev[:1].isdigit() or prev in _NUMBER_WORDS):
            units.add(_UNITS[low])
        if low in _LANGUAGES:
            languages.add(_LANGUAGES[low])
        elif word in _CASED_LANGUAGES and (
            nxt in _CODE_AFTER or (prev in _CODE_BEFORE and (len(word) == 1 or i not in starts))
        ):
            languages.add(_CASED_LANGUAGES[word])
        elif low in ("c", "r") and nxt in _CODE_AFTER:
            languages.add(low)
        if low in _MONTHS or low in _DATES:
            dates.add(_MONTHS.get(low) or _DATES[low])
        elif word in _CASED_MONTHS and i not in starts:
            dates.add(_CASED_MONTHS[word])
        if low in _NOT_ENTITIES or not word[0].isalpha():
            continue
        if (len(word) >= 2 and word.isupper()) or any(ch.isupper() for ch in word[1:]) or (
            word[0].isupper() and i not in starts and not title_case
        ):
            entities.add(_fold(_stem(word)))
    return Features(
        numbers=frozenset(numbers),
        units=frozenset(units),
        languages=frozenset(languages),
        dates=frozenset(dates),
        negated=negations % 2 == 1,
        entities=frozenset(entities),
        words=frozenset(_fold(_stem(w)) for w in lower) | _initials(words) | frozenset(_CJK.findall(text)),
        compact=_fold(re.sub(r"[\W_]+", "", text)),
        joined=_joined(lower),
        length=len(words) + len(_CJK.findall(text)),
    )


def _joined(lower: list[str], most: int = 3) -> frozenset[str]:
    bare = [_fold(re.sub(r"[\W_]+", "", w)) for w in lower]
    return frozenset("".join(bare[i:i + n]) for n in range(1, most + 1) for i in range(len(bare) - n + 1))


@lru_cache(maxsize=4096)
def _adjacent_pairs(text: str) -> frozenset[tuple[str, str]]:
    """Adjacent folded stems (CJK: characters), in reading order. Apart from ``features``: only the rerank
    needs them, so a query the guard alone reads never computes them."""
    seq = [_fold(_stem(w)) for w in _SEQUENCE.findall(unicodedata.normalize("NFKC", text))]
    return frozenset(zip(seq, seq[1:]))


def _negator_in_name_only(low: str, prev: str, nxt: str, text: str, token: re.Match[str]) -> bool:
    """"no longer", "No, ...", "no." (number), "... or not?", "why not": not a negated question."""
    if low == "no":
        return nxt in _NO_IS_NOT_NEGATION_BEFORE or text[token.end():token.end() + 1] in (",", ".")
    return low == "not" and prev in ("or", "why")


def _initials(words: list[str]) -> frozenset[str]:
    out: set[str] = set()
    run: list[str] = []
    for word in [*words, ""]:
        if word[:1].isalpha() and word[0].isupper():
            run.append(word)
            continue
        if len(run) >= 2:
            out.add("".join(w[0] for w in run).lower())
        run = []
    return frozenset(out)


def _cjk_numbers(text: str) -> set[str]:
    for word in _CJK_NUMERAL_WORDS:
        text = text.replace(word, " ")
    return {n for n in _CJK_NUMERAL.findall(text) if n != "一"}


def _cjk_negations(text: str) -> int:
    text = _CJK_A_NOT_A.sub(" ", text)
    for word in _CJK_NOT_NEGATIONS:
        text = text.replace(word, " ")
    return sum(text.count(w) for w in _CJK_NEGATORS)


def _missing_languages(a: Features, b: Features) -> bool:
    """A language of a that b does not name ("numpy-like" and "Pythonic" do name one)."""
    return any(len(lang) < 4 or lang not in b.compact for lang in a.languages - b.languages)


_NAME_ENDINGS = ("", "s", "es", "n", "an", "ian", "i", "ese", "ish", "ns", "is")


def _missing_entities(a: Features, b: Features) -> int:
    """How many of a's names b does not mention (in any case, or as initials, or run together)."""
    missing = 0
    for name in a.entities:
        # Run together, but whole words: "Java script" names JavaScript, "Indians" and "IITs" name India and
        # IIT, "Londonderry" and "Nigeria" do not name London and Niger.
        bare = re.sub(r"[\W_]+", "", name)
        if name in b.words or (len(name) >= 3 and any(bare + end in b.joined for end in _NAME_ENDINGS)):
            continue
        missing += 1
    return missing


def _overlap(a: Features, b: Features) -> float:
    """Jaccard overlap of the two texts' words, negators aside."""
    x = {w for w in a.words if w not in _NEGATIONS and w not in _CJK_NEGATORS and not w.endswith("n't")}
    y = {w for w in b.words if w not in _NEGATIONS and w not in _CJK_NEGATORS and not w.endswith("n't")}
    return len(x & y) / max(1, len(x | y))


def lexical_overlap(query: str, candidate: str) -> float:
    """Jaccard overlap (0..1) of the two texts' adjacent word pairs, what the rerank adds to the cosine.

    Pairs, not single words: they keep word order, so of two near-duplicate entries the one worded like the
    question ranks first, while a scrambled question ("from Paris to Rome" / "from Rome to Paris") gains
    nothing. Measured on shared/eval: single words lost 44 right hits on PAWS, pairs gain 37
    (docs/hit-quality.md, "The rerank")."""
    x, y = _adjacent_pairs(query), _adjacent_pairs(candidate)
    return len(x & y) / max(1, len(x | y))


# Operating systems and phone platforms: two questions naming different ones ask different things
# ("install it on a MacBook" / "on Windows"). Substrings of the lower-cased text, every language.
_PLATFORMS = tuple((name, re.compile(pattern)) for name, pattern in (
    ("windows", r"(?<!\w)(?:windows|win10|win11)(?!\w)|视窗"),
    ("mac", r"(?<!\w)(?:mac|macos|macbook|osx|os x)(?!\w)|苹果电脑|ماك"),
    ("linux", r"(?<!\w)(?:linux|ubuntu|debian|fedora)(?!\w)"),
    ("android", r"(?<!\w)(?:android|андроид|андроїд)(?!\w)|安卓|أندرويد|اندرويد|एंड्रॉयड"),
    ("ios", r"(?<!\w)(?:ios|iphone|ipad|айфон)(?!\w)|苹果手机|آيفون|ايفون|आईफोन"),
))


# Human languages named (a translation into 英文 is not one into 日语, "into French" not "in German"): in CJK
# script, and as English words, since an instruction shares too few other words for the entity rule to read.
_HUMAN_LANGUAGES = tuple((name, re.compile(pattern)) for name, pattern in (
    ("en", r"英文|英语|英語|영어|\benglish\b"), ("fr", r"法语|法文|法語|프랑스어|\bfrench\b"),
    ("ja", r"日语|日文|日語|日本語|일본어|\bjapanese\b"), ("de", r"德语|德文|德語|ドイツ語|독일어|\bgerman\b"),
    ("es", r"西班牙语|西班牙文|スペイン語|스페인어|\bspanish\b"), ("ko", r"韩语|韩文|韓国語|한국어|\bkorean\b"),
    ("ru", r"俄语|俄文|ロシア語|러시아어|\brussian\b"), ("zh", r"中文|汉语|中国語|중국어|\bchinese\b|\bmandarin\b"),
    ("it", r"意大利语|意大利文|\bitalian\b"), ("pt", r"葡萄牙语|葡萄牙文|\bportuguese\b"),
    ("ar", r"阿拉伯语|阿拉伯文|\barabic\b"), ("nl", r"荷兰语|\bdutch\b"), ("sv", r"瑞典语|\bswedish\b"),
    ("el", r"希腊语|\bgreek\b"), ("hi", r"印地语|\bhindi\b"), ("tr", r"土耳其语|\bturkish\b"),
    ("pl", r"波兰语|\bpolish\b"), ("vi", r"越南语|\bvietnamese\b"),
))


# Countries named in Chinese, Japanese and Korean, from pycountry's ISO 3166 translations (name, common and
# official name): "尼日利亚" is not "尼日尔", "印度尼西亚" not "印度". Latin and Cyrillic names are capitalised
# words, which the entity rule reads. Longest names first, so a longer name is never read as a shorter one.
_COUNTRY_LOCALES = ("zh_CN", "zh_TW", "ja", "ko")
_CJK_OR_KANA_OR_HANGUL = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]")


@lru_cache(maxsize=1)
def _country_names() -> tuple[re.Pattern[str], dict[str, str]]:
    import gettext

    import pycountry

    code_of: dict[str, str] = {}
    for locale in _COUNTRY_LOCALES:
        names = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[locale])
        for country in pycountry.countries:
            for field in ("name", "common_name", "official_name"):
                english = getattr(country, field, None)
                local = names.gettext(english) if english else ""
                if local and local != english and len(local) >= 2 and _CJK_OR_KANA_OR_HANGUL.search(local):
                    code_of.setdefault(local, country.alpha_2)
    ordered = sorted(code_of, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))), code_of


@lru_cache(maxsize=4096)
def _countries(text: str) -> frozenset[str]:
    """The countries a CJK text names (ISO codes)."""
    if not _CJK_OR_KANA_OR_HANGUL.search(text):
        return frozenset()
    pattern, code_of = _country_names()
    return frozenset(code_of[m] for m in pattern.findall(unicodedata.normalize("NFKC", text)))


@lru_cache(maxsize=4096)
def named_languages(text: str) -> frozenset[str]:
    """The human languages a text names (codes)."""
    return _named(text)[1]


# Any platform or language named at all: one search, the 23 of them only when it finds one (most texts).
_ANY_NAMED = re.compile("|".join(f"(?:{pattern.pattern})" for _, pattern in (*_PLATFORMS, *_HUMAN_LANGUAGES)))


@lru_cache(maxsize=4096)
def _named(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(the platforms, the human languages) a text names."""
    low = unicodedata.normalize("NFKC", text).lower()
    if not _ANY_NAMED.search(low):
        return frozenset(), frozenset()
    return (frozenset(name for name, pattern in _PLATFORMS if pattern.search(low)),
            frozenset(name for name, pattern in _HUMAN_LANGUAGES if pattern.search(low)))


def reordered(query: str, candidate: str) -> bool:
    """The same words in another order, two of them trading places ("convertir un Word en PDF" / "un PDF en
    Word", "van Z naar A" / "van A naar Z"): a conversion or a range read backwards."""
    a, b = _space_word_list(query), _space_word_list(candidate)
    return len(a) >= 3 and a != b and sorted(a) == sorted(b)


@lru_cache(maxsize=4096)
def _space_word_list(text: str) -> tuple[str, ...]:
    """Folded words split on spaces, edge punctuation off: every script read alike."""
    folded = _fold(unicodedata.normalize("NFKC", text))
    return tuple(w for w in (w.strip(_EDGE_PUNCTUATION) for w in folded.split()) if w)


# Words that give a question a direction: read the other way round across one, it asks another question.
_DIRECTION_WORDS = frozenset({"to", "into", "from", "than", "before", "after", "vs", "versus", "toward",
                              "towards", "onto"})
_CJK_DIRECTION = re.compile(r"[成到飞往去至比从转换]")


def direction_reversed(query: str, candidate: str) -> bool:
    """Two spans traded across a word that gives the question a direction, the rest the same: P A M B S /
    P B M A S, M holding the direction ("miles to km" / "km to miles", "from New York to London" / "from
    London to New York", "英里怎么换算成公里" / "公里怎么换算成英里", "纽约飞北京" / "北京飞纽约"). Two spans
    moved side by side (no M: "online leads" / "leads online", "成都英语培训学校哪个好" / "成都哪个英语培训学校
    好") are a paraphrase's word order, not a reversal."""
    a, b = _sequence(query), _sequence(candidate)
    if a == b or len(a) != len(b) or len(a) > _MAX_REVERSAL_TOKENS or sorted(a) != sorted(b):
        return False
    p = 0
    while a[p] == b[p]:
        p += 1
    s = 0
    while a[-1 - s] == b[-1 - s]:
        s += 1
    x, y = a[p:len(a) - s], b[p:len(b) - s]
    n = len(x)
    for k in range(1, n - 1):  # A = x[:k] ends y
        if x[:k] != y[n - k:]:
            continue
        for m in range(1, n - k):  # B = x[n-m:] opens y, M between them in both
            middle = x[k:n - m]
            if middle and x[n - m:] == y[:m] and middle == y[m:n - k] and _gives_direction(middle):
                return True
    return False


_MAX_REVERSAL_TOKENS = 64


def _gives_direction(tokens: tuple[str, ...]) -> bool:
    return any(t in _DIRECTION_WORDS or _CJK_DIRECTION.fullmatch(t) for t in tokens)


@lru_cache(maxsize=4096)
def _sequence(text: str) -> tuple[str, ...]:
    """Folded stems and CJK characters in reading order, punctuation out."""
    return tuple(_fold(_stem(w)) for w in _SEQUENCE.findall(unicodedata.normalize("NFKC", text)))


def one_word_swapped(query: str, candidate: str) -> bool:
    """Two texts of the same words but one, swapped for another ("capital of Austria" / "capital of
    Switzerland", "receta de paella" / "receta de gazpacho"). Words are split on spaces, so every script
    is read alike."""
    a, b = _space_words(query), _space_words(candidate)
    return len(a - b) == 1 and len(b - a) == 1 and len(a & b) >= 2


@lru_cache(maxsize=4096)
def _space_words(text: str) -> frozenset[str]:
    return frozenset(_space_word_list(text))


_EDGE_PUNCTUATION = ".,;:!?¿¡\"'()«»“”„‘’-–—…؟।"
# Languages with a trained verifier of their own: the swap rule is left to it there (on QQP's duplicates it
# fires on 7.5 % of them: one synonym swapped is a paraphrase device in English).
_VERIFIED_LANGUAGES = frozenset({"en", "zh", "ja", "ko"})


def guard_veto(query: str, candidate: str, language: str = "") -> str | None:
    """Why a candidate must not answer query (None: no objection). ``language``: the question's (routing's),
    "" = English rules only."""
    a, b = features(query), features(candidate)
    if a.numbers and b.numbers and a.numbers != b.numbers:
        return "numbers differ"
    if a.units and b.units and a.units != b.units:
        return "units differ"
    if _missing_languages(a, b) or _missing_languages(b, a):
        return "languages differ"
    if a.dates and b.dates and a.dates != b.dates:
        return "dates differ"
    # Inflection splits a word in two elsewhere ("Jakich roślin" / "Jakie rośliny"): half the words will do.
    min_overlap = _NEGATION_MIN_OVERLAP if not language or language in _VERIFIED_LANGUAGES else 0.4
    if a.negated != b.negated and max(a.length, b.length) <= _NEGATION_MAX_WORDS and (
        _overlap(a, b) >= min_overlap
    ):
        return "negation differs"
    (pa, ha), (pb, hb) = _named(query), _named(candidate)
    if pa and pb and not (pa & pb):
        return "platforms differ"
    if ha and hb and not (ha & hb):  # "from Arabic to English" / "to English" is one request
        return "languages named differ"
    ca, cb = _countries(query), _countries(candidate)
    if ca and cb and not (ca & cb):
        return "countries differ"
    if _missing_entities(a, b) and _missing_entities(b, a) and _overlap(a, b) >= _ENTITY_MIN_OVERLAP:
        return "named entities differ"
    if opposite(query, candidate):
        return "opposites"
    if direction_reversed(query, candidate):
        return "direction reversed"
    if language and language not in _VERIFIED_LANGUAGES:
        if one_word_swapped(query, candidate):
            return "one word swapped"
        if reordered(query, candidate):
            return "words reordered"
    return None


def resolve_threshold(request: float | None, tenant: float | None, default: float) -> float:
    for value in (request, tenant):
        if value is not None:
            if not (0.0 < value <= 1.0) or value != value:
                raise InvalidArgument(f"similarity_threshold {value} is out of range: it must be in (0, 1]")
            return float(value)
    return default
