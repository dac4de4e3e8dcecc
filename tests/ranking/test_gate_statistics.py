"""Ranking's gate statistics (the paired bootstrap over users) are the evaluation's own figures at
unit counts, and at any counts the figures of the holdout with each user's requests repeated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.platform.resampling import unit_codes
from jobs.ranking.evaluation import evaluate, paired_statistics


def _slates(requests=400, users=60, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(requests):
        user = int(rng.integers(0, users))
        device = ["mobile", "web"][user % 2]
        for slot in range(10):
            rows.append(
                {
                    "request_id": f"q{r}",
                    "user_id": user,
                    "slot": slot,
                    "clicked": int(rng.random() < 0.25 / (1 + slot)),
                    "device": device,
                    "user_impressions_30d": user % 3,
                    "item_impressions_30d": int(rng.integers(0, 60)),
                    "shown_at": pd.Timestamp("2024-02-01") + pd.Timedelta(seconds=r * 60),
                }
            )
    return pd.DataFrame(rows)


def test_statistics_equal_the_evaluation_and_repeat_users():
    frame = _slates()
    scores = np.random.default_rng(1).random(len(frame)) - 0.02 * frame["slot"].to_numpy()
    codes, units = unit_codes(frame, "user_id")
    stats = paired_statistics(frame, scores, codes, units)
    ev = evaluate(frame, scores)
    at_one = {k: float(v[0]) for k, v in stats(np.ones((1, units))).items()}
    assert {
        "ndcg_at_10",
        "mrr",
        "user=new/ndcg_at_10",
        "device=web/ndcg_at_10",
        "item=cold/ndcg_at_10",
    } <= set(at_one)
    for key, value in at_one.items():
        name, _, metric = key.rpartition("/")
        expected = ev.slices[name][metric] if name else ev.metrics[key]
        assert value == pytest.approx(expected, abs=1e-12), key

    counts = np.random.default_rng(2).integers(0, 3, units).astype(float)
    copies = [
        frame[codes == u].assign(request_id=lambda d, c=c: d["request_id"] + f"#{c}")
        for u in range(units)
        for c in range(int(counts[u]))
    ]
    expanded = pd.concat(copies)
    order = expanded.index.to_numpy()
    again = evaluate(expanded.reset_index(drop=True), scores[order])
    drawn = stats(counts[None])
    assert drawn["ndcg_at_10"][0] == pytest.approx(again.metrics["ndcg_at_10"])
    assert drawn["mrr"][0] == pytest.approx(again.metrics["mrr"])
    assert drawn["item=cold/ndcg_at_10"][0] == pytest.approx(again.slices["item=cold"]["ndcg_at_10"])
