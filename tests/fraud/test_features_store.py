"""Feast side of the feature store: registry, training sets, online/offline skew, materialization safety.

Runs against a private platform home (its own lake, feature tables, registry and online store)
filled from the simulator per the lake contract, so it does not depend on ingestion.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.fraud import training_data as td
from jobs.fraud.features import (
    CURRENT_FEATURES,
    CUSTOMER_FEATURES,
    RECENT_FEATURES,
    TERMINAL_FEATURES,
    build_features,
    snapshot_timestamp,
)
from jobs.fraud.online import get_online_features
from jobs.fraud.simulate import Simulator
from jobs.platform import feature_store as fs
from jobs.platform.config import REPO_ROOT, Settings
from jobs.platform.storage import StorageLayout
from tests.support.features import SIM, expected_features, offline_snapshot, write_simulated_lake

pytestmark = pytest.mark.spark

FIRST, LAST = dt.date(2018, 4, 1), dt.date(2018, 4, 20)  # lake days
SNAP_FIRST, SNAP_LAST = dt.date(2018, 4, 10), dt.date(2018, 4, 16)  # snapshot days built


@pytest.fixture(scope="module")
def env(spark, tmp_path_factory):
    home = tmp_path_factory.mktemp("feature-store")
    settings = Settings(home=home, case={"feast_project": "fraud_test_local"})
    layout = StorageLayout(settings)
    write_simulated_lake(layout, FIRST, LAST)
    build_features(SNAP_FIRST, SNAP_LAST, settings=settings, spark=spark)
    fs.apply(settings)
    return settings, layout


# the features of a request for a transaction the lake does not hold (the probes below): its windows
# ending at the transaction have no offline row (their skew test replays lake days:
# tests/fraud/test_recent_activity.py)
STORE_FEATURES = [f for f in td.FEAST_FEATURES if f not in CURRENT_FEATURES]


def online_vs_offline(
    settings, layout, day: dt.date, customers, terminals
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Online values (serving path) and offline PIT values (training path) for requests on ``day``."""
    rows = [
        {
            "transaction_id": 10**12 + i,  # new transactions: no last-hour row offline, nothing pushed online
            "customer_id": int(c),
            "terminal_id": int(t),
            "tx_datetime": f"{day} 10:30:00",
            "tx_amount": 12.5,
        }
        for i, (c, t) in enumerate(zip(customers, terminals, strict=True))
    ]
    online = get_online_features(rows, settings=settings, store=fs.get_store(settings))
    entity_df = pd.DataFrame(rows)[["transaction_id", "customer_id", "terminal_id"]].assign(
        event_timestamp=pd.Timestamp(f"{day} 10:30:00", tz="UTC")
    )
    offline = td.historical_features(entity_df, settings=settings)
    offline = offline.sort_values(["customer_id", "terminal_id"]).reset_index(drop=True)
    online = online.sort_values(["customer_id", "terminal_id"]).reset_index(drop=True)
    return online, offline


def sample_entities(layout: StorageLayout, day: dt.date, n: int = 40):
    rng = np.random.default_rng(1)
    customers = list(offline_snapshot(layout, "customer", day).index) + [999_999]  # + a never-seen id
    terminals = list(offline_snapshot(layout, "terminal", day).index) + [888_888]
    return rng.choice(customers, n), rng.choice(terminals, n)


# --------------------------------------------------------------------------------------------
def test_yaml_files_agree_with_settings():
    """The feature_store*.yaml files for the CLI describe the store get_store() builds."""
    from feast.repo_config import load_repo_config

    home = REPO_ROOT / ".platform"
    for yaml_name, settings in (
        ("feature_store.yaml", Settings(home=home)),
        ("feature_store.production.yaml", Settings(home=home, profile="production")),
    ):
        repo = fs.repo_path("fraud")
        from_yaml = load_repo_config(repo, repo / yaml_name)
        built = fs.get_store(settings).config
        assert from_yaml.project == built.project == settings.case.feast_project
        assert from_yaml.provider == built.provider
        assert from_yaml.entity_key_serialization_version == built.entity_key_serialization_version
        assert from_yaml.offline_store.type == built.offline_store.type
        ry, rb = from_yaml.registry, built.registry
        assert ry.registry_type == rb.registry_type
        if ry.registry_type == "file":
            assert (repo / ry.path).resolve() == Path(rb.path)
        else:
            assert ry.path == rb.path == settings.feast_registry_url
        oy, ob = from_yaml.online_store, built.online_store
        assert oy.type == ob.type
        if oy.type == "sqlite":
            assert (repo / oy.path).resolve() == Path(ob.path)
        else:
            assert oy.connection_string == ob.connection_string == settings.redis_connection_string
            assert oy.skip_dedup is ob.skip_dedup is True


