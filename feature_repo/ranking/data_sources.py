"""Offline sources: the feature tables written by ``jobs.ranking.features``.

* ``ranking/features/<view>/date=D/*.parquet`` (user, item, user_category): daily snapshots with
  ``event_timestamp = D+1 00:00 UTC``;
* ``ranking/features/item_attributes/date=D/*.parquet``: the catalogue's changes of day ``D`` with
  ``event_timestamp = updated_at``.

The paths are relative to this folder and name the default home (``<repo>/.platform``); the
platform points every file source at the settings' storage layout when it applies the repo, keyed
by the last folder of the path (the table).
"""

from feast import FileSource
from feast.data_format import ParquetFormat

DEFAULT_FEATURES_ROOT = "../../.platform/data/ranking/features"


def feature_table(table: str) -> str:
    """The path of offline feature table ``table`` under the default home (relative to this folder)."""
    return f"{DEFAULT_FEATURES_ROOT}/{table}"


def table_source(table: str, description: str) -> FileSource:
    return FileSource(
        name=f"ranking_{table}",
        path=feature_table(table),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=description,
    )


user_snapshots = table_source("user", "Daily user activity snapshots (jobs.ranking.features).")
item_snapshots = table_source("item", "Daily item activity snapshots (jobs.ranking.features).")
user_category_snapshots = table_source(
    "user_category", "Daily user x category affinity snapshots (jobs.ranking.features)."
)
item_changes = table_source("item_attributes", "The catalogue's change log (jobs.ranking.features).")
