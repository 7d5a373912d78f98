"""modelcache-svc eval: hit quality of the real service on labelled question pairs.

A file of JSON lines ``{"a", "b", "label"}`` (label 1: the answer to ``a`` may
be served for ``b``), optionally with chat history before either side
(``"context"`` for both, or ``"a_context"`` / ``"b_context"``: lists of
``{"role", "content"}``). Every ``a`` is cached (answer: its row), every ``b``
is asked, all through gRPC against a real service: one started in this
process on a temporary data dir, or a running one (``--target``).

Outcome of a row: a *right hit* returns the entry cached for its own ``a`` on
a label-1 row; a *wrong hit* returns any other entry, or anything on a label-0
row; otherwise a *miss*. Rows whose ``a`` texts are the same chat share one
entry (the cache keys on the normalised chat, so two answers to one question
cannot coexist): a hit on that entry is right for each of those rows. Entries
are told apart by the ids Insert returns, never by comparing texts here.

Two protocols (``--mode``). ``cache`` (default; GPTCache's benchmark): one
shared cache holds every ``a`` and each ``b`` may hit any of them, as in
production. ``pairs``: each row alone — its ``a`` and ``b`` get a system
message of their own, so the context hash confines ``b`` to its own ``a``;
this measures the hit decision itself, the protocol of published pairwise
figures (QQP, LCQMC F1), without the noise of hits on other rows that the
file never labelled.

Method. Of the candidates that clear the threshold t and the precision guard,
the service serves the best by its rank (cosine + a weight x word overlap;
the cosine alone when the weight is 0). A query at a threshold t returns that
candidate c1 with its cosine s1; at every higher threshold up to s1 the
eligible set shrinks but still holds c1, so c1 is still served. Above s1 the
next query, at the smallest swept threshold above s1, returns c2 with a higher
cosine s2, and so on until a miss. This chain of servings, one or two queries
per ``b``, gives the whole sweep exactly. The reported numbers at the
configured (and the calibrated) threshold come from a further, real pass at
that threshold, and any row where it disagrees with the sweep is counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import errors

ChatMessages = tuple[tuple[str, str], ...]
INSERT_BATCH = 128
QUERY_THREADS = 8


@dataclass(frozen=True, slots=True)
class Pair:
    a: str
    b: str
    label: int
    a_context: ChatMessages = ()
    b_context: ChatMessages = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the service answered for one ``b``: an entry id ("" = miss) and its similarity."""

    entry_id: str
    similarity: float


@dataclass(frozen=True, slots=True)
class Point:
    threshold: float
    right: int
    wrong: int
    miss: int
    precision: float
    recall: float
    f1: float


# -- data ------------------------------------------------------------------------------
def _context(value: object, where: str) -> ChatMessages:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise errors.InvalidArgument(f"{where}: a context is a list of {{role, content}}")
    out: list[tuple[str, str]] = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise errors.InvalidArgument(f"{where}: a context message needs string role and content")
        out.append((m["role"], m["content"]))
    return tuple(out)


