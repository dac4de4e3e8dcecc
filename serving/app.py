"""The real-time model API (FastAPI): the serving core, with the active use case's handler
(:mod:`serving.handler`; fraud: ``jobs.fraud.serving``). Run: ``make serve`` or ``python -m serving.app``.

Request path (fraud: ``POST /v1/score``): validate (the handler's pydantic schema) -> online features from
Feast for the training feature service + derived and request-time features -> champion (and the challenger
in shadow / canary, split by a stable hash of the handler's ``route_key``) -> decision (the version's
threshold tag, when the use case has a decision policy) -> response -> prediction-log record on a bounded
queue (written by a background thread) -> the row pushed to the use case's stream by another thread.

Errors: every 4xx is JSON naming the field and the rule: 422 for an invalid body (one entry per issue;
numbers are JSON numbers, never strings or booleans, and finite; ids unique within a batch), 413 for a
body over ``MLP_SERVING_MAX_REQUEST_BYTES`` (default 1 MiB; refused before it is parsed), 401 for a
missing/wrong API key (when one is configured); 503 with a JSON reason when the online store is
unreachable or no champion is loaded; never a 500 for a dependency failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import secrets
import sys
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pydantic_core
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger
from jobs.platform.storage import StorageLayout
from serving.batching import MicroBatcher
from serving.fastpath import FastPath, FastRoute
from serving.features import FeatureClient, FeatureStoreUnavailable
from serving.handler import Routes, ScoredRow, ServiceUnavailable, ServingHandler
from serving.limits import BodySizeLimit
from serving.metrics import REQUEST_STARTED, MetricsMiddleware, ServingMetrics
from serving.models import LoadedModel, ModelBundle, ModelManager, ModelSource, ModelUnavailable
from serving.prediction_log import PredictionLogWriter
from serving.schemas import (
    ErrorBody,
    Health,
    Readiness,
    RequestErrorBody,
    ValidationErrorBody,
)
from serving.streaming import FeaturePusher

log = get_logger("serving.app")

API_KEY_HEADER = "X-API-Key"


class ScoringService:
    """Everything a request needs, independent of HTTP (used by the API and the benchmark)."""

    def __init__(
        self,
        features: FeatureClient,
        models: ModelManager,
        log_writer: PredictionLogWriter | None,
        metrics: ServingMetrics,
        pusher: FeaturePusher | None,
        handler: ServingHandler,
    ) -> None:
        self.features = features
        self.models = models
        self.log_writer = log_writer
        self.metrics = metrics
        self.pusher = pusher
        self.handler = handler

    def score(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        bundle = self.models.bundle  # read once: the whole request uses one bundle
        if bundle.champion is None:
            reason = self.models.last_error or "no champion model is loaded"
            raise ServiceUnavailable("model_unavailable", reason)
        clock, stage = time.perf_counter, self.metrics.stage
        try:
            batch = self.features.fetch(rows)
        except FeatureStoreUnavailable as exc:
            raise ServiceUnavailable("online_store_unavailable", str(exc)) from exc
        t1 = clock()
        for name, seconds in batch.timings.items():  # online_read, request_features
            stage(name).observe(seconds)

        h, m = self.handler, self.metrics
        scored_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        champion_scores = bundle.champion.predict(batch.model_matrix(bundle.champion.feature_names))
        challenger_scores = (
            bundle.challenger.predict(batch.model_matrix(bundle.challenger.feature_names))
            if bundle.challenger is not None and bundle.mode != "off"
            else None
        )
        t2 = clock()
        stage("model").observe(t2 - t1)
        results, records = [], []
        for i, row in enumerate(rows):
            vector = batch[i]
            request_id = uuid.uuid4().hex
            use_challenger = challenger_scores is not None and bundle.routes_to_challenger(row[h.route_key])
            model = bundle.challenger if use_challenger else bundle.champion
            score = float(challenger_scores[i] if use_challenger else champion_scores[i])
            arm = "challenger" if use_challenger else "champion"
            scored = ScoredRow(request_id, row, vector, model, score, _decide(model, score), arm, scored_at)
            results.append(h.result(scored))
            records.append(h.record(scored))
            m.child(m.scored, arm, str(scored.decision)).inc()
            for entity in vector.unknown_entities:
                m.child(m.unknown, entity).inc()
            if bundle.mode == "shadow" and challenger_scores is not None:
                s, c = float(challenger_scores[i]), bundle.challenger
                records.append(
                    h.record(ScoredRow(request_id, row, vector, c, s, _decide(c, s), "shadow", scored_at))
                )
        t3 = clock()
        stage("assemble").observe(t3 - t2)
        if self.log_writer is not None:
            self.log_writer.append(records)
        if self.pusher is not None:
            self.pusher.submit(rows)
        stage("log_push").observe(clock() - t3)
        return results


def _decide(model: LoadedModel, score: float) -> int | None:
    """The decision policy: 1 when the score reaches the version's threshold tag (None: no policy)."""
    return None if model.threshold is None else int(score >= model.threshold)


