"""Settings, storage layout and simulator."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from jobs.fraud.simulate import DriftConfig, Simulator, SimulatorConfig, simulate
from jobs.platform.config import Settings
from jobs.platform.storage import StorageLayout, staged_directory

SMALL = SimulatorConfig(n_customers=300, n_terminals=600, dup_rate=0.01)


def test_profiles_map_services(tmp_path):
    local = Settings(home=tmp_path)
    assert local.airflow_db_url.startswith("sqlite:///")
    assert local.mlflow_tracking_uri.startswith("sqlite:///")
    prod = Settings(home=tmp_path, profile="production")
    assert prod.airflow_db_url.startswith("postgresql+psycopg2://postgres@127.0.0.1:5432/")
    assert prod.mlflow_tracking_uri.endswith("/fraud_mlflow")
    assert prod.serving_api_key is not None  # auth is on in production
    assert "***" in str(prod.public_dict()["serving_api_key"])


def test_layout_local_and_s3(tmp_path):
    layout = StorageLayout(Settings(home=tmp_path))
    assert (
        layout.path("transactions", "2018-04-02") == tmp_path / "data/fraud/lake/transactions/date=2018-04-02"
    )
    assert (
        layout.s3_uri("predictions", dt.date(2018, 4, 2))
        == "s3://fraud-platform/fraud/predictions/date=2018-04-02"
    )
    with pytest.raises(KeyError, match="is not a dataset of use case"):
        layout.path("nope")


def test_staged_directory_is_all_or_nothing(tmp_path):
    final = tmp_path / "part"
    with staged_directory(final) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("v1")
    assert (final / "a").read_text() == "v1"
    with pytest.raises(RuntimeError), staged_directory(final) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (final / "a").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["part"]


def test_simulator_is_deterministic_per_day():
    a = Simulator(SMALL).transactions(dt.date(2018, 4, 5))
    b = Simulator(SMALL).transactions(dt.date(2018, 4, 5))
    pd.testing.assert_frame_equal(a, b)
    assert a["transaction_id"].is_unique
    assert (a["tx_datetime"].dt.date == dt.date(2018, 4, 5)).all()
    assert (a["tx_amount"] >= 0).all()


def test_simulator_follows_handbook_rules():
    sim = Simulator(SMALL)
    days = [sim.transactions(dt.date(2018, 4, 1) + dt.timedelta(days=i)) for i in range(40)]
    tx = pd.concat(days)
    assert (tx.loc[tx.tx_amount > 220, "tx_fraud"] == 1).all()  # scenario 1
    assert set(tx["tx_fraud_scenario"].unique()) <= {0, 1, 2, 3}
    assert 2 in set(tx["tx_fraud_scenario"]) and 3 in set(tx["tx_fraud_scenario"])
    # customers only use terminals within the radius
    c = sim.customers.set_index("customer_id")
    t = sim.terminals.set_index("terminal_id")
    dx = c.loc[tx.customer_id, "x"].to_numpy() - t.loc[tx.terminal_id, "x"].to_numpy()
    dy = c.loc[tx.customer_id, "y"].to_numpy() - t.loc[tx.terminal_id, "y"].to_numpy()
    assert ((dx**2 + dy**2) ** 0.5 <= SMALL.radius + 1e-9).all()


def test_default_world_fraud_rate_matches_handbook():
    # the handbook reports ~0.8% fraud over 183 days at the default size; the first weeks are lower
    sim = Simulator(SimulatorConfig())
    tx = pd.concat([sim.transactions(dt.date(2018, 5, 1) + dt.timedelta(days=i)) for i in range(7)])
    assert 9_000 < len(tx) / 7 < 10_500
    assert 0.004 < tx["tx_fraud"].mean() < 0.015


def test_labels_arrive_late_and_only_for_fraud():
    sim = Simulator(SMALL)
    day = dt.date(2018, 4, 20)
    labels = sim.labels_reported_on(day)
    assert len(labels) > 0
    tx_dates = pd.to_datetime(labels["tx_datetime"]).dt.date
    delays = [(day - d).days for d in tx_dates]
    assert min(delays) >= 1 and max(delays) <= SMALL.label_delay_days
    assert (labels["tx_fraud"] == 1).all()


def test_drift_knob_shifts_amounts():
    drift = SimulatorConfig(
        n_customers=300, n_terminals=600, drift=DriftConfig(dt.date(2018, 4, 3), 2.0, 1.0)
    )
    base = Simulator(SMALL).transactions(dt.date(2018, 4, 3))
    shifted = Simulator(drift).transactions(dt.date(2018, 4, 3))
    before = Simulator(drift).transactions(dt.date(2018, 4, 2))
    assert shifted["tx_amount"].median() > 1.5 * base["tx_amount"].median()
    pd.testing.assert_frame_equal(before, Simulator(SMALL).transactions(dt.date(2018, 4, 2)))


def test_simulate_writes_landing_files(layout):
    counts = simulate(SMALL, dt.date(2018, 4, 1), dt.date(2018, 4, 3), layout)
    assert list(counts["date"]) == ["2018-04-01", "2018-04-02", "2018-04-03"]
    raw = pd.read_csv(layout.path("landing_transactions", "2018-04-02") / "transactions.csv")
    assert raw["transaction_id"].duplicated().any()  # the network re-sends some records
    assert (counts["raw_rows"] >= counts["transactions"]).all()
