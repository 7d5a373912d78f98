"""The cacheability policy from the command line.

``modelcache-svc policy-eval``: precision and recall of the built-in detectors
per class on a labelled file (JSON lines ``{"question", "class"}``, class one
of none, pii, user_specific, time_sensitive; the repository's set is
``tests/data/cacheability_en_zh.jsonl``), the cost of a check in microseconds,
and with ``--pairs`` how many questions of pair files (``{"a", "b"}``, the
eval format) the default policy flags.

And the ``tenant create/update`` flags that shape a tenant's policy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .. import errors
from ..cache.cacheability import RULE_NAME, compiled, policy_from_dict, policy_to_dict
from ..cache.detectors import BUILT_IN_CLASSES, detect
from ..records import CacheabilityPolicy

NONE = "none"
DEFAULT_LABELLED = Path(__file__).resolve().parents[2] / "tests" / "data" / "cacheability_en_zh.jsonl"


# -- policy-eval ------------------------------------------------------------------------------
def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "policy-eval",
        help="precision and recall of the cacheability detectors per class, their cost, and what they flag",
        description="Runs the built-in cacheability detectors (no server needed) on a labelled file and "
        "optionally counts what the default policy flags in pair files (--pairs).",
    )
    p.add_argument("--labelled", type=Path, default=None,
                   help=f"JSON lines {{\"question\", \"class\"}} (default {DEFAULT_LABELLED.name} of the repository)")
    p.add_argument("--pairs", type=Path, action="append", default=[],
                   help="a pair file ({\"a\", \"b\"} lines, repeatable): count the distinct questions flagged")
    p.add_argument("--list", action="store_true", help="list every misclassified or flagged question")
    p.add_argument("--json", action="store_true", help="print JSON")


def load_labelled(path: Path) -> list[tuple[str, str]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            question, klass = item["question"], item["class"]
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.InvalidArgument(f"{path}:{n}: expected {{\"question\", \"class\"}}: {exc}") from None
        if klass not in (NONE, *BUILT_IN_CLASSES):
            known = ", ".join((NONE, *BUILT_IN_CLASSES))
            raise errors.InvalidArgument(f"{path}:{n}: class {klass!r} is not one of {known}")
        rows.append((str(question), str(klass)))
    if not rows:
        raise errors.InvalidArgument(f"{path}: no rows")
    return rows


def predicted(question: str) -> str:
    """The deciding class under the default policy (all REFUSE: the first class found), or none."""
    found = detect(question)
    return found[0] if found else NONE


def score(rows: list[tuple[str, str]]) -> dict[str, Any]:
    got = [predicted(q) for q, _ in rows]
    classes: dict[str, Any] = {}
    for klass in BUILT_IN_CLASSES:
        tp = sum(1 for (_, want), g in zip(rows, got) if g == klass and want == klass)
        fp = sum(1 for (_, want), g in zip(rows, got) if g == klass and want != klass)
        fn = sum(1 for (_, want), g in zip(rows, got) if g != klass and want == klass)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        classes[klass] = {"support": tp + fn, "flagged": tp + fp, "precision": round(precision, 4),
                          "recall": round(recall, 4)}
    wrong = [{"question": q, "class": want, "predicted": g} for (q, want), g in zip(rows, got) if g != want]
    general = [g for (_, want), g in zip(rows, got) if want == NONE]
    return {
        "rows": len(rows),
        "by_label": dict(Counter(want for _, want in rows)),
        "classes": classes,
        "general_flagged": sum(1 for g in general if g != NONE),
        "accuracy": round(1 - len(wrong) / len(rows), 4),
        "misclassified": wrong,
    }


def timing(questions: list[str], rounds: int = 3) -> dict[str, float]:
    """Microseconds per question of a cold check (detect, no memo) and of a repeated one (the memo a
    query meets on an exact hit: the same chat asked again)."""
    cold = []
    for _ in range(rounds):
        for q in questions:
            start = time.perf_counter()
            detect(q)
            cold.append(time.perf_counter() - start)
    policy = compiled(CacheabilityPolicy())
    for q in questions:
        policy.judge(q)
    warm = []
    for q in questions:
        start = time.perf_counter()
        policy.judge(q)
        warm.append(time.perf_counter() - start)
    cold.sort()
    return {
        "cold_mean_us": round(statistics.fmean(cold) * 1e6, 1),
        "cold_p50_us": round(cold[len(cold) // 2] * 1e6, 1),
        "cold_p99_us": round(cold[int(len(cold) * 0.99)] * 1e6, 1),
        "repeated_p50_us": round(sorted(warm)[len(warm) // 2] * 1e6, 2),
    }


def flagged_in_pairs(path: Path) -> dict[str, Any]:
    questions: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            questions.setdefault(item["a"], None)
            questions.setdefault(item["b"], None)
    flagged = [(q, predicted(q)) for q in questions]
    flagged = [(q, k) for q, k in flagged if k != NONE]
    return {
        "file": str(path),
        "questions": len(questions),
        "flagged": len(flagged),
        "by_class": dict(Counter(k for _, k in flagged)),
        "flagged_questions": [{"question": q, "class": k} for q, k in flagged],
    }


def run(args: argparse.Namespace, environ: dict[str, str]) -> int:
    path = args.labelled or DEFAULT_LABELLED
    if not path.is_file():
        raise errors.InvalidArgument(f"{path}: no such file (give --labelled FILE)")
    rows = load_labelled(path)
    report: dict[str, Any] = {"labelled": str(path), **score(rows), "timing": timing([q for q, _ in rows])}
    report["pairs"] = [flagged_in_pairs(p) for p in args.pairs]
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return 0
    print(f"{path}: {report['rows']} questions {report['by_label']}")
    print(f"{'class':<16}{'support':>8}{'flagged':>8}{'precision':>10}{'recall':>8}")
    for klass, c in report["classes"].items():
        print(f"{klass:<16}{c['support']:>8}{c['flagged']:>8}{c['precision']:>10.3f}{c['recall']:>8.3f}")
    print(f"general questions flagged: {report['general_flagged']} of {report['by_label'].get(NONE, 0)}")
    t = report["timing"]
    print(f"cost per question: cold mean {t['cold_mean_us']} us, p50 {t['cold_p50_us']} us, p99 {t['cold_p99_us']} us;"
          f" repeated (memo) p50 {t['repeated_p50_us']} us")
    if args.list:
        for w in report["misclassified"]:
            print(f"  {w['class']} -> {w['predicted']}: {w['question']}")
    for p in report["pairs"]:
        print(f"{p['file']}: {p['flagged']} of {p['questions']} questions flagged {p['by_class']}")
        if args.list:
            for f in p["flagged_questions"]:
                print(f"  {f['class']}: {f['question'][:160]}")
    return 0


# -- tenant create/update flags ---------------------------------------------------------------
def add_policy_flags(p: argparse.ArgumentParser) -> None:
    classes = ", ".join(BUILT_IN_CLASSES)
    p.add_argument("--refuse", action="append", default=[], metavar="CLASS",
                   help=f"neither store nor serve questions of CLASS ({classes}; the default)")
    p.add_argument("--allow", action="append", default=[], metavar="CLASS", help="cache CLASS as any question")
    p.add_argument("--short-ttl", action="append", default=[], metavar="CLASS",
                   help="store CLASS with the short TTL only")
    p.add_argument("--short-ttl-seconds", type=int, default=None, help="the short TTL (default 300)")
    p.add_argument("--rule", action="append", default=[], metavar="NAME=REGEX",
                   help="a tenant rule: questions matching REGEX (case-insensitive) are rule:NAME")
    p.add_argument("--rule-keywords", action="append", default=[], metavar="NAME=WORD,WORD",
                   help="a tenant rule by keywords (whole words; Chinese anywhere)")
    p.add_argument("--rule-action", action="append", default=[], metavar="NAME=ACTION",
                   help="refuse (default), allow or short_ttl for rule NAME")
    p.add_argument("--drop-rule", action="append", default=[], metavar="NAME", help="remove rule NAME (update)")


def _split(value: str, flag: str) -> tuple[str, str]:
    name, sep, rest = value.partition("=")
    if not sep or not RULE_NAME.match(name):
        raise errors.InvalidArgument(f"{flag} {value[:60]!r}: expected NAME=... with NAME of a-z 0-9 _ -")
    return name, rest


def policy_flags_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) for name in (
        "refuse", "allow", "short_ttl", "rule", "rule_keywords", "rule_action", "drop_rule")
    ) or getattr(args, "short_ttl_seconds", None) is not None


def policy_from_flags(args: argparse.Namespace, current: dict[str, Any] | None) -> dict[str, Any]:
    """The policy (JSON form) after the flags: on update, changes to the tenant's current policy."""
    policy = dict(current or policy_to_dict(CacheabilityPolicy()))
    rules = {r["name"]: dict(r) for r in policy.get("rules", [])}
    for action, names in (("refuse", args.refuse), ("allow", args.allow), ("short_ttl", args.short_ttl)):
        for klass in names:
            if klass not in BUILT_IN_CLASSES:
                known = ", ".join(BUILT_IN_CLASSES)
                raise errors.InvalidArgument(f"--{action.replace('_', '-')} {klass!r}: one of {known}")
            policy[klass] = action
    if args.short_ttl_seconds is not None:
        policy["short_ttl_seconds"] = args.short_ttl_seconds
    for name in args.drop_rule:
        if rules.pop(name, None) is None:
            raise errors.InvalidArgument(f"--drop-rule {name!r}: no such rule")
    for value in args.rule:
        name, pattern = _split(value, "--rule")
        rules.setdefault(name, {"name": name, "keywords": [], "action": "refuse"})["pattern"] = pattern
    for value in args.rule_keywords:
        name, words = _split(value, "--rule-keywords")
        rule = rules.setdefault(name, {"name": name, "pattern": "", "action": "refuse"})
        rule["keywords"] = [w.strip() for w in words.split(",") if w.strip()]
    for value in args.rule_action:
        name, action = _split(value, "--rule-action")
        if name not in rules:
            raise errors.InvalidArgument(f"--rule-action {name!r}: no such rule")
        rules[name]["action"] = action
    policy["rules"] = list(rules.values())
    policy_from_dict(policy)  # shape and action names checked here; the server checks the rules
    return policy


def policy_summary(policy: dict[str, Any]) -> str:
    if not policy:
        return ""
    parts = [f"{k}={policy.get(k, 'refuse')}" for k in BUILT_IN_CLASSES]
    parts += [f"rule:{r['name']}={r.get('action', 'refuse')}" for r in policy.get("rules", [])]
    return " ".join(parts)
