"""Dynamic micro-batching of concurrent scoring requests.

Every step of scoring is cheaper per row in batches than one row at a time: one online-store read per
feature view for all pending transactions, one call of the shared (pandas) request-feature function,
one XGBoost ``inplace_predict``. The batcher runs one scoring call at a time on a dedicated worker
thread; requests arriving meanwhile queue up and are scored together in the next call. There is no
deliberate wait: an idle service scores a lone request immediately (batch of one), a busy one
amortises the fixed costs over everything that arrived during the previous call. The event loop never
blocks on scoring, so ``/healthz`` and ``/metrics`` stay responsive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import Any


class MicroBatcher:
    def __init__(self, fn: Callable[[list[dict[str, Any]]], list[Any]], max_batch: int = 256) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self._pending: list[tuple[dict[str, Any], asyncio.Future]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer")
        self.batches = 0
        self.rows = 0

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(RuntimeError("service shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=True)

    async def submit_many(self, items: list[dict[str, Any]]) -> list[Any]:
        if self._task is None:
            raise RuntimeError("batcher not started")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._pending.extend(zip(items, futures, strict=True))
        self._wakeup.set()
        return list(await asyncio.gather(*futures))

    async def submit(self, item: dict[str, Any]) -> Any:
        if self._task is None:
            raise RuntimeError("batcher not started")
        future = asyncio.get_running_loop().create_future()  # no gather() for the common case of one
        self._pending.append((item, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                items = [item for item, _ in batch]
                try:
                    results = await loop.run_in_executor(self._executor, self.fn, items)
                except Exception as exc:  # every request of the batch gets the same error (e.g. 503)
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self.batches += 1
                self.rows += len(items)
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
