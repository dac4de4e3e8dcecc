"""Batch prediction: pure scoring, the Spark path, the whole job on a tiny lake, S3 publishing, the DAG.

The integration fixture builds a real (small) platform state: a simulated lake (200 customers, 10 days),
feature snapshots from ``jobs.fraud.features`` (Spark), the Feast repo applied, and a small XGBoost model
trained on Feast's point-in-time training set, logged with ``mlflow.xgboost`` and promoted to
``champion`` through ``jobs.platform.registry``.
"""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pandas as pd
import pytest

from jobs.platform.batch_predict import (
    BatchPredictError,
    booster_from_raw,
    missing_inputs,
    model_to_raw,
    prediction_columns,
    prediction_schema,
    score_frame,
    score_spark,
)

FIRST, LAST = dt.date(2018, 4, 1), dt.date(2018, 4, 10)
SCORED = dt.date(2018, 4, 10)


def _toy_model(features: list[str], seed: int = 0, n: int = 3000):
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, len(features))), columns=features)
    y = ((x.iloc[:, 0] + 0.5 * x.iloc[:, 1] + rng.normal(scale=0.5, size=n)) > 1.2).astype(int)
    model = xgb.XGBClassifier(n_estimators=30, max_depth=4, learning_rate=0.3, n_jobs=1)
    model.fit(x, y)
    return model, x


FEATURES = ["tx_amount", "tx_during_weekend", "tx_during_night", "customer_nb_tx_1d", "terminal_risk_7d"]


# --- pure scoring --------------------------------------------------------------------------------


