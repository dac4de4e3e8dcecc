"""Offline metrics shared by every use case: threshold-free binary metrics (AUC ROC, average
precision), listwise ranking metrics of grouped scores (NDCG@k, MRR, recall@k, per query group),
per-slice metrics and the helpers that make figures JSON/MLflow-safe.

Pure functions of arrays or a scored frame (pandas), shared by training, evaluation, the gate and
monitoring, and tested on tiny hand-computed examples. A use case's own metrics live in its package
(fraud's card precision@k and cost-optimal threshold: :mod:`jobs.fraud.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

SCORE = "score"


def check_columns(df: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"scored frame: missing column(s) {missing}; rule: needs {list(columns)}")


def binary_metrics(y_true, scores) -> dict[str, float]:
    """AUC ROC and average precision; NaN when only one class is present."""
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(scores, dtype=float)
    if len(y) == 0 or y.min() == y.max():
        return {"auc_roc": math.nan, "average_precision": math.nan}
    return {
        "auc_roc": float(roc_auc_score(y, s)),
        "average_precision": float(average_precision_score(y, s)),
    }


# --- listwise metrics of grouped scores (one group = one query/request) -----------------------
def _groups(group, relevance, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by group, then score descending (ties by original order); group starts."""
    g = np.asarray(group)
    rel = np.asarray(relevance, dtype=float)
    s = np.asarray(scores, dtype=float)
    if not len(g) == len(rel) == len(s):
        raise ValueError(
            f"scores: lengths group {len(g)}, relevance {len(rel)}, scores {len(s)}; rule: one per row"
        )
    if np.any(rel < 0) or not np.all(np.isfinite(rel)):
        raise ValueError("relevance: negative or non-finite values; rule: graded relevance >= 0")
    order = np.lexsort((np.arange(len(g)), -s, g))
    g, rel, s = g[order], rel[order], s[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.array([], dtype=int)
    return g, rel, s, starts


def _ranks(starts: np.ndarray, n: int) -> np.ndarray:
    """0-based rank of each (group-sorted) row within its group."""
    sizes = np.diff(np.r_[starts, n])
    return np.arange(n) - np.repeat(starts, sizes)


def ndcg_per_group(group, relevance, scores, k: int = 10) -> np.ndarray:
    """NDCG@k of each group with at least one relevant row (groups in sorted order), with
    exponential gain ``2^rel - 1`` and discount ``1 / log2(rank + 2)`` (the definition of xgboost's
    ``ndcg@k`` and of LightGBM/RankLib). Ties in the score keep the rows' input order."""
    if k <= 0:
        raise ValueError(f"k: value {k} is invalid; rule: k must be a positive integer")
    g, rel, _, starts = _groups(group, relevance, scores)
    if not len(g):
        return np.array([], dtype=float)
    rank = _ranks(starts, len(g))
    discount = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    gain = np.power(2.0, rel) - 1.0
    dcg = np.add.reduceat(gain * discount, starts)
    # the ideal ordering: relevance descending within each group
    ideal_order = np.lexsort((-rel, g))
    idcg = np.add.reduceat(gain[ideal_order] * discount, starts)
    keep = idcg > 0
    return dcg[keep] / idcg[keep]


def ndcg_at_k(group, relevance, scores, k: int = 10) -> float:
    """Mean NDCG@k over the groups with at least one relevant row (NaN when there is none)."""
    per = ndcg_per_group(group, relevance, scores, k)
    return float(per.mean()) if len(per) else math.nan


def mrr_per_group(group, relevance, scores) -> np.ndarray:
    """Reciprocal rank of the first relevant row of each group with one (groups in sorted order)."""
    g, rel, _, starts = _groups(group, relevance, scores)
    if not len(g):
        return np.array([], dtype=float)
    rank = _ranks(starts, len(g))
    first = np.where(rel > 0, rank, np.iinfo(np.int64).max)
    best = np.minimum.reduceat(first, starts)
    best = best[best < np.iinfo(np.int64).max]
    return 1.0 / (best + 1.0)


def mrr(group, relevance, scores) -> float:
    """Mean reciprocal rank of the first relevant row, over groups with one (NaN when none)."""
    per = mrr_per_group(group, relevance, scores)
    return float(np.mean(per)) if len(per) else math.nan


def relevant_group_rows(group, relevance) -> np.ndarray:
    """The first row of each group with a relevant row, groups in sorted order: the groups, in
    order, of :func:`ndcg_per_group` and :func:`mrr_per_group`."""
    g = np.asarray(group)
    rel = np.asarray(relevance, dtype=float)
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    relevant = np.bincount(inverse.ravel(), weights=(rel > 0).astype(float), minlength=len(first)) > 0
    return first[relevant]


def recall_at_k(group, relevance, scores, k: int) -> float:
    """Mean over groups with a relevant row of (relevant rows in the top k) / (relevant rows)."""
    if k <= 0:
        raise ValueError(f"k: value {k} is invalid; rule: k must be a positive integer")
    g, rel, _, starts = _groups(group, relevance, scores)
    if not len(g):
        return math.nan
    hit = (rel > 0).astype(float)
    top = hit * (_ranks(starts, len(g)) < k)
    relevant = np.add.reduceat(hit, starts)
    found = np.add.reduceat(top, starts)
    keep = relevant > 0
    return float(np.mean(found[keep] / relevant[keep])) if keep.any() else math.nan


# --- slices ------------------------------------------------------------------------------
SliceFn = Callable[[pd.DataFrame], pd.Series]


def slice_metrics(
    df: pd.DataFrame,
    slicers: Mapping[str, SliceFn],
    *,
    score_col: str = SCORE,
    label_col: str,
    support: str = "positives",
    threshold: float | None = None,
) -> dict[str, dict[str, float]]:
    """Per slice value: rows, positives (named ``support``), AUC ROC, average precision (and recall/precision at the threshold).

    Keys are ``<slicer>=<value>``, e.g. ``amount=25-75``, ``customer=new``."""
    out: dict[str, dict[str, float]] = {}
    for name, fn in slicers.items():
        keys = fn(df)
        for value, part in df.groupby(keys, sort=True):
            y = part[label_col].to_numpy(dtype=int)
            s = part[score_col].to_numpy(dtype=float)
            row: dict[str, float] = {"rows": int(len(part)), support: int(y.sum())}
            row.update(binary_metrics(y, s))
            if threshold is not None:
                flag = s >= threshold
                tp = int(np.sum(flag & (y == 1)))
                row["recall_at_threshold"] = tp / int(y.sum()) if y.sum() else math.nan
                row["precision_at_threshold"] = tp / int(flag.sum()) if flag.sum() else math.nan
            out[f"{name}={value}"] = row
    return out


def finite_or_none(x: Any) -> float | None:
    """``x`` as a float, or None when it is NaN or infinite (a figure JSON and MLflow can hold)."""
    x = float(x)
    return x if math.isfinite(x) else None


def json_safe(obj: Any) -> Any:
    """Metrics as plain JSON: numpy scalars to Python, non-finite floats (NaN, inf) to None, keys to str."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
