"""Builds the whole service from one Settings: stores, embedder, core, servers."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import grpc

from .cache.service import CacheCore
from .config import Settings
from .embedding import Embedder, EmbeddingBatcher, load_embedder
from .embedding.pool import EmbedderPool, Rescaled
from .errors import InvalidArgument
from .metrics import Metrics
from .stores import MEMORY_URI, open_scalar_store
from .stores.approx_index import ApproxParams
from .stores.base import VectorStore
from .stores.memory_vector import MemoryVectorStore
from .stores.milvus_store import MilvusVectorStore
from .transport.grpc_server import GrpcFrontEnd, start_grpc_server
from .verifier.model import Verifier
from .verifier.pool import VerifierPool

log = logging.getLogger("modelcache_svc")
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def check_exposure(settings: Settings) -> None:
    """Auth may be off only when nothing but this host can reach the server."""
    for host in (settings.host, settings.console_host if settings.console_port else ""):
        if host and not settings.admin_key and host not in LOOPBACK:
            raise InvalidArgument(
                f"refusing to listen on {host} without authentication: "
                "set --admin-key (or MODELCACHE_ADMIN_KEY), or listen on 127.0.0.1"
            )


def load_verifiers(settings: Settings) -> tuple[Verifier | None, ...]:
    """The verifiers the settings name (English, CJK, other languages), loaded now: no request pays for
    loading one. The CJK and the multilingual verifier only where that routing is on (their band was fitted
    on the similarities of the model the routing names); one spec named twice loads once."""
    from .verifier import load_verifier

    cache = Path(settings.model_cache_dir) if settings.model_cache_dir else None
    threads = settings.verifier_threads
    loaded: dict[str, Verifier] = {}

    def load(spec: str) -> Verifier:
        if spec not in loaded:
            loaded[spec] = load_verifier(spec, cache, threads=threads)
        return loaded[spec]

    english = load(settings.verifier_model) if settings.verifier_model else None
    cjk = load(settings.verifier_cjk_model) if settings.verifier_cjk_model and settings.cjk_model else None
    multilingual = None
    if settings.verifier_multilingual_model and settings.multilingual_model:
        multilingual = load(settings.verifier_multilingual_model)
    return english, cjk, multilingual


def build_core(
    settings: Settings,
    embedder: Embedder | None = None,
    cjk_embedder: Embedder | None = None,
    verifiers: tuple[Verifier | None, ...] | None = None,
) -> CacheCore:
    """``embedder`` / ``cjk_embedder`` / ``verifiers``: already loaded models for the default and the CJK
    model and the verifiers (tests share them between servers); otherwise all load here, before the service
    says it is ready."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    scalar = open_scalar_store(settings.resolved_scalar_uri, settings.namespace, timeout=settings.store_timeout_s)
    vector: VectorStore
    if settings.resolved_vector_uri == MEMORY_URI:  # a throwaway cache: nothing outlives the process
        vector = MemoryVectorStore()
    else:
        vector = MilvusVectorStore(
            settings.resolved_vector_uri, settings.namespace, timeout=settings.store_timeout_s,
            approx=ApproxParams.of_settings(settings),
            index_type=settings.milvus_index_type, index_params=settings.milvus_index_config,
            search_params=settings.milvus_search_config)
    def load(model: str) -> Embedder:
        return load_embedder(
            settings.embedding_backend,
            model,
            threads=settings.embedding_threads,
            spin=settings.embedding_spin,
            cache_dir=Path(settings.model_cache_dir) if settings.model_cache_dir else None,
        )

    metrics = Metrics()

    def batcher(e: Embedder) -> EmbeddingBatcher:
        return EmbeddingBatcher(
            e,
            max_batch=settings.embedding_max_batch,
            max_wait_ms=settings.embedding_max_wait_ms,
            on_batch=metrics.embedding_batch,
        )

    pool = EmbedderPool(
        batcher(embedder or load(settings.embedding_model)), load, batcher, cjk_model=settings.cjk_model,
        multilingual_model=settings.multilingual_model,
    )
    cjk_loaded = None
    if settings.cjk_model:
        # Loaded now, not on the first Chinese question: no request pays seconds of model loading.
        cjk_loaded = cjk_embedder or load(settings.cjk_model)
        pool.add(settings.cjk_model, cjk_loaded)
    multilingual = settings.multilingual_model
    if multilingual.endswith("#multilingual") and cjk_loaded is not None:
        pool.add(multilingual, Rescaled(cjk_loaded, f"{cjk_loaded.model_id}#multilingual",
                                        settings.multilingual_similarity_scale))
    elif multilingual and multilingual not in (settings.cjk_model, settings.embedding_model):
        pool.add(multilingual, load(multilingual))
    from .embedding.language import warm

    warm()  # the language detector's model, before the first question
    loaded = verifiers if verifiers is not None else load_verifiers(settings)
    return CacheCore(settings, scalar, vector, pool, metrics=metrics, verifiers=VerifierPool(*loaded))


