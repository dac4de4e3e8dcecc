"""Fraud's training and scoring frames, assembled from the platform's Feast plumbing.

* :data:`FEATURE_COLUMNS` the model inputs in order; :func:`model_inputs` derives the same list from
  the registered feature service (what the core uses), a test keeps the two equal;
* :func:`request_feature_values` the ONE implementation of the request-time features (arrays: the
  scoring service's form), :func:`request_features` the same on a frame (training, batch scoring), :data:`FEATURE_DEFAULTS` the values of a store feature with no row;
* :func:`labelled_transactions` lake transactions with their matured chargeback label;
* :func:`get_training_set` the point-in-time correct training set of a date range,
  :func:`scoring_frame` the same features for a day's transactions (batch), and
  ``jobs.fraud.online.get_online_features`` for live requests (the scoring service's read), with the same defaults.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.fraud.features import (
    AT_TX_VIEW,
    CURRENT_FEATURES,
    CUSTOMER_FEATURES,
    ENTITY_VIEWS,
    RECENT_FEATURES,
    RECENT_VIEW,
    TERMINAL_FEATURES,
    feature_dtype,
    snapshot_day_for,
)
from jobs.platform import feature_store as fs
from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger
from jobs.platform.storage import StorageLayout, as_date

PASSTHROUGH_FEATURES: list[str] = ["tx_amount"]  # request fields the model reads as they are

REQUEST_FEATURES: list[str] = ["tx_during_weekend", "tx_during_night"]
SNAPSHOT_FEATURES: list[str] = CUSTOMER_FEATURES + TERMINAL_FEATURES
FEAST_FEATURES: list[str] = SNAPSHOT_FEATURES + RECENT_FEATURES + CURRENT_FEATURES
FEATURE_COLUMNS: list[str] = [*PASSTHROUGH_FEATURES, *REQUEST_FEATURES, *FEAST_FEATURES]
"""Model inputs, in order: the amount, request-time features, then the ``fraud_v3`` features (daily
snapshots, the customer's last hour, then its windows ending at the transaction). A model trained on
an older service reads a prefix-free subset (``model_inputs`` of that service)."""

FEATURE_DEFAULTS: dict[str, int | float] = {
    name: (0 if feature_dtype(name) == "int64" else 0.0) for name in FEAST_FEATURES
}
"""Value of a store feature when the entity has no snapshot (no activity in the look-back, or a
never-seen id): 0 counts, 0.0 means/risks. Training and serving fill with the same values."""


def feature_defaults() -> dict[str, int | float]:
    """:data:`FEATURE_DEFAULTS` (``FeatureSpec.defaults``)."""
    return dict(FEATURE_DEFAULTS)


ENTITY_COLUMNS: list[str] = ["customer_id", "terminal_id"]
TRAINING_COLUMNS: list[str] = [
    "transaction_id",
    "customer_id",
    "terminal_id",
    "tx_datetime",
    "tx_amount",
    "tx_fraud",
    *FEATURE_COLUMNS[1:],
]
NIGHT_END_HOUR = 6  # a transaction before 06:00 UTC is a night transaction


def as_utc_naive(values: pd.Series, errors: str = "raise") -> pd.Series:
    ts = pd.to_datetime(values, utc=True, errors=errors, format="ISO8601")
    return ts.dt.tz_convert("UTC").dt.tz_localize(None)


def request_feature_values(epoch_seconds: np.ndarray) -> dict[str, np.ndarray]:
    """THE definition of the request-time features, as arrays: ``tx_during_weekend`` (Saturday or
    Sunday) and ``tx_during_night`` (hour < 6), both 0/1 int64, from the transactions' UTC times in
    integer epoch seconds. Training and batch frames call it through :func:`request_features`, the
    scoring service directly (``jobs.fraud.online.request_columns``): no pandas on the request path."""
    seconds = np.asarray(epoch_seconds, dtype="int64")
    days = np.floor_divide(seconds, 86_400)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    hour = np.floor_divide(seconds - days * 86_400, 3_600)
    return {
        "tx_during_weekend": (weekday >= 5).astype("int64"),
        "tx_during_night": (hour < NIGHT_END_HOUR).astype("int64"),
    }


def request_features(df: pd.DataFrame) -> pd.DataFrame:
    """Add the request-time features (:func:`request_feature_values`) computed from ``tx_datetime``
    in UTC. Returns a new frame; the input is not modified."""
    if "tx_datetime" not in df.columns:
        raise KeyError("tx_datetime: missing (rule: request features need the transaction time)")
    ts = as_utc_naive(df["tx_datetime"], errors="coerce")
    if ts.isna().any():
        bad = df.loc[ts.isna(), "tx_datetime"].iloc[0]
        raise ValueError(f"tx_datetime: value {bad!r} is not a timestamp (rule: ISO-8601 datetime)")
    out = df.copy()
    epochs = ts.to_numpy(dtype="datetime64[s]").astype("int64")
    for name, values in request_feature_values(epochs).items():
        out[name] = values
    return out


def fill_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """Replace missing store features by :data:`FEATURE_DEFAULTS` and fix their dtypes."""
    out = df.copy()
    for name, default in FEATURE_DEFAULTS.items():
        col = out[name] if name in out.columns else pd.Series(default, index=out.index)
        col = pd.to_numeric(col, errors="raise").fillna(default)
        out[name] = col.astype(feature_dtype(name))
    return out


def model_inputs(service) -> list[str]:
    """The model's input columns for a registered Feast feature service: the pass-through request
    fields, the request-time features, then the service's features in projection order."""
    return [
        *PASSTHROUGH_FEATURES,
        *REQUEST_FEATURES,
        *(f.name for p in service.feature_view_projections for f in p.features),
    ]


def historical_features(
    entity_df: pd.DataFrame, settings: Settings | None = None, store=None, complete: bool = False
) -> pd.DataFrame:
    """:func:`jobs.platform.feature_store.historical_features` with fraud's defaults filled in."""
    return fs.historical_features(entity_df, settings, store=store, complete=complete, fill=fill_defaults)


def labelled_transactions(
    start: str | dt.date, end: str | dt.date, settings: Settings | None = None
) -> pd.DataFrame:
    """Lake transactions of days ``start..end`` with ``tx_fraud``: 1 iff a chargeback for the
    transaction was reported by the end of day ``tx_day + label_delay_days``."""
    settings = settings or get_settings()
    layout = StorageLayout(settings)
    start, end = as_date(start), as_date(end)
    delay = settings.case.label_delay_days
    tx = fs.read_lake_frame(layout, "transactions", start, end)
    if tx.empty:
        raise ValueError(f"transactions: no lake partition in {start}..{end} (rule: ingest first)")
    tx = tx[["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"]].copy()
    tx["tx_datetime"] = as_utc_naive(tx["tx_datetime"])
    labels = fs.read_lake_frame(layout, "labels", start, end + dt.timedelta(days=delay))
    if labels.empty:
        labels = pd.DataFrame({"transaction_id": pd.Series(dtype="int64"), "reported_at": []})
    labels = labels[["transaction_id", "reported_at"]].copy()
    labels["reported_at"] = as_utc_naive(labels["reported_at"])
    labels = labels.groupby("transaction_id", as_index=False)["reported_at"].min()
    tx = tx.merge(labels, on="transaction_id", how="left")
    deadline = tx["tx_datetime"].dt.normalize() + pd.Timedelta(days=delay + 1)
    tx["tx_fraud"] = (tx["reported_at"].notna() & (tx["reported_at"] < deadline)).astype("int64")
    return tx.drop(columns="reported_at")


def get_training_set(
    start: str | dt.date, end: str | dt.date, settings: Settings | None = None
) -> pd.DataFrame:
    """Point-in-time correct training set of the transactions of days ``start..end``.

    Columns: transaction_id, customer_id, terminal_id, tx_datetime (UTC, naive), tx_amount,
    tx_fraud, then the request-time and feature service features (:data:`FEATURE_COLUMNS` order after
    tx_amount). Each row gets, through Feast's point-in-time join, the latest snapshot whose
    ``event_timestamp <= tx_datetime`` within the views' TTL (the previous day's), missing values
    filled with :data:`FEATURE_DEFAULTS` like serving does.

    Labels: callers must only ask for windows whose labels have matured, i.e. whose days
    ``end + label_delay_days`` have been ingested; otherwise recent frauds are still labelled 0
    (a warning is logged when the label partitions do not reach that far).
    """
    settings = settings or get_settings()
    layout = StorageLayout(settings)
    log = get_logger("feature_store")
    start, end = as_date(start), as_date(end)
    mature = end + dt.timedelta(days=settings.case.label_delay_days)
    label_days = layout.partitions("labels")
    if not label_days or label_days[-1] < mature:
        log.warning(
            "labels not mature",
            end=str(end),
            needs_labels_until=str(mature),
            latest_labels=str(label_days[-1]) if label_days else None,
        )
    tx = labelled_transactions(start, end, settings)
    t0 = time.monotonic()
    df = historical_features(tx.assign(event_timestamp=tx["tx_datetime"]), settings=settings, complete=True)
    df = request_features(df.drop(columns="event_timestamp"))
    df["tx_datetime"] = as_utc_naive(df["tx_datetime"])
    df = df.sort_values(["tx_datetime", "transaction_id"], kind="stable").reset_index(drop=True)
    log.info(
        "training set",
        start=str(start),
        end=str(end),
        rows=len(df),
        frauds=int(df["tx_fraud"].sum()),
        seconds=round(time.monotonic() - t0, 2),
    )
    return df[TRAINING_COLUMNS]


def scoring_frame(transactions: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """Point-in-time features of each transaction to score (batch), from the Feast offline store.

    The day's transactions are the entity frame (``event_timestamp = tx_datetime``), joined through
    :func:`historical_features` - the same function the training set uses (one Feast retrieval per
    feature view of ``settings.case.feature_service``, store defaults where no snapshot is valid, so rows
    are never lost) - then the shared request-time features are added. Returns the same rows sorted
    by transaction_id with every column of :data:`FEATURE_COLUMNS`."""
    from jobs.platform.batch_predict import BatchPredictError

    settings = settings or get_settings()
    entity_df = transactions.assign(
        event_timestamp=pd.to_datetime(transactions["tx_datetime"]).dt.tz_localize("UTC")
    )
    frame = historical_features(entity_df, settings, complete=True)
    if len(frame) != len(transactions) or frame["transaction_id"].duplicated().any():
        raise BatchPredictError(
            f"point-in-time join returned {len(frame)} rows for {len(transactions)} transactions; "
            "rule: exactly one feature row per transaction"
        )
    frame = request_features(frame.drop(columns="event_timestamp"))
    missing = [c for c in FEATURE_COLUMNS if c not in frame.columns]
    if missing:
        raise BatchPredictError(f"feature service {settings.case.feature_service!r}: missing {missing}")
    return frame.sort_values("transaction_id", kind="stable").reset_index(drop=True)


SCORING_COLUMNS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"]


def scoring_rows(day: dt.date, settings: Settings | None = None) -> pd.DataFrame:
    """The transactions batch scoring scores for day ``day``: the lake partition of D."""
    path = StorageLayout(settings or get_settings()).path("transactions", day)
    if not path.exists():
        raise FileNotFoundError(f"transactions partition {path} does not exist")
    return pd.read_parquet(path, columns=SCORING_COLUMNS)


def scoring_inputs(day: dt.date, layout: StorageLayout) -> list[Path]:
    """What scoring day D needs: the lake partition of D and the feature snapshots its rows are
    joined with point-in-time: the snapshot of D-1 (``event_timestamp = D 00:00``) of every entity
    view, and the per-transaction tables of D (the customers' last hour before each transaction, their
    windows ending at it)."""
    snapshot_day = snapshot_day_for(dt.datetime(day.year, day.month, day.day, 12))
    wanted = [layout.path("transactions", day)]
    wanted += [layout.path("features", snapshot_day, view) for view in ENTITY_VIEWS]
    wanted += [layout.path("features", day, view) for view in (RECENT_VIEW, AT_TX_VIEW)]
    return wanted
