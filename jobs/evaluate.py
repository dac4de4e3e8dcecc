"""Offline evaluation on a holdout window, and the champion/challenger gate.

Protocol (handbook chapter 5.2, "train/test with delay"): a model trained on days
``[train_start, train_end]`` is tested on a later window ``[holdout_start, holdout_end]`` with at
least ``label_delay_days`` days between them (in production, the most recent labels are not known
yet when a model is trained) and only once the holdout's own labels have matured (every fraud of a
holdout day has been reported ``label_delay_days`` later).

On the holdout we report AUC ROC, average precision (the primary metric), card precision@100 per
day (the handbook's operational metric), the decision threshold that minimises the expected cost
``c_fp * FP + c_fn * FN`` (``settings.costs``) and the same ranking metrics per slice. The gate
compares a challenger with the champion re-scored on the SAME holdout.

CLI::

    python -m jobs.evaluate model --alias champion --start 2018-04-22 --end 2018-04-28
    python -m jobs.evaluate handbook      # the handbook's protocol figure, end to end
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jobs import metrics as M
from jobs.config import Costs, Gate, Settings, get_settings
from jobs.logs import get_logger
from jobs.storage import StorageLayout, as_date

PRIMARY_METRIC = "average_precision"
GUARDRAIL_METRICS = ("auc_roc", "card_precision_at_100")
CP_K = 100


# --- windows and the label delay ------------------------------------------------------------
@dataclass(frozen=True)
class Windows:
    train_start: dt.date
    train_end: dt.date
    holdout_start: dt.date
    holdout_end: dt.date

    def as_params(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Windows:
        return cls(**{f.name: as_date(data[f.name]) for f in dataclasses.fields(cls)})


def default_windows(
    as_of: dt.date | str,
    train_days: int,
    holdout_days: int,
    label_delay_days: int,
    earliest: dt.date | str | None = None,
) -> Windows:
    """Windows ending at the last matured day before ``as_of``:

    holdout = the ``holdout_days`` days ending ``label_delay_days`` before ``as_of`` (their labels
    are complete), a ``label_delay_days`` gap, then ``train_days`` of training (clipped at
    ``earliest``, the first day with data)."""
    as_of = as_date(as_of)
    holdout_end = as_of - dt.timedelta(days=label_delay_days)
    holdout_start = holdout_end - dt.timedelta(days=holdout_days - 1)
    train_end = holdout_start - dt.timedelta(days=label_delay_days + 1)
    train_start = train_end - dt.timedelta(days=train_days - 1)
    if earliest is not None:
        train_start = max(train_start, as_date(earliest))
    if train_start > train_end:
        raise ValueError(
            f"as_of: value {as_of} leaves no training days; rule: need train + {label_delay_days}-day gap"
            f" + {holdout_days} holdout days + {label_delay_days} days of label maturity after "
            f"{earliest or 'the first day'}"
        )
    return Windows(train_start, train_end, holdout_start, holdout_end)


def check_protocol(w: Windows, label_delay_days: int, labels_through: dt.date | None = None) -> None:
    """Raise ValueError (naming the field, value and rule) when the windows break the protocol."""
    if w.train_start > w.train_end:
        raise ValueError(f"train_start: value {w.train_start} is after train_end {w.train_end}")
    if w.holdout_start > w.holdout_end:
        raise ValueError(f"holdout_start: value {w.holdout_start} is after holdout_end {w.holdout_end}")
    gap = (w.holdout_start - w.train_end).days - 1
    if gap < label_delay_days:
        raise ValueError(
            f"holdout_start: value {w.holdout_start} is {gap} day(s) after train_end {w.train_end}; "
            f"rule: the gap must be >= label_delay_days ({label_delay_days}) so that training never "
            "sees the holdout period nor labels it could not have known"
        )
    if labels_through is not None:
        matured = labels_through - dt.timedelta(days=label_delay_days)
        if w.holdout_end > matured:
            raise ValueError(
                f"holdout_end: value {w.holdout_end} has immature labels (labels arrived through "
                f"{labels_through}); rule: holdout_end <= last label day - {label_delay_days} = {matured}"
            )


def labels_through(layout: StorageLayout) -> dt.date | None:
    """The last day whose chargeback reports have been ingested (the last labels partition)."""
    parts = layout.partitions("labels")
    return parts[-1] if parts else None


# --- evaluation -----------------------------------------------------------------------------
def default_slicers(columns: list[str] | pd.Index) -> dict[str, M.SliceFn]:
    """Amount bands, new vs known customers (no transaction in the 30-day window), weekday/weekend."""
    slicers: dict[str, M.SliceFn] = {"amount": M.amount_band}
    history = [c for c in columns if c.startswith("customer") and "nb_tx" in c and "30" in c]
    if history:
        slicers["customer"] = M.customer_history(history[0])
    slicers["week"] = M.weekday_weekend
    return slicers


@dataclass
class Evaluation:
    """Metrics of one model on one scored window."""

    window: tuple[str, str]
    metrics: dict[str, float]
    threshold: M.ThresholdChoice
    per_day: pd.DataFrame
    slices: dict[str, dict[str, float]]
    model_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def flat(self, prefix: str = "holdout_") -> dict[str, float]:
        """Flat numeric metrics for MLflow (slice metrics as ``<prefix>slice.<slice>.<metric>``)."""
        out = {f"{prefix}{k}": v for k, v in self.metrics.items()}
        for name, row in self.slices.items():
            key = name.replace("=", ".").replace(">", "ge").replace("<", "lt")
            for metric in ("auc_roc", "average_precision", "rows", "frauds"):
                out[f"{prefix}slice.{key}.{metric}"] = row[metric]
        return {k: float(v) for k, v in out.items() if v is not None and not _isnan(v)}

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (also stored in the audit log and as an MLflow artifact)."""
        return {
            "window": list(self.window),
            "model_version": self.model_version,
            "metrics": M.json_safe(self.metrics),
            "threshold": M.json_safe(dataclasses.asdict(self.threshold)),
            "card_precision_per_day": M.json_safe(
                self.per_day.assign(day=self.per_day["day"].astype(str)).to_dict("records")
            ),
            "slices": M.json_safe(self.slices),
        }


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def evaluate_scores(
    df: pd.DataFrame,
    scores: np.ndarray,
    *,
    costs: Costs | None = None,
    slicers: Mapping[str, M.SliceFn] | None = None,
    k: int = CP_K,
    model_version: str | None = None,
) -> Evaluation:
    """All offline metrics of ``scores`` on a labelled frame (transaction rows with tx_fraud)."""
    costs = costs or get_settings().costs
    if len(df) != len(scores):
        raise ValueError(f"scores: length {len(scores)} != rows {len(df)}; rule: one score per row")
    if len(df) == 0:
        raise ValueError("holdout: 0 rows; rule: the evaluation window must contain transactions")
    scored = df.assign(score=np.asarray(scores, dtype=float))
    y = scored[M.LABEL].to_numpy(dtype=int)
    metrics: dict[str, float] = {"rows": float(len(scored)), "frauds": float(y.sum())}
    metrics.update(M.ranking_metrics(y, scored["score"]))
    per_day = M.card_precision_at_k_per_day(scored, k)
    metrics[f"card_precision_at_{k}"] = float(per_day["precision"].mean())
    choice = M.cost_optimal_threshold(y, scored["score"], costs.false_positive, costs.false_negative)
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
    slices = M.slice_metrics(scored, slicers, threshold=choice.threshold)
    days = pd.to_datetime(scored[M.TIME]).dt.date
    window = (str(days.min()), str(days.max()))
    return Evaluation(window, metrics, choice, per_day, slices, model_version=model_version)


