"""``modelcache-svc export`` and ``modelcache-svc import``: a tenant's entries to a JSONL file and back,
through a running server (docs/operations.md, "Moving a cache").

The export file: one header line, then one entry per line in the JSON form client/_transfer.py
describes. The header carries the format and its version, the tenant and its settings:

    {"format": "modelcache-svc-export", "version": 1, "tenant": "t", "model": null, "settings": {...},
     "exported_at": 1767225600.0, "source": "127.0.0.1:50051"}

Import reads such a file (the server creates the tenant with those settings when it is missing, writes
every entry under its id and leaves the ones it has), or a plain file of lines
``{"question": ..., "answer": ...}`` / ``{"messages": [...], "answer": ...}`` (optional ``model``,
``ttl_seconds``, ``metadata``), which go through Insert and so through the tenant's cacheability policy:
a cache warmed from logs. A bad line is reported with its number and the rest is imported. A file
whose name ends in .gz is read and written compressed.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, cast

from .. import errors

FORMAT = "modelcache-svc-export"
VERSION = 1
BATCH = 128
BATCH_MAX_BYTES = 4 * 1024 * 1024  # of JSON per import call, well under the 16 MiB message limit
SHOWN_PROBLEMS = 20  # bad lines listed in the text summary (all of them with --json)
Line = tuple[int, Any]  # (line number, parsed JSON)


def add_parsers(sub: Any, client_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    ex = sub.add_parser("export", help="write a tenant's entries (or one model's) to a JSONL file, through the server")
    client_flags(ex)
    ex.add_argument("--tenant", required=True)
    ex.add_argument("--model", default="", help="one model of the tenant (default: all)")
    ex.add_argument("--out", required=True, help="the file (.gz: compressed)")
    ex.add_argument("--resume", action="store_true", help="continue an interrupted export into the same file")
    ex.add_argument("--no-vectors", action="store_true", help="leave vectors out (import then embeds every question)")
    ex.add_argument("--page", type=int, default=256, help="entries per call (default 256)")
    im = sub.add_parser("import", help="load an export file, or plain (question, answer) lines, through the server")
    client_flags(im)
    im.add_argument("file")
    im.add_argument("--tenant", default=None,
                    help="export file: import under this tenant instead of the file's; plain file: the tenant "
                    "(default: default)")
    im.add_argument("--model", default=None, help="plain file: the model of lines that name none")
    im.add_argument("--batch", type=int, default=BATCH, help=f"entries per call (default {BATCH})")


def run(args: argparse.Namespace, environ: dict[str, str]) -> int:
    from ..client import CacheClient

    target = args.target or environ.get("MODELCACHE_TARGET") or "127.0.0.1:50051"
    api_key = args.api_key or environ.get("MODELCACHE_API_KEY") or None
    show = not args.json and sys.stderr.isatty()
    started = time.monotonic()
    with CacheClient(target, api_key=api_key, timeout=args.timeout) as client:
        if args.command == "export":
            summary = export(client, args, target, show)
        else:
            summary = import_file(client, args, show)
    summary["seconds"] = round(time.monotonic() - started, 2)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, sort_keys=True))
    else:
        print(_text(summary))
    return 1 if summary.get("rejected") else 0


# -- export ------------------------------------------------------------------------------------------
def export(client: Any, args: argparse.Namespace, target: str, show: bool) -> dict[str, Any]:
    if not 0 < args.page <= 1000:
        raise errors.InvalidArgument("--page must be 1..1000")
    path = Path(args.out)
    after, done = "", 0
    if args.resume and path.is_file() and path.stat().st_size:
        after, done = _resume_point(path, args.tenant, args.model or None)
    written = 0
    with _open(path, "a" if after or done else "w") as out, _bar(show, "export") as bar:
        bar.update(done)
        while True:
            page = client.export_page(args.tenant, args.model or None, after_id=after, limit=args.page,
                                      vectors=not args.no_vectors)
            bar.total = max(page.total, done + written + len(page.entries))
            if not after and not done and not written:
                from ..client._transfer import settings_of

                header = {"format": FORMAT, "version": VERSION, "tenant": args.tenant, "model": args.model or None,
                          "settings": settings_of(page.tenant), "exported_at": time.time(), "source": target}
                out.write(json.dumps(header, ensure_ascii=False, sort_keys=True) + "\n")
            for entry in page.entries:
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            written += len(page.entries)
            bar.update(len(page.entries))
            if not page.next_after_id:
                break
            after = page.next_after_id
    return {"command": "export", "tenant": args.tenant, "model": args.model or None, "file": str(path),
            "entries": done + written, "resumed_after": done}


def _resume_point(path: Path, tenant: str, model: str | None) -> tuple[str, int]:
    """The id of the last complete entry line of an interrupted export and how many there are; a torn
    last line is cut off. The file must be an export of the same scope."""
    if path.suffix == ".gz":
        raise errors.InvalidArgument("--resume needs an uncompressed file (a torn gzip stream cannot be continued)")
    last, count, good_end = "", 0, 0
    with path.open("rb") as f:
        offset = 0
        for number, raw in enumerate(f, 1):
            offset += len(raw)
            if not raw.endswith(b"\n"):
                break  # torn by the interruption: written again
            try:
                data = json.loads(raw)
            except json.JSONDecodeError:
                raise errors.InvalidArgument(f"{path}:{number} is not JSON: not a file this command wrote") from None
            if number == 1:
                if data.get("format") != FORMAT or (data.get("tenant"), data.get("model")) != (tenant, model):
                    raise errors.InvalidArgument(f"{path} is not an export of tenant {tenant!r}, model {model!r}")
            else:
                last, count = data["id"], count + 1
            good_end = offset
    with path.open("r+b") as f:
        f.truncate(good_end)
    return last, count


# -- import ------------------------------------------------------------------------------------------
def import_file(client: Any, args: argparse.Namespace, show: bool) -> dict[str, Any]:
    path = Path(args.file)
    if not path.is_file():
        raise errors.InvalidArgument(f"{path}: no such file")
    if not 0 < args.batch <= 256:
        raise errors.InvalidArgument("--batch must be 1..256")
    total = _count_lines(path) if show else None
    rejected: list[tuple[int, str]] = []
    with _open(path, "r") as f, _bar(show, "import", total) as bar:
        lines = _parsed(f, rejected, bar)
        first = next(lines, None)
        if first is not None and isinstance(first[1], dict) and "format" in first[1]:
            summary = _import_export(client, args, first[1], lines, rejected)
        else:
            summary = _import_plain(client, args, itertools.chain([first] if first else [], lines), rejected)
    summary.update(command="import", file=str(path), rejected=[{"line": n, "reason": r} for n, r in sorted(rejected)])
    return summary


def _parsed(f: IO[str], rejected: list[tuple[int, str]], bar: Any) -> Iterator[Line]:
    """(number, JSON) of each non-blank line; a line that is not JSON goes to rejected."""
    for number, text in enumerate(f, 1):
        bar.update(1)
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as exc:
            rejected.append((number, f"not JSON: {exc.msg} at column {exc.colno}"))


def _batches(lines: Iterable[Line], size: int) -> Iterator[list[Line]]:
    batch: list[Line] = []
    weight = 0
    for line in lines:
        batch.append(line)
        weight += len(json.dumps(line[1], ensure_ascii=False))
        if len(batch) >= size or weight >= BATCH_MAX_BYTES:
            yield batch
            batch, weight = [], 0
    if batch:
        yield batch


def _import_export(client: Any, args: argparse.Namespace, header: dict[str, Any], lines: Iterator[Line],
                   rejected: list[tuple[int, str]]) -> dict[str, Any]:
    from ..client._transfer import entry_from_json

    if header.get("format") != FORMAT:
        raise errors.InvalidArgument(f"the first line names format {header.get('format')!r}, not {FORMAT!r}")
    if header.get("version") != VERSION:
        raise errors.InvalidArgument(f"export format version {header.get('version')!r}; this release reads {VERSION}")
    tenant = args.tenant or header.get("tenant")
    if not isinstance(tenant, str):
        raise errors.InvalidArgument("the header names no tenant: give --tenant")
    counts: Counter[str] = Counter()
    created = False
    for batch in _batches(lines, args.batch):
        entries, numbers = [], []
        for number, data in batch:
            try:
                entries.append(entry_from_json(data))
                numbers.append(number)
            except errors.InvalidArgument as exc:
                rejected.append((number, exc.message))
        if not entries:
            continue
        result = client.import_entries(tenant, entries, settings=header.get("settings") or {})
        created = created or result.tenant_created
        counts.update(created=result.created, present=result.present, updated=result.updated,
                      merged=result.merged, expired=result.expired, embedded=result.embedded)
        rejected.extend((numbers[i], reason) for i, reason in result.rejected)
    return {"format": "export", "tenant": tenant, "tenant_created": created,
            **{k: counts[k] for k in ("created", "present", "updated", "merged", "expired", "embedded")}}


def _import_plain(client: Any, args: argparse.Namespace, lines: Iterable[Line],
                  rejected: list[tuple[int, str]]) -> dict[str, Any]:
    """Plain (question, answer) lines through Insert: the tenant's cacheability policy decides."""
    tenant = args.tenant or "default"
    stored = 0
    refused: Counter[str] = Counter()
    for batch in _batches(lines, args.batch):
        by_model: dict[str, list[tuple[int, Any]]] = {}
        for number, data in batch:
            try:
                model, entry = _plain_entry(data, args.model)
            except errors.InvalidArgument as exc:
                rejected.append((number, exc.message))
                continue
            by_model.setdefault(model, []).append((number, entry))
        for model, items in by_model.items():
            for _, entry_id in _insert(client, tenant, model, items, rejected):
                if entry_id:
                    stored += 1
                else:
                    refused[entry_id.uncacheable] += 1
    return {"format": "plain", "tenant": tenant, "stored": stored, "refused": dict(refused)}


