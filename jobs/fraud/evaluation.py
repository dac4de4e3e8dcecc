"""Fraud's offline evaluation: what :class:`jobs.platform.use_case.UseCase` ``evaluate`` returns for fraud.

On a labelled holdout (transaction rows with ``tx_fraud``): AUC ROC, average precision (the gate's
primary metric), card precision@100 per day (the handbook's operational metric: investigators can
check about 100 cards a day), the decision threshold that minimises the expected cost
``c_fp * FP + c_fn * FN`` (``settings.case.costs``), and the same ranking metrics per slice (amount
bands, new vs known customers, weekday/weekend).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from jobs.fraud import metrics as FM
from jobs.fraud.metrics import WeightedCardPrecision
from jobs.fraud.settings import Costs
from jobs.platform import metrics as M
from jobs.platform.config import Settings, get_settings
from jobs.platform.evaluate import Evaluation
from jobs.platform.resampling import WeightedBinary, WeightedStatistics, slice_rows

CP_K = 100


def default_slicers(columns: list[str] | pd.Index) -> dict[str, M.SliceFn]:
    """Amount bands, new vs known customers (no transaction in the 30-day window), weekday/weekend."""
    slicers: dict[str, M.SliceFn] = {"amount": FM.amount_band}
    history = [c for c in columns if c.startswith("customer") and "nb_tx" in c and "30" in c]
    if history:
        slicers["customer"] = FM.customer_history(history[0])
    slicers["week"] = FM.weekday_weekend
    return slicers


def evaluate_scores(
    df: pd.DataFrame,
    scores: np.ndarray,
    *,
    costs: Costs | None = None,
    slicers: Mapping[str, M.SliceFn] | None = None,
    k: int = CP_K,
    model_version: str | None = None,
    threshold: float | None = None,
) -> Evaluation:
    """All offline metrics of ``scores`` on a labelled frame (transaction rows with tx_fraud).

    ``threshold``: the decision threshold chosen before this frame was seen (on the model's
    validation window): the cost, recall and precision are reported at it, with the frame's own
    cost-optimal threshold beside it (``optimal_threshold``, ``optimal_cost_per_tx``: what the
    threshold would have been in hindsight). Without it the frame's cost-optimal threshold is the
    policy (the validation window itself, or a model registered before thresholds were validated)."""
    costs = costs or get_settings().case.costs
    if len(df) != len(scores):
        raise ValueError(f"scores: length {len(scores)} != rows {len(df)}; rule: one score per row")
    if len(df) == 0:
        raise ValueError("holdout: 0 rows; rule: the evaluation window must contain transactions")
    scored = df.assign(score=np.asarray(scores, dtype=float))
    y = scored[FM.LABEL].to_numpy(dtype=int)
    metrics: dict[str, float] = {"rows": float(len(scored)), "frauds": float(y.sum())}
    metrics.update(M.binary_metrics(y, scored["score"]))
    per_day = FM.card_precision_at_k_per_day(scored, k)
    metrics[f"card_precision_at_{k}"] = float(per_day["precision"].mean())
    optimal = FM.cost_optimal_threshold(y, scored["score"], costs.false_positive, costs.false_negative)
    choice = (
        optimal
        if threshold is None
        else FM.cost_at_threshold(y, scored["score"], threshold, costs.false_positive, costs.false_negative)
    )
    metrics.update(
        optimal_threshold=optimal.threshold,
        optimal_cost_per_tx=optimal.cost_per_transaction,
    )
    metrics.update(
        decision_threshold=choice.threshold,
        expected_cost_per_tx=choice.cost_per_transaction,
        cost_saving_vs_no_model=1.0 - choice.expected_cost / choice.cost_flag_nothing
        if choice.cost_flag_nothing
        else 0.0,
        recall_at_threshold=choice.true_positives / y.sum() if y.sum() else math.nan,
        precision_at_threshold=choice.true_positives / choice.flagged if choice.flagged else math.nan,
    )
    slicers = slicers if slicers is not None else default_slicers(list(df.columns))
    slices = M.slice_metrics(
        scored, slicers, label_col=FM.LABEL, support="frauds", threshold=choice.threshold
    )
    days = pd.to_datetime(scored[FM.TIME]).dt.date
    window = (str(days.min()), str(days.max()))
    return Evaluation(
        window,
        metrics,
        slices,
        threshold=choice,
        per_day=per_day,
        per_day_name="card_precision_per_day",
        slice_metrics=("auc_roc", "average_precision", "rows", "frauds"),
        model_version=model_version,
    )


def paired_statistics(
    df: pd.DataFrame,
    scores: np.ndarray,
    codes: np.ndarray,
    units: int,
    *,
    slicers: Mapping[str, M.SliceFn] | None = None,
    k: int = CP_K,
) -> WeightedStatistics:
    """The gate's statistics of one model for any resample of units (its paired bootstrap; ``codes``
    the unit of each row): AP, AUC ROC and card precision@k over the frame, and AP in each slice of
    :func:`evaluate_scores`, equal to the evaluation's figures at unit counts."""
    y = df[FM.LABEL].to_numpy(dtype=int)
    s = np.asarray(scores, dtype="float64")
    overall = WeightedBinary(y, s, codes, units)
    days = pd.to_datetime(df[FM.TIME]).dt.normalize().to_numpy()
    cards = WeightedCardPrecision(days, df[FM.CARD].to_numpy(), s, y, k, codes)
    slicers = slicers if slicers is not None else default_slicers(list(df.columns))
    parts = [
        (name, WeightedBinary(y[rows], s[rows], codes[rows], units))
        for slicer, fn in slicers.items()
        for name, rows in slice_rows(df, fn(df), slicer)
    ]

    def statistics(counts: np.ndarray) -> dict[str, np.ndarray]:
        ap, auc = overall(counts)
        out = {"average_precision": ap, "auc_roc": auc, f"card_precision_at_{k}": cards(counts)}
        for name, part in parts:
            out[f"{name}/average_precision"] = part(counts)[0]
        return out

    return statistics


