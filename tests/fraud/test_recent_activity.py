"""The customer's last hour before each transaction: one definition, computed twice.

* batch: ``jobs.fraud.features.compute_recent_activity`` (a Spark range window per customer) writes
  ``features/recent``, which Feast joins point-in-time into training sets and batch scoring through
  the offline view ``customer_activity_1h`` of ``fraud_v2`` and ``fraud_v3``;
* online: the scoring service pushes each scored transaction to ``customer_recent_activity`` and
  derives the same features per request (``jobs.fraud.features.derive_recent``).

The skew test replays a day of lake transactions through the serving feature client in time order
(read the features, then push the transaction, as ``/v1/score`` does) and requires the served values
to equal the ones training saw for the same transactions.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.fraud import training_data as td
from jobs.fraud.features import (
    AT_TX_FEATURES,
    CURRENT_FEATURES,
    RECENT_FEATURES,
    WINDOWS,
    build_features,
    compute_recent_activity,
    compute_windows_at_tx,
    derive_recent,
)
from jobs.fraud.online import get_online_features
from jobs.fraud.simulate import SimulatorConfig, write_lake
from jobs.platform import feature_store as fs
from jobs.platform.config import Settings
from jobs.platform.storage import StorageLayout
from tests.support.recent_activity import assert_no_skew, replay_through_serving

pytestmark = pytest.mark.spark

DAY = dt.date(2018, 4, 12)


def reference(tx: pd.DataFrame) -> pd.DataFrame:
    """Slow, obvious reference: for each transaction, derive_recent over all of its customer's rows."""
    epochs = (tx["tx_datetime"].astype("datetime64[s]").astype("int64")).to_numpy()
    rows = []
    for i, r in enumerate(tx.itertuples()):
        same = (tx["customer_id"] == r.customer_id).to_numpy()
        values = derive_recent(
            tx["transaction_id"].to_numpy()[same],
            epochs[same],
            tx["tx_amount"].to_numpy()[same],
            r.transaction_id,
            int(epochs[i]),
        )
        rows.append({"transaction_id": r.transaction_id, **values})
    return pd.DataFrame(rows).set_index("transaction_id").sort_index()


def reference_at_tx(tx: pd.DataFrame, ids) -> pd.DataFrame:
    """Slow, obvious reference of fraud_v3's windows, straight from their definition (no snapshot,
    no shared function): for a transaction at ``t`` on day ``D``, the customer's transactions of days
    ``D-w .. D-1`` plus those of ``D`` before ``t``'s second, plus itself; their count and mean amount."""
    tx = tx.assign(
        day=pd.to_datetime(tx["tx_datetime"]).dt.normalize(),
        epoch=pd.to_datetime(tx["tx_datetime"]).astype("datetime64[s]").astype("int64"),
    )
    rows = []
    for r in tx[tx["transaction_id"].isin(ids)].itertuples():
        mine = tx[tx["customer_id"] == r.customer_id]
        today = mine[
            (mine["day"] == r.day) & (mine["epoch"] < r.epoch) & (mine["transaction_id"] != r.transaction_id)
        ]
        out = {
            "transaction_id": r.transaction_id,
            "customer_nb_tx_today": len(today) + 1,
            "customer_amount_today": today["tx_amount"].sum() + r.tx_amount,
        }
        for w in WINDOWS:
            before = mine[(mine["day"] >= r.day - pd.Timedelta(days=w)) & (mine["day"] < r.day)]
            amounts = [*before["tx_amount"], *today["tx_amount"], r.tx_amount]
            out[f"customer_nb_tx_{w}d_at_tx"] = len(amounts)
            out[f"customer_avg_amount_{w}d_at_tx"] = float(np.mean(amounts))
            out[f"customer_amount_ratio_{w}d_at_tx"] = r.tx_amount / (float(np.mean(amounts)) + 1.0)
        rows.append(out)
    return pd.DataFrame(rows).set_index("transaction_id").sort_index()


def assert_same_windows(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    for name in CURRENT_FEATURES:
        if "_nb_tx_" in name:
            assert got[name].astype(int).tolist() == ref[name].astype(int).tolist(), name
        else:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-9, err_msg=name)


