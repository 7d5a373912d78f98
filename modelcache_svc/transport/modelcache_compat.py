"""A drop-in for ModelCache's HTTP API: ``POST /modelcache`` on the HTTP port.

ModelCache users point their existing client here and keep their request
bodies (DESIGN §10): a JSON object whose ``type`` is query, insert, remove or
register. Its ``scope.model`` becomes a model of one tenant of ours,
``Settings.modelcache_compat_tenant`` (default ``default``). Model names are
kept as given: ModelCache folds ``-`` and ``.`` into ``_``, which would merge
distinct models, and our names allow both characters.

Like ModelCache, every answer is HTTP 200 with ``errorCode`` in the body (0 is
success) and the per-type response shape, errors included. Codes:

| code | when |
|------|------|
| 103 | the body is not a JSON object (nor a JSON string holding one, which ModelCache's own examples send) |
| 102 | ``type`` is missing or not one of query / insert / remove / register |
| 201 | query refused: malformed ``query``, invalid chat or model, unknown tenant, bad or foreign key |
| 202 | query failed while served: a store down (with fail-open off), an internal error |
| 301 | insert refused: malformed ``chat_info`` or entry, invalid model, unknown tenant, bad or foreign key |
| 302 | insert failed while written: a store down, over a limit |
| 303 | insert failed on an internal error |
| 401 | remove refused: unknown ``remove_type``, malformed ids, invalid model, unknown tenant, bad or foreign key |
| 402 | remove failed while executed: a store down, an internal error |
| 502 | register failed: invalid model, unknown tenant, bad or foreign key, a store down |

Which error class takes which code is written in errors.TABLE, beside the
gRPC status and the RESP prefix of that class. Error bodies add ``errorType``
(our exception class: InvalidArgument, Unauthenticated, ...) so a caller can
tell a bad key from a bad chat.

Where we differ from ModelCache, on purpose:
- a query on a model nothing was written to is a clean miss, not an error;
- the whole ``query`` message list counts: system prompts and earlier turns
  are part of the key (a different system prompt never shares an answer);
- ``delta_time`` is always a string of seconds ("0.004s"), errors included
  (ModelCache sends the number 0 on errors);
- extra fields: a query hit carries ``id``, ``similarity`` and ``match``
  (exact / semantic); an insert carries the ``ids`` written (what
  ``delete_by_id`` takes: 32 hex characters, not ModelCache's integers);
- the cacheability policy (README, "What is never cached") applies: a
  flagged query is a miss with ``uncacheable`` (its class); a flagged
  ``chat_info`` item is not written, its id is ``""`` and ``uncacheable``
  (parallel to ``ids``) names the class; ``writeStatus`` stays ``success``;
- ``register`` creates nothing, since a model needs no registration here. It
  answers ``already_exists`` when the model has live entries in the tenant or
  was registered or written through this endpoint on this server since it
  started, and ``create_success`` otherwise. So a model is "new" again after
  a restart or on another replica only while it holds no entries, and saying
  ``create_success`` twice then is harmless;
- with authentication on (``--admin-key``) the endpoint takes
  ``Authorization: Bearer <key>``: the admin key, or a key of the compat tenant.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import errors
from ..cache.service import CacheCore
from ..cache.tenants import Principal
from ..records import Message, NewEntry, Scope

log = logging.getLogger("modelcache_svc.modelcache_compat")

TYPES = ("query", "insert", "remove", "register")
REMOVE_TYPES = ("delete_by_id", "truncate_by_model")
MAX_REMEMBERED_MODELS = 100_000  # bounds the memory of models registered here

Result = dict[str, Any]


def _seconds(start: float) -> str:
    return f"{time.perf_counter() - start:.3f}s"


def _error(code: int, exc: BaseException) -> Result:
    if isinstance(exc, errors.CacheError):
        return {"errorCode": code, "errorDesc": exc.message, "errorType": type(exc).__name__}
    # A bug: its details stay in the server log, not in an answer to whoever asked.
    return {"errorCode": code, "errorDesc": "internal error", "errorType": "Internal"}


def _query_shape(result: Result, start: float) -> Result:
    """ModelCache's query shape around an error: no hit, empty strings."""
    return {**result, "cacheHit": False, "delta_time": _seconds(start), "hit_query": "", "answer": ""}