def evaluation_figures(df: pd.DataFrame, scores: np.ndarray, evaluation: Evaluation) -> dict[str, Any]:
    """ROC, precision-recall, score distribution and card precision@k per day (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = df[FM.LABEL].to_numpy(dtype=int)
    s = np.asarray(scores, dtype=float)
    m = evaluation.metrics
    figs: dict[str, Any] = {}

    fig, ax = plt.subplots(figsize=(5, 5))
    if y.min() != y.max():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"AUC = {m['auc_roc']:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (holdout)")
    ax.legend(loc="lower right")
    figs["roc_curve.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    if y.min() != y.max():
        precision, recall, _ = precision_recall_curve(y, s)
        ax.plot(recall, precision, label=f"AP = {m['average_precision']:.3f}")
    ax.axhline(y.mean(), color="k", ls="--", lw=0.8, label=f"fraud rate {y.mean():.4f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (holdout)")
    ax.legend(loc="upper right")
    figs["precision_recall_curve.png"] = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 51)
    ax.hist(s[y == 0], bins=bins, alpha=0.6, density=True, label="genuine", log=True)
    ax.hist(s[y == 1], bins=bins, alpha=0.6, density=True, label="fraud", log=True)
    ax.axvline(evaluation.threshold.threshold, color="r", lw=1, label="decision threshold")
    ax.set(xlabel="score", ylabel="density (log)", title="Score distribution (holdout)")
    ax.legend()
    figs["score_distribution.png"] = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    per_day = evaluation.per_day
    ax.bar([str(d) for d in per_day["day"]], per_day["precision"])
    ax.set(ylabel=f"card precision@{CP_K}", title="Card precision@100 per day (holdout)", ylim=(0, 1))
    ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    figs["card_precision_per_day.png"] = fig
    return figs


def evaluate(
    frame: pd.DataFrame,
    scores: np.ndarray,
    *,
    settings: Settings,
    model_version: str | None = None,
    threshold: float | None = None,
) -> Evaluation:
    """``UseCase.evaluate`` for fraud: :func:`evaluate_scores` with the settings' error costs."""
    return evaluate_scores(
        frame, scores, costs=settings.case.costs, model_version=model_version, threshold=threshold
    )


def describe(ev: Evaluation) -> str:
    """The evaluation as the CLIs print it."""
    m = ev.metrics
    lines: list[str] = []
    add = lines.append
    add(f"window {ev.window[0]} .. {ev.window[1]}  rows {m['rows']:.0f}  frauds {m['frauds']:.0f}")
    add(f"  AUC ROC              {m['auc_roc']:.4f}")
    add(f"  average precision    {m['average_precision']:.4f}")
    add(f"  card precision@{CP_K}   {m[f'card_precision_at_{CP_K}']:.4f}")
    add(
        f"  decision threshold   {m['decision_threshold']:.4f}  (cost/tx {m['expected_cost_per_tx']:.3f},"
        f" saving vs no model {m['cost_saving_vs_no_model']:.1%})"
    )
    add("  slices:")
    for name, row in ev.slices.items():
        add(
            f"    {name:<22} rows {row['rows']:>7}  frauds {row['frauds']:>5}  "
            f"AUC {row['auc_roc']:.3f}  AP {row['average_precision']:.3f}"
        )
    return "\n".join(lines)