def test_score_frame_equals_in_process_xgboost_on_the_same_rows():
    model, x = _toy_model(FEATURES)
    booster = booster_from_raw(model_to_raw(model))  # the bytes that executors receive
    frame = x.iloc[:, ::-1].copy()  # column order of the frame must not matter
    frame.insert(0, "transaction_id", np.arange(len(x), dtype=np.int64) + 1000)
    frame["unrelated"] = "x"
    scored_at = dt.datetime(2018, 4, 11, 1, 2, 3)

    out = score_frame(frame, booster, threshold=0.4, model_version="3", scored_at=scored_at)

    expected = model.predict_proba(x)[:, 1]
    assert list(out.columns) == prediction_columns("transaction_id")
    np.testing.assert_array_equal(out["transaction_id"], frame["transaction_id"])
    np.testing.assert_allclose(out["score"], expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(out["decision"], (expected >= 0.4).astype(int))
    assert 0 < out["decision"].sum() < len(out)
    assert set(out["model_version"]) == {"3"} and set(out["scored_at"]) == {pd.Timestamp(scored_at)}


def test_a_use_case_without_a_decision_policy_gets_scores_only():
    """No threshold tag (no ``decision_tag``): the partition has the key, the score and the version,
    no decision column; the key may be any column the use case names."""
    model, x = _toy_model(FEATURES)
    booster = booster_from_raw(model_to_raw(model))
    frame = x.copy()
    frame.insert(0, "user_id", [f"u{i}" for i in range(len(x))])
    out = score_frame(frame, booster, None, "7", dt.datetime(2018, 4, 11), key="user_id")
    assert (
        list(out.columns)
        == prediction_columns("user_id", decides=False)
        == [
            "user_id",
            "score",
            "model_version",
            "scored_at",
        ]
    )
    assert out["user_id"].tolist() == frame["user_id"].tolist()
    assert prediction_schema("user_id", "string", decides=False) == (
        "user_id string, score double, model_version string, scored_at timestamp"
    )


def test_score_frame_names_the_missing_feature_and_handles_empty_batches():
    model, x = _toy_model(FEATURES)
    booster = booster_from_raw(model_to_raw(model))
    frame = x.drop(columns=["terminal_risk_7d"]).assign(transaction_id=1)
    with pytest.raises(BatchPredictError, match="terminal_risk_7d"):
        score_frame(frame, booster, 0.5, "1", dt.datetime(2018, 4, 2))
    empty = x.iloc[:0].assign(transaction_id=pd.Series(dtype="int64"))
    assert score_frame(empty, booster, 0.5, "1", dt.datetime(2018, 4, 2)).empty


@pytest.mark.spark
def test_spark_scoring_equals_in_process_xgboost(spark):
    model, x = _toy_model(FEATURES, seed=1, n=2000)
    frame = x.assign(transaction_id=np.arange(len(x), dtype=np.int64))
    sdf = spark.createDataFrame(frame).repartition(3)
    out = (
        score_spark(sdf, model_to_raw(model), 0.5, "9", dt.datetime(2018, 4, 2), FEATURES)
        .toPandas()
        .sort_values("transaction_id")
    )
    assert len(out) == len(x)
    np.testing.assert_allclose(out["score"].to_numpy(), model.predict_proba(x)[:, 1], rtol=0, atol=1e-7)
    assert set(out["model_version"]) == {"9"}


# --- the job on a tiny platform ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(settings, layout, spark):
    """Lake (10 days) + feature snapshots + applied Feast repo + a champion model in the registry."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature

    from jobs.fraud import training_data
    from jobs.fraud.features import build_features
    from jobs.fraud.simulate import Simulator, SimulatorConfig, write_lake
    from jobs.platform import feature_store, registry

    sim = Simulator(SimulatorConfig(n_customers=200, n_terminals=400, seed=7))
    write_lake(sim, FIRST, LAST, layout)
    build_features(FIRST, LAST, settings, spark=spark)
    feature_store.apply(settings)

    train = training_data.get_training_set(
        FIRST + dt.timedelta(days=1), LAST - dt.timedelta(days=1), settings
    )
    x, y = train[training_data.FEATURE_COLUMNS], train["tx_fraud"]
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1, base_score=0.5)
    model.fit(x, y)
    registry.configure_mlflow(settings)
    with mlflow.start_run() as run:
        info = mlflow.xgboost.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict_proba(x)[:, 1]),
            input_example=x.head(3),
        )
    version = registry.register_challenger(
        run.info.run_id, info.model_uri, reason="batch test fixture", settings=settings
    )
    registry.set_version_tags(version, {"decision_threshold": "0.3"}, settings)
    registry.promote(version, reason="batch test fixture", settings=settings)
    return {"model": model, "version": version, "threshold": 0.3}


def _read_partition(layout, day) -> pd.DataFrame:
    return (
        pd.read_parquet(layout.path("predictions", day)).sort_values("transaction_id").reset_index(drop=True)
    )


@pytest.mark.spark
def test_job_scores_every_transaction_like_the_training_path(platform, settings, layout, spark):
    from jobs.fraud import training_data
    from jobs.platform.batch_predict import run

    assert missing_inputs(SCORED, settings) == []
    summary = run(SCORED, settings, spark=spark, publish=False)

    out = _read_partition(layout, SCORED)
    lake = pd.read_parquet(layout.path("transactions", SCORED))
    assert summary["rows"] == len(out) == len(lake) > 100
    assert sorted(out["transaction_id"]) == sorted(lake["transaction_id"])
    assert list(out.columns) == prediction_columns("transaction_id")
    assert set(out["model_version"]) == {platform["version"]} and summary["threshold"] == 0.3

    # independent path: the PIT training set of the same day (B) scored in-process by xgboost
    reference = training_data.get_training_set(SCORED, SCORED, settings).sort_values("transaction_id")
    expected = platform["model"].predict_proba(reference[training_data.FEATURE_COLUMNS])[:, 1]
    np.testing.assert_allclose(out["score"].to_numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out["decision"].to_numpy(), (expected >= 0.3).astype(int))
    assert summary["flagged"] == int(out["decision"].sum())


@pytest.mark.spark
def test_rerun_replaces_the_partition_without_duplicates(platform, settings, layout, spark):
    from jobs.platform.batch_predict import run

    run(SCORED, settings, spark=spark, publish=False)
    first = _read_partition(layout, SCORED)
    run(SCORED, settings, spark=spark, publish=False)
    second = _read_partition(layout, SCORED)
    assert len(second) == len(first) and second["transaction_id"].is_unique
    pd.testing.assert_frame_equal(first.drop(columns="scored_at"), second.drop(columns="scored_at"))
    leftovers = [p.name for p in layout.dataset_root("predictions").iterdir() if p.name.startswith("_tmp-")]
    assert leftovers == []


def test_missing_inputs_names_what_is_not_there(settings):
    missing = missing_inputs("2019-01-01", settings)
    assert any("transactions/date=2019-01-01" in m for m in missing)
    assert any("features/customer/date=2018-12-31" in m for m in missing)


@pytest.mark.spark
def test_job_publishes_to_s3_and_a_rerun_replaces_the_publication(platform, settings, spark, s3_endpoint):
    from jobs.platform.batch_predict import run
    from jobs.platform.publish import download_partition, ensure_bucket, read_manifest
    from jobs.platform.storage import StorageLayout

    s3 = settings.model_copy(
        update={"s3_endpoint_url": s3_endpoint, "s3_bucket": f"batch-{uuid.uuid4().hex[:8]}"}
    )
    ensure_bucket(s3)
    first = run(SCORED, s3, spark=spark, publish=True)
    uri = StorageLayout(s3).s3_uri("predictions", SCORED)
    manifest = read_manifest(uri, s3)
    assert first["published"] == uri
    assert manifest["rows"] == first["rows"] and manifest["model_version"] == platform["version"]
    assert manifest["metadata"]["date"] == SCORED.isoformat()

    second = run(SCORED, s3, spark=spark, publish=True)
    after = read_manifest(uri, s3)
    assert after["generation"] == second["generation"] != first["generation"]
    assert after["replaces_generation"] == first["generation"]
    copy = download_partition(uri, StorageLayout(s3).root / "downloaded", s3)
    assert copy == after


@pytest.mark.airflow
@pytest.mark.spark
def test_dag_scores_the_logical_date(platform, settings, layout, airflow_db):
    from tests.support.dags import load_dag, run_dag

    dag = load_dag("fraud_batch_predict")
    assert dag.doc_md and "sensor" in dag.doc_md
    day = SCORED - dt.timedelta(days=1)
    run_dag("fraud_batch_predict", day.isoformat())
    out = pd.read_parquet(layout.path("predictions", day))
    assert len(out) == len(pd.read_parquet(layout.path("transactions", day)))
    assert set(out["model_version"]) == {platform["version"]}
