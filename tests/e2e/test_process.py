"""The service as an operator runs it: `modelcache-svc serve` in its own process."""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import pytest

from modelcache_svc import errors
from modelcache_svc.client import CacheClient, Entry
from tests.servers import ProcessServer, kill_during_inserts

MODEL = "m1"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def serve_args(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir), "--http-port", "0", "--resp-port", "0"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_kill_9_mid_insert_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    server = ProcessServer(serve_args(tmp_path / "data"))
    acknowledged = kill_during_inserts(server, MODEL, batch_size=16, at_least=64)
    assert len(acknowledged) >= 64

    restarted = ProcessServer(serve_args(tmp_path / "data"))
    try:
        with restarted.client() as c:
            for question, entry_id in acknowledged.items():
                hit = c.query("default", MODEL, user(question))
                assert (hit.match, hit.id) == ("exact", entry_id)
            # Both stores agree after repair (the start-up pass may already have done it).
            report = c.repair()
            assert report["vectors_removed"] == 0
            assert c.repair() == {**report, "vectors_added": 0, "vectors_removed": 0}
            # Semantic hits are served for acknowledged entries, from live rows only.
            sample = list(acknowledged.items())[:5]
            for question, entry_id in sample:
                hit = c.query("default", MODEL, user(question.replace("what is", "what's")))
                assert hit.hit and hit.id in acknowledged.values()
    finally:
        restarted.terminate()


def test_sigterm_drains_in_flight_calls_and_exits_cleanly(tmp_path: Path) -> None:
    server = ProcessServer(serve_args(tmp_path / "data"))
    with server.client() as c:
        c.insert("default", MODEL, user("still answered during shutdown?"), "yes")
    results: list[str] = []

    def ask() -> None:
        with CacheClient(server.target, timeout=30, retries=0) as c:
            for _ in range(50):
                try:
                    results.append(c.query("default", MODEL, user("still answered during shutdown?")).answer)
                except errors.CacheError as exc:
                    results.append(f"{type(exc).__name__}:{getattr(exc, 'code', None)}:{exc}")
                    return

    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(0.05)
    assert server.terminate(timeout=30) == 0
    thread.join(30)
    assert "yes" in results
    # Each call finished, or was refused (UNAVAILABLE, or CANCELLED when it reached a server
    # already shutting down): never a wrong or half answer.
    refused = ("Unavailable", "CacheError:StatusCode.CANCELLED")
    assert all(r == "yes" or r.startswith(refused) for r in results), [r for r in results if r != "yes"]
    assert "Traceback" not in server.output


@pytest.mark.timeout(240)
def test_load_32_clients_mixed_traffic(tmp_path: Path) -> None:
    seconds = float(os.environ.get("MODELCACHE_LOAD_SECONDS", "30"))
    server = ProcessServer(serve_args(tmp_path / "data"))
    questions = [f"How do I do task number {i} in project {i % 7}?" for i in range(200)]
    with server.client(timeout=60) as c:
        for start in range(0, len(questions), 50):
            c.insert_many("default", MODEL, [Entry(user(q), f"answer {i}") for i, q in enumerate(questions[start:start + 50], start)])
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    rss: list[float] = []
    end = time.monotonic() + seconds
    warm = time.monotonic() + min(10.0, seconds / 4)

    def client(n: int) -> None:
        with CacheClient(server.target, timeout=30, retries=0) as c:
            i = n
            while time.monotonic() < end:
                i += 32
                kind = i % 4
                started = time.perf_counter()
                try:
                    if kind == 0:
                        c.query("default", MODEL, user(questions[i % 200]))
                    elif kind == 1:
                        c.query("default", MODEL, user(questions[i % 200].replace("How do I", "How can I")))
                    elif kind == 2:
                        c.query("default", MODEL, user(f"An unrelated question {i} about the weather"))
                    else:
                        c.insert("default", MODEL, user(f"New question {n}-{i} about topic {i % 11}?"), "new")
                except errors.CacheError as exc:
                    with lock:
                        failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    while time.monotonic() < end:
        if time.monotonic() > warm:
            rss.append(rss_mb(server.proc.pid))
        time.sleep(1)
    for t in threads:
        t.join(60)
    server.terminate()
    assert failures == []
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    start_rss, end_rss = statistics.mean(rss[:3]), statistics.mean(rss[-3:])
    print(f"\nload: {len(latencies)} calls in {seconds:.0f}s, p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, RSS after warm-up {start_rss:.0f} MB -> end {end_rss:.0f} MB")
    assert end_rss < start_rss * 1.25 + 30, "RSS grows under steady load"
