"""Fraud's handler on the serving core (``UseCase.serving``): the transaction-scoring API.

* ``POST /v1/score`` one transaction, ``POST /v1/score/batch`` up to 1000 (schemas: :mod:`jobs.fraud.api`);
* the answer: fraud probability, the decision at the version's cost-optimal threshold (tag
  ``decision_threshold``), the model and arm, unknown entities and the age of the features served;
* the canary split hashes ``customer_id`` (a card always meets the same model);
* the prediction log: one row per scored transaction (and per shadow score), partitioned by the
  transaction's date, which the monitoring and A/B jobs join labels on;
* the online features: :func:`jobs.fraud.online.feature_client` (daily snapshots + the last hour,
  pushed back after each score).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pyarrow as pa

from jobs.fraud.api import BatchRequest, BatchResponse, ScoreResult, Transaction
from serving.handler import LogSchema, Routes, ScoredRow, ServingHandler

LOG_SCHEMA = LogSchema(
    columns={
        "request_id": pa.string(),
        "transaction_id": pa.int64(),
        "customer_id": pa.int64(),
        "terminal_id": pa.int64(),
        "tx_datetime": pa.timestamp("us"),
        "scored_at": pa.timestamp("us"),
        "score": pa.float64(),
        "decision": pa.int32(),
        "threshold": pa.float64(),
        "model_name": pa.string(),
        "model_version": pa.string(),
        "arm": pa.string(),
        "unknown_entities": pa.string(),
    },
    partition_by="tx_datetime",
)


def _freshness(tx: dict[str, Any], vector) -> list[dict[str, Any]]:
    out = []
    for view, ts in vector.feature_timestamps.items():
        age = None if ts is None else (tx["tx_datetime"] - ts).total_seconds()
        out.append({"feature_view": view, "event_timestamp": ts, "age_seconds": age})
    return out


def result(s: ScoredRow) -> dict[str, Any]:
    """A scored transaction as the API answers it (:class:`jobs.fraud.api.ScoreResult`)."""
    tx = s.row
    return {
        "request_id": s.request_id,
        "transaction_id": tx["transaction_id"],
        "customer_id": tx["customer_id"],
        "terminal_id": tx["terminal_id"],
        "probability": s.score,
        "decision": s.decision,
        "threshold": s.model.threshold,
        "model_name": s.model.name,
        "model_version": s.model.version,
        "arm": s.arm,
        "unknown_entities": list(s.vector.unknown_entities),
        "feature_freshness": _freshness(tx, s.vector),
    }


def record(s: ScoredRow) -> dict[str, Any]:
    """A scored transaction as the prediction log keeps it (:data:`LOG_SCHEMA` + the model's features)."""
    tx = s.row
    out = {
        "request_id": s.request_id,
        "transaction_id": tx["transaction_id"],
        "customer_id": tx["customer_id"],
        "terminal_id": tx["terminal_id"],
        "tx_datetime": tx["tx_datetime"].astimezone(dt.UTC).replace(tzinfo=None),
        "scored_at": s.scored_at,
        "score": s.score,
        "decision": s.decision,
        "threshold": s.model.threshold,
        "model_name": s.model.name,
        "model_version": s.model.version,
        "arm": s.arm,
        "unknown_entities": ",".join(s.vector.unknown_entities),
    }
    values = s.vector.values
    for name in s.model.feature_names:
        out[name] = values.get(name, math.nan)
    return out


def register_routes(app, routes: Routes) -> None:
    # OpenAPI links (stateful clients and schemathesis' stateful phase): the service keeps state per card,
    # since every scored transaction is pushed to the customer's last-hour view the next request reads
    again = {
        "description": "score another transaction of the same card at the same terminal: its last-hour "
        "features now include the one just scored",
        "operationId": "score",
        "requestBody": {
            "customer_id": "$response.body#/customer_id",
            "terminal_id": "$response.body#/terminal_id",
        },
    }
    again_from_batch = {
        **again,
        "requestBody": {
            "customer_id": "$response.body#/results/0/customer_id",
            "terminal_id": "$response.body#/results/0/terminal_id",
        },
    }
    errors = {
        **routes.errors,
        422: {
            **routes.errors[422],
            "description": "invalid request: field and rule per issue (e.g. `float_type` for a string or "
            "boolean amount, `finite_number` for NaN/Infinity, `unique_transaction_id` in a batch)",
        },
    }
    respond = routes.response_class

    @app.post(
        "/v1/score",
        response_model=ScoreResult,
        responses={**errors, 200: {"links": {"ScoreSameCardAgain": again}}},
        dependencies=list(routes.guarded),
        tags=["scoring"],
        operation_id="score",
    )
    async def score(tx: Transaction) -> dict[str, Any]:
        """Score one transaction with the champion (or the challenger for canary customers)."""
        return respond(await routes.submit(tx.model_dump()))

    routes.fast("/v1/score", Transaction)  # valid requests skip FastAPI's per-request machinery

    @app.post(
        "/v1/score/batch",
        response_model=BatchResponse,
        responses={**errors, 200: {"links": {"ScoreFirstCardAgain": again_from_batch}}},
        dependencies=list(routes.guarded),
        tags=["scoring"],
        operation_id="score_batch",
    )
    async def score_batch(batch: BatchRequest) -> dict[str, Any]:
        """Score up to 1000 transactions in one call (one online-store round trip per feature view)."""
        results = await routes.submit_many([t.model_dump() for t in batch.transactions])
        return respond({"results": results})


def _feature_client(settings):
    from jobs.fraud.online import feature_client

    return feature_client(settings)


def handler() -> ServingHandler:
    return ServingHandler(
        title="Fraud scoring API",
        description="Card-fraud scoring: a fraud probability and an alert decision per transaction.",
        route_key="customer_id",
        feature_client=_feature_client,
        register_routes=register_routes,
        result=result,
        record=record,
        log_schema=LOG_SCHEMA,
    )
