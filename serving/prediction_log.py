"""Prediction log: every scored request, appended as parquet by a background writer thread.

The request path only appends its records to a bounded in-memory buffer (:class:`serving.batching.Drain`:
no disk I/O, never blocks, wakes nobody). A writer thread takes what arrived every ``flush_seconds``
and writes one parquet file per date partition::

    StorageLayout.path("prediction_log", date) / part-<utc time>-<uuid>.parquet

Files are committed atomically (written as a temporary sibling, then renamed), so readers see whole
files only. The columns and the partition field come from the use case's handler
(:class:`serving.handler.LogSchema`; fraud: request_id, transaction_id, customer_id, terminal_id,
tx_datetime, scored_at, score, decision, threshold, model_name, model_version, arm
(champion|challenger|shadow), unknown_entities, partitioned by the transaction's date, which is what
the monitoring and A/B jobs join labels on), then one column per model feature.

If the buffer is full (the disk cannot keep up), the record is counted in ``dropped`` and in the
``serving_prediction_log_dropped_total`` metric rather than slowing requests down.
``close()`` drains and flushes everything still queued (called on application shutdown).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.platform.logs import get_logger
from jobs.platform.storage import StorageLayout, staged_file
from serving.batching import Drain
from serving.handler import LogSchema

log = get_logger("serving.prediction_log")


def to_table(records: list[dict[str, Any]], schema: LogSchema) -> pa.Table:
    """Records as an Arrow table: the schema's columns in order, then every other key (the model's
    features) as float64."""
    feature_names: list[str] = []
    seen = set(schema.columns)
    for r in records:
        for k in r:
            if k not in seen:
                seen.add(k)
                feature_names.append(k)
    arrays, fields = [], []
    for name in (*schema.columns, *feature_names):
        typ = schema.columns.get(name, pa.float64())
        arrays.append(pa.array([r.get(name) for r in records], type=typ))
        fields.append(pa.field(name, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class PredictionLogWriter:
    def __init__(
        self,
        layout: StorageLayout,
        schema: LogSchema,
        queue_size: int = 100_000,
        flush_seconds: float = 2.0,
        max_batch: int = 50_000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self.layout = layout
        self.schema = schema
        self.flush_seconds = flush_seconds
        self.on_written = on_written
        self.on_dropped = on_dropped
        self.written = 0
        self.files: list[str] = []
        self._drain = Drain(
            self._write,
            interval=flush_seconds,
            capacity=queue_size,
            max_batch=max_batch,
            name="prediction-log",
            on_dropped=on_dropped,
        )
        self._write_errors = 0

    @property
    def dropped(self) -> int:
        return self._drain.dropped + self._write_errors

    # --- request path ------------------------------------------------------------------
    def append(self, records: list[dict[str, Any]]) -> None:
        self._drain.put(records)

    # --- writer thread --------------------------------------------------------------------
    def start(self) -> None:
        self._drain.start()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        by_date: dict[dt.date, list[dict[str, Any]]] = defaultdict(list)
        for r in batch:
            by_date[r[self.schema.partition_by].date()].append(r)
        for date, rows in sorted(by_date.items()):
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
            final = self.layout.path("prediction_log", date) / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
            try:
                table = to_table(rows, self.schema)
                with staged_file(final) as tmp:
                    pq.write_table(table, tmp)
            except Exception:  # keep the writer alive; the rows are reported as dropped
                log.exception("prediction_log_write_failed", rows=len(rows), partition=str(date))
                self._write_errors += len(rows)
                if self.on_dropped is not None:
                    self.on_dropped(len(rows))
                continue
            self.written += len(rows)
            self.files.append(str(final))
            if self.on_written is not None:
                self.on_written(len(rows))

    def close(self, timeout: float = 30.0) -> None:
        """Flush everything queued so far and stop the writer."""
        self._drain.close(timeout)
        log.info("prediction_log_closed", written=self.written, dropped=self.dropped)
