"""Ranking's handler on the serving core (``UseCase.serving``): the real-time funnel, ``POST /v1/recommend``.

One request -> the slate of one user, through the same stages and code as the batch job
(:mod:`jobs.ranking.funnel`):

1. **retrieval**: the serving model's companion retriever (ALS + faiss, content, fresh, trending),
   the candidates kept to the servable catalogue and without the request's ``exclude``;
2. **features**: the ranker's feature service read from the Feast online store for all candidates in
   one bulk read per feature view (one pipelined round trip on Redis), the request-time features
   computed as in training (:func:`jobs.ranking.training_data.request_features`);
3. **pre-ranking**: the companion pre-ranker and the shared cut (:func:`jobs.ranking.funnel.prerank_cut`);
4. **ranking**: the registered ranker (champion, or the challenger for canary users);
5. **re-ranking**: the business rules (:func:`jobs.ranking.rerank.rerank`) with the items the user
   bought or ignored in the lake's last days.

Ranker and companion are one immutable bundle (``ServingHandler.companion``): when the champion
alias moves, the retrieval index, the pre-ranker and the ranker change together, never a mix.

**Fallback, never a 5xx for what can be routed around**: when no model is loaded, a stage raises
(the online store is down, say) or a stage exceeds its budget (``RANKING_SERVING_*_MS``), the answer
is the user's precomputed batch slate (``recommendations/date=D``, the batch DAG's), else the items
clicked most on the lake's last day, with ``degraded: true`` and the reason. The day-level state
(catalogue, consumed items, batch slates, trending) is read from the lake's latest ingested day and
re-read in the background when a newer day lands.

Every answer is logged (one prediction-log row per served slot, partitioned by the request's date).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobs.platform.logs import get_logger
from jobs.ranking.schema import DEVICES
from serving.handler import LogSchema, Routes, ServiceUnavailable, ServingHandler
from serving.schemas import JsonId

log = get_logger("ranking.serving")

STAGES: tuple[str, ...] = ("retrieval", "features", "prerank", "rank", "rerank")
SOURCES: tuple[str, ...] = ("funnel", "batch", "trending")

LOG_SCHEMA = LogSchema(
    columns={
        "request_id": pa.string(),
        "user_id": pa.int64(),
        "item_id": pa.int64(),
        "slot": pa.int32(),
        "score": pa.float64(),
        "strategy": pa.string(),
        "category": pa.int64(),
        "launched_at": pa.timestamp("us"),
        "device": pa.string(),
        "requested_at": pa.timestamp("us"),
        "scored_at": pa.timestamp("us"),
        "model_name": pa.string(),
        "model_version": pa.string(),
        "arm": pa.string(),
        "source": pa.string(),
        "degraded": pa.bool_(),
    },
    partition_by="requested_at",
)


# --- the API's schemas --------------------------------------------------------------------------
class RequestContext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timestamp: dt.datetime = Field(description="request time (ISO 8601; UTC if no zone is given)")
    device: Literal[DEVICES] = Field(description="the client's device")  # type: ignore[valid-type]

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class RecommendRequest(BaseModel):
    """A home-feed request: the ``k`` items the user is most likely to click now."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "request_id": "r-1",
                    "user_id": 42,
                    "context": {"timestamp": "2024-01-10T08:00:00Z", "device": "mobile"},
                    "k": 10,
                }
            ]
        },
    )

    request_id: str = Field(min_length=1, max_length=128, description="the caller's id of the request")
    user_id: JsonId = Field(description="the user (Feast entity `user`; a JSON integer)")
    context: RequestContext
    k: int = Field(10, ge=1, le=50, strict=True, description="slate size")
    exclude: list[JsonId] = Field(default_factory=list, max_length=1000, description="items not to recommend")


