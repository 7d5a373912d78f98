"""``modelcache-svc eval --online``: a pair file replayed as traffic, with feedback and verification.

Every ``a`` of the file is cached (answer class: its row), then the distinct ``b`` chats are asked
with Zipf popularity (exponent ``--zipf``, about ``--queries-per-row`` x rows queries, random order,
fixed ``--seed``). A ``b``'s true answer is its ``a``'s on a label-1 row, an answer of its own
otherwise; a hit is *right* when the served entry's answer is that one, else *wrong* (the label
stands in for "the model's new answer agrees").

The product is simulated as a real one behaves:
- on a plain miss it calls its model and writes the answer back (``--no-writeback``: it does not),
  so the chat is an exact hit afterwards;
- on a miss that carries ``verify_entry_id`` it writes back with ``verifies=`` (always: that is the
  protocol), and the service compares the answers;
- a wrong hit is reported WRONG by a "user" with probability ``--report-rate``; the product then
  regenerates and writes the new answer back (unless ``--no-writeback``).

Runs on the same stream, each in a scope of its own: ``static`` (the tenant threshold, no
learning), ``feedback`` (same threshold, feedback and verification at ``--verify-rate``),
``learned`` (that plus ``max_error_rate`` = ``--max-error-rate``), and a sweep of static thresholds
(``--static-sweep``) to find the best static one whose error is as low as the learned run's.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import errors
from .evaluation import INSERT_BATCH, ChatMessages, Pair, chat, load_pairs, service_for

TENTHS = 10


@dataclass
class Stream:
    """The traffic: distinct b chats, their true answer classes, and the order they are asked in."""

    a_chats: list[tuple[ChatMessages, str]]  # distinct a chats; class of a_chats[k] is "a{k}"
    b_chats: list[tuple[ChatMessages, str]]
    b_true: list[frozenset[str]]  # answer classes right for each b
    order: list[int]  # indexes into b_chats


def build_stream(pairs: Sequence[Pair], queries_per_row: float, zipf: float, seed: int) -> Stream:
    a_index: dict[tuple[ChatMessages, str], int] = {}
    b_index: dict[tuple[ChatMessages, str], int] = {}
    true: list[set[str]] = []
    for p in pairs:
        a = a_index.setdefault((p.a_context, p.a), len(a_index))
        b = b_index.setdefault((p.b_context, p.b), len(b_index))
        if b == len(true):
            true.append(set())
        if p.label == 1:
            true[b].add(f"a{a}")
    b_true = [frozenset(t) if t else frozenset({f"b{i}"}) for i, t in enumerate(true)]
    rng = np.random.default_rng(seed)
    n = len(b_index)
    ranks = rng.permutation(n) + 1  # which b is how popular: random
    weights = ranks.astype(float) ** -zipf
    order = rng.choice(n, size=int(round(queries_per_row * len(pairs))), p=weights / weights.sum())
    return Stream(list(a_index), list(b_index), b_true, [int(i) for i in order])


def product_answer(stream: Stream, b: int) -> str:
    """What the product's model answers for b: the class of its true answer (one name, fixed)."""
    return "answer " + min(stream.b_true[b])


@dataclass
class Tally:
    right: int = 0
    wrong: int = 0
    miss: int = 0
    verify_misses: int = 0
    reports: int = 0
    exact_right: int = 0

    @property
    def error(self) -> float:
        served = self.right + self.wrong
        return self.wrong / served if served else 0.0


@dataclass
class RunResult:
    name: str
    threshold: float | None
    config: dict[str, Any]
    total: Tally = field(default_factory=Tally)
    tenths: list[Tally] = field(default_factory=lambda: [Tally() for _ in range(TENTHS)])
    second_half: Tally = field(default_factory=Tally)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        def tally(t: Tally) -> dict[str, Any]:
            return {**asdict(t), "error": round(t.error, 4)}

        return {"name": self.name, "threshold": self.threshold, "config": self.config, "total": tally(self.total),
                "second_half": tally(self.second_half), "tenths": [tally(t) for t in self.tenths],
                "seconds": round(self.seconds, 1)}