def test_definitions_name_no_platform_path():
    """The repo's file sources are paths relative to the repo that name the default home's tables
    (what the CLI reads); the platform points them at any settings' layout when it applies them."""
    from feast import FeatureView

    repo, default = fs.repo_path("fraud"), Settings(home=REPO_ROOT / ".platform")
    views = [o for o in fs._definitions("fraud") if isinstance(o, FeatureView)]
    assert views
    for view in views:
        path = Path(view.batch_source.path)
        assert not path.is_absolute(), view.name
        table = path.name
        assert (repo / path).resolve() == StorageLayout(default).dataset_root("features", table)
    other = Settings(home=Path("/elsewhere"))
    for obj in fs.repo_objects(other):
        if isinstance(obj, FeatureView):
            assert obj.batch_source.path.startswith("/elsewhere/data/fraud/features/"), obj.name


def test_registry_lists_entities_views_and_service(env):
    settings, _ = env
    info = fs.describe(settings)
    assert info["project"] == "fraud_test_local"
    assert info["entities"] == ["customer", "terminal", "transaction"]
    assert set(info["feature_views"]) == {
        "customer_spending",
        "terminal_risk",
        "customer_activity_1h",
        "customer_windows_at_tx",
    }
    assert info["feature_views"]["customer_spending"]["features"] == CUSTOMER_FEATURES
    assert info["feature_views"]["terminal_risk"]["features"] == TERMINAL_FEATURES
    assert info["feature_views"]["customer_activity_1h"]["features"] == RECENT_FEATURES
    assert info["feature_views"]["customer_windows_at_tx"]["features"] == CURRENT_FEATURES
    assert info["feature_services"] == ["fraud_v1", "fraud_v2", "fraud_v3"]
    assert settings.case.feature_service == "fraud_v3"
    store = fs.get_store(settings)
    service = store.get_feature_service("fraud_v3")
    names = [f.name for p in service.feature_view_projections for f in p.features]
    assert names == td.FEATURE_COLUMNS[3:]
    # kept for the models trained on them
    v1, v2 = store.get_feature_service("fraud_v1"), store.get_feature_service("fraud_v2")
    assert [f.name for p in v1.feature_view_projections for f in p.features] == td.SNAPSHOT_FEATURES
    assert td.FEATURE_COLUMNS[:3] == ["tx_amount", "tx_during_weekend", "tx_during_night"]
    # the core reads the model inputs off the registered service, through the use case
    assert fs.model_inputs(settings) == td.FEATURE_COLUMNS
    assert td.model_inputs(v1) == [*td.FEATURE_COLUMNS[:3], *td.SNAPSHOT_FEATURES]
    assert td.model_inputs(v2) == [*td.FEATURE_COLUMNS[:3], *td.SNAPSHOT_FEATURES, *RECENT_FEATURES]
    # materialized views and their offline tables come from the definitions (online=True file views)
    assert fs.snapshot_views(settings) == {"customer": "customer_spending", "terminal": "terminal_risk"}


def test_training_set_is_point_in_time_correct(env):
    settings, layout = env
    start, end = dt.date(2018, 4, 12), dt.date(2018, 4, 13)
    df = td.get_training_set(start, end, settings=settings)
    assert list(df.columns) == td.TRAINING_COLUMNS
    sim = Simulator(SIM)
    truth = pd.concat([sim.transactions(start), sim.transactions(end)]).set_index("transaction_id")
    assert len(df) == len(truth) and df["transaction_id"].is_unique
    # labels: all frauds of these days are reported within the delay, and the lake has them all
    assert (df.set_index("transaction_id")["tx_fraud"] == truth.loc[df.transaction_id, "tx_fraud"]).all()
    assert df["tx_fraud"].sum() > 0
    # every row carries the previous day's snapshot (or the defaults), never the same day's
    for row in df.sample(150, random_state=0).itertuples():
        want = expected_features(layout, row.customer_id, row.terminal_id, row.tx_datetime.date())
        for name, value in want.items():
            assert getattr(row, name) == pytest.approx(value), (row.transaction_id, name)
        assert row.tx_during_weekend == int(row.tx_datetime.weekday() >= 5)
        assert row.tx_during_night == int(row.tx_datetime.hour < 6)
    assert df["customer_nb_tx_30d"].gt(0).any() and df["terminal_risk_30d"].gt(0).any()


def test_training_set_labels_only_matured_reports(env, tmp_path):
    """A chargeback reported after label_delay_days does not make the training label 1."""
    settings, layout = env
    df = td.labelled_transactions("2018-04-12", "2018-04-12", settings)
    late = df[df.tx_fraud == 1].iloc[0]
    # move that report to day 12 + delay + 1: it no longer counts
    moved_settings = Settings(home=tmp_path, case={"feast_project": "unused"})
    moved = StorageLayout(moved_settings)
    for day in layout.partitions("transactions"):
        (moved.path("transactions", day)).mkdir(parents=True)
        (moved.path("transactions", day) / "p.parquet").write_bytes(
            next(layout.path("transactions", day).glob("*.parquet")).read_bytes()
        )
    all_labels = pd.concat(pd.read_parquet(p) for p in layout.partition_paths("labels", FIRST, LAST))
    all_labels.loc[all_labels.transaction_id == late.transaction_id, "reported_at"] = pd.Timestamp(
        "2018-04-20 09:00"
    )
    for day, part in all_labels.groupby(all_labels.reported_at.dt.date):
        moved.path("labels", day).mkdir(parents=True)
        part.to_parquet(moved.path("labels", day) / "p.parquet", index=False, coerce_timestamps="us")
    again = td.labelled_transactions("2018-04-12", "2018-04-12", moved_settings).set_index("transaction_id")
    assert again.loc[late.transaction_id, "tx_fraud"] == 0
    assert again["tx_fraud"].sum() == df["tx_fraud"].sum() - 1


