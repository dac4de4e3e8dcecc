"""Offline feature tables: daily snapshots of customer and terminal behaviour (Spark).

The baseline features of the handbook (Le Borgne et al., chapter 3.4), computed as **daily
snapshots**: for every day ``D`` the job writes, for each customer and terminal active in the
relevant look-back, the feature values *as of the end of day D*, with
``event_timestamp = D+1 00:00:00 UTC``. A transaction at ``D 13:00`` is therefore scored with the
snapshot of ``D-1`` both offline (Feast's point-in-time join) and online (after the daily
materialization), so training and serving see identical values by construction.

Customer spending behaviour, windows ``w`` in (1, 7, 30) days ending at the end of ``D``
(transactions of days ``D-w+1 .. D``):

* ``customer_nb_tx_{w}d``      number of transactions
* ``customer_avg_amount_{w}d`` mean amount (0 when there is none)

Terminal risk, windows ``w`` in (1, 7, 30) days **shifted back by** ``delay = label_delay_days``
(transactions of days ``D-delay-w+1 .. D-delay``), because labels arrive late:

* ``terminal_nb_tx_{w}d``  number of transactions in the shifted window
* ``terminal_risk_{w}d``   share of them known to be fraudulent, counting only chargebacks whose
  ``reported_at`` is before the snapshot timestamp (0 when the window is empty)

Snapshot membership: a customer is in snapshot ``D`` iff it has a transaction in days
``D-30 .. D`` (one day more than the longest window), a terminal iff it has one in
``D-delay-30 .. D-delay``. The extra day emits one all-zero row when an entity falls out of its
longest window, so the last value written to the online store is never stale; after that the
entity has no rows and readers use the defaults (0), exactly like the zero row.

Short-window customer activity, per **transaction** (the batch twin of the scoring service's
stream path, ``feature_repo/fraud/streaming.py``): for a transaction of customer ``c`` at ``t``,

* ``customer_nb_tx_1h``   number of ``c``'s other transactions in ``[t - 1 h, t)``
* ``customer_amount_1h``  their total amount

in whole seconds (``t`` truncated to the second, like the stream path's epoch seconds; a
transaction in the same second as ``t`` is not counted). :func:`derive_recent` is the same
definition evaluated per request on the pushed recent activity; a test keeps the two equal.
Rows: ``features/recent/date=D`` holds one row per transaction of day ``D`` with
``event_timestamp = tx_datetime``, so Feast's point-in-time join gives each transaction its own row.

Customer windows **ending at the transaction** (``fraud_v3``; per transaction, the transaction
itself **included**): for a transaction of customer ``c`` at ``t`` on day ``D`` and ``w`` in (1, 7, 30),

* ``customer_nb_tx_today`` / ``customer_amount_today``  ``c``'s transactions of ``D`` in ``[D 00:00, t)``
  other than this one, plus this one (count >= 1), and their total amount;
* ``customer_nb_tx_{w}d_at_tx``       the snapshot of ``D-1`` (days ``D-w .. D-1``) plus the day so far;
* ``customer_avg_amount_{w}d_at_tx``  the mean amount over the same transactions;
* ``customer_amount_ratio_{w}d_at_tx`` the transaction's amount over that mean plus one currency unit
  (how far it departs from the customer's habit: a compromised card's inflated amounts; the unit
  keeps a zero mean defined without a branch, so the expression is the same on every path).

:func:`windows_at_transaction` is the one definition: Spark applies it to columns
(:func:`compute_windows_at_tx`: the snapshot joined to the day's transactions and a running range
window per customer and day), the scoring service to the columns of a micro-batch (the snapshot as
materialized, the day from the pushed recent activity, :func:`derive_today`). Rows:
``features/at_tx/date=D``, one per transaction of ``D`` with ``event_timestamp = tx_datetime``.

Computation: per-entity daily aggregates summed over rolling windows of a dense (entity x day)
grid (:func:`jobs.platform.windows.rolling_sums`, shared with the other use cases); the late labels are joined to the snapshot calendar
with a range join (label known at ``D`` iff ``to_date(reported_at) <= D``).

Output: ``features/customer/date=D``, ``features/terminal/date=D`` (parquet, one partition per
snapshot day), ``features/recent/date=D`` and ``features/at_tx/date=D`` (the transactions of day ``D``), each replaced
atomically; re-running a day gives the same partition.

CLI: ``python -m jobs.fraud.build_features --start 2018-05-01 --end 2018-05-07`` (or ``--date D``;
``--materialize`` then loads the online store); also ``spark-submit jobs/fraud/build_features.py ...``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.platform import feature_tables as FT
from jobs.platform.config import Settings, get_settings
from jobs.platform.feature_tables import INPUTS_FILE, INPUTS_VIEW  # noqa: F401  (re-exported)
from jobs.platform.logs import get_logger
from jobs.platform.storage import (
    StorageLayout,
    as_date,
    snapshot_timestamp,
)

WINDOWS: tuple[int, ...] = (1, 7, 30)
LOOKBACK_DAYS = max(WINDOWS)  # membership: activity in the longest window + 1 day
ENTITY_VIEWS: dict[str, str] = {"customer": "customer_id", "terminal": "terminal_id"}

CUSTOMER_FEATURES: list[str] = [
    name for w in WINDOWS for name in (f"customer_nb_tx_{w}d", f"customer_avg_amount_{w}d")
]
TERMINAL_FEATURES: list[str] = [
    name for w in WINDOWS for name in (f"terminal_nb_tx_{w}d", f"terminal_risk_{w}d")
]
VIEW_FEATURES: dict[str, list[str]] = {"customer": CUSTOMER_FEATURES, "terminal": TERMINAL_FEATURES}

RECENT_VIEW = "recent"  # per-transaction table features/recent
RECENT_WINDOW_SECONDS = 3600
RECENT_FEATURES: list[str] = ["customer_nb_tx_1h", "customer_amount_1h"]
AT_TX_VIEW = "at_tx"  # per-transaction table features/at_tx: the customer windows ending at the transaction
TODAY_FEATURES: list[str] = ["customer_nb_tx_today", "customer_amount_today"]
AT_TX_FEATURES: list[str] = [
    name
    for w in WINDOWS
    for name in (
        f"customer_nb_tx_{w}d_at_tx",
        f"customer_avg_amount_{w}d_at_tx",
        f"customer_amount_ratio_{w}d_at_tx",
    )
]
CURRENT_FEATURES: list[str] = TODAY_FEATURES + AT_TX_FEATURES
"""fraud_v3's per-transaction features (table ``at_tx``, view ``customer_windows_at_tx``)."""
TABLE_KEYS: dict[str, str] = {**ENTITY_VIEWS, RECENT_VIEW: "transaction_id", AT_TX_VIEW: "transaction_id"}
"""Every table the job writes -> its key column (the entity views plus the per-transaction tables)."""
TABLE_COLUMNS: dict[str, list[str]] = {
    **VIEW_FEATURES,
    RECENT_VIEW: ["customer_id", *RECENT_FEATURES],
    AT_TX_VIEW: ["customer_id", *CURRENT_FEATURES],
}


