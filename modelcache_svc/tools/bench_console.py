"""modelcache-svc bench-console: how fast the console's pages answer with N entries in one scope.

1. Bulk-loads N entries into a scope of their own straight to the embedded stores (``bulk_load``, as
   bench-scale does: real questions with their real vectors, then synthetic ones), then waits for the
   embedded HNSW graph.
2. Starts ``modelcache-svc serve`` on those stores with an admin key (the console on), and asks
   ``--queries`` real paraphrases over gRPC, so the query log, the stats and the recent traffic hold
   something.
3. Asks each page ``--requests`` times (after two unmeasured ones) with ``Authorization: Bearer`` from one
   client: the overview, the tenant page, the entries page, a search by text (another paraphrase each time),
   an entry (another one each time), the recent traffic and the traffic filtered. Reports p50 / p90 / max
   per page and whether each p50 is within ``--target-ms`` (200 ms, the issue's bound).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import errors
from . import bulk_load

TENANT = "bench"
ADMIN_KEY = "bench-console-admin-key"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench-console", help="page latency of the web console with N entries in one scope "
                       "(bulk-loaded; pages asked over HTTP of a real server)")
    p.add_argument("--entries", type=int, default=100_000, help="entries in the scope (default 100000)")
    p.add_argument("--requests", type=int, default=30, help="measured requests per page (default 30)")
    p.add_argument("--queries", type=int, default=300, help="paraphrases asked over gRPC first (traffic)")
    p.add_argument("--real", type=int, default=5000, help="real questions embedded by the model (the rest synthetic)")
    p.add_argument("--target-ms", type=float, default=200.0, help="the p50 each page should stay within")
    p.add_argument("--work-dir", default=None, help="where the stores go (default: a temporary dir, removed)")
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "modelcache-bench-scale"),
                   help="the real questions' vectors, computed once (shared with bench-scale)")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG", help="extra argument for the server")
    p.add_argument("--eval-dir", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, environ: dict[str, str]) -> int:
    if args.entries < 10 or args.requests < 1 or args.queries < 0:
        raise errors.InvalidArgument("--entries >= 10, --requests >= 1, --queries >= 0")
    from ..config import Settings
    from ..embedding import load_embedder
    from .workload import find_eval_dir

    environ = {**environ, "HF_HUB_OFFLINE": "1"}
    settings = Settings.load({}, environ)
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    embedder = load_embedder(settings.embedding_backend, settings.embedding_model)
    real = bulk_load.real_set(min(args.real, args.entries), find_eval_dir(args.eval_dir, environ), embedder,
                              Path(args.cache_dir))
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="modelcache-console-"))
    try:
        report = measure(args, settings, real, work, say)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1) if args.json else text_report(report))
    return 0


def load_scope(settings: Any, real: bulk_load.RealSet, n: int, data: Path, namespace: str,
               model: str) -> dict[str, Any]:
    """N entries straight to the embedded stores; every id, in load order."""
    from ..stores import open_scalar_store
    from ..stores.approx_index import ApproxParams
    from ..stores.milvus_store import MilvusVectorStore

    scalar_uri, vector_uri = f"sqlite:///{data / 'modelcache.db'}", str(data / "milvus.db")
    scalar = open_scalar_store(scalar_uri, namespace)
    scalar.migrate()
    vector = MilvusVectorStore(
        vector_uri, namespace, timeout=60,
        approx=ApproxParams.of_settings(settings))
    try:
        loaded = bulk_load.load(scalar, vector, real, n, TENANT, model)
        vector.ensure_collection(real.model_id, real.vectors.shape[1])
        if vector._index is not None:
            vector._index.wait_idle()  # the graph is built before the server reads it back
    finally:
        vector.close()
        scalar.close()
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(vector_uri)  # its in-process server holds the file's lock
    loaded.update(scalar_uri=scalar_uri, vector_uri=vector_uri)
    return loaded


def measure(args: argparse.Namespace, settings: Any, real: bulk_load.RealSet, root: Path, say: Any) -> dict[str, Any]:
    import httpx

    from ..client import CacheClient
    from .bench_server import ChildServer, rss_mb

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    namespace, model = "c" + uuid.uuid4().hex[:8], f"console-{args.entries}"
    say(f"bulk load: {args.entries} entries ...")
    loaded = load_scope(settings, real, args.entries, data, namespace, model)
    ids: list[str] = loaded.pop("ids")
    extra = ["--namespace", namespace, "--scalar-uri", loaded.pop("scalar_uri"), "--vector-uri",
             loaded.pop("vector_uri"), "--admin-key", ADMIN_KEY, *args.serve_arg]
    server = ChildServer(data, extra, {**os.environ, "MODELCACHE_REPAIR_ON_START": "0"}, timeout=1800)
    out: dict[str, Any] = {"config": {"entries": args.entries, "requests": args.requests, "queries": args.queries,
                                      "real_questions": len(real.questions), "cpus": os.cpu_count(),
                                      "target_p50_ms": args.target_ms},
                           "bulk_load": loaded, "ready_s": round(server.startup_s, 1)}
    paraphrases = [q for q, _ in real.semantic] or real.questions
    try:
        say(f"traffic: {args.queries} paraphrases over gRPC ...")
        hits = 0
        with CacheClient(server.target, api_key=ADMIN_KEY, timeout=30) as client:
            for i in range(args.queries):
                hits += client.query(TENANT, model, paraphrases[i % len(paraphrases)]).hit
        out["traffic"] = {"queries": args.queries, "hits": hits}
        base = f"http://127.0.0.1:{server.http_port}/console"
        scope = f"/t/{TENANT}"
        pages: dict[str, Any] = {
            "overview": lambda i: "/",
            "tenant": lambda i: scope,
            "entries": lambda i: f"{scope}/entries?model={quote(model)}",
            "search": lambda i: f"{scope}/entries?model={quote(model)}&text={quote(paraphrases[i % len(paraphrases)])}",
            "entry": lambda i: f"{scope}/entry/{ids[(i * 7919) % len(ids)]}",
            "traffic": lambda i: f"{scope}/traffic",
            "traffic_filtered": lambda i: f"{scope}/traffic?outcome=semantic&min=0.8&max=1",
        }
        results: dict[str, Any] = {}
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as web:
            for name, path_of in pages.items():
                say(f"page {name} ...")
                times = []
                for i in range(args.requests + 2):
                    started = time.perf_counter()
                    response = web.get(path_of(i))
                    elapsed = (time.perf_counter() - started) * 1000
                    if response.status_code != 200:
                        raise errors.Unavailable(f"{name}: HTTP {response.status_code}: {response.text[:300]}")
                    if i >= 2:
                        times.append(elapsed)
                times.sort()
                p50 = statistics.median(times)
                results[name] = {"p50_ms": round(p50, 1), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 1),
                                 "max_ms": round(times[-1], 1), "bytes": len(response.content),
                                 "within_target": p50 <= args.target_ms}
        out["pages"] = results
        out["rss"] = rss_mb(server.pid)
    finally:
        server.stop()
    out["all_within_target"] = all(p["within_target"] for p in out["pages"].values())
    return out


def text_report(r: dict[str, Any]) -> str:
    lines = [f"console pages at {r['config']['entries']:,} entries in one scope "
             f"({r['config']['requests']} requests each, one client; server ready in {r['ready_s']} s)"]
    for name, p in r["pages"].items():
        mark = "ok" if p["within_target"] else f"OVER {r['config']['target_p50_ms']:.0f} ms"
        lines.append(f"  {name:<17} p50 {p['p50_ms']:>7.1f} ms  p90 {p['p90_ms']:>7.1f} ms  max {p['max_ms']:>7.1f} ms"
                     f"  {mark}")
    return "\n".join(lines)
