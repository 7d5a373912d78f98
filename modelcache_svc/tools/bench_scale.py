"""modelcache-svc bench-scale: the cost curve of one scope at 10k / 100k / 1M entries, embedded and over
a Milvus server.

Per mode and size, in one run:
1. Bulk-loads N entries into a scope of its own straight to the stores (``bulk_load``: real questions
   with their real vectors, then synthetic vectors; written as Insert writes them), timing it. In
   embedded mode it then waits for the HNSW graph (timed) and saves the copy (a clean stop).
2. Recall@5 of the vector search against an exact scan, on the real paraphrase queries (and on
   synthetic off-entry queries, reported apart): embedded, the in-process graph against its exact
   scan; Milvus, the server's search with the configured parameters against numpy over every vector.
3. Starts ``modelcache-svc serve`` on those stores: the time to ready after that restart.
4. Asks the real paraphrases over gRPC with one client for ``--duration`` s: semantic p50/p99 and hit
   quality; then Inserts ``--inserts`` new entries through the service (batches of 32): its insert rate.
5. Server RSS, alone and with any children, and the Milvus server's (Milvus Lite 3 runs inside our process,
   as threads: embedded, our RSS is ours and Milvus Lite's together).
6. Kills the server and its children with SIGKILL (a crash: the inserts are in the journal, not in the saved
   copy), starts it again: the time to ready after kill -9 (the saved copy plus the journal; Milvus Lite is
   not read back), and the hit quality of 100 paraphrases; then removes the data.
``--tenants N`` (Milvus) checks the partition-key layout: 3 vectors for each of N tenants in one
collection, then the search p50 of one tenant. ``--plot FILE.png`` draws latency against entries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import errors
from . import bulk_load

MODES = ("embedded", "milvus")
log = logging.getLogger("modelcache_svc.bench_scale")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench-scale", help="the cost curve of one scope at 10k/100k/1M entries, embedded and "
                       "over a Milvus server (bulk-loaded; queries through the real service)")
    p.add_argument("--sizes", default="10000,100000", help="entries in the scope, comma-separated "
                   "(default 10000,100000; the issue's curve: 10000,100000,1000000)")
    p.add_argument("--modes", default="embedded", help="embedded, milvus, embedded,milvus or both (default embedded)")
    p.add_argument("--milvus-uri", default=None, help="a running Milvus server (default: start `milvus-server` "
                   "from the PyPI package milvus on a temporary data dir)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of one-client semantic queries per size")
    p.add_argument("--real", type=int, default=5000, help="real questions embedded by the model (the rest synthetic)")
    p.add_argument("--recall-queries", type=int, default=300)
    p.add_argument("--inserts", type=int, default=256, help="entries inserted through the service per size")
    p.add_argument("--tenants", type=int, default=0, help="Milvus: also the partition-key check at N tenants")
    p.add_argument("--cold", action="store_true", help="embedded: also time a start without the saved copy "
                   "(Milvus Lite read back: ~10 min at a million rows)")
    p.add_argument("--no-kill", action="store_true", help="skip step 6 (kill -9 and the start after it)")
    p.add_argument("--work-dir", default=None, help="where the stores go (default: a temporary dir under /tmp)")
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "modelcache-bench-scale"),
                   help="the real questions' vectors, computed once")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG", help="extra argument for the server")
    p.add_argument("--plot", default=None, help="draw latency against entries into this PNG")
    p.add_argument("--plot-from", default=None, help="with --plot: draw from this JSON report instead of running")
    p.add_argument("--eval-dir", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, environ: dict[str, str]) -> int:
    if args.plot_from:
        from .bench_plot import plot

        plot(json.loads(Path(args.plot_from).read_text()), Path(args.plot or "scale.png"))
        return 0
    try:
        sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    except ValueError as exc:
        raise errors.InvalidArgument("--sizes: entries, comma-separated, e.g. 10000,100000") from exc
    modes = [m.strip() for m in str(args.modes).split(",") if m.strip()]
    if modes == ["both"]:
        modes = list(MODES)
    if not sizes or min(sizes) < 100 or any(m not in MODES for m in modes):
        raise errors.InvalidArgument(f"--sizes >= 100 each; --modes among {', '.join(MODES)} (or both)")
    from .workload import find_eval_dir
    from ..config import Settings
    from ..embedding import load_embedder

    environ = {**environ, "HF_HUB_OFFLINE": "1"}
    settings = Settings.load({}, environ)
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    bar = _bar_factory(not args.json)
    embedder = load_embedder(settings.embedding_backend, settings.embedding_model)
    with bar(args.real, "embedding real questions (once; cached)") as b:
        real = bulk_load.real_set(args.real, find_eval_dir(args.eval_dir, environ), embedder,
                                  Path(args.cache_dir), b.update)
    queries = [q for q, _ in real.semantic][: args.recall_queries]
    # 32 at a time: one call over 300 texts grew the model's arena to ~3.5 GB.
    query_vectors = bulk_load._unit(np.concatenate([np.asarray(embedder.encode(queries[i:i + 32]), dtype=np.float32)
                                                    for i in range(0, len(queries), 32)]))
    report: dict[str, Any] = {"config": {
        "sizes": sizes, "modes": modes, "duration_s": args.duration, "real_questions": len(real.questions),
        "semantic_queries": len(real.semantic), "cpus": os.cpu_count(), "load_average_before": _loadavg(),
        "vectors": bulk_load.describe_vectors(real),
        "approx_index": {"min_entries": settings.approx_index_min_entries, "m": settings.approx_index_m,
                         "ef_construction": settings.approx_index_ef_construction,
                         "ef_search": settings.approx_index_ef_search},
        "milvus_index": {"type": settings.milvus_index_type, "params": settings.milvus_index_config,
                         "search": settings.milvus_search_config}}, "runs": []}
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="modelcache-scale-"))
    milvus = None
    try:
        for mode in modes:
            uri = None
            if mode == "milvus":
                if args.milvus_uri:
                    uri = args.milvus_uri
                else:
                    try:
                        milvus = MilvusServer(work / "milvus")
                    except errors.Unavailable as exc:  # the other mode's results still count
                        report.setdefault("errors", []).append(f"{mode}: {exc.message}")
                        say(f"{mode}: {exc.message}")
                        continue
                    uri = milvus.uri
                    report["config"]["milvus_server_ready_s"] = milvus.ready_s
            for n in sizes:
                say(f"{mode}, {n} entries ...")
                r = run_size(args, settings, mode, n, uri, real, query_vectors, work / f"{mode}-{n}", bar, say,
                             milvus)
                report["runs"].append(r)
                say(f"  p50 {r['semantic']['p50_ms']} ms, p99 {r['semantic']['p99_ms']} ms, ready "
                    f"{r['ready_s']} s, RSS {r['rss_end']}, recall@5 {r['recall_at_5']}")
            if mode == "milvus" and args.tenants:
                say(f"partition key: {args.tenants} tenants ...")
                report["tenants"] = tenants_check(settings, uri or "", args.tenants, real, bar)
    finally:
        if milvus is not None:
            milvus.stop()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    report["config"]["load_average_after"] = _loadavg()
    report["targets"] = targets(report)
    if args.plot:
        from .bench_plot import plot

        plot(report, Path(args.plot))
    print(json.dumps(report, indent=1) if args.json else text_report(report))
    return 0


def run_size(args: argparse.Namespace, settings: Any, mode: str, n: int, uri: str | None, real: bulk_load.RealSet,
             query_vectors: np.ndarray, root: Path, bar: Any, say: Any, milvus: MilvusServer | None) -> dict[str, Any]:
    from .bench_server import ChildServer, metrics_delta, rss_mb, scrape, tree_rss_mb
    from .load import LoadGenerators, ask_answers, ask_quality, load_entries, query_bytes, same_answers
    from ..stores import open_scalar_store
    from ..stores.approx_index import ApproxParams
    from ..stores.milvus_store import MilvusVectorStore

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    namespace = "s" + uuid.uuid4().hex[:8]
    tenant, model = "default", f"scale-{n}"
    scalar_uri = f"sqlite:///{data / 'modelcache.db'}"
    vector_uri = str(data / "milvus.db") if mode == "embedded" else str(uri)
    out: dict[str, Any] = {"mode": mode, "entries": n}
    scalar = open_scalar_store(scalar_uri, namespace)
    scalar.migrate()
    vector = MilvusVectorStore(
        vector_uri, namespace, timeout=60,
        approx=ApproxParams.of_settings(settings),
        index_type=settings.milvus_index_type, index_params=settings.milvus_index_config,
        search_params=settings.milvus_search_config)
    try:
        with bar(n, f"bulk load {mode} {n}") as b:
            loaded = bulk_load.load(scalar, vector, real, n, tenant, model, b.update)
        all_ids = loaded.pop("ids")
        real_ids = all_ids[: len(real.questions)]
        out["bulk_load"] = loaded
        collection = vector.ensure_collection(real.model_id, real.vectors.shape[1])
        t0 = time.perf_counter()
        if mode == "embedded":
            assert vector._index is not None
            vector._index.wait_idle()
            out["graph_build_wait_s"] = round(time.perf_counter() - t0, 1)
            out["graphs"] = len(vector._index.graphs(collection))
            out["recall_at_5"], out["recall_at_5_off_entry"] = _recall_embedded(vector, collection, tenant, model,
                                                                               query_vectors, real)
            if out["graphs"]:
                out["recall_by_ef"] = _recall_by_ef(vector, collection, tenant, model, query_vectors, real)
        else:
            vector._client.flush(collection)
            out["pending_index_rows_at_measure"] = _wait_indexed(vector, collection, n)
            out["index_build_wait_s"] = round(time.perf_counter() - t0, 1)
            out["recall_at_5"], out["recall_at_5_off_entry"] = _recall_server(vector, tenant, model, query_vectors,
                                                                             real, all_ids)
    finally:
        t0 = time.perf_counter()
        vector.close()
        out["close_s"] = round(time.perf_counter() - t0, 1)  # embedded: saving the copy and its graph
        scalar.close()
        if mode == "embedded":  # Milvus Lite's in-process server holds the file's lock until released
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(vector_uri)
    extra = ["--namespace", namespace, "--scalar-uri", scalar_uri, "--vector-uri", vector_uri, *args.serve_arg]
    # The start-up repair pass (a background walk over every row) is off: it would run beside the latency
    # phase. Its cost after a restart is not part of "ready".
    env = {**os.environ, "MODELCACHE_REPAIR_ON_START": "0"}
    server = ChildServer(data, extra, env, timeout=1800)
    pool = LoadGenerators(1)
    try:
        out["ready_s"] = round(server.startup_s, 1)
        out["read_back"] = _read_back(server.output())
        out["rss_at_ready"] = rss_mb(server.pid)
        requests = [query_bytes(tenant, model, q) for q, _ in real.semantic]
        before = scrape(server.metrics_url)
        phase = pool.run(server.target, (), requests, 1, 2.0, args.duration)
        out["semantic"] = {k: phase[k] for k in ("calls", "qps", "p50_ms", "p90_ms", "p99_ms", "outcomes", "errors")}
        # The server's mean ms per stage in that phase: the vector search apart from the model and the host.
        out["semantic"]["stages_mean_ms"] = {k: v["mean_ms"] for k, v in
                                             metrics_delta(before, scrape(server.metrics_url)).get("stages", {}).items()}
        w = SimpleNamespace(semantic=real.semantic[: args.recall_queries])
        out["quality"] = asyncio.run(ask_quality(server.target, (), tenant, model, w, real_ids))  # type: ignore[arg-type]
        if args.inserts:
            new = SimpleNamespace(questions=[f"{q} (new at {n})" for q in real.questions[: args.inserts]],
                                  answers=["fresh"] * args.inserts)
            ins = asyncio.run(load_entries(server.target, (), tenant, model, new, 32, 2))  # type: ignore[arg-type]
            out["insert"] = {"entries": ins["entries"], "entries_per_s": ins["entries_per_s"],
                             "batch_p50_ms": ins["batch_p50_ms"]}
        # What a restart must answer as this server does: the last acknowledged Inserts asked word for word
        # (their own entries: in the journal, not the saved copy, when the server is killed next) and the
        # first paraphrases (their own entries, another, or a miss: whatever this server answers).
        asked = real.semantic[: min(100, args.recall_queries)]
        checked = [q for q, _ in asked] + (new.questions[-100:] if args.inserts else [])
        answered = asyncio.run(ask_answers(server.target, (), tenant, model, checked))
        out["rss_end"] = rss_mb(server.pid)
        # What the host must hold: our process (embedded, Milvus Lite 3 serves from threads inside it) and any child.
        out["rss_tree_end_mb"] = tree_rss_mb(server.pid)
        if milvus is not None:
            out["milvus_server_rss_mb"] = milvus.rss_mb()
    finally:
        pool.close()
        if args.no_kill:
            server.stop()
        else:
            server.kill()  # a crash: the inserts above are in the stores and the journal, not in the saved copy
    if not args.no_kill:
        killed = ChildServer(data, extra, env, timeout=1800)
        try:
            out["ready_after_kill_s"] = round(killed.startup_s, 1)
            out["read_back_after_kill"] = _read_back(killed.output())
            out["rss_tree_after_kill_mb"] = tree_rss_mb(killed.pid)
            w = SimpleNamespace(semantic=real.semantic[: min(100, args.recall_queries)])
            out["quality_after_kill"] = asyncio.run(ask_quality(killed.target, (), tenant, model,  # type: ignore[arg-type]
                                                                w, real_ids))
            again = asyncio.run(ask_answers(killed.target, (), tenant, model, checked))
            n = len(asked)
            out["answered_as_before_kill"] = {"paraphrases": same_answers(answered[:n], again[:n]),
                                              "last_inserts_word_for_word": same_answers(answered[n:], again[n:])}
        finally:
            killed.stop()
    if args.cold and mode == "embedded":
        for manifest in Path(vector_uri + ".index").glob("*/manifest.json"):
            manifest.unlink()
        cold = ChildServer(data, extra, env, timeout=3600)
        out["ready_cold_s"] = round(cold.startup_s, 1)
        out["rss_cold"] = rss_mb(cold.pid)
        cold.stop()
    shutil.rmtree(root, ignore_errors=True)
    return out


def _read_back(log_text: str) -> list[str]:
    """What the server's log says of each collection's read-back at start (where from, rows, seconds)."""
    said = []
    for line in log_text.splitlines():
        try:
            msg = str(json.loads(line).get("msg", ""))
        except ValueError:
            continue
        if msg.startswith("vector copy of ") and " read from " in msg:
            said.append(msg)
    return said


def _recall_embedded(vector: Any, collection: str, tenant: str, model: str, queries: np.ndarray,
                     real: bulk_load.RealSet) -> tuple[float, float]:
    """recall@5 of the index's search (as served) against its exact scan, on the real queries and off-entry
    ones."""
    from ..cache.keys import chat_key
    from ..records import Message
    from ..config import Limits
    from ..stores.milvus_store import scope_hash

    ctx = chat_key([Message("user", "x")], Limits()).context_hash
    scope, index = scope_hash(tenant, model), vector._index
    _, off = bulk_load.synthetic(real, 10**9 + 7, len(queries))

    def recall(qs: np.ndarray) -> float:
        found = 0
        for q in qs:
            got = {i for i, _ in index.search(collection, scope, ctx, q, 5)}
            found += len(got & {i for i, _ in index.search_exact(collection, scope, ctx, q, 5)})
        return round(found / (5 * len(qs)), 4)

    return recall(queries), recall(off)


def _recall_by_ef(vector: Any, collection: str, tenant: str, model: str, queries: np.ndarray,
                  real: bulk_load.RealSet) -> dict[str, Any]:
    """The graphs' recall@5 (real, off-entry) and search p50 at fixed breadths, and the breadth served."""
    import dataclasses

    from ..cache.keys import chat_key
    from ..config import Limits
    from ..records import Message
    from ..stores.milvus_store import scope_hash

    ctx = chat_key([Message("user", "x")], Limits()).context_hash
    scope, index = scope_hash(tenant, model), vector._index
    _, off = bulk_load.synthetic(real, 10**9 + 7, len(queries))
    sets = {"recall_at_5": queries, "recall_at_5_off_entry": off}
    truth = {name: [{i for i, _ in index.search_exact(collection, scope, ctx, q, 5)} for q in qs]
             for name, qs in sets.items()}  # the exact scan once: ~0.2 s a query at a million rows
    anns = [b.ann for b in index._collections[collection].blocks.values() if b.ann is not None]
    served = {str(len(a.labels) - a.dead): a.params.ef_for(len(a.labels) - a.dead) for a in anns}
    saved = [a.params for a in anns]
    curve: dict[str, Any] = {}
    try:
        for ef in (128, 256, 512, 1024):
            for a, p in zip(anns, saved):
                a.params = dataclasses.replace(p, ef_search=ef, ef_rows=0)
            times: list[float] = []
            row: dict[str, Any] = {}
            for name, qs in sets.items():
                found = 0
                for q, want in zip(qs, truth[name]):
                    t0 = time.perf_counter()
                    got = {i for i, _ in index.search(collection, scope, ctx, q, 5)}
                    times.append(time.perf_counter() - t0)
                    found += len(got & want)
                row[name] = round(found / (5 * max(1, len(qs))), 4)
            row["search_p50_ms"] = round(float(np.median(times)) * 1000, 3)
            curve[str(ef)] = row
    finally:
        for a, p in zip(anns, saved):
            a.params = p
    return {"served_ef_by_graph_rows": served, "curve": curve}