def feature_dtype(name: str) -> str:
    """'int64' for counts, 'float64' for means and shares (the types of the feature tables)."""
    return "int64" if "_nb_tx_" in name else "float64"


def snapshot_day_for(timestamp: dt.datetime) -> dt.date:
    """The snapshot a row timestamped ``timestamp`` is scored with (the last one at or before it)."""
    if timestamp.tzinfo is not None:
        timestamp = timestamp.astimezone(dt.UTC).replace(tzinfo=None)
    return timestamp.date() - dt.timedelta(days=1)


def derive_recent(
    ids: Sequence[int], epochs: Sequence[int], amounts: Sequence[float], tx_id: int, tx_epoch: int
) -> dict[str, float]:
    """Short-window features of transaction ``tx_id`` at ``tx_epoch`` (epoch seconds) from the
    customer's recent transactions (ids, epoch seconds, amounts): those in ``[t - 1 h, t)`` other
    than the transaction itself. The per-request form of :func:`compute_recent_activity`."""
    count, total = 0, 0.0
    lo = tx_epoch - RECENT_WINDOW_SECONDS
    for i, e, a in zip(ids, epochs, amounts, strict=False):
        if i != tx_id and lo <= e < tx_epoch:
            count += 1
            total += a
    return {"customer_nb_tx_1h": float(count), "customer_amount_1h": float(total)}


def day_start(epoch: int) -> int:
    """The first second of the UTC day of ``epoch`` (epoch seconds)."""
    return epoch - epoch % 86_400


