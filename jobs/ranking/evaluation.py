"""Offline evaluation of a ranker on labelled logged slates (the gate's holdout, monitoring).

A query is one request's slate (its ``request_id`` rows); the ranker's scores re-order it and the
logged clicks judge the order: NDCG@10 (exponential gain, xgboost's definition) and MRR over the
requests with at least one click. ``logged_ndcg_at_10`` is the logging policy's own order (by
slot) on the same rows, the reference any re-ranking of logged slates is read against; clicks are
position-biased (a PBM: the top slots are examined more), so the logged order is favoured by the
very data that judges it, which is why the true-CTR evaluation against the simulator's oracle
(``make ranking-eval``) is the one that ranks strategies. Slices: new users (no impression in the
last 30 days) and returning ones, the device, and cold items (fewer than :data:`COLD_IMPRESSIONS`
impressions in the last 30 days: the order of a request's cold items among themselves).

**The funnel's slates** (:func:`funnel_metrics`): with a model version, the version's whole funnel
(its companion's retrieval and pre-ranker, then the ranker and the business rules) also serves a seeded
sample of the holdout's users at the holdout's first moment, and the catalogue coverage, intra-list
diversity and freshness of those slates join the metrics, so the gate can hold them as guardrails
(logged slates cannot show them: re-ordering ten logged items changes neither).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from jobs.platform import metrics as M
from jobs.platform.evaluate import Evaluation
from jobs.platform.resampling import WeightedGroupMean, WeightedStatistics, slice_rows

K = 10
GROUP = "request_id"
LABEL = "clicked"
COLD_IMPRESSIONS = 20  # the CTR prior's strength: below it an item's smoothed CTR is mostly prior
FUNNEL_USERS = 500
FUNNEL_METRICS = ("coverage", "diversity", "freshness")


def ranking_metrics(frame: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    """Requests, clicks, NDCG@10 and MRR of ``scores`` over the request groups of ``frame``."""
    group = frame[GROUP].to_numpy()
    rel = frame[LABEL].to_numpy(dtype=float)
    return {
        "rows": float(len(frame)),
        "requests": float(pd.unique(group).size),
        "clicks": float(rel.sum()),
        "ndcg_at_10": M.ndcg_at_k(group, rel, scores, K),
        "mrr": M.mrr(group, rel, scores),
    }


def _slices(frame: pd.DataFrame) -> dict[str, pd.Series]:
    out = {}
    if "user_impressions_30d" in frame.columns:
        out["user"] = np.where(frame["user_impressions_30d"].to_numpy() > 0, "returning", "new")
    if "device" in frame.columns:
        out["device"] = frame["device"].astype(str).to_numpy()
    if "item_impressions_30d" in frame.columns:
        out["item"] = np.where(frame["item_impressions_30d"].to_numpy() < COLD_IMPRESSIONS, "cold", "warm")
    return {k: pd.Series(v, index=frame.index) for k, v in out.items()}


def evaluate(
    frame: pd.DataFrame,
    scores: np.ndarray,
    *,
    settings: Any = None,
    model_version: str | None = None,
    threshold: float | None = None,
) -> Evaluation:
    """All offline metrics of ``scores`` on labelled impressions (``UseCase.evaluate``; a ranker
    has no decision threshold, ``threshold`` is accepted for the interface and unused)."""
    if len(frame) != len(scores):
        raise ValueError(f"scores: length {len(scores)} != rows {len(frame)}; rule: one score per row")
    if len(frame) == 0:
        raise ValueError("holdout: 0 rows; rule: the evaluation window must contain impressions")
    frame = frame.reset_index(drop=True)
    scores = np.asarray(scores, dtype="float64")
    metrics = ranking_metrics(frame, scores)
    logged = -frame["slot"].to_numpy(dtype=float)
    metrics["logged_ndcg_at_10"] = M.ndcg_at_k(
        frame[GROUP].to_numpy(), frame[LABEL].to_numpy(float), logged, K
    )
    metrics["click_rate"] = metrics["clicks"] / metrics["rows"]
    slices: dict[str, dict[str, float]] = {}
    for name, keys in _slices(frame).items():
        for value, part in frame.groupby(keys, sort=True):
            row = ranking_metrics(part, scores[frame.index.get_indexer(part.index)])
            slices[f"{name}={value}"] = {k: row[k] for k in ("requests", "clicks", "ndcg_at_10", "mrr")}
    days = pd.to_datetime(frame["shown_at"]).dt.date
    if model_version is not None and settings is not None:
        metrics |= funnel_metrics(frame, settings, model_version)
    return Evaluation(
        (str(days.min()), str(days.max())),
        metrics,
        slices,
        slice_metrics=("requests", "clicks", "ndcg_at_10", "mrr"),
        model_version=model_version,
    )


def paired_statistics(
    frame: pd.DataFrame, scores: np.ndarray, codes: np.ndarray, units: int
) -> WeightedStatistics:
    """The gate's statistics of one ranker for any resample of units (users: a user's requests are
    not independent), as the core's paired bootstrap reads them: NDCG@10 and MRR over the requests
    with a click, and NDCG@10 in each slice of :func:`evaluate`, each a mean over requests weighted
    by their user's count (the evaluation's figures at unit counts). The funnel's coverage and
    diversity have no per-request form and keep the gate's point rule."""
    frame = frame.reset_index(drop=True)
    scores = np.asarray(scores, dtype="float64")
    codes = np.asarray(codes)
    groups, relevance = frame[GROUP].to_numpy(), frame[LABEL].to_numpy(dtype=float)

    def per_request(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g, rel, s = groups[rows], relevance[rows], scores[rows]
        first = M.relevant_group_rows(g, rel)
        return M.ndcg_per_group(g, rel, s, K), M.mrr_per_group(g, rel, s), codes[rows][first]

    everything = np.arange(len(frame))
    ndcg, mrr, group_codes = per_request(everything)
    means = {"ndcg_at_10": WeightedGroupMean(ndcg, group_codes), "mrr": WeightedGroupMean(mrr, group_codes)}
    for name, keys in _slices(frame).items():
        for key, rows in slice_rows(frame, keys, name):
            part_ndcg, _, part_codes = per_request(rows)
            means[f"{key}/ndcg_at_10"] = WeightedGroupMean(part_ndcg, part_codes)

    def statistics(counts: np.ndarray) -> dict[str, np.ndarray]:
        return {name: mean(counts) for name, mean in means.items()}

    return statistics


def funnel_metrics(
    frame: pd.DataFrame, settings: Any, model_version: str, n_users: int = FUNNEL_USERS
) -> dict[str, float]:
    """Coverage, diversity and freshness of version ``model_version``'s funnel for a seeded sample of
    ``frame``'s users (each with the device of her first request) at 00:00 of ``frame``'s first day,
    with the features of that moment (the version's companion is part of every ranking version)."""
    import datetime as dt

    from jobs.platform import registry
    from jobs.platform.storage import StorageLayout
    from jobs.ranking.funnel import (
        compose_slates,
        consumed_items,
        event_window,
        load_companion,
        score_candidates,
    )
    from jobs.ranking.slate_metrics import catalogue_metrics
    from jobs.ranking.training_data import catalogue

    retriever, preranker = load_companion(registry.companion_dir(model_version, settings))
    ranker, _, _ = registry.load_model(None, settings, version=model_version)
    layout = StorageLayout(settings)
    day = pd.to_datetime(frame["shown_at"]).min().normalize()
    first = frame.sort_values("shown_at", kind="stable").drop_duplicates("user_id")[["user_id", "device"]]
    users = first.sample(n=min(n_users, len(first)), random_state=0).sort_values("user_id")
    items = catalogue(layout, (day - pd.Timedelta(days=1)).date())
    items = items[items["launched_at"] < day]
    events = event_window(layout, (day - pd.Timedelta(days=7)).date(), (day - pd.Timedelta(days=1)).date())
    scored, _ = score_candidates(users, retriever, preranker, ranker, items, day, settings)
    slates, _ = compose_slates(scored, day, consumed=consumed_items(events), k=K)
    return catalogue_metrics(
        slates[["user_id", "slot", "item_id"]], items, dt.date(day.year, day.month, day.day), K
    )


def describe(ev: Evaluation) -> str:
    m = ev.metrics
    lines = [
        f"window {ev.window[0]}..{ev.window[1]}: {int(m['requests'])} requests, {int(m['clicks'])} clicks",
        f"  NDCG@10 {m['ndcg_at_10']:.4f} (logged order {m['logged_ndcg_at_10']:.4f}), MRR {m['mrr']:.4f}",
    ]
    if not math.isnan(m.get("coverage", math.nan)):
        lines.append(
            f"  funnel slates: coverage {m['coverage']:.4f}, diversity {m['diversity']:.3f}, "
            f"freshness {m['freshness']:.3f}"
        )
    for name, row in sorted(ev.slices.items()):
        ndcg = row["ndcg_at_10"]
        lines.append(
            f"  {name:<18} NDCG@10 {'n/a' if math.isnan(ndcg) else f'{ndcg:.4f}'} ({int(row['clicks'])} clicks)"
        )
    return "\n".join(lines)


def version_tags(ev: Evaluation) -> Mapping[str, str]:
    m = ev.metrics
    return {
        "holdout_window": f"{ev.window[0]}..{ev.window[1]}",
        "holdout_ndcg_at_10": f"{m['ndcg_at_10']:.6f}",
        "holdout_mrr": f"{m['mrr']:.6f}",
    }


# --- monitoring ------------------------------------------------------------------------------------
def labelled(frame: pd.DataFrame, layout, start, as_of) -> pd.DataFrame:
    """The monitored rows with their clicks as known at the end of ``as_of`` (``MonitoringSpec.labels``):
    a click counts when it arrived by then.

    Rows of the serving prediction log (one per served slot, no ``impression_id``) are first matched
    to the lake's impressions of ``[start, as_of]`` by request and slot (what the user was shown), and
    get their ``revenue`` too: the price of the purchases after their click known by then (a served
    slot that never landed as an impression has no click and no revenue)."""
    import datetime as dt

    from jobs.platform import feature_store as fs

    out = frame.drop(columns=[LABEL], errors="ignore")
    deadline = pd.Timestamp(as_of) + pd.Timedelta(dt.timedelta(days=1))
    served_log = "impression_id" not in out.columns
    if served_log:
        out = _with_impressions(out, fs.read_lake_frame(layout, "impressions", start, as_of))
        purchases = fs.read_lake_frame(layout, "purchases", start, as_of)
        revenue = pd.Series(dtype="float64")
        if not purchases.empty:
            at = pd.to_datetime(purchases["purchased_at"], utc=True).dt.tz_localize(None)
            revenue = purchases.loc[(at < deadline).to_numpy()].groupby("impression_id")["price"].sum()
        out["revenue"] = out["impression_id"].map(revenue).fillna(0.0).astype("float64")
    clicks = fs.read_lake_frame(layout, "clicks", start, as_of)
    if clicks.empty:
        return out.assign(**{LABEL: 0})
    at = pd.to_datetime(clicks["clicked_at"], utc=True).dt.tz_localize(None)
    known = set(clicks.loc[(at < deadline).to_numpy(), "impression_id"].tolist())
    return out.assign(**{LABEL: out["impression_id"].isin(known).astype("int64")})


def _with_impressions(log: pd.DataFrame, impressions: pd.DataFrame) -> pd.DataFrame:
    """The log's rows with the ``impression_id`` of the landed impression of the same request and slot
    (-1 when none landed)."""
    if impressions.empty:
        return log.assign(impression_id=np.int64(-1))
    keys = impressions[["request_id", "slot", "impression_id"]].drop_duplicates(["request_id", "slot"])
    keys = keys.astype({"request_id": "string", "slot": "int64"})
    out = log.assign(_request=log["request_id"].astype("string"), _slot=log["slot"].astype("int64"))
    out = out.merge(
        keys.rename(columns={"request_id": "_request", "slot": "_slot"}), on=["_request", "_slot"], how="left"
    )
    out["impression_id"] = out["impression_id"].fillna(-1).astype("int64")
    return out.drop(columns=["_request", "_slot"])


def quality(frame: pd.DataFrame, scores: np.ndarray) -> dict[str, Any]:
    """NDCG@10, MRR, requests and clicks of the champion's scores on matured impressions."""
    if len(frame) == 0:
        return {"rows": 0, "requests": 0, "clicks": 0, "ndcg_at_10": None, "mrr": None}
    return M.json_safe(ranking_metrics(frame.reset_index(drop=True), np.asarray(scores, dtype="float64")))
