"""Offline features of the ranking use case (Spark): daily snapshots of users, items and user x
category affinity, and the item catalogue as a change log.

Snapshots (:mod:`jobs.platform.windows`): the row of day ``D`` holds the values as of the end of
``D`` (``event_timestamp = D+1 00:00`` UTC), windows ``w`` in (1, 7, 30) days ``D-w+1 .. D``;
impressions count by ``shown_at``, clicks by ``clicked_at``, purchases by ``purchased_at`` (each
lands in the partition of its own day, so a snapshot of ``D`` reads partitions up to ``D`` only):

* ``user`` (``user_id``): ``user_impressions_{w}d``, ``user_clicks_{w}d``, ``user_purchases_{w}d``,
  ``user_ctr_{w}d`` (clicks / impressions, 0 without impressions);
* ``item`` (``item_id``): ``item_impressions_{w}d``, ``item_clicks_{w}d``, ``item_purchases_{w}d``,
  ``item_ctr_{w}d`` smoothed with a Beta prior, ``(clicks + 1) / (impressions + 21)`` (a cold item
  gets the prior's ~0.05, not 0 or 1);
* ``user_category`` (``user_id, category``), 30 days: ``uc_impressions_30d``, ``uc_clicks_30d``,
  ``uc_click_share_30d`` (the category's share of the user's clicks), ``uc_ctr_30d`` (smoothed).

An entity has a row on every day it was active in the last 31 days (one all-zero row after it
falls out of the window); without a row, readers use the defaults (0; the CTRs their prior).

The catalogue (``item_attributes``): one row per change of the items lake with
``event_timestamp = updated_at`` (category, brand, price, sponsored, launch time as epoch seconds),
so Feast's point-in-time join gives a request the item as it was at that time (the price it had).
"""

from __future__ import annotations

import datetime as dt

WINDOWS: tuple[int, ...] = (1, 7, 30)
LOOKBACK_DAYS = max(WINDOWS)
CTR_PRIOR = (1.0, 20.0)  # (a, b): smoothed CTR = (clicks + a) / (impressions + a + b)


def _smoothed(clicks, impressions):
    a, b = CTR_PRIOR
    return (clicks + a) / (impressions + a + b)


def _types(names: list[str]) -> dict[str, str]:
    return {n: "double" if ("ctr" in n or "share" in n) else "bigint" for n in names}


USER_FEATURES = [
    f"user_{kind}_{w}d" for w in WINDOWS for kind in ("impressions", "clicks", "purchases", "ctr")
]
ITEM_FEATURES = [
    f"item_{kind}_{w}d" for w in WINDOWS for kind in ("impressions", "clicks", "purchases", "ctr")
]
USER_CATEGORY_FEATURES = ["uc_impressions_30d", "uc_clicks_30d", "uc_click_share_30d", "uc_ctr_30d"]
ITEM_ATTRIBUTES = {
    "category": "bigint",
    "brand": "bigint",
    "price": "double",
    "sponsored": "bigint",
    "launched_at_s": "bigint",
}


