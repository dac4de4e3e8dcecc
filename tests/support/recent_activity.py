"""The features derived from the stream: replaying lake days through the serving feature client, and the
skew check against the batch values training saw (the customer's last hour, and fraud_v3's day so far and
windows ending at the transaction)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from jobs.fraud import training_data as td
from jobs.fraud.features import AT_TX_FEATURES, CURRENT_FEATURES, RECENT_FEATURES, feature_dtype
from jobs.platform.config import Settings

REPLAYED = [*RECENT_FEATURES, *CURRENT_FEATURES]


def replay_through_serving(settings: Settings, day: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replay day ``day`` (and the hour before it) of the lake through the scoring service's feature
    client in time order - read the features, then push the transaction, as ``/v1/score`` does -
    and return (served, training) stream-derived features of the day's transactions, by transaction_id.
    The online store must hold the customer snapshots of ``day - 1`` (materialized through it)."""
    from serving.features import default_feature_client

    train = td.get_training_set(day, day, settings).set_index("transaction_id")
    lake = td.labelled_transactions(day - dt.timedelta(days=1), day, settings)
    lake = lake[lake["tx_datetime"] >= pd.Timestamp(day) - pd.Timedelta(hours=1)]
    lake = lake.sort_values(["tx_datetime", "transaction_id"]).reset_index(drop=True)
    client = default_feature_client(settings)
    served: dict[int, dict[str, float]] = {}
    for r in lake.itertuples():
        tx = {
            "transaction_id": int(r.transaction_id),
            "customer_id": int(r.customer_id),
            "terminal_id": int(r.terminal_id),
            "tx_amount": float(r.tx_amount),
            "tx_datetime": r.tx_datetime.to_pydatetime().replace(tzinfo=dt.UTC),
        }
        (vector,) = client.fetch([tx])  # what /v1/score reads ...
        client.push([tx])  # ... and what its background pusher then writes
        served[tx["transaction_id"]] = {n: vector.values[n] for n in REPLAYED}
    online = pd.DataFrame.from_dict(served, orient="index").loc[train.index]
    return online, train[REPLAYED]


def assert_no_skew(online: pd.DataFrame, train: pd.DataFrame, min_within_hour: int = 10) -> None:
    assert len(online) == len(train) > 100
    for name in REPLAYED:
        if feature_dtype(name) == "int64":
            assert online[name].astype(int).tolist() == train[name].tolist(), name
        else:
            np.testing.assert_allclose(online[name], train[name], rtol=1e-12, err_msg=name)
    within = int((train["customer_nb_tx_1h"] > 0).sum())
    assert within >= min_within_hour, f"only {within} transactions follow another within the hour"
    same_day = int((train["customer_nb_tx_today"] > 1).sum())
    assert same_day >= min_within_hour, f"only {same_day} transactions follow another of the same day"
    history = int((train["customer_nb_tx_30d_at_tx"] > train["customer_nb_tx_today"]).sum())
    assert history >= len(train) // 2, f"only {history} transactions have a snapshot part (materialized?)"
    assert set(AT_TX_FEATURES) <= set(online.columns)
