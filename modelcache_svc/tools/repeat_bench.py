"""modelcache-svc bench-repeat: a paraphrase asked for the first time against the same paraphrase asked again.

One run, over gRPC, one client: loads N entries (the bench's data) into a
scope of its own, then asks each of M paraphrases twice in a row; the first
ask embeds the question, the second finds its vector remembered
(``question_vector_cache_size``) and costs a search and a read. Fresh and
repeated asks alternate, so a change in the machine's load weighs on both.
Then C clients ask the already-asked paraphrases for T seconds (closed loop):
the throughput of repeated paraphrases.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .. import errors
from .bench import loadavg
from .bench_server import ChildServer, metrics_delta, scrape
from .load import LoadGenerators, clear_scope, load_entries, percentiles, query_bytes
from .workload import QUERY_METHOD, build_workload, find_eval_dir
from ..config import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench-repeat", help="p50 of a fresh paraphrase against the same paraphrase asked again")
    p.add_argument("--target", default=None, help="a running server (default: start one in a child process)")
    p.add_argument("--metrics-url", default=None, help="with --target: its /metrics URL (stage times)")
    p.add_argument("--api-key", default=None, help="key for --target (default $MODELCACHE_API_KEY)")
    p.add_argument("--tenant", default="default")
    p.add_argument("--entries", type=int, default=2_000, help="entries loaded into the scope (default 2000)")
    p.add_argument("--queries", type=int, default=200, help="paraphrases, each asked twice (default 200)")
    p.add_argument("--clients", type=int, default=32, help="clients asking repeated paraphrases (0 = skip)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of the C-client phase (default 5)")
    p.add_argument("--eval-dir", default=None, help="folder with gptcache_mock_en/qqp_en/stsb_en.jsonl")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG", help="extra flag for the child serve")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _ask_twice(target: str, metadata: Any, requests: list[bytes]) -> dict[str, Any]:
    import grpc

    from ..transport.proto import pb

    fresh: list[float] = []
    again: list[float] = []
    same = 0
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(QUERY_METHOD, request_serializer=None, response_deserializer=None)
        call(requests[-1], metadata=metadata or None, timeout=30)  # warm the channel (and that one question)
        for request in requests[:-1]:
            answers = []
            for out in (fresh, again):
                t0 = time.perf_counter()
                raw = call(request, metadata=metadata or None, timeout=30)
                out.append(time.perf_counter() - t0)
                response = pb.QueryResponse.FromString(raw)
                answers.append((response.match, response.id))
            same += answers[0] == answers[1]
    p_fresh, p_again = percentiles(fresh), percentiles(again)
    ratio = (p_again["p50_ms"] or 0.0) / p_fresh["p50_ms"] if p_fresh["p50_ms"] else None
    return {"queries": len(fresh), "fresh": p_fresh, "repeated": p_again,
            "p50_ratio_repeated_to_fresh": None if ratio is None else round(ratio, 3),
            "same_outcome": same}


def run(args: argparse.Namespace, environ: dict[str, str]) -> int:
    if args.entries < 2 or args.queries < 1 or args.clients < 0 or args.duration <= 0:
        raise errors.InvalidArgument("--entries >= 2, --queries >= 1, --clients >= 0, --duration > 0")
    environ = {**environ, "HF_HUB_OFFLINE": "1"}
    workload = build_workload(args.entries, find_eval_dir(args.eval_dir, environ))
    paraphrases = list(dict.fromkeys(q for q, _ in workload.semantic))[: args.queries + 1]  # each one fresh
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    report: dict[str, Any] = {"config": {"entries": args.entries, "queries": len(paraphrases) - 1,
                                         "data": workload.source, "load_average_before": loadavg()}}
    api_key = args.api_key or environ.get("MODELCACHE_API_KEY") or ""
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    model = "bench-" + uuid.uuid4().hex[:10]
    with tempfile.TemporaryDirectory(prefix="modelcache-bench-") as tmp:
        server = pool = None
        try:
            metrics_url = args.metrics_url
            if args.target:
                target = args.target
            else:
                say("starting modelcache-svc serve ...")
                # The server's default size (the bench's own child turns the memory off), unless a --serve-arg says.
                memo = ["--question-vector-cache-size", str(Settings().question_vector_cache_size)]
                server = ChildServer(Path(tmp) / "data", [*memo, *args.serve_arg], environ)
                target, metrics_url = server.target, server.metrics_url
            say(f"loading {len(workload.questions)} entries ...")
            asyncio.run(load_entries(target, metadata, args.tenant, model, workload, 32, 2))
            requests = [query_bytes(args.tenant, model, q) for q in paraphrases]
            say(f"{len(requests) - 1} paraphrases, each asked twice in a row, 1 client ...")
            before = scrape(metrics_url)
            report["one_client"] = _ask_twice(target, metadata, requests)
            report["one_client"]["server"] = metrics_delta(before, scrape(metrics_url))
            if args.clients:
                say(f"repeated paraphrases: {args.clients} clients, {args.duration:g} s ...")
                pool = LoadGenerators(2 if args.clients >= 16 else 1)
                before = scrape(metrics_url)
                phase = pool.run(target, metadata, requests, args.clients, 1.0, args.duration)
                phase["server"] = metrics_delta(before, scrape(metrics_url))
                report["repeated_clients"] = phase
            if args.target:
                asyncio.run(clear_scope(target, metadata, args.tenant, model))
        finally:
            if pool is not None:
                pool.close()
            if server is not None:
                server.stop()
    report["config"]["load_average_after"] = loadavg()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        one = report["one_client"]
        print(f"1 client, {one['queries']} paraphrases: fresh p50 {one['fresh']['p50_ms']} ms "
              f"(p99 {one['fresh']['p99_ms']}), repeated p50 {one['repeated']['p50_ms']} ms "
              f"(p99 {one['repeated']['p99_ms']}): ratio {one['p50_ratio_repeated_to_fresh']}; "
              f"same outcome {one['same_outcome']}/{one['queries']}")
        if "repeated_clients" in report:
            r = report["repeated_clients"]
            print(f"{r['clients']} clients, repeated paraphrases: {r['qps']} q/s, p50 {r['p50_ms']} ms, "
                  f"p99 {r['p99_ms']} ms, {r['outcomes']}")
    return 0
