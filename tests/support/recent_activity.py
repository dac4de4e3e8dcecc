"""The customer's last hour: replaying lake days through the serving feature client, and the skew check
against the batch values training saw."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from jobs.fraud import training_data as td
from jobs.fraud.features import RECENT_FEATURES
from jobs.platform.config import Settings


def replay_through_serving(settings: Settings, day: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replay day ``day`` (and the hour before it) of the lake through the scoring service's feature
    client in time order - read the features, then push the transaction, as ``/v1/score`` does -
    and return (served, training) last-hour features of the day's transactions, by transaction_id."""
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
        served[tx["transaction_id"]] = {n: vector.values[n] for n in RECENT_FEATURES}
    online = pd.DataFrame.from_dict(served, orient="index").loc[train.index]
    return online, train[RECENT_FEATURES]


def assert_no_skew(online: pd.DataFrame, train: pd.DataFrame, min_within_hour: int = 10) -> None:
    assert len(online) == len(train) > 100
    assert online["customer_nb_tx_1h"].astype(int).tolist() == train["customer_nb_tx_1h"].tolist()
    np.testing.assert_allclose(online["customer_amount_1h"], train["customer_amount_1h"], rtol=1e-12)
    within = int((train["customer_nb_tx_1h"] > 0).sum())
    assert within >= min_within_hour, f"only {within} transactions follow another within the hour"
