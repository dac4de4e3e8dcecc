"""Metrics of served slates (one row per slot: ``user_id, item_id, slot``), logged and true.

* **logged**: NDCG@k and MRR with relevance = the user clicked the item in the evaluation period
  (users with at least one click count), Recall@k of those clicks;
* **true** (the simulated world's oracle): NDCG@k with relevance = the item's true click
  probability for the user (graded; the ideal is the user's best items), and the slate's expected
  clicks as a share of the oracle slate's (``true_ctr_share``);
* **catalogue coverage**: distinct items served / servable items;
* **intra-list diversity**: distinct categories per slate / k (mean over slates);
* **freshness**: share of slots holding an item launched in the last ``fresh_days`` days.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from jobs.platform import metrics as M
from jobs.ranking.world import World


def _matrix(slates: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(users, items as users x k) from a slot-per-row frame; every user needs k slots."""
    ordered = slates.sort_values(["user_id", "slot"], kind="stable")
    sizes = ordered.groupby("user_id").size()
    if (sizes < k).any():
        short = sizes[sizes < k]
        raise ValueError(
            f"slates: {len(short)} user(s) with fewer than {k} slots (e.g. user {short.index[0]})"
        )
    ordered = ordered.groupby("user_id").head(k)
    return sizes.index.to_numpy(), ordered["item_id"].to_numpy().reshape(-1, k)


def logged_metrics(slates: pd.DataFrame, clicks: pd.DataFrame, k: int = 10) -> dict[str, float]:
    """NDCG@k, MRR and Recall@k of the slates against the period's clicks (``user_id, item_id``)."""
    clicked = clicks[["user_id", "item_id"]].drop_duplicates().assign(relevance=1.0)
    users = clicked["user_id"].unique()
    top = slates[slates["user_id"].isin(users) & (slates["slot"] < k)]
    rows = top.merge(clicked, on=["user_id", "item_id"], how="left").fillna({"relevance": 0.0})
    # clicked items missing from the slate count in the ideal ranking: append them below the slate
    missing = clicked.merge(
        top[["user_id", "item_id"]], on=["user_id", "item_id"], how="left", indicator=True
    )
    missing = missing[missing["_merge"] == "left_only"].drop(columns="_merge").assign(slot=k)
    frame = pd.concat([rows[["user_id", "item_id", "slot", "relevance"]], missing], ignore_index=True)
    score = -frame["slot"].to_numpy(dtype=float)
    return {
        f"ndcg_at_{k}": M.ndcg_at_k(frame["user_id"], frame["relevance"], score, k),
        "mrr": M.mrr(rows["user_id"], rows["relevance"], -rows["slot"].to_numpy(dtype=float)),
        f"recall_at_{k}": M.recall_at_k(frame["user_id"], frame["relevance"], score, k),
        "users_with_clicks": float(len(users)),
    }


def _dcg(relevance: np.ndarray) -> np.ndarray:
    """DCG of each row (slots in order), xgboost's exponential gain ``2^rel - 1``."""
    discount = 1.0 / np.log2(np.arange(relevance.shape[1]) + 2.0)
    return (np.power(2.0, relevance) - 1.0) @ discount


def true_per_user(
    world: World, slates: pd.DataFrame, day: dt.date, devices: pd.Series | str = "desktop", k: int = 10
) -> pd.DataFrame:
    """Per user (index): true NDCG@k (graded by true click probability, ideal = the oracle slate),
    the slate's expected clicks and the oracle's."""
    users, items = _matrix(slates, k)
    dev = (
        devices.reindex(users).to_numpy() if isinstance(devices, pd.Series) else np.full(len(users), devices)
    )
    best = world.best_slates(users, day, dev, k)
    p = world.click_probability(users[:, None], items, day, dev[:, None])
    p_best = world.click_probability(users[:, None], best, day, dev[:, None])
    return pd.DataFrame(
        {
            "true_ndcg": _dcg(p) / _dcg(p_best),
            "clicks": world.expected_clicks(users, items, day, dev),
            "oracle_clicks": world.expected_clicks(users, best, day, dev),
        },
        index=pd.Index(users, name="user_id"),
    )


def true_metrics(
    world: World, slates: pd.DataFrame, day: dt.date, devices: pd.Series | str = "desktop", k: int = 10
) -> dict[str, float]:
    """True NDCG@k (graded by true click probability, ideal = the oracle slate) and the share of the
    oracle's expected clicks the slates get."""
    per = true_per_user(world, slates, day, devices, k)
    return {
        f"true_ndcg_at_{k}": float(per["true_ndcg"].mean()),
        f"true_ctr_at_{k}": float(per["clicks"].mean() / k),
        "oracle_ctr": float(per["oracle_clicks"].mean() / k),
        "true_ctr_share": float(per["clicks"].sum() / per["oracle_clicks"].sum()),
    }


def catalogue_metrics(
    slates: pd.DataFrame, catalogue: pd.DataFrame, now: dt.date, k: int = 10, fresh_days: int = 7
) -> dict[str, float]:
    """Coverage, intra-list category diversity and freshness (``catalogue``: item_id, category,
    launched_at of the servable items)."""
    top = slates[slates["slot"] < k].merge(
        catalogue[["item_id", "category", "launched_at"]], on="item_id", how="left"
    )
    if top["category"].isna().any():
        raise ValueError("slates: items outside the catalogue; rule: serve servable items only")
    per_slate = top.groupby("user_id")["category"].nunique() / k
    fresh = pd.to_datetime(top["launched_at"]) >= pd.Timestamp(now) - pd.Timedelta(days=fresh_days)
    return {
        "coverage": float(top["item_id"].nunique() / len(catalogue)),
        "diversity": float(per_slate.mean()),
        "freshness": float(fresh.mean()),
    }


def evaluate_slates(
    world: World,
    slates: pd.DataFrame,
    clicks: pd.DataFrame,
    catalogue: pd.DataFrame,
    day: dt.date,
    devices: pd.Series | str = "desktop",
    k: int = 10,
) -> dict[str, Any]:
    return {
        **logged_metrics(slates, clicks, k),
        **true_metrics(world, slates, day, devices, k),
        **catalogue_metrics(slates, catalogue, day, k),
    }
