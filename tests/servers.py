"""Real servers for tests: the whole service on a free port, in a thread of
this process (sharing one loaded model) or as a `modelcache-svc serve` process."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from modelcache_svc.app import Service, build_core
from modelcache_svc.client import CacheClient
from modelcache_svc.config import DEFAULT_CJK_MODEL, Settings
from modelcache_svc.embedding import Embedder, load_embedder

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def shared_cjk_embedder() -> Embedder:
    """The CJK model, loaded once per test process and shared by the servers of this process."""
    return load_embedder("onnx", DEFAULT_CJK_MODEL)


@functools.cache
def shared_verifiers() -> tuple[Any, ...]:
    """The default verifiers (English, CJK, other languages), loaded once per test process."""
    from modelcache_svc.app import load_verifiers

    return load_verifiers(Settings())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """The service on its own event loop in a background thread."""

    def __init__(self, settings: Settings, embedder: Embedder, wait: bool = True) -> None:
        """``wait=False``: return once the listeners are up, the start still reading the vectors back
        (``starting`` is its future)."""
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        cjk = shared_cjk_embedder() if settings.embedding_model_cjk == DEFAULT_CJK_MODEL else None
        default = Settings()
        verifiers = None
        if (settings.verifier_model, settings.verifier_cjk_model, settings.verifier_multilingual_model) == (
                default.verifier_model, default.verifier_cjk_model, default.verifier_multilingual_model):
            english, zh, multilingual = shared_verifiers()
            verifiers = (english, zh if settings.cjk_model else None,
                         multilingual if settings.multilingual_model else None)
        self.service = Service(settings, build_core(settings, embedder, cjk, verifiers))
        self.starting = asyncio.run_coroutine_threadsafe(self.service.start(), self.loop)
        if wait:
            self.starting.result(120)
        deadline = time.monotonic() + 120
        while not self.service.grpc_port and not self.starting.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.starting.done():
            self.starting.result()  # a start that failed says why
        self.target = f"127.0.0.1:{self.service.grpc_port}"

    @property
    def core(self) -> Any:
        return self.service.core

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def client(self, api_key: str | None = None, **kwargs: Any) -> CacheClient:
        return CacheClient(self.target, api_key=api_key, **kwargs)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        try:
            self.call(self.service.stop(0.5))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


class ProcessServer:
    """`modelcache-svc serve` in a child process, as an operator runs it."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, ready_timeout: float = 120) -> None:
        self.grpc_port = free_port()
        self.args = [*args, "--grpc-port", str(self.grpc_port)]
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelcache_svc.cli", "serve", *self.args],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.target = f"127.0.0.1:{self.grpc_port}"
        self._lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.wait_ready(ready_timeout)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        channel = grpc.insecure_channel(self.target)
        # One future for the whole wait: a timed-out one's polling thread would outlive channel.close().
        connected = grpc.channel_ready_future(channel)
        listening = False  # the port answers before the vectors are read back: then wait for the line
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output}")
                if not listening:
                    try:
                        connected.result(timeout=1)
                        listening = True
                    except grpc.FutureTimeoutError:
                        pass
                if listening and "modelcache-svc ready" in self.output:
                    return
                time.sleep(0.2)
        finally:
            connected.cancel()
            channel.close()
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.output}")

    def client(self, api_key: str | None = None, **kwargs: Any) -> CacheClient:
        return CacheClient(self.target, api_key=api_key, **kwargs)

    def terminate(self, timeout: float = 30) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def kill_during_inserts(server: ProcessServer, model: str, batch_size: int, at_least: int) -> dict[str, str]:
    """Insert batches of numbered questions from another thread, SIGKILL the server once at least
    ``at_least`` entries are acknowledged, and return {question: entry id} of every acknowledged one."""
    from modelcache_svc import errors
    from modelcache_svc.client import Entry

    acknowledged: dict[str, str] = {}
    stop = threading.Event()

    def writer() -> None:
        with CacheClient(server.target, timeout=10, retries=0) as c:
            batch = 0
            while not stop.is_set():
                asked = [f"Batch {batch} question {i}: what is {batch} times {i}?" for i in range(batch_size)]
                entries = [Entry([{"role": "user", "content": q}], f"{batch * i}") for i, q in enumerate(asked)]
                try:
                    ids = c.insert_many("default", model, entries)
                except errors.CacheError:
                    return  # the server died under us: this batch was never acknowledged
                acknowledged.update(zip(asked, ids))
                batch += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(acknowledged) < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        server.kill()  # SIGKILL, mid-stream: the writer's next batch is cut off
        stop.set()
        thread.join(20)
    return acknowledged
