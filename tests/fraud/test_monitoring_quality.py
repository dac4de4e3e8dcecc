"""Fraud's monitoring figures (``UseCase.monitoring``): quality of matured rows, labels as known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.fraud.monitoring import attach_labels, quality, quality_metrics
from jobs.platform.use_case import get_use_case


def test_quality_on_a_scored_frame_hand_computed():
    # day 1: A .9 fraud, B .8, C .3 fraud, D .2; day 2: A .95 fraud (blocked after day 1), B .7 fraud, C .6, D .1
    rows = [
        ("2018-05-01 10:00", "A", 0.9, 1),
        ("2018-05-01 11:00", "B", 0.8, 0),
        ("2018-05-01 12:00", "C", 0.3, 1),
        ("2018-05-01 13:00", "D", 0.2, 0),
        ("2018-05-02 09:00", "A", 0.95, 1),
        ("2018-05-02 10:00", "B", 0.7, 1),
        ("2018-05-02 11:00", "C", 0.6, 0),
        ("2018-05-02 12:00", "D", 0.1, 0),
    ]
    df = pd.DataFrame(rows, columns=["tx_datetime", "customer_id", "score", "tx_fraud"])
    df["tx_datetime"] = pd.to_datetime(df["tx_datetime"])
    q = quality_metrics(df, k=2)
    assert (q["rows"], q["frauds"]) == (8, 4)
    # ranked .95 .9 .8 .7 .6 .3 .2 .1 -> frauds at ranks 1, 2, 4, 6: AP = (1 + 1 + 3/4 + 4/6) / 4
    assert q["average_precision"] == pytest.approx((1 + 1 + 0.75 + 4 / 6) / 4)
    # fraud-above-genuine pairs: .95 -> 4, .9 -> 4, .7 -> 3, .3 -> 2 of 4 x 4
    assert q["auc_roc"] == pytest.approx(13 / 16)
    # top-2 cards: day 1 A (fraud), B -> 1/2; day 2 A is blocked: B (fraud), C -> 1/2 (2/2 without the block)
    assert q["card_precision_at_2"] == pytest.approx(0.5)
    empty = quality_metrics(df.iloc[:0], k=2)
    assert empty["average_precision"] is None and empty["rows"] == 0


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
