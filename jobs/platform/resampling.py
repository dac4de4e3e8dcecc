"""The paired bootstrap the champion/challenger gate decides with.

Both models are scored on the same holdout, so their metrics are compared on the same resamples of
it: each resample draws the holdout's independent units (a use case names the column: fraud's
cards, ranking's users) with replacement, and a row counts as many times as its unit was drawn. The
differences of the two models' metrics over ``B`` resamples give the CI of the difference; pairing
removes the variance the two share (most of it: the same hard cases are hard for both), which is
what makes a small holdout able to tell a better model from an equal one at all.

A use case supplies, per model, a *weighted statistics* function: unit counts of shape
``(b, units)`` (``b`` resamples at once; a row weighs its unit's count) -> metric name -> ``(b,)``
values. Metric names are those of its
``Evaluation.metrics``, and ``<slice>/<metric>`` for a slice of ``Evaluation.slices``; at unit
weights the values are the evaluation's own. The building blocks here compute the usual metrics for
any weights in one pass over rows sorted once:

* :class:`WeightedBinary`: average precision and AUC ROC, equal to scikit-learn's
  ``average_precision_score`` / ``roc_auc_score`` with ``sample_weight`` (ties included);
* :class:`WeightedGroupMean`: the weighted mean of per-group values (e.g. NDCG@10 per request).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

WeightedStatistics = Callable[[np.ndarray], Mapping[str, np.ndarray]]
"""Unit counts ``(b, units)`` (how often each unit was drawn, per resample) -> metric name ->
``(b,)`` values (one model on one holdout); ``np.ones((1, units))`` gives the holdout's own figures."""

CHUNK_CELLS = 2_000_000  # resamples per chunk x units of the count matrix


class WeightedBinary:
    """Average precision and AUC ROC of one model's scores for any resample of units.

    Rows are sorted by score once. Both metrics only need, at each run of equal scores holding a
    positive, the weight of the positives and of all rows ranked at or above it (and above its
    start, for ties): prefix sums at a few checkpoints. A row's weight is its unit's count, so the
    prefix sums of a resample are ``counts @ C`` for a sparse matrix ``C`` (unit x checkpoint
    bucket: how many of the unit's rows fall in each bucket) followed by a cumulative sum over the
    buckets: one sparse product per chunk of resamples instead of a pass over a dense row-weight
    matrix. Exact (integer sums), equal to scikit-learn with ``sample_weight`` at any counts."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray, codes: np.ndarray, units: int):
        from scipy import sparse

        y = np.asarray(labels, dtype="float64")
        s = np.asarray(scores, dtype="float64")
        codes = np.asarray(codes, dtype="int64")
        if not y.shape == s.shape == codes.shape:
            raise ValueError(
                f"scores: lengths labels {len(y)}, scores {len(s)}, units {len(codes)}; rule: one per row"
            )
        n = len(s)
        order = np.argsort(-s, kind="mergesort")  # scikit-learn's order: ties keep row order
        y, s, codes = y[order], s[order], codes[order]
        run_start = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if n else np.array([], dtype="int64")
        run_end = np.r_[run_start[1:] - 1, n - 1] if n else run_start
        run_of_row = np.repeat(np.arange(len(run_start)), np.diff(np.r_[run_start, n]))
        positive = np.flatnonzero(y > 0)
        runs = np.unique(run_of_row[positive])  # the runs holding a positive
        self.n_runs = len(runs)
        # checkpoints: before each such run (exclusive prefix) and at its end (inclusive prefix)
        checkpoints = np.r_[run_start[runs] - 1, run_end[runs]]  # first n_runs: before, then: at end
        ordered = np.argsort(checkpoints, kind="stable")
        self.rank = np.empty_like(ordered)
        self.rank[ordered] = np.arange(len(ordered))
        bucket = np.searchsorted(checkpoints[ordered], np.arange(n), side="left")
        self.C = sparse.csr_matrix(
            (np.ones(n), (codes, bucket)), shape=(units, len(checkpoints) + 1), dtype="float64"
        )
        self.total = np.asarray(self.C.sum(axis=1)).ravel()  # rows per unit
        # positives: their units and the run each belongs to (tp at a run's end is their prefix sum)
        self.pos_codes = codes[positive]
        pos_run = np.searchsorted(runs, run_of_row[positive])
        self.pos_run_end = np.r_[np.flatnonzero(np.diff(pos_run)), len(positive) - 1] if len(positive) else []

    def __call__(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(average precision, AUC ROC), each ``(b,)``; NaN where a resample lacks a class."""
        counts = np.atleast_2d(np.asarray(counts, dtype="float64"))
        b = counts.shape[0]
        if self.n_runs == 0:
            return np.full(b, np.nan), np.full(b, np.nan)
        prefix = np.cumsum(np.asarray(self.C.T @ counts.T).T, axis=1)[:, self.rank]
        seen_before, seen_end = prefix[:, : self.n_runs], prefix[:, self.n_runs :]
        tp_rows = np.cumsum(counts[:, self.pos_codes], axis=1)
        tp_end = tp_rows[:, self.pos_run_end]  # positives at or above each run's end
        gained = np.diff(tp_end, axis=1, prepend=0.0)
        tp_before = tp_end - gained
        pos = tp_end[:, -1]
        neg = counts @ self.total - pos
        fp_end, fp_before = seen_end - tp_end, seen_before - tp_before
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(seen_end > 0, tp_end / np.where(seen_end > 0, seen_end, 1.0), 0.0)
            ap = (gained * precision).sum(axis=1) / pos
            below = neg[:, None] - fp_end + 0.5 * (fp_end - fp_before)
            auc = (gained * below).sum(axis=1) / (pos * neg)
        ap = np.where(pos > 0, ap, np.nan)
        auc = np.where((pos > 0) & (neg > 0), auc, np.nan)
        return ap, auc


