"""Tenants, their config, and who may call what (API keys).

A tenant key is read-write (``mck_...``) or read-only (``mcr_...``: Query, stats and the console's pages, no
change). The role is in the key's text, which the stored hash covers whole: a read-only key with its prefix
changed is a key nobody issued.

Tenant configs and key lookups are cached in process for a bounded time
(``CACHE_TTL_S``) so a query costs no store round trip for them; a change made
through this replica is seen at once, one made through another replica within
that bound.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from ..stores.base import ScalarStore
from .cacheability import check_policy
from .verifier_gate import check_cutoff
from ..limits import check_model_name, check_tenant_name
from ..records import ApiKeyRecord, Scope, Tenant, TenantConfig

CACHE_TTL_S = 2.0
T = TypeVar("T")
Run = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the admin (or anyone, with auth off) or one tenant's key."""

    admin: bool
    tenant: str | None = None
    read_only: bool = False

    def check_tenant(self, tenant: str) -> None:
        if not self.admin and tenant != self.tenant:
            raise PermissionDenied(f"this key belongs to another tenant and cannot reach tenant {tenant!r}")

    def check_admin(self) -> None:
        if not self.admin:
            raise PermissionDenied("this call needs the admin key")

    def check_write(self) -> None:
        if self.read_only:
            raise PermissionDenied("this key is read-only: it cannot change the cache")


ADMIN = Principal(admin=True)
KEY_PREFIX = "mck_"
READ_ONLY_KEY_PREFIX = "mcr_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def check_config(config: TenantConfig) -> TenantConfig:
    t = config.similarity_threshold
    if t is not None and (t != t or not 0.0 < t <= 1.0):
        raise InvalidArgument(f"similarity_threshold {t} is out of range: it must be in (0, 1]")
    if config.ttl_seconds < 0 or config.max_entries < 0:
        raise InvalidArgument("ttl_seconds and max_entries must not be negative")
    e = config.max_error_rate
    if e is not None and (e != e or not 0.0 < e < 1.0):
        raise InvalidArgument(f"max_error_rate {e} is out of range: it must be in (0, 1)")
    if config.verify_rate != config.verify_rate or not 0.0 <= config.verify_rate <= 1.0:
        raise InvalidArgument(f"verify_rate {config.verify_rate} is out of range: it must be in [0, 1]")
    check_cutoff(config.verifier_cutoff)
    if len(config.embedding_model) > 191:
        raise InvalidArgument("embedding_model is too long")
    check_policy(config.cacheability)
    return config


class TenantRegistry:
    def __init__(self, store: ScalarStore, run: Run, admin_key: str, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._run = run
        self._admin_key = admin_key
        self._clock = clock
        self._tenants: dict[str, tuple[float, Tenant | None]] = {}
        self._keys: dict[str, tuple[float, ApiKeyRecord | None]] = {}

    @property
    def auth_enabled(self) -> bool:
        return bool(self._admin_key)

    # -- authentication --------------------------------------------------------
    async def authenticate(self, key: str | None) -> Principal:
        if not self._admin_key:
            return ADMIN
        if not key:
            raise Unauthenticated("missing API key (gRPC: metadata 'authorization: Bearer <key>'; Redis protocol: AUTH <key>)")
        if hmac.compare_digest(key.encode("utf-8", "surrogatepass"), self._admin_key.encode()):
            return ADMIN
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is not None and cached[0] > now:
            record = cached[1]
        else:
            record = await self._run(self._store.get_api_key, digest)
            self._keys[digest] = (now + CACHE_TTL_S, record)
            if len(self._keys) > 10_000:
                self._keys.clear()
        if record is None or record.revoked_at is not None:
            raise Unauthenticated("invalid or revoked API key")
        return Principal(admin=False, tenant=record.tenant, read_only=key.startswith(READ_ONLY_KEY_PREFIX))

    async def create_api_key(self, tenant: str, read_only: bool = False) -> tuple[ApiKeyRecord, str]:
        await self.get(tenant)
        key = (READ_ONLY_KEY_PREFIX if read_only else KEY_PREFIX) + secrets.token_urlsafe(32)
        record = ApiKeyRecord(id=uuid.uuid4().hex, tenant=tenant, key_hash=hash_key(key), created_at=self._clock())
        await self._run(self._store.create_api_key, record)
        return record, key

    async def revoke_api_key(self, key_id: str) -> ApiKeyRecord:
        record = await self._run(self._store.revoke_api_key, key_id, self._clock())
        if record is None:
            raise NotFound(f"no API key with id {key_id[:64]!r}")
        self._keys.pop(record.key_hash, None)
        return record

    # -- tenants ------------------------------------------------------------------
    async def get(self, name: str) -> Tenant:
        check_tenant_name(name)
        now = time.monotonic()
        cached = self._tenants.get(name)
        if cached is not None and cached[0] > now:
            tenant = cached[1]
        else:
            tenant = await self._run(self._store.get_tenant, name)
            self._tenants[name] = (now + CACHE_TTL_S, tenant)
            if len(self._tenants) > 10_000:
                self._tenants.clear()
        if tenant is None:
            raise NotFound(f"tenant {name!r} does not exist; create it first (TenantService.CreateTenant)")
        return tenant

    async def for_caller(self, principal: Principal, name: str) -> Tenant:
        """The tenant a call names, once the caller may reach it."""
        check_tenant_name(name)
        principal.check_tenant(name)
        return await self.get(name)

    async def for_scope(self, principal: Principal, scope: Scope) -> Tenant:
        """The tenant of a call's scope, once the caller may reach it and the model name is valid."""
        tenant = await self.for_caller(principal, scope.tenant)
        check_model_name(scope.model)
        return tenant

    async def create(self, name: str, config: TenantConfig) -> Tenant:
        check_tenant_name(name)
        tenant: Tenant = await self._run(self._store.create_tenant, name, check_config(config), self._clock())
        self._tenants.pop(name, None)
        return tenant

    async def ensure(self, name: str, config: TenantConfig) -> Tenant:
        existing = await self._run(self._store.get_tenant, name)
        if existing is not None:
            return existing
        try:
            return await self.create(name, config)
        except AlreadyExists:  # another replica created it between our read and our write
            return await self.get(name)

    async def update(self, name: str, config: TenantConfig) -> Tenant:
        check_tenant_name(name)
        tenant = await self._run(self._store.update_tenant, name, check_config(config))
        self._tenants.pop(name, None)
        if tenant is None:
            raise NotFound(f"tenant {name!r} does not exist")
        return tenant

    async def delete(self, name: str) -> None:
        check_tenant_name(name)
        deleted = await self._run(self._store.delete_tenant, name)
        self._tenants.pop(name, None)
        self._keys = {h: v for h, v in self._keys.items() if v[1] is None or v[1].tenant != name}
        if not deleted:
            raise NotFound(f"tenant {name!r} does not exist")

    async def list(self) -> list[Tenant]:
        tenants: list[Tenant] = await self._run(self._store.list_tenants)
        return tenants

    def forget(self, name: str) -> None:
        self._tenants.pop(name, None)
