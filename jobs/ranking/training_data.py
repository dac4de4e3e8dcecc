"""The ranker's training and scoring frames, assembled from the platform's Feast plumbing.

A row is one logged impression: the request (``request_id``: the query group), the user, the item,
its 0-based ``slot`` and the request's time and device. Its label ``clicked`` is 1 when a click on
the impression arrived by the end of day ``shown_at + label_delay_days`` (clicks arrive within
hours; the delay is what ingestion needs to have seen them all). ``purchased`` is kept beside it.

Features (:func:`model_inputs`, from the registered feature service ``ranker_v1``):

* the service's point-in-time features of the user, the item, the user x item-category affinity
  (the snapshots of the day before the request) and the item as the catalogue described it at the
  request's time (its price), through Feast's point-in-time join (entity frame: the impressions
  with ``event_timestamp = shown_at`` and the item's ``category``, which never changes);
* the request-time features of :func:`request_features`, the ONE implementation (training, batch
  and, in part 2, serving): hour of day, weekend, device and the item's age at the request.

The catalogue's identifiers (category, brand) and the raw launch time are join keys and inputs of
the request features, not model inputs. Missing store features take :data:`FEATURE_DEFAULTS`
(counts 0, the smoothed CTRs their prior) exactly like serving.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.platform import feature_store as fs
from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger
from jobs.platform.storage import StorageLayout, as_date
from jobs.ranking.features import (
    CTR_PRIOR,
    ITEM_ATTRIBUTES,
    ITEM_FEATURES,
    USER_CATEGORY_FEATURES,
    USER_FEATURES,
)

REQUEST_FEATURES: list[str] = ["hour", "is_weekend", "device_mobile", "device_tablet", "item_age_days"]
NOT_MODEL_INPUTS: frozenset[str] = frozenset({"category", "brand", "launched_at_s"})
LABEL = "clicked"
TIME = "shown_at"
KEY_COLUMNS: list[str] = [
    "impression_id",
    "request_id",
    "user_id",
    "item_id",
    "category",
    "slot",
    "device",
    "shown_at",
]

_PRIOR_CTR = CTR_PRIOR[0] / (CTR_PRIOR[0] + CTR_PRIOR[1])
FEATURE_DEFAULTS: dict[str, float] = {
    **{n: (_PRIOR_CTR if n.startswith("item_ctr") else 0.0) for n in USER_FEATURES + ITEM_FEATURES},
    **{n: (_PRIOR_CTR if n == "uc_ctr_30d" else 0.0) for n in USER_CATEGORY_FEATURES},
    **{n: 0.0 for n in ITEM_ATTRIBUTES},
}
"""Value of a store feature when the entity has no snapshot (no activity in the look-back, or a
never-seen id): 0 counts and shares, the prior's CTR for the smoothed CTRs."""


def feature_defaults() -> dict[str, float]:
    """:data:`FEATURE_DEFAULTS` (``FeatureSpec.defaults``)."""
    return dict(FEATURE_DEFAULTS)


def model_inputs(service) -> list[str]:
    """The ranker's input columns for a registered feature service: the request-time features, then the
    service's features in projection order (without the catalogue's identifiers)."""
    names = [f.name for p in service.feature_view_projections for f in p.features]
    return [*REQUEST_FEATURES, *(n for n in names if n not in NOT_MODEL_INPUTS)]


def _utc_naive(values: pd.Series) -> pd.Series:
    ts = pd.to_datetime(values, utc=True, errors="raise")
    return ts.dt.tz_convert("UTC").dt.tz_localize(None)