class RecommendedItem(BaseModel):
    item_id: int
    slot: int = Field(description="0-based position in the slate")
    score: float | None = Field(description="the ranker's score after the rules (None when degraded)")
    strategy: str = Field(description="what proposed the item: cf, content, fresh, trending, popular, batch")
    category: int | None = None


class Recommendation(BaseModel):
    request_id: str
    user_id: int
    items: list[RecommendedItem]
    model_name: str | None
    model_version: str | None
    arm: Literal["champion", "challenger"] | None
    source: Literal[SOURCES] = Field(  # type: ignore[valid-type]
        description="funnel: the live funnel; batch: the user's precomputed slate; trending: the day's most clicked"
    )
    degraded: bool
    reason: str | None = Field(description="why the answer is degraded (None when it is not)")
    timings_ms: dict[str, float] = Field(description="milliseconds per funnel stage reached")


# --- the day's state, from the lake ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DayState:
    """What the funnel reads besides models and features, as of the lake's latest day ``day``."""

    day: dt.date
    items: pd.DataFrame  # the servable catalogue, indexed by item_id (category, launched_at, ...)
    bought: dict[int, set[int]]
    seen: dict[int, dict[int, int]]
    batch: dict[int, list[int]]  # user -> the batch job's slate for day + 1 (item ids by slot)
    trending: list[int]  # the servable items clicked most on ``day``
    category_of: np.ndarray  # by item id: its category, -1 when not in the servable catalogue
    launched_at: np.ndarray  # by item id: its launch (datetime64[ns])
    events: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict, repr=False)  # the window's

    def retriever(self, retriever):
        """A model version's retriever with this day's fresh and trending lists
        (:func:`jobs.ranking.retrieval.day_lists`, as the batch job refreshes them), built once per
        retriever and day."""
        from jobs.ranking.retrieval import day_lists

        memo = self.__dict__.setdefault("_retrievers", {})
        key = id(retriever)
        if key not in memo:
            lists = day_lists(
                self.events["impressions"],
                self.events["clicks"],
                self.items.reset_index(),
                self.day,
                retriever.cfg,
            )
            if len(memo) >= 4:  # the champion's and the challenger's, and a reload's
                memo.clear()
            memo[key] = (retriever, retriever.for_day(lists))  # the original kept: its id stays its own
        return memo[key][1]


def latest_day(settings) -> dt.date | None:
    from jobs.platform.storage import StorageLayout

    days = StorageLayout(settings).partitions("impressions")
    return days[-1] if days else None


def load_state(settings, day: dt.date) -> DayState:
    """The state of ``day`` (the consumed items of the batch job's window, its slates if written)."""
    from jobs.platform.storage import StorageLayout
    from jobs.ranking.funnel import SEEN_DAYS, consumed_items, event_window
    from jobs.ranking.training_data import catalogue

    layout = StorageLayout(settings)
    items = catalogue(layout, day).set_index("item_id")
    events = event_window(layout, day - dt.timedelta(days=SEEN_DAYS - 1), day)
    bought, seen = consumed_items(events)
    batch: dict[int, list[int]] = {}
    path = layout.path("recommendations", day)
    if path.exists():
        recs = pd.read_parquet(path, columns=["user_id", "slot", "item_id"]).sort_values(["user_id", "slot"])
        for user, group in recs.groupby("user_id", sort=False):
            batch[int(user)] = group["item_id"].astype(int).tolist()
    clicks = events["clicks"]
    last = clicks[clicks["clicked_at"] >= pd.Timestamp(day)]
    counts = last["item_id"].value_counts()
    counts = counts[counts.index.isin(items.index)]
    trending = [int(i) for i in counts.index[:200]]
    size = int(items.index.max()) + 1 if len(items) else 0
    category_of = np.full(size, -1, dtype=np.int64)
    category_of[items.index.to_numpy()] = items["category"].to_numpy(dtype="int64")
    launched_at = np.full(size, np.datetime64("NaT"), dtype="datetime64[ns]")
    launched_at[items.index.to_numpy()] = items["launched_at"].to_numpy(dtype="datetime64[ns]")
    return DayState(day, items, bought, seen, batch, trending, category_of, launched_at, events)