def test_windows_at_the_transaction_match_their_definition(spark):
    """fraud_v3's windows from the Spark job (yesterday's snapshot + a running window of the day) equal
    the obvious reference: calendar days D-w .. D-1 count whole, the day only up to the transaction
    (the same second excluded, itself included), a customer without a snapshot has the day only,
    another customer never counts."""
    d = dt.datetime(2018, 4, 20)
    rows = [
        # id, customer, time, amount
        (1, 7, d - dt.timedelta(days=31, hours=1), 1000.0),  # day D-32: outside every window
        (2, 7, d - dt.timedelta(days=30) + dt.timedelta(hours=1), 500.0),  # day D-30: in the 30-day window
        (3, 7, d - dt.timedelta(days=7, minutes=-5), 200.0),  # day D-7: in the 7-day window
        (4, 7, d - dt.timedelta(days=1) + dt.timedelta(hours=23), 50.0),  # D-1 23:00: in every window
        (5, 7, d + dt.timedelta(hours=9), 10.0),  # the day's first
        (6, 7, d + dt.timedelta(hours=10), 20.0),
        (7, 7, d + dt.timedelta(hours=10), 40.0),  # same second as 6: neither counts the other
        (8, 7, d + dt.timedelta(hours=23, minutes=59, seconds=59), 80.0),
        (9, 8, d + dt.timedelta(hours=10), 5.0),  # another customer, no history: the day only
        (10, 7, d + dt.timedelta(days=1, minutes=1), 3.0),  # the next day: its own day, D in its 1-day window
    ]
    tx = pd.DataFrame(rows, columns=["transaction_id", "customer_id", "tx_datetime", "tx_amount"])
    tx["terminal_id"] = 1
    got = compute_windows_at_tx(spark.createDataFrame(tx), d.date(), d.date() + dt.timedelta(days=1))
    got = got.toPandas().set_index("transaction_id").sort_index()
    assert list(got.index) == [5, 6, 7, 8, 9, 10]
    assert got["customer_nb_tx_today"].tolist() == [1, 2, 2, 4, 1, 1]
    assert got["customer_nb_tx_1d_at_tx"].tolist() == [2, 3, 3, 5, 1, 5]
    assert got["customer_nb_tx_7d_at_tx"].tolist() == [3, 4, 4, 6, 1, 6]
    assert got["customer_nb_tx_30d_at_tx"].tolist() == [4, 5, 5, 7, 1, 7]
    assert got.loc[6, "customer_avg_amount_1d_at_tx"] == pytest.approx((50 + 10 + 20) / 3)
    assert got.loc[9, "customer_avg_amount_30d_at_tx"] == 5.0
    assert got.loc[9, "customer_amount_ratio_30d_at_tx"] == 5.0 / 6.0  # amount / (mean + 1)
    assert got.loc[8, "customer_amount_ratio_1d_at_tx"] == pytest.approx(
        80.0 / ((50 + 10 + 20 + 40 + 80) / 5 + 1)
    )
    assert (got["date"] == ["2018-04-20"] * 5 + ["2018-04-21"]).all()
    assert_same_windows(got, reference_at_tx(tx, got.index))


def test_spark_window_matches_the_per_request_definition(spark):
    """Edge cases: the window's lower bound is inclusive (exactly 1 h before counts), the upper bound
    exclusive (same second does not), the hour before midnight of the first day counts, other
    customers never do, and only the asked days are returned."""
    t = dt.datetime(2018, 4, 10, 0, 30, 0)
    rows = [
        # id, customer, time, amount
        (1, 7, t - dt.timedelta(seconds=3601), 1.0),  # 1 h 1 s before: out
        (2, 7, t - dt.timedelta(seconds=3600), 2.0),  # exactly 1 h before (previous day): in
        (3, 7, t - dt.timedelta(minutes=40), 4.0),  # previous day, 23:50: in
        (4, 7, t, 8.0),  # the transaction
        (5, 7, t, 16.0),  # same second: neither counts the other
        (6, 8, t - dt.timedelta(minutes=5), 32.0),  # another customer
        (7, 7, t + dt.timedelta(minutes=59, seconds=59), 64.0),
        (8, 7, dt.datetime(2018, 4, 11, 0, 10), 128.0),  # after the asked days: not returned
    ]
    tx = pd.DataFrame(rows, columns=["transaction_id", "customer_id", "tx_datetime", "tx_amount"])
    got = (
        compute_recent_activity(spark.createDataFrame(tx), t.date(), t.date())
        .toPandas()
        .set_index("transaction_id")
        .sort_index()
    )
    assert list(got.index) == [4, 5, 6, 7]
    assert got["customer_nb_tx_1h"].tolist() == [2, 2, 0, 2]
    assert got["customer_amount_1h"].tolist() == [6.0, 6.0, 0.0, 24.0]
    assert (got["date"] == "2018-04-10").all()
    stamps = pd.to_datetime(got["event_timestamp"], utc=True)
    expected = pd.to_datetime(tx.set_index("transaction_id").loc[got.index, "tx_datetime"], utc=True)
    assert (stamps == expected).all()
    ref = reference(tx).loc[got.index]
    assert got["customer_nb_tx_1h"].tolist() == ref["customer_nb_tx_1h"].astype(int).tolist()
    np.testing.assert_allclose(got["customer_amount_1h"], ref["customer_amount_1h"])


