"""Offline sources: the daily snapshot tables written by ``jobs.features``.

``features/<view>/date=D/*.parquet`` with ``event_timestamp = D+1 00:00 UTC``. The folder comes
from the platform's storage layout (``jobs.storage``), so it follows ``FRAUD_HOME``.
"""

from feast import FileSource
from feast.data_format import ParquetFormat

from jobs.storage import StorageLayout


def feature_table_source(view: str, layout: StorageLayout | None = None) -> FileSource:
    """Parquet source over the partitioned feature table of ``view`` ("customer" or "terminal")."""
    layout = layout or StorageLayout()
    return FileSource(
        name=f"{view}_daily_snapshots",
        path=str(layout.dataset_root("features", view)),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=f"Daily {view} feature snapshots (jobs.features), partitioned by date.",
    )


customer_snapshots = feature_table_source("customer")
terminal_snapshots = feature_table_source("terminal")