# --- HTTP layer -------------------------------------------------------------------------


def _validation_body(exc: RequestValidationError) -> dict[str, Any]:
    issues = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        message = err.get("msg", "")
        if err.get("type") == "json_invalid":  # FastAPI puts the character offset in loc: it is the body's
            offset, loc = loc, []
            message = f"{message} at character {'.'.join(offset)}: {(err.get('ctx') or {}).get('error', '')}"
        try:  # NaN / Infinity (which Python's JSON parser accepts) are echoed as the strings "NaN", "Infinity"
            value = json.loads(
                pydantic_core.to_json(err.get("input"), inf_nan_mode="strings", serialize_unknown=True)
            )
        except Exception:
            value = repr(err.get("input"))[:200]
        issues.append(
            {
                "field": ".".join(loc) or "body",
                "rule": err.get("type", "invalid"),
                "message": message,
                "value": value if len(repr(value)) <= 500 else repr(value)[:500],
            }
        )
    return {"error": "validation_error", "errors": issues}


def _unavailable(error: str, reason: str) -> JSONResponse:
    return JSONResponse(
        status_code=503, content={"error": error, "reason": reason}, headers={"Retry-After": "1"}
    )


def _validate_model_inputs(available: list[str]):
    def check(model: LoadedModel) -> None:
        missing = sorted(set(model.feature_names) - set(available))
        if missing:
            raise ModelUnavailable(
                f"{model.name} v{model.version} needs features the feature service does not provide: {missing}"
            )

    return check