class WeightedGroupMean:
    """The mean over groups of per-group values (e.g. NDCG@10 per request), each group weighted by
    its unit's count (``codes``: the unit of each group; a group lies in one unit)."""

    def __init__(self, values: np.ndarray, codes: np.ndarray):
        self.values = np.asarray(values, dtype="float64")
        self.codes = np.asarray(codes, dtype="int64")
        if self.values.shape != self.codes.shape:
            raise ValueError(
                f"codes: {len(self.codes)} != values {len(self.values)}; rule: one unit per group"
            )

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        w = np.atleast_2d(counts)[:, self.codes]
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (w * self.values).sum(axis=1) / total, np.nan)


def slice_rows(
    frame: pd.DataFrame, keys: pd.Series | np.ndarray, name: str
) -> Iterator[tuple[str, np.ndarray]]:
    """``(<name>=<value>, row positions)`` per value of ``keys``, in the order and with the names
    :func:`jobs.platform.metrics.slice_metrics` gives its slices."""
    codes = pd.Series(np.asarray(keys), index=frame.index)
    for value, part in frame.groupby(codes, sort=True):
        yield f"{name}={value}", frame.index.get_indexer(part.index)


# --- the resampling itself -------------------------------------------------------------------
def unit_codes(frame: pd.DataFrame, unit: str) -> tuple[np.ndarray, int]:
    """Each row's unit as a code ``0..units-1``, and the number of units."""
    if unit not in frame.columns:
        raise ValueError(
            f"bootstrap.unit: column {unit!r} is not in the holdout (columns: {sorted(frame.columns)[:12]}...);"
            " rule: the resampled unit must be a holdout column"
        )
    codes, uniques = pd.factorize(frame[unit], sort=True)
    if (codes < 0).any():
        raise ValueError(f"bootstrap.unit: column {unit!r} has missing values; rule: every row has a unit")
    return codes.astype("int64"), len(uniques)


def unit_count_chunks(units: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The unit counts of ``resamples`` bootstraps, in chunks of shape ``(b, units)``: each resample
    draws ``units`` units with replacement (a row weighs its unit's count). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_CELLS // max(1, units))
    p = np.full(units, 1.0 / units)
    done = 0
    while done < resamples:
        b = min(per_chunk, resamples - done)
        yield rng.multinomial(units, p, size=b).astype("float64")
        done += b


@dataclass
class PairedResamples:
    """Challenger and champion metrics on the holdout (``estimates``: name -> (challenger, champion)
    at unit weights) and on each of ``resamples`` paired resamples (``draws``: name -> array
    ``(resamples, 2)``, challenger then champion)."""

    unit: str
    units: int
    resamples: int
    seed: int
    estimates: dict[str, tuple[float, float]]
    draws: dict[str, np.ndarray]

    def __contains__(self, name: str) -> bool:
        return name in self.draws

    def difference(self, name: str, higher_is_better: bool = True) -> tuple[float, np.ndarray]:
        """(estimate, resampled values) of challenger minus champion in the good direction (positive
        = the challenger is better); resamples where either is undefined are dropped."""
        sign = 1.0 if higher_is_better else -1.0
        c, ch = self.estimates[name]
        d = sign * (self.draws[name][:, 0] - self.draws[name][:, 1])
        return sign * (c - ch), d[np.isfinite(d)]

    def summary(self) -> dict[str, object]:
        return {"unit": self.unit, "units": self.units, "resamples": self.resamples, "seed": self.seed}


Statistics = Callable[[pd.DataFrame, np.ndarray, np.ndarray, int], WeightedStatistics]
"""``(frame, scores, unit codes of its rows, units)`` -> the model's :data:`WeightedStatistics`."""


def paired_bootstrap(
    frame: pd.DataFrame,
    challenger_scores: np.ndarray,
    champion_scores: np.ndarray,
    statistics: Statistics,
    *,
    unit: str,
    resamples: int,
    seed: int,
) -> PairedResamples:
    """Both models' statistics at unit weights and on ``resamples`` shared unit bootstraps of ``frame``."""
    if resamples < 1:
        raise ValueError(f"bootstrap.resamples: value {resamples} is invalid; rule: at least 1")
    codes, units = unit_codes(frame, unit)
    challenger = statistics(frame, np.asarray(challenger_scores, dtype="float64"), codes, units)
    champion = statistics(frame, np.asarray(champion_scores, dtype="float64"), codes, units)
    ones = np.ones((1, units))
    c0, ch0 = challenger(ones), champion(ones)
    names = [k for k in c0 if k in ch0]
    estimates = {k: (float(c0[k][0]), float(ch0[k][0])) for k in names}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for counts in unit_count_chunks(units, resamples, seed):
        a, b = challenger(counts), champion(counts)
        for k in names:
            parts[k].append(np.column_stack([a[k], b[k]]))
    draws = {k: np.concatenate(v) for k, v in parts.items()}
    return PairedResamples(unit, units, resamples, seed, estimates, draws)


def holm(p_values: Mapping[str, float], alpha: float) -> dict[str, tuple[bool, float]]:
    """Holm's step-down procedure: name -> (rejected, the level its p-value was compared with).

    The family-wise error rate of the rejections is at most ``alpha`` whatever the dependence
    between the tests. Once one hypothesis is kept, all with larger p-values are kept."""
    ordered = sorted(p_values.items(), key=lambda kv: (kv[1], kv[0]))
    m = len(ordered)
    out: dict[str, tuple[bool, float]] = {}
    stopped = False
    for i, (name, p) in enumerate(ordered):
        level = alpha / (m - i)
        stopped = stopped or not p <= level
        out[name] = (not stopped, level)
    return out