def replay(client: Any, tenant: str, stream: Stream, *, name: str, threshold: float | None, learn: bool,
           report_rate: float, writeback: bool, seed: int, config: dict[str, Any],
           progress: Callable[[int], None] = lambda _: None) -> RunResult:
    """One run over the stream in a scope of its own (dropped afterwards)."""
    from ..client import Entry

    model = "online-" + uuid.uuid4().hex[:10]
    result = RunResult(name, threshold, config)
    started = time.monotonic()
    rng = random.Random(seed)  # the users' reports: the same draws in every run
    classes: dict[str, str] = {}
    try:
        for start in range(0, len(stream.a_chats), INSERT_BATCH):
            batch = stream.a_chats[start:start + INSERT_BATCH]
            entries = [Entry(chat(ctx, a), f"answer a{start + k}") for k, (ctx, a) in enumerate(batch)]
            for k, entry_id in enumerate(client.insert_many(tenant, model, entries, timeout=300)):
                classes[entry_id] = f"a{start + k}"

        def write(b: int, verifies: str = "") -> None:
            ctx, question = stream.b_chats[b]
            answer = product_answer(stream, b)
            entry_id = client.insert(tenant, model, chat(ctx, question), answer, verifies=verifies, timeout=60)
            classes[entry_id] = answer.removeprefix("answer ")

        n = len(stream.order)
        for i, b in enumerate(stream.order):
            ctx, question = stream.b_chats[b]
            hit = client.query(tenant, model, chat(ctx, question), similarity_threshold=threshold, timeout=60)
            tallies = [result.total, result.tenths[min(TENTHS - 1, i * TENTHS // n)]]
            if i >= n // 2:
                tallies.append(result.second_half)
            if hit.hit:
                right = classes.get(hit.id, "?") in stream.b_true[b]
                for t in tallies:
                    t.right += right
                    t.wrong += not right
                    t.exact_right += right and hit.match == "exact"
                if not right and learn and rng.random() < report_rate:
                    client.feedback(tenant, model, hit.id, chat(ctx, question), "wrong", timeout=60)
                    for t in tallies:
                        t.reports += 1
                    if writeback:  # the product regenerates for the user and writes the new answer back
                        write(b)
            else:
                for t in tallies:
                    t.miss += 1
                    t.verify_misses += bool(hit.verify_entry_id)
                if hit.verify_entry_id:
                    write(b, verifies=hit.verify_entry_id)
                elif writeback:
                    write(b)
            progress(1)
    finally:
        try:
            client.clear(tenant, model)
        except errors.CacheError:
            pass
    result.seconds = time.monotonic() - started
    return result


# -- the command ------------------------------------------------------------------------------
def add_flags(p: argparse.ArgumentParser) -> None:
    """The eval verb's --online flags (the rest of eval's flags keep their meaning: --dataset, --limit,
    --target, --api-key, --json)."""
    g = p.add_argument_group("online replay (--online)")
    g.add_argument("--online", action="store_true", help="replay the pairs as traffic with feedback and "
                   "verification, beside the static threshold (modelcache_svc/tools/online_eval.py)")
    g.add_argument("--rows", type=int, default=None, help="online: the first N rows of each file (as --limit)")
    g.add_argument("--queries-per-row", type=float, default=10.0, help="online: stream length / rows (default 10)")
    g.add_argument("--zipf", type=float, default=1.1, help="online: Zipf exponent of b popularity (default 1.1)")
    g.add_argument("--seed", type=int, default=15, help="online: seed of the stream and the reports")
    g.add_argument("--report-rate", type=float, default=0.5, help="online: share of wrong hits users report")
    g.add_argument("--verify-rate", type=float, default=0.2, help="online: the learning tenants' verify_rate")
    g.add_argument("--max-error-rate", type=float, default=0.05, help="online: max_error_rate of the learned run")
    g.add_argument("--no-writeback", action="store_true", help="online: the product does not write back plain "
                   "misses (verification write-backs still happen)")
    g.add_argument("--static-sweep", default="0.84,0.88,0.91,0.94,0.97",
                   help="online: static thresholds replayed to find the best one as accurate as the learned run")
    g.add_argument("--threshold", type=float, default=None,
                   help="online: the tenant threshold of every run (default: the server's)")


def run(args: argparse.Namespace, environ: dict[str, str], *, embedder: Any = None) -> int:
    """eval --online. ``embedder`` (tests): a loaded default model for the in-process server."""

    for name in ("report_rate", "verify_rate"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise errors.InvalidArgument(f"--{name.replace('_', '-')} must be in [0, 1]")
    if not 0.0 < args.max_error_rate < 1.0 or args.queries_per_row <= 0 or args.zipf <= 0:
        raise errors.InvalidArgument("--max-error-rate must be in (0, 1); --queries-per-row and --zipf positive")
    try:
        sweep = [float(x) for x in args.static_sweep.split(",") if x.strip()]
    except ValueError as exc:
        raise errors.InvalidArgument("--static-sweep: comma-separated thresholds, e.g. 0.80,0.90") from exc
    rows = args.rows or args.limit
    datasets = [(path, load_pairs(path, rows)) for path in args.dataset]
    quiet = args.json or not sys.stderr.isatty()
    print("starting a service in this process ..." if not args.target else f"replaying against {args.target}",
          file=sys.stderr)
    with service_for(args, environ, embedder, "modelcache-online-") as (client, server):
        default = server.settings.similarity_threshold if server else None
        reports = [evaluate_online(client, path, pairs, args, sweep, default, quiet) for path, pairs in datasets]
    if args.json:
        print(json.dumps(reports, ensure_ascii=False, indent=1))
    else:
        print("\n\n".join(text_report(r) for r in reports))
    return 0


def evaluate_online(client: Any, path: Path, pairs: Sequence[Pair], args: argparse.Namespace, sweep: Sequence[float],
                    default: float | None, quiet: bool) -> dict[str, Any]:
    stream = build_stream(pairs, args.queries_per_row, args.zipf, args.seed)
    threshold = args.threshold if args.threshold is not None else default
    writeback = not args.no_writeback
    tag = uuid.uuid4().hex[:8]
    plans: list[tuple[str, float | None, dict[str, Any]]] = [
        ("static", threshold, {}),
        ("feedback", threshold, {"verify_rate": args.verify_rate}),
        ("learned", threshold, {"verify_rate": args.verify_rate, "max_error_rate": args.max_error_rate}),
        *[(f"static@{t:.2f}", t, {}) for t in sweep],
    ]
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(plans) * len(stream.order), desc=path.name, unit="q", file=sys.stderr)
    results: list[RunResult] = []
    try:
        for name, t, config in plans:
            tenant = f"online-{tag}-{len(results)}"
            settings = {"similarity_threshold": t, **config}
            client.create_tenant(tenant, **{k: v for k, v in settings.items() if v is not None})
            try:
                if bar is not None:
                    bar.set_postfix_str(name)
                results.append(replay(client, tenant, stream, name=name, threshold=None, learn=bool(config),
                                      report_rate=args.report_rate, writeback=writeback, seed=args.seed,
                                      config=settings, progress=bar.update if bar is not None else lambda _: None))
            finally:
                client.delete_tenant(tenant)
    finally:
        if bar is not None:
            bar.close()
    return summarise(path, pairs, stream, args, results, writeback)


def summarise(path: Path, pairs: Sequence[Pair], stream: Stream, args: argparse.Namespace,
              results: Sequence[RunResult], writeback: bool) -> dict[str, Any]:
    by_name = {r.name: r for r in results}
    static, fb, learned = by_name["static"], by_name["feedback"], by_name["learned"]
    sweep = [r for r in results if r.name.startswith("static")]

    def best_static(error: float, second_half: bool) -> RunResult | None:
        ok = [r for r in sweep if (r.second_half if second_half else r.total).error <= error]
        return max(ok, key=lambda r: r.total.right) if ok else None

    best = best_static(learned.total.error, False)
    targets = {
        "feedback_wrong_vs_static": _ratio(fb.total.wrong, static.total.wrong),
        "feedback_right_vs_static": _ratio(fb.total.right, static.total.right),
        "learned_error_second_half": round(learned.second_half.error, 4),
        "best_static_as_accurate": None if best is None else best.name,
        "learned_right_vs_best_static": None if best is None else _ratio(learned.total.right, best.total.right),
    }
    return {
        "dataset": str(path), "rows": len(pairs), "distinct_a": len(stream.a_chats), "distinct_b": len(stream.b_chats),
        "queries": len(stream.order), "distinct_b_asked": len(set(stream.order)), "zipf": args.zipf,
        "seed": args.seed, "report_rate": args.report_rate, "verify_rate": args.verify_rate,
        "max_error_rate": args.max_error_rate, "writeback_on_miss": writeback,
        "targets": targets, "runs": [r.as_dict() for r in results],
    }


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 3) if b else None


def text_report(r: dict[str, Any]) -> str:
    lines = [f"{r['dataset']}: {r['rows']} rows, {r['queries']} queries over {r['distinct_b_asked']} distinct "
             f"questions (Zipf {r['zipf']}, seed {r['seed']}); reports {r['report_rate']}, verify "
             f"{r['verify_rate']}, max_error_rate {r['max_error_rate']}, write-back on miss {r['writeback_on_miss']}",
             f"{'run':<14} {'right':>7} {'wrong':>6} {'miss':>6} {'verify':>6} {'reports':>7} {'error':>7} "
             f"{'err 2nd half':>12}"]
    for run in r["runs"]:
        t, h = run["total"], run["second_half"]
        lines.append(f"{run['name']:<14} {t['right']:>7} {t['wrong']:>6} {t['miss']:>6} {t['verify_misses']:>6} "
                     f"{t['reports']:>7} {t['error']:>7.4f} {h['error']:>12.4f}")
    for run in r["runs"][:3]:
        tenths = " ".join(f"{t['right']}/{t['wrong']}/{t['miss']}" for t in run["tenths"])
        lines.append(f"per tenth, {run['name']} (right/wrong/miss): {tenths}")
    lines.append("targets: " + json.dumps(r["targets"]))
    return "\n".join(lines)