def compute_features(impressions, clicks, purchases, items, start: dt.date, end: dt.date):
    """Snapshots of days ``start..end`` and the catalogue log, from lake DataFrames (impressions,
    clicks, purchases covering ``start - 30 .. end``; the items lake up to ``end``). Rows dated after
    a snapshot are ignored. Returns ``{"user", "item", "user_category", "item_attributes"}``."""
    from pyspark.sql import functions as F

    from jobs.platform.windows import rolling_sums, snapshot_rows

    first_day = start - dt.timedelta(days=LOOKBACK_DAYS)
    end_ts = dt.datetime.combine(end + dt.timedelta(days=1), dt.time())

    def dated(frame, column: str):
        return frame.where((F.col(column) >= F.lit(first_day)) & (F.col(column) < F.lit(end_ts))).withColumn(
            "day", F.to_date(column)
        )

    imp = dated(impressions.select("user_id", "item_id", "shown_at"), "shown_at")
    clk = dated(clicks.select("user_id", "item_id", "clicked_at"), "clicked_at")
    buy = dated(purchases.select("user_id", "item_id", "purchased_at"), "purchased_at")
    events = (
        imp.select("user_id", "item_id", "day", F.lit(1).alias("impressions"), F.lit(0).alias("clicks"), F.lit(0).alias("purchases"))
        .unionByName(clk.select("user_id", "item_id", "day", F.lit(0).alias("impressions"), F.lit(1).alias("clicks"), F.lit(0).alias("purchases")))
        .unionByName(buy.select("user_id", "item_id", "day", F.lit(0).alias("impressions"), F.lit(0).alias("clicks"), F.lit(1).alias("purchases")))
    )  # fmt: skip
    values = ["impressions", "clicks", "purchases"]

    def snapshots(keys: list[str], prefix: str, windows=WINDOWS):
        daily = events.groupBy(*keys, "day").agg(*[F.sum(v).alias(v) for v in values])
        out = rolling_sums(daily, keys, values, windows, first_day, start, end)
        return out.withColumnsRenamed({f"{v}_{w}d": f"{prefix}_{v}_{w}d" for v in values for w in windows})

    user = snapshots(["user_id"], "user")
    user = user.withColumns(
        {
            f"user_ctr_{w}d": F.when(
                F.col(f"user_impressions_{w}d") > 0,
                F.col(f"user_clicks_{w}d") / F.col(f"user_impressions_{w}d"),
            ).otherwise(F.lit(0.0))
            for w in WINDOWS
        }
    )
    item = snapshots(["item_id"], "item")
    item = item.withColumns(
        {
            f"item_ctr_{w}d": _smoothed(F.col(f"item_clicks_{w}d"), F.col(f"item_impressions_{w}d"))
            for w in WINDOWS
        }
    )

    category = items.select(
        "item_id", F.col("category").cast("bigint").alias("category")
    ).distinct()  # an item's category never changes
    events = events.join(F.broadcast(category), "item_id")
    uc = snapshots(["user_id", "category"], "uc", windows=(LOOKBACK_DAYS,))
    user_clicks = uc.groupBy("user_id", "day").agg(F.sum("uc_clicks_30d").alias("_clicks"))
    uc = uc.join(user_clicks, ["user_id", "day"]).withColumns(
        {
            "uc_click_share_30d": F.when(
                F.col("_clicks") > 0, F.col("uc_clicks_30d") / F.col("_clicks")
            ).otherwise(F.lit(0.0)),
            "uc_ctr_30d": _smoothed(F.col("uc_clicks_30d"), F.col("uc_impressions_30d")),
        }
    )

    attributes = items.where(F.col("updated_at") < F.lit(end_ts)).select(
        "item_id",
        F.col("updated_at").alias("event_timestamp"),
        *[F.col(c).cast(t).alias(c) for c, t in ITEM_ATTRIBUTES.items() if c != "launched_at_s"],
        F.unix_timestamp("launched_at").cast("bigint").alias("launched_at_s"),
        F.date_format("updated_at", "yyyy-MM-dd").alias("date"),
    )
    return {
        "user": snapshot_rows(user, ["user_id"], _types(USER_FEATURES)),
        "item": snapshot_rows(item, ["item_id"], _types(ITEM_FEATURES)),
        "user_category": snapshot_rows(uc, ["user_id", "category"], _types(USER_CATEGORY_FEATURES)),
        "item_attributes": attributes,
    }


# --------------------------------------------------------------------------------------------
# the job: read the lake, compute, write partitions atomically
# --------------------------------------------------------------------------------------------
LAKE_INPUTS: tuple[str, ...] = ("items", "impressions", "clicks", "purchases")
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "user": ("user_id",),
    "item": ("item_id",),
    "user_category": ("user_id", "category"),
    "item_attributes": ("item_id", "event_timestamp"),
}
TABLE_FEATURES: dict[str, dict[str, str]] = {
    "user": _types(USER_FEATURES),
    "item": _types(ITEM_FEATURES),
    "user_category": _types(USER_CATEGORY_FEATURES),
    "item_attributes": ITEM_ATTRIBUTES,
}


