"""Online feature lookup for scoring: the Feast online store, read through the training feature service.

The scoring path needs, per request row, the values of the model's input columns:

* entity features (e.g. daily snapshots per customer and per terminal) read from the Feast **online
  store** for the feature views of the feature service used in training (``settings.case.feature_service``);
* **derived** features: a view whose stored value is turned into features per request (fraud: the
  customer's pushed recent transactions -> its last-hour counts, ``jobs.fraud.online``), by a function
  the use case gives per view (``derived=``); a view of the service with no online table
  (``online=False``) is skipped, its features come from such a derivation;
* request-time features computed by the same shared function training uses (the use case's
  ``FeatureSpec.request_features``) over the frame its ``request_frame`` builds from the rows.

:class:`FeastFeatureClient` resolves the feature service once (feature views, join keys, feature names)
and then reads each view with the provider's ``online_read`` — the same call ``FeatureStore.get_online_features``
makes underneath, without re-resolving the registry and re-building response protos on every request.
A use case's client subclasses it to add ``push(rows)`` (the stream path, run by ``serving.streaming``).

Unknown entities (an entity the online store has no row for) are scored with the **documented
defaults**: 0 for every feature of that view (``DEFAULT_FEATURE_VALUE``; counts, means and risk shares
of an entity with no activity in the window — the same all-zero row the batch feature job emits when
an entity leaves its look-back window, so training has seen it), overridable per feature with
``defaults=``. They are flagged in the response (``unknown_entities``), counted in
``serving_unknown_entities_total`` and recorded in the prediction log.

Any failure to reach the online store raises :class:`FeatureStoreUnavailable`, which the API turns into
a 503 with a JSON reason.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

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

    def fetch(self, rows: Sequence[dict[str, Any]]) -> list[FeatureVector]:
        """Feature vectors for request rows (the use case's validated request fields, e.g. a
        transaction: ids, amount, aware UTC datetime); raises FeatureStoreUnavailable."""
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
    stream: bool = False  # a derived view: its stored value is turned into features per request


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


def proto_list(value: Any) -> list:
    kind = value.WhichOneof("val")
    if kind is None or not kind.endswith("_list_val"):
        return []
    return list(getattr(value, kind).val)


def _label_for(join_keys: Sequence[str]) -> str:
    return "+".join(k.removesuffix("_id") for k in join_keys)


Derive = Callable[[dict[str, Any], dict[str, Any] | None], dict[str, float]]
"""``derive(row, stored values or None) -> features`` for a derived view."""


class FeastFeatureClient:
    """Reads a Feast feature service's views from the online store, adds derived and request-time features."""

    def __init__(
        self,
        store: Any,
        feature_service: str,
        feature_columns: Sequence[str],
        request_fn: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
        request_frame: Callable[[Sequence[dict[str, Any]]], pd.DataFrame] | None = None,
        defaults: dict[str, float] | None = None,
        derived: Mapping[str, Derive] | None = None,
        online_timeout_seconds: float = 0.25,
    ) -> None:
        self.online_timeout_seconds = online_timeout_seconds
        self.defaults = dict(defaults or {})
        self.derived = dict(derived or {})
        self.store = store
        self.feature_service_name = feature_service
        self._feature_columns = list(feature_columns)
        self.request_fn = request_fn
        self.request_frame = request_frame or pd.DataFrame
        self._plans: list[_ViewPlan] | None = None
        self._push_views: dict[str, list[Any]] = {}  # push source -> the views it feeds

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
                # an offline-only view (fraud's ``customer_activity_1h``: one row per past transaction)
                # has no online table; its features are derived per request from a derived view
                continue
            keys = tuple(f.name for f in view.entity_columns)
            kinds = tuple(_KIND_BY_DTYPE.get(str(f.dtype), "int64_val") for f in view.entity_columns)
            features = tuple(f.name for f in projection.features)
            stream = projection.name in self.derived
            plans.append(_ViewPlan(projection.name, view, keys, kinds, features, _label_for(keys), stream))
        for name in self.derived:
            if any(p.name == name for p in plans):
                continue
            # a derived view is read even when the service does not list it (yet)
            try:
                view = self.store.get_feature_view(name)
            except Exception:  # not registered: its features take their defaults
                continue
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
        self._push_views = {}

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
                derive = self.derived[plan.name]
                for row, vector, (ts, values) in zip(transactions, out, rows, strict=True):
                    vector.feature_timestamps[plan.name] = ts
                    vector.values.update(derive(row, values))
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
        enriched = self.request_fn(self.request_frame(transactions))
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

    # --- helpers for a use case's stream path (its subclass's ``push``) ---------------------
    def view_plan(self, name: str) -> _ViewPlan | None:
        """The resolved plan of a feature view the client reads (None: not read)."""
        return next((p for p in self._resolve() if p.name == name), None)

    def read_view(self, name: str, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, dict[str, Any] | None]]:
        """``(event timestamp, stored values or None)`` of view ``name`` for entity rows (raw online read)."""
        plan = self.view_plan(name)
        if plan is None:
            raise FeatureStoreUnavailable(f"feature view {name!r} is not read by this client")
        return self._online_read(plan, rows)

    def write_views(
        self, views: Sequence[Any], rows: list[tuple[Any, dict[str, Any], dt.datetime, None]]
    ) -> None:
        """Write entity rows (entity key proto, values, event timestamp, None) to feature views through
        the provider's ``online_write_batch`` — where ``FeatureStore.push(..., to=ONLINE)`` ends, without
        its per-call DataFrame/Arrow conversion (about 40 ms per call here)."""
        provider = self.store._get_provider()
        for view in views:
            provider.online_write_batch(self.store.config, view, rows, progress=None)

    def push_views(self, push_source: str) -> list[Any]:
        """The feature views fed by a push source (what ``FeatureStore.push`` writes to); [] if
        unregistered. Resolved once per push source until :meth:`refresh`."""
        if push_source not in self._push_views:
            try:
                views = list(self.store._fvs_for_push_source_or_raise(push_source, allow_cache=True))
            except Exception:  # push source not registered: the stream path is off
                views = []
            self._push_views[push_source] = views
        return self._push_views[push_source]


def default_feature_client(settings: Any) -> FeatureClient:
    """The use case's online feature client (its serving handler's ``feature_client``): the one
    online-read path of serving, batch helpers and the skew tests."""
    from jobs.platform.use_case import get_use_case

    return get_use_case(settings).serving().feature_client(settings)
