"""Who is calling the console, and whether a change is theirs to make.

- ``Authorization: Bearer KEY`` on a request is that key signed in (scripts and checks); it wins over a
  cookie.
- A browser signs in once with a key (the sign-in form) and holds a session cookie: an opaque random id,
  HttpOnly, SameSite=Strict, Path=/console, Secure when the request came over HTTPS (or through a proxy on
  this host that says so with X-Forwarded-Proto, which uvicorn reads) or when ``console_secure_cookie`` says
  the browser always talks to a TLS proxy. Over plain loopback HTTP a Secure cookie would never be sent back,
  so there it is not Secure: that is the one case a browser's traffic is not on the network anyway.
- Sessions live in this process's memory, with the key, for ``console_session_ttl_s``. Every request
  authenticates the key again (TenantRegistry caches keys for 2 s), so a revoked key ends its sessions; a
  restart ends them all; behind several replicas the browser needs a sticky route (or Bearer).
- Every change (a POST) carries a CSRF token in its form: a session's own random token, or, for Bearer, an
  HMAC of the key under a secret derived from the admin key (the same on every replica). The sign-in form
  has one too (double submit: a cookie and the form agree). A POST whose Origin names another host is
  refused before that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from ..cache.tenants import Principal, TenantRegistry
from ..errors import PermissionDenied, Unauthenticated

SESSION_COOKIE = "mc_console"
SIGNIN_COOKIE = "mc_console_signin"
MAX_SESSIONS = 10_000
CSRF_FIELD = "csrf"


@dataclass(slots=True)
class Session:
    key: str
    csrf: str
    expires: float


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    csrf: str
    via: str  # "session" | "bearer"

    @property
    def label(self) -> str:
        p = self.principal
        if p.admin:
            return "admin key"
        return f"key of tenant {p.tenant}" + (" (read-only)" if p.read_only else "")

    @property
    def can_change(self) -> bool:
        return not self.principal.read_only


class Sessions:
    """Session ids to keys, bounded (the oldest go first) and expiring."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, key: str) -> tuple[str, Session]:
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        sid = secrets.token_urlsafe(32)
        session = Session(key, secrets.token_urlsafe(32), self.clock() + self.ttl_s)
        self._sessions[sid] = session
        return sid, session

    def get(self, sid: str) -> Session | None:
        session = self._sessions.get(sid)
        if session is not None and session.expires <= self.clock():
            del self._sessions[sid]
            return None
        return session

    def close(self, sid: str) -> None:
        self._sessions.pop(sid, None)


def bearer_of(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else value.strip()


class Gate:
    def __init__(self, tenants: TenantRegistry, admin_key: str, session_ttl_s: float, secure_cookie: bool) -> None:
        self.tenants = tenants
        self.sessions = Sessions(session_ttl_s)
        self.secure_cookie = secure_cookie
        self._secret = hmac.new(admin_key.encode(), b"modelcache console csrf", hashlib.sha256).digest()

    async def caller(self, request: Request) -> Caller:
        """The caller of this request; Unauthenticated without a key, or with one nobody issued."""
        key = bearer_of(request)
        if key is not None:
            principal = await self.tenants.authenticate(key)
            return Caller(principal, self._bearer_token(key), "bearer")
        sid = request.cookies.get(SESSION_COOKIE, "")
        session = self.sessions.get(sid) if sid else None
        if session is None:
            raise Unauthenticated("sign in with an API key to see this page" if not sid else
                                  "your console session has ended: sign in again")
        try:
            principal = await self.tenants.authenticate(session.key)
        except Unauthenticated:
            self.sessions.close(sid)
            raise Unauthenticated("the key of this session was revoked: sign in with another one") from None
        return Caller(principal, session.csrf, "session")

    def _bearer_token(self, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        return hmac.new(self._secret, digest, hashlib.sha256).hexdigest()

    # -- changes ---------------------------------------------------------------------------------
    @staticmethod
    def check_origin(request: Request) -> None:
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
            raise PermissionDenied("this form was sent from another site")

    def check_csrf(self, request: Request, caller: Caller, token: object) -> None:
        """A form of this caller's: same origin, the caller's CSRF token."""
        self.check_origin(request)
        if not isinstance(token, str) or not token or not hmac.compare_digest(token, caller.csrf):
            raise PermissionDenied("the form's CSRF token is missing or wrong: reload the page and send it again")

    def check_change(self, request: Request, caller: Caller, token: object) -> None:
        """A change by this caller: its own form, and a key that may change things."""
        self.check_csrf(request, caller, token)
        caller.principal.check_write()

    # -- signing in and out ------------------------------------------------------------------------
    def signin_token(self, request: Request) -> str:
        return request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(32)

    def check_signin(self, request: Request, token: object) -> None:
        self.check_origin(request)
        cookie = request.cookies.get(SIGNIN_COOKIE, "")
        if not cookie or not isinstance(token, str) or not hmac.compare_digest(token, cookie):
            raise PermissionDenied("the sign-in form's CSRF token is missing or wrong: reload the page")

    def secure(self, request: Request) -> bool:
        return self.secure_cookie or request.url.scheme == "https"

    def set_cookie(self, request: Request, response: Response, name: str, value: str,
                   max_age: int | None = None) -> None:
        response.set_cookie(name, value, max_age=max_age, path=request.scope.get("root_path") or "/console",
                            secure=self.secure(request), httponly=True, samesite="strict")

    async def sign_in(self, request: Request, response: Response, key: str) -> Principal:
        principal = await self.tenants.authenticate(key)  # Unauthenticated for a bad key: no session
        old = request.cookies.get(SESSION_COOKIE)
        if old:
            self.sessions.close(old)
        sid, _ = self.sessions.open(key)
        self.set_cookie(request, response, SESSION_COOKIE, sid)
        response.delete_cookie(SIGNIN_COOKIE, path=request.scope.get("root_path") or "/console")
        return principal

    def sign_out(self, request: Request, response: Response) -> None:
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            self.sessions.close(sid)
        response.delete_cookie(SESSION_COOKIE, path=request.scope.get("root_path") or "/console",
                               secure=self.secure(request), httponly=True, samesite="strict")
