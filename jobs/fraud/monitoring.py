"""Fraud's part of monitoring (``UseCase.monitoring``): the label, how it is known, what quality is.

* a transaction's label is ``tx_fraud`` = 1 when a chargeback for it was reported (lake ``labels``) by
  the end of the day monitoring runs for (:func:`labels_as_of`, :func:`attach_labels`);
* quality on matured rows is AUC ROC, average precision (the figure the decay rule reads) and card
  precision@100 (handbook), with the number of frauds as the support the rule needs
  (``FRAUD_RETRAIN_MIN_POSITIVES``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from jobs.platform.storage import StorageLayout

LABEL = "tx_fraud"
CP_K = 100


def quality_metrics(scored: pd.DataFrame, k: int = CP_K) -> dict[str, Any]:
    """AUC ROC, average precision and card precision@k (handbook) of a scored, labelled frame."""
    from jobs.fraud.metrics import card_precision_at_k
    from jobs.platform.metrics import binary_metrics, finite_or_none

    n = int(len(scored))
    frauds = int(scored[LABEL].sum()) if n else 0
    out: dict[str, Any] = {"rows": n, "frauds": frauds}
    if n == 0:
        return out | {"auc_roc": None, "average_precision": None, f"card_precision_at_{k}": None}
    rm = binary_metrics(scored[LABEL], scored["score"])
    out["auc_roc"] = finite_or_none(rm["auc_roc"])
    out["average_precision"] = finite_or_none(rm["average_precision"])
    out[f"card_precision_at_{k}"] = finite_or_none(card_precision_at_k(scored, k))
    return out


def quality(frame: pd.DataFrame, scores: np.ndarray) -> dict[str, Any]:
    """``MonitoringSpec.quality``: the figures of matured, labelled rows scored by the champion."""
    return quality_metrics(frame.assign(score=np.asarray(scores, dtype="float64")))


def labels_as_of(layout: StorageLayout, start: dt.date, as_of: dt.date) -> pd.DataFrame:
    """Fraud reports for transactions from ``start`` on, as known at the end of ``as_of``."""
    parts = layout.partition_paths("labels", start, as_of)
    if not parts:
        return pd.DataFrame(
            {"transaction_id": pd.Series(dtype="int64"), "reported_at": pd.Series(dtype="M8[ns]")}
        )
    df = pd.concat([pd.read_parquet(p, columns=["transaction_id", "reported_at"]) for p in parts])
    df = df[pd.to_datetime(df["reported_at"]) < pd.Timestamp(as_of + dt.timedelta(days=1))]
    return df.drop_duplicates("transaction_id")


def attach_labels(frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    out = frame.drop(columns=[LABEL], errors="ignore")
    out[LABEL] = out["transaction_id"].isin(labels["transaction_id"]).astype("int32")
    return out


def labelled(frame: pd.DataFrame, layout: StorageLayout, start: dt.date, as_of: dt.date) -> pd.DataFrame:
    """``MonitoringSpec.labels``: rows (transactions from ``start`` on) with ``tx_fraud`` as known at
    the end of ``as_of``."""
    return attach_labels(frame, labels_as_of(layout, start, as_of))
