"""The serving core's response models: errors, health and readiness, and the field types every use
case's request models share (``JsonId``; a use case's request and response models live with its
handler, e.g. ``jobs.fraud.api``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError

INT64_MAX = 2**63 - 1


def _json_integer(value: Any) -> Any:
    """An id is a JSON integer as JSON Schema defines it (``42``, also ``42.0``); a boolean or a string never is."""
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError(
            "int_type", "Input should be a JSON integer, not a {kind}", {"kind": type(value).__name__}
        )
    return value


JsonId = Annotated[int, BeforeValidator(_json_integer), Field(ge=0, le=INT64_MAX)]
"""A non-negative int64 id that is a JSON integer: ``"42"`` and ``true`` are refused (``int_type``)."""


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
