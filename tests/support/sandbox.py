"""A self-contained scoring environment: a real Feast repo + a real XGBoost model in a real MLflow registry.

Used by the serving tests and the serving benchmark (and handy to try the API without running the
pipeline). It builds, under one folder:

* a Feast repo (``feature_store.yaml`` + ``registry.db``) applied from the platform's own definitions
  in ``feature_repo/fraud/`` — entities ``customer`` / ``terminal``, the daily-snapshot views
  ``customer_spending`` / ``terminal_risk``, the feature services ``fraud_v1``, ``fraud_v2`` (+ the
  last hour: offline ``customer_activity_1h``, online derived from the pushed view) and ``fraud_v3`` (+ the
  windows ending at the transaction: offline ``customer_windows_at_tx``, online the snapshot plus the
  day's pushed activity), and the stream view
  ``customer_recent_activity`` fed by the push source ``customer_transactions_push``
  (``feature_repo/fraud/streaming.py``); online store SQLite or Redis;
* feature values computed with pandas from the handbook simulator (a small world: a few hundred
  customers, a handful of days) and written to the online store with ``write_to_online_store``;
* an XGBoost model trained on those features, logged with ``mlflow.xgboost`` (signature + input
  example), registered under ``Settings.model_name`` with the tag ``decision_threshold`` and the alias
  ``champion``.

It is a sandbox, not the training pipeline: the snapshot features use ground-truth fraud for the
terminal risk (no label delay) and the model is tiny. The pipeline's own feature repo and training
job (``feature_repo/fraud/``, ``jobs/platform/train.py``) are what production serves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.fraud.simulate import Simulator, SimulatorConfig

SNAPSHOT_WINDOWS = (1, 7, 30)  # = feature_repo.fraud.feature_views.WINDOWS
CUSTOMER_FEATURES = [f"customer_{k}_{w}d" for w in SNAPSHOT_WINDOWS for k in ("nb_tx", "avg_amount")]
TERMINAL_FEATURES = [f"terminal_{k}_{w}d" for w in SNAPSHOT_WINDOWS for k in ("nb_tx", "risk")]
REQUEST_FEATURES = ["tx_amount", "tx_during_weekend", "tx_during_night"]
PROJECT = "fraud_serving_sandbox"


def served_columns() -> list[str]:
    """The model inputs of a ``fraud_v3`` model on the sandbox (the serving benchmark's): the snapshots,
    the request fields, the last hour and the windows ending at the transaction (0 in the sandbox's
    training rows: its model is for latency, not quality)."""
    from jobs.fraud.features import CURRENT_FEATURES
    from jobs.fraud.online import STREAM_FEATURES

    return CUSTOMER_FEATURES + TERMINAL_FEATURES + REQUEST_FEATURES + list(STREAM_FEATURES) + CURRENT_FEATURES


def daily_snapshots(tx: pd.DataFrame, days: list[dt.date]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per entity and day D, window aggregates over days D-w+1..D; event_timestamp = D+1 00:00 UTC."""
    tx = tx.assign(day=pd.to_datetime(tx["tx_datetime"]).dt.normalize())
    cust_rows, term_rows = [], []
    for d in days:
        end = pd.Timestamp(d)
        ts = pd.Timestamp(d + dt.timedelta(days=1), tz="UTC")
        cparts, tparts = [], []
        for w in SNAPSHOT_WINDOWS:
            win = tx[(tx["day"] > end - pd.Timedelta(days=w)) & (tx["day"] <= end)]
            c = win.groupby("customer_id")["tx_amount"].agg(["count", "mean"])
            c.columns = [f"customer_nb_tx_{w}d", f"customer_avg_amount_{w}d"]
            cparts.append(c)
            t = win.groupby("terminal_id")["tx_fraud"].agg(["count", "mean"])
            t.columns = [f"terminal_nb_tx_{w}d", f"terminal_risk_{w}d"]
            tparts.append(t)
        cust = pd.concat(cparts, axis=1).fillna(0.0).reset_index()
        term = pd.concat(tparts, axis=1).fillna(0.0).reset_index()
        cust["event_timestamp"], term["event_timestamp"] = ts, ts
        cust_rows.append(cust)
        term_rows.append(term)
    customers = pd.concat(cust_rows, ignore_index=True)
    terminals = pd.concat(term_rows, ignore_index=True)
    for frame, names in ((customers, CUSTOMER_FEATURES), (terminals, TERMINAL_FEATURES)):
        for name in names:
            frame[name] = frame[name].astype("int64" if "_nb_tx_" in name else "float64")
    return customers, terminals


def training_frame(tx: pd.DataFrame, customers: pd.DataFrame, terminals: pd.DataFrame) -> pd.DataFrame:
    """Transactions of day D joined with the snapshot of D-1 (the point-in-time value served online)."""
    frame = tx.copy()
    frame["snap_ts"] = (pd.to_datetime(frame["tx_datetime"]).dt.normalize()).dt.tz_localize("UTC")
    c = customers.rename(columns={"event_timestamp": "snap_ts"})
    t = terminals.rename(columns={"event_timestamp": "snap_ts"})
    frame = frame.merge(c, on=["customer_id", "snap_ts"], how="left").merge(
        t, on=["terminal_id", "snap_ts"], how="left"
    )
    frame[CUSTOMER_FEATURES + TERMINAL_FEATURES] = frame[CUSTOMER_FEATURES + TERMINAL_FEATURES].fillna(0.0)
    from jobs.fraud.training_data import request_features

    return request_features(frame)  # fraud's one definition (the service computes its array form)


def feature_store_yaml(root: Path, online: str, redis_connection: str | None = None) -> str:
    if online == "redis":
        # as the production profile configures Redis (feature_repo/fraud/feature_store.production.yaml)
        store = f'  type: redis\n  connection_string: "{redis_connection}"\n  skip_dedup: true\n'
    else:
        store = f"  type: sqlite\n  path: {root / 'online.db'}\n"
    return (
        f"project: {PROJECT}\n"
        "provider: local\n"
        f"registry:\n  path: {root / 'registry.db'}\n  cache_ttl_seconds: 60\n"
        f"online_store:\n{store}"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )


def definitions() -> list[Any]:
    """The platform's Feast objects (``feature_repo``) the sandbox applies."""
    from feature_repo.fraud.entities import customer, terminal, transaction
    from feature_repo.fraud.feature_services import fraud_v1, fraud_v2, fraud_v3
    from feature_repo.fraud.feature_views import (
        customer_activity_1h,
        customer_spending,
        customer_windows_at_tx,
        terminal_risk,
    )
    from feature_repo.fraud.streaming import customer_recent_activity, customer_transactions_push

    return [
        customer,
        terminal,
        transaction,
        customer_spending,
        terminal_risk,
        customer_activity_1h,  # offline only: online, its features derive from the pushed view
        customer_windows_at_tx,  # offline only: online, the snapshot + the day's pushed activity
        fraud_v1,
        fraud_v2,
        fraud_v3,
        customer_transactions_push,
        customer_recent_activity,
    ]


VIEW_OF = {"customer": "customer_spending", "terminal": "terminal_risk"}


@dataclass
class Sandbox:
    root: Path
    store: Any  # feast.FeatureStore
    transactions: pd.DataFrame  # the scored day's transactions (load to replay)
    training: pd.DataFrame
    feature_columns: list[str]
    online: str
    customers: pd.DataFrame  # the daily snapshots written online (latest per entity)
    terminals: pd.DataFrame

    def feature_client(self, **kwargs):
        from jobs.fraud.online import FraudFeatureClient

        return FraudFeatureClient(
            store=self.store,
            feature_service="fraud_v1",
            feature_columns=self.feature_columns,
            **kwargs,
        )


def build_feature_store(
    root: Path,
    online: str = "sqlite",
    redis_connection: str | None = None,
    n_customers: int = 300,
    n_terminals: int = 500,
    days: int = 8,
    seed: int = 7,
) -> Sandbox:
    """Simulate ``days`` days, compute snapshots, apply the Feast repo and fill the online store."""
    from jobs.fraud.online import STREAM_FEATURES

    root.mkdir(parents=True, exist_ok=True)
    sim = Simulator(SimulatorConfig(n_customers=n_customers, n_terminals=n_terminals, seed=seed))
    start = dt.date(2018, 4, 1)
    all_days = [start + dt.timedelta(days=i) for i in range(days)]
    tx = pd.concat([sim.transactions(d) for d in all_days], ignore_index=True)
    customers, terminals = daily_snapshots(tx, all_days[:-1])
    # the latest snapshot of each entity is what the daily materialization leaves online
    customers = customers.sort_values("event_timestamp").groupby("customer_id").tail(1)
    terminals = terminals.sort_values("event_timestamp").groupby("terminal_id").tail(1)
    store = apply_repo(root, online, redis_connection, customers, terminals)
    training = training_frame(
        tx[pd.to_datetime(tx["tx_datetime"]) >= pd.Timestamp(all_days[1])], customers, terminals
    )
    columns = CUSTOMER_FEATURES + TERMINAL_FEATURES + REQUEST_FEATURES + list(STREAM_FEATURES)
    last_day = tx[pd.to_datetime(tx["tx_datetime"]).dt.date == all_days[-1]].reset_index(drop=True)
    return Sandbox(root, store, last_day, training, columns, online, customers, terminals)


def apply_repo(
    root: Path, online: str, redis_connection: str | None, customers: pd.DataFrame, terminals: pd.DataFrame
):
    """Write feature_store.yaml, apply the definitions and write the snapshot rows to the online store."""
    from feast import FeatureStore

    root.mkdir(parents=True, exist_ok=True)
    (root / "feature_store.yaml").write_text(feature_store_yaml(root, online, redis_connection))
    store = FeatureStore(repo_path=str(root))
    store.apply(definitions())
    store.write_to_online_store(VIEW_OF["customer"], customers)
    store.write_to_online_store(VIEW_OF["terminal"], terminals)
    return store


def clone_sandbox(sandbox: Sandbox, root: Path, online: str, redis_connection: str | None = None) -> Sandbox:
    """The same features in another Feast repo / online store (e.g. Redis next to SQLite)."""
    store = apply_repo(root, online, redis_connection, sandbox.customers, sandbox.terminals)
    return Sandbox(
        root,
        store,
        sandbox.transactions,
        sandbox.training,
        sandbox.feature_columns,
        online,
        sandbox.customers,
        sandbox.terminals,
    )


def train_and_register(
    settings: Any,
    training: pd.DataFrame,
    feature_columns: list[str],
    alias: str | None = "champion",
    n_estimators: int = 30,
    seed: int = 0,
    threshold: float | None = None,
) -> str:
    """Train a small XGBoost model, log it with mlflow.xgboost, register it, tag the threshold, set the alias.

    Returns the registered version."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    X = training.reindex(columns=feature_columns).fillna(0.0).astype("float64")
    y = training["tx_fraud"].astype(int)
    model = xgb.XGBClassifier(
        n_estimators=n_estimators,
        max_depth=4,
        learning_rate=0.2,
        random_state=seed,
        n_jobs=1,
        scale_pos_weight=max(1.0, float((y == 0).sum()) / max(1, int(y.sum()))),
    )
    model.fit(X, y)
    scores = model.predict_proba(X)[:, 1]
    if threshold is None:
        costs = settings.case.costs
        grid = np.linspace(0.05, 0.95, 19)
        cost = [
            costs.false_positive * float(((scores >= t) & (y == 0)).sum())
            + costs.false_negative * float(((scores < t) & (y == 1)).sum())
            for t in grid
        ]
        threshold = float(grid[int(np.argmin(cost))])
    from jobs.platform.registry import configure_mlflow

    # artifacts under settings.mlflow_artifact_root, never MLflow's default ./mlruns in the working directory
    configure_mlflow(settings, "serving-sandbox")
    uri = settings.mlflow_tracking_uri
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(
            model,
            name="model",
            signature=infer_signature(X.head(5), scores[:5]),
            input_example=X.head(2),
            registered_model_name=settings.case.model_name,
        )
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.set_model_version_tag(settings.case.model_name, version, "decision_threshold", f"{threshold:.6f}")
    if alias is not None:
        client.set_registered_model_alias(settings.case.model_name, alias, version)
    return version
