"""The recommendation funnel around the registered ranker: retrieval -> pre-ranking -> ranking ->
re-ranking, and the daily batch job that runs it for every active user.

* **The companion** (:func:`fit_companion`, ``UseCase.companion``): fitted by the training DAG on
  the ranker's training window and logged to the same MLflow run, so the champion alias moves the
  whole funnel at once:

  - ``retrieval/`` the :class:`jobs.ranking.retrieval.Retriever` (ALS factors, the faiss index,
    content, fresh, trending and popular lists) in native formats;
  - ``preranker.ubj`` a small xgboost ranker (:data:`PRE_FEATURES`, shallow trees) that cuts the
    ~500 merged candidates to :data:`PRERANK_KEEP` (plus the best :data:`PRERANK_PER_CATEGORY` of
    each category, so the diversity rule has alternatives) before the full ranker scores them.

* **Batch recommendations** (:func:`recommend`, ``UseCase.batch``; the ``ranking_batch_predict``
  DAG): for day ``D`` the users active on ``D`` get the top ``k`` for their next request (``D+1
  00:00``): the champion's retrieval, the point-in-time features of that moment through the same
  feature service the ranker was trained with (Feast), the pre-ranker, the ranker, then the business
  rules (:mod:`jobs.ranking.rerank`: items bought or ignored too often removed, fresh items boosted,
  category diversity, sponsored slots). Written as ``recommendations/date=D`` (one row per user and
  slot) through a staged directory swapped in atomically, and published to S3 in production.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.platform import feature_store as fs
from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger
from jobs.platform.storage import StorageLayout, as_date, staged_directory
from jobs.ranking.rerank import Rules, rerank
from jobs.ranking.retrieval import RetrievalConfig, Retriever, day_lists
from jobs.ranking.training_data import catalogue, with_features

PRE_FEATURES: list[str] = [
    "item_ctr_7d",
    "item_ctr_30d",
    "item_clicks_7d",
    "uc_click_share_30d",
    "uc_ctr_30d",
    "item_age_days",
]
PRERANK_KEEP = 100
PRERANK_PER_CATEGORY = 3
K = 10
SEEN_DAYS = 7  # an item shown this many days back without a click counts as "seen"
RECOMMENDATION_COLUMNS = [
    "user_id",
    "slot",
    "item_id",
    "score",
    "strategy",
    "category",
    "model_version",
    "generated_at",
]


class RecommendError(RuntimeError):
    """The batch job cannot produce a complete partition (nothing was written)."""


def event_window(layout: StorageLayout, start: dt.date, end: dt.date) -> dict[str, pd.DataFrame]:
    """The lake's impressions, clicks and purchases of days ``start..end`` (events dated in the window)."""
    hi = pd.Timestamp(end) + pd.Timedelta(days=1)
    out = {}
    for name, column, columns in (
        ("impressions", "shown_at", ["user_id", "item_id", "shown_at", "device"]),
        ("clicks", "clicked_at", ["user_id", "item_id", "clicked_at"]),
        ("purchases", "purchased_at", ["user_id", "item_id", "purchased_at"]),
    ):
        frame = fs.read_lake_frame(layout, name, start, end)
        if frame.empty:
            frame = pd.DataFrame({c: pd.Series(dtype="int64") for c in columns})
        frame = frame[columns].copy()
        frame[column] = pd.to_datetime(frame[column], utc=True).dt.tz_localize(None)
        out[name] = frame[frame[column] < hi].reset_index(drop=True)
    return out


# --- the companion, fitted with the ranker ---------------------------------------------------------
def fit_companion(train_df: pd.DataFrame, windows: Any, settings: Settings, folder: Path) -> dict[str, float]:
    """Fit the retrieval stage and the pre-ranker on the training window; write them into ``folder``."""
    import xgboost as xgb

    from jobs.platform.train import ranking_order
    from jobs.ranking.use_case import MODEL

    layout = StorageLayout(settings)
    start, end = as_date(windows.train_start), as_date(windows.train_end)
    events = event_window(layout, start, end)
    items = catalogue(layout, end)
    n_users = int(max(events["impressions"]["user_id"].max(), train_df["user_id"].max())) + 1
    retriever = Retriever.fit(
        events["impressions"], events["clicks"], events["purchases"], items, end, n_users, RetrievalConfig()
    )
    retriever.save(folder / "retrieval")

    ordered = ranking_order(train_df, MODEL)
    groups = ordered.groupby(MODEL.group, sort=False).size().to_numpy()
    pre = xgb.XGBRanker(
        objective="rank:ndcg",
        n_estimators=40,
        max_depth=3,
        learning_rate=0.2,
        tree_method="hist",
        lambdarank_unbiased=True,
        lambdarank_pair_method="topk",
        random_state=0,
        n_jobs=2,
    )
    pre.fit(ordered[PRE_FEATURES].astype("float64"), ordered[MODEL.label], group=groups)
    pre.get_booster().save_model(str(folder / "preranker.ubj"))
    (folder / "funnel.json").write_text(
        json.dumps({"pre_features": PRE_FEATURES, "prerank_keep": PRERANK_KEEP}, indent=1)
    )
    info = retriever.describe()
    return {
        "indexed_items": float(info["indexed_items"]),
        "users_with_history": float(info["users_with_history"]),
        "prerank_features": float(len(PRE_FEATURES)),
    }