def _parse_body(body: bytes) -> dict[str, Any]:
    """The request object; ModelCache's examples post ``json=json.dumps(data)``,
    a JSON string holding the object, so one level of string is unwrapped."""
    try:
        value = json.loads(body)
        if isinstance(value, str):
            value = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise errors.InvalidArgument(f"the body is not JSON: {str(exc)[:200]}") from exc
    if not isinstance(value, dict):
        raise errors.InvalidArgument("the body must be a JSON object with a 'type'")
    return value


def _model_of(body: dict[str, Any]) -> str:
    scope = body.get("scope")
    # Never empty: to the core an empty model means "every model of the tenant" (clear, stats).
    if not isinstance(scope, dict) or not isinstance(scope.get("model"), str) or not scope["model"]:
        raise errors.InvalidArgument('scope.model is required: {"scope": {"model": "..."}}')
    model: str = scope["model"]
    return model


def _messages(value: Any, where: str) -> list[Message]:
    """ModelCache's ``query``: a list of {role, content}; a bare string is one user turn."""
    if isinstance(value, str):
        return [Message("user", value)]
    if not isinstance(value, list) or not value:
        raise errors.InvalidArgument(f'{where} must be a non-empty list of {{"role", "content"}} messages')
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise errors.InvalidArgument(f"{where}[{i}] must be an object with string 'role' and 'content'")
        out.append(Message(m["role"], m["content"]))
    return out


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else value.strip()


def _request_id(request: Request) -> str:
    given = "".join(ch for ch in request.headers.get("x-request-id", "")[:64] if ch.isprintable())
    return given or uuid.uuid4().hex