def create_app(
    settings: Settings | None = None,
    feature_client: FeatureClient | None = None,
    model_source: ModelSource | None = None,
    layout: StorageLayout | None = None,
    log_predictions: bool = True,
    handler: ServingHandler | None = None,
) -> FastAPI:
    """Build the model API of the settings' use case (its handler: ``UseCase.serving``). Without injected
    clients it uses the handler's feature client (Feast) and the MLflow registry (``jobs.platform.registry`` /
    ``models:/<name>@<alias>``) configured by ``settings``."""
    from jobs.platform.use_case import get_use_case

    settings = settings or get_settings()
    layout = layout or StorageLayout(settings)
    if handler is None:
        factory = get_use_case(settings).serving
        if factory is None:
            raise ValueError(f"use_case: {settings.use_case!r} declares no serving handler (UseCase.serving)")
        handler = factory()
    metrics = ServingMetrics()
    if feature_client is None:
        feature_client = handler.feature_client(settings)
    if model_source is None:
        from serving.models import RegistryModelSource

        model_source = RegistryModelSource(
            settings, feature_columns=feature_client.feature_columns, companion=handler.companion
        )

    def on_swap(bundle: ModelBundle) -> None:
        metrics.model_swaps.inc()
        for alias, model in (("champion", bundle.champion), ("challenger", bundle.challenger)):
            metrics.model_version.labels(alias).set(_version_number(model))

    manager = ModelManager(
        model_source,
        mode=settings.serving_challenger_mode,
        canary_share=settings.serving_canary_share,
        reload_seconds=settings.serving_reload_seconds,
        on_swap=on_swap,
        validate=_validate_model_inputs(feature_client.feature_columns),
    )
    writer = (
        PredictionLogWriter(
            layout,
            handler.log_schema,
            queue_size=settings.serving_log_queue_size,
            flush_seconds=settings.serving_log_flush_seconds,
            on_written=metrics.log_written.inc,
            on_dropped=metrics.log_dropped.inc,
        )
        if log_predictions
        else None
    )
    pusher = (
        FeaturePusher(feature_client, on_failed=metrics.pushes_failed.inc)
        if settings.serving_push_features and callable(getattr(feature_client, "push", None))
        else None
    )
    service = ScoringService(feature_client, manager, writer, metrics, pusher, handler)
    batcher = MicroBatcher(
        service.score, on_queued=metrics.stage("queue").observe, on_batch=metrics.batch_rows.observe
    )
    parsed = metrics.stage("parse").observe

    def parse_done() -> None:  # the parse stage ends where a handler submits its rows
        started = REQUEST_STARTED.get()
        if started is not None:
            parsed(time.perf_counter() - started)

    async def submit(row: dict[str, Any]) -> dict[str, Any]:
        parse_done()
        return await batcher.submit(row)

    async def submit_many(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        parse_done()
        return await batcher.submit_many(rows)

    encoded = metrics.stage("encode").observe

    def encode(content: Any) -> bytes:
        start = time.perf_counter()
        body = ScoreJSONResponse.encode(content)
        encoded(time.perf_counter() - start)
        return body

    class Respond(ScoreJSONResponse):
        def render(self, content: Any) -> bytes:
            return encode(content)

    fast_routes: dict[str, FastRoute] = {}

    def fast(path: str, model: Any) -> None:
        fast_routes[path] = FastRoute(model, submit)

    def unavailable_answer(path: str, exc: Exception):
        if not isinstance(exc, ServiceUnavailable):
            return None
        metrics.errors.labels(path, exc.error).inc()
        return 503, {"error": exc.error, "reason": exc.reason}, {"Retry-After": "1"}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if writer is not None:
            writer.start()
        if pusher is not None:
            pusher.start()
        try:
            manager.refresh()
        except Exception as exc:  # never refuse to start: /readyz reports it, the poller retries
            manager.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("initial_model_load_failed")
        manager.start()
        batcher.start()
        if _TUNED:
            # everything loaded so far (libraries, registry, model) lives as long as the process: keep
            # it out of the collector's generations so a full collection does not stall requests
            gc.freeze()
        log.info("serving_started", champion=_version(manager.bundle.champion), mode=manager.mode)
        try:
            yield
        finally:
            await batcher.stop()
            manager.stop()
            if pusher is not None:
                pusher.close()
            if writer is not None:
                writer.close()
            log.info("serving_stopped")

    app = FastAPI(
        title=handler.title,
        version="1.0.0",
        description=f"{handler.description}\n\n{__doc__}",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.batcher = batcher
    app.state.settings = settings
    app.state.fast_routes = fast_routes  # path -> FastRoute (serving.fastpath); emptied, FastAPI answers all

    api_key = settings.serving_api_key.get_secret_value() if settings.serving_api_key else None
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="required when configured")

    def require_key(given: str | None = Depends(key_header)) -> None:
        if api_key is None:
            return
        if given is None or not secrets.compare_digest(given.encode(), api_key.encode()):
            raise _Unauthorized()

    errors = {
        400: {"model": RequestErrorBody, "description": "body is not parseable (e.g. not UTF-8 JSON)"},
        401: {"model": RequestErrorBody, "description": "missing or wrong API key"},
        413: {
            "model": RequestErrorBody,
            "description": f"body over {settings.serving_max_request_bytes} bytes "
            "(MLP_SERVING_MAX_REQUEST_BYTES), refused before it is parsed; rule `max_request_bytes`",
        },
        422: {
            "model": ValidationErrorBody,
            "description": "invalid request: field and rule per issue (e.g. `float_type` for a string or "
            "boolean number, `finite_number` for NaN/Infinity)",
        },
        503: {"model": ErrorBody, "description": "online store unreachable or no champion model"},
    }
    guarded = [Depends(require_key)] if api_key is not None else []

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError):
        metrics.errors.labels(request.url.path, "validation").inc()
        return JSONResponse(status_code=422, content=_validation_body(exc))

    @app.exception_handler(_Unauthorized)
    async def _on_unauthorized(request: Request, exc: _Unauthorized):
        metrics.errors.labels(request.url.path, "unauthorized").inc()
        return JSONResponse(
            status_code=401,
            content={
                "error": "unauthorized",
                "field": API_KEY_HEADER,
                "rule": "api_key_required",
                "reason": f"missing or wrong {API_KEY_HEADER} header",
            },
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(request: Request, exc: StarletteHTTPException):
        # e.g. 400 for a body that is not decodable, 404/405 for unknown routes: same JSON shape
        kind, field, rule = {
            400: ("bad_request", "body", "parseable_body"),
            404: ("not_found", "path", "known_route"),
            405: ("method_not_allowed", "method", "allowed_method"),
        }.get(exc.status_code, ("http_error", "request", f"http_{exc.status_code}"))
        metrics.errors.labels(request.url.path if exc.status_code != 404 else "other", kind).inc()
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": kind, "field": field, "rule": rule, "reason": str(exc.detail)},
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(ServiceUnavailable)
    async def _on_unavailable(request: Request, exc: ServiceUnavailable):
        metrics.errors.labels(request.url.path, exc.error).inc()
        return _unavailable(exc.error, exc.reason)

    @app.exception_handler(Exception)
    async def _on_bug(request: Request, exc: Exception):  # a bug, not a dependency failure
        metrics.errors.labels(request.url.path, "internal").inc()
        log.exception("unhandled_error", path=request.url.path)
        return JSONResponse(status_code=500, content={"error": "internal", "reason": type(exc).__name__})

    handler.register_routes(
        app,
        Routes(
            submit=submit,
            submit_many=submit_many,
            errors=errors,
            guarded=guarded,
            response_class=Respond,
            fast=fast,
            bundle=lambda: manager.bundle,
            features=feature_client,
            observe=lambda stage, seconds: metrics.stage(stage).observe(seconds),
            log=writer.append if writer is not None else lambda records: None,
        ),
    )

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}}, tags=["ops"])
    def readyz():
        """Readiness: a champion is loaded and the online store answers."""
        bundle = manager.bundle
        reasons = []
        if bundle.champion is None:
            reasons.append(manager.last_error or "no champion model loaded")
        try:
            feature_client.ping()
            store = "ok"
        except FeatureStoreUnavailable as exc:
            store = "unreachable"
            reasons.append(str(exc))
        body = {
            "status": "not_ready" if reasons else "ready",
            "champion_version": _version(bundle.champion),
            "challenger_version": _version(bundle.challenger),
            "challenger_mode": bundle.mode,
            "online_store": store,
            "reasons": reasons,
        }
        return JSONResponse(status_code=503 if reasons else 200, content=body)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def prometheus_metrics() -> Response:
        """Prometheus exposition format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = {r.path for r in app.routes if hasattr(r, "path")}

    def on_too_large(path: str) -> None:
        metrics.errors.labels(path if path in routes else "other", "payload_too_large").inc()

    # innermost first: the fast path answers valid requests of the hot route (anything else goes on to
    # FastAPI); the size limit answers before either reads the body; the metrics count everything
    app.add_middleware(
        FastPath,
        routes=fast_routes,
        render=encode,
        on_unavailable=unavailable_answer,
        api_key=api_key,
        key_header=API_KEY_HEADER,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.serving_max_request_bytes, on_refused=on_too_large)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=routes)
    return app


class _Unauthorized(Exception):
    pass


class ScoreJSONResponse(Response):
    """JSON of the scoring results, encoded in one call by msgspec (the same bytes as the
    ``response_model`` path gives: datetimes ISO 8601 with ``Z`` for UTC, NaN/inf as null; 0.7 µs for a
    typical answer against 1.6 µs with pydantic-core). The results are built by the service in the
    documented shape (``ScoreResult``, still the published schema), so FastAPI's per-response
    re-validation of the model is skipped on the hot path."""

    media_type = "application/json"
    _encoder = msgspec.json.Encoder(enc_hook=lambda o: _plain(o))

    def render(self, content: Any) -> bytes:
        return self.encode(content)

    @classmethod
    def encode(cls, content: Any) -> bytes:
        return cls._encoder.encode(content)


def _plain(value: Any) -> Any:
    """What msgspec cannot encode by itself: NumPy scalars (as their Python value)."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy":
        return item()
    raise NotImplementedError(f"{type(value).__name__} is not JSON serialisable")


