"""Online feature lookup for scoring: the Feast online store, read through the training feature service.

The scoring path needs, per request row, the values of the model's input columns:

* entity features (e.g. daily snapshots per customer and per terminal) read from the Feast **online
  store** for the feature views of the feature service used in training (``settings.case.feature_service``);
* **derived** features: a view whose stored value is turned into features per request (fraud: the
  customer's pushed recent transactions -> its last-hour counts, ``jobs.fraud.online``), by a function
  the use case gives per view (``derived=``); a view of the service with no online table
  (``online=False``) is skipped, its features come from such a derivation;
* request-time features (and the request fields the model reads as they are) computed by the use
  case's ``request_fn`` from the rows, as NumPy columns: the array form of the one definition its
  training frames also use (fraud: :func:`jobs.fraud.training_data.request_feature_values`), with no
  pandas on the request path.

A fetch returns a :class:`FeatureBatch`: one pre-allocated float64 matrix for the whole micro-batch,
columns in the client's order (the model's inputs), which :meth:`FeatureBatch.model_matrix` hands to
``inplace_predict`` in a model's column order without copying when the orders agree.

:class:`FeastFeatureClient` resolves the feature service once (feature views, join keys, feature names)
and then reads the views with the online store's own calls — the same ones ``FeatureStore.get_online_features``
makes underneath, without re-resolving the registry and re-building response protos on every request.
On Redis every view of every row of a batch is read in **one pipelined round trip** (the store's
``_read_hash_fields``, which ``get_online_features`` uses for its own multi-view reads; the hash-field
names are computed once per view); other stores are read view by view with ``online_read`` (SQLite:
in process, no round trip).
A use case's client subclasses it to add ``push(rows)`` (the stream path, run by ``serving.streaming``).

Unknown entities (an entity the online store has no row for; on Redis a hash with none of the view's
fields, which the store returns as empty values rather than as a missing row) are scored with the **documented
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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from typing import Any, Protocol

import numpy as np

UTC = dt.UTC
DEFAULT_FEATURE_VALUE = 0.0


class FeatureStoreUnavailable(RuntimeError):
    """The online store could not be read (connection refused, timeout, missing table, ...)."""


@dataclass
class FeatureVector:
    """Feature values of one request row plus where they came from."""

    values: dict[str, float]
    # feature view -> event timestamp of the row served (None: entity unknown to the online store)
    feature_timestamps: dict[str, dt.datetime | None] = field(default_factory=dict)
    unknown_entities: list[str] = field(default_factory=list)


class FeatureBatch:
    """The features of a batch of request rows: one float64 matrix (NaN: missing), a column per
    feature in ``columns`` order, the event timestamp served per view and row, the unknown entities
    per row. Indexing or iterating gives one row as a :class:`FeatureVector`."""

    __slots__ = ("columns", "_data", "timestamps", "unknown", "timings")

    def __init__(self, columns: tuple[str, ...], n: int) -> None:
        self.columns = columns
        self._data = np.full((n, len(columns)), np.nan)
        self.timestamps: dict[str, list[dt.datetime | None]] = {}
        self.unknown: list[list[str]] = [[] for _ in range(n)]
        self.timings: dict[str, float] = {}  # stage -> seconds (``online_read``, ``request_features``)

    @property
    def matrix(self) -> np.ndarray:
        return self._data

    def __len__(self) -> int:
        return self._data.shape[0]

    def __getitem__(self, i: int) -> FeatureVector:
        return FeatureVector(
            dict(zip(self.columns, self._data[i].tolist(), strict=True)),
            {view: stamps[i] for view, stamps in self.timestamps.items()},
            self.unknown[i],
        )

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def model_matrix(self, names: tuple[str, ...]) -> np.ndarray:
        """The matrix with a model's input columns in its order (NaN for a column the batch lacks):
        the batch's own matrix, uncopied, when the model reads the client's columns in order."""
        take = _selector(self.columns, names)
        if take is None:
            return self._data
        if take.max(initial=-1) < len(self.columns):
            return self._data[:, take]
        padded = np.concatenate([self._data, np.full((len(self), 1), np.nan)], axis=1)  # NaN: lacking
        return padded[:, take]


_SELECTORS: dict[tuple[tuple[str, ...], tuple[str, ...]], np.ndarray | None] = {}


def _selector(columns: tuple[str, ...], names: tuple[str, ...]) -> np.ndarray | None:
    key = (columns, names)
    if key not in _SELECTORS:
        if names == columns:
            _SELECTORS[key] = None
        else:
            index = {c: j for j, c in enumerate(columns)}
            _SELECTORS[key] = np.array([index.get(n, len(columns)) for n in names], dtype=np.intp)
    return _SELECTORS[key]


class FeatureClient(Protocol):
    """What the scoring service needs from a feature source (Feast in production and in tests)."""

    @property
    def feature_columns(self) -> list[str]: ...

    def fetch(self, rows: Sequence[dict[str, Any]]) -> FeatureBatch:
        """Features of request rows (the use case's validated request fields, e.g. a transaction:
        ids, amount, aware UTC datetime); raises FeatureStoreUnavailable."""
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
    columns: np.ndarray | None = None  # matrix column of each feature (stored views)
    default_row: np.ndarray | None = None  # the values of an unknown entity, per feature
    redis: tuple[str, tuple[str, ...], tuple[Any, ...]] | None = None  # (view name, requested, hash fields)


_KIND_BY_DTYPE = {"Int64": "int64_val", "Int32": "int32_val", "String": "string_val"}


@dataclass(frozen=True)
class _Held:
    """A view's online rows for a set of entities, read once and served from memory."""

    index: dict[tuple[Any, ...], int]  # entity key -> row of ``values``
    values: np.ndarray  # float64, one row per entity, the view's features in plan order
    known: np.ndarray  # bool: the store had a row for the entity
    stamps: list[Any]  # event timestamp per entity (None: unknown)


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