HELD_VIEWS: tuple[str, ...] = ("item_activity", "item_catalogue")
"""The item views served from memory (``FeastFeatureClient.hold``): a request's ~500 candidates then
cost no online read; only the user's two views are read per request."""


class StateHolder:
    """The current :class:`DayState`, loaded on first use and re-read in the background when a newer
    day lands or the store was materialized again (checked every ``refresh_seconds``; the item views
    are then held again); a request never waits for a re-read."""

    def __init__(self, settings, refresh_seconds: float, features: Any = None) -> None:
        self.settings = settings
        self.refresh_seconds = refresh_seconds
        self.features = features
        self.state: DayState | None = None
        self.marks: dict[str, Any] | None = {}  # of the views held; None: hold again at the next refresh
        self.held: dict[str, int] = {}
        self.error: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def get(self) -> DayState:
        state = self.state
        if state is None:
            with self._lock:
                if self.state is None:
                    self.refresh()
                    self._start()
            state = self.state
        if state is None:
            raise ServiceUnavailable("state_unavailable", self.error or "no ingested day in the lake")
        return state

    def refresh(self) -> bool:
        """Load the lake's latest day if it moved, and re-hold the item views if it or their
        materialization moved. The day state comes from the lake alone: an unreachable online store
        or registry leaves the held views as they were (retried at the next refresh) but never keeps
        the day's state, and so the fallbacks, from the requests."""
        try:
            day = latest_day(self.settings)
            if day is None:
                self.error = "impressions: no ingested day in the lake; rule: ingest a day first"
                return False
            try:
                marks: dict[str, Any] | None = self._watermarks()
            except Exception as exc:  # the registry is unreachable: the lake's day can still move
                marks, self.error = None, f"feature registry unreachable: {type(exc).__name__}: {exc}"
                log.warning("ranking_state_watermarks_failed", error=self.error)
            day_moved = self.state is None or self.state.day != day
            if not day_moved and (marks is None or marks == self.marks):
                return False
            state = load_state(self.settings, day) if day_moved else self.state
            self.state = state
            if marks is not None:
                self.error = None
            if marks is not None:
                self.marks = marks
            if callable(getattr(self.features, "hold", None)):
                try:
                    self.held = self.features.hold(
                        HELD_VIEWS, [{"item_id": int(i)} for i in state.items.index]
                    )
                except Exception as exc:  # keep the views held before; retried at the next refresh
                    self.marks = None
                    self.error = f"holding the item views failed: {type(exc).__name__}: {exc}"
                    log.warning("ranking_hold_failed", error=self.error)
            log.info(
                "ranking_state_loaded", day=day.isoformat(), batch_users=len(state.batch), held=self.held
            )
            return True
        except Exception as exc:  # keep serving the last good state
            self.error = f"state refresh failed: {type(exc).__name__}: {exc}"
            log.exception("ranking_state_refresh_failed")
            return False

    def _watermarks(self) -> dict[str, Any]:
        """The held views' materialization ends in the registry (they move when the store is refreshed)."""
        store = getattr(self.features, "store", None)
        if store is None:
            return {}
        store.refresh_registry()
        return {v: store.get_feature_view(v).most_recent_end_time for v in HELD_VIEWS}

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ranking-state", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()


# --- the funnel of one request --------------------------------------------------------------------
class BudgetExceeded(RuntimeError):
    pass