def _version(model: LoadedModel | None) -> str | None:
    return model.version if model is not None else None


def _version_number(model: LoadedModel | None) -> float:
    if model is None:
        return 0
    try:
        return float(model.version)
    except ValueError:
        return -1


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m serving.app", description="Run the scoring API (uvicorn)."
    )
    parser.add_argument("--host", default=settings.serving_host)
    parser.add_argument("--port", type=int, default=settings.serving_port)
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.serving_workers,
        help="worker processes sharing the port (MLP_SERVING_WORKERS; one per core to use)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    options = uvicorn_options(args.log_level)
    if args.workers > 1:
        # uvicorn's supervisor binds the port once and starts the workers, each of which builds its
        # own app (own model bundle, reloaded on its own when an alias moves) through the factory
        uvicorn.run(
            "serving.app:worker_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            **options,
        )
        return 0
    try:
        app = worker_app(settings)
    except ValueError as exc:  # a platform that is not set up yet: say what to run, no traceback
        print(f"python -m serving.app: cannot start: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, **options)
    return 0


def worker_app(settings: Settings | None = None) -> FastAPI:
    """The app of one serving process, tuned as a dedicated process (:func:`tune_process`): what
    ``python -m serving.app`` runs, and the factory of each of its workers
    (``uvicorn --factory serving.app:worker_app``)."""
    tune_process()
    return create_app(settings)


def uvicorn_options(log_level: str = "warning") -> dict[str, Any]:
    """uvicorn settings of the service: uvloop + httptools when installed, no access log (one log line
    per request costs more than scoring it; the Prometheus metrics count every request)."""
    import importlib.util

    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "log_level": log_level,
        "access_log": False,
    }


def tune_process(switch_interval: float = 0.001) -> None:
    """Process-wide tuning for a dedicated serving process (not applied by ``create_app``): a shorter
    GIL switch interval (default 5 ms) so that a background thread (prediction-log writer, feature
    pusher, model poller) holding the GIL delays a request by at most ~1 ms instead of ~5 ms, and
    ``gc.freeze()`` of everything loaded at startup (done by the app once its model is loaded) so the
    cyclic collector's full passes only walk objects created since."""
    global _TUNED
    sys.setswitchinterval(switch_interval)
    _TUNED = True


_TUNED = False  # set by tune_process(): the app may also freeze the GC after loading its model


if __name__ == "__main__":
    raise SystemExit(main())