def _stored(values: dict[str, Any] | None) -> bool:
    """Whether an online read found the entity: Redis answers a missing hash with empty values."""
    return bool(values) and any(v.WhichOneof("val") is not None for v in values.values())


Derive = Callable[[dict[str, Any], dict[str, Any] | None], dict[str, float]]
"""``derive(row, stored values or None) -> features`` for a derived view."""

RequestFeatures = Callable[[Sequence[dict[str, Any]]], Mapping[str, Any]]
"""``request_fn(rows) -> {column: array-like of len(rows)}``: a use case's request-time features and
the request fields its model reads as they are, for a batch of validated request rows."""


class FeastFeatureClient:
    """Reads a Feast feature service's views from the online store, adds derived and request-time features."""

    def __init__(
        self,
        store: Any,
        feature_service: str,
        feature_columns: Sequence[str],
        request_fn: RequestFeatures | None = None,
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
        self._plans: list[_ViewPlan] | None = None
        self._columns: tuple[str, ...] = ()
        self._index: dict[str, int] = {}
        self._request_columns: frozenset[str] = frozenset()  # columns the request features may fill
        self._bulk: Any = None  # the online store when it reads every view in one round trip (Redis)
        self._key_cache: dict[tuple[tuple[str, ...], tuple[Any, ...]], bytes] = {}
        self._push_views: dict[str, list[Any]] = {}  # push source -> the views it feeds
        self._held: dict[str, _Held] = {}  # view -> its rows held in memory (:meth:`hold`)

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
        found: list[tuple[str, Any, tuple[str, ...], bool]] = []
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
            features = tuple(f.name for f in projection.features)
            found.append((projection.name, view, features, projection.name in self.derived))
        for name in self.derived:
            if any(f[0] == name for f in found):
                continue
            # a derived view is read even when the service does not list it (yet)
            try:
                view = self.store.get_feature_view(name)
            except Exception:  # not registered: its features take their defaults
                continue
            found.append((view.name, view, tuple(f.name for f in view.features), True))
        columns = list(self._feature_columns)
        for _, _, features, stream in found:  # a stored feature the model list lacks is still served
            columns.extend(f for f in features if not stream and f not in columns)
        self._columns = tuple(columns)
        self._index = {c: j for j, c in enumerate(self._columns)}
        stored = {f for _, _, features, stream in found if not stream for f in features}
        self._request_columns = frozenset(self._columns) - stored
        self._bulk = self._bulk_reader()
        plans = []
        for name, view, features, stream in found:
            keys = tuple(f.name for f in view.entity_columns)
            kinds = tuple(_KIND_BY_DTYPE.get(str(f.dtype), "int64_val") for f in view.entity_columns)
            plan = _ViewPlan(name, view, keys, kinds, features, _label_for(keys), stream)
            if not stream:
                plan = _replace(
                    plan,
                    columns=np.array([self._index[f] for f in features], dtype=np.intp),
                    default_row=np.array(
                        [self.defaults.get(f, DEFAULT_FEATURE_VALUE) for f in features], dtype="float64"
                    ),
                )
            if self._bulk is not None:
                plan = _replace(plan, redis=self._redis_fields(view, features))
            plans.append(plan)
        self._harden_online_store()
        self._plans = plans
        return plans

    def _bulk_reader(self) -> Any:
        online = getattr(self.store._get_provider(), "online_store", None)
        if type(online).__name__ != "RedisOnlineStore":
            return None
        needed = (
            "_read_hash_fields",
            "_generate_redis_keys_for_entities",
            "_generate_hset_keys_for_features",
        )
        return online if all(callable(getattr(online, a, None)) for a in needed) else None

    def _redis_fields(
        self, view: Any, features: tuple[str, ...]
    ) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
        """(stored view name, requested names incl. the timestamp field, hash-field names), once per view."""
        from feast.infra.online_stores.redis import _versioned_fv_name

        fv_name = _versioned_fv_name(view, self.store.config)
        requested, fields = self._bulk._generate_hset_keys_for_features(
            view, list(features), fv_name_override=fv_name
        )
        return fv_name, tuple(requested), tuple(fields)

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
        self._held = {}

    def hold(
        self, views: Sequence[str], rows: Sequence[dict[str, Any]], chunk: int = 20_000
    ) -> dict[str, int]:
        """Read stored views ``views`` for the entity ``rows`` once (in bulk, ``chunk`` entities per
        online read) and serve them from memory from now on: a request with hundreds of candidate
        items then reads only its user's views from the store. The held values are the online
        store's, so a held view and a read one serve the same features; an entity not held is read
        from the store. Call again after the store was materialized (the new values replace the old
        in one assignment). Returns the entities held per view."""
        plans = [p for p in self._resolve() if p.name in set(views) and not p.stream]
        missing = sorted(set(views) - {p.name for p in plans})
        if missing:
            raise ValueError(f"views: {missing} are not stored views of {self.feature_service_name!r}")
        held = dict(self._held)
        for plan in plans:
            keys = [tuple(r[k] for k in plan.join_keys) for r in rows]
            read: list[Any] = []
            for lo in range(0, len(rows), chunk):
                read.extend(self._read_all([plan], rows[lo : lo + chunk])[0])
            decoded = self._decode(plan, read)
            held[plan.name] = _replace(decoded, index={k: i for i, k in enumerate(keys)})
        self._held = held
        return {name: len(h.index) for name, h in held.items()}

    # --- reads ------------------------------------------------------------------------
    @staticmethod
    def _entity_keys(plan: _ViewPlan, rows: Sequence[dict[str, Any]]) -> list[Any]:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto

        keys = []
        join_keys = list(plan.join_keys)
        for row in rows:
            values = []
            for key, kind in zip(plan.join_keys, plan.join_key_kinds, strict=True):
                raw = row[key]
                values.append(ValueProto(**{kind: str(raw) if kind == "string_val" else int(raw)}))
            keys.append(EntityKeyProto(join_keys=join_keys, entity_values=values))
        return keys

    def _online_read(self, plan: _ViewPlan, rows: Sequence[dict[str, Any]]):
        provider = self.store._get_provider()
        return provider.online_read(
            config=self.store.config,
            table=plan.view,
            entity_keys=self._entity_keys(plan, rows),
            requested_features=list(plan.features),
        )

    @staticmethod
    def _redis_groups(plans: list[_ViewPlan]) -> list[tuple[tuple[str, ...], list[int]]]:
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, plan in enumerate(plans):
            groups.setdefault(plan.join_keys, []).append(i)
        return list(groups.items())

    def _redis_keys(self, plan: _ViewPlan, rows: Sequence[dict[str, Any]]) -> list[bytes]:
        """The Redis hash key of each row's entity (Feast's serialized entity key + project), memoised
        per entity: the same customers and terminals come back all day."""
        cache = self._key_cache
        wanted = [tuple(row[k] for k in plan.join_keys) for row in rows]
        missing = [i for i, w in enumerate(wanted) if (plan.join_keys, w) not in cache]
        if missing:
            if len(cache) > 500_000:  # bounded: a rebuild costs one serialization per entity
                cache.clear()
            protos = self._entity_keys(plan, [rows[i] for i in missing])
            keys = self._bulk._generate_redis_keys_for_entities(self.store.config, protos)
            for i, key in zip(missing, keys, strict=True):
                cache[(plan.join_keys, wanted[i])] = key
        return [cache[(plan.join_keys, w)] for w in wanted]

    def _read_all(
        self, plans: list[_ViewPlan], rows: Sequence[dict[str, Any]]
    ) -> list[list[tuple[Any, Any]]]:
        """``(event timestamp, values or None)`` per row, for every plan: on Redis one pipelined round
        trip for all views and rows, otherwise one ``online_read`` per view."""
        name = plans[0].name if len(plans) == 1 else "feature views"
        try:
            if self._bulk is None:
                return [self._online_read(plan, rows) for plan in plans]
            online, config = self._bulk, self.store.config
            commands, layout = [], []
            for _, members in self._redis_groups(plans):
                # one HMGET per entity for every view keyed by it (their fields live in one hash)
                fields = [f for i in members for f in plans[i].redis[2]]
                for key in self._redis_keys(plans[members[0]], rows):
                    commands.append((key, fields))
                layout.append(members)
            replies = online._read_hash_fields(config, commands)
            out: list[Any] = [None] * len(plans)
            n = len(rows)
            for g, members in enumerate(layout):
                group = replies[g * n : (g + 1) * n]
                offset = 0
                for i in members:
                    fv_name, requested, fields = plans[i].redis
                    part = [reply[offset : offset + len(fields)] for reply in group]
                    offset += len(fields)
                    out[i] = online._convert_redis_values_to_protobuf(part, fv_name, list(requested))
            return out
        except FeatureStoreUnavailable:
            raise
        except Exception as exc:  # the dependency boundary: any store error is "unavailable"
            raise FeatureStoreUnavailable(
                f"online store read of {name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def fetch(self, rows: Sequence[dict[str, Any]]) -> FeatureBatch:
        plans = self._resolve()
        batch = FeatureBatch(self._columns, len(rows))
        if not rows:
            return batch
        data, index = batch._data, self._index
        start = time.perf_counter()
        held = self._held
        read_plans = [p for p in plans if p.name not in held]
        reads, inverse = self._read_unique(read_plans, rows) if read_plans else ([], None)
        for plan in plans:
            if plan.name in held:
                self._fill_held(plan, held[plan.name], rows, batch)
        for plan, read in zip(read_plans, reads, strict=True):
            if inverse is not None and not plan.stream:  # decode each distinct entity once
                self._fill_decoded(plan, self._decode(plan, read), inverse, batch)
                continue
            if inverse is not None:
                read = [read[j] for j in inverse]
            batch.timestamps[plan.name] = stamps = [None] * len(rows)
            if plan.stream:
                derive = self.derived[plan.name]
                for i, (row, (ts, values)) in enumerate(zip(rows, read, strict=True)):
                    known = _stored(values)
                    stamps[i] = ts if known else None
                    for feature, value in derive(row, values if known else None).items():
                        j = index.get(feature)
                        if j is not None:
                            data[i, j] = value
                continue
            for i, (ts, values) in enumerate(read):
                if not _stored(values):
                    if plan.entity_label not in batch.unknown[i]:
                        batch.unknown[i].append(plan.entity_label)
                    data[i, plan.columns] = plan.default_row
                    continue
                stamps[i] = ts
                data[i, plan.columns] = [
                    _proto_to_python(values[f]) if f in values else math.nan for f in plan.features
                ]
        served = time.perf_counter()
        self._add_request_features(rows, batch)
        batch.timings = {"online_read": served - start, "request_features": time.perf_counter() - served}
        return batch

    def _read_unique(
        self, plans: list[_ViewPlan], rows: Sequence[dict[str, Any]]
    ) -> tuple[list[list[Any]], np.ndarray | None]:
        """:meth:`_read_all` of the distinct entities of ``rows`` only, and each row's entry among them
        (None: every row is distinct, one entry per row): a ranking request's 500 candidates share
        one user and ~20 user x category keys."""
        if len(rows) < 2:
            return self._read_all(plans, rows), None
        keys = tuple(sorted({k for p in plans for k in p.join_keys}))
        position: dict[tuple[Any, ...], int] = {}
        distinct: list[dict[str, Any]] = []
        inverse = []
        for row in rows:
            key = tuple(row[k] for k in keys)
            j = position.get(key)
            if j is None:
                j = position[key] = len(distinct)
                distinct.append(row)
            inverse.append(j)
        if len(distinct) == len(rows):
            return self._read_all(plans, rows), None
        return self._read_all(plans, distinct), np.asarray(inverse, dtype=np.intp)

    @staticmethod
    def _decode(plan: _ViewPlan, read: Sequence[tuple[Any, Any]]) -> _Held:
        """One view's online read as a matrix (unknown entities: the defaults), known mask, timestamps."""
        values = np.tile(plan.default_row, (len(read), 1))
        known = np.zeros(len(read), dtype=bool)
        stamps: list[Any] = [None] * len(read)
        for j, (ts, stored) in enumerate(read):
            if _stored(stored):
                known[j] = True
                stamps[j] = ts
                values[j] = [_proto_to_python(stored[f]) if f in stored else math.nan for f in plan.features]
        return _Held({}, values, known, stamps)

    @staticmethod
    def _fill_decoded(
        plan: _ViewPlan, decoded: _Held, take: np.ndarray, batch: FeatureBatch, rows: np.ndarray | None = None
    ) -> None:
        """Rows ``rows`` of the batch (all when None) get the decoded entries ``take`` of a view."""
        if rows is None:
            batch._data[:, plan.columns] = decoded.values[take]
            batch.timestamps[plan.name] = [decoded.stamps[j] for j in take.tolist()]
            rows = np.arange(len(take))
        else:
            batch._data[np.ix_(rows, plan.columns)] = decoded.values[take]
            stamps = batch.timestamps.setdefault(plan.name, [None] * len(batch))
            for i, j in zip(rows.tolist(), take.tolist(), strict=True):
                stamps[i] = decoded.stamps[j]
        for i in rows[~decoded.known[take]].tolist():
            if plan.entity_label not in batch.unknown[i]:
                batch.unknown[i].append(plan.entity_label)

    def _fill_held(
        self, plan: _ViewPlan, held: _Held, rows: Sequence[dict[str, Any]], batch: FeatureBatch
    ) -> None:
        """A held view's features of ``rows`` from memory (entities not held: read from the store)."""
        at = np.array(
            [held.index.get(tuple(row[k] for k in plan.join_keys), -1) for row in rows], dtype=np.intp
        )
        found = at >= 0
        batch.timestamps[plan.name] = [None] * len(rows)
        self._fill_decoded(plan, held, at[found], batch, np.flatnonzero(found))
        rest = np.flatnonzero(~found)
        if len(rest):
            read = self._read_all([plan], [rows[i] for i in rest.tolist()])[0]
            self._fill_decoded(plan, self._decode(plan, read), np.arange(len(rest)), batch, rest)

    def _add_request_features(self, rows: Sequence[dict[str, Any]], batch: FeatureBatch) -> None:
        if self.request_fn is None:
            return
        data, index = batch._data, self._index
        for name, column in self.request_fn(rows).items():
            if name in self._request_columns:
                data[:, index[name]] = column

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
