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

Lite mode, for speed (Milvus Lite 3.2.2 is pure Python: a search assembles
every row of the searched partition in Python, tens to hundreds of ms at 10k
rows): Milvus Lite stays the store of record, written first, but reads
(search, existing_ids, ids of a scope or tenant) are answered by an exact
in-process copy of the vectors (``memory_index.MemoryIndex``), loaded from
Milvus Lite when a collection is first used and kept in step by every write
through this class. That copy is exact because Milvus Lite is single-process:
its data dir is locked, so every write to it goes through this process (one
copy per file, shared by every store of this process on that file). New Lite
collections get a FLAT index: Milvus Lite's own index is never searched, and
building HNSW on every flush (and on close) cost seconds per 10k rows. Nor is a
Lite collection kept loaded (its FLAT index in memory: 1.5 GB and 2-8 s of a start
at a million 384-d rows): it is loaded only while it is read back (``_read_rows``).
Past ``ApproxParams.min_entries`` rows of one (scope, context), the in-process copy serves a block
through an HNSW graph built in the background (``approx_index``). Every write is appended to a journal
before it reaches Milvus Lite, and a start reads the saved copy plus the journal, not Milvus Lite
(``lite_copy`` states the invariant; ``journal``, ``index_snapshot`` the files).
On a Milvus server, the index type and its build and search parameters are the caller's
(``milvus_index_type``, ``milvus_index_params``, ``milvus_search_params`` in Settings).
Lite flushes its memtable itself only at 128 MB (about 75k rows of 384-d), in
the writer's call: 10+ s and a 1.4 GB peak. Here a background thread flushes
every FLUSH_ROWS written rows instead: short, off the request path, and the
memory stays flat.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import InvalidArgument, Unavailable
from . import index_snapshot, journal
from .approx_index import ApproxParams
from .base import VectorHit
from .lite_copy import FOLD_BYTES, LiteCopy, Rows
from .memory_index import MemoryIndex

T = TypeVar("T")
log = logging.getLogger("modelcache_svc.milvus")
FLUSH_ROWS = 16_384
_HEX = re.compile(r"^[0-9a-f]{1,64}$")
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def scope_hash(tenant: str, model: str) -> str:
    return hashlib.sha256(f"{tenant}\x00{model}".encode()).hexdigest()[:32]


def tenant_hash(tenant: str) -> str:
    return hashlib.sha256(tenant.encode()).hexdigest()[:32]


_FIELDS = ["id", "scope", "tenant", "ctx", "vector"]
# The fields every search filters on, indexed on a Milvus server when it makes the collection: INVERTED where
# the server has it (2.4+, Milvus Lite's server), else Trie (2.3's VARCHAR index). Unindexed, the filter cost
# 5.5-6.4 ms a search at a million rows of one scope (tests/perf/milvus_filter_probe.py; docs/operations.md).
SCALAR_INDEXED = ("scope", "ctx")
SCALAR_INDEX_TYPES = ("INVERTED", "Trie")
# What a load of a collection says while its creator has not made the vector index yet.
_NO_INDEX_YET = ("index not found", "no vector index")
_HEXDIGITS = "0123456789abcdef"
_PAGE_ROWS = 20_000
# Lite: one copy (index, journals, lock) per Milvus Lite file, shared by every store of this process on it.
_SHARED: dict[str, LiteCopy] = {}
_SHARED_LOCK = threading.Lock()


def _acquire_shared(path: str, approx: ApproxParams | None, sync: bool, fold_bytes: int) -> LiteCopy:
    with _SHARED_LOCK:
        copy = _SHARED.get(path)
        if copy is None:
            copy = _SHARED[path] = LiteCopy(path, approx, sync=sync, fold_bytes=fold_bytes)
        copy.users += 1
        return copy


