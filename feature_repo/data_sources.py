"""Offline sources: the feature tables written by ``jobs.fraud.features``.

* ``features/<view>/date=D/*.parquet`` (customer, terminal): daily snapshots with
  ``event_timestamp = D+1 00:00 UTC``;
* ``features/recent/date=D/*.parquet``: one row per transaction of day ``D`` with
  ``event_timestamp = tx_datetime`` (the customer's activity in the hour before it).

The folders come from the platform's storage layout (``jobs.platform.storage``), so they follow ``FRAUD_HOME``.
"""

from feast import FileSource
from feast.data_format import ParquetFormat

from jobs.platform.storage import StorageLayout


def feature_table_source(view: str, layout: StorageLayout | None = None) -> FileSource:
    """Parquet source over the partitioned feature table of ``view`` ("customer" or "terminal")."""
    layout = layout or StorageLayout()
    return FileSource(
        name=f"{view}_daily_snapshots",
        path=str(layout.dataset_root("features", view)),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=f"Daily {view} feature snapshots (jobs.fraud.features), partitioned by date.",
    )


customer_snapshots = feature_table_source("customer")
terminal_snapshots = feature_table_source("terminal")

recent_activity = FileSource(
    name="transaction_recent_activity",
    path=str(StorageLayout().dataset_root("features", "recent")),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="Per transaction: the customer's activity in the hour before it (jobs.fraud.features).",
)
