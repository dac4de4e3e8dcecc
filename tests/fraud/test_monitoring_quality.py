"""Fraud's monitoring figures (``UseCase.monitoring``): quality of matured rows, labels as known."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.fraud.monitoring import attach_labels, quality, quality_metrics
from jobs.platform.use_case import get_use_case


def test_quality_on_a_scored_frame():
    rng = np.random.default_rng(0)
    n = 4000
    y = (rng.random(n) < 0.02).astype(int)
    df = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 500, n),
            "tx_datetime": pd.Timestamp("2018-05-01")
            + pd.to_timedelta(rng.integers(0, 7 * 86400, n), unit="s"),
            "tx_fraud": y,
            "score": np.clip(y * 0.6 + rng.random(n) * 0.5, 0, 1),
        }
    )
    q = quality_metrics(df, k=20)
    assert q["rows"] == n and q["frauds"] == int(y.sum())
    assert 0.8 < q["auc_roc"] <= 1.0
    assert q["average_precision"] > 0.3
    assert 0 < q["card_precision_at_20"] <= 1
    empty = quality_metrics(df.iloc[:0], k=20)
    assert empty["average_precision"] is None


def test_labels_as_known_and_the_declared_rule():
    frame = pd.DataFrame({"transaction_id": [1, 2, 3], "tx_fraud": [0, 0, 0]})
    out = attach_labels(frame, pd.DataFrame({"transaction_id": [2]}))
    assert out["tx_fraud"].tolist() == [0, 1, 0]
    spec = get_use_case(name="fraud").monitoring
    assert (spec.label, spec.primary, spec.support) == ("tx_fraud", "average_precision", "frauds")
    rows = out.assign(customer_id=[1, 2, 3], tx_datetime=pd.Timestamp("2018-05-01"))
    figures = spec.quality(rows, np.r_[0.1, 0.9, 0.2])
    assert figures == quality(rows, np.r_[0.1, 0.9, 0.2])
    assert figures["frauds"] == 1 and figures["average_precision"] == 1.0