def test_online_values_equal_offline_values(env):
    """SKEW: after materialization, serving's online read equals training's PIT read, feature by feature."""
    settings, layout = env
    result = fs.materialize(SNAP_LAST, settings=settings)
    assert {v["end"] for v in result.values()} == {snapshot_timestamp(SNAP_LAST).isoformat()}
    day = SNAP_LAST + dt.timedelta(days=1)  # requests of 04-17 see the snapshot of 04-16
    customers, terminals = sample_entities(layout, SNAP_LAST)
    online, offline = online_vs_offline(settings, layout, day, customers, terminals)
    for name in STORE_FEATURES:
        assert online[name].dtype == offline[name].dtype, name
        np.testing.assert_allclose(online[name].to_numpy(float), offline[name].to_numpy(float), err_msg=name)
    assert list(online.columns[-len(td.FEATURE_COLUMNS) :]) != []  # all model inputs present
    assert set(td.FEATURE_COLUMNS) <= set(online.columns)
    # and both equal the feature table itself
    for row in online.itertuples():
        want = expected_features(layout, row.customer_id, row.terminal_id, day)
        assert {k: getattr(row, k) for k in want} == pytest.approx(want)
    assert online["customer_nb_tx_7d"].gt(0).any() and online["terminal_nb_tx_30d"].gt(0).any()


def test_reapply_and_registry_reset_keep_the_online_store_correct(env):
    """The feast-apply/materialize-incremental pitfall (feast#2905, #3228) cannot lose data here."""
    settings, layout = env
    store = fs.get_store(settings)
    fs.materialize(dt.date(2018, 4, 12), settings=settings, start=dt.date(2018, 4, 10))
    # an unchanged re-apply keeps the watermark
    before = fs.watermarks(settings)
    fs.apply(settings)
    assert fs.watermarks(settings) == before
    # a registry that lost the watermark (what apply of a rewritten view leaves behind)
    for view in fs.snapshot_views().values():
        store.registry.delete_feature_view(view, store.project, commit=True)
    fs.apply(settings)
    assert set(fs.watermarks(settings).values()) == {None}  # Feast would now start at now - ttl
    done = fs.materialize(dt.date(2018, 4, 14), settings=settings)
    assert {v["mode"] for v in done.values()} == {"full"}
    assert {v["start"] for v in done.values()} == {snapshot_timestamp(SNAP_FIRST).isoformat()}
    day = dt.date(2018, 4, 15)
    online, offline = online_vs_offline(settings, layout, day, *sample_entities(layout, dt.date(2018, 4, 14)))
    pd.testing.assert_frame_equal(online[STORE_FEATURES], offline[STORE_FEATURES], check_dtype=True)
    # incremental afterwards, and re-running the same end is a no-op rewrite
    done = fs.materialize(SNAP_LAST, settings=settings)
    assert {v["mode"] for v in done.values()} == {"incremental"}
    assert fs.materialize(SNAP_LAST, settings=settings)  # idempotent
    online, offline = online_vs_offline(
        settings, layout, SNAP_LAST + dt.timedelta(days=1), *sample_entities(layout, SNAP_LAST)
    )
    pd.testing.assert_frame_equal(online[STORE_FEATURES], offline[STORE_FEATURES], check_dtype=True)
    # asking for an older end never moves the store backwards
    done = fs.materialize(dt.date(2018, 4, 11), settings=settings)
    assert {v["end"] for v in done.values()} == {snapshot_timestamp(SNAP_LAST).isoformat()}


def test_request_features_are_shared_and_typed():
    df = pd.DataFrame(
        {"tx_datetime": ["2018-04-07 05:59:59", "2018-04-09 06:00:00", "2018-04-08T23:00:00+02:00"]}
    )
    out = td.request_features(df)
    assert out["tx_during_weekend"].tolist() == [1, 0, 1]  # Sat, Mon, Sun 21:00 UTC
    assert out["tx_during_night"].tolist() == [1, 0, 0]
    assert str(out["tx_during_night"].dtype) == "int64" and "tx_during_night" not in df
    with pytest.raises(ValueError, match="tx_datetime: value 'soon' is not a timestamp"):
        td.request_features(pd.DataFrame({"tx_datetime": ["soon"]}))
