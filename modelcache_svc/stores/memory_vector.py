"""The vector store in this process's memory: a throwaway cache (``memory://``) and the core's unit tests.

Answers the VectorStore calls as ``milvus_store.MilvusVectorStore`` does (tests/integration/
test_vector_stores.py runs both): one collection per (embedding model, dimension), so vectors of two
models are never compared; an id lives in one scope and context per collection (a write moves it);
a search reads only its (tenant, model, context) block, by numpy's exact cosine. No filter text is
ever built, so unlike Milvus nothing here needs to check the shape of an id or a context hash.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .base import VectorHit

Block = tuple[str, str, str]  # (tenant, model, context hash)


@dataclass(slots=True)
class _Collection:
    dim: int
    where: dict[str, Block] = field(default_factory=dict)  # id -> its block
    blocks: dict[Block, dict[str, np.ndarray]] = field(default_factory=dict)  # block -> id -> vector
    # A block's vectors stacked for search, built on first search after a write (writes come in batches).
    stacked: dict[Block, tuple[list[str], np.ndarray]] = field(default_factory=dict)

    def put(self, entry_id: str, block: Block, vector: np.ndarray) -> None:
        self.remove(entry_id)
        self.where[entry_id] = block
        self.blocks.setdefault(block, {})[entry_id] = vector
        self.stacked.pop(block, None)

    def remove(self, entry_id: str) -> None:
        block = self.where.pop(entry_id, None)
        if block is None:
            return
        rows = self.blocks[block]
        del rows[entry_id]
        if not rows:
            del self.blocks[block]
        self.stacked.pop(block, None)

    def matrix(self, block: Block) -> tuple[list[str], np.ndarray]:
        found = self.stacked.get(block)
        if found is None:
            rows = self.blocks[block]
            found = self.stacked[block] = (list(rows), np.stack(list(rows.values())))
        return found


def _normalised(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    v = v.reshape(1, -1) if v.ndim == 1 else v
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: np.ndarray = v / norms
    return normalised


class MemoryVectorStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._collections: dict[tuple[str, int], _Collection] = {}

    def _collection(self, embed_model: str, dim: int) -> _Collection:
        """Under the lock: the collection, created empty when new (as Milvus's ensure_collection)."""
        key = (embed_model, int(dim))
        found = self._collections.get(key)
        if found is None:
            found = self._collections[key] = _Collection(int(dim))
        return found

    def _of_model(self, embed_model: str) -> list[_Collection]:
        """Under the lock: the collections of embed_model, whatever their dimension."""
        return [c for (model, _), c in self._collections.items() if model == embed_model]

    def ensure_collection(self, embed_model: str, dim: int) -> None:
        with self._lock:
            self._collection(embed_model, dim)

    def insert(
        self, embed_model: str, tenant: str, model: str, items: Sequence[tuple[str, str]], vectors: np.ndarray
    ) -> None:
        if not items:
            return
        rows = _normalised(vectors)
        with self._lock:
            collection = self._collection(embed_model, rows.shape[1])
            for (entry_id, ctx), row in zip(items, rows, strict=True):
                collection.put(entry_id, (tenant, model, ctx), row.copy())

    def search(
        self, embed_model: str, tenant: str, model: str, context_hash: str, vector: np.ndarray, top_k: int
    ) -> list[VectorHit]:
        query = _normalised(vector)[0]
        with self._lock:
            collection = self._collection(embed_model, query.shape[0])
            block = (tenant, model, context_hash)
            if top_k <= 0 or block not in collection.blocks:
                return []
            ids, matrix = collection.matrix(block)
        sims = matrix @ query
        # Stable: among equal similarities, the older write first.
        best = np.argsort(-sims, kind="stable")[:top_k]
        return [VectorHit(id=ids[i], similarity=min(float(sims[i]), 1.0)) for i in best]

    def delete(self, tenant: str, model: str, ids: Sequence[str]) -> None:
        with self._lock:
            for collection in self._collections.values():
                for entry_id in ids:
                    block = collection.where.get(entry_id)
                    if block is not None and block[:2] == (tenant, model):
                        collection.remove(entry_id)

    def delete_ids(self, ids: Sequence[str], except_model: str | None = None) -> None:
        with self._lock:
            for (embed_model, _), collection in self._collections.items():
                if embed_model != except_model:
                    for entry_id in ids:
                        collection.remove(entry_id)

    def clear(self, tenant: str, model: str | None) -> None:
        with self._lock:
            for collection in self._collections.values():
                gone = [i for i, (t, m, _) in collection.where.items() if t == tenant and model in (None, m)]
                for entry_id in gone:
                    collection.remove(entry_id)

    def ids_of_scope(self, embed_model: str, tenant: str, model: str) -> list[str]:
        with self._lock:
            return [i for c in self._of_model(embed_model) for i, block in c.where.items()
                    if block[:2] == (tenant, model)]

    def existing_ids(self, embed_model: str, dim: int, ids: Sequence[str]) -> set[str]:
        with self._lock:
            collection = self._collection(embed_model, dim)
            return {i for i in ids if i in collection.where}

    def iter_tenant_ids(self, embed_model: str, dim: int, tenant: str, batch: int = 1000) -> Iterator[list[str]]:
        with self._lock:  # a snapshot: the caller deletes while it walks the batches
            ids = [i for i, block in self._collection(embed_model, dim).where.items() if block[0] == tenant]
        size = max(batch, 1)
        for start in range(0, len(ids), size):
            yield ids[start:start + size]

    def vectors_of(self, embed_model: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        with self._lock:
            out: dict[str, np.ndarray] = {}
            for collection in self._of_model(embed_model):
                for entry_id in ids:
                    block = collection.where.get(entry_id)
                    if block is not None:
                        out[entry_id] = collection.blocks[block][entry_id].copy()
            return out

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
