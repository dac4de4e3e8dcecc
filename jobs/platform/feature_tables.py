"""How a use case's feature job reads the lake and writes its daily feature tables (Spark), and knows
which snapshot days are stale: the parts of a feature job that are not its feature definitions.

* :func:`read_lake` the lake partitions of a date range as one Spark DataFrame (typed, empty when
  there is none);
* :func:`write_tables` each table written once, partitioned by ``date``, then every day of the range
  swapped in atomically (``features/<table>/date=D``; a day without rows gets an empty partition
  with the table's schema), so a failed build leaves the previous partitions whole;
* **staleness**: snapshot ``D`` is computed from the lake partitions of ``D - horizon .. D`` of the
  job's input datasets. :func:`snapshot_inputs` is their content digests, :func:`record_inputs`
  writes them last (``features/_inputs/date=D/inputs.json``) once every table of ``D`` is committed,
  and :func:`stale_days` lists the days whose record is missing or differs from the lake, which is
  what the ``<use case>_build_features`` DAG builds whatever asset events woke it. By content, not
  modification time: re-ingesting a day unchanged rebuilds nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jobs.platform.storage import TMP_PREFIX, StorageLayout, as_date, partition_name, staged_directory

INPUTS_FILE = "inputs.json"  # features/_inputs/date=D/inputs.json: the lake partitions D was built from
INPUTS_VIEW = "_inputs"
MTIME_SLACK_SECONDS = 0.5


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def build_range(start, end=None) -> tuple[dt.date, dt.date]:
    """A feature build's snapshot days ``start..end`` as dates (``end`` defaults to ``start``)."""
    start = as_date(start)
    end = as_date(end) if end is not None else start
    if end < start:
        raise ValueError(f"end: value {end} is before start {start} (rule: start <= end)")
    return start, end


def read_lake(
    spark, layout: StorageLayout, dataset: str, start: dt.date, end: dt.date, columns: Mapping[str, str]
):
    """The lake partitions of ``dataset`` for days ``start..end`` with ``columns`` (name -> Spark SQL
    type); an empty DataFrame of that schema when none exists."""
    from pyspark.sql.types import StructType

    paths = [str(p) for p in layout.partition_paths(dataset, start, end)]
    if not paths:
        schema = StructType.fromDDL(", ".join(f"{c} {t}" for c, t in columns.items()))
        return spark.createDataFrame([], schema)
    return spark.read.parquet(*paths).select(*columns)


def partition_rows(root: Path) -> dict[str, int]:
    """Rows per ``date=`` folder written by Spark (from the parquet footers; none if it wrote none)."""
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    for part in sorted(root.glob("date=*")) if root.exists() else []:
        counts[part.name[5:]] = sum(pq.ParquetFile(f).metadata.num_rows for f in part.glob("*.parquet"))
    return counts


