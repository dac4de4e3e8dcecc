"""Streaming path: push each scored transaction to the Feast push source, off the request path.

:class:`FeaturePusher` owns a bounded queue and a thread; the request path only enqueues. The thread
drains the queue in small batches (lingering ``linger_seconds`` after the first transaction so that a
busy service pushes once per batch, not once per request) and calls ``client.push_transactions(batch)`` (see
``serving.features.FeastFeatureClient.push_transactions``), which updates the customer's recent-activity
row in the online store so the short-window features are fresh at the next request.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from jobs.fraud.features import RECENT_FEATURES, RECENT_WINDOW_SECONDS, derive_recent
from jobs.platform.logs import get_logger

log = get_logger("serving.streaming")
_STOP = object()

WINDOW_SECONDS = RECENT_WINDOW_SECONDS
MAX_RECENT = 256  # per customer; a card with more than this per hour is an anomaly in itself
STREAM_FEATURES: tuple[str, ...] = tuple(RECENT_FEATURES)
__all__ = ["FeaturePusher", "derive_recent", "epoch_seconds", "merge_recent"]


def epoch_seconds(ts: dt.datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return int(ts.timestamp())


def merge_recent(
    ids: Sequence[int], epochs: Sequence[int], amounts: Sequence[float], new: Sequence[tuple[int, int, float]]
) -> tuple[list[int], list[int], list[float]]:
    """Add new (id, epoch, amount) transactions, drop duplicates and those older than the window
    (relative to the newest), keep at most MAX_RECENT; sorted by time."""
    rows = {int(i): (int(e), float(a)) for i, e, a in zip(ids, epochs, amounts, strict=False)}
    for i, e, a in new:
        rows[int(i)] = (int(e), float(a))
    if not rows:
        return [], [], []
    newest = max(e for e, _ in rows.values())
    kept = sorted(
        ((e, i, a) for i, (e, a) in rows.items() if e >= newest - WINDOW_SECONDS), key=lambda r: (r[0], r[1])
    )[-MAX_RECENT:]
    return [i for _, i, _ in kept], [e for e, _, _ in kept], [a for _, _, a in kept]


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

    def submit(self, transactions: list[dict[str, Any]]) -> None:
        for tx in transactions:
            try:
                self.queue.put_nowait(tx)
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
                    self.client.push_transactions(batch)
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