def _empty_fields(table: str) -> list:
    import pyarrow as pa

    kinds = {"bigint": pa.int64(), "double": pa.float64()}
    keys = [pa.field(k, pa.int64()) for k in TABLE_KEYS[table] if k != "event_timestamp"]
    stamp = pa.field("event_timestamp", pa.timestamp("us", tz="UTC"), nullable=False)
    return [*keys, stamp, *(pa.field(c, kinds[t]) for c, t in TABLE_FEATURES[table].items())]


def stale_days(settings=None, changed_after: float | None = None) -> list[dt.date]:
    """Snapshot days whose tables are missing or out of date with the lake
    (:func:`jobs.platform.feature_tables.stale_days`; a snapshot reads ``D - 30 .. D``)."""
    from jobs.platform import feature_tables as FT
    from jobs.platform.config import get_settings
    from jobs.platform.storage import StorageLayout

    return FT.stale_days(
        StorageLayout(settings or get_settings()),
        anchor="impressions",
        datasets=LAKE_INPUTS,
        horizon=LOOKBACK_DAYS,
        changed_after=changed_after,
    )


def build_features(start, end=None, settings=None, spark=None) -> dict:
    """Compute and write the tables of snapshot days ``start..end`` (inclusive), then record their
    inputs; idempotent (a re-run of a day replaces its partitions)."""
    import time

    from pyspark.sql import functions as F

    from jobs.platform import feature_tables as FT
    from jobs.platform.config import get_settings
    from jobs.platform.logs import get_logger
    from jobs.platform.spark import get_spark
    from jobs.platform.storage import StorageLayout
    from jobs.ranking.schema import SCHEMAS

    settings = settings or get_settings()
    layout = StorageLayout(settings)
    start, end = FT.build_range(start, end)
    log = get_logger("ranking_build_features", f"{start}..{end}")
    spark = spark or get_spark("ranking-build-features", settings)
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    t0 = time.monotonic()
    days = FT.days_between(start, end)
    cache: dict = {}
    # read before the lake is: a partition rewritten during the build leaves its days stale
    inputs = {day: FT.snapshot_inputs(layout, day, LAKE_INPUTS, LOOKBACK_DAYS, cache) for day in days}
    first_day = start - dt.timedelta(days=LOOKBACK_DAYS)
    frames = {
        name: FT.read_lake(spark, layout, name, first_day, end, SCHEMAS[name])
        for name in ("impressions", "clicks", "purchases")
    }
    catalogue_start = layout.partitions("items")[0] if layout.partitions("items") else first_day
    frames["items"] = FT.read_lake(spark, layout, "items", catalogue_start, end, SCHEMAS["items"])
    for frame in frames.values():
        frame.cache()
    read = {name: frame.count() for name, frame in frames.items()}
    log.info("lake read", first_day=str(first_day), **read)
    tables = compute_features(
        frames["impressions"], frames["clicks"], frames["purchases"], frames["items"], start, end
    )
    tables["item_attributes"] = tables["item_attributes"].where(F.col("date") >= F.lit(start.isoformat()))
    try:
        rows = FT.write_tables(
            tables,
            layout,
            days,
            sort_keys={t: list(keys) for t, keys in TABLE_KEYS.items()},
            empty_fields=_empty_fields,
            log=log,
        )
        for day, record in inputs.items():
            FT.record_inputs(layout, day, record)
    finally:
        for frame in frames.values():
            frame.unpersist()
    result = {
        "start": str(start),
        "end": str(end),
        "read": read,
        "rows": rows,
        "seconds": round(time.monotonic() - t0, 2),
    }
    log.info("features built", **result)
    return result