# --- the gate ---------------------------------------------------------------------------------
@dataclass
class GateDecision:
    promote: bool
    reason: str
    checks: list[dict[str, Any]]

    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["passed"]]

    def as_dict(self) -> dict[str, Any]:
        return M.json_safe({"promote": self.promote, "reason": self.reason, "checks": self.checks})


def gate(challenger: Evaluation, champion: Evaluation | None, policy: Gate | None = None) -> GateDecision:
    """Should the challenger replace the champion? Both must be evaluated on the same holdout.

    * absolute floors (AUC ROC, AP) always apply — they alone decide for the first model;
    * primary metric: challenger AP > champion AP + margin;
    * guardrails: AUC ROC and card precision@100 may not drop by more than the tolerance;
    * slices: in every slice with at least ``min_slice_frauds`` frauds, AP may not drop by more
      than the slice tolerance."""
    policy = policy or get_settings().gate
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float, rule: str, bound: float, passed: bool) -> None:
        checks.append({"check": name, "value": value, "rule": rule, "bound": bound, "passed": bool(passed)})

    c = challenger.metrics
    for metric, floor in (
        ("auc_roc", policy.min_auc_roc),
        ("average_precision", policy.min_average_precision),
    ):
        value = c.get(metric, math.nan)
        check(f"floor.{metric}", value, ">=", floor, not _isnan(value) and value >= floor)

    if champion is not None:
        if champion.window != challenger.window or champion.metrics["rows"] != c["rows"]:
            raise ValueError(
                f"champion evaluation: window {champion.window} ({champion.metrics['rows']:.0f} rows) != "
                f"challenger window {challenger.window} ({c['rows']:.0f} rows); rule: same holdout"
            )
        ch = champion.metrics
        bound = ch[PRIMARY_METRIC] + policy.margin
        check(f"primary.{PRIMARY_METRIC}", c[PRIMARY_METRIC], ">", bound, c[PRIMARY_METRIC] > bound)
        for metric in GUARDRAIL_METRICS:
            if _isnan(ch.get(metric, math.nan)):
                continue
            bound = ch[metric] - policy.guardrail_tolerance
            value = c.get(metric, math.nan)
            check(f"guardrail.{metric}", value, ">=", bound, not _isnan(value) and value >= bound)
        for name, row in sorted(champion.slices.items()):
            mine = challenger.slices.get(name)
            if row["frauds"] < policy.min_slice_frauds or _isnan(row["average_precision"]):
                continue
            value = math.nan if mine is None else mine["average_precision"]
            bound = row["average_precision"] - policy.slice_tolerance
            check(f"slice.{name}.average_precision", value, ">=", bound, not _isnan(value) and value >= bound)

    failed = [x for x in checks if not x["passed"]]
    if failed:
        reason = "refused: " + "; ".join(
            f"{x['check']} = {x['value']:.4f} not {x['rule']} {x['bound']:.4f}" for x in failed
        )
        return GateDecision(False, reason, checks)
    if champion is None:
        return GateDecision(True, "first champion: passes the absolute floors", checks)
    return GateDecision(
        True,
        f"beats champion v{champion.model_version}: {PRIMARY_METRIC} {c[PRIMARY_METRIC]:.4f} > "
        f"{champion.metrics[PRIMARY_METRIC]:.4f} + margin {policy.margin}; no guardrail or slice regressed",
        checks,
    )