class ModelCacheEndpoint:
    def __init__(self, core: CacheCore) -> None:
        self.core = core
        self.tenant = core.settings.modelcache_compat_tenant
        self._registered: set[str] = set()
        self._calls: dict[str, Callable[[Principal, dict[str, Any], Request, float], Awaitable[Result]]] = {
            "query": self._query,
            "insert": self._insert,
            "remove": self._remove,
            "register": self._register,
        }

    async def handle(self, request: Request) -> Response:
        start = time.perf_counter()
        kind = "unknown"  # a metric label never holds what the caller sent
        try:
            body = _parse_body(await request.body())
        except errors.InvalidArgument as exc:
            result = _query_shape(_error(103, exc), start)
        else:
            requested = body.get("type")
            if requested not in TYPES:
                shown = json.dumps(requested)[:80] if requested is not None else "missing"
                refused = errors.InvalidArgument(f"type {shown} is unknown: should be one of {list(TYPES)}")
                result = _query_shape(_error(102, refused), start)
            else:
                kind = str(requested)
                result = await self._dispatch(kind, body, request, start)
        self.core.metrics.request("http", f"modelcache.{kind}", str(result["errorCode"]), time.perf_counter() - start)
        return Response(json.dumps(result, ensure_ascii=False).encode(), media_type="application/json")

    async def _dispatch(self, kind: str, body: dict[str, Any], request: Request, start: float) -> Result:
        try:
            principal = await self.core.tenants.authenticate(_bearer(request))
            return await self._calls[kind](principal, body, request, start)
        except errors.CacheError as exc:
            return self._failure(kind, exc, start)
        except Exception as exc:
            log.exception("POST /modelcache %s failed with an unexpected error", kind)
            return self._failure(kind, exc, start)

    def _failure(self, kind: str, exc: Exception, start: float) -> Result:
        """ModelCache's response shape of the call type around the code errors.TABLE gives (kind, error)."""
        code = errors.codes_of(exc).compat[kind]
        if kind == "query":
            return _query_shape(_error(code, exc), start)
        if kind == "insert":
            return _error(code, exc) | {"writeStatus": "exception"}
        if kind == "remove":
            failed = _error(code, exc)
            # ModelCache names the status removeStatus on 401 and writeStatus on 402: send both.
            return failed | {"response": {"status": "failed"}, "removeStatus": "exception", "writeStatus": "exception"}
        return _error(code, exc) | {"response": "", "writeStatus": "exception"}

    # -- the four calls ---------------------------------------------------------------------
    async def _query(self, principal: Principal, body: dict[str, Any], request: Request, start: float) -> Result:
        scope = Scope(self.tenant, _model_of(body))
        # The whole list: system prompts and history are part of the key (ModelCache ignores them).
        messages = _messages(body.get("query"), "query")
        hit = await self.core.query(principal, scope, messages, request_id=_request_id(request))
        result: Result = {
            "errorCode": 0,
            "errorDesc": "",
            "cacheHit": hit.hit,
            "delta_time": _seconds(start),
            "hit_query": hit.matched_question if hit.hit else "",
            "answer": hit.answer if hit.hit else "",
        }
        if hit.hit:
            result |= {"id": hit.id, "similarity": round(hit.similarity, 4), "match": hit.match.value}
        elif hit.uncacheable:
            result["uncacheable"] = hit.uncacheable
        return result

    async def _insert(self, principal: Principal, body: dict[str, Any], request: Request, start: float) -> Result:
        model = _model_of(body)
        chat_info = body.get("chat_info")
        if not isinstance(chat_info, list) or not chat_info:
            raise errors.InvalidArgument('chat_info must be a non-empty list of {"query": [...], "answer": "..."}')
        entries = []
        for i, item in enumerate(chat_info):
            if not isinstance(item, dict) or not isinstance(item.get("answer"), str):
                raise errors.InvalidArgument(f"chat_info[{i}] must be an object with a 'query' and a string 'answer'")
            entries.append(NewEntry(tuple(_messages(item.get("query"), f"chat_info[{i}].query")), item["answer"]))
        inserted = await self.core.insert(principal, Scope(self.tenant, model), entries)
        self._remember(model)
        result: Result = {"errorCode": 0, "errorDesc": "", "writeStatus": "success", "ids": inserted.ids}
        if any(inserted.uncacheable):
            result["uncacheable"] = inserted.uncacheable
        return result

    async def _remove(self, principal: Principal, body: dict[str, Any], request: Request, start: float) -> Result:
        model = _model_of(body)
        remove_type = body.get("remove_type")
        if remove_type == "delete_by_id":
            ids = body.get("id_list", [])
            if not isinstance(ids, list):
                raise errors.InvalidArgument("id_list must be a list of entry ids")
            removed = await self.core.remove(principal, Scope(self.tenant, model), ids)
            # ModelCache's keys, so clients that read them keep working; "removed" is ours.
            count = f"delete_count: {removed}"
            response: Result = {"status": "success", "milvus": count, "mysql": count, "removed": removed}
        elif remove_type == "truncate_by_model":
            removed = await self.core.clear(principal, self.tenant, model)
            count = f"delete_count: {removed}"
            response = {"status": "success", "VectorDB": "cleared", "ScalarDB": count, "removed": removed}
        else:
            shown = json.dumps(remove_type)[:80] if remove_type is not None else "missing"
            raise errors.InvalidArgument(f"remove_type {shown} is unknown: should be one of {list(REMOVE_TYPES)}")
        return {"errorCode": 0, "errorDesc": "", "response": response, "writeStatus": "success"}

    async def _register(self, principal: Principal, body: dict[str, Any], request: Request, start: float) -> Result:
        model = _model_of(body)
        # stats checks the key, the tenant and the model name, and counts the model's live entries.
        scopes = await self.core.stats(principal, self.tenant, model, 1.0, 1)
        known = model in self._registered or any(s.entries > 0 for s in scopes)
        self._remember(model)
        return {
            "errorCode": 0,
            "errorDesc": "",
            "response": "already_exists" if known else "create_success",
            "writeStatus": "success",
        }

    def _remember(self, model: str) -> None:
        if len(self._registered) < MAX_REMEMBERED_MODELS:
            self._registered.add(model)
