"""The ranking use case's settings section (``RANKING_*``): ``settings.case`` when the use case is
``ranking``. The simulated world's size and drift knob are ``RANKING_WORLD_*``."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from jobs.platform.config import UseCaseSettings
from jobs.ranking.world import WorldConfig

_W = WorldConfig()


class World(BaseModel):
    """The simulated shop (:class:`jobs.ranking.world.WorldConfig`); ``RANKING_WORLD_*``."""

    seed: int = Field(_W.seed, description="seed of every random stream of the world")
    n_users: int = Field(_W.n_users, ge=1, description="users (ids 0 .. n_users - 1)")
    n_items: int = Field(_W.n_items, ge=1, description="items of the catalogue on the start date")
    n_categories: int = Field(_W.n_categories, ge=1, description="item categories")
    new_items_per_day: int = Field(_W.new_items_per_day, ge=0, description="items launched every day")
    requests_per_day: int = Field(
        _W.requests_per_day, ge=1, description="home-feed requests a day (x10 slots)"
    )
    scale: float = Field(1.0, gt=0, description="multiplies the catalogue (20 gives 1 M items)")
    drift_date: dt.date | None = Field(
        None, description="from this day users' interest in drift_category shifts"
    )
    drift_category: int = Field(_W.drift_category, ge=0, description="the category whose interest shifts")
    drift_shift: float = Field(_W.drift_shift, description="the shift of that interest (in [-2, 2])")
    new_category_date: dt.date | None = Field(None, description="from this day a new category's items launch")

    def config(self, start_date: dt.date) -> WorldConfig:
        base = WorldConfig(
            seed=self.seed,
            start_date=start_date,
            n_users=self.n_users,
            n_items=self.n_items,
            n_categories=self.n_categories,
            n_brands=max(_W.n_brands, self.n_categories),
            new_items_per_day=self.new_items_per_day,
            requests_per_day=self.requests_per_day,
            drift_date=self.drift_date,
            drift_category=self.drift_category,
            drift_shift=self.drift_shift,
            new_category_date=self.new_category_date,
        )
        return base.scaled(self.scale) if self.scale != 1.0 else base


class Gate(BaseModel):
    """Champion/challenger gate on the holdout's logged slates (``RANKING_GATE_*``; the core's GateSpec
    from ``jobs.ranking.use_case.gate_spec``)."""

    margin: float = Field(
        0.0, ge=0, description="the lower bound of the challenger's NDCG@10 gain must exceed this"
    )
    guardrail_tolerance: float = Field(0.01, ge=0, description="max drop of MRR")
    diversity_tolerance: float = Field(
        0.05, ge=0, le=1, description="max drop of the funnel slates' intra-list category diversity"
    )
    coverage_tolerance: float = Field(
        0.2, ge=0, le=1, description="max relative drop of the funnel slates' catalogue coverage"
    )
    freshness_tolerance: float = Field(
        0.05, ge=0, le=1, description="max drop of the share of fresh items in served slates (online A/B)"
    )
    slice_tolerance: float = Field(0.03, ge=0, description="max NDCG@10 drop in a slice with enough clicks")
    min_slice_clicks: int = Field(200, ge=1, description="slices with fewer clicks are not gated (noise)")
    min_ndcg_at_10: float = Field(0.30, ge=0, le=1, description="absolute floor for any champion")
    alpha: float = Field(
        0.025, gt=0, lt=0.5, description="level of each one-sided gate test (paired bootstrap)"
    )
    resamples: int = Field(1000, ge=100, description="paired bootstrap resamples of the holdout's users")


class Serving(BaseModel):
    """The real-time funnel (``/v1/recommend``; ``RANKING_SERVING_*``): each stage's budget in
    milliseconds (over it, the request is answered from the fallbacks, ``degraded``) and how often
    the day-level state is checked for a newer ingested day."""

    retrieval_ms: float = Field(5.0, gt=0, description="retrieval budget (candidates of one user)")
    features_ms: float = Field(25.0, gt=0, description="online feature read budget (all candidates)")
    prerank_ms: float = Field(5.0, gt=0, description="pre-ranking budget")
    rank_ms: float = Field(20.0, gt=0, description="ranking budget")
    rerank_ms: float = Field(10.0, gt=0, description="business rules budget")
    state_refresh_seconds: float = Field(
        60.0, gt=0, description="how often the lake is checked for a newer day (catalogue, batch slates)"
    )


class RankingSettings(UseCaseSettings):
    model_config = SettingsConfigDict(env_prefix="RANKING_")

    start_date: str = Field("2024-01-01", description="first logical date of the use case's daily DAGs")
    label_delay_days: int = Field(
        1, ge=1, description="a day's clicks and purchases have all arrived this many days later"
    )
    model_name: str = "ranking-ranker"
    feature_service: str = "ranker_v1"
    feast_project: str = Field(
        "ranking", description="Feast project (registry namespace, online-store key prefix)"
    )
    train_days: int = Field(7, ge=1, description="default training window (days) of scheduled training")
    holdout_days: int = Field(2, ge=1, description="holdout window (days) the champion/challenger gate uses")
    world: World = Field(default_factory=World)
    gate: Gate = Field(default_factory=Gate)
    serving: Serving = Field(default_factory=Serving)

    def world_config(self) -> WorldConfig:
        return self.world.config(dt.date.fromisoformat(self.start_date))
