"""Streaming path: push each scored row to the use case's stream (Feast push source), off the request path.

:class:`FeaturePusher` owns a bounded buffer and a thread (:class:`serving.batching.Drain`); the request
path only appends, waking nobody. Every ``linger_seconds`` the thread takes what arrived (so that a
busy service pushes once per interval, not once per request) and calls ``client.push(batch)`` — the use case's
feature client (fraud: ``jobs.fraud.online.FraudFeatureClient.push`` folds scored transactions into the
customer's recent activity, so the short-window features are fresh at the next request).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobs.platform.logs import get_logger
from serving.batching import Drain

log = get_logger("serving.streaming")


class FeaturePusher:
    def __init__(
        self,
        client: Any,
        queue_size: int = 10_000,
        max_batch: int = 500,
        on_failed: Callable[[int], None] | None = None,
        linger_seconds: float = 0.02,
    ) -> None:
        self.client = client
        self.on_failed = on_failed
        self.pushed = 0
        self.failed = 0
        self._drain = Drain(
            self._push,
            interval=linger_seconds,
            capacity=queue_size,
            max_batch=max_batch,
            name="feature-pusher",
            on_dropped=self._fail,
        )

    def submit(self, rows: list[dict[str, Any]]) -> None:
        self._drain.put(rows)

    def _fail(self, n: int) -> None:
        self.failed += n
        if self.on_failed is not None:
            self.on_failed(n)

    def _push(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.client.push(batch)
            self.pushed += len(batch)
        except Exception as exc:  # the online store may be down: count, log, keep going
            log.warning("feature_push_failed", rows=len(batch), error=f"{type(exc).__name__}: {exc}")
            self._fail(len(batch))

    def start(self) -> None:
        self._drain.start()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until everything submitted so far was pushed (tests, shutdown)."""
        return self._drain.wait_idle(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._drain.close(timeout)