@dataclasses.dataclass
class Funnel:
    """The live funnel for one request (stateless between requests; the bundle and state are passed in)."""

    features: Any  # serving.features.FeatureClient
    budgets_ms: dict[str, float]
    observe: Any = None  # observe(stage, seconds)

    def _timed(self, stage: str, started: float, timings: dict[str, float]) -> float:
        now = time.perf_counter()
        ms = (now - started) * 1000.0
        timings[stage] = round(ms, 3)
        if self.observe is not None:
            self.observe(f"ranking_{stage}", now - started)
        budget = self.budgets_ms.get(stage)
        if budget is not None and ms > budget:
            raise BudgetExceeded(f"stage {stage} took {ms:.1f} ms, over its {budget:g} ms budget")
        return now

    def run(self, request: dict[str, Any], model, state: DayState, timings: dict[str, float]) -> pd.DataFrame:
        """The slate (item_id, slot, score, strategy, category) of one request, with ``model``'s
        companion retriever and pre-ranker. Raises on a failed stage or a blown budget."""
        from jobs.ranking.funnel import PRE_FEATURES, prerank_cut
        from jobs.ranking.rerank import rerank

        retriever, preranker = model.companion
        retriever = state.retriever(retriever)
        user = int(request["user_id"])
        now = pd.Timestamp(request["context"]["timestamp"]).tz_convert("UTC").tz_localize(None)
        device = request["context"]["device"]
        t = time.perf_counter()
        ((_, ids, strategy),) = retriever.merged(np.array([user], dtype=np.int64))
        known = ids < len(state.category_of)
        category = np.full(len(ids), -1, dtype=np.int64)
        category[known] = state.category_of[ids[known]]
        keep = category >= 0  # only servable catalogue items
        if request.get("exclude"):
            keep &= ~np.isin(ids, np.asarray(request["exclude"], dtype=np.int64))
        if not keep.any():
            raise RuntimeError("retrieval: no servable candidate")
        ids, category, strategy = ids[keep], category[keep], strategy[keep]
        launched = state.launched_at[ids]
        t = self._timed("retrieval", t, timings)

        launched_s = launched.astype("datetime64[s]").astype("int64")
        rows = [
            {
                "user_id": user,
                "item_id": i,
                "category": c,
                "device": device,
                "shown_at": now,
                "launched_at_s": s,
            }
            for i, c, s in zip(ids.tolist(), category.tolist(), launched_s.tolist(), strict=True)
        ]
        batch = self.features.fetch(rows)
        t = self._timed("features", t, timings)

        pre = preranker.inplace_predict(batch.model_matrix(tuple(PRE_FEATURES)))
        cands = pd.DataFrame(
            {
                "user_id": np.full(len(ids), user, dtype=np.int64),
                "item_id": ids,
                "strategy": strategy,
                "category": category,
                "launched_at": launched,
                "row": np.arange(len(ids)),
            }
        )
        kept = prerank_cut(cands, np.asarray(pre).reshape(-1))
        t = self._timed("prerank", t, timings)

        matrix = batch.model_matrix(model.feature_names)[kept["row"].to_numpy()]
        kept["score"] = model.predict(matrix)
        sponsored = batch.model_matrix(("sponsored",))[kept["row"].to_numpy(), 0]
        kept["sponsored"] = np.nan_to_num(sponsored).astype("int64")
        t = self._timed("rank", t, timings)

        slate, _ = rerank(
            kept,
            now=now,
            k=int(request.get("k", 10)),
            bought=state.bought.get(user, ()),
            seen=state.seen.get(user, {}),
        )
        self._timed("rerank", t, timings)
        return slate


def _fallback(request: dict[str, Any], state: DayState | None) -> tuple[str, list[dict[str, Any]]]:
    """The degraded slate: the user's batch slate, else the day's trending items."""
    k = int(request.get("k", 10))
    user = int(request["user_id"])
    exclude = set(request.get("exclude") or ())
    if state is None:
        return "trending", []
    items = [i for i in state.batch.get(user, []) if i not in exclude]
    source, strategy = ("batch", "batch") if items else ("trending", "trending")
    if not items:
        items = [i for i in state.trending if i not in exclude]
    out = []
    for slot, item in enumerate(items[:k]):
        category = state.items["category"].get(item)
        out.append(
            {
                "item_id": int(item),
                "slot": slot,
                "score": None,
                "strategy": strategy,
                "category": None if category is None else int(category),
            }
        )
    return source, out