def _plain_entry(data: Any, default_model: str | None) -> tuple[str, Any]:
    from ..client import Entry

    if not isinstance(data, dict):
        raise errors.InvalidArgument("a line must be a JSON object")
    answer, model = data.get("answer"), data.get("model") or default_model
    if not isinstance(answer, str) or not answer.strip():
        raise errors.InvalidArgument('"answer" must be a non-empty string')
    if not isinstance(model, str) or not model:
        raise errors.InvalidArgument('no model: give --model or a "model" field')
    chat = data.get("messages", data.get("question"))
    if isinstance(chat, list):
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                   for m in chat):
            raise errors.InvalidArgument('"messages" must be a list of {"role": ..., "content": ...}')
    elif not isinstance(chat, str) or not chat.strip():
        raise errors.InvalidArgument('a line needs "question" (a string) or "messages" (a list)')
    texts = [answer, *([m["content"] for m in chat] if isinstance(chat, list) else [chat])]
    if any(not t.isascii() and not _utf8(t) for t in texts):
        raise errors.InvalidArgument("a text is not valid Unicode (a lone surrogate)")
    ttl, metadata = data.get("ttl_seconds", 0), data.get("metadata") or {}
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
        raise errors.InvalidArgument('"ttl_seconds" must be a whole number of seconds')
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise errors.InvalidArgument('"metadata" must be an object of strings')
    return model, Entry(chat, answer, ttl, metadata)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _insert(client: Any, tenant: str, model: str, items: list[tuple[int, Any]],
            rejected: list[tuple[int, str]]) -> list[tuple[int, Any]]:
    """(line, id) of each entry Insert took; a call refused as invalid is split until the bad line is found."""
    try:
        ids = client.insert_many(tenant, model, [entry for _, entry in items])
    except errors.InvalidArgument as exc:
        if len(items) == 1:
            rejected.append((items[0][0], exc.message))
            return []
        middle = len(items) // 2
        return (_insert(client, tenant, model, items[:middle], rejected)
                + _insert(client, tenant, model, items[middle:], rejected))
    return [(number, entry_id) for (number, _), entry_id in zip(items, ids, strict=True)]


