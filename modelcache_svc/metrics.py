"""Every Prometheus metric of the service, in one place.

Each Service owns a Metrics with its own registry (several services in one
process, as in tests, never share counts). Recording never raises: a failure
inside metrics must not fail a request. Label values are bounded: tenants
beyond ``MAX_TENANT_LABELS`` are counted under ``_other``; no label ever holds
a question, an answer or a key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("modelcache_svc.metrics")
MAX_TENANT_LABELS = 200
OTHER = "_other"
STAGES = ("validate", "exact_lookup", "embed", "vector_search", "scalar_read", "verify", "total")
_FAST_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._tenants: set[str] = set()
        self._lock = threading.Lock()
        # Labelled children looked up once: .labels() takes a lock and builds a key on every call, and the
        # request and stage recorders run several times per call.
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._stage_children: dict[str, Any] = {}
        self.requests = Counter(
            "modelcache_requests_total", "Calls by transport, method and status code.",
            ["transport", "rpc", "code"], registry=r)
        self.request_seconds = Histogram(
            "modelcache_request_duration_seconds", "Server-side duration of a call.",
            ["transport", "rpc"], buckets=_FAST_BUCKETS, registry=r)
        self.queries = Counter(
            "modelcache_queries_total", "Query outcomes by tenant: exact, semantic, miss, error.",
            ["tenant", "result"], registry=r)
        self.stage_seconds = Histogram(
            "modelcache_stage_duration_seconds", "Time spent in each stage of a query.",
            ["stage"], buckets=_FAST_BUCKETS, registry=r)
        self.guard_vetoes = Counter(
            "modelcache_guard_vetoes_total", "Semantic candidates vetoed by the precision guard.",
            ["reason"], registry=r)
        self.verifier_decisions = Counter(
            "modelcache_verifier_decisions_total",
            "Semantic candidates in the uncertain band the verifier read, by outcome (accepted, rejected).",
            ["outcome"], registry=r)
        self.inserted = Counter(
            "modelcache_inserted_entries_total", "Entries written by Insert.", ["tenant"], registry=r)
        self.batch_size = Histogram(
            "modelcache_embedding_batch_size", "Texts per embedding model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.embed_seconds = Histogram(
            "modelcache_embedding_batch_duration_seconds", "Duration of one embedding model call.",
            buckets=_FAST_BUCKETS, registry=r)
        self.entries = Gauge("modelcache_entries", "Live entries per tenant.", ["tenant"], registry=r)
        self.evictions = Counter(
            "modelcache_evictions_total", "Entries evicted for capacity.", ["tenant", "policy"], registry=r)
        self.expirations = Counter(
            "modelcache_expirations_total", "Expired entries deleted by the sweeper.", registry=r)
        self.store_errors = Counter(
            "modelcache_store_errors_total", "Failed store calls.", ["store"], registry=r)
        self.fail_open = Counter(
            "modelcache_fail_open_total", "Queries answered as a miss because a store failed.", registry=r)
        self.querylog_depth = Gauge(
            "modelcache_query_log_queue_depth", "Query-log rows waiting to be written.", registry=r)
        self.querylog_dropped = Counter(
            "modelcache_query_log_dropped_total", "Query-log rows dropped (queue full or store down).", registry=r)
        self.querylog_written = Counter(
            "modelcache_query_log_written_total", "Query-log rows written.", registry=r)
        self.question_vectors = Counter(
            "modelcache_question_vector_memo_total",
            "Semantic queries whose question vector was remembered (hit) or computed by the model (miss).",
            ["result"], registry=r)
        self.feedback_total = Counter(
            "modelcache_feedback_total", "Feedback calls by tenant and verdict (correct, wrong).",
            ["tenant", "verdict"], registry=r)
        self.verifications = Counter(
            "modelcache_verifications_total", "Verification write-backs by tenant and outcome "
            "(agree, disagree, unknown_entry).", ["tenant", "outcome"], registry=r)
        self.observed_error_rate = Gauge(
            "modelcache_observed_error_rate", "Share of a tenant's recent feedback and verification observations "
            "that were wrong.", ["tenant"], registry=r)
        self.uncacheable = Counter(
            "modelcache_uncacheable_total",
            "Questions the cacheability policy flagged, by tenant, call (query/insert), class "
            "(user_specific, time_sensitive, pii, rule) and the action taken (refuse, allow, short_ttl).",
            ["tenant", "call", "class", "action"], registry=r)
        self.ready = Gauge("modelcache_ready", "1 when the stores are reachable and the model is loaded.", registry=r)

    def tenant_label(self, tenant: str) -> str:
        if tenant in self._tenants:
            return tenant
        with self._lock:
            if len(self._tenants) < MAX_TENANT_LABELS:
                self._tenants.add(tenant)
                return tenant
        return OTHER

    # Each recorder swallows its own failures.
    def request(self, transport: str, rpc: str, code: str, seconds: float) -> None:
        try:
            key = (transport, rpc, code)
            children = self._request_children.get(key)
            if children is None:
                children = (self.requests.labels(transport, rpc, code), self.request_seconds.labels(transport, rpc))
                self._request_children[key] = children
            children[0].inc()
            children[1].observe(seconds)
        except Exception:
            log.debug("metrics: request not recorded", exc_info=True)

    def query(self, tenant: str, result: str) -> None:
        try:
            self.queries.labels(self.tenant_label(tenant), result).inc()
        except Exception:
            log.debug("metrics: query not recorded", exc_info=True)

    def feedback(self, tenant: str, verdict: str) -> None:
        self.count(self.feedback_total, self.tenant_label(tenant), verdict)

    def verification(self, tenant: str, outcome: str) -> None:
        self.count(self.verifications, self.tenant_label(tenant), outcome)

    def observed_error(self, tenant: str, rate: float | None) -> None:
        try:
            if rate is not None:
                self.observed_error_rate.labels(self.tenant_label(tenant)).set(rate)
        except Exception:
            log.debug("metrics: observed error rate not recorded", exc_info=True)
    def flagged(self, tenant: str, call: str, klass: str, action: str) -> None:
        try:
            self.uncacheable.labels(self.tenant_label(tenant), call, klass, action).inc()
        except Exception:
            log.debug("metrics: cacheability not recorded", exc_info=True)

    def stage(self, stage: str, seconds: float) -> None:
        try:
            child = self._stage_children.get(stage)
            if child is None:
                child = self._stage_children[stage] = self.stage_seconds.labels(stage)
            child.observe(seconds)
        except Exception:
            log.debug("metrics: stage not recorded", exc_info=True)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage(stage, time.perf_counter() - start)

    def embedding_batch(self, size: int, seconds: float) -> None:
        try:
            self.batch_size.observe(size)
            self.embed_seconds.observe(seconds)
        except Exception:
            log.debug("metrics: batch not recorded", exc_info=True)

    def count(self, counter: Counter, *labels: str, amount: float = 1.0) -> None:
        try:
            (counter.labels(*labels) if labels else counter).inc(amount)
        except Exception:
            log.debug("metrics: counter not recorded", exc_info=True)

    def set_entries(self, counts: dict[str, int]) -> None:
        try:
            totals: dict[str, int] = {}
            for tenant, n in counts.items():
                label = self.tenant_label(tenant)
                totals[label] = totals.get(label, 0) + n
            for label, n in totals.items():
                self.entries.labels(label).set(n)
        except Exception:
            log.debug("metrics: entries not recorded", exc_info=True)

    def set_gauge(self, gauge: Gauge, value: float) -> None:
        try:
            gauge.set(value)
        except Exception:
            log.debug("metrics: gauge not recorded", exc_info=True)

    def render(self) -> bytes:
        return generate_latest(self.registry)
