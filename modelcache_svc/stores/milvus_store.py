"""Vectors in Milvus: Milvus Lite (a local file) or a Milvus server (by URI).

Layout: one collection per (namespace, embedding model), so vectors of two
models are never compared. Rows carry the entry id, a scope hash (tenant +
model), a tenant hash and the context hash. Names never reach a filter
expression: every filter is built from hex digests and validated entry ids.

Milvus Lite walks every row of the partitions it searches, so there each scope
gets its own partition and a search names it. A Milvus server instead uses the
scope hash as partition key (it caps explicit partitions per collection, and
a partition key scales to many scopes).

Server mode, for several replicas over one Milvus:
- Writes are delete-by-id then insert, never upsert: Milvus before 2.3.10
  routes an upserted row by the wrong field (milvus-io/milvus#30607, fixed by
  #30772), so a filter on the partition key never finds it again (no semantic
  hit, and Clear leaves it behind). The PyPI `milvus` 2.3.5 server has that bug.
- Searches use the collection's Bounded consistency: a vector written through
  any replica becomes searchable within about 0.2-0.6 s (measured), at most
  the server's `common.gracefulTime` (5 s by default). Until then the query is a
  miss or an exact hit; it is never wrong, since the scalar row decides.
- Two replicas starting together may both create a collection: the loser of
  that race finds it and loads it instead of failing.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import InvalidArgument, Unavailable
from .base import VectorHit

T = TypeVar("T")
_HEX = re.compile(r"^[0-9a-f]{1,64}$")
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def scope_hash(tenant: str, model: str) -> str:
    return hashlib.sha256(f"{tenant}\x00{model}".encode()).hexdigest()[:32]


def tenant_hash(tenant: str) -> str:
    return hashlib.sha256(tenant.encode()).hexdigest()[:32]


def _quoted_ids(ids: Sequence[str]) -> str:
    for i in ids:
        if not _HEX.match(i):
            raise InvalidArgument(f"entry id {i[:80]!r} is not an id this service issued")
    return "[" + ", ".join(f'"{i}"' for i in ids) + "]"


class MilvusVectorStore:
    def __init__(self, uri: str, namespace: str = "", *, timeout: float = 5.0, token: str = "") -> None:
        if namespace and not _NAMESPACE.match(namespace):
            raise InvalidArgument("namespace must match ^[a-z][a-z0-9_]{0,31}$")
        self._lite = not uri.startswith(("http://", "https://", "tcp://", "grpc://"))
        self._prefix = f"{namespace}_mc_" if namespace else "mc_"
        self._timeout = timeout
        self._lock = threading.RLock()
        self._known_collections: set[str] = set()
        self._known_partitions: set[tuple[str, str]] = set()
        from pymilvus import MilvusClient

        if self._lite:
            Path(uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            uri = str(Path(uri).expanduser().resolve())
        try:
            self._client = MilvusClient(uri=uri, token=token, timeout=timeout)
        except Exception as exc:
            raise Unavailable(f"milvus: cannot connect to {uri}: {exc}") from exc

    @property
    def is_lite(self) -> bool:
        return self._lite

    # -- helpers -----------------------------------------------------------------
    def collection_name(self, embed_model: str, dim: int) -> str:
        digest = hashlib.sha256(embed_model.encode()).hexdigest()[:12]
        return f"{self._prefix}{digest}_{dim}"

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            if self._lite:
                # Milvus Lite runs in this process and is not made for concurrent callers.
                with self._lock:
                    return fn()
            return fn()
        except (InvalidArgument, Unavailable):
            raise
        except Exception as exc:
            raise Unavailable(f"milvus: {type(exc).__name__}: {exc}") from exc

    def _our_collections(self) -> list[str]:
        pattern = re.compile("^" + re.escape(self._prefix) + r"[0-9a-f]{12}_\d+$")
        names = self._call(lambda: self._client.list_collections())
        return [n for n in names if pattern.match(n)]

    def ensure_collection(self, embed_model: str, dim: int) -> str:
        name = self.collection_name(embed_model, dim)
        if name in self._known_collections:
            return name

        def create() -> None:
            if self._client.has_collection(name):
                self._client.load_collection(name)
                return
            try:
                self._create_collection(name, dim)
            except Exception:
                # Another replica created it between our check and our create.
                if not self._client.has_collection(name):
                    raise
                self._client.load_collection(name)

        self._call(create)
        self._known_collections.add(name)
        return name

    def _create_collection(self, name: str, dim: int) -> None:
        from pymilvus import DataType

        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("scope", DataType.VARCHAR, max_length=32, is_partition_key=not self._lite)
        schema.add_field("tenant", DataType.VARCHAR, max_length=32)
        schema.add_field("ctx", DataType.VARCHAR, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self._client.prepare_index_params()
        index.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 200})
        kwargs: dict[str, Any] = {}
        if not self._lite:
            kwargs["consistency_level"] = "Bounded"
        self._client.create_collection(name, schema=schema, index_params=index, **kwargs)

    def _partition(self, collection: str, scope: str, create: bool) -> str | None:
        if not self._lite:
            return None
        part = f"s_{scope}"
        if (collection, part) in self._known_partitions:
            return part

        def ensure() -> bool:
            if self._client.has_partition(collection, part):
                return True
            if not create:
                return False
            self._client.create_partition(collection, part)
            return True

        if self._call(ensure):
            self._known_partitions.add((collection, part))
            return part
        return None

    # -- the VectorStore interface -------------------------------------------------
    def insert(
        self,
        embed_model: str,
        tenant: str,
        model: str,
        items: Sequence[tuple[str, str]],
        vectors: np.ndarray,
    ) -> None:
        if not items:
            return
        collection = self.ensure_collection(embed_model, int(vectors.shape[1]))
        scope = scope_hash(tenant, model)
        thash = tenant_hash(tenant)
        part = self._partition(collection, scope, create=True)
        rows = [
            {"id": entry_id, "scope": scope, "tenant": thash, "ctx": ctx, "vector": vectors[i].tolist()}
            for i, (entry_id, ctx) in enumerate(items)
        ]
        if self._lite:
            kwargs: dict[str, Any] = {"partition_name": part} if part else {}
            self._call(lambda: self._client.upsert(collection, rows, **kwargs))
            return
        ids = [entry_id for entry_id, _ in items]
        _quoted_ids(ids)

        def write() -> None:
            # Not upsert (see the module's note): delete any older vector of these ids, then insert.
            self._client.delete(collection, ids=ids)
            self._client.insert(collection, rows)

        self._call(write)

    def search(
        self,
        embed_model: str,
        tenant: str,
        model: str,
        context_hash: str,
        vector: np.ndarray,
        top_k: int,
    ) -> list[VectorHit]:
        collection = self.ensure_collection(embed_model, int(vector.shape[-1]))
        scope = scope_hash(tenant, model)
        if not _HEX.match(context_hash):
            raise InvalidArgument("bad context hash")
        part = self._partition(collection, scope, create=False)
        if self._lite and part is None:
            return []  # nothing was ever written to this scope
        kwargs: dict[str, Any] = {"partition_names": [part]} if part else {}
        result = self._call(
            lambda: self._client.search(
                collection,
                data=[vector.tolist()],
                limit=top_k,
                filter=f'scope == "{scope}" and ctx == "{context_hash}"',
                search_params={"metric_type": "COSINE", "params": {"ef": max(64, top_k)}},
                output_fields=["id"],
                **kwargs,
            )
        )
        hits = [VectorHit(id=str(h["id"]), similarity=float(h["distance"])) for h in result[0]] if result else []
        hits.sort(key=lambda h: h.similarity, reverse=True)
        return hits

    def delete(self, tenant: str, model: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        expr = f'scope == "{scope_hash(tenant, model)}" and id in {_quoted_ids(ids)}'
        for collection in self._our_collections():
            self._call(lambda c=collection: self._client.delete(c, filter=expr))

    def delete_ids(self, ids: Sequence[str], except_model: str | None = None) -> None:
        """Delete these ids from every collection (but the one of except_model)."""
        if not ids:
            return
        expr = f"id in {_quoted_ids(ids)}"
        keep = self.collection_name(except_model, 0).rsplit("_", 1)[0] + "_" if except_model else None
        for collection in self._our_collections():
            if keep is not None and collection.startswith(keep):
                continue
            self._call(lambda c=collection: self._client.delete(c, filter=expr))

    def clear(self, tenant: str, model: str | None) -> None:
        if model is None:
            expr = f'tenant == "{tenant_hash(tenant)}"'
        else:
            expr = f'scope == "{scope_hash(tenant, model)}"'
        for collection in self._our_collections():
            self._call(lambda c=collection: self._client.delete(c, filter=expr))

    def ids_of_scope(self, embed_model: str, tenant: str, model: str) -> list[str]:
        names = [n for n in self._our_collections() if n.startswith(self.collection_name(embed_model, 0)[:-1])]
        scope = scope_hash(tenant, model)
        out: list[str] = []
        for collection in names:
            rows = self._call(
                lambda c=collection: self._client.query(c, filter=f'scope == "{scope}"', output_fields=["id"], limit=16384)
            )
            out.extend(str(r["id"]) for r in rows)
        return out

    def existing_ids(self, embed_model: str, dim: int, ids: Sequence[str]) -> set[str]:
        """Which of these entry ids have a vector in the collection of embed_model."""
        if not ids:
            return set()
        collection = self.ensure_collection(embed_model, dim)
        expr = f"id in {_quoted_ids(ids)}"
        rows = self._call(lambda: self._client.query(collection, filter=expr, output_fields=["id"], limit=len(ids)))
        return {str(r["id"]) for r in rows}

    def iter_tenant_ids(self, embed_model: str, dim: int, tenant: str, batch: int = 1000) -> Iterator[list[str]]:
        """Every entry id with a vector of a tenant, in batches (repair's view of the vector side)."""
        collection = self.ensure_collection(embed_model, dim)
        expr = f'tenant == "{tenant_hash(tenant)}"'
        iterator = self._call(
            lambda: self._client.query_iterator(collection, batch_size=batch, filter=expr, output_fields=["id"])
        )
        try:
            while True:
                rows = self._call(iterator.next)
                if not rows:
                    return
                yield [str(r["id"]) for r in rows]
        finally:
            self._call(iterator.close)

    def ping(self) -> None:
        self._call(lambda: self._client.list_collections())

    def close(self) -> None:
        try:
            with self._lock:
                self._client.close()
        except Exception:
            pass
