"""The write journal of one collection's in-process vector copy: every change, appended before it is
applied anywhere, so a start after a kill -9 reads the saved copy plus this, never Milvus Lite.

Files: ``<folder>/<generation>.log`` (12 digits), appended in order; a fold (``index_snapshot.fold``)
writes a new saved copy holding every generation below some G and then deletes them.

A record is ``u32 length | u32 crc32(payload) | payload`` (little-endian). Reading stops at the first
record that is short or fails its checksum: a torn last record (the process died inside its write) is
dropped, and the file is cut back to the last whole record before anything is appended after it. A bad
record before the end of the last file is not a torn write but damage: reading stops there too, loudly.

Payloads (``encode_*`` / ``decode``): an upsert of rows of one scope (ids, context hashes, float32
vectors), a delete of ids (of one scope, or any), a clear of a scope or of a tenant. All three are
idempotent: replaying a record onto a state that already holds it changes nothing.

Durability (``sync``): ``append`` writes with one ``os.write`` (in the OS once it returns: a kill -9
loses nothing); ``commit`` then ``fdatasync``s, once for every record appended so far (group commit:
concurrent writers share one flush). Measured on this host (ext4, 32 entries of 384-d a call): write
0.04 ms, fdatasync per call 0.35 ms p50 / 0.75 ms p99, fdatasync per entry 7.8 ms a call (docs/operations.md,
"The vector journal"). ``sync=False`` stops at the OS: safe against a crash of this process, not of the host.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("modelcache_svc.journal")

_HEAD = struct.Struct("<II")
MAX_RECORD = 1 << 30
SUFFIX = ".log"

UPSERT, DELETE, CLEAR = 1, 2, 3
_UPSERT = struct.Struct("<B32s32sIH")  # op, scope, tenant, rows, dim
_DELETE = struct.Struct("<B32sI")  # op, scope (zeros: any), ids
_CLEAR = struct.Struct("<BB32s")  # op, kind (1 scope, 2 tenant), hash


@dataclass(frozen=True, slots=True)
class Upsert:
    scope: str
    tenant: str
    items: list[tuple[str, str]]  # (entry id, context hash)
    vectors: np.ndarray  # (rows, dim) float32


@dataclass(frozen=True, slots=True)
class Delete:
    ids: list[str]
    scope: str | None  # only ids of this scope; None: wherever they are


@dataclass(frozen=True, slots=True)
class Clear:
    scope: str | None = None
    tenant: str | None = None


Op = Upsert | Delete | Clear


def _short(text: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > 255:
        raise ValueError("journal: a name longer than 255 bytes")
    return bytes([len(raw)]) + raw


def encode_upsert(scope: str, tenant: str, items: Sequence[tuple[str, str]], vectors: np.ndarray) -> bytes:
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    names = b"".join(_short(i) + _short(c) for i, c in items)
    return _UPSERT.pack(UPSERT, scope.encode("ascii"), tenant.encode("ascii"), len(items), rows.shape[1]) \
        + names + rows.tobytes()


def encode_delete(ids: Sequence[str], scope: str | None) -> bytes:
    return _DELETE.pack(DELETE, (scope or "").encode("ascii"), len(ids)) + b"".join(_short(i) for i in ids)


def encode_clear(*, scope: str | None = None, tenant: str | None = None) -> bytes:
    kind, value = (1, scope) if scope is not None else (2, tenant)
    assert value is not None
    return _CLEAR.pack(CLEAR, kind, value.encode("ascii"))


def decode(payload: bytes) -> Op:
    op = payload[0]
    if op == UPSERT:
        _, scope, tenant, n, dim = _UPSERT.unpack_from(payload)
        at = _UPSERT.size
        items = []
        for _ in range(n):
            a = payload[at]
            entry_id = payload[at + 1:at + 1 + a].decode("ascii")
            at += 1 + a
            b = payload[at]
            ctx = payload[at + 1:at + 1 + b].decode("ascii")
            at += 1 + b
            items.append((entry_id, ctx))
        vectors = np.frombuffer(payload, dtype=np.float32, count=n * dim, offset=at).reshape(n, dim)
        return Upsert(scope.decode("ascii"), tenant.decode("ascii"), items, vectors)
    if op == DELETE:
        _, scope, n = _DELETE.unpack_from(payload)
        at = _DELETE.size
        ids = []
        for _ in range(n):
            a = payload[at]
            ids.append(payload[at + 1:at + 1 + a].decode("ascii"))
            at += 1 + a
        named = scope.rstrip(b"\x00").decode("ascii")
        return Delete(ids, named or None)
    if op == CLEAR:
        _, kind, value = _CLEAR.unpack_from(payload)
        text = value.decode("ascii")
        return Clear(scope=text) if kind == 1 else Clear(tenant=text)
    raise ValueError(f"journal: unknown record type {op}")


def frame(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(path: Path) -> tuple[list[bytes], int, bool]:
    """(the whole records of a file, the offset after the last of them, whether the file ends there)."""
    data = path.read_bytes()
    out: list[bytes] = []
    at = 0
    while at + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, at)
        end = at + _HEAD.size + length
        if length > MAX_RECORD or end > len(data):
            break
        payload = data[at + _HEAD.size:end]
        if zlib.crc32(payload) != crc:
            break
        out.append(payload)
        at = end
    return out, at, at == len(data)


def generations(folder: Path) -> list[int]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-len(SUFFIX)]) for n in names if n.endswith(SUFFIX) and n[:-len(SUFFIX)].isdigit())


def path_of(folder: Path, generation: int) -> Path:
    return folder / f"{generation:012d}{SUFFIX}"


def read(folder: Path, first: int) -> Iterator[bytes]:
    """Every whole record of generations >= first, in order; a torn tail of the last file is dropped
    (and cut off the file), damage elsewhere stops the read with an error in the log."""
    gens = [g for g in generations(folder) if g >= first]
    for n, gen in enumerate(gens):
        path = path_of(folder, gen)
        records, good, whole = read_records(path)
        yield from records
        if not whole:
            if n == len(gens) - 1:
                log.warning("journal %s: a torn last record (%d bytes) dropped", path,
                            path.stat().st_size - good)
                with path.open("r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
            else:
                log.error("journal %s is damaged at byte %d: the records after it are not read", path, good)
            return


class Journal:
    """The append side: one open file (the newest generation), rotated by a fold."""

    def __init__(self, folder: Path, sync: bool = True, first: int = 1) -> None:
        """``first``: the generation the saved copy's manifest names (appends never go below it)."""
        self.folder = folder
        self.sync = sync
        folder.mkdir(parents=True, exist_ok=True)
        gens = [g for g in generations(folder) if g >= first]
        self.generation = max(gens[-1] if gens else first, first)
        self._lock = threading.Lock()  # the open file and the counters
        self._sync_lock = threading.Lock()  # one fdatasync at a time; rotation waits for it
        self._fd = self._open(self.generation)
        self._appended = 0  # bytes appended by this process, across files
        self._synced = 0
        self.bytes_pending = sum(path_of(folder, g).stat().st_size for g in gens)  # not yet folded

    def _open(self, generation: int) -> int:
        fd = os.open(path_of(self.folder, generation), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fsync_dir(self.folder)
        return fd

    def append(self, payload: bytes) -> int:
        """Write one record (in the OS when this returns); the token ``commit`` takes."""
        record = frame(payload)
        with self._lock:
            written = os.write(self._fd, record)
            if written != len(record):  # a regular file takes a whole write or fails (disk full)
                raise OSError(f"journal: short write ({written} of {len(record)} bytes)")
            self._appended += len(record)
            self.bytes_pending += len(record)
            return self._appended

    def commit(self, token: int) -> None:
        """Durable up to ``token`` (with ``sync``): one fdatasync covers every record appended before it."""
        if not self.sync:
            return
        with self._sync_lock:
            if self._synced >= token:
                return
            with self._lock:
                fd, upto = self._fd, self._appended
            os.fdatasync(fd)
            self._synced = max(self._synced, upto)

    def rotate(self) -> int:
        """Start the next generation; every record so far is in an older one (flushed). The new number."""
        with self._sync_lock, self._lock:
            os.fsync(self._fd)
            os.close(self._fd)
            self.generation += 1
            self._fd = self._open(self.generation)
            self._synced = self._appended
            return self.generation

    def folded(self, below: int, bytes_folded: int) -> None:
        """A saved copy now holds every generation below ``below``: their files go."""
        for gen in generations(self.folder):
            if gen < below:
                path_of(self.folder, gen).unlink(missing_ok=True)
        _fsync_dir(self.folder)
        with self._lock:
            self.bytes_pending = max(0, self.bytes_pending - bytes_folded)

    def close(self) -> None:
        with self._sync_lock, self._lock:
            if self._fd >= 0:
                try:
                    os.fsync(self._fd)
                finally:
                    os.close(self._fd)
                    self._fd = -1


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