@pytest.fixture(scope="module")
def platform(spark, tmp_path_factory):
    """A platform home with a simulated lake (plus bursts of transactions within the hour), its
    feature tables built by the Spark job and the Feast repo applied."""
    home = tmp_path_factory.mktemp("recent-activity")
    settings = Settings(home=home, case={"feast_project": "fraud_test_recent"})
    layout = StorageLayout(settings)
    write_lake(
        SimulatorConfig(n_customers=150, n_terminals=200, dup_rate=0.0),
        dt.date(2018, 4, 1),  # the terminal windows lag label_delay_days: some history
        DAY,
        layout,
    )
    # bursts: a few customers get 2-6 extra transactions spread over ~80 minutes (some across midnight)
    path = next(layout.path("transactions", DAY).glob("*.parquet"))
    lake = pd.read_parquet(path)
    rng = np.random.default_rng(3)
    extra = []
    next_id = int(lake["transaction_id"].max()) + 1
    for customer in rng.choice(lake["customer_id"].unique(), 12, replace=False):
        base = pd.Timestamp(DAY) + pd.Timedelta(seconds=int(rng.integers(0, 86_400 - 5_000)))
        if customer % 3 == 0:
            base = pd.Timestamp(DAY)  # starts at midnight: its look-back hour is the previous day
        template = lake[lake["customer_id"] == customer].iloc[0]
        for k in range(int(rng.integers(2, 7))):
            row = template.copy()
            row["transaction_id"] = next_id
            row["tx_datetime"] = base + pd.Timedelta(seconds=int(rng.integers(0, 4_800)) if k else 0)
            row["tx_amount"] = float(rng.integers(100, 20_000)) / 100
            extra.append(row)
            next_id += 1
    lake = pd.concat([lake, pd.DataFrame(extra)], ignore_index=True).astype(lake.dtypes.to_dict())
    lake.to_parquet(path, index=False)
    build_features(DAY - dt.timedelta(days=1), DAY, settings=settings, spark=spark)
    fs.apply(settings)
    # the snapshots DAY's requests read online (fraud_v3's windows ending at the transaction add the day to them)
    fs.materialize(DAY - dt.timedelta(days=1), settings=settings)
    return settings, layout


def test_training_set_carries_the_batch_values(platform):
    """The training set gets each transaction's own row of ``features/recent`` through Feast, equal to
    the reference; the features are model inputs of fraud_v3 and are not all zero."""
    settings, _ = platform
    train = td.get_training_set(DAY, DAY, settings).set_index("transaction_id").sort_index()
    assert set(RECENT_FEATURES) <= set(td.FEATURE_COLUMNS)
    lake = td.labelled_transactions(DAY - dt.timedelta(days=1), DAY, settings)
    ref = reference(lake.sort_values("tx_datetime").reset_index(drop=True)).loc[train.index]
    assert train["customer_nb_tx_1h"].tolist() == ref["customer_nb_tx_1h"].astype(int).tolist()
    np.testing.assert_allclose(train["customer_amount_1h"], ref["customer_amount_1h"], rtol=1e-12)
    assert (train["customer_nb_tx_1h"] >= 2).sum() >= 5, "the bursts must show up"


def test_training_set_carries_the_windows_at_the_transaction(platform):
    """fraud_v3's windows in the training set (Feast's point-in-time join of ``features/at_tx``) equal
    the slow reference over the lake on a sample, and carry both the snapshot and the day."""
    settings, _ = platform
    train = td.get_training_set(DAY, DAY, settings).set_index("transaction_id").sort_index()
    assert set(CURRENT_FEATURES) <= set(td.FEATURE_COLUMNS)
    lake = td.labelled_transactions(DAY - dt.timedelta(days=40), DAY, settings)
    sample = train.sample(min(len(train), 300), random_state=0).index
    assert_same_windows(train.loc[sample].sort_index(), reference_at_tx(lake, sample))
    assert (train["customer_nb_tx_today"] >= 3).sum() >= 5, "the bursts must show up"
    assert (train["customer_nb_tx_30d_at_tx"] > train["customer_nb_tx_today"]).mean() > 0.5
    assert set(AT_TX_FEATURES) <= set(train.columns)


def test_served_values_equal_training_values(platform):
    """The skew test (SQLite online store): the served stream features (the last hour, the day so far,
    the windows ending at the transaction) == the training set's."""
    settings, _ = platform
    assert_no_skew(*replay_through_serving(settings, DAY))
    lake = td.labelled_transactions(DAY, DAY, settings).sort_values(["tx_datetime", "transaction_id"])

    # the online read outside serving (jobs.fraud.online.get_online_features, the same client) derives the same values
    last = lake.iloc[-1]
    probe = {
        "transaction_id": 10**12,
        "customer_id": int(last.customer_id),
        "terminal_id": int(last.terminal_id),
        "tx_amount": 1.0,
        "tx_datetime": (last.tx_datetime + pd.Timedelta(seconds=1)).isoformat(),
    }
    got = get_online_features([probe], settings=settings).iloc[0]
    window = lake[
        (lake["customer_id"] == last.customer_id)
        & (lake["tx_datetime"] >= last.tx_datetime + pd.Timedelta(seconds=1) - pd.Timedelta(hours=1))
    ]
    assert got["customer_nb_tx_1h"] == len(window) >= 1
    assert got["customer_amount_1h"] == pytest.approx(window["tx_amount"].sum())


