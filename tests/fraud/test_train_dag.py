"""The ``train_model`` DAG end to end through Airflow (``dag.test``), on the real feature store.

A private platform home holds a small simulated lake (300 customers, 24 days), the feature
snapshots built by ``jobs.fraud.features`` (Spark) and the applied Feast repo; the DAG's tasks read the
training set and the holdout through the ``fraud_v3`` feature service, log to MLflow and move the
registry aliases. The first run promotes a champion and emits the ``champion_model`` asset; a
second run on the same windows trains the same model, which is not better, so the champion stays
and no asset event is emitted.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.support.dags import run_dag
from tests.support.training import fresh_home

FIRST, LAST = dt.date(2018, 4, 1), dt.date(2018, 4, 24)


@pytest.fixture(scope="module")
def platform(tmp_path_factory, spark):
    from jobs.fraud.features import build_features
    from jobs.fraud.simulate import Simulator, SimulatorConfig, write_lake
    from jobs.platform import feature_store
    from jobs.platform.config import get_settings
    from jobs.platform.storage import StorageLayout

    settings = fresh_home(tmp_path_factory)
    layout = StorageLayout(settings)
    sim = Simulator(SimulatorConfig(n_customers=300, n_terminals=600, seed=5))
    write_lake(sim, FIRST, LAST, layout)
    with pytest.MonkeyPatch.context() as mp:
        # the DAG's tasks read the process-wide settings: point them at this home
        mp.setenv("MLP_HOME", str(settings.home))
        get_settings.cache_clear()
        try:
            build_features(FIRST, LAST, settings, spark=spark)
            feature_store.apply(settings)
            yield get_settings()
        finally:
            get_settings.cache_clear()
    get_settings.cache_clear()


def _champion_events() -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(
            select(func.count())
            .select_from(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "fraud_champion_model")
        )


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}


def test_dag_trains_gates_and_promotes_only_when_better(platform, airflow_db):
    from jobs.platform import registry

    settings = platform
    conf = {  # a small, slow-learning model: 7 days of a small world are a few hundred frauds
        "reason": "test: weekly",
        "train_days": 7,
        "holdout_days": 3,
        "n_estimators": 40,
        "max_depth": 4,
        "learning_rate": 0.1,
    }
    before = _champion_events()
    dr = run_dag("fraud_train_model", "2018-04-24", conf=conf)
    assert _states(dr) == {"train": "success", "evaluate_gate": "success", "promote": "success"}
    assert registry.champion_version(settings) == "1"
    assert _champion_events() == before + 1

    model, version, threshold = registry.load_model("champion", settings)
    mv = registry.client(settings).get_model_version(settings.case.model_name, version)
    assert mv.tags["feature_service"] == "fraud_v3" and len(mv.tags["feature_service_version"]) == 16
    assert mv.tags["train_window"] == "2018-04-01..2018-04-07"
    assert mv.tags["holdout_window"] == "2018-04-15..2018-04-17"  # 7-day gap, labels matured by 04-24
    from jobs.fraud.training_data import FEATURE_COLUMNS

    assert registry.model_features(model) == FEATURE_COLUMNS
    run = registry.client(settings).get_run(mv.run_id)
    assert run.data.tags["reason"] == "test: weekly"
    assert run.data.tags["actor"].startswith("airflow:")
    assert run.data.params["holdout_start"] == "2018-04-15"
    assert run.data.metrics["holdout_rows"] > 0 and 0 < threshold < 1
    # the threshold was fitted on the training window's last days, not on the holdout it is reported on
    assert run.data.params["decision_source"] == "validation"
    assert run.data.params["decision_val_start"] == "2018-04-06"  # 7 days // 3 = the last 2 days
    assert (
        run.data.metrics["decision_threshold"] == threshold == run.data.metrics["holdout_decision_threshold"]
    )
    assert "holdout_optimal_threshold" in run.data.metrics

    # training wrote the version's monitoring reference: what monitoring would rebuild from the store
    import pandas as pd

    from jobs.fraud.training_data import get_training_set
    from jobs.platform import monitor
    from jobs.platform.storage import StorageLayout

    written = pd.read_parquet(monitor.reference_path(StorageLayout(settings), version))
    rebuilt = monitor.build_reference(get_training_set("2018-04-01", "2018-04-07", settings), model)
    pd.testing.assert_frame_equal(written, rebuilt, check_exact=True)

    # a monitoring trigger on the same windows: the same model again is not better -> skipped promote
    dr2 = run_dag(
        "fraud_train_model", "2018-04-25", conf={**conf, "as_of": "2018-04-24", "reason": "drift: test"}
    )
    assert _states(dr2) == {"train": "success", "evaluate_gate": "success", "promote": "skipped"}
    assert registry.champion_version(settings) == "1"
    assert _champion_events() == before + 1
    last = registry.history(settings)[-1]
    assert (last["action"], last["version"], last["previous_version"]) == ("refuse", "2", "1")
    assert "drift: test" in last["reason"]
