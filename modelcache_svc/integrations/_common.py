"""What the framework integrations share: scope names, the fail-open guard, counters.

Nothing here imports LangChain or the OpenAI SDK. The guard is the one place
that decides whether the cache is asked at all (the breaker), turns every
cache failure into "ask the model" (logged and counted), and remembers what a
query said about the write-back that follows it (verification, cacheability).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..client import AsyncCacheClient, CacheClient, Hit

log = logging.getLogger("modelcache_svc.integrations")

DEFAULT_TIMEOUT_S = 0.25  # a cache answer later than this is worth less than calling the model
ROLES = ("system", "user", "assistant")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/-]+")
PARAMS_SEPARATOR = "::"  # between a model's name and the hash of its parameters in a scope name
MAX_MODEL_NAME = 128  # cache/keys.py MODEL_NAME


def safe_model_name(name: str) -> str:
    """A model name within the service's alphabet (cache/keys.py): others become '-'."""
    cleaned = _UNSAFE.sub("-", name).lstrip("_.:/-")[:MAX_MODEL_NAME]
    return cleaned or "model"


def scope_model(base: str, params: Mapping[str, Any] | None) -> str:
    """The scope's model: the model's name, then a short hash of the parameters that shape the answer.

    ``gpt-4o-mini`` with no such parameters; ``gpt-4o-mini::3f9a2c1d0e`` with
    them, so two temperatures (or stop lists, seeds, ...) never share an answer.
    """
    name = safe_model_name(base)
    if not params:
        return name
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=repr).encode()).hexdigest()[:10]
    return f"{name[: MAX_MODEL_NAME - len(digest) - len(PARAMS_SEPARATOR)]}{PARAMS_SEPARATOR}{digest}"


def scopes_of(model: str, names: list[str]) -> list[str]:
    """The scope names among ``names`` that belong to ``model`` (itself or its parameter variants)."""
    base = safe_model_name(model)
    return [n for n in names if n == base or n.startswith(base + PARAMS_SEPARATOR)]


@dataclass
class Plan:
    """What one model call means to the cache: whether it may be answered, and as which scope and chat."""

    cacheable: bool
    reason: str = ""  # why not, when not: logged at debug level
    model: str = ""  # the scope's model
    chat: list[dict[str, str]] = field(default_factory=list)


def not_cacheable(reason: str) -> Plan:
    return Plan(False, reason)


