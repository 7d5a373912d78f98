"""Placeholder for the ModelCache-compatible POST /modelcache endpoint (issue 10)."""

from __future__ import annotations

from ..cache.service import CacheCore
from .http_server import Handler


def modelcache_routes(core: CacheCore) -> dict[tuple[str, str], Handler]:
    return {}