def derive_today(
    ids: Sequence[int],
    epochs: Sequence[int],
    amounts: Sequence[float],
    tx_id: int,
    tx_epoch: int,
    tx_amount: float,
) -> dict[str, float]:
    """The customer's activity of the transaction's UTC day up to it, **itself included**: its
    transactions in ``[day start, t)`` other than ``tx_id``, plus the transaction (so the count is
    at least 1). Transactions in the same second as ``t`` are not counted, as for the last hour.
    The per-request form of the running window of :func:`compute_windows_at_tx`."""
    count, total = 0, 0.0
    lo = day_start(tx_epoch)
    for i, e, a in zip(ids, epochs, amounts, strict=False):
        if i != tx_id and lo <= e < tx_epoch:
            count += 1
            total += a
    return {"customer_nb_tx_today": float(count + 1), "customer_amount_today": float(total + tx_amount)}


def windows_at_transaction(
    snapshot: Mapping[str, Any], today_count: Any, today_amount: Any, tx_amount: Any
) -> dict[str, Any]:
    """THE definition of fraud_v3's customer windows ending at the transaction, shared by the batch
    job (Spark columns), the scoring service (NumPy columns of a micro-batch) and the reference
    (floats): for ``w`` in :data:`WINDOWS`, the previous day's snapshot (days ``D-w .. D-1``:
    ``customer_nb_tx_{w}d``, ``customer_avg_amount_{w}d``, 0 for a customer without one) plus the
    day's activity up to and including the transaction (:func:`derive_today`):

    * ``customer_nb_tx_{w}d_at_tx``      = snapshot count + today's count
    * ``customer_avg_amount_{w}d_at_tx`` = (snapshot mean x snapshot count + today's amount) / that
    * ``customer_amount_ratio_{w}d_at_tx`` = the transaction's amount / (that mean + 1)

    The count is at least 1 (the transaction itself) and amounts are >= 0, so neither division needs
    a guard, and the same operations in the same order give the same doubles on every path."""
    out: dict[str, Any] = {}
    for w in WINDOWS:
        n = snapshot[f"customer_nb_tx_{w}d"]
        count = n + today_count
        out[f"customer_nb_tx_{w}d_at_tx"] = count
        mean = (snapshot[f"customer_avg_amount_{w}d"] * n + today_amount) / count
        out[f"customer_avg_amount_{w}d_at_tx"] = mean
        out[f"customer_amount_ratio_{w}d_at_tx"] = tx_amount / (mean + 1.0)
    return out


_days = FT.days_between


# --------------------------------------------------------------------------------------------
# pure computation: Spark DataFrames in, Spark DataFrames out
# --------------------------------------------------------------------------------------------
def _typed_transactions(transactions, lo: dt.datetime | dt.date, hi: dt.datetime):
    """The lake columns the feature jobs read, typed, of ``lo <= tx_datetime < hi``, with ``day``."""
    from pyspark.sql import functions as F

    return (
        transactions.select(
            F.col("transaction_id").cast("bigint").alias("transaction_id"),
            F.col("tx_datetime").cast("timestamp").alias("tx_datetime"),
            F.col("customer_id").cast("bigint").alias("customer_id"),
            F.col("terminal_id").cast("bigint").alias("terminal_id"),
            F.col("tx_amount").cast("double").alias("tx_amount"),
        )
        .where((F.col("tx_datetime") >= F.lit(lo)) & (F.col("tx_datetime") < F.lit(hi)))
        .withColumn("day", F.to_date("tx_datetime"))
    )


def _customer_windows(tx, first_day: dt.date, start: dt.date, end: dt.date):
    """Customer spending per snapshot day ``start..end`` (``customer_id, day``, :data:`CUSTOMER_FEATURES`)
    from typed transactions covering ``first_day .. end`` (``first_day <= start - 30``)."""
    from pyspark.sql import functions as F

    from jobs.platform.windows import rolling_sums

    cust_daily = tx.groupBy("customer_id", "day").agg(
        F.count(F.lit(1)).alias("n"), F.sum("tx_amount").alias("amount")
    )
    cust = rolling_sums(cust_daily, ["customer_id"], ["n", "amount"], WINDOWS, first_day, start, end)
    return cust.withColumns(
        {
            name: expr
            for w in WINDOWS
            for name, expr in (
                (f"customer_nb_tx_{w}d", F.col(f"n_{w}d")),
                (
                    f"customer_avg_amount_{w}d",
                    F.when(F.col(f"n_{w}d") > 0, F.col(f"amount_{w}d") / F.col(f"n_{w}d")).otherwise(
                        F.lit(0.0)
                    ),
                ),
            )
        }
    ).select("customer_id", "day", *CUSTOMER_FEATURES)