@dataclass(frozen=True)
class Served:
    """What the cache said about one call, shown to the caller (``.modelcache`` / ``generation_info``).

    ``entry_id`` is the entry served (a hit) or written back (a miss whose
    answer was stored); it and ``messages`` are what a feedback call names.
    """

    hit: bool
    tenant: str
    model: str
    messages: list[dict[str, str]]
    match: str = "miss"
    entry_id: str = ""
    similarity: float = 0.0
    verify_entry_id: str = ""  # the query asked for this miss's answer, to check that entry
    uncacheable: str = ""  # the tenant's policy refused to serve or store this question

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Counters:
    """Client-side counts of one integration object (``.stats``); thread-safe."""

    lookups: int = 0  # calls the cache was asked about
    hits: int = 0
    misses: int = 0
    passthrough: int = 0  # calls the cache must not answer: straight to the model
    writes: int = 0  # answers written back
    refused: int = 0  # write-backs the tenant's cacheability policy refused
    errors: int = 0  # cache calls that failed or timed out (the model was called anyway)
    skipped: int = 0  # calls not sent to the cache while the breaker was open

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class Breaker:
    """After ``failures`` cache errors in a row, skip the cache for ``cooldown_s``, then try one call.

    A cache that answers "connection refused" costs nothing, but one that
    black-holes packets costs the whole deadline on every call; the breaker
    bounds that to ``failures`` calls per cooldown.
    """

    def __init__(self, failures: int = 3, cooldown_s: float = 5.0) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._streak = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            return time.monotonic() >= self._open_until

    def record(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self._streak = 0
                return
            self._streak += 1
            if self._streak >= self.failures:
                self._open_until = time.monotonic() + self.cooldown_s
                self._streak = 0


class Guard:
    """The cache as a framework wrapper uses it: every method fails open.

    ``lookup``/``alookup`` return the ``Hit`` (or None when the cache could not
    be asked); ``write``/``awrite`` return the stored id (or ""). A failure is
    logged, counted in ``counters.errors`` and feeds the breaker; it never
    reaches the caller.
    """

    def __init__(
        self,
        target: str,
        tenant: str,
        api_key: str | None,
        timeout: float,
        similarity_threshold: float | None,
        ttl_seconds: int,
        integration: str,
        cache_client: CacheClient | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.target = target
        self.tenant = tenant
        self.timeout = timeout
        self.similarity_threshold = similarity_threshold
        self.ttl_seconds = ttl_seconds
        self.integration = integration
        self.counters = Counters()
        self.breaker = breaker or Breaker()
        self._api_key = api_key
        self._client = cache_client
        self._client_lock = threading.Lock()
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncCacheClient] = (
            weakref.WeakKeyDictionary()
        )
        # What a query said about its write-back (verify id, or that the policy refuses it).
        self._pending: OrderedDict[tuple[str, str], Hit] = OrderedDict()
        self._pending_lock = threading.Lock()

    # -- clients ----------------------------------------------------------------------------------
    @property
    def client(self) -> CacheClient:
        with self._client_lock:
            if self._client is None:
                self._client = CacheClient(self.target, api_key=self._api_key, timeout=self.timeout, retries=1)
            return self._client

    @property
    def aclient(self) -> AsyncCacheClient:
        """One AsyncCacheClient per event loop (a grpc.aio channel belongs to the loop that opened it)."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = AsyncCacheClient(self.target, api_key=self._api_key, timeout=self.timeout, retries=1)
            self._aclients[loop] = client
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    # -- lookups ----------------------------------------------------------------------------------
    def _start(self, plan: Plan) -> bool:
        if not plan.cacheable:
            self.counters.add("passthrough")
            log.debug("not cached (%s): straight to the model", plan.reason)
            return False
        if not self.breaker.allow():
            self.counters.add("skipped")
            return False
        self.counters.add("lookups")
        return True

    def _failed(self, what: str, exc: Exception) -> None:
        self.counters.add("errors")
        self.breaker.record(False)
        log.warning("cache %s failed, calling the model without it: %s", what, exc)

    def _answered(self, plan: Plan, hit: Hit) -> Hit:
        self.breaker.record(True)
        self.counters.add("hits" if hit.hit else "misses")
        if not hit.hit and (_field(hit, "verify_entry_id") or _field(hit, "uncacheable")):
            self._remember(plan, hit)
        return hit

    def lookup(self, plan: Plan) -> Hit | None:
        if not self._start(plan):
            return None
        try:
            hit = self.client.query(
                self.tenant, plan.model, plan.chat, similarity_threshold=self.similarity_threshold, timeout=self.timeout
            )
        except Exception as exc:  # noqa: BLE001 - fail open, whatever broke
            self._failed("query", exc)
            return None
        return self._answered(plan, hit)

    async def alookup(self, plan: Plan) -> Hit | None:
        if not self._start(plan):
            return None
        try:
            hit = await self.aclient.query(
                self.tenant, plan.model, plan.chat, similarity_threshold=self.similarity_threshold, timeout=self.timeout
            )
        except Exception as exc:  # noqa: BLE001
            self._failed("query", exc)
            return None
        return self._answered(plan, hit)

    # -- write-back -------------------------------------------------------------------------------
    def _insert_args(
        self, plan: Plan, client: object, verifies: bool, ttl_seconds: int | None
    ) -> dict[str, Any] | None:
        """The insert's keyword arguments, or None when the write-back must not happen."""
        pending = self._take(plan)
        if pending is not None and _field(pending, "uncacheable"):
            self.counters.add("refused")
            return None
        kwargs: dict[str, Any] = {
            "ttl_seconds": self.ttl_seconds if ttl_seconds is None else ttl_seconds,
            "metadata": {"integration": self.integration},
            "timeout": self.timeout,
        }
        verified = _field(pending, "verify_entry_id") if pending is not None and verifies else ""
        if verified and _accepts(client, "verifies"):
            kwargs["verifies"] = verified
        return kwargs

    def _written(self, entry_id: str) -> str:
        self.breaker.record(True)
        self.counters.add("writes" if entry_id else "refused")
        return entry_id

    def write(self, plan: Plan, answer: str, verifies: bool = True, ttl_seconds: int | None = None) -> str:
        """Write ``answer`` back for ``plan``'s chat (``ttl_seconds``: this entry's, instead of the guard's).

        ``verifies=False``: never as a verification write-back, for an answer whose text is not the model's
        text alone (the service compares the two answers' texts).
        """
        if not plan.cacheable or not answer or not self.breaker.allow():
            return ""
        try:
            client = self.client
            kwargs = self._insert_args(plan, client, verifies, ttl_seconds)
            if kwargs is None:
                return ""
            return self._written(client.insert(self.tenant, plan.model, plan.chat, answer, **kwargs))
        except Exception as exc:  # noqa: BLE001
            self._failed("write-back", exc)
            return ""

    async def awrite(self, plan: Plan, answer: str, verifies: bool = True, ttl_seconds: int | None = None) -> str:
        if not plan.cacheable or not answer or not self.breaker.allow():
            return ""
        try:
            client = self.aclient
            kwargs = self._insert_args(plan, client, verifies, ttl_seconds)
            if kwargs is None:
                return ""
            return self._written(await client.insert(self.tenant, plan.model, plan.chat, answer, **kwargs))
        except Exception as exc:  # noqa: BLE001
            self._failed("write-back", exc)
            return ""

    def served(self, plan: Plan, hit: Hit | None, written_id: str = "") -> Served:
        """What the caller is shown about this call."""
        if hit is not None and hit.hit:
            return Served(True, self.tenant, plan.model, plan.chat, hit.match, hit.id, hit.similarity)
        return Served(
            False,
            self.tenant,
            plan.model,
            plan.chat,
            entry_id=written_id,
            verify_entry_id=_field(hit, "verify_entry_id") if hit is not None else "",
            uncacheable=_field(hit, "uncacheable") if hit is not None else "",
        )

    # -- pending write-backs: bounded, keyed by scope and chat ----------------------------------------
    @staticmethod
    def _key(plan: Plan) -> tuple[str, str]:
        return plan.model, json.dumps(plan.chat, sort_keys=True)

    def _remember(self, plan: Plan, hit: Hit) -> None:
        with self._pending_lock:
            self._pending[self._key(plan)] = hit
            while len(self._pending) > 1024:
                self._pending.popitem(last=False)

    def _take(self, plan: Plan) -> Hit | None:
        with self._pending_lock:
            return self._pending.pop(self._key(plan), None)


class Guarded:
    """What an integration object shows of its guard: ``tenant``, ``stats``, ``cache_client``."""

    guard: Guard

    @property
    def tenant(self) -> str:
        return self.guard.tenant

    @property
    def stats(self) -> dict[str, int]:
        """Client-side counts: lookups, hits, misses, passthrough, writes, refused, errors, skipped."""
        return self.guard.counters.as_dict()

    @property
    def cache_client(self) -> CacheClient:
        return self.guard.client


def _field(obj: object, name: str) -> str:
    """A Hit's field that newer clients have (verify_entry_id, uncacheable); "" on older ones."""
    return str(getattr(obj, name, "") or "")


def _accepts(client: object, name: str) -> bool:
    """Whether the client's insert takes ``name`` (verification arrives with a newer client)."""
    try:
        return name in inspect.signature(client.insert).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False


def clear_scopes(client: CacheClient, tenant: str, model: str | None, timeout: float = 5.0) -> int:
    """Drop the entries of ``model`` and all its parameter variants (None: the whole tenant)."""
    if model is None:
        return client.clear(tenant, timeout=timeout)
    names = [s["model"] for s in client.stats(tenant, timeout=timeout)]
    return sum(client.clear(tenant, name, timeout=timeout) for name in scopes_of(model, names))


async def aclear_scopes(client: AsyncCacheClient, tenant: str, model: str | None, timeout: float = 5.0) -> int:
    if model is None:
        return await client.clear(tenant, timeout=timeout)
    names = [s["model"] for s in await client.stats(tenant, timeout=timeout)]
    return sum([await client.clear(tenant, name, timeout=timeout) for name in scopes_of(model, names)])
