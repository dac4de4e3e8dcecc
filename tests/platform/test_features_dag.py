"""The build_features DAG: asset-scheduled, runs end to end under dag.test() on a simulated lake."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from tests.support.dags import load_dag, run_dag
from tests.support.features import assert_same_feature_tables, offline_snapshot, write_simulated_lake

pytestmark = [pytest.mark.airflow, pytest.mark.spark]


@pytest.fixture
def private_home(tmp_path, monkeypatch):
    """Point the process-wide settings (read by the DAG's tasks, which dag.test runs in-process)
    at a private home, so this test's lake and online store are its own."""
    from jobs.platform.config import get_settings

    monkeypatch.setenv("MLP_HOME", str(tmp_path))
    monkeypatch.setenv("FRAUD_FEAST_PROJECT", "fraud_test_dag")
    get_settings.cache_clear()
    yield get_settings()
    monkeypatch.undo()
    get_settings.cache_clear()


def test_dag_is_scheduled_on_the_lake_assets(airflow_db):
    from _factory import _assets

    dag = load_dag("fraud_build_features")
    assets = _assets("fraud")
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"  # either lake asset changing triggers a run
    assert [a.name for a in condition.objects] == [
        assets.lake["transactions"].name,
        assets.lake["labels"].name,
    ]
    assert dag.get_task("build").pool == "spark"
    assert [t.task_id for t in dag.topological_sort()] == [
        "build",
        "materialize",
        "new_data_since_build",
        "catch_up",
    ]
    assert dag.get_task("materialize").outlets == [assets.features]
    assert dag.doc_md and dag.default_args["retries"] >= 1 and dag.max_active_runs == 1


def _write_lake_day(layout, dataset: str, day: dt.date, value: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = layout.path(dataset, day)
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"v": [value]}), path / "part-00000.parquet")


def test_days_come_from_the_stale_set_or_the_date_param(private_home):
    """An asset-triggered run builds what is stale in the lake, whatever its events say."""
    from _factory import event_days, snapshot_days

    from jobs.fraud.features import record_inputs, snapshot_inputs
    from jobs.platform.storage import StorageLayout

    layout = StorageLayout(private_home)
    for i in range(3):
        _write_lake_day(layout, "transactions", dt.date(2018, 4, 10 + i), i)
    record_inputs(layout, dt.date(2018, 4, 10), snapshot_inputs("2018-04-10"))
    event = lambda day: SimpleNamespace(extra={"date": day})  # noqa: E731
    context = {
        "params": {"date": None, "end": None},
        "triggering_asset_events": {
            "fraud_lake_transactions": [event("2018-04-12"), event("2018-04-11T00:00:00")]
        },
    }
    assert event_days(context) == ["2018-04-11", "2018-04-12"]
    assert snapshot_days(context) == ["2018-04-11", "2018-04-12"]
    # an event for a day already built (its run came late) builds nothing
    assert snapshot_days({"params": {"date": None}, "triggering_asset_events": {}}) == [
        "2018-04-11",
        "2018-04-12",
    ]
    assert snapshot_days({"params": {"date": "2018-04-10", "end": "2018-04-12"}}) == [
        "2018-04-10",
        "2018-04-11",
        "2018-04-12",
    ]
    with pytest.raises(ValueError, match="end: value 2018-04-09 is before date 2018-04-10"):
        snapshot_days({"params": {"date": "2018-04-10", "end": "2018-04-09"}})


def test_stale_days_follow_the_lake_contents(private_home):
    """A snapshot is stale until built, and again when a lake partition it reads changes content: a late
    day makes every later snapshot within label_delay_days + 30 days stale; the same bytes rewritten do not."""
    import time

    from jobs.fraud.features import record_inputs, snapshot_inputs, stale_days
    from jobs.platform.storage import StorageLayout

    layout = StorageLayout(private_home)
    days = [dt.date(2018, 4, 1) + dt.timedelta(days=i) for i in range(60)]
    for day in days:
        _write_lake_day(layout, "transactions", day, 1)
        _write_lake_day(layout, "labels", day, 1)
    assert stale_days() == days  # nothing built yet
    for day in days:
        record_inputs(layout, day, snapshot_inputs(day))
    assert stale_days() == []

    _write_lake_day(layout, "transactions", days[4], 1)  # re-ingested, same bytes
    assert stale_days() == []
    before = time.time()
    horizon = private_home.case.label_delay_days + 30
    _write_lake_day(layout, "labels", days[4], 2)  # the late day's data changed
    assert stale_days() == days[4 : 4 + horizon + 1]
    assert stale_days(changed_after=before) == days[4 : 4 + horizon + 1]
    assert stale_days(changed_after=time.time() + 1) == []  # nothing written since
    new_day = days[-1] + dt.timedelta(days=1)
    _write_lake_day(layout, "transactions", new_day, 1)
    assert stale_days()[-1] == new_day


def test_out_of_order_builds_end_equal_to_one_range_build(tmp_path, spark):
    """The scheduler's order, forced: the later days are built before an earlier day reaches the lake; the
    rebuild of the stale days then gives exactly the tables of one build over the range."""
    from jobs.fraud.features import build_features, stale_days
    from jobs.fraud.simulate import SimulatorConfig, write_lake
    from jobs.platform.config import Settings
    from jobs.platform.storage import StorageLayout

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
    assert stale_days(shuffled) == []
    for dataset in ("transactions", "labels"):
        (held / dataset).rename(layout.path(dataset, late))
    rebuild = stale_days(shuffled)
    assert rebuild == [late + dt.timedelta(days=i) for i in range((last - late).days + 1)]
    build_features(rebuild[0], rebuild[-1], shuffled, spark)
    assert stale_days(shuffled) == []

    assert_same_feature_tables(StorageLayout(ordered), layout)


def test_dag_builds_materializes_and_emits_the_features_asset(airflow_db, private_home):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from jobs.fraud.online import get_online_features
    from jobs.platform import feature_store as fs
    from jobs.platform.storage import StorageLayout

    settings = private_home
    layout = StorageLayout(settings)
    write_simulated_lake(layout, dt.date(2018, 4, 1), dt.date(2018, 4, 11))
    run_dag("fraud_build_features", "2018-04-12", conf={"date": "2018-04-10", "end": "2018-04-11"})

    assert layout.partitions("features", "customer") == [dt.date(2018, 4, 10), dt.date(2018, 4, 11)]
    # the online store serves the 04-11 snapshot to requests of 04-12
    snap = offline_snapshot(layout, "customer", dt.date(2018, 4, 11))
    rows = [
        {"customer_id": int(c), "terminal_id": 0, "tx_datetime": "2018-04-12 09:00:00", "tx_amount": 1.0}
        for c in snap.index[:10]
    ]
    online = get_online_features(rows, settings=settings, store=fs.get_store(settings))
    assert online["customer_nb_tx_30d"].tolist() == snap["customer_nb_tx_30d"].iloc[:10].tolist()
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(
                AssetModel.name == "fraud_offline_features",
                AssetEvent.source_dag_id == "fraud_build_features",
            )
            .all()
        )
    assert events and events[-1].extra["date"] == "2018-04-11"
    assert events[-1].extra["dates"] == ["2018-04-10", "2018-04-11"]
