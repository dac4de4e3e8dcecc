"""The seam between the serving core and a use case's API: a :class:`ServingHandler`.

The core (:mod:`serving.app`) owns what every real-time model service needs: the lifecycle, micro-batching,
the model bundle and its reload when a registry alias moves, champion/challenger routing (shadow, or a
canary split by a stable hash of a configurable request field), the decision policy (a threshold read
from the registry tag the use case declares, if it declares one), Prometheus metrics, API-key auth, the
JSON error contract, the prediction-log writer and the push worker that keeps stream features fresh.

A use case supplies the rest in one handler, found through its declaration (``UseCase.serving``):

* ``feature_client(settings)``: its online feature client (usually a :class:`serving.features.FeastFeatureClient`
  over its feature service; it may derive features from stream views and push scored rows back);
* ``register_routes(app, routes)``: its endpoints, with its own request/response schemas, calling
  ``routes.submit(row)`` / ``routes.submit_many(rows)`` (:class:`Routes`), and marking its hot route
  ``routes.fast(path, model)`` (:mod:`serving.fastpath`);
* ``result(scored)`` and ``record(scored)``: a scored row (:class:`ScoredRow`) as a response item and
  as a prediction-log record, whose columns and partition field :class:`LogSchema` declares;
* ``route_key``: the request field the canary split hashes (fraud: ``customer_id``, so a card always
  meets the same model);
* ``companion(version, settings)`` (optional): what the use case serves beside each model version,
  loaded with it and held in the same immutable bundle (ranking: the retrieval index and pre-ranker
  fitted with the ranker), so that an alias move swaps model and companion together.

A use case whose request is not "score these rows" (ranking: one request, hundreds of candidates,
then a slate) registers its own route and uses the core's pieces directly through :class:`Routes`:
``bundle()`` (the current models, read once per request), ``features`` (the online feature client),
``observe(stage, seconds)`` (the per-stage Prometheus histogram), ``log(records)`` (the prediction
log, in its :class:`LogSchema`) and :class:`ServiceUnavailable`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    from fastapi import FastAPI

    from jobs.platform.config import Settings
    from serving.features import FeatureClient, FeatureVector
    from serving.models import LoadedModel, ModelBundle


class ServiceUnavailable(RuntimeError):
    """A dependency the request needs is down (answered 503 with ``error`` and ``reason``, never 500)."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


@dataclass(frozen=True)
class ScoredRow:
    """One request row after scoring: what a handler turns into a response item and a log record."""

    request_id: str
    row: dict[str, Any]
    vector: FeatureVector
    model: LoadedModel
    score: float
    decision: int | None  # None: the use case has no decision policy
    arm: str  # champion | challenger | shadow
    scored_at: dt.datetime


@dataclass(frozen=True)
class LogSchema:
    """The prediction log's columns (name -> Arrow type, in order; model features follow as float64)
    and the datetime field of a record whose date is the record's partition (``prediction_log/date=D``)."""

    columns: Mapping[str, pa.DataType]
    partition_by: str


@dataclass(frozen=True)
class Routes:
    """What the core gives a handler to register its endpoints with."""

    submit: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]  # one row, micro-batched
    submit_many: Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]
    errors: Mapping[int | str, Any]  # the documented error responses (OpenAPI ``responses``)
    guarded: Sequence[Any]  # route dependencies: API-key auth when configured
    response_class: type  # fast JSON of results already in the documented shape
    # fast(path, model): answer valid POSTs of a declared route without FastAPI's per-request machinery
    # (the route's body model validated as FastAPI would, the row submitted; see serving.fastpath)
    fast: Callable[[str, Any], None]
    bundle: Callable[[], ModelBundle]  # the current (immutable) model bundle: read once per request
    features: FeatureClient  # the use case's online feature client
    observe: Callable[[str, float], None]  # observe(stage, seconds): the serving stage histogram
    log: Callable[[list[dict[str, Any]]], None]  # append records to the prediction log (LogSchema)


@dataclass(frozen=True, kw_only=True)
class ServingHandler:
    """A use case's real-time API on the serving core (see the module docstring)."""

    title: str
    description: str
    route_key: str
    feature_client: Callable[[Settings], FeatureClient]
    register_routes: Callable[[FastAPI, Routes], None]
    log_schema: LogSchema
    # the row-scoring path (``Routes.submit``): a scored row as a response item and as a log record;
    # None for a handler that answers through its own route only (ranking)
    result: Callable[[ScoredRow], dict[str, Any]] | None = None
    record: Callable[[ScoredRow], dict[str, Any]] | None = None
    # per-version artifacts served with the model (``LoadedModel.companion``); None: the model alone
    companion: Callable[[str, Settings], Any] | None = None
