"""The handbook's protocol, end to end: ``python -m jobs.fraud.handbook`` (``make handbook-eval``).

Handbook chapters 3.5/5.2 (Le Borgne et al.): train on 2018-07-25..07-31, a 7-day label delay,
test on 2018-08-08..08-14, on the simulated world at the handbook's size. The figure the README
quotes beside the handbook's published one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from jobs.fraud.evaluation import describe, evaluate_scores, evaluation_figures
from jobs.platform import metrics as M
from jobs.platform.config import Settings, get_settings
from jobs.platform.evaluate import Evaluation, Windows, check_protocol, labels_through, log_evaluation
from jobs.platform.logs import get_logger
from jobs.platform.storage import StorageLayout

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
    publishes them to the lake (directly in the ingestion contract, or through ``jobs.platform.ingest`` with
    ``via_ingest``), builds the daily feature snapshots with Spark (``jobs.fraud.features``), applies the
    Feast repo and assembles both windows through the configured feature service (``fraud_v2``); then trains the
    platform's XGBoost (``scale_pos_weight`` = neg/pos) and the handbook's unweighted default, logs
    both to MLflow (experiment ``handbook-protocol``) and evaluates them on the test week."""
    import shutil

    from jobs.fraud import training_data
    from jobs.fraud.features import LOOKBACK_DAYS, build_features
    from jobs.fraud.simulate import Simulator, SimulatorConfig, write_lake
    from jobs.platform import feature_store
    from jobs.platform.spark import get_spark
    from jobs.platform.train import TrainParams, train_and_log

    base = settings or get_settings()
    settings = base.model_copy(update={"home": base.home / "handbook"})
    layout = StorageLayout(settings)
    log = get_logger("handbook")
    w = HANDBOOK_WINDOWS
    delay = settings.case.label_delay_days
    first = w.train_start - dt.timedelta(days=delay + LOOKBACK_DAYS + 1)
    last = w.holdout_end + dt.timedelta(days=delay)  # the test week's labels must mature
    cfg = SimulatorConfig(n_customers=n_customers, n_terminals=n_terminals, seed=seed, label_delay_days=delay)
    sim = Simulator(cfg)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    log.info("simulating", first=str(first), last=str(last), days=len(days), via_ingest=via_ingest)
    spark = get_spark("handbook-protocol", settings)
    if via_ingest:
        from jobs.fraud.simulate import simulate
        from jobs.platform.ingest import ingest

        simulate(cfg, first, last, layout)
        for day in days:
            ingest("transactions", day, settings, spark)
            ingest("labels", day, settings, spark)
    else:
        write_lake(sim, days[0], days[-1], layout)
    check_protocol(w, delay, labels_through=labels_through(layout))
    build_features(w.train_start - dt.timedelta(days=1), w.holdout_end, settings, spark=spark)
    shutil.rmtree(settings.feast_home, ignore_errors=True)  # a fresh registry for this world
    feature_store.apply(settings)
    train_df = training_data.get_training_set(w.train_start, w.train_end, settings)
    test_df = training_data.get_training_set(w.holdout_start, w.holdout_end, settings)
    features = list(training_data.FEATURE_COLUMNS)
    results: dict[str, Evaluation] = {}
    from jobs.platform.registry import predict_scores

    for label, params in (
        ("platform (scale_pos_weight=neg/pos)", TrainParams()),
        ("handbook default (unweighted)", TrainParams(scale_pos_weight="none")),
    ):
        run = train_and_log(
            train_df,
            features,
            params,
            windows=w,
            feature_service=settings.case.feature_service,
            feature_service_version="handbook",
            reason=f"handbook protocol: {label}",
            settings=settings,
            experiment="handbook-protocol",
        )
        scores = predict_scores(run.model, test_df)
        ev = evaluate_scores(test_df, scores, costs=settings.case.costs)
        ev.extra = {"run_id": run.run_id, "train_rows": run.train_rows, "train_frauds": run.train_positives}
        log_evaluation(run.run_id, test_df, scores, ev, figures=evaluation_figures)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.fraud.handbook", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ingest", action="store_true", help="publish the lake through jobs.platform.ingest (slower)"
    )
    args = parser.parse_args(argv)
    results = run_handbook_protocol(
        n_customers=args.customers, n_terminals=args.terminals, seed=args.seed, via_ingest=args.ingest
    )
    w = HANDBOOK_WINDOWS
    print(
        f"\nHandbook protocol: train {w.train_start}..{w.train_end}, {get_settings().case.label_delay_days}-day "
        f"delay, test {w.holdout_start}..{w.holdout_end}"
    )
    for label, ev in results.items():
        print(f"\n== XGBoost, {label}  (MLflow run {ev.extra['run_id']})")
        print(describe(ev))
    ref = HANDBOOK_FIGURES
    print(
        f"\nhandbook's XGBoost (per-transaction features): AUC {ref['auc_roc']}, AP "
        f"{ref['average_precision']}, CP@100 {ref['card_precision_at_100']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
