"""Streaming path: push each scored row to the use case's stream (Feast push source), off the request path.

:class:`FeaturePusher` owns a bounded queue and a thread; the request path only enqueues. The thread
drains the queue in small batches (lingering ``linger_seconds`` after the first row so that a busy
service pushes once per batch, not once per request) and calls ``client.push(batch)`` — the use case's
feature client (fraud: ``jobs.fraud.online.FraudFeatureClient.push`` folds scored transactions into the
customer's recent activity, so the short-window features are fresh at the next request).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from jobs.platform.logs import get_logger

log = get_logger("serving.streaming")
_STOP = object()


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
        self.max_batch = max_batch
        self.linger_seconds = linger_seconds
        self.on_failed = on_failed
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.pushed = 0
        self.failed = 0
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def submit(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            try:
                self.queue.put_nowait(row)
                self._idle.clear()
            except queue.Full:
                self._fail(1)

    def _fail(self, n: int) -> None:
        self.failed += n
        if self.on_failed is not None:
            self.on_failed(n)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="feature-pusher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            batch = [] if item is _STOP else [item]
            # linger briefly after the first transaction: one read-modify-write for everything that
            # arrives meanwhile instead of one per request (less CPU and GIL taken from requests)
            deadline = time.monotonic() + self.linger_seconds if batch else 0.0
            while len(batch) < self.max_batch:
                try:
                    nxt = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is _STOP:
                    item = _STOP
                    break
                batch.append(nxt)
            if batch:
                try:
                    self.client.push(batch)
                    self.pushed += len(batch)
                except Exception as exc:  # the online store may be down: count, log, keep going
                    log.warning("feature_push_failed", rows=len(batch), error=f"{type(exc).__name__}: {exc}")
                    self._fail(len(batch))
            if self.queue.empty():
                self._idle.set()
            if item is _STOP:
                return

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until everything submitted so far was pushed (tests, shutdown)."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self.queue.put(_STOP)
        thread.join(timeout=timeout)
