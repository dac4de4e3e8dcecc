"""Feature views of the ranking use case.

The activity snapshots have a TTL of one day (a row timestamped ``D+1 00:00`` serves day ``D+1``);
a missing value means "no activity" and every reader fills the defaults (0, the smoothed CTRs their
prior). The catalogue view reads the item's last change at or before the request (TTL ten years:
an item that never changed keeps its launch row).
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64

try:  # loaded as the ``feature_repo.ranking`` package (the platform)
    from .data_sources import item_changes, item_snapshots, user_category_snapshots, user_snapshots
    from .entities import category, item, user
except ImportError:  # loaded by the ``feast`` CLI from this folder
    from data_sources import item_changes, item_snapshots, user_category_snapshots, user_snapshots
    from entities import category, item, user

WINDOWS = (1, 7, 30)
SNAPSHOT_TTL = timedelta(days=1)


def _activity(prefix: str) -> list[Field]:
    return [
        Field(
            name=f"{prefix}_{kind}_{w}d",
            dtype=Float64 if kind == "ctr" else Int64,
            description=f"{kind}, last {w} days",
        )
        for w in WINDOWS
        for kind in ("impressions", "clicks", "purchases", "ctr")
    ]


def _view(name, entities, schema, source, description, ttl=SNAPSHOT_TTL) -> FeatureView:
    """An online view of the ranking project (every view here is materialized)."""
    return FeatureView(
        name=name,
        entities=entities,
        ttl=ttl,
        schema=schema,
        online=True,
        source=source,
        tags={"owner": "ml-platform", "use_case": "ranking"},
        description=description,
    )


user_activity = _view(
    "user_activity",
    [user],
    _activity("user"),
    user_snapshots,
    "The user's impressions, clicks, purchases and CTR at the end of the previous day.",
)

item_activity = _view(
    "item_activity",
    [item],
    _activity("item"),
    item_snapshots,
    "The item's impressions, clicks, purchases and smoothed CTR at the end of the previous day.",
)

user_category_affinity = _view(
    "user_category_affinity",
    [user, category],
    [
        Field(name="uc_impressions_30d", dtype=Int64, description="impressions of the category, 30 days"),
        Field(name="uc_clicks_30d", dtype=Int64, description="clicks on the category, 30 days"),
        Field(
            name="uc_click_share_30d", dtype=Float64, description="the category's share of the user's clicks"
        ),
        Field(name="uc_ctr_30d", dtype=Float64, description="smoothed CTR of the user on the category"),
    ],
    user_category_snapshots,
    "How much the user clicks the candidate item's category (30 days).",
)

item_catalogue = _view(
    "item_catalogue",
    [item],
    [
        Field(name="category", dtype=Int64, description="item category"),
        Field(name="brand", dtype=Int64, description="item brand"),
        Field(name="price", dtype=Float64, description="price at the request's time"),
        Field(name="sponsored", dtype=Int64, description="1 for a sponsored item"),
        Field(name="launched_at_s", dtype=Int64, description="launch time, epoch seconds"),
    ],
    item_changes,
    "The item as the catalogue described it at the request's time.",
    ttl=timedelta(days=3650),
)
