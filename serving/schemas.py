"""Request and response models of the scoring API (validated by pydantic, published in the OpenAPI schema)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

INT64_MAX = 2**63 - 1
MIN_TX_DATETIME = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)
MAX_TX_DATETIME = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


class Transaction(BaseModel):
    """One card transaction to score. A timestamp without a zone is taken as UTC."""

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

    transaction_id: int = Field(ge=0, le=INT64_MAX, description="unique transaction id")
    customer_id: int = Field(ge=0, le=INT64_MAX, description="card holder id (Feast entity `customer`)")
    terminal_id: int = Field(ge=0, le=INT64_MAX, description="payment terminal id (Feast entity `terminal`)")
    tx_amount: float = Field(ge=0, le=1_000_000, allow_inf_nan=False, description="amount in currency units")
    tx_datetime: dt.datetime = Field(description="transaction time (ISO 8601; UTC if no zone is given)")

    @field_validator("tx_datetime", mode="after")
    @classmethod
    def _utc_in_range(cls, value: dt.datetime) -> dt.datetime:
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        if not (MIN_TX_DATETIME <= value < MAX_TX_DATETIME):
            raise ValueError(f"must be between {MIN_TX_DATETIME.date()} and {MAX_TX_DATETIME.date()}")
        return value


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transactions: list[Transaction] = Field(min_length=1, max_length=1000)


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


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable error kind")
    reason: str = Field(description="what went wrong, for humans")


class ValidationIssue(BaseModel):
    field: str = Field(description="dotted path of the offending field")
    rule: str = Field(description="the rule it broke (pydantic error type)")
    message: str
    value: Any = None


class ValidationErrorBody(BaseModel):
    error: Literal["validation_error"] = "validation_error"
    errors: list[ValidationIssue]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    champion_version: str | None
    challenger_version: str | None
    challenger_mode: str
    online_store: str
    reasons: list[str]