def load_companion(folder: Path):
    """(retriever, pre-ranker booster) of a companion folder."""
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(folder / "preranker.ubj"))
    return Retriever.load(folder / "retrieval"), booster


# --- the batch job ---------------------------------------------------------------------------------
def consumed_items(events: dict[str, pd.DataFrame]) -> tuple[dict[int, set[int]], dict[int, dict[int, int]]]:
    """Per user: the items bought, and item -> impressions without a click (the window's)."""
    bought: dict[int, set[int]] = {}
    for u, g in events["purchases"].groupby("user_id"):
        bought[int(u)] = set(g["item_id"].astype(int))
    shown = events["impressions"].groupby(["user_id", "item_id"]).size().rename("n").reset_index()
    clicked = events["clicks"][["user_id", "item_id"]].drop_duplicates().assign(c=1)
    shown = shown.merge(clicked, on=["user_id", "item_id"], how="left")
    shown = shown[shown["c"].isna()]
    seen: dict[int, dict[int, int]] = {}
    for u, g in shown.groupby("user_id"):
        seen[int(u)] = dict(zip(g["item_id"].astype(int), g["n"].astype(int), strict=True))
    return bought, seen


def prerank_cut(frame: pd.DataFrame, pre_scores) -> pd.DataFrame:
    """The pre-ranker's survivors of candidates (``user_id``, ``category``, ...) with their
    ``pre_score``: per user the best :data:`PRERANK_KEEP`, and the best :data:`PRERANK_PER_CATEGORY`
    of every category, so that the diversity rule always has candidates of other categories to choose
    from. Rows in user order, best pre-score first (ties: the retrieval order). Batch and serving
    share it."""
    pre = np.asarray(pre_scores, dtype="float64").reshape(-1)
    user, category = frame["user_id"].to_numpy(), frame["category"].to_numpy()
    order = np.lexsort(
        (-pre, user)
    )  # by user, best pre-score first; lexsort is stable: ties keep retrieval order
    u, c = user[order], category[order]
    overall = _run_positions(u)
    by_category = np.lexsort((c, u))  # stable: within a (user, category) the pre-score order stays
    within = np.empty(len(order), dtype=np.int64)
    within[by_category] = _run_positions(u[by_category], c[by_category])
    taken = order[(overall < PRERANK_KEEP) | (within < PRERANK_PER_CATEGORY)]
    out = frame.iloc[taken].reset_index(drop=True)
    out["pre_score"] = pre[taken]
    return out