class RecommendService:
    """``/v1/recommend`` independent of HTTP: the funnel, its fallbacks, the log records."""

    def __init__(self, settings, routes: Routes) -> None:
        cfg = settings.case.serving
        self.routes = routes
        self.state = StateHolder(settings, cfg.state_refresh_seconds, routes.features)
        self.funnel = Funnel(
            routes.features,
            {
                "retrieval": cfg.retrieval_ms,
                "features": cfg.features_ms,
                "prerank": cfg.prerank_ms,
                "rank": cfg.rank_ms,
                "rerank": cfg.rerank_ms,
            },
            routes.observe,
        )
        self.degraded = 0

    def recommend(self, request: dict[str, Any]) -> dict[str, Any]:
        bundle = self.routes.bundle()  # read once: the whole request uses one bundle
        model, arm = bundle.champion, "champion"
        if bundle.challenger is not None and bundle.routes_to_challenger(request["user_id"]):
            model, arm = bundle.challenger, "challenger"
        timings: dict[str, float] = {}
        state: DayState | None = None
        reason = None
        items: list[dict[str, Any]] = []
        source = "funnel"
        try:
            state = self.state.get()
            if model is None:
                raise ServiceUnavailable("model_unavailable", "no champion model is loaded")
            if model.companion is None:
                raise ServiceUnavailable("model_unavailable", f"v{model.version} has no companion loaded")
            slate = self.funnel.run(request, model, state, timings)
            items = [
                {
                    "item_id": int(r.item_id),
                    "slot": int(r.slot),
                    "score": float(r.score),
                    "strategy": str(r.strategy),
                    "category": int(r.category),
                }
                for r in slate.itertuples(index=False)
            ]
        except Exception as exc:  # every dependency or budget problem is routed around
            reason = exc.reason if isinstance(exc, ServiceUnavailable) else f"{type(exc).__name__}: {exc}"
            if state is None:  # the last good state, if any (the fallbacks and the log read it)
                state = self.state.state
            source, items = _fallback(request, state)
            self.degraded += 1
            log.warning("recommend_degraded", reason=reason, source=source, user_id=request["user_id"])
        answer = {
            "request_id": request["request_id"],
            "user_id": int(request["user_id"]),
            "items": items,
            "model_name": None if model is None else model.name,
            "model_version": None if model is None or source != "funnel" else model.version,
            "arm": arm if model is not None and source == "funnel" else None,
            "source": source,
            "degraded": reason is not None,
            "reason": reason,
            "timings_ms": timings,
        }
        self.routes.log(records(request, answer, state))
        return answer


def records(
    request: dict[str, Any], answer: dict[str, Any], state: DayState | None = None
) -> list[dict[str, Any]]:
    """One prediction-log record per served slot (:data:`LOG_SCHEMA`): what was served, with the
    item's category and launch as the serving state knew them (the online A/B's diversity and
    freshness guardrails read them)."""
    requested = request["context"]["timestamp"].astimezone(dt.UTC).replace(tzinfo=None)
    scored = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    def launched(item_id: int) -> dt.datetime | None:
        if state is None or not 0 <= item_id < len(state.launched_at):
            return None
        value = state.launched_at[item_id]
        return None if np.isnat(value) else pd.Timestamp(value).to_pydatetime()

    return [
        {
            "request_id": answer["request_id"],
            "user_id": answer["user_id"],
            "item_id": item["item_id"],
            "slot": item["slot"],
            "score": item["score"],
            "strategy": item["strategy"],
            "category": item.get("category"),
            "launched_at": launched(int(item["item_id"])),
            "device": request["context"]["device"],
            "requested_at": requested,
            "scored_at": scored,
            "model_name": answer["model_name"],
            "model_version": answer["model_version"],
            "arm": answer["arm"],
            "source": answer["source"],
            "degraded": answer["degraded"],
        }
        for item in answer["items"]
    ]


