"""The funnel's pieces that batch and real-time serving share: the pre-ranking cut and the
request-time features (one definition for the training set and for a request's candidates)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.ranking.funnel import PRERANK_KEEP, PRERANK_PER_CATEGORY, prerank_cut


def _reference_cut(frame: pd.DataFrame, pre: np.ndarray) -> pd.DataFrame:
    """The rule spelled out with pandas: per user, best pre-score first (ties: retrieval order), the
    best PRERANK_KEEP and the best PRERANK_PER_CATEGORY of every category."""
    frame = frame.assign(pre_score=pre)
    frame = frame.sort_values(["user_id", "pre_score"], ascending=[True, False], kind="stable")
    overall = frame.groupby("user_id", sort=False).cumcount()
    within = frame.groupby(["user_id", "category"], sort=False).cumcount()
    return frame[(overall < PRERANK_KEEP) | (within < PRERANK_PER_CATEGORY)].reset_index(drop=True)


@pytest.mark.parametrize("users", [1, 7, 40])
def test_prerank_cut_keeps_the_best_overall_and_per_category_ties_in_retrieval_order(users):
    rng = np.random.default_rng(users)
    n = users * 500
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(0, users, n) * 3 + 1,
            "item_id": np.arange(n),
            "category": rng.integers(0, 20, n),
        }
    )
    pre = np.round(rng.normal(size=n), 1)  # coarse scores: many ties
    got = prerank_cut(frame, pre)
    pd.testing.assert_frame_equal(got, _reference_cut(frame, pre))
    sizes = frame.groupby("user_id").size()
    for user, g in got.groupby("user_id"):
        assert PRERANK_KEEP <= len(g) <= min(sizes[user], PRERANK_KEEP + 20 * PRERANK_PER_CATEGORY)
        assert g["pre_score"].is_monotonic_decreasing
    assert prerank_cut(frame.head(0), pre[:0]).empty


def test_a_category_outside_the_top_keeps_its_best_three():
    n = 150
    frame = pd.DataFrame({"user_id": 0, "item_id": np.arange(n), "category": [0] * (n - 5) + [9] * 5})
    pre = np.r_[np.linspace(10, 5, n - 5), [1.0, 4.0, 2.0, 3.0, 0.5]]  # category 9 ranks last
    got = prerank_cut(frame, pre)
    assert len(got) == PRERANK_KEEP + PRERANK_PER_CATEGORY
    assert got[got["category"] == 9]["item_id"].tolist() == [146, 148, 147]  # pre-scores 4, 3, 2


def test_request_features_are_one_definition_for_training_and_serving():
    from jobs.ranking.serving import request_columns
    from jobs.ranking.training_data import request_features

    rows = [
        {"shown_at": dt.datetime(2024, 1, 6, 23, 59, 59), "device": "mobile", "launched_at_s": 1704067200},
        {"shown_at": pd.Timestamp("2024-01-08T00:00:00Z"), "device": "tablet", "launched_at_s": float("nan")},
        {"shown_at": dt.datetime(2024, 1, 8, 13, 0), "device": "desktop", "launched_at_s": 1804067200},
    ]
    served = request_columns(rows)
    assert served["hour"].tolist() == [23, 0, 13]
    assert served["is_weekend"].tolist() == [1, 0, 0]  # a Saturday, then Mondays
    assert served["device_mobile"].tolist() == [1, 0, 0] and served["device_tablet"].tolist() == [0, 1, 0]
    assert served["item_age_days"].tolist() == pytest.approx([(5 * 86400 + 86399) / 86400, 0.0, 0.0])
    trained = request_features(pd.DataFrame(rows))
    for name, values in served.items():
        assert trained[name].astype("float64").tolist() == pytest.approx(values.tolist()), name
