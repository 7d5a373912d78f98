"""The server a bench measures: a `modelcache-svc serve` child process on free ports, its RSS,
and the stage timings read off its /metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import errors


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChildServer:
    """``modelcache-svc serve`` in a child process on free ports and a temporary data dir."""

    def __init__(self, data_dir: Path, extra: Sequence[str], environ: dict[str, str], timeout: float = 300) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        env = {**environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        args = [sys.executable, "-m", "modelcache_svc.cli", "serve", "--data-dir", str(data_dir),
                "--host", "127.0.0.1", "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
                "--resp-port", "0", "--admin-key", "",
                # The semantic and miss kinds measure the model: each question is asked many times here, and a
                # remembered vector would skip it. `bench-repeat` measures the repeated question.
                "--question-vector-cache-size", "0", *extra]
        self._log = open(data_dir.parent / "server.log", "w+", encoding="utf-8")  # noqa: SIM115
        started = time.monotonic()
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT, text=True)
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.metrics_url = f"http://127.0.0.1:{self.http_port}/metrics"
        while "modelcache-svc ready" not in self.output():
            if self.proc.poll() is not None:
                raise errors.Unavailable(f"the server exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            if time.monotonic() - started > timeout:
                self.stop()
                raise errors.Unavailable(f"the server was not ready after {timeout}s:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        self.startup_s = time.monotonic() - started

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def kill(self) -> None:
        """SIGKILL to the server and any children, as a crash of the machine or container would: no saved
        copy, no clean close."""
        if self.proc.poll() is None:
            for pid in sorted(descendants(self.proc.pid), reverse=True):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def rss_mb(pid: int | None) -> dict[str, float] | None:
    """VmRSS and VmHWM (peak) of a process, in MB."""
    if not pid:
        return None
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {}
    for key, name in (("VmRSS", "rss_mb"), ("VmHWM", "peak_rss_mb")):
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        if m:
            out[name] = round(int(m.group(1)) / 1024, 1)
    return out


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident pages) of every process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            out[int(stat.parent.name)] = (int(fields[1]), int(fields[21]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def descendants(pid: int, table: dict[int, tuple[int, int]] | None = None) -> set[int]:
    """The process and every process under it."""
    table = _processes() if table is None else table
    tree, grew = {pid}, True
    while grew:
        more = {c for c, (parent, _) in table.items() if parent in tree and c not in tree}
        tree |= more
        grew = bool(more)
    return tree


def tree_rss_mb(pid: int | None) -> float | None:
    """RSS of a process and all its descendants, MB (Milvus Lite 3 has none: it serves from threads in ours)."""
    table = _processes()
    if not pid or pid not in table:
        return None
    pages = sum(table[p][1] for p in descendants(pid, table) if p in table)
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


# -- /metrics ------------------------------------------------------------------------------------
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)')


def scrape(url: str | None) -> dict[tuple[str, str], float]:
    if not url:
        return {}
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def _delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], name: str,
           labels: str = "") -> float:
    return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)


def metrics_delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> dict[str, Any]:
    """Embedding batch sizes and mean stage times between two scrapes."""
    if not after:
        return {}
    batches = _delta(before, after, "modelcache_embedding_batch_size_count")
    texts = _delta(before, after, "modelcache_embedding_batch_size_sum")
    histogram: dict[str, int] = {}
    previous = 0.0
    for (name, labels), _ in sorted(after.items(), key=lambda kv: _le(kv[0][1])):
        if name != "modelcache_embedding_batch_size_bucket":
            continue
        cumulative = _delta(before, after, name, labels)
        le = _le(labels)
        if cumulative - previous > 0:
            histogram["+Inf" if le == float("inf") else f"<={le:g}"] = int(cumulative - previous)
        previous = cumulative
    stages = {}
    for (name, labels), _ in after.items():
        if name == "modelcache_stage_duration_seconds_count":
            n = _delta(before, after, name, labels)
            total = _delta(before, after, "modelcache_stage_duration_seconds_sum", labels)
            stage = re.search(r'stage="([^"]+)"', labels)
            if n > 0 and stage:
                stages[stage.group(1)] = {"count": int(n), "mean_ms": round(1000 * total / n, 3)}
    batch_ms = _delta(before, after, "modelcache_embedding_batch_duration_seconds_sum")
    return {
        "embedding_batches": int(batches),
        "embedding_texts": int(texts),
        "embedding_batch_mean": round(texts / batches, 2) if batches else None,
        "embedding_batch_ms_mean": round(1000 * batch_ms / batches, 2) if batches else None,
        "embedding_batch_histogram": histogram,
        "stages": stages,
    }


def _le(labels: str) -> float:
    m = re.search(r'le="([^"]+)"', labels)
    if not m:
        return -1.0
    return float("inf") if m.group(1) == "+Inf" else float(m.group(1))


# -- load generators (worker processes) ----------------------------------------------------------------
