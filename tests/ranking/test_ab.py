"""Ranking's A/B metrics (``jobs.ranking.ab``): their definitions on a hand-made log, and the
vectorised bootstrap form equal to the metric of the resampled arm."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.platform.ab_analysis import ArmSample, Clusters
from jobs.platform.use_case import ABSpec
from jobs.ranking.ab import CTR, DIVERSITY, FRESHNESS, REVENUE

SPEC = ABSpec(
    log_columns=("request_id",),
    unit="user_id",
    row_id="request_id",
    label="clicked",
    time_column="requested_at",
    primary=CTR,
)


def _log(n_users: int = 40, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        for r in range(rng.integers(1, 4)):
            slots = int(rng.integers(3, 11))  # short slates too
            at = pd.Timestamp("2024-01-10") + pd.Timedelta(minutes=int(rng.integers(0, 1440)))
            for slot in range(slots):
                rows.append(
                    {
                        "request_id": f"{user}-{r}",
                        "user_id": user,
                        "slot": slot,
                        "category": int(rng.integers(0, 6)),
                        "launched_at": at - pd.Timedelta(days=float(rng.uniform(0, 20))),
                        "requested_at": at,
                        "score": float(rng.random()),
                        "clicked": int(rng.random() < 0.1),
                        "revenue": float(rng.random() < 0.03) * 40.0,
                    }
                )
    return pd.DataFrame(rows)


def test_definitions_on_a_hand_made_log():
    at = pd.Timestamp("2024-01-10 12:00")
    frame = pd.DataFrame(
        {
            "request_id": ["a"] * 4 + ["b"] * 2,
            "user_id": [1] * 4 + [2] * 2,
            "slot": [0, 1, 2, 3, 0, 1],
            "category": [0, 0, 1, 2, 5, 5],  # a: 3 distinct of 4 slots, b: 1 of 2
            "launched_at": [at - pd.Timedelta(days=d) for d in (1, 30, 6.9, 8, 0, 100)],
            "requested_at": [at] * 6,
            "score": 0.0,
            "clicked": [1, 0, 0, 1, 0, 0],
            "revenue": [25.0, 0, 0, 0, 0, 0],
        }
    )
    arm = Clusters(frame, SPEC).all()
    assert CTR.stat(arm) == pytest.approx(2 / 6)
    assert DIVERSITY.stat(arm) == pytest.approx((3 / 4 + 1 / 2) / 2)  # mean over slates
    assert FRESHNESS.stat(arm) == pytest.approx(3 / 6)  # launched within 7 days of the request
    assert REVENUE.stat(arm) == pytest.approx(25.0 / 2)  # per session (request)


@pytest.mark.parametrize("metric", [CTR, DIVERSITY, FRESHNESS, REVENUE], ids=lambda m: m.name)
def test_the_weighted_bootstrap_equals_the_resampled_metric(metric):
    clusters = Clusters(_log(), SPEC)
    n = len(clusters.starts)
    rng = np.random.default_rng(0)
    picks = [rng.integers(0, n, n) for _ in range(5)]
    counts = np.stack([np.bincount(p, minlength=n) for p in picks]).astype("float64")
    fast = metric.weighted(clusters.all())(counts)
    slow = [metric.stat(ArmSample(clusters, clusters.rows(p))) for p in picks]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
