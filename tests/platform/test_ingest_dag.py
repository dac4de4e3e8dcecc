"""The ingest DAG end to end under Airflow (``dag.test()``) for two simulated days."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from jobs.fraud.simulate import Simulator, SimulatorConfig, simulate
from tests.support.dags import load_dag, run_dag

CFG = SimulatorConfig(n_customers=200, n_terminals=400, dup_rate=0.01)
DAYS = [dt.date(2018, 6, 1), dt.date(2018, 6, 2)]  # days no other test module writes in the session home


def test_dag_shape():
    dag = load_dag("fraud_ingest")
    assert set(dag.task_ids) == {"wait_for_landing", "ingest_transactions", "ingest_labels", "log_counts"}
    sensor = dag.get_task("wait_for_landing")
    assert sensor.mode == "reschedule" and sensor.retries == 0
    assert {"ingest_transactions", "ingest_labels"} <= sensor.downstream_task_ids
    assert {dag.get_task(t).pool for t in ("ingest_transactions", "ingest_labels")} == {"spark"}
    assert dag.catchup is False and dag.doc_md
    assert {a.name for a in dag.get_task("ingest_transactions").outlets} == {"fraud_lake_transactions"}
    assert {a.name for a in dag.get_task("ingest_labels").outlets} == {"fraud_lake_labels"}
    assert dag.default_args["retries"] >= 1
    assert set(dag.params) == {"date", "max_bad_fraction"}


@pytest.mark.airflow
def test_ingest_dag_runs_two_days(airflow_db, layout, spark):
    # `spark`: the tasks run in this process and reuse the session, which the fixture stops at the end
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    simulate(CFG, DAYS[0], DAYS[-1], layout)
    sim = Simulator(CFG)
    for day in DAYS:
        dr = run_dag("fraud_ingest", day.isoformat())
        lake = pd.read_parquet(layout.path("transactions", day))
        labels = pd.read_parquet(layout.path("labels", day))
        truth = sim.transactions(day)
        assert sorted(lake["transaction_id"]) == sorted(truth["transaction_id"])
        assert sorted(labels["transaction_id"]) == sorted(sim.labels_reported_on(day)["transaction_id"])
        summary = json.loads(
            (layout.path("reports", day, "ingest", "transactions") / "summary.json").read_text()
        )
        assert (
            summary["rows_in"]
            == len(sim.raw_transactions(day))
            == summary["published"] + summary["quarantined"]
        )
        counts = dr.get_task_instance("log_counts").xcom_pull(task_ids="log_counts")
        assert counts["transactions"]["published"] == len(truth)
        assert counts["labels"]["published"] == len(labels)
    with create_session() as session:
        events = session.query(AssetEvent).all()
        dates = sorted(
            (e.asset.name, e.extra.get("date")) for e in events if e.asset.name.startswith("fraud_lake_")
        )
    assert dates == sorted(
        (name, d.isoformat()) for name in ("fraud_lake_labels", "fraud_lake_transactions") for d in DAYS
    )