def test_training_set_refuses_days_without_the_batch_table(platform, tmp_path):
    """A missing per-transaction row means the job did not run for that day, not 'no activity'."""
    import shutil

    settings, layout = platform
    day = DAY - dt.timedelta(days=1)
    part = layout.path("features", day, "recent")
    backup = tmp_path / "recent-partition"  # outside the table: Feast reads every folder under it
    shutil.move(part, backup)
    try:
        with pytest.raises(ValueError, match=r"customer_activity_1h: no row for \d+ of \d+ entity rows"):
            td.get_training_set(day, day, settings)
    finally:
        shutil.move(backup, part)


def test_scoring_api_serves_a_fraud_v3_champion_with_fresh_stream_features(platform, settings, tmp_path):
    """End to end on the platform's own store and registry: a champion trained on the fraud_v3
    training set is served by the API, whose pushes make the next request's last-hour features, its
    day so far and its windows ending at the transaction (snapshot + the day) fresh."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb
    from fastapi.testclient import TestClient
    from mlflow.models import infer_signature

    from jobs.platform import registry
    from serving.app import create_app

    psettings, _ = platform
    psettings = psettings.model_copy(update={"serving_log_flush_seconds": 0.2})
    train = td.get_training_set(DAY - dt.timedelta(days=1), DAY, psettings)
    x, y = train[td.FEATURE_COLUMNS], train["tx_fraud"]
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1, base_score=0.5).fit(x, y)
    registry.configure_mlflow(psettings)
    try:
        with mlflow.start_run() as run:
            info = mlflow.xgboost.log_model(
                model, name="model", signature=infer_signature(x, model.predict_proba(x)[:, 1])
            )
        version = registry.register_challenger(
            run.info.run_id, info.model_uri, reason="test", settings=psettings
        )
        registry.set_version_tags(version, {"decision_threshold": "0.5"}, psettings)
        registry.promote(version, reason="test", settings=psettings)

        layout = StorageLayout(psettings.model_copy(update={"home": tmp_path / "serving-home"}))
        customer = int(train["customer_id"].iloc[0])
        terminal = int(train["terminal_id"].iloc[0])
        t0 = dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(10, 0), tzinfo=dt.UTC)
        with TestClient(create_app(psettings, layout=layout)) as client:
            pusher = client.app.state.service.pusher
            for k, (minutes, amount) in enumerate(((0, 40.0), (10, 25.5), (30, 3.0))):
                r = client.post(
                    "/v1/score",
                    json={
                        "transaction_id": 5_000_000_000 + k,
                        "customer_id": customer,
                        "terminal_id": terminal,
                        "tx_amount": amount,
                        "tx_datetime": (t0 + dt.timedelta(minutes=minutes)).isoformat(),
                    },
                )
                assert r.status_code == 200, r.text
                assert r.json()["model_version"] == str(version)
                assert pusher.wait_idle(10)
        files = sorted(layout.dataset_root("prediction_log").rglob("part-*.parquet"))
        log = pd.concat([pd.read_parquet(f) for f in files]).sort_values("tx_datetime")
        assert log["customer_nb_tx_1h"].tolist() == [0, 1, 2]
        assert log["customer_amount_1h"].tolist() == [0.0, 40.0, 65.5]
        assert log["customer_nb_tx_today"].tolist() == [1, 2, 3]  # the transaction itself included
        assert log["customer_amount_today"].tolist() == [40.0, 65.5, 68.5]
        for w in (1, 7, 30):
            n = log[f"customer_nb_tx_{w}d"].to_numpy()
            np.testing.assert_array_equal(log[f"customer_nb_tx_{w}d_at_tx"], n + [1, 2, 3])
            np.testing.assert_allclose(
                log[f"customer_avg_amount_{w}d_at_tx"],
                (log[f"customer_avg_amount_{w}d"].to_numpy() * n + [40.0, 65.5, 68.5]) / (n + [1, 2, 3]),
            )
            np.testing.assert_allclose(
                log[f"customer_amount_ratio_{w}d_at_tx"],
                [40.0, 25.5, 3.0] / (log[f"customer_avg_amount_{w}d_at_tx"].to_numpy() + 1.0),
            )
    finally:
        registry.configure_mlflow(settings)  # the session's registry for the tests that follow
