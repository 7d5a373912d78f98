"""The benchmark's bulk-load path: N entries of one scope written straight to the stores.

Loading a million entries through Insert runs every question through the model (over an hour on
this 2-core host). For ``bench-scale`` only, entries are written straight to the stores instead,
as Insert would write them (a scalar row, then its vector), while the queries still go through
the real service over gRPC.

The vectors, honestly described:
- the first ``real`` entries are real questions (GPTCache's benchmark questions padded with Quora
  questions, as ``bench`` uses) with their real embeddings by the server's own model, computed
  once in batches and cached on disk (``cache_dir``);
- every further entry is a synthetic vector: a mix of two real question vectors (weight 0.55-0.9
  on the first) plus Gaussian noise, normalised. Its row's question is the first question with
  a variant number, so exact keys stay distinct. These rows make the scope big and its vector
  neighbourhoods crowded (``describe_vectors`` prints how close), but they are not real questions.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..cache.keys import chat_key
from ..records import EntryRow, Message, TenantConfig
from ..config import Limits

BATCH = 5_000
NOISE = 0.45  # norm of the Gaussian noise added to a mix of two unit vectors


@dataclass
class RealSet:
    questions: list[str]
    vectors: np.ndarray  # (len(questions), dim), unit rows, by the server's model
    semantic: list[tuple[str, int]]  # (paraphrase asked, index of the question it should hit)
    model_id: str


def real_set(count: int, eval_dir: Path | None, embedder: Any, cache_dir: Path,
             progress: Callable[[int], None] | None = None) -> RealSet:
    """``count`` real questions and their vectors (cached on disk by text and model)."""
    from .workload import build_workload

    w = build_workload(count, eval_dir)
    digest = hashlib.sha256(json.dumps([embedder.model_id, w.questions]).encode()).hexdigest()[:16]
    path = cache_dir / f"real-{len(w.questions)}-{digest}.npy"
    if path.is_file():
        vectors = np.load(path)
    else:
        parts = []
        for start in range(0, len(w.questions), 64):
            parts.append(np.asarray(embedder.encode(w.questions[start:start + 64]), dtype=np.float32))
            if progress:
                progress(len(parts[-1]))
        vectors = _unit(np.concatenate(parts))
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return RealSet(w.questions, vectors, w.semantic, embedder.model_id)


def synthetic(real: RealSet, start: int, count: int, seed: int = 11) -> tuple[list[int], np.ndarray]:
    """Vectors of entries start..start+count-1 (those past the real ones): which real question each
    mixes first, and the unit vectors. Deterministic per entry range."""
    rng = np.random.default_rng([seed, start])
    n, dim = real.vectors.shape
    first = rng.integers(0, n, count)
    second = rng.integers(0, n, count)
    weight = rng.uniform(0.55, 0.9, (count, 1)).astype(np.float32)
    noise = rng.standard_normal((count, dim)).astype(np.float32) * (NOISE / np.sqrt(dim))
    mixed = weight * real.vectors[first] + (1 - weight) * real.vectors[second] + noise
    return [int(i) for i in first], _unit(mixed)


def entry_batches(real: RealSet, total: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """(questions, vectors) of every entry in batches: the real ones first, then synthetic ones."""
    n = min(total, len(real.questions))
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        yield real.questions[start:stop], real.vectors[start:stop]
    for start in range(n, total, BATCH):
        count = min(BATCH, total - start)
        first, vectors = synthetic(real, start, count)
        yield [f"{real.questions[f]} (variant {start + j})" for j, f in enumerate(first)], vectors


def describe_vectors(real: RealSet, sample: int = 500) -> dict[str, float]:
    """How close the synthetic vectors sit: cosine of each to its first real question, and of real
    questions to their nearest other real question."""
    first, vectors = synthetic(real, 10**9, sample)
    to_first = (vectors * real.vectors[first]).sum(1)
    sims = real.vectors[:sample] @ real.vectors.T
    np.fill_diagonal(sims[:, :sample], -1)
    return {"synthetic_to_its_question_median": round(float(np.median(to_first)), 3),
            "real_nearest_real_median": round(float(np.median(sims.max(1))), 3)}


def load(scalar: Any, vector: Any, real: RealSet, total: int, tenant: str, model: str,
         progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write ``total`` entries of scope (tenant, model) straight to the stores: scalar rows, then vectors.
    Returns every id in load order (the real entries first: to score hits) and the rates."""
    limits = Limits()
    if scalar.get_tenant(tenant) is None:
        scalar.create_tenant(tenant, TenantConfig(), time.time())
    answer = ("This cached answer stands in for a model's reply of a few sentences, long enough to weigh "
              "what a real answer weighs in the stores.")
    ids: list[str] = []
    scalar_s = vector_s = 0.0
    started = time.perf_counter()
    written = 0
    for questions, vectors in entry_batches(real, total):
        now = time.time()
        rows, items = [], []
        for q in questions:
            key = chat_key([Message("user", q)], limits)
            entry_id = uuid.uuid4().hex
            rows.append(EntryRow(id=entry_id, tenant=tenant, model=model, context_hash=key.context_hash,
                                 exact_key=key.exact_key, question=key.question,
                                 messages_json=json.dumps([["user", key.question]], ensure_ascii=False),
                                 answer=f"[{written + len(rows)}] {answer}", metadata_json="{}",
                                 embed_model=real.model_id, created_at=now, expires_at=None, last_hit_at=now))
            items.append((entry_id, key.context_hash))
        t0 = time.perf_counter()
        stored = scalar.upsert_entries(rows)
        t1 = time.perf_counter()
        vector.insert(real.model_id, tenant, model, [(sid, ctx) for (sid, _), (_, ctx) in zip(stored, items)],
                      vectors)
        t2 = time.perf_counter()
        scalar_s += t1 - t0
        vector_s += t2 - t1
        ids.extend(sid for sid, _ in stored)
        written += len(rows)
        if progress:
            progress(len(rows))
    seconds = time.perf_counter() - started
    return {"entries": written, "seconds": round(seconds, 1), "entries_per_s": round(written / seconds, 1),
            "scalar_s": round(scalar_s, 1), "vector_s": round(vector_s, 1), "ids": ids}


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return v / norms
