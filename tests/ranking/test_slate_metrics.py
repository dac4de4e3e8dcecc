"""Slate metrics: logged NDCG/MRR/recall on hand-made slates, true NDCG and CTR share against the
oracle, coverage, diversity and freshness."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from jobs.ranking.slate_metrics import catalogue_metrics, logged_metrics, true_metrics
from jobs.ranking.world import World, WorldConfig


def slate(user, items):
    return pd.DataFrame({"user_id": user, "item_id": items, "slot": range(len(items))})


def test_logged_metrics_hand_computed():
    slates = pd.concat([slate(1, [10, 11, 12]), slate(2, [20, 21, 22]), slate(3, [30, 31, 32])])
    clicks = pd.DataFrame({"user_id": [1, 2, 2], "item_id": [10, 22, 99]})  # user 3 did not click
    m = logged_metrics(slates, clicks, k=3)
    # user 1: hit at slot 0 -> NDCG 1; user 2: hit at slot 2 of 2 relevant (one never served)
    ndcg2 = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg_at_3"] == pytest.approx((1 + ndcg2) / 2)
    assert m["mrr"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["recall_at_3"] == pytest.approx((1 + 0.5) / 2)
    assert m["users_with_clicks"] == 2


def test_the_oracle_scores_one_and_worse_slates_less():
    cfg = WorldConfig(
        seed=2, n_users=300, n_items=800, n_brands=30, new_items_per_day=10, requests_per_day=200
    )
    world = World(cfg)
    day = cfg.start_date + dt.timedelta(days=2)
    users = np.arange(40)
    best = world.best_slates(users, day, "desktop")
    oracle = pd.concat([slate(u, row) for u, row in zip(users, best, strict=True)])
    m = true_metrics(world, oracle, day)
    assert m["true_ndcg_at_10"] == pytest.approx(1.0) and m["true_ctr_share"] == pytest.approx(1.0)
    reversed_ = oracle.assign(slot=9 - oracle["slot"])
    worse = true_metrics(world, reversed_, day)
    assert worse["true_ctr_share"] < 1.0 and worse["true_ndcg_at_10"] < 1.0
    rng = np.random.default_rng(0)
    random = pd.concat([slate(u, rng.choice(800, 10, replace=False)) for u in users])
    assert true_metrics(world, random, day)["true_ctr_share"] < worse["true_ctr_share"]


def test_coverage_diversity_freshness():
    catalogue = pd.DataFrame(
        {
            "item_id": range(6),
            "category": [0, 0, 1, 1, 2, 2],
            "launched_at": pd.to_datetime(["2024-01-01"] * 5 + ["2024-01-30"]),
        }
    )
    slates = pd.concat([slate(1, [0, 1]), slate(2, [2, 5])])
    m = catalogue_metrics(slates, catalogue, dt.date(2024, 2, 1), k=2)
    assert m["coverage"] == pytest.approx(4 / 6)
    assert m["diversity"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert m["freshness"] == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="catalogue"):
        catalogue_metrics(slate(1, [0, 77]), catalogue, dt.date(2024, 2, 1), k=2)
