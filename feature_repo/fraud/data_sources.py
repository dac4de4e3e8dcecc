"""Offline sources: the feature tables written by ``jobs.fraud.features``.

* ``fraud/features/<view>/date=D/*.parquet`` (customer, terminal): daily snapshots with
  ``event_timestamp = D+1 00:00 UTC``;
* ``fraud/features/recent/date=D/*.parquet``: one row per transaction of day ``D`` with
  ``event_timestamp = tx_datetime`` (the customer's activity in the hour before it);
* ``fraud/features/at_tx/date=D/*.parquet``: the same rows with the customer's 1/7/30-day windows
  ending at the transaction (fraud_v3).

The paths are relative to this folder and name the default home (``<repo>/.platform``), which is
what the ``feast`` CLI resolves them against. The platform reads no path from here: it points
every file source at the settings' storage layout when it applies the repo
(``jobs.platform.feature_store.repo_objects``), keyed by the last folder of the path (the table).
"""

from feast import FileSource
from feast.data_format import ParquetFormat

DEFAULT_FEATURES_ROOT = "../../.platform/data/fraud/features"


def feature_table(table: str) -> str:
    """The path of offline feature table ``table`` under the default home (relative to this folder)."""
    return f"{DEFAULT_FEATURES_ROOT}/{table}"


def feature_table_source(view: str) -> FileSource:
    """Parquet source over the partitioned feature table of ``view`` ("customer" or "terminal")."""
    return FileSource(
        name=f"{view}_daily_snapshots",
        path=feature_table(view),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=f"Daily {view} feature snapshots (jobs.fraud.features), partitioned by date.",
    )


customer_snapshots = feature_table_source("customer")
terminal_snapshots = feature_table_source("terminal")

recent_activity = FileSource(
    name="transaction_recent_activity",
    path=feature_table("recent"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="Per transaction: the customer's activity in the hour before it (jobs.fraud.features).",
)

windows_at_tx = FileSource(
    name="transaction_windows_at_tx",
    path=feature_table("at_tx"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="Per transaction: the customer's windows ending at it (jobs.fraud.features).",
)
