"""Python clients for modelcache_svc over gRPC: CacheClient (blocking) and
AsyncCacheClient (asyncio), with the same methods and results.

    from modelcache_svc.client import CacheClient

    with CacheClient("127.0.0.1:50051") as cache:
        chat = [{"role": "user", "content": "What's the capital of Vietnam?"}]
        hit = cache.query("default", "my-model", chat)
        if not hit.hit:
            answer = call_the_model(chat)
            cache.insert("default", "my-model", chat, answer)

Errors come back as the service's own exception classes (errors.NotFound,
errors.InvalidArgument, ...; a code without a class of its own, such as
DEADLINE_EXCEEDED, as errors.CacheError with ``.code``). Only UNAVAILABLE is
retried, with capped, jittered backoff (see retry.Retry). docs/integration.md
shows how a product wires it in.

Layout: _calls.py shapes every request and result once, retry.py is the
policy, sync.py and aio.py only carry calls over their kind of channel.
"""

from ._calls import (
    ApiKey,
    ChatLike,
    Entry,
    Hit,
    InsertedId,
    ScopeStats,
    TenantInfo,
    TopEntry,
    tenant_config,
    to_messages,
    translate,
)
from ._transfer import ExportedPage, ImportResult
from .aio import AsyncCacheClient
from .retry import Retry
from .sync import CacheClient

__all__ = [
    "ApiKey",
    "AsyncCacheClient",
    "CacheClient",
    "ChatLike",
    "Entry",
    "ExportedPage",
    "Hit",
    "ImportResult",
    "InsertedId",
    "Retry",
    "ScopeStats",
    "TenantInfo",
    "TopEntry",
    "tenant_config",
    "to_messages",
    "translate",
]
