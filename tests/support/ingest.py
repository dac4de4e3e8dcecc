"""Ingest a folder of landing files (the bad-input corpus, generated files) and read back what it wrote."""

from __future__ import annotations

import shutil
from pathlib import Path


def ingest_folder(folder: Path, settings, spark, day: str, dataset: str = "transactions"):
    """Copy every ``*.csv`` of ``folder`` into day's landing folder of ``dataset`` (of the settings' use
    case), ingest it, and return the result with the lake and quarantine partitions it wrote (pandas)."""
    import pandas as pd

    from jobs.platform.ingest import ingest
    from jobs.platform.storage import StorageLayout

    layout = StorageLayout(settings)
    landing = layout.path(f"landing_{dataset}", day)
    landing.mkdir(parents=True)
    for path in sorted(folder.glob("*.csv")):
        shutil.copy(path, landing / path.name)
    result = ingest(dataset, day, settings, spark)
    lake = pd.read_parquet(layout.path(dataset, day))
    quarantine = pd.read_parquet(layout.path(f"quarantine_{dataset}", day))
    return result, lake, quarantine
