"""Structured logging: one JSON line per event, carrying the job name and the run's logical date."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure(level: int = logging.INFO) -> None:
    root = logging.getLogger("jobs")
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = True


class JobLogger(logging.LoggerAdapter):
    """Logger bound to a job and a logical date: ``log.info("published", rows=10)``."""

    def process(self, msg: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        extra = dict(self.extra or {})
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("exc_info", "stack_info", "stacklevel")}
        extra.update(fields)
        kwargs["extra"] = extra
        return msg, kwargs


def get_logger(job: str, logical_date: str | None = None) -> JobLogger:
    configure()
    return JobLogger(logging.getLogger(f"jobs.{job}"), {"job": job, "logical_date": logical_date})


def progress(
    items: Iterable[T], log: JobLogger, what: str, total: int | None = None, every: int = 10
) -> Iterator[T]:
    """Yield items, logging progress every ``every`` items (long loops show progress)."""
    start = time.monotonic()
    for i, item in enumerate(items, 1):
        yield item
        if i % every == 0 or (total is not None and i == total):
            log.info("progress", what=what, done=i, total=total, elapsed_s=round(time.monotonic() - start, 1))