def empty_partition(path: Path, fields: Sequence[Any]) -> None:
    """A zero-row parquet file with ``fields`` (pyarrow fields): a day with no row of the table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.schema(list(fields)).empty_table(), path / "part-00000-empty.parquet")


def write_tables(
    tables: Mapping[str, Any],
    layout: StorageLayout,
    days: Sequence[dt.date],
    *,
    sort_keys: Mapping[str, Sequence[str]],
    empty_fields: Callable[[str], Sequence[Any]],
    log=None,
) -> dict[str, int]:
    """Write each Spark DataFrame of ``tables`` (with a ``date`` column, ``YYYY-MM-DD``) as
    ``features/<table>/date=D`` for every day of ``days``, sorted by ``sort_keys[table]`` within a
    partition; days without rows get an empty partition (``empty_fields(table)``). Returns the rows
    written per table. Rows dated outside ``days`` are not written."""
    root = layout.dataset_root("features")
    scratch = root / f"{TMP_PREFIX}build-{uuid.uuid4().hex[:8]}"
    rows: dict[str, int] = {}
    wanted = {d.isoformat() for d in days}
    try:
        for table, df in tables.items():
            out = scratch / table
            df.repartition("date").sortWithinPartitions(*sort_keys[table]).write.partitionBy("date").parquet(
                str(out)
            )
            counts = partition_rows(out)
            for day in days:
                final = layout.path("features", day, table)
                with staged_directory(final) as tmp:
                    src = out / partition_name(day)
                    if src.exists():
                        os.replace(src, tmp)
                    else:
                        empty_partition(tmp, empty_fields(table))
            rows[table] = sum(n for d, n in counts.items() if d in wanted)
            if log is not None:
                log.info("table written", table=table, rows=rows[table], days=len(days))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


# --- staleness ---------------------------------------------------------------------------------
def partition_digest(path: Path, cache: dict[Path, str | None]) -> str | None:
    """Content digest of one lake partition (None when it is not in the lake)."""
    if path not in cache:
        files = sorted(path.glob("*.parquet")) if path.is_dir() else []
        if not files:
            cache[path] = None
        else:
            h = hashlib.sha256()
            for f in files:
                h.update(f.name.encode())
                h.update(f.read_bytes())
            cache[path] = h.hexdigest()[:24]
    return cache[path]


def snapshot_inputs(
    layout: StorageLayout,
    day: dt.date,
    datasets: Sequence[str],
    horizon: int,
    cache: dict | None = None,
) -> dict[str, dict[str, str]]:
    """What snapshot ``day`` is computed from: the digest of every lake partition of ``day - horizon ..
    day`` that exists, per dataset of ``datasets``."""
    cache = {} if cache is None else cache
    out: dict[str, dict[str, str]] = {}
    for dataset in datasets:
        present = set(layout.partitions(dataset))
        out[dataset] = {
            d.isoformat(): digest
            for d in (day - dt.timedelta(days=i) for i in range(horizon, -1, -1))
            if d in present and (digest := partition_digest(layout.path(dataset, d), cache)) is not None
        }
    return out


def inputs_path(layout: StorageLayout, day: dt.date) -> Path:
    return layout.path("features", day, INPUTS_VIEW) / INPUTS_FILE


def record_inputs(layout: StorageLayout, day: dt.date, inputs: dict[str, dict[str, str]]) -> None:
    """Written last, once every table of ``day`` is committed: a build killed before it leaves ``day``
    stale, so the next run builds it again."""
    with staged_directory(layout.path("features", day, INPUTS_VIEW)) as tmp:
        tmp.mkdir(parents=True)
        (tmp / INPUTS_FILE).write_text(json.dumps(inputs, indent=1, sort_keys=True) + "\n")


def stale_days(
    layout: StorageLayout,
    *,
    anchor: str,
    datasets: Sequence[str],
    horizon: int,
    changed_after: float | None = None,
) -> list[dt.date]:
    """The snapshot days whose tables are missing or out of date with the lake, oldest first.

    A day is a candidate when the ``anchor`` dataset has a lake partition for it or its snapshot was
    built; it is stale when no record of its inputs exists or the lake partitions it reads differ from
    those it was built from. ``changed_after`` (epoch seconds) keeps only the days with an input
    partition written after it (new data since a build started)."""
    cache: dict[Path, str | None] = {}
    candidates = set(layout.partitions(anchor)) | set(layout.partitions("features", INPUTS_VIEW))
    span = dt.timedelta(days=horizon)
    stale = []
    for day in sorted(candidates):
        record = inputs_path(layout, day)
        current = snapshot_inputs(layout, day, datasets, horizon, cache)
        if record.exists() and json.loads(record.read_text()) == current:
            continue
        if changed_after is not None:
            written = [
                f.stat().st_mtime
                for dataset in datasets
                for p in layout.partition_paths(dataset, day - span, day)
                for f in (p, *p.glob("*.parquet"))
            ]
            # file times come from the kernel's coarse clock, which may lag time.time() by a tick: a
            # partition written just after ``changed_after`` must still count (a spare catch-up is harmless)
            if not written or max(written) <= changed_after - MTIME_SLACK_SECONDS:
                continue
        stale.append(day)
    return stale