def _run_positions(*keys: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal ``keys`` (rows sorted by them): a grouped cumcount."""
    n = len(keys[0])
    start = np.zeros(n, dtype=bool)
    if n:
        start[0] = True
    for key in keys:
        start[1:] |= key[1:] != key[:-1]
    index = np.arange(n)
    return index - np.maximum.accumulate(np.where(start, index, 0))


def score_candidates(
    users: pd.DataFrame,
    retriever: Retriever,
    preranker,
    ranker,
    items: pd.DataFrame,
    now: pd.Timestamp,
    settings: Settings,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Retrieval, features, pre-ranking and ranking for ``users`` (user_id, device) at ``now``: the
    pre-ranker's survivors with the ranker's ``score`` (one row per user and candidate), and timings."""
    from jobs.platform.registry import predict_scores

    timings: dict[str, float] = {}
    t = time.monotonic()
    cands = retriever.candidates(users["user_id"].to_numpy())
    timings["retrieval_s"] = time.monotonic() - t
    # only servable catalogue items; their price and sponsoring come from the feature service
    cands = cands.merge(items[["item_id", "category", "launched_at"]], on="item_id", how="inner")
    cands = cands.merge(users[["user_id", "device"]], on="user_id", how="left")
    cands["shown_at"] = now
    t = time.monotonic()
    frame = with_features(cands, settings)
    timings["features_s"] = time.monotonic() - t
    t = time.monotonic()
    frame = prerank_cut(frame, preranker.inplace_predict(frame[PRE_FEATURES].astype("float64").to_numpy()))
    timings["prerank_s"] = time.monotonic() - t
    t = time.monotonic()
    frame["score"] = predict_scores(ranker, frame)
    timings["rank_s"] = time.monotonic() - t
    return frame, {"candidates": len(cands), "preranked": len(frame), **timings}


def compose_slates(
    scored: pd.DataFrame,
    now: pd.Timestamp,
    *,
    consumed: tuple[dict[int, set[int]], dict[int, dict[int, int]]] = ({}, {}),
    k: int = K,
    rules: Rules | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The business rules (:func:`jobs.ranking.rerank.rerank`) on each user's scored candidates:
    one row per user and slot, and what the rules did."""
    t = time.monotonic()
    bought, seen = consumed
    slates, counts = [], {"dropped_consumed": 0, "diversity_violations": 0, "sponsored_placed": 0}
    for user, group in scored.groupby("user_id", sort=True):
        slate, did = rerank(
            group, now=now, k=k, rules=rules, bought=bought.get(int(user), ()), seen=seen.get(int(user), {})
        )
        slates.append(slate)
        for key, value in did.items():
            counts[key] += value
    out = pd.concat(slates, ignore_index=True) if slates else scored.head(0).assign(slot=0)
    return out, {**counts, "rerank_s": time.monotonic() - t}


def slates_for(
    users: pd.DataFrame,
    retriever: Retriever,
    preranker,
    ranker,
    items: pd.DataFrame,
    now: pd.Timestamp,
    settings: Settings,
    *,
    consumed: tuple[dict[int, set[int]], dict[int, dict[int, int]]] = ({}, {}),
    k: int = K,
    rules: Rules | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The funnel for ``users`` (user_id, device) at ``now``: one row per user and slot."""
    scored, stats = score_candidates(users, retriever, preranker, ranker, items, now, settings)
    slates, did = compose_slates(scored, now, consumed=consumed, k=k, rules=rules)
    return slates, {**stats, **did}


def recommend(
    date: str | dt.date,
    settings: Settings | None = None,
    alias: str = "champion",
    publish: bool | None = None,
    k: int = K,
) -> dict[str, Any]:
    """Recommendations for the next request of every user active on ``date``; (re)writes
    ``recommendations/date=D`` and publishes it in production. Returns the summary."""
    from jobs.platform.registry import companion_dir, load_model
    from jobs.ranking.slate_metrics import catalogue_metrics

    settings = settings or get_settings()
    layout = StorageLayout(settings)
    day = as_date(date)
    log = get_logger("ranking_recommend", day.isoformat())
    started = time.monotonic()
    generated_at = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
    ranker, version, _ = load_model(alias, settings)
    retriever, preranker = load_companion(companion_dir(version, settings))
    events = event_window(layout, day - dt.timedelta(days=SEEN_DAYS - 1), day)
    today = events["impressions"][events["impressions"]["shown_at"] >= pd.Timestamp(day)]
    if today.empty:
        raise RecommendError(f"impressions of {day}: none in the lake; rule: ingest the day first")
    users = (
        today.groupby("user_id")["device"]
        .agg(lambda d: d.value_counts().index[0])
        .rename("device")
        .reset_index()
    )
    items = catalogue(layout, day)
    # what launched and trended since the version was trained (the API refreshes them the same way)
    retriever = retriever.for_day(
        day_lists(events["impressions"], events["clicks"], items, day, retriever.cfg)
    )
    now = pd.Timestamp(day) + pd.Timedelta(days=1)
    slates, stats = slates_for(
        users, retriever, preranker, ranker, items, now, settings, consumed=consumed_items(events), k=k
    )
    slates = slates.assign(model_version=version, generated_at=generated_at)
    short = slates.groupby("user_id").size()
    if slates.duplicated(["user_id", "item_id"]).any() or set(short.index) != set(users["user_id"]):
        raise RecommendError(
            f"recommendations for {day}: {short.size} of {len(users)} users, duplicates "
            f"{int(slates.duplicated(['user_id', 'item_id']).sum())}; rule: every active user, no item twice"
        )
    quality = catalogue_metrics(slates[["user_id", "slot", "item_id"]], items, day, k)
    final = layout.path("recommendations", day)
    with staged_directory(final) as tmp:
        tmp.mkdir(parents=True)
        slates[RECOMMENDATION_COLUMNS].to_parquet(tmp / "part-00000.parquet", index=False)
    summary: dict[str, Any] = {
        "date": day.isoformat(),
        "path": str(final),
        "rows": len(slates),
        "users": int(short.size),
        "short_slates": int((short < k).sum()),
        "model_version": version,
        "alias": alias,
        **{key: round(float(v), 4) for key, v in quality.items()},
        **{key: (round(v, 3) if isinstance(v, float) else v) for key, v in stats.items()},
        "seconds": round(time.monotonic() - started, 2),
    }
    if publish if publish is not None else settings.publishes_to_s3:
        from jobs.platform.publish import publish_directory

        manifest = publish_directory(
            final,
            layout.s3_uri("recommendations", day),
            settings,
            overwrite=True,
            metadata={"date": day.isoformat(), "dataset": "recommendations", "model_version": version},
        )
        summary["published"] = manifest["uri"]
    log.info("recommendations_written", **{key: v for key, v in summary.items() if key != "date"})
    return summary
