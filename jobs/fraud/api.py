"""Fraud's scoring API schemas: the request and response models of ``/v1/score`` and ``/v1/score/batch``
(validated by pydantic, published in the OpenAPI schema; the error bodies are the serving core's, ``serving.schemas``)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from serving.schemas import JsonId

MIN_TX_DATETIME = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)
MAX_TX_DATETIME = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


class Transaction(BaseModel):
    """One card transaction to score. A timestamp without a zone is taken as UTC. Numbers are JSON numbers:
    ids are JSON integers (``42``; ``42.0`` too, as JSON Schema defines an integer, but not ``42.5``), the amount
    an integer or a decimal; a string (``"57.2"``), a boolean, NaN or Infinity is never a number (422 with the
    field and the rule: ``int_type``, ``int_from_float``, ``float_type``, ``finite_number``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "transaction_id": 1_000_001,
                    "customer_id": 42,
                    "terminal_id": 317,
                    "tx_amount": 57.16,
                    "tx_datetime": "2018-05-02T13:45:00Z",
                }
            ]
        },
    )

    transaction_id: JsonId = Field(description="unique transaction id (a JSON integer)")
    customer_id: JsonId = Field(description="card holder id (Feast entity `customer`; a JSON integer)")
    terminal_id: JsonId = Field(description="payment terminal id (Feast entity `terminal`; a JSON integer)")
    tx_amount: float = Field(
        ge=0,
        le=1_000_000,
        strict=True,
        allow_inf_nan=False,
        description="amount in currency units: a finite JSON number, never a string or a boolean",
    )
    tx_datetime: dt.datetime = Field(description="transaction time (ISO 8601; UTC if no zone is given)")

    @field_validator("tx_datetime", mode="after")
    @classmethod
    def _utc_in_range(cls, value: dt.datetime) -> dt.datetime:
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        if not (MIN_TX_DATETIME <= value < MAX_TX_DATETIME):
            raise ValueError(f"must be between {MIN_TX_DATETIME.date()} and {MAX_TX_DATETIME.date()}")
        return value


class BatchRequest(BaseModel):
    """Up to 1000 transactions; their ``transaction_id`` values are unique within the batch (a repeated id
    is answered 422, field ``transactions``, rule ``unique_transaction_id``, naming both positions)."""

    model_config = ConfigDict(extra="forbid")
    transactions: list[Transaction] = Field(
        min_length=1, max_length=1000, description="transaction_id is unique within one batch"
    )

    @field_validator("transactions", mode="after")
    @classmethod
    def _unique_ids(cls, transactions: list[Transaction]) -> list[Transaction]:
        first: dict[int, int] = {}
        for i, tx in enumerate(transactions):
            j = first.setdefault(tx.transaction_id, i)
            if j != i:
                raise PydanticCustomError(
                    "unique_transaction_id",
                    "transaction_id {id} at transactions.{i} repeats the one first at transactions.{j} "
                    "(rule: ids are unique within a batch)",
                    {"id": tx.transaction_id, "i": i, "j": j},
                )
        return transactions


class FeatureFreshness(BaseModel):
    feature_view: str
    event_timestamp: dt.datetime | None = Field(
        description="timestamp of the online row served; null if unknown"
    )
    age_seconds: float | None = Field(description="transaction time minus the row's event timestamp")


class ScoreResult(BaseModel):
    request_id: str
    transaction_id: int
    customer_id: int
    terminal_id: int
    probability: float = Field(ge=0, le=1, description="fraud probability from the model")
    decision: Literal[0, 1] = Field(description="1 = raise a fraud alert (probability >= threshold)")
    threshold: float = Field(description="the model version's cost-optimal decision threshold")
    model_name: str
    model_version: str
    arm: Literal["champion", "challenger"] = Field(description="which model answered (canary split)")
    unknown_entities: list[str] = Field(
        description="entities the online store has no row for; their features were scored as missing"
    )
    feature_freshness: list[FeatureFreshness]


class BatchResponse(BaseModel):
    results: list[ScoreResult]