# --- plots --------------------------------------------------------------------------------------
def evaluation_figures(df: pd.DataFrame, scores: np.ndarray, evaluation: Evaluation) -> dict[str, Any]:
    """ROC, precision-recall, score distribution and card precision@k per day (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = df[M.LABEL].to_numpy(dtype=int)
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


def log_evaluation(run_id: str, df: pd.DataFrame, scores: np.ndarray, evaluation: Evaluation) -> None:
    """Attach holdout metrics, plots and the full evaluation (per-day, slices) to an MLflow run."""
    import matplotlib.pyplot as plt
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(evaluation.flat())
        for name, fig in evaluation_figures(df, scores, evaluation).items():
            mlflow.log_figure(fig, f"plots/{name}")
            plt.close(fig)
        mlflow.log_dict(evaluation.summary(), "evaluation/holdout.json")
        slices = pd.DataFrame.from_dict(evaluation.slices, orient="index").rename_axis("slice")
        mlflow.log_text(slices.to_csv(), "evaluation/slices.csv")


# --- the handbook's protocol -------------------------------------------------------------------
HANDBOOK_WINDOWS = Windows(
    dt.date(2018, 7, 25), dt.date(2018, 7, 31), dt.date(2018, 8, 8), dt.date(2018, 8, 14)
)
HANDBOOK_FIGURES = {"auc_roc": 0.87, "average_precision": 0.68, "card_precision_at_100": 0.28}


def run_handbook_protocol(
    n_customers: int = 5_000,
    n_terminals: int = 10_000,
    seed: int = 0,
    *,
    via_ingest: bool = False,
    settings: Settings | None = None,
) -> dict[str, Evaluation]:
    """Handbook chapters 3.5/5.2: train on 2018-07-25..07-31, 7-day delay, test on 08-08..08-14.

    Runs in its own platform home (``<home>/handbook``): simulates the days the features need,
    publishes them to the lake (directly in the ingestion contract, or through ``jobs.ingest`` with
    ``via_ingest``), builds the daily feature snapshots with Spark (``jobs.features``), applies the
    Feast repo and assembles both windows through the configured feature service (``fraud_v2``); then trains the
    platform's XGBoost (``scale_pos_weight`` = neg/pos) and the handbook's unweighted default, logs
    both to MLflow (experiment ``handbook-protocol``) and evaluates them on the test week."""
    import shutil

    from jobs import feature_store
    from jobs.features import LOOKBACK_DAYS, build_features
    from jobs.simulate import Simulator, SimulatorConfig, write_lake
    from jobs.spark import get_spark
    from jobs.train import TrainParams, train_and_log

    base = settings or get_settings()
    settings = base.model_copy(update={"home": base.home / "handbook"})
    layout = StorageLayout(settings)
    log = get_logger("handbook")
    w = HANDBOOK_WINDOWS
    delay = settings.label_delay_days
    first = w.train_start - dt.timedelta(days=delay + LOOKBACK_DAYS + 1)
    last = w.holdout_end + dt.timedelta(days=delay)  # the test week's labels must mature
    cfg = SimulatorConfig(n_customers=n_customers, n_terminals=n_terminals, seed=seed, label_delay_days=delay)
    sim = Simulator(cfg)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    log.info("simulating", first=str(first), last=str(last), days=len(days), via_ingest=via_ingest)
    spark = get_spark("handbook-protocol", settings)
    if via_ingest:
        from jobs.ingest import ingest
        from jobs.simulate import simulate

        simulate(cfg, first, last, layout)
        for day in days:
            ingest("transactions", day, settings, spark)
            ingest("labels", day, settings, spark)
    else:
        write_lake(sim, days[0], days[-1], layout)
    check_protocol(w, delay, labels_through=labels_through(layout))
    build_features(w.train_start - dt.timedelta(days=1), w.holdout_end, settings, spark=spark)
    shutil.rmtree(settings.home / "feast", ignore_errors=True)  # a fresh registry for this world
    feature_store.apply(settings)
    train_df = feature_store.get_training_set(w.train_start, w.train_end, settings)
    test_df = feature_store.get_training_set(w.holdout_start, w.holdout_end, settings)
    features = list(feature_store.FEATURE_COLUMNS)
    results: dict[str, Evaluation] = {}
    from jobs.registry import predict_scores

    for label, params in (
        ("platform (scale_pos_weight=neg/pos)", TrainParams()),
        ("handbook default (unweighted)", TrainParams(scale_pos_weight="none")),
    ):
        run = train_and_log(
            train_df,
            features,
            params,
            windows=w,
            feature_service=settings.feature_service,
            feature_service_version="handbook",
            reason=f"handbook protocol: {label}",
            settings=settings,
            experiment="handbook-protocol",
        )
        scores = predict_scores(run.model, test_df)
        ev = evaluate_scores(test_df, scores, costs=settings.costs)
        ev.extra = {"run_id": run.run_id, "train_rows": run.train_rows, "train_frauds": run.train_frauds}
        log_evaluation(run.run_id, test_df, scores, ev)
        results[label] = ev
    report = {
        "windows": w.as_params(),
        "world": {"customers": n_customers, "terminals": n_terminals, "seed": seed},
        "train_rows": len(train_df),
        "test_rows": len(test_df),
        "handbook_reference": HANDBOOK_FIGURES,
        "results": {k: {**M.json_safe(v.metrics), **v.extra} for k, v in results.items()},
        "mlflow_tracking_uri": settings.mlflow_tracking_uri,
    }
    out = StorageLayout(base).path("reports", None, "handbook") / "protocol.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log.info("handbook protocol done", report=str(out))
    return results


# --- CLI ------------------------------------------------------------------------------------
def evaluate_registered(
    alias: str | None, version: str | None, start: str, end: str, settings: Settings | None = None
) -> Evaluation:
    """Score a registered model on a window of the feature service and evaluate it."""
    from jobs import feature_store, registry

    settings = settings or get_settings()
    layout = StorageLayout(settings)
    through = labels_through(layout)
    end_d = as_date(end)
    if through is None or end_d > through - dt.timedelta(days=settings.label_delay_days):
        raise ValueError(
            f"end: value {end} has immature labels (labels through {through}); "
            f"rule: end <= last label day - {settings.label_delay_days}"
        )
    model, mv, _ = registry.load_model(alias=alias, version=version, settings=settings)
    frame = feature_store.get_training_set(as_date(start), end_d, settings=settings)
    scores = registry.predict_scores(model, frame)
    return evaluate_scores(frame, scores, costs=settings.costs, model_version=mv)


def _print_evaluation(ev: Evaluation) -> None:
    m = ev.metrics
    print(f"window {ev.window[0]} .. {ev.window[1]}  rows {m['rows']:.0f}  frauds {m['frauds']:.0f}")
    print(f"  AUC ROC              {m['auc_roc']:.4f}")
    print(f"  average precision    {m['average_precision']:.4f}")
    print(f"  card precision@{CP_K}   {m[f'card_precision_at_{CP_K}']:.4f}")
    print(
        f"  decision threshold   {m['decision_threshold']:.4f}  (cost/tx {m['expected_cost_per_tx']:.3f},"
        f" saving vs no model {m['cost_saving_vs_no_model']:.1%})"
    )
    print("  slices:")
    for name, row in ev.slices.items():
        print(
            f"    {name:<22} rows {row['rows']:>7}  frauds {row['frauds']:>5}  "
            f"AUC {row['auc_roc']:.3f}  AP {row['average_precision']:.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("model", help="evaluate a registered model on a matured window")
    p.add_argument("--alias", default=None, help="registry alias (default champion)")
    p.add_argument("--version", default=None, help="registry version (instead of an alias)")
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--json", action="store_true", help="print the full evaluation as JSON")
    h = sub.add_parser("handbook", help="the handbook's train/delay/test protocol, end to end")
    h.add_argument("--customers", type=int, default=5_000)
    h.add_argument("--terminals", type=int, default=10_000)
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--ingest", action="store_true", help="publish the lake through jobs.ingest (slower)")
    args = parser.parse_args(argv)

    if args.command == "model":
        ev = evaluate_registered(
            args.alias if args.version is None else None, args.version, args.start, args.end
        )
        if args.json:
            json.dump(ev.summary(), sys.stdout, indent=2)
            print()
        else:
            _print_evaluation(ev)
        return 0
    results = run_handbook_protocol(
        n_customers=args.customers, n_terminals=args.terminals, seed=args.seed, via_ingest=args.ingest
    )
    w = HANDBOOK_WINDOWS
    print(
        f"\nHandbook protocol: train {w.train_start}..{w.train_end}, {get_settings().label_delay_days}-day "
        f"delay, test {w.holdout_start}..{w.holdout_end}"
    )
    for label, ev in results.items():
        print(f"\n== XGBoost, {label}  (MLflow run {ev.extra['run_id']})")
        _print_evaluation(ev)
    ref = HANDBOOK_FIGURES
    print(
        f"\nhandbook's XGBoost (per-transaction features): AUC {ref['auc_roc']}, AP "
        f"{ref['average_precision']}, CP@100 {ref['card_precision_at_100']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