@dataclass
class Service:
    """A running service: the core and its servers, with one start and one stop."""

    settings: Settings
    core: CacheCore
    grpc_server: grpc.aio.Server | None = None
    grpc_port: int = 0
    resp_port: int = 0
    http_port: int = 0
    console_port: int = 0
    front: GrpcFrontEnd | None = None
    extras: list[Any] = field(default_factory=list)

    async def start(self) -> None:
        check_exposure(self.settings)
        # The listeners come up before the vector copy is read back (core.load below): health says
        # NOT_SERVING meanwhile, and every call that needs the vectors is refused UNAVAILABLE.
        await self.core.open()
        self.front = GrpcFrontEnd(self.core)
        self.grpc_server, self.grpc_port = await start_grpc_server(
            self.front, self.settings.host, self.settings.grpc_port, self.settings.limits.max_message_bytes
        )
        log.info("serving gRPC on %s:%d", self.settings.host, self.grpc_port)
        if self.settings.http_port:
            from .transport.http_routes import build_http_server

            http = build_http_server(self.core)
            self.http_port = await http.start(self.settings.host, self.settings.http_port)
            self.extras.append(http)
            log.info("serving metrics and health on %s://%s:%d", "https" if http.tls else "http",
                     self.settings.host, self.http_port)
        if self.settings.console_port:
            from .transport.http_routes import build_console_server

            console = build_console_server(self.core)
            host = self.settings.console_host or self.settings.host
            self.console_port = await console.start(host, self.settings.console_port)
            self.extras.append(console)
            log.info("serving the console on %s://%s:%d/console", "https" if console.tls else "http", host,
                     self.console_port)
        if self.settings.resp_port:
            from .transport.resp_server import start_resp_server

            resp = await start_resp_server(self.core, self.settings.host, self.settings.resp_port)
            self.extras.append(resp)
            self.resp_port = int(resp.sockets[0].getsockname()[1])
            log.info("serving the Redis protocol on %s:%d", self.settings.host, self.resp_port)
        log.info("listening; reading the vector copy back (health NOT_SERVING until it is whole)")
        try:
            await self.core.load()
        except BaseException:
            await self.stop(0)
            raise
        await self.front.set_serving(True)

    async def stop(self, grace: float = 5.0) -> None:
        if self.front is not None:
            await self.front.health.enter_graceful_shutdown()
        for extra in self.extras:
            extra.close()
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace)
        for extra in self.extras:
            await extra.wait_closed()
        await self.core.stop()
        self.core.embedders.close()
        self.core.verifiers.close()
        self.core.vector.close()
        self.core.scalar.close()


async def serve(settings: Settings, embedder: Embedder | None = None) -> None:
    """Run until SIGINT/SIGTERM, then drain and stop."""
    service = Service(settings, build_core(settings, embedder))
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"modelcache-svc ready: gRPC {settings.host}:{service.grpc_port}", flush=True)
    await stop.wait()
    log.info("shutting down")
    await service.stop()