def request_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``hour`` (0-23, UTC), ``is_weekend``, ``device_mobile``, ``device_tablet`` and
    ``item_age_days`` (days since the item's launch, ``launched_at_s``, at ``shown_at``; 0 when the
    launch is unknown) to a frame of requests x items. Returns a new frame."""
    for column in ("shown_at", "device", "launched_at_s"):
        if column not in frame.columns:
            raise KeyError(f"{column}: missing (rule: request features need shown_at, device, launched_at_s)")
    ts = _utc_naive(frame["shown_at"])
    out = frame.copy()
    columns = request_feature_arrays(
        ts.astype("datetime64[s]").astype("int64").to_numpy(),
        out["device"].astype(str).to_numpy(),
        pd.to_numeric(out["launched_at_s"], errors="coerce").to_numpy(dtype="float64"),
    )
    for name, values in columns.items():
        out[name] = values
    return out


def request_feature_arrays(
    epoch_s: np.ndarray, device: np.ndarray, launched_at_s: np.ndarray
) -> dict[str, np.ndarray]:
    """:data:`REQUEST_FEATURES` from the request times (UTC epoch seconds), devices and the items'
    launch times (epoch seconds; NaN or <= 0: unknown, age 0): the one definition of the training
    set (:func:`request_features`) and of serving (``jobs.ranking.serving``)."""
    epoch_s = np.asarray(epoch_s, dtype="int64")
    days = np.floor_divide(epoch_s, 86_400)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    launched = np.asarray(launched_at_s, dtype="float64")
    age = np.where(np.isfinite(launched) & (launched > 0), (epoch_s - launched) / 86_400.0, 0.0)
    return {
        "hour": (np.floor_divide(epoch_s, 3_600) % 24).astype("int64"),
        "is_weekend": (weekday >= 5).astype("int64"),
        "device_mobile": (device == "mobile").astype("int64"),
        "device_tablet": (device == "tablet").astype("int64"),
        "item_age_days": np.maximum(age, 0.0),
    }


def fill_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for name, default in FEATURE_DEFAULTS.items():
        column = out[name] if name in out.columns else pd.Series(default, index=out.index)
        out[name] = pd.to_numeric(column, errors="raise").fillna(default).astype("float64")
    return out


def catalogue(layout: StorageLayout, end: dt.date) -> pd.DataFrame:
    """Every item as of the end of ``end`` (its last change, from the items lake): item_id, category,
    brand, price, sponsored, launched_at."""
    items = fs.read_lake_frame(layout, "items", dt.date(1970, 1, 1), end)
    if items.empty:
        raise ValueError(f"items: no lake partition up to {end} (rule: ingest the catalogue first)")
    items = items.sort_values(["updated_at", "change_id"], kind="stable").drop_duplicates(
        "item_id", keep="last"
    )
    items["launched_at"] = pd.to_datetime(items["launched_at"], utc=True).dt.tz_localize(None)
    items = items.astype({"category": "int64", "brand": "int64", "sponsored": "int64"})
    return items[["item_id", "category", "brand", "price", "sponsored", "launched_at"]].reset_index(drop=True)


def item_categories(layout: StorageLayout, end: dt.date) -> pd.DataFrame:
    """``item_id -> category`` of every item launched by the end of ``end`` (a category never changes)."""
    return catalogue(layout, end)[["item_id", "category"]].astype("int64")


def labelled_impressions(
    start: str | dt.date, end: str | dt.date, settings: Settings | None = None
) -> pd.DataFrame:
    """Lake impressions of days ``start..end`` with ``clicked`` and ``purchased`` as known at the end
    of day ``shown_at + label_delay_days``, and the item's category."""
    settings = settings or get_settings()
    layout = StorageLayout(settings)
    start, end = as_date(start), as_date(end)
    delay = settings.case.label_delay_days
    imp = fs.read_lake_frame(layout, "impressions", start, end)
    if imp.empty:
        raise ValueError(f"impressions: no lake partition in {start}..{end} (rule: ingest first)")
    imp = imp[["impression_id", "request_id", "user_id", "item_id", "slot", "device", "shown_at"]].copy()
    imp["shown_at"] = _utc_naive(imp["shown_at"])
    deadline = imp["shown_at"].dt.normalize() + pd.Timedelta(days=delay + 1)
    for dataset, time_column, label in (
        ("clicks", "clicked_at", "clicked"),
        ("purchases", "purchased_at", "purchased"),
    ):
        events = fs.read_lake_frame(layout, dataset, start, end + dt.timedelta(days=delay))
        if events.empty:
            events = pd.DataFrame({"impression_id": pd.Series(dtype="int64"), time_column: []})
        first = events.groupby("impression_id")[time_column].min()
        at = imp["impression_id"].map(first)
        at = _utc_naive(at) if at.notna().any() else pd.Series(pd.NaT, index=imp.index)
        imp[label] = (at.notna() & (at < deadline)).astype("int64")
    categories = item_categories(layout, end)
    imp = imp.merge(categories, on="item_id", how="left")
    if imp["category"].isna().any():
        bad = int(imp.loc[imp["category"].isna(), "item_id"].iloc[0])
        raise ValueError(
            f"item_id: value {bad} is not in the items lake (rule: impressions show known items)"
        )
    imp["category"] = imp["category"].astype("int64")
    return imp


