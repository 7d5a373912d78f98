"""What the HTTP port serves: /metrics, /healthz (live), /readyz (ready)."""

from __future__ import annotations

from ..cache.service import CacheCore
from .http_server import Handler, HttpServer, Request, Response


def build_http_server(core: CacheCore) -> HttpServer:
    async def metrics(_: Request) -> Response:
        return Response(200, core.metrics.render(), core.metrics.content_type)

    async def healthz(_: Request) -> Response:
        return Response.json({"status": "ok"})

    async def readyz(_: Request) -> Response:
        checks = await core.ready()
        ready = all(checks.values())
        return Response.json({"ready": ready, "checks": checks}, 200 if ready else 503)

    routes: dict[tuple[str, str], Handler] = {
        ("GET", "/metrics"): metrics,
        ("GET", "/healthz"): healthz,
        ("GET", "/readyz"): readyz,
    }
    from .modelcache_compat import modelcache_routes

    routes.update(modelcache_routes(core))
    return HttpServer(routes)