def load_pairs(path: Path, limit: int | None = None) -> list[Pair]:
    pairs: list[Pair] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot read {path}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise errors.InvalidArgument(f"{where}: not JSON: {exc}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("a"), str) or not isinstance(row.get("b"), str):
            raise errors.InvalidArgument(f'{where}: each line needs string "a" and "b"')
        if row.get("label") not in (0, 1):
            raise errors.InvalidArgument(f'{where}: "label" must be 0 or 1')
        shared = row.get("context")
        pairs.append(
            Pair(
                row["a"],
                row["b"],
                int(row["label"]),
                _context(row.get("a_context", shared), where),
                _context(row.get("b_context", shared), where),
            )
        )
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise errors.InvalidArgument(f"{path}: no pairs")
    return pairs


def isolate(pairs: Sequence[Pair]) -> list[Pair]:
    """Pairs mode: a system message per row makes each row its own context (no cross-row hits)."""
    out = []
    for i, p in enumerate(pairs):
        own = (("system", f"modelcache eval: pair {i}"),)
        out.append(Pair(p.a, p.b, p.label, own + p.a_context, own + p.b_context))
    return out


def chat(context: ChatMessages, question: str) -> list[tuple[str, str]]:
    return [*context, ("user", question)]


# -- scoring ---------------------------------------------------------------------------
MISS = Outcome("", 0.0)
Chain = tuple[Outcome, ...]  # what one b got at rising thresholds: cosines strictly rising, a miss ends it


def served_at(chain: Chain, threshold: float) -> Outcome:
    """What the service answers at ``threshold``: the first serving of the chain whose cosine reaches it."""
    for got in chain:
        if got.entry_id and got.similarity >= threshold:
            return got
    return MISS


def score(pairs: Sequence[Pair], own: Sequence[str], chains: Sequence[Chain], threshold: float) -> Point:
    """Right/wrong/miss if the service had answered these chains at ``threshold``."""
    outcomes = [served_at(chain, threshold) for chain in chains]
    right = wrong = miss = 0
    for pair, entry_id, got in zip(pairs, own, outcomes, strict=True):
        if not got.entry_id or got.similarity < threshold:
            miss += 1
        elif pair.label == 1 and got.entry_id == entry_id:
            right += 1
        else:
            wrong += 1
    positives = sum(p.label for p in pairs)
    # No hit at all has no precision to speak of; 0 keeps calibration from choosing it.
    precision = right / (right + wrong) if right + wrong else 0.0
    recall = right / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Point(round(threshold, 4), right, wrong, miss, precision, recall, f1)


def grid(spec: str) -> list[float]:
    """``low:high:step`` -> thresholds, rounded so 0.80 is 0.80."""
    try:
        low, high, step = (float(x) for x in spec.split(":"))
    except ValueError as exc:
        raise errors.InvalidArgument(f"--sweep {spec!r}: expected low:high:step, e.g. 0.50:0.99:0.01") from exc
    if not (0 < low <= high <= 1 and step > 0):
        raise errors.InvalidArgument("--sweep: need 0 < low <= high <= 1 and step > 0")
    count = int(round((high - low) / step)) + 1
    return [round(low + i * step, 6) for i in range(count) if low + i * step <= high + 1e-9]


def calibrate(points: Sequence[Point], target_precision: float) -> Point | None:
    """The lowest swept threshold whose precision reaches the target (the most hits that do)."""
    for point in sorted(points, key=lambda p: p.threshold):
        if point.right + point.wrong and point.precision >= target_precision:
            return point
    return None


def best_f1(points: Sequence[Point]) -> Point:
    return max(points, key=lambda p: (p.f1, -p.threshold))


# -- talking to the service ----------------------------------------------------------------
def insert_all(client: Any, tenant: str, model: str, pairs: Sequence[Pair]) -> list[str]:
    """Cache every distinct ``a`` chat once; the entry id of each row's own ``a``."""
    from ..client import Entry

    first_row: dict[tuple[ChatMessages, str], int] = {}
    for i, p in enumerate(pairs):
        first_row.setdefault((p.a_context, p.a), i)
    keys = list(first_row)
    ids: dict[tuple[ChatMessages, str], str] = {}
    for start in range(0, len(keys), INSERT_BATCH):
        batch = keys[start:start + INSERT_BATCH]
        entries = [Entry(chat(ctx, a), f"answer of row {first_row[(ctx, a)]}") for ctx, a in batch]
        for key, entry_id in zip(batch, client.insert_many(tenant, model, entries, timeout=300), strict=True):
            ids[key] = entry_id
    return [ids[(p.a_context, p.a)] for p in pairs]


def query_all(client: Any, tenant: str, model: str, pairs: Sequence[Pair], threshold: float | None,
              top_k: int) -> list[Outcome]:
    """Ask every ``b``, concurrently (the service batches concurrent embeddings)."""

    def ask(p: Pair) -> Outcome:
        hit = client.query(tenant, model, chat(p.b_context, p.b), similarity_threshold=threshold, top_k=top_k,
                           timeout=60)
        return Outcome(hit.id, float(hit.similarity)) if hit.hit else Outcome("", 0.0)

    with ThreadPoolExecutor(QUERY_THREADS) as pool:
        return list(pool.map(ask, pairs))


def sweep_all(client: Any, tenant: str, model: str, pairs: Sequence[Pair], sweep: Sequence[float],
              top_k: int) -> list[Chain]:
    """Every b's chain of servings over the sweep: a query at the lowest threshold, then, for each b still
    served below the highest, one at the smallest swept threshold above its last cosine (module doc)."""
    asked = [min(sweep)] * len(pairs)  # the threshold each b was last asked at
    chains: list[Chain] = [(got,) for got in query_all(client, tenant, model, pairs, asked[0], top_k)]
    while True:
        todo = {}
        for i, chain in enumerate(chains):
            last = chain[-1]
            # Strictly above the last threshold asked too: a server that answered below it cannot loop us.
            above = [t for t in sweep if t > last.similarity and t > asked[i]]
            if last.entry_id and above:
                todo[i] = asked[i] = min(above)
        if not todo:
            return chains
        for threshold in sorted(set(todo.values())):
            rows = [i for i, t in todo.items() if t == threshold]
            for i, got in zip(rows, query_all(client, tenant, model, [pairs[i] for i in rows], threshold, top_k),
                              strict=True):
                chains[i] = (*chains[i], got)


def real_point(pairs: Sequence[Pair], own: Sequence[str], real: Sequence[Outcome], swept: Sequence[Chain],
               threshold: float | None) -> dict[str, Any]:
    """Numbers of a real pass (every hit counts: the service already applied its threshold)."""
    point = asdict(score(pairs, own, [(got,) for got in real], 0.0))
    point["threshold"] = threshold
    if threshold is not None:
        predicted = [served_at(chain, threshold).entry_id for chain in swept]
        point["sweep_disagrees"] = sum(p != r.entry_id for p, r in zip(predicted, real, strict=True))
    return point


def evaluate(client: Any, pairs: Sequence[Pair], *, tenant: str, configured: float | None, sweep: Sequence[float],
             top_k: int = 0, target_precision: float | None = None, verify: bool = True,
             progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Insert, sweep, and measure at the configured and calibrated thresholds, in a scope of its own."""
    model = "eval-" + uuid.uuid4().hex[:12]
    started = time.monotonic()
    try:
        own = insert_all(client, tenant, model, pairs)
        inserted = time.monotonic()
        progress(f"cached {len(set(own))} entries in {inserted - started:.0f} s; asking {len(pairs)} questions")
        swept = sweep_all(client, tenant, model, pairs, sweep, top_k)
        points = [score(pairs, own, swept, t) for t in sweep]
        report: dict[str, Any] = {
            "rows": len(pairs),
            "positives": sum(p.label for p in pairs),
            "entries": len(set(own) - {""}),
            "rows_sharing_an_entry": len(pairs) - len(set(own)),
            # Rows whose a the tenant's cacheability policy refused (id ""): every b of them is a miss.
            "a_refused_by_policy": own.count(""),
            "tenant": tenant,
            "top_k": top_k or "server default",
            "sweep_queries": sum(map(len, swept)),
            "sweep": [asdict(p) for p in points],
            "best_f1": asdict(best_f1(points)),
            "wrong_hits_labelled_duplicate_elsewhere": _known_duplicates(pairs, own, swept, configured),
        }
        if verify:
            progress("asking again at the configured threshold")
            real = query_all(client, tenant, model, pairs, None, top_k)
            report["configured"] = real_point(pairs, own, real, swept, configured)
            report["configured"]["source"] = "real queries at the configured threshold"
        elif configured is not None:
            report["configured"] = {**asdict(score(pairs, own, swept, configured)), "source": "sweep"}
        if target_precision is not None:
            chosen = calibrate(points, target_precision)
            report["calibrated"] = None if chosen is None else asdict(chosen)
            if chosen is not None:
                report["calibrated"]["target_precision"] = target_precision
                if verify:
                    real = query_all(client, tenant, model, pairs, chosen.threshold, top_k)
                    report["calibrated"] = {
                        **real_point(pairs, own, real, swept, chosen.threshold),
                        "target_precision": target_precision,
                        "source": "real queries at the calibrated threshold",
                    }
        report["seconds"] = {"insert": round(inserted - started, 1), "total": round(time.monotonic() - started, 1)}
        return report
    finally:
        try:
            client.clear(tenant, model)
        except errors.CacheError:
            pass


def _known_duplicates(pairs: Sequence[Pair], own: Sequence[str], swept: Sequence[Chain],
                      threshold: float | None) -> int | None:
    """Wrong hits (at the configured threshold) on an entry the file itself pairs with that ``b`` as label 1
    in another row: strict scoring counts them wrong, a reader may not."""
    if threshold is None:
        return None
    duplicates = {(own[i], (p.b_context, p.b)) for i, p in enumerate(pairs) if p.label == 1}
    count = 0
    for i, (p, chain) in enumerate(zip(pairs, swept, strict=True)):
        got = served_at(chain, threshold)
        if got.entry_id and not (p.label == 1 and got.entry_id == own[i]):
            count += (got.entry_id, (p.b_context, p.b)) in duplicates
    return count


# -- a service in this process -------------------------------------------------------------
class InProcessServer:
    """The whole service (gRPC, core, embedded stores) on a temporary data dir, on its own loop thread."""

    def __init__(self, data_dir: Path, environ: dict[str, str], *, guard: bool, embedder: Any = None,
                 verifier: bool = True) -> None:
        import asyncio
        import threading

        from ..app import Service, build_core
        from ..config import Settings

        # The caller's MODELCACHE_* settings (threshold, model, backend) are what is evaluated;
        # the stores are always this temporary dir's, never a shared database.
        overrides: dict[str, Any] = dict(
            data_dir=data_dir, vector_uri="", scalar_uri="", namespace="", admin_key="", host="127.0.0.1",
            grpc_port=0, http_port=0, resp_port=0, precision_guard=guard, default_tenant="default",
            query_log_sample_rate=0.0,
        )
        if not verifier:
            overrides.update(verifier="off", verifier_cjk="off", verifier_multilingual="off")
        self.settings = Settings.load(overrides, environ)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="eval-server", daemon=True)
        self._thread.start()
        self._service = Service(self.settings, build_core(self.settings, embedder))
        self._call(self._service.start())
        self.target = f"127.0.0.1:{self._service.grpc_port}"

    def _call(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(300)

    def stop(self) -> None:
        try:
            self._call(self._service.stop(0.5))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


# -- the command ---------------------------------------------------------------------------
def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="hit quality on labelled question pairs: right/wrong hits, precision, recall, F1 over thresholds",
        description="Cache every a, ask every b, through a real service (in this process on a temporary "
        "data dir, or --target). Files: JSON lines {\"a\", \"b\", \"label\"} with optional "
        "\"context\" / \"a_context\" / \"b_context\" chat history.",
    )
    p.add_argument("--dataset", action="append", required=True, type=Path, help="a .jsonl file (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows of each file")
    p.add_argument("--mode", choices=["cache", "pairs"], default="cache",
                   help="cache: one shared cache, every b may hit any a (default); pairs: each b sees only its own a")
    p.add_argument("--target", default=None, help="evaluate a running server (default: start one in this process)")
    p.add_argument("--api-key", default=None, help="admin key of --target (default $MODELCACHE_API_KEY)")
    p.add_argument("--tenant", default=None, help="tenant whose threshold and model are evaluated (default: default)")
    p.add_argument("--embedding-model", default=None,
                   help="evaluate this model (e.g. use:multilingual-v3) in a temporary tenant configured with it "
                   "(instead of --tenant)")
    p.add_argument("--no-guard", action="store_true", help="in-process only: the plain embedding, no precision guard")
    p.add_argument("--no-verifier", action="store_true",
                   help="in-process only: no verifier (the cosine and the guard decide alone)")
    p.add_argument("--sweep", default="0.50:0.99:0.01", help="thresholds low:high:step (default 0.50:0.99:0.01)")
    p.add_argument("--top-k", type=int, default=0, help="candidates per query (default: the server's)")
    p.add_argument("--target-precision", type=float, default=None, help="calibrate: lowest threshold reaching it")
    p.add_argument("--write-tenant", default=None, help="with --target-precision and --target: store the calibrated "
                   "threshold in this tenant's config (TenantService.UpdateTenant)")
    p.add_argument("--no-verify", action="store_true", help="skip the real passes; take every number from the sweep")
    p.add_argument("--json", action="store_true", help="print JSON (a list, one report per file)")


def run(args: argparse.Namespace, environ: dict[str, str], *, embedder: Any = None) -> int:
    """The eval verb. ``embedder`` (tests): a loaded default model for the in-process server."""


    if args.write_tenant and (args.target_precision is None or not args.target):
        raise errors.InvalidArgument("--write-tenant needs --target-precision and --target (a server to write to)")
    if args.target_precision is not None and not 0 < args.target_precision <= 1:
        raise errors.InvalidArgument("--target-precision must be in (0, 1]")
    if args.limit is not None and args.limit < 1:
        raise errors.InvalidArgument("--limit must be at least 1")
    if args.no_verifier and args.target:
        raise errors.InvalidArgument("--no-verifier applies to the in-process server; a --target has its own setting")
    if args.no_guard and args.target:
        raise errors.InvalidArgument("--no-guard applies to the in-process server; a --target has its own setting")
    sweep = grid(args.sweep)
    datasets = [(path, load_pairs(path, args.limit)) for path in args.dataset]
    if args.mode == "pairs":
        datasets = [(path, isolate(pairs)) for path, pairs in datasets]
    print("starting a service in this process ..." if not args.target else f"evaluating {args.target}",
          file=sys.stderr)
    with service_for(args, environ, embedder, "modelcache-eval-") as (client, server):
        reports = _run_all(client, args, datasets, sweep, server)
    if args.json:
        print(json.dumps(reports, ensure_ascii=False, indent=1))
    else:
        print("\n\n".join(_text(r) for r in reports))
    return 0


@contextmanager
def service_for(args: argparse.Namespace, environ: dict[str, str], embedder: Any,
                prefix: str) -> Iterator[tuple[Any, InProcessServer | None]]:
    """A client of ``--target``, or of a service started in this process on a temporary data dir (stopped
    afterwards): what both `eval` and `eval --online` measure."""
    import tempfile

    from ..client import CacheClient

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        server = None if args.target else InProcessServer(
            Path(tmp), environ, guard=not args.no_guard, embedder=embedder,
            verifier=not getattr(args, "no_verifier", False))
        target = args.target or (server.target if server else "")
        api_key = args.api_key or environ.get("MODELCACHE_API_KEY") or None
        try:
            with CacheClient(target, api_key=api_key, timeout=60) as client:
                yield client, server
        finally:
            if server is not None:
                server.stop()


def _run_all(client: Any, args: argparse.Namespace, datasets: Sequence[tuple[Path, list[Pair]]], sweep: list[float],
             server: InProcessServer | None) -> list[dict[str, Any]]:
    tenant = args.tenant or "default"
    temporary = None
    if args.embedding_model:
        temporary = "eval-" + uuid.uuid4().hex[:10]
        client.create_tenant(temporary, embedding_model=args.embedding_model)
        tenant = temporary
    try:
        info = client.get_tenant(tenant)
        configured = info.similarity_threshold
        if configured is None and server is not None:
            configured = server.settings.similarity_threshold
        model = info.embedding_model or (server.settings.embedding_model if server else "server default")
        reports = []
        for path, pairs in datasets:
            def progress(message: str, name: str = path.name) -> None:
                print(f"{name}: {message}", file=sys.stderr, flush=True)

            report = evaluate(client, pairs, tenant=tenant, configured=configured, sweep=sweep, top_k=args.top_k,
                              target_precision=args.target_precision, verify=not args.no_verify, progress=progress)
            guard: bool | str = server.settings.precision_guard if server else "the server's setting"
            cjk = (server.settings.cjk_model or "off" if server else "the server's setting") if not temporary else ""
            reports.append({"dataset": str(path), "mode": args.mode, "target": args.target or "in-process",
                            "embedding_model": model, "embedding_model_cjk": cjk,
                            "guard": guard, "verifier": _verifier_of(server), "configured_threshold": configured,
                            **report})
        if args.write_tenant:
            _write(client, args.write_tenant, reports)
        return reports
    finally:
        if temporary:
            client.delete_tenant(temporary)


def _verifier_of(server: InProcessServer | None) -> str:
    if server is None:
        return "the server's setting"
    s = server.settings
    return ", ".join(v for v in (s.verifier_model, s.cjk_model and s.verifier_cjk_model,
                                 s.multilingual_model and s.verifier_multilingual_model) if v) or "off"


def _write(client: Any, name: str, reports: Sequence[dict[str, Any]]) -> None:
    """The calibrated threshold that serves every file: the highest of theirs."""
    chosen = [r["calibrated"]["threshold"] for r in reports if r.get("calibrated")]
    if len(chosen) != len(reports):
        raise errors.InvalidArgument("no swept threshold reaches --target-precision on every file: nothing written")
    client.update_tenant(name, similarity_threshold=max(chosen))
    for r in reports:
        r["written"] = {"tenant": name, "similarity_threshold": max(chosen)}


def _line(label: str, p: dict[str, Any] | None) -> str:
    if not p:
        return f"{label:<12} (none)"
    t = "default" if p.get("threshold") is None else f"{p['threshold']:.3f}"
    extra = f"  sweep disagrees on {p['sweep_disagrees']} rows" if "sweep_disagrees" in p else ""
    return (f"{label:<12} {t:>7} {p['right']:>7} {p['wrong']:>7} {p['miss']:>7} "
            f"{p['precision']:>9.3f} {p['recall']:>7.3f} {p['f1']:>7.3f}{extra}")


def _text(r: dict[str, Any]) -> str:
    head = (f"{r['dataset']} ({r['mode']} mode): {r['rows']} rows ({r['positives']} label 1), "
            f"{r['entries']} entries cached; "
            f"model {r['embedding_model']}, guard {r['guard']}, verifier {r.get('verifier', '?')}, tenant {r['tenant']}, "
            f"{r['seconds']['total']} s")
    lines = [head, f"{'':<12} {'thresh':>7} {'right':>7} {'wrong':>7} {'miss':>7} {'precision':>9} {'recall':>7} "
             f"{'F1':>7}"]
    for p in r["sweep"]:
        if round(p["threshold"] * 100) % 5 == 0:
            lines.append(_line("sweep", p))
    lines.append(_line("best F1", r["best_f1"]))
    if "configured" in r:
        lines.append(_line("configured", r["configured"]))
    if "calibrated" in r:
        lines.append(_line(f"P>={r['calibrated']['target_precision'] if r['calibrated'] else '?'}", r["calibrated"]))
    if r.get("written"):
        lines.append(f"wrote similarity_threshold={r['written']['similarity_threshold']} to tenant "
                     f"{r['written']['tenant']}")
    return "\n".join(lines)