def _recall_server(vector: Any, tenant: str, model: str, queries: np.ndarray, real: bulk_load.RealSet,
                   ids: list[str]) -> tuple[float, float]:
    """The server's search (as the store asks it) against numpy's exact top 5 over every vector."""
    import faiss

    from ..cache.keys import chat_key
    from ..records import Message
    from ..config import Limits

    ctx = chat_key([Message("user", "x")], Limits()).context_hash
    every = np.concatenate([v for _, v in bulk_load.entry_batches(real, len(ids))])
    _, off = bulk_load.synthetic(real, 10**9 + 7, len(queries))

    def recall(qs: np.ndarray) -> float:
        _, truth = faiss.knn(qs, every, 5, faiss.METRIC_INNER_PRODUCT)
        found = 0
        for q, want in zip(qs, truth):
            got = {h.id for h in vector.search(real.model_id, tenant, model, ctx, q, 5)}
            found += len(got & {ids[int(i)] for i in want})
        return round(found / (5 * len(qs)), 4)

    return recall(queries), recall(off)


def _wait_indexed(vector: Any, collection: str, n: int, timeout: float = 7200, settle: float = 900) -> int:
    """Wait until the server has indexed all ``n`` rows and has no rows pending. Compaction merges indexed
    segments afterwards and indexes the merged ones again (pending rows while the old segments still serve):
    after ``settle`` seconds of that the measurement goes on, and the rows still pending are returned (0 when
    none) for the report, since the re-index then shares the cores with the searches measured."""
    deadline = time.monotonic() + timeout
    all_indexed: float | None = None
    while time.monotonic() < deadline:
        info = vector._client.describe_index(collection, "vector")
        pending = int(info.get("pending_index_rows", 0))
        if int(info.get("indexed_rows", 0)) >= n:
            if pending == 0:
                return 0
            all_indexed = time.monotonic() if all_indexed is None else all_indexed
            if time.monotonic() - all_indexed > settle:
                log.warning("bench-scale: %d rows still pending re-indexing after %.0f s; measuring", pending, settle)
                return pending
        time.sleep(2)
    raise errors.Unavailable(f"the Milvus server did not index {n} rows in {timeout:.0f}s")


