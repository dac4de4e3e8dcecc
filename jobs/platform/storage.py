"""The one module that knows the storage layout.

Every dataset has one logical name and is partitioned by date, under the folder of its use case
(``<uc>``: ``settings.use_case``). The ingested datasets are the ones the use case declares
(``UseCase.datasets``; fraud: ``transactions``, ``labels``), each with three areas; the rest are the
platform's::

    <root>/<uc>/landing/<dataset>/date=D/*.csv          raw files as the producer drops them
    <root>/<uc>/lake/<dataset>/date=D/                  parsed, deduplicated, validated (parquet)
    <root>/<uc>/quarantine/<dataset>/date=D/            rejected rows with their reasons
    <root>/<uc>/features/<table>/date=D/                offline feature tables
    <root>/<uc>/predictions/date=D/                     batch scores
    <root>/<uc>/prediction_log/date=D/                  online scoring log
    <root>/<uc>/reports/<kind>/date=D/                  GX data docs, Evidently reports, ...
    <root>/<uc>/manifests/...                           what was published where

The logical names are ``<dataset>`` (the lake), ``landing_<dataset>``, ``quarantine_<dataset>`` and
the platform's names above. Locally ``<root>`` is ``Settings.data_root``; in production the same
relative keys (``<uc>/...``) are published under ``s3://<bucket>/<prefix>/``. Writers never write into a partition in place: they write a
sibling temporary folder and :func:`commit_directory` swaps it in, so a killed task leaves either
the previous partition or the new one, never half of one.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.platform.config import Settings, get_settings

PLATFORM_DATASETS = ("features", "predictions", "prediction_log", "reports", "manifests")
INGEST_AREAS = ("landing", "quarantine")  # + the lake, whose logical name is the dataset's own

TMP_PREFIX = "_tmp-"


def as_date(value: str | dt.date | dt.datetime) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def snapshot_timestamp(day: str | dt.date) -> dt.datetime:
    """Event timestamp of the daily feature snapshot of ``day``: the next midnight, UTC (a row of day
    ``D`` is scored with the snapshot of ``D-1``, offline and online alike)."""
    d = as_date(day) + dt.timedelta(days=1)
    return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)


def partition_name(date: str | dt.date) -> str:
    return f"date={as_date(date).isoformat()}"


class StorageLayout:
    """Maps (dataset, date) to a local path and, in production, to the S3 URI it is published at."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.root = self.settings.data_root
        self.use_case = self.settings.use_case

    @functools.cached_property
    def batch_output(self) -> str:
        """The dataset the use case's daily batch job writes (``UseCase.batch_output``)."""
        from jobs.platform.use_case import get_use_case

        return get_use_case(self.settings).batch_output

    @functools.cached_property
    def datasets(self) -> dict[str, str]:
        """Logical dataset name -> folder under the use case's root."""
        from jobs.platform.use_case import get_use_case

        use_case = get_use_case(self.settings)
        out = {name: name for name in (*PLATFORM_DATASETS, self.batch_output)}
        for name in use_case.datasets:
            out[name] = f"lake/{name}"
            out.update({f"{area}_{name}": f"{area}/{name}" for area in INGEST_AREAS})
        return out

    # --- keys and paths -------------------------------------------------------------
    def key(self, dataset: str, date: str | dt.date | None = None, *sub: str) -> str:
        """``<use case>/<folder of dataset>/<sub...>/date=D``, relative to the data root (and the S3 prefix)."""
        if dataset not in self.datasets:
            raise KeyError(
                f"dataset: value {dataset!r} is not a dataset of use case {self.use_case!r}; "
                f"rule: one of {sorted(self.datasets)}"
            )
        parts = [self.use_case, self.datasets[dataset], *sub]
        if date is not None:
            parts.append(partition_name(date))
        return "/".join(p.strip("/") for p in parts if p)

    def path(self, dataset: str, date: str | dt.date | None = None, *sub: str) -> Path:
        return self.root / self.key(dataset, date, *sub)

    def dataset_root(self, dataset: str, *sub: str) -> Path:
        return self.path(dataset, None, *sub)

    def s3_uri(self, dataset: str, date: str | dt.date | None = None, *sub: str) -> str:
        prefix = self.settings.s3_prefix.strip("/")
        key = self.key(dataset, date, *sub)
        return f"s3://{self.settings.s3_bucket}/{prefix + '/' if prefix else ''}{key}"

    def uri(self, dataset: str, date: str | dt.date | None = None, *sub: str) -> str:
        """Where a dataset is read by consumers: the published S3 URI in production, else the local path."""
        published = ("predictions", "reports", "manifests", self.batch_output)
        if self.settings.publishes_to_s3 and dataset in published:
            return self.s3_uri(dataset, date, *sub)
        return str(self.path(dataset, date, *sub))

    # --- partitions -------------------------------------------------------------------
    def partitions(self, dataset: str, *sub: str) -> list[dt.date]:
        base = self.dataset_root(dataset, *sub)
        if not base.exists():
            return []
        out = []
        for child in base.iterdir():
            if child.is_dir() and child.name.startswith("date="):
                out.append(dt.date.fromisoformat(child.name[5:]))
        return sorted(out)

    def partition_paths(
        self, dataset: str, start: str | dt.date, end: str | dt.date, *sub: str
    ) -> list[Path]:
        """Existing partitions with start <= date <= end."""
        lo, hi = as_date(start), as_date(end)
        return [self.path(dataset, d, *sub) for d in self.partitions(dataset, *sub) if lo <= d <= hi]


def commit_directory(tmp: Path, final: Path) -> None:
    """Swap a fully written temporary folder in place of ``final`` (rename is atomic on one filesystem)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    trash = final.with_name(f"{TMP_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, trash)
    os.replace(tmp, final)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; on success it replaces ``final``, on error it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if not tmp.exists():
            tmp.mkdir(parents=True)
        commit_directory(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_file(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path of ``final``; on success it is renamed onto ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def clean_stale_temporaries(base: Path) -> int:
    """Remove temporaries left by killed writers under ``base``; returns how many were removed."""
    removed = 0
    if not base.exists():
        return 0
    for tmp in base.rglob(f"{TMP_PREFIX}*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed += 1
    return removed
