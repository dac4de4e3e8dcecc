"""Rolling daily windows in Spark, the shape every daily feature snapshot has: per entity and
snapshot day, the sums of daily aggregates over the last ``w`` days.

A snapshot of day ``D`` holds the values *as of the end of D* (``event_timestamp = D+1 00:00``
UTC), so a row of day ``D`` is joined by Feast's point-in-time join to events of ``D+1`` and served
online after the day's materialization: training and serving read the same value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence


def calendar(spark, first_day: dt.date, end: dt.date):
    """One row per day ``first_day..end``: ``day`` (date) and ``day_idx`` (days since ``first_day``)."""
    from pyspark.sql import functions as F

    return spark.sql(
        f"SELECT explode(sequence(DATE'{first_day}', DATE'{end}', INTERVAL 1 DAY)) AS day"
    ).withColumn("day_idx", F.datediff("day", F.lit(first_day)))


def rolling_sums(
    daily,
    keys: Sequence[str],
    values: Sequence[str],
    windows: Sequence[int],
    first_day: dt.date,
    start: dt.date,
    end: dt.date,
    *,
    shift: int = 0,
):
    """Per entity (``keys``) and snapshot day ``start..end``: ``<value>_<w>d``, the sum of the daily
    ``values`` over days ``D-shift-w+1 .. D-shift``, for each ``w`` in ``windows``.

    ``daily`` has one row per (keys, ``day``) with activity. An entity has a row on day ``D`` iff it
    had activity in the longest window plus one day (the extra day writes one all-zero row when it
    falls out of the window, so the last value in the online store is never stale). ``daily`` must
    cover ``first_day .. end`` (``first_day <= start - shift - max(windows)``)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    longest = max(windows)
    if first_day > start - dt.timedelta(days=shift + longest):
        raise ValueError(
            f"first_day: {first_day} is after {start - dt.timedelta(days=shift + longest)}; rule: the daily "
            f"aggregates must reach {shift + longest} days before the first snapshot"
        )
    days = calendar(daily.sparkSession, first_day, end)
    keys = list(keys)
    grid = daily.select(*keys).distinct().crossJoin(days)
    dense = grid.join(daily, [*keys, "day"], "left").fillna(0, subset=list(values))
    by_entity = Window.partitionBy(*keys).orderBy("day_idx")
    activity = sum((F.col(v) != 0).cast("int") for v in values)
    cols = {"_active": F.sum(activity).over(by_entity.rowsBetween(-(shift + longest), -shift))}
    for w in windows:
        frame = by_entity.rowsBetween(-(shift + w - 1), -shift)
        cols.update({f"{v}_{w}d": F.sum(v).over(frame) for v in values})
    out = dense.withColumns(cols).where((F.col("_active") > 0) & (F.col("day") >= F.lit(start)))
    return out.drop("_active", "day_idx", *values)


def snapshot_rows(frame, keys: Sequence[str], features: dict[str, str]):
    """The written shape of a snapshot: keys, ``event_timestamp`` (the day after), the features cast
    to their types (name -> Spark SQL type) and ``date`` (the snapshot day, the partition)."""
    from pyspark.sql import functions as F

    return frame.select(
        *keys,
        F.to_timestamp(F.date_add("day", 1)).alias("event_timestamp"),
        *[F.col(name).cast(kind).alias(name) for name, kind in features.items()],
        F.date_format("day", "yyyy-MM-dd").alias("date"),
    )
