"""Training on a small simulated world with test-local features (pandas), and private platform homes
with an already-migrated MLflow database."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd

from jobs.fraud.simulate import Simulator, SimulatorConfig
from jobs.platform import train as T
from jobs.platform.config import Settings
from jobs.platform.evaluate import Windows

WINDOWS = Windows(dt.date(2018, 4, 8), dt.date(2018, 4, 21), dt.date(2018, 4, 29), dt.date(2018, 5, 5))
FEATURES = [
    "tx_amount",
    "customer_nb_tx_30d",
    "customer_avg_amount_7d",
    "terminal_nb_tx_7d",
    "terminal_risk_7d",
]
SMALL = T.TrainParams(max_depth=3, n_estimators=40, learning_rate=0.3, n_jobs=1)


def simulated_frame(first: dt.date, last: dt.date, delay: int = 7) -> pd.DataFrame:
    """Transactions of first..last with test-local daily-snapshot features (previous days only):
    the customer's count (30 d) and mean amount (7 d), the terminal's count and fraud share over
    the 7 days ending ``delay`` days before (labels known by then)."""
    sim = Simulator(SimulatorConfig(n_customers=400, n_terminals=1500, seed=11))
    lookback = 30 + delay
    days = [
        first - dt.timedelta(days=lookback) + dt.timedelta(days=i)
        for i in range((last - first).days + lookback + 1)
    ]
    days = [d for d in days if d >= sim.cfg.start_date]
    tx = pd.concat([sim.transactions(d) for d in days], ignore_index=True)
    tx["day"] = tx["tx_datetime"].dt.normalize()
    out = []
    for day in pd.date_range(first, last):
        cur = tx[tx["day"] == day].copy()
        hist = tx[tx["day"] < day]
        c30 = hist[hist["day"] >= day - pd.Timedelta(days=30)].groupby("customer_id").size()
        c7 = hist[hist["day"] >= day - pd.Timedelta(days=7)].groupby("customer_id")["tx_amount"].mean()
        known = hist[
            (hist["day"] < day - pd.Timedelta(days=delay))
            & (hist["day"] >= day - pd.Timedelta(days=delay + 7))
        ]
        t = known.groupby("terminal_id")["tx_fraud"].agg(["size", "mean"])
        cur["customer_nb_tx_30d"] = cur["customer_id"].map(c30).fillna(0)
        cur["customer_avg_amount_7d"] = cur["customer_id"].map(c7).fillna(0.0)
        cur["terminal_nb_tx_7d"] = cur["terminal_id"].map(t["size"]).fillna(0)
        cur["terminal_risk_7d"] = cur["terminal_id"].map(t["mean"]).fillna(0.0)
        out.append(cur)
    frame = pd.concat(out, ignore_index=True)
    return frame[["transaction_id", "customer_id", "terminal_id", "tx_datetime", "tx_fraud", *FEATURES]]


_MLFLOW_TEMPLATE: list[Path] = []


def fresh_home(tmp_path_factory, model_name: str = "fraud-detector") -> Settings:
    """Settings for a private platform home whose MLflow database is already migrated (creating
    one runs MLflow's migrations, ~10-25 s; they run once per session and the file is copied)."""
    if not _MLFLOW_TEMPLATE:
        template = Settings(home=tmp_path_factory.mktemp("mlflow-template"))
        from mlflow import MlflowClient

        (template.home / "mlflow").mkdir(parents=True)
        MlflowClient(tracking_uri=template.mlflow_tracking_uri).search_experiments()
        _MLFLOW_TEMPLATE.append(template.home / "mlflow" / "mlflow.db")
    home = tmp_path_factory.mktemp("platform-home")
    (home / "mlflow").mkdir()
    shutil.copy(_MLFLOW_TEMPLATE[0], home / "mlflow" / "mlflow.db")
    return Settings(home=home, case={"model_name": model_name})
