"""Fraud's online features: the one online-read path of the scoring API, batch helpers and skew tests.

:class:`FraudFeatureClient` is the serving core's :class:`serving.features.FeastFeatureClient` over the
configured feature service (``fraud_v3``) plus fraud's stream path:

* **read**: the daily snapshots (``customer_spending``, ``terminal_risk``) as stored; the last-hour
  features (``customer_nb_tx_1h``, ``customer_amount_1h``; offline the per-transaction view
  ``customer_activity_1h``, which has no online table) derived per request, with
  :func:`jobs.fraud.features.derive_recent` (the definition the batch Spark window also uses), from
  the customer's recent transactions in the pushed view ``customer_recent_activity``; the day's
  activity up to the transaction (:func:`jobs.fraud.features.derive_today`) from the same list, and
  the windows ending at the transaction (offline ``customer_windows_at_tx``) as the snapshot plus
  the day, :func:`jobs.fraud.features.windows_at_transaction` over the micro-batch's columns;
* **push** (run off the request path by ``serving.streaming.FeaturePusher``): every scored
  transaction is folded into its customer's recent activity (read-modify-write per customer, at most
  :data:`MAX_RECENT` transactions within :data:`WINDOW_SECONDS` or the newest's UTC day) and written to the views the push
  source ``customer_transactions_push`` feeds.

``feature_repo/fraud/streaming.py`` defines the push source and view; :func:`ensure_stream_objects`
registers them (``jobs.platform.feature_store.apply`` registers the batch views only).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs.fraud.features import (
    AT_TX_FEATURES,
    CUSTOMER_FEATURES,
    RECENT_FEATURES,
    RECENT_WINDOW_SECONDS,
    TODAY_FEATURES,
    day_start,
    derive_recent,
    derive_today,
    windows_at_transaction,
)
from serving.features import FeastFeatureClient, proto_list

if TYPE_CHECKING:
    from jobs.platform.config import Settings

PUSH_SOURCE_NAME = "customer_transactions_push"  # = feature_repo.fraud.streaming.PUSH_SOURCE_NAME
RECENT_ACTIVITY_VIEW = "customer_recent_activity"  # = feature_repo.fraud.streaming.RECENT_ACTIVITY_VIEW
WINDOW_SECONDS = RECENT_WINDOW_SECONDS
MAX_RECENT = 256  # per customer; a card with more than this per hour is an anomaly in itself
STREAM_FEATURES: tuple[str, ...] = tuple(RECENT_FEATURES)
UTC = dt.UTC


def epoch_seconds(ts: dt.datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp())


def merge_recent(
    ids: Sequence[int], epochs: Sequence[int], amounts: Sequence[float], new: Sequence[tuple[int, int, float]]
) -> tuple[list[int], list[int], list[float]]:
    """Add new (id, epoch, amount) transactions, drop duplicates and those older than both the last
    hour and the UTC day of the newest (what the last-hour and the day's features read), keep at
    most MAX_RECENT; sorted by time."""
    rows = {int(i): (int(e), float(a)) for i, e, a in zip(ids, epochs, amounts, strict=False)}
    for i, e, a in new:
        rows[int(i)] = (int(e), float(a))
    if not rows:
        return [], [], []
    newest = max(e for e, _ in rows.values())
    oldest = min(newest - WINDOW_SECONDS, day_start(newest))
    kept = sorted(((e, i, a) for i, (e, a) in rows.items() if e >= oldest), key=lambda r: (r[0], r[1]))[
        -MAX_RECENT:
    ]
    return [i for _, i, _ in kept], [e for e, _, _ in kept], [a for _, _, a in kept]


def _recent(values: dict[str, Any] | None) -> tuple[list, list, list]:
    if not values:
        return [], [], []
    return (
        proto_list(values["recent_tx_ids"]) if "recent_tx_ids" in values else [],
        proto_list(values["recent_tx_epochs"]) if "recent_tx_epochs" in values else [],
        proto_list(values["recent_tx_amounts"]) if "recent_tx_amounts" in values else [],
    )


def derive_recent_features(tx: dict[str, Any], values: dict[str, Any] | None) -> dict[str, float]:
    """The stream features of request ``tx`` from its customer's stored recent activity: the last
    hour (strictly before it; its own id excluded) and the day so far (the same, plus itself)."""
    ids, epochs, amounts = _recent(values)
    tx_id, epoch = int(tx.get("transaction_id", -1)), epoch_seconds(tx["tx_datetime"])
    return {
        **derive_recent(ids, epochs, amounts, tx_id, epoch),
        **derive_today(ids, epochs, amounts, tx_id, epoch, float(tx["tx_amount"])),
    }


def add_windows_at_tx(batch: Any) -> None:
    """Fill fraud_v3's windows ending at the transaction in a fetched :class:`serving.features.FeatureBatch`
    from its snapshot columns (``customer_spending``) and the day's derived activity, with
    :func:`jobs.fraud.features.windows_at_transaction` over whole columns (the batch job's definition);
    a batch without those columns (an older feature service) is left as it is."""
    index = {c: j for j, c in enumerate(batch.columns)}
    targets = [f for f in AT_TX_FEATURES if f in index]
    needs = (*CUSTOMER_FEATURES, *TODAY_FEATURES, "tx_amount")
    if not targets or len(batch) == 0 or any(f not in index for f in needs):
        return
    m = batch.matrix
    windows = windows_at_transaction(
        {f: m[:, index[f]] for f in CUSTOMER_FEATURES},
        m[:, index["customer_nb_tx_today"]],
        m[:, index["customer_amount_today"]],
        m[:, index["tx_amount"]],
    )
    for f in targets:
        m[:, index[f]] = windows[f]


def request_columns(transactions: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The request fields and request-time features the model reads, for a batch of request rows:
    the amount as it is, and :func:`jobs.fraud.training_data.request_feature_values` of the
    transactions' UTC times (the definition training frames use too). NumPy only: the hot path."""
    from jobs.fraud.training_data import request_feature_values

    n = len(transactions)
    epochs = np.fromiter((epoch_seconds(tx["tx_datetime"]) for tx in transactions), dtype="int64", count=n)
    amounts = np.fromiter((tx["tx_amount"] for tx in transactions), dtype="float64", count=n)
    return {"tx_amount": amounts, **request_feature_values(epochs)}


class FraudFeatureClient(FeastFeatureClient):
    """The core's Feast client with fraud's derived last-hour features and its push path."""

    def __init__(self, *args: Any, push_source: str | None = PUSH_SOURCE_NAME, **kwargs: Any) -> None:
        kwargs.setdefault("derived", {RECENT_ACTIVITY_VIEW: derive_recent_features})
        kwargs.setdefault("request_fn", request_columns)
        super().__init__(*args, **kwargs)
        self.push_source = push_source

    def fetch(self, rows: Sequence[dict[str, Any]]) -> Any:
        """The core's fetch, then the windows ending at the transaction (:func:`add_windows_at_tx`)."""
        batch = super().fetch(rows)
        add_windows_at_tx(batch)
        return batch

    def push(self, transactions: Sequence[dict[str, Any]]) -> int:
        """Fold scored transactions into their customers' recent activity and write it to every view
        the push source feeds. Returns the customers pushed."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto

        views = self.push_views(self.push_source) if self.push_source else []
        if self.view_plan(RECENT_ACTIVITY_VIEW) is None or not transactions or not views:
            return 0
        by_customer: dict[int, list[tuple[int, int, float]]] = {}
        latest: dict[int, dt.datetime] = {}
        for tx in transactions:
            cid = int(tx["customer_id"])
            by_customer.setdefault(cid, []).append(
                (int(tx["transaction_id"]), epoch_seconds(tx["tx_datetime"]), float(tx["tx_amount"]))
            )
            ts = tx["tx_datetime"].astimezone(UTC)
            latest[cid] = max(latest.get(cid, ts), ts)
        customers = sorted(by_customer)
        current = self.read_view(RECENT_ACTIVITY_VIEW, [{"customer_id": c} for c in customers])
        rows = []
        for cid, (prev_ts, values) in zip(customers, current, strict=True):
            ids, epochs, amounts = merge_recent(*_recent(values), by_customer[cid])
            event_ts = latest[cid]
            if prev_ts is not None and event_ts <= prev_ts:
                # a store that keeps the newest row only would drop it: stamp it just after the stored one
                event_ts = prev_ts + dt.timedelta(microseconds=1)
            key = EntityKeyProto(join_keys=["customer_id"], entity_values=[ValueProto(int64_val=cid)])
            feature_values = {
                "recent_tx_ids": ValueProto(int64_list_val=Int64List(val=ids)),
                "recent_tx_epochs": ValueProto(int64_list_val=Int64List(val=epochs)),
                "recent_tx_amounts": ValueProto(double_list_val=DoubleList(val=amounts)),
            }
            rows.append((key, feature_values, event_ts, None))
        self.write_views(views, rows)
        return len(rows)


def ensure_stream_objects(store: Any, settings: Any) -> bool:
    """Register the push source and recent-activity view (``feature_repo/fraud/streaming.py``) if the
    registry lacks them, their offline source in the settings' layout. Returns True if applied."""
    try:
        store.get_feature_view(RECENT_ACTIVITY_VIEW)
        return False
    except Exception:
        pass
    from jobs.platform.feature_store import located, repo_module
    from jobs.platform.storage import StorageLayout

    streaming = repo_module(settings.use_case, "streaming")
    entities = repo_module(settings.use_case, "entities")
    layout = StorageLayout(settings)
    # with its entity, so that Feast reads the join key's type from it instead of inferring it from
    # the offline files (which do not exist before the first push: a fresh home)
    store.apply(
        [
            entities.customer,
            *(
                located(o, layout)
                for o in (streaming.customer_transactions_push, streaming.customer_recent_activity)
            ),
        ]
    )
    return True


def get_online_features(
    rows: Iterable[Mapping[str, Any]], settings: Settings | None = None, store=None
) -> pd.DataFrame:
    """Features of live requests: each row needs customer_id, terminal_id, tx_datetime, tx_amount
    (transaction_id optional: the request's own id, excluded from its last-hour window).

    Returns the rows' columns plus :data:`FEATURE_COLUMNS`, read exactly as the scoring service reads
    them: through fraud's online feature client (:func:`jobs.fraud.online.feature_client`, the one
    online-read path), i.e. the training feature service's online views, the last-hour features
    derived from the pushed recent activity (0 when nothing was pushed for the customer), the
    request-time features, defaults for unknown entities. Reads only: the stream objects are not
    registered here (the scoring service does that).
    """
    from jobs.fraud.training_data import (
        FEAST_FEATURES,
        FEATURE_COLUMNS,
        as_utc_naive,
        fill_defaults,
        request_features,
    )
    from jobs.platform import feature_store as fs
    from jobs.platform.config import get_settings

    settings = settings or get_settings()
    frame = pd.DataFrame(list(rows))
    missing = [c for c in ("customer_id", "terminal_id", "tx_datetime", "tx_amount") if c not in frame]
    if missing:
        raise KeyError(f"{missing[0]}: missing from the request rows (rule: required field)")
    if frame.empty:
        return pd.DataFrame(columns=[*frame.columns, *FEATURE_COLUMNS])
    client = feature_client(settings, store or fs.get_store(settings, cached=True), register_stream=False)
    times = as_utc_naive(frame["tx_datetime"])
    tx_ids = frame["transaction_id"] if "transaction_id" in frame else pd.Series(-1, index=frame.index)
    requests = [
        {
            "transaction_id": int(i),
            "customer_id": int(c),
            "terminal_id": int(t),
            "tx_amount": float(a),
            "tx_datetime": ts.tz_localize("UTC").to_pydatetime(),
        }
        for i, c, t, a, ts in zip(
            tx_ids, frame["customer_id"], frame["terminal_id"], frame["tx_amount"], times, strict=True
        )
    ]
    vectors = client.fetch(requests)
    out = frame.copy()
    for name in FEAST_FEATURES:  # missing (unknown entity, nothing pushed) -> the defaults below
        out[name] = pd.Series([v.values.get(name) for v in vectors], index=out.index, dtype="object")
    out = fill_defaults(out)
    out["tx_amount"] = out["tx_amount"].astype("float64")
    return request_features(out)


def feature_client(settings: Any, store: Any = None, register_stream: bool = True) -> FraudFeatureClient:
    """Fraud's online feature client for the settings: the platform's store, the model inputs of the
    feature service (through the use case), its defaults and request-time function. With
    ``register_stream`` the stream objects are registered on first use (even when this process does
    not push: another writer may, and the last-hour features are always derived from them, never
    from the offline-only view)."""
    from jobs.fraud import training_data as td
    from jobs.platform import feature_store

    store = store or feature_store.get_store(settings)
    if register_stream:
        ensure_stream_objects(store, settings)
    return FraudFeatureClient(
        store=store,
        feature_service=settings.case.feature_service,
        feature_columns=feature_store.model_inputs(settings, store),
        request_fn=request_columns,
        push_source=PUSH_SOURCE_NAME if settings.serving_push_features else None,
        defaults=dict(td.feature_defaults()),
    )
