"""The MC.* commands of the Redis-protocol front end: argument parsing, then one core call.

Arguments arrive as byte strings. They are decoded and shaped here (UTF-8,
numbers, the messages JSON); everything the core checks itself (names, roles,
lengths, ranges) is left to it so both front ends refuse the same things with
the same words.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..cache.service import CacheCore
from ..cache.tenants import Principal
from ..errors import InvalidArgument
from ..records import Message, NewEntry, QueryResult, Scope
from .resp_protocol import Reply, Simple

McHandler = Callable[[CacheCore, Principal, Sequence[bytes]], Awaitable[Reply]]
_INTEGER = re.compile(rb"-?[0-9]{1,18}\Z")
_MESSAGE_FIELDS = frozenset({"role", "content"})


class _JsonShapeError(ValueError):
    pass


def text(arg: bytes, what: str) -> str:
    try:
        return arg.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{what} is not valid UTF-8 (bad byte at offset {exc.start})") from exc


def integer_arg(arg: bytes, what: str) -> int:
    if not _INTEGER.match(arg):
        raise InvalidArgument(f"{what} must be an integer")
    return int(arg)


def float_arg(arg: bytes, what: str) -> float:
    try:
        value = float(text(arg, what))
    except ValueError:
        raise InvalidArgument(f"{what} must be a number") from None
    if not math.isfinite(value):
        raise InvalidArgument(f"{what} must be a finite number")
    return value


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; a chat that says two things is refused instead.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JsonShapeError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise _JsonShapeError(f"{name} is not JSON")


def load_json(arg: bytes, what: str) -> Any:
    source = text(arg, what)
    try:
        return json.loads(source, object_pairs_hook=_pairs_no_duplicates, parse_constant=_no_constants)
    except _JsonShapeError as exc:
        raise InvalidArgument(f"{what}: {exc}") from None
    except RecursionError:
        raise InvalidArgument(f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None


def parse_messages(arg: bytes) -> list[Message]:
    """A JSON array of {"role", "content"} objects, exactly that shape."""
    value = load_json(arg, "messages-json")
    if not isinstance(value, list):
        raise InvalidArgument('messages-json must be a JSON array of {"role": ..., "content": ...} objects')
    messages: list[Message] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidArgument(f'messages-json[{i}] must be an object {{"role": ..., "content": ...}}')
        unknown = sorted(set(item) - _MESSAGE_FIELDS)
        if unknown:
            raise InvalidArgument(f"messages-json[{i}] has unknown field {unknown[0][:40]!r}: only role and content")
        for field in ("role", "content"):
            if not isinstance(item.get(field), str):
                raise InvalidArgument(f"messages-json[{i}].{field} must be a string")
        messages.append(Message(item["role"], item["content"]))
    return messages


def parse_metadata(arg: bytes) -> dict[str, str]:
    value = load_json(arg, "META")
    if not isinstance(value, dict):
        raise InvalidArgument("META must be a JSON object of string values")
    return value  # the core checks that keys and values are strings, and their sizes


def options(args: Sequence[bytes], known: dict[str, str], command: str) -> dict[str, bytes]:
    """NAME value pairs after the positional arguments; names are case-insensitive, each at most once."""
    found: dict[str, bytes] = {}
    i = 0
    while i < len(args):
        name = args[i].upper().decode("latin-1")
        if name not in known:
            allowed = " and ".join(f"{k} {v}" for k, v in known.items())
            raise InvalidArgument(f"syntax error: {command} takes {allowed}, not {name[:40]!r}")
        if i + 1 >= len(args):
            raise InvalidArgument(f"syntax error: {name} needs a value ({known[name]})")
        if name in found:
            raise InvalidArgument(f"syntax error: {name} given twice")
        found[name] = args[i + 1]
        i += 2
    return found


def scope(args: Sequence[bytes]) -> Scope:
    return Scope(text(args[1], "tenant"), text(args[2], "model"))


def result_reply(result: QueryResult) -> Reply:
    reply: dict[str, Any] = {
        "hit": result.hit,
        "match": result.match.value,
        "answer": result.answer,
        "id": result.id,
        "similarity": float(result.similarity),
        "matched_question": result.matched_question,
    }
    if result.verify_entry_id:  # only on a verification miss: write back with MC.INSERT ... VERIFIES <id>
        reply["verify_entry_id"] = result.verify_entry_id
    if result.uncacheable:
        # Only then: the class that made this a miss (cacheability policy); other replies keep their shape.
        reply["uncacheable"] = result.uncacheable
    return reply


# -- the commands; args[0] is the command name --------------------------------------------------


async def mc_query(core: CacheCore, principal: Principal, args: Sequence[bytes]) -> Reply:
    """MC.QUERY tenant model messages-json [THRESHOLD f] [TOPK n]"""
    where = scope(args)
    messages = parse_messages(args[3])
    opts = options(args[4:], {"THRESHOLD": "f", "TOPK": "n"}, "MC.QUERY")
    threshold = float_arg(opts["THRESHOLD"], "THRESHOLD") if "THRESHOLD" in opts else None
    top_k = integer_arg(opts["TOPK"], "TOPK") if "TOPK" in opts else 0
    result = await core.query(principal, where, messages, similarity_threshold=threshold, top_k=top_k)
    return result_reply(result)


async def mc_insert(core: CacheCore, principal: Principal, args: Sequence[bytes]) -> Reply:
    """MC.INSERT tenant model messages-json answer [TTL s] [META json] [VERIFIES id]: the id, or nil when the
    cacheability policy refused the chat (MC.QUERY on it says which class)."""
    where = scope(args)
    messages = parse_messages(args[3])
    answer = text(args[4], "answer")
    opts = options(args[5:], {"TTL": "s", "META": "json", "VERIFIES": "id"}, "MC.INSERT")
    ttl = integer_arg(opts["TTL"], "TTL") if "TTL" in opts else 0
    if ttl < 0:
        raise InvalidArgument("TTL must not be negative")
    metadata = parse_metadata(opts["META"]) if "META" in opts else {}
    verifies = text(opts["VERIFIES"], "VERIFIES") if "VERIFIES" in opts else ""
    inserted = await core.insert(principal, where, [NewEntry(tuple(messages), answer, ttl, metadata, verifies)])
    return inserted.ids[0] or None


async def mc_feedback(core: CacheCore, principal: Principal, args: Sequence[bytes]) -> Reply:
    """MC.FEEDBACK tenant model entry-id CORRECT|WRONG messages-json [ANSWER text]: what was done, in words."""
    where = scope(args)
    entry_id = text(args[3], "entry-id")
    verdict = text(args[4], "verdict").lower()
    messages = parse_messages(args[5])
    opts = options(args[6:], {"ANSWER": "text"}, "MC.FEEDBACK")
    answer = text(opts["ANSWER"], "ANSWER") if "ANSWER" in opts else ""
    return await core.feedback(principal, where, entry_id, messages, verdict if verdict in ("correct", "wrong") else "",
                               answer)


async def mc_remove(core: CacheCore, principal: Principal, args: Sequence[bytes]) -> Reply:
    """MC.REMOVE tenant model id [id ...]"""
    where = scope(args)
    ids = [text(a, "id") for a in args[3:]]
    return await core.remove(principal, where, ids)


async def mc_clear(core: CacheCore, principal: Principal, args: Sequence[bytes]) -> Reply:
    """MC.CLEAR tenant [model]"""
    tenant = text(args[1], "tenant")
    model = text(args[2], "model") if len(args) > 2 else None
    if model == "":
        # The core reads an empty model as "every model"; here that must be asked for by leaving it out.
        raise InvalidArgument("model is empty: leave it out to clear every model of the tenant")
    return await core.clear(principal, tenant, model)


async def mc_get(core: CacheCore, principal: Principal, args: Sequence[bytes]) -> Reply:
    """MC.GET tenant model question: the cached answer (exact or semantic hit), or nil."""
    where = scope(args)
    question = Message("user", text(args[3], "question"))
    result = await core.query(principal, where, [question])
    return result.answer if result.hit else None


async def mc_set(core: CacheCore, principal: Principal, args: Sequence[bytes]) -> Reply:
    """MC.SET tenant model question answer [EX s]: OK, or nil when the cacheability policy refused
    the question (as SET NX answers nil when it stored nothing)."""
    where = scope(args)
    question = Message("user", text(args[3], "question"))
    answer = text(args[4], "answer")
    opts = options(args[5:], {"EX": "s"}, "MC.SET")
    ttl = integer_arg(opts["EX"], "EX") if "EX" in opts else 0
    if ttl < 0:
        raise InvalidArgument("EX must not be negative")
    inserted = await core.insert(principal, where, [NewEntry((question,), answer, ttl)])
    return Simple("OK") if inserted.ids[0] else None


# name -> (handler, arity, most arguments or 0 for no bound). Arity as Redis counts it, the name
# included: n means exactly n, -n at least n. Options are bounded by options() instead.
MC_COMMANDS: dict[str, tuple[McHandler, int, int]] = {
    "MC.QUERY": (mc_query, -4, 0),
    "MC.INSERT": (mc_insert, -5, 0),
    "MC.REMOVE": (mc_remove, -4, 0),
    "MC.CLEAR": (mc_clear, -2, 3),
    "MC.GET": (mc_get, 4, 4),
    "MC.SET": (mc_set, -5, 0),
    "MC.FEEDBACK": (mc_feedback, -6, 8),
}
