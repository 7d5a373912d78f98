"""ModelCacheSemanticCache held to LangChain's own standard tests for LLM caches (langchain-tests'
SyncCacheTestSuite and AsyncCacheTestSuite, unchanged), over a real cache server, as LangChain's own caches
run them: subclass the suite, give it an empty cache per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from langchain_tests.integration_tests.cache import AsyncCacheTestSuite, SyncCacheTestSuite

from modelcache_svc.integrations.langchain import ModelCacheSemanticCache
from tests.servers import ThreadServer

CACHE_TIMEOUT = 10.0  # this host is shared and slow; the default 0.25 s is for products


def empty_cache(cache_server: ThreadServer) -> ModelCacheSemanticCache:
    """A cache whose scope no other test writes to: empty, as the suites ask."""
    return ModelCacheSemanticCache(cache_server.target, model="std-" + uuid.uuid4().hex[:8], timeout=CACHE_TIMEOUT)


class TestModelCacheSemanticCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, cache_server: ThreadServer) -> Iterator[ModelCacheSemanticCache]:
        cache = empty_cache(cache_server)
        yield cache
        assert cache.stats["errors"] == 0  # every answer came from the server, none from failing open
        cache.clear()
        cache.close()


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:The test <Function test_no_overrides_DO_NOT_OVERRIDE>")  # the suite's sync check
class TestModelCacheSemanticCacheAsync(AsyncCacheTestSuite):
    @pytest_asyncio.fixture
    async def cache(self, cache_server: ThreadServer) -> AsyncIterator[ModelCacheSemanticCache]:
        cache = empty_cache(cache_server)
        yield cache
        assert cache.stats["errors"] == 0
        await cache.aclear()
        await cache.aclose()