def compute_features(transactions, labels, start: dt.date, end: dt.date, delay: int):
    """Snapshots of days ``start..end`` from lake ``transactions`` and ``labels`` DataFrames.

    ``transactions`` must cover days ``start-delay-30 .. end`` and ``labels`` every report up to
    ``end`` for them; extra rows (later days, later reports) are ignored, so the result never
    depends on data dated after a snapshot. Returns ``{"customer": df, "terminal": df}`` with
    columns ``<entity>_id, event_timestamp, <features>, date`` (``date`` = snapshot day).
    """
    from pyspark.sql import functions as F

    from jobs.platform.windows import calendar, rolling_sums, snapshot_rows

    spark = transactions.sparkSession
    start, end = as_date(start), as_date(end)
    first_day = start - dt.timedelta(days=delay + LOOKBACK_DAYS)
    end_ts = snapshot_timestamp(end).replace(tzinfo=None)

    tx = _typed_transactions(transactions, first_day, end_ts)
    snapshots = calendar(spark, start, end).select(F.col("day").alias("snap"))

    def finish(df, key: str, features: list[str]):
        return snapshot_rows(
            df, [key], {f: "bigint" if feature_dtype(f) == "int64" else "double" for f in features}
        )

    # --- customers: windows ending at the end of the snapshot day ------------------------
    customer = finish(_customer_windows(tx, first_day, start, end), "customer_id", CUSTOMER_FEATURES)

    # --- terminals: windows shifted back by the label delay -------------------------------
    term_daily = tx.groupBy("terminal_id", "day").agg(F.count(F.lit(1)).alias("n"))
    term = rolling_sums(term_daily, ["terminal_id"], ["n"], WINDOWS, first_day, start, end, shift=delay)
    term = term.withColumnsRenamed({f"n_{w}d": f"terminal_nb_tx_{w}d" for w in WINDOWS})

    # frauds known at each snapshot: range join of the labelled transactions with the calendar
    known = (
        labels.select(
            F.col("transaction_id").cast("bigint").alias("transaction_id"),
            F.col("reported_at").cast("timestamp").alias("reported_at"),
        )
        .where(F.col("reported_at") < F.lit(end_ts))
        .groupBy("transaction_id")
        .agg(F.to_date(F.min("reported_at")).alias("known_day"))
        .join(tx.select("transaction_id", "terminal_id", "day"), "transaction_id")
    )
    lag = F.datediff(F.col("snap"), F.col("day")) - delay  # 0 = the most recent day of the window
    frauds = (
        known.join(
            snapshots,
            (F.col("known_day") <= F.col("snap"))
            & (F.col("day") <= F.date_sub(F.col("snap"), delay))
            & (F.col("day") > F.date_sub(F.col("snap"), delay + max(WINDOWS))),
        )
        .groupBy("terminal_id", F.col("snap").alias("day"))
        .agg(*[F.sum(F.when(lag < w, 1).otherwise(0)).alias(f"fraud_{w}d") for w in WINDOWS])
    )
    term = term.join(frauds, ["terminal_id", "day"], "left").fillna(
        0, subset=[f"fraud_{w}d" for w in WINDOWS]
    )
    term = term.withColumns(
        {
            f"terminal_risk_{w}d": F.when(
                F.col(f"terminal_nb_tx_{w}d") > 0, F.col(f"fraud_{w}d") / F.col(f"terminal_nb_tx_{w}d")
            ).otherwise(F.lit(0.0))
            for w in WINDOWS
        }
    )
    terminal = finish(term, "terminal_id", TERMINAL_FEATURES)
    return {"customer": customer, "terminal": terminal}


