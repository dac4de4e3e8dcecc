"""What ingestion publishes for the ranking use case: one :class:`DatasetSpec` per landing dataset
(raw header, lake schema, de-duplication key, sort order; GX suite ``expectations/ranking/<name>.json``)
and the settings-derived values the suites are evaluated with."""

from __future__ import annotations

from typing import Any

from jobs.platform.use_case import DatasetSpec
from jobs.ranking import schema

DATASETS: dict[str, DatasetSpec] = {
    "items": DatasetSpec(
        name="items",
        raw_columns=schema.RAW_ITEM_COLUMNS,
        schema=schema.ITEM_SCHEMA,
        key="change_id",
        sort_by=("updated_at", "change_id"),
    ),
    "impressions": DatasetSpec(
        name="impressions",
        raw_columns=schema.RAW_IMPRESSION_COLUMNS,
        schema=schema.IMPRESSION_SCHEMA,
        key="impression_id",
        sort_by=("shown_at", "impression_id"),
    ),
    "clicks": DatasetSpec(
        name="clicks",
        raw_columns=schema.RAW_CLICK_COLUMNS,
        schema=schema.CLICK_SCHEMA,
        key="click_id",
        sort_by=("clicked_at", "click_id"),
    ),
    "purchases": DatasetSpec(
        name="purchases",
        raw_columns=schema.RAW_PURCHASE_COLUMNS,
        schema=schema.PURCHASE_SCHEMA,
        key="purchase_id",
        sort_by=("purchased_at", "purchase_id"),
    ),
}


def suite_parameters(settings: Any) -> dict[str, Any]:
    """The bounds the suites check (``$PARAMETER`` values): user ids, categories, the slate's slots."""
    world = settings.case.world_config()
    return {
        "max_user_id": world.n_users,
        "max_category": world.categories,
        "max_slot": schema.SLATE_SIZE,
    }