class MilvusServer:
    """``milvus-server`` (PyPI package milvus: the C++ standalone with embedded etcd) on a temporary dir."""

    def __init__(self, data: Path, timeout: float = 180) -> None:
        from .bench_server import free_port

        exe = Path(sys.executable).parent / "milvus-server"
        if not exe.exists():
            raise errors.Unavailable(f"{exe} is missing: pip install milvus==2.3.5 (or pass --milvus-uri)")
        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.uri = f"http://127.0.0.1:{port}"
        self._log = (data.parent / "milvus-server.log").open("wb")
        started = time.monotonic()
        self.proc = subprocess.Popen([str(exe), "--data", str(data), "--proxy-port", str(port)],
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        from pymilvus import MilvusClient

        while True:
            if self.proc.poll() is not None or time.monotonic() - started > timeout:
                self.stop()
                raise errors.Unavailable(f"milvus-server did not start (see {data.parent / 'milvus-server.log'})")
            try:
                MilvusClient(uri=self.uri, timeout=5).list_collections()
                break
            except Exception:
                time.sleep(1)
        self.ready_s = round(time.monotonic() - started, 1)

    def rss_mb(self) -> float:
        """RSS of every process of the server's session (the wrapper and its C++ child)."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == self.proc.pid:  # the process group
                    total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue
        return round(total / 2**20, 1)

    def stop(self) -> None:
        """SIGTERM to the group, then SIGKILL to it: the wrapper exits at once, but its C++ child's graceful
        stop can hang for a minute, holding etcd's fixed port 2380 (one server per host)."""
        import signal

        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            time.sleep(1 if sig == signal.SIGTERM else 0)
        self._log.close()


def tenants_check(settings: Any, uri: str, tenants: int, real: bulk_load.RealSet, bar: Any) -> dict[str, Any]:
    """3 vectors for each of ``tenants`` tenants in one collection (the scope hash is its partition key),
    then the search p50 of one tenant through the store, as the service asks it."""
    from ..cache.keys import chat_key
    from ..records import Message
    from ..config import Limits
    from ..stores.milvus_store import MilvusVectorStore, scope_hash, tenant_hash

    ctx = chat_key([Message("user", "x")], Limits()).context_hash
    store = MilvusVectorStore(uri, "pk" + uuid.uuid4().hex[:8], timeout=60, index_type=settings.milvus_index_type,
                              index_params=settings.milvus_index_config,
                              search_params=settings.milvus_search_config)
    try:
        collection = store.ensure_collection(real.model_id, real.vectors.shape[1])
        t0 = time.perf_counter()
        rows = []
        with bar(tenants * 3, f"{tenants} tenants x 3 vectors") as b:
            for t in range(tenants):
                scope, th = scope_hash(f"t{t}", "m"), tenant_hash(f"t{t}")
                for j in range(3):
                    v = real.vectors[(3 * t + j) % len(real.vectors)]
                    rows.append({"id": uuid.uuid4().hex, "scope": scope, "tenant": th, "ctx": ctx, "vector": v.tolist()})
                if len(rows) >= 3000 or t == tenants - 1:
                    store._client.insert(collection, rows)
                    b.update(len(rows))
                    rows = []
        insert_s = time.perf_counter() - t0
        store._client.flush(collection)
        _wait_indexed(store, collection, tenants * 3)
        times = []
        for i in range(300):
            t1 = time.perf_counter()
            hits = store.search(real.model_id, "t4242" if tenants > 4242 else "t1", "m", ctx, real.vectors[i], 5)
            times.append(time.perf_counter() - t1)
        return {"tenants": tenants, "rows": tenants * 3, "insert_s": round(insert_s, 1),
                "search_p50_ms": round(statistics.median(times) * 1e3, 2),
                "search_p99_ms": round(float(np.percentile(times, 99)) * 1e3, 2), "hits_per_search": len(hits)}
    finally:
        store.close()


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for mode in r["config"]["modes"]:
        runs = {x["entries"]: x for x in r["runs"] if x["mode"] == mode}
        small, big = runs.get(min(runs, default=0)), runs.get(max(runs, default=0))
        if small and big and big is not small:
            ratio = round(big["semantic"]["p50_ms"] / small["semantic"]["p50_ms"], 3)
            out.append({"name": f"{mode}: semantic p50 at {big['entries']} / at {small['entries']}", "value": ratio,
                        "limit": 1.5, "ok": ratio <= 1.5})
        if big:
            out.append({"name": f"{mode}: ready s after a restart at {big['entries']}", "value": big["ready_s"],
                        "limit": 60, "ok": big["ready_s"] <= 60})
            if "ready_after_kill_s" in big:
                out.append({"name": f"{mode}: ready s after kill -9 at {big['entries']}",
                            "value": big["ready_after_kill_s"], "limit": 60, "ok": big["ready_after_kill_s"] <= 60})
            for part, same in (big.get("answered_as_before_kill") or {}).items():
                out.append({"name": f"{mode}: {part} answered as before kill -9 at {big['entries']}",
                            "value": f"{same['same']} / {same['queries']}", "limit": "all",
                            "ok": same["same"] == same["queries"]})
            if mode == "embedded":  # ours and Milvus Lite's server together; the start-up's peak counts
                rss = big.get("rss_tree_end_mb") or (big.get("rss_end") or {}).get("rss_mb")
                peak = max([rss or 0.0] + [(big.get(k) or {}).get("peak_rss_mb") or 0.0
                                           for k in ("rss_at_ready", "rss_end")])
                out.append({"name": f"embedded: RSS MB (with Milvus Lite) at {big['entries']}", "value": rss,
                            "limit": 8192, "ok": rss is not None and rss <= 8192})
                out.append({"name": f"embedded: peak RSS MB at {big['entries']}", "value": peak, "limit": 8192,
                            "ok": 0 < peak <= 8192})
        for x in runs.values():
            if x.get("graphs", 1):
                out.append({"name": f"{mode}: recall@5 at {x['entries']}", "value": x["recall_at_5"], "limit": 0.99,
                            "ok": x["recall_at_5"] >= 0.99})
    return out


def text_report(r: dict[str, Any]) -> str:
    lines = [(f"modelcache-svc bench-scale: {r['config']['cpus']} CPUs, load {r['config']['load_average_before']} -> "
              f"{r['config']['load_average_after']}"), f"vectors: {r['config']['vectors']}", "",
             (f"{'mode':<9} {'entries':>9} {'p50 ms':>7} {'p99 ms':>7} {'ready s':>8} {'kill -9':>8} {'RSS MB':>8} "
              f"{'tree MB':>8} {'recall@5':>9} {'bulk/s':>8} {'insert/s':>9}  outcomes")]
    for x in r["runs"]:
        lines.append(f"{x['mode']:<9} {x['entries']:>9} {x['semantic']['p50_ms']:>7} {x['semantic']['p99_ms']:>7} "
                     f"{x['ready_s']:>8} {x.get('ready_after_kill_s')!s:>8} {(x.get('rss_end') or {}).get('rss_mb')!s:>8} "
                     f"{x.get('rss_tree_end_mb')!s:>8} {x['recall_at_5']:>9} "
                     f"{x['bulk_load']['entries_per_s']:>8} {x.get('insert', {}).get('entries_per_s')!s:>9}  "
                     f"{x['semantic']['outcomes']}")
    for x in r["runs"]:
        lines.append(f"  {x['mode']} {x['entries']}: server ms per stage {x['semantic'].get('stages_mean_ms')}")
    for x in r["runs"]:
        if x.get("recall_by_ef"):
            curve = ", ".join(f"ef {ef}: {c['recall_at_5']} / {c['recall_at_5_off_entry']} in {c['search_p50_ms']} ms"
                              for ef, c in x["recall_by_ef"]["curve"].items())
            lines.append(f"  {x['mode']} {x['entries']}: graph recall@5 (real / off-entry) and search p50 by breadth: "
                         f"{curve}; served {x['recall_by_ef']['served_ef_by_graph_rows']}")
    if "tenants" in r:
        lines.append(f"partition key: {r['tenants']}")
    lines.append("")
    lines += [f"  {'ok  ' if t['ok'] else 'MISS'} {t['name']}: {t['value']} (target {t['limit']})" for t in r["targets"]]
    return "\n".join(lines)


def _bar_factory(show: bool) -> Any:
    def make(total: int, desc: str) -> Any:
        if show and sys.stderr.isatty():
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, unit="row", file=sys.stderr, leave=False)
        return _NoBar()

    return make


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None
