"""The console as one Starlette application, mounted at /console: its routes, the security headers on every
answer, and errors turned into pages by errors.TABLE (a missing or bad key: the sign-in page, 401)."""

from __future__ import annotations

import time
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import errors
from ..cache.service import CacheCore
from .auth import Gate
from .pages import Pages

HERE = Path(__file__).parent

# No script at all, styles from our own file, pictures inline (SVG is markup, not script), forms to ourselves,
# never inside another site's frame.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on our own forms.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """ASGI middleware: the headers above on every answer, errors included; pages are never stored by a cache
    on the way (they hold cached texts), the stylesheet may be."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith(scope.get("root_path", "") + "/static/")
        cache = b"public, max-age=3600" if static else b"no-store"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {n for n, _ in HEADERS} | {b"cache-control"}
                kept = [(n, v) for n, v in message.get("headers", []) if n.lower() not in names]
                message = {**message, "headers": [*kept, *HEADERS, (b"cache-control", cache)]}
            await send(message)

        await self.app(scope, receive, with_headers)


def templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["ts"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(t)))
    return Jinja2Templates(env=env)


def build_console(core: CacheCore) -> SecurityHeaders:
    s = core.settings
    pages = Pages(core, templates(), Gate(core.tenants, s.admin_key, s.console_session_ttl_s, s.console_secure_cookie))

    async def on_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, errors.Unauthenticated):
            return pages.signin_page(request, exc.message, 401)
        assert isinstance(exc, errors.CacheError)
        try:
            caller = await pages.gate.caller(request)
        except errors.CacheError:
            caller = None
        return pages.render(request, "error.html", caller, errors.codes_of(exc).http, message=exc.message,
                            kind=type(exc).__name__)

    routes = [
        Route("/", pages.overview, methods=["GET"]),
        Route("/signin", pages.signin_form, methods=["GET"]),
        Route("/signin", pages.signin, methods=["POST"]),
        Route("/signout", pages.signout, methods=["POST"]),
        Route("/t/{tenant}", pages.tenant, methods=["GET"]),
        Route("/t/{tenant}/settings", pages.tenant_settings, methods=["POST"]),
        Route("/t/{tenant}/keys", pages.create_key, methods=["POST"]),
        Route("/t/{tenant}/entries", pages.entries, methods=["GET"]),
        Route("/t/{tenant}/entry/{entry_id}", pages.entry, methods=["GET"]),
        Route("/t/{tenant}/entry/{entry_id}/remove", pages.remove, methods=["POST"]),
        Route("/t/{tenant}/entry/{entry_id}/answer", pages.replace, methods=["POST"]),
        Route("/t/{tenant}/traffic", pages.traffic, methods=["GET"]),
        Route("/t/{tenant}/traffic/{seq:int}/wrong", pages.mark_wrong, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={errors.CacheError: on_error})
    return SecurityHeaders(app)
