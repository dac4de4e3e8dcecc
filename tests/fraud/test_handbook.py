"""The handbook table (``make handbook-eval``): the day bootstrap, the bar, and the whole protocol
on a small world (Spark features, Feast, the search, MLflow runs with their explanations)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from jobs.fraud import handbook as H


def scored_days(days: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(days):
        n = 300
        rows.append(
            pd.DataFrame(
                {
                    "tx_datetime": pd.Timestamp("2018-08-08")
                    + pd.Timedelta(days=d)
                    + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
                    "customer_id": rng.integers(0, 150, n),
                    "tx_fraud": (rng.random(n) < 0.1).astype(int),
                }
            )
        )
    frame = pd.concat(rows, ignore_index=True)
    scores = frame["tx_fraud"] * 0.6 + rng.random(len(frame))
    return frame, scores.to_numpy()


def test_day_bootstrap_brackets_the_estimate_and_collapses_on_one_day():
    frame, scores = scored_days(7)
    ci = H.day_bootstrap(frame, scores, resamples=500, seed=3)
    assert set(ci) == set(H.HEADLINE)
    auc, ap = roc_auc_score(frame["tx_fraud"], scores), average_precision_score(frame["tx_fraud"], scores)
    assert (
        ci["auc_roc"][0] <= auc <= ci["auc_roc"][1]
        and ci["average_precision"][0] <= ap <= ci["average_precision"][1]
    )
    assert all(0 <= lo < hi <= 1 for lo, hi in ci.values())
    assert ci == H.day_bootstrap(frame, scores, resamples=500, seed=3)  # seeded
    one = frame["tx_datetime"].dt.date == dt.date(2018, 8, 8)
    single = H.day_bootstrap(frame[one], scores[one.to_numpy()], resamples=50)
    # one day: every resample is that day, the interval is the day's own figure
    assert single["auc_roc"] == pytest.approx(
        (roc_auc_score(frame[one]["tx_fraud"], scores[one.to_numpy()]),) * 2
    )
    assert single["card_precision_at_100"][0] == single["card_precision_at_100"][1]


def row(model: str, features: str, ap: float, auc: float = 0.9) -> H.Row:
    return H.Row(model, features, {"auc_roc": auc, "average_precision": ap, "card_precision_at_100": 0.3}, {})


def test_the_bar_needs_the_handbook_figures_and_the_best_ap():
    ours = row("XGBoost, searched", "fraud_v3", 0.70)
    assert H.check([ours, row("scikit-learn random forest", "fraud_v3", 0.69)])["passed"]
    lost = H.check([ours, row("scikit-learn random forest", "fraud_v3", 0.71)])
    assert not lost["passed"] and lost["runner_up"] == "scikit-learn random forest on fraud_v3"
    assert not H.check([row("XGBoost, searched", "fraud_v3", 0.70, auc=0.86), row("x", "fraud_v1", 0.5)])[
        "passed"
    ]
    assert not H.check([row("XGBoost, searched", "fraud_v3", 0.67), row("x", "fraud_v1", 0.5)])["passed"]


@pytest.mark.spark
def test_the_protocol_runs_end_to_end_on_a_small_world(tmp_path_factory, spark):
    """Every row of the table from one point-in-time frame: three searched services, the default
    parameters, three scikit-learn baselines; CIs; MLflow runs with the search's trials and the SHAP
    summary; the report and the markdown table written."""
    from jobs.platform import registry
    from tests.support.training import fresh_home

    settings = fresh_home(tmp_path_factory, "fraud-handbook-test")
    report = H.run_handbook_protocol(
        n_customers=120,
        n_terminals=240,
        seed=1,
        trials=2,
        folds=2,
        resamples=50,
        settings=settings,
        spark=spark,
    )
    labels = [r["label"] for r in report["rows"]]
    assert labels == [
        "XGBoost, searched on fraud_v1",
        "XGBoost, searched on fraud_v2",
        "XGBoost, searched on fraud_v3",
        "XGBoost, default parameters on fraud_v3",
        "scikit-learn logistic regression on fraud_v3",
        "scikit-learn decision tree (depth 2) on fraud_v3",
        "scikit-learn random forest on fraud_v3",
    ]
    for r in report["rows"]:
        for k in H.HEADLINE:
            lo, hi = r["ci"][k]
            assert 0 <= lo <= hi <= 1 and 0 <= r["metrics"][k] <= 1
    assert report["rows_test"] > 0 and report["validation_windows"]["holdout_end"] == "2018-08-07"
    assert set(report["check"]) >= {"passed", "runner_up"}
    out = settings.home / "data"  # StorageLayout's reports root lies under the home
    written = {p.name for p in out.rglob("reports/handbook/*")}
    assert written == {"protocol.json", "table.md"}
    table = next(out.rglob("reports/handbook/table.md")).read_text()
    body = [line for line in table.splitlines() if line.startswith("| ")][2:]  # below the header
    assert len(body) == 8 and "[" in table  # 7 rows + the published reference, with CIs
    assert json.loads(next(out.rglob("reports/handbook/protocol.json")).read_text())["trials"] == 2

    hb = settings.model_copy(update={"home": settings.home / "handbook"})
    client = registry.client(hb)
    v3 = report["rows"][2]
    assert v3["params"] != {} and v3["run_id"]
    assert {a.path for a in client.list_artifacts(v3["run_id"], "explain")} == {
        "explain/importance.csv",
        "explain/shap_summary.csv",
    }
    run = client.get_run(v3["run_id"])
    assert run.data.tags["feature_service"] == "fraud_v3" and "average_precision_ci_low" in run.data.metrics
    searches = client.search_runs(
        [run.info.experiment_id], filter_string="attributes.run_name LIKE 'search %'"
    )
    assert len(searches) == 3
    assert {s.data.tags["folds"] for s in searches} == {"2"}
    for s in searches:  # each trial: the mean of its two folds (validation weeks 08-01 and 07-25)
        trials = client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{s.info.run_id}'"
        )
        assert len(trials) == 2 and all("val_average_precision_fold1" in t.data.metrics for t in trials)
        assert {t.data.params["first_fold_val_start"] for t in trials} == {"2018-07-25"}