def _release_shared(path: str) -> bool:
    """True when this was the last store of this process on that file."""
    with _SHARED_LOCK:
        copy = _SHARED.get(path)
        if copy is not None:
            copy.users -= 1
            if copy.users <= 0:
                del _SHARED[path]
                return True
        return False


def _id_ranges(rows: int) -> list[str]:
    """Filters that split lowercase-hex ids into pages of about _PAGE_ROWS rows."""
    digits = 0
    while rows > _PAGE_ROWS * 16**digits and digits < 3:
        digits += 1
    if digits == 0:
        return [""]
    prefixes = [""]
    for _ in range(digits):
        prefixes = [p + h for p in prefixes for h in _HEXDIGITS]
    out = []
    for p in prefixes:
        # The next prefix of the same length, "g" closing the top one ("f" < "g" in ASCII).
        nxt = p[:-1] + ("g" if p[-1] == "f" else _HEXDIGITS[_HEXDIGITS.index(p[-1]) + 1])
        out.append(f'id >= "{p}" and id < "{nxt}"')
    return out


def _quoted_ids(ids: Sequence[str]) -> str:
    for i in ids:
        if not _HEX.match(i):
            raise InvalidArgument(f"entry id {i[:80]!r} is not an id this service issued")
    return "[" + ", ".join(f'"{i}"' for i in ids) + "]"


DEFAULT_INDEX_TYPE = "HNSW"
DEFAULT_INDEX_PARAMS: dict[str, Any] = {"M": 16, "efConstruction": 200}
DEFAULT_SEARCH_PARAMS: dict[str, Any] = {"ef": 64}


