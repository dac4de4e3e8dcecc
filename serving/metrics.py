"""Prometheus metrics of the scoring service (one registry per app instance, exposed at ``/metrics``)."""

from __future__ import annotations

import contextvars
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STAGE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0
)  # fmt: skip
STAGES = (
    "parse",  # request received -> handler called: body read, JSON decoded and validated (per request)
    "queue",  # waiting for the micro-batch to start (per request)
    "online_read",  # online-store read of every view, derived views (per micro-batch)
    "request_features",  # the use case's request-time features (per micro-batch)
    "model",  # champion (+ challenger) inplace_predict (per micro-batch)
    "assemble",  # response items and prediction-log records (per micro-batch)
    "log_push",  # records and rows handed to the log writer and the pusher (per micro-batch)
    "encode",  # the response JSON (per response)
)
"""The stages of a request, each timed into ``serving_stage_seconds{stage}``."""


class ServingMetrics:
    def __init__(self) -> None:
        # process-local values: importing Feast sets PROMETHEUS_MULTIPROC_DIR, which makes every metric
        # created afterwards write each update to an mmap file under a lock (several µs per request
        # here); this registry is exposed by this process only, so it keeps its values in memory
        saved, values.ValueClass = values.ValueClass, values.MutexValue
        try:
            self._create()
        finally:
            values.ValueClass = saved
        self._children: dict[tuple, object] = {}

    def _create(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "serving_requests", "HTTP requests by route and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "serving_request_latency_seconds",
            "request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stages = Histogram(
            "serving_stage_seconds",
            "time per stage of the scoring path (see serving.metrics.STAGES: per request or per micro-batch)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "serving_batch_rows",
            "rows per micro-batch scored",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.errors = Counter(
            "serving_errors", "requests answered with an error", ["route", "reason"], registry=r
        )
        self.scored = Counter(
            "serving_scored_transactions", "transactions scored", ["arm", "decision"], registry=r
        )
        self.unknown = Counter(
            "serving_unknown_entities", "entities scored with defaults", ["entity"], registry=r
        )
        self.model_version = Gauge(
            "serving_model_version", "registry version served per alias (0 = none)", ["alias"], registry=r
        )
        self.model_swaps = Counter("serving_model_swaps", "model bundle swaps", registry=r)
        self.log_written = Counter(
            "serving_prediction_log_written", "prediction log rows on disk", registry=r
        )
        self.log_dropped = Counter(
            "serving_prediction_log_dropped", "prediction log rows dropped", registry=r
        )
        self.pushes_failed = Counter(
            "serving_feature_push_failed", "failed pushes to the push source", registry=r
        )
        self.started = Gauge("serving_start_time_seconds", "process start time", registry=r)
        self.started.set(time.time())

    def stage(self, name: str):
        """The ``serving_stage_seconds`` child of a stage (memoised)."""
        return self.child(self.stages, name)

    def child(self, metric, *labels: str):
        """``metric.labels(*labels)``, memoised: the per-request label lookup (and its lock) is paid
        once per label combination (all label sets here are bounded)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


REQUEST_STARTED: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "request_started", default=None
)
"""``time.perf_counter()`` when the current HTTP request reached the app (set by :class:`MetricsMiddleware`;
the ``parse`` stage ends where the handler submits its rows)."""


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by its route template."""

    def __init__(self, app, metrics: ServingMetrics, routes: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in self.routes else "other"  # bounded label cardinality
        status = {"code": 500}

        async def _send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        start = time.perf_counter()
        REQUEST_STARTED.set(start)
        try:
            await self.app(scope, receive, _send)
        finally:
            m = self.metrics
            m.child(m.latency, route).observe(time.perf_counter() - start)
            m.child(m.requests, route, scope.get("method", ""), str(status["code"])).inc()
