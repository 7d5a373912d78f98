"""The cacheability policy: which questions a tenant's cache neither stores nor serves.

A question is judged by the built-in detectors (detectors.py: ``pii``,
``user_specific``, ``time_sensitive``) and the tenant's own rules
(``rule:<name>``: a regular expression, keywords, or both). Each class has an
action: REFUSE (the default: a Query is a miss, an Insert stores nothing),
ALLOW, or SHORT_TTL (stored with ``short_ttl_seconds``, served while it lives).
When several classes match, the strictest action wins (REFUSE, then
SHORT_TTL, then ALLOW); among equals the first in the order pii,
user_specific, time_sensitive, then the rules in their order.

Tenant rules are checked when a config is written, so a query never meets a
pattern that can run away: bounded count and sizes, no back-references, no
quantifier or alternation inside an unbounded repetition (the shapes that
backtrack exponentially in Python's ``re``), no pattern that matches the empty
text, and a probe on hostile inputs under a time limit. A rule reads at most
``MAX_RULE_INPUT_CHARS`` of a question.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..records import (  # noqa: F401 - the JSON form is re-exported for the client and the CLI
    CacheabilityAction,
    CacheabilityPolicy,
    CacheabilityRule,
    Tenant,
    action_named,
    policy_from_dict,
    policy_to_dict,
)
from .detectors import BUILT_IN_CLASSES, MAX_CHECKED_CHARS, detect

if TYPE_CHECKING:
    from ..metrics import Metrics

Action = CacheabilityAction
DEFAULT_SHORT_TTL_S = 300
MAX_SHORT_TTL_S = 7 * 24 * 3600
MAX_RULES = 32
MAX_PATTERN_CHARS = 256
MAX_KEYWORDS = 64
MAX_KEYWORD_CHARS = 64
MAX_RULE_INPUT_CHARS = 2048
PROBE_LIMIT_S = 0.05  # the whole probe of one pattern on hostile inputs
RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$", re.ASCII)
RULE_PREFIX = "rule:"
_STRICTNESS = {Action.REFUSE: 2, Action.SHORT_TTL: 1, Action.ALLOW: 0}
_MEMO_SIZE = 10_000
_PROBES = ("a" * MAX_RULE_INPUT_CHARS, "a" * (MAX_RULE_INPUT_CHARS - 1) + "!", "1" * MAX_RULE_INPUT_CHARS,
           " " * MAX_RULE_INPUT_CHARS, "ab" * (MAX_RULE_INPUT_CHARS // 2), "我" * MAX_RULE_INPUT_CHARS)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The class a question was flagged with and what the policy does about it."""

    klass: str  # pii | user_specific | time_sensitive | rule:<name>
    action: CacheabilityAction

    @property
    def refused(self) -> bool:
        return self.action is Action.REFUSE


# -- the built-in classes, remembered per question ------------------------------------------------
_detected: dict[str, tuple[str, ...]] = {}


def detect_remembered(question: str) -> tuple[str, ...]:
    """detect(question), remembered for recent questions: an exact hit asks the same text again."""
    found = _detected.get(question)
    if found is None:
        found = detect(question)
        if len(question) <= MAX_CHECKED_CHARS:
            if len(_detected) >= _MEMO_SIZE:
                del _detected[next(iter(_detected))]  # the oldest
            _detected[question] = found
    return found


# -- a policy, compiled ---------------------------------------------------------------------------
class CompiledPolicy:
    def __init__(self, policy: CacheabilityPolicy) -> None:
        self.policy = policy
        self.short_ttl_seconds = policy.short_ttl_seconds or DEFAULT_SHORT_TTL_S
        self._builtin = {PII: policy.pii, USER: policy.user_specific, TIME: policy.time_sensitive}
        self._rules = [(RULE_PREFIX + r.name, r.action, compile_rule(r)) for r in policy.rules]
        self._memo: dict[str, Verdict | None] = {}

    def judge(self, question: str) -> Verdict | None:
        """The deciding class of a question, or None when no class matches."""
        if question in self._memo:
            return self._memo[question]
        best: Verdict | None = None
        for klass in detect_remembered(question):
            best = _stricter(best, Verdict(klass, self._builtin[klass]))
        if self._rules and not (best is not None and best.refused):
            head = question[:MAX_RULE_INPUT_CHARS]
            for klass, action, pattern in self._rules:
                if pattern.search(head):
                    best = _stricter(best, Verdict(klass, action))
        if len(question) <= MAX_CHECKED_CHARS:
            if len(self._memo) >= _MEMO_SIZE:
                del self._memo[next(iter(self._memo))]
            self._memo[question] = best
        return best


PII, USER, TIME = BUILT_IN_CLASSES


def _stricter(a: Verdict | None, b: Verdict) -> Verdict:
    return b if a is None or _STRICTNESS[b.action] > _STRICTNESS[a.action] else a


_compiled: dict[CacheabilityPolicy, CompiledPolicy] = {}
# By identity first: a tenant's config object is reused between queries, and hashing a policy (a frozen
# dataclass: every field, every call) cost more than the rest of a repeated question's check.
_by_id: dict[int, CompiledPolicy] = {}


def compiled(policy: CacheabilityPolicy) -> CompiledPolicy:
    """The compiled form of a (validated) policy, shared by every tenant with an equal one."""
    found = _by_id.get(id(policy))
    if found is not None and found.policy is policy:
        return found
    found = _compiled.get(policy)
    if found is None:
        if len(_compiled) >= 1024:
            _compiled.clear()
        found = _compiled[policy] = CompiledPolicy(policy)
    if len(_by_id) >= 4096:
        _by_id.clear()
    _by_id[id(policy)] = found
    return found


