"""Online feature lookup for scoring: the Feast online store, read through the training feature service.

The scoring path needs, per transaction, the values of the model's input columns:

* entity features (daily snapshots per customer and per terminal) read from the Feast **online store** for
  the feature views of the feature service used in training (``Settings.feature_service``, ``fraud_v2``);
* the last-hour features (``customer_nb_tx_1h``, ``customer_amount_1h``): offline they are the
  per-transaction view ``customer_activity_1h``, which has no online table; here they are derived per
  request (``jobs.fraud.features.derive_recent``, the same definition as the batch Spark window) from the
  customer's recent transactions that the stream path pushed to ``customer_recent_activity``;
* request-time features (weekend, night, ...) computed by the same shared function training uses
  (the use case's ``FeatureSpec.request_features``; fraud: ``jobs.fraud.training_data``).

:class:`FeastFeatureClient` resolves the feature service once (feature views, join keys, feature names)
and then reads each view with the provider's ``online_read`` — the same call ``FeatureStore.get_online_features``
makes underneath, without re-resolving the registry and re-building response protos on every request.

Unknown entities (a customer or terminal the online store has no row for) are scored with the
**documented defaults**: 0 for every feature of that view (``DEFAULT_FEATURE_VALUE``; counts, means
and risk shares of an entity with no activity in the window — the same all-zero row the batch feature
job emits when an entity leaves its look-back window, so training has seen it), overridable per
feature with ``defaults=``. They are flagged in the response (``unknown_entities``), counted in
``serving_unknown_entities_total`` and recorded in the prediction log.

Any failure to reach the online store raises :class:`FeatureStoreUnavailable`, which the API turns into
a 503 with a JSON reason.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from jobs.fraud.features import derive_recent
from serving.streaming import epoch_seconds, merge_recent

PUSH_SOURCE_NAME = "customer_transactions_push"  # = feature_repo.fraud.streaming.PUSH_SOURCE_NAME
RECENT_ACTIVITY_VIEW = "customer_recent_activity"  # = feature_repo.fraud.streaming.RECENT_ACTIVITY_VIEW

UTC = dt.UTC
DEFAULT_FEATURE_VALUE = 0.0


class FeatureStoreUnavailable(RuntimeError):
    """The online store could not be read (connection refused, timeout, missing table, ...)."""


@dataclass
class FeatureVector:
    """Feature values of one transaction plus where they came from."""

    values: dict[str, float]
    # feature view -> event timestamp of the row served (None: entity unknown to the online store)
    feature_timestamps: dict[str, dt.datetime | None] = field(default_factory=dict)
    unknown_entities: list[str] = field(default_factory=list)


class FeatureClient(Protocol):
    """What the scoring service needs from a feature source (Feast in production and in tests)."""

    @property
    def feature_columns(self) -> list[str]: ...

    def fetch(self, transactions: Sequence[dict[str, Any]]) -> list[FeatureVector]:
        """Feature vectors for transactions (dicts with transaction_id, customer_id, terminal_id,
        tx_amount, tx_datetime [aware UTC datetime]); raises FeatureStoreUnavailable."""
        ...

    def ping(self) -> None:
        """Raise FeatureStoreUnavailable unless the online store answers."""
        ...


@dataclass(frozen=True)
class _ViewPlan:
    name: str
    view: Any  # feast FeatureView / StreamFeatureView
    join_keys: tuple[str, ...]
    join_key_kinds: tuple[str, ...]  # ValueProto oneof field per join key ("int64_val", "string_val", ...)
    features: tuple[str, ...]
    entity_label: str  # how an unknown entity of this view is reported, e.g. "customer"
    stream: bool = False  # the pushed recent-activity view: features are derived, not served as is


_KIND_BY_DTYPE = {"Int64": "int64_val", "Int32": "int32_val", "String": "string_val"}


def _proto_to_python(value: Any) -> float:
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return math.nan
    raw = getattr(value, kind)
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def _proto_list(value: Any) -> list:
    kind = value.WhichOneof("val")
    if kind is None or not kind.endswith("_list_val"):
        return []
    return list(getattr(value, kind).val)


def _label_for(join_keys: Sequence[str]) -> str:
    return "+".join(k.removesuffix("_id") for k in join_keys)


class FeastFeatureClient:
    """Reads a Feast feature service's views from the online store, adds request-time features."""

    def __init__(
        self,
        store: Any,
        feature_service: str,
        feature_columns: Sequence[str],
        request_fn: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
        push_source: str | None = PUSH_SOURCE_NAME,
        defaults: dict[str, float] | None = None,
        stream_view: str | None = RECENT_ACTIVITY_VIEW,
        online_timeout_seconds: float = 0.25,
    ) -> None:
        self.online_timeout_seconds = online_timeout_seconds
        self.defaults = dict(defaults or {})
        self.stream_view = stream_view
        self.store = store
        self.feature_service_name = feature_service
        self._feature_columns = list(feature_columns)
        self.request_fn = request_fn
        self.push_source = push_source
        self._plans: list[_ViewPlan] | None = None
        self._push_targets: list[Any] | None = None

    # --- resolution -------------------------------------------------------------------
    @property
    def feature_columns(self) -> list[str]:
        return self._feature_columns

    def _resolve(self) -> list[_ViewPlan]:
        if self._plans is not None:
            return self._plans
        try:
            service = self.store.get_feature_service(self.feature_service_name, allow_cache=True)
        except Exception as exc:  # registry unreachable or service missing
            raise FeatureStoreUnavailable(
                f"feature service {self.feature_service_name!r} not found in the Feast registry: {exc}"
            ) from exc
        plans = []
        for projection in service.feature_view_projections:
            view = None
            for getter in ("get_feature_view", "get_stream_feature_view"):
                try:
                    view = getattr(self.store, getter)(projection.name)
                    break
                except Exception:  # not that kind of view (e.g. an on-demand view: computed at request time)
                    continue
            if view is None or not getattr(view, "online", True):
                # an offline-only view (``customer_activity_1h``: one row per past transaction) has no
                # online table; its features are derived per request from the stream view below
                continue
            keys = tuple(f.name for f in view.entity_columns)
            kinds = tuple(_KIND_BY_DTYPE.get(str(f.dtype), "int64_val") for f in view.entity_columns)
            features = tuple(f.name for f in projection.features)
            stream = projection.name == self.stream_view
            plans.append(_ViewPlan(projection.name, view, keys, kinds, features, _label_for(keys), stream))
        if self.stream_view and not any(p.stream for p in plans):
            # the recent-activity view is read even when the service does not list it (yet)
            try:
                view = self.store.get_feature_view(self.stream_view)
            except Exception:
                view = None
            if view is not None:
                keys = tuple(f.name for f in view.entity_columns)
                kinds = tuple(_KIND_BY_DTYPE.get(str(f.dtype), "int64_val") for f in view.entity_columns)
                features = tuple(f.name for f in view.features)
                plans.append(_ViewPlan(view.name, view, keys, kinds, features, _label_for(keys), True))
        self._harden_online_store()
        self._plans = plans
        return plans

    def _harden_online_store(self) -> None:
        """Fail fast instead of stalling every queued request: redis-py's default policy retries a
        failed command 3 times with exponential backoff from 1 s (up to ~7 s per call) and has no
        socket timeout. Serving wants one immediate retry (a pooled connection gone stale after a Redis
        restart) and short timeouts, so an outage is a 503 within milliseconds."""
        online = getattr(self.store._get_provider(), "online_store", None)
        if type(online).__name__ != "RedisOnlineStore":
            return
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = online._get_client(self.store.config.online_store)
        client.set_retry(Retry(NoBackoff(), 1))
        client.connection_pool.connection_kwargs.update(
            socket_timeout=self.online_timeout_seconds, socket_connect_timeout=self.online_timeout_seconds
        )

    def refresh(self) -> None:
        """Forget the resolved feature service (after ``feast apply`` changed it)."""
        self.store.refresh_registry()
        self._plans = None
        self._push_targets = None

    # --- reads ------------------------------------------------------------------------
    def _online_read(self, plan: _ViewPlan, transactions: Sequence[dict[str, Any]]):
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto

        keys = []
        for tx in transactions:
            values = []
            for key, kind in zip(plan.join_keys, plan.join_key_kinds, strict=True):
                raw = tx[key]
                values.append(ValueProto(**{kind: str(raw) if kind == "string_val" else int(raw)}))
            keys.append(EntityKeyProto(join_keys=list(plan.join_keys), entity_values=values))
        provider = self.store._get_provider()
        return provider.online_read(
            config=self.store.config,
            table=plan.view,
            entity_keys=keys,
            requested_features=list(plan.features),
        )

    def fetch(self, transactions: Sequence[dict[str, Any]]) -> list[FeatureVector]:
        plans = self._resolve()
        out = [FeatureVector(values={}) for _ in transactions]
        for plan in plans:
            try:
                rows = self._online_read(plan, transactions)
            except FeatureStoreUnavailable:
                raise
            except Exception as exc:  # the dependency boundary: any store error is "unavailable"
                raise FeatureStoreUnavailable(
                    f"online store read of {plan.name!r} failed: {type(exc).__name__}: {exc}"
                ) from exc
            if plan.stream:
                for tx, vector, (ts, values) in zip(transactions, out, rows, strict=True):
                    vector.feature_timestamps[plan.name] = ts
                    ids, epochs, amounts = _recent(values)
                    derived = derive_recent(
                        ids, epochs, amounts, tx["transaction_id"], epoch_seconds(tx["tx_datetime"])
                    )
                    vector.values.update(derived)
                continue
            for vector, (ts, values) in zip(out, rows, strict=True):
                vector.feature_timestamps[plan.name] = ts
                if values is None:
                    if plan.entity_label not in vector.unknown_entities:
                        vector.unknown_entities.append(plan.entity_label)
                    for name in plan.features:
                        vector.values[name] = self.defaults.get(name, DEFAULT_FEATURE_VALUE)
                else:
                    for name in plan.features:
                        v = values.get(name)
                        vector.values[name] = math.nan if v is None else _proto_to_python(v)
        self._add_request_features(transactions, out)
        return out

    def _add_request_features(self, transactions: Sequence[dict[str, Any]], out: list[FeatureVector]) -> None:
        if self.request_fn is None:
            return
        # typed numpy columns: half the cost of letting pandas infer them from lists (hot path)
        frame = pd.DataFrame(
            {
                "transaction_id": np.array([tx["transaction_id"] for tx in transactions], dtype="int64"),
                "customer_id": np.array([tx["customer_id"] for tx in transactions], dtype="int64"),
                "terminal_id": np.array([tx["terminal_id"] for tx in transactions], dtype="int64"),
                "tx_amount": np.array([tx["tx_amount"] for tx in transactions], dtype="float64"),
                # the lake stores UTC as naive timestamps; the shared function sees the same
                "tx_datetime": np.array(
                    [tx["tx_datetime"].astimezone(UTC).replace(tzinfo=None) for tx in transactions],
                    dtype="datetime64[ns]",
                ),
            }
        )
        enriched = self.request_fn(frame)
        served = set(out[0].values) if out else set()
        wanted = [c for c in self._feature_columns if c in enriched.columns and c not in served]
        columns = {c: enriched[c].to_numpy(dtype="float64", na_value=np.nan).tolist() for c in wanted}
        for i, vector in enumerate(out):
            values = vector.values
            for c, col in columns.items():
                values[c] = col[i]

    def ping(self) -> None:
        plans = self._resolve()
        if not plans:
            raise FeatureStoreUnavailable(
                f"feature service {self.feature_service_name!r} has no feature views"
            )
        probe = {
            k: (-1 if kind != "string_val" else "-1")
            for p in plans
            for k, kind in zip(p.join_keys, p.join_key_kinds, strict=True)
        }
        try:
            self._online_read(plans[0], [probe])
        except Exception as exc:
            raise FeatureStoreUnavailable(f"online store unreachable: {type(exc).__name__}: {exc}") from exc

    # --- streaming path -------------------------------------------------------------------
    def _push_views(self) -> list[Any]:
        """The feature views fed by the push source (what ``FeatureStore.push`` writes to)."""
        if self._push_targets is None:
            try:
                self._push_targets = list(
                    self.store._fvs_for_push_source_or_raise(self.push_source, allow_cache=True)
                )
            except Exception:  # push source not registered: the stream path is off
                self._push_targets = []
        return self._push_targets

    def push_transactions(self, transactions: Sequence[dict[str, Any]]) -> int:
        """Fold scored transactions into their customers' recent activity and push it.

        Read-modify-write per customer, called by the background pusher (never on the request path).
        The rows go to every feature view fed by the push source, through the provider's
        ``online_write_batch`` — the write ``FeatureStore.push(..., to=ONLINE)`` ends in, without its
        per-call DataFrame/Arrow conversion (about 40 ms per call here). Returns the customers pushed."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto

        plan = next((p for p in self._resolve() if p.stream), None)
        if plan is None or self.push_source is None or not transactions or not self._push_views():
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
        current = self._online_read(plan, [{"customer_id": c} for c in customers])
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
        provider = self.store._get_provider()
        for view in self._push_views():
            provider.online_write_batch(self.store.config, view, rows, progress=None)
        return len(rows)


def _recent(values: dict[str, Any] | None) -> tuple[list, list, list]:
    if not values:
        return [], [], []
    return (
        _proto_list(values["recent_tx_ids"]) if "recent_tx_ids" in values else [],
        _proto_list(values["recent_tx_epochs"]) if "recent_tx_epochs" in values else [],
        _proto_list(values["recent_tx_amounts"]) if "recent_tx_amounts" in values else [],
    )


def ensure_stream_objects(store: Any, settings: Any) -> bool:
    """Register the push source and recent-activity view (``feature_repo/fraud/streaming.py``) if the
    registry lacks them (``jobs.platform.feature_store.apply`` registers the batch views only), their
    offline source in the settings' layout. Returns True if applied."""
    try:
        store.get_feature_view(RECENT_ACTIVITY_VIEW)
        return False
    except Exception:
        pass
    from jobs.platform.feature_store import located, repo_module
    from jobs.platform.storage import StorageLayout

    streaming = repo_module(settings.use_case, "streaming")
    layout = StorageLayout(settings)
    store.apply(
        [
            located(o, layout)
            for o in (streaming.customer_transactions_push, streaming.customer_recent_activity)
        ]
    )
    return True


def default_feature_client(settings: Any) -> FeastFeatureClient:
    """The platform's feature client: ``jobs.platform.feature_store``'s store, and the use case's model
    inputs (from the feature service), defaults and request-time function; the stream objects are
    registered on first use."""
    from jobs.platform import feature_store
    from jobs.platform.use_case import get_use_case

    spec = get_use_case(settings).features
    store = feature_store.get_store(settings)
    # registered even when this service does not push (another writer may): the last-hour features
    # are always derived from it, never from the offline-only batch view
    ensure_stream_objects(store, settings)
    return FeastFeatureClient(
        store=store,
        feature_service=settings.case.feature_service,
        feature_columns=feature_store.model_inputs(settings, store),
        request_fn=spec.request_features,
        push_source=PUSH_SOURCE_NAME if settings.serving_push_features else None,
        defaults=dict(spec.defaults()),
    )
