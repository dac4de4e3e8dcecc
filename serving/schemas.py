"""The serving core's response models: errors, health and readiness (a use case's request and response
models live with its handler, e.g. ``jobs.fraud.api``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable error kind")
    reason: str = Field(description="what went wrong, for humans")


class RequestErrorBody(ErrorBody):
    """A bad request that is not a field of the body (400, 401, 404, 405, 413): still names field and rule."""

    field: str = Field(description="what was wrong: `body`, `path`, `method` or a header name")
    rule: str = Field(description="the rule it broke, e.g. `max_request_bytes`, `api_key_required`")


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
