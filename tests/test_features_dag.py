"""The build_features DAG: asset-scheduled, runs end to end under dag.test() on a simulated lake."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from conftest import assert_same_feature_tables, load_dag, run_dag
from test_features_store import offline_snapshot, write_simulated_lake

pytestmark = [pytest.mark.airflow, pytest.mark.spark]


@pytest.fixture
def private_home(tmp_path, monkeypatch):
    """Point the process-wide settings (read by the DAG's tasks, which dag.test runs in-process)
    at a private home, so this test's lake and online store are its own."""
    from jobs.config import get_settings

    monkeypatch.setenv("FRAUD_HOME", str(tmp_path))
    monkeypatch.setenv("FRAUD_FEAST_PROJECT", "fraud_test_dag")
    get_settings.cache_clear()
    yield get_settings()
    monkeypatch.undo()
    get_settings.cache_clear()


def test_dag_is_scheduled_on_the_lake_assets(airflow_db):
    from _common import FEATURES, LABELS, TRANSACTIONS

    dag = load_dag("build_features")
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"  # either lake asset changing triggers a run
    assert [a.name for a in condition.objects] == [TRANSACTIONS.name, LABELS.name]
    assert dag.get_task("build").pool == "spark"
    assert [t.task_id for t in dag.topological_sort()] == ["build", "materialize"]
    assert dag.get_task("materialize").outlets == [FEATURES]
    assert dag.doc_md and dag.default_args["retries"] >= 1 and dag.max_active_runs == 1


def test_days_come_from_asset_events_or_the_date_param(private_home):
    from build_features import snapshot_days

    event = lambda day: SimpleNamespace(extra={"date": day})  # noqa: E731
    context = {
        "params": {"date": None, "end": None},
        "triggering_asset_events": {"lake_transactions": [event("2018-04-12"), event("2018-04-11T00:00:00")]},
    }
    assert snapshot_days(context) == ["2018-04-11", "2018-04-12"]
    assert snapshot_days({"params": {"date": "2018-04-10", "end": "2018-04-12"}}) == [
        "2018-04-10",
        "2018-04-11",
        "2018-04-12",
    ]
    with pytest.raises(ValueError, match="date: no value"):
        snapshot_days({"params": {"date": None}, "triggering_asset_events": {}})
    with pytest.raises(ValueError, match="end: value 2018-04-09 is before date 2018-04-10"):
        snapshot_days({"params": {"date": "2018-04-10", "end": "2018-04-09"}})


def test_a_late_day_rebuilds_the_snapshots_it_enters(private_home):
    """Backfill days finishing out of order: an older day's data enters the later snapshots already built
    (up to label_delay_days + 30 days later), so those are rebuilt too; the newest day is just itself."""
    from jobs.features import days_to_build
    from jobs.storage import StorageLayout

    layout = StorageLayout(private_home)
    built = [dt.date(2018, 4, 1) + dt.timedelta(days=i) for i in range(60)]
    for day in built:
        layout.path("features", day, "customer").mkdir(parents=True)
    horizon = private_home.label_delay_days + 30
    assert days_to_build(["2018-05-30"]) == [dt.date(2018, 5, 30)]  # nothing built after it
    late = days_to_build(["2018-04-05"])
    assert late == [dt.date(2018, 4, 5) + dt.timedelta(days=i) for i in range(horizon + 1)]
    assert days_to_build(["2018-05-20", "2018-04-05"]) == sorted(
        set(late) | {dt.date(2018, 5, 20) + dt.timedelta(days=i) for i in range(11)}
    )
    assert days_to_build(["2018-06-10"]) == [dt.date(2018, 6, 10)]  # not built yet: its own day
    assert days_to_build([]) == []


def test_out_of_order_builds_end_equal_to_one_range_build(tmp_path, spark):
    """The scheduler's order, forced: the later days are built before an earlier day reaches the lake; the
    rebuild that days_to_build asks for then gives exactly the tables of one build over the range."""
    from jobs.config import Settings
    from jobs.features import build_features, days_to_build
    from jobs.simulate import SimulatorConfig, write_lake
    from jobs.storage import StorageLayout

    sim = SimulatorConfig(n_customers=80, n_terminals=160, dup_rate=0.0)
    first, late, last = dt.date(2018, 4, 1), dt.date(2018, 4, 9), dt.date(2018, 4, 12)
    ordered = Settings(home=tmp_path / "in-order")
    write_lake(sim, first, last, StorageLayout(ordered))
    build_features(first, last, ordered, spark)

    shuffled = Settings(home=tmp_path / "out-of-order")
    layout = StorageLayout(shuffled)
    write_lake(sim, first, last, layout)
    held = tmp_path / "held"
    held.mkdir()
    for dataset in ("transactions", "labels"):  # day `late` lands after the later days were built
        layout.path(dataset, late).rename(held / dataset)
    build_features(first, last, shuffled, spark)
    for dataset in ("transactions", "labels"):
        (held / dataset).rename(layout.path(dataset, late))
    rebuild = days_to_build([late], shuffled)
    assert rebuild == [late + dt.timedelta(days=i) for i in range((last - late).days + 1)]
    build_features(rebuild[0], rebuild[-1], shuffled, spark)

    assert_same_feature_tables(StorageLayout(ordered), layout)


def test_dag_builds_materializes_and_emits_the_features_asset(airflow_db, private_home):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from jobs import feature_store as fs
    from jobs.storage import StorageLayout

    settings = private_home
    layout = StorageLayout(settings)
    write_simulated_lake(layout, dt.date(2018, 4, 1), dt.date(2018, 4, 11))
    run_dag("build_features", "2018-04-12", conf={"date": "2018-04-10", "end": "2018-04-11"})

    assert layout.partitions("features", "customer") == [dt.date(2018, 4, 10), dt.date(2018, 4, 11)]
    # the online store serves the 04-11 snapshot to requests of 04-12
    snap = offline_snapshot(layout, "customer", dt.date(2018, 4, 11))
    rows = [
        {"customer_id": int(c), "terminal_id": 0, "tx_datetime": "2018-04-12 09:00:00", "tx_amount": 1.0}
        for c in snap.index[:10]
    ]
    online = fs.get_online_features(rows, settings=settings, store=fs.get_store(settings))
    assert online["customer_nb_tx_30d"].tolist() == snap["customer_nb_tx_30d"].iloc[:10].tolist()
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == "offline_features", AssetEvent.source_dag_id == "build_features")
            .all()
        )
    assert events and events[-1].extra["date"] == "2018-04-11"
    assert events[-1].extra["dates"] == ["2018-04-10", "2018-04-11"]
