"""Load generators: worker processes driving grpc.aio clients with pre-serialised Query requests,
closed or open loop, and the latency percentiles and scores of what came back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .. import errors
from .workload import QUERY_METHOD, Workload


def percentiles(latencies: Sequence[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    import numpy as np

    a = np.asarray(latencies) * 1000.0
    p50, p90, p99 = (float(x) for x in np.percentile(a, [50, 90, 99]))
    return {"p50_ms": round(p50, 3), "p90_ms": round(p90, 3), "p99_ms": round(p99, 3),
            "mean_ms": round(float(a.mean()), 3), "max_ms": round(float(a.max()), 3)}


async def _drive(target: str, metadata: tuple[tuple[str, str], ...], requests: list[bytes], tasks: int,
                 warmup: float, duration: float, offset: int, rate: float = 0.0) -> dict[str, Any]:
    """``tasks`` concurrent callers over one channel; latencies of calls that start after the warm-up.

    rate 0: closed loop, each caller sends its next call when the last one returns (the most the
    service does). rate > 0: open loop, each caller keeps a schedule of rate/tasks calls a second
    and never skips a call; besides the time of each call (from sending it) the time from its
    scheduled start is kept too (``late``: nothing hidden when the service falls behind)."""
    import grpc

    from ..transport.proto import pb

    names = {pb.MISS: "miss", pb.EXACT: "exact", pb.SEMANTIC: "semantic"}
    latencies: list[float] = []
    late: list[float] = []
    outcomes: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(QUERY_METHOD, request_serializer=None, response_deserializer=None)
        await channel.channel_ready()
        loop = asyncio.get_running_loop()
        begin = loop.time() + warmup
        end = begin + duration
        interval = tasks / rate if rate > 0 else 0.0

        async def caller(i: int) -> None:
            n = len(requests)
            k = (offset + i * 7919) % n
            due = loop.time() + interval * i / max(1, tasks)  # callers spread over one interval
            while True:
                if interval:
                    wait = due - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                now = loop.time()
                if now >= end:
                    return
                try:
                    raw = await call(requests[k], metadata=metadata or None, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    failures[exc.code().name] += 1
                    await asyncio.sleep(0.01)
                    continue
                done = loop.time()
                if now >= begin and done <= end:
                    latencies.append(done - now)
                    if interval:
                        late.append(done - due)
                    outcomes[names.get(pb.QueryResponse.FromString(raw).match, "miss")] += 1
                k = (k + 1) % n
                due += interval

        await asyncio.gather(*(caller(i) for i in range(tasks)))
    return {"latencies": latencies, "late": late, "outcomes": dict(outcomes), "errors": dict(failures)}


def _worker(conn: Any) -> None:
    """A load-generator process: runs phases it is sent until told to stop."""
    while True:
        message = conn.recv()
        if message is None:
            return
        try:
            conn.send(asyncio.run(_drive(**message)))
        except Exception as exc:  # report, never hang the parent
            conn.send({"fatal": f"{type(exc).__name__}: {exc}"})


class LoadGenerators:
    def __init__(self, processes: int) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # grpc and fork do not mix
        self._workers = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child,), daemon=True)
            proc.start()
            self._workers.append((proc, parent))

    def run(self, target: str, metadata: tuple[tuple[str, str], ...], requests: list[bytes], clients: int,
            warmup: float, duration: float, keep: list[float] | None = None, rate: float = 0.0) -> dict[str, Any]:
        """One phase (closed loop, or open loop at ``rate`` calls/s in all); ``keep`` receives the latencies."""
        used = self._workers[: max(1, min(len(self._workers), clients))]
        shares = [clients // len(used) + (1 if i < clients % len(used) else 0) for i in range(len(used))]
        for i, ((_, conn), tasks) in enumerate(zip(used, shares)):
            conn.send(dict(target=target, metadata=metadata, requests=requests, tasks=tasks, warmup=warmup,
                           duration=duration, offset=i * 104729, rate=rate * tasks / clients))
        results = [conn.recv() for _, conn in used]
        fatal = [r["fatal"] for r in results if "fatal" in r]
        if fatal:
            raise errors.Unavailable(f"a load generator failed: {fatal[0]}")
        latencies = [x for r in results for x in r["latencies"]]
        late = [x for r in results for x in r["late"]]
        if keep is not None:
            keep.extend(latencies)
        outcomes: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        for r in results:
            outcomes.update(r["outcomes"])
            failures.update(r["errors"])
        out = {"clients": clients, "client_processes": len(used), "mode": f"open loop at {rate:g}/s" if rate
               else "closed loop", "calls": len(latencies), "qps": round(len(latencies) / duration, 1),
               **percentiles(latencies), "outcomes": dict(outcomes), "errors": dict(failures)}
        if rate:
            out["rate"] = rate
            out["from_schedule"] = {k: v for k, v in percentiles(late).items() if k in ("p50_ms", "p90_ms", "p99_ms")}
        return out

    def close(self) -> None:
        for proc, conn in self._workers:
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(5)
            if proc.is_alive():
                proc.terminate()


# -- load and quality (this process) -----------------------------------------------------------------
def query_bytes(tenant: str, model: str, question: str) -> bytes:
    from ..transport.proto import pb

    return pb.QueryRequest(scope=pb.Scope(tenant=tenant, model=model),
                           messages=[pb.ChatMessage(role="user", content=question)]).SerializeToString()


async def load_entries(target: str, metadata: Any, tenant: str, model: str, w: Workload, batch: int,
                concurrency: int) -> dict[str, Any]:
    import grpc

    from ..transport.proto import pb, pb_grpc

    ids: list[str] = [""] * len(w.questions)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    starts = list(range(0, len(w.questions), batch))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.CacheServiceStub(channel)

        async def one(start: int) -> None:
            entries = [pb.CacheEntry(messages=[pb.ChatMessage(role="user", content=w.questions[i])],
                                     answer=w.answers[i])
                       for i in range(start, min(start + batch, len(w.questions)))]
            request = pb.InsertRequest(scope=pb.Scope(tenant=tenant, model=model), entries=entries)
            for attempt in range(3):  # a failed batch is counted, then sent again
                t0 = time.perf_counter()
                try:
                    response = await stub.Insert(request, metadata=metadata or None, timeout=300)
                except grpc.aio.AioRpcError as exc:
                    failures[exc.code().name] += 1
                    if attempt == 2:
                        raise
                    continue
                latencies.append(time.perf_counter() - t0)
                ids[start:start + len(entries)] = list(response.ids)
                return

        async def lane(k: int) -> None:
            for start in starts[k::concurrency]:
                await one(start)

        t0 = time.perf_counter()
        await asyncio.gather(*(lane(k) for k in range(concurrency)))
        seconds = time.perf_counter() - t0
    return {"entries": len(w.questions), "batch": batch, "concurrency": concurrency, "seconds": round(seconds, 2),
            "entries_per_s": round(len(w.questions) / seconds, 1), "errors": dict(failures),
            **{f"batch_{k}": v for k, v in percentiles(latencies).items()}, "ids": ids}


async def ask_quality(target: str, metadata: Any, tenant: str, model: str, w: Workload, ids: list[str],
                   concurrency: int = 4) -> dict[str, Any]:
    """Ask every semantic query once: right (its own entry), wrong (another), or missed."""
    import grpc

    from ..transport.proto import pb

    by_id = {entry_id: i for i, entry_id in enumerate(ids)}
    verdicts: list[str] = [""] * len(w.semantic)
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(QUERY_METHOD, request_serializer=None, response_deserializer=pb.QueryResponse.FromString)

        async def lane(k: int) -> None:
            for j in range(k, len(w.semantic), concurrency):
                question, expected = w.semantic[j]
                r = await call(query_bytes(tenant, model, question), metadata=metadata or None, timeout=60)
                verdicts[j] = "miss" if not r.hit else ("right" if by_id.get(r.id) == expected else "wrong")

        await asyncio.gather(*(lane(k) for k in range(concurrency)))
    return score(verdicts)


async def ask_answers(target: str, metadata: Any, tenant: str, model: str, questions: Sequence[str],
                      concurrency: int = 4) -> list[tuple[str, str]]:
    """What the server answers each question: (the entry's id, its answer), ("", "") for a miss. A restart
    that serves right answers every question as the server before it did."""
    import grpc

    from ..transport.proto import pb

    answers: list[tuple[str, str]] = [("", "")] * len(questions)
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(QUERY_METHOD, request_serializer=None, response_deserializer=pb.QueryResponse.FromString)

        async def lane(k: int) -> None:
            for j in range(k, len(questions), concurrency):
                r = await call(query_bytes(tenant, model, questions[j]), metadata=metadata or None, timeout=60)
                answers[j] = (r.id, r.answer) if r.hit else ("", "")

        await asyncio.gather(*(lane(k) for k in range(concurrency)))
    return answers


def same_answers(before: Sequence[tuple[str, str]], after: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """How many questions a restarted server answers as the one before it did (the same entry and answer, or a
    miss for a miss), and the first few that differ."""
    differ = [j for j, (a, b) in enumerate(zip(before, after)) if a != b]
    return {"queries": len(before), "same": len(before) - len(differ), "hits_before": sum(bool(a[0]) for a in before),
            "differ_at": differ[:10]}


def score(verdicts: Sequence[str]) -> dict[str, Any]:
    c = Counter(verdicts)
    right, wrong, miss = c["right"], c["wrong"], c["miss"]
    precision = right / (right + wrong) if right + wrong else 0.0
    recall = right / len(verdicts) if verdicts else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"queries": len(verdicts), "right": right, "wrong": wrong, "miss": miss,
            "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


async def clear_scope(target: str, metadata: Any, tenant: str, model: str) -> None:
    import grpc

    from ..transport.proto import pb, pb_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        await pb_grpc.CacheServiceStub(channel).Clear(
            pb.ClearRequest(scope=pb.Scope(tenant=tenant, model=model)), metadata=metadata or None, timeout=300)


# -- the command -------------------------------------------------------------------------------------