# -- tenant rules ---------------------------------------------------------------------------------
def compile_rule(rule: CacheabilityRule) -> re.Pattern[str]:
    """One regular expression for a rule's pattern and keywords, case-insensitive."""
    parts = [f"(?:{rule.pattern})"] if rule.pattern else []
    for word in rule.keywords:
        escaped = re.escape(word)
        # Words of Latin letters match whole words; Chinese (and other) keywords match anywhere.
        parts.append(rf"\b{escaped}\b" if word.isascii() and word[:1].isalnum() and word[-1:].isalnum() else escaped)
    return re.compile("|".join(parts), re.IGNORECASE)


def _check_shape(items: Any, in_repeat: bool, where: str) -> None:
    """No back-reference; nothing that repeats or alternates inside an unbounded repetition."""
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser as parser

    for op, av in items:
        if op in (c.GROUPREF, c.GROUPREF_EXISTS):
            raise InvalidArgument(f"{where}: back-references are not allowed")
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            low, high, sub = av
            unbounded = high == c.MAXREPEAT or high > 1000
            if in_repeat and (unbounded or high > 1):
                raise InvalidArgument(
                    f"{where}: a repetition inside an unbounded repetition can take exponential time; rewrite it"
                )
            _check_shape(sub, in_repeat or unbounded, where)
        elif op is c.BRANCH:
            if in_repeat:
                raise InvalidArgument(
                    f"{where}: an alternation inside an unbounded repetition can take exponential time; "
                    "use keywords or separate rules"
                )
            for sub in av[1]:
                _check_shape(sub, in_repeat, where)
        elif op is c.SUBPATTERN:
            _check_shape(av[-1], in_repeat, where)
        elif op in (c.ASSERT, c.ASSERT_NOT):
            _check_shape(av[1], in_repeat, where)
        elif op is c.ATOMIC_GROUP:
            _check_shape(av, in_repeat, where)
        elif isinstance(av, parser.SubPattern):
            _check_shape(av, in_repeat, where)


def check_rule(rule: CacheabilityRule, index: int) -> None:
    where = f"cacheability.rules[{index}]"
    if not isinstance(rule.name, str) or not RULE_NAME.match(rule.name):
        raise InvalidArgument(f"{where}.name must be 1-32 characters of a-z 0-9 _ -, starting with a letter or digit")
    where = f"cacheability rule {rule.name!r}"
    if not rule.pattern and not rule.keywords:
        raise InvalidArgument(f"{where} needs a pattern or keywords")
    if len(rule.pattern) > MAX_PATTERN_CHARS:
        raise InvalidArgument(f"{where}: pattern is longer than {MAX_PATTERN_CHARS} characters")
    if len(rule.keywords) > MAX_KEYWORDS:
        raise InvalidArgument(f"{where}: more than {MAX_KEYWORDS} keywords")
    for word in rule.keywords:
        if not word.strip() or len(word) > MAX_KEYWORD_CHARS:
            raise InvalidArgument(f"{where}: keywords must be 1-{MAX_KEYWORD_CHARS} characters and not blank")
    if "\x00" in rule.pattern or any("\x00" in w for w in rule.keywords):
        raise InvalidArgument(f"{where} contains a NUL character")
    if rule.pattern:
        from re import _parser as parser  # type: ignore[attr-defined]

        try:
            tree = parser.parse(rule.pattern, re.IGNORECASE)
        except re.error as exc:
            raise InvalidArgument(f"{where}: pattern is not a valid regular expression: {exc}") from None
        except RecursionError:
            raise InvalidArgument(f"{where}: pattern is nested too deeply") from None
        _check_shape(tree, False, where)
    pattern = compile_rule(rule)
    if pattern.search(""):
        raise InvalidArgument(f"{where} matches the empty text: it would flag every question")
    start = time.perf_counter()
    for probe in _PROBES:
        pattern.search(probe)
        if time.perf_counter() - start > PROBE_LIMIT_S:
            raise InvalidArgument(f"{where}: pattern is too slow on long inputs; simplify it")


def check_policy(policy: CacheabilityPolicy) -> CacheabilityPolicy:
    for name in BUILT_IN_CLASSES:
        if not isinstance(getattr(policy, name), CacheabilityAction):
            raise InvalidArgument(f"cacheability.{name} must be one of refuse, allow, short_ttl")
    if not 0 <= policy.short_ttl_seconds <= MAX_SHORT_TTL_S:
        raise InvalidArgument(
            f"cacheability.short_ttl_seconds must be 0..{MAX_SHORT_TTL_S} (0 = {DEFAULT_SHORT_TTL_S})"
        )
    if len(policy.rules) > MAX_RULES:
        raise InvalidArgument(f"cacheability: more than {MAX_RULES} rules")
    names = [r.name for r in policy.rules]
    if len(set(names)) != len(names):
        raise InvalidArgument("cacheability: two rules with the same name")
    for i, rule in enumerate(policy.rules):
        check_rule(rule, i)
    return policy


def metric_class(klass: str) -> str:
    """The metric label of a class: a tenant's rule names stay out of label values."""
    return "rule" if klass.startswith(RULE_PREFIX) else klass


def judge(tenant: Tenant, question: str, call: str, metrics: Metrics) -> Verdict | None:
    """The tenant's verdict on a question (Query and Insert alike), counted when flagged."""
    # Not timed per call (a histogram observation costs more than a repeated question's check);
    # `modelcache-svc policy-eval` measures it.
    verdict = compiled(tenant.config.cacheability).judge(question)
    if verdict is not None:
        metrics.flagged(tenant.name, call, metric_class(verdict.klass), verdict.action.value)
    return verdict