def with_features(rows: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The service's point-in-time features and the request features of requests x items rows
    (``user_id``, ``item_id``, ``category``, ``shown_at``, ``device``)."""
    entity = rows.assign(event_timestamp=pd.to_datetime(rows["shown_at"]).dt.tz_localize("UTC"))
    frame = fs.historical_features(entity, settings, complete=True, fill=fill_defaults)
    frame = request_features(frame.drop(columns="event_timestamp"))
    frame["shown_at"] = _utc_naive(frame["shown_at"])
    return frame


def get_training_set(
    start: str | dt.date, end: str | dt.date, settings: Settings | None = None
) -> pd.DataFrame:
    """Point-in-time correct training set of the impressions of days ``start..end``, sorted by time,
    request and slot: :data:`KEY_COLUMNS`, ``clicked``, ``purchased`` and every model input."""
    settings = settings or get_settings()
    log = get_logger("ranking_training_set", f"{as_date(start)}..{as_date(end)}")
    t0 = time.monotonic()
    rows = labelled_impressions(start, end, settings)
    frame = with_features(rows, settings)
    frame = frame.sort_values(["shown_at", "request_id", "slot"], kind="stable").reset_index(drop=True)
    log.info(
        "training set",
        rows=len(frame),
        requests=int(frame["request_id"].nunique()),
        clicks=int(frame[LABEL].sum()),
        seconds=round(time.monotonic() - t0, 2),
    )
    inputs = model_inputs(fs.get_store(settings).get_feature_service(settings.case.feature_service))
    return frame[[*KEY_COLUMNS, LABEL, "purchased", *dict.fromkeys(inputs)]]


# --- batch scoring of a day's logged slates ------------------------------------------------------
SCORING_COLUMNS = ["impression_id", "request_id", "user_id", "item_id", "slot", "device", "shown_at"]


def scoring_rows(day: dt.date, settings: Settings | None = None) -> pd.DataFrame:
    """The impressions of day ``day`` (the logged slates the ranker re-scores)."""
    path = StorageLayout(settings or get_settings()).path("impressions", day)
    if not path.exists():
        raise FileNotFoundError(f"impressions partition {path} does not exist")
    return pd.read_parquet(path, columns=SCORING_COLUMNS)


def scoring_frame(rows: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """The same features as training for rows to score, sorted by impression_id."""
    settings = settings or get_settings()
    rows = rows.copy()
    rows["shown_at"] = _utc_naive(rows["shown_at"])
    day = rows["shown_at"].max().date()
    rows = rows.merge(item_categories(StorageLayout(settings), day), on="item_id", how="left")
    rows["category"] = rows["category"].fillna(-1).astype("int64")
    frame = with_features(rows, settings)
    return frame.sort_values("impression_id", kind="stable").reset_index(drop=True)


def scoring_inputs(day: dt.date, layout: StorageLayout) -> list[Path]:
    """What day D's batch recommendations need: D's impressions (its active users), the snapshots of
    D (the features of the next request, at D+1 00:00) and the catalogue's changes of D."""
    wanted = [layout.path("impressions", day)]
    wanted += [layout.path("features", day, table) for table in ("user", "item", "user_category")]
    wanted.append(layout.path("features", day, "item_attributes"))
    return wanted
