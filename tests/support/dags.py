"""Parse and run the project's DAGs through Airflow, in process."""

from __future__ import annotations

from tests.support.paths import DAGS


def load_dag(dag_id: str):
    """Parse the dags/ folder the way the scheduler does and return one DAG (asserting no import errors)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))  # examples are off via AIRFLOW__CORE__LOAD_EXAMPLES
    assert not bag.import_errors, f"DAG import errors: {bag.import_errors}"
    assert dag_id in bag.dags, f"{dag_id} not in {sorted(bag.dags)}"
    return bag.dags[dag_id]


def run_dag(dag_id: str, logical_date: str, conf: dict | None = None, expect: str = "success"):
    """Run a DAG for one logical date through Airflow (``dag.test``) and check its final state."""
    import pendulum

    dag = load_dag(dag_id)
    dr = dag.test(logical_date=pendulum.parse(logical_date, tz="UTC"), run_conf=conf)
    state = str(getattr(dr.state, "value", dr.state))
    assert state == expect, f"{dag_id} {logical_date}: run ended {state}, expected {expect}"
    return dr
