"""What the HTTP port serves: /metrics, /healthz (live), /readyz (ready), POST /modelcache (ModelCache's API)
and, with an admin key set, the console under /console; or, when the console has a listener of its own
(``console_port``), the console alone there. One Starlette application per listener, built here."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from ..cache.service import CacheCore
from .http_server import HttpServer
from .modelcache_compat import ModelCacheEndpoint

CONSOLE_OFF = ("the console is served only when the server has an admin key (--admin-key), and not with "
               "--console off\n")


def console_enabled(core: CacheCore) -> bool:
    return core.settings.console and bool(core.settings.admin_key)


def console_route(core: CacheCore) -> BaseRoute:
    """/console: the console, or a page saying why there is none (with nothing of the cache in it)."""
    if console_enabled(core):
        from ..console import build_console

        return Mount("/console", app=build_console(core))

    async def off(_: Request) -> Response:
        return PlainTextResponse(CONSOLE_OFF, 404)

    return Mount("/console", routes=[Route("/{rest:path}", off)])


def build_http_app(core: CacheCore, *, with_console: bool) -> Starlette:
    async def metrics(_: Request) -> Response:
        return Response(core.metrics.render(), media_type=core.metrics.content_type)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        checks = await core.ready()
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, 200 if ready else 503)

    routes: list[BaseRoute] = [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/modelcache", ModelCacheEndpoint(core).handle, methods=["POST"]),
    ]
    if with_console:
        routes.append(console_route(core))
    return Starlette(routes=routes)


def build_console_app(core: CacheCore) -> Starlette:
    """The console's own listener: /console and nothing else."""
    return Starlette(routes=[console_route(core)])


def _server(core: CacheCore, app: Starlette) -> HttpServer:
    s = core.settings
    return HttpServer(app, idle_timeout=s.http_idle_timeout_s, tls_cert=s.http_tls_cert, tls_key=s.http_tls_key,
                      max_body_bytes=s.limits.max_message_bytes)


def build_http_server(core: CacheCore) -> HttpServer:
    """The HTTP port; the console is on it unless it has a listener of its own."""
    return _server(core, build_http_app(core, with_console=not core.settings.console_port))


def build_console_server(core: CacheCore) -> HttpServer:
    return _server(core, build_console_app(core))