class MilvusVectorStore:
    def __init__(self, uri: str, namespace: str = "", *, timeout: float = 5.0, token: str = "",
                 approx: ApproxParams | None = None, index_type: str = DEFAULT_INDEX_TYPE,
                 index_params: dict[str, Any] | None = None, search_params: dict[str, Any] | None = None,
                 journal_sync: bool = True, journal_fold_bytes: int = FOLD_BYTES) -> None:
        """Lite: ``journal_sync`` fdatasyncs the journal before a write returns (False: in the OS only,
        safe against a kill -9, not a host crash); ``journal_fold_bytes`` of journal start a fold."""
        if namespace and not _NAMESPACE.match(namespace):
            raise InvalidArgument("namespace must match ^[a-z][a-z0-9_]{0,31}$")
        self._index_type = index_type
        self._index_params = dict(DEFAULT_INDEX_PARAMS if index_params is None else index_params)
        self._search_params = dict(DEFAULT_SEARCH_PARAMS if search_params is None else search_params)
        self._lite = not uri.startswith(("http://", "https://", "tcp://", "grpc://"))
        self._prefix = f"{namespace}_mc_" if namespace else "mc_"
        self._timeout = timeout
        self._lock = threading.RLock()
        self._known_collections: set[str] = set()
        self._known_partitions: set[tuple[str, str]] = set()
        self._index: MemoryIndex | None = None
        self._copy: LiteCopy | None = None
        self._path = ""
        self._unflushed: dict[str, int] = {}  # Lite: rows written per collection since its last flush
        self._flusher: threading.Thread | None = None
        from pymilvus import MilvusClient

        if self._lite:
            Path(uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            uri = self._path = str(Path(uri).expanduser().resolve())
            self._copy = _acquire_shared(self._path, approx, journal_sync, journal_fold_bytes)
            self._index, self._lock = self._copy.index, self._copy.lock
        # Milvus Lite serves in this process over loopback: pymilvus's keepalive pings (every 10 s, also
        # without calls) only earn a GOAWAY "too_many_pings" from its server, logged by grpc on stderr
        # while a long first start (the models' export) leaves the channel idle. A server keeps them.
        options = {"grpc.keepalive_time_ms": 2**31 - 1, "grpc.keepalive_permit_without_calls": 0} if self._lite else {}
        try:
            self._client = MilvusClient(uri=uri, token=token, timeout=timeout, grpc_options=options)
        except Exception as exc:
            if self._lite:
                _release_shared(self._path)
            raise Unavailable(f"milvus: cannot connect to {uri}: {exc}") from exc

    @property
    def is_lite(self) -> bool:
        return self._lite

    @property
    def loading(self) -> str | None:
        """Lite, while a collection is read back at start: how far, in words; else None."""
        progress = self._copy.loading if self._copy is not None else None
        return None if progress is None else progress.describe()

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
                if not self._lite:  # Lite: loaded only to be read back (``_read_rows``): writes need no load
                    self._load_collection(name)
                    self._say_if_unindexed(name)
                return
            try:
                self._create_collection(name, dim)
            except Exception:
                # Another replica created it between our check and our create.
                if not self._client.has_collection(name):
                    raise
                if not self._lite:
                    self._load_collection(name)

        if self._index is None:
            self._call(create)
        else:
            with self._lock:  # one loader per file; everyone else waits for a complete copy
                if not self._index.has(name):
                    self._call(lambda: self._load_index(name, dim, create))
        self._known_collections.add(name)
        return name

    @property
    def snapshot_root(self) -> Path:
        return Path(self._path + ".index")

    def _load_index(self, name: str, dim: int, create: Callable[[], None]) -> None:
        """Lite: make sure the collection is in Milvus Lite (``create``) and read it into the in-process
        copy (under the lock): its saved copy and journal, else Milvus Lite (``lite_copy``).

        Milvus Lite opens a collection by reading every segment into memory (~8 s at a million 384-d rows),
        the saved copy takes as long again, and neither needs the other: with a saved copy, Milvus Lite is
        opened on a thread of its own while the copy is read, and every call the load makes to Milvus Lite
        waits for it. The load returns (and the server serves) only when both are done."""
        assert self._copy is not None
        # Leaving the pool waits for the opening, also when the copy's read fails.
        with ThreadPoolExecutor(1, thread_name_prefix="milvus-lite-open") as pool:
            if index_snapshot.saved_rows(self._copy.root, name) is None:
                create()
                opened: Callable[[], Any] = lambda: None
            else:
                opened = pool.submit(create).result  # raises what opening raised

            def flushed() -> None:
                # Rows still in Milvus Lite's memtable cost a per-row conversion on every read: flush them first.
                opened()
                self._client.flush(name)
                self._unflushed[name] = 0

            def milvus_rows() -> int:
                opened()
                return int(self._client.get_collection_stats(name).get("row_count", 0))

            def read_milvus() -> Rows:
                flushed()
                return self._milvus_rows(name, dim)

            def rewrite(op: journal.Op) -> None:
                opened()
                self._rewrite(name, op)

            self._copy.load(name, dim, milvus_rows, read_milvus, rewrite)
            flushed()

    def _milvus_rows(self, name: str, dim: int) -> Rows:
        for batch in self._read_rows(name):
            vectors = np.asarray([r["vector"] for r in batch], dtype=np.float32).reshape(len(batch), dim)
            yield ([str(r["id"]) for r in batch], [str(r["scope"]) for r in batch],
                   [str(r["tenant"]) for r in batch], [str(r["ctx"]) for r in batch], vectors)

    def _rewrite(self, name: str, op: journal.Op) -> None:
        """Lite, at start: a journal record written to Milvus Lite again (only there: the copy has it)."""
        if isinstance(op, journal.Upsert):
            part = self._partition(name, op.scope, create=True)
            rows = [{"id": i, "scope": op.scope, "tenant": op.tenant, "ctx": ctx, "vector": v.tolist()}
                    for (i, ctx), v in zip(op.items, op.vectors)]
            self._client.upsert(name, rows, **({"partition_name": part} if part else {}))
        elif isinstance(op, journal.Delete):
            where = f'scope == "{op.scope}" and ' if op.scope else ""
            self._client.delete(name, filter=f"{where}id in {_quoted_ids(op.ids)}")
        else:
            field, value = ("scope", op.scope) if op.scope is not None else ("tenant", op.tenant)
            self._client.delete(name, filter=f'{field} == "{value}"')

    def _flush_soon(self) -> None:
        """Lite: flush collections with FLUSH_ROWS unflushed rows, on a background thread."""
        with self._lock:
            if self._flusher is not None and self._flusher.is_alive():
                return
            self._flusher = threading.Thread(target=self._flush_pending, name="milvus-lite-flush", daemon=True)
            self._flusher.start()

    def _flush_pending(self) -> None:
        for collection in [c for c, n in list(self._unflushed.items()) if n >= FLUSH_ROWS]:
            try:
                with self._lock:
                    self._client.flush(collection)
                    self._unflushed[collection] = 0
            except Exception:  # the next writes try again; Lite still flushes itself at its own limit
                log.warning("milvus lite: background flush of %s failed", collection, exc_info=True)

    def _read_rows(self, name: str) -> Iterator[list[dict[str, Any]]]:
        """Every row of a Lite collection, in pages; through the engine in this process when it is here.

        Milvus Lite answers a query only from a loaded collection, and loading one reads its whole FLAT
        index into memory (1.5 GB and 2-8 s at a million 384-d rows). Nothing else here reads Milvus Lite
        (the copy serves; upsert, delete, flush and the row count work on a released collection, Milvus
        Lite 3.2.2), so the collection is loaded for this read only and released after it."""
        self._load_collection(name)
        try:
            yield from self._read_loaded(name)
        finally:
            try:
                self._client.release_collection(name)
            except Exception:  # its memory stays until the process ends; nothing is wrong with the rows
                log.warning("milvus lite: releasing %s after its read-back failed", name, exc_info=True)

    def _read_loaded(self, name: str) -> Iterator[list[dict[str, Any]]]:
        collection = self._engine_collection(name)
        if collection is not None:
            rows = int(self._client.get_collection_stats(name).get("row_count", 0))
            for expr in _id_ranges(rows):
                batch = collection.query(expr=expr or None, output_fields=_FIELDS)
                if batch:
                    yield batch
            return
        iterator = self._client.query_iterator(name, batch_size=2000, filter="", output_fields=_FIELDS)
        try:
            while True:
                batch = iterator.next()
                if not batch:
                    return
                yield batch
        finally:
            iterator.close()

    def _engine_collection(self, name: str) -> Any:
        """Milvus Lite's own Collection object when its server runs in this process (pymilvus starts
        it on a thread), so a start-up read skips a gRPC round trip per page; None otherwise."""
        try:
            from milvus_lite.server_manager import server_manager_instance

            entry = server_manager_instance._servers.get(os.path.abspath(self._path))
            return None if entry is None else entry[1].get_collection(name)
        except Exception:
            return None

    def _load_collection(self, name: str) -> None:
        """Load a collection that another replica may still be setting up.

        Creating one is four steps (collection, scalar indexes, vector index,
        load: _create_collection): a replica that finds the collection before
        the vector index gets "index not found" from load. It waits for the
        creator's indexes, and builds the same ones itself if none come (a
        creator that died half-way); Milvus takes an identical index twice.
        """
        deadline = time.monotonic() + max(30.0, 6 * self._timeout)
        attempt = 0
        while True:
            try:
                self._client.load_collection(name)
                return
            except Exception as exc:
                said = str(exc).lower()
                # "index not found" (2.4+, Milvus Lite's server), "there is no vector index on collection" (2.3)
                if not any(w in said for w in _NO_INDEX_YET) or time.monotonic() > deadline:
                    raise
            attempt += 1
            time.sleep(0.5)
            if attempt >= 4 and not self._lite:
                try:
                    self._add_scalar_indexes(name, [f for f in SCALAR_INDEXED if f not in self._indexed_fields(name)])
                    self._client.create_index(name, self._vector_index())
                except Exception:
                    pass  # the creator's index landed meanwhile, or the next load says why

    def _create_collection(self, name: str, dim: int) -> None:
        from pymilvus import DataType

        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("scope", DataType.VARCHAR, max_length=32, is_partition_key=not self._lite)
        schema.add_field("tenant", DataType.VARCHAR, max_length=32)
        schema.add_field("ctx", DataType.VARCHAR, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        if self._lite:  # never searched: the in-process index answers (see the module's note)
            index = self._client.prepare_index_params()
            index.add_index("vector", index_type="FLAT", metric_type="COSINE")
            self._client.create_collection(name, schema=schema, index_params=index)
            # create_collection loads it; Lite's own index would only grow beside the copy
            self._client.release_collection(name)
            return
        # A server collection is made in four steps, in this order: the collection, the scalar indexes, the
        # vector index, the load. Another replica that finds the collection meanwhile loads it (_load_collection),
        # and a load waits for the vector index, which comes last: no replica loads a collection whose scalar
        # indexes are still to come, and none is ever released to add them.
        self._client.create_collection(name, schema=schema, consistency_level="Bounded")
        self._add_scalar_indexes(name, SCALAR_INDEXED)
        self._client.create_index(name, self._vector_index())
        self._client.load_collection(name)

    def _vector_index(self) -> Any:
        index = self._client.prepare_index_params()
        index.add_index("vector", index_type=self._index_type, metric_type="COSINE", params=self._index_params)
        return index

    def _scalar_index_types(self) -> tuple[str, ...]:
        """INVERTED first, Trie first on a server before 2.4 (which refuses INVERTED, and pymilvus logs the
        refusal as an error): both are tried either way."""
        try:
            version = re.match(r"v?(\d+)\.(\d+)", str(self._client.get_server_version()))
        except Exception:
            version = None
        if version and (int(version.group(1)), int(version.group(2))) < (2, 4):
            return tuple(reversed(SCALAR_INDEX_TYPES))
        return SCALAR_INDEX_TYPES

    def _indexed_fields(self, name: str) -> set[str]:
        return {self._client.describe_index(name, i).get("field_name", i) for i in self._client.list_indexes(name)}

    def _add_scalar_indexes(self, name: str, fields: Sequence[str]) -> None:
        kinds = self._scalar_index_types() if fields else ()
        for field in fields:
            refused = []
            for kind in kinds:
                index = self._client.prepare_index_params()
                index.add_index(field, index_type=kind)
                try:
                    self._client.create_index(name, index)
                    break
                except Exception as exc:
                    refused.append(f"{kind}: {exc}")
            else:  # searched as before (a filter over every row of the scope), and said why
                log.warning("milvus: no scalar index on %s of %s (%s)", field, name, "; ".join(refused)[:300])

    def _say_if_unindexed(self, name: str) -> None:
        """A collection made before the scalar indexes (or by a creator that died half-way) is searched without
        them: correct, slower at a million rows. Adding them needs a release, which would take the collection
        from every replica serving it, so it is left to the operator (docs/operations.md, "Scalar indexes on
        scope and ctx") and said once at open."""
        try:
            fields = self._indexed_fields(name)
        except Exception:
            return  # a server that cannot say: searched as before
        missing = [f for f in SCALAR_INDEXED if f not in fields]
        if missing:
            log.info("milvus: collection %s has no scalar index on %s; searches filter every row of a scope "
                     "(docs/operations.md, 'Scalar indexes on scope and ctx')", name, ", ".join(missing))

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
            copy = self._copy
            assert copy is not None

            def upsert() -> int:
                # Journal first, then Milvus Lite, then the copy, in one hold of the lock: the copy never
                # lags a write, and it follows its journal even when Milvus Lite fails (lite_copy's note).
                token = copy.record(collection, journal.encode_upsert(scope, thash, items, vectors))
                try:
                    self._client.upsert(collection, rows, **kwargs)
                finally:
                    copy.index.upsert(collection, scope, thash, items, vectors)
                self._unflushed[collection] = self._unflushed.get(collection, 0) + len(rows)
                return token

            copy.commit(collection, self._call(upsert))
            if self._unflushed.get(collection, 0) >= FLUSH_ROWS:
                self._flush_soon()
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
        if self._index is not None:
            return [VectorHit(id=i, similarity=min(s, 1.0)) for i, s in
                    self._index.search(collection, scope, context_hash, vector, top_k)]
        part = self._partition(collection, scope, create=False)
        if self._lite and part is None:
            return []  # nothing was ever written to this scope
        kwargs: dict[str, Any] = {"partition_names": [part]} if part else {}
        data = [vector.tolist()]

        def search(limit: int, filter: str, fields: list[str]) -> list[dict[str, Any]]:
            result = self._call(lambda: self._client.search(
                collection, data=data, limit=limit, filter=filter, output_fields=fields,
                search_params={"metric_type": "COSINE", "params": self._server_search_params(limit)}, **kwargs))
            return list(result[0]) if result else []

        if self._lite:
            rows = search(top_k, f'scope == "{scope}" and ctx == "{context_hash}"', ["id"])
        else:
            # The server filters on the scope alone and the context is checked here, on a few more rows than
            # asked: a second term in the filter cost ~1 ms a search at a million rows of one scope (6.5-7.0
            # against 5.8-6.0 ms with 20 rows and their ctx; tests/perf/milvus_filter_probe.py), and most of a
            # scope's entries share a context (the first turn). Where the scope's nearest rows are mostly of
            # other contexts and too few of this one are among them, the server is asked again with both terms:
            # the hits are the same either way.
            fetch = max(4 * top_k, 16)
            found = search(fetch, f'scope == "{scope}"', ["id", "ctx"])
            rows = [h for h in found if (h.get("entity") or {}).get("ctx") == context_hash][:top_k]
            if len(rows) < top_k and len(found) >= fetch:
                rows = search(top_k, f'scope == "{scope}" and ctx == "{context_hash}"', ["id"])
        hits = [VectorHit(id=str(h["id"]), similarity=float(h["distance"])) for h in rows]
        hits.sort(key=lambda h: h.similarity, reverse=True)
        return hits

    def _server_search_params(self, top_k: int) -> dict[str, Any]:
        params = dict(self._search_params)
        if self._index_type == "HNSW":
            params["ef"] = max(int(params.get("ef", 64)), top_k)
        return params

    def delete(self, tenant: str, model: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        expr = f'scope == "{scope_hash(tenant, model)}" and id in {_quoted_ids(ids)}'
        scope = scope_hash(tenant, model)
        for collection in self._our_collections():
            self._committed(collection, self._call(lambda c=collection: self._delete(c, expr, ids, scope=scope)))

    def _delete(self, collection: str, expr: str, ids: Sequence[str], scope: str | None = None) -> int:
        """Under the lock; the journal's token (0 off Lite)."""
        token = self._record(collection, lambda: journal.encode_delete(list(ids), scope))
        try:
            self._client.delete(collection, filter=expr)
        finally:
            if self._index is not None:  # in the same hold of the lock as the write
                self._index.delete(ids, scope=scope, collections=[collection])
        return token

    def _record(self, collection: str, payload: Callable[[], bytes]) -> int:
        """Lite, under the lock: a change's journal record, before it reaches Milvus Lite (0 elsewhere)."""
        if self._copy is None:
            return 0
        return self._copy.record(collection, payload())

    def _committed(self, collection: str, token: int) -> None:
        if token and self._copy is not None:
            self._copy.commit(collection, token)

    def delete_ids(self, ids: Sequence[str], except_model: str | None = None) -> None:
        """Delete these ids from every collection (but the one of except_model)."""
        if not ids:
            return
        expr = f"id in {_quoted_ids(ids)}"
        keep = self.collection_name(except_model, 0).rsplit("_", 1)[0] + "_" if except_model else None
        for collection in self._our_collections():
            if keep is not None and collection.startswith(keep):
                continue
            self._committed(collection, self._call(lambda c=collection: self._delete(c, expr, ids)))

    def clear(self, tenant: str, model: str | None) -> None:
        if model is None:
            expr = f'tenant == "{tenant_hash(tenant)}"'
        else:
            expr = f'scope == "{scope_hash(tenant, model)}"'
        index = self._index

        def delete(collection: str) -> int:
            if model is None:
                token = self._record(collection, lambda: journal.encode_clear(tenant=tenant_hash(tenant)))
            else:
                token = self._record(collection, lambda: journal.encode_clear(scope=scope_hash(tenant, model)))
            try:
                self._client.delete(collection, filter=expr)
            finally:
                if index is not None:
                    if model is None:
                        index.clear(tenant=tenant_hash(tenant), collections=[collection])
                    else:
                        index.clear(scope=scope_hash(tenant, model), collections=[collection])
            return token

        for collection in self._our_collections():
            self._committed(collection, self._call(lambda c=collection: delete(c)))

    def ids_of_scope(self, embed_model: str, tenant: str, model: str) -> list[str]:
        names = [n for n in self._our_collections() if n.startswith(self.collection_name(embed_model, 0)[:-1])]
        scope = scope_hash(tenant, model)
        if self._index is not None:
            for name in names:
                self.ensure_collection(embed_model, int(name.rsplit("_", 1)[1]))
            return [i for name in names for i in self._index.ids(name, scope=scope)]
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
        if self._index is not None:
            return self._index.existing(collection, ids)
        rows = self._call(lambda: self._client.query(collection, filter=expr, output_fields=["id"], limit=len(ids)))
        return {str(r["id"]) for r in rows}

    def iter_tenant_ids(self, embed_model: str, dim: int, tenant: str, batch: int = 1000) -> Iterator[list[str]]:
        """Every entry id with a vector of a tenant, in batches (repair's view of the vector side)."""
        collection = self.ensure_collection(embed_model, dim)
        expr = f'tenant == "{tenant_hash(tenant)}"'
        if self._index is not None:
            ids = self._index.ids(collection, tenant=tenant_hash(tenant))
            for start in range(0, len(ids), batch):
                yield ids[start:start + batch]
            return
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

    def vectors_of(self, embed_model: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The vectors of embed_model (any dimension) of those of these ids that have one (export)."""
        if not ids:
            return {}
        prefix = self.collection_name(embed_model, 0)[:-1]
        names = [n for n in self._our_collections() if n.startswith(prefix)]
        out: dict[str, np.ndarray] = {}
        for name in names:
            if self._index is not None:
                self.ensure_collection(embed_model, int(name.rsplit("_", 1)[1]))
                out.update(self._index.vectors(name, ids))
                continue
            expr = f"id in {_quoted_ids(ids)}"
            # Strong: an export must see every vector written so far, not only those past the time tick.
            rows = self._call(lambda c=name, e=expr: self._client.query(
                c, filter=e, output_fields=["id", "vector"], limit=len(ids), consistency_level="Strong"))
            out.update((str(r["id"]), np.asarray(r["vector"], dtype=np.float32)) for r in rows)
        return out

    def ping(self) -> None:
        self._call(lambda: self._client.list_collections())

    def close(self) -> None:
        copy, self._copy, self._index = self._copy, None, None
        if copy is not None and _release_shared(self._path):
            copy.save(self._row_count)  # the last store of this process on the file: its client still open
        try:
            with self._lock:
                self._client.close()
        except Exception:
            pass

    def _row_count(self, collection: str) -> int | None:
        try:
            with self._lock:
                return int(self._client.get_collection_stats(collection).get("row_count", 0))
        except Exception:
            return None