# -- files, progress, the summary ------------------------------------------------------------------------
def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return cast(IO[str], gzip.open(path, mode + "t", encoding="utf-8"))
    return path.open(mode, encoding="utf-8")


def _count_lines(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _bar(show: bool, what: str, total: int | None = None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit=" entries" if what == "export" else " lines", disable=not show,
                file=sys.stderr, dynamic_ncols=True)


def _text(s: dict[str, Any]) -> str:
    if s["command"] == "export":
        scope = s["tenant"] + (f"/{s['model']}" if s["model"] else "")
        resumed = f" ({s['resumed_after']} from the earlier run)" if s["resumed_after"] else ""
        return f"exported {s['entries']} entries of {scope} to {s['file']}{resumed} in {s['seconds']} s"
    if s["format"] == "export":
        line = (f"imported {s['file']} into {s['tenant']}{' (tenant created)' if s['tenant_created'] else ''}: "
                f"created {s['created']}, already there {s['present']}, updated {s['updated']}, merged {s['merged']}, "
                f"expired {s['expired']}, re-embedded {s['embedded']}")
    else:
        refused = ", ".join(f"{k or 'unknown'} {v}" for k, v in sorted(s["refused"].items())) or "none"
        line = f"warmed {s['tenant']} from {s['file']}: stored {s['stored']}, refused by the policy: {refused}"
    problems = s["rejected"]
    line += f", rejected {len(problems)} lines in {s['seconds']} s"
    for p in problems[:SHOWN_PROBLEMS]:
        line += f"\n  line {p['line']}: {p['reason']}"
    if len(problems) > SHOWN_PROBLEMS:
        line += f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more (--json lists them all)"
    return line