def register_routes(app, routes: Routes, settings=None) -> None:
    from fastapi.concurrency import run_in_threadpool

    from jobs.platform.config import get_settings

    settings = settings or getattr(app.state, "settings", None) or get_settings()
    service = RecommendService(settings, routes)
    app.state.recommend = service

    @app.post(
        "/v1/recommend",
        response_model=Recommendation,
        responses=dict(routes.errors),
        dependencies=list(routes.guarded),
        tags=["recommendation"],
        operation_id="recommend",
    )
    async def recommend(request: RecommendRequest) -> dict[str, Any]:
        """The slate of ``k`` items for a user now: retrieval -> pre-ranking -> ranking -> rules, or the
        user's batch slate / the day's trending items (``degraded``) when a stage fails or is too slow."""
        return routes.response_class(await run_in_threadpool(service.recommend, request.model_dump()))


def feature_client(settings, store: Any = None):
    """The ranker's online feature client: the feature service's views read in bulk for a request's
    candidates, the request-time features computed as in training, the store defaults for entities
    without a snapshot."""
    from jobs.platform import feature_store
    from jobs.ranking import training_data as td
    from serving.features import FeastFeatureClient

    store = store or feature_store.get_store(settings)
    return FeastFeatureClient(
        store=store,
        feature_service=settings.case.feature_service,
        feature_columns=feature_store.model_inputs(settings, store),
        request_fn=request_columns,
        defaults=td.feature_defaults(),
    )


def request_columns(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The request-time features of candidate rows (``shown_at``, ``device``, ``launched_at_s``) by
    the training set's definition (:func:`jobs.ranking.training_data.request_feature_arrays`).
    ``launched_at_s`` is the stored catalogue feature, so the rows carry it when the caller knows it;
    otherwise the item's age is 0, as in training for an unknown launch."""
    from jobs.ranking.training_data import request_feature_arrays

    seconds: dict[Any, int] = {}  # a request's candidates share one time: convert it once

    def epoch(value: Any) -> int:
        if value not in seconds:
            ts = pd.Timestamp(value)
            ts = ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts
            seconds[value] = ts.value // 1_000_000_000
        return seconds[value]

    epoch_s = np.array([epoch(r["shown_at"]) for r in rows], dtype="int64")
    device = np.array([r["device"] for r in rows], dtype=object)
    launched = np.array([r.get("launched_at_s", np.nan) for r in rows], dtype="float64")
    return {
        name: v.astype("float64") for name, v in request_feature_arrays(epoch_s, device, launched).items()
    }


def companion(version: str, settings) -> Any:
    """(retriever, pre-ranker) fitted with ranker ``version``, from its training run's artifacts."""
    from jobs.platform.registry import companion_dir
    from jobs.ranking.funnel import load_companion

    retriever, preranker = load_companion(companion_dir(version, settings))
    # one request's few hundred candidates: threads cost more than they save, and the API's worker
    # threads already run requests side by side
    preranker.set_param({"nthread": 1})
    # warm up before the bundle serves (first calls pay for lazy allocations: faiss, xgboost, pandas)
    ((_, items, _),) = retriever.merged(np.array([0], dtype=np.int64))
    preranker.inplace_predict(np.zeros((max(len(items), 1), preranker.num_features())))
    return retriever, preranker


def handler() -> ServingHandler:
    return ServingHandler(
        title="Ranking API",
        description="Home-feed recommendations: the k items a user is most likely to click, per request.",
        route_key="user_id",
        feature_client=feature_client,
        register_routes=register_routes,
        log_schema=LOG_SCHEMA,
        companion=companion,
    )
