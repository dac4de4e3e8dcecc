"""What ingestion publishes for the ranking use case: one :class:`DatasetSpec` per landing dataset
(raw header, lake schema, de-duplication key, sort order; GX suite ``expectations/ranking/<name>.json``)
and the settings-derived values the suites are evaluated with."""

from __future__ import annotations

from typing import Any

from jobs.platform.use_case import DatasetSpec
from jobs.ranking import schema

# dataset -> (its key, the event time its lake file is sorted by)
_KEYS = {
    "items": ("change_id", "updated_at"),
    "impressions": ("impression_id", "shown_at"),
    "clicks": ("click_id", "clicked_at"),
    "purchases": ("purchase_id", "purchased_at"),
}

DATASETS: dict[str, DatasetSpec] = {
    name: DatasetSpec(
        name=name,
        raw_columns=schema.RAW_COLUMNS[name],
        schema=schema.SCHEMAS[name],
        key=key,
        sort_by=(time, key),
    )
    for name, (key, time) in _KEYS.items()
}


def suite_parameters(settings: Any) -> dict[str, Any]:
    """The bounds the suites check (``$PARAMETER`` values): user ids, categories, the slate's slots."""
    world = settings.case.world_config()
    return {
        "max_user_id": world.n_users,
        "max_category": world.categories,
        "max_slot": schema.SLATE_SIZE,
    }
