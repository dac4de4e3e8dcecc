"""Data contracts of the ranking use case, shared by the simulator, ingestion, features and training.

Landing files are CSV with a header, one folder per dataset and day
(``<home>/data/ranking/landing/<dataset>/date=D``); the lake holds typed parquet. Times are UTC.

* ``items`` - the catalogue's changes of the day: a row per new item (its launch) and per price
  change of an existing one (``change_id`` unique; the state of an item at time t is its last change
  at or before t);
* ``impressions`` - one row per served slot: the request (``request_id``, user, time, device), the
  item, its 0-based ``slot``, the logging policy's ``propensity`` of placing that item at that slot
  (Plackett-Luce, given the slots above) and the ``policy`` that served it;
* ``clicks`` - one row per click on an impression, with the impression's ``shown_at`` (echoed by
  the tracking link), in the file of the day the click arrives;
* ``purchases`` - one row per purchase after a click, in the file of the day it arrives (up to hours
  after the click, so a late click's purchase lands the next day).
"""

from __future__ import annotations

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

SLATE_SIZE = 10
# examination probability by slot of a position-based click model (the constants of the PBM
# literature's simulations, e.g. Joachims et al. 2017 / the xgboost unbiased LTR demo's shape)
EXAMINATION: tuple[float, ...] = (0.68, 0.61, 0.48, 0.34, 0.28, 0.20, 0.11, 0.10, 0.08, 0.06)
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")

RAW_ITEM_COLUMNS: tuple[str, ...] = (
    "change_id",
    "item_id",
    "category",
    "brand",
    "price",
    "sponsored",
    "launched_at",
    "updated_at",
)
RAW_IMPRESSION_COLUMNS: tuple[str, ...] = (
    "impression_id",
    "request_id",
    "user_id",
    "item_id",
    "slot",
    "propensity",
    "device",
    "policy",
    "shown_at",
)
RAW_CLICK_COLUMNS: tuple[str, ...] = (
    "click_id",
    "impression_id",
    "request_id",
    "user_id",
    "item_id",
    "shown_at",
    "clicked_at",
)
RAW_PURCHASE_COLUMNS: tuple[str, ...] = (
    "purchase_id",
    "click_id",
    "impression_id",
    "user_id",
    "item_id",
    "price",
    "purchased_at",
)

ITEM_SCHEMA: dict[str, str] = {
    "change_id": "bigint",
    "item_id": "bigint",
    "category": "int",
    "brand": "int",
    "price": "double",
    "sponsored": "int",
    "launched_at": "timestamp",
    "updated_at": "timestamp",
}
IMPRESSION_SCHEMA: dict[str, str] = {
    "impression_id": "bigint",
    "request_id": "bigint",
    "user_id": "bigint",
    "item_id": "bigint",
    "slot": "int",
    "propensity": "double",
    "device": "string",
    "policy": "string",
    "shown_at": "timestamp",
}
CLICK_SCHEMA: dict[str, str] = {
    "click_id": "bigint",
    "impression_id": "bigint",
    "request_id": "bigint",
    "user_id": "bigint",
    "item_id": "bigint",
    "shown_at": "timestamp",
    "clicked_at": "timestamp",
}
PURCHASE_SCHEMA: dict[str, str] = {
    "purchase_id": "bigint",
    "click_id": "bigint",
    "impression_id": "bigint",
    "user_id": "bigint",
    "item_id": "bigint",
    "price": "double",
    "purchased_at": "timestamp",
}

RAW_COLUMNS = {
    "items": RAW_ITEM_COLUMNS,
    "impressions": RAW_IMPRESSION_COLUMNS,
    "clicks": RAW_CLICK_COLUMNS,
    "purchases": RAW_PURCHASE_COLUMNS,
}
SCHEMAS = {
    "items": ITEM_SCHEMA,
    "impressions": IMPRESSION_SCHEMA,
    "clicks": CLICK_SCHEMA,
    "purchases": PURCHASE_SCHEMA,
}