def compute_recent_activity(transactions, start: dt.date, end: dt.date):
    """Per transaction of days ``start..end``: the customer's activity in the hour before it.

    ``transactions`` must cover the last hour of ``start - 1`` too. A range window per customer over
    the transaction time in epoch seconds, frame ``[t - 3600, t - 1]`` = ``[t - 1 h, t)``: the
    transaction itself and any other in the same second are outside it (see :func:`derive_recent`).
    Returns ``transaction_id, customer_id, event_timestamp (= tx_datetime), customer_nb_tx_1h,
    customer_amount_1h, date`` (``date`` = the transaction's day).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    start, end = as_date(start), as_date(end)
    lo = dt.datetime(start.year, start.month, start.day) - dt.timedelta(seconds=RECENT_WINDOW_SECONDS)
    hi = snapshot_timestamp(end).replace(tzinfo=None)
    tx = transactions.select(
        F.col("transaction_id").cast("bigint").alias("transaction_id"),
        F.col("customer_id").cast("bigint").alias("customer_id"),
        F.col("tx_datetime").cast("timestamp").alias("tx_datetime"),
        F.col("tx_amount").cast("double").alias("tx_amount"),
    ).where((F.col("tx_datetime") >= F.lit(lo)) & (F.col("tx_datetime") < F.lit(hi)))
    epoch = F.unix_seconds(F.col("tx_datetime"))  # whole seconds, like the stream path
    frame = Window.partitionBy("customer_id").orderBy(epoch).rangeBetween(-RECENT_WINDOW_SECONDS, -1)
    # the window sees the look-back hour before ``start``; only the days asked for are returned
    windowed = tx.select(
        "transaction_id",
        "customer_id",
        F.col("tx_datetime").alias("event_timestamp"),
        F.count(F.lit(1)).over(frame).cast("bigint").alias("customer_nb_tx_1h"),
        F.coalesce(F.sum("tx_amount").over(frame), F.lit(0.0)).cast("double").alias("customer_amount_1h"),
    )
    return windowed.where(F.to_date("event_timestamp") >= F.lit(start)).withColumn(
        "date", F.date_format("event_timestamp", "yyyy-MM-dd")
    )


def compute_windows_at_tx(transactions, start: dt.date, end: dt.date):
    """Per transaction of days ``start..end``: fraud_v3's customer windows ending at the transaction.

    ``transactions`` must cover days ``start - 31 .. end``. The previous day's customer snapshot
    (:func:`compute_features`' customer windows of day ``D-1``, 0 for a customer without one) is
    joined to each transaction of day ``D``; the day's activity up to it is a running range window
    per (customer, day) over epoch seconds, frame ``[day start, t - 1]`` plus the transaction itself
    (:func:`derive_today`); :func:`windows_at_transaction` combines them, as the scoring service does.
    Returns ``transaction_id, customer_id, event_timestamp (= tx_datetime)``, :data:`CURRENT_FEATURES`
    and ``date`` (the transaction's day)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    start, end = as_date(start), as_date(end)
    first_day = start - dt.timedelta(days=1 + LOOKBACK_DAYS)
    tx = _typed_transactions(transactions, first_day, snapshot_timestamp(end).replace(tzinfo=None))
    one = dt.timedelta(days=1)
    previous = _customer_windows(tx, first_day, start - one, end - one).select(
        "customer_id", F.date_add("day", 1).alias("day"), *CUSTOMER_FEATURES
    )
    epoch = F.unix_seconds(F.col("tx_datetime"))  # whole seconds, like the stream path
    frame = (
        Window.partitionBy("customer_id", "day").orderBy(epoch).rangeBetween(Window.unboundedPreceding, -1)
    )
    today = tx.where(F.col("day") >= F.lit(start)).select(
        "transaction_id",
        "customer_id",
        "day",
        F.col("tx_datetime").alias("event_timestamp"),
        "tx_amount",
        (F.count(F.lit(1)).over(frame) + 1).cast("bigint").alias("customer_nb_tx_today"),
        (F.coalesce(F.sum("tx_amount").over(frame), F.lit(0.0)) + F.col("tx_amount")).alias(
            "customer_amount_today"
        ),
    )
    joined = today.join(previous, ["customer_id", "day"], "left").fillna(0, subset=CUSTOMER_FEATURES)
    windows = windows_at_transaction(
        {f: F.col(f) for f in CUSTOMER_FEATURES},
        F.col("customer_nb_tx_today"),
        F.col("customer_amount_today"),
        F.col("tx_amount"),
    )
    return joined.select(
        "transaction_id",
        "customer_id",
        "event_timestamp",
        *TODAY_FEATURES,
        *[
            windows[f].cast("bigint" if feature_dtype(f) == "int64" else "double").alias(f)
            for f in AT_TX_FEATURES
        ],
        F.date_format("event_timestamp", "yyyy-MM-dd").alias("date"),
    )


# --------------------------------------------------------------------------------------------
# the job: read the lake, compute, write partitions atomically
# --------------------------------------------------------------------------------------------
@dataclass
class BuildResult:
    start: str
    end: str
    transactions_read: int
    labels_read: int
    rows: dict[str, int]
    seconds: float

    def as_dict(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "transactions_read": self.transactions_read,
            "labels_read": self.labels_read,
            "rows": self.rows,
            "seconds": round(self.seconds, 2),
        }


def _empty_fields(table: str) -> list:
    """The schema of an empty partition of ``table`` (a day with no active entity / no transaction)."""
    import pyarrow as pa

    fields = [
        pa.field(TABLE_KEYS[table], pa.int64()),
        pa.field("event_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
    return fields + [
        pa.field(c, pa.int64() if c.endswith("_id") or feature_dtype(c) == "int64" else pa.float64())
        for c in TABLE_COLUMNS[table]
    ]


def snapshot_horizon_days(settings: Settings) -> int:
    """How many days after a lake day its data still enters a snapshot: a change to transactions or
    labels of day E changes the snapshots of E .. E + horizon (the longest window, shifted by the delay)."""
    return settings.case.label_delay_days + LOOKBACK_DAYS


LAKE_INPUTS: tuple[str, ...] = ("transactions", "labels")


def snapshot_inputs(
    day: str | dt.date, settings: Settings | None = None, cache: dict | None = None
) -> dict[str, dict[str, str]]:
    """What snapshot ``day`` is computed from: the digest of every lake partition of ``day - horizon ..
    day`` that exists, per dataset (the snapshot reads exactly that range)."""
    settings = settings or get_settings()
    return FT.snapshot_inputs(
        StorageLayout(settings), as_date(day), LAKE_INPUTS, snapshot_horizon_days(settings), cache
    )


def stale_days(settings: Settings | None = None, changed_after: float | None = None) -> list[dt.date]:
    """The snapshot days whose tables are missing or out of date with the lake, oldest first
    (:func:`jobs.platform.feature_tables.stale_days`: a day with transactions or a built snapshot
    whose lake inputs differ from those it was built from, or that was never built)."""
    settings = settings or get_settings()
    return FT.stale_days(
        StorageLayout(settings),
        anchor="transactions",
        datasets=LAKE_INPUTS,
        horizon=snapshot_horizon_days(settings),
        changed_after=changed_after,
    )


record_inputs = FT.record_inputs


def build_features(
    start: str | dt.date,
    end: str | dt.date | None = None,
    settings: Settings | None = None,
    spark=None,
) -> BuildResult:
    """Compute and write the snapshots and the per-transaction recent activity of days
    ``start..end`` (inclusive); idempotent."""
    from pyspark.sql import functions as F

    from jobs.fraud.schema import LABEL_SCHEMA, TRANSACTION_SCHEMA
    from jobs.platform.spark import get_spark

    settings = settings or get_settings()
    layout = StorageLayout(settings)
    start, end = FT.build_range(start, end)
    log = get_logger("build_features", f"{start}..{end}")
    spark = spark or get_spark("build-features", settings)
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    delay = settings.case.label_delay_days
    t0 = time.monotonic()

    # what the snapshots are computed from, read before the lake is: a partition rewritten during the build
    # leaves its snapshots stale rather than recorded as up to date
    cache: dict[Path, str | None] = {}
    inputs = {day: snapshot_inputs(day, settings, cache) for day in _days(start, end)}
    first_day = start - dt.timedelta(days=max(delay, 1) + LOOKBACK_DAYS)  # at_tx: the snapshot of start-1
    transactions = FT.read_lake(spark, layout, "transactions", first_day, end, TRANSACTION_SCHEMA)
    transactions = transactions.where(F.to_date("tx_datetime") <= F.lit(end)).cache()
    labels = FT.read_lake(spark, layout, "labels", first_day, end, LABEL_SCHEMA).cache()
    n_tx, n_labels = transactions.count(), labels.count()
    log.info("lake read", transactions=n_tx, labels=n_labels, first_day=str(first_day))
    if not layout.partition_paths("transactions", end, end):
        log.warning("no lake partition for the last snapshot day", day=str(end))

    tables = compute_features(transactions, labels, start, end, delay)
    tables[RECENT_VIEW] = compute_recent_activity(transactions, start, end)
    tables[AT_TX_VIEW] = compute_windows_at_tx(transactions, start, end)
    try:
        rows = FT.write_tables(
            tables,
            layout,
            _days(start, end),
            sort_keys={view: [key] for view, key in TABLE_KEYS.items()},
            empty_fields=_empty_fields,
            log=log,
        )
        for day, record in inputs.items():
            FT.record_inputs(layout, day, record)
    finally:
        transactions.unpersist()
        labels.unpersist()
    result = BuildResult(str(start), str(end), n_tx, n_labels, rows, time.monotonic() - t0)
    log.info("features built", **result.as_dict())
    return result
